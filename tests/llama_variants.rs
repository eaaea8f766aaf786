//! Llama relatives against transformers (`tools/reference/tiny_variants.py`): Qwen2 with q/k/v
//! biases, Llama with Llama 3.1 rope scaling, and Mistral with an 8-position sliding window on
//! sequences of up to 64 tokens. Logits of every position, greedy generation with and without the
//! KV cache, the window in the cached path, and fine-tuning through the windowed attention.

use burn::prelude::*;
use burn::tensor::TensorData;
use serde_json::Value;
use webtune::backend::Backend;
use webtune::data::TokenBatch;
use webtune::eval::generate::{generate, GenerateOptions};
use webtune::io::hf::ModelFiles;
use webtune::models::loaded::LoadedModel;
use webtune::models::{CausalLm, KvCache};
use webtune::train::causal::{evaluate_loss, finetune};
use webtune::train::finetune::{FinetuneConfig, TrainableModel};
use webtune::train::trainer::RunOptions;

mod common;
use common::{fixture, ids, max_diff};

const MODELS: [&str; 3] = ["qwen2", "llama3_rope", "mistral_sw"];

fn load(name: &str) -> LoadedModel {
    let files = ModelFiles::from_dir(&fixture(&format!("tiny_random/{name}"))).expect("fixture");
    LoadedModel::load(files, &Device::flex()).expect("fixture loads")
}

fn reference(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture("reference/tiny_variants.json")).expect("reference");
    let all: Value = serde_json::from_str(&text).expect("reference JSON");
    all["models"][name].clone()
}

fn argmax(row: &[f32]) -> u32 {
    (0..row.len()).fold(0, |best, j| if row[j] > row[best] { j } else { best }) as u32
}

#[test]
fn logits_match_transformers() {
    for name in MODELS {
        let model = load(name);
        let reference = reference(name);
        assert_eq!(model.info.architecture, reference["config"]["model_type"]);
        let mut worst = 0f32;
        let mut longest = 0;
        for case in reference["cases"].as_array().expect("cases") {
            let input = ids(&case["input_ids"]);
            longest = longest.max(input.len());
            let ours = pollster::block_on(model.logits(&input)).unwrap();
            let diff = max_diff(&ours, &case["logits"]);
            worst = worst.max(diff);
            let am: Vec<u32> = ours.iter().map(|r| argmax(r)).collect();
            assert_eq!(am, ids(&case["argmax"]), "{name} case {}", case["name"]);
        }
        // Past the Mistral window (8) many times over.
        assert_eq!(longest, 64, "{name}");
        eprintln!("{name}: max |logit diff| vs transformers {worst:e}");
        assert!(worst <= 1e-4, "{name}: max |diff| {worst} > 1e-4");
    }
}

#[test]
fn greedy_generation_matches_transformers_with_and_without_cache() {
    for name in MODELS {
        let model = load(name);
        for gen in reference(name)["generation"]
            .as_array()
            .expect("generation")
        {
            let prompt = ids(&gen["prompt_ids"]);
            let expected = ids(&gen["generated_ids"]);
            assert!(expected.len() >= 20);
            for use_cache in [true, false] {
                let opts = GenerateOptions {
                    max_new_tokens: expected.len(),
                    greedy: true,
                    use_cache,
                    ..Default::default()
                };
                let out = pollster::block_on(generate(
                    model.causal_lm(),
                    &model.device,
                    &prompt,
                    &opts,
                    |_| true,
                ))
                .unwrap();
                assert_eq!(
                    out, expected,
                    "{name} prompt {prompt:?} use_cache={use_cache}"
                );
            }
        }
    }
}

/// The fixture `name` with its config.json edited.
fn load_edited(name: &str, edit: impl FnOnce(&mut Value)) -> LoadedModel {
    let mut files = ModelFiles::from_dir(&fixture(&format!("tiny_random/{name}"))).unwrap();
    let mut config: Value = serde_json::from_slice(files.get("config.json").unwrap()).unwrap();
    edit(&mut config);
    files.insert("config.json", serde_json::to_vec(&config).unwrap());
    LoadedModel::load(files, &Device::flex()).unwrap()
}

fn worst_diff(model: &LoadedModel, name: &str) -> f32 {
    let reference = reference(name);
    let mut worst = 0f32;
    for case in reference["cases"].as_array().unwrap() {
        let ours = pollster::block_on(model.logits(&ids(&case["input_ids"]))).unwrap();
        worst = worst.max(max_diff(&ours, &case["logits"]));
    }
    worst
}

#[test]
fn each_feature_moves_the_logits_far_beyond_the_tolerance() {
    // Guards for the parity test: a window one narrower or wider, or none, a plain rope, or
    // Llama's attention without biases would each fail it by orders of magnitude.
    for w in [Value::from(7), Value::from(9), Value::Null] {
        let m = load_edited("mistral_sw", |c| c["sliding_window"] = w.clone());
        let diff = worst_diff(&m, "mistral_sw");
        assert!(diff > 0.1, "sliding_window {w}: max |diff| only {diff}");
    }
    let m = load_edited("llama3_rope", |c| {
        c["rope_parameters"] = serde_json::json!({"rope_type": "default", "rope_theta": 500000.0})
    });
    let diff = worst_diff(&m, "llama3_rope");
    assert!(diff > 0.1, "unscaled rope: max |diff| only {diff}");
    // Llama's reading of the same tensors ignores the q/k/v biases.
    let m = load_edited("qwen2", |c| c["model_type"] = "llama".into());
    let diff = worst_diff(&m, "qwen2");
    assert!(diff > 0.1, "qwen2 without biases: max |diff| only {diff}");
}

/// Logits of `ids` fed to `forward` in `pieces` (each a number of tokens) through one cache.
fn cached_logits(model: &LoadedModel, ids: &[i64], pieces: &[usize]) -> Vec<f32> {
    let lm = model.causal_lm();
    let mut cache = KvCache::new();
    let mut out = Vec::new();
    let mut at = 0;
    for &n in pieces {
        let piece = &ids[at..at + n];
        let tokens =
            Tensor::<2, Int>::from_data(TensorData::new(piece.to_vec(), [1, n]), &model.device);
        let logits = lm.forward(tokens, Some(&mut cache));
        out.extend(
            pollster::block_on(logits.into_data_async())
                .unwrap()
                .try_to_vec::<f32>()
                .unwrap(),
        );
        at += n;
    }
    assert_eq!(cache.len, ids.len());
    out
}

#[test]
fn the_window_holds_in_the_cached_path() {
    // Pieces that straddle the window in every way: several tokens that all see past keys some
    // of which are out of reach, one token, a piece longer than the window.
    let model = load("mistral_sw");
    let ids: Vec<i64> = (0..40).map(|i| (i * 37 + 11) % 100).collect();
    let full = cached_logits(&model, &ids, &[40]);
    for pieces in [vec![5, 1, 3, 11, 20], vec![1; 40], vec![9, 31]] {
        let diff = full
            .iter()
            .zip(cached_logits(&model, &ids, &pieces))
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "pieces {pieces:?}: max |diff| {diff}");
    }
}

#[test]
fn the_window_is_not_a_context_limit() {
    // Before the window was implemented, Mistral's context was capped at it.
    let model = load("mistral_sw");
    assert_eq!(model.info.dims.max_positions, 64);
    let model = load("llama3_rope");
    assert_eq!(model.info.dims.max_positions, 1024);
}

#[test]
fn training_sees_the_window() {
    // Fine-tuning runs the same forward on the autodiff device. Its loss on the 64-token case
    // (targets = the next ids) must be the cross-entropy of transformers' logits, and a few
    // full fine-tuning steps must lower it (gradients flow through the windowed mask).
    let reference = reference("mistral_sw");
    let case = reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "full64")
        .unwrap();
    let ids: Vec<i64> = ids(&case["input_ids"]).iter().map(|&i| i as i64).collect();
    let n = ids.len() - 1;
    let batch = TokenBatch {
        batch_size: 1,
        seq_len: n,
        inputs: ids[..n].to_vec(),
        targets: ids[1..].to_vec(),
        loss_mask: vec![1.0; n],
    };
    let mut expected = 0f64;
    for (row, &target) in case["logits"].as_array().unwrap().iter().zip(&ids[1..]) {
        let row: Vec<f64> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let max = row.iter().cloned().fold(f64::MIN, f64::max);
        let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        expected += lse - row[target as usize];
    }
    let expected = (expected / n as f64) as f32;

    let backend = Backend::cpu();
    let files = ModelFiles::from_dir(&fixture("tiny_random/mistral_sw")).unwrap();
    let family = LoadedModel::load(files, &backend.device).unwrap().family;
    let before = pollster::block_on(evaluate_loss(&family, std::slice::from_ref(&batch))).unwrap();
    eprintln!(
        "mistral_sw eval loss {} vs transformers {expected}",
        before.loss
    );
    assert!(
        (before.loss - expected).abs() < 1e-5,
        "{} vs {expected}",
        before.loss
    );

    let config = FinetuneConfig::from_json(
        r#"{"method": "full", "lr": 1e-3, "schedule": "constant", "steps": 5, "shuffle": false}"#,
    )
    .unwrap();
    let mut model = TrainableModel::prepare(family, &config).unwrap();
    let summary = pollster::block_on(finetune(
        &mut model,
        &backend,
        std::slice::from_ref(&batch),
        &[],
        &config,
        RunOptions::default(),
    ))
    .unwrap();
    assert!(
        (summary.losses[0] - expected).abs() < 1e-5,
        "{:?}",
        summary.losses
    );
    let last = *summary.losses.last().unwrap();
    assert!(
        last.is_finite() && last < summary.losses[0],
        "{:?}",
        summary.losses
    );
}
