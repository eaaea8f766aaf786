//! From GGUF metadata to Hugging Face: a `config.json` built from the `llama.*` / `qwen2.*` keys
//! (with the rope factors of `rope_freqs.weight`), GGUF tensor names read through the Llama
//! family's name table (`models::names`), and the un-permutation of Llama's Q/K rows.

use serde_json::{json, Map, Value};

use super::dequant::dequantize;
use super::reader::{GgufHeader, MetaValue};
use crate::error::{Code, Error, Result};
use crate::io::source::FileBytes;
use crate::models::names::{fill, Rope, LLAMA};

/// Architectures whose GGUF tensors map onto webtune's Llama family, with the `model_type`
/// they become.
const GGUF_ARCHITECTURES: &[(&str, &str)] = &[("llama", "llama"), ("qwen2", "qwen2")];

/// A Hugging Face `config.json` equivalent for a GGUF file: its metadata, plus the rope factors
/// of `rope_freqs.weight`, which is why the file's `bytes` are needed too.
pub fn hf_config(file: &str, h: &GgufHeader, bytes: &FileBytes) -> Result<Value> {
    let arch = h.architecture().ok_or_else(|| {
        Error::new(
            Code::ModelConfigInvalid,
            format!("{file} has no general.architecture metadata"),
        )
    })?;
    let Some(&(_, model_type)) = GGUF_ARCHITECTURES.iter().find(|(a, _)| *a == arch) else {
        return Err(Error::new(
            Code::UnsupportedArchitecture,
            format!(
                "{file} holds a {arch:?} model; webtune reads GGUF files of {}",
                GGUF_ARCHITECTURES
                    .iter()
                    .map(|(a, _)| *a)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .with_details(json!({ "model_type": arch })));
    };
    let key = |k: &str| format!("{arch}.{k}");
    let missing = |k: &str| {
        Error::new(
            Code::ModelConfigInvalid,
            format!("{file} lacks the metadata {k:?} (or it is not a non-negative integer)"),
        )
        .with_details(json!({ "file": file, "key": k }))
    };
    let int = |k: &str| -> Result<u64> {
        let k = key(k);
        h.get(&k)
            .and_then(MetaValue::as_u64)
            .ok_or_else(|| missing(&k))
    };
    let opt_int = |k: &str| -> Result<Option<u64>> {
        match h.get(&key(k)) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| missing(&key(k))),
        }
    };
    let heads = int("attention.head_count")?;
    let mut c = Map::new();
    c.insert("model_type".into(), model_type.into());
    c.insert(
        "architectures".into(),
        json!([format!(
            "{}ForCausalLM",
            if model_type == "qwen2" {
                "Qwen2"
            } else {
                "Llama"
            }
        )]),
    );
    c.insert("hidden_size".into(), int("embedding_length")?.into());
    c.insert(
        "intermediate_size".into(),
        int("feed_forward_length")?.into(),
    );
    c.insert("num_hidden_layers".into(), int("block_count")?.into());
    c.insert("num_attention_heads".into(), heads.into());
    c.insert(
        "num_key_value_heads".into(),
        opt_int("attention.head_count_kv")?.unwrap_or(heads).into(),
    );
    if let Some(d) = opt_int("attention.key_length")? {
        c.insert("head_dim".into(), d.into());
    }
    if let Some(n) = opt_int("context_length")? {
        c.insert("max_position_embeddings".into(), n.into());
    }
    let float = |k: &str| h.get(&key(k)).and_then(MetaValue::as_f64);
    if let Some(eps) = float("attention.layer_norm_rms_epsilon") {
        c.insert("rms_norm_eps".into(), eps.into());
    }
    c.insert(
        "rope_theta".into(),
        float("rope.freq_base").unwrap_or(10000.0).into(),
    );
    match h.get(&key("rope.scaling.type")).and_then(MetaValue::as_str) {
        None | Some("none") => {}
        Some("linear") => {
            c.insert(
                "rope_scaling".into(),
                json!({ "rope_type": "linear", "factor": float("rope.scaling.factor") }),
            );
        }
        Some(other) => {
            return Err(Error::new(
                Code::ModelConfigInvalid,
                format!("{file} uses rope scaling {other:?}, which webtune does not implement"),
            ))
        }
    }
    if let Some(factors) = rope_freqs(file, h, bytes)? {
        // Llama 3.1+: llama.cpp's converter bakes the llama3 scaling into one divisor per
        // frequency (and writes no rope.scaling keys for it); llama.cpp rotates by
        // pos · θ^(-2i/d) / rope_freqs[i]. transformers spells exactly that as longrope with equal
        // short and long factors and no attention scaling, so the config stays one transformers
        // reads right (an exported model keeps its rope). The original context only matters to
        // longrope when the factor sets differ; the key is required, so it gets the context.
        if let Some(other) = c.get("rope_scaling") {
            return Err(Error::new(
                Code::ModelConfigInvalid,
                format!("{file} has both rope scaling {other} and per-frequency factors (rope_freqs.weight); webtune does not combine them"),
            ));
        }
        let context = opt_int("context_length")?.unwrap_or(2048);
        c.insert(
            "rope_scaling".into(),
            json!({
                "rope_type": "longrope",
                "short_factor": factors,
                "long_factor": factors,
                "factor": 1.0,
                "attention_factor": 1.0,
                "original_max_position_embeddings": context,
            }),
        );
    }
    let vocab = opt_int("vocab_size")?
        .or_else(|| {
            h.tensors
                .get("token_embd.weight")
                .and_then(|t| t.shape.first())
                .map(|&v| v as u64)
        })
        .or_else(|| {
            h.get("tokenizer.ggml.tokens")
                .and_then(MetaValue::as_array)
                .map(|a| a.len() as u64)
        });
    if let Some(v) = vocab {
        c.insert("vocab_size".into(), v.into());
    }
    c.insert("hidden_act".into(), "silu".into());
    c.insert(
        "tie_word_embeddings".into(),
        (!h.tensors.contains_key("output.weight")).into(),
    );
    if model_type == "llama" {
        c.insert(
            "attention_bias".into(),
            h.tensors.contains_key("blk.0.attn_q.bias").into(),
        );
    }
    c.insert(
        "mlp_bias".into(),
        h.tensors.contains_key("blk.0.ffn_up.bias").into(),
    );
    for (gguf, hf) in [
        ("tokenizer.ggml.bos_token_id", "bos_token_id"),
        ("tokenizer.ggml.eos_token_id", "eos_token_id"),
    ] {
        if let Some(id) = h.get(gguf).and_then(MetaValue::as_u64) {
            c.insert(hf.into(), id.into());
        }
    }
    c.insert(
        "gguf".into(),
        json!({ "file": file, "version": h.version, "architecture": arch }),
    );
    Ok(Value::Object(c))
}

/// The per-frequency rope divisors of `rope_freqs.weight` (llama.cpp's `freq_factors`), when the
/// file has them: one positive number per rotated pair of a head, `head_dim / 2` of them.
fn rope_freqs(file: &str, h: &GgufHeader, bytes: &FileBytes) -> Result<Option<Vec<f32>>> {
    const NAME: &str = "rope_freqs.weight";
    let Some(t) = h.tensors.get(NAME) else {
        return Ok(None);
    };
    let bad = |what: String| {
        Error::new(Code::ModelConfigInvalid, format!("{file}: {NAME} {what}"))
            .with_details(json!({ "file": file, "tensor": NAME }))
    };
    let arch = h.architecture().unwrap_or_default();
    let meta = |k: &str| {
        h.get(&format!("{arch}.{k}"))
            .and_then(MetaValue::as_u64)
            .and_then(|v| usize::try_from(v).ok())
    };
    let head_dim = meta("attention.key_length")
        .or_else(|| meta("embedding_length")?.checked_div(meta("attention.head_count")?));
    // Checked before dequantising, so that a hostile shape costs nothing.
    if t.shape.len() != 1 || head_dim.is_some_and(|d| t.shape[0] != d / 2) {
        return Err(bad(format!(
            "has shape {:?}; it must hold head_dim / 2 = {} factors",
            t.shape,
            head_dim.map_or("?".into(), |d| (d / 2).to_string())
        )));
    }
    if t.end > bytes.len() {
        return Err(bad("lies outside the file".into()));
    }
    let factors = dequantize(t.dtype, &bytes.read(file, t.start..t.end)?);
    if let Some(f) = factors.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
        return Err(bad(format!(
            "holds {f}; every factor must be a positive number"
        )));
    }
    Ok(Some(factors))
}

/// The Hugging Face name of a llama.cpp tensor name, if webtune uses it (the GGUF column of
/// the Llama family's name table), and whether its rows were permuted for llama.cpp's rotary.
pub fn hf_name(gguf: &str) -> Option<(String, Option<Rope>)> {
    let (e, layer) = LLAMA.by_gguf(gguf)?;
    Some((fill(e.hf, layer), e.rope))
}

/// Undo convert_hf_to_gguf's `permute`: within each head of `Dh` rows, llama.cpp stores row
/// `2i + s` what Hugging Face stores at row `s·Dh/2 + i` (`s` ∈ {0, 1}).
pub fn unpermute_rows(data: &[f32], shape: &[usize], heads: usize) -> Vec<f32> {
    let rows = shape.first().copied().unwrap_or(0);
    if heads
        .checked_mul(2)
        .is_none_or(|h2| h2 == 0 || rows % h2 != 0)
        || rows == 0
        || data.is_empty()
        || data.len() % rows != 0
    {
        // Nothing to permute (an empty tensor may still claim 2^62 rows: found by fuzzing).
        return data.to_vec();
    }
    let cols = data.len().checked_div(rows).unwrap_or(0);
    let dh = rows / heads;
    let half = dh / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for s in 0..2 {
                let from = h * dh + 2 * i + s;
                let to = h * dh + s * half + i;
                out[to * cols..(to + 1) * cols]
                    .copy_from_slice(&data[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_the_converter() {
        // convert_hf_to_gguf: reshape(H, 2, Dh/2, cols).swapaxes(1, 2): row (h, s, i) → (h, i, s).
        let (heads, dh, cols) = (2, 8, 3);
        let hf: Vec<f32> = (0..heads * dh * cols).map(|v| v as f32).collect();
        let mut permuted = vec![0f32; hf.len()];
        for h in 0..heads {
            for s in 0..2 {
                for i in 0..dh / 2 {
                    let (from, to) = (h * dh + s * dh / 2 + i, h * dh + 2 * i + s);
                    permuted[to * cols..(to + 1) * cols]
                        .copy_from_slice(&hf[from * cols..(from + 1) * cols]);
                }
            }
        }
        assert_eq!(unpermute_rows(&permuted, &[heads * dh, cols], heads), hf);
    }

    #[test]
    fn names_map_to_hugging_face() {
        let name = |g: &str| hf_name(g).map(|(n, _)| n);
        assert_eq!(
            hf_name("blk.12.attn_q.weight").unwrap(),
            (
                "model.layers.12.self_attn.q_proj.weight".into(),
                Some(Rope::Query)
            )
        );
        assert_eq!(
            hf_name("blk.0.attn_k.bias").unwrap(),
            (
                "model.layers.0.self_attn.k_proj.bias".into(),
                Some(Rope::Key)
            )
        );
        assert_eq!(
            hf_name("blk.3.ffn_norm.weight").unwrap(),
            (
                "model.layers.3.post_attention_layernorm.weight".into(),
                None
            )
        );
        assert_eq!(name("output.weight").unwrap(), "lm_head.weight");
        assert_eq!(name("blk.x.attn_q.weight"), None);
        assert_eq!(name("rope_freqs.weight"), None);
    }
}
