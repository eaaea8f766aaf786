//! Causal language modelling as a [`Task`]: the GPT-2 and Llama families learn to continue
//! text, scored by the mean masked next-token cross-entropy (and perplexity) — transformers'
//! causal-LM loss, averaged over every counted token of a step's micro-batches (transformers ≥
//! 4.46), so that a run here matches one there step for step.

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};

use super::finetune::{FinetuneConfig, Method, TrainableModel};
use super::loss::{head_cross_entropy, head_row_losses};
use super::task::{EvalPoint, Speed, Task};
use super::trainer::{module_device, train_loop, Progress, RunOptions, Summary};
use crate::backend::Backend;
use crate::data::TokenBatch;
use crate::error::{Error, Result};
use crate::eval::uncertainty::{compare_losses, LossComparison, UnitLoss};
use crate::models::loaded::Family;
use crate::models::{CausalLm, KvCache};
use crate::platform::now_ms;

/// Mean masked cross-entropy over a set of batches. (Not `PartialEq`: two evaluations of the
/// same model take different times; compare the measured fields.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalLoss {
    pub loss: f32,
    pub perplexity: f32,
    /// Tokens that counted.
    pub tokens: usize,
    /// Wall-clock time of the evaluation.
    pub seconds: f64,
    /// Each held-out row's summed loss and its counted tokens, in batch order: the units a
    /// before/after comparison resamples for its intervals ([`crate::eval::uncertainty`]).
    /// Empty in checkpoints written before they were kept.
    #[serde(default)]
    pub row_losses: Vec<f32>,
    #[serde(default)]
    pub row_tokens: Vec<u32>,
}

impl EvalLoss {
    /// The rows as units for [`compare_losses`].
    pub fn units(&self) -> Vec<UnitLoss> {
        self.row_losses
            .iter()
            .zip(&self.row_tokens)
            .map(|(&sum, &count)| UnitLoss {
                sum: sum as f64,
                count: count as f64,
            })
            .collect()
    }

    /// Before and after on the same rows, with intervals (`None` if the rows were not kept).
    pub fn compare(before: &Self, after: &Self, seed: u64) -> Option<LossComparison> {
        compare_losses(&before.units(), &after.units(), seed)
    }
}

pub type FinetuneProgress = Progress<EvalLoss>;
pub type FinetuneSummary = Summary<EvalLoss>;
pub type CausalEvalPoint = EvalPoint<EvalLoss>;

/// The causal-LM task of a run configured by `config`.
pub struct Causal {
    seed: u64,
    /// Whether the model or its adapters apply dropout while training.
    dropout: bool,
}

impl Causal {
    pub fn new(config: &FinetuneConfig) -> Self {
        Self {
            seed: config.seed,
            dropout: config.model_dropout
                || (config.method == Method::Lora && config.lora_dropout > 0.0),
        }
    }
}

impl<M: Module + CausalLm> Task<M> for Causal {
    type Batch = TokenBatch;
    type Eval = EvalLoss;
    const NAME: &'static str = "causal";
    const SPEED: Speed = Speed::Tokens;

    fn check(&self, model: &M, batches: &[TokenBatch], what: &str) -> Result<()> {
        check_batches(batches, model.max_positions(), what)
    }

    fn loss_units(&self, batch: &TokenBatch) -> usize {
        batch.counted()
    }

    fn size(&self, batch: &TokenBatch) -> (usize, usize) {
        (batch.batch_size * batch.seq_len, batch.batch_size)
    }

    fn before_step(&mut self, device: &Device, step: usize) {
        if self.dropout {
            // Dropout masks come from the device's generator. Seeding it afresh from (seed,
            // step) makes each step's masks independent of the steps before: a run repeats
            // itself, and a run resumed from a checkpoint draws the uninterrupted run's masks
            // without saving the generator (on the same backend; one run at a time, as the
            // generator is per process).
            device.seed(dropout_seed(self.seed, step));
        }
    }

    fn loss(
        &mut self,
        model: &M,
        batch: &TokenBatch,
        units: usize,
        device: &Device,
    ) -> Result<Tensor<1>> {
        let hidden = model.hidden(batch_inputs(batch, device), None::<&mut KvCache>);
        Ok(head_cross_entropy(hidden, model.head(), batch, units))
    }

    async fn evaluate(&self, model: &M, batches: &[TokenBatch]) -> Result<EvalLoss> {
        eval_module(model, batches).await
    }
}

/// Fine-tune a causal LM prepared as `model` on `train` (micro-batches; `config.grad_accum` of
/// them per step), scoring `eval` before, every `eval_every` steps and at the end; see
/// [`train_loop`] for what `options` steer.
pub async fn finetune(
    model: &mut TrainableModel,
    backend: &Backend,
    train: &[TokenBatch],
    eval: &[TokenBatch],
    config: &FinetuneConfig,
    options: RunOptions<'_, EvalLoss>,
) -> Result<FinetuneSummary> {
    if config.method != model.method {
        return Err(Error::config(format!(
            "the model was prepared for {:?} fine-tuning but the config asks for {:?}",
            model.method, config.method
        )));
    }
    let mut task = Causal::new(config);
    let mut summary = match &mut model.family {
        Family::Gpt2(m) => train_loop(m, &mut task, backend, train, eval, config, options).await?,
        Family::Llama(m) => train_loop(m, &mut task, backend, train, eval, config, options).await?,
        // Encoders train with `train::classify`.
        Family::Bert(_) => return Err(model_not_causal()),
    };
    summary.quantized_base = model.quantized.clone();
    Ok(summary)
}

async fn eval_module<M: Module + CausalLm>(model: &M, batches: &[TokenBatch]) -> Result<EvalLoss> {
    // Inference copy: no autodiff graph is recorded (adapters, if any, stay attached).
    let started = now_ms();
    let model = model.valid();
    let device = module_device(&model)?;
    let mut sum = 0.0f64;
    let mut tokens = 0usize;
    let (mut row_losses, mut row_tokens) = (Vec::new(), Vec::new());
    for b in batches {
        let counted = b.counted();
        if counted == 0 {
            continue;
        }
        let hidden = model.hidden(batch_inputs(b, &device), None::<&mut KvCache>);
        // Per row, so batches of any size weigh by their tokens and the rows can be resampled.
        let rows = head_row_losses(hidden, model.head(), b).await?;
        for (row, loss) in b.loss_mask.chunks(b.seq_len).zip(rows) {
            let n = row.iter().filter(|&&w| w > 0.0).count();
            if n > 0 {
                sum += loss as f64;
                row_losses.push(loss);
                row_tokens.push(n as u32);
            }
        }
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
        row_losses,
        row_tokens,
    })
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

/// The device generator's seed for step `step`'s dropout masks (splitmix64 of both, so nearby
/// steps and seeds give unrelated streams).
fn dropout_seed(seed: u64, step: usize) -> u64 {
    let mut z = seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A batch's input ids `[B, T]` on `device` (targets and weights stay on the host: the loss
/// picks the positions that count there).
fn batch_inputs(batch: &TokenBatch, device: &Device) -> Tensor<2, Int> {
    let shape = [batch.batch_size, batch.seq_len];
    Tensor::from_data(TensorData::new(batch.inputs.clone(), shape), device)
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
