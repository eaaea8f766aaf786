//! Llama: loading Hugging Face checkpoints, parity with transformers on the tiny fixture
//! (4 query heads sharing 2 KV heads, RoPE under `rope_parameters`, untied head), generation
//! with and without the KV cache, and clear errors for broken checkpoints.

use burn::tensor::Device;
use serde_json::Value;
use webtune::eval::generate::{generate, GenerateOptions};
use webtune::io::hf::ModelFiles;
use webtune::models::loaded::LoadedModel;
use webtune::Code;

mod common;
use common::{fixture, ids, max_diff};

fn tiny_files() -> ModelFiles {
    ModelFiles::from_dir(&fixture("tiny_random/llama")).expect("fixture readable")
}

fn load(files: ModelFiles) -> Result<LoadedModel, webtune::Error> {
    LoadedModel::load(files, &Device::flex())
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixture("reference/tiny_llama.json")).expect("reference");
    serde_json::from_str(&text).expect("reference JSON")
}

#[test]
fn info_reports_the_architecture() {
    let model = load(tiny_files()).expect("tiny llama loads");
    let i = &model.info;
    assert_eq!(i.architecture, "llama");
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
    // embed + head (untied) + 2 blocks (2 RMSNorm, q 32→32, k/v 32→16, o, gate/up 32→64, down) + norm.
    let block = 2 * 32 + 32 * 32 + 2 * (32 * 16) + 32 * 32 + 3 * (32 * 64);
    assert_eq!(i.dims.parameters, 2 * 100 * 32 + 2 * block + 32);
    // Every weight but the embedding and the norms is multiplied by each token.
    assert_eq!(
        i.dims.matmul_weights,
        i.dims.parameters - 100 * 32 - (2 * 2 * 32 + 32)
    );
    assert_eq!(i.dims.attention_width, 4 * 8);
    assert_eq!(i.dtype, vec!["F32"]);
    assert_eq!(model.eos_token_id, Some(2));
}

#[test]
fn logits_match_transformers() {
    let model = load(tiny_files()).unwrap();
    let reference = reference();
    let cases = reference["cases"].as_array().expect("cases");
    assert!(cases.len() >= 3);
    let mut worst = 0f32;
    let mut longest = 0;
    for case in cases {
        let input = ids(&case["input_ids"]);
        longest = longest.max(input.len());
        let ours = pollster::block_on(model.logits(&input)).unwrap();
        let diff = max_diff(&ours, &case["logits"]);
        eprintln!(
            "case {} (T={}): max |diff| {diff:e}",
            case["name"],
            input.len()
        );
        worst = worst.max(diff);
        let argmax: Vec<u32> = ours
            .iter()
            .map(|row| {
                (0..row.len()).fold(0, |best, j| if row[j] > row[best] { j } else { best }) as u32
            })
            .collect();
        assert_eq!(argmax, ids(&case["argmax"]), "case {}", case["name"]);
    }
    assert_eq!(longest, 64, "one case must fill every position");
    assert!(worst <= 1e-4, "max |diff| {worst} > 1e-4");
    eprintln!("tiny llama max |logit diff| vs transformers: {worst:e}");
}

#[test]
fn cached_logits_equal_uncached_ones() {
    use burn::prelude::*;
    use webtune::models::{CausalLm, KvCache};
    let model = load(tiny_files()).unwrap();
    let lm = model.causal_lm();
    let input: Vec<i64> = (0..20).map(|i| (i * 37 + 11) % 100).collect();
    let tensor = |ids: &[i64]| {
        Tensor::<2, Int>::from_data(
            burn::tensor::TensorData::new(ids.to_vec(), [1, ids.len()]),
            &model.device,
        )
    };
    let full: Vec<f32> = pollster::block_on(lm.forward(tensor(&input), None).into_data_async())
        .unwrap()
        .try_to_vec()
        .unwrap();
    // Feed 7 tokens, then 1, then the remaining 12: positions (and RoPE angles) must continue.
    let mut cache = KvCache::new();
    let mut pieces = Vec::new();
    for range in [0..7, 7..8, 8..20] {
        let logits = lm.forward(tensor(&input[range]), Some(&mut cache));
        pieces.extend(
            pollster::block_on(logits.into_data_async())
                .unwrap()
                .try_to_vec::<f32>()
                .unwrap(),
        );
    }
    assert_eq!(cache.len, 20);
    let diff = full
        .iter()
        .zip(&pieces)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-5, "cached vs uncached max |diff| {diff}");
}

#[test]
fn greedy_generation_matches_transformers_with_and_without_cache() {
    let model = load(tiny_files()).unwrap();
    let reference = reference();
    let mut cases = vec![reference["generation"].clone()];
    cases.extend(
        reference["generation_more"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    );
    for gen in &cases {
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
            assert_eq!(out, expected, "prompt {prompt:?} use_cache={use_cache}");
            assert_eq!(streamed, expected, "every token is streamed");
        }
    }
}

fn with_config(edit: impl FnOnce(&mut Value)) -> ModelFiles {
    let mut files = tiny_files();
    let mut config: Value = serde_json::from_slice(files.get("config.json").unwrap()).unwrap();
    edit(&mut config);
    files.insert("config.json", serde_json::to_vec(&config).unwrap());
    files
}

/// The fixture's tensors with `edit` applied to the list, re-serialised.
fn with_tensors(edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) -> ModelFiles {
    use webtune::io::safetensors::{write_f32, SafeTensorsFile};
    let mut files = tiny_files();
    let parsed = SafeTensorsFile::parse(
        "model.safetensors",
        files.read("model.safetensors").unwrap().unwrap().to_vec(),
    )
    .unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = parsed
        .tensors
        .keys()
        .map(|n| {
            let (data, shape) = parsed.read_f32(n).unwrap();
            (n.clone(), shape, data)
        })
        .collect();
    edit(&mut tensors);
    let refs: Vec<(&str, &[usize], &[f32])> = tensors
        .iter()
        .map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice()))
        .collect();
    files.insert("model.safetensors", write_f32(&refs));
    files
}

#[test]
fn broken_checkpoints_give_clear_errors() {
    // A missing tensor is named.
    let err = load(with_tensors(|t| {
        t.retain(|(n, _, _)| n != "model.layers.1.self_attn.k_proj.weight")
    }))
    .unwrap_err();
    assert_eq!(err.code, Code::WeightsMissingTensor, "{err}");
    assert!(
        err.message
            .contains("model.layers.1.self_attn.k_proj.weight"),
        "{}",
        err.message
    );

    // Untied config but no lm_head.weight.
    let err = load(with_tensors(|t| {
        t.retain(|(n, _, _)| n != "lm_head.weight")
    }))
    .unwrap_err();
    assert_eq!(err.code, Code::WeightsMissingTensor, "{err}");
    assert!(err.message.contains("lm_head.weight"));
    // … which is fine once the config says the head is tied.
    let mut files = with_tensors(|t| t.retain(|(n, _, _)| n != "lm_head.weight"));
    let mut config: Value = serde_json::from_slice(files.get("config.json").unwrap()).unwrap();
    config["tie_word_embeddings"] = true.into();
    files.insert("config.json", serde_json::to_vec(&config).unwrap());
    let tied = load(files).unwrap();
    assert_eq!(
        tied.info.dims.parameters,
        load(tiny_files()).unwrap().info.dims.parameters - 100 * 32
    );

    // A tensor of the wrong shape names itself and both shapes.
    let err = load(with_tensors(|t| {
        let v = t
            .iter_mut()
            .find(|(n, _, _)| n == "model.layers.0.self_attn.v_proj.weight")
            .unwrap();
        v.1 = vec![32, 16];
    }))
    .unwrap_err();
    assert_eq!(err.code, Code::ShapeMismatch, "{err}");
    assert!(
        err.message.contains("v_proj")
            && err.message.contains("[32, 16]")
            && err.message.contains("[16, 32]"),
        "{}",
        err.message
    );

    // A config that does not match the weights: KV heads 4 makes k_proj [32, 32].
    let err = load(with_config(|c| c["num_key_value_heads"] = 4.into())).unwrap_err();
    assert_eq!(err.code, Code::ShapeMismatch, "{err}");
    assert!(err.message.contains("k_proj"), "{}", err.message);

    // Attention biases the checkpoint does not have.
    let err = load(with_config(|c| c["attention_bias"] = true.into())).unwrap_err();
    assert_eq!(err.code, Code::WeightsMissingTensor, "{err}");
    assert!(err.message.contains("q_proj.bias"), "{}", err.message);

    // Nonsense values are refused before any tensor is read.
    for edit in [
        |c: &mut Value| c["num_key_value_heads"] = 3.into(),
        |c: &mut Value| c["head_dim"] = 7.into(),
        |c: &mut Value| c["rope_parameters"]["rope_type"] = "yarn".into(),
        |c: &mut Value| c["hidden_size"] = "big".into(),
        |c: &mut Value| c["rms_norm_eps"] = (-1.0).into(),
    ] {
        let err = load(with_config(edit)).unwrap_err();
        assert_eq!(err.code, Code::ModelConfigInvalid, "{err}");
    }

    // Truncated weights.
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
    }
}

#[test]
fn qwen2_needs_qkv_biases_and_uses_them() {
    // Qwen2 is Llama with q/k/v biases: the same checkpoint without them is refused…
    let err = load(with_config(|c| c["model_type"] = "qwen2".into())).unwrap_err();
    assert_eq!(err.code, Code::WeightsMissingTensor, "{err}");
    assert!(err.message.contains("q_proj.bias"), "{}", err.message);
    // …and with zero biases it computes exactly what Llama does.
    let mut files = with_tensors(|t| {
        for layer in 0..2 {
            for (proj, n) in [("q_proj", 32), ("k_proj", 16), ("v_proj", 16)] {
                t.push((
                    format!("model.layers.{layer}.self_attn.{proj}.bias"),
                    vec![n],
                    vec![0.0; n],
                ));
            }
        }
    });
    let mut config: Value = serde_json::from_slice(files.get("config.json").unwrap()).unwrap();
    config["model_type"] = "qwen2".into();
    files.insert("config.json", serde_json::to_vec(&config).unwrap());
    let qwen = load(files).unwrap();
    assert_eq!(qwen.info.architecture, "qwen2");
    let llama = load(tiny_files()).unwrap();
    let a = pollster::block_on(qwen.logits(&[5, 17, 42, 99, 3])).unwrap();
    let b = pollster::block_on(llama.logits(&[5, 17, 42, 99, 3])).unwrap();
    assert_eq!(a, b);
}
