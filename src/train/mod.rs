//! Training: objectives, schedules and the loop. The loop is written on burn's core, nn and optim
//! (burn-train's `Learner` does not build for wasm32) and is shared by the browser worker and the
//! native CLI; it reports progress through a callback that can also stop the run.

pub mod adapter;
pub mod checkpoint;
pub mod classify;
pub mod classify_job;
pub mod control;
pub mod export;
pub mod finetune;
pub mod job;
pub mod lora;
pub mod loss;
pub mod memory;
pub mod qlora;
pub mod replay;
pub mod run;
pub mod schedule;
pub mod toy;

use serde::Serialize;

/// Sent after every optimiser step.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
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
pub struct RunSummary {
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

pub(crate) fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        0.5 * (sorted[mid - 1] + sorted[mid])
    }
}
