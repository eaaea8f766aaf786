//! Building blocks shared by the model families.

use burn::module::Param;
use burn::nn::{DropoutConfig, LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::module::linear as linear_op;
use burn::tensor::{Bool, TensorData};

use super::frozen::{frozen_matmul, is_quantized};
use crate::error::Result;
use crate::io::hf::Weights;
use crate::models::names::Table;
use crate::rng::Rng;

/// A parameter drawn from N(0, std²) with webtune's own generator, identical on every backend.
pub fn normal_param<const D: usize>(
    rng: &mut Rng,
    shape: [usize; D],
    std: f64,
    device: &Device,
) -> Param<Tensor<D>> {
    let n = shape.iter().product();
    Param::from_data(TensorData::new(rng.normal_vec(n, std), shape), device)
}

/// A `Linear` layer (weight stored `[d_in, d_out]`, as burn and Hugging Face's Conv1D do) with
/// normal-initialised weights and a zero bias.
pub fn linear(
    rng: &mut Rng,
    d_in: usize,
    d_out: usize,
    std: f64,
    bias: bool,
    device: &Device,
) -> Linear {
    Linear {
        weight: normal_param(rng, [d_in, d_out], std, device),
        bias: bias.then(|| Param::from_data(TensorData::zeros::<f32, _>([d_out]), device)),
    }
}

pub fn layer_norm(d_model: usize, epsilon: f64, device: &Device) -> LayerNorm {
    LayerNormConfig::new(d_model)
        .with_epsilon(epsilon)
        .init(device)
}

/// A linear layer by its burn path (`blocks.0.c_attn`), read through the family's name
/// table: the weight as [`Weights::linear`] lays it out and, when `bias`, its bias.
pub fn load_linear(
    w: &Weights,
    table: &Table,
    path: &str,
    (d_in, d_out): (usize, usize),
    bias: bool,
    device: &Device,
) -> Result<Linear> {
    let weight = w.linear(table, &format!("{path}.weight"), d_in, d_out, device)?;
    let bias = match bias {
        true => Some(Param::from_tensor(w.param(
            table,
            &format!("{path}.bias"),
            [d_out],
            device,
        )?)),
        false => None,
    };
    Ok(Linear {
        weight: Param::from_tensor(weight),
        bias,
    })
}

/// A LayerNorm by its burn path (`blocks.0.ln_1`). The weights are read first: their shapes
/// are checked against `d` before anything of size `d` is allocated, so a corrupt config
/// cannot make the loader reserve memory the file does not hold.
pub fn load_layer_norm(
    w: &Weights,
    table: &Table,
    path: &str,
    d: usize,
    eps: f64,
    device: &Device,
) -> Result<LayerNorm> {
    let gamma = w.param(table, &format!("{path}.gamma"), [d], device)?;
    let beta = w.param(table, &format!("{path}.beta"), [d], device)?;
    let mut norm = layer_norm(d, eps, device);
    norm.gamma = Param::from_tensor(gamma);
    norm.beta = Some(Param::from_tensor(beta));
    Ok(norm)
}

/// Split `[B, T, H·Dh]` into heads: `[B, H, T, Dh]`.
pub fn split_heads(x: Tensor<3>, n_heads: usize) -> Tensor<4> {
    let [b, t, d] = x.dims();
    x.reshape([b, t, n_heads, d / n_heads]).swap_dims(1, 2)
}

/// Merge heads back: `[B, H, T, Dh]` → `[B, T, H·Dh]`.
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, t, dh] = x.dims();
    x.swap_dims(1, 2).reshape([b, t, h * dh])
}

/// Dropout probabilities a model applies while it trains. All zero (the default) outside
/// fine-tuning; `train::finetune` sets them from its configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TrainDropout {
    /// On the embeddings (GPT-2's `embd_pdrop`).
    pub embd: f64,
    /// On the attention probabilities (GPT-2's `attn_pdrop`).
    pub attn: f64,
    /// On each residual branch's output (GPT-2's `resid_pdrop`).
    pub resid: f64,
    /// On the input of every LoRA branch (PEFT's `lora_dropout`).
    pub lora: f64,
}

/// Dropout exactly as burn's `nn::Dropout` applies it: only when the tensor lives on an autodiff
/// device (training) and `prob` > 0, zeroing each value with probability `prob` and scaling the
/// rest by 1 / (1 − prob). The mask comes from the device's random generator, which
/// `Device::seed` makes reproducible. Evaluation and generation run on the inference device, so
/// they never drop anything.
pub fn dropout<const D: usize>(x: Tensor<D>, prob: f64) -> Tensor<D> {
    if prob <= 0.0 {
        return x;
    }
    DropoutConfig::new(prob).init().forward(x)
}

/// A linear layer's `x @ W + b`. An adapted layer computes PEFT's form instead,
/// `x @ W_base + b + scale · (dropout(x) @ a) @ b`, while training with LoRA dropout (burn's
/// adapter folds the factors into the weight, `W_base + scale · a @ b`, which leaves no place to
/// drop the branch's input) and at inference (the fine-tuned model scored and generating keeps
/// its adapters apart: the branch costs rows · r · (in + out) where folding costs in · r · out
/// on every call, and a QLoRA base is never made dense). Otherwise (no adapter; training
/// without dropout, where the folded form is what the parity runs measured) it is burn's own
/// `Linear::forward`.
///
/// A batch of sequences `[B, T, d]` is multiplied as one `[B·T, d]` matrix, as PyTorch does: the
/// CPU backend otherwise runs B matrix products of T rows, each packing the whole weight again
/// (SmolLM2 LoRA 4 × 128, native: 180 -> 187 tokens/s).
pub fn linear_forward<const D: usize>(
    layer: &Linear,
    x: Tensor<D>,
    lora_dropout: f64,
) -> Tensor<D> {
    let dims = x.dims();
    if D > 2 && dims[..D - 2].iter().product::<usize>() > 1 {
        let rows = dims[..D - 1].iter().product();
        let out = linear_2d(layer, x.reshape([rows, dims[D - 1]]), lora_dropout);
        let mut out_dims = dims;
        out_dims[D - 1] = out.dims()[1];
        return out.reshape(out_dims);
    }
    linear_2d(layer, x, lora_dropout)
}

fn linear_2d<const D: usize>(layer: &Linear, x: Tensor<D>, lora_dropout: f64) -> Tensor<D> {
    let adapter = layer.weight.adapter();
    let training = x.device().is_autodiff();
    let bias = || layer.bias.as_ref().map(|b| b.val());
    // A quantized (QLoRA) base is never folded with its factors: that would form it densely.
    let quantized = is_quantized(&layer.weight.base());
    match adapter {
        Some(lora) if !training || lora_dropout > 0.0 || quantized => {
            let base = frozen_linear(x.clone(), layer.weight.base(), bias());
            let input = if training {
                dropout(x, lora_dropout)
            } else {
                x
            };
            let down = linear_op(input, lora.a.val(), None);
            base + linear_op(down, lora.b.val(), None).mul_scalar(lora.scale)
        }
        None if quantized => frozen_linear(x, layer.weight.base(), bias()),
        _ => layer.forward(x),
    }
}

/// `x · w + bias` for a frozen `w`. A quantized `w` goes through [`frozen_matmul`], which keeps
/// it quantized for the backward pass too (and dequantizes faster than burn on the CPU).
fn frozen_linear<const D: usize>(x: Tensor<D>, w: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<D> {
    if !is_quantized(&w) {
        return linear_op(x, w, bias);
    }
    let dims = x.dims();
    let rows = dims[..D - 1].iter().product();
    let mut y = frozen_matmul(x.reshape([rows, dims[D - 1]]), w);
    if let Some(b) = bias {
        y = y + b.unsqueeze::<2>();
    }
    let mut out_dims = dims;
    out_dims[D - 1] = y.dims()[1];
    y.reshape(out_dims)
}

/// Scaled dot-product attention with a causal mask, on `[B, H, T, Dh]` tensors. Keys and values
/// may be longer than the queries (`[B, H, S, Dh]`, S ≥ T, from a KV cache): the queries are then
/// the last T of the S positions.
pub fn causal_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    causal_attention_dropout(q, k, v, 0.0)
}

/// [`causal_attention`] with dropout on the attention probabilities (while training).
pub fn causal_attention_dropout(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, prob: f64) -> Tensor<4> {
    causal_attention_window(q, k, v, prob, None)
}

/// [`causal_attention_dropout`] where, with `window = Some(w)`, each query also stops seeing keys
/// `w` or more positions behind it: the query at position `i` attends to keys `j` with
/// `i - w < j <= i` (Mistral's sliding window, exactly transformers' `sliding_window_overlay`).
pub fn causal_attention_window(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    prob: f64,
    window: Option<usize>,
) -> Tensor<4> {
    let [b, h, t, dh] = q.dims();
    let s = k.dims()[2];
    let device = q.device();
    let scores = q
        .matmul(k.swap_dims(2, 3))
        .mul_scalar(1.0 / (dh as f64).sqrt());
    // The queries are the last `t` of the `s` positions, so query row `r` is position `r + s - t`.
    // `tril_mask` is true strictly above the (shifted) diagonal: the future positions a token must
    // not see. f32::MIN rather than -inf keeps softmax finite on every backend (as transformers does).
    let future = Tensor::<2, Bool>::tril_mask([t, s], s as i64 - t as i64, &device)
        .unsqueeze::<4>()
        .expand([b, h, t, s]);
    let mut scores = scores.mask_fill(future, f32::MIN);
    // Only when some key is out of reach: the last query (position s - 1) sees from s - w on.
    if let Some(w) = window.filter(|&w| w < s) {
        // `triu_mask` is true where `j - r < offset`; key j is too old for row r when
        // j <= r + (s - t) - w, i.e. j - r < s - t - w + 1. Never the diagonal, as w >= 1.
        let offset = s as i64 - t as i64 - w as i64 + 1;
        let old = Tensor::<2, Bool>::triu_mask([t, s], offset, &device)
            .unsqueeze::<4>()
            .expand([b, h, t, s]);
        scores = scores.mask_fill(old, f32::MIN);
    }
    let weights = dropout(softmax(scores, 3), prob);
    weights.matmul(v)
}

/// GELU with the tanh approximation (`gelu_new` / `gelu_pytorch_tanh` in transformers).
/// Written with `x·x·x` rather than `powf(3)`: WGSL's `pow` is undefined for negative bases.
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
    let cube = x.clone() * x.clone() * x.clone();
    let inner = (x.clone() + cube.mul_scalar(0.044715)).mul_scalar(SQRT_2_OVER_PI);
    (x.clone() * (inner.tanh().add_scalar(1.0))).mul_scalar(0.5)
}

/// The activations config.json files name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU (erf form).
    Gelu,
    /// Tanh-approximated GELU.
    GeluTanh,
    Relu,
    Silu,
}

impl Activation {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "relu" => Self::Relu,
            "silu" | "swish" => Self::Silu,
            _ => return None,
        })
    }

    pub fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        use burn::tensor::activation::{gelu, relu, silu};
        match self {
            Self::Gelu => gelu(x),
            Self::GeluTanh => gelu_tanh(x),
            Self::Relu => relu(x),
            Self::Silu => silu(x),
        }
    }
}

/// Logits `x @ headᵀ` for `x [B, T, d]` and an LM head stored `[vocab, d]` (transformers' layout,
/// shared with a tied embedding). Multiplying by `headᵀ` makes the CPU backend copy the whole
/// transposed head on every call (49152 × 576 floats for SmolLM2: most of a generated token's
/// time); for few rows, `(head @ xᵀ)ᵀ` computes the same dot products and only the small
/// `[B, vocab, T]` result is ever laid out again.
pub fn lm_head_logits(x: Tensor<3>, head: Tensor<2>) -> Tensor<3> {
    let [b, t, d] = x.dims();
    if b * t < d {
        head.unsqueeze::<3>()
            .matmul(x.swap_dims(1, 2))
            .swap_dims(1, 2)
    } else {
        // One `[B·T, d]` product rather than B of T rows (see `linear_forward`).
        let vocab = head.dims()[0];
        x.reshape([b * t, d])
            .matmul(head.transpose())
            .reshape([b, t, vocab])
    }
}
