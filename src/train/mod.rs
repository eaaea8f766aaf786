//! Training: one loop ([`trainer`]) over tasks ([`task`]: [`causal`] language modelling,
//! [`classify`]-cation), the jobs a person starts (data → before → train → after → export), and
//! what they need: LoRA wiring, optimiser schedule, checkpoints, export. The loop is written on
//! burn's core, nn and optim (burn-train's `Learner` does not build for wasm32) and is shared by
//! the browser worker and the native CLI; it reports progress through a callback that can also
//! stop or pause the run.

pub mod adapter;
pub mod causal;
pub mod causal_job;
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
pub mod recipe;
pub mod replay;
pub mod run;
pub mod schedule;
pub mod task;
pub mod toy;
pub mod trainer;

use serde::Serialize;
use serde_json::{json, Value};

use crate::backend::Backend;
use crate::error::Result;
use crate::io::hf::ModelFiles;
use crate::models::loaded::LoadedModel;
pub use causal_job::JobOutput;
pub use classify_job::ClassifyJobOutput;

use causal_job::{chat_template, eval_file, prepare_data, CausalJob};
use checkpoint::Checkpointing;
use classify_job::{eval_class_file, prepare_class_data, ClassifyJob};
use control::Control;
use export::Export;
use job::{run_job, DatasetFiles, JobConfig, JobContext, JobEvent};

/// What a job produced: a causal language model or a classifier.
#[derive(Serialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum JobResult {
    Causal(JobOutput),
    Classification(ClassifyJobOutput),
}

impl JobResult {
    /// The export (`merged/…`, `adapter/…`; the merged weights written when asked for).
    pub fn export(&self) -> &Export {
        match self {
            JobResult::Causal(o) => &o.export,
            JobResult::Classification(o) => &o.export,
        }
    }

    /// The export and the fine-tuned model (after serializing the result).
    pub fn into_parts(self) -> (Export, Option<LoadedModel>) {
        match self {
            JobResult::Causal(o) => (o.export, o.tuned),
            JobResult::Classification(o) => (o.export, o.tuned),
        }
    }
}

/// The job `base` calls for: classification for an encoder, causal LM fine-tuning otherwise.
/// With `checkpointing`, checkpoints are saved and possibly resumed from; a checkpoint continues
/// only the kind of job that saved it: a causal one given to an encoder (or the reverse) is
/// refused at once with `config.invalid` (details `{"field": "checkpoint", "reason": "task"}`),
/// as is one of another configuration, model, labelling or dataset. Full fine-tuning of a model
/// over [`job::MAX_FULL_CHECKPOINT_PARAMS`] saves none.
#[allow(clippy::too_many_arguments)]
pub async fn run_task<'a, C: Into<Control>>(
    files: &ModelFiles,
    base: &LoadedModel,
    backend: &Backend,
    dataset: impl Into<DatasetFiles<'a>>,
    config: &JobConfig,
    base_name: &str,
    checkpointing: Option<Checkpointing<'_>>,
    on_event: impl FnMut(JobEvent) -> C,
) -> Result<JobResult> {
    let job = JobContext {
        files,
        base,
        backend,
        config,
        base_name,
    };
    Ok(if base.is_encoder() {
        let out = run_job(&ClassifyJob, &job, dataset, checkpointing, on_event).await?;
        JobResult::Classification(out)
    } else {
        let out = run_job(&CausalJob, &job, dataset, checkpointing, on_event).await?;
        JobResult::Causal(out)
    })
}

/// Read, validate, split and batch a dataset file for `base`'s task without training: the
/// report, the split and the batch counts (what `webtune data` prints).
pub fn inspect_data(
    base: &LoadedModel,
    files: &ModelFiles,
    dataset: DatasetFiles,
    config: &JobConfig,
) -> Result<Value> {
    // The fields both tasks' data have; a classifier's adds its labels.
    macro_rules! summary {
        ($task:literal, $d:expr) => {
            json!({
                "task": $task,
                "report": $d.report,
                "validation_report": $d.validation_report,
                "overlap_removed": $d.overlap_removed,
                "train_examples": $d.train.len(),
                "validation_examples": $d.validation.len(),
                "train_batches": $d.train_batches.len(),
                "eval_batches": $d.eval_batches.len(),
            })
        };
    }
    Ok(if base.is_encoder() {
        let d = prepare_class_data(base, dataset, config)?;
        let mut value = summary!("classification", d);
        value["labels"] = json!(d.labels.labels);
        value
    } else {
        let d = prepare_data(base, chat_template(files)?, dataset, config)?;
        summary!("causal", d)
    })
}

/// Score `model` on every example of a dataset file as its task scores (loss, perplexity and
/// greedy answers for a causal LM; accuracy, F1 and confusion for a classifier), what
/// `webtune eval` prints.
pub async fn eval_data(
    model: &LoadedModel,
    files: &ModelFiles,
    name: &str,
    bytes: &[u8],
    config: &JobConfig,
) -> Result<Value> {
    if model.is_encoder() {
        eval_class_file(model, name, bytes, config).await
    } else {
        eval_file(model, chat_template(files)?, name, bytes, config).await
    }
}
