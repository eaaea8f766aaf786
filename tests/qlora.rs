//! QLoRA (`train.quantize_base`): LoRA over a base whose linear projection weights stay
//! quantized (8 or 4 bits, a scale per block of 32 values) while only the f32 factors train.
//!
//! Measured on the CPU backend (tiny fixtures, their reference batches), eval loss before
//! training, quantized base vs f32 base: Llama q8 +6.7e-6, q4 +1.07e-3; GPT-2 q8 +8.1e-6,
//! q4 +4.5e-4. A base whose projections are all zeroed instead (a quantization that lost the
//! weights) is off by 1.46e-2 (Llama) and 5.7e-3 (GPT-2). Asserted: q8 within 1e-4 and 1% of
//! the zeroed gap, q4 within 3e-3 and 25% of it. Each quantized weight is also checked value by
//! value against the rounding bound of its block, which a wrong block layout or scale breaks.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::Tensor;
use serde_json::Value;
use webtune::backend::Backend;
use webtune::data::TokenBatch;
use webtune::io::hf::ModelFiles;
use webtune::models::loaded::{Family, LoadedModel};
use webtune::train::causal::{evaluate_loss, finetune, FinetuneSummary};
use webtune::train::finetune::{FinetuneConfig, TrainableModel};
use webtune::train::lora::{lora_factors, parameters};
use webtune::train::replay::ReferenceRun;
use webtune::train::trainer::RunOptions;
use webtune::Code;

mod common;
use common::fixture;

fn reference(name: &str) -> Value {
    let path = fixture(&format!("reference/finetune_{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("reference")).expect("JSON")
}

fn files(name: &str) -> ModelFiles {
    ModelFiles::from_dir(&fixture(&format!("tiny_random/{name}"))).expect("fixture")
}

fn load(name: &str, backend: &Backend) -> Family {
    LoadedModel::load(files(name), &backend.device)
        .expect("tiny model loads")
        .family
}

fn batches(name: &str) -> Vec<TokenBatch> {
    ReferenceRun::from_json(&reference(name), "lora")
        .expect("reference")
        .batches
}

fn config(quant: Option<&str>) -> FinetuneConfig {
    let q = quant.map_or(String::new(), |q| format!(r#", "quantize_base": "{q}""#));
    FinetuneConfig::from_json(&format!(
        r#"{{"method": "lora", "steps": 3, "lora_targets": ["all-linear"], "lr": 1e-2, "shuffle": false{q}}}"#
    ))
    .expect("config")
}

/// Fine-tune `model` on `data`, scoring the same batches.
fn train(
    model: &mut TrainableModel,
    backend: &Backend,
    data: &[TokenBatch],
    cfg: &FinetuneConfig,
) -> FinetuneSummary {
    pollster::block_on(finetune(
        model,
        backend,
        data,
        data,
        cfg,
        RunOptions::default(),
    ))
    .unwrap()
}

fn eval(family: &Family, data: &[TokenBatch]) -> f32 {
    pollster::block_on(evaluate_loss(family, data))
        .unwrap()
        .loss
}

/// Zero every linear projection weight (what a quantization that lost them would leave).
struct ZeroProjections(Vec<String>);

impl ModuleMapper for ZeroProjections {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.0.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.0.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let is_projection = D == 2
            && self.0.first().is_some_and(|p| p == "blocks")
            && self.0.last().is_some_and(|p| p == "weight");
        if is_projection {
            param.map(|w| w.zeros_like())
        } else {
            param
        }
    }
}

fn zeroed(family: Family) -> Family {
    let mut z = ZeroProjections(Vec::new());
    match family {
        Family::Gpt2(m) => Family::Gpt2(m.map(&mut z)),
        Family::Llama(m) => Family::Llama(m.map(&mut z)),
        Family::Bert(m) => Family::Bert(m.map(&mut z)),
    }
}

#[test]
fn quantized_bases_train_only_the_factors_and_score_close_to_the_f32_base() {
    for (name, projections) in [("llama", 14), ("gpt2", 8)] {
        let backend = Backend::cpu();
        let data = batches(name);
        let f32_loss = eval(&load(name, &backend), &data);
        let zero_gap = (eval(&zeroed(load(name, &backend)), &data) - f32_loss).abs();
        let f32_params = pollster::block_on(parameters(&load(name, &backend))).unwrap();
        // `stored`: at most this fraction of the f32 bytes; `slack`: how far past half a step
        // a value may land (the CPU keeps a packed 4-bit block's scale in f16: up to 7 levels
        // times 2⁻¹¹ of a step more).
        for (quant, bound, share, levels, stored, slack) in [
            ("q8", 1e-4, 0.01, 127.0, 1.0 / 3.0, 1.0001),
            ("q4", 3e-3, 0.25, 7.0, 1.0 / 5.0, 1.01),
        ] {
            let cfg = config(Some(quant));
            let mut model = TrainableModel::prepare(load(name, &backend), &cfg).unwrap();
            let report = model.quantized.clone().expect("quantization report");
            assert_eq!(report.tensors, projections, "{name} {quant}");
            assert!(report.kept_f32.is_empty());
            // A byte per value on the CPU at 8 bits plus an f32 scale per 32 (16 for Llama's
            // 16-wide k/v projections) values; half a byte at 4 plus an f16 scale.
            assert!(
                (report.quantized_bytes as f64) < stored * report.f32_bytes as f64,
                "{name} {quant}: {report:?}"
            );

            // The stored (dequantized) bases are the f32 ones to within half a step of their
            // block's largest magnitude; blocks run along the output dimension.
            let before = pollster::block_on(parameters(&model.family)).unwrap();
            let mut checked = 0;
            for (path, shape, q) in &before {
                let Some((_, _, w)) = f32_params.iter().find(|(p, _, _)| p == path) else {
                    assert!(path.contains(".lora."), "{path}");
                    continue;
                };
                let is_projection = path.starts_with("blocks.") && path.ends_with(".weight");
                if !is_projection || shape.len() != 2 {
                    assert_eq!(q, w, "{path} must stay f32");
                    continue;
                }
                let block = if shape[1] % 32 == 0 { 32 } else { 16 };
                for (qb, wb) in q.chunks(block).zip(w.chunks(block)) {
                    let peak = wb.iter().fold(0f32, |m, x| m.max(x.abs()));
                    let half_step = peak / levels / 2.0 * slack + 1e-12;
                    for (a, b) in qb.iter().zip(wb) {
                        assert!((a - b).abs() <= half_step, "{path}: {a} vs {b}");
                    }
                }
                assert_ne!(q, w, "{path} was not quantized");
                checked += 1;
            }
            assert_eq!(checked, projections);

            // The same factors train as over the f32 base.
            let (trainable, _) = model.parameter_counts();
            let f32_model = TrainableModel::prepare(load(name, &backend), &config(None)).unwrap();
            assert_eq!(trainable, f32_model.parameter_counts().0);

            let q_loss = eval(&model.family, &data);
            let gap = (q_loss - f32_loss).abs();
            eprintln!(
                "{name} {quant}: eval loss {q_loss} vs f32 {f32_loss}: gap {gap:e} \
                 (zeroed projections: {zero_gap:e}); {} → {} bytes",
                report.f32_bytes, report.quantized_bytes
            );
            assert!(
                gap < bound && gap < share * zero_gap,
                "{name} {quant}: {gap:e}"
            );

            let summary = train(&mut model, &backend, &data, &cfg);
            assert!(summary.losses.iter().all(|l| l.is_finite()));
            let (first, last) = (summary.eval[0].eval.loss, summary.eval.last().unwrap());
            assert!(last.eval.loss < first, "{name} {quant}: {first} → {last:?}");
            assert_eq!(summary.quantized_base.as_ref(), Some(&report));

            // Only the factors moved: every base is still what quantization made it.
            let after = pollster::block_on(parameters(&model.family)).unwrap();
            for ((p, _, a), (_, _, b)) in before.iter().zip(&after) {
                assert_eq!(a == b, !p.contains(".lora."), "{name} {quant}: {p}");
            }
            let factors = pollster::block_on(lora_factors(&model.family)).unwrap();
            assert_eq!(factors.len(), projections);

            // The merged model is a plain f32 model scoring what the trained one does.
            let trained = eval(&model.family, &data);
            let merged = model.merged();
            let merged_loss = eval(&merged, &data);
            assert!(
                (merged_loss - trained).abs() < 1e-5,
                "{merged_loss} vs {trained}"
            );
        }
    }
}

#[test]
fn train_exports_a_loadable_f32_model_and_an_unchanged_peft_adapter() {
    use webtune::train::run::train;
    let backend = Backend::cpu();
    let data = batches("llama");
    let run = |cfg: &FinetuneConfig| {
        pollster::block_on(train(
            files("llama"),
            &backend,
            &data,
            &data,
            cfg,
            "tiny",
            RunOptions::default(),
        ))
        .unwrap()
    };
    let plain = run(&config(None));
    let out = run(&config(Some("q8")));
    let names = |o: &webtune::train::run::TrainOutput| {
        o.files.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
    };
    assert_eq!(names(&out), names(&plain));
    // The adapter's config is the f32 run's; its tensors have the same names and sizes.
    let file = |o: &webtune::train::run::TrainOutput, n: &str| {
        o.files.iter().find(|(f, _)| f == n).unwrap().1.clone()
    };
    assert_eq!(
        file(&out, "adapter/adapter_config.json"),
        file(&plain, "adapter/adapter_config.json")
    );
    assert_eq!(
        file(&out, "adapter/adapter_model.safetensors").len(),
        file(&plain, "adapter/adapter_model.safetensors").len()
    );
    let merged_bytes = file(&out, "merged/model.safetensors");
    assert_eq!(
        merged_bytes.len(),
        file(&plain, "merged/model.safetensors").len()
    );

    let mut merged = ModelFiles::new();
    for (n, bytes) in out.files {
        if let Some(n) = n.strip_prefix("merged/") {
            merged.insert(n, bytes);
        }
    }
    let reloaded = LoadedModel::load(merged, &backend.inference).expect("merged export loads");
    let after = out.after.unwrap().loss;
    let e = eval(&reloaded.family, &data);
    assert!((e - after).abs() < 1e-5, "{e} vs {after}");
}

#[test]
fn a_quantized_base_is_refused_for_full_finetuning_and_bad_values() {
    let err =
        FinetuneConfig::from_json(r#"{"method": "full", "quantize_base": "q8"}"#).unwrap_err();
    assert_eq!(err.code, Code::ConfigInvalid);
    assert_eq!(err.details["field"], "quantize_base");
    let err = FinetuneConfig::from_json(r#"{"quantize_base": "q3"}"#).unwrap_err();
    assert_eq!(err.code, Code::ConfigInvalid);
    let err = FinetuneConfig::from_json(r#"{"quantize_base": "q4", "quantize_block_size": 0}"#)
        .unwrap_err();
    assert_eq!(err.details["field"], "quantize_block_size");
}

/// A model quantized as it loads (`load_quantized`: no f32 copy of its projections ever exists)
/// trains exactly as one quantized after loading, and the memory plan counts it compact: Llama's
/// `nn.Linear` projections and GPT-2's `Conv1D` ones alike.
#[test]
fn a_model_quantized_as_it_loads_trains_as_one_quantized_after_loading() {
    use webtune::train::memory::{estimate, BatchShape};
    use webtune::train::qlora::{load_quantized, BaseQuant};
    let backend = Backend::cpu();
    let cfg = config(Some("q8"));
    let inference = burn::tensor::Device::flex();
    for (name, at_load) in [("llama", 14), ("gpt2", 8)] {
        let data = batches(name);
        let run = |base: &LoadedModel| {
            let mut model =
                TrainableModel::prepare(base.family.trainable_on(&backend.device), &cfg).unwrap();
            let summary = train(&mut model, &backend, &data, &cfg);
            (summary.losses, model.quantized.unwrap())
        };
        let plain = LoadedModel::load(files(name), &inference).unwrap();
        let (compact, report) = load_quantized(files(name), &inference, BaseQuant::Q8, 32).unwrap();
        assert_eq!(report.tensors, at_load, "{name}");
        assert!(compact.info.compact.is_some(), "{name}");
        let (losses, after_load) = run(&plain);
        let (compact_losses, at_load_report) = run(&compact);
        assert_eq!(losses, compact_losses, "{name}");
        // The job's report counts every quantized projection, whenever it was quantized.
        assert_eq!(after_load, at_load_report, "{name}");
        let shape = BatchShape {
            batch_size: 2,
            seq_len: 16,
        };
        let (a, b) = (
            estimate(&plain.info, &cfg, shape, 0, 0),
            estimate(&compact.info, &cfg, shape, 0, 0),
        );
        // The f32 projections and the quantized copy beside them are gone from the plan.
        assert!(a.weights - b.weights >= report.f32_bytes, "{a:?} {b:?}");
        assert_eq!(a.load - b.load, report.f32_bytes - report.quantized_bytes);
    }
}

/// A base loaded quantized trains only as what it is: full fine-tuning (which would train the
/// quantized projections) and another bit width are refused before any step; LoRA in its own
/// precision, or without naming one, is not.
#[test]
fn a_base_loaded_quantized_refuses_full_finetuning_and_another_precision() {
    use webtune::train::qlora::{check_base_precision, load_quantized, BaseQuant};
    let (compact, _) = load_quantized(
        files("llama"),
        &burn::tensor::Device::flex(),
        BaseQuant::Q8,
        32,
    )
    .unwrap();
    let full = FinetuneConfig::from_json(r#"{"method": "full"}"#).unwrap();
    let err = check_base_precision(&compact.info, &full).unwrap_err();
    assert_eq!(
        (err.code, &err.details["field"]),
        (Code::ConfigInvalid, &"method".into())
    );
    assert!(err.message.contains("8 bits"), "{}", err.message);
    let err = check_base_precision(&compact.info, &config(Some("q4"))).unwrap_err();
    assert_eq!(err.details["field"], "quantize_base");
    for ok in [config(Some("q8")), config(None)] {
        check_base_precision(&compact.info, &ok).unwrap();
    }
    // An f32 base takes any of them.
    let plain = LoadedModel::load(files("llama"), &burn::tensor::Device::flex()).unwrap();
    for any in [full, config(Some("q4")), config(None)] {
        check_base_precision(&plain.info, &any).unwrap();
    }
}
