//! Which fields of a record mean what. Detected from the field names most records carry, reported
//! to the user, and overridable: the caller passes a [`Schema`] (it deserializes from JSON such as
//! `{"kind": "prompt_completion", "prompt": "q", "completion": "a"}`).

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::formats::Record;
use super::validate::Issue;
use crate::error::{Code, Error, Result};

/// The mapping from a record's fields to an example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schema {
    /// Plain causal LM: every token counts.
    Text { text: String },
    /// Prompt and completion: only the completion counts in the loss.
    PromptCompletion { prompt: String, completion: String },
    /// Alpaca: the instruction (and the optional input) are formatted into a prompt; the output
    /// is the completion.
    Alpaca {
        instruction: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        output: String,
    },
    /// `messages: [{role, content}, …]`, rendered with the model's chat template; only the
    /// assistant turns count in the loss.
    Chat { messages: String },
    /// Text classification.
    Classification { text: String, label: String },
    /// Sentence pairs that mean the same (a question and its answer, a sentence and its
    /// paraphrase): an encoder learns embeddings that put each pair close together.
    SentencePairs { anchor: String, positive: String },
}

impl Schema {
    /// The fields the schema reads, required ones first.
    pub fn fields(&self) -> Vec<&str> {
        match self {
            Schema::Text { text } => vec![text],
            Schema::PromptCompletion { prompt, completion } => vec![prompt, completion],
            Schema::Alpaca {
                instruction,
                input,
                output,
            } => {
                let mut v = vec![instruction.as_str(), output.as_str()];
                v.extend(input.as_deref());
                v
            }
            Schema::Chat { messages } => vec![messages],
            Schema::Classification { text, label } => vec![text, label],
            Schema::SentencePairs { anchor, positive } => vec![anchor, positive],
        }
    }

    pub fn is_classification(&self) -> bool {
        matches!(self, Schema::Classification { .. })
    }

    /// A short name for the page ("prompt → completion" …).
    pub fn describe(&self) -> String {
        match self {
            Schema::Text { text } => format!("plain text from \"{text}\""),
            Schema::PromptCompletion { prompt, completion } => {
                format!("prompt \"{prompt}\" → completion \"{completion}\"")
            }
            Schema::Alpaca {
                instruction,
                input,
                output,
            } => match input {
                Some(input) => format!(
                    "Alpaca: instruction \"{instruction}\" + input \"{input}\" → output \"{output}\""
                ),
                None => format!("Alpaca: instruction \"{instruction}\" → output \"{output}\""),
            },
            Schema::Chat { messages } => format!("chat messages in \"{messages}\""),
            Schema::Classification { text, label } => {
                format!("classification: text \"{text}\" → label \"{label}\"")
            }
            Schema::SentencePairs { anchor, positive } => {
                format!("sentence pairs: \"{anchor}\" ≈ \"{positive}\"")
            }
        }
    }
}

/// The schema in use and how it was chosen, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    pub schema: Schema,
    /// True when detected from the field names, false when the caller chose it.
    pub detected: bool,
    /// Fields most records carry, in first-seen order.
    pub fields: Vec<String>,
    /// A sentence for the page.
    pub explanation: String,
}

/// Finds a field by name, exact first, then ignoring ASCII case.
fn find<'a>(fields: &'a [String], name: &str) -> Option<&'a String> {
    fields
        .iter()
        .find(|f| f.as_str() == name)
        .or_else(|| fields.iter().find(|f| f.eq_ignore_ascii_case(name)))
}

/// The schema the field names suggest, in order of specificity: chat, Alpaca, classification,
/// sentence pairs, prompt/completion pairs, plain text.
pub fn detect(fields: &[String]) -> Option<Schema> {
    let f = |name| find(fields, name).cloned();
    if let Some(messages) = f("messages") {
        return Some(Schema::Chat { messages });
    }
    if let (Some(instruction), Some(output)) = (f("instruction"), f("output")) {
        return Some(Schema::Alpaca {
            instruction,
            input: f("input"),
            output,
        });
    }
    for text in ["text", "sentence"] {
        for label in ["label", "category"] {
            if let (Some(text), Some(label)) = (f(text), f(label)) {
                return Some(Schema::Classification { text, label });
            }
        }
    }
    // Pairs beside a label or a score (NLI, STS) are not all positives: training every one of
    // them as "the same meaning" would teach contradictions; such files need a mapping by hand.
    if f("label").is_none() && f("score").is_none() {
        for (a, p) in SENTENCE_PAIRS {
            if let (Some(anchor), Some(positive)) = (f(a), f(p)) {
                return Some(Schema::SentencePairs { anchor, positive });
            }
        }
    }
    for (p, c) in [
        ("prompt", "completion"),
        ("prompt", "response"),
        ("input", "output"),
        ("question", "answer"),
    ] {
        if let (Some(prompt), Some(completion)) = (f(p), f(c)) {
            return Some(Schema::PromptCompletion { prompt, completion });
        }
    }
    f("text").map(|text| Schema::Text { text })
}

/// Field names of sentence pairs, as sentence-transformers' datasets name them.
pub const SENTENCE_PAIRS: [(&str, &str); 4] = [
    ("anchor", "positive"),
    ("sentence1", "sentence2"),
    ("query", "positive"),
    ("text1", "text2"),
];

/// Fields present in at least half of the first `sample` readable records.
pub fn common_fields(records: &[std::result::Result<Record, Issue>], sample: usize) -> Vec<String> {
    let mut seen: Vec<(String, usize)> = Vec::new();
    let mut n = 0;
    for record in records.iter().filter_map(|r| r.as_ref().ok()).take(sample) {
        n += 1;
        for key in record.fields.keys() {
            match seen.iter_mut().find(|(k, _)| k == key) {
                Some((_, c)) => *c += 1,
                None => seen.push((key.clone(), 1)),
            }
        }
    }
    seen.into_iter()
        .filter(|(_, c)| 2 * c >= n)
        .map(|(k, _)| k)
        .collect()
}

/// The schema to use: the caller's if given (checked against the fields), else detected.
pub fn resolve(
    file: &str,
    records: &[std::result::Result<Record, Issue>],
    header: Option<&[String]>,
    given: Option<&Schema>,
) -> Result<Detection> {
    let fields = match header {
        Some(h) => h.to_vec(),
        None => common_fields(records, 200),
    };
    if let Some(schema) = given {
        return Ok(Detection {
            schema: schema.clone(),
            detected: false,
            fields,
            explanation: format!("chosen: {}", schema.describe()),
        });
    }
    match detect(&fields) {
        Some(schema) => Ok(Detection {
            explanation: format!("detected from the field names: {}", schema.describe()),
            schema,
            detected: true,
            fields,
        }),
        None => Err(Error::new(
            Code::DataInvalid,
            format!(
                "{file}: cannot tell which fields hold the examples (fields: {}). Expected \
                 text; prompt/completion (or input/output, question/answer, prompt/response); \
                 instruction/input/output; messages; text/label; or sentence pairs (anchor/positive, \
                 sentence1/sentence2). Choose the mapping by hand.",
                if fields.is_empty() {
                    "none".to_string()
                } else {
                    fields.join(", ")
                }
            ),
        )
        .with_details(json!({ "file": file, "reason": "unknown_schema", "fields": fields }))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_mapping_is_detected() {
        let pc = |p: &str, c: &str| Schema::PromptCompletion {
            prompt: p.into(),
            completion: c.into(),
        };
        assert_eq!(
            detect(&names(&["text"])),
            Some(Schema::Text {
                text: "text".into()
            })
        );
        assert_eq!(
            detect(&names(&["prompt", "completion"])),
            Some(pc("prompt", "completion"))
        );
        assert_eq!(
            detect(&names(&["category", "prompt", "response"])),
            Some(pc("prompt", "response"))
        );
        assert_eq!(
            detect(&names(&["input", "output"])),
            Some(pc("input", "output"))
        );
        assert_eq!(
            detect(&names(&["Question", "Answer"])),
            Some(pc("Question", "Answer"))
        );
        assert_eq!(
            detect(&names(&["instruction", "input", "output"])),
            Some(Schema::Alpaca {
                instruction: "instruction".into(),
                input: Some("input".into()),
                output: "output".into()
            })
        );
        assert_eq!(
            detect(&names(&["messages"])),
            Some(Schema::Chat {
                messages: "messages".into()
            })
        );
        for (t, l) in [
            ("text", "label"),
            ("sentence", "label"),
            ("text", "category"),
        ] {
            assert_eq!(
                detect(&names(&[t, l])),
                Some(Schema::Classification {
                    text: t.into(),
                    label: l.into()
                })
            );
        }
        for (a, p) in SENTENCE_PAIRS {
            assert_eq!(
                detect(&names(&[a, p])),
                Some(Schema::SentencePairs {
                    anchor: a.into(),
                    positive: p.into()
                })
            );
        }
        // NLI and STS files: not every pair is a positive, so nothing is guessed.
        assert_eq!(detect(&names(&["sentence1", "sentence2", "label"])), None);
        assert_eq!(detect(&names(&["sentence1", "sentence2", "score"])), None);
        assert_eq!(detect(&names(&["foo", "bar"])), None);
    }

    #[test]
    fn schema_deserializes_from_the_callers_json() {
        let s: Schema =
            serde_json::from_str(r#"{"kind":"alpaca","instruction":"i","output":"o"}"#).unwrap();
        assert_eq!(
            s,
            Schema::Alpaca {
                instruction: "i".into(),
                input: None,
                output: "o".into()
            }
        );
    }
}
