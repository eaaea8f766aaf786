//! Helpers shared by the integration tests (each test file includes this with `mod common;`).
#![allow(dead_code)] // every test file uses a different subset

use std::path::PathBuf;

use burn::tensor::Device;
use serde_json::Value;
use webtune::io::hf::ModelFiles;
use webtune::models::loaded::LoadedModel;

/// A path under `tests/fixtures/`.
pub fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// SmolLM2-135M-Instruct, the page's default causal LM, under `www/models/`.
pub const SMOLLM2_GGUF: &str = "smollm2-135m-instruct/resolve/main/SmolLM2-135M-Instruct.Q4_1.gguf";

/// A default model file under `www/models/` (fetched by `cargo xtask models`; not in git).
///
/// Absent, the calling test is skipped with a note, so a fresh clone's `cargo test` passes
/// offline. With `WEBTUNE_REQUIRE_MODELS` set (to anything but "" or "0"; `cargo xtask test` sets
/// it after fetching the models) an absent file fails the test instead: there a skip would hide
/// that the parity checks against the real model never ran.
pub fn default_model(path: &str) -> Option<PathBuf> {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("www/models")
        .join(path);
    if full.is_file() {
        return Some(full);
    }
    let required =
        std::env::var_os("WEBTUNE_REQUIRE_MODELS").is_some_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "{} is absent and WEBTUNE_REQUIRE_MODELS is set: run `cargo xtask models`",
        full.display()
    );
    eprintln!(
        "skipped: {} is absent (run `cargo xtask models`; set WEBTUNE_REQUIRE_MODELS=1 to fail instead)",
        full.display()
    );
    None
}

/// Token ids from a JSON array in a reference fixture.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

// ---------------------------------------------------------------- a tiny sentiment task
// The tiny random BERT with a word-level tokenizer, and labelled reviews it can learn.

/// A word-level tokenizer for the tiny random BERT (vocabulary 100): BERT's special tokens and
/// the words of [`sentiment_jsonl`].
pub fn sentiment_tokenizer() -> String {
    let mut vocab = vec!["[PAD]", "[UNK]", "[CLS]", "[SEP]"];
    vocab.extend(WORDS_POS);
    vocab.extend(WORDS_NEG);
    vocab.extend(FILLER);
    let vocab: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), serde_json::json!(i)))
        .collect();
    let special = |id: usize, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": false, "special": true})
    };
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]"), special(2, "[CLS]"), special(3, "[SEP]")],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    })
    .to_string()
}

pub const WORDS_POS: [&str; 6] = ["good", "great", "lovely", "wonderful", "fun", "brilliant"];
pub const WORDS_NEG: [&str; 6] = ["bad", "awful", "dull", "terrible", "boring", "weak"];
pub const FILLER: [&str; 8] = [
    "the", "film", "was", "really", "plot", "acting", "quite", "and",
];

/// `n` short reviews; the label is the polarity of their opinion words.
pub fn sentiment_jsonl(n: usize) -> String {
    let mut rng = webtune::rng::Rng::new(11);
    let mut pick =
        |words: &[&'static str]| words[(rng.uniform() * words.len() as f64) as usize % words.len()];
    (0..n)
        .map(|i| {
            let (words, label) = if i % 2 == 0 {
                (&WORDS_POS, "pos")
            } else {
                (&WORDS_NEG, "neg")
            };
            let text = format!(
                "{} {} {} {} {} {}",
                pick(&FILLER),
                pick(&FILLER),
                pick(words),
                pick(&FILLER),
                pick(words),
                pick(&FILLER)
            );
            serde_json::json!({"text": text, "label": label}).to_string() + "\n"
        })
        .collect()
}

/// `n` sentence pairs the tiny BERT can learn to match: both sides share their two opinion
/// words (in another order, among other filler words).
pub fn pairs_jsonl(n: usize) -> String {
    let mut rng = webtune::rng::Rng::new(5);
    let words: Vec<&str> = WORDS_POS.iter().chain(&WORDS_NEG).copied().collect();
    let mut pick = |from: &[&'static str]| from[rng.below(from.len() as u64) as usize];
    (0..n)
        .map(|_| {
            let (a, b) = (pick(&words), pick(&words));
            let anchor = format!("{} {a} {} {b}", pick(&FILLER), pick(&FILLER));
            let positive = format!("{b} {} {a} {}", pick(&FILLER), pick(&FILLER));
            serde_json::json!({"anchor": anchor, "positive": positive}).to_string() + "\n"
        })
        .collect()
}

pub fn sentiment_model() -> (ModelFiles, LoadedModel) {
    let mut files = ModelFiles::from_dir(&fixture("tiny_random/bert")).expect("fixture");
    files.insert("tokenizer.json", sentiment_tokenizer().into_bytes());
    let base = LoadedModel::load(files.clone(), &Device::flex()).expect("loads");
    (files, base)
}

/// Run the built `webtune` CLI with `--json`: (exit status success, parsed stdout — the result,
/// or `{"error": …}`).
pub fn webtune_json(args: &[&str]) -> (bool, Value) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_webtune"))
        .args(args)
        .arg("--json")
        .output()
        .expect("run webtune");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    let value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "stdout of webtune {args:?} is not one JSON value ({e}): {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), value)
}

/// Largest |ours − theirs| over logits rows and a reference's JSON rows of the same shape.
pub fn max_diff(ours: &[Vec<f32>], theirs: &Value) -> f32 {
    let theirs = theirs.as_array().expect("rows");
    assert_eq!(ours.len(), theirs.len());
    let mut max = 0f32;
    for (row, expected) in ours.iter().zip(theirs) {
        let expected = expected.as_array().expect("row");
        assert_eq!(row.len(), expected.len());
        for (a, b) in row.iter().zip(expected) {
            max = max.max((a - b.as_f64().expect("float") as f32).abs());
        }
    }
    max
}
