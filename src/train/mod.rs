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
use memory::{BatchShape, MemoryLimits};

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

/// Where an inspected job would run: the bytes of model files kept beside the loaded model
/// (the page keeps them to export) and the backend's limits, for the memory estimate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Room {
    pub kept_files: u64,
    pub limits: MemoryLimits,
}

/// Read, validate, split and batch a dataset file for `base`'s task without training: the
/// reports, the split, the batch and step counts, the memory the job would take on `room`
/// (with why it cannot fit, when it cannot) and a preview of the first examples as the model
/// sees them (each token's text and whether it counts in the loss; a classifier's label).
/// What `webtune data` prints and the page's dataset panel shows. `files` gives the chat
/// template of a causal model's conversations.
pub fn inspect_data<'a>(
    base: &LoadedModel,
    files: Option<&ModelFiles>,
    dataset: impl Into<DatasetFiles<'a>>,
    config: &JobConfig,
    room: Room,
) -> Result<Value> {
    let dataset = dataset.into();
    let decode = |id: i64| {
        base.tokenizer
            .as_ref()
            .and_then(|t| t.decode(&[id as u32]).ok())
            .unwrap_or_default()
    };
    let token = |id: i64, counts: bool| json!({ "id": id, "text": decode(id), "counts": counts });
    // The fields both tasks' data have.
    macro_rules! summary {
        ($task:literal, $d:expr, $classes:expr, $preview:expr) => {{
            let shapes = $d.train_batches.iter().map(|b| (b.batch_size, b.seq_len));
            let estimate = memory::estimate(
                &base.info,
                &config.train,
                BatchShape::largest(shapes),
                $classes,
                room.kept_files,
            );
            let problem = memory::check_fits(&estimate, room.limits, config.train.method).err();
            json!({
                "task": $task,
                "report": $d.report,
                "validation_report": $d.validation_report,
                "overlap_removed": $d.overlap_removed,
                "train_examples": $d.train.len(),
                "validation_examples": $d.validation.len(),
                "held_out": $d.held_out,
                "train_batches": $d.train_batches.len(),
                "eval_batches": $d.eval_batches.len(),
                "total_steps": config.train.total_steps($d.train_batches.len()),
                "memory": estimate,
                "memory_problem": problem.map(|e| e.message),
                "preview": $preview,
            })
        }};
    }
    Ok(if base.is_encoder() {
        let d = prepare_class_data(base, dataset, config)?;
        let preview: Vec<Value> = d.train_batches.first().map_or_else(Vec::new, |b| {
            (0..b.batch_size.min(3))
                .map(|row| {
                    let range = row * b.seq_len..(row + 1) * b.seq_len;
                    let tokens: Vec<Value> = b.input_ids[range.clone()]
                        .iter()
                        .zip(&b.attention_mask[range])
                        .filter(|(_, &m)| m == 1)
                        .map(|(&id, _)| token(id, true))
                        .collect();
                    let label = d.labels.label(b.labels[row] as usize);
                    json!({ "tokens": tokens, "label": label })
                })
                .collect()
        });
        let mut value = summary!("classification", d, d.labels.len(), preview);
        value["labels"] = json!(d.labels.labels);
        value
    } else {
        let chat = match files {
            Some(f) => chat_template(f)?,
            None => None,
        };
        let d = prepare_data(base, chat, dataset, config)?;
        let preview: Vec<Value> = d.train_batches.first().map_or_else(Vec::new, |b| {
            (0..b.batch_size.min(3))
                .map(|row| {
                    let range = row * b.seq_len..(row + 1) * b.seq_len;
                    // The row's inputs plus its last target: every token of the example.
                    // mask[t] says whether token t + 1 (the target of position t) counts.
                    let mut ids = b.inputs[range.clone()].to_vec();
                    ids.push(b.targets[range.end - 1]);
                    let mask = &b.loss_mask[range];
                    let tokens: Vec<Value> = ids
                        .iter()
                        .enumerate()
                        .map(|(k, &id)| token(id, k > 0 && mask[k - 1] > 0.0))
                        .collect();
                    json!({ "tokens": tokens })
                })
                .collect()
        });
        summary!("causal", d, 0, preview)
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
