//! tokenizer.json: every model type, normalizer, pre-tokenizer (regexes), post-processor and
//! decoder the tokenizers crate deserialises, then encoding and decoding with it. Text after a
//! NUL is what gets encoded (a fixed sentence with a special token otherwise).
#![no_main]

use libfuzzer_sys::fuzz_target;
use webtune::io::tokenizer::Tokenizer;
use webtune_fuzz::{check, split_nul};

fuzz_target!(|data: &[u8]| {
    let (json, rest) = split_nul(data);
    let text = rest
        .first()
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .unwrap_or_else(|| "hello <s> ab".to_string());
    check(data.len(), || {
        let t = Tokenizer::from_bytes(json)?;
        let ids = t.encode(&text)?;
        let _ = t.decode(&ids)?;
        // Ids outside the vocabulary, as a corrupt checkpoint or dataset can hand over.
        let _ = t.decode(&[0, 1, u32::MAX, 7])?;
        let _ = t.to_json()?;
        Ok(t.vocab_size())
    });
});
