//! The Hugging Face side of the model → checkpoint name map: where each burn parameter of a
//! family lives in a transformers checkpoint (its name, and whether it is stored transposed),
//! used by export, LoRA targeting (PEFT's module names) and QLoRA. Loading reads the same
//! names in each family's `load()`; GGUF's names map onto these in `io::gguf`.

use crate::models::loaded::Family;

/// The families webtune fine-tunes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyKind {
    Gpt2,
    Llama,
    Bert,
}

impl FamilyKind {
    pub fn of(family: &Family) -> Self {
        match family {
            Family::Gpt2(_) => Self::Gpt2,
            Family::Llama(_) => Self::Llama,
            Family::Bert(_) => Self::Bert,
        }
    }

    /// PEFT's default `target_modules` for the family.
    pub fn default_targets(self) -> &'static [&'static str] {
        match self {
            Self::Gpt2 => &["c_attn"],
            Self::Llama => &["q_proj", "v_proj"],
            Self::Bert => &["query", "value"],
        }
    }

    /// Every linear projection except the LM head (PEFT's "all-linear").
    pub fn linear_modules(self) -> &'static [&'static str] {
        match self {
            Self::Gpt2 => &["c_attn", "c_proj", "c_fc"],
            Self::Llama => &[
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ],
            // `dense` is the attention output, MLP and pooler projections; the classifier is
            // the output layer, which PEFT's "all-linear" leaves out.
            Self::Bert => &["query", "key", "value", "dense"],
        }
    }
}

/// Where a burn parameter lives in a Hugging Face checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfTensor {
    /// Full tensor name, e.g. `transformer.h.0.attn.c_attn.weight`.
    pub name: String,
    /// Stored `[out, in]` (`nn.Linear`) while burn keeps `[in, out]`.
    pub transposed: bool,
    /// A linear projection's weight (a LoRA candidate).
    pub linear_weight: bool,
}

/// Map a burn parameter path (`blocks.0.c_attn.weight`) to its Hugging Face tensor.
pub fn hf_tensor(kind: FamilyKind, path: &str) -> Option<HfTensor> {
    let t = |name: String, transposed, linear_weight| {
        Some(HfTensor {
            name,
            transposed,
            linear_weight,
        })
    };
    let parts: Vec<&str> = path.split('.').collect();
    match kind {
        FamilyKind::Gpt2 => match parts.as_slice() {
            ["wte"] => t("transformer.wte.weight".into(), false, false),
            ["wpe"] => t("transformer.wpe.weight".into(), false, false),
            ["lm_head"] => t("lm_head.weight".into(), false, false),
            ["ln_f", p] => t(format!("transformer.ln_f.{}", norm_param(p)?), false, false),
            ["blocks", i, module, p] => {
                let (hf_module, linear) = match *module {
                    "ln_1" | "ln_2" => (module.to_string(), false),
                    "c_attn" | "c_proj" => (format!("attn.{module}"), true),
                    "c_fc" => ("mlp.c_fc".into(), true),
                    "mlp_proj" => ("mlp.c_proj".into(), true),
                    _ => return None,
                };
                let p = if linear {
                    (*p).to_string()
                } else {
                    norm_param(p)?.to_string()
                };
                // Conv1D keeps [in, out], burn's layout: nothing is transposed for GPT-2.
                t(
                    format!("transformer.h.{i}.{hf_module}.{p}"),
                    false,
                    linear && p == "weight",
                )
            }
            _ => None,
        },
        FamilyKind::Llama => match parts.as_slice() {
            ["embed_tokens"] => t("model.embed_tokens.weight".into(), false, false),
            ["lm_head"] => t("lm_head.weight".into(), false, false),
            ["norm", "gamma"] => t("model.norm.weight".into(), false, false),
            ["blocks", i, module, p] => {
                let hf_module = match *module {
                    "input_norm" => "input_layernorm".to_string(),
                    "post_norm" => "post_attention_layernorm".to_string(),
                    "q_proj" | "k_proj" | "v_proj" | "o_proj" => format!("self_attn.{module}"),
                    "gate_proj" | "up_proj" | "down_proj" => format!("mlp.{module}"),
                    _ => return None,
                };
                let is_norm = module.ends_with("_norm");
                let p = if is_norm { norm_param(p)? } else { p };
                let weight = !is_norm && p == "weight";
                t(format!("model.layers.{i}.{hf_module}.{p}"), weight, weight)
            }
            _ => None,
        },
        // BertForSequenceClassification's names: the encoder under `bert.`, the head beside it.
        FamilyKind::Bert => {
            let linear = |name: String, p: &str| {
                let weight = p == "weight";
                t(format!("{name}.{p}"), weight, weight)
            };
            match parts.as_slice() {
                [e @ ("word_embeddings" | "position_embeddings" | "token_type_embeddings")] => {
                    t(format!("bert.embeddings.{e}.weight"), false, false)
                }
                ["embeddings_norm", p] => t(
                    format!("bert.embeddings.LayerNorm.{}", norm_param(p)?),
                    false,
                    false,
                ),
                ["pooler", p] => linear("bert.pooler.dense".into(), p),
                ["classifier", p] => linear("classifier".into(), p),
                ["layers", i, module, p] => {
                    let l = format!("bert.encoder.layer.{i}");
                    match *module {
                        "query" | "key" | "value" => {
                            linear(format!("{l}.attention.self.{module}"), p)
                        }
                        "attention_output" => linear(format!("{l}.attention.output.dense"), p),
                        "intermediate" => linear(format!("{l}.intermediate.dense"), p),
                        "output" => linear(format!("{l}.output.dense"), p),
                        "attention_norm" => t(
                            format!("{l}.attention.output.LayerNorm.{}", norm_param(p)?),
                            false,
                            false,
                        ),
                        "output_norm" => t(
                            format!("{l}.output.LayerNorm.{}", norm_param(p)?),
                            false,
                            false,
                        ),
                        _ => None,
                    }
                }
                _ => None,
            }
        }
    }
}

fn norm_param(p: &str) -> Option<&'static str> {
    match p {
        "gamma" => Some("weight"),
        "beta" => Some("bias"),
        _ => None,
    }
}

/// The Hugging Face module name of a linear weight, e.g. `transformer.h.0.attn.c_attn`.
pub fn hf_module(kind: FamilyKind, path: &str) -> Option<String> {
    let t = hf_tensor(kind, path)?;
    t.linear_weight
        .then(|| t.name.trim_end_matches(".weight").to_string())
}

/// PEFT's matching rule: a target names a module when it equals the full name or its last
/// dotted components.
pub fn matches_target(module: &str, target: &str) -> bool {
    module == target || module.ends_with(&format!(".{target}"))
}
