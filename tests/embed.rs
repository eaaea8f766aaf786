//! Sentence-embedding fine-tuning (the third task): sentence-transformers'
//! MultipleNegativesRankingLoss on the tiny BERT, replayed step for step from
//! tests/fixtures/reference/contrastive_bert.json (full fine-tuning, and LoRA against PEFT);
//! the job an encoder runs when given pairs (routing, retrieval before/after, the
//! sentence-transformers export and the fine-tuned model it reloads as), stopping and resuming
//! it, and the refusals (pairs for a causal LM, a batch of one, pooler pooling). The exports are
//! left in target/tmp/embedding_export_{lora,full} for tools/reference/check_embedding_export.py.

use std::cell::RefCell;
use std::collections::BTreeMap;

use burn::tensor::Device;
use serde_json::Value;
use webtune::backend::Backend;
use webtune::data::batching::{PairBatch, TextRows};
use webtune::io::hf::ModelFiles;
use webtune::models::bert::Pooling;
use webtune::models::loaded::{Family, LoadedModel};
use webtune::train::adapter::{attach_peft_adapter, parse_peft_adapter};
use webtune::train::checkpoint::{Checkpoint, Checkpointing};
use webtune::train::control::Control;
use webtune::train::embed::{embeddings, train_embedder, EmbedConfig};
use webtune::train::finetune::{FinetuneConfig, Method, TrainableModel};
use webtune::train::lora::LoraInit;
use webtune::train::schedule::ScheduleKind;
use webtune::train::trainer::RunOptions;
use webtune::train::{run_task, JobResult};
use webtune::{Code, DataSource, DatasetFile, EmbedJobOutput, JobConfig, JobEvent};

mod common;
use common::{fixture, max_diff, pairs_jsonl, sentiment_model};

fn reference() -> Value {
    let text = std::fs::read_to_string(fixture("reference/contrastive_bert.json")).unwrap();
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

fn rows(v: &Value) -> TextRows {
    let ids = v["input_ids"].as_array().unwrap();
    TextRows {
        rows: ids.len(),
        seq_len: ids[0].as_array().unwrap().len(),
        input_ids: ints(&v["input_ids"]),
        attention_mask: ints(&v["attention_mask"]),
    }
}

fn batches(r: &Value) -> Vec<PairBatch> {
    r["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| PairBatch {
            anchors: rows(&b["anchors"]),
            positives: rows(&b["positives"]),
        })
        .collect()
}

/// The reference's hyperparameters (tools/reference/contrastive_reference.py); each run has its
/// own peak lr.
fn config(method: Method, r: &Value) -> FinetuneConfig {
    let hp = &r["hyperparameters"];
    let run = if method == Method::Lora {
        "lora"
    } else {
        "full"
    };
    FinetuneConfig {
        method,
        lora_r: 4,
        lora_alpha: 8.0,
        lora_targets: vec!["query".into(), "value".into()],
        lr: r[run]["lr"].as_f64().unwrap(),
        schedule: ScheduleKind::Linear,
        warmup: hp["warmup"].as_u64().unwrap() as usize,
        steps: Some(hp["steps"].as_u64().unwrap() as usize),
        grad_accum: hp["grad_accum"].as_u64().unwrap() as usize,
        shuffle: false,
        max_grad_norm: hp["max_grad_norm"].as_f64().unwrap(),
        weight_decay: hp["weight_decay"].as_f64().unwrap(),
        ..FinetuneConfig::default()
    }
}

/// The tiny BERT prepared as the reference prepared it (LoRA's A factors as PEFT drew them,
/// B zero).
fn prepare(r: &Value, cfg: &FinetuneConfig, backend: &Backend) -> TrainableModel {
    let files = ModelFiles::from_dir(&fixture("tiny_random/bert")).unwrap();
    let loaded = LoadedModel::load(files, &cfg.training_device(backend)).unwrap();
    let init = if cfg.method == Method::Lora {
        let mut map = BTreeMap::new();
        for (module, a) in r["lora"]["init_lora_A"].as_object().unwrap() {
            // PEFT names a BertModel's modules without the `bert.` of webtune's table.
            map.insert(format!("bert.{module}"), (floats(a), vec![0.0; 32 * 4]));
        }
        LoraInit::Given(map)
    } else {
        LoraInit::Seeded(0)
    };
    TrainableModel::prepare_with(loaded.family, cfg, init).unwrap()
}

fn bert_embeddings(model: &TrainableModel, rows: &TextRows) -> Vec<Vec<f32>> {
    let Family::Bert(bert) = &model.family else {
        panic!("an encoder")
    };
    pollster::block_on(embeddings(bert, rows, Pooling::Mean)).unwrap()
}

#[test]
fn mean_pooled_embeddings_match_sentence_transformers() {
    let r = reference();
    let backend = Backend::cpu();
    let model = prepare(&r, &config(Method::Full, &r), &backend);
    let b = batches(&r);
    let anchors = bert_embeddings(&model, &b[0].anchors);
    let positives = bert_embeddings(&model, &b[0].positives);
    let (da, dp) = (
        max_diff(&anchors, &r["initial_embeddings"]),
        max_diff(&positives, &r["initial_positive_embeddings"]),
    );
    assert!(da <= 1e-5 && dp <= 1e-5, "embeddings differ by {da}, {dp}");
}

fn replay(method: Method, key: &str) {
    let r = reference();
    let backend = Backend::cpu();
    let cfg = config(method, &r);
    let mut model = prepare(&r, &cfg, &backend);
    let b = batches(&r);
    let embedding = EmbedConfig {
        pooling: Pooling::Mean,
        scale: r["scale"].as_f64().unwrap(),
    };
    let summary = pollster::block_on(train_embedder(
        &mut model,
        embedding,
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
    let close = |ours: &[f32], theirs: &Value| {
        let theirs = floats(theirs);
        assert_eq!(ours.len(), theirs.len());
        ours.iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
    };
    let loss_diff = close(&summary.losses, &theirs["losses"]);
    let norm_diff = close(&summary.grad_norms, &theirs["grad_norms"]);
    let final_diff = max_diff(
        &bert_embeddings(&model, &b[0].anchors),
        &theirs["final_embeddings"],
    );
    println!(
        "{key}: losses {:?}; max |diff| loss {loss_diff:.2e}, grad norm {norm_diff:.2e}, final embeddings {final_diff:.2e}",
        summary.losses
    );
    // The loss must have moved, or matching it would prove little.
    assert!(summary.losses.last() < summary.losses.first());
    assert!(loss_diff <= 1e-5, "losses differ by {loss_diff}");
    assert!(norm_diff <= 1e-4, "grad norms differ by {norm_diff}");
    assert!(
        final_diff <= 1e-4,
        "final embeddings differ by {final_diff}"
    );
}

#[test]
fn full_finetuning_matches_sentence_transformers() {
    replay(Method::Full, "full");
}

#[test]
fn lora_matches_peft() {
    replay(Method::Lora, "lora");
}

// ------------------------------------------------------------------------------ the job

fn job_config(method: &str) -> JobConfig {
    JobConfig::from_json(&format!(
        r#"{{"batch_size": 8, "validation_fraction": 0.25, "checkpoint_every": 0,
            "train": {{"method": "{method}", "lora_r": 8, "lora_alpha": 16, "lr": 3e-3,
                      "steps": 12, "warmup": 1, "eval_every": 4, "seed": 3}}}}"#
    ))
    .unwrap()
}

struct Ran {
    out: webtune::Result<JobResult>,
    saved: Vec<Checkpoint>,
    phases: Vec<String>,
}

fn pair_job(config: &JobConfig, data: &str, resume: Option<Checkpoint>, stop_at: usize) -> Ran {
    let (files, base) = sentiment_model();
    let saved = RefCell::new(Vec::new());
    let mut save = |ck: Checkpoint| saved.borrow_mut().push(ck);
    let mut phases = Vec::new();
    let out = pollster::block_on(run_task(
        &files,
        &base,
        &Backend::cpu(),
        DatasetFile {
            name: "pairs.jsonl",
            source: DataSource::Bytes(data.as_bytes()),
        },
        config,
        "tiny-bert",
        Some(Checkpointing {
            resume,
            every: 0,
            save: Box::new(&mut save),
        }),
        |e| match e {
            JobEvent::Step(p) if p.step == stop_at => Control::Stop,
            JobEvent::Step(p) => {
                assert!(p.examples_per_s.is_some(), "pairs per second are reported");
                Control::Continue
            }
            JobEvent::Phase { message, .. } => {
                phases.push(message);
                Control::Continue
            }
        },
    ));
    Ran {
        out,
        saved: saved.into_inner(),
        phases,
    }
}

fn embedding(ran: Ran) -> EmbedJobOutput {
    match ran.out.expect("the job runs") {
        JobResult::Embedding(o) => o,
        _ => panic!("an encoder given pairs tunes embeddings"),
    }
}

#[test]
fn an_encoder_given_pairs_learns_embeddings_and_exports_a_sentence_transformer() {
    for method in ["lora", "full"] {
        let out = embedding(pair_job(&job_config(method), &pairs_jsonl(64), None, 0));
        let (b, a) = (&out.before, &out.after);
        assert_eq!(out.validation_examples, 16, "{method}");
        assert_eq!((b.pairs, a.pairs), (16, 16));
        assert_eq!(out.summary.steps, 12);
        assert!(out.summary.losses.iter().all(|l| l.is_finite()));
        // The pairs share their words: training brings them together and apart from the rest.
        assert!(a.loss < b.loss, "{method}: loss {} → {}", b.loss, a.loss);
        assert!(
            a.positive_cosine - a.negative_cosine > b.positive_cosine - b.negative_cosine,
            "{method}: {b:?} → {a:?}"
        );
        // The loop's last held-out point is the job's "after".
        let last = out.summary.eval.last().unwrap();
        assert_eq!(last.step, 12);
        assert!((last.eval.loss as f64 - a.loss).abs() < 1e-5);
        let c = out.comparison.as_ref().unwrap();
        assert_eq!(c.pairs, 16);
        assert_eq!(c.accuracy_before.value, b.accuracy);
        assert_eq!(
            out.changed_total,
            out.fixed + out.broken + out.changed.iter().filter(|c| c.status == "changed").count()
        );

        // The export is a sentence-transformers folder…
        let names = out.export.names();
        for name in [
            "merged/model.safetensors",
            "merged/config.json",
            "merged/modules.json",
            "merged/1_Pooling/config.json",
            "merged/sentence_bert_config.json",
            "merged/tokenizer.json",
        ] {
            assert!(names.contains(&name.to_string()), "{method}: {names:?}");
        }
        assert_eq!(
            names.iter().any(|n| n.starts_with("adapter/")),
            method == "lora"
        );
        let read = |name: &str| pollster::block_on(out.export.read(name)).unwrap();
        let pooling: Value = serde_json::from_slice(&read("merged/1_Pooling/config.json")).unwrap();
        assert_eq!(pooling["pooling_mode_mean_tokens"], true);
        assert_eq!(pooling["word_embedding_dimension"], 32);
        if method == "lora" {
            let adapter: Value =
                serde_json::from_slice(&read("adapter/adapter_config.json")).unwrap();
            assert_eq!(adapter["task_type"], "FEATURE_EXTRACTION");
        }
        // …whose merged weights, loaded back, embed as the fine-tuned model does.
        let mut files = ModelFiles::new();
        for name in &names {
            if let Some(file) = name.strip_prefix("merged/") {
                files.insert(file, read(name));
            }
        }
        let reloaded = LoadedModel::load(files, &Device::flex()).unwrap();
        assert!(reloaded.info.labels.is_none(), "no head is exported");
        let tuned = out.tuned.as_ref().unwrap();
        let texts = ["the film was good", "dull plot and awful acting"];
        let mut ours = Vec::new();
        for text in texts {
            let (x, y) = (
                pollster::block_on(tuned.embed(text)).unwrap(),
                pollster::block_on(reloaded.embed(text)).unwrap(),
            );
            let d = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(
                d < 1e-4,
                "{method}: the export embeds {text:?} differently by {d}"
            );
            ours.push(x);
        }
        if method == "lora" {
            // The adapter names a bare encoder's modules (PEFT on a BertModel), and webtune
            // attaches it back onto the base: the same embeddings again.
            let weights = read("adapter/adapter_model.safetensors");
            let file =
                webtune::io::safetensors::SafeTensorsFile::parse("a", weights.clone()).unwrap();
            assert!(
                file.tensors
                    .keys()
                    .all(|k| k.starts_with("base_model.model.encoder.")),
                "{:?}",
                file.tensors.keys().collect::<Vec<_>>()
            );
            let adapter = parse_peft_adapter(
                &read("adapter/adapter_config.json"),
                "adapter_model.safetensors",
                weights,
            )
            .unwrap();
            let (_, base) = sentiment_model();
            let attached = attach_peft_adapter(&base, &adapter).unwrap();
            let x = pollster::block_on(attached.embed(texts[0])).unwrap();
            let y = pollster::block_on(tuned.embed(texts[0])).unwrap();
            let d = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(d < 1e-4, "the attached adapter embeds differently by {d}");
        }
        // Left for tools/reference/check_embedding_export.py: the folder and what webtune embeds.
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/tmp")
            .join(format!("embedding_export_{method}"));
        let _ = std::fs::remove_dir_all(&dir);
        for name in &names {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, read(name)).unwrap();
        }
        let embedded = serde_json::json!({ "texts": texts, "embeddings": ours });
        std::fs::write(dir.join("webtune_embeddings.json"), embedded.to_string()).unwrap();
    }
}

/// (That a stopped embedding job continues from its checkpoint as the uninterrupted one is
/// tests/resume.rs's test over every task.) A checkpoint of another setup is refused.
#[test]
fn an_embedding_checkpoint_is_refused_by_another_setup() {
    let config = job_config("lora");
    let data = pairs_jsonl(64);
    let stopped = pair_job(&config, &data, None, 5);
    let ck = Checkpoint::from_bytes(&stopped.saved[0].to_bytes()).unwrap();
    assert!(embedding(stopped).summary.cancelled);
    // Other embedding options, or a classification dataset: refused before training.
    let mut other = config.clone();
    other.embedding.scale = 10.0;
    let e = pair_job(&other, &data, Some(ck.clone()), 0)
        .out
        .err()
        .unwrap();
    assert_eq!(e.code, Code::ConfigInvalid);
    assert!(e.message.contains("scale"), "{}", e.message);
    let reviews = common::sentiment_jsonl(40);
    let e = pair_job(&config, &reviews, Some(ck), 0).out.err().unwrap();
    assert_eq!(e.code, Code::ConfigInvalid);
    assert!(e.message.contains("embedding"), "{}", e.message);
}

#[test]
fn pairs_are_refused_where_they_cannot_train() {
    let data = pairs_jsonl(20);
    // A batch of one pair has no negatives.
    let mut config = job_config("lora");
    config.batch_size = 1;
    let e = pair_job(&config, &data, None, 0).out.err().unwrap();
    assert_eq!(e.code, Code::ConfigInvalid);
    assert!(e.message.contains("batch_size"), "{}", e.message);
    // Pooler pooling is no sentence embedding.
    let mut config = job_config("lora");
    config.embedding.pooling = Pooling::Pooler;
    let e = pair_job(&config, &data, None, 0).out.err().unwrap();
    assert_eq!(e.code, Code::ConfigInvalid);
    // A causal LM is told what pairs are for.
    let files = ModelFiles::from_dir(&fixture("tiny_random/gpt2-vocab")).unwrap();
    let base = LoadedModel::load(files.clone(), &Device::flex()).unwrap();
    let e = pollster::block_on(run_task(
        &files,
        &base,
        &Backend::cpu(),
        DatasetFile {
            name: "pairs.jsonl",
            source: DataSource::Bytes(data.as_bytes()),
        },
        &job_config("lora"),
        "tiny-gpt2",
        None,
        |_| true,
    ))
    .err()
    .unwrap();
    assert_eq!(e.code, Code::DataInvalid);
    assert!(e.message.contains("sentence pairs"), "{}", e.message);
    // Pairs beside a label (NLI) are not guessed to be positives.
    let nli = "{\"sentence1\": \"the film was good\", \"sentence2\": \"the plot was dull\", \"label\": \"contradiction\"}\n".repeat(4);
    let e = pair_job(&job_config("lora"), &nli, None, 0)
        .out
        .err()
        .unwrap();
    assert_eq!(e.code, Code::DataInvalid);
}

#[test]
fn the_phases_say_what_is_scored() {
    let ran = pair_job(&job_config("lora"), &pairs_jsonl(40), None, 0);
    let phases = ran.phases.clone();
    embedding(ran);
    assert!(
        phases.iter().any(|m| m.contains("held-out anchors")),
        "{phases:?}"
    );
}
