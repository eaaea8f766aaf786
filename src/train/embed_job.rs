//! The sentence-embedding job ([`JobTask`]): an encoder (BERT, MiniLM) and a file of pairs
//! (anchor/positive, sentence1/sentence2, or question/answer) in; a held-out split, retrieval on
//! it before and after (each held-out anchor searches all held-out positives: recall@1, mean
//! reciprocal rank, the cosine of its own pair against the others'), the anchors whose best
//! match changed, and a sentence-transformers export out.

use std::collections::{HashSet, VecDeque};

use serde::Serialize;

use super::embed::{
    evaluate_pairs, export_embedder, export_embedder_adapter, prepare_embedder, train_embedder,
    EmbedEval,
};
use super::export::{tokenizer_files, Export};
use super::finetune::{set_train_dropout, FinetuneConfig, TrainableModel};
use super::job::{
    change_status, read_and_split, tally_changes, tokenizer_of, DatasetFiles, HeldOut, JobConfig,
    JobContext, JobSizes, JobTask, Phase, ReadSplit, Trained,
};
use super::memory::MemoryEstimate;
use super::trainer::{RunOptions, Summary};
use crate::data::batching::{pair_batches, pair_texts, PairBatch};
use crate::data::schema::Schema;
use crate::data::validate::{inspect, Dataset, Example, Report};
use crate::error::{Code, Error, Result};
use crate::eval::metrics::{RetrievalMetrics, RetrievalUnit};
use crate::eval::uncertainty::{compare_retrieval, RetrievalComparison};
use crate::models::bert::{Bert, Pooling};
use crate::models::loaded::{Family, LoadedModel};
use crate::rng::Rng;

/// Whether an encoder given data of `schema` tunes embeddings (sentence pairs, or prompts and
/// completions: questions and answers pair up for retrieval) rather than a classifier.
pub fn is_pair_schema(schema: &Schema) -> bool {
    matches!(
        schema,
        Schema::SentencePairs { .. } | Schema::PromptCompletion { .. }
    )
}

/// What one held-out anchor retrieved.
#[derive(Debug, Clone, Serialize)]
pub struct Retrieved {
    /// The positive ranked first.
    pub text: String,
    /// Where its own positive ranked (1: first).
    pub rank: usize,
    /// Cosine similarity of the anchor and its own positive.
    pub cosine: f64,
}

/// A held-out anchor whose best match changed with fine-tuning.
#[derive(Debug, Clone, Serialize)]
pub struct ChangedPair {
    /// Where the pair comes from, e.g. "pairs.jsonl line 13".
    pub source: String,
    pub anchor: String,
    pub positive: String,
    /// "fixed" (wrong before, right after), "broken" (right before, wrong after) or "changed"
    /// (wrong both times, differently).
    pub status: &'static str,
    pub before: Retrieved,
    pub after: Retrieved,
}

#[derive(Serialize)]
pub struct EmbedJobOutput {
    pub report: Report,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_report: Option<Report>,
    /// Training pairs dropped because the validation file has them too.
    pub overlap_removed: usize,
    pub pooling: Pooling,
    pub scale: f64,
    /// Tokens per text at most (each side of a pair).
    pub seq_len: usize,
    pub train_examples: usize,
    pub validation_examples: usize,
    pub held_out: HeldOut,
    pub train_batches: usize,
    pub memory: MemoryEstimate,
    pub summary: Summary<EmbedEval>,
    pub before: RetrievalMetrics,
    pub after: RetrievalMetrics,
    /// Before and after with 95% intervals and the verdict their changes give (paired over the
    /// held-out anchors).
    pub comparison: Option<RetrievalComparison>,
    /// Held-out anchors whose best match changed, fixed ones first.
    pub changed: Vec<ChangedPair>,
    pub changed_total: usize,
    pub fixed: usize,
    pub broken: usize,
    pub files: Vec<String>,
    #[serde(skip)]
    pub export: Export,
    /// The fine-tuned encoder (sharing the trained weights), for similarity and embeddings.
    #[serde(skip)]
    pub tuned: Option<LoadedModel>,
}

/// A pair dataset read, validated, split and batched for `base`.
pub struct PairData {
    pub report: Report,
    pub validation_report: Option<Report>,
    pub overlap_removed: usize,
    pub dataset: Dataset,
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
    pub held_out: HeldOut,
    pub seq_len: usize,
    pub train_batches: Vec<PairBatch>,
    pub eval_batches: Vec<PairBatch>,
}

/// Each text is cut to this many tokens unless `data.causal.seq_len` says fewer: pairs are
/// sentences, and sentence-transformers trains MiniLM at 128 (all-MiniLM-L6-v2's
/// `max_seq_length`), which `seq_len`'s default of 256 for causal rows would double.
const PAIR_SEQ_LEN: usize = 128;

fn seq_len_for(base: &LoadedModel, config: &JobConfig) -> usize {
    config
        .data
        .causal
        .seq_len
        .min(PAIR_SEQ_LEN)
        .min(base.info.dims.max_positions)
        .max(2)
}

fn batches_of(
    base: &LoadedModel,
    dataset: &Dataset,
    groups: &[Vec<usize>],
    seq_len: usize,
) -> Result<Vec<PairBatch>> {
    let tokenizer = tokenizer_of(base)?;
    let pad_id = tokenizer.token_id("[PAD]").unwrap_or(0);
    let mut out = Vec::with_capacity(groups.len());
    for group in groups {
        let examples: Vec<&Example> = group.iter().map(|&i| &dataset.examples[i]).collect();
        out.extend(pair_batches(
            tokenizer,
            &examples,
            group.len(),
            seq_len,
            pad_id,
        )?);
    }
    Ok(out)
}

/// The training pairs grouped into batches of `batch_size` in a seeded random order, no batch
/// holding the same text twice (sentence-transformers' `NoDuplicatesBatchSampler`). Every
/// other pair of a batch is a negative: pairs in file order put one topic's pairs together (a
/// question asked twice with two answers is a false negative), and a text twice in a batch is
/// its own negative. A pair that fits no batch yet waits, first in line, for the next one.
fn mixed_batches(
    dataset: &Dataset,
    idx: &[usize],
    batch_size: usize,
    seed: u64,
) -> Vec<Vec<usize>> {
    let mut order = idx.to_vec();
    Rng::new(seed ^ 0xE3B_0000).shuffle(&mut order);
    let mut waiting: VecDeque<usize> = order.into();
    let texts = |i: usize| pair_texts(&dataset.examples[i].content).unwrap_or(("", ""));
    let mut groups = Vec::new();
    while !waiting.is_empty() {
        let (mut seen, mut group, mut deferred) = (HashSet::new(), Vec::new(), Vec::new());
        // A batch looks at a few times its size before it closes short, so a file where most
        // pairs share a text costs linear time, not quadratic (its batches are small instead).
        let mut looked = 0;
        while group.len() < batch_size && looked < 4 * batch_size {
            let Some(i) = waiting.pop_front() else { break };
            looked += 1;
            let (a, p) = texts(i);
            if seen.contains(a) || seen.contains(p) {
                deferred.push(i);
                continue;
            }
            seen.insert(a);
            seen.insert(p);
            group.push(i);
        }
        for i in deferred.into_iter().rev() {
            waiting.push_front(i);
        }
        groups.push(group);
    }
    groups
}

/// Read, validate, split and batch a file of pairs for the encoder `base`.
pub fn prepare_pair_data<'a>(
    base: &LoadedModel,
    files: impl Into<DatasetFiles<'a>>,
    config: &JobConfig,
) -> Result<PairData> {
    config.validate()?;
    if config.batch_size < 2 {
        return Err(Error::config(
            "sentence-embedding training needs batch_size ≥ 2: the other pairs of a batch are \
             each pair's negatives (sentence-transformers uses 16 to 64)",
        )
        .with_details(serde_json::json!({ "field": "batch_size" })));
    }
    let tokenizer = tokenizer_of(base)?;
    let seq_len = seq_len_for(base, config);
    let mut options = config.data.clone();
    options.causal.seq_len = seq_len;
    let architecture = &base.info.architecture;
    let read = read_and_split(
        files.into(),
        &options,
        tokenizer,
        &base.info,
        config,
        |dataset| {
            if is_pair_schema(&dataset.schema) {
                return Ok(());
            }
            Err(Error::new(
                Code::DataInvalid,
                format!(
                    "{} is not a file of pairs ({}); {architecture} tunes sentence embeddings on \
                     pairs of texts that mean the same (fields anchor/positive, \
                     sentence1/sentence2 or question/answer)",
                    dataset.file,
                    dataset.schema.describe()
                ),
            ))
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
    let groups = mixed_batches(&dataset, &train, config.batch_size, config.train.seed);
    let train_batches = batches_of(base, &dataset, &groups, seq_len)?;
    // Held-out pairs are scored against all of them at once: their batches are only chunks.
    let chunks: Vec<Vec<usize>> = validation
        .chunks(config.batch_size)
        .map(<[usize]>::to_vec)
        .collect();
    let eval_batches = batches_of(base, &dataset, &chunks, seq_len)?;
    // With batch_size ≥ 2 only the last batch can hold a single pair (no negatives, a loss of
    // 0 whatever the model does); a file too small for any batch of two trains nothing.
    if train_batches.iter().all(|b| b.pairs() < 2) {
        return Err(Error::new(
            Code::DataInvalid,
            format!(
                "{}: {} training pair(s) make no batch of two; contrastive training needs at \
                 least two pairs per batch (the other pairs are each pair's negatives)",
                dataset.file,
                train.len()
            ),
        ));
    }
    Ok(PairData {
        report,
        validation_report,
        overlap_removed,
        dataset,
        train,
        validation,
        held_out,
        seq_len,
        train_batches,
        eval_batches,
    })
}

/// The embedding part of a job.
pub struct EmbedJob;

/// The base model's retrieval on the held-out pairs.
pub struct EmbedBefore {
    units: Vec<RetrievalUnit>,
    metrics: RetrievalMetrics,
}

fn bert_of(model: &TrainableModel) -> Result<&Bert> {
    match &model.family {
        Family::Bert(b) => Ok(b),
        _ => Err(Error::new(Code::Internal, "an embedder holds no encoder")),
    }
}

impl JobTask for EmbedJob {
    type Data = PairData;
    type Model = TrainableModel;
    type Eval = EmbedEval;
    type Before = EmbedBefore;
    type Output = EmbedJobOutput;
    const NAME: &'static str = "embedding";

    fn prepare(&self, job: &JobContext<'_>, dataset: DatasetFiles) -> Result<PairData> {
        job.config.embedding.validate()?;
        prepare_pair_data(job.base, dataset, job.config)
    }

    fn sizes(&self, data: &PairData) -> JobSizes {
        JobSizes::of_batches(
            data.train_batches.iter().map(PairBatch::shape),
            data.eval_batches.iter().map(PairBatch::shape),
            0,
            data.train.len(),
            data.held_out,
        )
    }

    async fn before(
        &self,
        job: &JobContext<'_>,
        data: &PairData,
        phase: Phase<'_>,
    ) -> Result<(TrainableModel, EmbedBefore)> {
        let config = job.config;
        let device = config.train.training_device(job.backend);
        let family = job.base.family.trainable_on(&device);
        if !matches!(family, Family::Bert(_)) {
            return Err(Error::config(format!(
                "sentence-embedding fine-tuning needs an encoder (BERT, MiniLM) model; {} is a \
                 causal language model",
                job.base.info.architecture
            )));
        }
        let model = prepare_embedder(family, &config.train)?;
        phase(
            "evaluation",
            format!(
                "Base model: {} held-out anchors, each searching all {} positives…",
                data.validation.len(),
                data.validation.len()
            ),
        );
        let (metrics, units) =
            evaluate_pairs(bert_of(&model)?, &data.eval_batches, config.embedding).await?;
        Ok((model, EmbedBefore { units, metrics }))
    }

    async fn train(
        &self,
        job: &JobContext<'_>,
        model: &mut TrainableModel,
        data: &PairData,
        config: &FinetuneConfig,
        options: RunOptions<'_, EmbedEval>,
    ) -> Result<Summary<EmbedEval>> {
        let (train, eval) = (&data.train_batches, &data.eval_batches);
        let embedding = job.config.embedding;
        train_embedder(model, embedding, job.backend, train, eval, config, options).await
    }

    async fn export(
        &self,
        job: &JobContext<'_>,
        model: &TrainableModel,
        data: &PairData,
    ) -> Result<Export> {
        let config = job.files.config()?;
        let (embedding, dtype) = (job.config.embedding, job.config.export_dtype);
        let mut export = export_embedder(model, &config, embedding, data.seq_len, dtype)?;
        if model.lora.is_some() {
            for (name, bytes) in export_embedder_adapter(model, job.base_name).await? {
                export.insert(format!("adapter/{name}"), bytes);
            }
        }
        for (name, bytes) in tokenizer_files(job.files) {
            export.insert(name, bytes);
        }
        Ok(export)
    }

    async fn tuned(&self, job: &JobContext<'_>, model: &TrainableModel) -> Result<LoadedModel> {
        let mut family = model.family.valid();
        set_train_dropout(&mut family, false, 0.0)?;
        Ok(job.base.with_family(family))
    }

    async fn finish(
        &self,
        job: &JobContext<'_>,
        trained: Trained<Self>,
        phase: Phase<'_>,
    ) -> Result<EmbedJobOutput> {
        let (data, before) = (trained.data, trained.before);
        phase(
            "evaluation",
            format!(
                "Fine-tuned model on {} held-out anchors…",
                data.validation.len()
            ),
        );
        let Family::Bert(tuned) = &trained.tuned.family else {
            return Err(Error::new(
                Code::Internal,
                "the tuned embedder is no encoder",
            ));
        };
        let embedding = job.config.embedding;
        let (after, units) = evaluate_pairs(tuned, &data.eval_batches, embedding).await?;
        let comparison = compare_retrieval(&before.units, &units, job.config.train.seed);
        let mut changed = Vec::new();
        let positive_of = |k: usize| {
            let e = &data.dataset.examples[data.validation[k]];
            pair_texts(&e.content).map_or("", |(_, p)| p).to_string()
        };
        for (k, (b, a)) in before.units.iter().zip(&units).enumerate() {
            if a.top == b.top {
                continue;
            }
            let status = change_status(b.rank == 1, a.rank == 1);
            let e = &data.dataset.examples[data.validation[k]];
            let Some((anchor, positive)) = pair_texts(&e.content) else {
                continue;
            };
            let retrieved = |u: &RetrievalUnit| Retrieved {
                text: positive_of(u.top),
                rank: u.rank,
                cosine: u.positive_cosine,
            };
            changed.push(ChangedPair {
                source: e.loc.to_string(),
                anchor: anchor.to_string(),
                positive: positive.to_string(),
                status,
                before: retrieved(b),
                after: retrieved(a),
            });
        }
        let (changed, changed_total, fixed, broken) = tally_changes(changed, |c| c.status);
        Ok(EmbedJobOutput {
            report: data.report,
            validation_report: data.validation_report,
            overlap_removed: data.overlap_removed,
            pooling: embedding.pooling,
            scale: embedding.scale,
            seq_len: data.seq_len,
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

/// Retrieval of `model`'s embeddings on every pair of a dataset file (the CLI's `eval` for an
/// encoder given pairs): each anchor searches all the file's positives.
pub async fn eval_pair_file(
    model: &LoadedModel,
    name: &str,
    bytes: &[u8],
    config: &JobConfig,
) -> Result<serde_json::Value> {
    config.embedding.validate()?;
    let tokenizer = tokenizer_of(model)?;
    let Family::Bert(bert) = &model.family else {
        return Err(Error::config(
            "sentence embeddings need an encoder (BERT, MiniLM) model",
        ));
    };
    let seq_len = seq_len_for(model, config);
    let mut options = config.data.clone();
    options.causal.seq_len = seq_len;
    let (dataset, report) = inspect(name, bytes, &options, Some(tokenizer))?;
    if !is_pair_schema(&dataset.schema) {
        return Err(Error::new(
            Code::DataInvalid,
            format!(
                "{name} is not a file of pairs ({})",
                dataset.schema.describe()
            ),
        ));
    }
    let all: Vec<usize> = (0..dataset.examples.len()).collect();
    let chunks: Vec<Vec<usize>> = all
        .chunks(config.batch_size)
        .map(<[usize]>::to_vec)
        .collect();
    let batches = batches_of(model, &dataset, &chunks, seq_len)?;
    let (metrics, _) = evaluate_pairs(bert, &batches, config.embedding).await?;
    Ok(serde_json::json!({
        "task": "embedding",
        "examples": dataset.examples.len(),
        "pooling": config.embedding.pooling,
        "eval": metrics,
        "report": report,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::formats::{Format, Location};
    use crate::data::validate::{Content, Example};

    #[test]
    fn mixed_batches_hold_every_pair_once_and_no_text_twice() {
        // Three questions asked twice with different answers, and one answer given twice.
        let pairs = [
            ("q1", "a1"),
            ("q1", "a2"),
            ("q2", "a3"),
            ("q2", "a4"),
            ("q3", "a5"),
            ("q3", "a6"),
            ("q4", "a1"),
            ("q5", "a7"),
        ];
        let examples = pairs
            .iter()
            .enumerate()
            .map(|(i, (a, p))| Example {
                loc: Location::line(&"p.jsonl".into(), i + 1),
                content: Content::SentencePair {
                    anchor: a.to_string(),
                    positive: p.to_string(),
                },
            })
            .collect();
        let dataset = Dataset {
            file: "p.jsonl".into(),
            format: Format::Jsonl,
            schema: Schema::SentencePairs {
                anchor: "anchor".into(),
                positive: "positive".into(),
            },
            examples,
            labels: None,
            document: false,
        };
        let idx: Vec<usize> = (0..pairs.len()).collect();
        let groups = mixed_batches(&dataset, &idx, 4, 7);
        let mut all: Vec<usize> = groups.concat();
        all.sort_unstable();
        assert_eq!(all, idx);
        for g in &groups {
            assert!(g.len() <= 4);
            let mut texts: Vec<&str> = g.iter().flat_map(|&i| [pairs[i].0, pairs[i].1]).collect();
            texts.sort_unstable();
            let n = texts.len();
            texts.dedup();
            assert_eq!(texts.len(), n, "a text twice in {g:?}");
        }
        // Most pairs sharing one text: small batches, every pair still placed once.
        let many = Dataset {
            examples: (0..300)
                .map(|i| Example {
                    loc: Location::line(&"m.jsonl".into(), i + 1),
                    content: Content::SentencePair {
                        anchor: format!("q{i}"),
                        positive: "the same answer".into(),
                    },
                })
                .collect(),
            ..dataset.clone()
        };
        let all: Vec<usize> = (0..300).collect();
        let groups_many = mixed_batches(&many, &all, 16, 7);
        assert_eq!(groups_many.len(), 300);
        assert_eq!(groups_many.concat().len(), 300);
        // Seeded: the same seed groups the same way, another seed differently.
        assert_eq!(groups, mixed_batches(&dataset, &idx, 4, 7));
        assert_ne!(groups, mixed_batches(&dataset, &idx, 4, 8));
    }
}
