//! GPT-2 (gpt2, distilgpt2 and their fine-tunes): learned positions, pre-LayerNorm blocks,
//! causal self-attention, tanh-GELU MLP, LM head tied to the token embedding.
//!
//! Hugging Face stores GPT-2's projections as `Conv1D` with weights `[in, out]` — already the
//! layout of burn's `Linear`, so unlike `nn.Linear` checkpoints (Llama, BERT) nothing is
//! transposed here.

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::module::embedding;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::layers::{
    causal_attention_dropout, dropout, linear_forward, lm_head_logits, load_layer_norm,
    load_linear, merge_heads, split_heads, Activation, TrainDropout,
};
use super::names::GPT2;
use super::{Dims, KvCache};
use crate::error::{Code, Error, Result};
use crate::io::hf::Weights;

#[derive(Module, Debug)]
pub struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    c_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
}

#[derive(Module, Debug)]
pub struct Gpt2 {
    wte: Param<Tensor<2>>,
    wpe: Param<Tensor<2>>,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    /// `[vocab, d]`; `None` when tied to `wte`.
    lm_head: Option<Param<Tensor<2>>>,
    #[module(skip)]
    n_head: usize,
    #[module(skip)]
    activation: Activation,
    /// config.json's dropout probabilities.
    #[module(skip)]
    pdrop: TrainDropout,
    /// The dropout applied while training (all zero unless fine-tuning turned it on).
    #[module(skip)]
    dropout: TrainDropout,
}

impl Gpt2 {
    pub fn load(config: &Gpt2Config, w: &Weights, device: &Device) -> Result<Self> {
        let d = config.n_embd;
        let eps = config.layer_norm_epsilon;
        // Grown as layers load (not reserved from the config's count).
        let mut blocks = Vec::new();
        for i in 0..config.n_layer {
            let p = format!("blocks.{i}");
            blocks.push(Block {
                ln_1: load_layer_norm(w, &GPT2, &format!("{p}.ln_1"), d, eps, device)?,
                c_attn: load_linear(w, &GPT2, &format!("{p}.c_attn"), (d, 3 * d), true, device)?,
                c_proj: load_linear(w, &GPT2, &format!("{p}.c_proj"), (d, d), true, device)?,
                ln_2: load_layer_norm(w, &GPT2, &format!("{p}.ln_2"), d, eps, device)?,
                c_fc: load_linear(
                    w,
                    &GPT2,
                    &format!("{p}.c_fc"),
                    (d, config.inner()),
                    true,
                    device,
                )?,
                mlp_proj: load_linear(
                    w,
                    &GPT2,
                    &format!("{p}.mlp_proj"),
                    (config.inner(), d),
                    true,
                    device,
                )?,
            });
        }
        let lm_head = if !config.tie_word_embeddings && w.contains("lm_head.weight") {
            Some(Param::from_tensor(w.param(
                &GPT2,
                "lm_head",
                [config.vocab_size, d],
                device,
            )?))
        } else {
            None
        };
        Ok(Self {
            wte: Param::from_tensor(w.param(&GPT2, "wte", [config.vocab_size, d], device)?),
            wpe: Param::from_tensor(w.param(&GPT2, "wpe", [config.n_positions, d], device)?),
            blocks,
            ln_f: load_layer_norm(w, &GPT2, "ln_f", d, eps, device)?,
            lm_head,
            n_head: config.n_head,
            // Validated by Gpt2Config::from_json.
            activation: Activation::parse(&config.activation_function)
                .unwrap_or(Activation::GeluTanh),
            pdrop: TrainDropout {
                embd: config.embd_pdrop,
                attn: config.attn_pdrop,
                resid: config.resid_pdrop,
                lora: 0.0,
            },
            dropout: TrainDropout::default(),
        })
    }

    /// Sizes and per-token work, for `ModelInfo`.
    pub fn dims(&self, config: &Gpt2Config) -> Dims {
        let d = config.n_embd;
        Dims {
            parameters: self.num_params(),
            layers: config.n_layer,
            hidden_size: d,
            intermediate_size: config.inner(),
            heads: config.n_head,
            vocab_size: config.vocab_size,
            max_positions: config.n_positions,
            // c_attn (q, k, v), c_proj, c_fc, mlp.c_proj; the LM head is wte.
            matmul_weights: config.n_layer * (4 * d * d + 2 * d * config.inner())
                + config.vocab_size * d,
            attention_width: d,
            // GELU's input, its intermediates and output.
            mlp_kept: 4,
        }
    }

    /// Dropout while training: config.json's probabilities when `model` is set, and `lora` on
    /// the input of every LoRA branch. Inference never drops anything (see [`dropout`]).
    pub fn set_train_dropout(&mut self, model: bool, lora: f64) {
        let base = if model {
            self.pdrop
        } else {
            TrainDropout::default()
        };
        self.dropout = TrainDropout { lora, ..base };
    }

    pub fn max_positions(&self) -> usize {
        self.wpe.dims()[0]
    }

    /// Token ids `[B, T]` → logits `[B, T, vocab]`. With a cache, the tokens continue the cached
    /// sequence and the cache is extended.
    pub fn forward(&self, tokens: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<3> {
        lm_head_logits(self.hidden(tokens, cache), self.head())
    }

    /// The LM head `[vocab, d]`: its own weight, or the token embedding it is tied to.
    pub fn head(&self) -> Tensor<2> {
        match &self.lm_head {
            Some(w) => w.val(),
            None => self.wte.val(),
        }
    }

    /// Token ids `[B, T]` → the final hidden states `[B, T, d]` the LM head reads.
    pub fn hidden(&self, tokens: Tensor<2, Int>, mut cache: Option<&mut KvCache>) -> Tensor<3> {
        let [_, t] = tokens.dims();
        let past = cache.as_ref().map_or(0, |c| c.len);
        let positions = self.wpe.val().narrow(0, past, t).unsqueeze::<3>();
        let drop = self.dropout;
        let mut x = dropout(embedding(self.wte.val(), tokens) + positions, drop.embd);
        let d = x.dims()[2];
        for (i, block) in self.blocks.iter().enumerate() {
            let qkv = linear_forward(&block.c_attn, block.ln_1.forward(x.clone()), drop.lora);
            let part = |j: usize| split_heads(qkv.clone().narrow(2, j * d, d), self.n_head);
            let (q, mut k, mut v) = (part(0), part(1), part(2));
            if let Some(cache) = cache.as_deref_mut() {
                (k, v) = cache.extend(i, k, v);
            }
            let attn = merge_heads(causal_attention_dropout(q, k, v, drop.attn));
            x = x + dropout(linear_forward(&block.c_proj, attn, drop.lora), drop.resid);
            let h = self.activation.forward(linear_forward(
                &block.c_fc,
                block.ln_2.forward(x.clone()),
                drop.lora,
            ));
            x = x + dropout(linear_forward(&block.mlp_proj, h, drop.lora), drop.resid);
        }
        if let Some(cache) = cache {
            cache.len += t;
        }
        self.ln_f.forward(x)
    }
}
// config.json → Gpt2Config, validated.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_inner: Option<usize>,
    pub layer_norm_epsilon: f64,
    pub activation_function: String,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// Dropout on the embeddings, the attention probabilities and the residual branches. Only
    /// applied while fine-tuning with `model_dropout` on (see `train::finetune`).
    pub embd_pdrop: f64,
    pub attn_pdrop: f64,
    pub resid_pdrop: f64,
}

/// transformers' GPT2Config defaults, for keys a config.json leaves out.
impl Default for Gpt2Config {
    fn default() -> Self {
        Self {
            vocab_size: 50257,
            n_positions: 1024,
            n_embd: 768,
            n_layer: 12,
            n_head: 12,
            n_inner: None,
            layer_norm_epsilon: 1e-5,
            activation_function: "gelu_new".into(),
            tie_word_embeddings: true,
            bos_token_id: None,
            eos_token_id: None,
            embd_pdrop: 0.1,
            attn_pdrop: 0.1,
            resid_pdrop: 0.1,
        }
    }
}

impl Gpt2Config {
    pub fn from_json(config: &Value) -> Result<Self> {
        let cfg: Self = serde_json::from_value(config.clone()).map_err(|e| {
            Error::new(
                Code::ModelConfigInvalid,
                format!("config.json is not a valid GPT-2 config: {e}"),
            )
        })?;
        let bad = |m: String| Err(Error::new(Code::ModelConfigInvalid, m));
        if cfg.n_head == 0 || cfg.n_embd % cfg.n_head != 0 {
            return bad(format!(
                "n_embd ({}) must be a multiple of n_head ({})",
                cfg.n_embd, cfg.n_head
            ));
        }
        if cfg.vocab_size == 0
            || cfg.n_positions == 0
            || cfg.n_layer == 0
            || cfg.n_embd == 0
            || cfg.n_inner == Some(0)
        {
            return bad(
                "vocab_size, n_positions, n_layer, n_embd and n_inner must be positive".into(),
            );
        }
        for (key, p) in [
            ("embd_pdrop", cfg.embd_pdrop),
            ("attn_pdrop", cfg.attn_pdrop),
            ("resid_pdrop", cfg.resid_pdrop),
        ] {
            if !(p.is_finite() && (0.0..1.0).contains(&p)) {
                return bad(format!("{key} must be in [0, 1), got {p}"));
            }
        }
        let max = super::MAX_CONFIG_DIM;
        super::check_config_sizes(
            "GPT-2",
            max,
            &[
                ("vocab_size", Some(cfg.vocab_size)),
                ("n_positions", Some(cfg.n_positions)),
                ("n_embd", cfg.n_embd.checked_mul(4)),
                ("n_inner", Some(cfg.n_inner.unwrap_or(0))),
            ],
        )?;
        super::check_config_sizes(
            "GPT-2",
            super::MAX_CONFIG_LAYERS,
            &[("n_layer", Some(cfg.n_layer))],
        )?;
        if Activation::parse(&cfg.activation_function).is_none() {
            return bad(format!(
                "activation_function {:?} is not supported",
                cfg.activation_function
            ));
        }
        Ok(cfg)
    }

    pub fn inner(&self) -> usize {
        self.n_inner.unwrap_or(self.n_embd.saturating_mul(4))
    }

    pub fn summary(&self) -> Value {
        json!({
            "architecture": "gpt2",
            "layers": self.n_layer,
            "hidden_size": self.n_embd,
            "heads": self.n_head,
            "vocab_size": self.vocab_size,
            "max_positions": self.n_positions,
        })
    }
}
