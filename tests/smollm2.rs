//! The real default model, SmolLM2-135M-Instruct (Q4_1 GGUF with a Q8_0 embedding), against
//! transformers run on the same dequantized weights: the tokenizer, every last-position logit,
//! greedy chat generation through the GGUF's chat template, and the CLI's `forward` and
//! `generate --chat` JSON.
//!
//! Expected values: `tests/fixtures/reference/smollm2.json` and `smollm2_logits_last.npy`, made by
//! `tools/reference/smollm2_reference.py` (transformers loads the GGUF with `gguf_file=`, which
//! dequantizes with the `gguf` package + NumPy; float32, CPU, eager attention).
//!
//! The GGUF is not in git: `cargo xtask models` fetches it. Without it these tests print
//! "skipped: …" and pass, unless `WEBTUNE_REQUIRE_MODELS` is set (`cargo xtask test` sets it).

use std::time::Instant;

use burn::tensor::Device;
use serde_json::Value;
use webtune::data::Message;
use webtune::eval::generate::{generate, GenerateOptions};
use webtune::io::hf::ModelFiles;
use webtune::models::loaded::LoadedModel;

mod common;
use common::{default_model, fixture, ids, webtune_json, SMOLLM2_GGUF};

/// Both sides run in float32 and accumulate in different orders over 30 layers; against a
/// float64 run of the same weights each is ~1e-4 off (transformers 8.2e-5, webtune 1.1e-4), so
/// this leaves room without hiding a real mistake (a wrong rope or norm moves logits by ≫ 0.1).
const TOLERANCE: f32 = 1e-3;

fn reference() -> Value {
    let text = std::fs::read_to_string(fixture("reference/smollm2.json")).expect("reference");
    serde_json::from_str(&text).expect("reference JSON")
}

/// The GGUF, if present, after checking it is the file the reference was made from: a
/// different download would fail the comparisons below with a confusing diff. (The byte count,
/// not the sha256: the test crate has no hash implementation and `cargo xtask models` already
/// verified the wheel the file came from.)
fn model_path(reference: &Value) -> Option<std::path::PathBuf> {
    let path = default_model(SMOLLM2_GGUF)?;
    let bytes = std::fs::metadata(&path).expect("stat the GGUF").len();
    assert_eq!(
        bytes,
        reference["gguf_bytes"].as_u64().unwrap(),
        "{} is not the file the reference was made from (sha256 {})",
        path.display(),
        reference["gguf_sha256"]
    );
    Some(path)
}

fn load(path: &std::path::Path) -> LoadedModel {
    let files = ModelFiles::from_dir(path).expect("read the GGUF");
    LoadedModel::load(files, &Device::flex()).expect("load the GGUF")
}

/// The reference's last-position logits from the `.npy` file next to the JSON (float32,
/// little-endian, 1-D; numpy's format: magic, version, header length, a Python-dict header).
fn reference_logits(reference: &Value) -> Vec<f32> {
    let name = reference["text"]["logits_last_file"].as_str().unwrap();
    let bytes = std::fs::read(fixture(&format!("reference/{name}"))).expect("logits file");
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{name} is not an .npy file");
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    let n = reference["text"]["logits_last_len"].as_u64().unwrap() as usize;
    assert!(
        header.contains("'descr': '<f4'")
            && header.contains("'fortran_order': False")
            && header.contains(&format!("'shape': ({n},)")),
        "{name}: unexpected header {header}"
    );
    let data = &bytes[start + header_len..];
    assert_eq!(data.len(), n * 4, "{name}: {n} float32 values");
    data.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn max_abs_diff(got: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(got.len(), expected.len(), "vocabulary size");
    got.iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
}

/// Ids of the `k` largest logits, largest first.
fn top_k(logits: &[f32], k: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    order.truncate(k);
    order
}

/// The logits and their top-10 against the reference.
fn check_logits(what: &str, got: &[f32], reference: &Value) -> f32 {
    let expected = reference_logits(reference);
    let diff = max_abs_diff(got, &expected);
    eprintln!("{what}: last-position logits max |diff| vs transformers = {diff:.3e}");
    assert!(diff <= TOLERANCE, "{what}: max |diff| {diff} > {TOLERANCE}");
    // The reference's top-10 logits are ≥ 0.04 apart, so their order is stable at this tolerance.
    assert_eq!(
        top_k(got, 10),
        ids(&reference["text"]["top_ids"]),
        "{what}: top-10"
    );
    diff
}

fn chat_messages(reference: &Value) -> Vec<Message> {
    serde_json::from_value(reference["chat"]["messages"].clone()).expect("messages")
}

#[test]
fn tokens_and_last_position_logits_match_transformers() {
    let reference = reference();
    let Some(path) = model_path(&reference) else {
        return;
    };
    let start = Instant::now();
    let model = load(&path);
    let loaded = start.elapsed();
    let text = reference["text"]["text"].as_str().unwrap();
    // No BOS: the GGUF says `tokenizer.ggml.add_bos_token = false`, and transformers adds none.
    let input_ids = model.encode(text).unwrap();
    assert_eq!(input_ids, ids(&reference["text"]["input_ids"]), "{text:?}");
    let logits = pollster::block_on(model.logits(&input_ids)).unwrap();
    check_logits("library", logits.last().unwrap(), &reference);
    eprintln!(
        "timing: load {loaded:.2?}, load + tokenize + forward {:.2?}",
        start.elapsed()
    );
}

#[test]
fn greedy_chat_generation_matches_transformers() {
    let reference = reference();
    let Some(path) = model_path(&reference) else {
        return;
    };
    let start = Instant::now();
    let model = load(&path);
    let chat = &reference["chat"];
    let messages = chat_messages(&reference);
    // The same path as `webtune generate --chat`: the GGUF's template, then its stop tokens.
    assert_eq!(
        model.chat_prompt(&messages, true).unwrap(),
        chat["prompt_text"].as_str().unwrap()
    );
    let prompt_ids = model.chat_ids(&messages, true).unwrap();
    assert_eq!(prompt_ids, ids(&chat["prompt_ids"]), "prompt ids");
    let stops = model.chat_stop_tokens();
    assert_eq!(stops, ids(&chat["stop_ids"]), "stop tokens");
    let opts = GenerateOptions {
        max_new_tokens: chat["max_new_tokens"].as_u64().unwrap() as usize,
        greedy: true,
        use_cache: true,
        stop_tokens: stops.clone(),
        ..GenerateOptions::default()
    };
    let new_ids = pollster::block_on(generate(
        model.causal_lm(),
        &model.device,
        &prompt_ids,
        &opts,
        |_| true,
    ))
    .unwrap();
    let reply = match new_ids.split_last() {
        Some((last, rest)) if stops.contains(last) => rest,
        _ => &new_ids[..],
    };
    let text = model.tokenizer.as_ref().unwrap().decode(reply).unwrap();
    eprintln!("chat reply: {text:?} ({} tokens)", new_ids.len());
    assert_eq!(new_ids, ids(&chat["new_ids"]), "new token ids ({text:?})");
    assert_eq!(text, chat["text"].as_str().unwrap());
    eprintln!(
        "timing: load + generate {} tokens {:.2?}",
        new_ids.len(),
        start.elapsed()
    );
}

/// Run the built `webtune` with `--json`; the parsed stdout of a successful run.
fn webtune(args: &[&str]) -> Value {
    let (ok, value) = webtune_json(args);
    assert!(ok, "webtune {args:?} failed: {value}");
    value
}

#[test]
fn cli_forward_and_chat_match_transformers() {
    let reference = reference();
    let Some(path) = model_path(&reference) else {
        return;
    };
    let model = path.to_str().unwrap();
    let start = Instant::now();
    let text = reference["text"]["text"].as_str().unwrap();
    let forward = webtune(&["forward", model, "--text", text]);
    assert_eq!(forward["input_ids"], reference["text"]["input_ids"]);
    // `logits_last` is the whole vocabulary's row, printed with f32's shortest round-trip
    // digits, so it parses back to the exact values.
    let logits: Vec<f32> = forward["logits_last"]
        .as_array()
        .expect("logits_last")
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    check_logits("CLI", &logits, &reference);
    let forwarded = start.elapsed();

    let chat = &reference["chat"];
    let message = chat_messages(&reference)[0].content.clone();
    let out = webtune(&["generate", model, "--chat", &message, "--greedy"]);
    assert_eq!(out["chat_prompt"], chat["prompt_text"]);
    assert_eq!(out["prompt_ids"], chat["prompt_ids"]);
    assert_eq!(out["generated_ids"], chat["new_ids"]);
    assert_eq!(out["text"], chat["text"]);
    eprintln!(
        "timing: forward {forwarded:.2?}, forward + chat {:.2?}",
        start.elapsed()
    );
}
