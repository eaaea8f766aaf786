//! Dropout while fine-tuning: the model's own (GPT-2's `*_pdrop`, `model_dropout`) and LoRA's
//! (`lora_dropout`, on the branch input as PEFT does). Only training forwards on the autodiff
//! device drop anything; evaluation and inference are bit-identical with and without it; masks
//! are seeded.
//!
//! burn's random generator is per process (the CPU backend keeps one global generator), so the
//! tests that draw masks hold one lock: cargo runs tests on several threads.

use std::sync::{Mutex, MutexGuard};

use burn::prelude::*;
use burn::tensor::TensorData;
use webtune::backend::Backend;
use webtune::data::TokenBatch;
use webtune::io::hf::ModelFiles;
use webtune::models::layers::dropout;
use webtune::models::loaded::{Family, LoadedModel};
use webtune::models::{CausalLm, KvCache};
use webtune::train::causal::{evaluate_loss, finetune};
use webtune::train::export::{export_adapter, merged_tensors};
use webtune::train::finetune::{FinetuneConfig, TrainableModel};
use webtune::train::trainer::RunOptions;
use webtune::Code;

mod common;
use common::fixture;

static RNG: Mutex<()> = Mutex::new(());

fn rng_lock() -> MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

async fn read(t: Tensor<2>) -> Vec<f32> {
    t.into_data_async()
        .await
        .unwrap()
        .try_to_vec::<f32>()
        .unwrap()
}

#[test]
fn dropout_keeps_the_mean_and_acts_only_on_the_training_device() {
    let _rng = rng_lock();
    let backend = Backend::cpu();
    let (n, p) = (1000usize, 0.1f64);
    let ones = |device: &Device| Tensor::<2>::ones([n, n], device);
    let device = &backend.device;
    assert!(device.is_autodiff() && !backend.inference.is_autodiff());

    device.seed(7);
    let a = pollster::block_on(read(dropout(ones(device), p)));
    let b = pollster::block_on(read(dropout(ones(device), p)));
    let total = (n * n) as f64;
    let zeros = a.iter().filter(|&&v| v == 0.0).count() as f64 / total;
    let mean = a.iter().map(|&v| v as f64).sum::<f64>() / total;
    let keep = (1.0 / (1.0 - p)) as f32;
    // Each value is 0 (probability p) or 1/(1-p): the mean stays 1. Over 10⁶ values the
    // standard deviations are 3·10⁻⁴ for the share of zeros and 3.3·10⁻⁴ for the mean; the
    // bounds are 6σ.
    println!("dropout p={p}: zeros {zeros:.5}, mean {mean:.5}");
    assert!((zeros - p).abs() < 0.002, "share of zeros {zeros}");
    assert!((mean - 1.0).abs() < 0.002, "mean {mean}");
    assert!(a.iter().all(|&v| v == 0.0 || v == keep));
    assert_ne!(a, b, "two training forwards draw different masks");

    // Seeded: the same masks again.
    device.seed(7);
    let again = pollster::block_on(read(dropout(ones(device), p)));
    assert_eq!(a, again);

    // Inference device: untouched, bit for bit.
    let x = Tensor::<2>::from_data(
        TensorData::new(vec![0.5f32, -1.25, 3.0, 7.5], [2, 2]),
        &backend.inference,
    );
    let y = pollster::block_on(read(dropout(x.clone(), 0.5)));
    assert_eq!(y, pollster::block_on(read(x)));
    // p = 0 on the training device: untouched too.
    let z = pollster::block_on(read(dropout(ones(device), 0.0)));
    assert!(z.iter().all(|&v| v == 1.0));
}

fn files(name: &str) -> ModelFiles {
    ModelFiles::from_dir(&fixture(&format!("tiny_random/{name}"))).expect("fixture")
}

fn load(name: &str, device: &Device) -> Family {
    LoadedModel::load(files(name), device)
        .expect("loads")
        .family
}

/// Two batches of 2 × 16 tokens (ids < 100, every target counts), deterministic.
fn batches() -> Vec<TokenBatch> {
    let mut state = 12345u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % 100) as i64
    };
    (0..2)
        .map(|_| {
            let (b, t) = (2, 16);
            let seq: Vec<Vec<i64>> = (0..b).map(|_| (0..=t).map(|_| next()).collect()).collect();
            TokenBatch {
                batch_size: b,
                seq_len: t,
                inputs: seq.iter().flat_map(|s| s[..t].to_vec()).collect(),
                targets: seq.iter().flat_map(|s| s[1..].to_vec()).collect(),
                loss_mask: vec![1.0; b * t],
            }
        })
        .collect()
}

fn tokens(batch: &TokenBatch, device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(
        TensorData::new(batch.inputs.clone(), [batch.batch_size, batch.seq_len]),
        device,
    )
}

fn config(json: &str) -> FinetuneConfig {
    FinetuneConfig::from_json(json).expect("valid config")
}

fn logits(family: &Family, batch: &TokenBatch, device: &Device) -> Vec<f32> {
    let out = family.forward(tokens(batch, device), None::<&mut KvCache>);
    let [b, t, v] = out.dims();
    pollster::block_on(read(out.reshape([b * t, v])))
}

#[test]
fn gpt2_dropout_applies_to_training_forwards_only() {
    let _rng = rng_lock();
    let backend = Backend::cpu();
    let device = &backend.device;
    let data = batches();
    let prepare = |json: &str| {
        TrainableModel::prepare(load("gpt2", device), &config(json)).expect("prepares")
    };
    let plain = prepare(r#"{"method": "full"}"#);
    let dropped = prepare(r#"{"method": "full", "model_dropout": true}"#);

    // Training forwards (autodiff device): with the config's 0.1 dropout two passes differ,
    // without they are identical.
    let (a, b) = (
        logits(&dropped.family, &data[0], device),
        logits(&dropped.family, &data[0], device),
    );
    assert_ne!(a, b);
    let (c, d) = (
        logits(&plain.family, &data[0], device),
        logits(&plain.family, &data[0], device),
    );
    assert_eq!(c, d);

    // Evaluation: bit-identical with and without the dropout configuration.
    let e_plain = pollster::block_on(evaluate_loss(&plain.family, &data)).unwrap();
    let e_dropped = pollster::block_on(evaluate_loss(&dropped.family, &data)).unwrap();
    let measured = |e: webtune::train::causal::EvalLoss| (e.loss, e.perplexity, e.tokens);
    assert_eq!(measured(e_plain), measured(e_dropped));
    // Inference: the merged model has its dropout off again: on the training device it gives
    // the untouched model's logits exactly, every time. (The inference device computes the same
    // model within 1e-7 but not bit for bit: its kernels differ from the autodiff wrapper's.)
    let untouched = logits(&load("gpt2", device), &data[1], device);
    let merged = dropped.merged();
    assert!(
        logits(&merged, &data[1], device) == untouched,
        "merged model drops nothing"
    );
    assert!(
        logits(&merged, &data[1], device) == untouched,
        "merged model drops nothing"
    );
    // And a model loaded for inference never applies dropout.
    let inference = load("gpt2", &backend.inference);
    let base = logits(&inference, &data[1], &backend.inference);
    assert!(logits(&inference, &data[1], &backend.inference) == base);
}

async fn train(
    name: &str,
    json: &str,
    backend: &Backend,
    data: &[TokenBatch],
) -> (Vec<f32>, TrainableModel) {
    let cfg = config(json);
    let mut model = TrainableModel::prepare(load(name, &backend.device), &cfg).unwrap();
    let summary = finetune(&mut model, backend, data, &[], &cfg, RunOptions::default())
        .await
        .unwrap();
    (summary.losses, model)
}

#[test]
fn lora_dropout_changes_training_but_not_the_starting_model() {
    let _rng = rng_lock();
    let backend = Backend::cpu();
    let data = batches();
    for name in ["gpt2", "llama"] {
        let base = r#"{"steps": 4, "lr": 0.01, "lora_r": 4, "seed": 3"#;
        let off = format!("{base}}}");
        let on = format!(r#"{base}, "lora_dropout": 0.3}}"#);

        // Before any step the adapters add nothing: the merged exports are identical.
        let start = |json: &str| {
            let m = TrainableModel::prepare(load(name, &backend.device), &config(json)).unwrap();
            pollster::block_on(merged_tensors(&m)).unwrap()
        };
        assert_eq!(start(&off), start(&on), "{name}: merged weights at step 0");

        let (l_off, _) = pollster::block_on(train(name, &off, &backend, &data));
        let (l_on, model) = pollster::block_on(train(name, &on, &backend, &data));
        let (l_again, _) = pollster::block_on(train(name, &on, &backend, &data));
        println!("{name}: losses without LoRA dropout {l_off:?}, with 0.3 {l_on:?}");
        // Step 1: B = 0, so the branch contributes nothing whatever is dropped.
        assert_eq!(l_on[0], l_off[0], "{name}: first loss");
        assert!(
            l_on[1..].iter().zip(&l_off[1..]).all(|(a, b)| a != b),
            "{name}: later losses should differ: {l_on:?} vs {l_off:?}"
        );
        assert_eq!(l_on, l_again, "{name}: a seeded run repeats itself");

        // The adapter records its dropout, as PEFT's adapter_config.json does.
        let files = pollster::block_on(export_adapter(&model, "base")).unwrap();
        let (_, bytes) = files
            .iter()
            .find(|(n, _)| n == "adapter_config.json")
            .unwrap();
        let adapter: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(adapter["lora_dropout"], 0.3);
    }
}

#[test]
fn dropout_settings_are_checked() {
    for bad in [
        r#"{"lora_dropout": 1.0}"#,
        r#"{"lora_dropout": -0.1}"#,
        r#"{"model_dropout": 0.1}"#,
    ] {
        let err = FinetuneConfig::from_json(bad).unwrap_err();
        assert_eq!(err.code, Code::ConfigInvalid, "{bad}");
    }
    // Encoders do not implement dropout yet: refused rather than silently ignored.
    let backend = Backend::cpu();
    let cfg = config(r#"{"lora_dropout": 0.1}"#);
    let err = TrainableModel::prepare(load("bert", &backend.device), &cfg).unwrap_err();
    assert_eq!(err.code, Code::ConfigInvalid, "{err}");
    // A GPT-2 config.json with an impossible probability is refused by name.
    let mut broken = files("gpt2");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(broken.get("config.json").unwrap()).unwrap();
    cfg["attn_pdrop"] = 1.5.into();
    broken.insert("config.json", cfg.to_string().into_bytes());
    let err = LoadedModel::load(broken, &backend.inference).unwrap_err();
    assert_eq!(err.code, Code::ModelConfigInvalid);
    assert!(err.message.contains("attn_pdrop"), "{}", err.message);
}
