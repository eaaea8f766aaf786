//! GGUF: dequantisation against the `gguf` Python package, the tiny Llama converted by
//! `tools/reference/tiny_gguf.py` (llama.cpp's Q/K row permutation included) loading to the same
//! model as its safetensors original, the vocabulary rebuilt as a tokenizer, and clear errors for
//! broken files.

use burn::tensor::Device;
use serde_json::Value;
use webtune::eval::generate::{generate, GenerateOptions};
use webtune::io::gguf::GgufFile;
use webtune::io::hf::ModelFiles;
use webtune::models::loaded::LoadedModel;
use webtune::Code;

mod common;
use common::{fixture, max_diff};

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(&format!("tiny_gguf/{name}"))).expect("fixture readable")
}

fn gguf_files(name: &str, data: Vec<u8>) -> ModelFiles {
    let mut files = ModelFiles::new();
    files.insert(name, data);
    files
}

fn load(files: ModelFiles) -> Result<LoadedModel, webtune::Error> {
    LoadedModel::load(files, &Device::flex())
}

fn safetensors_model() -> LoadedModel {
    load(ModelFiles::from_dir(&fixture("tiny_random/llama")).unwrap()).unwrap()
}

fn json(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(path)).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// Largest logit differences of `gguf` over the reference's cases: (vs the safetensors model
/// `st`, vs the reference's transformers logits).
fn worst_logit_diffs(gguf: &LoadedModel, st: &LoadedModel, reference: &Value) -> (f32, f32) {
    let mut worst_vs_st = 0f32;
    let mut worst_vs_ref = 0f32;
    for case in reference["cases"].as_array().unwrap() {
        let input = ids(&case["input_ids"]);
        let ours = pollster::block_on(gguf.logits(&input)).unwrap();
        let theirs = pollster::block_on(st.logits(&input)).unwrap();
        worst_vs_st = worst_vs_st.max(max_abs_diff(&ours, &theirs));
        worst_vs_ref = worst_vs_ref.max(max_diff(&ours, &case["logits"]));
    }
    (worst_vs_st, worst_vs_ref)
}

#[test]
fn dequantisation_matches_the_gguf_package() {
    let reference = json("reference/tiny_gguf.json");
    let file = GgufFile::parse("tiny_llama_mixed.gguf", bytes("tiny_llama_mixed.gguf")).unwrap();
    let tensors = reference["tensors"].as_object().unwrap();
    let mut seen = Vec::new();
    for (name, t) in tensors {
        let (ours, shape) = file
            .read_raw(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        let shape_ref: Vec<usize> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(shape, shape_ref, "{name}");
        let theirs: Vec<f32> = t["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(ours.len(), theirs.len(), "{name}");
        // Same float32 operations in the same order as numpy: bit-identical.
        let diff = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert_eq!(diff, 0.0, "{name} ({}): max |diff| {diff}", t["type"]);
        seen.push(t["type"].as_str().unwrap().to_string());
    }
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen,
        ["BF16", "F16", "F32", "Q4_0", "Q4_1", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_0"]
    );
}

#[test]
fn f32_gguf_is_the_safetensors_model() {
    let gguf = load(gguf_files(
        "tiny_llama_f32.gguf",
        bytes("tiny_llama_f32.gguf"),
    ))
    .unwrap();
    let st = safetensors_model();
    let (a, b) = (&gguf.info, &st.info);
    assert_eq!(a.architecture, "llama");
    assert_eq!(
        (
            a.dims.parameters,
            a.dims.layers,
            a.dims.hidden_size,
            a.dims.heads,
            a.dims.vocab_size,
            a.dims.max_positions
        ),
        (
            b.dims.parameters,
            b.dims.layers,
            b.dims.hidden_size,
            b.dims.heads,
            b.dims.vocab_size,
            b.dims.max_positions
        )
    );
    assert_eq!(a.dtype, vec!["F32"]);
    assert_eq!(gguf.eos_token_id, Some(2));

    // Same weights after un-permuting q/k: same logits, and the transformers reference holds.
    let reference = json("reference/tiny_llama.json");
    let (worst_vs_st, worst_vs_ref) = worst_logit_diffs(&gguf, &st, &reference);
    eprintln!("F32 GGUF: max |logit diff| vs safetensors {worst_vs_st:e}, vs transformers {worst_vs_ref:e}");
    assert!(worst_vs_st <= 1e-6, "{worst_vs_st}");
    assert!(worst_vs_ref <= 1e-4, "{worst_vs_ref}");

    // Greedy generation with the cache equals transformers'.
    let gen = &reference["generation"];
    let opts = GenerateOptions {
        max_new_tokens: 20,
        greedy: true,
        ..Default::default()
    };
    let out = pollster::block_on(generate(
        gguf.causal_lm(),
        &gguf.device,
        &ids(&gen["prompt_ids"]),
        &opts,
        |_| true,
    ))
    .unwrap();
    assert_eq!(out, ids(&gen["generated_ids"]));
}

#[test]
fn llama3_rope_freqs_become_the_models_frequencies() {
    // A Llama 3.1-style file (tools/reference/tiny_variants.py): the llama3 rope scaling is only
    // in llama.cpp's rope_freqs.weight, one divisor per frequency.
    let name = "tiny_llama3_rope_f32.gguf";
    let reference = json("reference/tiny_variants.json")["models"]["llama3_rope"].clone();
    let config = gguf_files(name, bytes(name)).config().unwrap();
    let rope = &config["rope_scaling"];
    assert_eq!(rope["rope_type"], "longrope", "{config}");
    assert_eq!(rope["short_factor"], rope["long_factor"]);
    let factors: Vec<f32> = rope["short_factor"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let expected: Vec<f32> = reference["gguf"]["rope_freqs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(factors, expected);
    assert!(factors.iter().any(|&f| f != 1.0));

    let gguf = load(gguf_files(name, bytes(name))).unwrap();
    let st = load(ModelFiles::from_dir(&fixture("tiny_random/llama3_rope")).unwrap()).unwrap();
    assert_eq!(gguf.info.dims.parameters, st.info.dims.parameters);
    let (worst_vs_st, worst_vs_ref) = worst_logit_diffs(&gguf, &st, &reference);
    eprintln!("llama3-rope GGUF: max |logit diff| vs safetensors (llama3 config) {worst_vs_st:e}, vs transformers {worst_vs_ref:e}");
    assert!(worst_vs_st <= 1e-4, "{worst_vs_st}");
    assert!(worst_vs_ref <= 1e-4, "{worst_vs_ref}");

    // Greedy generation with the cache equals transformers'.
    for gen in reference["generation"].as_array().unwrap() {
        let expected = ids(&gen["generated_ids"]);
        let opts = GenerateOptions {
            max_new_tokens: expected.len(),
            greedy: true,
            ..Default::default()
        };
        let out = pollster::block_on(generate(
            gguf.causal_lm(),
            &gguf.device,
            &ids(&gen["prompt_ids"]),
            &opts,
            |_| true,
        ))
        .unwrap();
        assert_eq!(out, expected);
    }

    // Without the factors (plain rope at the same theta) the logits would be far off.
    let mut files = ModelFiles::from_dir(&fixture("tiny_random/llama3_rope")).unwrap();
    let mut plain: Value = serde_json::from_slice(files.get("config.json").unwrap()).unwrap();
    plain["rope_parameters"] = serde_json::json!({"rope_type": "default", "rope_theta": 500000.0});
    files.insert("config.json", serde_json::to_vec(&plain).unwrap());
    let plain = load(files).unwrap();
    let input: Vec<u32> = (0..64).map(|i| (i * 53 + 7) % 100).collect();
    let a = pollster::block_on(gguf.logits(&input)).unwrap();
    let b = pollster::block_on(plain.logits(&input)).unwrap();
    assert!(max_abs_diff(&a, &b) > 0.1);
}

#[test]
fn broken_rope_freqs_are_refused() {
    let name = "tiny_llama3_rope_f32.gguf";
    let good = bytes(name);
    let at = GgufFile::parse(name, good.clone()).unwrap().header.tensors["rope_freqs.weight"].start;
    for bad in [-1.0f32, 0.0, f32::NAN, f32::INFINITY] {
        let mut broken = good.clone();
        broken[at + 4..at + 8].copy_from_slice(&bad.to_le_bytes());
        let err = load(gguf_files(name, broken)).unwrap_err();
        assert_eq!(err.code, Code::ModelConfigInvalid, "{bad}: {err}");
        assert!(err.message.contains("rope_freqs.weight"), "{}", err.message);
    }
}

#[test]
fn without_unpermuting_the_logits_would_be_wrong() {
    // Guard for the test above: the permutation is not a no-op on this model.
    let file = GgufFile::parse("f32.gguf", bytes("tiny_llama_f32.gguf")).unwrap();
    let (raw, _) = file.read_raw("blk.0.attn_q.weight").unwrap();
    let (hf, _) = file
        .read_f32("model.layers.0.self_attn.q_proj.weight")
        .unwrap();
    assert_ne!(raw, hf);
    let (raw, _) = file.read_raw("blk.0.attn_v.weight").unwrap();
    let (hf, _) = file
        .read_f32("model.layers.0.self_attn.v_proj.weight")
        .unwrap();
    assert_eq!(raw, hf);
}

#[test]
fn quantised_gguf_stays_close_to_the_safetensors_model() {
    let gguf = load(gguf_files(
        "tiny_llama_mixed.gguf",
        bytes("tiny_llama_mixed.gguf"),
    ))
    .unwrap();
    assert_eq!(gguf.info.dtype, vec!["F16", "F32", "Q4_0", "Q4_1", "Q8_0"]);
    let st = safetensors_model();
    let input: Vec<u32> = (0..64).map(|i| (i * 53 + 7) % 100).collect();
    let ours = pollster::block_on(gguf.logits(&input)).unwrap();
    let theirs = pollster::block_on(st.logits(&input)).unwrap();
    let diff = max_abs_diff(&ours, &theirs);
    let scale = theirs
        .iter()
        .flatten()
        .map(|v| v.abs())
        .fold(0f32, f32::max);
    eprintln!("mixed Q8_0/Q4_1/Q4_0/F16 GGUF: max |logit diff| {diff:e} (max |logit| {scale:e})");
    // 4-bit blocks round each weight to 1/15 of its block's range (~±3% of the largest weight),
    // so the logits move by a few percent of their size; 10% is a loose but meaningful bound
    // (a wrong permutation or dequantisation moves them by ~100%).
    assert!(
        diff > 0.0 && diff < 0.1 * scale,
        "diff {diff} vs scale {scale}"
    );
}

#[test]
fn the_vocabulary_becomes_a_tokenizer() {
    let gguf = load(gguf_files(
        "tiny_llama_f32.gguf",
        bytes("tiny_llama_f32.gguf"),
    ))
    .unwrap();
    assert!(gguf.info.has_tokenizer);
    let tok = gguf.tokenizer.as_ref().unwrap();
    // h e → he (95); l l → ll (96), ll o → llo (97); Ġ w → Ġw (98); the rest are GPT-2's
    // single-byte ids; the control token is matched whole.
    let ids = gguf.encode("hello world<|endoftext|>").unwrap();
    assert_eq!(ids, vec![95, 97, 98, 78, 81, 75, 67, 99]);
    assert_eq!(tok.decode(&ids).unwrap(), "hello world<|endoftext|>");
}

#[test]
fn broken_gguf_files_give_clear_errors() {
    let good = bytes("tiny_llama_mixed.gguf");
    for cut in [0, 3, 8, 20, 100, 1000, 5000, good.len() / 2, good.len() - 1] {
        let err = load(gguf_files("m.gguf", good[..cut].to_vec())).unwrap_err();
        assert!(
            matches!(err.code, Code::WeightsTruncated | Code::WeightsCorrupt),
            "cut {cut}: {err}"
        );
        assert!(err.message.contains("m.gguf"), "cut {cut}: {}", err.message);
    }
    // The tensor data is cut: the message names the tensor and the bytes needed.
    let err = load(gguf_files("m.gguf", good[..good.len() - 1].to_vec())).unwrap_err();
    assert_eq!(err.code, Code::WeightsTruncated);
    assert!(err.message.contains("ends at byte"), "{}", err.message);

    let mut bad = good.clone();
    bad[..4].copy_from_slice(b"GGUX");
    let err = load(gguf_files("m.gguf", bad)).unwrap_err();
    assert_eq!(err.code, Code::WeightsCorrupt);

    // A tensor renamed in the header is missing under its Hugging Face name.
    let mut renamed = good.clone();
    let at = find(&renamed, b"blk.1.ffn_up.weight").unwrap();
    renamed[at..at + 12].copy_from_slice(b"blk.1.ffn_UP");
    let err = load(gguf_files("m.gguf", renamed)).unwrap_err();
    assert_eq!(err.code, Code::WeightsMissingTensor, "{err}");
    assert!(
        err.message.contains("model.layers.1.mlp.up_proj.weight"),
        "{}",
        err.message
    );

    // Another architecture is refused by name.
    let mut other = good.clone();
    let at = find(&other, b"llama").unwrap();
    other[at..at + 5].copy_from_slice(b"gemma");
    let err = load(gguf_files("m.gguf", other)).unwrap_err();
    assert_eq!(err.code, Code::UnsupportedArchitecture, "{err}");

    // Two GGUF files: which one?
    let mut two = gguf_files("a.gguf", good.clone());
    two.insert("b.gguf", good);
    assert_eq!(load(two).unwrap_err().code, Code::ModelMissingFile);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Every file of a fixture folder, read into memory (what the page hands over as bytes).
fn in_memory(dir: &str) -> ModelFiles {
    let mut files = ModelFiles::new();
    for entry in std::fs::read_dir(fixture(dir)).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        files.insert(name, std::fs::read(entry.path()).unwrap());
    }
    files
}

#[test]
fn weights_read_tensor_by_tensor_from_disk_are_the_weights_in_memory() {
    let input = [1u32, 5, 9, 2, 7];
    for (on_disk, in_ram) in [
        (
            ModelFiles::from_dir(&fixture("tiny_random/llama")).unwrap(),
            in_memory("tiny_random/llama"),
        ),
        (
            ModelFiles::from_dir(&fixture("tiny_gguf/tiny_llama_mixed.gguf")).unwrap(),
            gguf_files("tiny_llama_mixed.gguf", bytes("tiny_llama_mixed.gguf")),
        ),
    ] {
        // Opened, not read: the weights hold no bytes until loading asks for a tensor.
        assert!(on_disk.resident_bytes() < in_ram.resident_bytes() / 2);
        let (disk, ram) = (load(on_disk).unwrap(), load(in_ram).unwrap());
        let logits = |m: &LoadedModel| pollster::block_on(m.logits(&input)).unwrap();
        assert_eq!(logits(&disk), logits(&ram));
        assert_eq!(disk.info.stored_bytes, ram.info.stored_bytes);
        // Loading held the whole file in memory, or one tensor at a time from disk.
        assert_eq!(ram.info.load_bytes, ram.info.stored_bytes);
        assert!(
            disk.info.load_bytes > 0 && disk.info.load_bytes < disk.info.stored_bytes / 4,
            "{} of {}",
            disk.info.load_bytes,
            disk.info.stored_bytes
        );
    }

    // A file cut short on disk is the same clear error as in memory.
    let dir = std::env::temp_dir().join(format!("webtune-cut-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = bytes("tiny_llama_mixed.gguf");
    let path = dir.join("m.gguf");
    std::fs::write(&path, &good[..good.len() - 1]).unwrap();
    let err = load(ModelFiles::from_dir(&path).unwrap()).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(err.code, Code::WeightsTruncated, "{err}");
    assert!(err.message.contains("ends at byte"), "{}", err.message);
}
