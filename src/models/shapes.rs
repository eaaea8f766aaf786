//! Checkpoints with the exact shapes of real models and seeded random weights. Memory and speed
//! depend on shapes, not on what the weights learned, so these stand in for models whose weights
//! cannot be fetched (tests, the bench, or anyone sizing a run before downloading gigabytes).
//! Quality claims need real weights.
//!
//! A checkpoint is written as a Hugging Face folder's `config.json` and `model.safetensors`,
//! one tensor at a time in chunks, so writing a 1.7B-parameter file needs a few MiB of memory.

use std::io::Write;

use serde_json::{json, Value};

use crate::error::{Code, Error, Result};
use crate::io::safetensors::{self, StoreDtype};
use crate::rng::Rng;

/// The models whose shapes are known, by the names [`config`] takes.
pub const KNOWN: &[&str] = &[
    "smollm2-135m",
    "smollm2-360m",
    "qwen2.5-0.5b",
    "smollm2-1.7b",
];

/// The `config.json` of a known model (as its Hub repository has it, less what webtune does
/// not read).
pub fn config(name: &str) -> Result<Value> {
    // (hidden, ffn, layers, heads, kv heads, vocab, max positions, rope theta, rms eps)
    let smollm2 = |d: usize, ffn: usize, layers: usize, heads: usize, kv: usize, theta: f64| {
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": d,
            "intermediate_size": ffn,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "vocab_size": 49152,
            "max_position_embeddings": 8192,
            "rope_theta": theta,
            "rms_norm_eps": 1e-5,
            "hidden_act": "silu",
            "tie_word_embeddings": true,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": "bfloat16",
        })
    };
    Ok(match name {
        "smollm2-135m" => smollm2(576, 1536, 30, 9, 3, 100_000.0),
        "smollm2-360m" => smollm2(960, 2560, 32, 15, 5, 100_000.0),
        "smollm2-1.7b" => smollm2(2048, 8192, 24, 32, 32, 130_000.0),
        "qwen2.5-0.5b" => json!({
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "hidden_size": 896,
            "intermediate_size": 4864,
            "num_hidden_layers": 24,
            "num_attention_heads": 14,
            "num_key_value_heads": 2,
            "vocab_size": 151936,
            "max_position_embeddings": 32768,
            "rope_theta": 1_000_000.0,
            "rms_norm_eps": 1e-6,
            "hidden_act": "silu",
            "tie_word_embeddings": true,
            "use_sliding_window": false,
            "bos_token_id": 151643,
            "eos_token_id": 151643,
            "torch_dtype": "bfloat16",
        }),
        other => {
            return Err(Error::config(format!(
                "unknown model shape {other:?}: choose one of {}",
                KNOWN.join(", ")
            )))
        }
    })
}

/// How a tensor's values are drawn.
#[derive(Clone, Copy)]
enum Init {
    /// Normal with this standard deviation (transformers' `initializer_range`, 0.02).
    Normal(f64),
    /// All ones (RMSNorm weights).
    Ones,
}

/// The tensors of a Llama-family checkpoint with `config`'s shapes, in file order.
fn tensors(config: &Value) -> Result<Vec<(String, Vec<usize>, Init)>> {
    let get = |key: &str| {
        config[key]
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| Error::config(format!("the shape's config has no {key}")))
    };
    let (d, ffn, layers, heads, vocab) = (
        get("hidden_size")?,
        get("intermediate_size")?,
        get("num_hidden_layers")?,
        get("num_attention_heads")?,
        get("vocab_size")?,
    );
    let kv = get("num_key_value_heads").unwrap_or(heads);
    let (q, kv) = (d, kv * (d / heads));
    let biases = config["model_type"] == "qwen2";
    let w = Init::Normal(0.02);
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![vocab, d], w)];
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        out.push((format!("{p}.input_layernorm.weight"), vec![d], Init::Ones));
        for (name, width) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
            out.push((format!("{p}.self_attn.{name}.weight"), vec![width, d], w));
            if biases {
                out.push((format!("{p}.self_attn.{name}.bias"), vec![width], w));
            }
        }
        out.push((format!("{p}.self_attn.o_proj.weight"), vec![d, q], w));
        out.push((
            format!("{p}.post_attention_layernorm.weight"),
            vec![d],
            Init::Ones,
        ));
        out.push((format!("{p}.mlp.gate_proj.weight"), vec![ffn, d], w));
        out.push((format!("{p}.mlp.up_proj.weight"), vec![ffn, d], w));
        out.push((format!("{p}.mlp.down_proj.weight"), vec![d, ffn], w));
    }
    out.push(("model.norm.weight".to_string(), vec![d], Init::Ones));
    if config["tie_word_embeddings"] == false {
        out.push(("lm_head.weight".to_string(), vec![vocab, d], w));
    }
    Ok(out)
}

/// Parameters of a checkpoint with `config`'s shapes.
pub fn parameters(config: &Value) -> Result<u64> {
    Ok(tensors(config)?
        .iter()
        .map(|(_, shape, _)| shape.iter().product::<usize>() as u64)
        .sum())
}

/// Write `config`'s checkpoint as safetensors in `dtype` to `out`, its values drawn from
/// `seed` (the same seed gives the same file).
pub fn write_weights(
    config: &Value,
    seed: u64,
    dtype: StoreDtype,
    out: &mut dyn Write,
) -> Result<()> {
    let tensors = tensors(config)?;
    let entries: Vec<(&str, &[usize])> = tensors
        .iter()
        .map(|(n, s, _)| (n.as_str(), s.as_slice()))
        .collect();
    let io = |e: std::io::Error| Error::new(Code::Internal, format!("writing weights: {e}"));
    out.write_all(&safetensors::header(&entries, &[("format", "pt")], dtype))
        .map_err(io)?;
    let mut rng = Rng::new(seed);
    let (mut values, mut bytes) = (Vec::new(), Vec::new());
    for (_, shape, init) in &tensors {
        let mut left: usize = shape.iter().product();
        while left > 0 {
            let n = left.min(1 << 20);
            values.clear();
            match init {
                Init::Ones => values.resize(n, 1.0f32),
                Init::Normal(std) => values.extend((0..n).map(|_| (rng.normal() * std) as f32)),
            }
            bytes.clear();
            safetensors::encode(&values, dtype, &mut bytes);
            out.write_all(&bytes).map_err(io)?;
            left -= n;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::hf::ModelFiles;
    use crate::io::safetensors::SafeTensorsFile;

    #[test]
    fn known_shapes_have_their_real_parameter_counts() {
        // As the Hub's model cards and `num_parameters()` give them.
        let count = |n: &str| parameters(&config(n).unwrap()).unwrap();
        assert_eq!(count("smollm2-135m"), 134_515_008);
        assert_eq!(count("smollm2-360m"), 361_821_120);
        assert_eq!(count("qwen2.5-0.5b"), 494_032_768);
        assert_eq!(count("smollm2-1.7b"), 1_711_376_384);
        assert!(config("gpt-5")
            .unwrap_err()
            .message
            .contains("smollm2-360m"));
    }

    #[test]
    fn a_written_checkpoint_loads_and_is_seeded() {
        let mut small = config("qwen2.5-0.5b").unwrap();
        for (k, v) in [
            ("hidden_size", 28),
            ("intermediate_size", 40),
            ("num_hidden_layers", 2),
            ("num_attention_heads", 7),
            ("num_key_value_heads", 1),
            ("vocab_size", 64),
        ] {
            small[k] = json!(v);
        }
        let write = |seed| {
            let mut bytes = Vec::new();
            write_weights(&small, seed, StoreDtype::Bf16, &mut bytes).unwrap();
            bytes
        };
        let (a, b) = (write(3), write(3));
        assert_eq!(a, b);
        assert_ne!(a, write(4));
        let file = SafeTensorsFile::parse("model.safetensors", a.clone()).unwrap();
        assert_eq!(
            file.read_f32("model.layers.1.self_attn.k_proj.bias")
                .unwrap()
                .1,
            vec![4]
        );
        let mut files = ModelFiles::new();
        files.insert("config.json", serde_json::to_vec(&small).unwrap());
        files.insert("model.safetensors", a);
        let model =
            crate::models::loaded::LoadedModel::load(files, &burn::tensor::Device::flex()).unwrap();
        assert_eq!(
            model.info.dims.parameters as u64,
            parameters(&small).unwrap()
        );
        assert_eq!(model.info.architecture, "qwen2");
    }
}
