//! Dataset files through `data::inspect`: format reading (JSONL, JSON, CSV, TSV, text lines,
//! text document), encodings, schema detection, validation, chat rendering and tokenization.
//!
//! The first byte chooses how the rest is read:
//! - bits 0–2: format — 0 detected from the content, 1 JSONL, 2 JSON, 3 CSV, 4 TSV, 5 text
//!   lines, 6 text document, 7 detected from the name `d.jsonl`;
//! - bit 3: policy Stop (else Skip);
//! - bits 4–5: encoding — UTF-8, Windows-1252, UTF-16LE, UTF-16BE;
//! - bit 6: tokenize with the GPT-2 tokenizer (else no tokenizer);
//! - bit 7: tiny limits (sequence length, issue list, kept examples, document chunks), which
//!   drive the truncation, too-long and sampling paths.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use webtune::data::formats::Encoding;
use webtune::data::{self, Format, InspectOptions, Policy, TextMode};
use webtune::io::tokenizer::Tokenizer;
use webtune_fuzz::check;
use webtune_fuzz::fixtures::GPT2_TOKENIZER;

static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();

fn tokenizer() -> &'static Tokenizer {
    TOKENIZER.get_or_init(|| Tokenizer::from_bytes(GPT2_TOKENIZER).expect("GPT-2 tokenizer"))
}

fuzz_target!(
    // Parsed once, outside the allocation bound of the first case.
    init: {
        tokenizer();
    },
    |data: &[u8]| {
        let Some((&mode, bytes)) = data.split_first() else {
            return;
        };
        let tiny = mode & 0x80 != 0;
        let (name, format, text_mode) = match mode & 7 {
            0 => ("d.dat", None, TextMode::Lines),
            1 => ("d.dat", Some(Format::Jsonl), TextMode::Lines),
            2 => ("d.dat", Some(Format::Json), TextMode::Lines),
            3 => ("d.dat", Some(Format::Csv), TextMode::Lines),
            4 => ("d.dat", Some(Format::Tsv), TextMode::Lines),
            5 => ("d.dat", Some(Format::Text), TextMode::Lines),
            6 => (
                "d.dat",
                Some(Format::Text),
                TextMode::Document {
                    chunk_chars: if tiny { 3 } else { 256 },
                },
            ),
            _ => ("d.jsonl", None, TextMode::Lines),
        };
        let mut options = InspectOptions {
            format,
            text_mode,
            encoding: match (mode >> 4) & 3 {
                0 => Encoding::Utf8,
                1 => Encoding::Windows1252,
                2 => Encoding::Utf16Le,
                _ => Encoding::Utf16Be,
            },
            policy: if mode & 8 != 0 { Policy::Stop } else { Policy::Skip },
            ..InspectOptions::default()
        };
        if tiny {
            options.causal.seq_len = 4;
            options.too_long_factor = 1;
            options.max_listed_issues = 1;
            options.max_examples = 2;
        }
        let tokenizer = (mode & 0x40 != 0).then(tokenizer);
        check(bytes.len(), || {
            let (dataset, report) = data::inspect(name, bytes, &options, tokenizer)?;
            // The report goes to the page and the CLI as JSON.
            let _ = serde_json::to_string(&report);
            Ok(dataset.examples.len())
        });
    }
);
