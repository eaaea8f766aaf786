//! What a fine-tuning run will need in memory, worked out before it starts, so a run that cannot
//! fit is refused with a suggestion instead of failing half-way (or taking the tab down).
//!
//! Everything is f32 (webtune computes in f32; quantized GGUF weights are expanded on load).
//! Activations are what autodiff keeps for the backward pass, counted per token and layer from
//! the operations of a pre-norm transformer block (norm in/out, q/k/v, scores and
//! probabilities, MLP up/gate/activation/product, residuals) plus one chunk of the LM head's
//! logits (the loss walks the positions in chunks, [`super::loss`]) and the hidden states'
//! gradient it hands to autodiff. The
//! model files a job keeps (a GGUF file holds the tokenizer and config) and a fixed runtime
//! (code, allocator, tokenizer) come on top; loading held the weight files beside the model
//! it built, which is the process's peak when it exceeds training's (memory freed after
//! loading is reused, not returned: a wasm module never shrinks). Calibrated against measured
//! peaks (native RSS, the wasm module's memory): within 15% on SmolLM2-135M (GGUF) and the
//! SmolLM2-360M shape (bf16 safetensors); see docs/benchmarks.md.

use serde::Serialize;

use super::finetune::{FinetuneConfig, Method};
use crate::backend::{BackendInfo, BackendKind};
use crate::error::{Code, Error, Result};
use crate::models::loaded::ModelInfo;

const F32: u64 = 4;
/// What a run holds besides the model and its training state: the code, the allocator's
/// slack, the tokenizer and the data (measured: ~60 MiB natively and in the page).
const RUNTIME: u64 = 60 << 20;

/// The shape of the largest micro-batch a run will see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchShape {
    pub batch_size: usize,
    pub seq_len: usize,
}

/// Bytes each part of a run needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryEstimate {
    pub weights: u64,
    pub gradients: u64,
    /// AdamW's two moments per trainable parameter.
    pub optimizer: u64,
    /// Kept for the backward pass of one micro-batch (without gradient checkpointing: an upper
    /// bound when it is on).
    pub activations: u64,
    /// The model's files a job keeps (a GGUF file; a safetensors model keeps none).
    pub files: u64,
    /// The code, allocator slack, tokenizer and data.
    pub runtime: u64,
    /// The run recomputes memory-bound activations in the backward pass.
    pub gradient_checkpointing: bool,
    /// What training needs: everything above.
    pub total: u64,
    /// Loading: the weight files and the f32 model built from them, at once.
    pub load: u64,
    /// The most the process holds: loading or training, whichever needs more.
    pub peak: u64,
    /// The largest single tensor (a GPU buffer must hold it whole).
    pub largest_buffer: u64,
    /// What that tensor is, e.g. "logits [4 × 128 × 49152]".
    pub largest_buffer_name: String,
    pub trainable_params: u64,
    pub batch_size: usize,
    pub seq_len: usize,
}

/// Trainable parameters of a run on `info`'s model: everything for full fine-tuning (less the
/// frozen parts), the LoRA factors (r × (in + out) per adapted projection) otherwise.
fn trainable_params(info: &ModelInfo, config: &FinetuneConfig, classes: usize) -> u64 {
    let d = info.dims.hidden_size as u64;
    let layers = info.dims.layers as u64;
    let head = classes as u64 * (d + 1);
    match config.method {
        Method::Full => {
            let embeddings = if config.freeze_embeddings {
                info.dims.vocab_size as u64 * d
            } else {
                0
            };
            let per_layer = (info.dims.parameters as u64)
                .saturating_sub(info.dims.vocab_size as u64 * d)
                / layers.max(1);
            let frozen = per_layer * config.freeze_layers.min(info.dims.layers) as u64;
            (info.dims.parameters as u64)
                .saturating_sub(embeddings)
                .saturating_sub(frozen)
                + head
        }
        Method::Lora => {
            let r = config.lora_r as u64;
            let i = info.dims.intermediate_size as u64;
            // Default targets: the query and value projections (d → d each).
            let targets = config.lora_targets.len();
            let per_layer = if config.lora_targets.iter().any(|t| t == "all-linear") {
                // q, k, v, o (d → d) and the MLP (d → i, twice for gated ones, and i → d).
                r * (4 * 2 * d + 3 * (d + i))
            } else {
                r * 2 * d * targets.max(2) as u64
            };
            per_layer * layers + head
        }
    }
}

impl BatchShape {
    /// The largest rows × columns among `shapes` (rows and columns taken apart).
    pub fn largest(shapes: impl IntoIterator<Item = (usize, usize)>) -> Self {
        shapes.into_iter().fold(
            Self {
                batch_size: 1,
                seq_len: 1,
            },
            |a, (b, t)| Self {
                batch_size: a.batch_size.max(b),
                seq_len: a.seq_len.max(t),
            },
        )
    }
}

/// Estimate and check in one call, as the jobs do before training. `kept_files` are the bytes
/// of the model files the job holds (see [`estimate`]).
pub fn plan(
    info: &ModelInfo,
    config: &FinetuneConfig,
    shape: BatchShape,
    classes: usize,
    kept_files: u64,
    backend: &BackendInfo,
) -> Result<MemoryEstimate> {
    let e = estimate(info, config, shape, classes, kept_files);
    check_fits(&e, MemoryLimits::of(backend), config.method)?;
    Ok(e)
}

/// The memory a run on `info`'s model with `config` and batches of `shape` needs. `classes` is
/// the number of labels for a classifier (0 for a causal LM, whose head spans the vocabulary);
/// `kept_files` the bytes of the model files the job keeps beside the model.
pub fn estimate(
    info: &ModelInfo,
    config: &FinetuneConfig,
    shape: BatchShape,
    classes: usize,
    kept_files: u64,
) -> MemoryEstimate {
    let (b, t) = (shape.batch_size as u64, shape.seq_len as u64);
    let (d, i, h, l) = (
        info.dims.hidden_size as u64,
        info.dims.intermediate_size as u64,
        info.dims.heads as u64,
        info.dims.layers as u64,
    );
    let v = info.dims.vocab_size as u64;
    let trainable = trainable_params(info, config, classes);
    // The base as loaded: f32, but for projections quantized as they were read (`compact`).
    let base = match info.compact {
        Some(c) => (info.dims.parameters as u64).saturating_sub(c.values) * F32 + c.bytes,
        None => info.dims.parameters as u64 * F32,
    };
    let mut weights = base
        + if config.method == Method::Lora {
            trainable * F32
        } else {
            0
        };
    // A quantized projection is made dense only inside its own product, forward and backward
    // (`models::frozen`): two of the largest at once.
    let dense = 2 * d * i.max(d) * F32;
    if info.compact.is_some() {
        weights += dense;
    } else if let (Method::Lora, Some(q)) = (config.method, config.quantize_base) {
        // QLoRA over an f32 base stores the linear projections (everything but the embeddings,
        // roughly) with their scales as the CPU backend stores them (WebGPU's 4-bit blocks keep
        // f32 scales: 1/16 of a byte a value more there): a copy beside the f32 base, which the
        // loaded model keeps.
        let linear = (info.dims.parameters as u64)
            .saturating_sub(v * d)
            .min(l * (4 * d * d + 3 * d * i));
        let block = config.quantize_block_size;
        weights += super::qlora::cpu_quantized_bytes(linear, block, q.bits()) + dense;
    }
    let per_token_layer = 12 * d + info.dims.mlp_kept as u64 * i + 3 * h * t;
    let mut activations = b * t * l * per_token_layer * F32;
    let scores = b * h * t * t * F32;
    let (mut largest, mut name) = (v * d * F32, format!("token embedding [{v} × {d}]"));
    if scores > largest {
        (largest, name) = (scores, format!("attention scores [{b} × {h} × {t} × {t}]"));
    }
    if classes == 0 {
        // One chunk's logits, their exponentials and probabilities; the hidden states' gradient,
        // and the head's when it trains (kept until the backward pass).
        let rows = super::loss::head_chunk_rows(v as usize, (b * t) as usize) as u64;
        let chunk = rows * v * F32;
        activations += 3 * chunk + b * t * d * F32;
        if config.method == Method::Full {
            activations += v * d * F32;
        }
        if chunk > largest {
            (largest, name) = (chunk, format!("logits [{rows} × {v}]"));
        }
    }
    let gradients = trainable * F32;
    let optimizer = 2 * trainable * F32;
    let total = weights + gradients + optimizer + activations + kept_files + RUNTIME;
    let load = info.load_bytes + base + RUNTIME;
    MemoryEstimate {
        weights,
        gradients,
        optimizer,
        activations,
        files: kept_files,
        runtime: RUNTIME,
        gradient_checkpointing: config.gradient_checkpointing,
        total,
        load,
        peak: total.max(load),
        largest_buffer: largest,
        largest_buffer_name: name,
        trainable_params: trainable,
        batch_size: shape.batch_size,
        seq_len: shape.seq_len,
    }
}

/// What a WebAssembly module can address (wasm32; the threaded build declares it as its
/// maximum too).
pub const WASM_MEMORY: u64 = 4 << 30;

/// What the backend can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryLimits {
    /// All memory (wasm32's 4 GiB address space for the CPU backend in a browser).
    pub total: Option<u64>,
    /// One buffer (WebGPU's `maxStorageBufferBindingSize`).
    pub buffer: Option<u64>,
}

impl MemoryLimits {
    /// The limits of `info`'s backend in this build.
    pub fn of(info: &BackendInfo) -> Self {
        let wasm = cfg!(target_arch = "wasm32");
        Self {
            // Leave room for the module, the dataset and the allocator's slack.
            total: (wasm && info.backend == BackendKind::Cpu).then_some(WASM_MEMORY - (1 << 30)),
            buffer: info
                .device_limits
                .as_ref()
                .map(|l| l.max_storage_buffer_binding_size),
        }
    }
}

/// `bytes` for a message, e.g. "1.25 GiB".
pub(crate) fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Refuses a run that cannot fit, saying what to change.
pub fn check_fits(estimate: &MemoryEstimate, limits: MemoryLimits, method: Method) -> Result<()> {
    let mut advice = Vec::new();
    if method == Method::Full {
        advice.push("use LoRA (it trains a small fraction of the weights and needs no optimizer state for the rest)".to_string());
    }
    let per_row = estimate.activations / estimate.batch_size.max(1) as u64;
    let details = serde_json::to_value(estimate).unwrap_or_default();
    if let Some(total) = limits.total {
        if estimate.total > total {
            let fixed = estimate.total - estimate.activations;
            let rows = total.saturating_sub(fixed) / per_row.max(1);
            if rows >= 1 && (rows as usize) < estimate.batch_size {
                advice.push(format!("use a batch size of {rows} or less"));
            }
            advice.push(format!(
                "use shorter sequences (now {} tokens)",
                estimate.seq_len
            ));
            if !estimate.gradient_checkpointing {
                advice.push("turn on gradient checkpointing (it keeps fewer activations)".into());
            }
            return Err(Error::new(
                Code::MemoryInsufficient,
                format!(
                    "this run needs about {} (weights {}, gradients {}, optimizer {}, activations \
                     {}) but the backend can hold {}: {}",
                    gib(estimate.total),
                    gib(estimate.weights),
                    gib(estimate.gradients),
                    gib(estimate.optimizer),
                    gib(estimate.activations),
                    gib(total),
                    advice.join("; ")
                ),
            )
            .with_details(details));
        }
    }
    if let Some(buffer) = limits.buffer {
        if estimate.largest_buffer > buffer {
            return Err(Error::new(
                Code::MemoryInsufficient,
                format!(
                    "the {} needs {} in one GPU buffer, more than this GPU allows ({}): use a \
                     smaller batch or shorter sequences, or the CPU backend",
                    estimate.largest_buffer_name,
                    gib(estimate.largest_buffer),
                    gib(buffer)
                ),
            )
            .with_details(details));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm2() -> ModelInfo {
        ModelInfo {
            architecture: "llama".into(),
            dims: crate::models::Dims {
                parameters: 134_515_008,
                layers: 30,
                hidden_size: 576,
                intermediate_size: 1536,
                heads: 9,
                vocab_size: 49152,
                max_positions: 8192,
                // As `webtune info` reports it.
                matmul_weights: 134_479_872,
                attention_width: 576,
                mlp_kept: 2,
            },
            dtype: vec!["F32"],
            stored_bytes: 0,
            load_bytes: 0,
            compact: None,
            has_tokenizer: true,
            kind: "causal_lm",
            labels: None,
            pooling: None,
            chat: Default::default(),
        }
    }

    fn shape(b: usize, t: usize) -> BatchShape {
        BatchShape {
            batch_size: b,
            seq_len: t,
        }
    }

    #[test]
    fn lora_needs_far_less_than_full_and_activations_grow_with_the_batch() {
        let info = smollm2();
        let lora = estimate(&info, &FinetuneConfig::default(), shape(4, 128), 0, 0);
        let full_cfg = FinetuneConfig {
            method: Method::Full,
            ..Default::default()
        };
        let full = estimate(&info, &full_cfg, shape(4, 128), 0, 0);
        // r = 8 on q and v: 2 × 8 × 2 × 576 per layer.
        assert_eq!(lora.trainable_params, 30 * 2 * 8 * 2 * 576);
        assert_eq!(full.optimizer, 2 * full.gradients);
        assert!(full.total > lora.total + 3 * lora.weights / 2);
        let bigger = estimate(&info, &FinetuneConfig::default(), shape(8, 128), 0, 0);
        assert_eq!(bigger.weights, lora.weights);
        // Everything doubles but the one chunk of logits (170 positions × 49152, three buffers).
        assert_eq!(
            bigger.activations,
            2 * lora.activations - 3 * 170 * 49152 * 4
        );
        // The loss forms the logits of 170 positions at a time (32 MB), never all of them: the
        // embedding stays the largest buffer however large the batch.
        assert_eq!(lora.largest_buffer_name, "token embedding [49152 × 576]");
        assert_eq!(bigger.largest_buffer_name, "token embedding [49152 × 576]");
    }

    #[test]
    fn a_quantized_base_counts_its_stored_copy_and_one_dense_projection_at_a_time() {
        let info = smollm2();
        let lora = estimate(&info, &FinetuneConfig::default(), shape(4, 128), 0, 0);
        let q8 = estimate(
            &info,
            &FinetuneConfig {
                quantize_base: Some(crate::train::qlora::BaseQuant::Q8),
                ..Default::default()
            },
            shape(4, 128),
            0,
            0,
        );
        // Every parameter but the 49152 × 576 embedding, at 1 + 4/32 bytes beside the f32 base,
        // and two of the largest projections (576 × 1536) made dense.
        let linear = (info.dims.parameters - 49152 * 576) as u64;
        assert_eq!(
            q8.weights - lora.weights,
            linear * 9 / 8 + 2 * 576 * 1536 * 4
        );
        assert_eq!(q8.activations, lora.activations);
    }

    #[test]
    fn a_run_that_cannot_fit_is_refused_with_advice() {
        let info = smollm2();
        let cfg = FinetuneConfig {
            method: Method::Full,
            ..Default::default()
        };
        let e = estimate(&info, &cfg, shape(16, 256), 0, 0);
        let limits = MemoryLimits {
            total: Some(3 << 30),
            buffer: None,
        };
        let err = check_fits(&e, limits, Method::Full).unwrap_err();
        assert_eq!(err.code, Code::MemoryInsufficient);
        assert!(err.message.contains("use LoRA"), "{}", err.message);
        assert!(err.message.contains("batch size of"), "{}", err.message);
        assert_eq!(err.details["total"], e.total);
        let small = estimate(&info, &FinetuneConfig::default(), shape(1, 64), 0, 0);
        check_fits(&small, limits, Method::Lora).unwrap();
        // One GPU buffer: the attention scores of long sequences overflow a 128 MiB binding.
        let gpu = MemoryLimits {
            total: None,
            buffer: Some(128 << 20),
        };
        let err = check_fits(
            &estimate(&info, &FinetuneConfig::default(), shape(2, 2048), 0, 0),
            gpu,
            Method::Lora,
        )
        .unwrap_err();
        assert!(err.message.contains("attention scores"), "{}", err.message);
    }
}
