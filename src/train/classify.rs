//! Fine-tuning an encoder (BERT, MiniLM) for sequence classification: a linear head on a pooled
//! sentence vector, trained with cross-entropy together with LoRA on the encoder (PEFT's
//! `task_type=SEQ_CLS`: the head is trained in full, as a "module to save") or with the whole
//! encoder (full fine-tuning). The optimiser, schedule, clipping and the guarantees of the loop
//! (progress callback that can stop the run, asynchronous readback, non-finite loss refused
//! before the update) are those of `finetune`; the hyperparameters are a [`FinetuneConfig`].
//!
//! The export is a `BertForSequenceClassification` checkpoint (LoRA merged) whose config.json
//! names the classes (`id2label`/`label2id`), loadable with `AutoModelForSequenceClassification`.

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::checkpoint::{
    load_optimizer, optimizer_bytes, restore_params, save_params, Checkpoint, CheckpointTask,
    Checkpointing, ClassState,
};
use super::control::Control;
use super::export::{merged_tensors, ExportFiles};
use super::finetune::{
    adamw_optimizer, check_and_clip, read_scalar, BatchStream, FinetuneConfig, Method,
    TrainableModel,
};
use super::lora::LoraInit;
use super::median;
use super::schedule::LrSchedule;
use crate::backend::Backend;
use crate::data::batching::{ClassBatch, LabelMap};
use crate::error::{Code, Error, Result};
use crate::io::safetensors::write_f32_with_metadata;
use crate::models::bert::{Bert, Pooling};
use crate::models::loaded::Family;
use crate::platform::{now_ms, yield_now};
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

/// An encoder with a classification head, prepared for training.
#[derive(Debug)]
pub struct ClassifierModel {
    pub model: TrainableModel,
    pub labels: LabelMap,
    pub head: HeadConfig,
}

/// Make every parameter whose path starts with `prefix` trainable again (after LoRA froze it).
struct Unfreeze {
    prefix: &'static str,
    path: Vec<String>,
}

impl ModuleMapper for Unfreeze {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.path.first().is_some_and(|p| p == self.prefix) {
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
            let mut unfreeze = Unfreeze {
                prefix: "classifier",
                path: Vec::new(),
            };
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

/// Sent after every optimiser step.
#[derive(Debug, Clone, Serialize)]
pub struct ClassifyProgress {
    pub step: usize,
    pub total_steps: usize,
    pub epoch: f64,
    pub loss: f32,
    pub lr: f64,
    pub grad_norm: f32,
    pub examples_per_s: f64,
    pub elapsed_s: f64,
    pub eta_s: f64,
    pub eval: Option<ClassEval>,
}

/// Mean cross-entropy and accuracy over a set of batches.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassEval {
    pub loss: f32,
    pub accuracy: f32,
    pub examples: usize,
}

/// The held-out scores at one step (0: before training).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassEvalPoint {
    pub step: usize,
    #[serde(flatten)]
    pub eval: ClassEval,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassifySummary {
    pub backend: String,
    pub method: Method,
    pub steps: usize,
    pub cancelled: bool,
    pub losses: Vec<f32>,
    pub grad_norms: Vec<f32>,
    pub lrs: Vec<f64>,
    /// Before training (step 0), every `eval_every` steps and at the end.
    pub eval: Vec<ClassEvalPoint>,
    pub trainable_params: usize,
    pub total_params: usize,
    pub first_step_ms: f64,
    pub median_step_ms: f64,
    pub examples_per_s: f64,
    /// Non-padding tokens through the encoder per second of training.
    pub tokens_per_s: f64,
}

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

/// Fine-tune `model` on `train` (`config.grad_accum` batches per step; the loss of a step is the
/// mean over all its examples), scoring `eval` before, every `eval_every` steps and at the end.
/// `on_progress` returning `false` stops the run after that step, and a [`Control::Pause`] makes
/// it wait between two steps (see [`finetune`](super::finetune::finetune)). A non-finite loss or gradient
/// stops it with `train.non_finite_loss`, keeping the weights from before that step.
pub async fn train_classifier<C: Into<Control>>(
    model: &mut ClassifierModel,
    backend: &Backend,
    train: &[ClassBatch],
    eval: &[ClassBatch],
    config: &FinetuneConfig,
    on_progress: impl FnMut(&ClassifyProgress) -> C,
) -> Result<ClassifySummary> {
    train_classifier_checkpointed(model, backend, train, eval, config, None, on_progress).await
}

/// [`train_classifier`] that saves [`Checkpoint`]s (every `checkpointing.every` steps, and when
/// the run is paused or stopped before its last step) and can continue from one, as
/// [`finetune_checkpointed`](super::finetune::finetune_checkpointed) does for causal LMs. A
/// checkpoint holds the trainable parameters (LoRA factors or the whole encoder, and the head,
/// so the resumed run goes on with the trained head rather than a freshly drawn one), AdamW's
/// state, the position in the seeded batch order, the state of the head-dropout generator and
/// the history; the model must be prepared as for the saved run (same base, labels, head and
/// configuration), and the resumed run's losses are the uninterrupted run's. A causal
/// checkpoint, or one of another model, labelling, head, dataset or configuration, is refused
/// with `config.invalid`. The summary covers the whole run.
pub async fn train_classifier_checkpointed<C: Into<Control>>(
    model: &mut ClassifierModel,
    backend: &Backend,
    train: &[ClassBatch],
    eval: &[ClassBatch],
    config: &FinetuneConfig,
    checkpointing: Option<Checkpointing<'_>>,
    mut on_progress: impl FnMut(&ClassifyProgress) -> C,
) -> Result<ClassifySummary> {
    let mut checkpointing = checkpointing;
    config.validate()?;
    if config.method != model.model.method {
        return Err(Error::config(
            "the model was prepared for another fine-tuning method than the config asks for",
        ));
    }
    if train.is_empty() {
        return Err(Error::config("there are no training batches"));
    }
    let n_labels = model.labels.len();
    check(train, model.bert()?, n_labels, "training")?;
    check(eval, model.bert()?, n_labels, "evaluation")?;
    let (trainable_params, total_params) = model.model.parameter_counts();
    let head = model.head;
    let device = &config.training_device(backend);
    let total_steps = config.total_steps(train.len());
    let resume = checkpointing.as_mut().and_then(|c| c.resume.take());
    let resume = match resume {
        Some(ck) => {
            ck.check_resume(
                CheckpointTask::Classification,
                config,
                total_steps,
                train.len(),
                total_params,
            )?;
            let state = check_class_state(&ck, model)?;
            Some((ck, state))
        }
        None => None,
    };
    let schedule = LrSchedule {
        kind: config.schedule,
        base_lr: config.lr,
        warmup_steps: config.warmup,
        total_steps,
    };
    let labels_now = model.labels.labels.clone();
    let Family::Bert(bert) = &mut model.model.family else {
        return Err(Error::new(Code::Internal, "not an encoder"));
    };
    // Restored parameters (the head among them) take back their saved ids, which the optimizer
    // record and the no-decay group are keyed by: restore first (as the causal loop does).
    if let Some((ck, _)) = &resume {
        *bert = restore_params(bert.clone(), &ck.params)?;
    }
    let mut optim = adamw_optimizer(&*bert, config, resume.is_some());
    let mut summary = ClassifySummary {
        backend: backend.info.backend.as_str().to_string(),
        method: config.method,
        steps: 0,
        cancelled: false,
        losses: Vec::new(),
        grad_norms: Vec::new(),
        lrs: Vec::new(),
        eval: Vec::new(),
        trainable_params,
        total_params,
        first_step_ms: 0.0,
        median_step_ms: 0.0,
        examples_per_s: 0.0,
        tokens_per_s: 0.0,
    };
    let mut dropout_rng = Rng::new(config.seed ^ 0xD20B_0000);
    if let Some((ck, state)) = &resume {
        optim = load_optimizer(optim, &ck.optimizer)?;
        summary.losses.clone_from(&ck.losses);
        summary.grad_norms.clone_from(&ck.grad_norms);
        summary.lrs.clone_from(&ck.lrs);
        summary.eval.clone_from(&state.eval);
        summary.steps = ck.step;
        dropout_rng = Rng::new(state.dropout_rng);
    } else if !eval.is_empty() {
        summary.eval.push(ClassEvalPoint {
            step: 0,
            eval: evaluate_classifier(bert, eval, head.pooling).await?,
        });
    }
    let n = train.len();
    let mut stream = BatchStream::new(config.seed, n, config.shuffle);
    // The seeded stream is replayed up to where the checkpoint left it.
    let first_step = resume.as_ref().map_or(0, |(ck, _)| ck.step);
    stream.skip(resume.as_ref().map_or(0, |(ck, _)| ck.consumed));
    let mut start = now_ms();
    let mut step_ms = Vec::with_capacity(total_steps);
    let mut step_examples = Vec::with_capacity(total_steps);
    let mut tokens = 0usize;
    for step in first_step..total_steps {
        let step_start = now_ms();
        let micro: Vec<usize> = (0..config.grad_accum)
            .map(|_| stream.next_batch())
            .collect();
        let examples: usize = micro.iter().map(|&i| train[i].batch_size).sum();
        tokens += micro
            .iter()
            .map(|&i| train[i].attention_mask.iter().filter(|&&m| m != 0).count())
            .sum::<usize>();
        let mut accumulator = GradientsAccumulator::<Bert>::new();
        let mut loss_value = 0.0f64;
        for &i in &micro {
            let (ids, mask, labels) = tensors(&train[i], device);
            let out = logits(
                bert,
                ids,
                mask,
                head.pooling,
                Some((head.dropout, &mut dropout_rng)),
            )?;
            let loss = ce_sum(out, labels).div_scalar(examples as f64);
            let grads = GradientsParams::from_grads(loss.backward(), &*bert);
            accumulator.accumulate(&*bert, grads);
            loss_value += read_scalar(loss).await? as f64;
        }
        let mut grads = accumulator.grads();
        let loss_value = loss_value as f32;
        let lr = schedule.lr_at(step);
        let grad_norm = check_and_clip(
            &*bert,
            &mut grads,
            loss_value,
            config.max_grad_norm,
            step,
            lr,
        )
        .await?;
        *bert = optim.step(lr, bert.clone(), grads);
        summary.losses.push(loss_value);
        summary.grad_norms.push(grad_norm as f32);
        summary.lrs.push(lr);
        let done = step + 1;
        summary.steps = done;
        let eval_now = !eval.is_empty()
            && (done == total_steps || (config.eval_every > 0 && done % config.eval_every == 0));
        let e = if eval_now {
            let e = evaluate_classifier(bert, eval, head.pooling).await?;
            summary.eval.push(ClassEvalPoint {
                step: done,
                eval: e,
            });
            Some(e)
        } else {
            None
        };
        let now = now_ms();
        step_ms.push(now - step_start);
        step_examples.push(examples as f64);
        let secs: f64 = step_ms.iter().sum::<f64>() / 1e3;
        let progress = ClassifyProgress {
            step: done,
            total_steps,
            epoch: stream.consumed as f64 / n as f64,
            loss: loss_value,
            lr,
            grad_norm: grad_norm as f32,
            examples_per_s: step_examples.iter().sum::<f64>() / secs.max(1e-9),
            elapsed_s: (now - start) / 1e3,
            eta_s: secs / step_ms.len() as f64 * (total_steps - done) as f64,
            eval: e,
        };
        let control: Control = on_progress(&progress).into();
        if let Some(c) = checkpointing.as_mut() {
            let early = !matches!(control, Control::Continue);
            if done < total_steps && (early || (c.every > 0 && done % c.every == 0)) {
                let ck = Checkpoint {
                    task: CheckpointTask::Classification,
                    step: done,
                    consumed: stream.consumed,
                    config: config.clone(),
                    losses: summary.losses.clone(),
                    grad_norms: summary.grad_norms.clone(),
                    lrs: summary.lrs.clone(),
                    eval: Vec::new(),
                    total_params: Some(total_params),
                    train_batches: Some(n),
                    classification: Some(ClassState {
                        labels: labels_now.clone(),
                        head,
                        eval: summary.eval.clone(),
                        dropout_rng: dropout_rng.state(),
                    }),
                    params: save_params(&*bert).await?,
                    optimizer: optimizer_bytes(&optim)?,
                };
                (c.save)(ck);
            }
        }
        let (go_on, paused_ms) = control.proceed().await;
        start += paused_ms;
        if !go_on {
            summary.cancelled = done < total_steps;
            break;
        }
        yield_now().await;
    }
    summary.first_step_ms = step_ms.first().copied().unwrap_or(0.0);
    summary.median_step_ms = median(step_ms.get(1..).unwrap_or(&[]));
    let secs: f64 = step_ms.iter().sum::<f64>() / 1e3;
    summary.examples_per_s = step_examples.iter().sum::<f64>() / secs.max(1e-9);
    summary.tokens_per_s = tokens as f64 / secs.max(1e-9);
    Ok(summary)
}

/// The classification part of a checkpoint, checked against the classifier it would continue
/// (its labels in the same order, the same head).
fn check_class_state(ck: &Checkpoint, model: &ClassifierModel) -> Result<ClassState> {
    let refuse = |reason: &str, message: String| {
        Err(Error::config(message)
            .with_details(serde_json::json!({ "field": "checkpoint", "reason": reason })))
    };
    let Some(state) = &ck.classification else {
        return refuse("task", "this checkpoint has no classification state".into());
    };
    if state.labels != model.labels.labels {
        return refuse(
            "labels",
            format!(
                "the checkpoint was saved by a run with the labels [{}], this dataset has [{}]; \
                 resume with the same dataset",
                state.labels.join(", "),
                model.labels.labels.join(", ")
            ),
        );
    }
    if state.head != model.head {
        return refuse(
            "head",
            format!(
                "the checkpoint's head ({:?} pooling, dropout {}) is not this run's ({:?} \
                 pooling, dropout {}); resume with the same head options",
                state.head.pooling, state.head.dropout, model.head.pooling, model.head.dropout
            ),
        );
    }
    if state.eval.iter().any(|e| e.step > ck.step) {
        return refuse(
            "inconsistent",
            "the checkpoint's validation points lie beyond its step".into(),
        );
    }
    Ok(state.clone())
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
        let device = bert_device(&bert)?;
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

fn bert_device(bert: &Bert) -> Result<Device> {
    struct First(Option<Device>);
    impl burn::module::ModuleVisitor for First {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.0.is_none() {
                self.0 = Some(param.lazy_device());
            }
        }
    }
    let mut f = First(None);
    bert.visit(&mut f);
    f.0.ok_or_else(|| Error::new(Code::Internal, "the model has no parameters"))
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
    let device = bert_device(&bert)?;
    let (ids, mask, _) = tensors(batch, &device);
    let out = logits(&bert, ids, mask, pooling, None)?;
    let [b, c] = out.dims();
    let data = super::lora::read_f32(out.reshape([b * c])).await?;
    Ok(data.chunks(c).map(<[f32]>::to_vec).collect())
}

/// transformers' loader for heads trained on `cls` or `mean` pooling (see [`export_classifier`]).
pub const MODELING_WEBTUNE_PY: &str = include_str!("modeling_webtune.py");

/// A `BertForSequenceClassification` checkpoint: `model.safetensors` (LoRA merged, `bert.`
/// names, `classifier.*`) and `config.json` (the base config with `architectures`, `id2label`,
/// `label2id` and the pooling used, `webtune_pooling`). transformers' own head classifies the
/// pooler output, so a head trained on `cls` or `mean` pooling would load there and predict
/// differently: such exports also carry `modeling_webtune.py`, a class with that pooling, and
/// an `auto_map` entry for it, so `AutoModelForSequenceClassification.from_pretrained(dir,
/// trust_remote_code=True)` predicts what webtune predicts.
pub async fn export_classifier(
    model: &ClassifierModel,
    base_config: &Value,
) -> Result<ExportFiles> {
    let tensors = merged_tensors(&model.model.family).await?;
    let refs: Vec<(&str, &[usize], &[f32])> = tensors
        .iter()
        .map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice()))
        .collect();
    let weights = write_f32_with_metadata(&refs, &[("format", "pt")]);
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
    for key in ["torch_dtype", "dtype"] {
        if obj.contains_key(key) {
            obj.insert(key.into(), json!("float32"));
        }
    }
    let config = serde_json::to_vec_pretty(&config)
        .map_err(|e| Error::new(Code::Internal, format!("{e}")))?;
    let mut files = vec![
        ("model.safetensors".into(), weights),
        ("config.json".into(), config),
    ];
    if custom_pooling {
        files.push((
            "modeling_webtune.py".into(),
            MODELING_WEBTUNE_PY.as_bytes().to_vec(),
        ));
    }
    Ok(files)
}
