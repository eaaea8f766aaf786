//! The toy model of the foundation: one pre-LayerNorm transformer block (causal self-attention
//! and a GELU MLP) with learned token and position embeddings. Small enough to train in seconds
//! on any backend, yet it exercises every op the real families use (embedding lookup, matmul,
//! softmax with a causal mask, layer norm, GELU, cross-entropy), so it proves the whole path.

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::activation::gelu;
use burn::tensor::module::embedding;
use serde::{Deserialize, Serialize};

use super::layers::{causal_attention, layer_norm, linear, merge_heads, normal_param, split_heads};
use crate::error::{Error, Result};
use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToyModelConfig {
    pub vocab: usize,
    pub seq_len: usize,
    pub d_model: usize,
    pub heads: usize,
}

impl Default for ToyModelConfig {
    fn default() -> Self {
        Self {
            vocab: 16,
            seq_len: 16,
            d_model: 32,
            heads: 2,
        }
    }
}

impl ToyModelConfig {
    pub fn validate(&self) -> Result<()> {
        if !(2..=4096).contains(&self.vocab) {
            return Err(Error::config(format!(
                "vocab must be between 2 and 4096, got {}",
                self.vocab
            )));
        }
        if !(2..=1024).contains(&self.seq_len) {
            return Err(Error::config(format!(
                "seq_len must be between 2 and 1024, got {}",
                self.seq_len
            )));
        }
        if self.heads == 0 || self.d_model == 0 || self.d_model % self.heads != 0 {
            return Err(Error::config(format!(
                "d_model ({}) must be a positive multiple of heads ({})",
                self.d_model, self.heads
            )));
        }
        if self.d_model > 1024 {
            return Err(Error::config(format!(
                "d_model must be at most 1024 for the toy model, got {}",
                self.d_model
            )));
        }
        Ok(())
    }
}

#[derive(Module, Debug)]
pub struct ToyModel {
    token_embedding: Param<Tensor<2>>,
    position_embedding: Param<Tensor<2>>,
    ln_attn: LayerNorm,
    qkv: Linear,
    attn_out: Linear,
    ln_mlp: LayerNorm,
    mlp_in: Linear,
    mlp_out: Linear,
    ln_final: LayerNorm,
    head: Linear,
    #[module(skip)]
    heads: usize,
}

impl ToyModel {
    /// Initialise from `rng`, GPT-2 style (N(0, 0.02²) weights, zero biases, unit norms).
    pub fn new(config: &ToyModelConfig, rng: &mut Rng, device: &Device) -> Self {
        let d = config.d_model;
        let std = 0.02;
        Self {
            token_embedding: normal_param(rng, [config.vocab, d], std, device),
            position_embedding: normal_param(rng, [config.seq_len, d], std, device),
            ln_attn: layer_norm(d, 1e-5, device),
            qkv: linear(rng, d, 3 * d, std, true, device),
            attn_out: linear(rng, d, d, std, true, device),
            ln_mlp: layer_norm(d, 1e-5, device),
            mlp_in: linear(rng, d, 4 * d, std, true, device),
            mlp_out: linear(rng, 4 * d, d, std, true, device),
            ln_final: layer_norm(d, 1e-5, device),
            head: linear(rng, d, config.vocab, std, false, device),
            heads: config.heads,
        }
    }

    /// Token ids `[B, T]` → logits `[B, T, vocab]`.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let [_, t] = tokens.dims();
        let positions = self
            .position_embedding
            .val()
            .narrow(0, 0, t)
            .unsqueeze::<3>();
        let x = embedding(self.token_embedding.val(), tokens) + positions;

        let d = x.dims()[2];
        let qkv = self.qkv.forward(self.ln_attn.forward(x.clone()));
        let heads = |i: usize| split_heads(qkv.clone().narrow(2, i * d, d), self.heads);
        let attn = causal_attention(heads(0), heads(1), heads(2));
        let x = x + self.attn_out.forward(merge_heads(attn));

        let h = gelu(self.mlp_in.forward(self.ln_mlp.forward(x.clone())));
        let x = x + self.mlp_out.forward(h);

        self.head.forward(self.ln_final.forward(x))
    }
}
