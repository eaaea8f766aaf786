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

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::error::{Code, Result};
use crate::io::source::FileBytes;
use crate::models::names::Rope;

pub use config::{hf_config, hf_name, unpermute_rows};
pub use dequant::dequantize;
use reader::corrupt;
pub use reader::{GgmlType, GgufHeader, GgufTensor, MetaValue};
pub use vocab::{chat_template, tokenizer_json, GgufChatTemplate};

/// A parsed GGUF file: its header, and its bytes in memory or behind a handle; tensors are
/// read and dequantised when asked for.
#[derive(Debug, Clone)]
pub struct GgufFile {
    pub name: String,
    pub header: GgufHeader,
    bytes: FileBytes,
    /// Hugging Face name → (llama.cpp name, heads whose rows to un-permute).
    names: BTreeMap<String, (String, Option<usize>)>,
}

impl GgufFile {
    /// The file's size in bytes.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// Bytes of the file held in memory.
    pub fn resident(&self) -> usize {
        self.bytes.resident()
    }

    /// The largest mapped tensor's bytes: what reading one tensor at a time holds at most.
    pub fn largest_tensor(&self) -> usize {
        let t = self
            .names
            .values()
            .filter_map(|(g, _)| self.header.tensors.get(g));
        t.map(|t| t.end - t.start).max().unwrap_or(0)
    }

    pub fn parse(name: &str, bytes: impl Into<FileBytes>) -> Result<Self> {
        let bytes = bytes.into();
        let header = header_of(name, &bytes)?;
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
            let Some((hf, rope)) = hf_name(gguf) else {
                continue;
            };
            let unpermute = match rope.filter(|_| permuted) {
                None => None,
                Some(Rope::Query) => n_head,
                Some(Rope::Key) => n_kv.or(n_head),
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

    /// A tensor by llama.cpp name, dequantised, exactly as stored (no un-permutation); `None`
    /// when absent or unreadable.
    pub fn read_raw(&self, gguf: &str) -> Option<(Vec<f32>, Vec<usize>)> {
        self.tensor_raw(gguf).ok().flatten()
    }

    fn tensor_raw(&self, gguf: &str) -> Result<Option<(Vec<f32>, Vec<usize>)>> {
        let Some(t) = self.header.tensors.get(gguf) else {
            return Ok(None);
        };
        let data = self.bytes.read(&self.name, t.start..t.end)?;
        Ok(Some((dequantize(t.dtype, &data), t.shape.clone())))
    }

    /// A tensor by Hugging Face name, as f32 in Hugging Face's layout; `None` when absent or
    /// unreadable: [`tensor_f32`](Self::tensor_f32) says why.
    pub fn read_f32(&self, hf: &str) -> Option<(Vec<f32>, Vec<usize>)> {
        self.tensor_f32(hf).ok().flatten()
    }

    /// A tensor by Hugging Face name, as f32 in Hugging Face's layout; `Ok(None)` when the file
    /// has no such tensor.
    pub fn tensor_f32(&self, hf: &str) -> Result<Option<(Vec<f32>, Vec<usize>)>> {
        let Some((gguf, unpermute)) = self.names.get(hf) else {
            return Ok(None);
        };
        let Some((data, shape)) = self.tensor_raw(gguf)? else {
            return Ok(None);
        };
        Ok(Some(match unpermute {
            Some(h) => (unpermute_rows(&data, &shape, *h), shape),
            None => (data, shape),
        }))
    }
}

/// A GGUF file's header, its tensors checked against the file's size. Behind a handle only
/// its start is read (see [`declared_header`]).
pub fn header_of(name: &str, bytes: &FileBytes) -> Result<GgufHeader> {
    if let Some(all) = bytes.as_slice() {
        return GgufHeader::parse(name, all);
    }
    let (prefix, _) = grow_prefix(name, bytes)?;
    GgufHeader::parse_sized(name, &prefix, bytes.len())
}

/// What a GGUF file declares (metadata and tensor infos) from its start alone, whether or not
/// its data is all there.
pub fn declared_header(name: &str, bytes: &FileBytes) -> Result<GgufHeader> {
    grow_prefix(name, bytes).map(|(_, header)| header)
}

/// The file's start, grown until the metadata and tensor infos fit (a vocabulary makes them a
/// few MiB, tens for large ones), with the header parsed from it.
fn grow_prefix<'a>(name: &str, bytes: &'a FileBytes) -> Result<(Cow<'a, [u8]>, GgufHeader)> {
    let mut n = 1 << 20;
    loop {
        let prefix = bytes.prefix(name, n)?;
        match GgufHeader::parse_prefix(name, &prefix) {
            Err(e) if e.code == Code::WeightsTruncated && prefix.len() < bytes.len() => n *= 4,
            Err(e) => return Err(e),
            Ok(header) => return Ok((prefix, header)),
        }
    }
}
