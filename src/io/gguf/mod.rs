//! Reading llama.cpp's GGUF files (versions 2 and 3): a header, typed metadata, tensor infos,
//! then aligned tensor data, possibly block-quantised. Every count, length and offset is checked
//! against the bytes present before anything is allocated, so a truncated download or a corrupt
//! header is a clear error naming what was being read and at which byte, never a panic.
//!
//! What webtune takes from a GGUF file:
//! - weights, dequantised to f32 (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K),
//!   under their Hugging Face names (`blk.0.attn_q.weight` → `model.layers.0.self_attn.q_proj.weight`);
//! - a Hugging Face-style `config.json` built from the `llama.*` / `qwen2.*` metadata;
//! - a `tokenizer.json` built from `tokenizer.ggml.*` for byte-level BPE (`gpt2`) and
//!   SentencePiece (`llama`: Llama 1/2, TinyLlama, Mistral v0.1–v0.3) vocabularies, the way
//!   transformers builds one from the same file.
//!
//! llama.cpp's converter permutes the rows of Llama's `q_proj`/`k_proj` so that its rotary
//! kernel can rotate neighbouring pairs; the model code here rotates halves (transformers'
//! layout), so those rows are put back on reading. Qwen2 files are not permuted.

mod config;
mod dequant;
mod reader;
mod vocab;

use std::collections::BTreeMap;

use crate::error::Result;

pub use config::{hf_config, hf_name, unpermute_rows};
pub use dequant::dequantize;
use reader::corrupt;
pub use reader::{GgmlType, GgufHeader, GgufTensor, MetaValue};
pub use vocab::{chat_template, tokenizer_json, GgufChatTemplate};

/// A parsed GGUF file that owns its bytes; tensors are dequantised when read.
#[derive(Debug, Clone)]
pub struct GgufFile {
    pub name: String,
    pub header: GgufHeader,
    bytes: Vec<u8>,
    /// Hugging Face name → (llama.cpp name, heads whose rows to un-permute).
    names: BTreeMap<String, (String, Option<usize>)>,
}

impl GgufFile {
    /// The file's size in bytes.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    pub fn parse(name: &str, bytes: Vec<u8>) -> Result<Self> {
        let header = GgufHeader::parse(name, &bytes)?;
        // Only Llama files carry the rope permutation (Qwen2 uses the NeoX rotation).
        let permuted = header.architecture() == Some("llama");
        let heads = |k: &str| {
            header
                .get(&format!("llama.{k}"))
                .and_then(MetaValue::as_u64)
                .map(|v| v as usize)
        };
        let (n_head, n_kv) = (
            heads("attention.head_count"),
            heads("attention.head_count_kv"),
        );
        let mut names = BTreeMap::new();
        for (gguf, t) in &header.tensors {
            let Some(hf) = hf_name(gguf) else { continue };
            let unpermute = if !permuted {
                None
            } else if hf.contains(".q_proj.") {
                n_head
            } else if hf.contains(".k_proj.") {
                n_kv.or(n_head)
            } else {
                None
            };
            if let Some(h) = unpermute {
                let rows = t.shape.first().copied().unwrap_or(0);
                if h.checked_mul(2).is_none_or(|h2| h2 == 0 || rows % h2 != 0) {
                    return Err(corrupt(
                        name,
                        format!("tensor {gguf:?} has {rows} rows, which cannot be split into {h} rotary heads"),
                    ));
                }
            }
            names.insert(hf, (gguf.clone(), unpermute));
        }
        Ok(Self {
            name: name.to_string(),
            header,
            bytes,
            names,
        })
    }

    /// Hugging Face names of the tensors webtune maps.
    pub fn hf_names(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(String::as_str)
    }

    /// Storage types of the mapped tensors, e.g. `Q4_1`.
    pub fn dtype_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.hf_names()
            .filter_map(|n| self.dtype_of(n))
            .map(GgmlType::name)
    }

    /// Values in the mapped tensors.
    pub fn num_values(&self) -> usize {
        self.hf_names()
            .filter_map(|n| self.shape_of(n))
            .map(|s| s.iter().product::<usize>())
            .sum()
    }

    pub fn dtype_of(&self, hf: &str) -> Option<GgmlType> {
        let (gguf, _) = self.names.get(hf)?;
        Some(self.header.tensors.get(gguf)?.dtype)
    }

    pub fn shape_of(&self, hf: &str) -> Option<&[usize]> {
        let (gguf, _) = self.names.get(hf)?;
        Some(&self.header.tensors.get(gguf)?.shape)
    }

    /// A tensor by llama.cpp name, dequantised, exactly as stored (no un-permutation).
    pub fn read_raw(&self, gguf: &str) -> Option<(Vec<f32>, Vec<usize>)> {
        let t = self.header.tensors.get(gguf)?;
        let data = self.bytes.get(t.start..t.end)?;
        Some((dequantize(t.dtype, data), t.shape.clone()))
    }

    /// A tensor by Hugging Face name, as f32 in Hugging Face's layout.
    pub fn read_f32(&self, hf: &str) -> Option<(Vec<f32>, Vec<usize>)> {
        let (gguf, unpermute) = self.names.get(hf)?;
        let (data, shape) = self.read_raw(gguf)?;
        Some(match unpermute {
            Some(h) => (unpermute_rows(&data, &shape, *h), shape),
            None => (data, shape),
        })
    }
}
