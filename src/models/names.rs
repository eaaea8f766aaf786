//! Where each parameter of a family lives in a checkpoint: one table per family, row by row
//! the burn parameter path, the Hugging Face tensor name, the llama.cpp (GGUF) name where the
//! family has one, and how the tensor is laid out there. Loading (each family's `load()`),
//! export, LoRA targeting (PEFT's module names), QLoRA and GGUF import all read these tables;
//! `tests/names.rs` walks every row through load → export → reload.
//!
//! `{i}` in a row stands for the layer index.

use crate::models::loaded::Family;

/// How a Hugging Face checkpoint stores a tensor, against burn's parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The same shape and order (embeddings, norms, biases, a Llama LM head).
    Same,
    /// An `nn.Linear` weight: stored `[out, in]`, burn keeps `[in, out]`.
    Linear,
    /// GPT-2's `Conv1D` weight: stored `[in, out]` like burn, but a linear projection all the same.
    Conv1D,
}

/// Rows convert_hf_to_gguf permuted for llama.cpp's rotary layout (Llama files only), and by
/// which head count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rope {
    /// Split by the attention heads (`q_proj`).
    Query,
    /// Split by the key/value heads (`k_proj`).
    Key,
}

/// One row of a family's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// burn's parameter path, e.g. `blocks.{i}.c_attn.weight`.
    pub model: &'static str,
    /// The Hugging Face name, e.g. `transformer.h.{i}.attn.c_attn.weight`.
    pub hf: &'static str,
    /// The llama.cpp name, when GGUF files carry this tensor.
    pub gguf: Option<&'static str>,
    pub layout: Layout,
    pub rope: Option<Rope>,
}

const fn row(model: &'static str, hf: &'static str, layout: Layout) -> Entry {
    Entry {
        model,
        hf,
        gguf: None,
        layout,
        rope: None,
    }
}

const fn gguf(
    model: &'static str,
    hf: &'static str,
    gguf: &'static str,
    layout: Layout,
    rope: Option<Rope>,
) -> Entry {
    Entry {
        model,
        hf,
        gguf: Some(gguf),
        layout,
        rope,
    }
}

/// A family's rows, and the prefix its Hub names carry in the task model (`transformer.` in
/// GPT2LMHeadModel) but not in the bare one (GPT2Model), which loading also accepts.
pub struct Table {
    pub prefix: &'static str,
    pub rows: &'static [Entry],
}

use Layout::{Conv1D, Linear, Same};
use Rope::{Key, Query};

#[rustfmt::skip]
pub static GPT2: Table = Table {
    prefix: "transformer.",
    rows: &[
        row("wte",                        "transformer.wte.weight",              Same),
        row("wpe",                        "transformer.wpe.weight",              Same),
        row("blocks.{i}.ln_1.gamma",      "transformer.h.{i}.ln_1.weight",       Same),
        row("blocks.{i}.ln_1.beta",       "transformer.h.{i}.ln_1.bias",         Same),
        row("blocks.{i}.c_attn.weight",   "transformer.h.{i}.attn.c_attn.weight", Conv1D),
        row("blocks.{i}.c_attn.bias",     "transformer.h.{i}.attn.c_attn.bias",  Same),
        row("blocks.{i}.c_proj.weight",   "transformer.h.{i}.attn.c_proj.weight", Conv1D),
        row("blocks.{i}.c_proj.bias",     "transformer.h.{i}.attn.c_proj.bias",  Same),
        row("blocks.{i}.ln_2.gamma",      "transformer.h.{i}.ln_2.weight",       Same),
        row("blocks.{i}.ln_2.beta",       "transformer.h.{i}.ln_2.bias",         Same),
        row("blocks.{i}.c_fc.weight",     "transformer.h.{i}.mlp.c_fc.weight",   Conv1D),
        row("blocks.{i}.c_fc.bias",       "transformer.h.{i}.mlp.c_fc.bias",     Same),
        row("blocks.{i}.mlp_proj.weight", "transformer.h.{i}.mlp.c_proj.weight", Conv1D),
        row("blocks.{i}.mlp_proj.bias",   "transformer.h.{i}.mlp.c_proj.bias",   Same),
        row("ln_f.gamma",                 "transformer.ln_f.weight",             Same),
        row("ln_f.beta",                  "transformer.ln_f.bias",               Same),
        // Only when the head is not tied to `wte`.
        row("lm_head",                    "lm_head.weight",                      Same),
    ],
};

/// Llama, Mistral, Qwen2 and the rest of the family. Biases are optional (config.json's
/// `attention_bias`, `mlp_bias`; Qwen2 has them on q, k and v).
#[rustfmt::skip]
pub static LLAMA: Table = Table {
    prefix: "model.",
    rows: &[
        gguf("embed_tokens",                "model.embed_tokens.weight",                       "token_embd.weight",          Same, None),
        gguf("blocks.{i}.input_norm.gamma", "model.layers.{i}.input_layernorm.weight",         "blk.{i}.attn_norm.weight",   Same, None),
        gguf("blocks.{i}.q_proj.weight",    "model.layers.{i}.self_attn.q_proj.weight",        "blk.{i}.attn_q.weight",      Linear, Some(Query)),
        gguf("blocks.{i}.q_proj.bias",      "model.layers.{i}.self_attn.q_proj.bias",          "blk.{i}.attn_q.bias",        Same, Some(Query)),
        gguf("blocks.{i}.k_proj.weight",    "model.layers.{i}.self_attn.k_proj.weight",        "blk.{i}.attn_k.weight",      Linear, Some(Key)),
        gguf("blocks.{i}.k_proj.bias",      "model.layers.{i}.self_attn.k_proj.bias",          "blk.{i}.attn_k.bias",        Same, Some(Key)),
        gguf("blocks.{i}.v_proj.weight",    "model.layers.{i}.self_attn.v_proj.weight",        "blk.{i}.attn_v.weight",      Linear, None),
        gguf("blocks.{i}.v_proj.bias",      "model.layers.{i}.self_attn.v_proj.bias",          "blk.{i}.attn_v.bias",        Same, None),
        gguf("blocks.{i}.o_proj.weight",    "model.layers.{i}.self_attn.o_proj.weight",        "blk.{i}.attn_output.weight", Linear, None),
        gguf("blocks.{i}.o_proj.bias",      "model.layers.{i}.self_attn.o_proj.bias",          "blk.{i}.attn_output.bias",   Same, None),
        gguf("blocks.{i}.post_norm.gamma",  "model.layers.{i}.post_attention_layernorm.weight", "blk.{i}.ffn_norm.weight",   Same, None),
        gguf("blocks.{i}.gate_proj.weight", "model.layers.{i}.mlp.gate_proj.weight",           "blk.{i}.ffn_gate.weight",    Linear, None),
        gguf("blocks.{i}.gate_proj.bias",   "model.layers.{i}.mlp.gate_proj.bias",             "blk.{i}.ffn_gate.bias",      Same, None),
        gguf("blocks.{i}.up_proj.weight",   "model.layers.{i}.mlp.up_proj.weight",             "blk.{i}.ffn_up.weight",      Linear, None),
        gguf("blocks.{i}.up_proj.bias",     "model.layers.{i}.mlp.up_proj.bias",               "blk.{i}.ffn_up.bias",        Same, None),
        gguf("blocks.{i}.down_proj.weight", "model.layers.{i}.mlp.down_proj.weight",           "blk.{i}.ffn_down.weight",    Linear, None),
        gguf("blocks.{i}.down_proj.bias",   "model.layers.{i}.mlp.down_proj.bias",             "blk.{i}.ffn_down.bias",      Same, None),
        gguf("norm.gamma",                  "model.norm.weight",                               "output_norm.weight",         Same, None),
        // Only when the head is not tied to `embed_tokens`.
        gguf("lm_head",                     "lm_head.weight",                                  "output.weight",              Same, None),
    ],
};

/// BertForSequenceClassification's names: the encoder under `bert.`, the head beside it. The
/// pooler and the classifier are there when the checkpoint has them.
#[rustfmt::skip]
pub static BERT: Table = Table {
    prefix: "bert.",
    rows: &[
        row("word_embeddings",                "bert.embeddings.word_embeddings.weight",             Same),
        row("position_embeddings",            "bert.embeddings.position_embeddings.weight",         Same),
        row("token_type_embeddings",          "bert.embeddings.token_type_embeddings.weight",       Same),
        row("embeddings_norm.gamma",          "bert.embeddings.LayerNorm.weight",                   Same),
        row("embeddings_norm.beta",           "bert.embeddings.LayerNorm.bias",                     Same),
        row("layers.{i}.query.weight",        "bert.encoder.layer.{i}.attention.self.query.weight", Linear),
        row("layers.{i}.query.bias",          "bert.encoder.layer.{i}.attention.self.query.bias",   Same),
        row("layers.{i}.key.weight",          "bert.encoder.layer.{i}.attention.self.key.weight",   Linear),
        row("layers.{i}.key.bias",            "bert.encoder.layer.{i}.attention.self.key.bias",     Same),
        row("layers.{i}.value.weight",        "bert.encoder.layer.{i}.attention.self.value.weight", Linear),
        row("layers.{i}.value.bias",          "bert.encoder.layer.{i}.attention.self.value.bias",   Same),
        row("layers.{i}.attention_output.weight", "bert.encoder.layer.{i}.attention.output.dense.weight", Linear),
        row("layers.{i}.attention_output.bias",   "bert.encoder.layer.{i}.attention.output.dense.bias",   Same),
        row("layers.{i}.attention_norm.gamma", "bert.encoder.layer.{i}.attention.output.LayerNorm.weight", Same),
        row("layers.{i}.attention_norm.beta",  "bert.encoder.layer.{i}.attention.output.LayerNorm.bias",   Same),
        row("layers.{i}.intermediate.weight", "bert.encoder.layer.{i}.intermediate.dense.weight",   Linear),
        row("layers.{i}.intermediate.bias",   "bert.encoder.layer.{i}.intermediate.dense.bias",     Same),
        row("layers.{i}.output.weight",       "bert.encoder.layer.{i}.output.dense.weight",         Linear),
        row("layers.{i}.output.bias",         "bert.encoder.layer.{i}.output.dense.bias",           Same),
        row("layers.{i}.output_norm.gamma",   "bert.encoder.layer.{i}.output.LayerNorm.weight",     Same),
        row("layers.{i}.output_norm.beta",    "bert.encoder.layer.{i}.output.LayerNorm.bias",       Same),
        row("pooler.weight",                  "bert.pooler.dense.weight",                           Linear),
        row("pooler.bias",                    "bert.pooler.dense.bias",                             Same),
        row("classifier.weight",              "classifier.weight",                                  Linear),
        row("classifier.bias",                "classifier.bias",                                    Same),
    ],
};

impl Table {
    /// The row of a burn parameter path, with the layer index it holds.
    pub fn by_model(&self, path: &str) -> Option<(&'static Entry, Option<usize>)> {
        self.find(path, |e| Some(e.model))
    }

    /// The row of a Hugging Face tensor name (with the family's prefix).
    pub fn by_hf(&self, name: &str) -> Option<(&'static Entry, Option<usize>)> {
        self.find(name, |e| Some(e.hf))
    }

    /// The row of a llama.cpp tensor name.
    pub fn by_gguf(&self, name: &str) -> Option<(&'static Entry, Option<usize>)> {
        self.find(name, |e| e.gguf)
    }

    fn find(
        &self,
        name: &str,
        column: impl Fn(&Entry) -> Option<&'static str>,
    ) -> Option<(&'static Entry, Option<usize>)> {
        let rows: &'static [Entry] = self.rows;
        rows.iter().find_map(|e| {
            let layer = matches(column(e)?, name)?;
            Some((e, layer))
        })
    }

    /// The names loading tries for a burn parameter: the Hub name, then the bare model's
    /// (without the prefix). Empty for a path the table does not know, which the loader then
    /// reports as a missing tensor (tests/names.rs keeps every path a family loads in its table).
    pub fn hf_names(&self, path: &str) -> Vec<String> {
        self.by_model(path)
            .map_or_else(Vec::new, |(e, layer)| self.names_of(e, layer))
    }

    /// [`Table::hf_names`] of a row already found.
    pub fn names_of(&self, e: &Entry, layer: Option<usize>) -> Vec<String> {
        let name = fill(e.hf, layer);
        match name.strip_prefix(self.prefix) {
            Some(bare) => {
                let bare = bare.to_string();
                vec![name, bare]
            }
            None => vec![name],
        }
    }
}

/// A template with `{i}` replaced by the layer.
pub fn fill(template: &str, layer: Option<usize>) -> String {
    match layer {
        Some(i) => template.replace("{i}", &i.to_string()),
        None => template.to_string(),
    }
}

/// Whether `name` fits `template`, and the layer that `{i}` stood for.
fn matches(template: &str, name: &str) -> Option<Option<usize>> {
    let mut layer = None;
    let mut t = template.split('.');
    let mut n = name.split('.');
    loop {
        match (t.next(), n.next()) {
            (None, None) => return Some(layer),
            (Some("{i}"), Some(part)) => layer = Some(part.parse().ok()?),
            (Some(a), Some(b)) if a == b => {}
            _ => return None,
        }
    }
}

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

    pub fn table(self) -> &'static Table {
        match self {
            Self::Gpt2 => &GPT2,
            Self::Llama => &LLAMA,
            Self::Bert => &BERT,
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
    let (e, layer) = kind.table().by_model(path)?;
    Some(HfTensor {
        name: fill(e.hf, layer),
        transposed: e.layout == Linear,
        linear_weight: e.layout != Same,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_match_by_every_column() {
        let (e, layer) = LLAMA.by_model("blocks.12.k_proj.weight").unwrap();
        assert_eq!(layer, Some(12));
        assert_eq!(fill(e.hf, layer), "model.layers.12.self_attn.k_proj.weight");
        assert_eq!(e.rope, Some(Key));
        assert_eq!(LLAMA.by_gguf("blk.12.attn_k.weight").unwrap().0, e);
        assert_eq!(
            LLAMA
                .by_hf("model.layers.12.self_attn.k_proj.weight")
                .unwrap()
                .0,
            e
        );
        assert_eq!(LLAMA.by_gguf("blk.x.attn_q.weight"), None);
        assert_eq!(LLAMA.by_gguf("rope_freqs.weight"), None);
        assert_eq!(LLAMA.by_model("blocks.0.k_proj.weight.extra"), None);
        assert_eq!(
            GPT2.hf_names("blocks.3.mlp_proj.bias"),
            ["transformer.h.3.mlp.c_proj.bias", "h.3.mlp.c_proj.bias"]
        );
        assert_eq!(BERT.hf_names("classifier.weight"), ["classifier.weight"]);
        assert!(BERT.hf_names("nothing").is_empty());
    }

    #[test]
    fn every_row_is_found_by_its_own_names() {
        for table in [&GPT2, &LLAMA, &BERT] {
            for e in table.rows {
                let layer = e.model.contains("{i}").then_some(7);
                assert_eq!(e.hf.contains("{i}"), layer.is_some(), "{}", e.hf);
                let (m, l) = table.by_model(&fill(e.model, layer)).unwrap();
                assert_eq!((m, l), (e, layer));
                assert_eq!(table.by_hf(&fill(e.hf, layer)).unwrap().0, e);
                if let Some(g) = e.gguf {
                    assert_eq!(table.by_gguf(&fill(g, layer)).unwrap().0, e);
                }
            }
        }
    }
}
