//! BERT encoders (bert-base, MiniLM, all-MiniLM-L6-v2 and other sentence-transformers models)
//! and the sequence-classification head on top of them: word + position + token-type
//! embeddings with LayerNorm, post-LayerNorm blocks (attention → add → norm, MLP → add → norm),
//! bidirectional attention that ignores padded keys, exact (erf) GELU, an optional pooler
//! (`tanh(dense(h[CLS]))`) and an optional linear classifier.
//!
//! Checkpoints name tensors with a `bert.` prefix (`BertForSequenceClassification`,
//! `BertForMaskedLM`) or without one (`BertModel`, sentence-transformers). Older checkpoints
//! carry an `embeddings.position_ids` buffer, which is ignored (positions are always 0..T);
//! checkpoints saved with `add_pooling_layer=False` have no pooler. Projections are
//! `nn.Linear` (`[out, in]`) and are transposed once at load time, as for Llama.

use std::collections::BTreeMap;

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::module::embedding;
use burn::tensor::{Bool, TensorData};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::layers::{load_layer_norm, load_linear, merge_heads, split_heads, Activation};
use super::names::BERT;
use super::Dims;
use crate::error::{Code, Error, Result};
use crate::io::hf::Weights;

/// How a sentence becomes one vector for the classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The `[CLS]` token's last hidden state.
    Cls,
    /// Mean over the non-padding tokens (sentence-transformers' default, MiniLM's embedding).
    Mean,
    /// `tanh(dense(h[CLS]))`, what `BertForSequenceClassification` uses.
    #[default]
    Pooler,
}

impl Pooling {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "cls" => Ok(Self::Cls),
            "mean" => Ok(Self::Mean),
            "pooler" => Ok(Self::Pooler),
            other => Err(Error::config(format!(
                "unknown pooling {other:?}: choose \"cls\", \"mean\" or \"pooler\""
            ))),
        }
    }
}

#[derive(Module, Debug)]
pub struct BertLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    /// `attention.output.dense`
    attention_output: Linear,
    /// `attention.output.LayerNorm`
    attention_norm: LayerNorm,
    /// `intermediate.dense`
    intermediate: Linear,
    /// `output.dense`
    output: Linear,
    /// `output.LayerNorm`
    output_norm: LayerNorm,
}

#[derive(Module, Debug)]
pub struct Bert {
    word_embeddings: Param<Tensor<2>>,
    position_embeddings: Param<Tensor<2>>,
    token_type_embeddings: Param<Tensor<2>>,
    embeddings_norm: LayerNorm,
    layers: Vec<BertLayer>,
    /// `pooler.dense`; absent in checkpoints saved without a pooling layer.
    pooler: Option<Linear>,
    /// The classification head's `classifier` (`[hidden, num_labels]`), when there is one.
    pub classifier: Option<Linear>,
    #[module(skip)]
    n_heads: usize,
    #[module(skip)]
    activation: Activation,
}

impl Bert {
    /// Load the encoder, its pooler when the checkpoint has one, and a classification head
    /// when it has `classifier.weight` (`BertForSequenceClassification`).
    pub fn load(config: &BertConfig, w: &Weights, device: &Device) -> Result<Self> {
        let d = config.hidden_size;
        let ff = config.intermediate_size;
        let eps = config.layer_norm_eps;
        let lin =
            |path: &str, d_in, d_out| load_linear(w, &BERT, path, (d_in, d_out), true, device);
        // Grown as layers load (not reserved from the config's count).
        let mut layers = Vec::new();
        for i in 0..config.num_hidden_layers {
            let p = format!("layers.{i}");
            layers.push(BertLayer {
                query: lin(&format!("{p}.query"), d, d)?,
                key: lin(&format!("{p}.key"), d, d)?,
                value: lin(&format!("{p}.value"), d, d)?,
                attention_output: lin(&format!("{p}.attention_output"), d, d)?,
                attention_norm: load_layer_norm(
                    w,
                    &BERT,
                    &format!("{p}.attention_norm"),
                    d,
                    eps,
                    device,
                )?,
                intermediate: lin(&format!("{p}.intermediate"), d, ff)?,
                output: lin(&format!("{p}.output"), ff, d)?,
                output_norm: load_layer_norm(
                    w,
                    &BERT,
                    &format!("{p}.output_norm"),
                    d,
                    eps,
                    device,
                )?,
            });
        }
        // The stored name of a parameter, if the checkpoint has it.
        let stored = |path: &str| BERT.hf_names(path).into_iter().find(|n| w.contains(n));
        let pooler = match stored("pooler.weight") {
            Some(_) => Some(lin("pooler", d, d)?),
            None => None,
        };
        let classifier = match stored("classifier.weight") {
            Some(name) => {
                let n = w
                    .shape_of(&name)
                    .and_then(|s| s.first().copied())
                    .unwrap_or(0);
                Some(lin("classifier", d, n)?)
            }
            None => None,
        };
        let emb = |path: &str, rows: usize| -> Result<Param<Tensor<2>>> {
            Ok(Param::from_tensor(w.param(
                &BERT,
                path,
                [rows, d],
                device,
            )?))
        };
        Ok(Self {
            word_embeddings: emb("word_embeddings", config.vocab_size)?,
            position_embeddings: emb("position_embeddings", config.max_position_embeddings)?,
            token_type_embeddings: emb("token_type_embeddings", config.type_vocab_size)?,
            embeddings_norm: load_layer_norm(w, &BERT, "embeddings_norm", d, eps, device)?,
            layers,
            pooler,
            classifier,
            n_heads: config.num_attention_heads,
            // Validated by BertConfig::from_json.
            activation: Activation::parse(&config.hidden_act).unwrap_or(Activation::Gelu),
        })
    }

    pub fn max_positions(&self) -> usize {
        self.position_embeddings.dims()[0]
    }

    pub fn hidden_size(&self) -> usize {
        self.word_embeddings.dims()[1]
    }

    /// Sizes and per-token work, for `ModelInfo`.
    pub fn dims(&self, config: &BertConfig) -> Dims {
        let d = config.hidden_size;
        let ff = config.intermediate_size;
        Dims {
            parameters: self.num_params(),
            layers: config.num_hidden_layers,
            hidden_size: d,
            intermediate_size: ff,
            heads: config.num_attention_heads,
            vocab_size: config.vocab_size,
            max_positions: config.max_position_embeddings,
            // q, k, v, attention output, intermediate, output; pooler; classifier.
            matmul_weights: config.num_hidden_layers * (4 * d * d + 2 * d * ff)
                + if self.has_pooler() { d * d } else { 0 }
                + d * self.num_labels(),
            attention_width: d,
            // GELU's input, its intermediates and output.
            mlp_kept: 4,
        }
    }

    /// The classification head's class names (config.json's `id2label` when it names them
    /// all) and how it pools, when the checkpoint has a head.
    pub fn head_info(&self, config: &BertConfig) -> Option<(Vec<String>, Pooling)> {
        let n = self.num_labels();
        if n == 0 {
            return None;
        }
        let labels = config
            .labels()
            .filter(|l| l.len() == n)
            .unwrap_or_else(|| (0..n).map(|i| format!("LABEL_{i}")).collect());
        let pooling = config.webtune_pooling.unwrap_or(if self.has_pooler() {
            Pooling::Pooler
        } else {
            Pooling::Mean
        });
        Some((labels, pooling))
    }

    pub fn has_pooler(&self) -> bool {
        self.pooler.is_some()
    }

    /// Classes of the classification head (0 without one).
    pub fn num_labels(&self) -> usize {
        self.classifier.as_ref().map_or(0, |c| c.weight.dims()[1])
    }

    /// A new classification head for `num_labels` classes, N(0, 0.02²) weights and zero bias
    /// as transformers initialises it, drawn from webtune's seeded generator.
    pub fn with_new_classifier(mut self, num_labels: usize, seed: u64) -> Self {
        let device = self.word_embeddings.lazy_device();
        let mut rng = crate::rng::Rng::new(seed ^ 0xC1A5_5000);
        self.classifier = Some(super::layers::linear(
            &mut rng,
            self.hidden_size(),
            num_labels,
            0.02,
            true,
            &device,
        ));
        self
    }

    /// The model with a given classification head: `weight` `[hidden, num_labels]` (burn's
    /// layout), `bias` `[num_labels]` (a classification adapter's saved head).
    pub fn with_classifier(mut self, weight: Tensor<2>, bias: Tensor<1>) -> Self {
        self.classifier = Some(Linear {
            weight: Param::from_tensor(weight),
            bias: Some(Param::from_tensor(bias)),
        });
        self
    }

    /// Token ids `[B, T]` → last hidden states `[B, T, hidden]`. `token_types` default to 0;
    /// `attention_mask` (`[B, T]`, 1 on tokens, 0 on padding) keeps padded keys out of every
    /// query's attention, as transformers' additive mask does. Padded positions still get a
    /// (meaningless) hidden state, exactly as in transformers.
    pub fn forward(
        &self,
        tokens: Tensor<2, Int>,
        token_types: Option<Tensor<2, Int>>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<3> {
        let [b, t] = tokens.dims();
        let device = tokens.device();
        let positions = self
            .position_embeddings
            .val()
            .narrow(0, 0, t)
            .unsqueeze::<3>();
        let token_types = token_types.unwrap_or_else(|| Tensor::zeros([b, t], &device));
        let x = embedding(self.word_embeddings.val(), tokens)
            + positions
            + embedding(self.token_type_embeddings.val(), token_types);
        let mut x = self.embeddings_norm.forward(x);
        // [B, 1, 1, T] → [B, H, T, T]: true where the key is padding.
        let padded: Option<Tensor<4, Bool>> = attention_mask.map(|m| {
            m.equal_elem(0)
                .reshape([b, 1, 1, t])
                .expand([b, self.n_heads, t, t])
        });
        for layer in &self.layers {
            let q = split_heads(layer.query.forward(x.clone()), self.n_heads);
            let k = split_heads(layer.key.forward(x.clone()), self.n_heads);
            let v = split_heads(layer.value.forward(x.clone()), self.n_heads);
            let dh = q.dims()[3];
            let mut scores = q
                .matmul(k.swap_dims(2, 3))
                .mul_scalar(1.0 / (dh as f64).sqrt());
            if let Some(padded) = &padded {
                // f32::MIN, not -inf: softmax stays finite on every backend (transformers does
                // the same with finfo.min).
                scores = scores.mask_fill(padded.clone(), f32::MIN);
            }
            let attn = merge_heads(burn::tensor::activation::softmax(scores, 3).matmul(v));
            x = layer
                .attention_norm
                .forward(layer.attention_output.forward(attn) + x);
            let h = self
                .activation
                .forward(layer.intermediate.forward(x.clone()));
            x = layer.output_norm.forward(layer.output.forward(h) + x);
        }
        x
    }

    /// `tanh(dense(h[:, 0]))` from last hidden states `[B, T, hidden]` → `[B, hidden]`, or
    /// `None` when the checkpoint has no pooler.
    pub fn pooler_output(&self, hidden: Tensor<3>) -> Option<Tensor<2>> {
        let pooler = self.pooler.as_ref()?;
        Some(pooler.forward(cls(hidden)).tanh())
    }

    /// One vector per sequence, `[B, hidden]`. Pooler pooling on a checkpoint without a pooler
    /// is a config error.
    pub fn pool(
        &self,
        hidden: Tensor<3>,
        attention_mask: Option<Tensor<2, Int>>,
        pooling: Pooling,
    ) -> Result<Tensor<2>> {
        match pooling {
            Pooling::Cls => Ok(cls(hidden)),
            Pooling::Mean => Ok(mean_pool(hidden, attention_mask)),
            Pooling::Pooler => self.pooler_output(hidden).ok_or_else(|| {
                Error::config(
                    "this checkpoint has no pooler; choose \"cls\" or \"mean\" pooling instead",
                )
            }),
        }
    }

    /// The encoder alone: a classification head, if any, dropped.
    pub fn without_classifier(mut self) -> Self {
        self.classifier = None;
        self
    }

    /// Classification logits `[B, num_labels]` from pooled vectors `[B, hidden]` (dropout, if
    /// any, is applied by the caller, which owns the random stream).
    pub fn classify(&self, pooled: Tensor<2>) -> Result<Tensor<2>> {
        let head = self.classifier.as_ref().ok_or_else(|| {
            Error::config("this model has no classification head; create one first")
        })?;
        Ok(head.forward(pooled))
    }

    /// The token embeddings `[vocab, d]`. An encoder is no language model: scoring its hidden
    /// states against them exists so that `CausalLm` stays total; webtune's causal entry points
    /// refuse encoders before they get here (see `CausalLm::check_causal`).
    pub fn word_embeddings(&self) -> Tensor<2> {
        self.word_embeddings.val()
    }
}

fn cls(hidden: Tensor<3>) -> Tensor<2> {
    let [b, _, d] = hidden.dims();
    hidden.narrow(1, 0, 1).reshape([b, d])
}

/// Mean over the positions where `attention_mask` is 1 (all positions without a mask).
pub fn mean_pool(hidden: Tensor<3>, attention_mask: Option<Tensor<2, Int>>) -> Tensor<2> {
    let [b, t, d] = hidden.dims();
    match attention_mask {
        None => hidden.mean_dim(1).reshape([b, d]),
        Some(m) => {
            let m = m.float().reshape([b, t, 1]);
            let sum = (hidden * m.clone()).sum_dim(1).reshape([b, d]);
            // sentence-transformers clamps the count at 1e-9.
            let count = m.sum_dim(1).reshape([b, 1]).clamp_min(1e-9);
            sum / count
        }
    }
}

/// Host-side helper: a `[rows, cols]` Int tensor from row-major data.
pub fn int_tensor(data: &[i64], rows: usize, cols: usize, device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(data.to_vec(), [rows, cols]), device)
}
// config.json → BertConfig, validated.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub pad_token_id: Option<u32>,
    pub hidden_dropout_prob: f64,
    /// Dropout before the classifier; transformers falls back to `hidden_dropout_prob`.
    pub classifier_dropout: Option<f64>,
    pub position_embedding_type: String,
    /// Class names by id, as strings (`{"0": "negative", …}`), when the checkpoint has a head.
    pub id2label: Option<BTreeMap<String, String>>,
    /// The pooling a head was trained with, written by webtune's export (transformers' head
    /// always uses the pooler).
    pub webtune_pooling: Option<Pooling>,
}

/// transformers' BertConfig defaults, for keys a config.json leaves out.
impl Default for BertConfig {
    fn default() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: None,
            hidden_dropout_prob: 0.1,
            classifier_dropout: None,
            position_embedding_type: "absolute".into(),
            id2label: None,
            webtune_pooling: None,
        }
    }
}

impl BertConfig {
    pub fn from_json(config: &Value) -> Result<Self> {
        let cfg: Self = serde_json::from_value(config.clone()).map_err(|e| {
            Error::new(
                Code::ModelConfigInvalid,
                format!("config.json is not a valid BERT config: {e}"),
            )
        })?;
        let bad = |m: String| Err(Error::new(Code::ModelConfigInvalid, m));
        if cfg.num_attention_heads == 0 || cfg.hidden_size % cfg.num_attention_heads != 0 {
            return bad(format!(
                "hidden_size ({}) must be a multiple of num_attention_heads ({})",
                cfg.hidden_size, cfg.num_attention_heads
            ));
        }
        if cfg.vocab_size == 0
            || cfg.max_position_embeddings == 0
            || cfg.num_hidden_layers == 0
            || cfg.type_vocab_size == 0
        {
            return bad(
                "vocab_size, max_position_embeddings, num_hidden_layers and type_vocab_size must be positive"
                    .into(),
            );
        }
        if cfg.hidden_size == 0 || cfg.intermediate_size == 0 {
            return bad("hidden_size and intermediate_size must be positive".into());
        }
        super::check_config_sizes(
            "BERT",
            super::MAX_CONFIG_DIM,
            &[
                ("vocab_size", Some(cfg.vocab_size)),
                ("hidden_size", Some(cfg.hidden_size)),
                ("intermediate_size", Some(cfg.intermediate_size)),
                ("max_position_embeddings", Some(cfg.max_position_embeddings)),
                ("type_vocab_size", Some(cfg.type_vocab_size)),
            ],
        )?;
        super::check_config_sizes(
            "BERT",
            super::MAX_CONFIG_LAYERS,
            &[("num_hidden_layers", Some(cfg.num_hidden_layers))],
        )?;
        if Activation::parse(&cfg.hidden_act).is_none() {
            return bad(format!("hidden_act {:?} is not supported", cfg.hidden_act));
        }
        if cfg.position_embedding_type != "absolute" {
            return bad(format!(
                "position_embedding_type {:?} is not supported (only \"absolute\")",
                cfg.position_embedding_type
            ));
        }
        Ok(cfg)
    }

    /// Class names in id order, when config.json names them (`id2label`).
    pub fn labels(&self) -> Option<Vec<String>> {
        let map = self.id2label.as_ref()?;
        let mut pairs: Vec<(usize, &String)> = map
            .iter()
            .filter_map(|(k, v)| k.parse().ok().map(|k| (k, v)))
            .collect();
        pairs.sort();
        let labels: Vec<String> = pairs.iter().map(|(_, v)| (*v).clone()).collect();
        // Ids must be exactly 0..n for the classifier rows to mean anything.
        let dense = pairs.iter().enumerate().all(|(i, (k, _))| i == *k);
        (dense && !labels.is_empty()).then_some(labels)
    }

    pub fn summary(&self) -> Value {
        json!({
            "architecture": "bert",
            "layers": self.num_hidden_layers,
            "hidden_size": self.hidden_size,
            "heads": self.num_attention_heads,
            "vocab_size": self.vocab_size,
            "max_positions": self.max_position_embeddings,
        })
    }
}
