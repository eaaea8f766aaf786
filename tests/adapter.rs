//! LoRA adapters in PEFT's format read back onto their base model (`webtune eval|generate
//! --adapter`): adapters saved by PEFT itself (tools/reference/peft_adapters.py) give
//! transformers' logits, and adapters that do not fit, or use what webtune does not implement,
//! are refused with a clear error. A classifier's adapter (PEFT's SEQ_CLS: LoRA on the encoder
//! and the head saved whole) attaches to the bare encoder with its head.

use burn::tensor::{Device, Tensor};
use serde_json::Value;
use webtune::error::Code;
use webtune::io::hf::ModelFiles;
use webtune::models::bert::{int_tensor, Pooling};
use webtune::models::loaded::{Family, LoadedModel};
use webtune::train::adapter::{
    apply_peft_adapter, attach_peft_adapter, parse_peft_adapter, read_peft_adapter,
};

mod common;
use common::{fixture, ids};

fn reference() -> Value {
    let text = std::fs::read_to_string(fixture("reference/peft_adapters.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn base(name: &str) -> LoadedModel {
    let files = ModelFiles::from_dir(&fixture(name)).unwrap();
    LoadedModel::load(files, &Device::flex()).unwrap()
}

fn adapter_files(case: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = fixture(&format!("peft_adapters/{case}"));
    (
        std::fs::read(dir.join("adapter_config.json")).unwrap(),
        std::fs::read(dir.join("adapter_model.safetensors")).unwrap(),
    )
}

#[test]
fn adapters_saved_by_peft_give_transformers_logits() {
    let r = reference();
    let cases = r["cases"].as_object().unwrap();
    assert_eq!(cases.len(), 3);
    for (name, case) in cases {
        let model = base(case["base"].as_str().unwrap());
        let seq = ids(&case["sequence"]);
        let before = pollster::block_on(model.logits(&seq)).unwrap();
        let adapter = read_peft_adapter(&fixture(case["adapter"].as_str().unwrap()))
            .unwrap_or_else(|e| {
                panic!("{name}: {e:?}");
            });
        let model = apply_peft_adapter(model, &adapter).unwrap();
        let after = pollster::block_on(model.logits(&seq)).unwrap();
        let expected = case["logits"].as_array().unwrap();
        assert_eq!(after.len(), expected.len());
        let (mut diff, mut change) = (0f32, 0f32);
        for ((row, want), old) in after.iter().zip(expected).zip(&before) {
            let want = want.as_array().unwrap();
            assert_eq!(row.len(), want.len());
            for ((x, w), o) in row.iter().zip(want).zip(old) {
                diff = diff.max((x - w.as_f64().unwrap() as f32).abs());
                change = change.max((x - o).abs());
            }
        }
        eprintln!(
            "{name}: max |logit diff| vs PEFT {diff:.2e} (the adapter moves logits by {change:.3})"
        );
        assert!(diff <= 2e-5, "{name}: logits differ from PEFT's by {diff}");
        assert!(
            change > 1e-2,
            "{name}: the adapter changed nothing ({change})"
        );
    }
    // rsLoRA: the spec's scale is alpha / sqrt(r), PEFT's use_rslora.
    let (config, weights) = adapter_files("llama_all_linear_rslora");
    let a = parse_peft_adapter(&config, "adapter_model.safetensors", weights).unwrap();
    assert!(a.use_rslora);
    assert!(
        (a.spec.scale() - 6.0 / 2.0).abs() < 1e-12,
        "{}",
        a.spec.scale()
    );
    assert_eq!(
        a.modules.len(),
        14,
        "7 projections × 2 layers: {:?}",
        a.modules
    );
}

/// The page's hot swap: adapters attached un-merged beside one loaded base give PEFT's logits,
/// and attaching one changes neither the base nor another attached adapter.
#[test]
fn adapters_attached_side_by_side_share_one_unchanged_base() {
    let r = reference();
    let cases = &r["cases"];
    let base = base("tiny_random/llama");
    let seq = ids(&cases["llama_q_v"]["sequence"]);
    let logits = |m: &LoadedModel| pollster::block_on(m.logits(&seq)).unwrap();
    let before = logits(&base);
    let max_diff = |got: &[Vec<f32>], want: &Value| -> f32 {
        let want = want.as_array().unwrap();
        assert_eq!(got.len(), want.len());
        let mut diff = 0f32;
        for (row, w) in got.iter().zip(want) {
            for (x, w) in row.iter().zip(w.as_array().unwrap()) {
                diff = diff.max((x - w.as_f64().unwrap() as f32).abs());
            }
        }
        diff
    };
    let read = |case: &str| read_peft_adapter(&fixture(&format!("peft_adapters/{case}"))).unwrap();
    let a = attach_peft_adapter(&base, &read("llama_q_v")).unwrap();
    let b = attach_peft_adapter(&base, &read("llama_all_linear_rslora")).unwrap();
    // b attached after a: a still answers as itself.
    for (model, case) in [(&a, "llama_q_v"), (&b, "llama_all_linear_rslora")] {
        assert_eq!(
            cases[case]["sequence"], cases["llama_q_v"]["sequence"],
            "one sequence serves both cases"
        );
        let diff = max_diff(&logits(model), &cases[case]["logits"]);
        assert!(
            diff <= 2e-5,
            "{case} attached: logits differ from PEFT's by {diff}"
        );
    }
    // The base answers as before: attaching shared its weights without changing them.
    assert_eq!(logits(&base), before);
    // Merging the same adapter gives the attached model's logits.
    let merged = apply_peft_adapter(base, &read("llama_q_v")).unwrap();
    let (m, u) = (logits(&merged), logits(&a));
    let diff = m
        .iter()
        .flatten()
        .zip(u.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(diff <= 1e-5, "merged vs attached: {diff}");
}

fn edited_config(case: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let (config, _) = adapter_files(case);
    let mut v: Value = serde_json::from_slice(&config).unwrap();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn adapters_that_do_not_fit_are_refused_clearly() {
    let (_, weights) = adapter_files("llama_q_v");
    let parse = |config: Vec<u8>, weights: Vec<u8>| {
        parse_peft_adapter(&config, "adapter_model.safetensors", weights).unwrap_err()
    };

    // Options that change the function and that webtune does not implement.
    for (key, value, words) in [
        ("use_dora", serde_json::json!(true), "DoRA"),
        ("lora_bias", serde_json::json!(true), "lora_bias"),
        (
            "rank_pattern",
            serde_json::json!({"q_proj": 8}),
            "rank_pattern",
        ),
        ("modules_to_save", serde_json::json!(["lm_head"]), "lm_head"),
        (
            "layers_to_transform",
            serde_json::json!([0]),
            "layers_to_transform",
        ),
        ("peft_type", serde_json::json!("IA3"), "LoRA adapters only"),
        ("r", serde_json::json!(0), "positive integer"),
    ] {
        let config = edited_config("llama_q_v", |c| c[key] = value.clone());
        let e = parse(config, weights.clone());
        assert_eq!(e.code, Code::ModelConfigInvalid, "{key}: {e:?}");
        assert!(e.message.contains(words), "{key}: {}", e.message);
    }
    let e = parse(b"{not json".to_vec(), weights.clone());
    assert!(e.message.contains("adapter_config.json"), "{}", e.message);

    // A rank that does not match the stored factors.
    let config = edited_config("llama_q_v", |c| c["r"] = 3.into());
    let e = parse(config, weights.clone());
    assert_eq!(e.code, Code::ShapeMismatch, "{e:?}");
    assert!(e.message.contains("rank is 3"), "{}", e.message);

    // Truncated weights.
    let (config, _) = adapter_files("llama_q_v");
    let e = parse(config.clone(), weights[..weights.len() - 10].to_vec());
    assert_eq!(e.code, Code::WeightsTruncated, "{e:?}");

    // A Llama adapter on GPT-2: modules it does not have.
    let a = parse_peft_adapter(&config, "adapter_model.safetensors", weights).unwrap();
    let e = apply_peft_adapter(base("tiny_random/gpt2"), &a).unwrap_err();
    assert_eq!(e.code, Code::ShapeMismatch, "{e:?}");
    assert!(
        e.message.contains("model.layers.0.self_attn.q_proj"),
        "{}",
        e.message
    );
    assert!(e.message.contains("tiny_random/llama"), "{}", e.message);

    // A missing folder names both files.
    let e = read_peft_adapter(&fixture("peft_adapters/nope")).unwrap_err();
    assert_eq!(e.code, Code::ModelMissingFile, "{e:?}");
    assert!(
        e.message.contains("adapter_model.safetensors"),
        "{}",
        e.message
    );

    // A Llama adapter on an encoder: modules it does not have.
    let (config, weights) = adapter_files("llama_q_v");
    let a = parse_peft_adapter(&config, "adapter_model.safetensors", weights).unwrap();
    let e = apply_peft_adapter(base("tiny_random/bert"), &a).unwrap_err();
    assert_eq!(e.code, Code::ShapeMismatch, "{e:?}");
    assert!(e.message.contains("q_proj"), "{}", e.message);

    // A classifier's adapter on a causal LM is refused naming what it is.
    let (config, weights) = adapter_files("bert_seq_cls");
    let a = parse_peft_adapter(&config, "adapter_model.safetensors", weights.clone()).unwrap();
    let e = attach_peft_adapter(&base("tiny_random/llama"), &a).unwrap_err();
    assert_eq!(e.code, Code::ShapeMismatch, "{e:?}");
    assert!(e.message.contains("classifier"), "{}", e.message);
    // A note whose labels are not one per row of the head.
    let e = a
        .with_classifier_note(br#"{"labels": ["a", "b"], "pooling": "mean"}"#)
        .unwrap_err();
    assert_eq!(e.code, Code::ShapeMismatch, "{e:?}");
    assert!(e.message.contains("3 rows"), "{}", e.message);
    // Saved modules other than a classifier's head are still refused.
    let config = edited_config("bert_seq_cls", |c| {
        c["modules_to_save"] = serde_json::json!(["classifier", "pooler"])
    });
    let e = parse(config, weights);
    assert!(e.message.contains("pooler"), "{}", e.message);
}

/// `webtune train` on the tiny GPT-2 with the real vocabulary and capitals.jsonl (batches of 2
/// rows of 32 tokens), plus `extra` flags: (succeeded, its JSON).
fn train_tiny(extra: &[&str]) -> (bool, Value) {
    let model = fixture("tiny_random/gpt2-vocab");
    let data = fixture("data/capitals.jsonl");
    let mut args = vec![
        "train",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--batch-size",
        "2",
        "--seq-len",
        "32",
    ];
    args.extend(extra);
    common::webtune_json(&args)
}

/// `train --init-adapter`: a run continues from an adapter (here the one a first run wrote):
/// with a zero learning rate (the first warmup step) its "before" is the first run's "after",
/// and its export keeps the adapter's rank and modules. An adapter of another base is refused
/// naming the base it was trained on; full fine-tuning of an adapter is refused.
#[test]
fn a_run_continues_from_an_adapter_where_the_run_that_wrote_it_ended() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("continue_adapter");
    let _ = std::fs::remove_dir_all(&dir);
    let first_out = dir.join("first");
    let run = train_tiny;
    let (ok, first) = run(&[
        "--steps",
        "4",
        "--lr",
        "1e-2",
        "--lora-r",
        "4",
        "--out",
        first_out.to_str().unwrap(),
    ]);
    assert!(ok, "{first}");
    let loss = |v: &Value, at: &str| v[at]["loss"].as_f64().unwrap();
    assert!(
        (loss(&first, "before") - loss(&first, "after")).abs() > 1e-3,
        "the first run moved the model: {first}"
    );

    let adapter = first_out.join("adapter");
    let second_out = dir.join("second");
    let (ok, second) = run(&[
        "--steps",
        "1",
        "--warmup",
        "1",
        "--init-adapter",
        adapter.to_str().unwrap(),
        "--out",
        second_out.to_str().unwrap(),
    ]);
    assert!(ok, "{second}");
    assert!(
        (loss(&second, "before") - loss(&first, "after")).abs() < 1e-5,
        "continued from {} but scored {} before training",
        loss(&first, "after"),
        loss(&second, "before")
    );
    assert!((loss(&second, "after") - loss(&first, "after")).abs() < 1e-5);
    let exported: Value = serde_json::from_slice(
        &std::fs::read(second_out.join("adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(exported["r"], 4, "the adapter's rank, not the default 8");
    // The modules the adapter adapted, by name.
    assert_eq!(
        exported["target_modules"],
        serde_json::json!(["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"])
    );

    let other = fixture("peft_adapters/llama_q_v");
    let (ok, refused) = run(&["--steps", "1", "--init-adapter", other.to_str().unwrap()]);
    assert!(!ok);
    assert_eq!(
        refused["error"]["code"], "model.shape_mismatch",
        "{refused}"
    );
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("trained on"), "{message}");

    let (ok, refused) = run(&[
        "--steps",
        "1",
        "--method",
        "full",
        "--init-adapter",
        adapter.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert_eq!(refused["error"]["details"]["field"], "method", "{refused}");
}

/// `train --checkpoint FILE` then `train --init-adapter FILE`: a run continued from its webtune
/// checkpoint (factors, AdamW's moments, its place in the data) gives the losses of the run that
/// never stopped, step for step; training flags beside a checkpoint are refused (its settings
/// are the run's), and so is a file that is not a checkpoint.
#[test]
fn a_run_continued_from_its_checkpoint_gives_the_uninterrupted_losses() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("continue_checkpoint");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = fixture("data/capitals.jsonl");
    let data = data.to_str().unwrap();
    let run = train_tiny;
    let settings = [
        "--steps",
        "8",
        "--lr",
        "1e-2",
        "--lora-r",
        "4",
        "--grad-accum",
        "2",
        "--warmup",
        "2",
        "--schedule",
        "cosine",
    ];
    let (ok, straight) = run(&settings);
    assert!(ok, "{straight}");
    let file = dir.join("run.ckpt");
    let mut with_checkpoints = settings.to_vec();
    with_checkpoints.extend([
        "--checkpoint",
        file.to_str().unwrap(),
        "--checkpoint-every",
        "3",
    ]);
    let (ok, saved) = run(&with_checkpoints);
    assert!(ok, "{saved}");
    // Saving checkpoints changes nothing in the run.
    assert_eq!(saved["train_loss"], straight["train_loss"]);
    // The last one saved is step 6 (none at the end: the run finished).
    let (ok, continued) = run(&["--init-adapter", file.to_str().unwrap()]);
    assert!(ok, "{continued}");
    let losses = |v: &Value| -> Vec<f64> {
        v["train_loss"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let (want, got) = (losses(&straight), losses(&continued));
    assert_eq!(
        got.len(),
        8,
        "the continued run reports the whole run: {continued}"
    );
    for (step, (w, g)) in want.iter().zip(&got).enumerate() {
        assert!(
            (w - g).abs() <= 1e-6 * w.abs().max(1.0),
            "step {}: continued {g}, uninterrupted {w}",
            step + 1
        );
    }
    let after = |v: &Value| v["after"]["loss"].as_f64().unwrap();
    assert!((after(&continued) - after(&straight)).abs() <= 1e-6);

    let (ok, refused) = run(&["--init-adapter", file.to_str().unwrap(), "--lr", "1e-3"]);
    assert!(!ok);
    assert_eq!(
        refused["error"]["details"]["field"], "init_adapter",
        "{refused}"
    );
    let (ok, refused) = run(&["--init-adapter", data]);
    assert!(!ok);
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("is not a webtune checkpoint"), "{message}");
}

/// Class logits of `seq` (one row, no padding) with the encoder's head and pooling.
fn class_logits(model: &LoadedModel, seq: &[u32]) -> Vec<f32> {
    let Family::Bert(bert) = &model.family else {
        panic!("not an encoder");
    };
    let ids: Vec<i64> = seq.iter().map(|&i| i as i64).collect();
    let hidden = bert.forward(int_tensor(&ids, 1, ids.len(), &model.device), None, None);
    let pooling = model.info.pooling.expect("a head's pooling");
    let logits: Tensor<2> = bert
        .classify(bert.pool(hidden, None, pooling).unwrap())
        .unwrap();
    logits
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
}

/// PEFT's SEQ_CLS adapter on the tiny BERT (LoRA on query/value, the head saved whole) attaches
/// to the bare encoder, which has no head of its own, and gives PEFT's class logits, attached
/// or merged; its labels are transformers' defaults without webtune's note, the note's with it.
#[test]
fn a_classifier_adapter_saved_by_peft_gives_its_class_logits() {
    let r = reference();
    let case = &r["classifiers"]["bert_seq_cls"];
    let seq = ids(&case["sequence"]);
    let model = base(case["base"].as_str().unwrap());
    assert!(model.info.labels.is_none(), "the base has no head");
    let dir = fixture(case["adapter"].as_str().unwrap());
    let adapter = read_peft_adapter(&dir).unwrap();
    let head = adapter.head.as_ref().expect("the adapter's head");
    assert_eq!((head.num_labels, head.hidden), (3, 32));

    let attached = attach_peft_adapter(&model, &adapter).unwrap();
    assert_eq!(
        attached.info.labels.as_deref(),
        Some(&["LABEL_0", "LABEL_1", "LABEL_2"].map(String::from)[..])
    );
    assert_eq!(attached.info.pooling, Some(Pooling::Pooler));
    assert!(model.info.labels.is_none(), "the base keeps no head");
    let want: Vec<f32> = case["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let max_diff = |a: &[f32], b: &[f32]| {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    let got = class_logits(&attached, &seq);
    let d = max_diff(&got, &want);
    eprintln!("bert_seq_cls: max |logit diff| vs PEFT {d:.2e}: {got:?}");
    assert!(d <= 2e-5, "class logits differ from PEFT's by {d}");
    let merged = apply_peft_adapter(base("tiny_random/bert"), &adapter).unwrap();
    let d = max_diff(&class_logits(&merged, &seq), &got);
    assert!(d <= 1e-5, "merged differs from attached by {d}");

    // With webtune's note: its labels and pooling.
    let noted = adapter
        .clone()
        .with_classifier_note(br#"{"labels": ["neg", "neu", "pos"], "pooling": "cls"}"#)
        .unwrap();
    let attached = attach_peft_adapter(&model, &noted).unwrap();
    assert_eq!(attached.info.labels.as_ref().unwrap()[2], "pos");
    assert_eq!(attached.info.pooling, Some(Pooling::Cls));
    let cls = class_logits(&attached, &seq);
    assert!(max_diff(&cls, &got) > 1e-4, "cls pooling changed nothing");
}

/// The CLI's LoRA classifier (MiniLM on 40 reviews) exports its adapter beside the merged model;
/// `eval MINILM --adapter DIR/adapter` scores exactly what `eval DIR/merged` scores (the head and
/// its mean pooling come with the adapter), and continuing a classifier's adapter is refused
/// with what to do instead.
#[test]
fn a_classifier_adapter_on_its_base_scores_as_its_merged_export() {
    let Some(weights) = common::default_model("all-minilm-l6-v2/resolve/main/model.safetensors")
    else {
        return;
    };
    let minilm = weights.parent().unwrap().to_str().unwrap().to_string();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("classifier_adapter");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // 20 reviews of each label, so the run and both evaluations take seconds.
    let sample =
        std::fs::read_to_string(fixture("../../www/samples/pang_lee_polarity_200.jsonl")).unwrap();
    let (neg, pos): (Vec<&str>, Vec<&str>) = sample
        .lines()
        .filter(|l| !l.trim().is_empty())
        .partition(|l| l.contains("\"neg\""));
    let lines: Vec<&str> = neg
        .iter()
        .take(20)
        .chain(pos.iter().take(20))
        .copied()
        .collect();
    let data = dir.join("reviews.jsonl");
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let data = data.to_str().unwrap();
    let out = dir.join("out");
    let (ok, trained) = common::webtune_json(&[
        "train",
        &minilm,
        "--data",
        data,
        "--steps",
        "4",
        "--batch-size",
        "8",
        "--seq-len",
        "48",
        "--lr",
        "1e-2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{trained}");
    assert_eq!(trained["task"], "classification", "{trained}");
    let note: Value = serde_json::from_slice(
        &std::fs::read(out.join("adapter/webtune_classifier.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        note,
        serde_json::json!({"labels": ["neg", "pos"], "pooling": "mean"})
    );

    let adapter = out.join("adapter");
    let (ok, with_adapter) = common::webtune_json(&[
        "eval",
        &minilm,
        "--adapter",
        adapter.to_str().unwrap(),
        "--data",
        data,
    ]);
    assert!(ok, "{with_adapter}");
    let (ok, merged) =
        common::webtune_json(&["eval", out.join("merged").to_str().unwrap(), "--data", data]);
    assert!(ok, "{merged}");
    let (a, m) = (&with_adapter["eval"], &merged["eval"]);
    assert_eq!(a["examples"], 40);
    assert_eq!(a["confusion_matrix"], m["confusion_matrix"], "{a} vs {m}");
    let (la, lm) = (a["loss"].as_f64().unwrap(), m["loss"].as_f64().unwrap());
    assert!(
        (la - lm).abs() <= 1e-5,
        "loss with the adapter {la} vs merged {lm}"
    );
    assert_eq!(with_adapter["adapter"]["classifier_labels"], 2);

    let (ok, refused) = common::webtune_json(&[
        "train",
        &minilm,
        "--data",
        data,
        "--init-adapter",
        adapter.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("merged model"),
        "{refused}"
    );
}
