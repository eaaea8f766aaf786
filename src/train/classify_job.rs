//! The classifier's job ([`JobTask`]): an encoder (BERT, MiniLM) and a labelled dataset file
//! in; the labels mapped to ids, a held-out split (stratified), the before/after metrics on it
//! (accuracy, macro-F1, per class, confusion matrix), the held-out examples whose prediction
//! changed, and a `BertForSequenceClassification` export out.
//!
//! "Before" is the base encoder with the head it will start training from: the checkpoint's own
//! head when it has one per label, otherwise a freshly drawn one, so "before" is then chance
//! level by construction — the honest baseline for a new labelling.

use serde::Serialize;

use super::classify::{
    batch_logits, export_classifier, export_classifier_adapter, predict, train_classifier,
    ClassEval, ClassifierModel, ClassifySummary, HeadConfig, HeadOptions,
};
use super::export::{tokenizer_files, Export};
use super::finetune::FinetuneConfig;
use super::job::{
    change_status, read_and_split, tally_changes, tokenizer_of, DatasetFiles, HeldOut, JobConfig,
    JobContext, JobSizes, JobTask, Phase, ReadSplit, Trained,
};
use super::memory::MemoryEstimate;
use super::trainer::RunOptions;
use crate::data::batching::{class_batch_of_ids, ClassBatch, LabelMap};
use crate::data::validate::{inspect, Content, Dataset, Example, Report};
use crate::error::{Code, Error, Result};
use crate::eval::metrics::{argmax, classification_metrics, log_softmax, ClassMetrics};
use crate::eval::uncertainty::{compare_classes, ClassComparison, ClassUnit};
use crate::io::hf::ModelFiles;
use crate::io::safetensors::StoreDtype;
use crate::io::tokenizer::Tokenizer;
use crate::models::bert::{Bert, Pooling};
use crate::models::loaded::{Family, LoadedModel};
use crate::platform::now_ms;

/// What the prediction for one example was.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub label: String,
    /// Softmax probability of that label.
    pub prob: f64,
    /// Probability of the true label.
    pub prob_true: f64,
}

/// A held-out example the fine-tuned model labels differently from the base model.
#[derive(Debug, Clone, Serialize)]
pub struct Changed {
    /// Where the example comes from, e.g. "reviews.csv row 12 (line 13)".
    pub source: String,
    pub text: String,
    /// The true label.
    pub label: String,
    /// "fixed" (wrong before, right after), "broken" (right before, wrong after) or "changed"
    /// (wrong both times, differently).
    pub status: &'static str,
    pub before: Prediction,
    pub after: Prediction,
}

#[derive(Serialize)]
pub struct ClassifyJobOutput {
    pub report: Report,
    /// The separate validation file's report, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_report: Option<Report>,
    /// Training examples dropped because the validation file has them too.
    pub overlap_removed: usize,
    /// Class names, in id order (the head's rows; `id2label` of the export).
    pub labels: Vec<String>,
    pub pooling: Pooling,
    /// Whether the head came from the checkpoint (else it was drawn new).
    pub head_from_checkpoint: bool,
    pub train_examples: usize,
    pub validation_examples: usize,
    /// How many examples were held out, scored, and returned to training.
    pub held_out: HeldOut,
    pub train_batches: usize,
    /// The memory the run was estimated to need (checked against the backend before training).
    pub memory: MemoryEstimate,
    pub summary: ClassifySummary,
    pub before: ClassMetrics,
    pub after: ClassMetrics,
    /// Before and after with 95% intervals, and the verdict their changes give (paired over
    /// the held-out examples).
    pub comparison: Option<ClassComparison>,
    /// Held-out examples whose predicted label changed, fixed ones first.
    pub changed: Vec<Changed>,
    pub changed_total: usize,
    pub fixed: usize,
    pub broken: usize,
    /// Names of the exported files (`merged/…`).
    pub files: Vec<String>,
    #[serde(skip)]
    pub export: Export,
    /// The fine-tuned classifier, loaded from its export on the inference device.
    #[serde(skip)]
    pub tuned: Option<LoadedModel>,
}

/// `examples` tokenized into batches of `batch_size`, each padded to its longest example
/// (at most `seq_len` tokens) rather than to `seq_len`: short sentences cost what they are.
fn batches(
    tokenizer: &Tokenizer,
    labels: &LabelMap,
    examples: &[&Example],
    batch_size: usize,
    seq_len: usize,
    pad_id: u32,
) -> Result<Vec<ClassBatch>> {
    examples
        .chunks(batch_size.max(1))
        .map(|chunk| {
            // Each text is tokenized once, for its length and its row.
            let ids = chunk
                .iter()
                .map(|e| match &e.content {
                    Content::Labeled { text, .. } => tokenizer.encode(text),
                    _ => Ok(Vec::new()),
                })
                .collect::<Result<Vec<_>>>()?;
            let longest = ids.iter().map(Vec::len).max().unwrap_or(1).max(1);
            class_batch_of_ids(tokenizer, labels, chunk, ids, longest.min(seq_len), pad_id)
        })
        .collect()
}

/// Logits of every example of `batches`, in order, with the time it took.
async fn logits_of(
    model: &ClassifierModel,
    batches: &[ClassBatch],
) -> Result<(Vec<Vec<f32>>, f64)> {
    let start = now_ms();
    let mut out = Vec::new();
    for b in batches {
        out.extend(predict(model, b).await?);
    }
    Ok((out, (now_ms() - start) / 1e3))
}

fn prediction(labels: &LabelMap, logits: &[f32], truth: usize) -> Prediction {
    let lp = log_softmax(logits);
    let p = argmax(logits);
    Prediction {
        label: labels.label(p).unwrap_or_default().to_owned(),
        prob: lp[p].exp(),
        prob_true: lp.get(truth).map_or(0.0, |v| v.exp()),
    }
}

/// A labelled dataset read, validated, split (stratified) and batched for `base`.
pub struct ClassData {
    pub report: Report,
    /// The separate validation file's report, when there is one.
    pub validation_report: Option<Report>,
    /// Training examples dropped because the validation file has them too.
    pub overlap_removed: usize,
    pub dataset: Dataset,
    pub labels: LabelMap,
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
    /// What became of the held-out examples (how many scored, how many returned to training).
    pub held_out: HeldOut,
    pub train_batches: Vec<ClassBatch>,
    pub eval_batches: Vec<ClassBatch>,
}

/// Read, validate, split and batch a labelled dataset file for the encoder `base`.
pub fn prepare_class_data<'a>(
    base: &LoadedModel,
    files: impl Into<DatasetFiles<'a>>,
    config: &JobConfig,
) -> Result<ClassData> {
    config.validate()?;
    let tokenizer = tokenizer_of(base)?;
    let mut options = config.data.clone();
    options.causal.seq_len = options
        .causal
        .seq_len
        .min(base.info.dims.max_positions)
        .max(2);
    let seq_len = options.causal.seq_len;
    let architecture = &base.info.architecture;
    let read = read_and_split(
        files.into(),
        &options,
        tokenizer,
        &base.info,
        config,
        |dataset| {
            if dataset.labels.is_none() {
                return Err(Error::new(
                    Code::DataInvalid,
                    format!(
                    "{} has no labels; {architecture} is an encoder, fine-tuned here to classify \
                     texts. Give each example a text and a label (fields text/label, \
                     sentence/label or text/category), or load a causal language model to learn \
                     to continue text.",
                    dataset.file
                ),
                ));
            }
            Ok(())
        },
    )?;
    let ReadSplit {
        dataset,
        report,
        validation_report,
        overlap_removed,
        train,
        validation,
        held_out,
    } = read;
    let labels = dataset
        .labels
        .clone()
        .unwrap_or_else(|| LabelMap::from_labels([]));
    if labels.len() < 2 {
        return Err(Error::new(
            Code::DataInvalid,
            format!(
                "{} has a single label ({}); classification needs at least two",
                dataset.file,
                labels.labels.join(", ")
            ),
        ));
    }
    let pick =
        |idx: &[usize]| -> Vec<&Example> { idx.iter().map(|&i| &dataset.examples[i]).collect() };
    let pad_id = tokenizer.token_id("[PAD]").unwrap_or(0);
    let batch = |idx: &[usize]| {
        batches(
            tokenizer,
            &labels,
            &pick(idx),
            config.batch_size,
            seq_len,
            pad_id,
        )
    };
    let train_batches = batch(&train)?;
    let eval_batches = batch(&validation)?;
    Ok(ClassData {
        report,
        validation_report,
        overlap_removed,
        labels,
        train,
        validation,
        held_out,
        train_batches,
        eval_batches,
        dataset,
    })
}

/// The classifier's part of a job.
pub struct ClassifyJob;

/// The base classifier's logits on the held-out examples, and whether its head came from the
/// checkpoint (else it was drawn new).
pub struct ClassBefore {
    logits: Vec<Vec<f32>>,
    metrics: ClassMetrics,
    head_from_checkpoint: bool,
}

impl JobTask for ClassifyJob {
    type Data = ClassData;
    type Model = ClassifierModel;
    type Eval = ClassEval;
    type Before = ClassBefore;
    type Output = ClassifyJobOutput;
    const NAME: &'static str = "classification";

    fn prepare(&self, job: &JobContext<'_>, dataset: DatasetFiles) -> Result<ClassData> {
        prepare_class_data(job.base, dataset, job.config)
    }

    fn sizes(&self, data: &ClassData) -> JobSizes {
        JobSizes::of_batches(
            data.train_batches.iter().map(|b| (b.batch_size, b.seq_len)),
            data.eval_batches.iter().map(|b| (b.batch_size, b.seq_len)),
            data.labels.len(),
            data.train.len(),
            data.held_out,
        )
    }

    /// "Before" is the base encoder with the head training starts from.
    async fn before(
        &self,
        job: &JobContext<'_>,
        data: &ClassData,
        phase: Phase<'_>,
    ) -> Result<(ClassifierModel, ClassBefore)> {
        let config = job.config;
        let device = config.train.training_device(job.backend);
        let family = job.base.family.trainable_on(&device);
        let Family::Bert(bert) = &family else {
            return Err(Error::config(format!(
                "classification fine-tuning needs an encoder (BERT) model; {} is a causal \
                 language model",
                job.base.info.architecture
            )));
        };
        let head_from_checkpoint = bert.num_labels() == data.labels.len();
        let base_config = job.files.config()?;
        let head = head_config(bert, &base_config, config.head, head_from_checkpoint);
        let labels = data.labels.clone();
        let model = ClassifierModel::prepare(family, labels, &config.train, head)?;
        let n = data.validation.len();
        phase(
            "evaluation",
            format!("Base model on {n} held-out examples…"),
        );
        let (logits, secs) = logits_of(&model, &data.eval_batches).await?;
        let metrics = classification_metrics(&data.labels.labels, &truth(data), &logits, secs);
        let before = ClassBefore {
            logits,
            metrics,
            head_from_checkpoint,
        };
        Ok((model, before))
    }

    async fn train(
        &self,
        job: &JobContext<'_>,
        model: &mut ClassifierModel,
        data: &ClassData,
        config: &FinetuneConfig,
        options: RunOptions<'_, ClassEval>,
    ) -> Result<ClassifySummary> {
        let (train, eval) = (&data.train_batches, &data.eval_batches);
        train_classifier(model, job.backend, train, eval, config, options).await
    }

    async fn export(
        &self,
        job: &JobContext<'_>,
        model: &ClassifierModel,
        _data: &ClassData,
    ) -> Result<Export> {
        let config = job.files.config()?;
        let mut export = export_classifier(model, &config, job.config.export_dtype)?;
        if model.model.lora.is_some() {
            for (name, bytes) in export_classifier_adapter(model, job.base_name).await? {
                export.insert(format!("adapter/{name}"), bytes);
            }
        }
        for (name, bytes) in tokenizer_files(job.files) {
            export.insert(name, bytes);
        }
        Ok(export)
    }

    /// Loaded back from the export: what a person downloads is what is scored and used (an
    /// encoder is small; its labels and pooling come from the exported config). The weights
    /// are read in f32 whatever the export's precision, as the causal LM's tuned model keeps
    /// them.
    async fn tuned(&self, job: &JobContext<'_>, model: &ClassifierModel) -> Result<LoadedModel> {
        let export = export_classifier(model, &job.files.config()?, StoreDtype::F32)?;
        let mut files = ModelFiles::new();
        for name in export.names() {
            if let Some(file) = name.strip_prefix("merged/") {
                files.insert(file, export.read(&name).await?);
            }
        }
        for (name, bytes) in tokenizer_files(job.files) {
            files.insert(name.trim_start_matches("merged/"), bytes);
        }
        LoadedModel::load(files, &job.base.device)
    }

    async fn finish(
        &self,
        job: &JobContext<'_>,
        trained: Trained<Self>,
        phase: Phase<'_>,
    ) -> Result<ClassifyJobOutput> {
        let (data, model, before) = (trained.data, trained.model, trained.before);
        let labels = &data.labels;
        let truth = truth(&data);
        let n = data.validation.len();
        phase(
            "evaluation",
            format!("Fine-tuned model on {n} held-out examples…"),
        );
        let (logits_after, secs) = logits_of(&model, &data.eval_batches).await?;
        let after = classification_metrics(&labels.labels, &truth, &logits_after, secs);
        let units: Vec<ClassUnit> = truth
            .iter()
            .zip(before.logits.iter().zip(&logits_after))
            .map(|(&t, (b, a))| ClassUnit {
                truth: t,
                before: argmax(b),
                after: argmax(a),
                loss_before: -log_softmax(b).get(t).copied().unwrap_or(f64::NAN),
                loss_after: -log_softmax(a).get(t).copied().unwrap_or(f64::NAN),
            })
            .collect();
        let comparison = compare_classes(&units, labels.len(), job.config.train.seed);
        let mut changed = Vec::new();
        for (k, &i) in data.validation.iter().enumerate() {
            let (b, a) = (argmax(&before.logits[k]), argmax(&logits_after[k]));
            if a == b {
                continue;
            }
            let t = truth[k];
            let status = change_status(b == t, a == t);
            let e = &data.dataset.examples[i];
            let Content::Labeled { text, label } = &e.content else {
                continue;
            };
            changed.push(Changed {
                source: e.loc.to_string(),
                text: text.clone(),
                label: label.clone(),
                status,
                before: prediction(labels, &before.logits[k], t),
                after: prediction(labels, &logits_after[k], t),
            });
        }
        let (changed, changed_total, fixed, broken) = tally_changes(changed, |c| c.status);
        Ok(ClassifyJobOutput {
            report: data.report,
            validation_report: data.validation_report,
            overlap_removed: data.overlap_removed,
            labels: labels.labels.clone(),
            pooling: model.head.pooling,
            head_from_checkpoint: before.head_from_checkpoint,
            train_examples: data.train.len(),
            validation_examples: data.validation.len(),
            held_out: data.held_out,
            train_batches: data.train_batches.len(),
            memory: trained.memory,
            summary: trained.summary,
            before: before.metrics,
            after,
            comparison,
            changed,
            changed_total,
            fixed,
            broken,
            files: trained.export.names(),
            export: trained.export,
            tuned: Some(trained.tuned),
        })
    }
}

/// The true label of every held-out example, in batch order.
fn truth(data: &ClassData) -> Vec<usize> {
    data.eval_batches
        .iter()
        .flat_map(|b| b.labels.iter().map(|&l| l as usize))
        .collect()
}

pub(crate) fn head_config(
    bert: &Bert,
    config: &serde_json::Value,
    options: HeadOptions,
    head_from_checkpoint: bool,
) -> HeadConfig {
    // A head exported by webtune says how it pools; transformers' heads use the pooler.
    let saved = config
        .get("webtune_pooling")
        .and_then(|v| serde_json::from_value::<Pooling>(v.clone()).ok())
        .filter(|_| head_from_checkpoint);
    let pooling =
        options
            .pooling
            .or(saved)
            .unwrap_or(if head_from_checkpoint && bert.has_pooler() {
                Pooling::Pooler
            } else {
                Pooling::Mean
            });
    let from_config = |key: &str| config.get(key).and_then(serde_json::Value::as_f64);
    let dropout = options
        .dropout
        .or_else(|| from_config("classifier_dropout"))
        .or_else(|| from_config("hidden_dropout_prob"))
        .unwrap_or(0.1);
    HeadConfig { pooling, dropout }
}

/// Classification metrics of `model` (the base encoder, or a fine-tuned classifier) on the
/// held-out split of a labelled dataset file — the split and, for a base without a head for
/// these labels, the freshly drawn head that [`run_classify_job`] would start from, so the
/// base model's numbers equal that job's `before`.
pub async fn evaluate_classification<'a>(
    model: &LoadedModel,
    dataset: impl Into<DatasetFiles<'a>>,
    config: &JobConfig,
) -> Result<(ClassData, ClassMetrics)> {
    let data = prepare_class_data(model, dataset, config)?;
    let Family::Bert(bert) = &model.family else {
        return Err(Error::config(
            "classification needs an encoder (BERT) model",
        ));
    };
    // As the job: a head with one row per label is kept, any other is drawn anew.
    let from_checkpoint = bert.num_labels() == data.labels.len();
    let pooling = match (config.head.pooling, model.info.pooling) {
        (Some(p), _) => p,
        (None, Some(p)) if from_checkpoint => p,
        _ => head_config(bert, &serde_json::Value::Null, config.head, from_checkpoint).pooling,
    };
    let bert = if from_checkpoint {
        bert.clone()
    } else {
        bert.clone()
            .with_new_classifier(data.labels.len(), config.train.seed)
    };
    let start = now_ms();
    let mut logits = Vec::new();
    for b in &data.eval_batches {
        logits.extend(batch_logits(&bert, pooling, b).await?);
    }
    let truth: Vec<usize> = data
        .eval_batches
        .iter()
        .flat_map(|b| b.labels.iter().map(|&l| l as usize))
        .collect();
    let metrics = classification_metrics(
        &data.labels.labels,
        &truth,
        &logits,
        (now_ms() - start) / 1e3,
    );
    Ok((data, metrics))
}

/// Classification metrics of a classifier (a checkpoint with a head) on every example of a
/// labelled dataset file (the CLI's `eval`). The file's labels must be the head's.
pub async fn eval_class_file(
    model: &LoadedModel,
    name: &str,
    bytes: &[u8],
    config: &JobConfig,
) -> Result<serde_json::Value> {
    let tokenizer = tokenizer_of(model)?;
    let Family::Bert(bert) = &model.family else {
        return Err(Error::config(
            "classification needs an encoder (BERT) model",
        ));
    };
    let (Some(labels), Some(pooling)) = (&model.info.labels, model.info.pooling) else {
        return Err(Error::config(
            "this encoder has no classification head: fine-tune it on a labelled dataset first \
             (webtune train), then evaluate the result",
        ));
    };
    let mut options = config.data.clone();
    options.causal.seq_len = options
        .causal
        .seq_len
        .min(model.info.dims.max_positions)
        .max(2);
    let (dataset, report) = inspect(name, bytes, &options, Some(tokenizer))?;
    let map = LabelMap {
        labels: labels.clone(),
    };
    let examples: Vec<&Example> = dataset.examples.iter().collect();
    let pad_id = tokenizer.token_id("[PAD]").unwrap_or(0);
    let batches = batches(
        tokenizer,
        &map,
        &examples,
        config.batch_size,
        options.causal.seq_len,
        pad_id,
    )?;
    let start = now_ms();
    let mut logits = Vec::new();
    for b in &batches {
        logits.extend(batch_logits(bert, pooling, b).await?);
    }
    let truth: Vec<usize> = batches
        .iter()
        .flat_map(|b| b.labels.iter().map(|&l| l as usize))
        .collect();
    let metrics = classification_metrics(labels, &truth, &logits, (now_ms() - start) / 1e3);
    Ok(serde_json::json!({
        "task": "classification",
        "examples": dataset.examples.len(),
        "labels": labels,
        "eval": metrics,
        "report": report,
    }))
}
