//! Checkpoints of a fine-tuning run, whatever its task, so that a stopped run (a reloaded tab, a
//! killed CLI) continues as if it had not stopped: the trainable parameters (LoRA factors, the
//! weights full fine-tuning changes, a classifier's head) with their burn ids, AdamW's state
//! (both moments and the step counter of every parameter, burn's `OptimizerRecord` in its
//! burnpack bytes), the position in the seeded batch stream, the history the summary reports
//! (losses, grad norms, learning rates, validation points) and the task's own state (a
//! classifier's labels, head and dropout generator; see [`super::task::Task::state`]).
//!
//! AdamW's record keys each parameter's state by its `ParamId`, and a freshly loaded model draws
//! new ids; restoring a parameter therefore gives it back its saved id as well as its value, so
//! the optimizer record loads unchanged.
//!
//! Not saved: the device's random generator, which draws the causal LMs' dropout masks
//! (`model_dropout`, `lora_dropout`): the loop reseeds it from (seed, step) at every step, so a
//! resumed run draws the uninterrupted run's masks without it.
//!
//! The bytes start with a versioned magic, `WTCKPT03`; other versions are refused by name.

use burn::module::{Param, ParamId};
use burn::optim::{DynOptimizer, DynState, LearningRate, StateSink, StateSource};
use burn::prelude::*;
use burn::tensor::kind::BridgeTensor;
use burn::tensor::{Bytes, TensorData};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::finetune::FinetuneConfig;
use super::task::EvalPoint;
use crate::error::{Code, Error, Result};
use crate::models::walk::{MapAt, Paths, VisitAt};

/// The magic of the format written and read.
const MAGIC: &[u8; 8] = b"WTCKPT03";

/// One trainable parameter as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedParam {
    /// burn path, e.g. `blocks.0.attn.c_attn.weight.lora.a`.
    pub path: String,
    /// Its `ParamId` (what the optimizer record is keyed by).
    pub id: u64,
    pub shape: Vec<usize>,
    #[serde(skip)]
    pub values: Vec<f32>,
}

/// The state of a run after `step` optimiser steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The task of the run that saved it ("causal", "classification"): it continues only that.
    pub task: String,
    /// Optimiser steps completed.
    pub step: usize,
    /// Micro-batches drawn from the seeded stream.
    pub consumed: usize,
    /// The run's configuration (a resume must use the same one).
    pub config: FinetuneConfig,
    pub losses: Vec<f32>,
    pub grad_norms: Vec<f32>,
    pub lrs: Vec<f64>,
    /// Validation points so far, as the task scores them (`{step, ...}`).
    pub eval: Vec<Value>,
    /// Every parameter of the model being trained (frozen ones, adapters and head included):
    /// a resume on another model is refused even where the trainable shapes agree.
    pub total_params: usize,
    /// Training micro-batches of the run (another dataset or batching is refused).
    pub train_batches: usize,
    /// The task's own state ([`super::task::Task::state`]).
    pub state: Value,
    pub params: Vec<SavedParam>,
    /// burn's `OptimizerRecord` (AdamW moments and step counters), burnpack bytes.
    #[serde(skip)]
    pub optimizer: Vec<u8>,
}

impl Checkpoint {
    /// One self-contained file: magic, JSON header length (u64 LE), the JSON header, every
    /// parameter's values (f32 LE, in header order), the optimizer record, then a u64 LE
    /// checksum of everything before it, so a truncated or damaged file is refused rather than
    /// half loaded.
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = serde_json::to_vec(self).unwrap_or_default();
        let floats: usize = self.params.iter().map(|p| p.values.len()).sum();
        let mut out = Vec::with_capacity(24 + header.len() + floats * 4 + self.optimizer.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        for p in &self.params {
            for v in &p.values {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out.extend_from_slice(&self.optimizer);
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |why: &str| {
            Error::new(
                Code::DataInvalid,
                format!("this is not a webtune checkpoint ({why})"),
            )
        };
        if bytes.len() < 16 {
            return Err(bad("wrong header"));
        }
        match &bytes[..8] {
            m if m == MAGIC => {}
            m if m.starts_with(b"WTCKPT") => {
                return Err(Error::new(
                    Code::DataInvalid,
                    format!(
                        "this checkpoint has format {}, which this version of webtune does not \
                         read (it reads {})",
                        String::from_utf8_lossy(m),
                        String::from_utf8_lossy(MAGIC)
                    ),
                ))
            }
            _ => return Err(bad("wrong header")),
        }
        let body = bytes
            .len()
            .checked_sub(8)
            .filter(|&n| n >= 16)
            .ok_or_else(|| bad("truncated"))?;
        let (bytes, sum) = bytes.split_at(body);
        if checksum(bytes).to_le_bytes() != sum {
            return Err(bad("truncated or damaged: the checksum does not match"));
        }
        let len = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default());
        let rest = &bytes[16..];
        let len = match usize::try_from(len) {
            Ok(len) if len <= rest.len() => len,
            _ => return Err(bad("truncated header")),
        };
        let mut ck: Checkpoint =
            serde_json::from_slice(&rest[..len]).map_err(|e| bad(&format!("header: {e}")))?;
        let mut at = len;
        for p in &mut ck.params {
            let end = p
                .shape
                .iter()
                .try_fold(4usize, |n, &d| n.checked_mul(d))
                .and_then(|n| n.checked_add(at))
                .filter(|&end| end <= rest.len())
                .ok_or_else(|| bad("truncated parameters"))?;
            p.values = rest[at..end]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            at = end;
        }
        ck.optimizer = rest[at..].to_vec();
        Ok(ck)
    }

    /// Whether this checkpoint was saved by a `task` run (else a `config.invalid` error with
    /// details `{"field": "checkpoint", "reason": "task", "checkpoint_task", "task"}`).
    pub fn check_task(&self, task: &str) -> Result<()> {
        if self.task == task {
            return Ok(());
        }
        Err(Error::config(format!(
            "this checkpoint was saved by a {} fine-tuning run; it cannot continue a {task} one \
             (another model was loaded since?)",
            self.task
        ))
        .with_details(json!({
            "field": "checkpoint",
            "reason": "task",
            "checkpoint_task": self.task,
            "task": task,
        })))
    }

    /// Whether this checkpoint can continue a `task` run of `config` over `train_batches`
    /// micro-batches (`total_steps` steps) on a model of `total_params` parameters: the same
    /// kind of run, configuration, data and model, and not at the end already. A mismatch is a
    /// `config.invalid` error saying which (details: `{"field": "checkpoint", "reason": …}`).
    pub fn check_resume(
        &self,
        task: &str,
        config: &FinetuneConfig,
        total_steps: usize,
        train_batches: usize,
        total_params: usize,
    ) -> Result<()> {
        let refuse = |reason: &str, message: String| {
            Err(Error::config(message).with_details(json!({
                "field": "checkpoint",
                "reason": reason,
                "checkpoint_task": self.task,
                "task": task,
            })))
        };
        self.check_task(task)?;
        // The adapter a run continued is not saved (its factors are the checkpoint's own).
        let config = &FinetuneConfig {
            init_adapter: None,
            ..config.clone()
        };
        if &self.config != config {
            return refuse(
                "config",
                "the checkpoint was saved by a run with another configuration; resume with the \
                 same one"
                    .into(),
            );
        }
        if self.total_params != total_params {
            return refuse(
                "model",
                format!(
                    "the checkpoint was saved for a model of {} parameters, this one has \
                     {total_params}; resume on the same model",
                    self.total_params
                ),
            );
        }
        if self.train_batches != train_batches {
            return refuse(
                "data",
                format!(
                    "the checkpoint was saved by a run over {} training batches, this one has \
                     {train_batches}; resume with the same dataset and batch size",
                    self.train_batches
                ),
            );
        }
        if self.step >= total_steps {
            return refuse(
                "step",
                format!(
                    "the checkpoint is at step {}, the end of the run",
                    self.step
                ),
            );
        }
        if self.consumed != self.step * config.grad_accum
            || self.losses.len() != self.step
            || self.grad_norms.len() != self.step
            || self.lrs.len() != self.step
        {
            return refuse(
                "inconsistent",
                format!(
                    "the checkpoint is inconsistent (step {}, {} micro-batches, {} losses)",
                    self.step,
                    self.consumed,
                    self.losses.len()
                ),
            );
        }
        Ok(())
    }
}

impl Checkpoint {
    /// The validation points saved so far, read as the task's scores `E`; points that do not
    /// read, or lie beyond the checkpoint's step, make it `inconsistent` (as [`check_resume`]
    /// says of its other fields).
    ///
    /// [`check_resume`]: Checkpoint::check_resume
    pub fn eval_points<E: DeserializeOwned>(&self) -> Result<Vec<EvalPoint<E>>> {
        let refuse = |message: String| {
            Error::config(format!("the checkpoint is inconsistent: {message}"))
                .with_details(json!({ "field": "checkpoint", "reason": "inconsistent" }))
        };
        let points: Vec<EvalPoint<E>> = self
            .eval
            .iter()
            .map(|e| serde_json::from_value(e.clone()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| refuse(format!("its validation points: {e}")))?;
        if points.iter().any(|e| e.step > self.step) {
            return Err(refuse("its validation points lie beyond its step".into()));
        }
        Ok(points)
    }
}

/// A 64-bit checksum (FNV-1a over 8-byte words, then the tail bytes): quick enough for the
/// hundreds of megabytes of a large checkpoint in wasm, and any truncation or flipped byte
/// changes it.
fn checksum(bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01B3;
    let mut h: u64 = 0xCBF2_9CE4_8422_2325 ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        h = (h ^ w).wrapping_mul(PRIME);
        h ^= h >> 29;
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    h
}

/// The trainable parameters of a module, read back from the device.
pub(crate) async fn save_params<M: Module>(module: &M) -> Result<Vec<SavedParam>> {
    let mut c = Paths::new(Trainable::default());
    module.visit(&mut c);
    let mut out = Vec::with_capacity(c.inner.out.len());
    for (path, id, shape, value) in c.inner.out {
        let values = super::lora::read_f32(value).await?;
        out.push(SavedParam {
            path,
            id,
            shape,
            values,
        });
    }
    Ok(out)
}

#[derive(Default)]
struct Trainable {
    out: Vec<(String, u64, Vec<usize>, Tensor<1>)>,
}

impl VisitAt for Trainable {
    fn visit_at<const D: usize>(&mut self, path: &str, param: &Param<Tensor<D>>) {
        let value = param.base();
        if !value.is_require_grad() {
            return;
        }
        let shape = value.dims().to_vec();
        let n: usize = shape.iter().product();
        self.out.push((
            path.to_string(),
            param.id.val(),
            shape,
            value.detach().reshape([n]),
        ));
    }
}

/// Put saved values (and ids) back into the module's trainable parameters; every saved one must
/// find its parameter, with the same shape.
pub(crate) fn restore_params<M: Module>(module: M, saved: &[SavedParam]) -> Result<M> {
    let mut r = Paths::new(Restore {
        saved,
        found: vec![false; saved.len()],
        error: None,
    });
    let module = module.map(&mut r);
    let r = r.inner;
    if let Some(e) = r.error {
        return Err(e);
    }
    if let Some(i) = r.found.iter().position(|f| !f) {
        return Err(Error::config(format!(
            "the checkpoint's parameter {} is not trainable in this model (another model, method \
             or LoRA configuration?)",
            saved[i].path
        )));
    }
    Ok(module)
}

struct Restore<'a> {
    saved: &'a [SavedParam],
    found: Vec<bool>,
    error: Option<Error>,
}

impl MapAt for Restore<'_> {
    fn map_at<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(i) = self.saved.iter().position(|p| p.path == path) else {
            return param;
        };
        let saved = &self.saved[i];
        let dims = param.lazy_shape().dims::<D>().to_vec();
        if dims != saved.shape {
            self.error.get_or_insert_with(|| {
                Error::config(format!(
                    "the checkpoint's {path} has shape {:?}, the model's {dims:?}",
                    saved.shape
                ))
            });
            return param;
        }
        self.found[i] = true;
        let mut param = param;
        param.id = ParamId::from(saved.id);
        let data = TensorData::new(saved.values.clone(), saved.shape.clone());
        param.map(|old| {
            let grad = old.is_require_grad();
            Tensor::from_data(data, &old.device()).set_require_grad(grad)
        })
    }
}

/// burn's optimizer record as bytes.
pub(crate) fn optimizer_bytes(optim: &burn::optim::ModuleOptimizer) -> Result<Vec<u8>> {
    let bytes = optim.into_bytes().map_err(|e| {
        Error::new(
            Code::Internal,
            format!("saving the optimizer state failed: {e:?}"),
        )
    })?;
    Ok(bytes.to_vec())
}

pub(crate) fn load_optimizer(
    optim: burn::optim::ModuleOptimizer,
    bytes: &[u8],
) -> Result<burn::optim::ModuleOptimizer> {
    optim
        .from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| {
            Error::new(
                Code::DataInvalid,
                format!("the checkpoint's optimizer state does not load: {e:?}"),
            )
        })
}

/// Where a run resumes from and how it saves its checkpoints.
pub struct Checkpointing<'a> {
    /// Continue from this checkpoint (its `config` must equal the run's).
    pub resume: Option<Checkpoint>,
    /// Save every N optimiser steps (0: only when the run is paused or stopped early).
    pub every: usize,
    /// Receives each checkpoint. (Boxed rather than borrowed: a box's lifetime can shrink to
    /// that of the run's other callbacks, a `&mut dyn` one cannot.)
    pub save: Box<dyn FnMut(Checkpoint) + 'a>,
}

/// An optimizer whose states, when loaded from a record, are built on `device`. burn's
/// `ModuleOptimizer::load_record` builds them on `Device::default()`, which in the wasm build is
/// the WebGPU device: uninitialised (a panic) when the page trains on the CPU. The step moves a
/// state to its parameter's device anyway, so any device will do; this one exists.
pub(crate) struct StatesOn<O> {
    pub inner: O,
    pub device: Device,
}

impl<O: DynOptimizer> DynOptimizer for StatesOn<O> {
    fn step_dyn(
        &self,
        rank: usize,
        lr: LearningRate,
        tensor: BridgeTensor,
        grad: BridgeTensor,
        state: Option<DynState>,
    ) -> (BridgeTensor, Option<DynState>) {
        self.inner.step_dyn(rank, lr, tensor, grad, state)
    }

    fn to_device_dyn(&self, state: DynState, device: &Device) -> DynState {
        self.inner.to_device_dyn(state, device)
    }

    fn state_flatten(&self, prefix: &str, state: &DynState, out: &mut StateSink) {
        self.inner.state_flatten(prefix, state, out)
    }

    fn state_unflatten(
        &self,
        rank: usize,
        prefix: &str,
        src: &mut StateSource,
        _device: &Device,
    ) -> Option<DynState> {
        self.inner.state_unflatten(rank, prefix, src, &self.device)
    }
}
