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
pub mod embed;
pub mod embed_job;
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
use crate::data;
use crate::error::{Code, Error, Result};
use crate::io::hf::ModelFiles;
use crate::models::loaded::LoadedModel;
pub use causal_job::JobOutput;
pub use classify_job::ClassifyJobOutput;
pub use embed_job::EmbedJobOutput;

use causal_job::{chat_template, eval_file, prepare_data, CausalJob};
use checkpoint::Checkpointing;
use classify_job::{eval_class_file, prepare_class_data, ClassifyJob};
use control::Control;
use embed_job::{eval_pair_file, is_pair_schema, prepare_pair_data, EmbedJob};
use export::Export;
use job::{run_job, DatasetFiles, JobConfig, JobContext, JobEvent};
use memory::{BatchShape, MemoryLimits};

/// What a job produced: a causal language model, a classifier or sentence embeddings.
#[derive(Serialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum JobResult {
    Causal(JobOutput),
    Classification(ClassifyJobOutput),
    Embedding(EmbedJobOutput),
}

impl JobResult {
    /// The export (`merged/…`, `adapter/…`; the merged weights written when asked for).
    pub fn export(&self) -> &Export {
        match self {
            JobResult::Causal(o) => &o.export,
            JobResult::Classification(o) => &o.export,
            JobResult::Embedding(o) => &o.export,
        }
    }

    /// The export and the fine-tuned model (after serializing the result).
    pub fn into_parts(self) -> (Export, Option<LoadedModel>) {
        match self {
            JobResult::Causal(o) => (o.export, o.tuned),
            JobResult::Classification(o) => (o.export, o.tuned),
            JobResult::Embedding(o) => (o.export, o.tuned),
        }
    }
}

/// What an encoder learns from a dataset: sentence embeddings from pairs, else a classifier.
fn encoder_tunes_embeddings(dataset: &DatasetFiles, config: &JobConfig) -> Result<bool> {
    Ok(is_pair_schema(&dataset.train.schema(&config.data)?))
}

/// The task `run_task` would train `base` for on `dataset`: "causal-lm", "classification" or
/// "embedding" (the CLI's `--task` names).
pub fn task_name(
    base: &LoadedModel,
    dataset: &DatasetFiles,
    config: &JobConfig,
) -> Result<&'static str> {
    Ok(if !base.is_encoder() {
        "causal-lm"
    } else if encoder_tunes_embeddings(dataset, config)? {
        "embedding"
    } else {
        "classification"
    })
}

/// The job `base` and the data call for: for an encoder, sentence embeddings when the data are
/// pairs (anchor/positive, sentence1/sentence2, question/answer) and classification otherwise;
/// causal LM fine-tuning for anything else.
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
    let dataset: DatasetFiles = dataset.into();
    Ok(
        if base.is_encoder() && encoder_tunes_embeddings(&dataset, config)? {
            let out = run_job(&EmbedJob, &job, dataset, checkpointing, on_event).await?;
            JobResult::Embedding(out)
        } else if base.is_encoder() {
            let out = run_job(&ClassifyJob, &job, dataset, checkpointing, on_event).await?;
            JobResult::Classification(out)
        } else {
            let out = run_job(&CausalJob, &job, dataset, checkpointing, on_event).await?;
            JobResult::Causal(out)
        },
    )
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
        ($task:literal, $d:expr, $classes:expr, $preview:expr) => {
            summary!($task, $d, $classes, $preview, |b| (b.batch_size, b.seq_len))
        };
        ($task:literal, $d:expr, $classes:expr, $preview:expr, $shape:expr) => {{
            let shapes = $d.train_batches.iter().map($shape);
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
    let pair_rows = |rows: &data::batching::TextRows, row: usize| -> Vec<Value> {
        let range = row * rows.seq_len..(row + 1) * rows.seq_len;
        rows.input_ids[range.clone()]
            .iter()
            .zip(&rows.attention_mask[range])
            .filter(|(_, &m)| m == 1)
            .map(|(&id, _)| token(id, true))
            .collect()
    };
    Ok(
        if base.is_encoder() && encoder_tunes_embeddings(&dataset, config)? {
            let d = prepare_pair_data(base, dataset, config)?;
            let preview: Vec<Value> = d.train_batches.first().map_or_else(Vec::new, |b| {
                (0..b.pairs().min(3))
                    .map(|row| {
                        json!({
                            "tokens": pair_rows(&b.anchors, row),
                            "positive": pair_rows(&b.positives, row),
                        })
                    })
                    .collect()
            });
            let mut value = summary!("embedding", d, 0, preview, |b| b.shape());
            value["seq_len"] = json!(d.seq_len);
            value
        } else if base.is_encoder() {
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
        },
    )
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
    let pairs = || -> Result<bool> {
        Ok(is_pair_schema(&data::validate::detect_schema(
            name,
            bytes,
            &config.data,
        )?))
    };
    if model.is_encoder() && pairs()? {
        eval_pair_file(model, name, bytes, config).await
    } else if model.is_encoder() {
        eval_class_file(model, name, bytes, config).await
    } else {
        eval_file(model, chat_template(files)?, name, bytes, config).await
    }
}

/// Score `model` (the base, or a model fine-tuned from `base`) on the held-out split a job on
/// `base` with `config` would make of `dataset`, without training: the base model's numbers
/// equal that job's `before`. `{task: "causal", loss, perplexity, tokens, validation_examples,
/// held_out, seconds}`, `{task: "classification", labels, loss, accuracy, macro_f1, per_class,
/// confusion_matrix, examples, validation_examples, held_out, seconds}` or `{task: "embedding",
/// loss, accuracy, mrr, positive_cosine, negative_cosine, pairs, validation_examples, held_out,
/// seconds}`. `files` give the chat template of a causal model's conversations.
pub async fn evaluate_split<'a>(
    base: &LoadedModel,
    model: &LoadedModel,
    files: Option<&ModelFiles>,
    dataset: impl Into<DatasetFiles<'a>>,
    config: &JobConfig,
) -> Result<Value> {
    let dataset: DatasetFiles = dataset.into();
    fn to_value(v: &impl Serialize) -> Result<Value> {
        serde_json::to_value(v).map_err(|e| Error::new(Code::Internal, e.to_string()))
    }
    let start = crate::platform::now_ms();
    if model.is_encoder() && encoder_tunes_embeddings(&dataset, config)? {
        let data = prepare_pair_data(base, dataset, config)?;
        let crate::models::loaded::Family::Bert(bert) = &model.family else {
            return Err(Error::config("sentence embeddings need an encoder"));
        };
        let (m, _) = embed::evaluate_pairs(bert, &data.eval_batches, config.embedding).await?;
        let mut value = to_value(&m)?;
        value["task"] = json!("embedding");
        value["validation_examples"] = json!(data.validation.len());
        value["held_out"] = json!(data.held_out);
        value["seconds"] = json!((crate::platform::now_ms() - start) / 1e3);
        return Ok(value);
    }
    if model.is_encoder() {
        let (data, m) = classify_job::evaluate_classification(model, dataset, config).await?;
        let mut value = to_value(&m)?;
        value["task"] = json!("classification");
        value["labels"] = json!(data.labels.labels);
        value["validation_examples"] = json!(data.validation.len());
        value["held_out"] = json!(data.held_out);
        return Ok(value);
    }
    let chat = match files {
        Some(f) => chat_template(f)?,
        None => None,
    };
    // A tuned model is scored on the base's split and tokenization.
    let data = prepare_data(base, chat, dataset, config)?;
    let loss = causal::evaluate_loss(&model.family, &data.eval_batches).await?;
    let mut value = to_value(&loss)?;
    value["task"] = json!("causal");
    value["validation_examples"] = json!(data.validation.len());
    value["held_out"] = json!(data.held_out);
    value["seconds"] = json!((crate::platform::now_ms() - start) / 1e3);
    Ok(value)
}
