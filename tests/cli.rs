//! The native CLI's `--json` output, checked against the transformers reference on the tiny
//! GPT-2 fixture, and its error output for bad input.

use serde_json::Value;

mod common;
// `webtune(args)`: run the CLI with `--json`; (success, parsed stdout).
use common::{fixture, webtune_json as webtune};

fn reference() -> Value {
    let text = std::fs::read_to_string(fixture("reference/tiny_gpt2.json")).expect("reference");
    serde_json::from_str(&text).expect("reference JSON")
}

fn join(ids: &Value) -> String {
    ids.as_array()
        .expect("ids")
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn info_forward_and_generate_print_json_matching_transformers() {
    let model = fixture("tiny_random/gpt2");
    let model = model.to_str().unwrap();
    let reference = reference();

    let (ok, info) = webtune(&["info", model]);
    assert!(ok);
    assert_eq!(info["architecture"], "gpt2");
    // Tied embeddings are counted once, as transformers' `num_parameters()` does.
    let tensors = reference["tensors"].as_object().expect("tensor list");
    let parameters: u64 = tensors
        .iter()
        .filter(|(name, _)| !name.starts_with("lm_head"))
        .map(|(_, shape)| {
            shape
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .product::<u64>()
        })
        .sum();
    assert_eq!(info["parameters"], parameters);
    assert_eq!(info["vocab_size"], reference["config"]["vocab_size"]);
    assert_eq!(info["layers"], reference["config"]["num_hidden_layers"]);

    let case = &reference["cases"][1];
    let (ok, forward) = webtune(&["forward", model, "--ids", &join(&case["input_ids"])]);
    assert!(ok);
    assert_eq!(forward["input_ids"], case["input_ids"]);
    let expected = case["logits"].as_array().expect("logits rows");
    let expected_last = expected
        .last()
        .expect("a position")
        .as_array()
        .expect("row");
    let got = forward["logits_last"].as_array().expect("logits_last");
    assert_eq!(got.len(), expected_last.len());
    let max_diff = got
        .iter()
        .zip(expected_last)
        .map(|(a, b)| (a.as_f64().unwrap() - b.as_f64().unwrap()).abs())
        .fold(0.0, f64::max);
    assert!(
        max_diff <= 1e-4,
        "last-position logits differ by {max_diff}"
    );

    let generation = &reference["generation"];
    let n = generation["generated_ids"]
        .as_array()
        .unwrap()
        .len()
        .to_string();
    let (ok, out) = webtune(&[
        "generate",
        model,
        "--ids",
        &join(&generation["prompt_ids"]),
        "--greedy",
        "--ignore-eos",
        "--max-new-tokens",
        &n,
    ]);
    assert!(ok);
    assert_eq!(out["generated_ids"], generation["generated_ids"]);
}

#[test]
fn errors_are_json_with_a_code_and_a_failing_exit_status() {
    let (ok, out) = webtune(&["info", "/definitely/not/a/model"]);
    assert!(!ok);
    assert_eq!(out["error"]["code"], "model.missing_file");

    let model = fixture("tiny_random/gpt2");
    let (ok, out) = webtune(&["forward", model.to_str().unwrap(), "--ids", "1,2,100000"]);
    assert!(!ok);
    assert_eq!(out["error"]["code"], "config.invalid");
    assert!(out["error"]["message"].as_str().unwrap().contains("100000"));

    let (ok, out) = webtune(&["toy", "--config", "{\"steps\": 0}"]);
    assert!(!ok);
    assert_eq!(out["error"]["code"], "config.invalid");
}

#[test]
fn a_gguf_file_is_a_model_too() {
    let gguf = fixture("tiny_gguf/tiny_llama_f32.gguf");
    let (ok, info) = webtune(&["info", gguf.to_str().unwrap()]);
    assert!(ok, "{info}");
    assert_eq!(info["architecture"], "llama");
    let (ok, from_dir) = webtune(&["info", fixture("tiny_random/llama").to_str().unwrap()]);
    assert!(ok);
    assert_eq!(info["parameters"], from_dir["parameters"]);
    // The same model in another file is another base for an adapter library.
    let fingerprint = |v: &serde_json::Value| v["fingerprint"].as_str().unwrap().to_owned();
    assert_eq!(fingerprint(&info).len(), 16, "{info}");
    assert_ne!(fingerprint(&info), fingerprint(&from_dir));
    let (_, again) = webtune(&["info", gguf.to_str().unwrap()]);
    assert_eq!(fingerprint(&again), fingerprint(&info));

    let not_a_model = fixture("reference/tiny_gpt2.json");
    let (ok, out) = webtune(&["info", not_a_model.to_str().unwrap()]);
    assert!(!ok);
    assert_eq!(out["error"]["code"], "model.missing_file");
}

#[test]
fn train_writes_a_model_that_eval_and_info_read() {
    let out = std::env::temp_dir().join(format!("webtune-cli-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let model = fixture("tiny_random/gpt2-vocab");
    let data = fixture("data/capitals.jsonl");
    let config = r#"{"batch_size": 8, "samples": 1, "sample_tokens": 4,
                     "data": {"causal": {"seq_len": 32}},
                     "train": {"method": "lora", "lr": 0.01, "steps": 3}}"#;
    let (ok, result) = webtune(&[
        "train",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--config",
        config,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{result}");
    assert_eq!(result["summary"]["steps"], 3);
    assert_eq!(result["report"]["examples"], 40);
    assert!(result["before"]["loss"].as_f64().unwrap() > 0.0);
    // The metrics' shared keys: tokens evaluated and the time it took, before and after.
    for when in ["before", "after"] {
        let e = &result[when];
        assert!(e["tokens"].as_u64().unwrap() > 0, "{when}: {e}");
        assert!(e["seconds"].as_f64().unwrap() > 0.0, "{when}: {e}");
    }
    for file in [
        "merged/model.safetensors",
        "merged/config.json",
        "merged/tokenizer.json",
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
    ] {
        assert!(out.join(file).is_file(), "{file} written");
    }
    let (ok, info) = webtune(&["info", out.join("merged").to_str().unwrap()]);
    assert!(ok);
    assert_eq!(info["architecture"], "gpt2");
    let (ok, eval) = webtune(&[
        "eval",
        out.join("merged").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(ok, "{eval}");
    assert_eq!(eval["examples"], 40);
    assert!(eval["eval"]["perplexity"].as_f64().unwrap() > 1.0);
    assert!(eval["eval"]["seconds"].as_f64().unwrap() > 0.0, "{eval}");
    // Prompt–completion data: greedy answers to the first `samples` (3) prompts are scored.
    let answers = &eval["answers"];
    assert_eq!(answers["examples"], 3, "{eval}");
    for key in ["exact_match", "token_f1"] {
        let v = answers[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{key} {v}");
    }
    // The base with the PEFT adapter merged on the fly scores what the merged export scores,
    // and not what the base alone scores.
    let eval_loss = |args: &[&str]| {
        let (ok, v) = webtune(args);
        assert!(ok, "{v}");
        (v["eval"]["loss"].as_f64().unwrap(), v)
    };
    let merged_loss = eval["eval"]["loss"].as_f64().unwrap();
    let (base_loss, _) = eval_loss(&[
        "eval",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    let adapter_dir = out.join("adapter");
    let (adapted_loss, adapted) = eval_loss(&[
        "eval",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--adapter",
        adapter_dir.to_str().unwrap(),
    ]);
    assert!(
        (adapted_loss - merged_loss).abs() <= 1e-5 * merged_loss,
        "base + adapter {adapted_loss} vs merged {merged_loss}"
    );
    assert!(
        (adapted_loss - base_loss).abs() > 1e-4,
        "the adapter changed nothing: {adapted_loss} vs base {base_loss}"
    );
    let written: Value =
        serde_json::from_slice(&std::fs::read(adapter_dir.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(adapted["adapter"]["r"], written["r"], "{adapted}");
    let (ok, generated) = webtune(&[
        "generate",
        model.to_str().unwrap(),
        "--ids",
        "1,2,3",
        "--greedy",
        "--max-new-tokens",
        "4",
        "--adapter",
        adapter_dir.to_str().unwrap(),
    ]);
    assert!(ok, "{generated}");
    // A folder without an adapter is a clear error.
    let (ok, err) = webtune(&[
        "eval",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--adapter",
        out.join("merged").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert_eq!(err["error"]["code"], "model.missing_file", "{err}");
    let _ = std::fs::remove_dir_all(&out);

    let (ok, err) = webtune(&[
        "train",
        model.to_str().unwrap(),
        "--data",
        "/no/such/file.jsonl",
    ]);
    assert!(!ok);
    assert_eq!(err["error"]["code"], "data.invalid");
}

#[test]
fn data_reports_a_file_and_a_validation_file_without_training() {
    let dir = std::env::temp_dir().join(format!("webtune-cli-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let all = std::fs::read_to_string(fixture("data/capitals.jsonl")).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    // Line 2 of the training file is broken; its last line is also in the validation file.
    let mut train: Vec<&str> = lines[..31].to_vec();
    train.insert(1, "{\"prompt\": \"broken");
    std::fs::write(dir.join("train.jsonl"), train.join("\n") + "\n").unwrap();
    std::fs::write(dir.join("valid.jsonl"), lines[30..].join("\n") + "\n").unwrap();
    let model = fixture("tiny_random/gpt2-vocab");
    let (ok, out) = webtune(&[
        "data",
        model.to_str().unwrap(),
        "--data",
        dir.join("train.jsonl").to_str().unwrap(),
        "--validation",
        dir.join("valid.jsonl").to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert_eq!(out["task"], "causal");
    assert_eq!(out["report"]["skipped"], 1);
    assert_eq!(out["report"]["issues"][0]["line"], 2);
    assert_eq!(out["report"]["issues"][0]["reason"], "malformed_json");
    assert_eq!(out["validation_report"]["examples"], 10);
    assert_eq!(out["overlap_removed"], 1);
    assert_eq!(out["train_examples"], 30);
    assert_eq!(out["validation_examples"], 10);
    assert!(out["mb_per_s"].as_f64().unwrap() > 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn train_flags_override_the_config_and_the_task_is_checked() {
    let dir = std::env::temp_dir().join(format!("webtune-cli-flags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let all = std::fs::read_to_string(fixture("data/capitals.jsonl")).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    std::fs::write(dir.join("train.jsonl"), lines[..32].join("\n") + "\n").unwrap();
    std::fs::write(dir.join("valid.jsonl"), lines[32..].join("\n") + "\n").unwrap();
    let model = fixture("tiny_random/gpt2-vocab");
    let train = dir.join("train.jsonl");
    let valid = dir.join("valid.jsonl");
    let out = dir.join("out");
    let (ok, result) = webtune(&[
        "train",
        model.to_str().unwrap(),
        "--data",
        train.to_str().unwrap(),
        "--val-data",
        valid.to_str().unwrap(),
        "--task",
        "causal-lm",
        "--config",
        r#"{"samples": 0, "train": {"epochs": 3}}"#,
        "--steps",
        "2",
        "--lora-r",
        "4",
        "--lora-alpha",
        "8",
        "--lora-targets",
        "c_attn,c_proj",
        "--batch-size",
        "8",
        "--seq-len",
        "32",
        "--schedule",
        "linear",
        "--warmup",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{result}");
    assert_eq!(
        result["summary"]["steps"], 2,
        "--steps replaces the config's epochs"
    );
    assert_eq!(result["validation_examples"], 8);
    assert_eq!(result["train_batches"], 4, "32 pairs in batches of 8");
    let adapter: Value =
        serde_json::from_slice(&std::fs::read(out.join("adapter/adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(adapter["r"], 4);
    assert_eq!(adapter["lora_alpha"], 8.0);
    let mut targets: Vec<&str> = adapter["target_modules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    targets.sort_unstable();
    assert_eq!(targets, ["c_attn", "c_proj"]);
    // A causal model asked to classify: refused, naming what the model does.
    let (ok, err) = webtune(&[
        "train",
        model.to_str().unwrap(),
        "--data",
        train.to_str().unwrap(),
        "--task",
        "classification",
    ]);
    assert!(!ok);
    assert_eq!(err["error"]["code"], "config.invalid");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("causal language model"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn train_json_has_the_headline_numbers_for_both_tasks() {
    // Causal: the tiny GPT-2 on the capitals pairs.
    let out = std::env::temp_dir().join(format!("webtune-cli-headline-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let model = fixture("tiny_random/gpt2-vocab");
    let data = fixture("data/capitals.jsonl");
    let (ok, result) = webtune(&[
        "train",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--steps",
        "3",
        "--batch-size",
        "8",
        "--seq-len",
        "32",
    ]);
    assert!(ok, "{result}");
    assert_eq!(result["steps"], 3);
    assert_eq!(result["train_loss"], result["summary"]["losses"]);
    assert_eq!(result["train_loss"].as_array().unwrap().len(), 3);
    assert!(result["tokens_per_s"].as_f64().unwrap() > 0.0, "{result}");

    // Classification: the tiny BERT with a word-level tokenizer, on labelled reviews. Its new
    // head pools by the mean, so the export carries the class transformers needs for that.
    let dir = out.join("bert");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny_random/bert").join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("tokenizer.json"), common::sentiment_tokenizer()).unwrap();
    let reviews = out.join("reviews.jsonl");
    std::fs::write(&reviews, common::sentiment_jsonl(60)).unwrap();
    let written = out.join("classifier");
    let (ok, result) = webtune(&[
        "train",
        dir.to_str().unwrap(),
        "--data",
        reviews.to_str().unwrap(),
        "--steps",
        "4",
        "--batch-size",
        "8",
        "--out",
        written.to_str().unwrap(),
    ]);
    assert!(ok, "{result}");
    assert_eq!(result["task"], "classification");
    assert_eq!(result["steps"], 4);
    assert_eq!(result["train_loss"], result["summary"]["losses"]);
    assert!(result["tokens_per_s"].as_f64().unwrap() > 0.0, "{result}");
    assert!(result["after"]["accuracy"].is_number(), "{result}");
    assert_eq!(result["pooling"], "mean");
    let config: Value =
        serde_json::from_slice(&std::fs::read(written.join("merged/config.json")).unwrap())
            .unwrap();
    assert_eq!(
        config["auto_map"]["AutoModelForSequenceClassification"],
        "modeling_webtune.WebtuneBertForSequenceClassification"
    );
    assert!(written.join("merged/modeling_webtune.py").is_file());

    // Sentence pairs on the same encoder: its embeddings are tuned (no head), the export is a
    // sentence-transformers folder, and `data` / `eval` read the file as pairs too.
    let pairs = out.join("pairs.jsonl");
    std::fs::write(&pairs, common::pairs_jsonl(48)).unwrap();
    let (ok, report) = webtune(&[
        "data",
        dir.to_str().unwrap(),
        "--data",
        pairs.to_str().unwrap(),
    ]);
    assert!(ok, "{report}");
    assert_eq!(report["task"], "embedding");
    assert_eq!(
        report["report"]["schema"]["schema"]["kind"],
        "sentence_pairs"
    );
    let first = &report["preview"][0];
    assert!(!first["tokens"].as_array().unwrap().is_empty(), "{report}");
    assert!(
        !first["positive"].as_array().unwrap().is_empty(),
        "{report}"
    );
    let written = out.join("embedder");
    let (ok, result) = webtune(&[
        "train",
        dir.to_str().unwrap(),
        "--data",
        pairs.to_str().unwrap(),
        "--task",
        "embedding",
        "--steps",
        "4",
        "--batch-size",
        "8",
        "--out",
        written.to_str().unwrap(),
    ]);
    assert!(ok, "{result}");
    assert_eq!(result["task"], "embedding");
    assert_eq!(result["steps"], 4);
    for key in [
        "accuracy",
        "mrr",
        "positive_cosine",
        "negative_cosine",
        "loss",
    ] {
        assert!(result["after"][key].is_number(), "{key}: {result}");
    }
    let modules: Value =
        serde_json::from_slice(&std::fs::read(written.join("merged/modules.json")).unwrap())
            .unwrap();
    assert_eq!(modules[1]["path"], "1_Pooling");
    assert!(written.join("merged/1_Pooling/config.json").is_file());
    // Pairs are no classification data.
    let (ok, err) = webtune(&[
        "train",
        dir.to_str().unwrap(),
        "--data",
        pairs.to_str().unwrap(),
        "--task",
        "classification",
    ]);
    assert!(!ok);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("embedding job"),
        "{err}"
    );
    let (ok, scored) = webtune(&[
        "eval",
        written.join("merged").to_str().unwrap(),
        "--data",
        pairs.to_str().unwrap(),
    ]);
    assert!(ok, "{scored}");
    assert_eq!(scored["task"], "embedding");
    assert_eq!(scored["eval"]["pairs"], 48);
    let _ = std::fs::remove_dir_all(&out);
}
