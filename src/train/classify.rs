//! Fine-tuning an encoder (BERT, MiniLM) for sequence classification: a linear head on a pooled
//! sentence vector, trained with cross-entropy together with LoRA on the encoder (PEFT's
//! `task_type=SEQ_CLS`: the head is trained in full, as a "module to save") or with the whole
//! encoder (full fine-tuning). It is a [`Task`] of the one training loop
//! ([`super::trainer`]); the hyperparameters are a [`FinetuneConfig`].
//!
//! The export is a `BertForSequenceClassification` checkpoint (LoRA merged) whose config.json
//! names the classes (`id2label`/`label2id`), loadable with `AutoModelForSequenceClassification`.

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::adapter::{ADAPTER_CLASSIFIER, ADAPTER_CONFIG};
use super::export::{export_adapter_with, Export, ExportFiles};
use super::finetune::{FinetuneConfig, Method, TrainableModel};
use super::lora::{named_tensors, read_f32, LoraInit};
use super::task::{refuse_state, EvalPoint, Speed, Task};
use super::trainer::{module_device, read_scalar, train_loop, Progress, RunOptions, Summary};
use crate::backend::Backend;
use crate::data::batching::{ClassBatch, LabelMap};
use crate::error::{Code, Error, Result};
use crate::io::hf::transposed;
use crate::io::safetensors::StoreDtype;
use crate::models::bert::{Bert, Pooling};
use crate::models::loaded::Family;
use crate::models::walk::{MapAt, Paths};
use crate::rng::Rng;

/// The head's choices (the optimiser's are in [`FinetuneConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadConfig {
    pub pooling: Pooling,
    /// Dropout on the pooled vector while training (transformers: `classifier_dropout`, else
    /// `hidden_dropout_prob`, 0.1 for BERT). Dropout inside the encoder is not applied.
    pub dropout: f64,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            pooling: Pooling::Pooler,
            dropout: 0.1,
        }
    }
}

/// Choices for the classification head; the job picks what is unset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadOptions {
    /// Unset: the pooler when the checkpoint already has a head for these labels (that is what
    /// it was trained with), else mean pooling (sentence-transformers' embedding, which every
    /// checkpoint has).
    pub pooling: Option<Pooling>,
    /// Dropout on the pooled vector while training; unset: the checkpoint's
    /// `classifier_dropout`, else `hidden_dropout_prob` (transformers' rule).
    pub dropout: Option<f64>,
}

/// An encoder with a classification head, prepared for training.
#[derive(Debug)]
pub struct ClassifierModel {
    pub model: TrainableModel,
    pub labels: LabelMap,
    pub head: HeadConfig,
}

/// Make every parameter whose path starts with `prefix` trainable again (after LoRA froze it).
struct Unfreeze(&'static str);

impl MapAt for Unfreeze {
    fn map_at<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if path.split('.').next() == Some(self.0) {
            param.set_require_grad(true)
        } else {
            param
        }
    }
}

impl ClassifierModel {
    /// Prepare a loaded encoder for `labels`. A head already in the checkpoint is kept when it
    /// has one row per label; otherwise a new one is drawn from `config.seed`.
    pub fn prepare(
        family: Family,
        labels: LabelMap,
        config: &FinetuneConfig,
        head: HeadConfig,
    ) -> Result<Self> {
        if config.init_adapter.is_some() {
            // A classification adapter carries its trained head (PEFT's modules_to_save),
            // which continuing would have to restore too.
            return Err(Error::config(
                "continuing an adapter works for causal language models; a classifier \
                 continues from its merged model instead",
            )
            .with_details(json!({ "field": "init_adapter" })));
        }
        Self::prepare_with(family, labels, config, head, LoraInit::Seeded(config.seed))
    }

    /// As [`prepare`](Self::prepare), with the LoRA factors' start given (replaying PEFT).
    pub fn prepare_with(
        family: Family,
        labels: LabelMap,
        config: &FinetuneConfig,
        head: HeadConfig,
        init: LoraInit,
    ) -> Result<Self> {
        let Family::Bert(bert) = family else {
            return Err(Error::config(
                "classification fine-tuning needs an encoder (BERT) model",
            ));
        };
        if labels.len() < 2 {
            return Err(Error::config(format!(
                "classification needs at least two labels, the data has {}",
                labels.len()
            )));
        }
        if !(head.dropout.is_finite() && (0.0..1.0).contains(&head.dropout)) {
            return Err(Error::config(format!(
                "dropout must be in [0, 1), got {}",
                head.dropout
            )));
        }
        if head.pooling == Pooling::Pooler && !bert.has_pooler() {
            return Err(Error::config(
                "this checkpoint has no pooler; choose \"cls\" or \"mean\" pooling instead",
            ));
        }
        let bert = if bert.num_labels() == labels.len() {
            bert
        } else {
            bert.with_new_classifier(labels.len(), config.seed)
        };
        let mut model = TrainableModel::prepare_with(Family::Bert(bert), config, init)?;
        if model.method == Method::Lora {
            let mut unfreeze = Paths::new(Unfreeze("classifier"));
            if let Family::Bert(b) = model.family {
                model.family = Family::Bert(b.map(&mut unfreeze));
            }
        }
        Ok(Self {
            model,
            labels,
            head,
        })
    }

    fn bert(&self) -> Result<&Bert> {
        match &self.model.family {
            Family::Bert(b) => Ok(b),
            // prepare_with accepts nothing else.
            _ => Err(Error::new(Code::Internal, "a classifier holds no encoder")),
        }
    }
}

/// Mean cross-entropy and accuracy over a set of batches.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassEval {
    pub loss: f32,
    pub accuracy: f32,
    pub examples: usize,
}

pub type ClassifyProgress = Progress<ClassEval>;
pub type ClassifySummary = Summary<ClassEval>;
pub type ClassEvalPoint = EvalPoint<ClassEval>;

fn tensors(b: &ClassBatch, device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>, Tensor<1, Int>) {
    let shape = [b.batch_size, b.seq_len];
    (
        Tensor::from_data(TensorData::new(b.input_ids.clone(), shape), device),
        Tensor::from_data(TensorData::new(b.attention_mask.clone(), shape), device),
        Tensor::from_data(TensorData::new(b.labels.clone(), [b.batch_size]), device),
    )
}

fn check(batches: &[ClassBatch], bert: &Bert, labels: usize, what: &str) -> Result<()> {
    for (i, b) in batches.iter().enumerate() {
        let n = b.batch_size * b.seq_len;
        if n == 0 || b.input_ids.len() != n || b.attention_mask.len() != n {
            return Err(Error::config(format!(
                "{what} batch {i} is empty or inconsistent"
            )));
        }
        if b.labels.len() != b.batch_size || b.labels.iter().any(|&l| l < 0 || l as usize >= labels)
        {
            return Err(Error::config(format!(
                "{what} batch {i} has labels outside 0..{labels}"
            )));
        }
        if b.seq_len > bert.max_positions() {
            return Err(Error::config(format!(
                "{what} batch {i} has sequences of {} tokens; the model takes at most {}",
                b.seq_len,
                bert.max_positions()
            )));
        }
    }
    Ok(())
}

/// Logits `[B, labels]`, with dropout on the pooled vector when `dropout` is given (a host-side
/// mask from webtune's generator, so a seed gives the same run on every backend).
fn logits(
    bert: &Bert,
    ids: Tensor<2, Int>,
    mask: Tensor<2, Int>,
    pooling: Pooling,
    dropout: Option<(f64, &mut Rng)>,
) -> Result<Tensor<2>> {
    let hidden = bert.forward(ids, None, Some(mask.clone()));
    let mut pooled = bert.pool(hidden, Some(mask), pooling)?;
    if let Some((p, rng)) = dropout {
        if p > 0.0 {
            let [b, d] = pooled.dims();
            let keep: Vec<f32> = (0..b * d)
                .map(|_| {
                    if rng.uniform() < p {
                        0.0
                    } else {
                        (1.0 / (1.0 - p)) as f32
                    }
                })
                .collect();
            let device = pooled.device();
            pooled = pooled * Tensor::<2>::from_data(TensorData::new(keep, [b, d]), &device);
        }
    }
    bert.classify(pooled)
}

/// Summed cross-entropy of `logits [B, C]` against `labels [B]`.
fn ce_sum(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let picked = log_softmax(logits, 1).gather(1, labels.unsqueeze_dim::<2>(1));
    picked.sum().neg()
}

/// Sequence classification as a [`Task`]: cross-entropy of the head's logits, averaged over
/// the examples of a step, with dropout on the pooled vector drawn from webtune's own generator
/// (a host-side mask, so a seed gives the same run on every backend; its state is checkpointed).
pub struct Classify {
    labels: LabelMap,
    head: HeadConfig,
    dropout_rng: Rng,
}

impl Classify {
    pub fn new(model: &ClassifierModel, config: &FinetuneConfig) -> Self {
        Self {
            labels: model.labels.clone(),
            head: model.head,
            dropout_rng: Rng::new(config.seed ^ 0xD20B_0000),
        }
    }
}

/// What a classification checkpoint keeps besides the trainable weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ClassState {
    /// Class names in id order (the head's rows).
    labels: Vec<String>,
    head: HeadConfig,
    /// The state of the generator that draws the head's dropout masks.
    dropout_rng: u64,
}

impl Task<Bert> for Classify {
    type Batch = ClassBatch;
    type Eval = ClassEval;
    const NAME: &'static str = "classification";
    const SPEED: Speed = Speed::Examples;

    fn check(&self, bert: &Bert, batches: &[ClassBatch], what: &str) -> Result<()> {
        check(batches, bert, self.labels.len(), what)
    }

    fn loss_units(&self, batch: &ClassBatch) -> usize {
        batch.batch_size
    }

    fn size(&self, batch: &ClassBatch) -> (usize, usize) {
        // Padding is not work a person asked for: only real tokens count.
        let tokens = batch.attention_mask.iter().filter(|&&m| m != 0).count();
        (tokens, batch.batch_size)
    }

    fn loss(
        &mut self,
        bert: &Bert,
        batch: &ClassBatch,
        units: usize,
        device: &Device,
    ) -> Result<Tensor<1>> {
        let (ids, mask, labels) = tensors(batch, device);
        let dropout = Some((self.head.dropout, &mut self.dropout_rng));
        let out = logits(bert, ids, mask, self.head.pooling, dropout)?;
        Ok(ce_sum(out, labels).div_scalar(units as f64))
    }

    async fn evaluate(&self, bert: &Bert, batches: &[ClassBatch]) -> Result<ClassEval> {
        evaluate_classifier(bert, batches, self.head.pooling).await
    }

    fn state(&self) -> Value {
        serde_json::to_value(ClassState {
            labels: self.labels.labels.clone(),
            head: self.head,
            dropout_rng: self.dropout_rng.state(),
        })
        .unwrap_or(Value::Null)
    }

    /// The checkpoint must be of a classifier with the same labels, in the same order, and
    /// the same head.
    fn restore(&mut self, state: &Value) -> Result<()> {
        let refuse = |reason: &str, message: String| Err(refuse_state(reason, message));
        let state: ClassState = match serde_json::from_value(state.clone()) {
            Ok(s) => s,
            Err(e) => {
                return refuse(
                    "inconsistent",
                    format!("the checkpoint's classifier state does not read: {e}"),
                )
            }
        };
        if state.labels != self.labels.labels {
            return refuse(
                "labels",
                format!(
                    "the checkpoint was saved by a run with the labels [{}], this dataset has [{}]; \
                     resume with the same dataset",
                    state.labels.join(", "),
                    self.labels.labels.join(", ")
                ),
            );
        }
        if state.head != self.head {
            return refuse(
                "head",
                format!(
                    "the checkpoint's head ({:?} pooling, dropout {}) is not this run's ({:?} \
                     pooling, dropout {}); resume with the same head options",
                    state.head.pooling, state.head.dropout, self.head.pooling, self.head.dropout
                ),
            );
        }
        self.dropout_rng = Rng::new(state.dropout_rng);
        Ok(())
    }
}

/// Fine-tune a classifier on `train` (`config.grad_accum` batches per step; the loss of a step
/// is the mean over all its examples), scoring `eval` before, every `eval_every` steps and at
/// the end; see [`train_loop`] for what `options` steer. A checkpoint holds the trainable
/// parameters (LoRA factors or the whole encoder, and the head, so a resumed run goes on with
/// the trained head rather than a freshly drawn one) and the labels, head options and dropout
/// generator, which a resumed run must share.
pub async fn train_classifier(
    model: &mut ClassifierModel,
    backend: &Backend,
    train: &[ClassBatch],
    eval: &[ClassBatch],
    config: &FinetuneConfig,
    options: RunOptions<'_, ClassEval>,
) -> Result<ClassifySummary> {
    if config.method != model.model.method {
        return Err(Error::config(
            "the model was prepared for another fine-tuning method than the config asks for",
        ));
    }
    let mut task = Classify::new(model, config);
    let Family::Bert(bert) = &mut model.model.family else {
        return Err(Error::new(Code::Internal, "not an encoder"));
    };
    train_loop(bert, &mut task, backend, train, eval, config, options).await
}

/// Mean cross-entropy and accuracy of `bert`'s head over `batches`, without recording gradients.
pub async fn evaluate_classifier(
    bert: &Bert,
    batches: &[ClassBatch],
    pooling: Pooling,
) -> Result<ClassEval> {
    let bert = bert.valid();
    let (mut loss, mut correct, mut examples) = (0.0f64, 0usize, 0usize);
    for b in batches {
        let device = module_device(&bert)?;
        let (ids, mask, labels) = tensors(b, &device);
        let out = logits(&bert, ids, mask, pooling, None)?;
        loss += read_scalar(ce_sum(out.clone(), labels)).await? as f64;
        let predicted = out
            .argmax(1)
            .reshape([b.batch_size])
            .into_data_async()
            .await
            .map_err(|e| Error::new(Code::DeviceLost, format!("reading predictions: {e:?}")))?
            .convert::<i64>()
            .try_to_vec::<i64>()
            .map_err(|e| Error::new(Code::Internal, format!("{e:?}")))?;
        correct += predicted
            .iter()
            .zip(&b.labels)
            .filter(|(p, l)| p == l)
            .count();
        examples += b.batch_size;
    }
    if examples == 0 {
        return Err(Error::config("the evaluation batches have no examples"));
    }
    Ok(ClassEval {
        loss: (loss / examples as f64) as f32,
        accuracy: correct as f32 / examples as f32,
        examples,
    })
}

/// Logits `[B][labels]` of a (trained) classifier for one batch, on the model's device.
pub async fn predict(model: &ClassifierModel, batch: &ClassBatch) -> Result<Vec<Vec<f32>>> {
    batch_logits(model.bert()?, model.head.pooling, batch).await
}

/// Logits `[B][labels]` of `bert`'s head for one batch, without recording gradients.
pub async fn batch_logits(
    bert: &Bert,
    pooling: Pooling,
    batch: &ClassBatch,
) -> Result<Vec<Vec<f32>>> {
    let bert = bert.valid();
    let device = module_device(&bert)?;
    let (ids, mask, _) = tensors(batch, &device);
    let out = logits(&bert, ids, mask, pooling, None)?;
    let [b, c] = out.dims();
    let data = read_f32(out.reshape([b * c])).await?;
    Ok(data.chunks(c).map(<[f32]>::to_vec).collect())
}

/// transformers' loader for heads trained on `cls` or `mean` pooling (see [`export_classifier`]).
pub const MODELING_WEBTUNE_PY: &str = include_str!("modeling_webtune.py");

/// A `BertForSequenceClassification` checkpoint under `merged/`: `model.safetensors` (LoRA
/// merged, `bert.` names, `classifier.*`, stored in `dtype`) and `config.json` (the base config with `architectures`, `id2label`,
/// `label2id` and the pooling used, `webtune_pooling`). transformers' own head classifies the
/// pooler output, so a head trained on `cls` or `mean` pooling would load there and predict
/// differently: such exports also carry `modeling_webtune.py`, a class with that pooling, and
/// an `auto_map` entry for it, so `AutoModelForSequenceClassification.from_pretrained(dir,
/// trust_remote_code=True)` predicts what webtune predicts.
pub fn export_classifier(
    model: &ClassifierModel,
    base_config: &Value,
    dtype: StoreDtype,
) -> Result<Export> {
    let mut config = base_config.clone();
    let obj = config
        .as_object_mut()
        .ok_or_else(|| Error::new(Code::ModelConfigInvalid, "config.json is not an object"))?;
    let labels = &model.labels.labels;
    obj.insert(
        "architectures".into(),
        json!(["BertForSequenceClassification"]),
    );
    obj.insert(
        "id2label".into(),
        Value::Object(
            labels
                .iter()
                .enumerate()
                .map(|(i, l)| (i.to_string(), json!(l)))
                .collect(),
        ),
    );
    obj.insert(
        "label2id".into(),
        Value::Object(
            labels
                .iter()
                .enumerate()
                .map(|(i, l)| (l.clone(), json!(i)))
                .collect(),
        ),
    );
    obj.insert("problem_type".into(), json!("single_label_classification"));
    obj.insert("webtune_pooling".into(), json!(model.head.pooling));
    let custom_pooling = model.head.pooling != Pooling::Pooler;
    const AUTO_CLASS: &str = "AutoModelForSequenceClassification";
    if custom_pooling {
        let map = obj.entry("auto_map").or_insert_with(|| json!({}));
        if !map.is_object() {
            *map = json!({});
        }
        map[AUTO_CLASS] = json!("modeling_webtune.WebtuneBertForSequenceClassification");
    } else if let Some(map) = obj.get_mut("auto_map").and_then(Value::as_object_mut) {
        // A base that is itself a cls/mean export of ours: its auto_map must not outlive the
        // modeling file, which a pooler head does not ship.
        if map
            .get(AUTO_CLASS)
            .and_then(Value::as_str)
            .is_some_and(|c| c.starts_with("modeling_webtune."))
        {
            map.remove(AUTO_CLASS);
        }
        if map.is_empty() {
            obj.remove("auto_map");
        }
    }
    let mut files = Vec::new();
    if custom_pooling {
        files.push((
            "merged/modeling_webtune.py".into(),
            MODELING_WEBTUNE_PY.as_bytes().to_vec(),
        ));
    }
    Export::new(files, &config, &model.model, dtype)
}

/// The head as PEFT and transformers store it: `classifier.weight` `[labels, hidden]`
/// (row-major) and `classifier.bias` `[labels]`.
pub(crate) async fn head_tensors(model: &ClassifierModel) -> Result<(Vec<f32>, Vec<f32>)> {
    let tensors = named_tensors(&model.model.family);
    let find = |path: &str| {
        tensors
            .iter()
            .find(|t| t.path == path)
            .ok_or_else(|| Error::new(Code::Internal, format!("the classifier has no {path}")))
    };
    let w = find("classifier.weight")?;
    let (hidden, labels) = (w.shape[0], w.shape[1]);
    let weight = transposed(&read_f32(w.value.clone()).await?, hidden, labels);
    let bias = read_f32(find("classifier.bias")?.value.clone()).await?;
    Ok((weight, bias))
}

/// A LoRA classifier as a PEFT adapter of its base encoder (`task_type: "SEQ_CLS"`, the head
/// saved whole as `modules_to_save: ["classifier"]`), plus [`ADAPTER_CLASSIFIER`]: the labels
/// and pooling, which PEFT's config has no place for. Loads with
/// `PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base,
/// num_labels=…), dir)` (for cls/mean pooling, on the class in `modeling_webtune.py`) and in
/// webtune's adapter library.
pub async fn export_classifier_adapter(
    model: &ClassifierModel,
    base_model: &str,
) -> Result<ExportFiles> {
    let (weight, bias) = head_tensors(model).await?;
    let labels = model.labels.len();
    let hidden = weight.len() / labels.max(1);
    let head: [(&str, &[usize], &[f32]); 2] = [
        ("classifier.weight", &[labels, hidden], &weight),
        ("classifier.bias", &[labels], &bias),
    ];
    let mut files = export_adapter_with(&model.model, base_model, &["classifier"], &head).await?;
    for (name, bytes) in &mut files {
        if name == ADAPTER_CONFIG {
            let mut config: Value = serde_json::from_slice(bytes)
                .map_err(|e| Error::new(Code::Internal, format!("{e}")))?;
            config["task_type"] = json!("SEQ_CLS");
            *bytes = serde_json::to_vec_pretty(&config)
                .map_err(|e| Error::new(Code::Internal, format!("{e}")))?;
        }
    }
    let note = json!({ "labels": model.labels.labels, "pooling": model.head.pooling });
    files.push((
        ADAPTER_CLASSIFIER.into(),
        serde_json::to_vec_pretty(&note).map_err(|e| Error::new(Code::Internal, format!("{e}")))?,
    ));
    Ok(files)
}
