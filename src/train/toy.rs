//! Training the toy model on the copy task: the end-to-end proof that the Rust → wasm → worker
//! → burn path trains on every backend and agrees across them.

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::loss::masked_cross_entropy;
use super::schedule::{LrSchedule, ScheduleKind};
use super::trainer::{median, read_scalar};
use crate::backend::Backend;
use crate::data::toy::copy_batch;
use crate::data::TokenBatch;
use crate::error::{Code, Error, Result};
use crate::models::toy::{ToyModel, ToyModelConfig};
use crate::platform::{now_ms, yield_now};
use crate::rng::Rng;

/// Largest batch (in tokens) the toy task accepts.
pub const MAX_TOY_BATCH_TOKENS: usize = 65_536;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToyTrainConfig {
    pub steps: usize,
    pub batch_size: usize,
    pub seq_len: usize,
    pub vocab: usize,
    pub d_model: usize,
    pub heads: usize,
    pub lr: f64,
    pub warmup: usize,
    pub schedule: ScheduleKind,
    pub weight_decay: f64,
    pub seed: u64,
}

impl Default for ToyTrainConfig {
    fn default() -> Self {
        let model = ToyModelConfig::default();
        Self {
            steps: 200,
            batch_size: 16,
            seq_len: model.seq_len,
            vocab: model.vocab,
            d_model: model.d_model,
            heads: model.heads,
            lr: 3e-3,
            warmup: 10,
            schedule: ScheduleKind::Cosine,
            weight_decay: 0.0,
            seed: 42,
        }
    }
}

impl ToyTrainConfig {
    /// Parse a JSON object; unknown keys and wrong types are `config.invalid` errors.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::config(format!("invalid toy config: {e}")))
    }

    pub fn model(&self) -> ToyModelConfig {
        ToyModelConfig {
            vocab: self.vocab,
            seq_len: self.seq_len,
            d_model: self.d_model,
            heads: self.heads,
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.model().validate()?;
        if !(1..=1_000_000).contains(&self.steps) {
            return Err(Error::config(format!(
                "steps must be between 1 and 1000000, got {}",
                self.steps
            )));
        }
        if !(1..=4096).contains(&self.batch_size) {
            return Err(Error::config(format!(
                "batch_size must be between 1 and 4096, got {}",
                self.batch_size
            )));
        }
        // The toy model is a demo: keep a batch well inside what a tab can hold
        // (4096 × 1024 tokens made the CPU backend fail inside burn instead of refusing).
        let tokens = self.batch_size * self.seq_len;
        if tokens > MAX_TOY_BATCH_TOKENS {
            return Err(Error::config(format!(
                "batch_size × seq_len is {tokens}; the toy model takes at most {MAX_TOY_BATCH_TOKENS} tokens per batch"
            ))
            .with_details(json!({ "batch_size": self.batch_size, "seq_len": self.seq_len })));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::config(format!(
                "lr must be a positive number, got {}",
                self.lr
            )));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::config(format!(
                "weight_decay must be zero or positive, got {}",
                self.weight_decay
            )));
        }
        Ok(())
    }
}

/// Train the toy model. `on_progress` is called after every step; returning `false` stops the
/// run after that step (a cancelled run still returns its summary).
pub async fn train_toy(
    backend: &Backend,
    config: &ToyTrainConfig,
    mut on_progress: impl FnMut(&ToyProgress) -> bool,
) -> Result<ToySummary> {
    config.validate()?;
    let device = &backend.device;
    // Separate streams: changing the data length never changes the initial weights.
    let mut init_rng = Rng::new(config.seed);
    let mut data_rng = Rng::new(config.seed ^ 0x5EED_DA7A);
    let mut model = ToyModel::new(&config.model(), &mut init_rng, device);
    let mut optim = AdamWConfig::new()
        .with_weight_decay(config.weight_decay as f32)
        .init();
    let schedule = LrSchedule {
        kind: config.schedule,
        base_lr: config.lr,
        warmup_steps: config.warmup,
        total_steps: config.steps,
    };
    let tokens_per_step = (config.batch_size * config.seq_len) as f64;

    let start = now_ms();
    let mut losses = Vec::with_capacity(config.steps);
    let mut step_ms = Vec::with_capacity(config.steps);
    let mut cancelled = false;
    for step in 0..config.steps {
        let step_start = now_ms();
        let batch = copy_batch(
            &mut data_rng,
            config.batch_size,
            config.seq_len,
            config.vocab,
        );
        let (inputs, targets, mask) = batch_tensors(&batch, device);
        let loss = masked_cross_entropy(model.forward(inputs), targets, mask, batch.counted());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        // Async readback: a synchronous one panics on WebGPU in the browser.
        let loss_value = read_scalar(loss).await?;
        if !loss_value.is_finite() {
            // The update is not applied: the weights in memory stay the last good ones.
            return Err(Error::new(
                Code::NonFiniteLoss,
                format!(
                    "the loss became {loss_value} at step {}; lower the learning rate",
                    step + 1
                ),
            )
            .with_details(json!({ "step": step + 1, "lr": schedule.lr_at(step) })));
        }
        let lr = schedule.lr_at(step);
        model = optim.step(lr, model, grads);
        losses.push(loss_value);
        let now = now_ms();
        step_ms.push(now - step_start);

        let done = step + 1;
        let elapsed_s = (now - start) / 1e3;
        let recent = &step_ms[step_ms.len().saturating_sub(20)..];
        let recent_s = recent.iter().sum::<f64>() / 1e3;
        let progress = ToyProgress {
            step: done,
            total_steps: config.steps,
            loss: loss_value,
            lr,
            tokens_per_s: tokens_per_step * recent.len() as f64 / recent_s.max(1e-9),
            elapsed_s,
            eta_s: recent_s / recent.len() as f64 * (config.steps - done) as f64,
            memory_bytes: backend.memory_in_use(),
        };
        if !on_progress(&progress) {
            cancelled = done < config.steps;
            break;
        }
        // Let the worker handle messages (cancel) between steps.
        yield_now().await;
    }

    let later = step_ms.get(1..).unwrap_or(&[]);
    let median_step_ms = median(later);
    Ok(ToySummary {
        backend: backend.info.backend.as_str().to_string(),
        steps: losses.len(),
        cancelled,
        initial_loss: losses.first().copied().unwrap_or(f32::NAN),
        final_loss: losses.last().copied().unwrap_or(f32::NAN),
        losses,
        first_step_ms: step_ms.first().copied().unwrap_or(0.0),
        median_step_ms,
        tokens_per_s: if median_step_ms > 0.0 {
            tokens_per_step / (median_step_ms / 1e3)
        } else {
            0.0
        },
    })
}

/// Sent after every optimiser step.
#[derive(Debug, Clone, Serialize)]
pub struct ToyProgress {
    pub step: usize,
    pub total_steps: usize,
    pub loss: f32,
    pub lr: f64,
    pub tokens_per_s: f64,
    pub elapsed_s: f64,
    pub eta_s: f64,
    pub memory_bytes: Option<u64>,
}

/// What a finished (or cancelled) run reports.
#[derive(Debug, Clone, Serialize)]
pub struct ToySummary {
    pub backend: String,
    /// Steps completed.
    pub steps: usize,
    pub cancelled: bool,
    /// Train loss of every completed step.
    pub losses: Vec<f32>,
    pub initial_loss: f32,
    pub final_loss: f32,
    /// The first step includes kernel compilation on WebGPU, so it is reported apart.
    pub first_step_ms: f64,
    /// Median over steps after the first.
    pub median_step_ms: f64,
    pub tokens_per_s: f64,
}

/// A batch's inputs, targets and loss mask `[B, T]` on `device`.
fn batch_tensors(
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
