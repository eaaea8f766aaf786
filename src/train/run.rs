//! The two calls the CLI and the worker make: `train` (load, score, fine-tune, score, export)
//! and `eval` (load, score). Batches come from `data`; exports come back as bytes per file.

use serde::Serialize;

use super::checkpoint::Checkpointing;
use super::control::Control;
use super::export::{export_adapter, export_merged, ExportFiles};
use super::finetune::{
    evaluate_loss, finetune_checkpointed, EvalLoss, FinetuneConfig, FinetuneProgress,
    FinetuneSummary, Method, TrainableModel,
};
use crate::backend::Backend;
use crate::data::TokenBatch;
use crate::error::Result;
use crate::io::hf::ModelFiles;
use crate::models::loaded::{Family, LoadedModel};

/// Files copied from the base model into the merged export, when present.
pub(crate) const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
];

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
/// `base_model` goes into the adapter's `base_model_name_or_path` (a Hub id or a path).
pub async fn train<C: Into<Control>>(
    files: ModelFiles,
    backend: &Backend,
    train: &[TokenBatch],
    eval: &[TokenBatch],
    config: &FinetuneConfig,
    base_model: &str,
    on_progress: impl FnMut(&FinetuneProgress) -> C,
) -> Result<TrainOutput> {
    train_checkpointed(
        files,
        backend,
        train,
        eval,
        config,
        base_model,
        None,
        on_progress,
    )
    .await
}

/// [`train`] with checkpoints saved and possibly resumed from (see
/// [`finetune_checkpointed`]).
#[allow(clippy::too_many_arguments)]
pub async fn train_checkpointed<C: Into<Control>>(
    files: ModelFiles,
    backend: &Backend,
    train: &[TokenBatch],
    eval: &[TokenBatch],
    config: &FinetuneConfig,
    base_model: &str,
    checkpointing: Option<Checkpointing<'_>>,
    on_progress: impl FnMut(&FinetuneProgress) -> C,
) -> Result<TrainOutput> {
    config.validate()?;
    let base_config = files.config()?;
    let extra: Vec<(String, Vec<u8>)> = TOKENIZER_FILES
        .iter()
        .filter_map(|n| files.get(n).map(|b| (n.to_string(), b.to_vec())))
        .collect();
    let loaded = LoadedModel::load(files, &config.training_device(backend))?;
    let mut model = TrainableModel::prepare(loaded.family, config)?;
    let summary = finetune_checkpointed(
        &mut model,
        backend,
        train,
        eval,
        config,
        checkpointing,
        on_progress,
    )
    .await?;
    let first_eval = summary.eval.first().filter(|e| e.step == 0).map(|e| e.eval);
    let last_eval = summary.eval.last().filter(|e| e.step == summary.steps);
    let after = match (last_eval, eval.is_empty()) {
        (Some(e), _) if summary.steps > 0 => Some(e.eval),
        (_, false) => Some(evaluate_loss(&model.family, eval).await?),
        _ => None,
    };
    let mut out: ExportFiles = Vec::new();
    if model.method == Method::Lora {
        for (n, b) in export_adapter(&model, base_model).await? {
            out.push((format!("adapter/{n}"), b));
        }
    }
    for (n, b) in export_merged(&model.family, &base_config).await? {
        out.push((format!("merged/{n}"), b));
    }
    for (n, b) in extra {
        out.push((format!("merged/{n}"), b));
    }
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
