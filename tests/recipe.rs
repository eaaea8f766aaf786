//! `webtune recipe`: the Python project it writes (causal LoRA and full, classification) is
//! checked against a reviewed copy (its `job.json` whole, every other file by size and hash), so
//! a change to what a recipe contains shows up here. That the project reproduces webtune's run is
//! checked with torch outside CI by `tools/reference/check_recipe.py` (losses within 1e-4).
//! `WEBTUNE_BLESS=1` rewrites the copies after a deliberate change.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

mod common;
use common::{fixture, webtune_json as webtune};

/// FNV-1a, 64 bits: enough to notice a changed file (this is no security boundary).
fn fnv1a(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn files_under(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).expect("recipe folder") {
        let entry = entry.expect("entry");
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.path().is_dir() {
            files_under(&entry.path(), &format!("{name}/"), out);
        } else {
            out.insert(name, std::fs::read(entry.path()).expect("file"));
        }
    }
}

/// Writes the recipe for `args` and returns its manifest, the model's absolute path replaced by
/// `<model>` (it differs per checkout).
fn recipe(case: &str, model_dir: &Path, args: &[&str]) -> Value {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("recipes")
        .join(case);
    let _ = std::fs::remove_dir_all(&out);
    let out_str = out.to_str().unwrap();
    let mut all = vec!["recipe", model_dir.to_str().unwrap(), "--out", out_str];
    all.extend(args);
    let (ok, printed) = webtune(&all);
    assert!(ok, "webtune recipe failed: {printed}");
    let mut files = BTreeMap::new();
    files_under(&out, "", &mut files);
    let listed: Vec<&str> = printed["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(
        listed.len(),
        files.len(),
        "the files printed are the files written"
    );
    let absolute = std::fs::canonicalize(model_dir).unwrap();
    let absolute = absolute.to_str().unwrap();
    let mut manifest = serde_json::Map::new();
    let mut job = Value::Null;
    for (name, bytes) in &files {
        let bytes = match name.as_str() {
            "job.json" | "initial_adapter/adapter_config.json" | "README.md" => {
                let text = String::from_utf8(bytes.clone()).unwrap();
                // JSON escapes nothing in a plain path.
                text.replace(absolute, "<model>").into_bytes()
            }
            _ => bytes.clone(),
        };
        if name == "job.json" {
            job = serde_json::from_slice(&bytes).expect("job.json is JSON");
        }
        manifest.insert(
            name.clone(),
            json!({ "bytes": bytes.len(), "fnv1a64": fnv1a(&bytes) }),
        );
    }
    json!({ "job": job, "files": manifest })
}

fn check_golden(case: &str, manifest: &Value) {
    let path = fixture(&format!("recipe/{case}.json"));
    if std::env::var_os("WEBTUNE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut text = serde_json::to_string_pretty(manifest).unwrap();
        text.push('\n');
        std::fs::write(&path, text).unwrap();
    }
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).expect("golden recipe (WEBTUNE_BLESS=1 writes it)"),
    )
    .expect("golden JSON");
    assert_eq!(
        manifest["job"], golden["job"],
        "{case}: job.json differs from tests/fixtures/recipe/{case}.json"
    );
    assert_eq!(
        manifest["files"], golden["files"],
        "{case}: the recipe's files differ from tests/fixtures/recipe/{case}.json (rerun \
         tools/reference/check_recipe.py, then WEBTUNE_BLESS=1)"
    );
}

#[test]
fn lora_on_pairs_writes_the_reviewed_recipe() {
    let manifest = recipe(
        "gpt2-lora-pairs",
        &fixture("tiny_random/gpt2-vocab"),
        &[
            "--data",
            fixture("data/capitals.jsonl").to_str().unwrap(),
            "--steps",
            "5",
            "--batch-size",
            "2",
            "--grad-accum",
            "2",
            "--seq-len",
            "32",
            "--lr",
            "1e-2",
            "--warmup",
            "1",
        ],
    );
    let job = &manifest["job"];
    // 40 pairs, a quarter held out (the automatic share of a small file), 15 batches of 2.
    assert_eq!(job["data"]["train_examples"], 30);
    assert_eq!(job["data"]["validation_examples"], 10);
    assert_eq!(job["train_batches"], 15);
    assert_eq!(job["lora"]["targets"], json!(["c_attn"]));
    assert_eq!(job["tokens"]["eos_id"], 50256);
    assert_eq!(job["data"]["packed"], false);
    for name in [
        "train.py",
        "requirements.txt",
        "README.md",
        "data/train.jsonl",
        "data/validation.jsonl",
        "tokenizer.json",
        "initial_adapter/adapter_model.safetensors",
        "accelerate/fsdp.yaml",
    ] {
        assert!(manifest["files"].get(name).is_some(), "{name} missing");
    }
    check_golden("gpt2-lora-pairs", &manifest);
}

#[test]
fn full_fine_tuning_on_text_packs_rows_and_has_no_adapter() {
    let manifest = recipe(
        "gpt2-full-text",
        &fixture("tiny_random/gpt2-vocab"),
        &[
            "--data",
            fixture("../../www/samples/shakespeare_excerpt.txt")
                .to_str()
                .unwrap(),
            "--method",
            "full",
            "--steps",
            "5",
            "--batch-size",
            "2",
            "--seq-len",
            "32",
            "--schedule",
            "cosine",
            "--weight-decay",
            "0.1",
            "--clip",
            "0.5",
        ],
    );
    let job = &manifest["job"];
    assert_eq!(job["method"], "full");
    assert_eq!(job["data"]["packed"], true);
    // One document in chunks: no end-of-text token between them.
    assert_eq!(job["tokens"]["add_eos"], false);
    assert_eq!(job["lora"], Value::Null);
    assert!(manifest["files"]
        .as_object()
        .unwrap()
        .keys()
        .all(|k| !k.starts_with("initial_adapter/")));
    check_golden("gpt2-full-text", &manifest);
}

#[test]
fn a_classifier_recipe_carries_its_head_and_pooling() {
    let Some(weights) = common::default_model("all-minilm-l6-v2/resolve/main/model.safetensors")
    else {
        return;
    };
    let minilm = weights.parent().unwrap();
    let data = fixture("../../www/samples/pang_lee_polarity_200.jsonl");
    let manifest = recipe(
        "minilm-lora-sentiment",
        minilm,
        &[
            "--data",
            data.to_str().unwrap(),
            "--steps",
            "5",
            "--batch-size",
            "4",
            "--seq-len",
            "64",
        ],
    );
    let job = &manifest["job"];
    assert_eq!(job["task"], "classification");
    assert_eq!(job["data"]["labels"], json!(["neg", "pos"]));
    // MiniLM has no head for these labels: a new one, on mean pooling, dropout from its config.
    assert_eq!(job["head"]["pooling"], "mean");
    assert_eq!(job["head"]["from_checkpoint"], false);
    assert_eq!(job["lora"]["targets"], json!(["query", "value"]));
    for name in [
        "initial_head.safetensors",
        "modeling_webtune.py",
        "initial_adapter/adapter_config.json",
    ] {
        assert!(manifest["files"].get(name).is_some(), "{name} missing");
    }
    check_golden("minilm-lora-sentiment", &manifest);
}

/// A QLoRA job's recipe trains the base in f32, and says so; without --out nothing is written.
#[test]
fn a_qlora_job_says_its_base_trains_in_f32_and_no_out_folder_is_refused() {
    let manifest = recipe(
        "gpt2-qlora-pairs",
        &fixture("tiny_random/gpt2-vocab"),
        &[
            "--data",
            fixture("data/capitals.jsonl").to_str().unwrap(),
            "--quantize-base",
            "q8",
        ],
    );
    assert_eq!(manifest["job"]["webtune_base_quant"], "q8");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("recipes/gpt2-qlora-pairs");
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(readme.contains("f32 here"), "{readme}");
    // The same factors' start as without QLoRA: the seeded draw does not read the base.
    let plain = Path::new(env!("CARGO_TARGET_TMPDIR")).join("recipes/gpt2-plain-pairs");
    let _ = std::fs::remove_dir_all(&plain);
    let gpt2 = fixture("tiny_random/gpt2-vocab");
    let data = fixture("data/capitals.jsonl");
    let (ok, _) = webtune(&[
        "recipe",
        gpt2.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        plain.to_str().unwrap(),
    ]);
    assert!(ok);
    let factors = "initial_adapter/adapter_model.safetensors";
    assert_eq!(
        std::fs::read(out.join(factors)).unwrap(),
        std::fs::read(plain.join(factors)).unwrap()
    );

    let (ok, printed) = webtune(&[
        "recipe",
        gpt2.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(printed["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--out"));
}
