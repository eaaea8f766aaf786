//! A whole fine-tuning job (the path the page and `webtune train` take): dataset file in,
//! validation split, LoRA training, before/after evaluation, samples, export that loads back.

use burn::tensor::Device;
use webtune::backend::Backend;
use webtune::io::hf::ModelFiles;
use webtune::models::loaded::LoadedModel;
use webtune::train::job::{run_job, DatasetFile, JobConfig, JobEvent};
use webtune::Code;

mod common;
use common::fixture;

/// The tiny random GPT-2 with the real GPT-2 vocabulary and tokenizer.
fn model() -> (ModelFiles, LoadedModel) {
    let files = ModelFiles::from_dir(&fixture("tiny_random/gpt2-vocab")).expect("fixture");
    let base = LoadedModel::load(files.clone(), &Device::flex()).expect("loads");
    (files, base)
}

fn config(method: &str, lr: f64, steps: usize) -> JobConfig {
    JobConfig::from_json(&format!(
        r#"{{"batch_size": 8, "validation_fraction": 0.2, "samples": 2, "sample_tokens": 8,
            "data": {{"causal": {{"seq_len": 32}}}},
            "train": {{"method": "{method}", "lora_r": 8, "lora_alpha": 16,
                      "lora_targets": ["all-linear"], "lr": {lr}, "steps": {steps},
                      "warmup": 2, "seed": 7}}}}"#
    ))
    .expect("valid config")
}

/// Run a job on the capitals dataset.
fn capitals_job(
    config: &JobConfig,
    on_event: impl FnMut(JobEvent) -> bool,
) -> (LoadedModel, webtune::train::job::JobOutput) {
    let (files, base) = model();
    let data = std::fs::read(fixture("data/capitals.jsonl")).unwrap();
    let out = pollster::block_on(run_job(
        files,
        &base,
        &Backend::cpu(),
        DatasetFile {
            name: "capitals.jsonl",
            bytes: &data,
        },
        config,
        "tiny-gpt2-vocab",
        on_event,
    ))
    .expect("the job runs");
    (base, out)
}

#[test]
fn full_fine_tuning_learns_the_answer_template() {
    let (_, out) = capitals_job(&config("full", 0.01, 40), |_| true);
    let (before, after) = (out.before.unwrap(), out.after.unwrap());
    // The answers follow one template ("The capital of X is Y."): even a random tiny model
    // learns most of it in 40 steps (measured: 10.80 → 5.90).
    assert!(
        after.loss < 0.7 * before.loss,
        "held-out loss {} → {}",
        before.loss,
        after.loss
    );
    assert!(!out.files.iter().any(|f| f.starts_with("adapter/")));
}

#[test]
fn lora_job_lowers_held_out_loss_and_exports_a_model_that_loads() {
    let mut phases = Vec::new();
    let mut steps = 0;
    let (base, out) = capitals_job(&config("lora", 0.05, 40), |event| {
        match event {
            JobEvent::Phase { phase, .. } => phases.push(phase),
            JobEvent::Step(_) => steps += 1,
        }
        true
    });

    assert_eq!(out.report.examples, 40);
    assert_eq!(out.train_examples + out.validation_examples, 40);
    assert_eq!(out.validation_examples, 8);
    assert_eq!(steps, 40);
    assert_eq!(out.summary.steps, 40);
    for phase in ["data", "samples", "training", "export"] {
        assert!(
            phases.contains(&phase),
            "phase {phase} reported: {phases:?}"
        );
    }
    let (before, after) = (out.before.unwrap(), out.after.unwrap());
    // LoRA cannot touch this random model's tied 16-wide embeddings, so it moves the loss
    // only a little here (measured 10.80 → 10.67); full fine-tuning is held to more below.
    assert!(
        after.loss < before.loss,
        "held-out loss {} → {}",
        before.loss,
        after.loss
    );
    assert_eq!(out.samples.len(), 2);
    for s in &out.samples {
        assert!(
            s.prompt.starts_with("What is the capital of"),
            "{}",
            s.prompt
        );
        assert!(s.reference.starts_with("The capital of"));
    }
    assert!(out.files.contains(&"merged/model.safetensors".to_string()));
    assert!(out.files.contains(&"merged/tokenizer.json".to_string()));
    assert!(out
        .files
        .contains(&"adapter/adapter_model.safetensors".to_string()));

    // The export is a complete model: it loads, and gives the tuned model's logits.
    let mut merged = ModelFiles::new();
    for (name, bytes) in &out.export {
        if let Some(file) = name.strip_prefix("merged/") {
            merged.insert(file, bytes.clone());
        }
    }
    let reloaded = LoadedModel::load(merged, &Device::flex()).expect("export loads");
    assert!(reloaded.tokenizer.is_some());
    let tuned = out.tuned.as_ref().unwrap();
    let ids = base.encode("What is the capital of Peru?\n").unwrap();
    let a = pollster::block_on(reloaded.logits(&ids)).unwrap();
    let b = pollster::block_on(tuned.logits(&ids)).unwrap();
    let base_logits = pollster::block_on(base.logits(&ids)).unwrap();
    let diff = |x: &[Vec<f32>], y: &[Vec<f32>]| {
        x.iter()
            .flatten()
            .zip(y.iter().flatten())
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max)
    };
    assert!(diff(&a, &b) < 1e-5);
    assert!(diff(&a, &base_logits) > 1e-2, "training changed the model");
}

#[test]
fn datasets_the_model_cannot_learn_from_are_refused_clearly() {
    let (files, base) = model();
    let run = |name: &str, bytes: &[u8]| {
        pollster::block_on(run_job(
            files.clone(),
            &base,
            &Backend::cpu(),
            DatasetFile { name, bytes },
            &config("lora", 0.01, 2),
            "tiny",
            |_| true,
        ))
        .err()
        .expect("refused")
    };
    let err = run(
        "reviews.jsonl",
        b"{\"text\": \"good\", \"label\": \"pos\"}\n{\"text\": \"bad\", \"label\": \"neg\"}\n",
    );
    assert_eq!(err.code, Code::DataInvalid);
    assert!(err.message.contains("classification"), "{}", err.message);

    let err = run("one.jsonl", b"{\"text\": \"just one example\"}\n");
    assert_eq!(err.code, Code::DataInvalid);

    let mut stop = config("lora", 0.01, 2);
    stop.data.policy = serde_json::from_str("\"stop\"").unwrap();
    let err = pollster::block_on(run_job(
        files.clone(),
        &base,
        &Backend::cpu(),
        DatasetFile {
            name: "qa.jsonl",
            bytes: b"{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"c\", \"completion\": \"d\"}\n{\"prompt\": broken\n",
        },
        &stop,
        "tiny",
        |_| true,
    ))
    .err()
    .expect("stops at the broken line");
    assert_eq!(err.code, Code::DataInvalid);
    assert!(err.message.contains("line 3"), "{}", err.message);

    // A model without a tokenizer cannot read text.
    let tiny = ModelFiles::from_dir(&fixture("tiny_random/gpt2")).unwrap();
    let no_tok = LoadedModel::load(tiny.clone(), &Device::flex()).unwrap();
    let err = pollster::block_on(run_job(
        tiny,
        &no_tok,
        &Backend::cpu(),
        DatasetFile {
            name: "capitals.jsonl",
            bytes: &std::fs::read(fixture("data/capitals.jsonl")).unwrap(),
        },
        &config("lora", 0.01, 2),
        "tiny",
        |_| true,
    ))
    .err()
    .expect("refused");
    assert_eq!(err.code, Code::ModelMissingFile);
}
