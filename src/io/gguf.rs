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

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::error::{Code, Error, Result};

/// `GGUF` read as a little-endian u32.
const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: usize = 32;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: usize = 4;

/// The ggml tensor types webtune can turn into f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Bf16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

impl GgmlType {
    fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            30 => Self::Bf16,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Bf16 => "BF16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
        }
    }

    /// (values per block, bytes per block)
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::Bf16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q5_0 => (32, 22),
            Self::Q5_1 => (32, 24),
            Self::Q8_0 => (32, 34),
            Self::Q4K => (256, 144),
            Self::Q5K => (256, 176),
            Self::Q6K => (256, 210),
        }
    }
}

/// Names of the ggml types webtune does not read, for error messages.
fn ggml_type_name(id: u32) -> String {
    let name = match id {
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        15 => "Q8_K",
        16..=23 | 29 => "an IQ quantisation",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        34 | 35 => "a ternary (TQ) quantisation",
        39 => "MXFP4",
        _ => return format!("unknown type {id}"),
    };
    format!("{name} (type {id})")
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    /// Any non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor's entry in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensor {
    pub dtype: GgmlType,
    /// Row-major shape (the reverse of ggml's `ne`), as numpy and safetensors write it.
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub start: usize,
    pub end: usize,
}

impl GgufTensor {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything before the tensor data: metadata and tensor infos, checked against the file size.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    /// By llama.cpp name.
    pub tensors: BTreeMap<String, GgufTensor>,
    pub alignment: usize,
    pub data_start: usize,
}

/// A bounds-checked little-endian cursor.
struct Reader<'a> {
    file: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn truncated(&self, what: &str, needed: usize) -> Error {
        Error::new(
            Code::WeightsTruncated,
            format!(
                "{} is truncated: reading {what} at byte {} needs {needed} more bytes but the file has {} bytes; download it again",
                self.file,
                self.pos,
                self.bytes.len()
            ),
        )
        .with_details(json!({ "file": self.file, "offset": self.pos, "bytes": self.bytes.len(), "reading": what }))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.truncated(what, n)),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count that must fit in what is left, at `min_size` bytes per item, so that a corrupt
    /// count cannot make us allocate gigabytes.
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n.checked_mul(min_size as u64)
            .is_none_or(|need| need > left)
        {
            self.pos = at;
            return Err(self.truncated(
                &format!("{what} ({n} items)"),
                n.saturating_mul(min_size as u64) as usize,
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(what, 1)?;
        let at = self.pos;
        let raw = self.take(n, what)?;
        String::from_utf8(raw.to_vec())
            .map_err(|_| corrupt(self.file, format!("{what} at byte {at} is not valid UTF-8")))
    }

    fn value(&mut self, ty: u32, what: &str, depth: usize) -> Result<MetaValue> {
        Ok(match ty {
            0 => MetaValue::U8(self.array::<1>(what)?[0]),
            1 => MetaValue::I8(self.array::<1>(what)?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => MetaValue::U32(self.u32(what)?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(corrupt(self.file, format!("{what} is a bool of value {b}"))),
            },
            8 => MetaValue::String(self.string(what)?),
            9 => {
                if depth > 0 {
                    return Err(corrupt(
                        self.file,
                        format!("{what} nests arrays, which GGUF writers never do"),
                    ));
                }
                let item = self.u32(what)?;
                let size = match item {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    _ => 4,
                };
                let n = self.count(what, size)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(item, what, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64(what)?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(what)?)),
            other => {
                return Err(corrupt(
                    self.file,
                    format!(
                        "{what} has value type {other} at byte {}, which GGUF does not define",
                        self.pos
                    ),
                ))
            }
        })
    }
}

fn corrupt(file: &str, message: String) -> Error {
    Error::new(
        Code::WeightsCorrupt,
        format!("{file} is not a valid GGUF file: {message}"),
    )
    .with_details(json!({ "file": file }))
}

impl GgufHeader {
    pub fn parse(file: &str, bytes: &[u8]) -> Result<Self> {
        let mut r = Reader {
            file,
            bytes,
            pos: 0,
        };
        let magic = r.take(4, "the magic number")?;
        if magic != MAGIC {
            return Err(corrupt(
                file,
                format!("it starts with {magic:?}, not \"GGUF\""),
            ));
        }
        let version = r.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(corrupt(
                file,
                format!("version {version} is not supported (webtune reads GGUF v2 and v3)"),
            ));
        }
        // A tensor info takes at least 8 (name) + 4 (n_dims) + 4 (type) + 8 (offset) bytes,
        // a metadata entry at least 8 (key) + 4 (type) + 1.
        let n_tensors = r.count("the tensor count", 24)?;
        let n_meta = r.count("the metadata count", 13)?;

        let mut metadata = BTreeMap::new();
        for i in 0..n_meta {
            let key = r.string(&format!("the key of metadata entry {i}"))?;
            let what = format!("the value of metadata key {key:?}");
            let ty = r.u32(&what)?;
            let value = r.value(ty, &what, 0)?;
            metadata.insert(key, value);
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a as usize,
                _ => {
                    return Err(corrupt(
                        file,
                        format!("general.alignment {v:?} is not a power of two"),
                    ))
                }
            },
        };

        let mut infos = Vec::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let name = r.string(&format!("the name of tensor {i}"))?;
            let what = format!("the info of tensor {name:?}");
            let n_dims = r.u32(&what)? as usize;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(corrupt(
                    file,
                    format!("tensor {name:?} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"),
                ));
            }
            let mut ne = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                ne.push(r.u64(&what)?);
            }
            let ty = r.u32(&what)?;
            let offset = r.u64(&what)?;
            infos.push((name, ne, ty, offset));
        }
        let data_start = r.pos.div_ceil(alignment).saturating_mul(alignment);

        let mut tensors = BTreeMap::new();
        let mut data_end = data_start;
        for (name, ne, ty, offset) in infos {
            let dtype = GgmlType::from_id(ty).ok_or_else(|| {
                corrupt(
                    file,
                    format!(
                        "tensor {name:?} is stored as {}; webtune reads F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K",
                        ggml_type_name(ty)
                    ),
                )
            })?;
            let (block, block_bytes) = dtype.block();
            // Every dimension must fit a usize, and so must the product of the non-zero ones,
            // so that the element count in any order (`shape.iter().product()`) cannot overflow
            // even when a zero dimension makes the tensor empty.
            let dims_fit = ne.iter().all(|&d| usize::try_from(d).is_ok())
                && ne
                    .iter()
                    .filter(|&&d| d != 0)
                    .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
                    .is_some();
            let n = ne
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|_| dims_fit);
            let bytes_len = n
                .filter(|_| ne[0] % block as u64 == 0)
                .and_then(|n| (n / block as u64).checked_mul(block_bytes as u64));
            let Some(bytes_len) = bytes_len.and_then(|b| usize::try_from(b).ok()) else {
                return Err(corrupt(
                    file,
                    format!("tensor {name:?} has dimensions {ne:?}, which do not fit {} blocks of {block}", dtype.name()),
                ));
            };
            if offset % alignment as u64 != 0 {
                return Err(corrupt(file, format!("tensor {name:?} starts at offset {offset}, not a multiple of the alignment {alignment}")));
            }
            let start = usize::try_from(offset)
                .ok()
                .and_then(|o| data_start.checked_add(o));
            let Some((start, end)) = start.and_then(|s| s.checked_add(bytes_len).map(|e| (s, e)))
            else {
                return Err(corrupt(
                    file,
                    format!("tensor {name:?} has an absurd offset {offset}"),
                ));
            };
            data_end = data_end.max(end);
            let shape = ne.iter().rev().map(|&d| d as usize).collect();
            if tensors
                .insert(
                    name.clone(),
                    GgufTensor {
                        dtype,
                        shape,
                        start,
                        end,
                    },
                )
                .is_some()
            {
                return Err(corrupt(file, format!("tensor {name:?} appears twice")));
            }
        }
        if !tensors.is_empty() && data_end > bytes.len() {
            let last = tensors
                .iter()
                .max_by_key(|(_, t)| t.end)
                .map(|(n, _)| n.clone())
                .unwrap_or_default();
            return Err(Error::new(
                Code::WeightsTruncated,
                format!(
                    "{file} is truncated: it has {} bytes but tensor {last:?} ends at byte {data_end}; download it again",
                    bytes.len()
                ),
            )
            .with_details(json!({ "file": file, "bytes": bytes.len(), "needed": data_end, "tensor": last })));
        }
        Ok(Self {
            version,
            metadata,
            tensors,
            alignment,
            data_start,
        })
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(MetaValue::as_str)
    }
}

/// Architectures whose GGUF tensors map onto webtune's Llama family, with the `model_type`
/// they become.
const GGUF_ARCHITECTURES: &[(&str, &str)] = &[("llama", "llama"), ("qwen2", "qwen2")];

/// A Hugging Face `config.json` equivalent for a GGUF file: its metadata, plus the rope factors
/// of `rope_freqs.weight`, which is why the file's `bytes` are needed too.
pub fn hf_config(file: &str, h: &GgufHeader, bytes: &[u8]) -> Result<Value> {
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
fn rope_freqs(file: &str, h: &GgufHeader, bytes: &[u8]) -> Result<Option<Vec<f32>>> {
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
    let data = bytes
        .get(t.start..t.end)
        .ok_or_else(|| bad("lies outside the file".into()))?;
    let factors = dequantize(t.dtype, data);
    if let Some(f) = factors.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
        return Err(bad(format!(
            "holds {f}; every factor must be a positive number"
        )));
    }
    Ok(Some(factors))
}

/// The Hugging Face name of a llama.cpp tensor name, if webtune uses it.
pub fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (part, kind) = rest.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

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

fn f16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// 6-bit scale and min `j` (0..8) of a Q4_K/Q5_K super-block's 12 packed bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    };
    (sc as f32, m as f32)
}

/// Raw bytes of whole blocks → f32 values. The caller guarantees `data` holds whole blocks.
pub fn dequantize(dtype: GgmlType, data: &[u8]) -> Vec<f32> {
    let (block, size) = dtype.block();
    let mut out = Vec::with_capacity(data.len() / size * block);
    for b in data.chunks_exact(size) {
        match dtype {
            GgmlType::F32 => out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            GgmlType::F16 => out.push(f16(b)),
            GgmlType::Bf16 => out.push(half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            GgmlType::Q8_0 => {
                let d = f16(b);
                out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
            }
            GgmlType::Q4_0 => {
                let (d, qs) = (f16(b), &b[2..18]);
                out.extend(qs.iter().map(|&q| ((q & 0x0F) as i32 - 8) as f32 * d));
                out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
            }
            GgmlType::Q4_1 => {
                let (d, m, qs) = (f16(b), f16(&b[2..]), &b[4..20]);
                out.extend(qs.iter().map(|&q| (q & 0x0F) as f32 * d + m));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
            GgmlType::Q5_0 | GgmlType::Q5_1 => {
                let (d, m, rest) = if dtype == GgmlType::Q5_0 {
                    (f16(b), None, &b[2..])
                } else {
                    (f16(b), Some(f16(&b[2..])), &b[4..])
                };
                let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let qs = &rest[4..20];
                for j in 0..32 {
                    let low = if j < 16 {
                        qs[j] & 0x0F
                    } else {
                        qs[j - 16] >> 4
                    };
                    let q = (low as u32 | (((qh >> j) & 1) << 4)) as f32;
                    out.push(match m {
                        None => (q - 16.0) * d,
                        Some(m) => q * d + m,
                    });
                }
            }
            GgmlType::Q4K | GgmlType::Q5K => {
                let (d, dmin, scales) = (f16(b), f16(&b[2..]), &b[4..16]);
                let (qh, qs) = if dtype == GgmlType::Q5K {
                    (Some(&b[16..48]), &b[48..176])
                } else {
                    (None, &b[16..144])
                };
                for s in 0..8 {
                    let (sc, m) = scale_min_k4(s, scales);
                    let chunk = &qs[(s / 2) * 32..(s / 2) * 32 + 32];
                    for (l, &byte) in chunk.iter().enumerate() {
                        let mut q = if s % 2 == 0 { byte & 0x0F } else { byte >> 4 };
                        if let Some(qh) = qh {
                            q |= ((qh[l] >> s) & 1) << 4;
                        }
                        out.push(d * sc * q as f32 - dmin * m);
                    }
                }
            }
            GgmlType::Q6K => {
                let (ql, qh, scales, d) = (&b[..128], &b[128..192], &b[192..208], f16(&b[208..]));
                let mut y = [0f32; 256];
                for n in 0..2 {
                    let (ql, qh) = (&ql[n * 64..], &qh[n * 32..]);
                    for l in 0..32 {
                        let q = [
                            (ql[l] & 0x0F) | ((qh[l] & 3) << 4),
                            (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4),
                            (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                            (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                        ];
                        for (k, q) in q.into_iter().enumerate() {
                            let i = n * 128 + k * 32 + l;
                            y[i] = d * (scales[i / 16] as i8 as f32) * (q as i32 - 32) as f32;
                        }
                    }
                }
                out.extend_from_slice(&y);
            }
        }
    }
    out
}

/// The chat template a GGUF file carries (`tokenizer.chat_template`, as llama.cpp's converter
/// writes it from tokenizer_config.json) with the BOS/EOS token strings the template may insert
/// (looked up by `tokenizer.ggml.{bos,eos}_token_id` in `tokenizer.ggml.tokens`, as transformers
/// does when it loads a GGUF tokenizer). Named extra templates (`tokenizer.chat_template.<name>`)
/// are not used: transformers renders the default one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufChatTemplate {
    pub template: String,
    pub bos_token: String,
    pub eos_token: String,
}

pub fn chat_template(h: &GgufHeader) -> Option<GgufChatTemplate> {
    let template = h.get("tokenizer.chat_template")?.as_str()?.to_string();
    let tokens = h.get("tokenizer.ggml.tokens").and_then(MetaValue::as_array);
    let token = |key: &str| -> String {
        let id = h.get(key).and_then(MetaValue::as_u64);
        id.and_then(|id| tokens?.get(usize::try_from(id).ok()?)?.as_str())
            .unwrap_or_default()
            .to_string()
    };
    Some(GgufChatTemplate {
        template,
        bos_token: token("tokenizer.ggml.bos_token_id"),
        eos_token: token("tokenizer.ggml.eos_token_id"),
    })
}

/// A `tokenizer.json` for the file's vocabulary, when it is a byte-level BPE (`tokenizer.ggml.model`
/// = `gpt2`) with a pre-tokenizer webtune knows, or SentencePiece (`llama`, see
/// [`sentencepiece_json`]). `Ok(None)` when there is no vocabulary or it is of another kind.
pub fn tokenizer_json(file: &str, h: &GgufHeader) -> Result<Option<Value>> {
    let model = h.get("tokenizer.ggml.model").and_then(MetaValue::as_str);
    if model == Some("llama") {
        return sentencepiece_json(file, h).map(Some);
    }
    if model != Some("gpt2") {
        return Ok(None);
    }
    let invalid = |m: String| {
        Error::new(Code::TokenizerInvalid, format!("{file}: {m}"))
            .with_details(json!({ "file": file }))
    };
    let strings = |key: &str| -> Result<Vec<&str>> {
        let arr = h
            .get(key)
            .and_then(MetaValue::as_array)
            .ok_or_else(|| invalid(format!("{key} is missing or not an array")))?;
        arr.iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| invalid(format!("{key} holds a non-string")))
            })
            .collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = if h.get("tokenizer.ggml.merges").is_some() {
        strings("tokenizer.ggml.merges")?
    } else {
        Vec::new()
    };
    let types: Vec<u64> = h
        .get("tokenizer.ggml.token_type")
        .and_then(MetaValue::as_array)
        .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(1)).collect())
        .unwrap_or_default();
    let pre = h
        .get("tokenizer.ggml.pre")
        .and_then(MetaValue::as_str)
        .unwrap_or("gpt2");

    // llama.cpp's pre-tokenizer regexes (llama-vocab.cpp), as the Hugging Face pre-tokenizers
    // the original tokenizer.json files use (`gpt2`'s is ByteLevel's built-in one).
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let byte_level = |use_regex: bool| json!({ "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex });
    let split = |regex: &str| {
        json!({ "type": "Sequence", "pretokenizers": [
            { "type": "Split", "pattern": { "Regex": regex }, "behavior": "Isolated", "invert": false },
            byte_level(false),
        ]})
    };
    let pre_tokenizer = match pre {
        "gpt2" | "default" => byte_level(true),
        "smollm" => json!({ "type": "Sequence", "pretokenizers": [
            { "type": "Digits", "individual_digits": true },
            byte_level(true),
        ]}),
        "llama-bpe" | "llama3" => split(LLAMA3),
        "qwen2" => split(QWEN2),
        _ => return Ok(None),
    };

    let vocab: Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i.into()))
        .collect();
    // Control (3) and user-defined (4) tokens are matched whole before BPE, as llama.cpp does.
    let added: Vec<Value> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(types.get(*i), Some(3) | Some(4)))
        .map(|(i, t)| {
            json!({ "id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": false, "special": types.get(i) == Some(&3) })
        })
        .collect();
    let add_bos = h
        .get("tokenizer.ggml.add_bos_token")
        .and_then(MetaValue::as_bool)
        == Some(true);
    let bos = h
        .get("tokenizer.ggml.bos_token_id")
        .and_then(MetaValue::as_u64);
    let post_processor = match (add_bos, bos) {
        (true, Some(id)) => {
            let Some(&tok) = tokens.get(id as usize) else {
                return Err(invalid(format!(
                    "the BOS id {id} is outside the vocabulary of {}",
                    tokens.len()
                )));
            };
            json!({
                "type": "TemplateProcessing",
                "single": [{ "SpecialToken": { "id": tok, "type_id": 0 } }, { "Sequence": { "id": "A", "type_id": 0 } }],
                "pair": [{ "SpecialToken": { "id": tok, "type_id": 0 } }, { "Sequence": { "id": "A", "type_id": 0 } },
                         { "SpecialToken": { "id": tok, "type_id": 1 } }, { "Sequence": { "id": "B", "type_id": 1 } }],
                "special_tokens": { tok: { "id": tok, "ids": [id], "tokens": [tok] } },
            })
        }
        _ => Value::Null,
    };
    Ok(Some(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": { "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true },
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        },
    })))
}

// llama.cpp's token types (`tokenizer.ggml.token_type`, gguf's `TokenType`).
const TOKEN_NORMAL: u64 = 1;
const TOKEN_UNKNOWN: u64 = 2;
const TOKEN_CONTROL: u64 = 3;
const TOKEN_USER_DEFINED: u64 = 4;
const TOKEN_BYTE: u64 = 6;

/// Deriving merges looks every way of cutting a token in two up in the vocabulary, hashing the
/// token's bytes each time. Real vocabularies cost a few million bytes (GPT-2's 50k tokens
/// would cost 2.5M); a file of very long tokens could cost quadratically more, so past this it
/// is refused rather than freezing the tab.
const MERGE_WORK_LIMIT: usize = 1 << 27;

fn tokenizer_invalid(file: &str, message: String) -> Error {
    Error::new(Code::TokenizerInvalid, format!("{file}: {message}"))
        .with_details(json!({ "file": file }))
}

/// The byte a `<0xXX>` byte-fallback token stands for.
fn byte_token(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// A SentencePiece vocabulary (`tokenizer.ggml.model` = `llama`) as the tokenizer transformers
/// builds from the same file (its GGUF loader hands the pieces to `LlamaTokenizer`):
/// - a BPE model over the pieces, with the merges SentencePiece applies recovered from the
///   scores (a GGUF of this kind stores none; see [`sentencepiece_merges`]);
/// - byte fallback: a character the vocabulary lacks becomes its UTF-8 bytes as `<0xXX>` tokens;
/// - spaces as "▁", with one put in front of the text (`Metaspace`, prepend "first") unless
///   `tokenizer.ggml.add_space_prefix` is false, and taken off again when decoding;
/// - control tokens and the BOS/EOS/UNK/PAD tokens matched whole in the text as special tokens,
///   user-defined ones as plain added tokens;
/// - BOS (default on) and EOS (default off) added as `add_bos_token` / `add_eos_token` say.
///
/// transformers 5.24 ignores `add_space_prefix = false` (its Llama tokenizer always prepends);
/// webtune follows SentencePiece and llama.cpp there, since that is how such a model was
/// trained. Inconsistent metadata (lengths that differ, a byte token missing, a special id
/// outside the vocabulary, NaN scores) is an error naming the key.
fn sentencepiece_json(file: &str, h: &GgufHeader) -> Result<Value> {
    use std::collections::{HashMap, HashSet};

    let invalid = |m: String| tokenizer_invalid(file, m);
    let array = |key: &str| -> Result<&[MetaValue]> {
        h.get(key)
            .and_then(MetaValue::as_array)
            .ok_or_else(|| invalid(format!("{key} is missing or not an array")))
    };
    let tokens = array("tokenizer.ggml.tokens")?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .ok_or_else(|| invalid(format!("tokenizer.ggml.tokens[{i}] is not a string")))
        })
        .collect::<Result<Vec<&str>>>()?;
    let n = tokens.len();
    if n == 0 {
        return Err(invalid("tokenizer.ggml.tokens is empty".into()));
    }
    let same_length = |key: &str, len: usize| {
        if len == n {
            Ok(())
        } else {
            Err(invalid(format!(
                "{key} has {len} entries for {n} tokens in tokenizer.ggml.tokens"
            )))
        }
    };
    let scores_meta = array("tokenizer.ggml.scores")?;
    same_length("tokenizer.ggml.scores", scores_meta.len())?;
    let scores = scores_meta
        .iter()
        .enumerate()
        .map(|(i, v)| match v.as_f64() {
            Some(s) if !s.is_nan() => Ok(s),
            _ => Err(invalid(format!(
                "tokenizer.ggml.scores[{i}] is not a number"
            ))),
        })
        .collect::<Result<Vec<f64>>>()?;
    let types = match h.get("tokenizer.ggml.token_type") {
        None => vec![TOKEN_NORMAL; n],
        Some(_) => {
            let meta = array("tokenizer.ggml.token_type")?;
            same_length("tokenizer.ggml.token_type", meta.len())?;
            meta.iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_u64().ok_or_else(|| {
                        invalid(format!(
                            "tokenizer.ggml.token_type[{i}] is not a token type"
                        ))
                    })
                })
                .collect::<Result<Vec<u64>>>()?
        }
    };

    // Where a token is listed twice the later id wins, as in transformers' vocabulary dict.
    let id_of: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, &t)| (t, i)).collect();
    let special_id = |key: &str| -> Result<Option<usize>> {
        let Some(v) = h.get(key) else {
            return Ok(None);
        };
        match v.as_u64() {
            Some(id) if id < n as u64 => Ok(Some(id_of[tokens[id as usize]])),
            Some(id) => Err(invalid(format!(
                "{key} is {id}, outside the vocabulary of {n} tokens"
            ))),
            None => Err(invalid(format!(
                "{key} is not a token id (a non-negative integer)"
            ))),
        }
    };
    let bos = special_id("tokenizer.ggml.bos_token_id")?;
    let eos = special_id("tokenizer.ggml.eos_token_id")?;
    let unk = special_id("tokenizer.ggml.unknown_token_id")?;
    let pad = special_id("tokenizer.ggml.padding_token_id")?;
    let flag = |key: &str, default: bool| match h.get(key) {
        None => Ok(default),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| invalid(format!("{key} is not a boolean"))),
    };
    let add_bos = flag("tokenizer.ggml.add_bos_token", true)?;
    let add_eos = flag("tokenizer.ggml.add_eos_token", false)?;
    let space_prefix = flag("tokenizer.ggml.add_space_prefix", true)?;

    // Byte fallback needs all 256 byte tokens, spelled as `tokenizers` looks them up; a
    // vocabulary with some but not all of them is corrupt (SentencePiece adds all or none).
    for (i, (&t, &ty)) in tokens.iter().zip(&types).enumerate() {
        if ty == TOKEN_BYTE && byte_token(t).is_none() {
            return Err(invalid(format!(
                "token {i} ({t:?}) is marked as a byte token but is not of the form <0xXX>"
            )));
        }
    }
    let has_byte = |b: u8| id_of.contains_key(format!("<0x{b:02X}>").as_str());
    let byte_fallback = (0..=255).any(has_byte) || types.contains(&TOKEN_BYTE);
    if byte_fallback {
        if let Some(b) = (0..=255).find(|&b| !has_byte(b)) {
            return Err(invalid(format!(
                "the vocabulary has byte tokens but lacks <0x{b:02X}>, so text it cannot spell \
                 would lose characters"
            )));
        }
    }

    let vocab: Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| (t.to_string(), i.into()))
        .collect();
    let merges: Vec<Value> = sentencepiece_merges(file, &tokens, &scores, &id_of)?
        .into_iter()
        .map(|(l, r)| json!([l, r]))
        .collect();

    // The named special tokens and control tokens are special; user-defined ones are matched
    // whole but decoded like text. An empty token cannot be matched in text and is left out.
    let named: HashSet<usize> = [bos, eos, unk, pad].into_iter().flatten().collect();
    let added: Vec<Value> = tokens
        .iter()
        .enumerate()
        .filter(|&(i, t)| !t.is_empty() && id_of[t] == i)
        .filter_map(|(i, &t)| {
            let special = types[i] == TOKEN_CONTROL || named.contains(&i);
            (special || types[i] == TOKEN_USER_DEFINED).then(|| {
                json!({ "id": i, "content": t, "single_word": false, "lstrip": false,
                        "rstrip": false, "normalized": false, "special": special })
            })
        })
        .collect();

    // transformers' post-processor: `<s>:0 $A:0 </s>:0`, and for pairs the same again with
    // type id 1, each special token only when its add_*_token flag is on.
    let bos = bos.filter(|_| add_bos).map(|id| (tokens[id], id));
    let eos = eos.filter(|_| add_eos).map(|id| (tokens[id], id));
    let piece = |(t, _): (&str, usize), type_id: u32| json!({ "SpecialToken": { "id": t, "type_id": type_id } });
    let sequence =
        |name: &str, type_id: u32| json!({ "Sequence": { "id": name, "type_id": type_id } });
    let side = |name: &str, type_id: u32| -> Vec<Value> {
        bos.map(|b| piece(b, type_id))
            .into_iter()
            .chain([sequence(name, type_id)])
            .chain(eos.map(|e| piece(e, type_id)))
            .collect()
    };
    let single = side("A", 0);
    let pair: Vec<Value> = single.iter().cloned().chain(side("B", 1)).collect();
    let special_tokens: Map<String, Value> = bos
        .into_iter()
        .chain(eos)
        .map(|(t, id)| {
            (
                t.to_string(),
                json!({ "id": t, "ids": [id], "tokens": [t] }),
            )
        })
        .collect();

    let mut decoders = vec![
        json!({ "type": "Replace", "pattern": { "String": "▁" }, "content": " " }),
        json!({ "type": "ByteFallback" }),
        json!({ "type": "Fuse" }),
    ];
    if space_prefix {
        decoders.push(json!({ "type": "Strip", "content": " ", "start": 1, "stop": 0 }));
    }
    // Only matters when there is no byte fallback: an unknown character becomes this token
    // (SentencePiece's behaviour) instead of vanishing.
    let unk_token = unk
        .or_else(|| types.iter().position(|&t| t == TOKEN_UNKNOWN))
        .map(|id| tokens[id]);
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": { "type": "Metaspace", "replacement": "▁", "split": false,
                           "prepend_scheme": if space_prefix { "first" } else { "never" } },
        "post_processor": { "type": "TemplateProcessing", "single": single, "pair": pair,
                            "special_tokens": special_tokens },
        "decoder": { "type": "Sequence", "decoders": decoders },
        "model": {
            "type": "BPE", "dropout": null, "unk_token": unk_token, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": byte_fallback,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    }))
}

/// The BPE merges a SentencePiece vocabulary implies, in the order transformers derives them
/// (`generate_merges` in tokenization_utils_base.py), so that both tokenize alike: every way
/// of cutting a token into two tokens is a merge ranked by the whole token's score, best first;
/// ties go to the longer left piece, then the longer right piece, then to the order of the
/// tokens in the file and of the pieces' ids. SentencePiece's BPE joins the adjacent pair
/// whose union scores highest, which this ranking reproduces up to ties.
fn sentencepiece_merges<'a>(
    file: &str,
    tokens: &[&'a str],
    scores: &[f64],
    id_of: &std::collections::HashMap<&str, usize>,
) -> Result<Vec<(&'a str, &'a str)>> {
    use std::collections::{HashMap, HashSet};

    struct Merge<'a> {
        left: &'a str,
        right: &'a str,
        score: f64,
        left_chars: usize,
        right_chars: usize,
    }
    // Python's dict(zip(tokens, scores)): a repeated token keeps its first place and its last
    // score. Adding 0.0 turns -0.0 into 0.0, which Python compares as equal.
    let mut score_of: HashMap<&str, f64> = HashMap::new();
    for (&t, &s) in tokens.iter().zip(scores) {
        score_of.insert(t, s + 0.0);
    }
    // A cut can only give two tokens if both sides have lengths some token has.
    let lengths: HashSet<usize> = tokens.iter().map(|t| t.len()).collect();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut work = 0usize;
    let mut merges: Vec<Merge<'a>> = Vec::new();
    for &token in tokens {
        if !seen.insert(token) {
            continue;
        }
        let score = score_of[token];
        let mut local: Vec<(usize, usize, Merge<'a>)> = Vec::new();
        for (at, _) in token.char_indices().skip(1) {
            if !lengths.contains(&at) || !lengths.contains(&(token.len() - at)) {
                continue;
            }
            work += token.len();
            if work > MERGE_WORK_LIMIT {
                return Err(tokenizer_invalid(
                    file,
                    "the vocabulary's tokens are too long and too many to derive its merges from"
                        .into(),
                ));
            }
            let (left, right) = token.split_at(at);
            if let (Some(&l), Some(&r)) = (id_of.get(left), id_of.get(right)) {
                let merge = Merge {
                    left,
                    right,
                    score,
                    left_chars: left.chars().count(),
                    right_chars: right.chars().count(),
                };
                local.push((l, r, merge));
            }
        }
        local.sort_by_key(|&(l, r, _)| (l, r));
        merges.extend(local.into_iter().map(|(_, _, m)| m));
    }
    // Stable: equal keys keep the order above, as Python's sorted(…, reverse=True) does.
    merges.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.left_chars.cmp(&a.left_chars))
            .then(b.right_chars.cmp(&a.right_chars))
    });
    Ok(merges.into_iter().map(|m| (m.left, m.right)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal GGUF v3 file: one metadata string, one array, one F32 tensor `[2, 3]`.
    fn sample(alignment: Option<u32>) -> Vec<u8> {
        let mut b = Vec::new();
        let s = |b: &mut Vec<u8>, v: &str| {
            b.extend_from_slice(&(v.len() as u64).to_le_bytes());
            b.extend_from_slice(v.as_bytes());
        };
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&(2u64 + alignment.is_some() as u64).to_le_bytes());
        s(&mut b, "general.architecture");
        b.extend_from_slice(&8u32.to_le_bytes());
        s(&mut b, "llama");
        s(&mut b, "x.list");
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&5u32.to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        b.extend_from_slice(&(-1i32).to_le_bytes());
        b.extend_from_slice(&7i32.to_le_bytes());
        if let Some(a) = alignment {
            s(&mut b, "general.alignment");
            b.extend_from_slice(&4u32.to_le_bytes());
            b.extend_from_slice(&a.to_le_bytes());
        }
        s(&mut b, "w");
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&3u64.to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        let align = alignment.unwrap_or(32) as usize;
        while b.len() % align != 0 {
            b.push(0);
        }
        for v in [1f32, 2., 3., 4., 5., 6.] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }

    #[test]
    fn parses_metadata_and_tensors() {
        for alignment in [None, Some(64)] {
            let f = GgufFile::parse("t.gguf", sample(alignment)).unwrap();
            assert_eq!(f.header.architecture(), Some("llama"));
            assert_eq!(f.header.alignment, alignment.unwrap_or(32) as usize);
            assert_eq!(
                f.header.get("x.list"),
                Some(&MetaValue::Array(vec![
                    MetaValue::I32(-1),
                    MetaValue::I32(7)
                ]))
            );
            assert_eq!(
                f.read_raw("w").unwrap(),
                (vec![1., 2., 3., 4., 5., 6.], vec![2, 3])
            );
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = sample(Some(64));
        for cut in 0..bytes.len() {
            let err = GgufFile::parse("t.gguf", bytes[..cut].to_vec()).unwrap_err();
            assert!(
                matches!(err.code, Code::WeightsTruncated | Code::WeightsCorrupt),
                "cut {cut}: {err}"
            );
            assert!(err.message.contains("t.gguf"));
        }
    }

    #[test]
    fn corrupt_headers_are_refused() {
        let mut bad = sample(None);
        bad[0] = b'X';
        assert_eq!(
            GgufFile::parse("t", bad).unwrap_err().code,
            Code::WeightsCorrupt
        );
        let mut huge = sample(None);
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            GgufFile::parse("t", huge).unwrap_err().code,
            Code::WeightsTruncated
        );
        let mut v1 = sample(None);
        v1[4] = 1;
        assert!(GgufFile::parse("t", v1)
            .unwrap_err()
            .message
            .contains("version 1"));
        let err = GgufFile::parse("t", sample(Some(48))).unwrap_err();
        assert_eq!(err.code, Code::WeightsCorrupt);
    }

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
        assert_eq!(
            hf_name("blk.12.attn_q.weight").unwrap(),
            "model.layers.12.self_attn.q_proj.weight"
        );
        assert_eq!(
            hf_name("blk.0.attn_k.bias").unwrap(),
            "model.layers.0.self_attn.k_proj.bias"
        );
        assert_eq!(
            hf_name("blk.3.ffn_norm.weight").unwrap(),
            "model.layers.3.post_attention_layernorm.weight"
        );
        assert_eq!(hf_name("output.weight").unwrap(), "lm_head.weight");
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }
}
