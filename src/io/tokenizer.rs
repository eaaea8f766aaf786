//! `tokenizer.json` through Hugging Face's `tokenizers` crate (built with its pure-Rust regex
//! engine, so the same code runs in wasm). Some tokenizer files carry padding or truncation
//! settings meant for batch training (all-MiniLM's pads and truncates to 128): those are switched
//! off, because webtune pads and truncates explicitly where it batches.

use serde_json::json;

use crate::error::{Code, Error, Result};

#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

fn invalid(message: String) -> Error {
    Error::new(Code::TokenizerInvalid, message).with_details(json!({ "file": "tokenizer.json" }))
}

/// Checks what `tokenizers` would panic on instead of reporting: it `expect`s while reading a
/// decoder or a `Precompiled` normalizer, so a tokenizer.json cut short inside its `decoder`
/// (a half-finished download) or with a malformed `precompiled_charsmap` would crash the tab.
/// The JSON is parsed first (syntax and nesting depth), and every Precompiled normalizer is
/// read on its own. A `TemplateProcessing` post-processor whose template names a special token
/// missing from its `special_tokens` makes `tokenizers` index out of bounds on every encode, so
/// that is refused here too.
fn precheck(bytes: &[u8]) -> Result<()> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("tokenizer.json is not valid JSON: {e}")))?;
    fn walk(v: &serde_json::Value) -> Result<()> {
        match v {
            serde_json::Value::Object(o) => {
                if o.get("type").and_then(serde_json::Value::as_str) == Some("Precompiled") {
                    serde_json::from_value::<tokenizers::normalizers::Precompiled>(v.clone())
                        .map_err(|e| {
                            invalid(format!(
                                "tokenizer.json has an unreadable Precompiled normalizer: {e}"
                            ))
                        })?;
                }
                o.values().try_for_each(walk)
            }
            serde_json::Value::Array(a) => a.iter().try_for_each(walk),
            _ => Ok(()),
        }
    }
    value.get("normalizer").map_or(Ok(()), walk)?;
    value.get("post_processor").map_or(Ok(()), check_templates)
}

/// Every special token a `TemplateProcessing` template uses must be in its `special_tokens`,
/// with as many ids as tokens.
fn check_templates(v: &serde_json::Value) -> Result<()> {
    use serde_json::Value;
    match v {
        Value::Object(o) => {
            // serde reads the post-processor untagged: an object with a misspelled or missing
            // "type" still loads as a template if it has these fields (found by fuzzing).
            let template = o.get("type").and_then(Value::as_str) == Some("TemplateProcessing")
                || ["single", "pair", "special_tokens"]
                    .iter()
                    .any(|k| o.contains_key(*k));
            if template {
                let specials = o.get("special_tokens").and_then(Value::as_object);
                for (name, token) in specials.into_iter().flatten() {
                    let len = |k: &str| token.get(k).and_then(Value::as_array).map(Vec::len);
                    if len("ids") != len("tokens") {
                        return Err(invalid(format!(
                            "tokenizer.json's post-processor special token {name:?} has \
                             different numbers of ids and tokens"
                        )));
                    }
                }
                let pieces = ["single", "pair"]
                    .into_iter()
                    .filter_map(|k| o.get(k).and_then(Value::as_array))
                    .flatten();
                for piece in pieces {
                    let id = match piece {
                        Value::Object(p) => p
                            .get("SpecialToken")
                            .and_then(|s| s.get("id"))
                            .and_then(Value::as_str),
                        // The string form: `$A`, `$B:1` are sequences, `[CLS]` or `[CLS]:1` tokens.
                        Value::String(s) if !s.starts_with('$') => {
                            Some(s.rsplit_once(':').map_or(s.as_str(), |(id, _)| id))
                        }
                        _ => None,
                    };
                    if let Some(id) = id {
                        if specials.is_none_or(|s| !s.contains_key(id)) {
                            return Err(invalid(format!(
                                "tokenizer.json's post-processor template uses the special token \
                                 {id:?}, which its special_tokens do not define"
                            )));
                        }
                    }
                }
            }
            o.values().try_for_each(check_templates)
        }
        Value::Array(a) => a.iter().try_for_each(check_templates),
        _ => Ok(()),
    }
}

impl Tokenizer {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        precheck(bytes)?;
        let mut inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| invalid(format!("tokenizer.json could not be read: {e}")))?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| invalid(format!("could not switch off truncation: {e}")))?;
        Ok(Self { inner })
    }

    /// The tokenizer as `tokenizer.json` text (for exports of models whose tokenizer came from
    /// GGUF metadata).
    pub fn to_json(&self) -> Result<Option<String>> {
        self.inner
            .to_string(false)
            .map(Some)
            .map_err(|e| invalid(format!("the tokenizer could not be written as JSON: {e}")))
    }

    /// Encode as transformers' `tokenizer(text)` does: with the special tokens the file's
    /// post-processor adds (none for GPT-2; `[CLS] … [SEP]` for BERT).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, true)
    }

    pub fn encode_with(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        // encode_fast: the same ids without computing offsets, which nothing here uses (a
        // third faster on large datasets).
        self.inner
            .encode_fast(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| invalid(format!("could not tokenize the text: {e}")))
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| invalid(format!("could not decode tokens: {e}")))
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token (as the vocabulary spells it) with id `id`.
    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Whether `id` is a special added token (`<|im_end|>`, `</s>`…), which decoding for
    /// display may drop and chat templates use as markers.
    pub fn is_special(&self, id: u32) -> bool {
        self.inner
            .id_to_token(id)
            .is_some_and(|t| self.inner.get_added_vocabulary().is_special_token(&t))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
