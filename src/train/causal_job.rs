//! The causal LM's job ([`JobTask`]): a prompt–completion, chat or plain-text dataset read and
//! batched for the model's tokenizer (its chat template applied), greedy continuations of a few
//! held-out prompts by the base model, training, and the same prompts continued by the
//! fine-tuned model, with held-out loss and perplexity before and after (and, where the data
//! has answers, exact match and token F1 of the continuations). The export is the merged model
//! (with the base's tokenizer and chat template) and, for LoRA, the PEFT adapter.

use serde::Serialize;
use serde_json::json;

use super::causal::{evaluate_loss, finetune, EvalLoss, FinetuneSummary};
use super::export::{export_all, Export};
use super::finetune::{set_train_dropout, FinetuneConfig, TrainableModel};
use super::job::{
    read_and_split, tokenizer_of, DatasetFiles, HeldOut, JobConfig, JobContext, JobSizes, JobTask,
    Phase, ReadSplit, Trained,
};
use super::memory::MemoryEstimate;
use super::trainer::RunOptions;
use crate::data::batching::CausalEncoder;
use crate::data::chat::{ChatTemplate, Message};
use crate::data::schema::Schema;
use crate::data::validate::{inspect, Content, Dataset, Example, InspectOptions, Report};
use crate::data::TokenBatch;
use crate::error::{Code, Error, Result};
use crate::eval::generate::{generate, GenerateOptions};
use crate::eval::metrics::{answer_metrics, AnswerMetrics};
use crate::eval::uncertainty::LossComparison;
use crate::io::hf::ModelFiles;
use crate::io::tokenizer::Tokenizer;
use crate::models::loaded::LoadedModel;

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
    /// How many examples were held out, scored, and returned to training.
    pub held_out: HeldOut,
    pub train_batches: usize,
    pub summary: FinetuneSummary,
    /// Held-out loss of the base model and of the fine-tuned one.
    pub before: Option<EvalLoss>,
    pub after: Option<EvalLoss>,
    /// Before and after with 95% intervals, and the verdict the change gives (paired over the
    /// held-out rows).
    pub comparison: Option<LossComparison>,
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
    pub export: Export,
    /// The fine-tuned model: the base with the trained adapters (or weights), on the inference
    /// device.
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
    /// What became of the held-out examples (how many scored, how many returned to training).
    pub held_out: HeldOut,
    pub train_batches: Vec<TokenBatch>,
    pub eval_batches: Vec<TokenBatch>,
    pub chat: Option<ChatTemplate>,
}

/// The chat template a model ships (chat_template.jinja, tokenizer_config.json or GGUF
/// metadata; see [`ChatTemplate::from_model_files`]), if any.
pub fn chat_template(files: &ModelFiles) -> Result<Option<ChatTemplate>> {
    ChatTemplate::from_model_files(files)
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
    let mut options = causal_options(config, base);
    if let Some(t) = &chat {
        if options.chat_template.is_none() {
            // The model's template with the model's special tokens, as it renders in training.
            options.chat_template = Some(t.source().to_owned());
            options.bos_token.clone_from(&t.bos_token);
            options.eos_token.clone_from(&t.eos_token);
        }
    }
    let architecture = &base.info.architecture;
    let read = read_and_split(files, &options, tokenizer, &base.info, config, |dataset| {
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
        if matches!(dataset.schema, Schema::SentencePairs { .. }) {
            return Err(Error::new(
                Code::DataInvalid,
                format!(
                    "{} holds sentence pairs ({}), which tune an encoder's sentence embeddings; \
                     {architecture} is a causal language model, which learns to continue text. \
                     Load an encoder (MiniLM), or give prompt/completion pairs.",
                    dataset.file,
                    dataset.schema.describe()
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
        held_out,
    } = read;
    let mut causal = options.causal.clone();
    // Chunks of one document run on into each other: an end-of-text token between them would
    // teach the model to stop mid-sentence.
    causal.add_eos &= !dataset.document;
    let encoder = CausalEncoder::new(tokenizer, chat.as_ref(), causal);
    let plain = is_plain(&dataset);
    let batches = |idx: &[usize]| {
        let examples: Vec<&Example> = idx.iter().map(|&i| &dataset.examples[i]).collect();
        causal_batches(&encoder, &examples, config.batch_size, plain)
    };
    let train_batches = batches(&train_idx)?;
    let eval_batches = batches(&validation)?;
    Ok(PreparedData {
        report,
        validation_report,
        overlap_removed,
        train: train_idx,
        validation,
        held_out,
        train_batches,
        eval_batches,
        chat,
        dataset,
    })
}

/// The job's data options for `model`: rows hold `seq_len` inputs plus one target, so never
/// more than the model's context; completions end with the token the model's generation stops
/// at (its own EOS) unless `eos_token` names another. SmolLM2-Instruct stops at `<|im_end|>`:
/// ending its completions with the `<|endoftext|>` its vocabulary also has taught the
/// fine-tuned model to answer, end the answer, and answer again until the token limit.
pub(crate) fn causal_options(config: &JobConfig, model: &LoadedModel) -> InspectOptions {
    let mut options = config.data.clone();
    let longest = model.info.dims.max_positions.saturating_sub(1);
    options.causal.seq_len = options.causal.seq_len.min(longest).max(1);
    if options.causal.eos_token.is_none() {
        options.causal.eos_token = model
            .eos_token_id
            .and_then(|id| model.tokenizer.as_ref()?.token(id));
    }
    options
}

/// Whether every example is plain text (packed into full rows rather than one per row).
pub(crate) fn is_plain(dataset: &Dataset) -> bool {
    dataset
        .examples
        .iter()
        .all(|e| matches!(e.content, Content::Text { .. }))
}

/// `examples` as batches of `batch_size`: plain text packed into full rows, anything else one
/// example per row.
fn causal_batches(
    encoder: &CausalEncoder,
    examples: &[&Example],
    batch_size: usize,
    plain: bool,
) -> Result<Vec<TokenBatch>> {
    if plain {
        encoder.packed(examples, batch_size)
    } else {
        examples
            .chunks(batch_size.max(1))
            .map(|chunk| encoder.batch(chunk))
            .collect()
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
        Content::Labeled { .. } | Content::SentencePair { .. } => None,
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
    let max = model
        .info
        .dims
        .max_positions
        .saturating_sub(tokens + 1)
        .max(1);
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
    let options = causal_options(config, model);
    let (dataset, report) = inspect(name, bytes, &options, Some(tokenizer))?;
    let encoder = CausalEncoder::new(tokenizer, chat.as_ref(), options.causal.clone());
    let examples: Vec<&Example> = dataset.examples.iter().collect();
    let batches = causal_batches(&encoder, &examples, config.batch_size, is_plain(&dataset))?;
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

/// The causal LM's part of a job.
pub struct CausalJob;

impl JobTask for CausalJob {
    type Data = PreparedData;
    type Model = TrainableModel;
    type Eval = EvalLoss;
    /// The held-out prompts (as token ids) and the base model's continuations.
    type Before = Vec<(Vec<u32>, Sample)>;
    type Output = JobOutput;
    const NAME: &'static str = "causal";

    fn prepare(&self, job: &JobContext<'_>, dataset: DatasetFiles) -> Result<PreparedData> {
        prepare_data(job.base, chat_template(job.files)?, dataset, job.config)
    }

    fn sizes(&self, data: &PreparedData) -> JobSizes {
        JobSizes::of_batches(
            data.train_batches.iter().map(|b| (b.batch_size, b.seq_len)),
            data.eval_batches.iter().map(|b| (b.batch_size, b.seq_len)),
            0,
            data.train.len(),
            data.held_out,
        )
    }

    async fn before(
        &self,
        job: &JobContext<'_>,
        data: &PreparedData,
        phase: Phase<'_>,
    ) -> Result<(TrainableModel, Self::Before)> {
        // The base model's continuations first: the base model is at hand now.
        let (base, config) = (job.base, job.config);
        let tokenizer = tokenizer_of(base)?;
        let mut samples = Vec::new();
        for &i in &data.validation {
            if samples.len() >= config.samples {
                break;
            }
            let example = &data.dataset.examples[i];
            let separator = &config.data.causal.separator;
            let Some((ids, prompt, reference)) =
                sample_prompt(example, tokenizer, data.chat.as_ref(), separator)?
            else {
                continue;
            };
            if ids.is_empty() {
                continue;
            }
            let n = samples.len() + 1;
            phase("samples", format!("Base model on held-out example {n}…"));
            let before = continue_text(base, &ids, config.sample_tokens).await?;
            let sample = Sample {
                source: example.loc.to_string(),
                prompt,
                reference,
                before,
                after: String::new(),
            };
            samples.push((ids, sample));
        }
        let device = config.train.training_device(job.backend);
        let model = TrainableModel::prepare(base.family.trainable_on(&device), &config.train)?;
        Ok((model, samples))
    }

    async fn train(
        &self,
        job: &JobContext<'_>,
        model: &mut TrainableModel,
        data: &PreparedData,
        config: &FinetuneConfig,
        options: RunOptions<'_, EvalLoss>,
    ) -> Result<FinetuneSummary> {
        let (train, eval) = (&data.train_batches, &data.eval_batches);
        finetune(model, job.backend, train, eval, config, options).await
    }

    async fn export(
        &self,
        job: &JobContext<'_>,
        model: &TrainableModel,
        data: &PreparedData,
    ) -> Result<Export> {
        let dtype = job.config.export_dtype;
        let mut export = export_all(model, job.files, job.base_name, dtype).await?;
        // A GGUF base has no tokenizer_config.json: carry its chat template (and the tokens it
        // inserts) over, so the fine-tuned model chats like the base.
        let has_template =
            export.has("merged/tokenizer_config.json") || export.has("merged/chat_template.jinja");
        if let Some(t) = data.chat.as_ref().filter(|_| !has_template) {
            let config = json!({
                "chat_template": t.source(),
                "bos_token": t.bos_token,
                "eos_token": t.eos_token,
            });
            export.insert(
                "merged/tokenizer_config.json",
                serde_json::to_vec_pretty(&config).unwrap_or_default(),
            );
        }
        Ok(export)
    }

    /// The base with the trained adapters kept apart (LoRA; a QLoRA base stays quantized) or
    /// the trained weights (full fine-tuning): no merged copy of the model.
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
    ) -> Result<JobOutput> {
        let (data, summary, tuned) = (trained.data, trained.summary, trained.tuned);
        let eval = &data.eval_batches;
        // The loop scored the base (step 0, also kept by a checkpoint) and, unless the run was
        // stopped early, the trained model at its last step.
        let after = match summary.eval.last() {
            Some(e) if e.step == summary.steps && summary.steps > 0 => e.eval.clone(),
            _ => evaluate_loss(&trained.model.family, eval).await?,
        };
        let before = match summary.eval.first() {
            Some(e) if e.step == 0 => e.eval.clone(),
            _ => evaluate_loss(&job.base.family, eval).await?,
        };
        let comparison = EvalLoss::compare(&before, &after, job.config.train.seed);
        let total = trained.before.len();
        let mut done = Vec::new();
        for (k, (ids, mut sample)) in trained.before.into_iter().enumerate() {
            let n = k + 1;
            phase(
                "samples",
                format!("Fine-tuned model on held-out example {n}/{total}…"),
            );
            sample.after = continue_text(&tuned, &ids, job.config.sample_tokens).await?;
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
            held_out: data.held_out,
            train_batches: data.train_batches.len(),
            summary,
            before: Some(before),
            after: Some(after),
            comparison,
            samples: done,
            memory: trained.memory,
            answers_before,
            answers_after,
            files: trained.export.names(),
            export: trained.export,
            tuned: Some(tuned),
        })
    }
}
