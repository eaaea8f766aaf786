//! Model families. Each family reads top to bottom in its own file; building blocks shared by
//! several families live in `layers`.

pub mod bert;
pub mod frozen;
pub mod gpt2;
pub mod layers;
pub mod llama;
pub mod loaded;
pub mod names;
pub mod shapes;
pub mod swiglu;
pub mod toy;
pub mod walk;

use burn::prelude::*;

use crate::error::{Code, Error};

/// A loaded model's shape as its family computes it (`loaded::ModelInfo` shows it flattened).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Dims {
    pub parameters: usize,
    pub layers: usize,
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    pub heads: usize,
    pub vocab_size: usize,
    pub max_positions: usize,
    /// Weights each token is multiplied by in a forward pass: every linear layer, plus the LM
    /// head (also when it is the tied embedding) and a classification head. A forward pass costs
    /// 2 FLOPs per such weight and token, plus attention (see `attention_width`);
    /// `cargo xtask bench` turns step times into FLOP/s with it.
    pub matmul_weights: usize,
    /// Width of the attention's dot products (heads × head dim): scores and the weighted sum
    /// cost 4 · layers · context · attention_width FLOPs per token.
    pub attention_width: usize,
    /// Values per token and layer the MLP keeps for the backward pass, in units of
    /// `intermediate_size`: 2 for the fused `silu(g)·u` (`models::swiglu`), 4 for an MLP of
    /// plain tensor ops (GELU's input, its intermediates and output).
    #[serde(skip)]
    pub mlp_kept: usize,
}

/// The largest size webtune accepts for one dimension read from a config.json (hidden size,
/// vocabulary, positions, heads × head size…). Real checkpoints stay far below it; a corrupt or
/// hostile config cannot make the loader compute overflowing shapes or reserve absurd memory.
pub const MAX_CONFIG_DIM: usize = 1 << 24;
/// The most layers a config.json may declare.
pub const MAX_CONFIG_LAYERS: usize = 4096;

/// `model.config_invalid` unless every `(name, value)` is at most `max` (`None`: overflowed).
pub(crate) fn check_config_sizes(
    family: &str,
    max: usize,
    sizes: &[(&str, Option<usize>)],
) -> crate::error::Result<()> {
    for (name, value) in sizes {
        if value.is_none_or(|v| v > max) {
            let shown = value.map_or_else(|| "an overflowing value".to_string(), |v| v.to_string());
            return Err(Error::new(
                Code::ModelConfigInvalid,
                format!(
                    "config.json gives {name} = {shown}, more than webtune accepts for a {family} \
                     model ({max}); the file is corrupt or not a {family} config"
                ),
            )
            .with_details(serde_json::json!({ "key": name, "max": max })));
        }
    }
    Ok(())
}

/// A model that predicts the next token.
pub trait CausalLm {
    /// Token ids `[B, T]` → the final hidden states `[B, T, d]`, continuing `cache` when given.
    fn hidden(&self, tokens: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<3>;
    /// The LM head `[vocab, d]` that turns hidden states into logits.
    fn head(&self) -> Tensor<2>;
    /// Token ids `[B, T]` → logits `[B, T, vocab]`, continuing `cache` when given. Training and
    /// evaluation score targets from `hidden` and `head` without forming all the logits
    /// ([`crate::train::loss`]); generation needs only the last position's.
    fn forward(&self, tokens: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<3> {
        layers::lm_head_logits(self.hidden(tokens, cache), self.head())
    }
    /// Longest sequence the model accepts.
    fn max_positions(&self) -> usize;
    /// Whether `forward` predicts next tokens. Encoders (BERT) answer with a config error that
    /// names the model kind; generation and causal fine-tuning call this first.
    fn check_causal(&self) -> crate::error::Result<()> {
        Ok(())
    }
}

impl CausalLm for gpt2::Gpt2 {
    fn hidden(&self, tokens: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<3> {
        gpt2::Gpt2::hidden(self, tokens, cache)
    }
    fn head(&self) -> Tensor<2> {
        gpt2::Gpt2::head(self)
    }
    fn max_positions(&self) -> usize {
        gpt2::Gpt2::max_positions(self)
    }
}

impl CausalLm for llama::Llama {
    fn hidden(&self, tokens: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<3> {
        llama::Llama::hidden(self, tokens, cache)
    }
    fn head(&self) -> Tensor<2> {
        llama::Llama::head(self)
    }
    fn max_positions(&self) -> usize {
        llama::Llama::max_positions(self)
    }
}

/// Keys and values of past positions, per layer, so that generating a token costs one position.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    /// Positions cached so far.
    pub len: usize,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append this step's `k, v` (`[B, H, T, Dh]`) for `layer` and return the full sequences.
    pub fn extend(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        if self.layers.len() <= layer {
            self.layers.resize_with(layer + 1, || None);
        }
        let (k, v) = match self.layers[layer].take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        self.layers[layer] = Some((k.clone(), v.clone()));
        (k, v)
    }
}
