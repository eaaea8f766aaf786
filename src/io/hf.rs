//! A Hugging Face model as a set of files: `config.json`, weights (`model.safetensors`, or shards
//! listed in `model.safetensors.index.json`), and optionally `tokenizer.json`,
//! `tokenizer_config.json`, `generation_config.json`, `special_tokens_map.json`,
//! `chat_template.jinja` (or `chat_template.json`). The same set comes from a directory (CLI),
//! from files the user picked, or from a URL (browser).
//!
//! A single llama.cpp `*.gguf` file is a model too: its metadata stands in for config.json and
//! tokenizer.json, and its tensors are dequantised under their Hugging Face names (`io::gguf`).

use std::collections::BTreeMap;

use burn::prelude::*;
use burn::tensor::TensorData;
use serde_json::{json, Value};

use super::gguf::{self, GgufFile, GgufHeader};
use super::safetensors::SafeTensorsFile;
use super::source::FileBytes;
use super::tokenizer::Tokenizer;
use crate::error::{Code, Error, Result};
use crate::models::names::{Layout, Table};

/// Families webtune implements, by `model_type`.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["gpt2", "llama", "qwen2", "mistral", "bert"];

/// File names webtune reads from a model folder or repo.
pub fn is_model_file(name: &str) -> bool {
    matches!(
        name,
        "config.json"
            | "model.safetensors.index.json"
            | "tokenizer.json"
            | "tokenizer_config.json"
            | "generation_config.json"
            | "special_tokens_map.json"
            | "chat_template.jinja"
            | "chat_template.json"
    ) || name.ends_with(".safetensors")
        || name.ends_with(".gguf")
}

/// The files of one model, keyed by their name in the repo: in memory, or (weight files)
/// behind a handle that loading reads tensor by tensor.
#[derive(Debug, Default, Clone)]
pub struct ModelFiles {
    files: BTreeMap<String, FileBytes>,
}

impl ModelFiles {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes the files hold in memory (none for a file behind a handle).
    pub fn resident_bytes(&self) -> u64 {
        self.files.values().map(|b| b.resident() as u64).sum()
    }

    pub fn insert(&mut self, name: impl Into<String>, bytes: impl Into<FileBytes>) {
        self.files.insert(name.into(), bytes.into());
    }

    /// A file, in memory or behind a handle.
    pub fn file(&self, name: &str) -> Option<&FileBytes> {
        self.files.get(name)
    }

    /// A whole file's bytes, read from behind its handle when it has one; `None` when absent.
    pub fn read(&self, name: &str) -> Result<Option<std::borrow::Cow<'_, [u8]>>> {
        self.files.get(name).map(|b| b.read_all(name)).transpose()
    }

    /// A file's bytes, when it is in memory (every file but weights behind a handle).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).and_then(FileBytes::as_slice)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    fn take(&mut self, name: &str) -> Option<FileBytes> {
        self.files.remove(name)
    }

    /// Read the model files of a local directory, or a single model file (e.g. a `.gguf`).
    /// Weight files are opened, not read: loading reads them tensor by tensor.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &std::path::Path) -> Result<Self> {
        if dir.is_file() {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !is_model_file(&name) {
                return Err(Error::new(
                    Code::ModelMissingFile,
                    format!(
                        "{} is not a model: give a folder in Hugging Face layout or a .gguf file",
                        dir.display()
                    ),
                ));
            }
            let mut files = Self::new();
            files.insert(name.clone(), open_model_file(&name, dir)?);
            return Ok(files);
        }
        let entries = std::fs::read_dir(dir).map_err(|e| {
            Error::new(
                Code::ModelMissingFile,
                format!("cannot read the model folder {}: {e}", dir.display()),
            )
        })?;
        let mut files = Self::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_model_file(&name) {
                files.insert(name.clone(), open_model_file(&name, &entry.path())?);
            }
        }
        Ok(files)
    }

    /// The one `*.gguf` file, when the model is given as GGUF (no config.json, no safetensors).
    fn gguf_name(&self) -> Result<Option<String>> {
        if self.get("config.json").is_some() || self.names().any(|n| n.ends_with(".safetensors")) {
            return Ok(None);
        }
        let ggufs: Vec<&str> = self.names().filter(|n| n.ends_with(".gguf")).collect();
        match ggufs.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.to_string())),
            many => Err(Error::new(
                Code::ModelMissingFile,
                format!(
                    "{} GGUF files were given ({}); pick one",
                    many.len(),
                    many.join(", ")
                ),
            )
            .with_details(json!({ "files": many }))),
        }
    }

    fn gguf_header(&self, name: &str) -> Result<GgufHeader> {
        match self.files.get(name) {
            Some(bytes) => gguf::header_of(name, bytes),
            None => GgufHeader::parse(name, &[]),
        }
    }

    /// The tokenizer: tokenizer.json, or the vocabulary inside a GGUF file. `None` when neither.
    pub fn tokenizer(&self) -> Result<Option<Tokenizer>> {
        if let Some(bytes) = self.get("tokenizer.json") {
            return Tokenizer::from_bytes(bytes).map(Some);
        }
        let Some(name) = self.gguf_name()? else {
            return Ok(None);
        };
        match gguf::tokenizer_json(&name, &self.gguf_header(&name)?)? {
            Some(json) => Tokenizer::from_bytes(json.to_string().as_bytes()).map(Some),
            None => Ok(None),
        }
    }

    /// The chat template inside a GGUF model's metadata, with its BOS/EOS strings. `None` when
    /// the model is not a GGUF file or the file has no template.
    pub fn gguf_chat_template(&self) -> Result<Option<gguf::GgufChatTemplate>> {
        match self.gguf_name()? {
            Some(name) => Ok(gguf::chat_template(&self.gguf_header(&name)?)),
            None => Ok(None),
        }
    }

    /// Parse `config.json` (or build it from a GGUF file's metadata).
    pub fn config(&self) -> Result<Value> {
        if let Some(name) = self.gguf_name()? {
            let none = FileBytes::default();
            let bytes = self.files.get(&name).unwrap_or(&none);
            return gguf::hf_config(&name, &self.gguf_header(&name)?, bytes);
        }
        let bytes = self.get("config.json").ok_or_else(|| {
            Error::new(
                Code::ModelMissingFile,
                "config.json is missing: a Hugging Face model needs config.json next to its weights",
            )
            .with_details(json!({ "file": "config.json", "present": self.names().collect::<Vec<_>>() }))
        })?;
        serde_json::from_slice(bytes).map_err(|e| {
            Error::new(
                Code::ModelConfigInvalid,
                format!("config.json is not valid JSON: {e}"),
            )
            .with_details(json!({ "file": "config.json" }))
        })
    }

    /// A short identity of the model's weights: 64-bit FNV-1a over `config.json` and every
    /// tensor in name order (its name, stored type, shape and bytes; a tensor over 8 KiB is
    /// sampled: its first, middle and last 2 KiB). Tensors, not files: a sharded copy of a
    /// model is the same model, and a 3 GB checkpoint is identified from a few MiB of reads.
    /// Adapters record it so an adapter is only applied to the base it was trained on; the same
    /// weights agree however they were loaded (folder, picked files, URL).
    pub fn fingerprint(&self) -> Result<String> {
        const WHOLE: usize = 8 << 10;
        const WINDOW: usize = 2 << 10;
        struct Stored<'a> {
            name: String,
            dtype: String,
            shape: Vec<usize>,
            file: &'a str,
            bytes: &'a FileBytes,
            range: std::ops::Range<usize>,
        }
        let mut tensors = Vec::new();
        for (file, bytes) in &self.files {
            let mut push = |name, dtype, shape, range| {
                tensors.push(Stored {
                    name,
                    dtype,
                    shape,
                    file,
                    bytes,
                    range,
                })
            };
            if file.ends_with(".safetensors") {
                for (name, t) in SafeTensorsFile::parse(file, bytes.clone())?.tensors {
                    push(name, t.dtype.name().to_owned(), t.shape, t.start..t.end);
                }
            } else if file.ends_with(".gguf") {
                for (name, t) in gguf::declared_header(file, bytes)?.tensors {
                    push(name, format!("{:?}", t.dtype), t.shape, t.start..t.end);
                }
            }
        }
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        let mut hash = Fnv1a::default();
        if let Some(config) = self.read("config.json")? {
            hash.write(&config);
        }
        for t in &tensors {
            hash.write(t.name.as_bytes());
            hash.write(t.dtype.as_bytes());
            for d in &t.shape {
                hash.write(&(*d as u64).to_le_bytes());
            }
            let (start, end) = (t.range.start, t.range.end);
            if end - start <= WHOLE {
                hash.write(&t.bytes.read(t.file, start..end)?);
                continue;
            }
            let middle = start + (end - start) / 2 - WINDOW / 2;
            for at in [start, middle, end - WINDOW] {
                hash.write(&t.bytes.read(t.file, at..at + WINDOW)?);
            }
        }
        Ok(format!("{:016x}", hash.0))
    }

    /// Every file but the safetensors weights: what a job needs of a model once it is loaded
    /// (config, tokenizer, chat template, and a GGUF file, whose metadata holds all three and
    /// whose quantized bytes are small, or nothing behind a handle), without a second copy of
    /// dense weights.
    pub fn without_weights(&self) -> ModelFiles {
        let files = self
            .files
            .iter()
            .filter(|(name, _)| !name.ends_with(".safetensors"))
            .map(|(n, b)| (n.clone(), b.clone()))
            .collect();
        ModelFiles { files }
    }

    /// Parse the weights, single-file or sharded. Consumes the weight bytes.
    pub fn take_weights(&mut self) -> Result<Weights> {
        if let Some(name) = self.gguf_name()? {
            let bytes = self.take(&name).unwrap_or_default();
            return Ok(Weights {
                files: Vec::new(),
                gguf: vec![GgufFile::parse(&name, bytes)?],
                linear_hook: None,
            });
        }
        let mut shards = Vec::new();
        if let Some(index) = self.take("model.safetensors.index.json") {
            let index = index.read_all("model.safetensors.index.json")?;
            let index: Value = serde_json::from_slice(&index).map_err(|e| {
                Error::new(
                    Code::WeightsCorrupt,
                    format!("model.safetensors.index.json is not valid JSON: {e}"),
                )
            })?;
            let mut names: Vec<String> = index
                .get("weight_map")
                .and_then(Value::as_object)
                .map(|m| {
                    m.values()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            names.dedup();
            for name in names {
                shards.push(name);
            }
        } else if self.files.contains_key("model.safetensors") {
            shards.push("model.safetensors".to_string());
        }
        if shards.is_empty() {
            return Err(Error::new(
                Code::ModelMissingFile,
                "no weights found: expected model.safetensors (or shards listed in model.safetensors.index.json)",
            ));
        }
        let mut files = Vec::new();
        for shard in shards {
            let bytes = self.take(&shard).ok_or_else(|| {
                Error::new(
                    Code::ModelMissingFile,
                    format!("the weight shard {shard} listed in model.safetensors.index.json is missing"),
                )
                .with_details(json!({ "file": shard }))
            })?;
            files.push(SafeTensorsFile::parse(&shard, bytes)?);
        }
        Ok(Weights {
            files,
            gguf: Vec::new(),
            linear_hook: None,
        })
    }
}

/// The tensors the weight file `name` declares, with their number of values, read from its
/// header alone, before its data is read: what loading it will build. Names are Hugging Face
/// names (a GGUF tensor webtune does not map keeps its llama.cpp name). `None` for a file that
/// is not weights, or whose header is not whole (then loading itself decides).
pub fn declared_tensors(name: &str, bytes: &FileBytes) -> Option<Vec<(String, u64)>> {
    fn product(shape: impl IntoIterator<Item = u64>) -> Option<u64> {
        shape.into_iter().try_fold(1u64, |a, d| a.checked_mul(d))
    }
    if name.ends_with(".safetensors") {
        let len = u64::from_le_bytes(bytes.read(name, 0..8).ok()?.as_ref().try_into().ok()?);
        // The format caps the header at 100 MB: a larger length is corrupt, not worth reading.
        if len > 100_000_000 {
            return None;
        }
        let end = 8usize.checked_add(usize::try_from(len).ok()?)?;
        let header = bytes.read(name, 8..end).ok()?;
        let header: BTreeMap<String, Value> = serde_json::from_slice(&header).ok()?;
        return header
            .into_iter()
            .filter(|(k, _)| k != "__metadata__")
            .map(|(k, v)| {
                let shape: Vec<u64> = serde_json::from_value(v.get("shape")?.clone()).ok()?;
                Some((k, product(shape)?))
            })
            .collect();
    }
    if name.ends_with(".gguf") {
        let header = gguf::declared_header(name, bytes).ok()?;
        return header
            .tensors
            .iter()
            .map(|(k, t)| {
                let values = product(t.shape.iter().map(|&d| d as u64))?;
                Some((
                    gguf::hf_name(k).map_or_else(|| k.clone(), |(n, _)| n),
                    values,
                ))
            })
            .collect();
    }
    None
}

/// All weight tensors of a checkpoint, looked up by name.
#[derive(Debug, Clone)]
pub struct Weights {
    files: Vec<SafeTensorsFile>,
    gguf: Vec<GgufFile>,
    linear_hook: Option<LinearHook>,
}

/// What a [`LinearHook`] does to a weight, given its stored name.
pub type LinearTransform = dyn Fn(&str, Tensor<2>) -> Result<Tensor<2>> + Send + Sync;

/// A transform of each linear projection weight (`[in, out]`, by its stored name) as soon as it
/// is read — quantizing it, say, so that the model never exists whole in f32.
#[derive(Clone)]
pub struct LinearHook(pub std::sync::Arc<LinearTransform>);

impl std::fmt::Debug for LinearHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinearHook")
    }
}

impl Weights {
    /// Pass every weight [`linear_weight`](Self::linear_weight) reads through `hook`.
    pub fn set_linear_hook(&mut self, hook: LinearHook) {
        self.linear_hook = Some(hook);
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        let st = self
            .files
            .iter()
            .flat_map(|f| f.tensors.keys().map(String::as_str));
        st.chain(self.gguf.iter().flat_map(GgufFile::hf_names))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.files.iter().any(|f| f.tensors.contains_key(name))
            || self.gguf.iter().any(|g| g.shape_of(name).is_some())
    }

    /// The stored shape of a tensor, when present.
    pub fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        let st = self.files.iter().find_map(|f| f.tensors.get(name));
        st.map(|t| t.shape.clone()).or_else(|| {
            self.gguf
                .iter()
                .find_map(|g| g.shape_of(name).map(<[usize]>::to_vec))
        })
    }

    /// Bytes of the weight files.
    pub fn stored_bytes(&self) -> u64 {
        let safetensors = self.files.iter().map(SafeTensorsFile::size);
        let gguf = self.gguf.iter().map(GgufFile::size);
        safetensors.chain(gguf).map(|n| n as u64).sum()
    }

    /// What loading holds besides the model it builds: the weight files in memory, or, for
    /// files behind a handle, the largest tensor's bytes (read one at a time).
    pub fn load_bytes(&self) -> u64 {
        let st = self.files.iter().map(|f| match f.resident() {
            0 => (0, f.largest_tensor()),
            n => (n, 0),
        });
        let gguf = self.gguf.iter().map(|g| match g.resident() {
            0 => (0, g.largest_tensor()),
            n => (n, 0),
        });
        let (resident, largest) = st
            .chain(gguf)
            .fold((0, 0), |(r, l), (n, t)| (r + n, l.max(t)));
        (resident + largest) as u64
    }

    /// The dtypes stored, e.g. `["F32"]`.
    pub fn dtypes(&self) -> Vec<&'static str> {
        let mut d: Vec<_> = self
            .files
            .iter()
            .flat_map(|f| f.tensors.values().map(|t| t.dtype.name()))
            .chain(self.gguf.iter().flat_map(GgufFile::dtype_names))
            .collect();
        d.sort();
        d.dedup();
        d
    }

    /// Total number of stored values.
    pub fn num_values(&self) -> usize {
        self.files
            .iter()
            .flat_map(|f| f.tensors.values())
            .map(|t| t.shape.iter().product::<usize>())
            .sum::<usize>()
            + self.gguf.iter().map(GgufFile::num_values).sum::<usize>()
    }

    /// The first of `names` present (the Hub uses prefix variants such as `transformer.`),
    /// as f32 with the shape checked against `shape`.
    pub fn read(&self, names: &[String], shape: &[usize]) -> Result<Vec<f32>> {
        for name in names {
            let mut found = None;
            for f in &self.files {
                if let Some(t) = f.tensor_f32(name)? {
                    found = Some((t, f.name.as_str()));
                    break;
                }
            }
            for g in &self.gguf {
                if found.is_some() {
                    break;
                }
                if let Some(t) = g.tensor_f32(name)? {
                    found = Some((t, g.name.as_str()));
                }
            }
            if let Some(((data, found), file)) = found {
                if found != shape {
                    return Err(Error::new(
                        Code::ShapeMismatch,
                        format!(
                            "tensor {name} has shape {found:?} but the config implies {shape:?}; the weights do not belong to this config.json"
                        ),
                    )
                    .with_details(json!({ "tensor": name, "found": found, "expected": shape, "file": file })));
                }
                return Ok(data);
            }
        }
        Err(Error::new(
            Code::WeightsMissingTensor,
            format!(
                "the weights have no tensor {}",
                names.first().map(String::as_str).unwrap_or("?")
            ),
        )
        .with_details(json!({ "tried": names })))
    }

    pub fn tensor<const D: usize>(
        &self,
        names: &[String],
        shape: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>> {
        let data = self.read(names, &shape)?;
        Ok(Tensor::from_data(TensorData::new(data, shape), device))
    }

    /// A family's parameter by its burn path (`blocks.0.ln_1.gamma`), read under the names the
    /// family's table gives it, with burn's `shape`.
    pub fn param<const D: usize>(
        &self,
        table: &Table,
        path: &str,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>> {
        self.tensor(&table.hf_names(path), shape, device)
    }

    /// A linear projection's weight by its burn path, as the `[in, out]` matrix burn multiplies
    /// by, through the linear hook (QLoRA quantizes it as it loads). An `nn.Linear` weight is
    /// stored `[out, in]` and transposed here, in memory: a transposed view would be copied
    /// again by the CPU backend on every matmul. GPT-2's `Conv1D` is stored `[in, out]` already.
    pub fn linear(
        &self,
        table: &Table,
        path: &str,
        d_in: usize,
        d_out: usize,
        device: &Device,
    ) -> Result<Tensor<2>> {
        let row = table.by_model(path);
        let names = row.map_or_else(Vec::new, |(e, layer)| table.names_of(e, layer));
        let weight = if row.is_some_and(|(e, _)| e.layout == Layout::Linear) {
            let data = self.read(&names, &[d_out, d_in])?;
            Tensor::from_data(
                TensorData::new(transposed(&data, d_out, d_in), [d_in, d_out]),
                device,
            )
        } else {
            self.tensor(&names, [d_in, d_out], device)?
        };
        match (&self.linear_hook, names.first()) {
            (Some(hook), Some(name)) => (hook.0)(name, weight),
            _ => Ok(weight),
        }
    }
}

/// A model file from disk: weights are opened to be read tensor by tensor, anything else is
/// read whole.
#[cfg(not(target_arch = "wasm32"))]
fn open_model_file(name: &str, path: &std::path::Path) -> Result<FileBytes> {
    let cannot = |e: std::io::Error| {
        Error::new(
            Code::ModelMissingFile,
            format!("cannot read {}: {e}", path.display()),
        )
    };
    if name.ends_with(".safetensors") || name.ends_with(".gguf") {
        let file = super::source::DiskFile::open(path).map_err(cannot)?;
        return Ok(FileBytes::Handle(std::sync::Arc::new(file)));
    }
    std::fs::read(path).map(FileBytes::Memory).map_err(cannot)
}

/// A row-major `[rows, cols]` matrix as row-major `[cols, rows]`.
pub fn transposed(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    // Blocks keep both the reads and the writes within a few cache lines.
    const BLOCK: usize = 32;
    for i0 in (0..rows).step_by(BLOCK) {
        for j0 in (0..cols).step_by(BLOCK) {
            for i in i0..(i0 + BLOCK).min(rows) {
                for j in j0..(j0 + BLOCK).min(cols) {
                    out[j * rows + i] = data[i * cols + j];
                }
            }
        }
    }
    out
}

/// Read an integer field of config.json.
pub fn config_usize(config: &Value, key: &str) -> Result<usize> {
    config
        .get(key)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| {
            Error::new(
                Code::ModelConfigInvalid,
                format!("config.json has no positive integer {key:?}"),
            )
            .with_details(json!({ "key": key }))
        })
}

/// The architecture named by config.json (`model_type`), refused by name when unsupported.
pub fn architecture(config: &Value) -> Result<String> {
    let model_type = config
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Error::new(
                Code::ModelConfigInvalid,
                "config.json has no \"model_type\", so the architecture is unknown",
            )
        })?;
    if SUPPORTED_ARCHITECTURES.contains(&model_type) {
        Ok(model_type.to_string())
    } else {
        Err(Error::new(
            Code::UnsupportedArchitecture,
            format!(
                "webtune does not support the {model_type:?} architecture yet; supported: {}",
                SUPPORTED_ARCHITECTURES.join(", ")
            ),
        )
        .with_details(json!({ "model_type": model_type, "supported": SUPPORTED_ARCHITECTURES })))
    }
}

/// 64-bit FNV-1a: small, dependency-free, and stable across platforms (an identity, not a
/// defence against forgery).
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::safetensors::write_f32;

    fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
    }

    #[test]
    fn declared_tensors_come_from_the_header_alone() {
        let declared = |name: &str, bytes: &[u8]| {
            let tensors = declared_tensors(name, &bytes.to_vec().into())?;
            Some(tensors.iter().map(|(_, n)| n).sum::<u64>())
        };
        let bytes = write_f32(&[("a", &[2, 3], &[0.0; 6]), ("b", &[4], &[0.0; 4])]);
        assert_eq!(declared("model.safetensors", &bytes), Some(10));
        // The header is all it reads: cut right after it, the answer is the same.
        let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(
            declared("model.safetensors", &bytes[..header_end]),
            Some(10)
        );
        assert_eq!(
            declared("model.safetensors", &bytes[..header_end - 1]),
            None
        );
        assert_eq!(declared("config.json", b"{}"), None);

        let gguf = fixture("tests/fixtures/tiny_gguf/tiny_llama_f32.gguf");
        let whole = GgufFile::parse("tiny.gguf", gguf.clone()).unwrap();
        let values = whole.num_values() as u64;
        assert_eq!(declared("tiny.gguf", &gguf), Some(values));
        // A GGUF file cut inside its data still declares every tensor; cut inside its
        // metadata it declares nothing.
        let cut = fixture("tests/fixtures/hostile/gguf/tiny_llama_f32-cut-4096.gguf");
        assert_eq!(declared("cut.gguf", &cut), Some(values));
        assert_eq!(declared("cut.gguf", &gguf[..300]), None);
    }

    fn model(config: &[u8], shards: &[Vec<u8>]) -> ModelFiles {
        let mut f = ModelFiles::new();
        f.insert("config.json", config.to_vec());
        for (i, shard) in shards.iter().enumerate() {
            f.insert(format!("model-{i:05}.safetensors"), shard.clone());
        }
        f.insert("tokenizer.json", b"{}".to_vec());
        f
    }

    #[test]
    fn the_fingerprint_follows_config_and_tensors_not_files() {
        let big: Vec<f32> = (0..10_000).map(|i| i as f32 * 0.5).collect();
        let small = [1.0f32, 2.0, 3.0];
        let whole = write_f32(&[("a", &[100, 100], &big), ("b", &[3], &small)]);
        let id = model(b"{}", std::slice::from_ref(&whole))
            .fingerprint()
            .unwrap();
        assert_eq!(id.len(), 16);
        // The same tensors in two shards: the same model.
        let (a, b) = (
            write_f32(&[("a", &[100, 100], &big)]),
            write_f32(&[("b", &[3], &small)]),
        );
        assert_eq!(model(b"{}", &[a.clone(), b]).fingerprint().unwrap(), id);
        // Another config, another shape, a changed value (sampled or whole): another model.
        assert_ne!(model(b"{ }", &[whole]).fingerprint().unwrap(), id);
        let reshaped = write_f32(&[("a", &[10, 1000], &big), ("b", &[3], &small)]);
        assert_ne!(model(b"{}", &[reshaped]).fingerprint().unwrap(), id);
        for at in [0, 5_000, 9_999] {
            let mut edited = big.clone();
            edited[at] += 1.0;
            let changed = write_f32(&[("a", &[100, 100], &edited), ("b", &[3], &small)]);
            assert_ne!(
                model(b"{}", &[changed]).fingerprint().unwrap(),
                id,
                "value {at}"
            );
        }
        let changed = write_f32(&[("a", &[100, 100], &big), ("b", &[3], &[1.0, 2.0, 4.0])]);
        assert_ne!(model(b"{}", &[changed]).fingerprint().unwrap(), id);
        // The tokenizer is not the weights.
        let mut f = model(b"{}", &[a, write_f32(&[("b", &[3], &small)])]);
        f.insert("tokenizer.json", b"{\"x\": 1}".to_vec());
        assert_eq!(f.fingerprint().unwrap(), id);
    }
}
