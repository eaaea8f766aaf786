//! Fine-tuning the causal LMs webtune loads (GPT-2 and Llama families): LoRA or full, with the
//! semantics of transformers' `Trainer` + PEFT so that a run here matches one there step for
//! step — AdamW with decoupled weight decay and bias correction (no decay on biases and norms),
//! Hugging Face's warmup schedules, global-norm gradient clipping, gradient accumulation whose
//! loss is the mean over every counted token of the accumulated micro-batches.
//!
//! The loop keeps `train_toy`'s guarantees: a progress callback after every optimiser step that
//! can stop the run, losses read back asynchronously (WebGPU cannot read synchronously), a
//! non-finite loss or gradient refused *before* the update so the model keeps its last good
//! weights, and a yield to the event loop between steps.

use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::checkpoint::{
    load_optimizer, optimizer_bytes, restore_params, save_params, Checkpoint, CheckpointTask,
    Checkpointing, StatesOn,
};
use super::control::Control;
use super::lora::{
    apply_lora, merge, resolve_targets, FamilyKind, FreezeWhere, LoraInit, LoraSpec,
};
use super::loss::masked_cross_entropy;
use super::median;
use super::qlora::{quantize_base, BaseQuant, QuantReport, DEFAULT_BLOCK_SIZE};
use super::schedule::{LrSchedule, ScheduleKind};
use crate::backend::Backend;
use crate::data::TokenBatch;
use crate::error::{Code, Error, Result};
use crate::models::loaded::Family;
use crate::models::{CausalLm, KvCache};
use crate::platform::{now_ms, yield_now};
use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    #[default]
    Lora,
    Full,
}

/// Everything a fine-tuning run is configured with. Batch size and sequence length are those
/// of the [`TokenBatch`]es given (built by `data`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FinetuneConfig {
    pub method: Method,
    /// LoRA rank r.
    pub lora_r: usize,
    /// LoRA alpha; the update is scaled by alpha / r.
    pub lora_alpha: f64,
    /// Dropout on the LoRA branch's input while training, as PEFT's `lora_dropout` (0 = off).
    pub lora_dropout: f64,
    /// Apply the model's own dropout while training (GPT-2's `embd_pdrop`, `attn_pdrop`,
    /// `resid_pdrop`; Llama's `attention_dropout`), as transformers' `Trainer` does in train
    /// mode. Off by default: a run is then deterministic for its seed and its losses compare
    /// step for step with a reference run. Evaluation and generation never apply dropout.
    pub model_dropout: bool,
    /// Module names (`c_attn`, `q_proj`…) or `["all-linear"]`; empty = the family's default.
    pub lora_targets: Vec<String>,
    /// Full fine-tuning: keep the token (and position) embeddings fixed. A tied LM head is the
    /// token embedding, so it stays fixed too.
    pub freeze_embeddings: bool,
    /// Full fine-tuning: keep the first N transformer blocks fixed.
    pub freeze_layers: usize,
    pub lr: f64,
    pub schedule: ScheduleKind,
    /// Warmup in optimiser steps.
    pub warmup: usize,
    /// Optimiser steps; when absent, `epochs` passes over the batches.
    pub steps: Option<usize>,
    pub epochs: Option<usize>,
    /// Micro-batches per optimiser step.
    pub grad_accum: usize,
    /// Global gradient-norm clip; 0 turns clipping off.
    pub max_grad_norm: f64,
    pub weight_decay: f64,
    /// Apply weight decay to biases and normalisation weights too (Trainer excludes them).
    pub decay_bias_and_norm: bool,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    pub seed: u64,
    /// Shuffle the batch order every epoch (seeded).
    pub shuffle: bool,
    /// Evaluate on the eval batches every N steps (0: only at the end).
    pub eval_every: usize,
    /// Keep fewer activations for the backward pass and recompute the cheap ones from their
    /// inputs instead (burn's balanced gradient checkpointing: element-wise and other
    /// memory-bound operations are recomputed, matmuls are kept). Lowers peak memory for long
    /// sequences at the cost of some recomputation; the results are the same.
    pub gradient_checkpointing: bool,
    /// QLoRA: keep the frozen base's linear projection weights quantized in memory while
    /// training with LoRA, `"q8"` or `"q4"` (see [`super::qlora`]). Off (f32 base) by default.
    pub quantize_base: Option<BaseQuant>,
    /// QLoRA: values sharing one quantization scale (1–255).
    pub quantize_block_size: usize,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            method: Method::Lora,
            lora_r: 8,
            lora_alpha: 16.0,
            lora_dropout: 0.0,
            model_dropout: false,
            lora_targets: Vec::new(),
            freeze_embeddings: false,
            freeze_layers: 0,
            lr: 2e-4,
            schedule: ScheduleKind::Linear,
            warmup: 0,
            steps: None,
            epochs: None,
            grad_accum: 1,
            max_grad_norm: 1.0,
            weight_decay: 0.0,
            decay_bias_and_norm: false,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            seed: 42,
            shuffle: true,
            eval_every: 0,
            gradient_checkpointing: false,
            quantize_base: None,
            quantize_block_size: DEFAULT_BLOCK_SIZE,
        }
    }
}

impl FinetuneConfig {
    /// The device a run trains on: the backend's autodiff device, with gradient checkpointing
    /// when asked for. The model and the batches must both live on it.
    pub fn training_device(&self, backend: &Backend) -> Device {
        if self.gradient_checkpointing {
            backend.device.clone().gradient_checkpointing()
        } else {
            backend.device.clone()
        }
    }

    /// Parse a JSON object; unknown keys and wrong types are `config.invalid` errors.
    pub fn from_json(text: &str) -> Result<Self> {
        let cfg: Self = serde_json::from_str(text)
            .map_err(|e| Error::config(format!("invalid fine-tuning config: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, msg: String| {
            Err(Error::config(format!("{field} {msg}")).with_details(json!({ "field": field })))
        };
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if self.method == Method::Lora {
            if !(1..=1024).contains(&self.lora_r) {
                return bad(
                    "lora_r",
                    format!("must be between 1 and 1024, got {}", self.lora_r),
                );
            }
            if !positive(self.lora_alpha) {
                return bad(
                    "lora_alpha",
                    format!("must be a positive number, got {}", self.lora_alpha),
                );
            }
            if !(self.lora_dropout.is_finite() && (0.0..1.0).contains(&self.lora_dropout)) {
                return bad(
                    "lora_dropout",
                    format!("must be in [0, 1), got {}", self.lora_dropout),
                );
            }
        }
        if self.quantize_base.is_some() {
            if self.method != Method::Lora {
                return bad(
                    "quantize_base",
                    "keeps a frozen base quantized, so it needs method \"lora\"; full \
                     fine-tuning trains the base weights themselves"
                        .into(),
                );
            }
            if !(1..=255).contains(&self.quantize_block_size) {
                return bad(
                    "quantize_block_size",
                    format!(
                        "must be between 1 and 255, got {}",
                        self.quantize_block_size
                    ),
                );
            }
        }
        if !positive(self.lr) {
            return bad("lr", format!("must be a positive number, got {}", self.lr));
        }
        if matches!(self.steps, Some(0) | Some(1_000_001..)) {
            return bad(
                "steps",
                format!("must be between 1 and 1000000, got {:?}", self.steps),
            );
        }
        if matches!(self.epochs, Some(0) | Some(10_001..)) {
            return bad(
                "epochs",
                format!("must be between 1 and 10000, got {:?}", self.epochs),
            );
        }
        if self.steps.is_some() && self.epochs.is_some() {
            return bad("steps", "and epochs cannot both be given".into());
        }
        if !(1..=4096).contains(&self.grad_accum) {
            return bad(
                "grad_accum",
                format!("must be between 1 and 4096, got {}", self.grad_accum),
            );
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            return bad(
                "max_grad_norm",
                format!("must be zero (off) or positive, got {}", self.max_grad_norm),
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "weight_decay",
                format!("must be zero or positive, got {}", self.weight_decay),
            );
        }
        for (field, v) in [
            ("adam_beta1", self.adam_beta1),
            ("adam_beta2", self.adam_beta2),
        ] {
            if !(v.is_finite() && (0.0..1.0).contains(&v)) {
                return bad(field, format!("must be in [0, 1), got {v}"));
            }
        }
        if !positive(self.adam_eps) {
            return bad(
                "adam_eps",
                format!("must be a positive number, got {}", self.adam_eps),
            );
        }
        Ok(())
    }

    /// Optimiser steps for `n_batches` micro-batches.
    pub fn total_steps(&self, n_batches: usize) -> usize {
        match self.steps {
            Some(s) => s,
            None => (self.epochs.unwrap_or(1) * n_batches).div_ceil(self.grad_accum),
        }
    }
}

/// A model prepared for fine-tuning: LoRA adapters attached (base frozen), or parts frozen
/// for full fine-tuning.
#[derive(Debug)]
pub struct TrainableModel {
    pub family: Family,
    pub kind: FamilyKind,
    pub method: Method,
    /// LoRA: rank, alpha, resolved targets and how the factors started.
    pub lora: Option<LoraSpec>,
    /// Hugging Face names of the adapted modules.
    pub lora_modules: Vec<String>,
    /// QLoRA: what quantizing the base did.
    pub quantized: Option<QuantReport>,
}

impl TrainableModel {
    /// Prepare a loaded model (on an autodiff device) for `config`; LoRA factors start as
    /// PEFT's default init from `config.seed`.
    pub fn prepare(family: Family, config: &FinetuneConfig) -> Result<Self> {
        Self::prepare_with(family, config, LoraInit::Seeded(config.seed))
    }

    /// As [`prepare`](Self::prepare), with the LoRA factors' start given (replaying a PEFT run).
    pub fn prepare_with(family: Family, config: &FinetuneConfig, init: LoraInit) -> Result<Self> {
        config.validate()?;
        let mut family = family;
        let lora_dropout = match config.method {
            Method::Lora => config.lora_dropout,
            Method::Full => 0.0,
        };
        set_train_dropout(&mut family, config.model_dropout, lora_dropout)?;
        let kind = FamilyKind::of(&family);
        match config.method {
            Method::Lora => {
                let spec = LoraSpec {
                    rank: config.lora_r,
                    alpha: config.lora_alpha,
                    targets: resolve_targets(kind, &config.lora_targets)?,
                    init,
                    dropout: config.lora_dropout,
                };
                let (family, quantized) = match config.quantize_base {
                    Some(q) => {
                        let (family, report) =
                            quantize_base(family, q, config.quantize_block_size)?;
                        (family, Some(report))
                    }
                    None => (family, None),
                };
                let (family, modules) = apply_lora(family, &spec)?;
                Ok(Self {
                    family,
                    kind,
                    method: Method::Lora,
                    lora: Some(spec),
                    lora_modules: modules,
                    quantized,
                })
            }
            Method::Full => {
                let (emb, layers) = (config.freeze_embeddings, config.freeze_layers);
                let frozen = move |path: &str| {
                    let parts: Vec<&str> = path.split('.').collect();
                    match parts.as_slice() {
                        ["wte" | "wpe" | "embed_tokens"] => emb,
                        ["word_embeddings" | "position_embeddings" | "token_type_embeddings"] => {
                            emb
                        }
                        ["embeddings_norm", ..] => emb,
                        ["blocks" | "layers", i, ..] => {
                            i.parse::<usize>().is_ok_and(|i| i < layers)
                        }
                        _ => false,
                    }
                };
                let mut freeze = FreezeWhere {
                    pred: frozen,
                    path: Vec::new(),
                };
                let family = match family {
                    Family::Gpt2(m) => Family::Gpt2(m.map(&mut freeze)),
                    Family::Llama(m) => Family::Llama(m.map(&mut freeze)),
                    Family::Bert(m) => Family::Bert(m.map(&mut freeze)),
                };
                Ok(Self {
                    family,
                    kind,
                    method: Method::Full,
                    lora: None,
                    lora_modules: Vec::new(),
                    quantized: None,
                })
            }
        }
    }

    /// The plain model for inference or export: adapters merged into the base weights (and
    /// dropout off again).
    pub fn merged(mut self) -> Family {
        // Cannot fail: turning dropout off is accepted for every family.
        let _ = set_train_dropout(&mut self.family, false, 0.0);
        merge(self.family)
    }

    /// (trainable, total) parameter counts.
    pub fn parameter_counts(&self) -> (usize, usize) {
        let mut c = CountParams::default();
        match &self.family {
            Family::Gpt2(m) => m.visit(&mut c),
            Family::Llama(m) => m.visit(&mut c),
            Family::Bert(m) => m.visit(&mut c),
        }
        (c.trainable, c.total)
    }
}

/// Sets the dropout a model applies while training (see [`FinetuneConfig::model_dropout`] and
/// `lora_dropout`). Encoders take none yet: asking for it is refused rather than ignored.
pub fn set_train_dropout(family: &mut Family, model: bool, lora: f64) -> Result<()> {
    match family {
        Family::Gpt2(m) => m.set_train_dropout(model, lora),
        Family::Llama(m) => m.set_train_dropout(model, lora),
        Family::Bert(_) if model || lora > 0.0 => {
            return Err(Error::config(
                "dropout while training (model_dropout, lora_dropout) is implemented for the \
                 causal LMs (GPT-2, Llama) only; turn it off for encoder models",
            )
            .with_details(
                json!({ "field": if lora > 0.0 { "lora_dropout" } else { "model_dropout" } }),
            ))
        }
        Family::Bert(_) => {}
    }
    Ok(())
}

#[derive(Default)]
struct CountParams {
    trainable: usize,
    total: usize,
}

impl ModuleVisitor for CountParams {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let n = param.lazy_shape().num_elements();
        self.total += n;
        if param.base().is_require_grad() {
            self.trainable += n;
        }
    }
}

/// Sent after every optimiser step.
#[derive(Debug, Clone, Serialize)]
pub struct FinetuneProgress {
    pub step: usize,
    pub total_steps: usize,
    /// Epochs completed, fractional.
    pub epoch: f64,
    pub loss: f32,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    pub tokens_per_s: f64,
    pub elapsed_s: f64,
    pub eta_s: f64,
    pub memory_bytes: Option<u64>,
    /// Set on the steps where the eval batches were scored.
    pub eval: Option<EvalLoss>,
}

/// Mean masked cross-entropy over a set of batches. (Not `PartialEq`: two evaluations of the
/// same model take different times; compare the measured fields.)
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct EvalLoss {
    pub loss: f32,
    pub perplexity: f32,
    /// Tokens that counted.
    pub tokens: usize,
    /// Wall-clock time of the evaluation (0 in checkpoints written before it was recorded).
    #[serde(default)]
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalPoint {
    pub step: usize,
    #[serde(flatten)]
    pub eval: EvalLoss,
}

/// What a finished (or cancelled) run reports.
#[derive(Debug, Clone, Serialize)]
pub struct FinetuneSummary {
    pub backend: String,
    pub method: Method,
    pub steps: usize,
    pub cancelled: bool,
    /// Train loss of every completed step (mean over the step's counted tokens).
    pub losses: Vec<f32>,
    /// Global gradient norm (before clipping) of every completed step.
    pub grad_norms: Vec<f32>,
    pub lrs: Vec<f64>,
    /// Eval losses before training (step 0), every `eval_every` steps and at the end.
    pub eval: Vec<EvalPoint>,
    pub trainable_params: usize,
    pub total_params: usize,
    pub first_step_ms: f64,
    pub median_step_ms: f64,
    pub tokens_per_s: f64,
    /// QLoRA: the base's quantized weights (absent with an f32 base).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantized_base: Option<QuantReport>,
}

/// The device generator's seed for step `step`'s dropout masks (splitmix64 of both, so nearby
/// steps and seeds give unrelated streams).
fn dropout_seed(seed: u64, step: usize) -> u64 {
    let mut z = seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(crate) fn batch_tensors(
    batch: &TokenBatch,
    device: &Device,
) -> (Tensor<2, Int>, Tensor<2, Int>, Tensor<2>) {
    let shape = [batch.batch_size, batch.seq_len];
    (
        Tensor::from_data(TensorData::new(batch.inputs.clone(), shape), device),
        Tensor::from_data(TensorData::new(batch.targets.clone(), shape), device),
        Tensor::from_data(TensorData::new(batch.loss_mask.clone(), shape), device),
    )
}

pub(crate) async fn read_scalar(tensor: Tensor<1>) -> Result<f32> {
    let data = tensor.into_data_async().await.map_err(|e| {
        Error::new(
            Code::DeviceLost,
            format!("reading a result back from the device failed: {e:?}"),
        )
    })?;
    let first = data.convert::<f32>().iter::<f32>().next();
    first.ok_or_else(|| Error::new(Code::Internal, "a scalar result was empty"))
}

fn check_batches(batches: &[TokenBatch], max_positions: usize, what: &str) -> Result<()> {
    for (i, b) in batches.iter().enumerate() {
        let n = b.batch_size * b.seq_len;
        if b.batch_size == 0 || b.seq_len == 0 {
            return Err(Error::config(format!("{what} batch {i} is empty")));
        }
        if b.inputs.len() != n || b.targets.len() != n || b.loss_mask.len() != n {
            return Err(Error::config(format!(
                "{what} batch {i} has inconsistent lengths (inputs {}, targets {}, mask {}, expected {n})",
                b.inputs.len(),
                b.targets.len(),
                b.loss_mask.len()
            )));
        }
        if b.seq_len > max_positions {
            return Err(Error::config(format!(
                "{what} batch {i} has sequences of {} tokens; the model takes at most {max_positions}",
                b.seq_len
            )));
        }
    }
    Ok(())
}

/// What every optimiser step does between backward and update: the global gradient norm, a
/// refusal of a non-finite loss or norm (the update is then not applied, so the model keeps the
/// weights from before this step), and torch's `clip_grad_norm_` (scale by max / (norm + 1e-6)
/// when that is below 1). Returns the norm before clipping.
pub(crate) async fn check_and_clip<M: Module>(
    module: &M,
    grads: &mut GradientsParams,
    loss: f32,
    max_grad_norm: f64,
    step: usize,
    lr: f64,
) -> Result<f64> {
    let mut squares = GradSquares { grads, sum: None };
    module.visit(&mut squares);
    let grad_norm = match squares.sum {
        Some(s) => (read_scalar(s).await? as f64).sqrt(),
        None => 0.0,
    };
    if !loss.is_finite() || !grad_norm.is_finite() {
        let what = if loss.is_finite() {
            format!("the gradient norm became {grad_norm}")
        } else {
            format!("the loss became {loss}")
        };
        return Err(Error::new(
            Code::NonFiniteLoss,
            format!(
                "{what} at step {}; the model keeps the weights from before it. Lower the learning rate or check the data",
                step + 1
            ),
        )
        .with_details(json!({ "step": step + 1, "lr": lr, "loss": loss.to_string(), "grad_norm": grad_norm.to_string() })));
    }
    if max_grad_norm > 0.0 {
        let coef = max_grad_norm / (grad_norm + 1e-6);
        if coef < 1.0 {
            module.visit(&mut ScaleGrads {
                grads,
                factor: coef,
            });
        }
    }
    Ok(grad_norm)
}

/// Sum of squared gradients over every parameter that has one.
struct GradSquares<'a> {
    pub grads: &'a GradientsParams,
    pub sum: Option<Tensor<1>>,
}

impl ModuleVisitor for GradSquares<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let s = g.square().sum();
            self.sum = Some(match self.sum.take() {
                Some(acc) => acc + s,
                None => s,
            });
        }
    }
}

/// Multiply every gradient by `factor` (global-norm clipping).
struct ScaleGrads<'a> {
    pub grads: &'a mut GradientsParams,
    pub factor: f64,
}

impl ModuleVisitor for ScaleGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// AdamW as both training loops set it up: `config`'s betas, epsilon and weight decay, with
/// biases and norms in a no-decay group unless `decay_bias_and_norm`. `module` holds the
/// parameters to step (restored ones already carry their saved ids, which key the groups);
/// `resuming`: every group rebuilds its saved state on the CPU (see [`StatesOn`]), ready for
/// [`load_optimizer`](super::checkpoint::load_optimizer).
pub(crate) fn adamw_optimizer<M: Module>(
    module: &M,
    config: &FinetuneConfig,
    resuming: bool,
) -> ModuleOptimizer {
    let adamw = AdamWConfig::new()
        .with_beta_1(config.adam_beta1 as f32)
        .with_beta_2(config.adam_beta2 as f32)
        .with_epsilon(config.adam_eps as f32)
        .with_weight_decay(config.weight_decay as f32);
    let mut optim = adamw.init();
    if resuming {
        optim = optim.with_group(
            ParamGroup::ids_from_module(module.clone()),
            StatesOn {
                inner: adamw.build(),
                device: Device::flex(),
            },
            None,
        );
    }
    if !config.decay_bias_and_norm && config.weight_decay > 0.0 {
        let mut ids = VectorIds::default();
        module.visit(&mut ids);
        let group = ParamGroup::from_ids(ids.0);
        let no_decay = adamw.clone().with_weight_decay(0.0).build();
        optim = if resuming {
            let device = Device::flex();
            optim.with_group(
                group,
                StatesOn {
                    inner: no_decay,
                    device,
                },
                None,
            )
        } else {
            optim.with_group(group, no_decay, None)
        };
    }
    optim
}

/// The micro-batch stream of a run: epochs over `n` batches, each in an order shuffled by a
/// generator seeded from the run's seed, so a run (and a resumed one, which replays the stream
/// up to its checkpoint with [`BatchStream::skip`]) draws the same batches on every platform.
pub(crate) struct BatchStream {
    rng: Rng,
    order: Vec<usize>,
    shuffle: bool,
    /// Micro-batches drawn so far (what a checkpoint saves as `consumed`).
    pub consumed: usize,
}

impl BatchStream {
    pub fn new(seed: u64, n: usize, shuffle: bool) -> Self {
        Self {
            rng: Rng::new(seed ^ 0x0D0E_D0E5),
            order: (0..n).collect(),
            shuffle,
            consumed: 0,
        }
    }

    /// The index of the next batch.
    pub fn next_batch(&mut self) -> usize {
        let n = self.order.len();
        if self.consumed % n == 0 {
            self.order = (0..n).collect();
            if self.shuffle {
                self.rng.shuffle(&mut self.order);
            }
        }
        let i = self.order[self.consumed % n];
        self.consumed += 1;
        i
    }

    /// Draw (and drop) `count` batches: where a checkpoint's run had got to.
    pub fn skip(&mut self, count: usize) {
        for _ in 0..count {
            self.next_batch();
        }
    }
}

/// Ids of 1-D parameters (biases, norm weights): no weight decay for them by default.
#[derive(Default)]
pub(crate) struct VectorIds(pub Vec<ParamId>);

impl ModuleVisitor for VectorIds {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if D == 1 {
            self.0.push(param.id);
        }
    }
}

/// Fine-tune `model` on `train` (micro-batches; `config.grad_accum` of them per step),
/// scoring `eval` before, every `eval_every` steps and at the end.
///
/// `on_progress` is called after every step; it returns `bool` (`false` stops the run after that
/// step) or a [`Control`], whose `Pause` makes the loop wait between two steps without touching
/// any state, then resume or stop. On a non-finite loss or gradient the run stops with `train.non_finite_loss` naming the step
/// and `model` keeps the weights from before that step.
pub async fn finetune<C: Into<Control>>(
    model: &mut TrainableModel,
    backend: &Backend,
    train: &[TokenBatch],
    eval: &[TokenBatch],
    config: &FinetuneConfig,
    on_progress: impl FnMut(&FinetuneProgress) -> C,
) -> Result<FinetuneSummary> {
    finetune_checkpointed(model, backend, train, eval, config, None, on_progress).await
}

/// [`finetune`] that saves [`Checkpoint`]s (every `checkpointing.every` steps, and when the run
/// is paused or stopped before its last step) and can continue from one: the model must be
/// prepared as for the saved run (same base, method, config), and the run then goes on from the
/// saved step with the saved trainable weights, AdamW state and batch order, so its losses are
/// those of the uninterrupted run (without dropout; see [`super::checkpoint`]). The summary
/// covers the whole run, the steps before the checkpoint included.
pub async fn finetune_checkpointed<C: Into<Control>>(
    model: &mut TrainableModel,
    backend: &Backend,
    train: &[TokenBatch],
    eval: &[TokenBatch],
    config: &FinetuneConfig,
    checkpointing: Option<Checkpointing<'_>>,
    on_progress: impl FnMut(&FinetuneProgress) -> C,
) -> Result<FinetuneSummary> {
    config.validate()?;
    if config.method != model.method {
        return Err(Error::config(format!(
            "the model was prepared for {:?} fine-tuning but the config asks for {:?}",
            model.method, config.method
        )));
    }
    if train.is_empty() {
        return Err(Error::config("there are no training batches"));
    }
    let max_positions = model.family.max_positions();
    check_batches(train, max_positions, "training")?;
    check_batches(eval, max_positions, "evaluation")?;
    let (trainable_params, total_params) = model.parameter_counts();
    if trainable_params == 0 {
        return Err(Error::config(
            "nothing to train: every parameter is frozen (check freeze_layers and freeze_embeddings)",
        ));
    }
    if let Some(ck) = checkpointing.as_ref().and_then(|c| c.resume.as_ref()) {
        ck.check_resume(
            CheckpointTask::Causal,
            config,
            config.total_steps(train.len()),
            train.len(),
            total_params,
        )?;
    }
    let mut ctx = RunCtx {
        backend,
        train,
        eval,
        config,
        on_progress,
        checkpointing,
        summary: FinetuneSummary {
            backend: backend.info.backend.as_str().to_string(),
            method: config.method,
            steps: 0,
            cancelled: false,
            losses: Vec::new(),
            grad_norms: Vec::new(),
            lrs: Vec::new(),
            eval: Vec::new(),
            trainable_params,
            total_params,
            first_step_ms: 0.0,
            median_step_ms: 0.0,
            tokens_per_s: 0.0,
            quantized_base: model.quantized.clone(),
        },
    };
    match &mut model.family {
        Family::Gpt2(m) => run(m, &mut ctx).await?,
        Family::Llama(m) => run(m, &mut ctx).await?,
        // Encoders train with `train::classify`.
        Family::Bert(_) => return Err(model_not_causal()),
    }
    Ok(ctx.summary)
}

struct RunCtx<'a, 'c, P> {
    backend: &'a Backend,
    train: &'a [TokenBatch],
    eval: &'a [TokenBatch],
    config: &'a FinetuneConfig,
    on_progress: P,
    checkpointing: Option<Checkpointing<'c>>,
    summary: FinetuneSummary,
}

async fn run<M, P, C>(model: &mut M, ctx: &mut RunCtx<'_, '_, P>) -> Result<()>
where
    M: Module + CausalLm,
    P: FnMut(&FinetuneProgress) -> C,
    C: Into<Control>,
{
    let config = ctx.config;
    let device = &config.training_device(ctx.backend);
    let total_steps = config.total_steps(ctx.train.len());
    let schedule = LrSchedule {
        kind: config.schedule,
        base_lr: config.lr,
        warmup_steps: config.warmup,
        total_steps,
    };
    let drops =
        config.model_dropout || (config.method == Method::Lora && config.lora_dropout > 0.0);
    // Restored parameters take back their saved ids, which the optimizer record and the
    // no-decay group are keyed by: restore first.
    let resume = ctx.checkpointing.as_mut().and_then(|c| c.resume.take());
    let first_step = resume.as_ref().map_or(0, |ck| ck.step);
    if let Some(ck) = &resume {
        *model = restore_params(model.clone(), &ck.params)?;
    }
    let mut optim = adamw_optimizer(model, config, resume.is_some());

    if let Some(ck) = &resume {
        optim = load_optimizer(optim, &ck.optimizer)?;
        let s = &mut ctx.summary;
        s.losses.clone_from(&ck.losses);
        s.grad_norms.clone_from(&ck.grad_norms);
        s.lrs.clone_from(&ck.lrs);
        s.eval.clone_from(&ck.eval);
        s.steps = ck.step;
    } else if !ctx.eval.is_empty() {
        let e = eval_module(model, ctx.eval).await?;
        ctx.summary.eval.push(EvalPoint { step: 0, eval: e });
    }

    let n = ctx.train.len();
    let mut stream = BatchStream::new(config.seed, n, config.shuffle);
    // The seeded stream is replayed up to where the checkpoint left it.
    stream.skip(resume.as_ref().map_or(0, |ck| ck.consumed));

    let mut start = now_ms();
    let mut step_ms = Vec::with_capacity(total_steps);
    let mut step_tokens = Vec::with_capacity(total_steps);
    for step in first_step..total_steps {
        let step_start = now_ms();
        if drops {
            // Dropout masks come from the device's generator. Seeding it afresh from (seed,
            // step) makes each step's masks independent of the steps before: a run repeats
            // itself, and a run resumed from a checkpoint draws the uninterrupted run's masks
            // without saving the generator (on the same backend; one run at a time, as the
            // generator is per process).
            device.seed(dropout_seed(config.seed, step));
        }
        let micro: Vec<usize> = (0..config.grad_accum)
            .map(|_| stream.next_batch())
            .collect();
        let counted: usize = micro.iter().map(|&i| ctx.train[i].counted()).sum();
        let tokens: usize = micro
            .iter()
            .map(|&i| ctx.train[i].batch_size * ctx.train[i].seq_len)
            .sum();
        // Each micro-batch's loss is its masked CE sum over the *step's* counted tokens, so the
        // accumulated gradient is that of the mean over all of them (transformers ≥ 4.46).
        let mut accumulator = GradientsAccumulator::<M>::new();
        let mut loss_value = 0.0f64;
        for &i in &micro {
            let (inputs, targets, mask) = batch_tensors(&ctx.train[i], device);
            let logits = model.forward(inputs, None::<&mut KvCache>);
            let loss = masked_cross_entropy(logits, targets, mask, counted);
            let grads = GradientsParams::from_grads(loss.backward(), &*model);
            accumulator.accumulate(&*model, grads);
            // Async readback: a synchronous one panics on WebGPU in the browser.
            loss_value += read_scalar(loss).await? as f64;
        }
        let mut grads = accumulator.grads();
        let loss_value = loss_value as f32;
        let lr = schedule.lr_at(step);
        let grad_norm = check_and_clip(
            &*model,
            &mut grads,
            loss_value,
            config.max_grad_norm,
            step,
            lr,
        )
        .await?;
        *model = optim.step(lr, model.clone(), grads);

        let s = &mut ctx.summary;
        s.losses.push(loss_value);
        s.grad_norms.push(grad_norm as f32);
        s.lrs.push(lr);
        s.steps = step + 1;
        let done = step + 1;
        let eval_now = !ctx.eval.is_empty()
            && (done == total_steps || (config.eval_every > 0 && done % config.eval_every == 0));
        let eval = if eval_now {
            let e = eval_module(model, ctx.eval).await?;
            ctx.summary.eval.push(EvalPoint {
                step: done,
                eval: e,
            });
            Some(e)
        } else {
            None
        };
        let now = now_ms();
        step_ms.push(now - step_start);
        step_tokens.push(tokens as f64);
        let recent = step_ms.len().saturating_sub(20);
        let recent_s = step_ms[recent..].iter().sum::<f64>() / 1e3;
        let recent_tokens: f64 = step_tokens[recent..].iter().sum();
        let per_step_s = recent_s / (step_ms.len() - recent) as f64;
        let progress = FinetuneProgress {
            step: done,
            total_steps,
            epoch: stream.consumed as f64 / n as f64,
            loss: loss_value,
            lr,
            grad_norm: grad_norm as f32,
            tokens_per_s: recent_tokens / recent_s.max(1e-9),
            elapsed_s: (now - start) / 1e3,
            eta_s: per_step_s * (total_steps - done) as f64,
            memory_bytes: ctx.backend.memory_in_use(),
            eval,
        };
        let control: Control = (ctx.on_progress)(&progress).into();
        if let Some(c) = ctx.checkpointing.as_mut() {
            let early = !matches!(control, Control::Continue);
            if done < total_steps && (early || (c.every > 0 && done % c.every == 0)) {
                let s = &ctx.summary;
                let ck = Checkpoint {
                    task: CheckpointTask::Causal,
                    step: done,
                    consumed: stream.consumed,
                    config: config.clone(),
                    losses: s.losses.clone(),
                    grad_norms: s.grad_norms.clone(),
                    lrs: s.lrs.clone(),
                    eval: s.eval.clone(),
                    total_params: Some(s.total_params),
                    train_batches: Some(n),
                    classification: None,
                    params: save_params(&*model).await?,
                    optimizer: optimizer_bytes(&optim)?,
                };
                (c.save)(ck);
            }
        }
        let (go_on, paused_ms) = control.proceed().await;
        // Time spent paused is not training time.
        start += paused_ms;
        if !go_on {
            ctx.summary.cancelled = done < total_steps;
            break;
        }
        // Let the worker handle messages (cancel) between steps.
        yield_now().await;
    }

    let s = &mut ctx.summary;
    s.first_step_ms = step_ms.first().copied().unwrap_or(0.0);
    s.median_step_ms = median(step_ms.get(1..).unwrap_or(&[]));
    let later_ms: f64 = step_ms.get(1..).unwrap_or(&[]).iter().sum();
    let later_tokens: f64 = step_tokens.get(1..).unwrap_or(&[]).iter().sum();
    s.tokens_per_s = if later_ms > 0.0 {
        later_tokens / (later_ms / 1e3)
    } else if let (Some(ms), Some(t)) = (step_ms.first(), step_tokens.first()) {
        t / (ms / 1e3).max(1e-9)
    } else {
        0.0
    };
    Ok(())
}

async fn eval_module<M: Module + CausalLm>(model: &M, batches: &[TokenBatch]) -> Result<EvalLoss> {
    // Inference copy: no autodiff graph is recorded (adapters, if any, stay attached).
    let started = now_ms();
    let model = model.valid();
    let mut device = None;
    let mut probe = FirstDevice(&mut device);
    model.visit(&mut probe);
    let device = device.ok_or_else(|| Error::new(Code::Internal, "the model has no parameters"))?;
    let mut sum = 0.0f64;
    let mut tokens = 0usize;
    for b in batches {
        let counted = b.counted();
        if counted == 0 {
            continue;
        }
        let (inputs, targets, mask) = batch_tensors(b, &device);
        let logits = model.forward(inputs, None::<&mut KvCache>);
        // Normalising by 1 gives the sum, so batches of any size weigh by their tokens.
        let total = masked_cross_entropy(logits, targets, mask, 1);
        sum += read_scalar(total).await? as f64;
        tokens += counted;
    }
    if tokens == 0 {
        return Err(Error::config(
            "the evaluation batches have no token that counts in the loss",
        ));
    }
    let loss = sum / tokens as f64;
    Ok(EvalLoss {
        loss: loss as f32,
        perplexity: loss.exp() as f32,
        tokens,
        seconds: (now_ms() - started) / 1e3,
    })
}

struct FirstDevice<'a>(&'a mut Option<Device>);

impl ModuleVisitor for FirstDevice<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.0.is_none() {
            *self.0 = Some(param.lazy_device());
        }
    }
}

/// Mean masked next-token cross-entropy (and perplexity) of a model over `batches`, on the
/// model's own device, without recording gradients.
pub async fn evaluate_loss(model: &Family, batches: &[TokenBatch]) -> Result<EvalLoss> {
    model.check_causal()?;
    check_batches(batches, model.max_positions(), "evaluation")?;
    match model {
        Family::Gpt2(m) => eval_module(m, batches).await,
        Family::Llama(m) => eval_module(m, batches).await,
        Family::Bert(_) => Err(model_not_causal()),
    }
}

fn model_not_causal() -> Error {
    Error::config(
        "an encoder (BERT) model does not train as a language model; fine-tune it for \
         classification instead",
    )
}
