//! Llama and its close relatives (SmolLM, TinyLlama, Qwen2, Mistral): token embedding,
//! pre-RMSNorm blocks, rotary position embeddings (plain, linear, Llama 3.1 or per-frequency
//! factors), grouped-query causal attention (within a sliding window where the config says so),
//! SwiGLU MLP, and an LM head that may be tied to the embedding.
//!
//! Hugging Face stores every projection as `nn.Linear`, weight `[out, in]`; burn's `Linear`
//! keeps `[in, out]`, so each projection is transposed once at load time.
//!
//! Rotary embeddings use transformers' `rotate_half` layout: a head's first half is paired with
//! its second half (`x[i]` with `x[i + Dh/2]`). llama.cpp pairs neighbours instead and its
//! converter permutes the rows of `q_proj`/`k_proj` to match; `io::gguf` undoes that, so weights
//! reach this file in the Hugging Face layout whatever file they came from.

use burn::module::Param;
use burn::nn::{Linear, RmsNorm};
use burn::prelude::*;
use burn::tensor::module::embedding;
use burn::tensor::TensorData;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

use super::layers::{
    causal_attention_window, linear_forward, lm_head_logits, load_linear, merge_heads, split_heads,
    Activation, TrainDropout,
};
use super::names::LLAMA;
use super::swiglu::swiglu;
use super::{Dims, KvCache};
use crate::error::{Code, Error, Result};
use crate::io::hf::Weights;

#[derive(Module, Debug)]
pub struct Block {
    input_norm: RmsNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    post_norm: RmsNorm,
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

#[derive(Module, Debug)]
pub struct Llama {
    embed_tokens: Param<Tensor<2>>,
    blocks: Vec<Block>,
    norm: RmsNorm,
    /// `[vocab, d]`; `None` when tied to `embed_tokens`.
    lm_head: Option<Param<Tensor<2>>>,
    #[module(skip)]
    n_heads: usize,
    #[module(skip)]
    n_kv_heads: usize,
    #[module(skip)]
    inv_freq: Vec<f32>,
    /// Per layer, the sliding window of its attention (`None`: all past positions).
    #[module(skip)]
    windows: Vec<Option<usize>>,
    #[module(skip)]
    max_positions: usize,
    #[module(skip)]
    activation: Activation,
    /// config.json's `attention_dropout`.
    #[module(skip)]
    attention_dropout: f64,
    /// The dropout applied while training (all zero unless fine-tuning turned it on).
    #[module(skip)]
    dropout: TrainDropout,
}

fn load_norm(w: &Weights, path: &str, d: usize, eps: f64, device: &Device) -> Result<RmsNorm> {
    Ok(RmsNorm {
        gamma: Param::from_tensor(w.param(&LLAMA, &format!("{path}.gamma"), [d], device)?),
        epsilon: eps,
    })
}

impl Llama {
    pub fn load(config: &LlamaConfig, w: &Weights, device: &Device) -> Result<Self> {
        let d = config.hidden_size;
        let eps = config.rms_norm_eps;
        let (h, kv, dh) = (
            config.num_attention_heads,
            config.kv_heads(),
            config.head_dim(),
        );
        let ff = config.intermediate_size;
        let (qkv_bias, o_bias, mlp_bias) = (config.qkv_bias(), config.o_bias(), config.mlp_bias);
        // Grown as layers load (not reserved from the config's count).
        let mut blocks = Vec::new();
        for i in 0..config.num_hidden_layers {
            let p = format!("blocks.{i}");
            let attn = |n: &str, d_in, d_out, bias| {
                load_linear(w, &LLAMA, &format!("{p}.{n}"), (d_in, d_out), bias, device)
            };
            let mlp = |n: &str, d_in, d_out| {
                load_linear(
                    w,
                    &LLAMA,
                    &format!("{p}.{n}"),
                    (d_in, d_out),
                    mlp_bias,
                    device,
                )
            };
            blocks.push(Block {
                input_norm: load_norm(w, &format!("{p}.input_norm"), d, eps, device)?,
                q_proj: attn("q_proj", d, h * dh, qkv_bias)?,
                k_proj: attn("k_proj", d, kv * dh, qkv_bias)?,
                v_proj: attn("v_proj", d, kv * dh, qkv_bias)?,
                o_proj: attn("o_proj", h * dh, d, o_bias)?,
                post_norm: load_norm(w, &format!("{p}.post_norm"), d, eps, device)?,
                gate_proj: mlp("gate_proj", d, ff)?,
                up_proj: mlp("up_proj", d, ff)?,
                down_proj: mlp("down_proj", ff, d)?,
            });
        }
        // A tied checkpoint may still carry a copy of the head; transformers ignores it.
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(Param::from_tensor(w.param(
                &LLAMA,
                "lm_head",
                [config.vocab_size, d],
                device,
            )?))
        };
        Ok(Self {
            embed_tokens: Param::from_tensor(w.param(
                &LLAMA,
                "embed_tokens",
                [config.vocab_size, d],
                device,
            )?),
            blocks,
            norm: load_norm(w, "norm", d, eps, device)?,
            lm_head,
            n_heads: h,
            n_kv_heads: kv,
            inv_freq: inverse_frequencies(config.theta(), dh, &config.rope()?),
            windows: config.layer_windows()?,
            max_positions: config.max_positions(),
            activation: Activation::parse(&config.hidden_act).unwrap_or(Activation::Silu),
            attention_dropout: config.attention_dropout,
            dropout: TrainDropout::default(),
        })
    }

    /// Sizes and per-token work, for `ModelInfo`.
    pub fn dims(&self, config: &LlamaConfig) -> Dims {
        let d = config.hidden_size;
        let ff = config.intermediate_size;
        let q_width = config.num_attention_heads * config.head_dim();
        let kv_width = config.kv_heads() * config.head_dim();
        Dims {
            parameters: self.num_params(),
            layers: config.num_hidden_layers,
            hidden_size: d,
            intermediate_size: ff,
            heads: config.num_attention_heads,
            vocab_size: config.vocab_size,
            max_positions: config.max_positions(),
            // q, k, v, o; gate, up, down; the LM head (tied or not).
            matmul_weights: config.num_hidden_layers
                * (2 * d * q_width + 2 * d * kv_width + 3 * d * ff)
                + config.vocab_size * d,
            attention_width: q_width,
            // The fused `silu(g)·u` keeps its two inputs (`models::swiglu`); another
            // activation runs as plain tensor ops.
            mlp_kept: match self.activation {
                Activation::Silu => 2,
                _ => 4,
            },
        }
    }

    /// Dropout while training: config.json's `attention_dropout` when `model` is set, and
    /// `lora` on the input of every LoRA branch. Inference never drops anything.
    pub fn set_train_dropout(&mut self, model: bool, lora: f64) {
        self.dropout = TrainDropout {
            attn: if model { self.attention_dropout } else { 0.0 },
            lora,
            ..TrainDropout::default()
        };
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// `cos` and `sin` for positions `start..start + t`, each `[1, 1, T, Dh]` with the
    /// frequencies repeated for both halves (transformers' `cat(freqs, freqs)`).
    fn rotary_tables(&self, start: usize, t: usize, device: &Device) -> (Tensor<4>, Tensor<4>) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(t * 2 * half);
        let mut sin = Vec::with_capacity(t * 2 * half);
        for pos in start..start + t {
            for _ in 0..2 {
                for &f in &self.inv_freq {
                    // The angle is rounded to f32 as in transformers; cos/sin are then exact.
                    let angle = (pos as f32 * f) as f64;
                    cos.push(angle.cos() as f32);
                    sin.push(angle.sin() as f32);
                }
            }
        }
        let table =
            |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [1, 1, t, 2 * half]), device);
        (table(cos), table(sin))
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
            None => self.embed_tokens.val(),
        }
    }

    /// Token ids `[B, T]` → the final hidden states `[B, T, d]` the LM head reads.
    pub fn hidden(&self, tokens: Tensor<2, Int>, mut cache: Option<&mut KvCache>) -> Tensor<3> {
        let [_, t] = tokens.dims();
        let device = tokens.device();
        let past = cache.as_ref().map_or(0, |c| c.len);
        let (cos, sin) = self.rotary_tables(past, t, &device);
        let rotate = |x: Tensor<4>| {
            // rotate_half: [x1, x2] → [-x2, x1].
            let half = x.dims()[3] / 2;
            let x1 = x.clone().narrow(3, 0, half);
            let x2 = x.clone().narrow(3, half, half);
            let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
            x * cos.clone() + rotated * sin.clone()
        };
        let group = self.n_heads / self.n_kv_heads;
        let drop = self.dropout;
        let proj = |layer: &Linear, x: Tensor<3>| linear_forward(layer, x, drop.lora);
        let mut x = embedding(self.embed_tokens.val(), tokens);
        for (i, block) in self.blocks.iter().enumerate() {
            let h = block.input_norm.forward(x.clone());
            let q = rotate(split_heads(proj(&block.q_proj, h.clone()), self.n_heads));
            let mut k = rotate(split_heads(proj(&block.k_proj, h.clone()), self.n_kv_heads));
            let mut v = split_heads(proj(&block.v_proj, h), self.n_kv_heads);
            // The cache keeps the KV heads unrepeated; each serves `group` query heads. It keeps
            // every past position, even those a sliding window no longer reaches (the mask
            // skips them), so the cache grows as it does without a window.
            if let Some(cache) = cache.as_deref_mut() {
                (k, v) = cache.extend(i, k, v);
            }
            let attn = merge_heads(causal_attention_window(
                q,
                repeat_kv(k, group),
                repeat_kv(v, group),
                drop.attn,
                self.windows.get(i).copied().flatten(),
            ));
            x = x + proj(&block.o_proj, attn);
            let h = block.post_norm.forward(x.clone());
            let gate = proj(&block.gate_proj, h.clone());
            let up = proj(&block.up_proj, h);
            let inner = match self.activation {
                // One op that keeps only its inputs for the backward pass (`models::swiglu`).
                Activation::Silu => swiglu(gate, up),
                act => act.forward(gate) * up,
            };
            x = x + proj(&block.down_proj, inner);
        }
        if let Some(cache) = cache {
            cache.len += t;
        }
        self.norm.forward(x)
    }
}

/// `[B, KV, T, Dh]` → `[B, KV·group, T, Dh]`, each KV head repeated for consecutive query heads
/// (transformers' `repeat_kv`).
fn repeat_kv(x: Tensor<4>, group: usize) -> Tensor<4> {
    if group == 1 {
        return x;
    }
    let [b, kv, t, dh] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, kv, group, t, dh])
        .reshape([b, kv * group, t, dh])
}

// config.json → LlamaConfig, validated, and the rotary frequencies it implies.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LlamaConfig {
    /// `llama`, `qwen2` or `mistral`.
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Defaults to `num_attention_heads` (plain multi-head attention).
    pub num_key_value_heads: Option<usize>,
    /// Defaults to `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    pub rms_norm_eps: f64,
    /// transformers < 5 keeps it at the top level, 5.x under `rope_parameters`.
    pub rope_theta: Option<f64>,
    pub rope_parameters: Option<RopeParameters>,
    /// The pre-5.x name of `rope_parameters` (without the theta).
    pub rope_scaling: Option<RopeParameters>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    pub hidden_act: String,
    /// Mistral and Qwen2: how many positions (itself included) a sliding-window layer attends
    /// to. `None`: the key is absent, which transformers reads as 4096 for both; `Some(None)`:
    /// `null`, no window. Which layers slide is [`LlamaConfig::layer_windows`].
    #[serde(
        default,
        deserialize_with = "null_or_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub sliding_window: Option<Option<usize>>,
    /// Qwen2: whether `sliding_window` applies at all (transformers' default: no).
    pub use_sliding_window: Option<bool>,
    /// Qwen2: without `layer_types`, the layers from this index on slide (default 28).
    pub max_window_layers: Option<usize>,
    /// Qwen2 (transformers 5): `full_attention` or `sliding_attention`, one per layer.
    pub layer_types: Option<Vec<String>>,
    #[serde(default, deserialize_with = "id_or_list")]
    pub bos_token_id: Option<u32>,
    #[serde(default, deserialize_with = "id_or_list")]
    pub eos_token_id: Option<u32>,
    /// Dropout on the attention probabilities while fine-tuning with `model_dropout` on
    /// (transformers' default, and SmolLM2's, is 0).
    pub attention_dropout: f64,
}

/// transformers' LlamaConfig defaults, for keys a config.json leaves out.
impl Default for LlamaConfig {
    fn default() -> Self {
        Self {
            model_type: "llama".into(),
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: None,
            head_dim: None,
            rms_norm_eps: 1e-6,
            rope_theta: None,
            rope_parameters: None,
            rope_scaling: None,
            max_position_embeddings: 2048,
            tie_word_embeddings: false,
            attention_bias: false,
            mlp_bias: false,
            hidden_act: "silu".into(),
            sliding_window: None,
            use_sliding_window: None,
            max_window_layers: None,
            layer_types: None,
            bos_token_id: None,
            eos_token_id: None,
            attention_dropout: 0.0,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RopeParameters {
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// `default`, `linear`, `llama3` or `longrope` (older files say `type`).
    #[serde(default, alias = "type")]
    pub rope_type: Option<String>,
    #[serde(default)]
    pub factor: Option<f64>,
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<f64>,
    /// `longrope`: divisors of the frequencies, one per frequency, for sequences up to
    /// `original_max_position_embeddings` (short) and beyond (long).
    #[serde(default)]
    pub short_factor: Option<Vec<f64>>,
    #[serde(default)]
    pub long_factor: Option<Vec<f64>>,
    /// `longrope`: a scale on cos and sin.
    #[serde(default)]
    pub attention_factor: Option<f64>,
}

/// Tells an absent key (`None`, via `#[serde(default)]`) from an explicit `null` (`Some(None)`).
fn null_or_value<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<usize>>, D::Error> {
    Option::<usize>::deserialize(d).map(Some)
}

/// `eos_token_id` is an int, a list of ints (Llama 3: several end tokens) or null; the first
/// id is the one webtune stops at by default.
fn id_or_list<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u32>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    Ok(match v {
        Some(Value::Number(n)) => n.as_u64().map(|n| n as u32),
        Some(Value::Array(a)) => a.first().and_then(Value::as_u64).map(|n| n as u32),
        _ => None,
    })
}

impl LlamaConfig {
    pub fn from_json(config: &Value) -> Result<Self> {
        let cfg: Self = serde_json::from_value(config.clone()).map_err(|e| {
            Error::new(
                Code::ModelConfigInvalid,
                format!("config.json is not a valid Llama-family config: {e}"),
            )
        })?;
        let bad = |m: String| Err(Error::new(Code::ModelConfigInvalid, m));
        let p = cfg.attention_dropout;
        if !(p.is_finite() && (0.0..1.0).contains(&p)) {
            return bad(format!("attention_dropout must be in [0, 1), got {p}"));
        }
        let (heads, kv) = (cfg.num_attention_heads, cfg.kv_heads());
        if heads == 0 || kv == 0 || heads % kv != 0 {
            return bad(format!(
                "num_attention_heads ({heads}) must be a positive multiple of num_key_value_heads ({kv})"
            ));
        }
        if cfg.head_dim.is_none() && cfg.hidden_size % heads != 0 {
            return bad(format!(
                "hidden_size ({}) must be a multiple of num_attention_heads ({heads}) when head_dim is not given",
                cfg.hidden_size
            ));
        }
        if cfg.head_dim() == 0 || cfg.head_dim() % 2 != 0 {
            return bad(format!(
                "head_dim ({}) must be even and positive for rotary embeddings",
                cfg.head_dim()
            ));
        }
        if cfg.vocab_size == 0
            || cfg.hidden_size == 0
            || cfg.intermediate_size == 0
            || cfg.num_hidden_layers == 0
            || cfg.max_position_embeddings == 0
        {
            return bad("vocab_size, hidden_size, intermediate_size, num_hidden_layers and max_position_embeddings must be positive".into());
        }
        let max = super::MAX_CONFIG_DIM;
        super::check_config_sizes(
            "Llama-family",
            max,
            &[
                ("vocab_size", Some(cfg.vocab_size)),
                ("hidden_size", Some(cfg.hidden_size)),
                ("intermediate_size", Some(cfg.intermediate_size)),
                ("head_dim", Some(cfg.head_dim())),
                (
                    "num_attention_heads × head_dim",
                    heads.checked_mul(cfg.head_dim()),
                ),
                (
                    "num_key_value_heads × head_dim",
                    kv.checked_mul(cfg.head_dim()),
                ),
            ],
        )?;
        super::check_config_sizes(
            "Llama-family",
            super::MAX_CONFIG_LAYERS,
            &[("num_hidden_layers", Some(cfg.num_hidden_layers))],
        )?;
        if !(cfg.rms_norm_eps.is_finite() && cfg.rms_norm_eps > 0.0) {
            return bad(format!(
                "rms_norm_eps ({}) must be positive",
                cfg.rms_norm_eps
            ));
        }
        if !(cfg.theta().is_finite() && cfg.theta() > 0.0) {
            return bad(format!("rope_theta ({}) must be positive", cfg.theta()));
        }
        if Activation::parse(&cfg.hidden_act).is_none() {
            return bad(format!("hidden_act {:?} is not supported", cfg.hidden_act));
        }
        cfg.rope()?;
        cfg.layer_windows()?;
        Ok(cfg)
    }

    /// Without the key, transformers' defaults: 8 for Mistral (`MistralConfig`), the number of
    /// attention heads (no grouping) for Llama and Qwen2.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads
            .unwrap_or(if self.model_type == "mistral" {
                8
            } else {
                self.num_attention_heads
            })
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    pub fn theta(&self) -> f64 {
        self.rope_theta
            .or(self.rope_parameters.as_ref().and_then(|r| r.rope_theta))
            .unwrap_or(10000.0)
    }

    /// Qwen2 always has q/k/v biases and no output bias; Llama has all four or none.
    fn qkv_bias(&self) -> bool {
        self.model_type == "qwen2" || self.attention_bias
    }

    fn o_bias(&self) -> bool {
        self.model_type != "qwen2" && self.attention_bias
    }

    /// Longest sequence the model takes (a sliding window does not shorten it).
    pub fn max_positions(&self) -> usize {
        self.max_position_embeddings
    }

    /// Per layer, the sliding window it attends within (`None`: the whole causal context), as
    /// transformers decides it. Mistral slides every layer unless `sliding_window` is null
    /// (MistralModel ignores `use_sliding_window` and `layer_types`). Qwen2 slides only with
    /// `use_sliding_window`, and then the layers `layer_types` marks `sliding_attention` (by
    /// default those from `max_window_layers` on). Llama has no window.
    pub fn layer_windows(&self) -> Result<Vec<Option<usize>>> {
        let n = self.num_hidden_layers;
        let bad = |m: String| Error::new(Code::ModelConfigInvalid, m);
        // Absent: MistralConfig's and Qwen2Config's default.
        let window = self.sliding_window.unwrap_or(Some(4096));
        let checked = |w: Option<usize>| match w {
            Some(0) => Err(bad(
                "sliding_window must be a positive number of positions (or null for none)".into(),
            )),
            w => Ok(w),
        };
        match self.model_type.as_str() {
            "mistral" => Ok(vec![checked(window)?; n]),
            "qwen2" => {
                let window = if self.use_sliding_window == Some(true) {
                    checked(window)?
                } else {
                    None
                };
                let first_sliding = self.max_window_layers.unwrap_or(28);
                let types: Vec<&str> = match &self.layer_types {
                    Some(t) => t.iter().map(String::as_str).collect(),
                    None => (0..n)
                        .map(|i| match window {
                            Some(_) if i >= first_sliding => "sliding_attention",
                            _ => "full_attention",
                        })
                        .collect(),
                };
                if types.len() != n {
                    return Err(bad(format!(
                        "layer_types has {} entries but num_hidden_layers is {n}",
                        types.len()
                    )));
                }
                types
                    .iter()
                    .enumerate()
                    .map(|(i, ty)| match *ty {
                        "full_attention" => Ok(None),
                        "sliding_attention" => window.map(Some).ok_or_else(|| {
                            bad(format!(
                                "layer_types marks layer {i} sliding_attention, but no window is set (use_sliding_window is not true, or sliding_window is null); transformers refuses this config too"
                            ))
                        }),
                        other => Err(bad(format!(
                            "layer_types[{i}] is {other:?}; webtune knows full_attention and sliding_attention"
                        ))),
                    })
                    .collect()
            }
            _ => Ok(vec![None; n]),
        }
    }

    fn rope(&self) -> Result<Rope> {
        let p = self
            .rope_parameters
            .as_ref()
            .or(self.rope_scaling.as_ref())
            .cloned()
            .unwrap_or_default();
        let kind = p.rope_type.clone().unwrap_or_else(|| "default".into());
        let factor = p.factor;
        let need = |what: Option<f64>, name: &str| {
            what.filter(|v| v.is_finite() && *v > 0.0).ok_or_else(|| {
                Error::new(
                    Code::ModelConfigInvalid,
                    format!("rope type {kind:?} needs a positive {name}"),
                )
            })
        };
        let half = self.head_dim() / 2;
        let factors = |v: Option<&Vec<f64>>, name: &str| -> Result<Vec<f64>> {
            match v {
                Some(f) if f.len() == half && f.iter().all(|x| x.is_finite() && *x > 0.0) => {
                    Ok(f.clone())
                }
                _ => Err(Error::new(
                    Code::ModelConfigInvalid,
                    format!(
                        "rope type {kind:?} needs {name}: {half} positive numbers (head_dim / 2)"
                    ),
                )),
            }
        };
        Ok(match kind.as_str() {
            "default" => Rope::Default,
            "linear" => Rope::Linear(need(factor, "factor")?),
            "llama3" => Rope::Llama3 {
                factor: need(factor, "factor")?,
                low: need(p.low_freq_factor, "low_freq_factor")?,
                high: need(p.high_freq_factor, "high_freq_factor")?,
                original: need(
                    p.original_max_position_embeddings,
                    "original_max_position_embeddings",
                )?,
            },
            // transformers' spelling of fixed per-frequency divisors; `io::gguf` turns llama.cpp's
            // `rope_freqs.weight` into it. Phi-3's form, which switches factor sets and scales
            // cos/sin, is refused rather than half-implemented.
            "longrope" => {
                let short = factors(p.short_factor.as_ref(), "short_factor")?;
                if factors(p.long_factor.as_ref(), "long_factor")? != short {
                    return Err(Error::new(
                        Code::ModelConfigInvalid,
                        "rope type \"longrope\" with different short_factor and long_factor (Phi-3 style: the factors change once a sequence outgrows original_max_position_embeddings) is not supported; webtune reads longrope only as fixed per-frequency factors",
                    ));
                }
                let original = need(
                    p.original_max_position_embeddings,
                    "original_max_position_embeddings",
                )?;
                // transformers' default when attention_factor is absent.
                let factor = p
                    .factor
                    .unwrap_or(self.max_position_embeddings as f64 / original);
                let attention = p.attention_factor.unwrap_or(if factor <= 1.0 {
                    1.0
                } else {
                    (1.0 + factor.ln() / original.ln()).sqrt()
                });
                if attention != 1.0 {
                    return Err(Error::new(
                        Code::ModelConfigInvalid,
                        format!("rope type \"longrope\" with attention_factor {attention} (cos and sin scaled) is not supported; only 1 is"),
                    ));
                }
                Rope::Factors(short)
            }
            other => {
                return Err(Error::new(
                    Code::ModelConfigInvalid,
                    format!(
                    "rope type {other:?} is not supported (webtune has default, linear, llama3 and longrope with fixed factors)"
                ),
                ))
            }
        })
    }

    pub fn summary(&self) -> Value {
        json!({
            "architecture": self.model_type,
            "layers": self.num_hidden_layers,
            "hidden_size": self.hidden_size,
            "heads": self.num_attention_heads,
            "kv_heads": self.kv_heads(),
            "vocab_size": self.vocab_size,
            "max_positions": self.max_positions(),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Rope {
    Default,
    /// Positions divided by the factor.
    Linear(f64),
    /// Llama 3.1's frequency-dependent stretch.
    Llama3 {
        factor: f64,
        low: f64,
        high: f64,
        original: f64,
    },
    /// Frequency `i` divided by `factors[i]` (llama.cpp's `rope_freqs`, transformers' longrope
    /// with one set of factors).
    Factors(Vec<f64>),
}

/// Inverse frequencies `1 / θ^(2i/Dh)`, computed in f32 as transformers does, then rescaled.
fn inverse_frequencies(theta: f64, head_dim: usize, rope: &Rope) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            let base = (theta as f32).powf((2 * i) as f32 / head_dim as f32);
            let f = 1.0 / base;
            match *rope {
                Rope::Default => f,
                Rope::Linear(s) => f / s as f32,
                // As transformers' longrope computes it: 1 / (factor · θ^(2i/Dh)).
                Rope::Factors(ref factors) => {
                    1.0 / (factors.get(i).copied().unwrap_or(1.0) as f32 * base)
                }
                Rope::Llama3 {
                    factor,
                    low,
                    high,
                    original,
                } => {
                    let f = f as f64;
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    let (low_wavelen, high_wavelen) = (original / low, original / high);
                    let out = if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (original / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    };
                    out as f32
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eos_may_be_a_list() {
        let c =
            LlamaConfig::from_json(&json!({"eos_token_id": [128001, 128009], "bos_token_id": 1}))
                .unwrap();
        assert_eq!((c.eos_token_id, c.bos_token_id), (Some(128001), Some(1)));
        assert_eq!(c.kv_heads(), 32);
        assert_eq!(c.head_dim(), 128);
    }

    #[test]
    fn kv_heads_default_as_transformers_does() {
        let cfg = |v: serde_json::Value| LlamaConfig::from_json(&v).unwrap();
        let base = json!({"num_attention_heads": 32, "hidden_size": 4096});
        let mut mistral = base.clone();
        mistral["model_type"] = "mistral".into();
        assert_eq!(cfg(mistral).kv_heads(), 8);
        let mut llama = base.clone();
        llama["model_type"] = "llama".into();
        assert_eq!(cfg(llama).kv_heads(), 32);
        let mut explicit = base;
        explicit["model_type"] = "mistral".into();
        explicit["num_key_value_heads"] = 4.into();
        assert_eq!(cfg(explicit).kv_heads(), 4);
    }

    #[test]
    fn rope_theta_from_either_place() {
        let top = LlamaConfig::from_json(&json!({"rope_theta": 100000.0})).unwrap();
        let nested = LlamaConfig::from_json(
            &json!({"rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"}}),
        )
        .unwrap();
        let none = LlamaConfig::from_json(&json!({})).unwrap();
        assert_eq!(
            (top.theta(), nested.theta(), none.theta()),
            (100000.0, 500000.0, 10000.0)
        );
    }

    #[test]
    fn bad_configs_are_refused() {
        for c in [
            json!({"num_attention_heads": 6, "num_key_value_heads": 4}),
            json!({"hidden_size": 30, "num_attention_heads": 4}),
            json!({"rope_scaling": {"type": "yarn", "factor": 4.0}}),
            json!({"rope_scaling": {"rope_type": "linear"}}),
            json!({"hidden_act": "swishglu"}),
            json!({"num_hidden_layers": "two"}),
        ] {
            let err = LlamaConfig::from_json(&c).unwrap_err();
            assert_eq!(err.code, Code::ModelConfigInvalid, "{c}: {err}");
        }
    }

    fn windows(c: Value) -> Result<Vec<Option<usize>>> {
        LlamaConfig::from_json(&c).map(|c| c.layer_windows().unwrap())
    }

    #[test]
    fn sliding_windows_follow_transformers() {
        let layers = |extra: Value| {
            let mut c = json!({"num_hidden_layers": 3});
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            windows(c)
        };
        // Mistral: every layer, MistralConfig's 4096 when the key is absent, none when null.
        let m = |w: Value| layers(json!({"model_type": "mistral", "sliding_window": w}));
        assert_eq!(m(json!(8)).unwrap(), vec![Some(8); 3]);
        assert_eq!(m(Value::Null).unwrap(), vec![None; 3]);
        assert_eq!(
            layers(json!({"model_type": "mistral"})).unwrap(),
            vec![Some(4096); 3]
        );
        // Qwen2: only with use_sliding_window, from max_window_layers on or as layer_types says.
        let q = |extra: Value| {
            let mut c = json!({"model_type": "qwen2", "sliding_window": 16});
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            layers(c)
        };
        assert_eq!(q(json!({})).unwrap(), vec![None; 3]);
        assert_eq!(
            q(json!({"use_sliding_window": true, "max_window_layers": 1})).unwrap(),
            vec![None, Some(16), Some(16)]
        );
        let types = json!(["sliding_attention", "full_attention", "sliding_attention"]);
        assert_eq!(
            q(json!({"use_sliding_window": true, "layer_types": types})).unwrap(),
            vec![Some(16), None, Some(16)]
        );
        // Llama has no window, whatever the config carries.
        assert_eq!(
            layers(json!({"model_type": "llama", "sliding_window": 8})).unwrap(),
            vec![None; 3]
        );
        for bad in [
            json!({"model_type": "mistral", "sliding_window": 0}),
            json!({"model_type": "mistral", "sliding_window": "8"}),
            json!({"model_type": "qwen2", "use_sliding_window": false,
                   "layer_types": ["sliding_attention", "full_attention", "full_attention"]}),
            json!({"model_type": "qwen2", "layer_types": ["full_attention"]}),
            json!({"model_type": "qwen2", "layer_types": ["full_attention", "chunked_attention", "full_attention"]}),
        ] {
            let err = layers(bad.clone()).unwrap_err();
            assert_eq!(err.code, Code::ModelConfigInvalid, "{bad}: {err}");
        }
    }

    #[test]
    fn longrope_with_one_set_of_factors_divides_the_frequencies() {
        let cfg = |short: Value, long: Value, attention: Value| {
            LlamaConfig::from_json(&json!({
                "hidden_size": 32, "num_attention_heads": 4, "max_position_embeddings": 64,
                "rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0,
                    "short_factor": short, "long_factor": long, "attention_factor": attention,
                    "original_max_position_embeddings": 64}
            }))
        };
        let f = json!([1.0, 2.0, 4.0, 8.0]);
        let c = cfg(f.clone(), f.clone(), json!(1.0)).unwrap();
        let plain = inverse_frequencies(c.theta(), 8, &Rope::Default);
        let scaled = inverse_frequencies(c.theta(), 8, &c.rope().unwrap());
        for (i, div) in [1.0f32, 2.0, 4.0, 8.0].iter().enumerate() {
            assert!((scaled[i] * div / plain[i] - 1.0).abs() < 1e-6, "{i}");
        }
        // Without attention_factor, transformers' default is 1 here (factor 64 / 64).
        assert!(cfg(f.clone(), f.clone(), Value::Null).is_ok());
        for (short, long, attention) in [
            (f.clone(), json!([1.0, 2.0, 4.0, 9.0]), json!(1.0)),
            (f.clone(), f.clone(), json!(1.2)),
            (json!([1.0, 2.0]), json!([1.0, 2.0]), json!(1.0)),
            (
                json!([1.0, 2.0, 0.0, 8.0]),
                json!([1.0, 2.0, 0.0, 8.0]),
                json!(1.0),
            ),
        ] {
            let err = cfg(short, long, attention).unwrap_err();
            assert_eq!(err.code, Code::ModelConfigInvalid, "{err}");
        }
    }
}
