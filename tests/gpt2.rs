//! GPT-2: loading Hugging Face checkpoints, parity with transformers on the tiny fixture,
//! generation with and without the KV cache, and clear errors for broken checkpoints.

use burn::tensor::Device;
use serde_json::Value;
use webtune::eval::generate::{generate, GenerateOptions};
use webtune::io::hf::ModelFiles;
use webtune::models::loaded::LoadedModel;
use webtune::Code;

mod common;
use common::{fixture, ids};

fn tiny_files() -> ModelFiles {
    ModelFiles::from_dir(&fixture("tiny_random/gpt2")).expect("fixture readable")
}

fn load(files: ModelFiles) -> Result<LoadedModel, webtune::Error> {
    LoadedModel::load(files, &Device::flex())
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixture("reference/tiny_gpt2.json")).expect("reference");
    serde_json::from_str(&text).expect("reference JSON")
}

#[test]
fn info_reports_the_architecture() {
    let model = load(tiny_files()).expect("tiny gpt2 loads");
    let i = &model.info;
    assert_eq!(i.architecture, "gpt2");
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
    // wte + wpe + 2 blocks (2 LN, c_attn, c_proj, c_fc, c_proj) + ln_f; the LM head is tied.
    let block = 2 * 2 * 32 + (32 * 96 + 96) + (32 * 32 + 32) + (32 * 128 + 128) + (128 * 32 + 32);
    assert_eq!(i.dims.parameters, 100 * 32 + 64 * 32 + 2 * block + 2 * 32);
    // Every weight but the position embedding, the biases and the layer norms is multiplied by
    // each token (the token embedding as the tied LM head).
    let biases_and_norms = 2 * (2 * 2 * 32 + 96 + 32 + 128 + 32) + 2 * 32;
    assert_eq!(
        i.dims.matmul_weights,
        i.dims.parameters - 64 * 32 - biases_and_norms
    );
    assert_eq!(i.dims.attention_width, 32);
    assert_eq!(i.dtype, vec!["F32"]);
}

#[test]
fn logits_match_transformers() {
    let model = load(tiny_files()).unwrap();
    let reference = reference();
    let cases = reference["cases"].as_array().expect("cases");
    assert!(cases.len() >= 3);
    let mut max_diff = 0f32;
    let mut longest = 0;
    for case in cases {
        let input = ids(&case["input_ids"]);
        longest = longest.max(input.len());
        let ours = pollster::block_on(model.logits(&input)).unwrap();
        let theirs = case["logits"].as_array().unwrap();
        assert_eq!(ours.len(), theirs.len());
        for (row, expected) in ours.iter().zip(theirs) {
            let expected = expected.as_array().unwrap();
            assert_eq!(row.len(), expected.len());
            for (a, b) in row.iter().zip(expected) {
                max_diff = max_diff.max((a - b.as_f64().unwrap() as f32).abs());
            }
        }
    }
    assert_eq!(longest, 64, "one case must fill every position");
    assert!(max_diff <= 1e-4, "max |diff| {max_diff} > 1e-4");
    eprintln!("tiny gpt2 max |logit diff| vs transformers: {max_diff:e}");
}

#[test]
fn greedy_generation_matches_transformers_with_and_without_cache() {
    let model = load(tiny_files()).unwrap();
    let reference = reference();
    let gen = &reference["generation"];
    let prompt = ids(&gen["prompt_ids"]);
    let expected = ids(&gen["generated_ids"]);
    for use_cache in [true, false] {
        let opts = GenerateOptions {
            max_new_tokens: expected.len(),
            greedy: true,
            use_cache,
            ..Default::default()
        };
        let mut streamed = Vec::new();
        let out = pollster::block_on(generate(
            model.causal_lm(),
            &model.device,
            &prompt,
            &opts,
            |t| {
                streamed.push(t);
                true
            },
        ))
        .unwrap();
        assert_eq!(out, expected, "use_cache={use_cache}");
        assert_eq!(streamed, expected, "every token is streamed");
    }
}

#[test]
fn sampling_is_seeded() {
    let model = load(tiny_files()).unwrap();
    let run = |seed| {
        let opts = GenerateOptions {
            max_new_tokens: 12,
            seed,
            top_k: 0,
            ..Default::default()
        };
        pollster::block_on(generate(
            model.causal_lm(),
            &model.device,
            &[1, 2, 3],
            &opts,
            |_| true,
        ))
        .unwrap()
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

fn with_config(edit: impl FnOnce(&mut Value)) -> ModelFiles {
    let mut files = tiny_files();
    let mut config: Value = serde_json::from_slice(files.get("config.json").unwrap()).unwrap();
    edit(&mut config);
    files.insert("config.json", serde_json::to_vec(&config).unwrap());
    files
}

#[test]
fn broken_checkpoints_give_clear_errors() {
    // Missing config.json.
    let mut files = ModelFiles::new();
    files.insert(
        "model.safetensors",
        tiny_files()
            .read("model.safetensors")
            .unwrap()
            .unwrap()
            .to_vec(),
    );
    let err = load(files).unwrap_err();
    assert_eq!(err.code, Code::ModelMissingFile);
    assert!(err.message.contains("config.json"), "{}", err.message);

    // Missing weights.
    let mut files = ModelFiles::new();
    files.insert(
        "config.json",
        tiny_files().get("config.json").unwrap().to_vec(),
    );
    assert_eq!(load(files).unwrap_err().code, Code::ModelMissingFile);

    // Truncated weights: every cut is an error naming the file, never a panic.
    let weights = tiny_files()
        .read("model.safetensors")
        .unwrap()
        .unwrap()
        .to_vec();
    for cut in [0, 7, 100, weights.len() / 2, weights.len() - 1] {
        let mut files = tiny_files();
        files.insert("model.safetensors", weights[..cut].to_vec());
        let err = load(files).unwrap_err();
        assert!(
            matches!(err.code, Code::WeightsTruncated | Code::WeightsCorrupt),
            "cut {cut}: {err}"
        );
        assert!(err.message.contains("model.safetensors"));
    }

    // A config that does not match the weights names the tensor and both shapes.
    let err = load(with_config(|c| c["n_embd"] = 48.into())).unwrap_err();
    assert_eq!(err.code, Code::ShapeMismatch, "{err}");
    // Whichever tensor is read first, the message names it and gives both shapes.
    assert!(
        err.message.contains("tensor ")
            && err.message.contains("32]")
            && err.message.contains("48]"),
        "{}",
        err.message
    );

    // Architectures we do not implement are refused by name.
    let err = load(with_config(|c| c["model_type"] = "t5".into())).unwrap_err();
    assert_eq!(err.code, Code::UnsupportedArchitecture);
    assert!(err.message.contains("t5") && err.message.contains("gpt2"));

    // Nonsense values.
    let err = load(with_config(|c| c["n_head"] = 5.into())).unwrap_err();
    assert_eq!(err.code, Code::ModelConfigInvalid);
    let mut files = tiny_files();
    files.insert("config.json", b"{not json".to_vec());
    assert_eq!(load(files).unwrap_err().code, Code::ModelConfigInvalid);
}

#[test]
fn half_precision_weights_load_close_to_f32() {
    use webtune::io::safetensors::SafeTensorsFile;
    let files = tiny_files();
    let f32_file = SafeTensorsFile::parse(
        "model.safetensors",
        files.read("model.safetensors").unwrap().unwrap().to_vec(),
    )
    .unwrap();
    // Re-encode every tensor as F16 and as BF16 by hand.
    for (dtype, size) in [("F16", 2usize), ("BF16", 2usize)] {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for name in f32_file.tensors.keys() {
            let (values, shape) = f32_file.read_f32(name).unwrap();
            let start = data.len();
            for v in values {
                let bytes = if dtype == "F16" {
                    half::f16::from_f32(v).to_le_bytes()
                } else {
                    half::bf16::from_f32(v).to_le_bytes()
                };
                data.extend_from_slice(&bytes);
            }
            assert_eq!(data.len() - start, shape.iter().product::<usize>() * size);
            header.insert(name.clone(), serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}));
        }
        let header = Value::Object(header).to_string();
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&data);
        let mut files = tiny_files();
        files.insert("model.safetensors", bytes);
        let half_model = load(files).unwrap();
        assert_eq!(half_model.info.dtype, vec![dtype]);
        let full = load(tiny_files()).unwrap();
        let a = pollster::block_on(half_model.logits(&[5, 17, 42])).unwrap();
        let b = pollster::block_on(full.logits(&[5, 17, 42])).unwrap();
        let diff = a
            .iter()
            .flatten()
            .zip(b.iter().flatten())
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        // Only the weights are rounded (to 11 or 8 mantissa bits); the math stays f32.
        assert!(diff > 0.0 && diff < 0.05, "{dtype}: max diff {diff}");
    }
}
