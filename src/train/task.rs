//! What a fine-tuning task brings to the one training loop ([`super::trainer::train_loop`]):
//! its batches, its loss, its evaluation and whatever state it needs to resume. Causal language
//! modelling ([`super::causal`]) and classification ([`super::classify`]) are the two tasks
//! today; a new one (say, contrastive sentence embeddings) is a new `impl Task`, not a new loop.

use burn::module::Module;
use burn::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Result;

/// How a task counts its training speed in progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speed {
    /// Tokens per second (every position the model processes).
    Tokens,
    /// Examples per second (a classifier's unit; tokens per second are still summarised).
    Examples,
}

/// A fine-tuning objective on models of type `M`.
// The futures are awaited in place by the loop, never boxed or sent between threads (wasm is
// single-threaded), so `async fn` without `Send` bounds is what is wanted.
#[allow(async_fn_in_trait)]
pub trait Task<M: Module> {
    /// One micro-batch, as `data` builds it.
    type Batch;
    /// Held-out scores at one point of the run.
    type Eval: Clone + Serialize + DeserializeOwned;

    /// Names the task in checkpoints and refusals ("causal", "classification").
    const NAME: &'static str;
    /// Which speed the step reports carry.
    const SPEED: Speed;

    /// Refuse batches the model cannot take (`what`: "training" or "evaluation").
    fn check(&self, model: &M, batches: &[Self::Batch], what: &str) -> Result<()>;

    /// What a step's loss is averaged over: the counted tokens of a causal batch, the examples
    /// of a classification batch. The loop sums it over a step's micro-batches, so the
    /// accumulated gradient is that of the mean over the whole step.
    fn loss_units(&self, batch: &Self::Batch) -> usize;

    /// (tokens, examples) the model processes for `batch`: the loop's throughput figures.
    fn size(&self, batch: &Self::Batch) -> (usize, usize);

    /// Called before step `step` (0-based) draws its micro-batches.
    fn before_step(&mut self, _device: &Device, _step: usize) {}

    /// The summed loss of `batch` divided by `units` (the step's [`Task::loss_units`]), with the
    /// autodiff graph recorded.
    fn loss(
        &mut self,
        model: &M,
        batch: &Self::Batch,
        units: usize,
        device: &Device,
    ) -> Result<Tensor<1>>;

    /// Scores on `batches` without recording gradients.
    async fn evaluate(&self, model: &M, batches: &[Self::Batch]) -> Result<Self::Eval>;

    /// What a checkpoint keeps of the task besides the trainable weights (e.g. a classifier's
    /// labels and the state of its dropout generator).
    fn state(&self) -> Value {
        Value::Null
    }

    /// Take back [`Task::state`] from a checkpoint, refusing one saved for another setup.
    fn restore(&mut self, _state: &Value) -> Result<()> {
        Ok(())
    }
}

/// A checkpoint whose task state does not fit this run: `config.invalid` with the reason.
pub fn refuse_state(reason: &str, message: String) -> crate::error::Error {
    crate::error::Error::config(message)
        .with_details(serde_json::json!({ "field": "checkpoint", "reason": reason }))
}

/// The held-out scores at one step (0: before training).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint<E> {
    pub step: usize,
    #[serde(flatten)]
    pub eval: E,
}
