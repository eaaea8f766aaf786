//! The training loop, written once for every [`Task`], with the semantics of transformers'
//! `Trainer` (+ PEFT) so that a run here matches one there step for step: AdamW with decoupled
//! weight decay and bias correction (no decay on biases and norms), Hugging Face's warmup
//! schedules, global-norm gradient clipping, and gradient accumulation whose loss is the mean
//! over the whole step (the task says over what: counted tokens, examples).
//!
//! What every run gets from it: a progress report after every optimiser step that can stop or
//! pause the run ([`Control`]), losses read back asynchronously (WebGPU cannot read
//! synchronously), a non-finite loss or gradient refused *before* the update so the model keeps
//! its last good weights, held-out evaluation before training, every `eval_every` steps and at
//! the end, checkpoints to continue from ([`RunOptions::checkpointing`]), and a yield to the
//! event loop between steps.

use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use serde::Serialize;
use serde_json::{json, Value};

use super::checkpoint::{
    load_optimizer, optimizer_bytes, restore_params, save_params, Checkpoint, Checkpointing,
    StatesOn,
};
use super::control::Control;
use super::finetune::{parameter_counts, FinetuneConfig, Method};
use super::qlora::QuantReport;
use super::schedule::LrSchedule;
use super::task::{EvalPoint, Speed, Task};
use crate::backend::Backend;
use crate::error::{Code, Error, Result};
use crate::platform::{now_ms, yield_now};
use crate::rng::Rng;

/// Sent after every optimiser step.
#[derive(Debug, Clone, Serialize)]
pub struct Progress<E = Value> {
    pub step: usize,
    pub total_steps: usize,
    /// Epochs completed, fractional.
    pub epoch: f64,
    pub loss: f32,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Over the last [`SPEED_WINDOW`] steps; set for tasks that count tokens ([`Speed`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    /// Over the last [`SPEED_WINDOW`] steps; set for tasks that count examples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub examples_per_s: Option<f64>,
    pub elapsed_s: f64,
    pub eta_s: f64,
    /// Memory in use after the step: WebGPU's buffer pool; on the CPU backend what the
    /// process holds (the wasm module's linear memory, which only grows, so its peak so far;
    /// natively the resident set). None where neither can be read.
    pub memory_bytes: Option<u64>,
    /// Set on the steps where the eval batches were scored.
    pub eval: Option<E>,
}

impl<E: Serialize> Progress<E> {
    /// The same report with its evaluation as JSON: what a job's events carry, whatever the task.
    pub fn erased(&self) -> Progress {
        Progress {
            step: self.step,
            total_steps: self.total_steps,
            epoch: self.epoch,
            loss: self.loss,
            lr: self.lr,
            grad_norm: self.grad_norm,
            tokens_per_s: self.tokens_per_s,
            examples_per_s: self.examples_per_s,
            elapsed_s: self.elapsed_s,
            eta_s: self.eta_s,
            memory_bytes: self.memory_bytes,
            eval: self
                .eval
                .as_ref()
                .and_then(|e| serde_json::to_value(e).ok()),
        }
    }
}

/// Speeds in progress reports are averaged over this many recent steps.
pub const SPEED_WINDOW: usize = 20;

/// What a finished (or cancelled) run reports. A resumed run's summary covers the whole run,
/// the steps before its checkpoint included (their timings excepted).
#[derive(Debug, Clone, Serialize)]
pub struct Summary<E> {
    pub backend: String,
    pub method: Method,
    /// Steps completed.
    pub steps: usize,
    pub cancelled: bool,
    /// Train loss of every completed step (mean over the step's tokens or examples).
    pub losses: Vec<f32>,
    /// Global gradient norm (before clipping) of every completed step.
    pub grad_norms: Vec<f32>,
    pub lrs: Vec<f64>,
    /// Held-out scores before training (step 0), every `eval_every` steps and at the end.
    pub eval: Vec<EvalPoint<E>>,
    pub trainable_params: usize,
    pub total_params: usize,
    /// The first step includes kernel compilation on WebGPU, so it is reported apart.
    pub first_step_ms: f64,
    /// Median over the steps after the first.
    pub median_step_ms: f64,
    /// Over the steps after the first (the first alone when there is one).
    pub tokens_per_s: f64,
    /// As `tokens_per_s`, for tasks that count examples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub examples_per_s: Option<f64>,
    /// QLoRA: the base's quantized weights (absent with an f32 base).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantized_base: Option<QuantReport>,
    /// The most memory any step's progress reported (see [`Progress::memory_bytes`]).
    pub peak_memory_bytes: Option<u64>,
}

/// What a run calls after every step.
pub type OnStep<'a, E> = Box<dyn FnMut(&Progress<E>) -> Control + 'a>;

/// How a run is steered and saved, beyond its configuration.
pub struct RunOptions<'a, E> {
    /// Save checkpoints (and possibly continue from one).
    pub checkpointing: Option<Checkpointing<'a>>,
    /// Called after every step: go on, stop after this step, or pause before the next one.
    pub on_step: OnStep<'a, E>,
}

impl<E> Default for RunOptions<'_, E> {
    fn default() -> Self {
        Self {
            checkpointing: None,
            on_step: Box::new(|_| Control::Continue),
        }
    }
}

impl<'a, E> RunOptions<'a, E> {
    /// Report every step to `on_step`, which answers `bool` (`false` stops) or a [`Control`].
    pub fn on_step<C: Into<Control>>(
        mut self,
        mut on_step: impl FnMut(&Progress<E>) -> C + 'a,
    ) -> Self {
        self.on_step = Box::new(move |p| on_step(p).into());
        self
    }

    /// Save checkpoints as `checkpointing` says, and continue from its `resume` if given.
    pub fn checkpointing(mut self, checkpointing: Option<Checkpointing<'a>>) -> Self {
        self.checkpointing = checkpointing;
        self
    }
}

/// Train `model` for `task` on `train` (micro-batches; `config.grad_accum` of them per step),
/// scoring `eval` before, every `eval_every` steps and at the end.
///
/// With checkpointing, a checkpoint is saved every `every` steps and when the run is paused or
/// stopped before its last step; given one to resume from, the model must be prepared as for
/// the saved run (same base, method, configuration, data), and the run goes on from the saved
/// step with the saved trainable weights, AdamW state, batch order and task state, so its losses
/// are those of the uninterrupted run. On a non-finite loss or gradient the run stops with
/// `train.non_finite_loss` naming the step, and `model` keeps the weights from before it.
#[allow(clippy::too_many_arguments)]
pub async fn train_loop<M: Module, T: Task<M>>(
    model: &mut M,
    task: &mut T,
    backend: &Backend,
    train: &[T::Batch],
    eval: &[T::Batch],
    config: &FinetuneConfig,
    options: RunOptions<'_, T::Eval>,
) -> Result<Summary<T::Eval>> {
    let RunOptions {
        mut checkpointing,
        mut on_step,
    } = options;
    config.validate()?;
    if train.is_empty() {
        return Err(Error::config("there are no training batches"));
    }
    task.check(model, train, "training")?;
    task.check(model, eval, "evaluation")?;
    let (trainable_params, total_params) = parameter_counts(&*model);
    if trainable_params == 0 {
        return Err(Error::config(
            "nothing to train: every parameter is frozen (check freeze_layers and freeze_embeddings)",
        ));
    }
    let device = &config.training_device(backend);
    let n = train.len();
    let total_steps = config.total_steps(n);
    let schedule = LrSchedule {
        kind: config.schedule,
        base_lr: config.lr,
        warmup_steps: config.warmup,
        total_steps,
    };
    let mut summary = Summary {
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
        examples_per_s: None,
        quantized_base: None,
        peak_memory_bytes: None,
    };

    let resume = checkpointing.as_mut().and_then(|c| c.resume.take());
    if let Some(ck) = &resume {
        ck.check_resume(T::NAME, config, total_steps, n, total_params)?;
        summary.eval = ck.eval_points()?;
        task.restore(&ck.state)?;
        // Restored parameters take back their saved ids, which the optimizer record and the
        // no-decay group are keyed by: restore first.
        *model = restore_params(model.clone(), &ck.params)?;
    }
    let mut optim = adamw_optimizer(&*model, config, resume.is_some());
    let first_step = match &resume {
        Some(ck) => {
            optim = load_optimizer(optim, &ck.optimizer)?;
            summary.losses.clone_from(&ck.losses);
            summary.grad_norms.clone_from(&ck.grad_norms);
            summary.lrs.clone_from(&ck.lrs);
            summary.steps = ck.step;
            ck.step
        }
        None => {
            if !eval.is_empty() {
                let e = task.evaluate(model, eval).await?;
                summary.eval.push(EvalPoint { step: 0, eval: e });
            }
            0
        }
    };

    let mut stream = BatchStream::new(config.seed, n, config.shuffle);
    // The seeded stream is replayed up to where the checkpoint left it.
    stream.skip(resume.as_ref().map_or(0, |ck| ck.consumed));

    let mut start = now_ms();
    // (milliseconds, tokens, examples) of every step this run took.
    let mut timings: Vec<(f64, f64, f64)> = Vec::with_capacity(total_steps);
    for step in first_step..total_steps {
        let step_start = now_ms();
        task.before_step(device, step);
        let micro: Vec<usize> = (0..config.grad_accum)
            .map(|_| stream.next_batch())
            .collect();
        let units: usize = micro.iter().map(|&i| task.loss_units(&train[i])).sum();
        let (mut tokens, mut examples) = (0, 0);
        let mut accumulator = GradientsAccumulator::<M>::new();
        let mut loss_value = 0.0f64;
        for &i in &micro {
            let (t, e) = task.size(&train[i]);
            tokens += t;
            examples += e;
            let loss = task.loss(model, &train[i], units, device)?;
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

        summary.losses.push(loss_value);
        summary.grad_norms.push(grad_norm as f32);
        summary.lrs.push(lr);
        let done = step + 1;
        summary.steps = done;
        let eval_now = !eval.is_empty()
            && (done == total_steps || (config.eval_every > 0 && done % config.eval_every == 0));
        let scored = if eval_now {
            let e = task.evaluate(model, eval).await?;
            summary.eval.push(EvalPoint {
                step: done,
                eval: e.clone(),
            });
            Some(e)
        } else {
            None
        };
        let now = now_ms();
        timings.push((now - step_start, tokens as f64, examples as f64));
        let recent = &timings[timings.len().saturating_sub(SPEED_WINDOW)..];
        let (secs, tokens_per_s, examples_per_s) = rates(recent);
        let progress = Progress {
            step: done,
            total_steps,
            epoch: stream.consumed as f64 / n as f64,
            loss: loss_value,
            lr,
            grad_norm: grad_norm as f32,
            tokens_per_s: (T::SPEED == Speed::Tokens).then_some(tokens_per_s),
            examples_per_s: (T::SPEED == Speed::Examples).then_some(examples_per_s),
            elapsed_s: (now - start) / 1e3,
            eta_s: secs / recent.len() as f64 * (total_steps - done) as f64,
            memory_bytes: backend.memory_in_use(),
            eval: scored,
        };
        summary.peak_memory_bytes = summary.peak_memory_bytes.max(progress.memory_bytes);
        let control = on_step(&progress);
        if let Some(c) = checkpointing.as_mut() {
            let early = !matches!(control, Control::Continue);
            if done < total_steps && (early || (c.every > 0 && done % c.every == 0)) {
                let ck = Checkpoint {
                    task: T::NAME.to_owned(),
                    step: done,
                    consumed: stream.consumed,
                    config: config.clone(),
                    losses: summary.losses.clone(),
                    grad_norms: summary.grad_norms.clone(),
                    lrs: summary.lrs.clone(),
                    eval: summary
                        .eval
                        .iter()
                        .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
                        .collect(),
                    total_params,
                    train_batches: n,
                    state: task.state(),
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
            summary.cancelled = done < total_steps;
            break;
        }
        // Let the worker handle messages (cancel) between steps.
        yield_now().await;
    }

    summary.first_step_ms = timings.first().map_or(0.0, |t| t.0);
    let later = timings.get(1..).unwrap_or(&[]);
    summary.median_step_ms = median(&later.iter().map(|t| t.0).collect::<Vec<_>>());
    let measured = if later.is_empty() {
        timings.get(..1).unwrap_or(&[])
    } else {
        later
    };
    let (_, tokens_per_s, examples_per_s) = rates(measured);
    summary.tokens_per_s = tokens_per_s;
    summary.examples_per_s = (T::SPEED == Speed::Examples).then_some(examples_per_s);
    Ok(summary)
}

/// (seconds, tokens/s, examples/s) over `timings`.
fn rates(timings: &[(f64, f64, f64)]) -> (f64, f64, f64) {
    let secs = timings.iter().map(|t| t.0).sum::<f64>() / 1e3;
    let per_s = |v: f64| if secs > 0.0 { v / secs } else { 0.0 };
    let tokens: f64 = timings.iter().map(|t| t.1).sum();
    let examples: f64 = timings.iter().map(|t| t.2).sum();
    (secs, per_s(tokens), per_s(examples))
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

/// The device a module's parameters live on (the first one found).
pub(crate) fn module_device<M: Module>(module: &M) -> Result<Device> {
    struct First(Option<Device>);
    impl ModuleVisitor for First {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.0.is_none() {
                self.0 = Some(param.lazy_device());
            }
        }
    }
    let mut f = First(None);
    module.visit(&mut f);
    f.0.ok_or_else(|| Error::new(Code::Internal, "the model has no parameters"))
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

/// What every optimiser step does between backward and update: the global gradient norm, a
/// refusal of a non-finite loss or norm (the update is then not applied, so the model keeps the
/// weights from before this step), and torch's `clip_grad_norm_` (scale by max / (norm + 1e-6)
/// when that is below 1). Returns the norm before clipping.
async fn check_and_clip<M: Module>(
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
    grads: &'a GradientsParams,
    sum: Option<Tensor<1>>,
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
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for ScaleGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// Ids of 1-D parameters (biases, norm weights): no weight decay for them by default.
#[derive(Default)]
struct VectorIds(Vec<ParamId>);

impl ModuleVisitor for VectorIds {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if D == 1 {
            self.0.push(param.id);
        }
    }
}

/// AdamW as `config` sets it up: its betas, epsilon and weight decay, with biases and norms in a
/// no-decay group unless `decay_bias_and_norm`. `module` holds the parameters to step (restored
/// ones already carry their saved ids, which key the groups); `resuming`: every group rebuilds
/// its saved state on the CPU (see [`StatesOn`]), ready for [`load_optimizer`].
fn adamw_optimizer<M: Module>(
    module: &M,
    config: &FinetuneConfig,
    resuming: bool,
) -> ModuleOptimizer {
    let adamw = AdamWConfig::new()
        .with_beta_1(config.adam_beta1 as f32)
        .with_beta_2(config.adam_beta2 as f32)
        .with_epsilon(config.adam_eps as f32)
        .with_weight_decay(config.weight_decay as f32);
    let on_cpu = |inner| StatesOn {
        inner,
        device: Device::flex(),
    };
    let mut optim = adamw.init();
    if resuming {
        optim = optim.with_group(
            ParamGroup::ids_from_module(module.clone()),
            on_cpu(adamw.build()),
            None,
        );
    }
    if !config.decay_bias_and_norm && config.weight_decay > 0.0 {
        let mut ids = VectorIds::default();
        module.visit(&mut ids);
        let group = ParamGroup::from_ids(ids.0);
        let no_decay = adamw.clone().with_weight_decay(0.0).build();
        optim = if resuming {
            optim.with_group(group, on_cpu(no_decay), None)
        } else {
            optim.with_group(group, no_decay, None)
        };
    }
    optim
}

/// The micro-batch stream of a run: epochs over `n` batches, each in an order shuffled by a
/// generator seeded from the run's seed, so a run (and a resumed one, which replays the stream
/// up to its checkpoint with [`BatchStream::skip`]) draws the same batches on every platform.
struct BatchStream {
    rng: Rng,
    order: Vec<usize>,
    shuffle: bool,
    /// Micro-batches drawn so far (what a checkpoint saves as `consumed`).
    consumed: usize,
}

impl BatchStream {
    fn new(seed: u64, n: usize, shuffle: bool) -> Self {
        Self {
            rng: Rng::new(seed ^ 0x0D0E_D0E5),
            order: (0..n).collect(),
            shuffle,
            consumed: 0,
        }
    }

    /// The index of the next batch.
    fn next_batch(&mut self) -> usize {
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
    fn skip(&mut self, count: usize) {
        for _ in 0..count {
            self.next_batch();
        }
    }
}
