//! A whole fine-tuning job as a person starts it: a model, a dataset file and one configuration
//! in; a validated dataset, a held-out split, training, the before/after evaluation on the
//! held-out examples (loss, perplexity, and greedy continuations side by side) and the exported
//! files out. The browser worker and the CLI both call [`run_job`], so they do the same thing.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::checkpoint::{CheckpointTask, Checkpointing};
use super::classify::ClassifyProgress;
use super::classify_job::{
    run_classify_job, run_classify_job_checkpointed, ClassifyJobOutput, HeadOptions,
};
use super::control::Control;
use super::export::{store_merged_as, ExportFiles};
use super::finetune::{evaluate_loss, EvalLoss, FinetuneConfig, FinetuneProgress, FinetuneSummary};
use super::memory::{self, BatchShape, MemoryEstimate};
use super::run::train_checkpointed;
use crate::backend::Backend;
use crate::data::batching::CausalEncoder;
use crate::data::chat::{ChatTemplate, Message};
use crate::data::split::{join_validation, split, Holdout};
use crate::data::validate::{
    inspect, inspect_with_progress, Content, Dataset, Example, InspectOptions, OnDataProgress,
    Report,
};
use crate::error::{Code, Error, Result};
use crate::eval::generate::{generate, GenerateOptions};
use crate::eval::metrics::{answer_metrics, AnswerMetrics};
use crate::io::hf::ModelFiles;
use crate::io::safetensors::StoreDtype;
use crate::io::tokenizer::Tokenizer;
use crate::models::loaded::LoadedModel;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobConfig {
    /// How the dataset file is read and tokenized (format, schema, seq_len, ...).
    pub data: InspectOptions,
    /// Share of the examples held out for the before/after evaluation.
    pub validation_fraction: f64,
    /// At most this many held-out examples are scored (evaluation costs a forward pass each).
    pub validation_max: usize,
    /// Sequences per optimiser micro-batch.
    pub batch_size: usize,
    pub train: FinetuneConfig,
    /// Held-out prompts continued by the model before and after training.
    pub samples: usize,
    pub sample_tokens: usize,
    /// The classification head (encoder models only).
    pub head: HeadOptions,
    /// Save a checkpoint every N training steps (and when paused or stopped early) where the
    /// caller asks for checkpoints (`run_task_checkpointed`); 0: only then. Causal and
    /// classification jobs alike.
    pub checkpoint_every: usize,
    /// The precision of the exported merged weights: "f32" (as trained), "f16" or "bf16" (half
    /// the download; the model shown in the page keeps f32).
    pub export_dtype: StoreDtype,
}

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            data: InspectOptions::default(),
            validation_fraction: 0.1,
            validation_max: 64,
            batch_size: 4,
            train: FinetuneConfig::default(),
            samples: 3,
            sample_tokens: 24,
            head: HeadOptions::default(),
            checkpoint_every: 25,
            export_dtype: StoreDtype::F32,
        }
    }
}

impl JobConfig {
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text)
            .map_err(|e| Error::config(format!("invalid fine-tuning configuration: {e}")))
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if !(self.validation_fraction > 0.0 && self.validation_fraction < 1.0) {
            return Err(Error::config("validation_fraction must be between 0 and 1"));
        }
        if self.batch_size == 0 || self.validation_max == 0 {
            return Err(Error::config(
                "batch_size and validation_max must be at least 1",
            ));
        }
        self.train.validate()
    }
}

/// One held-out prompt, what the data says follows it, and what each model wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Where the example comes from, e.g. "qa.jsonl line 12".
    pub source: String,
    pub prompt: String,
    pub reference: String,
    pub before: String,
    pub after: String,
}

/// Something a job reports while it runs.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobEvent<'a> {
    /// A new phase: "data", "training", "samples", "export".
    Phase {
        phase: &'static str,
        message: String,
    },
    Step(&'a FinetuneProgress),
    /// A classification step (`examples_per_s` instead of `tokens_per_s`).
    #[serde(rename = "step")]
    ClassStep(&'a ClassifyProgress),
}

#[derive(Serialize)]
pub struct JobOutput {
    pub report: Report,
    /// The separate validation file's report, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_report: Option<Report>,
    /// Training examples dropped because the validation file has them too.
    pub overlap_removed: usize,
    pub train_examples: usize,
    pub validation_examples: usize,
    pub train_batches: usize,
    pub summary: FinetuneSummary,
    /// Held-out loss of the base model and of the fine-tuned one.
    pub before: Option<EvalLoss>,
    pub after: Option<EvalLoss>,
    pub samples: Vec<Sample>,
    /// The memory the run was estimated to need (checked against the backend before training).
    pub memory: MemoryEstimate,
    /// Exact match and token F1 of the samples' greedy answers against their references, for
    /// prompt–completion and chat data (plain text has no answers to match).
    pub answers_before: Option<AnswerMetrics>,
    pub answers_after: Option<AnswerMetrics>,
    /// Names of the exported files (`merged/…`, `adapter/…`).
    pub files: Vec<String>,
    #[serde(skip)]
    pub export: ExportFiles,
    /// The fine-tuned model, loaded from its export on the inference device.
    #[serde(skip)]
    pub tuned: Option<LoadedModel>,
}

/// The dataset read, validated, split and batched for `base`'s tokenizer.
pub struct PreparedData {
    pub report: Report,
    /// The separate validation file's report, when there is one.
    pub validation_report: Option<Report>,
    /// Training examples dropped because the validation file has them too.
    pub overlap_removed: usize,
    pub dataset: Dataset,
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
    pub train_batches: Vec<crate::data::TokenBatch>,
    pub eval_batches: Vec<crate::data::TokenBatch>,
    pub chat: Option<ChatTemplate>,
}

/// The chat template a model ships (chat_template.jinja, tokenizer_config.json or GGUF
/// metadata; see [`ChatTemplate::from_model_files`]), if any.
pub fn chat_template(files: &ModelFiles) -> Result<Option<ChatTemplate>> {
    ChatTemplate::from_model_files(files)
}

fn tokenizer_of(model: &LoadedModel) -> Result<&Tokenizer> {
    model.tokenizer.as_ref().ok_or_else(|| {
        Error::new(
            Code::ModelMissingFile,
            "this model has no tokenizer, so a text dataset cannot be turned into tokens; load \
             the model together with its tokenizer.json",
        )
    })
}

/// Read, validate, split and batch a dataset for `base`.
pub fn prepare_data<'a>(
    base: &LoadedModel,
    chat: Option<ChatTemplate>,
    files: impl Into<DatasetFiles<'a>>,
    config: &JobConfig,
) -> Result<PreparedData> {
    let files = files.into();
    config.validate()?;
    let tokenizer = tokenizer_of(base)?;
    let mut options = config.data.clone();
    // Rows hold seq_len inputs plus one target: never more than the model's context.
    options.causal.seq_len = options
        .causal
        .seq_len
        .min(base.info.max_positions.saturating_sub(1))
        .max(1);
    if let Some(t) = &chat {
        if options.chat_template.is_none() {
            // The model's template with the model's special tokens, as it renders in training.
            options.chat_template = Some(t.source().to_owned());
            options.bos_token.clone_from(&t.bos_token);
            options.eos_token.clone_from(&t.eos_token);
        }
    }
    let architecture = &base.info.architecture;
    let read = read_and_split(files, &options, tokenizer, config, |dataset| {
        if dataset.labels.is_some() {
            return Err(Error::new(
                Code::DataInvalid,
                format!(
                    "{} is a classification dataset (text + label); {architecture} is a causal \
                     language model, which learns to continue text. Use an encoder model \
                     (BERT/MiniLM) for classification, or give prompt/completion pairs.",
                    dataset.file
                ),
            ));
        }
        Ok(())
    })?;
    let ReadSplit {
        dataset,
        report,
        validation_report,
        overlap_removed,
        train: train_idx,
        validation,
    } = read;
    let encoder = CausalEncoder::new(tokenizer, chat.as_ref(), options.causal.clone());
    let pick =
        |idx: &[usize]| -> Vec<&Example> { idx.iter().map(|&i| &dataset.examples[i]).collect() };
    let plain = dataset
        .examples
        .iter()
        .all(|e| matches!(e.content, Content::Text { .. }));
    let batches = |examples: Vec<&Example>| -> Result<Vec<crate::data::TokenBatch>> {
        if plain {
            encoder.packed(&examples, config.batch_size)
        } else {
            examples
                .chunks(config.batch_size)
                .map(|chunk| encoder.batch(chunk))
                .collect()
        }
    };
    let train_batches = batches(pick(&train_idx))?;
    let eval_batches = batches(pick(&validation))?;
    Ok(PreparedData {
        report,
        validation_report,
        overlap_removed,
        train: train_idx,
        validation,
        train_batches,
        eval_batches,
        chat,
        dataset,
    })
}

/// A dataset file, by the name messages use for it and where its bytes are.
#[derive(Debug, Clone, Copy)]
pub struct DatasetFile<'a> {
    pub name: &'a str,
    pub source: DataSource<'a>,
}

/// Where a dataset file's bytes are.
#[derive(Debug, Clone, Copy)]
pub enum DataSource<'a> {
    /// In memory (the browser's file picker, tests).
    Bytes(&'a [u8]),
    /// On disk: streamed where the format allows, so files larger than memory can be read.
    #[cfg(not(target_arch = "wasm32"))]
    Path(&'a std::path::Path),
}

/// The training file and, optionally, a separate validation file (without one, a seeded share
/// of the training file is held out: `validation_fraction`), and who to tell how reading them
/// goes.
#[derive(Clone, Copy)]
pub struct DatasetFiles<'a> {
    pub train: DatasetFile<'a>,
    pub validation: Option<DatasetFile<'a>>,
    pub progress: Option<OnDataProgress<'a>>,
}

impl<'a> From<DatasetFile<'a>> for DatasetFiles<'a> {
    fn from(train: DatasetFile<'a>) -> Self {
        Self {
            train,
            validation: None,
            progress: None,
        }
    }
}

/// The dataset files read, validated and split (indices into `dataset.examples`; the
/// validation file's examples, if any, follow the training file's).
pub(crate) struct ReadSplit {
    pub dataset: Dataset,
    pub report: Report,
    pub validation_report: Option<Report>,
    pub overlap_removed: usize,
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
}

/// Read each file with `options` (`check` refuses a dataset of the wrong kind), then split: the
/// whole validation file against the training file less the examples they share, or a seeded
/// `validation_fraction` of the training file. At most `validation_max` examples are kept for
/// validation.
pub(crate) fn read_and_split(
    files: DatasetFiles<'_>,
    options: &InspectOptions,
    tokenizer: &Tokenizer,
    config: &JobConfig,
    check: impl Fn(&Dataset) -> Result<()>,
) -> Result<ReadSplit> {
    let name = files.train.name;
    let read = |file: DatasetFile| match file.source {
        DataSource::Bytes(bytes) => {
            inspect_with_progress(file.name, bytes, options, Some(tokenizer), files.progress)
        }
        #[cfg(not(target_arch = "wasm32"))]
        DataSource::Path(path) => crate::data::validate::inspect_path(
            file.name,
            path,
            options,
            Some(tokenizer),
            files.progress,
        ),
    };
    let (mut dataset, report) = read(files.train)?;
    check(&dataset)?;
    let (parts, validation_report, overlap_removed) = match files.validation {
        Some(v) => {
            let (held_out, held_out_report) = read(v)?;
            check(&held_out)?;
            let (parts, removed) = join_validation(&mut dataset, held_out, config.train.seed)?;
            (parts, Some(held_out_report), removed)
        }
        None => {
            if dataset.examples.len() < 2 {
                return Err(Error::new(
                    Code::DataInvalid,
                    format!(
                        "{name} has {} usable example(s); at least 2 are needed (one to train \
                         on, one to evaluate)",
                        dataset.examples.len()
                    ),
                ));
            }
            let holdout = Holdout::Fraction(config.validation_fraction);
            (split(&dataset, holdout, config.train.seed)?, None, 0)
        }
    };
    let mut validation = parts.validation;
    validation.truncate(config.validation_max);
    if parts.train.is_empty() || validation.is_empty() {
        let overlap = if overlap_removed > 0 {
            format!(
                " ({overlap_removed} training example(s) were dropped because the validation \
                 file has them too)"
            )
        } else {
            String::new()
        };
        return Err(Error::new(
            Code::DataInvalid,
            format!(
                "{name}: the split left {} training and {} validation examples; both need at \
                 least one{overlap}",
                parts.train.len(),
                validation.len()
            ),
        ));
    }
    Ok(ReadSplit {
        dataset,
        report,
        validation_report,
        overlap_removed,
        train: parts.train,
        validation,
    })
}

/// "Reading train.csv…" or "Reading train.csv and valid.csv…".
pub(crate) fn reading_message(files: &DatasetFiles) -> String {
    match files.validation {
        Some(v) => format!("Reading {} and {}…", files.train.name, v.name),
        None => format!("Reading {}…", files.train.name),
    }
}

/// A prompt and its reference continuation for one held-out example.
fn sample_prompt(
    example: &Example,
    tokenizer: &Tokenizer,
    chat: Option<&ChatTemplate>,
    separator: &str,
) -> Result<Option<(Vec<u32>, String, String)>> {
    Ok(match &example.content {
        Content::Pair { prompt, completion } => {
            let text = format!("{prompt}{separator}");
            Some((tokenizer.encode(&text)?, text, completion.clone()))
        }
        Content::Chat { messages } => {
            let Some(last) = messages.iter().rposition(|m| m.role == "assistant") else {
                return Ok(None);
            };
            let fallback = ChatTemplate::chatml();
            let template = chat.unwrap_or(&fallback);
            let history: Vec<Message> = messages[..last].to_vec();
            let text = template.render(&history, true)?;
            Some((
                tokenizer.encode_with(&text, false)?,
                text,
                messages[last].content.clone(),
            ))
        }
        Content::Text { text } => {
            let ids = tokenizer.encode(text)?;
            if ids.len() < 4 {
                return Ok(None);
            }
            let cut = (ids.len() / 2).min(32);
            Some((
                ids[..cut].to_vec(),
                tokenizer.decode(&ids[..cut])?,
                tokenizer.decode(&ids[cut..])?,
            ))
        }
        Content::Labeled { .. } => None,
    })
}

/// Greedy continuation of `ids` as text (stopping at EOS).
pub async fn continue_text(model: &LoadedModel, ids: &[u32], tokens: usize) -> Result<String> {
    let options = GenerateOptions {
        max_new_tokens: tokens,
        greedy: true,
        stop_tokens: model.eos_token_id.into_iter().collect(),
        ..Default::default()
    };
    let max = model.info.max_positions.saturating_sub(tokens + 1).max(1);
    let ids = &ids[ids.len().saturating_sub(max)..];
    let out = generate(model.causal_lm(), &model.device, ids, &options, |_| true).await?;
    let out: Vec<u32> = out
        .into_iter()
        .filter(|t| Some(*t) != model.eos_token_id)
        .collect();
    match &model.tokenizer {
        Some(t) => t.decode(&out),
        None => Ok(format!("{out:?}")),
    }
}

/// Fine-tune `base` (loaded from `files`) on the dataset file `name`/`bytes` and evaluate it
/// before and after on held-out examples. `on_event` sees phases and every step; returning
/// `false` from it cancels training (the job still evaluates and exports what was trained);
/// returning [`Control::Pause`] for a step pauses training after it (answers to phase events are
/// ignored).
pub async fn run_job<'a, C: Into<Control>>(
    files: ModelFiles,
    base: &LoadedModel,
    backend: &Backend,
    dataset: impl Into<DatasetFiles<'a>>,
    config: &JobConfig,
    base_name: &str,
    on_event: impl FnMut(JobEvent) -> C,
) -> Result<JobOutput> {
    run_job_checkpointed(
        files, base, backend, dataset, config, base_name, None, on_event,
    )
    .await
}

/// Full fine-tuning of models above this many parameters saves no checkpoints.
pub const MAX_FULL_CHECKPOINT_PARAMS: usize = 16 << 20;

/// The checkpointing a job's training gets: saving every `config.checkpoint_every` steps, and
/// none at all (said in a phase event) for full fine-tuning of a model over
/// [`MAX_FULL_CHECKPOINT_PARAMS`] — unless the job resumes from a checkpoint (then it exists).
pub(crate) fn job_checkpointing<'c, C>(
    base: &LoadedModel,
    config: &JobConfig,
    checkpointing: Option<Checkpointing<'c>>,
    on_event: &mut impl FnMut(JobEvent) -> C,
) -> Option<Checkpointing<'c>> {
    let checkpointing = checkpointing.map(|c| Checkpointing {
        every: config.checkpoint_every,
        ..c
    });
    // A checkpoint holds the trainable weights and both AdamW moments, copied a few times on
    // the way out: fully fine-tuning a large model would need gigabytes (and could exhaust the
    // 4 GiB of wasm memory), so such runs train without checkpoints.
    let too_big = config.train.method == super::finetune::Method::Full
        && base.info.parameters > MAX_FULL_CHECKPOINT_PARAMS;
    let resuming = checkpointing.as_ref().is_some_and(|c| c.resume.is_some());
    if too_big && !resuming {
        if checkpointing.is_some() {
            on_event(JobEvent::Phase {
                phase: "training",
                message: format!(
                    "No checkpoints for this run: full fine-tuning of {} parameters would need \
                     about {} MiB per checkpoint (LoRA checkpoints are small)",
                    base.info.parameters,
                    (base.info.parameters * 12) >> 20
                ),
            });
        }
        None
    } else {
        checkpointing
    }
}

/// [`run_job`] whose training saves checkpoints (every `config.checkpoint_every` steps, and when
/// paused or stopped early) and can continue from one saved by the same job (same model,
/// dataset and configuration): the continued run's losses are the uninterrupted run's.
#[allow(clippy::too_many_arguments)]
pub async fn run_job_checkpointed<'a, C: Into<Control>>(
    files: ModelFiles,
    base: &LoadedModel,
    backend: &Backend,
    dataset: impl Into<DatasetFiles<'a>>,
    config: &JobConfig,
    base_name: &str,
    checkpointing: Option<Checkpointing<'_>>,
    mut on_event: impl FnMut(JobEvent) -> C,
) -> Result<JobOutput> {
    let checkpointing = job_checkpointing(base, config, checkpointing, &mut on_event);
    let dataset: DatasetFiles = dataset.into();
    let chat = chat_template(&files)?;
    on_event(JobEvent::Phase {
        phase: "data",
        message: reading_message(&dataset),
    });
    let data = prepare_data(base, chat, dataset, config)?;
    let tokenizer = tokenizer_of(base)?;
    let separator = config.data.causal.separator.clone();
    let memory = memory::plan(
        &base.info,
        &config.train,
        BatchShape::largest(data.train_batches.iter().map(|b| (b.batch_size, b.seq_len))),
        0,
        &backend.info,
    )?;
    on_event(JobEvent::Phase {
        phase: "memory",
        message: memory_message(&memory),
    });

    // Samples and the base model's continuations first: the base model is at hand now.
    let mut samples = Vec::new();
    for &i in &data.validation {
        if samples.len() >= config.samples {
            break;
        }
        let example = &data.dataset.examples[i];
        if let Some((ids, prompt, reference)) =
            sample_prompt(example, tokenizer, data.chat.as_ref(), &separator)?
        {
            if ids.is_empty() {
                continue;
            }
            on_event(JobEvent::Phase {
                phase: "samples",
                message: format!("Base model on held-out example {}…", samples.len() + 1),
            });
            let before = continue_text(base, &ids, config.sample_tokens).await?;
            samples.push((
                ids,
                Sample {
                    source: example.loc.to_string(),
                    prompt,
                    reference,
                    before,
                    after: String::new(),
                },
            ));
        }
    }

    on_event(JobEvent::Phase {
        phase: "training",
        message: format!(
            "Training on {} examples ({} batches), evaluating on {}…",
            data.train.len(),
            data.train_batches.len(),
            data.validation.len()
        ),
    });
    let mut config_train = config.train.clone();
    if config_train.eval_every == 0 {
        // A few points on the validation curve without slowing training much.
        let steps = config_train.total_steps(data.train_batches.len());
        config_train.eval_every = (steps / 5).max(1);
    }
    let out = train_checkpointed(
        files,
        backend,
        &data.train_batches,
        &data.eval_batches,
        &config_train,
        base_name,
        checkpointing,
        |p| on_event(JobEvent::Step(p)),
    )
    .await?;

    on_event(JobEvent::Phase {
        phase: "export",
        message: "Loading the fine-tuned model for evaluation…".into(),
    });
    let mut export = out.files;
    // A GGUF base has no tokenizer.json to copy: write the one built from its metadata, so
    // the export is a complete Hugging Face model.
    if !export.iter().any(|(n, _)| n == "merged/tokenizer.json") {
        if let Some(json) = tokenizer.to_json()? {
            export.push(("merged/tokenizer.json".into(), json.into_bytes()));
        }
    }
    // Nor a tokenizer_config.json: carry its chat template (and the tokens it inserts) over,
    // so the fine-tuned model chats like the base.
    if let Some(t) = data.chat.as_ref().filter(|_| {
        !export
            .iter()
            .any(|(n, _)| n == "merged/tokenizer_config.json" || n == "merged/chat_template.jinja")
    }) {
        let config = json!({
            "chat_template": t.source(),
            "bos_token": t.bos_token,
            "eos_token": t.eos_token,
        });
        export.push((
            "merged/tokenizer_config.json".into(),
            serde_json::to_vec_pretty(&config).unwrap_or_default(),
        ));
    }
    let mut merged = ModelFiles::new();
    for (n, b) in &export {
        if let Some(file) = n.strip_prefix("merged/") {
            merged.insert(file.to_owned(), b.clone());
        }
    }
    let tuned = LoadedModel::load(merged, &base.device)?;
    store_merged_as(&mut export, config.export_dtype)?;
    let after = match out.after {
        Some(a) => Some(a),
        None => Some(evaluate_loss(&tuned.family, &data.eval_batches).await?),
    };
    let before = match out.before {
        Some(b) => Some(b),
        None => Some(evaluate_loss(&base.family, &data.eval_batches).await?),
    };
    let total = samples.len();
    let mut done = Vec::new();
    for (k, (ids, mut sample)) in samples.into_iter().enumerate() {
        on_event(JobEvent::Phase {
            phase: "samples",
            message: format!("Fine-tuned model on held-out example {}/{total}…", k + 1),
        });
        sample.after = continue_text(&tuned, &ids, config.sample_tokens).await?;
        done.push(sample);
    }
    let answers = |after: bool| {
        if !data.dataset.has_answers() {
            return None;
        }
        answer_metrics(done.iter().map(|s| {
            let out = if after { &s.after } else { &s.before };
            (out.as_str(), s.reference.as_str())
        }))
    };
    let (answers_before, answers_after) = (answers(false), answers(true));
    Ok(JobOutput {
        report: data.report,
        validation_report: data.validation_report,
        overlap_removed: data.overlap_removed,
        train_examples: data.train.len(),
        validation_examples: data.validation.len(),
        train_batches: data.train_batches.len(),
        summary: out.summary,
        before,
        after,
        samples: done,
        memory,
        answers_before,
        answers_after,
        files: export.iter().map(|(n, _)| n.clone()).collect(),
        export,
        tuned: Some(tuned),
    })
}

/// Score a model on a dataset file (all of it): mean masked loss and perplexity, and for
/// prompt–completion and chat data the exact match and token F1 of greedy answers to the first
/// `config.samples` prompts (`answers`, as `train` reports `answers_before`/`answers_after`).
pub async fn eval_file(
    model: &LoadedModel,
    chat: Option<ChatTemplate>,
    name: &str,
    bytes: &[u8],
    config: &JobConfig,
) -> Result<serde_json::Value> {
    let tokenizer = tokenizer_of(model)?;
    let mut options = config.data.clone();
    options.causal.seq_len = options
        .causal
        .seq_len
        .min(model.info.max_positions.saturating_sub(1))
        .max(1);
    let (dataset, report) = inspect(name, bytes, &options, Some(tokenizer))?;
    let encoder = CausalEncoder::new(tokenizer, chat.as_ref(), options.causal.clone());
    let examples: Vec<&Example> = dataset.examples.iter().collect();
    let batches = if examples
        .iter()
        .all(|e| matches!(e.content, Content::Text { .. }))
    {
        encoder.packed(&examples, config.batch_size)?
    } else {
        examples
            .chunks(config.batch_size.max(1))
            .map(|c| encoder.batch(c))
            .collect::<Result<Vec<_>>>()?
    };
    let loss = evaluate_loss(&model.family, &batches).await?;
    // Greedy answers of the first `samples` prompts against their references, as `train` scores
    // its held-out samples (plain text has no answers).
    let mut pairs = Vec::new();
    if dataset.has_answers() {
        for example in &dataset.examples {
            if pairs.len() >= config.samples {
                break;
            }
            let prompt = sample_prompt(
                example,
                tokenizer,
                chat.as_ref(),
                &config.data.causal.separator,
            )?;
            if let Some((ids, _, reference)) = prompt.filter(|p| !p.0.is_empty()) {
                let answer = continue_text(model, &ids, config.sample_tokens).await?;
                pairs.push((answer, reference));
            }
        }
    }
    let answers = answer_metrics(pairs.iter().map(|(a, r)| (a.as_str(), r.as_str())));
    Ok(json!({
        "examples": dataset.examples.len(),
        "eval": loss,
        "answers": answers,
        "report": report,
    }))
}

/// What a job produced: a causal language model or a classifier.
#[derive(Serialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum JobResult {
    Causal(JobOutput),
    Classification(ClassifyJobOutput),
}

impl JobResult {
    /// The exported files (`merged/…`, `adapter/…`).
    pub fn export(&self) -> &ExportFiles {
        match self {
            JobResult::Causal(o) => &o.export,
            JobResult::Classification(o) => &o.export,
        }
    }

    /// Moves the exported files and the fine-tuned model out (after serializing the result).
    pub fn take(&mut self) -> (ExportFiles, Option<LoadedModel>) {
        match self {
            JobResult::Causal(o) => (std::mem::take(&mut o.export), o.tuned.take()),
            JobResult::Classification(o) => (std::mem::take(&mut o.export), o.tuned.take()),
        }
    }
}

/// The job `base` calls for: classification for an encoder, causal LM fine-tuning otherwise.
pub async fn run_task<'a, C: Into<Control>>(
    files: ModelFiles,
    base: &LoadedModel,
    backend: &Backend,
    dataset: impl Into<DatasetFiles<'a>>,
    config: &JobConfig,
    base_name: &str,
    on_event: impl FnMut(JobEvent) -> C,
) -> Result<JobResult> {
    if base.is_encoder() {
        let out = run_classify_job(files, base, backend, dataset, config, on_event).await?;
        Ok(JobResult::Classification(out))
    } else {
        let out = run_job(files, base, backend, dataset, config, base_name, on_event).await?;
        Ok(JobResult::Causal(out))
    }
}

/// [`run_task`] with checkpoints, saved and resumed from: [`run_job_checkpointed`] for a causal
/// LM, [`run_classify_job_checkpointed`] for an encoder (the checkpoint then holds the
/// classification head too). A checkpoint continues only the kind of job that saved it: a
/// causal one given to an encoder (or the reverse) is refused at once with `config.invalid`
/// (details `{"field": "checkpoint", "reason": "task"}`), as is one of another configuration,
/// model, labelling or dataset. Full fine-tuning of a model over [`MAX_FULL_CHECKPOINT_PARAMS`]
/// saves none (see [`run_job_checkpointed`]).
#[allow(clippy::too_many_arguments)]
pub async fn run_task_checkpointed<'a, C: Into<Control>>(
    files: ModelFiles,
    base: &LoadedModel,
    backend: &Backend,
    dataset: impl Into<DatasetFiles<'a>>,
    config: &JobConfig,
    base_name: &str,
    checkpointing: Option<Checkpointing<'_>>,
    on_event: impl FnMut(JobEvent) -> C,
) -> Result<JobResult> {
    // Refuse a checkpoint of the other kind before reading data or scoring the base model.
    let task = if base.is_encoder() {
        CheckpointTask::Classification
    } else {
        CheckpointTask::Causal
    };
    if let Some(ck) = checkpointing.as_ref().and_then(|c| c.resume.as_ref()) {
        ck.check_task(task)?;
    }
    if base.is_encoder() {
        let out = run_classify_job_checkpointed(
            files,
            base,
            backend,
            dataset,
            config,
            checkpointing,
            on_event,
        )
        .await?;
        return Ok(JobResult::Classification(out));
    }
    let out = run_job_checkpointed(
        files,
        base,
        backend,
        dataset,
        config,
        base_name,
        checkpointing,
        on_event,
    )
    .await?;
    Ok(JobResult::Causal(out))
}

/// "About 1.2 GiB: weights …" for the phase message.
pub fn memory_message(m: &MemoryEstimate) -> String {
    let mib = |b: u64| format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64);
    format!(
        "Estimated memory {} (weights {}, gradients {}, optimizer {}, activations {} for {} × {} \
         tokens)",
        mib(m.total),
        mib(m.weights),
        mib(m.gradients),
        mib(m.optimizer),
        mib(m.activations),
        m.batch_size,
        m.seq_len
    )
}
