//! Fine-tuning GPT-2 and Llama: step-for-step parity with PyTorch + PEFT on the tiny fixtures
//! (tests/fixtures/reference/finetune_*.json, from tools/reference/finetune_reference.py),
//! frozen bases, merging, exports, and the loop's guarantees (non-finite loss, cancel).
//!
//! Tolerances. Every run is f32. PEFT adds the LoRA branch to the activations
//! (`x W + (x A) B s`) while burn composes the weight (`x (W + s A B)`); torch's AdamW computes
//! its bias corrections in f64 where burn's use f32; reductions are ordered differently. These
//! differ at ~1e-7 relative per operation and twenty Adam steps amplify them (Adam normalises
//! the update, so a tiny gradient difference in a near-zero component moves a weight by up to
//! lr). The runs: 20 steps of two accumulated micro-batches, 2 warmup steps then linear decay,
//! weight decay 0.1 on matrices, clipping active on every step. Measured on the CPU backend:
//! losses within 2.2e-6 relative (full fine-tuning; LoRA less; the fixtures keep 7 significant
//! digits), pre-clip grad norms within 1.9e-5 relative (GPT-2 LoRA, whose norms are ~0.07).
//! Asserted: losses 1e-5 relative (the issue asks 1e-4), grad norms 5e-5 relative, weights
//! 1e-5 absolute + 1e-4 relative (`cargo test -- --nocapture` prints the numbers).

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::Device;
use serde_json::Value;
use webtune::backend::Backend;
use webtune::data::TokenBatch;
use webtune::io::hf::ModelFiles;
use webtune::io::safetensors::SafeTensorsFile;
use webtune::models::loaded::{Family, LoadedModel};
use webtune::models::{CausalLm, KvCache};
use webtune::train::causal::{evaluate_loss, finetune, FinetuneSummary};
use webtune::train::export::{export_adapter, export_merged, merged_tensors};
use webtune::train::finetune::{FinetuneConfig, Method, TrainableModel};
use webtune::train::lora::{lora_factors, parameters};
use webtune::train::replay::{replay, ReferenceRun};
use webtune::train::trainer::RunOptions;
use webtune::Code;

mod common;
use common::fixture;

fn reference(name: &str) -> Value {
    let path = fixture(&format!("reference/finetune_{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("reference")).expect("JSON")
}

/// The fixture's weights on the CPU, as the page and the CLI load a model.
fn base(name: &str) -> Family {
    LoadedModel::load(files(name), &Device::flex())
        .expect("the fixture loads")
        .family
}

fn files(name: &str) -> ModelFiles {
    ModelFiles::from_dir(&fixture(&format!("tiny_random/{name}"))).expect("fixture")
}

fn base_config(name: &str) -> Value {
    let path = fixture(&format!("tiny_random/{name}/config.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The model on the CPU backend's autodiff device.
fn load(name: &str, backend: &Backend) -> Family {
    LoadedModel::load(files(name), &backend.device)
        .expect("tiny model loads")
        .family
}

fn floats(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(floats).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        other => panic!("not a number: {other}"),
    }
}

// The reference's parts, read by the library's own reader (the browser test uses it too).
fn batches(r: &Value) -> Vec<TokenBatch> {
    ReferenceRun::from_json(r, "full")
        .expect("reference")
        .batches
}

fn config(r: &Value, method: &str) -> FinetuneConfig {
    ReferenceRun::from_json(r, method)
        .expect("reference config")
        .config
}

fn rel(a: f32, b: f32) -> f32 {
    (a - b).abs() / b.abs().max(1e-12)
}

/// Largest |a - b| beyond `atol + rtol·|b|`, and the largest absolute difference.
fn compare(ours: &[f32], theirs: &[f32], atol: f32, rtol: f32) -> (f32, bool) {
    assert_eq!(ours.len(), theirs.len());
    let mut worst = 0f32;
    let mut ok = true;
    for (a, b) in ours.iter().zip(theirs) {
        let d = (a - b).abs();
        worst = worst.max(d);
        ok &= d <= atol + rtol * b.abs();
    }
    (worst, ok)
}

fn check_steps(name: &str, summary: &FinetuneSummary, r: &Value) {
    let losses = floats(&r["losses"]);
    let norms = floats(&r["grad_norms"]);
    let lrs = floats(&r["lrs"]);
    assert_eq!(summary.steps, losses.len());
    let mut worst_loss = 0f32;
    let mut worst_norm = 0f32;
    for i in 0..losses.len() {
        worst_loss = worst_loss.max(rel(summary.losses[i], losses[i]));
        worst_norm = worst_norm.max(rel(summary.grad_norms[i], norms[i]));
        assert!(
            (summary.lrs[i] as f32 - lrs[i]).abs() <= 1e-9 + 1e-6 * lrs[i],
            "{name} lr step {}",
            i + 1
        );
    }
    eprintln!("{name}: losses {:?}\n  reference {losses:?}\n  max rel diff: loss {worst_loss:e}, grad norm {worst_norm:e}", summary.losses);
    assert!(
        worst_loss < 1e-5,
        "{name}: loss differs by {worst_loss:e} relative"
    );
    assert!(
        worst_norm < 5e-5,
        "{name}: grad norm differs by {worst_norm:e} relative"
    );
}

fn lora_run(name: &str) -> (TrainableModel, FinetuneSummary, Value) {
    let r = reference(name);
    let run = ReferenceRun::from_json(&r, "lora").unwrap();
    let (model, summary) =
        pollster::block_on(replay(&base(name), &Backend::cpu(), &run)).expect("LoRA run");
    (model, summary, r)
}

fn lora_parity(name: &str) {
    let (model, summary, r) = lora_run(name);
    check_steps(&format!("{name} LoRA"), &summary, &r["lora"]);
    let ours = pollster::block_on(lora_factors(&model.family)).unwrap();
    let theirs = r["lora"]["final_factors"].as_object().unwrap();
    assert_eq!(ours.len(), theirs.len());
    let mut worst = 0f32;
    for f in &ours {
        let t = &theirs[&f.module];
        for (ours, key) in [(&f.a, "lora_A"), (&f.b, "lora_B")] {
            let (d, ok) = compare(ours, &floats(&t[key]), 1e-5, 1e-4);
            worst = worst.max(d);
            assert!(ok, "{name} {} {key}: max |diff| {d:e}", f.module);
        }
    }
    eprintln!("{name} LoRA final factors: max |diff| {worst:e}");
}

#[test]
fn gpt2_lora_matches_peft_step_for_step() {
    lora_parity("gpt2");
}

#[test]
fn llama_lora_matches_peft_step_for_step() {
    lora_parity("llama");
}

fn full_parity(name: &str) {
    let r = reference(name);
    let run = ReferenceRun::from_json(&r, "full").unwrap();
    assert_eq!(run.config.method, Method::Full);
    let (model, summary) =
        pollster::block_on(replay(&base(name), &Backend::cpu(), &run)).expect("full run");
    check_steps(&format!("{name} full"), &summary, &r["full"]);
    let tensors = pollster::block_on(merged_tensors(&model)).unwrap();
    let by_name: BTreeMap<&str, &Vec<f32>> =
        tensors.iter().map(|(n, _, d)| (n.as_str(), d)).collect();
    let mut worst = 0f32;
    for (tensor, values) in r["full"]["final_tensors"].as_object().unwrap() {
        let (d, ok) = compare(by_name[tensor.as_str()], &floats(values), 1e-5, 1e-4);
        worst = worst.max(d);
        assert!(ok, "{name} {tensor}: max |diff| {d:e}");
    }
    let mut worst_sum = 0f32;
    for (tensor, sums) in r["full"]["final_sums"].as_object().unwrap() {
        let Some(ours) = by_name.get(tensor.as_str()) else {
            // GPT-2's tied lm_head is the embedding, exported once.
            assert_eq!(tensor, "lm_head.weight", "{name}: {tensor} not exported");
            continue;
        };
        let abs: f32 = ours.iter().map(|v| v.abs()).sum();
        let expected = sums["abs_sum"].as_f64().unwrap() as f32;
        worst_sum = worst_sum.max(rel(abs, expected));
    }
    eprintln!("{name} full: final weights max |diff| {worst:e}, per-tensor abs-sum max rel diff {worst_sum:e}");
    assert!(worst_sum < 1e-4);
}

#[test]
fn gpt2_full_finetuning_matches_pytorch() {
    full_parity("gpt2");
}

#[test]
fn llama_full_finetuning_matches_pytorch() {
    full_parity("llama");
}

#[test]
fn eval_loss_is_the_mean_over_counted_tokens() {
    let r = reference("llama");
    let backend = Backend::cpu();
    let family = load("llama", &backend);
    let e = pollster::block_on(evaluate_loss(&family, &batches(&r))).unwrap();
    // Before training, the first step's loss is the mean over both micro-batches' tokens.
    let first = floats(&r["full"]["losses"])[0];
    assert!(rel(e.loss, first) < 1e-5, "{} vs {first}", e.loss);
    assert!((e.perplexity - e.loss.exp()).abs() < 1e-3);
    let counted: usize = batches(&r).iter().map(TokenBatch::counted).sum();
    assert_eq!(e.tokens, counted);
}

#[test]
fn lora_leaves_the_base_weights_bit_for_bit() {
    let backend = Backend::cpu();
    let before = pollster::block_on(parameters(&load("gpt2", &backend))).unwrap();
    let (model, _, _) = lora_run("gpt2");
    let after = pollster::block_on(parameters(&model.family)).unwrap();
    let bases: Vec<_> = after
        .iter()
        .filter(|(p, _, _)| !p.contains(".lora."))
        .collect();
    assert_eq!(bases.len(), before.len());
    for ((p0, s0, d0), (p1, s1, d1)) in before.iter().zip(bases) {
        assert_eq!((p0, s0), (p1, s1));
        assert!(
            d0.iter().zip(d1).all(|(a, b)| a.to_bits() == b.to_bits()),
            "base weight {p0} changed under LoRA"
        );
    }
    let (trainable, total) = model.parameter_counts();
    // 2 blocks × c_attn (32 → 96) at r = 4: A 4×32 + B 96×4.
    assert_eq!(trainable, 2 * (4 * 32 + 96 * 4));
    assert!(total > trainable);
}

fn logits(family: &Family, ids: &[i64]) -> Vec<f32> {
    let device = Device::flex().autodiff();
    let tokens = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(ids.to_vec(), [1, ids.len()]),
        &device,
    );
    family
        .forward(tokens, None::<&mut KvCache>)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

#[test]
fn merged_forward_equals_unmerged_and_export_round_trips() {
    for name in ["gpt2", "llama"] {
        let (model, _, _) = lora_run(name);
        let ids: Vec<i64> = (0..20).map(|i| (i * 37 + 11) % 100).collect();
        let unmerged = logits(&model.family, &ids);

        let files = pollster::block_on(export_merged(&model, &base_config(name))).unwrap();
        let merged = model.merged();
        let merged_logits = logits(&merged, &ids);
        let (d, ok) = compare(&merged_logits, &unmerged, 1e-5, 1e-5);
        eprintln!("{name}: merged vs unmerged logits max |diff| {d:e}");
        assert!(ok);

        // The exported merged model loads through the ordinary loader and gives the same logits.
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["model.safetensors", "config.json"]);
        let mut mf = ModelFiles::new();
        for (n, bytes) in files {
            mf.insert(n, bytes);
        }
        let reloaded = LoadedModel::load(mf, &Device::flex()).expect("exported model loads");
        let ids_u32: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        let reloaded_logits: Vec<f32> = pollster::block_on(reloaded.logits(&ids_u32))
            .unwrap()
            .concat();
        // Same weights bit for bit; the trained model runs on the autodiff device, whose
        // kernels may round differently from the plain CPU device's by an ulp.
        let (d, ok) = compare(&reloaded_logits, &merged_logits, 1e-6, 1e-6);
        eprintln!("{name}: reloaded export vs trained logits max |diff| {d:e}");
        assert!(ok, "{name}: reloaded logits differ by {d:e}");
    }
}

#[test]
fn peft_adapter_has_peft_names_and_shapes() {
    for (name, modules, shapes) in [
        (
            "gpt2",
            vec!["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"],
            ([4, 32], [96, 4]),
        ),
        (
            "llama",
            vec![
                "model.layers.0.self_attn.q_proj",
                "model.layers.0.self_attn.v_proj",
                "model.layers.1.self_attn.q_proj",
                "model.layers.1.self_attn.v_proj",
            ],
            ([4, 32], [32, 4]),
        ),
    ] {
        let (model, _, r) = lora_run(name);
        let files = pollster::block_on(export_adapter(&model, "tiny")).unwrap();
        let (weights, config) = (&files[0], &files[1]);
        assert_eq!(weights.0, "adapter_model.safetensors");
        assert_eq!(config.0, "adapter_config.json");
        let st = SafeTensorsFile::parse("adapter_model.safetensors", weights.1.clone()).unwrap();
        let finals = r["lora"]["final_factors"].as_object().unwrap();
        for m in &modules {
            let (a, a_shape) = st
                .read_f32(&format!("base_model.model.{m}.lora_A.weight"))
                .expect("lora_A");
            let (b, b_shape) = st
                .read_f32(&format!("base_model.model.{m}.lora_B.weight"))
                .expect("lora_B");
            let (sa, sb) = if name == "llama" && m.ends_with("v_proj") {
                ([4, 32], [16, 4])
            } else {
                shapes
            };
            assert_eq!((a_shape.as_slice(), b_shape.as_slice()), (&sa[..], &sb[..]));
            // Same values as PEFT's own factors after the run (same layout).
            assert!(compare(&a, &floats(&finals[*m]["lora_A"]), 1e-4, 1e-3).1);
            assert!(compare(&b, &floats(&finals[*m]["lora_B"]), 1e-4, 1e-3).1);
        }
        let cfg: Value = serde_json::from_slice(&config.1).unwrap();
        assert_eq!(cfg["peft_type"], "LORA");
        assert_eq!(cfg["task_type"], "CAUSAL_LM");
        assert_eq!(cfg["r"], 4);
        assert_eq!(cfg["lora_alpha"], 8.0);
        assert_eq!(cfg["base_model_name_or_path"], "tiny");
        assert_eq!(cfg["target_modules"], r["lora"]["config"]["lora_targets"]);
    }
}

fn nan_config(steps: usize) -> FinetuneConfig {
    FinetuneConfig::from_json(&format!(
        r#"{{"method": "full", "lr": 1e30, "schedule": "constant", "steps": {steps}, "max_grad_norm": 0, "shuffle": false}}"#
    ))
    .unwrap()
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_weights() {
    let r = reference("gpt2");
    let backend = Backend::cpu();
    let train = batches(&r);
    // A huge learning rate: step 1 is finite but throws the weights so far that step 2's
    // loss is not.
    let mut model = TrainableModel::prepare(load("gpt2", &backend), &nan_config(4)).unwrap();
    let mut seen = 0;
    let err = pollster::block_on(finetune(
        &mut model,
        &backend,
        &train,
        &[],
        &nan_config(4),
        RunOptions::default().on_step(|p| {
            seen = p.step;
            true
        }),
    ))
    .unwrap_err();
    assert_eq!(err.code, Code::NonFiniteLoss);
    assert_eq!(err.details["step"], seen + 1, "{err}");
    assert!(err.message.contains(&format!("step {}", seen + 1)));
    // The model in hand is the one after the last good step: the same as a run stopped there.
    let mut reference_model =
        TrainableModel::prepare(load("gpt2", &backend), &nan_config(seen)).unwrap();
    pollster::block_on(finetune(
        &mut reference_model,
        &backend,
        &train,
        &[],
        &nan_config(seen),
        RunOptions::default(),
    ))
    .unwrap();
    let ours = pollster::block_on(parameters(&model.family)).unwrap();
    let theirs = pollster::block_on(parameters(&reference_model.family)).unwrap();
    for ((p, _, a), (_, _, b)) in ours.iter().zip(&theirs) {
        assert!(
            a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{p} differs from the last good weights"
        );
    }
}

#[test]
fn progress_can_cancel_and_reports_each_step() {
    let r = reference("llama");
    let backend = Backend::cpu();
    let mut cfg = config(&r, "lora");
    cfg.steps = Some(50);
    let eval = batches(&r);
    let mut model = TrainableModel::prepare(load("llama", &backend), &cfg).unwrap();
    let mut steps = Vec::new();
    let summary = pollster::block_on(finetune(
        &mut model,
        &backend,
        &batches(&r),
        &eval,
        &cfg,
        RunOptions::default().on_step(|p| {
            steps.push(p.step);
            assert_eq!(p.total_steps, 50);
            assert!(p.loss.is_finite() && p.grad_norm.is_finite());
            p.step < 3
        }),
    ))
    .unwrap();
    assert_eq!(steps, [1, 2, 3]);
    assert!(summary.cancelled);
    assert_eq!(summary.steps, 3);
    assert_eq!(summary.losses.len(), 3);
    // Eval before training only (no eval_every, and the run did not reach its end).
    assert_eq!(summary.eval.len(), 1);
    assert_eq!(summary.eval[0].step, 0);
}

#[test]
fn invalid_configs_are_refused_with_a_code() {
    for bad in [
        r#"{"lora_r": 0}"#,
        r#"{"lr": -1}"#,
        r#"{"grad_accum": 0}"#,
        r#"{"steps": 3, "epochs": 1}"#,
        r#"{"lora_dropout": 1.0}"#,
        r#"{"adam_beta2": 1.0}"#,
        r#"{"learning_rate": 0.1}"#,
        r#"{"schedule": "exponential"}"#,
    ] {
        let err = FinetuneConfig::from_json(bad).unwrap_err();
        assert_eq!(err.code, Code::ConfigInvalid, "{bad}: {err}");
    }
    let backend = Backend::cpu();
    let cfg = FinetuneConfig::from_json(r#"{"lora_targets": ["wte"]}"#).unwrap();
    let err = TrainableModel::prepare(load("gpt2", &backend), &cfg).unwrap_err();
    assert_eq!(err.code, Code::ConfigInvalid, "{err}");
    let cfg =
        FinetuneConfig::from_json(r#"{"lora_targets": ["all-linear"], "lora_r": 2}"#).unwrap();
    let model = TrainableModel::prepare(load("llama", &backend), &cfg).unwrap();
    assert_eq!(model.lora_modules.len(), 2 * 7);
}

#[test]
fn full_finetuning_can_freeze_embeddings_and_layers() {
    let r = reference("llama");
    let backend = Backend::cpu();
    let mut cfg = config(&r, "full");
    cfg.freeze_embeddings = true;
    cfg.freeze_layers = 1;
    cfg.steps = Some(2);
    cfg.warmup = 0;
    let before = pollster::block_on(parameters(&load("llama", &backend))).unwrap();
    let mut model = TrainableModel::prepare(load("llama", &backend), &cfg).unwrap();
    pollster::block_on(finetune(
        &mut model,
        &backend,
        &batches(&r),
        &[],
        &cfg,
        RunOptions::default(),
    ))
    .unwrap();
    let after = pollster::block_on(parameters(&model.family)).unwrap();
    for ((p, _, a), (_, _, b)) in before.iter().zip(&after) {
        let same = a == b;
        let frozen = p == "embed_tokens" || p.starts_with("blocks.0.");
        assert_eq!(same, frozen, "{p}: frozen={frozen} but unchanged={same}");
    }
}

/// The CLI's entry point end to end; it also leaves the exports and webtune's logits in
/// `target/tmp/finetune_exports/<model>/` for tools/reference/check_finetune_exports.py, which
/// loads them in transformers / PEFT.
#[test]
fn train_and_eval_entry_points_export_loadable_files() {
    use webtune::train::run::{eval, train};
    for name in ["gpt2", "llama"] {
        let r = reference(name);
        let backend = Backend::cpu();
        let mut cfg = config(&r, "lora");
        cfg.steps = Some(3);
        let data = batches(&r);
        let out = pollster::block_on(train(
            files(name),
            &backend,
            &data,
            &data,
            &cfg,
            &format!("tests/fixtures/tiny_random/{name}"),
            RunOptions::default(),
        ))
        .unwrap();
        let (before, after) = (out.before.unwrap(), out.after.unwrap());
        assert!(after.loss < before.loss, "{name}: {before:?} → {after:?}");
        let names: Vec<&str> = out.files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "adapter/adapter_model.safetensors",
                "adapter/adapter_config.json",
                "merged/model.safetensors",
                "merged/config.json",
                "merged/generation_config.json"
            ]
        );
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("finetune_exports")
            .join(name);
        for (n, bytes) in &out.files {
            let path = dir.join(n);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        let ids: Vec<i64> = (0..20).map(|i| (i * 37 + 11) % 100).collect();
        let logits = logits(&out.model, &ids);
        let json = serde_json::json!({ "input_ids": ids, "logits": logits });
        std::fs::write(dir.join("webtune_logits.json"), json.to_string()).unwrap();

        // eval() on the exported merged model gives the trained model's eval loss.
        let mut merged = ModelFiles::new();
        for (n, bytes) in out.files {
            if let Some(n) = n.strip_prefix("merged/") {
                merged.insert(n, bytes);
            }
        }
        let e = pollster::block_on(eval(merged, &backend, &data)).unwrap();
        assert!(rel(e.loss, after.loss) < 1e-6, "{e:?} vs {after:?}");
    }
}

#[test]
fn gradient_checkpointing_changes_nothing_but_memory() {
    // The same reference runs with burn's balanced checkpointing: recomputing activations in
    // the backward pass must give PyTorch's steps just the same.
    for name in ["gpt2", "llama"] {
        let r = reference(name);
        for method in ["lora", "full"] {
            let mut run = ReferenceRun::from_json(&r, method).unwrap();
            run.config.gradient_checkpointing = true;
            let backend = Backend::cpu();
            assert_eq!(
                run.config
                    .training_device(&backend)
                    .gradient_checkpointing_strategy(),
                Some(burn::tensor::GradientCheckpointingStrategy::Balanced)
            );
            let (_, summary) = pollster::block_on(replay(&base(name), &backend, &run))
                .unwrap_or_else(|e| panic!("{name} {method}: {e:?}"));
            check_steps(
                &format!("{name} {method} checkpointed"),
                &summary,
                &r[method],
            );
        }
    }
}
