//! Every row of every family's name table (`models::names`) walked through load → export →
//! reload. A checkpoint holding all of a family's tensors, optional ones included (biases, an
//! untied head, BERT's pooler and classifier), is loaded; each tensor must come out of the
//! merged export under its row's Hugging Face name, in the stored shape and with the stored
//! values bit for bit (so a wrong layout or a row pointing at another tensor fails), and the
//! export must reload to the same tensors. The GGUF column is walked from a llama.cpp file.

use std::collections::{BTreeMap, BTreeSet};

use burn::tensor::Device;
use pollster::block_on;
use serde_json::{json, Value};
use webtune::io::hf::ModelFiles;
use webtune::io::safetensors::write_f32;
use webtune::models::loaded::LoadedModel;
use webtune::models::names::{fill, FamilyKind, Table, BERT, GPT2, LLAMA};
use webtune::train::export::{export_merged, merged_tensors};
use webtune::train::finetune::{FinetuneConfig, TrainableModel};

mod common;
use common::fixture;

type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;
type Exported = Vec<(String, Vec<usize>, Vec<f32>)>;

fn fixture_checkpoint(name: &str) -> (Value, Tensors) {
    let mut files = ModelFiles::from_dir(&fixture(&format!("tiny_random/{name}"))).unwrap();
    let config = files.config().unwrap();
    let weights = files.take_weights().unwrap();
    let names: Vec<String> = weights.names().map(String::from).collect();
    let mut tensors = Tensors::new();
    for n in names {
        let shape = weights.shape_of(&n).unwrap();
        let data = weights.read(std::slice::from_ref(&n), &shape).unwrap();
        tensors.insert(n, (shape, data));
    }
    (config, tensors)
}

/// Values unlike any other tensor's, so a row reading the wrong tensor cannot pass.
fn fresh(shape: &[usize], seed: usize) -> (Vec<usize>, Vec<f32>) {
    let n = shape.iter().product::<usize>();
    let data = (0..n)
        .map(|i| ((seed * 7919 + i * 104_729) % 2003) as f32 / 2003.0 - 0.5)
        .collect();
    (shape.to_vec(), data)
}

/// A bias for every `nn.Linear` weight in `modules` (stored `[out, in]`) that has none.
fn add_biases(tensors: &mut Tensors, modules: &[&str]) {
    let weights: Vec<(String, usize)> = tensors
        .iter()
        .filter(|(n, _)| modules.iter().any(|m| n.ends_with(&format!("{m}.weight"))))
        .map(|(n, (shape, _))| (n.clone(), shape[0]))
        .collect();
    for (i, (name, rows)) in weights.into_iter().enumerate() {
        let bias = name.replace(".weight", ".bias");
        tensors.entry(bias).or_insert_with(|| fresh(&[rows], i + 1));
    }
}

fn full() -> FinetuneConfig {
    FinetuneConfig::from_json(r#"{"method": "full"}"#).unwrap()
}

fn files_of(config: &Value, tensors: &Tensors) -> ModelFiles {
    let mut files = ModelFiles::new();
    files.insert("config.json", serde_json::to_vec(config).unwrap());
    let list: Vec<(&str, &[usize], &[f32])> = tensors
        .iter()
        .map(|(n, (s, d))| (n.as_str(), s.as_slice(), d.as_slice()))
        .collect();
    files.insert("model.safetensors", write_f32(&list));
    files
}

/// Load, export merged, reload the export: the reloaded model exports the same tensors.
fn load_export_reload(files: ModelFiles, config: &Value) -> Exported {
    let loaded = LoadedModel::load(files, &Device::flex()).expect("the checkpoint loads");
    let model = TrainableModel::prepare(loaded.family, &full()).unwrap();
    let exported = block_on(merged_tensors(&model)).expect("every parameter has a row");
    let mut again = ModelFiles::new();
    for (name, bytes) in block_on(export_merged(&model, config)).unwrap() {
        again.insert(name, bytes);
    }
    let reloaded = LoadedModel::load(again, &Device::flex()).expect("the export reloads");
    let model = TrainableModel::prepare(reloaded.family, &full()).unwrap();
    let re_exported = block_on(merged_tensors(&model)).unwrap();
    assert!(re_exported == exported, "the reloaded export differs");
    exported
}

/// Walk a safetensors checkpoint; returns the rows its tensors went through.
fn walk(table: &Table, config: &Value, tensors: &Tensors) -> BTreeSet<&'static str> {
    let exported = load_export_reload(files_of(config, tensors), config);
    let mut rows = BTreeSet::new();
    let mut read = BTreeSet::new();
    for (name, shape, data) in &exported {
        let (row, layer) = table
            .by_hf(name)
            .unwrap_or_else(|| panic!("{name} has no row"));
        rows.insert(row.model);
        // Stored under the Hub's name or the bare model's (without the prefix).
        let stored = table
            .hf_names(&fill(row.model, layer))
            .into_iter()
            .find(|n| tensors.contains_key(n))
            .unwrap_or_else(|| panic!("{name} is exported but the checkpoint has no such tensor"));
        let (s, d) = &tensors[&stored];
        assert_eq!(shape, s, "{name}: shape");
        assert!(data == d, "{name}: values differ from {stored}'s");
        read.insert(stored);
    }
    let left: Vec<&String> = tensors.keys().filter(|n| !read.contains(*n)).collect();
    assert!(left.is_empty(), "tensors loaded by no row: {left:?}");
    rows
}

fn assert_every_row(table: &Table, rows: &BTreeSet<&'static str>) {
    let missed: Vec<&str> = table
        .rows
        .iter()
        .map(|r| r.model)
        .filter(|m| !rows.contains(m))
        .collect();
    assert!(
        missed.is_empty(),
        "rows no checkpoint went through: {missed:?}"
    );
}

#[test]
fn every_gpt2_row_loads_exports_and_reloads() {
    let (mut config, mut tensors) = fixture_checkpoint("gpt2");
    let mut rows = walk(&GPT2, &config, &tensors);
    // An untied head.
    config["tie_word_embeddings"] = json!(false);
    let vocab = tensors["transformer.wte.weight"].0.clone();
    tensors.insert("lm_head.weight".into(), fresh(&vocab, 1));
    rows.extend(walk(&GPT2, &config, &tensors));
    assert_every_row(&GPT2, &rows);
}

#[test]
fn every_llama_row_loads_exports_and_reloads() {
    let mut rows = BTreeSet::new();
    for name in ["llama", "qwen2", "mistral_sw"] {
        let (config, tensors) = fixture_checkpoint(name);
        rows.extend(walk(&LLAMA, &config, &tensors));
    }
    // Every bias config.json can ask for, and a tied head.
    let (mut config, mut tensors) = fixture_checkpoint("llama");
    config["attention_bias"] = json!(true);
    config["mlp_bias"] = json!(true);
    add_biases(&mut tensors, FamilyKind::Llama.linear_modules());
    rows.extend(walk(&LLAMA, &config, &tensors));
    config["tie_word_embeddings"] = json!(true);
    tensors.remove("lm_head.weight");
    rows.extend(walk(&LLAMA, &config, &tensors));
    assert_every_row(&LLAMA, &rows);
}

#[test]
fn every_bert_row_loads_exports_and_reloads() {
    // The fixture is a bare BertModel (no `bert.` prefix) with a pooler.
    let (config, mut tensors) = fixture_checkpoint("bert");
    let mut rows = walk(&BERT, &config, &tensors);
    let d = tensors["embeddings.word_embeddings.weight"].0[1];
    tensors.insert("classifier.weight".into(), fresh(&[3, d], 1));
    tensors.insert("classifier.bias".into(), fresh(&[3], 2));
    rows.extend(walk(&BERT, &config, &tensors));
    // Without a pooler, under the task model's prefixed names.
    let prefixed: Tensors = tensors
        .into_iter()
        .filter(|(n, _)| !n.starts_with("pooler."))
        .map(|(n, t)| match n.starts_with("classifier") {
            true => (n, t),
            false => (format!("bert.{n}"), t),
        })
        .collect();
    rows.extend(walk(&BERT, &config, &prefixed));
    assert_every_row(&BERT, &rows);
}

/// The GGUF column: llama.cpp files converted from the tiny Llamas (tools/reference/tiny_gguf.py,
/// Q/K rows permuted) export the safetensors originals' tensors, name for name, value for value.
#[test]
fn every_gguf_tensor_maps_to_a_llama_row() {
    for (file, original) in [
        ("tiny_llama_f32.gguf", "llama"),
        ("tiny_llama3_rope_f32.gguf", "llama3_rope"),
    ] {
        let path = fixture(&format!("tiny_gguf/{file}"));
        let bytes = std::fs::read(&path).unwrap();
        let header = webtune::io::gguf::GgufHeader::parse(file, &bytes).unwrap();
        let mut expected = BTreeSet::new();
        for gguf in header.tensors.keys() {
            match LLAMA.by_gguf(gguf) {
                Some((row, layer)) => {
                    expected.insert(fill(row.hf, layer));
                }
                // Read into config.json (the rope factors), not a parameter.
                None => assert_eq!(gguf, "rope_freqs.weight", "{file}: {gguf} has no row"),
            }
        }
        let mut files = ModelFiles::new();
        files.insert(file, bytes);
        let config = files.config().unwrap();
        let exported = load_export_reload(files, &config);
        let names: BTreeSet<String> = exported.iter().map(|(n, _, _)| n.clone()).collect();
        assert_eq!(names, expected, "{file}: exported names");
        let (_, tensors) = fixture_checkpoint(original);
        for (name, shape, data) in &exported {
            let (s, d) = &tensors[name];
            assert_eq!(shape, s, "{file}: {name}: shape");
            assert!(data == d, "{file}: {name} differs from the original's");
        }
    }
    assert_eq!(FamilyKind::Llama.table().prefix, "model.");
}
