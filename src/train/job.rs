//! A whole fine-tuning job as a person starts it, the same for every task: a model, a dataset
//! file and one configuration in; the data read, validated, split and batched, the base model
//! scored on the held-out part, training (the one loop of [`super::trainer`]), the exported
//! files, and the fine-tuned model scored on the same held-out part. What differs by task (how
//! data is batched, what "scored" means, what is exported) is a [`JobTask`]: the causal LM's
//! job is [`super::causal_job`], the classifier's [`super::classify_job`]. The browser worker
//! and the CLI both start jobs through [`super::run_task`], so they do the same thing.

use serde::{Deserialize, Serialize};

use super::checkpoint::Checkpointing;
use super::classify::HeadOptions;
use super::control::Control;
use super::embed::EmbedConfig;
use super::export::Export;
use super::finetune::{FinetuneConfig, Method};
use super::memory::{self, BatchShape, MemoryEstimate};
use super::trainer::{Progress, RunOptions, Summary};
use crate::backend::Backend;
use crate::data::split::{join_validation, split, Holdout};
use crate::data::validate::{
    inspect_with_progress, Dataset, InspectOptions, OnDataProgress, Report,
};
use crate::error::{Code, Error, Result};
use crate::io::hf::ModelFiles;
use crate::io::safetensors::StoreDtype;
use crate::io::tokenizer::Tokenizer;
use crate::models::loaded::{LoadedModel, ModelInfo};
use crate::rng::Rng;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobConfig {
    /// How the dataset file is read and tokenized (format, schema, seq_len, ...).
    pub data: InspectOptions,
    /// Share of the training file held out for the before/after evaluation when there is no
    /// validation file; unset (the default): [`auto_validation_fraction`], a tenth but at least
    /// [`MIN_HELD_OUT`] examples.
    pub validation_fraction: Option<f64>,
    /// At most this many held-out examples are scored (evaluation costs a forward pass each);
    /// unset (the default): as many as [`EVAL_FLOPS`] of work allow for the model, at least
    /// [`MIN_VALIDATION`]. Held-out examples of the training file that are not scored go back
    /// to training; those of a separate validation file are left unscored.
    pub validation_max: Option<usize>,
    /// Sequences per optimiser micro-batch.
    pub batch_size: usize,
    pub train: FinetuneConfig,
    /// Held-out prompts continued by the model before and after training.
    pub samples: usize,
    pub sample_tokens: usize,
    /// The classification head (encoder models given labelled texts).
    pub head: HeadOptions,
    /// Sentence embeddings (encoder models given pairs).
    pub embedding: EmbedConfig,
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
            validation_fraction: None,
            validation_max: None,
            batch_size: 4,
            train: FinetuneConfig::default(),
            samples: 3,
            sample_tokens: 24,
            head: HeadOptions::default(),
            embedding: EmbedConfig::default(),
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

    /// This configuration with `overrides` merged in: a JSON object in the configuration's own
    /// shape (`{"train": {"lr": 1e-4}, "data": {"causal": {"seq_len": 128}}}`), key by key, a
    /// `null` clearing an optional setting. What the CLI's flags and a page's form change; the
    /// result is read as a whole again, so a wrong key or type is a `config.invalid` error.
    pub fn with_overrides(&self, overrides: &serde_json::Value) -> Result<Self> {
        fn merge(base: &mut serde_json::Value, patch: &serde_json::Value) {
            match (base, patch) {
                (serde_json::Value::Object(base), serde_json::Value::Object(patch)) => {
                    for (key, value) in patch {
                        merge(
                            base.entry(key.clone()).or_insert(serde_json::Value::Null),
                            value,
                        );
                    }
                }
                (base, patch) => *base = patch.clone(),
            }
        }
        let mut value =
            serde_json::to_value(self).map_err(|e| Error::new(Code::Internal, format!("{e}")))?;
        merge(&mut value, overrides);
        Self::from_json(&value.to_string())
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self
            .validation_fraction
            .is_some_and(|f| !(f > 0.0 && f < 1.0))
        {
            return Err(Error::config("validation_fraction must be between 0 and 1"));
        }
        if self.batch_size == 0 || self.validation_max == Some(0) {
            return Err(Error::config(
                "batch_size and validation_max must be at least 1",
            ));
        }
        self.train.validate()
    }
}

/// Something a job reports while it runs.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobEvent<'a> {
    /// A new phase: "data", "memory", "samples" or "evaluation" (the task's before/after),
    /// "training", "export".
    Phase {
        phase: &'static str,
        message: String,
    },
    /// A training step, whatever the task (a classifier's reports `examples_per_s`, a causal
    /// LM's `tokens_per_s`).
    Step(&'a Progress),
}

pub(crate) fn tokenizer_of(model: &LoadedModel) -> Result<&Tokenizer> {
    model.tokenizer.as_ref().ok_or_else(|| {
        Error::new(
            Code::ModelMissingFile,
            "this model has no tokenizer, so a text dataset cannot be turned into tokens; load \
             the model together with its tokenizer.json",
        )
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

impl DatasetFile<'_> {
    /// The schema `options` give or the start of the file suggests (see
    /// [`crate::data::validate::detect_schema`]).
    pub fn schema(&self, options: &InspectOptions) -> Result<crate::data::schema::Schema> {
        match self.source {
            DataSource::Bytes(bytes) => {
                crate::data::validate::detect_schema(self.name, bytes, options)
            }
            #[cfg(not(target_arch = "wasm32"))]
            DataSource::Path(path) => {
                crate::data::validate::detect_schema_path(self.name, path, options)
            }
        }
    }
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

/// Forward-pass work one evaluation of the held-out set may take when `validation_max` is not
/// set (2 FLOPs per weight and token): about 15 s on two CPU cores in the page (CPU-wasm runs
/// ~35 GFLOP/s), a few seconds natively or on a GPU. SmolLM2-135M scores ~1,900 tokens with
/// it, MiniLM-L6 ~23,000 (a 400-sentence validation file whole). A run evaluates before and
/// after training and up to four times between ([`auto_eval_every`]).
pub const EVAL_FLOPS: f64 = 5e11;

/// The held-out share aims at no fewer examples than this when `validation_fraction` is not set:
/// a 25-point accuracy gain measured on 40 examples has a 95% interval clear of zero, on 20 it
/// need not (MiniLM on the 200-review sentiment sample, a tenth held out: +10 points, no verdict;
/// a fifth: +25, interval +5 to +45).
pub const MIN_HELD_OUT: usize = 40;

/// The held-out share when `validation_fraction` is not set, for a file of `examples`: a
/// tenth, raised towards [`MIN_HELD_OUT`] examples for a small file, but never more than a
/// quarter (the rest must be enough to train on).
pub fn auto_validation_fraction(examples: usize) -> f64 {
    (MIN_HELD_OUT as f64 / examples.max(1) as f64).clamp(0.1, 0.25)
}

/// Never fewer held-out examples than this are scored when `validation_max` is not set (when
/// there are as many): enough units for an interval on the verdict even when each is long.
pub const MIN_VALIDATION: usize = 16;

/// How many held-out examples are scored when `validation_max` is not set, for a model that
/// multiplies each token by `matmul_weights` weights and examples of `mean_tokens` tokens.
pub fn auto_validation_max(matmul_weights: usize, mean_tokens: f64) -> usize {
    let tokens = EVAL_FLOPS / (2.0 * matmul_weights.max(1) as f64);
    ((tokens / mean_tokens.max(1.0)) as usize).max(MIN_VALIDATION)
}

/// What the validation curve's points between "before" and "after" may cost, as a share of the
/// training steps' time.
pub const CURVE_SHARE: f64 = 0.1;

/// An evaluation's forward pass over as many positions as a training step's forward and
/// backward costs about this share of the step (measured in the page on CPU-wasm: 16 held-out
/// rows of 128 tokens in 10 s, a 4 × 128 SmolLM2 step in 6.3 s).
const EVAL_COST: f64 = 0.4;

/// Steps between validation-curve points when `eval_every` is not set, for a run of `steps`
/// whose held-out set has `eval_positions` positions and whose steps have `step_positions`: up
/// to four points between before and after, as many as fit in [`CURVE_SHARE`] of the training
/// time. A 20-step quick demo on SmolLM2 gets one (its six evaluations took a minute of a
/// 3.7-minute run); a 60-step run three.
pub fn auto_eval_every(steps: usize, eval_positions: usize, step_positions: f64) -> usize {
    let eval_in_steps = EVAL_COST * eval_positions as f64 / step_positions.max(1.0);
    let points = (CURVE_SHARE * steps as f64 / eval_in_steps.max(1e-9)).floor() as usize;
    steps.div_ceil(points.min(4) + 1).max(1)
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
    pub held_out: HeldOut,
}

/// What became of the held-out examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HeldOut {
    /// Examples the split held out (or the validation file gave).
    pub examples: usize,
    /// Of those, the ones scored before and after.
    pub scored: usize,
    /// Held-out examples of the training file beyond `validation_max`, trained on instead.
    pub returned_to_training: usize,
}

/// Read each file with `options` (`check` refuses a dataset of the wrong kind), then split: the
/// whole validation file against the training file less the examples they share, or a seeded
/// `validation_fraction` of the training file. At most `validation_max` examples (by default
/// what [`EVAL_FLOPS`] allow for `model`) are scored, a seeded draw among the held-out ones;
/// the rest of a held-out share goes back to training.
pub(crate) fn read_and_split(
    files: DatasetFiles<'_>,
    options: &InspectOptions,
    tokenizer: &Tokenizer,
    model: &ModelInfo,
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
                         on, one to evaluate){}",
                        dataset.examples.len(),
                        skipped_note(&[&report])
                    ),
                ));
            }
            let fraction = config
                .validation_fraction
                .unwrap_or_else(|| auto_validation_fraction(dataset.examples.len()));
            let holdout = Holdout::Fraction(fraction);
            (split(&dataset, holdout, config.train.seed)?, None, 0)
        }
    };
    let held_out_report = validation_report.as_ref().unwrap_or(&report);
    let mean_tokens = held_out_report
        .tokens
        .as_ref()
        .map_or(options.causal.seq_len as f64, |t| t.mean);
    let cap = config
        .validation_max
        .unwrap_or_else(|| auto_validation_max(model.dims.matmul_weights, mean_tokens));
    let (mut train, mut validation) = (parts.train, parts.validation);
    let examples = validation.len();
    let mut returned_to_training = 0;
    if validation.len() > cap {
        // A seeded draw, not the first `cap`: held-out examples are in file order, and the
        // start of a file is not a fair sample of it.
        Rng::new(config.train.seed ^ 0x5C0_4ED).shuffle(&mut validation);
        let rest = validation.split_off(cap);
        validation.sort_unstable();
        if files.validation.is_none() {
            returned_to_training = rest.len();
            train.extend(rest);
            train.sort_unstable();
        }
    }
    let held_out = HeldOut {
        examples,
        scored: validation.len(),
        returned_to_training,
    };
    if train.is_empty() || validation.is_empty() {
        let overlap = if overlap_removed > 0 {
            format!(
                " ({overlap_removed} training example(s) were dropped because the validation \
                 file has them too)"
            )
        } else {
            String::new()
        };
        let reports: Vec<&Report> = std::iter::once(&report)
            .chain(validation_report.as_ref())
            .collect();
        return Err(Error::new(
            Code::DataInvalid,
            format!(
                "{name}: the split left {} training and {} validation examples; both need at \
                 least one{overlap}{}",
                train.len(),
                validation.len(),
                skipped_note(&reports)
            ),
        ));
    }
    Ok(ReadSplit {
        dataset,
        report,
        validation_report,
        overlap_removed,
        train,
        validation,
        held_out,
    })
}

/// ". 1 record was skipped: data.jsonl line 4: malformed JSON (…)": the records the read
/// skipped, when too few examples are left, since they are why (at most three named).
fn skipped_note(reports: &[&Report]) -> String {
    let skipped: usize = reports.iter().map(|r| r.skipped).sum();
    if skipped == 0 {
        return String::new();
    }
    let named: Vec<&str> = reports
        .iter()
        .flat_map(|r| &r.issues)
        .take(3)
        .map(|i| i.message.as_str())
        .collect();
    let more = if skipped > named.len() { "; …" } else { "" };
    let records = if skipped == 1 {
        "record was"
    } else {
        "records were"
    };
    format!(". {skipped} {records} skipped: {}{more}", named.join("; "))
}

/// "64 held-out examples", or "150 of 459 held-out examples (the other 309 returned to
/// training)".
fn held_out_message(h: &HeldOut) -> String {
    if h.scored == h.examples {
        return format!("{} held-out examples", h.scored);
    }
    let rest = h.examples - h.scored;
    let why = if h.returned_to_training > 0 {
        format!("the other {rest} returned to training")
    } else {
        format!("the other {rest} not scored")
    };
    format!(
        "{} of {} held-out examples ({why}; set validation_max to change)",
        h.scored, h.examples
    )
}

/// "Reading train.csv…" or "Reading train.csv and valid.csv…".
fn reading_message(files: &DatasetFiles) -> String {
    match files.validation {
        Some(v) => format!("Reading {} and {}…", files.train.name, v.name),
        None => format!("Reading {}…", files.train.name),
    }
}

/// At most this many held-out examples whose prediction changed are listed (all are counted).
pub const MAX_CHANGED: usize = 20;

/// How a held-out example's prediction changed: "fixed" (wrong before, right after), "broken"
/// (right before, wrong after) or "changed" (wrong both times, differently).
pub fn change_status(right_before: bool, right_after: bool) -> &'static str {
    match (right_before, right_after) {
        (false, true) => "fixed",
        (true, false) => "broken",
        _ => "changed",
    }
}

/// The changed examples to list (fixed first, then broken, at most [`MAX_CHANGED`]) with how
/// many changed, were fixed and were broken in all.
pub fn tally_changes<T>(
    mut changed: Vec<T>,
    status: impl Fn(&T) -> &'static str,
) -> (Vec<T>, usize, usize, usize) {
    changed.sort_by_key(|c| match status(c) {
        "fixed" => 0,
        "broken" => 1,
        _ => 2,
    });
    let count = |s: &str| changed.iter().filter(|c| status(c) == s).count();
    let (fixed, broken, total) = (count("fixed"), count("broken"), changed.len());
    changed.truncate(MAX_CHANGED);
    (changed, total, fixed, broken)
}

/// Full fine-tuning of models above this many parameters saves no checkpoints.
pub const MAX_FULL_CHECKPOINT_PARAMS: usize = 16 << 20;

/// The checkpointing a job's training gets: saving every `config.checkpoint_every` steps, and
/// none at all (said in a phase event) for full fine-tuning of a model over
/// [`MAX_FULL_CHECKPOINT_PARAMS`] — unless the job resumes from a checkpoint (then it exists).
fn job_checkpointing<'c, C>(
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
    let too_big = config.train.method == Method::Full
        && base.info.dims.parameters > MAX_FULL_CHECKPOINT_PARAMS;
    let resuming = checkpointing.as_ref().is_some_and(|c| c.resume.is_some());
    if too_big && !resuming {
        if checkpointing.is_some() {
            on_event(JobEvent::Phase {
                phase: "training",
                message: format!(
                    "No checkpoints for this run: full fine-tuning of {} parameters would need \
                     about {} MiB per checkpoint (LoRA checkpoints are small)",
                    base.info.dims.parameters,
                    (base.info.dims.parameters * 12) >> 20
                ),
            });
        }
        None
    } else {
        checkpointing
    }
}

/// Where a job runs: the base model (its files and the loaded inference copy), the backend,
/// the configuration and the name the exports give the base.
pub struct JobContext<'j> {
    pub files: &'j ModelFiles,
    pub base: &'j LoadedModel,
    pub backend: &'j Backend,
    pub config: &'j JobConfig,
    pub base_name: &'j str,
}

/// A phase message: `(phase, message)`.
pub type Phase<'p> = &'p mut dyn FnMut(&'static str, String);

/// The sizes a job plans with and reports.
pub struct JobSizes {
    /// The largest training micro-batch (the memory estimate's activations).
    pub largest: BatchShape,
    /// Rows of a classification head (0 for none).
    pub labels: usize,
    pub train_examples: usize,
    pub train_batches: usize,
    pub held_out: HeldOut,
    /// Positions (rows × row length, padding included) of all training batches and of the
    /// held-out batches: what a pass over each costs.
    pub train_positions: usize,
    pub eval_positions: usize,
}

impl JobSizes {
    /// The sizes of a job whose training and held-out batches have these (rows, row length)
    /// shapes.
    pub fn of_batches(
        train: impl IntoIterator<Item = (usize, usize)>,
        eval: impl IntoIterator<Item = (usize, usize)>,
        labels: usize,
        train_examples: usize,
        held_out: HeldOut,
    ) -> Self {
        let train: Vec<(usize, usize)> = train.into_iter().collect();
        let positions = |shapes: &[(usize, usize)]| shapes.iter().map(|(b, t)| b * t).sum();
        let eval_positions = positions(&eval.into_iter().collect::<Vec<_>>());
        Self {
            largest: BatchShape::largest(train.iter().copied()),
            labels,
            train_examples,
            train_batches: train.len(),
            held_out,
            train_positions: positions(&train),
            eval_positions,
        }
    }
}

/// What a task adds to a job; [`run_job`] does the rest, the same for every task (phases,
/// checkpoint policy, memory plan, the training loop, the tokenizer in the export, the
/// fine-tuned model loaded back from the export).
#[allow(async_fn_in_trait)]
pub trait JobTask {
    /// The dataset read, validated, split and batched.
    type Data;
    /// The model being trained.
    type Model;
    /// The training loop's held-out scores.
    type Eval: Serialize;
    /// What the base model did on the held-out data, kept for the comparison after training.
    type Before;
    type Output;
    /// The training task's name ([`super::task::Task::NAME`]): a checkpoint of another task is
    /// refused before any data is read.
    const NAME: &'static str;

    fn prepare(&self, job: &JobContext<'_>, dataset: DatasetFiles) -> Result<Self::Data>;

    fn sizes(&self, data: &Self::Data) -> JobSizes;

    /// Score the base model on the held-out data and prepare the model to train.
    async fn before(
        &self,
        job: &JobContext<'_>,
        data: &Self::Data,
        phase: Phase<'_>,
    ) -> Result<(Self::Model, Self::Before)>;

    async fn train(
        &self,
        job: &JobContext<'_>,
        model: &mut Self::Model,
        data: &Self::Data,
        config: &FinetuneConfig,
        options: RunOptions<'_, Self::Eval>,
    ) -> Result<Summary<Self::Eval>>;

    /// The trained model's files: `merged/…` (a Hugging Face model folder, its weights written
    /// on demand in `job.config.export_dtype`) and, for LoRA, `adapter/…`.
    async fn export(
        &self,
        job: &JobContext<'_>,
        model: &Self::Model,
        data: &Self::Data,
    ) -> Result<Export>;

    /// The fine-tuned model for evaluation and generation, sharing the trained model's weights.
    async fn tuned(&self, job: &JobContext<'_>, model: &Self::Model) -> Result<LoadedModel>;

    /// Score the fine-tuned model and compare it with the base.
    async fn finish(
        &self,
        job: &JobContext<'_>,
        trained: Trained<Self>,
        phase: Phase<'_>,
    ) -> Result<Self::Output>;
}

/// A job after training and export, handed to [`JobTask::finish`].
pub struct Trained<T: JobTask + ?Sized> {
    pub data: T::Data,
    pub model: T::Model,
    pub before: T::Before,
    pub summary: Summary<T::Eval>,
    pub memory: MemoryEstimate,
    /// The exported files (the merged weights written on demand, in `config.export_dtype`).
    pub export: Export,
    /// The fine-tuned model on the inference device (see [`JobTask::tuned`]).
    pub tuned: LoadedModel,
}

/// Run `task`'s job: `base` (loaded from `job.files`) fine-tuned on `dataset`. `on_event` sees
/// phases and every step; returning `false` from it cancels training (the job still evaluates
/// and exports what was trained); returning [`Control::Pause`] for a step pauses training
/// after it (answers to phase events are ignored). With `checkpointing`, training saves
/// checkpoints (every `config.checkpoint_every` steps, and when paused or stopped early; none
/// for full fine-tuning of a model over [`MAX_FULL_CHECKPOINT_PARAMS`]) and can continue from
/// one saved by the same job (same model, dataset and configuration): the continued run's
/// losses are the uninterrupted run's.
pub async fn run_job<'a, T: JobTask, C: Into<Control>>(
    task: &T,
    job: &JobContext<'_>,
    dataset: impl Into<DatasetFiles<'a>>,
    checkpointing: Option<Checkpointing<'_>>,
    mut on_event: impl FnMut(JobEvent) -> C,
) -> Result<T::Output> {
    let config = job.config;
    config.validate()?;
    super::qlora::check_base_precision(&job.base.info, &config.train)?;
    // Refuse a checkpoint of another task before reading data or scoring the base model.
    if let Some(ck) = checkpointing.as_ref().and_then(|c| c.resume.as_ref()) {
        ck.check_task(T::NAME)?;
    }
    let checkpointing = job_checkpointing(job.base, config, checkpointing, &mut on_event);
    let dataset: DatasetFiles = dataset.into();
    on_event(JobEvent::Phase {
        phase: "data",
        message: reading_message(&dataset),
    });
    let data = task.prepare(job, dataset)?;
    let sizes = task.sizes(&data);
    let memory = memory::plan(
        &job.base.info,
        &config.train,
        sizes.largest,
        sizes.labels,
        job.files.resident_bytes(),
        &job.backend.info,
    )?;
    on_event(JobEvent::Phase {
        phase: "memory",
        message: memory_message(&memory),
    });
    let (mut model, before) = task
        .before(job, &data, &mut |phase, message| {
            on_event(JobEvent::Phase { phase, message });
        })
        .await?;

    on_event(JobEvent::Phase {
        phase: "training",
        message: format!(
            "Training on {} examples ({} batches), evaluating on {}…",
            sizes.train_examples,
            sizes.train_batches,
            held_out_message(&sizes.held_out)
        ),
    });
    let mut train_config = config.train.clone();
    if train_config.eval_every == 0 {
        let steps = train_config.total_steps(sizes.train_batches);
        let step_positions = sizes.train_positions as f64 / sizes.train_batches.max(1) as f64
            * train_config.grad_accum as f64;
        train_config.eval_every = auto_eval_every(steps, sizes.eval_positions, step_positions);
    }
    let options = RunOptions::default()
        .checkpointing(checkpointing)
        .on_step(|p| on_event(JobEvent::Step(&p.erased())));
    let summary = task
        .train(job, &mut model, &data, &train_config, options)
        .await?;

    on_event(JobEvent::Phase {
        phase: "export",
        message: "Preparing the export (adapter now, merged weights when saved)…".into(),
    });
    let mut export = task.export(job, &model, &data).await?;
    // A GGUF base has no tokenizer.json to copy: write the one built from its metadata, so
    // the export is a complete Hugging Face model.
    if !export.has("merged/tokenizer.json") {
        if let Some(json) = tokenizer_of(job.base)?.to_json()? {
            export.insert("merged/tokenizer.json", json.into_bytes());
        }
    }
    let tuned = task.tuned(job, &model).await?;
    let trained = Trained {
        data,
        model,
        before,
        summary,
        memory,
        export,
        tuned,
    };
    task.finish(job, trained, &mut |phase, message| {
        on_event(JobEvent::Phase { phase, message });
    })
    .await
}

/// "Estimated memory 1.2 GiB (weights …)" for the phase message.
pub fn memory_message(m: &MemoryEstimate) -> String {
    let mib = |b: u64| format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64);
    let load = if m.load > m.total {
        format!("; loading the model peaked near {}", mib(m.load))
    } else {
        String::new()
    };
    format!(
        "Estimated memory {} (weights {}, gradients {}, optimizer {}, activations {} for {} × {} \
         tokens, model files {}, runtime {}){load}",
        mib(m.total),
        mib(m.weights),
        mib(m.gradients),
        mib(m.optimizer),
        mib(m.activations),
        m.batch_size,
        m.seq_len,
        mib(m.files),
        mib(m.runtime),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_default_held_out_share_aims_at_enough_examples_to_decide() {
        // A tenth of a large file; a small file gives up to a quarter for MIN_HELD_OUT.
        assert_eq!(auto_validation_fraction(1000), 0.1);
        assert_eq!(auto_validation_fraction(400), 0.1);
        assert_eq!(auto_validation_fraction(200), 0.2);
        assert_eq!(auto_validation_fraction(100), 0.25);
        assert_eq!(auto_validation_fraction(4), 0.25);
        assert_eq!(auto_validation_fraction(0), 0.25);
        let e = JobConfig::from_json(r#"{"validation_fraction": 1.5}"#)
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(e.code, Code::ConfigInvalid);
        assert_eq!(
            JobConfig::from_json("{}").unwrap().validation_fraction,
            None
        );
    }

    #[test]
    fn the_validation_curve_costs_a_tenth_of_training_at_most_four_points() {
        // SmolLM2 quick demo: 16 rows of 128 held out, 4 × 128 steps, 20 steps: one point
        // between before and after (every 10 steps).
        assert_eq!(auto_eval_every(20, 16 * 128, 512.0), 10);
        // 60 steps: three (every 15).
        assert_eq!(auto_eval_every(60, 16 * 128, 512.0), 15);
        // A held-out set as costly as 20 steps: none, only before and after.
        assert_eq!(auto_eval_every(20, 50 * 512, 512.0), 20);
        // A cheap one and a long run: still four points at most.
        assert_eq!(auto_eval_every(1000, 64, 512.0), 200);
        assert_eq!(auto_eval_every(1, 64, 512.0), 1);
        assert_eq!(auto_eval_every(0, 64, 0.0), 1);
    }

    #[test]
    fn overrides_change_what_they_name_and_nothing_else() {
        let mut base = JobConfig::default();
        base.train.epochs = Some(3);
        base.data.causal.separator = " => ".into();
        assert_eq!(base.with_overrides(&json!({})).unwrap(), base);

        let patch = json!({
            "batch_size": 2,
            "data": { "causal": { "seq_len": 64 } },
            "train": { "lr": 1e-3, "steps": 7, "epochs": null, "quantize_base": "q8" },
        });
        let out = base.with_overrides(&patch).unwrap();
        let mut expected = base.clone();
        expected.batch_size = 2;
        expected.data.causal.seq_len = 64;
        expected.train.lr = 1e-3;
        expected.train.steps = Some(7);
        expected.train.epochs = None;
        expected.train.quantize_base = Some(crate::train::qlora::BaseQuant::Q8);
        assert_eq!(out, expected);

        for bad in [
            json!({ "train": { "lr": "fast" } }),
            json!({ "train": { "learning_rate": 1e-3 } }),
            json!({ "batch_sise": 2 }),
        ] {
            let e = base.with_overrides(&bad).unwrap_err();
            assert_eq!(e.code, Code::ConfigInvalid, "{bad}: {e:?}");
        }
    }
}
