//! A causal fine-tuning run from batches, without a job's data reading and comparison:
//! `train` (load, score, fine-tune, score, export) and `eval` (load, score). Batches come from
//! `data`; exports come back as bytes per file.

use serde::Serialize;

use super::causal::{evaluate_loss, finetune, EvalLoss, FinetuneSummary};
use super::export::{export_all, ExportFiles};
use super::finetune::{FinetuneConfig, TrainableModel};
use super::trainer::RunOptions;
use crate::backend::Backend;
use crate::data::TokenBatch;
use crate::error::Result;
use crate::io::hf::ModelFiles;
use crate::io::safetensors::StoreDtype;
use crate::models::loaded::{Family, LoadedModel};

/// A finished (or cancelled) run.
#[derive(Debug, Serialize)]
pub struct TrainOutput {
    pub summary: FinetuneSummary,
    /// Eval loss before and after training (None without eval batches).
    pub before: Option<EvalLoss>,
    pub after: Option<EvalLoss>,
    /// `merged/<file>` (model.safetensors, config.json, tokenizer files) and, for LoRA,
    /// `adapter/<file>` (adapter_model.safetensors, adapter_config.json).
    #[serde(skip)]
    pub files: ExportFiles,
    /// The fine-tuned model, adapters merged, ready for generation.
    #[serde(skip)]
    pub model: Family,
}

/// Load `files` on `backend`, fine-tune on `train`, score `eval` before and after, and export.
/// `base_model` goes into the adapter's `base_model_name_or_path` (a Hub id or a path);
/// `options` steer the run and its checkpoints (see [`finetune`]).
pub async fn train(
    files: ModelFiles,
    backend: &Backend,
    train: &[TokenBatch],
    eval: &[TokenBatch],
    config: &FinetuneConfig,
    base_model: &str,
    options: RunOptions<'_, EvalLoss>,
) -> Result<TrainOutput> {
    config.validate()?;
    let loaded = LoadedModel::load(files.clone(), &config.training_device(backend))?;
    let mut model = TrainableModel::prepare(loaded.family, config)?;
    let summary = finetune(&mut model, backend, train, eval, config, options).await?;
    let first_eval = summary
        .eval
        .first()
        .filter(|e| e.step == 0)
        .map(|e| e.eval.clone());
    let last_eval = summary.eval.last().filter(|e| e.step == summary.steps);
    let after = match (last_eval, eval.is_empty()) {
        (Some(e), _) if summary.steps > 0 => Some(e.eval.clone()),
        (_, false) => Some(evaluate_loss(&model.family, eval).await?),
        _ => None,
    };
    let out = export_all(&model, &files, base_model, StoreDtype::F32)
        .await?
        .read_all()
        .await?;
    Ok(TrainOutput {
        summary,
        before: first_eval,
        after,
        files: out,
        model: model.merged(),
    })
}

/// Load `files` on `backend`'s inference device and score `batches`.
pub async fn eval(
    files: ModelFiles,
    backend: &Backend,
    batches: &[TokenBatch],
) -> Result<EvalLoss> {
    let loaded = LoadedModel::load(files, &backend.inference)?;
    evaluate_loss(&loaded.family, batches).await
}
