//! The GGUF binary format: the magic and versions, a bounds-checked little-endian `Reader`, and
//! the header it parses (typed metadata, tensor infos, the aligned start of the tensor data).

use std::collections::BTreeMap;

use serde_json::json;

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

pub(super) fn corrupt(file: &str, message: String) -> Error {
    Error::new(
        Code::WeightsCorrupt,
        format!("{file} is not a valid GGUF file: {message}"),
    )
    .with_details(json!({ "file": file }))
}

impl GgufHeader {
    pub fn parse(file: &str, bytes: &[u8]) -> Result<Self> {
        Self::parse_with(file, bytes, Some(bytes.len()))
    }

    /// The header from the file's first bytes only (metadata and tensor infos, not the data):
    /// what a model declares, before its bytes are read.
    pub fn parse_prefix(file: &str, prefix: &[u8]) -> Result<Self> {
        Self::parse_with(file, prefix, None)
    }

    /// The header from the file's first bytes, checked against the whole file's length `len`
    /// (a file read tensor by tensor).
    pub fn parse_sized(file: &str, prefix: &[u8], len: usize) -> Result<Self> {
        Self::parse_with(file, prefix, Some(len))
    }

    fn parse_with(file: &str, bytes: &[u8], file_len: Option<usize>) -> Result<Self> {
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
        let len = file_len.unwrap_or(usize::MAX);
        if !tensors.is_empty() && data_end > len {
            let last = tensors
                .iter()
                .max_by_key(|(_, t)| t.end)
                .map(|(n, _)| n.clone())
                .unwrap_or_default();
            return Err(Error::new(
                Code::WeightsTruncated,
                format!(
                    "{file} is truncated: it has {len} bytes but tensor {last:?} ends at byte {data_end}; download it again",
                ),
            )
            .with_details(json!({ "file": file, "bytes": len, "needed": data_end, "tensor": last })));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::gguf::GgufFile;

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
}
