//! Classification fine-tuning of the tiny BERT against PyTorch (transformers + PEFT), replayed
//! step for step from tests/fixtures/reference/classify_bert.json: full fine-tuning and LoRA
//! (query/value, the head trained in full), cancellation, non-finite losses, accuracy, and the
//! `BertForSequenceClassification` export and the LoRA classifier's PEFT adapter (left in
//! target/tmp/classify_export* for tools/reference/check_classify_export.py).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};
use webtune::backend::Backend;
use webtune::data::batching::{ClassBatch, LabelMap};
use webtune::io::hf::ModelFiles;
use webtune::io::safetensors::{write_f32, SafeTensorsFile, StoreDtype};
use webtune::models::bert::Pooling;
use webtune::models::loaded::LoadedModel;
use webtune::train::adapter::{attach_peft_adapter, parse_peft_adapter};
use webtune::train::classify::{
    evaluate_classifier, export_classifier, export_classifier_adapter, predict, train_classifier,
    ClassifierModel, HeadConfig,
};
use webtune::train::finetune::{FinetuneConfig, Method};
use webtune::train::lora::LoraInit;
use webtune::train::schedule::ScheduleKind;
use webtune::train::trainer::RunOptions;
use webtune::Code;

mod common;
use common::fixture;

fn reference() -> Value {
    let text = std::fs::read_to_string(fixture("reference/classify_bert.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(floats).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        other => panic!("not a number: {other}"),
    }
}

fn ints(v: &Value) -> Vec<i64> {
    match v {
        Value::Array(a) => a.iter().flat_map(ints).collect(),
        Value::Number(n) => vec![n.as_i64().unwrap()],
        other => panic!("not an int: {other}"),
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn base_config() -> Value {
    let text = std::fs::read_to_string(fixture("tiny_random/bert/config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The tiny BERT under `bert.` names with the reference's initial classifier.
fn files(r: &Value) -> ModelFiles {
    let bytes = std::fs::read(fixture("tiny_random/bert/model.safetensors")).unwrap();
    let file = SafeTensorsFile::parse("model.safetensors", bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = file
        .tensors
        .keys()
        .map(|n| {
            let (d, s) = file.read_f32(n).unwrap();
            (format!("bert.{n}"), s, d)
        })
        .collect();
    let n = r["classifier"]["num_labels"].as_u64().unwrap() as usize;
    tensors.push((
        "classifier.weight".into(),
        vec![n, 32],
        floats(&r["classifier"]["weight"]),
    ));
    tensors.push((
        "classifier.bias".into(),
        vec![n],
        floats(&r["classifier"]["bias"]),
    ));
    let refs: Vec<(&str, &[usize], &[f32])> = tensors
        .iter()
        .map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice()))
        .collect();
    let mut config = base_config();
    config["id2label"] = r["id2label"].clone();
    let mut f = ModelFiles::new();
    f.insert("model.safetensors", write_f32(&refs));
    f.insert("config.json", serde_json::to_vec(&config).unwrap());
    f
}

fn batches(r: &Value) -> Vec<ClassBatch> {
    r["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let rows = b["input_ids"].as_array().unwrap().len();
            ClassBatch {
                batch_size: rows,
                seq_len: b["input_ids"][0].as_array().unwrap().len(),
                input_ids: ints(&b["input_ids"]),
                attention_mask: ints(&b["attention_mask"]),
                labels: ints(&b["labels"]),
            }
        })
        .collect()
}

fn labels() -> LabelMap {
    // Already in id order (sorted) for this reference.
    LabelMap::from_labels(["negative", "neutral", "positive"])
}

/// The reference's hyperparameters (tools/reference/classify_reference.py): 20 steps of two
/// accumulated batches, 2 warmup steps then linear decay, weight decay on matrices, clipping
/// that is active on most steps.
fn config(method: Method) -> FinetuneConfig {
    FinetuneConfig {
        method,
        lora_r: 4,
        lora_alpha: 8.0,
        lora_targets: vec!["query".into(), "value".into()],
        lr: 5e-3,
        schedule: ScheduleKind::Linear,
        warmup: 2,
        steps: Some(20),
        grad_accum: 2,
        shuffle: false,
        max_grad_norm: 0.17,
        weight_decay: 0.01,
        ..FinetuneConfig::default()
    }
}

const HEAD: HeadConfig = HeadConfig {
    pooling: Pooling::Pooler,
    dropout: 0.0,
};

fn prepare(r: &Value, cfg: &FinetuneConfig, backend: &Backend) -> ClassifierModel {
    let method = cfg.method;
    let loaded = LoadedModel::load(files(r), &cfg.training_device(backend)).unwrap();
    let init = if method == Method::Lora {
        let mut map = BTreeMap::new();
        for (module, a) in r["lora"]["init_lora_A"].as_object().unwrap() {
            map.insert(module.clone(), (floats(a), vec![0.0; 32 * 4]));
        }
        LoraInit::Given(map)
    } else {
        LoraInit::Seeded(0)
    };
    ClassifierModel::prepare_with(loaded.family, labels(), cfg, HEAD, init).unwrap()
}

fn replay(method: Method, key: &str, gradient_checkpointing: bool) {
    let r = reference();
    let backend = Backend::cpu();
    let cfg = FinetuneConfig {
        gradient_checkpointing,
        ..config(method)
    };
    let mut model = prepare(&r, &cfg, &backend);
    let b = batches(&r);
    let summary = pollster::block_on(train_classifier(
        &mut model,
        &backend,
        &b,
        &[],
        &cfg,
        RunOptions::default(),
    ))
    .unwrap();
    let theirs = &r[key];
    if method == Method::Lora {
        assert_eq!(
            summary.trainable_params as i64,
            theirs["trainable_params"].as_i64().unwrap()
        );
    }
    let loss_diff = max_diff(&summary.losses, &floats(&theirs["losses"]));
    let norm_diff = max_diff(&summary.grad_norms, &floats(&theirs["grad_norms"]));
    let logits = pollster::block_on(predict(&model, &b[0])).unwrap().concat();
    let logit_diff = max_diff(&logits, &floats(&theirs["final_logits"]));
    println!(
        "{key}: losses {:?}; max |diff| loss {loss_diff:.2e}, grad norm {norm_diff:.2e}, final logits {logit_diff:.2e}",
        summary.losses
    );
    assert!(loss_diff <= 1e-5, "losses differ by {loss_diff}");
    assert!(norm_diff <= 1e-4, "grad norms differ by {norm_diff}");
    assert!(logit_diff <= 1e-4, "final logits differ by {logit_diff}");
}

#[test]
fn full_finetuning_matches_pytorch() {
    replay(Method::Full, "full", false);
}

#[test]
fn lora_matches_peft() {
    replay(Method::Lora, "lora", false);
}

#[test]
fn gradient_checkpointing_gives_the_same_steps() {
    replay(Method::Full, "full", true);
    replay(Method::Lora, "lora", true);
}

#[test]
fn training_learns_cancels_and_refuses_non_finite_losses() {
    let r = reference();
    let backend = Backend::cpu();
    let b = batches(&r);
    // Learns: 40 steps at a higher rate fit the 5 training examples.
    let mut cfg = config(Method::Full);
    cfg.lr = 5e-3;
    cfg.steps = Some(40);
    cfg.schedule = ScheduleKind::Constant;
    cfg.warmup = 0;
    cfg.max_grad_norm = 1.0;
    let mut model = prepare(&r, &config(Method::Full), &backend);
    let s = pollster::block_on(train_classifier(
        &mut model,
        &backend,
        &b,
        &b,
        &cfg,
        RunOptions::default(),
    ))
    .unwrap();
    let (first, last) = (s.eval[0].eval, s.eval.last().unwrap().eval);
    println!("eval before {first:?}, after {last:?}");
    assert!(last.loss < first.loss * 0.5, "{first:?} → {last:?}");
    assert_eq!(last.accuracy, 1.0);
    assert_eq!(last.examples, 5);

    // Cancel after 2 steps.
    let mut model = prepare(&r, &config(Method::Lora), &backend);
    let s = pollster::block_on(train_classifier(
        &mut model,
        &backend,
        &b,
        &[],
        &config(Method::Lora),
        RunOptions::default().on_step(|p| p.step < 2),
    ))
    .unwrap();
    assert_eq!((s.steps, s.cancelled), (2, true));

    // An absurd learning rate: non-finite loss, reported with its step.
    let mut cfg = config(Method::Full);
    cfg.lr = 1e30;
    cfg.steps = Some(10);
    let mut model = prepare(&r, &config(Method::Full), &backend);
    let err = pollster::block_on(train_classifier(
        &mut model,
        &backend,
        &b,
        &[],
        &cfg,
        RunOptions::default(),
    ))
    .unwrap_err();
    assert_eq!(err.code, Code::NonFiniteLoss, "{err}");
}

/// The classifier's export (f32), whole, under the names of the `merged/` folder.
fn exported_files(model: &ClassifierModel) -> Vec<(String, Vec<u8>)> {
    let export = export_classifier(model, &base_config(), StoreDtype::F32).unwrap();
    pollster::block_on(export.read_all())
        .unwrap()
        .into_iter()
        .map(|(n, b)| (n.trim_start_matches("merged/").to_string(), b))
        .collect()
}

#[test]
fn new_head_mean_pooling_and_export() {
    let r = reference();
    let backend = Backend::cpu();
    // A checkpoint without a head: a new one is drawn for the labels.
    let loaded = LoadedModel::load(
        ModelFiles::from_dir(&fixture("tiny_random/bert")).unwrap(),
        &backend.device,
    )
    .unwrap();
    let head = HeadConfig {
        pooling: Pooling::Mean,
        dropout: 0.1,
    };
    let mut cfg = config(Method::Lora);
    cfg.steps = Some(3);
    let mut model =
        ClassifierModel::prepare(loaded.family, labels(), &cfg, head).expect("new head");
    let b = batches(&r);
    pollster::block_on(train_classifier(
        &mut model,
        &backend,
        &b,
        &[],
        &cfg,
        RunOptions::default(),
    ))
    .unwrap();
    // Mean pooling is not what transformers' head computes: the export ships a modeling file
    // with that pooling and points AutoModelForSequenceClassification at it
    // (tools/reference/check_classify_export.py loads it with trust_remote_code).
    let files = exported_files(&model);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["model.safetensors", "config.json", "modeling_webtune.py"]
    );
    let exported = file_json(&files, "config.json");
    assert_eq!(exported["webtune_pooling"], "mean");
    assert_eq!(
        exported["auto_map"]["AutoModelForSequenceClassification"],
        "modeling_webtune.WebtuneBertForSequenceClassification"
    );
    let py = std::str::from_utf8(&files[2].1).unwrap();
    assert!(py.contains("class WebtuneBertForSequenceClassification("));
    write_export(&model, &files, &b[0], "classify_export_mean");
    // Reloaded here with its pooling, the export predicts the same.
    let again = reload(&files, &backend, head);
    let trained = pollster::block_on(predict(&model, &b[0])).unwrap().concat();
    let d = max_diff(
        &pollster::block_on(predict(&again, &b[0])).unwrap().concat(),
        &trained,
    );
    assert!(
        d <= 1e-5,
        "exported mean-pooled model predicts differently ({d})"
    );

    // The same model as a PEFT adapter of the base (SEQ_CLS: the factors, the head saved whole,
    // and webtune's note of the labels and pooling): attached to the base encoder, un-merged as
    // the page's adapter library does, it predicts what the trained model predicts.
    let base_path = "tests/fixtures/tiny_random/bert";
    let adapter = pollster::block_on(export_classifier_adapter(&model, base_path)).unwrap();
    let names: Vec<&str> = adapter.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "adapter_model.safetensors",
            "adapter_config.json",
            "webtune_classifier.json"
        ]
    );
    let peft_config = file_json(&adapter, "adapter_config.json");
    assert_eq!(peft_config["task_type"], "SEQ_CLS");
    assert_eq!(peft_config["modules_to_save"], json!(["classifier"]));
    let note = file_json(&adapter, "webtune_classifier.json");
    assert_eq!(
        note,
        json!({"labels": ["negative", "neutral", "positive"], "pooling": "mean"})
    );
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tmp/classify_export_mean/adapter");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in &adapter {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let parsed = parse_peft_adapter(
        &adapter[1].1,
        "adapter_model.safetensors",
        adapter[0].1.clone(),
    )
    .unwrap()
    .with_classifier_note(&adapter[2].1)
    .unwrap();
    let base = LoadedModel::load(
        ModelFiles::from_dir(&fixture("tiny_random/bert")).unwrap(),
        &backend.device,
    )
    .unwrap();
    let attached = attach_peft_adapter(&base, &parsed).unwrap();
    assert_eq!(attached.info.labels.as_ref().unwrap(), &labels().labels);
    assert_eq!(attached.info.pooling, Some(Pooling::Mean));
    let as_adapter =
        ClassifierModel::prepare(attached.family, labels(), &config_full(), head).unwrap();
    let d = max_diff(
        &pollster::block_on(predict(&as_adapter, &b[0]))
            .unwrap()
            .concat(),
        &trained,
    );
    assert!(d <= 1e-5, "the attached adapter predicts differently ({d})");

    // Export a pooler-pooled model (what transformers' head computes) and check it reloads here.
    let mut model = prepare(&r, &config(Method::Lora), &backend);
    let mut cfg = config(Method::Lora);
    cfg.lr = 1e-2;
    pollster::block_on(train_classifier(
        &mut model,
        &backend,
        &b,
        &[],
        &cfg,
        RunOptions::default(),
    ))
    .unwrap();
    let files = exported_files(&model);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["model.safetensors", "config.json"],
        "no modeling file"
    );
    let logits = write_export(&model, &files, &b[0], "classify_export");
    let config = file_json(&files, "config.json");
    assert_eq!(config["id2label"]["2"], "positive");
    assert_eq!(config["label2id"]["neutral"], 1);
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    assert_eq!(config["webtune_pooling"], "pooler");
    assert!(config.get("auto_map").is_none(), "{config}");
    let again = reload(&files, &backend, HEAD);
    let e1 = pollster::block_on(evaluate_classifier_of(&again, &b)).unwrap();
    let theirs = pollster::block_on(predict(&again, &b[0])).unwrap();
    let d = max_diff(&theirs.concat(), &logits.concat());
    assert!(d <= 1e-5, "exported model predicts differently ({d})");
    assert!(e1.examples == 5);
}

fn file_json(files: &[(String, Vec<u8>)], name: &str) -> Value {
    let (_, bytes) = files.iter().find(|(n, _)| n == name).unwrap();
    serde_json::from_slice(bytes).unwrap()
}

/// Writes an export and the logits webtune computes for `batch` to target/tmp/`dir`, for
/// tools/reference/check_classify_export.py; returns those logits.
fn write_export(
    model: &ClassifierModel,
    files: &[(String, Vec<u8>)],
    batch: &ClassBatch,
    dir: &str,
) -> Vec<Vec<f32>> {
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/tmp")
        .join(dir);
    std::fs::create_dir_all(&out).unwrap();
    for (name, bytes) in files {
        std::fs::write(out.join(name), bytes).unwrap();
    }
    let logits = pollster::block_on(predict(model, batch)).unwrap();
    let ids: Vec<&[i64]> = batch.input_ids.chunks(batch.seq_len).collect();
    let mask: Vec<&[i64]> = batch.attention_mask.chunks(batch.seq_len).collect();
    std::fs::write(
        out.join("webtune_logits.json"),
        serde_json::to_vec(&json!({
            "batch": { "input_ids": ids, "attention_mask": mask },
            "logits": logits,
        }))
        .unwrap(),
    )
    .unwrap();
    logits
}

/// The export loaded back as webtune loads any checkpoint (the head from the checkpoint).
fn reload(files: &[(String, Vec<u8>)], backend: &Backend, head: HeadConfig) -> ClassifierModel {
    let mut reloaded = ModelFiles::new();
    for (name, bytes) in files {
        reloaded.insert(name.clone(), bytes.clone());
    }
    let again = LoadedModel::load(reloaded, &backend.inference).unwrap();
    assert_eq!(again.info.labels.as_ref().unwrap()[0], "negative");
    ClassifierModel::prepare(again.family, labels(), &config_full(), head).unwrap()
}

fn config_full() -> FinetuneConfig {
    config(Method::Full)
}

async fn evaluate_classifier_of(
    model: &ClassifierModel,
    b: &[ClassBatch],
) -> webtune::Result<webtune::train::classify::ClassEval> {
    match &model.model.family {
        webtune::models::loaded::Family::Bert(bert) => {
            evaluate_classifier(bert, b, model.head.pooling).await
        }
        _ => unreachable!(),
    }
}
