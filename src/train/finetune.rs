//! What a fine-tuning run is configured with ([`FinetuneConfig`]: the method and every
//! hyperparameter, with transformers' `Trainer` + PEFT defaults and meaning) and the model it
//! trains ([`TrainableModel`]: LoRA adapters attached to a frozen base, or parts frozen for full
//! fine-tuning). The loop itself is [`super::trainer`]; the objectives are the tasks.

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use std::sync::Arc;

use super::adapter::PeftAdapter;
use super::lora::{
    apply_lora, merge, resolve_targets, FamilyKind, FreezeWhere, LoraInit, LoraSpec,
};
use super::qlora::{quantize_base, BaseQuant, QuantReport, DEFAULT_BLOCK_SIZE};
use super::schedule::ScheduleKind;
use crate::backend::Backend;
use crate::error::{Code, Error, Result};
use crate::models::loaded::Family;
use crate::models::walk::Paths;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    #[default]
    Lora,
    Full,
}

/// Everything a fine-tuning run is configured with. Batch size and sequence length are those
/// of the batches given (built by `data`).
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
    /// LoRA: start from a trained adapter's factors instead of the seeded draw, to continue
    /// training it (`train --init-adapter`); set with [`FinetuneConfig::continue_adapter`]. Not
    /// part of the configuration's JSON: the factors are weights, not settings.
    #[serde(skip)]
    pub init_adapter: Option<InitAdapter>,
}

/// An adapter a run continues from (see [`FinetuneConfig::init_adapter`]). Two configurations
/// are equal only when they continue the very same adapter.
#[derive(Debug, Clone)]
pub struct InitAdapter(pub Arc<PeftAdapter>);

impl PartialEq for InitAdapter {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
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
            init_adapter: None,
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

    /// This configuration continuing `adapter`: LoRA starting from its factors, with its rank,
    /// alpha (rsLoRA's scaling folded in) and target modules; the optimiser starts fresh.
    pub fn continue_adapter(mut self, adapter: PeftAdapter) -> Result<Self> {
        if self.method != Method::Lora {
            return Err(Error::config(
                "continuing an adapter trains it further with LoRA; full fine-tuning starts \
                 from a model, not an adapter (merge the adapter first: `webtune train` writes \
                 the merged model to DIR/merged)",
            )
            .with_details(json!({ "field": "method" })));
        }
        self.lora_r = adapter.spec.rank;
        self.lora_alpha = adapter.spec.alpha;
        self.lora_targets = adapter.spec.targets.clone();
        self.init_adapter = Some(InitAdapter(Arc::new(adapter)));
        Ok(self)
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
    ///
    /// With [`FinetuneConfig::init_adapter`], the factors start as that adapter's instead, and
    /// an adapter that does not fit the model is refused naming the base it was trained on.
    pub fn prepare(family: Family, config: &FinetuneConfig) -> Result<Self> {
        let Some(InitAdapter(adapter)) = &config.init_adapter else {
            return Self::prepare_with(family, config, LoraInit::Seeded(config.seed));
        };
        // The settings first: what fails after them is attaching the adapter's factors.
        config.validate()?;
        let trained_on = adapter
            .base_model
            .as_deref()
            .map(|b| format!(" (it was trained on {b})"))
            .unwrap_or_default();
        Self::prepare_with(family, config, adapter.spec.init.clone()).map_err(|e| match e.code {
            // A module the model lacks (config.invalid) or of another size: a mismatch between
            // the adapter and this model, not a bad setting.
            Code::ShapeMismatch | Code::ConfigInvalid => Error {
                code: Code::ShapeMismatch,
                message: format!(
                    "the adapter to continue does not fit this model{trained_on}: {}",
                    e.message
                ),
                ..e
            },
            _ => e,
        })
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
                if let LoraInit::Given(given) = &spec.init {
                    let missing: Vec<&String> =
                        given.keys().filter(|m| !modules.contains(m)).collect();
                    if !missing.is_empty() {
                        return Err(Error::new(
                            Code::ShapeMismatch,
                            format!(
                                "factors were given for modules this {kind:?} model does not \
                                 have or does not adapt: {}",
                                missing
                                    .iter()
                                    .take(3)
                                    .map(|m| m.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )
                        .with_details(json!({ "missing": missing })));
                    }
                }
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
                let mut freeze = Paths::new(FreezeWhere(frozen));
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
        match &self.family {
            Family::Gpt2(m) => parameter_counts(m),
            Family::Llama(m) => parameter_counts(m),
            Family::Bert(m) => parameter_counts(m),
        }
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

/// (trainable, total) parameter counts of a module.
pub(crate) fn parameter_counts<M: Module>(module: &M) -> (usize, usize) {
    #[derive(Default)]
    struct Count {
        trainable: usize,
        total: usize,
    }
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let n = param.lazy_shape().num_elements();
            self.total += n;
            if param.base().is_require_grad() {
                self.trainable += n;
            }
        }
    }
    let mut c = Count::default();
    module.visit(&mut c);
    (c.trainable, c.total)
}
