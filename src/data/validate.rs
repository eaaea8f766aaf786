//! Records → examples, with every problem named by file, line and field, and a report of what
//! was read, what was skipped and why, and what the model will see (token lengths under its
//! tokenizer, how many examples will be truncated). Nothing is dropped without an entry in the
//! report: skipped records are counted by reason and listed, blank lines are counted.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::batching::{CausalEncoder, CausalOptions, LabelMap};
use super::chat::{ChatTemplate, Message};
use super::formats::{self, Encoding, Format, Location, Record, TextChoice, TextMode};
use super::schema::{self, Detection, Schema};
use crate::error::{Code, Error, Result};
use crate::io::tokenizer::Tokenizer;
use crate::rng::Rng;

/// One problem with one record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Issue {
    /// Stable machine-readable reason: `malformed_json`, `not_an_object`, `malformed_csv`,
    /// `wrong_field_count`, `missing_field`, `wrong_type`, `empty_text`, `bad_messages`,
    /// `no_assistant_message`, `chat_template`, `too_long`, `label_seen_once`.
    pub reason: &'static str,
    #[serde(flatten)]
    pub loc: Location,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// A sentence for the page that names the place: "reviews.jsonl line 3: malformed JSON …".
    pub message: String,
}

impl Issue {
    /// `what` is the problem alone; the message is prefixed with the location (and field).
    pub fn new(reason: &'static str, loc: Location, field: Option<&str>, what: String) -> Self {
        let message = match field {
            Some(f) => format!("{loc}, field \"{f}\": {what}"),
            None => format!("{loc}: {what}"),
        };
        Self {
            reason,
            loc,
            field: field.map(str::to_string),
            message,
        }
    }

    /// The issue as a `data.invalid` error (for the stop policy).
    pub fn to_error(&self) -> Error {
        Error::new(Code::DataInvalid, self.message.clone()).with_details(json!({
            "file": &*self.loc.file,
            "line": self.loc.line,
            "row": self.loc.row,
            "field": self.field,
            "reason": self.reason,
        }))
    }
}

/// What to do with a bad record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Skip it, count it under its reason and list it in the report.
    #[default]
    Skip,
    /// Stop at the first one with a `data.invalid` error naming file, line and field.
    Stop,
}

/// What an example holds, after the schema has been applied.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Content {
    Text {
        text: String,
    },
    /// Alpaca records become pairs with the prompt already formatted.
    Pair {
        prompt: String,
        completion: String,
    },
    Chat {
        messages: Vec<Message>,
    },
    Labeled {
        text: String,
        label: String,
    },
    /// Two texts that mean the same, for an encoder's embeddings.
    SentencePair {
        anchor: String,
        positive: String,
    },
}

impl Content {
    /// The key duplicates are found by: classification examples are the same example when
    /// their texts are equal (a text with two labels must not sit on both sides of a split).
    pub fn dedup_key(&self) -> u64 {
        let mut h = DefaultHasher::new();
        match self {
            Content::Labeled { text, .. } => text.hash(&mut h),
            other => other.hash(&mut h),
        }
        h.finish()
    }

    pub fn label(&self) -> Option<&str> {
        match self {
            Content::Labeled { label, .. } => Some(label),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    pub loc: Location,
    pub content: Content,
}

/// The examples of one file, ready to split and batch.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub file: String,
    pub format: Format,
    pub schema: Schema,
    pub examples: Vec<Example>,
    /// For classification: every label, sorted, with its id.
    pub labels: Option<LabelMap>,
    /// The examples are consecutive chunks of one text (a text file read as a document): they
    /// are packed without an end-of-text token between them.
    pub document: bool,
}

impl Dataset {
    /// Whether every example has a reference answer to score greedy generations against
    /// (prompt–completion and chat data; plain text has none).
    pub fn has_answers(&self) -> bool {
        !self
            .examples
            .iter()
            .any(|e| matches!(e.content, Content::Text { .. }))
    }
}

/// Options for [`inspect`]; every field has a default, so `{}` is valid JSON for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InspectOptions {
    /// Overrides detection from the file name and content.
    pub format: Option<Format>,
    /// Overrides schema detection.
    pub schema: Option<Schema>,
    pub text_mode: TextMode,
    /// The file's text encoding (UTF-8 unless told; a UTF-16 BOM is recognised).
    pub encoding: Encoding,
    pub policy: Policy,
    /// How prompts, completions and texts become tokens (and the sequence length).
    pub causal: CausalOptions,
    /// An example longer than `too_long_factor × seq_len` tokens is an issue (skipped or
    /// stopping), not just truncated: it is almost certainly a formatting accident.
    pub too_long_factor: usize,
    /// The model's chat template (Jinja source), for chat datasets; ChatML when absent.
    pub chat_template: Option<String>,
    pub bos_token: String,
    pub eos_token: String,
    /// At most this many issues are listed in the report (all are counted).
    pub max_listed_issues: usize,
    /// At most this many examples are kept in memory for training and validation; a file with
    /// more is checked in full and a seeded uniform sample of this size is kept (the report
    /// says so). Bounds memory on files of millions of lines.
    pub max_examples: usize,
}

impl Default for InspectOptions {
    fn default() -> Self {
        Self {
            format: None,
            schema: None,
            text_mode: TextMode::default(),
            encoding: Encoding::Utf8,
            policy: Policy::Skip,
            causal: CausalOptions::default(),
            too_long_factor: 8,
            chat_template: None,
            bos_token: String::new(),
            eos_token: String::new(),
            max_listed_issues: 1000,
            max_examples: 100_000,
        }
    }
}

/// Token-length statistics under the model's tokenizer, of each example as it will be fed
/// (prompt + separator + completion + EOS; rendered chat; classification text with the
/// tokenizer's special tokens).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenStats {
    pub seq_len: usize,
    pub min: usize,
    pub median: usize,
    pub p95: usize,
    pub max: usize,
    pub mean: f64,
    pub total: u64,
    /// Examples longer than `seq_len` (+1 for causal targets): truncated when batched one per
    /// row; plain texts that are packed are split across rows instead.
    pub truncated: usize,
    /// Ten equal-width buckets from 0 to `max`.
    pub histogram: Vec<Bucket>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    /// Inclusive bounds, in tokens.
    pub from: usize,
    pub to: usize,
    pub count: usize,
}

/// What [`inspect`] found, for the page and `--json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub file: String,
    pub bytes: usize,
    pub format: Format,
    /// The text encoding the file was read in.
    pub encoding: Encoding,
    pub schema: Detection,
    pub policy: Policy,
    /// Records read, good and bad (blank lines are not records).
    pub records: usize,
    /// Good examples in the file (every one checked, counted and measured).
    pub examples: usize,
    /// Set when the file has more than `max_examples` good examples: how many of them, a seeded
    /// uniform sample in file order, are kept for training and validation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampled: Option<usize>,
    pub skipped: usize,
    pub skipped_by_reason: BTreeMap<String, usize>,
    /// The skipped records, in file order (the first `max_listed_issues`).
    pub issues: Vec<Issue>,
    pub issues_not_listed: usize,
    /// Problems that do not skip the example (a label seen only once).
    pub warnings: Vec<Issue>,
    pub blank_lines: usize,
    /// Examples identical to an earlier one; kept, and kept on one side of a split.
    pub duplicates: usize,
    /// Label → count, for classification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, usize>>,
    /// Present when a tokenizer was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenStats>,
    /// "model" or "chatml (default)" for chat datasets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
    /// How a text file was read (one example per line, or continuous text in chunks), whether
    /// that was detected, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_mode: Option<TextChoice>,
}

/// The Alpaca prompt, as the Stanford Alpaca repository formats it.
pub fn alpaca_prompt(instruction: &str, input: &str) -> String {
    if input.trim().is_empty() {
        format!(
            "Below is an instruction that describes a task. Write a response that appropriately \
             completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
        )
    } else {
        format!(
            "Below is an instruction that describes a task, paired with an input that provides \
             further context. Write a response that appropriately completes the request.\n\n\
             ### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
        )
    }
}

/// A field as a string: missing/null and non-strings are issues (labels may be numbers or
/// booleans); `allow_empty` false makes blank text an issue.
fn get_str(
    record: &Record,
    field: &str,
    allow_empty: bool,
    is_label: bool,
) -> std::result::Result<String, Issue> {
    let issue = |reason, what: String| Issue::new(reason, record.loc.clone(), Some(field), what);
    let s = match record.fields.get(field) {
        None | Some(Value::Null) => {
            return Err(issue("missing_field", "the field is missing".into()))
        }
        Some(Value::String(s)) => s.clone(),
        Some(v @ (Value::Number(_) | Value::Bool(_))) if is_label => v.to_string(),
        Some(v) => {
            let kind = match v {
                Value::Array(_) => "an array",
                Value::Object(_) => "an object",
                Value::Number(_) => "a number",
                _ => "a boolean",
            };
            return Err(issue("wrong_type", format!("expected text, found {kind}")));
        }
    };
    if !allow_empty && s.trim().is_empty() {
        return Err(issue("empty_text", "the text is empty".into()));
    }
    Ok(s)
}

fn get_messages(record: &Record, field: &str) -> std::result::Result<Vec<Message>, Issue> {
    let issue = |reason, what: String| Issue::new(reason, record.loc.clone(), Some(field), what);
    let list = match record.fields.get(field) {
        None | Some(Value::Null) => {
            return Err(issue("missing_field", "the field is missing".into()))
        }
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(issue(
                "bad_messages",
                "expected a list of {role, content} objects".into(),
            ))
        }
    };
    let mut messages = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        match (
            m.get("role").and_then(Value::as_str),
            m.get("content").and_then(Value::as_str),
        ) {
            (Some(role), Some(content)) => messages.push(Message::new(role, content)),
            _ => {
                return Err(issue(
                    "bad_messages",
                    format!(
                        "message {} needs a string \"role\" and a string \"content\"",
                        i + 1
                    ),
                ))
            }
        }
    }
    if !messages
        .iter()
        .any(|m| m.role == "assistant" && !m.content.trim().is_empty())
    {
        return Err(issue(
            "no_assistant_message",
            "the conversation has no assistant message to learn from".into(),
        ));
    }
    Ok(messages)
}

/// Applies the schema to one record.
pub fn to_content(record: &Record, schema: &Schema) -> std::result::Result<Content, Issue> {
    Ok(match schema {
        Schema::Text { text } => Content::Text {
            text: get_str(record, text, false, false)?,
        },
        Schema::PromptCompletion { prompt, completion } => Content::Pair {
            prompt: get_str(record, prompt, false, false)?,
            completion: get_str(record, completion, false, false)?,
        },
        Schema::Alpaca {
            instruction,
            input,
            output,
        } => {
            let instruction = get_str(record, instruction, false, false)?;
            let input = match input {
                // A missing input is an empty input: Alpaca data leaves it out often.
                Some(f) if record.fields.get(f).is_some_and(|v| !v.is_null()) => {
                    get_str(record, f, true, false)?
                }
                _ => String::new(),
            };
            Content::Pair {
                prompt: alpaca_prompt(&instruction, &input),
                completion: get_str(record, output, false, false)?,
            }
        }
        Schema::Chat { messages } => Content::Chat {
            messages: get_messages(record, messages)?,
        },
        Schema::Classification { text, label } => Content::Labeled {
            text: get_str(record, text, false, false)?,
            label: get_str(record, label, false, true)?.trim().to_string(),
        },
        Schema::SentencePairs { anchor, positive } => Content::SentencePair {
            anchor: get_str(record, anchor, false, false)?,
            positive: get_str(record, positive, false, false)?,
        },
    })
}

fn percentile(sorted: &[usize], p: f64) -> usize {
    // Nearest rank: the smallest value with at least p of the data at or below it.
    let rank = ((p * sorted.len() as f64 - 1e-9).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn token_stats(mut sorted: Vec<usize>, seq_len: usize, limit: usize) -> Option<TokenStats> {
    sorted.sort_unstable();
    let max = *sorted.last()?;
    let width = max / 10 + 1;
    let mut histogram: Vec<Bucket> = (0..10)
        .map(|i| Bucket {
            from: i * width,
            to: (i + 1) * width - 1,
            count: 0,
        })
        .collect();
    for &l in &sorted {
        histogram[(l / width).min(9)].count += 1;
    }
    let total: u64 = sorted.iter().map(|&l| l as u64).sum();
    Some(TokenStats {
        seq_len,
        min: sorted[0],
        median: percentile(&sorted, 0.5),
        p95: percentile(&sorted, 0.95),
        max,
        mean: total as f64 / sorted.len() as f64,
        total,
        truncated: sorted.iter().filter(|&&l| l > limit).count(),
        histogram,
    })
}

/// Reads, validates and measures one dataset file: the single entry point for the CLI and the
/// wasm layer. With [`Policy::Stop`] the first bad record is the error; with [`Policy::Skip`]
/// bad records are listed in the report. Without a tokenizer, the report has no token
/// statistics and over-long examples are not detected.
pub fn inspect(
    name: &str,
    bytes: &[u8],
    options: &InspectOptions,
    tokenizer: Option<&Tokenizer>,
) -> Result<(Dataset, Report)> {
    inspect_with_progress(name, bytes, options, tokenizer, None)
}

/// How far reading a dataset file has got, for a progress bar. Records are parsed, checked and
/// tokenized one at a time, so the share of the file read is the progress.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DataProgress<'a> {
    pub file: &'a str,
    /// The file's size.
    pub bytes: usize,
    /// How much of it has been read, checked and tokenized.
    pub bytes_done: usize,
    /// Records read so far (good and bad).
    pub records_done: usize,
}

/// A progress callback (shared, so the dataset files that carry it can be copied).
pub type OnDataProgress<'a> = &'a dyn Fn(DataProgress<'_>);

/// The text mode to read with: a document without a chunk size is cut into chunks of about one
/// row of `seq_len` tokens (~3 characters each in English with a BPE vocabulary: 3.3 measured
/// on the Shakespeare sample with SmolLM2's), so the held-out share has many pieces to draw from.
fn text_mode(options: &InspectOptions) -> TextMode {
    let row = options.causal.seq_len.saturating_mul(3).max(192);
    match options.text_mode {
        TextMode::Auto { chunk_chars: 0 } => TextMode::Auto { chunk_chars: row },
        TextMode::Document { chunk_chars: 0 } => TextMode::Document { chunk_chars: row },
        mode => mode,
    }
}

/// The schema is detected from the fields of this many good records at the start of the file.
const SCHEMA_SAMPLE: usize = 200;

/// Seed of the uniform sample kept when a file has more than `max_examples` examples: fixed,
/// so the same file always yields the same examples (the split has its own seed).
const SAMPLE_SEED: u64 = 0x5eed_da7a;

/// Reads the records of a file in memory with `options` (called twice, see [`ReadFn`]).
fn bytes_reader<'a>(
    name: &'a str,
    bytes: &'a [u8],
    options: &'a InspectOptions,
) -> impl Fn(Option<Format>, &mut formats::Sink<'_>) -> Result<formats::ReadSummary> + 'a {
    move |format, sink| {
        formats::read_each(
            name,
            bytes,
            format,
            text_mode(options),
            options.encoding,
            sink,
        )
    }
}

/// [`bytes_reader`] for a file on disk, streamed.
#[cfg(not(target_arch = "wasm32"))]
fn path_reader<'a>(
    name: &'a str,
    path: &'a std::path::Path,
    options: &'a InspectOptions,
) -> impl Fn(Option<Format>, &mut formats::Sink<'_>) -> Result<formats::ReadSummary> + 'a {
    move |format, sink| {
        formats::read_each_path(
            name,
            path,
            format,
            text_mode(options),
            options.encoding,
            sink,
        )
    }
}

/// [`inspect`], reporting progress to `progress` about a hundred times over the file.
///
/// Memory: records are handled one at a time (read, checked, tokenized for the statistics,
/// then kept as an example or counted as an issue), so besides the file's bytes only the kept
/// examples stay: at most `max_examples`, a seeded uniform sample of the file's examples when it
/// has more (every example is still checked and counted in the report).
pub fn inspect_with_progress(
    name: &str,
    bytes: &[u8],
    options: &InspectOptions,
    tokenizer: Option<&Tokenizer>,
    progress: Option<OnDataProgress<'_>>,
) -> Result<(Dataset, Report)> {
    let read = bytes_reader(name, bytes, options);
    let encoding = formats::effective_encoding(bytes, options.encoding);
    inspect_source(
        name,
        bytes.len(),
        encoding,
        &read,
        options,
        tokenizer,
        progress,
    )
}

/// [`inspect_with_progress`] for a file on disk: JSON Lines and line-per-example text are
/// streamed from it (see [`formats::read_each_path`]), so neither the file nor its records are
/// ever held whole; memory is the kept examples (at most `max_examples`) and per-example
/// counters.
#[cfg(not(target_arch = "wasm32"))]
pub fn inspect_path(
    name: &str,
    path: &std::path::Path,
    options: &InspectOptions,
    tokenizer: Option<&Tokenizer>,
    progress: Option<OnDataProgress<'_>>,
) -> Result<(Dataset, Report)> {
    use std::io::Read;
    let unreadable = |e: std::io::Error| {
        Error::new(
            Code::DataInvalid,
            format!("cannot read {}: {e}", path.display()),
        )
        .with_details(json!({ "file": name, "reason": "unreadable" }))
    };
    let len = std::fs::metadata(path).map_err(unreadable)?.len() as usize;
    let mut start = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut start))
        .map_err(unreadable)?;
    let encoding = formats::effective_encoding(&start[..n], options.encoding);
    let read = path_reader(name, path, options);
    inspect_source(name, len, encoding, &read, options, tokenizer, progress)
}

/// Reads a file's records into `sink`, all of them or until it stops; called twice (the schema
/// from the first records, then everything).
type ReadFn<'r> =
    dyn Fn(Option<Format>, &mut formats::Sink<'_>) -> Result<formats::ReadSummary> + 'r;

/// The schema, from the fields at the start of the file (a pass that stops early), and what
/// that pass saw of the file.
fn detect_in(
    name: &str,
    read: &ReadFn<'_>,
    options: &InspectOptions,
) -> Result<(schema::Detection, formats::ReadSummary)> {
    let mut head = Vec::new();
    let mut good = 0;
    let summary = read(options.format, &mut |record, _| {
        good += record.is_ok() as usize;
        head.push(record);
        Ok(good < SCHEMA_SAMPLE)
    })?;
    if head.is_empty() {
        return Err(Error::new(
            Code::DataInvalid,
            format!("{name} contains no examples (it is empty or only blank lines)"),
        )
        .with_details(
            json!({ "file": name, "reason": "empty_file", "blank_lines": summary.blank_lines }),
        ));
    }
    let detection = schema::resolve(
        name,
        &head,
        summary.header.as_deref(),
        options.schema.as_ref(),
    )?;
    Ok((detection, summary))
}

/// The schema `options` give or the start of the file suggests, without reading the rest:
/// what decides an encoder's task (labelled texts or sentence pairs) before the job starts.
pub fn detect_schema(name: &str, bytes: &[u8], options: &InspectOptions) -> Result<Schema> {
    let read = bytes_reader(name, bytes, options);
    Ok(detect_in(name, &read, options)?.0.schema)
}

/// [`detect_schema`] for a file on disk.
#[cfg(not(target_arch = "wasm32"))]
pub fn detect_schema_path(
    name: &str,
    path: &std::path::Path,
    options: &InspectOptions,
) -> Result<Schema> {
    let read = path_reader(name, path, options);
    Ok(detect_in(name, &read, options)?.0.schema)
}

fn inspect_source(
    name: &str,
    bytes_len: usize,
    encoding: Encoding,
    read: &ReadFn<'_>,
    options: &InspectOptions,
    tokenizer: Option<&Tokenizer>,
    progress: Option<OnDataProgress<'_>>,
) -> Result<(Dataset, Report)> {
    let (detection, summary) = detect_in(name, read, options)?;
    let schema = detection.schema.clone();

    let chat = match (&schema, &options.chat_template) {
        (Schema::Chat { .. }, Some(source)) => Some((
            ChatTemplate::new(source, &options.bos_token, &options.eos_token)?,
            "model",
        )),
        (Schema::Chat { .. }, None) => Some((ChatTemplate::chatml(), "chatml (default)")),
        _ => None,
    };
    let encoder = tokenizer
        .map(|t| CausalEncoder::new(t, chat.as_ref().map(|c| &c.0), options.causal.clone()));
    let seq_len = options.causal.seq_len;
    let too_long = options.too_long_factor.max(1).saturating_mul(seq_len);
    let max_examples = options.max_examples.max(1);

    // Kept examples with their ordinal among all good ones (a sample keeps file order).
    let mut kept: Vec<(usize, Example)> = Vec::new();
    let mut sampler = Rng::new(SAMPLE_SEED);
    let mut valid = 0usize;
    let mut issues: Vec<Issue> = Vec::new();
    let mut issues_seen = 0usize;
    let mut skipped_by_reason: BTreeMap<String, usize> = BTreeMap::new();
    let mut skipped = 0;
    let mut lengths: Vec<usize> = Vec::new();
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    // Classification: count and first place of every label, over all good records.
    let mut label_counts: BTreeMap<String, (usize, Location)> = BTreeMap::new();
    let mut records_read = 0usize;

    let text_len = summary.text_len.max(1);
    let step = (text_len / 100).max(1);
    let mut next_report = 0usize;
    let tell = |at: usize, records: usize| {
        if let Some(progress) = progress {
            progress(DataProgress {
                file: name,
                bytes: bytes_len,
                // Offsets count in the decoded text; scale them to the file's bytes.
                bytes_done: ((at as u128 * bytes_len as u128) / text_len as u128) as usize,
                records_done: records,
            });
        }
    };
    tell(0, 0);
    let summary = read(Some(summary.format), &mut |record, at| {
        records_read += 1;
        if at >= next_report {
            tell(at, records_read);
            next_report = at + step;
        }
        let result = record.and_then(|record| {
            let content = to_content(&record, &schema)?;
            let mut length = None;
            if let (Some(tokenizer), Some(encoder)) = (tokenizer, &encoder) {
                let n = match &content {
                    Content::Labeled { text, .. } => tokenizer.encode(text).map(|ids| ids.len()),
                    // Each side is encoded on its own; the longer one is what a row must hold.
                    Content::SentencePair { anchor, positive } => tokenizer
                        .encode(anchor)
                        .and_then(|a| Ok(a.len().max(tokenizer.encode(positive)?.len()))),
                    other => encoder.encode(other).map(|e| e.ids.len()),
                }
                .map_err(|e| {
                    let reason = if e.code == Code::ChatTemplateInvalid {
                        "chat_template"
                    } else {
                        "tokenizer"
                    };
                    Issue::new(reason, record.loc.clone(), None, e.message)
                })?;
                if n > too_long {
                    return Err(Issue::new(
                        "too_long",
                        record.loc.clone(),
                        schema.fields().first().copied(),
                        format!(
                            "this example is {n} tokens long, more than {}× the sequence \
                                 length ({seq_len}); check the file's format (a missing line \
                                 break?)",
                            options.too_long_factor.max(1)
                        ),
                    ));
                }
                length = Some(n);
            }
            Ok((record.loc, content, length))
        });
        match result {
            Ok((loc, content, length)) => {
                if !seen.insert(content.dedup_key()) {
                    duplicates += 1;
                }
                lengths.extend(length);
                if let Some(label) = content.label() {
                    label_counts
                        .entry(label.to_string())
                        .or_insert_with(|| (0, loc.clone()))
                        .0 += 1;
                }
                // Reservoir sampling: after the first max_examples, example k replaces a
                // random kept one with probability max_examples / (k + 1).
                let example = Example { loc, content };
                if kept.len() < max_examples {
                    kept.push((valid, example));
                } else {
                    let j = sampler.below(valid as u64 + 1) as usize;
                    if j < max_examples {
                        kept[j] = (valid, example);
                    }
                }
                valid += 1;
            }
            Err(issue) => {
                if options.policy == Policy::Stop {
                    return Err(issue.to_error());
                }
                skipped += 1;
                *skipped_by_reason
                    .entry(issue.reason.to_string())
                    .or_default() += 1;
                issues_seen += 1;
                if issues.len() < options.max_listed_issues {
                    issues.push(issue);
                }
            }
        }
        Ok(true)
    })?;
    tell(text_len, records_read);
    kept.sort_unstable_by_key(|(k, _)| *k);
    let sampled = (valid > kept.len()).then_some(kept.len());
    let examples: Vec<Example> = kept.into_iter().map(|(_, e)| e).collect();

    let mut warnings = Vec::new();
    let (labels, label_map) = if schema.is_classification() {
        let field = match &schema {
            Schema::Classification { label, .. } => Some(label.as_str()),
            _ => None,
        };
        for (label, (_, loc)) in label_counts.iter().filter(|(_, (c, _))| *c == 1) {
            warnings.push(Issue::new(
                "label_seen_once",
                loc.clone(),
                field,
                format!(
                    "the label \"{label}\" appears only once: the model cannot learn it, and it \
                     cannot be in both the training and the validation split"
                ),
            ));
        }
        let map = LabelMap::from_labels(label_counts.keys().map(String::as_str));
        let counts = label_counts.into_iter().map(|(l, (c, _))| (l, c)).collect();
        (Some(counts), Some(map))
    } else {
        (None, None)
    };

    // Causal examples need seq_len + 1 tokens (inputs plus the last target).
    let limit = if schema.is_classification() || matches!(schema, Schema::SentencePairs { .. }) {
        seq_len
    } else {
        seq_len.saturating_add(1)
    };
    let report = Report {
        file: name.to_string(),
        bytes: bytes_len,
        format: summary.format,
        encoding,
        schema: detection,
        policy: options.policy,
        records: records_read,
        examples: valid,
        sampled,
        skipped,
        skipped_by_reason,
        issues,
        issues_not_listed: issues_seen.saturating_sub(options.max_listed_issues),
        warnings,
        blank_lines: summary.blank_lines,
        duplicates,
        labels,
        tokens: token_stats(lengths, seq_len, limit),
        chat_template: chat.as_ref().map(|c| c.1.to_string()),
        text_mode: summary.text_mode.clone(),
    };
    let document = matches!(
        summary.text_mode,
        Some(TextChoice {
            mode: TextMode::Document { .. },
            ..
        })
    );
    let dataset = Dataset {
        file: name.to_string(),
        format: summary.format,
        schema,
        examples,
        labels: label_map,
        document,
    };
    Ok((dataset, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<usize> = (1..=20).collect();
        assert_eq!(percentile(&v, 0.5), 10);
        assert_eq!(percentile(&v, 0.95), 19);
        assert_eq!(percentile(&[7], 0.95), 7);
        let s = token_stats(vec![1, 5, 9, 30], 8, 8).unwrap();
        assert_eq!((s.min, s.max, s.truncated), (1, 30, 2));
        assert_eq!(s.histogram.iter().map(|b| b.count).sum::<usize>(), 4);
    }

    #[test]
    fn alpaca_records_become_formatted_pairs() {
        let (ds, report) = inspect(
            "a.jsonl",
            br#"{"instruction": "Add", "input": "1+1", "output": "2"}
{"instruction": "Greet", "output": "Hi"}"#,
            &InspectOptions::default(),
            None,
        )
        .unwrap();
        assert_eq!(report.examples, 2);
        match &ds.examples[1].content {
            Content::Pair { prompt, completion } => {
                assert!(prompt.contains("### Instruction:\nGreet\n\n### Response:\n"));
                assert!(!prompt.contains("### Input"));
                assert_eq!(completion, "Hi");
            }
            other => panic!("{other:?}"),
        }
    }
}
