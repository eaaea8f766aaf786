//! Fine-tuning an encoder's sentence embeddings (BERT, MiniLM) on pairs of texts that mean the
//! same: sentence-transformers' `MultipleNegativesRankingLoss`. In a batch of pairs each anchor
//! must pick its own positive among all the batch's positives; the loss is the cross-entropy of
//! that choice over cosine similarities multiplied by a scale (20). The other pairs' positives
//! are the negatives, so the data needs no negatives of its own. It is a [`Task`] of the one
//! training loop ([`super::trainer`]), with LoRA on the encoder or full fine-tuning.
//!
//! The export is a sentence-transformers model folder (the encoder with LoRA merged, its
//! pooling and `modules.json`), loadable with `SentenceTransformer(dir)`.

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::export::{export_adapter_with, Export, ExportFiles};
use super::finetune::{FinetuneConfig, TrainableModel};
use super::lora::read_f32;
use super::task::{refuse_state, Speed, Task};
use super::trainer::{module_device, train_loop, RunOptions, Summary};
use crate::backend::Backend;
use crate::data::batching::{PairBatch, TextRows};
use crate::error::{Code, Error, Result};
use crate::eval::metrics::{retrieval_metrics, retrieval_units, RetrievalMetrics, RetrievalUnit};
use crate::io::safetensors::{write_f32_with_metadata, SafeTensorsFile, StoreDtype};
use crate::models::bert::{int_tensor, Bert, Pooling};
use crate::models::loaded::Family;

/// How sentences become vectors and how sharply the loss tells pairs apart.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedConfig {
    /// Mean over the tokens (sentence-transformers' default, MiniLM's) or the `[CLS]` token.
    pub pooling: Pooling,
    /// Cosine similarities are multiplied by this before the softmax (sentence-transformers'
    /// default 20: a temperature of 0.05).
    pub scale: f64,
}

impl Default for EmbedConfig {
    fn default() -> Self {
        Self {
            pooling: Pooling::Mean,
            scale: 20.0,
        }
    }
}

impl EmbedConfig {
    pub fn validate(&self) -> Result<()> {
        if self.pooling == Pooling::Pooler {
            return Err(Error::config(
                "sentence embeddings pool the tokens' vectors: choose \"mean\" or \"cls\" pooling",
            )
            .with_details(json!({ "field": "embedding.pooling" })));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(Error::config(format!(
                "embedding.scale must be a positive number, got {}",
                self.scale
            ))
            .with_details(json!({ "field": "embedding.scale" })));
        }
        Ok(())
    }
}

/// Sentence vectors `[rows, hidden]` of `rows` (not normalized).
fn embed(bert: &Bert, rows: &TextRows, pooling: Pooling, device: &Device) -> Result<Tensor<2>> {
    let ids = int_tensor(&rows.input_ids, rows.rows, rows.seq_len, device);
    let mask = int_tensor(&rows.attention_mask, rows.rows, rows.seq_len, device);
    let hidden = bert.forward(ids, None, Some(mask.clone()));
    bert.pool(hidden, Some(mask), pooling)
}

/// Rows scaled to unit length (torch's `F.normalize`: the norm is clamped at 1e-12).
fn unit_rows(x: Tensor<2>) -> Tensor<2> {
    let norm = x
        .clone()
        .powf_scalar(2.0)
        .sum_dim(1)
        .sqrt()
        .clamp_min(1e-12);
    x / norm
}

/// The summed contrastive loss of one batch: for each anchor, the cross-entropy of its own
/// positive among the batch's positives, over cosines multiplied by `scale`.
fn ranking_loss_sum(anchors: Tensor<2>, positives: Tensor<2>, scale: f64) -> Tensor<1> {
    let n = anchors.dims()[0];
    let device = anchors.device();
    let scores = unit_rows(anchors)
        .matmul(unit_rows(positives).transpose())
        .mul_scalar(scale);
    let own = Tensor::<1, Int>::arange(0..n as i64, &device).reshape([n, 1]);
    log_softmax(scores, 1).gather(1, own).sum().neg()
}

/// Retrieval scores of the held-out pairs at one point of a run, over the whole set at once
/// (every anchor searches every held-out positive), so they do not depend on how the pairs were
/// batched; see [`RetrievalMetrics`]. In f32, as the other tasks' points: a checkpoint keeps
/// them as JSON, and serde_json reads an f64 back only to within one unit in the last place,
/// which would make a resumed run's points differ from the uninterrupted run's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EmbedEval {
    pub loss: f32,
    pub accuracy: f32,
    pub mrr: f32,
    pub positive_cosine: f32,
    pub negative_cosine: f32,
    pub pairs: usize,
}

impl From<RetrievalMetrics> for EmbedEval {
    fn from(m: RetrievalMetrics) -> Self {
        Self {
            loss: m.loss as f32,
            accuracy: m.accuracy as f32,
            mrr: m.mrr as f32,
            positive_cosine: m.positive_cosine as f32,
            negative_cosine: m.negative_cosine as f32,
            pairs: m.pairs,
        }
    }
}

/// Sentence-embedding fine-tuning as a [`Task`].
pub struct Contrastive {
    pub config: EmbedConfig,
}

/// What an embedding checkpoint keeps besides the trainable weights: the setup a resumed run
/// must share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct EmbedState {
    embedding: EmbedConfig,
}

impl Task<Bert> for Contrastive {
    type Batch = PairBatch;
    type Eval = EmbedEval;
    const NAME: &'static str = "embedding";
    const SPEED: Speed = Speed::Examples;

    fn check(&self, bert: &Bert, batches: &[PairBatch], what: &str) -> Result<()> {
        for (i, b) in batches.iter().enumerate() {
            for rows in [&b.anchors, &b.positives] {
                let n = rows.rows * rows.seq_len;
                if n == 0 || rows.input_ids.len() != n || rows.attention_mask.len() != n {
                    return Err(Error::config(format!(
                        "{what} batch {i} is empty or inconsistent"
                    )));
                }
                if rows.seq_len > bert.max_positions() {
                    return Err(Error::config(format!(
                        "{what} batch {i} has sequences of {} tokens; the model takes at most {}",
                        rows.seq_len,
                        bert.max_positions()
                    )));
                }
            }
            if b.anchors.rows != b.positives.rows {
                return Err(Error::config(format!(
                    "{what} batch {i} has {} anchors for {} positives",
                    b.anchors.rows, b.positives.rows
                )));
            }
        }
        Ok(())
    }

    fn loss_units(&self, batch: &PairBatch) -> usize {
        batch.pairs()
    }

    fn size(&self, batch: &PairBatch) -> (usize, usize) {
        let real = |r: &TextRows| r.attention_mask.iter().filter(|&&m| m != 0).count();
        (real(&batch.anchors) + real(&batch.positives), batch.pairs())
    }

    fn loss(
        &mut self,
        bert: &Bert,
        batch: &PairBatch,
        units: usize,
        device: &Device,
    ) -> Result<Tensor<1>> {
        let pooling = self.config.pooling;
        let anchors = embed(bert, &batch.anchors, pooling, device)?;
        let positives = embed(bert, &batch.positives, pooling, device)?;
        Ok(ranking_loss_sum(anchors, positives, self.config.scale).div_scalar(units as f64))
    }

    async fn evaluate(&self, bert: &Bert, batches: &[PairBatch]) -> Result<EmbedEval> {
        let (metrics, _) = evaluate_pairs(bert, batches, self.config).await?;
        Ok(metrics.into())
    }

    fn state(&self) -> Value {
        serde_json::to_value(EmbedState {
            embedding: self.config,
        })
        .unwrap_or(Value::Null)
    }

    fn restore(&mut self, state: &Value) -> Result<()> {
        let refuse = |reason: &str, message: String| Err(refuse_state(reason, message));
        match serde_json::from_value::<EmbedState>(state.clone()) {
            Ok(s) if s.embedding == self.config => Ok(()),
            Ok(s) => refuse(
                "embedding",
                format!(
                    "the checkpoint was saved with {:?} pooling and scale {}, this run has {:?} \
                     pooling and scale {}; resume with the same embedding options",
                    s.embedding.pooling, s.embedding.scale, self.config.pooling, self.config.scale
                ),
            ),
            Err(e) => refuse(
                "inconsistent",
                format!("the checkpoint's embedding state does not read: {e}"),
            ),
        }
    }
}

/// Sentence vectors of every row of `rows`, without recording gradients.
pub async fn embeddings(bert: &Bert, rows: &TextRows, pooling: Pooling) -> Result<Vec<Vec<f32>>> {
    let bert = bert.valid();
    let device = module_device(&bert)?;
    let out = embed(&bert, rows, pooling, &device)?;
    let [n, d] = out.dims();
    let data = read_f32(out.reshape([n * d])).await?;
    Ok(data.chunks(d.max(1)).map(<[f32]>::to_vec).collect())
}

/// Each held-out anchor searching all held-out positives: the metrics and each anchor's unit
/// (for the before/after comparison).
pub async fn evaluate_pairs(
    bert: &Bert,
    batches: &[PairBatch],
    config: EmbedConfig,
) -> Result<(RetrievalMetrics, Vec<RetrievalUnit>)> {
    let (mut anchors, mut positives) = (Vec::new(), Vec::new());
    for b in batches {
        anchors.extend(embeddings(bert, &b.anchors, config.pooling).await?);
        positives.extend(embeddings(bert, &b.positives, config.pooling).await?);
    }
    if anchors.is_empty() {
        return Err(Error::config("the evaluation batches have no pairs"));
    }
    let units = retrieval_units(&anchors, &positives, config.scale);
    Ok((retrieval_metrics(&units), units))
}

/// The encoder prepared for embedding training: any classification head is dropped (it would
/// be exported, and it plays no part).
pub fn prepare_embedder(family: Family, config: &FinetuneConfig) -> Result<TrainableModel> {
    let Family::Bert(bert) = family else {
        return Err(Error::config(
            "sentence-embedding fine-tuning needs an encoder (BERT, MiniLM) model",
        ));
    };
    TrainableModel::prepare(Family::Bert(bert.without_classifier()), config)
}

/// Fine-tune `model`'s embeddings on `train` (`config.grad_accum` batches per step; the loss of
/// a step is the mean over all its pairs), scoring `eval` before, every `eval_every` steps and
/// at the end; see [`train_loop`] for what `options` steer.
pub async fn train_embedder(
    model: &mut TrainableModel,
    embedding: EmbedConfig,
    backend: &Backend,
    train: &[PairBatch],
    eval: &[PairBatch],
    config: &FinetuneConfig,
    options: RunOptions<'_, EmbedEval>,
) -> Result<Summary<EmbedEval>> {
    embedding.validate()?;
    if config.method != model.method {
        return Err(Error::config(
            "the model was prepared for another fine-tuning method than the config asks for",
        ));
    }
    let mut task = Contrastive { config: embedding };
    let Family::Bert(bert) = &mut model.family else {
        return Err(Error::new(Code::Internal, "not an encoder"));
    };
    train_loop(bert, &mut task, backend, train, eval, config, options).await
}

/// The fine-tuned encoder as a sentence-transformers folder under `merged/`: `model.safetensors`
/// (LoRA merged, stored in `dtype`), `config.json` (the base's, as a `BertModel`),
/// `modules.json` (Transformer → Pooling), `1_Pooling/config.json`, `sentence_bert_config.json`
/// (the sequence length trained with) and `config_sentence_transformers.json` (cosine
/// similarity). Tokenizer files are added by the job.
pub fn export_embedder(
    model: &TrainableModel,
    base_config: &Value,
    embedding: EmbedConfig,
    seq_len: usize,
    dtype: StoreDtype,
) -> Result<Export> {
    let mut config = base_config.clone();
    let obj = config
        .as_object_mut()
        .ok_or_else(|| Error::new(Code::ModelConfigInvalid, "config.json is not an object"))?;
    obj.insert("architectures".into(), json!(["BertModel"]));
    // What a classifier base said about its head no longer holds: the head is not exported.
    for key in [
        "id2label",
        "label2id",
        "problem_type",
        "webtune_pooling",
        "auto_map",
    ] {
        obj.remove(key);
    }
    let hidden = obj
        .get("hidden_size")
        .and_then(Value::as_u64)
        .unwrap_or_default();
    let mean = embedding.pooling == Pooling::Mean;
    let json_file = |name: &str, value: Value| -> Result<(String, Vec<u8>)> {
        let bytes = serde_json::to_vec_pretty(&value)
            .map_err(|e| Error::new(Code::Internal, format!("{e}")))?;
        Ok((format!("merged/{name}"), bytes))
    };
    let files: ExportFiles = vec![
        json_file(
            "modules.json",
            json!([
                { "idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer" },
                { "idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling" },
            ]),
        )?,
        json_file(
            "1_Pooling/config.json",
            json!({
                "word_embedding_dimension": hidden,
                "pooling_mode_cls_token": !mean,
                "pooling_mode_mean_tokens": mean,
                "pooling_mode_max_tokens": false,
                "pooling_mode_mean_sqrt_len_tokens": false,
                "pooling_mode_weightedmean_tokens": false,
                "pooling_mode_lasttoken": false,
                "include_prompt": true,
            }),
        )?,
        json_file(
            "sentence_bert_config.json",
            json!({ "max_seq_length": seq_len, "do_lower_case": false }),
        )?,
        json_file(
            "config_sentence_transformers.json",
            json!({ "similarity_fn_name": "cosine", "webtune_scale": embedding.scale }),
        )?,
    ];
    Export::new(files, &config, model, dtype)
}

/// Adapter weights renamed from a sequence classifier's modules (`base_model.model.bert.…`) to a
/// bare encoder's (`base_model.model.…`): an embedder's base is a `BertModel`, which PEFT wraps
/// without the `bert.` its classification class puts in front.
fn bare_encoder_names(bytes: &[u8]) -> Result<Vec<u8>> {
    let file = SafeTensorsFile::parse(super::adapter::ADAPTER_WEIGHTS, bytes.to_vec())?;
    let mut tensors = Vec::new();
    for name in file.tensors.keys() {
        let (data, shape) = file
            .read_f32(name)
            .ok_or_else(|| Error::new(Code::Internal, format!("adapter tensor {name} unread")))?;
        let bare = match name.strip_prefix("base_model.model.bert.") {
            Some(rest) => format!("base_model.model.{rest}"),
            None => name.clone(),
        };
        tensors.push((bare, shape, data));
    }
    let refs: Vec<(&str, &[usize], &[f32])> = tensors
        .iter()
        .map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice()))
        .collect();
    Ok(write_f32_with_metadata(&refs, &[("format", "pt")]))
}

/// A LoRA embedder as a PEFT adapter of its base encoder (`task_type: "FEATURE_EXTRACTION"`,
/// the modules named as in a `BertModel`).
pub async fn export_embedder_adapter(
    model: &TrainableModel,
    base_model: &str,
) -> Result<ExportFiles> {
    let mut files = export_adapter_with(model, base_model, &[], &[]).await?;
    for (name, bytes) in &mut files {
        if name == super::adapter::ADAPTER_WEIGHTS {
            *bytes = bare_encoder_names(bytes)?;
        }
        if name == super::adapter::ADAPTER_CONFIG {
            let mut config: Value = serde_json::from_slice(bytes)
                .map_err(|e| Error::new(Code::Internal, format!("{e}")))?;
            config["task_type"] = json!("FEATURE_EXTRACTION");
            *bytes = serde_json::to_vec_pretty(&config)
                .map_err(|e| Error::new(Code::Internal, format!("{e}")))?;
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooler_pooling_and_bad_scales_are_refused() {
        assert!(EmbedConfig::default().validate().is_ok());
        for bad in [
            EmbedConfig {
                pooling: Pooling::Pooler,
                ..EmbedConfig::default()
            },
            EmbedConfig {
                scale: 0.0,
                ..EmbedConfig::default()
            },
            EmbedConfig {
                scale: f64::NAN,
                ..EmbedConfig::default()
            },
        ] {
            assert_eq!(bad.validate().unwrap_err().code, Code::ConfigInvalid);
        }
    }
}
