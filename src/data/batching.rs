//! Examples → token batches.
//!
//! Causal LM: each example becomes token ids plus, per token, whether it counts in the loss
//! (completion and assistant tokens do; prompt tokens do not; plain text counts everywhere).
//! A row of a [`TokenBatch`] holds `seq_len` inputs and the `seq_len` next tokens as targets, so
//! an example uses up to `seq_len + 1` tokens; longer ones are truncated at the end, shorter ones
//! padded (padding never counts) to the longest row of their batch ([`padded_len`]), not to
//! `seq_len`. Short plain texts can instead be packed: concatenated with EOS between them and cut
//! into rows, so no position is wasted on padding.
//!
//! Classification: token ids (with the tokenizer's special tokens), an attention mask and the
//! label's id from a [`LabelMap`] (labels sorted, numerically when they all are integers).

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::chat::ChatTemplate;
use super::validate::{Content, Example};
use super::TokenBatch;
use crate::error::{Code, Error, Result};
use crate::io::tokenizer::Tokenizer;

/// How examples become causal-LM tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CausalOptions {
    /// Inputs per row (each row also needs one more token for the last target).
    pub seq_len: usize,
    /// Text between a prompt and its completion (prompts rarely end in whitespace).
    pub separator: String,
    /// Append EOS after a text or completion, so the model learns to stop.
    pub add_eos: bool,
    /// The end-of-sequence token; when `None`, the first of `<|endoftext|>`, `</s>`, `<eos>`,
    /// `<|im_end|>` the tokenizer knows.
    pub eos_token: Option<String>,
    /// Count prompt tokens in the loss too (off: only completions/assistant turns count).
    pub train_on_prompt: bool,
}

impl Default for CausalOptions {
    fn default() -> Self {
        Self {
            seq_len: 256,
            separator: "\n".into(),
            add_eos: true,
            eos_token: None,
            train_on_prompt: false,
        }
    }
}

/// Rows are padded to a multiple of this many positions.
pub const PAD_MULTIPLE: usize = 16;

/// How many positions a batch whose longest row needs `longest` takes: padding every row to
/// `seq_len` made a batch of 25-token question–answer pairs at 128 do five times the work it
/// needs (the page's SmolLM2 evaluation of the Q&A sample took 52 s instead of ~10). Rounded up
/// to [`PAD_MULTIPLE`] so a run meets a few shapes, not one per batch (a backend may specialise
/// kernels per shape), and never more than `seq_len`.
pub fn padded_len(longest: usize, seq_len: usize) -> usize {
    (longest.max(1).div_ceil(PAD_MULTIPLE) * PAD_MULTIPLE).min(seq_len.max(1))
}

/// One example's tokens and, per token, whether predicting it counts in the loss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub counted: Vec<bool>,
}

/// Turns examples into token ids with loss masks, and into [`TokenBatch`]es.
pub struct CausalEncoder<'a> {
    tokenizer: &'a Tokenizer,
    chat: Option<&'a ChatTemplate>,
    options: CausalOptions,
    eos: Option<u32>,
}

impl<'a> CausalEncoder<'a> {
    pub fn new(
        tokenizer: &'a Tokenizer,
        chat: Option<&'a ChatTemplate>,
        options: CausalOptions,
    ) -> Self {
        let eos = match &options.eos_token {
            Some(t) => tokenizer.token_id(t),
            None => ["<|endoftext|>", "</s>", "<eos>", "<|im_end|>"]
                .iter()
                .find_map(|t| tokenizer.token_id(t)),
        };
        Self {
            tokenizer,
            chat,
            options,
            eos,
        }
    }

    pub fn options(&self) -> &CausalOptions {
        &self.options
    }

    /// The EOS id used between packed texts and after completions (if the tokenizer has one).
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Padding uses EOS (never counted), or 0 when the tokenizer has none.
    pub fn pad_id(&self) -> u32 {
        self.eos.unwrap_or(0)
    }

    fn push_eos(&self, e: &mut Encoded) {
        if let (true, Some(eos)) = (self.options.add_eos, self.eos) {
            e.ids.push(eos);
            e.counted.push(true);
        }
    }

    /// Tokens and loss flags of one example. The prompt is encoded with the tokenizer's special
    /// tokens (a BOS where the model has one), the completion without.
    pub fn encode(&self, content: &Content) -> Result<Encoded> {
        let mut e = match content {
            Content::Text { text } | Content::Labeled { text, .. } => {
                let ids = self.tokenizer.encode(text)?;
                let counted = vec![true; ids.len()];
                Encoded { ids, counted }
            }
            Content::Pair { prompt, completion } => {
                let prompt = format!("{prompt}{}", self.options.separator);
                let mut ids = self.tokenizer.encode(&prompt)?;
                let mut counted = vec![self.options.train_on_prompt; ids.len()];
                let completion = self.tokenizer.encode_with(completion, false)?;
                counted.extend(std::iter::repeat_n(true, completion.len()));
                ids.extend(completion);
                Encoded { ids, counted }
            }
            Content::Chat { messages } => {
                let fallback;
                let template = match self.chat {
                    Some(t) => t,
                    None => {
                        fallback = ChatTemplate::chatml();
                        &fallback
                    }
                };
                let (ids, mut counted) = template.encode(self.tokenizer, messages)?;
                if self.options.train_on_prompt {
                    counted.iter_mut().for_each(|c| *c = true);
                }
                // The template ends each turn itself; no extra EOS.
                return Ok(Encoded { ids, counted });
            }
            Content::SentencePair { .. } => {
                return Err(Error::new(
                    Code::DataInvalid,
                    "sentence pairs tune an encoder's embeddings (BERT, MiniLM); a causal \
                     language model learns from text, prompt/completion pairs or chats",
                ))
            }
        };
        self.push_eos(&mut e);
        Ok(e)
    }

    /// One row per example: truncated to `seq_len + 1` tokens, padded with masked positions to
    /// the longest row ([`padded_len`]).
    pub fn batch(&self, examples: &[&Example]) -> Result<TokenBatch> {
        let encoded = examples
            .iter()
            .map(|e| self.encode(&e.content))
            .collect::<Result<Vec<_>>>()?;
        // A row of n tokens has n - 1 inputs (the last token is only a target).
        let longest = encoded.iter().map(|e| e.ids.len().saturating_sub(1)).max();
        let width = padded_len(longest.unwrap_or(1), self.options.seq_len);
        Ok(rows_to_batch(&encoded, width, self.pad_id()))
    }

    /// Packs examples into rows: their tokens (each ending in EOS when `add_eos`) are
    /// concatenated and cut into windows of `seq_len + 1` tokens that overlap by one, so every
    /// token after the first is a target exactly once. Loss flags travel with the tokens (a
    /// packed prompt stays masked). The last row is padded; rows are grouped `batch_size` at a
    /// time (the last batch may be smaller).
    pub fn packed(&self, examples: &[&Example], batch_size: usize) -> Result<Vec<TokenBatch>> {
        let mut stream = Encoded {
            ids: Vec::new(),
            counted: Vec::new(),
        };
        for e in examples {
            let enc = self.encode(&e.content)?;
            stream.ids.extend(enc.ids);
            stream.counted.extend(enc.counted);
        }
        let l = self.options.seq_len.max(1);
        let mut rows = Vec::new();
        let mut start = 0;
        while start + 1 < stream.ids.len() {
            let end = (start + l + 1).min(stream.ids.len());
            rows.push(Encoded {
                ids: stream.ids[start..end].to_vec(),
                counted: stream.counted[start..end].to_vec(),
            });
            start += l;
        }
        Ok(rows
            .chunks(batch_size.max(1))
            .map(|chunk| rows_to_batch(chunk, l, self.pad_id()))
            .collect())
    }
}

/// Rows of `seq_len` inputs and next-token targets; the mask of position `t` is the loss flag of
/// token `t + 1`, and 0 on padding.
pub fn rows_to_batch(rows: &[Encoded], seq_len: usize, pad_id: u32) -> TokenBatch {
    let n = rows.len() * seq_len;
    let (mut inputs, mut targets, mut loss_mask) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for row in rows {
        let len = row.ids.len().min(seq_len + 1);
        for t in 0..seq_len {
            inputs.push(if t < len { row.ids[t] } else { pad_id } as i64);
            if t + 1 < len {
                targets.push(row.ids[t + 1] as i64);
                loss_mask.push(if row.counted[t + 1] { 1.0 } else { 0.0 });
            } else {
                targets.push(pad_id as i64);
                loss_mask.push(0.0);
            }
        }
    }
    TokenBatch {
        batch_size: rows.len(),
        seq_len,
        inputs,
        targets,
        loss_mask,
    }
}

/// Classification labels and their ids: sorted (numerically when every label is an integer, so
/// "2" comes before "10"); the id is the position. Serialize it with the fine-tuned head so
/// predictions map back to names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelMap {
    pub labels: Vec<String>,
}

impl LabelMap {
    pub fn from_labels<'s>(labels: impl IntoIterator<Item = &'s str>) -> Self {
        let mut labels: Vec<String> = labels.into_iter().map(str::to_string).collect();
        labels.sort();
        labels.dedup();
        if labels.iter().all(|l| l.parse::<i64>().is_ok()) {
            labels.sort_by_key(|l| l.parse::<i64>().unwrap_or_default());
        }
        Self { labels }
    }

    pub fn id(&self, label: &str) -> Option<usize> {
        self.labels.iter().position(|l| l == label)
    }

    pub fn label(&self, id: usize) -> Option<&str> {
        self.labels.get(id).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// One classification batch in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassBatch {
    pub batch_size: usize,
    pub seq_len: usize,
    /// `[batch_size × seq_len]` token ids, padded with `pad_id`.
    pub input_ids: Vec<i64>,
    /// `[batch_size × seq_len]` 1 on tokens, 0 on padding.
    pub attention_mask: Vec<i64>,
    /// `[batch_size]` label ids.
    pub labels: Vec<i64>,
}

/// Tokenizes labelled examples with the tokenizer's special tokens, truncates to `seq_len`
/// (keeping a trailing special token such as BERT's `[SEP]`), and pads to the longest
/// ([`padded_len`]): padding is masked out of attention, so it only costs time.
pub fn class_batch(
    tokenizer: &Tokenizer,
    labels: &LabelMap,
    examples: &[&Example],
    seq_len: usize,
    pad_id: u32,
) -> Result<ClassBatch> {
    let ids = examples
        .iter()
        .map(|e| match &e.content {
            Content::Labeled { text, .. } => tokenizer.encode(text),
            _ => Ok(Vec::new()),
        })
        .collect::<Result<Vec<_>>>()?;
    class_batch_of_ids(tokenizer, labels, examples, ids, seq_len, pad_id)
}

/// [`class_batch`] from the examples' token ids (`ids[i]` is `examples[i]`'s text with the
/// tokenizer's special tokens), for callers that tokenized them already.
pub fn class_batch_of_ids(
    tokenizer: &Tokenizer,
    labels: &LabelMap,
    examples: &[&Example],
    ids: Vec<Vec<u32>>,
    seq_len: usize,
    pad_id: u32,
) -> Result<ClassBatch> {
    let mut label_ids = Vec::with_capacity(examples.len());
    for e in examples {
        let Content::Labeled { label, .. } = &e.content else {
            return Err(Error::new(
                Code::DataInvalid,
                format!("{}: not a classification example", e.loc),
            )
            .with_details(
                json!({ "file": &*e.loc.file, "line": e.loc.line, "reason": "not_classification" }),
            ));
        };
        let id = labels.id(label).ok_or_else(|| {
            Error::new(
                Code::DataInvalid,
                format!("{}: the label \"{label}\" is not among the model's labels ({})", e.loc, labels.labels.join(", ")),
            )
            .with_details(json!({ "file": &*e.loc.file, "line": e.loc.line, "reason": "unknown_label", "label": label }))
        })?;
        label_ids.push(id as i64);
    }
    let rows = encoder_rows(tokenizer, ids, seq_len, pad_id)?;
    Ok(ClassBatch {
        batch_size: rows.rows,
        seq_len: rows.seq_len,
        input_ids: rows.input_ids,
        attention_mask: rows.attention_mask,
        labels: label_ids,
    })
}

/// Rows of token ids for an encoder, in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct TextRows {
    pub rows: usize,
    pub seq_len: usize,
    /// `[rows × seq_len]` token ids, padded with `pad_id`.
    pub input_ids: Vec<i64>,
    /// `[rows × seq_len]` 1 on tokens, 0 on padding.
    pub attention_mask: Vec<i64>,
}

/// Texts tokenized for an encoder (`ids[i]` with the tokenizer's special tokens), each
/// truncated to `seq_len` keeping a trailing special token such as BERT's `[SEP]`, padded to
/// the longest ([`padded_len`]): padding is masked out of attention, so it only costs time.
pub fn encoder_rows(
    tokenizer: &Tokenizer,
    ids: Vec<Vec<u32>>,
    seq_len: usize,
    pad_id: u32,
) -> Result<TextRows> {
    // What the post-processor wraps around text: BERT's [CLS] … [SEP] adds one at each end.
    let suffix = tokenizer.encode("")?.len() / 2;
    let longest = ids.iter().map(Vec::len).max().unwrap_or(1);
    let width = padded_len(longest, seq_len);
    let n = ids.len() * width;
    let mut out = TextRows {
        rows: ids.len(),
        seq_len: width,
        input_ids: Vec::with_capacity(n),
        attention_mask: Vec::with_capacity(n),
    };
    for mut ids in ids {
        if ids.len() > seq_len {
            let tail: Vec<u32> = ids[ids.len() - suffix.min(seq_len)..].to_vec();
            ids.truncate(seq_len - tail.len());
            ids.extend(tail);
        }
        for t in 0..width {
            out.input_ids
                .push(ids.get(t).copied().unwrap_or(pad_id) as i64);
            out.attention_mask.push((t < ids.len()) as i64);
        }
    }
    Ok(out)
}

/// Sentence pairs for contrastive training: row `i` of `anchors` means what row `i` of
/// `positives` means (and, within the batch, not what the other rows do).
#[derive(Debug, Clone, PartialEq)]
pub struct PairBatch {
    pub anchors: TextRows,
    pub positives: TextRows,
}

impl PairBatch {
    pub fn pairs(&self) -> usize {
        self.anchors.rows
    }

    /// (rows, row length) the encoder runs for this batch: both sides, at the longer width.
    pub fn shape(&self) -> (usize, usize) {
        (
            self.anchors.rows + self.positives.rows,
            self.anchors.seq_len.max(self.positives.seq_len),
        )
    }
}

/// The two texts of a pair example: a sentence pair, or a prompt and its completion (a
/// question and its answer pair up just as well for retrieval).
pub fn pair_texts(content: &Content) -> Option<(&str, &str)> {
    match content {
        Content::SentencePair { anchor, positive } => Some((anchor, positive)),
        Content::Pair { prompt, completion } => Some((prompt, completion)),
        _ => None,
    }
}

/// `examples` (pairs, see [`pair_texts`]) tokenized into batches of `batch_size` pairs, each
/// side padded to its own longest text (at most `seq_len` tokens).
pub fn pair_batches(
    tokenizer: &Tokenizer,
    examples: &[&Example],
    batch_size: usize,
    seq_len: usize,
    pad_id: u32,
) -> Result<Vec<PairBatch>> {
    examples
        .chunks(batch_size.max(1))
        .map(|chunk| {
            let (mut anchors, mut positives) = (Vec::new(), Vec::new());
            for e in chunk {
                let (a, p) = pair_texts(&e.content).ok_or_else(|| {
                    Error::new(Code::DataInvalid, format!("{}: not a sentence pair", e.loc))
                })?;
                anchors.push(tokenizer.encode(a)?);
                positives.push(tokenizer.encode(p)?);
            }
            // Rows are padded to their longest, not in steps: a pair batch is small.
            let width = |ids: &[Vec<u32>]| ids.iter().map(Vec::len).max().unwrap_or(1).min(seq_len);
            let (wa, wp) = (width(&anchors), width(&positives));
            Ok(PairBatch {
                anchors: encoder_rows(tokenizer, anchors, wa, pad_id)?,
                positives: encoder_rows(tokenizer, positives, wp, pad_id)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_shift_targets_and_mask_padding() {
        let row = Encoded {
            ids: vec![10, 11, 12, 13],
            counted: vec![false, false, true, true],
        };
        let b = rows_to_batch(&[row], 5, 0);
        assert_eq!(b.inputs, vec![10, 11, 12, 13, 0]);
        assert_eq!(b.targets, vec![11, 12, 13, 0, 0]);
        assert_eq!(b.loss_mask, vec![0.0, 1.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn batches_are_padded_to_their_longest_row_in_steps_of_16() {
        assert_eq!(padded_len(6, 128), 16);
        assert_eq!(padded_len(16, 128), 16);
        assert_eq!(padded_len(17, 128), 32);
        assert_eq!(padded_len(127, 128), 128);
        assert_eq!(padded_len(500, 128), 128);
        assert_eq!(padded_len(0, 128), 16);
        assert_eq!(padded_len(6, 4), 4);
        assert_eq!(padded_len(20, 24), 24);
    }

    #[test]
    fn label_map_sorts_numbers_numerically() {
        let m = LabelMap::from_labels(["10", "2", "1", "2"]);
        assert_eq!(m.labels, vec!["1", "2", "10"]);
        assert_eq!(m.id("10"), Some(2));
        let m = LabelMap::from_labels(["pos", "neg"]);
        assert_eq!((m.label(0), m.label(1)), (Some("neg"), Some("pos")));
    }
}
