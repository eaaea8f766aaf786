//! Replaying a reference training run: the batches, hyperparameters and (for LoRA) initial
//! factors that `tools/reference/finetune_reference.py` recorded from PyTorch + PEFT, run through
//! webtune's own loop on any backend. The native parity tests and the browser's WebGPU test use
//! it; an embedder can use it as a self-check of a backend against the committed references.

use std::collections::BTreeMap;

use serde_json::Value;

use super::causal::{finetune, FinetuneSummary};
use super::finetune::{FinetuneConfig, Method, TrainableModel};
use super::lora::LoraInit;
use super::trainer::RunOptions;
use crate::backend::Backend;
use crate::data::TokenBatch;
use crate::error::{Error, Result};
use crate::models::loaded::Family;

/// One method's run from a reference file.
#[derive(Debug, Clone)]
pub struct ReferenceRun {
    pub config: FinetuneConfig,
    pub batches: Vec<TokenBatch>,
    pub init: LoraInit,
    /// The reference's per-step losses, to compare against.
    pub losses: Vec<f32>,
    pub grad_norms: Vec<f32>,
}

fn bad(what: &str) -> Error {
    Error::config(format!("the reference run has no valid {what}"))
}

fn floats(v: &Value, what: &str) -> Result<Vec<f32>> {
    fn walk(v: &Value, out: &mut Vec<f32>) -> bool {
        match v {
            Value::Array(a) => a.iter().all(|x| walk(x, out)),
            Value::Number(n) => n.as_f64().map(|x| out.push(x as f32)).is_some(),
            _ => false,
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out).then_some(out).ok_or_else(|| bad(what))
}

fn ints(v: &Value, what: &str) -> Result<Vec<i64>> {
    fn walk(v: &Value, out: &mut Vec<i64>) -> bool {
        match v {
            Value::Array(a) => a.iter().all(|x| walk(x, out)),
            Value::Number(n) => n.as_i64().map(|x| out.push(x)).is_some(),
            _ => false,
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out).then_some(out).ok_or_else(|| bad(what))
}

impl ReferenceRun {
    /// Read `method` (`"lora"` or `"full"`) from a `finetune_<model>.json` reference.
    pub fn from_json(reference: &Value, method: &str) -> Result<Self> {
        let run = reference
            .get(method)
            .filter(|v| v.is_object())
            .ok_or_else(|| bad(&format!("{method:?} section")))?;
        let config = FinetuneConfig::from_json(&run["config"].to_string())?;
        let mut batches = Vec::new();
        for b in reference["batches"]
            .as_array()
            .ok_or_else(|| bad("batches"))?
        {
            let rows = b["inputs"].as_array().ok_or_else(|| bad("batch inputs"))?;
            let seq_len = rows.first().and_then(Value::as_array).map_or(0, Vec::len);
            let batch = TokenBatch {
                batch_size: rows.len(),
                seq_len,
                inputs: ints(&b["inputs"], "batch inputs")?,
                targets: ints(&b["targets"], "batch targets")?,
                loss_mask: floats(&b["loss_mask"], "loss mask")?,
            };
            let n = batch.batch_size * batch.seq_len;
            if n == 0
                || batch.inputs.len() != n
                || batch.targets.len() != n
                || batch.loss_mask.len() != n
            {
                return Err(bad("batch shapes"));
            }
            batches.push(batch);
        }
        if batches.is_empty() {
            return Err(bad("batches"));
        }
        let init = match config.method {
            Method::Lora => {
                let factors = run["initial_factors"]
                    .as_object()
                    .ok_or_else(|| bad("initial LoRA factors"))?;
                let mut map = BTreeMap::new();
                for (module, f) in factors {
                    map.insert(
                        module.clone(),
                        (
                            floats(&f["lora_A"], "lora_A")?,
                            floats(&f["lora_B"], "lora_B")?,
                        ),
                    );
                }
                LoraInit::Given(map)
            }
            Method::Full => LoraInit::Seeded(config.seed),
        };
        Ok(Self {
            init,
            losses: floats(&run["losses"], "losses")?,
            grad_norms: floats(&run["grad_norms"], "grad norms")?,
            config,
            batches,
        })
    }
}

/// Run the reference's steps on `base` (a loaded model's weights, shared, not copied) on the
/// backend's training device.
pub async fn replay(
    base: &Family,
    backend: &Backend,
    run: &ReferenceRun,
) -> Result<(TrainableModel, FinetuneSummary)> {
    let family = base.trainable_on(&run.config.training_device(backend));
    let mut model = TrainableModel::prepare_with(family, &run.config, run.init.clone())?;
    let options = RunOptions::default();
    let summary = finetune(&mut model, backend, &run.batches, &[], &run.config, options).await?;
    Ok((model, summary))
}
