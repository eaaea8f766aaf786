//! Reading `.safetensors` files: an 8-byte little-endian header length, a JSON header mapping
//! tensor names to `{dtype, shape, data_offsets}`, then the raw data. Every length and offset is
//! checked against the bytes actually present before anything is allocated, so a truncated
//! download or a corrupt header is a clear error, never a panic or a giant allocation.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;

use super::source::FileBytes;
use crate::error::{Code, Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    Bf16,
    /// Integer buffers (e.g. BERT's `position_ids`); readable, converted to f32 on request.
    I64,
}

impl Dtype {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "F32" => Self::F32,
            "F16" => Self::F16,
            "BF16" => Self::Bf16,
            "I64" => Self::I64,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            Self::F16 | Self::Bf16 => 2,
            Self::F32 => 4,
            Self::I64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Bf16 => "BF16",
            Self::I64 => "I64",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub start: usize,
    pub end: usize,
}

/// A parsed safetensors file: its header, and its bytes in memory or behind a handle (then
/// each tensor is read when asked for).
#[derive(Debug, Clone)]
pub struct SafeTensorsFile {
    pub name: String,
    bytes: FileBytes,
    pub tensors: BTreeMap<String, TensorEntry>,
}

#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

/// The format caps the header at 100 MB; anything larger is corrupt.
const MAX_HEADER: usize = 100_000_000;

fn corrupt(file: &str, message: String) -> Error {
    Error::new(
        Code::WeightsCorrupt,
        format!("{file} is not a valid safetensors file: {message}"),
    )
    .with_details(json!({ "file": file }))
}

impl SafeTensorsFile {
    /// The file's size in bytes.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// Bytes of the file held in memory.
    pub fn resident(&self) -> usize {
        self.bytes.resident()
    }

    /// The largest tensor's bytes: what reading one tensor at a time holds at most.
    pub fn largest_tensor(&self) -> usize {
        self.tensors
            .values()
            .map(|t| t.end - t.start)
            .max()
            .unwrap_or(0)
    }

    pub fn parse(name: &str, bytes: impl Into<FileBytes>) -> Result<Self> {
        let bytes = bytes.into();
        let truncated = |needed: usize| {
            Error::new(
                Code::WeightsTruncated,
                format!(
                    "{name} is truncated: it has {} bytes but needs at least {needed}; download it again",
                    bytes.len()
                ),
            )
            .with_details(json!({ "file": name, "bytes": bytes.len(), "needed": needed }))
        };
        if bytes.len() < 8 {
            return Err(truncated(8));
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes.read(name, 0..8)?);
        let header_len = u64::from_le_bytes(len);
        if header_len > MAX_HEADER as u64 {
            return Err(corrupt(
                name,
                format!("header length {header_len} is implausible"),
            ));
        }
        let header_end = 8 + header_len as usize;
        if bytes.len() < header_end {
            return Err(truncated(header_end));
        }
        let header = bytes.read(name, 8..header_end)?;
        let raw: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
            .map_err(|e| corrupt(name, format!("header is not a JSON object ({e})")))?;

        let mut tensors = BTreeMap::new();
        let mut data_end = 0usize;
        for (tensor, value) in raw {
            if tensor == "__metadata__" {
                continue;
            }
            let entry: RawEntry = serde_json::from_value(value)
                .map_err(|e| corrupt(name, format!("entry {tensor:?}: {e}")))?;
            let dtype = Dtype::parse(&entry.dtype).ok_or_else(|| {
                corrupt(
                    name,
                    format!(
                        "tensor {tensor:?} has dtype {}, webtune reads F32, F16, BF16 and I64",
                        entry.dtype
                    ),
                )
            })?;
            let [start, end] = entry.data_offsets;
            let elements = entry
                .shape
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d));
            // The product of the non-zero dimensions must fit too, so that the element count
            // taken in any order cannot overflow when a zero dimension makes the tensor empty.
            let nonzero_fits = entry
                .shape
                .iter()
                .filter(|&&d| d != 0)
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .is_some();
            let expected = elements
                .filter(|_| nonzero_fits)
                .and_then(|n| n.checked_mul(dtype.size()));
            if start > end || expected != Some(end - start) {
                return Err(corrupt(
                    name,
                    format!(
                        "tensor {tensor:?} has offsets {start}..{end}, which do not fit shape {:?} of {}",
                        entry.shape, entry.dtype
                    ),
                ));
            }
            let abs = |o: usize| header_end.checked_add(o);
            let (Some(abs_start), Some(abs_end)) = (abs(start), abs(end)) else {
                return Err(corrupt(
                    name,
                    format!("tensor {tensor:?} has absurd offsets"),
                ));
            };
            data_end = data_end.max(abs_end);
            tensors.insert(
                tensor,
                TensorEntry {
                    dtype,
                    shape: entry.shape,
                    start: abs_start,
                    end: abs_end,
                },
            );
        }
        if data_end > bytes.len() {
            return Err(truncated(data_end));
        }
        Ok(Self {
            name: name.to_string(),
            bytes,
            tensors,
        })
    }

    /// The tensor converted to f32, with its shape; `None` when the file has no such tensor or
    /// (behind a handle) it cannot be read: [`tensor_f32`](Self::tensor_f32) says why.
    pub fn read_f32(&self, tensor: &str) -> Option<(Vec<f32>, Vec<usize>)> {
        self.tensor_f32(tensor).ok().flatten()
    }

    /// The tensor converted to f32, with its shape; `Ok(None)` when the file has no such tensor.
    pub fn tensor_f32(&self, tensor: &str) -> Result<Option<(Vec<f32>, Vec<usize>)>> {
        let Some(entry) = self.tensors.get(tensor) else {
            return Ok(None);
        };
        let data = self.bytes.read(&self.name, entry.start..entry.end)?;
        Ok(Some((to_f32(&data, entry.dtype), entry.shape.clone())))
    }
}

/// Convert little-endian raw values to f32.
pub fn to_f32(data: &[u8], dtype: Dtype) -> Vec<f32> {
    match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::Bf16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::I64 => data
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                i64::from_le_bytes(b) as f32
            })
            .collect(),
    }
}

/// Serialise f32 tensors as a safetensors file (used by export and by tests).
pub fn write_f32(tensors: &[(&str, &[usize], &[f32])]) -> Vec<u8> {
    write_f32_with_metadata(tensors, &[])
}

/// As [`write_f32`], with a `__metadata__` string map (transformers looks for `format: pt`).
pub fn write_f32_with_metadata(
    tensors: &[(&str, &[usize], &[f32])],
    metadata: &[(&str, &str)],
) -> Vec<u8> {
    write_with_metadata(tensors, metadata, StoreDtype::F32)
}

/// The precision weights are written in: f32 as trained, or half the size in f16/bf16
/// (rounded to nearest even, as torch's `.half()` / `.bfloat16()` do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreDtype {
    #[default]
    F32,
    F16,
    Bf16,
}

impl StoreDtype {
    /// The safetensors dtype name.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            StoreDtype::F32 => "F32",
            StoreDtype::F16 => "F16",
            StoreDtype::Bf16 => "BF16",
        }
    }

    /// transformers' `torch_dtype` name.
    pub fn torch_name(self) -> &'static str {
        match self {
            StoreDtype::F32 => "float32",
            StoreDtype::F16 => "float16",
            StoreDtype::Bf16 => "bfloat16",
        }
    }

    pub fn width(self) -> usize {
        match self {
            StoreDtype::F32 => 4,
            StoreDtype::F16 | StoreDtype::Bf16 => 2,
        }
    }
}

/// Serialise f32 tensors as a safetensors file stored in `dtype`.
pub fn write_with_metadata(
    tensors: &[(&str, &[usize], &[f32])],
    metadata: &[(&str, &str)],
    dtype: StoreDtype,
) -> Vec<u8> {
    let entries: Vec<(&str, &[usize])> = tensors.iter().map(|(n, s, _)| (*n, *s)).collect();
    let mut out = header(&entries, metadata, dtype);
    for (_, _, data) in tensors {
        encode(data, dtype, &mut out);
    }
    out
}

/// The start of a safetensors file whose tensors (`name`, `shape`) follow in this order, each
/// stored in `dtype`: the header's length, the header, and the padding that aligns the data.
/// With [`encode`], a file is written one tensor at a time, never held whole.
pub fn header(
    tensors: &[(&str, &[usize])],
    metadata: &[(&str, &str)],
    dtype: StoreDtype,
) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let map: serde_json::Map<String, serde_json::Value> = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        header.insert("__metadata__".into(), serde_json::Value::Object(map));
    }
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let len = shape.iter().product::<usize>() * dtype.width();
        header.insert(
            name.to_string(),
            json!({
                "dtype": dtype.safetensors_name(),
                "shape": shape,
                "data_offsets": [offset, offset + len]
            }),
        );
        offset += len;
    }
    let mut header = serde_json::Value::Object(header).to_string().into_bytes();
    // Pad so the data section starts 8-byte aligned, as the reference writer does.
    while (header.len() + 8) % 8 != 0 {
        header.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header.len());
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out
}

/// Append one tensor's values to `out` as stored in `dtype` (little-endian).
pub fn encode(data: &[f32], dtype: StoreDtype, out: &mut Vec<u8>) {
    out.reserve(data.len() * dtype.width());
    for &v in data {
        match dtype {
            StoreDtype::F32 => out.extend_from_slice(&v.to_le_bytes()),
            StoreDtype::F16 => out.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
            StoreDtype::Bf16 => out.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        write_f32(&[
            ("a", &[2, 3], &[1., 2., 3., 4., 5., 6.]),
            ("b", &[1], &[7.]),
        ])
    }

    #[test]
    fn round_trip() {
        let f = SafeTensorsFile::parse("x.safetensors", sample()).unwrap();
        assert_eq!(
            f.read_f32("a").unwrap(),
            (vec![1., 2., 3., 4., 5., 6.], vec![2, 3])
        );
        assert_eq!(f.read_f32("b").unwrap().0, vec![7.]);
        assert!(f.read_f32("c").is_none());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            let err = SafeTensorsFile::parse("x.safetensors", bytes[..cut].to_vec()).unwrap_err();
            assert!(
                matches!(err.code, Code::WeightsTruncated | Code::WeightsCorrupt),
                "cut {cut}: {err}"
            );
        }
        let err =
            SafeTensorsFile::parse("x.safetensors", bytes[..bytes.len() - 1].to_vec()).unwrap_err();
        assert_eq!(err.code, Code::WeightsTruncated);
        assert!(err.message.contains("x.safetensors"));
    }

    #[test]
    fn half_precision_is_converted() {
        let vals = [1.5f32, -2.25, 0.0];
        let f16: Vec<u8> = vals
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let bf16: Vec<u8> = vals
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        assert_eq!(to_f32(&f16, Dtype::F16), vals);
        assert_eq!(to_f32(&bf16, Dtype::Bf16), vals);
    }

    #[test]
    fn inconsistent_offsets_and_dtypes_are_refused() {
        let header = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0u8; 16]);
        let err = SafeTensorsFile::parse("y", bytes).unwrap_err();
        assert_eq!(err.code, Code::WeightsCorrupt);
        let header = r#"{"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.push(0);
        let err = SafeTensorsFile::parse("y", bytes).unwrap_err();
        assert!(err.message.contains("Q7"));
        let mut bytes = u64::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        assert_eq!(
            SafeTensorsFile::parse("y", bytes).unwrap_err().code,
            Code::WeightsCorrupt
        );
    }
}
