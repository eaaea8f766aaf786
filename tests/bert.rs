//! BERT encoders: parity with transformers on the tiny fixture (padded batches with attention
//! masks, pooler, mean pooling, a classification head), prefix variants and checkpoints without
//! a pooler, encoders refused by the causal entry points, and the real all-MiniLM-L6-v2 against
//! sentence-transformers.

use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde_json::{json, Value};
use webtune::eval::generate::{generate, GenerateOptions};
use webtune::io::hf::{ModelFiles, Weights};
use webtune::io::safetensors::{write_f32, SafeTensorsFile};
use webtune::models::bert::{Bert, Pooling};
use webtune::models::loaded::{Family, LoadedModel};
use webtune::Code;

mod common;
use common::fixture;

fn tiny_files() -> ModelFiles {
    ModelFiles::from_dir(&fixture("tiny_random/bert")).expect("fixture readable")
}

fn load(files: ModelFiles) -> Result<LoadedModel, webtune::Error> {
    LoadedModel::load(files, &Device::flex())
}

fn reference(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(&format!("reference/{name}"))).expect("reference");
    serde_json::from_str(&text).expect("reference JSON")
}

fn floats(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(floats).collect(),
        Value::Number(n) => vec![n.as_f64().expect("number") as f32],
        other => panic!("not a number: {other}"),
    }
}

fn ints(v: &Value) -> Vec<i64> {
    match v {
        Value::Array(a) => a.iter().flat_map(ints).collect(),
        Value::Number(n) => vec![n.as_i64().expect("int")],
        other => panic!("not an int: {other}"),
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn bert(model: &LoadedModel) -> &Bert {
    match &model.family {
        Family::Bert(b) => b,
        _ => panic!("not a BERT model"),
    }
}

fn int2(data: Vec<i64>, b: usize, t: usize) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(data, [b, t]), &Device::flex())
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32")
}

/// The reference batch: (ids, token types, mask) as `[B, T]` tensors.
fn batch(r: &Value) -> (Tensor<2, Int>, Tensor<2, Int>, Tensor<2, Int>, usize, usize) {
    let b = r["input_ids"].as_array().unwrap().len();
    let t = r["input_ids"][0].as_array().unwrap().len();
    (
        int2(ints(&r["input_ids"]), b, t),
        int2(ints(&r["token_type_ids"]), b, t),
        int2(ints(&r["attention_mask"]), b, t),
        b,
        t,
    )
}

#[test]
fn info_reports_an_encoder() {
    let model = load(tiny_files()).expect("tiny bert loads");
    let i = &model.info;
    assert_eq!(i.architecture, "bert");
    assert_eq!(i.kind, "encoder");
    assert_eq!(
        (
            i.dims.layers,
            i.dims.hidden_size,
            i.dims.heads,
            i.dims.vocab_size,
            i.dims.max_positions
        ),
        (2, 32, 4, 100, 64)
    );
    let r = reference("tiny_bert.json");
    let stored: usize = r["tensors"]
        .as_object()
        .unwrap()
        .values()
        .map(|s| ints(s).iter().product::<i64>() as usize)
        .sum();
    assert_eq!(i.dims.parameters, stored);
    // The matrices of the linear layers (and pooler): every 2-D tensor but the embeddings.
    let matrices: usize = r["tensors"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, shape)| !name.contains("embeddings") && ints(shape).len() == 2)
        .map(|(_, s)| ints(s).iter().product::<i64>() as usize)
        .sum();
    assert_eq!(i.dims.matmul_weights, matrices);
    assert_eq!(i.dims.attention_width, 32);
    assert!(i.labels.is_none());
}

#[test]
fn padded_batch_matches_transformers() {
    let r = reference("tiny_bert.json");
    let model = load(tiny_files()).unwrap();
    let m = bert(&model);
    let (ids, types, mask, _, _) = batch(&r);
    let hidden = m.forward(ids, Some(types), Some(mask.clone()));
    let d = max_diff(&to_vec(hidden.clone()), &floats(&r["last_hidden_state"]));
    println!("tiny bert: last hidden state max |diff| {d:.2e}");
    assert!(d <= 1e-4, "last hidden state differs by {d}");

    let mean = m
        .pool(hidden.clone(), Some(mask.clone()), Pooling::Mean)
        .unwrap();
    let d = max_diff(&to_vec(mean), &floats(&r["mean_pooled"]));
    println!("tiny bert: mean pooled max |diff| {d:.2e}");
    assert!(d <= 1e-4, "mean pooling differs by {d}");

    let pooled = m.pool(hidden, Some(mask), Pooling::Pooler).unwrap();
    let d = max_diff(&to_vec(pooled), &floats(&r["pooler_output"]));
    println!("tiny bert: pooler output max |diff| {d:.2e}");
    assert!(d <= 1e-4, "pooler output differs by {d}");
}

#[test]
fn padding_does_not_change_the_valid_positions() {
    let r = reference("tiny_bert.json");
    let model = load(tiny_files()).unwrap();
    let m = bert(&model);
    let (ids, types, mask, b, t) = batch(&r);
    let padded = to_vec(m.forward(ids, Some(types), Some(mask)));
    let lens: Vec<usize> = (0..b)
        .map(|i| ints(&r["attention_mask"][i]).iter().sum::<i64>() as usize)
        .collect();
    for (i, &len) in lens.iter().enumerate() {
        let row_ids = ints(&r["input_ids"][i])[..len].to_vec();
        let row_types = ints(&r["token_type_ids"][i])[..len].to_vec();
        let alone = to_vec(m.forward(int2(row_ids, 1, len), Some(int2(row_types, 1, len)), None));
        let ours_padded = &padded[i * t * 32..(i * t + len) * 32];
        let d = max_diff(&alone, ours_padded);
        let d_ref = max_diff(&alone, &floats(&r["unpadded_last_hidden_state"][i]));
        println!("row {i}: padded vs alone {d:.2e}; alone vs transformers {d_ref:.2e}");
        assert!(d <= 1e-5, "row {i}: padding changed valid positions by {d}");
        assert!(
            d_ref <= 1e-4,
            "row {i}: unpadded differs from transformers by {d_ref}"
        );
    }
}

/// The fixture's tensors renamed (`f`) plus extra tensors, with a config.
fn rewritten(
    rename: impl Fn(&str) -> Option<String>,
    extra: &[(&str, Vec<usize>, Vec<f32>)],
    config: Value,
) -> ModelFiles {
    let bytes = std::fs::read(fixture("tiny_random/bert/model.safetensors")).unwrap();
    let file = SafeTensorsFile::parse("model.safetensors", bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for name in file.tensors.keys() {
        if let Some(new) = rename(name) {
            let (data, shape) = file.read_f32(name).unwrap();
            tensors.push((new, shape, data));
        }
    }
    for (n, s, d) in extra {
        tensors.push((n.to_string(), s.clone(), d.clone()));
    }
    let refs: Vec<(&str, &[usize], &[f32])> = tensors
        .iter()
        .map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice()))
        .collect();
    let mut files = ModelFiles::new();
    files.insert("model.safetensors", write_f32(&refs));
    files.insert("config.json", serde_json::to_vec(&config).unwrap());
    files
}

fn tiny_config() -> Value {
    let text = std::fs::read_to_string(fixture("tiny_random/bert/config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn prefixed_checkpoint_without_pooler_with_position_ids_loads() {
    let r = reference("tiny_bert.json");
    // `bert.` prefix, no pooler, and the old `embeddings.position_ids` buffer.
    let files = rewritten(
        |n| (!n.starts_with("pooler.")).then(|| format!("bert.{n}")),
        &[(
            "bert.embeddings.position_ids",
            vec![1, 64],
            (0..64).map(|i| i as f32).collect(),
        )],
        tiny_config(),
    );
    let model = load(files).expect("prefixed checkpoint loads");
    let m = bert(&model);
    assert!(!m.has_pooler());
    let (ids, types, mask, _, _) = batch(&r);
    let hidden = m.forward(ids, Some(types), Some(mask.clone()));
    let d = max_diff(&to_vec(hidden.clone()), &floats(&r["last_hidden_state"]));
    assert!(d <= 1e-4, "prefixed checkpoint differs by {d}");
    let err = m.pool(hidden, Some(mask), Pooling::Pooler).unwrap_err();
    assert_eq!(err.code, Code::ConfigInvalid);
    assert!(err.message.contains("no pooler"), "{err}");
}

#[test]
fn classification_head_matches_transformers() {
    let r = reference("classify_bert.json");
    let head = &r["classifier"];
    let n = head["num_labels"].as_u64().unwrap() as usize;
    let mut config = tiny_config();
    config["architectures"] = json!(["BertForSequenceClassification"]);
    config["id2label"] = r["id2label"].clone();
    config["label2id"] = r["label2id"].clone();
    let files = rewritten(
        |n| Some(format!("bert.{n}")),
        &[
            ("classifier.weight", vec![n, 32], floats(&head["weight"])),
            ("classifier.bias", vec![n], floats(&head["bias"])),
        ],
        config,
    );
    let model = load(files).expect("sequence-classification checkpoint loads");
    assert_eq!(
        model.info.labels.as_deref(),
        Some(&["negative".to_string(), "neutral".into(), "positive".into()][..])
    );
    let m = bert(&model);
    assert_eq!(m.num_labels(), n);
    let (ids, types, mask, _, _) = batch(&reference("tiny_bert.json"));
    let hidden = m.forward(ids, Some(types), Some(mask.clone()));
    let pooled = m.pool(hidden, Some(mask), Pooling::Pooler).unwrap();
    let logits = to_vec(m.classify(pooled).unwrap());
    let d = max_diff(&logits, &floats(&r["logits"]));
    println!("tiny bert: classification logits max |diff| {d:.2e}");
    assert!(d <= 1e-4, "classification logits differ by {d}");
}

#[test]
fn encoders_are_refused_by_causal_entry_points() {
    let model = load(tiny_files()).unwrap();
    let err = pollster::block_on(model.logits(&[2, 15, 3])).unwrap_err();
    assert_eq!(err.code, Code::ConfigInvalid);
    assert!(err.message.contains("encoder"), "{err}");
    let err = pollster::block_on(generate(
        model.causal_lm(),
        &model.device,
        &[2, 15, 3],
        &GenerateOptions::default(),
        |_| true,
    ))
    .unwrap_err();
    assert_eq!(err.code, Code::ConfigInvalid);
    assert!(err.message.contains("encoder"), "{err}");
    let hidden = pollster::block_on(model.encode_hidden(&[2, 15, 3])).unwrap();
    assert_eq!((hidden.len(), hidden[0].len()), (3, 32));
}

fn minilm_dir() -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("www/models/all-minilm-l6-v2/resolve/main");
    assert!(
        dir.join("model.safetensors").is_file() && dir.join("tokenizer.json").is_file(),
        "all-MiniLM-L6-v2 is missing from {}: run `cargo xtask models`",
        dir.display()
    );
    dir
}

#[test]
fn minilm_matches_sentence_transformers() {
    let r = reference("minilm.json");
    let files = ModelFiles::from_dir(&minilm_dir()).expect("MiniLM readable");
    let model = load(files).expect("MiniLM loads");
    assert_eq!(model.info.kind, "encoder");
    let sentences: Vec<&str> = r["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let mut embeddings = Vec::new();
    let (mut worst_hidden, mut worst_st, mut worst_cos) = (0.0f32, 0.0f32, 1.0f32);
    let start = std::time::Instant::now();
    for (i, s) in sentences.iter().enumerate() {
        let ids = model.encode(s).unwrap();
        let expected: Vec<u32> = ints(&r["input_ids"][i]).iter().map(|&x| x as u32).collect();
        assert_eq!(ids, expected, "token ids of {s:?}");
        let hidden = pollster::block_on(model.encode_hidden(&ids)).unwrap();
        if i == 0 {
            let flat: Vec<f32> = hidden.concat();
            worst_hidden = max_diff(&flat, &floats(&r["hidden_first_sentence"]));
        }
        let d = hidden[0].len();
        let mean: Vec<f32> = (0..d)
            .map(|j| hidden.iter().map(|h| h[j]).sum::<f32>() / hidden.len() as f32)
            .collect();
        let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
        let unit: Vec<f32> = mean.iter().map(|x| x / norm).collect();
        let st = floats(&r["st_embeddings"][i]);
        worst_st = worst_st.max(max_diff(&unit, &st));
        worst_cos = worst_cos.min(unit.iter().zip(&st).map(|(a, b)| a * b).sum());
        embeddings.push(unit);
    }
    let per_s = sentences.len() as f64 / start.elapsed().as_secs_f64();
    println!(
        "MiniLM: hidden max |diff| {worst_hidden:.2e}; embedding max |diff| {worst_st:.2e}; \
         min cosine {worst_cos:.6}; {per_s:.1} sentences/s (native CPU, debug-opt build)"
    );
    assert!(
        worst_hidden <= 1e-4,
        "hidden states differ by {worst_hidden}"
    );
    assert!(worst_st <= 1e-4, "embeddings differ by {worst_st}");
    assert!(
        worst_cos >= 0.9999,
        "cosine to sentence-transformers {worst_cos}"
    );
    for (k, pair) in r["pairs"].as_array().unwrap().iter().enumerate() {
        let (a, b) = (
            pair[0].as_u64().unwrap() as usize,
            pair[1].as_u64().unwrap() as usize,
        );
        let cos: f32 = embeddings[a]
            .iter()
            .zip(&embeddings[b])
            .map(|(x, y)| x * y)
            .sum();
        let expected = r["st_cosine"][k].as_f64().unwrap() as f32;
        assert!(
            (cos - expected).abs() <= 1e-4,
            "pair {a}-{b}: cosine {cos} vs {expected}"
        );
    }
}

#[test]
fn weights_know_their_shapes() {
    let mut files = tiny_files();
    let w: Weights = files.take_weights().unwrap();
    assert_eq!(w.shape_of("pooler.dense.weight"), Some(vec![32, 32]));
    assert_eq!(w.shape_of("classifier.weight"), None);
}
