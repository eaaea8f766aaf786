//! Checkpoints of a causal fine-tuning run, so that a stopped run (a reloaded tab, a killed CLI)
//! continues as if it had not stopped: the trainable parameters (LoRA factors, or the weights
//! full fine-tuning changes) with their burn ids, AdamW's state (both moments and the step
//! counter of every parameter, burn's `OptimizerRecord` in its burnpack bytes), the position in
//! the seeded batch stream, and the history the summary reports (losses, grad norms, learning
//! rates, validation points).
//!
//! AdamW's record keys each parameter's state by its `ParamId`, and a freshly loaded model draws
//! new ids; restoring a parameter therefore gives it back its saved id as well as its value, so
//! the optimizer record loads unchanged.
//!
//! Not restored: the device's random generator, which draws dropout masks (`model_dropout`,
//! `lora_dropout`; both off by default). A resumed run with dropout draws other masks than the
//! uninterrupted one would have.

use burn::module::{ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{DynOptimizer, DynState, LearningRate, StateSink, StateSource};
use burn::prelude::*;
use burn::tensor::kind::BridgeTensor;
use burn::tensor::{Bytes, TensorData};
use serde::{Deserialize, Serialize};

use super::finetune::{EvalPoint, FinetuneConfig};
use crate::error::{Code, Error, Result};

const MAGIC: &[u8; 8] = b"WTCKPT01";

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
pub struct Checkpoint {
    /// Optimiser steps completed.
    pub step: usize,
    /// Micro-batches drawn from the seeded stream.
    pub consumed: usize,
    /// The run's configuration (a resume must use the same one).
    pub config: FinetuneConfig,
    pub losses: Vec<f32>,
    pub grad_norms: Vec<f32>,
    pub lrs: Vec<f64>,
    pub eval: Vec<EvalPoint>,
    pub params: Vec<SavedParam>,
    /// burn's `OptimizerRecord` (AdamW moments and step counters), burnpack bytes.
    #[serde(skip)]
    pub optimizer: Vec<u8>,
}

impl Checkpoint {
    /// One self-contained file: magic, JSON header length (u64 LE), the JSON header, every
    /// parameter's values (f32 LE, in header order), then the optimizer record.
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = serde_json::to_vec(self).unwrap_or_default();
        let floats: usize = self.params.iter().map(|p| p.values.len()).sum();
        let mut out = Vec::with_capacity(16 + header.len() + floats * 4 + self.optimizer.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        for p in &self.params {
            for v in &p.values {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out.extend_from_slice(&self.optimizer);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |why: &str| {
            Error::new(
                Code::DataInvalid,
                format!("this is not a webtune checkpoint ({why})"),
            )
        };
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err(bad("wrong header"));
        }
        let len = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default()) as usize;
        let rest = &bytes[16..];
        if rest.len() < len {
            return Err(bad("truncated header"));
        }
        let mut ck: Checkpoint =
            serde_json::from_slice(&rest[..len]).map_err(|e| bad(&format!("header: {e}")))?;
        let mut at = len;
        for p in &mut ck.params {
            let n: usize = p.shape.iter().product();
            let end = at + n * 4;
            if rest.len() < end {
                return Err(bad("truncated parameters"));
            }
            p.values = rest[at..end]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            at = end;
        }
        ck.optimizer = rest[at..].to_vec();
        Ok(ck)
    }
}

/// The trainable parameters of a module, read back from the device.
pub(crate) async fn save_params<M: Module>(module: &M) -> Result<Vec<SavedParam>> {
    let mut c = Trainable::default();
    module.visit(&mut c);
    let mut out = Vec::with_capacity(c.out.len());
    for (path, id, shape, value) in c.out {
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
    path: Vec<String>,
    out: Vec<(String, u64, Vec<usize>, Tensor<1>)>,
}

impl ModuleVisitor for Trainable {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.base();
        if !value.is_require_grad() {
            return;
        }
        let shape = value.dims().to_vec();
        let n: usize = shape.iter().product();
        self.out.push((
            self.path.join("."),
            param.id.val(),
            shape,
            value.detach().reshape([n]),
        ));
    }
}

/// Put saved values (and ids) back into the module's trainable parameters; every saved one must
/// find its parameter, with the same shape.
pub(crate) fn restore_params<M: Module>(module: M, saved: &[SavedParam]) -> Result<M> {
    let mut r = Restore {
        path: Vec::new(),
        saved,
        found: vec![false; saved.len()],
        error: None,
    };
    let module = module.map(&mut r);
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
    path: Vec<String>,
    saved: &'a [SavedParam],
    found: Vec<bool>,
    error: Option<Error>,
}

impl ModuleMapper for Restore<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.path.join(".");
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
    /// Receives each checkpoint.
    pub save: &'a mut dyn FnMut(Checkpoint),
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
