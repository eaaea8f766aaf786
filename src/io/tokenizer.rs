//! `tokenizer.json` through Hugging Face's `tokenizers` crate (built with its pure-Rust regex
//! engine, so the same code runs in wasm). Some tokenizer files carry padding or truncation
//! settings meant for batch training (all-MiniLM's pads and truncates to 128): those are switched
//! off, because webtune pads and truncates explicitly where it batches.

use serde_json::json;

use crate::error::{Code, Error, Result};

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

impl Tokenizer {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
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
        self.inner
            .encode(text, add_special_tokens)
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

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
