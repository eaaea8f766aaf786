//! Exports in the formats practitioners already use, as `(file name, bytes)` pairs so that the
//! CLI writes them to a folder and the browser offers them as downloads:
//! - the merged model: `model.safetensors` under Hugging Face's tensor names (GPT-2's Conv1D
//!   `[in, out]` kept as is, Llama's `nn.Linear` transposed back to `[out, in]`, a tied LM head
//!   left out as transformers expects) and `config.json`;
//! - a PEFT adapter: `adapter_model.safetensors` (`base_model.model.<module>.lora_A.weight`
//!   `[r, in]`, `lora_B.weight` `[out, r]`) and `adapter_config.json`.

use serde_json::{json, Value};

use burn::module::{Module, Param};
use burn::prelude::*;

use super::finetune::TrainableModel;
use super::lora::{hf_tensor, lora_factors, read_f32, transpose_2d, FamilyKind};
use crate::error::{Code, Error, Result};
use crate::io::hf::ModelFiles;
use crate::io::safetensors::{self, write_f32_with_metadata, StoreDtype};
use crate::models::frozen::dequantize;
use crate::models::loaded::Family;
use crate::models::walk::{Paths, VisitAt};

/// Exported files: name → bytes.
pub type ExportFiles = Vec<(String, Vec<u8>)>;

/// Files copied from the base model into the merged export, when present.
pub(crate) const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
];

/// The base model's tokenizer files (those of [`TOKENIZER_FILES`] it has) as `merged/…`.
pub(crate) fn tokenizer_files(files: &ModelFiles) -> ExportFiles {
    TOKENIZER_FILES
        .iter()
        .filter_map(|n| files.get(n).map(|b| (format!("merged/{n}"), b.to_vec())))
        .collect()
}

/// What a fine-tuned model exports: small files ready now (the adapter, `config.json`, the
/// tokenizer) and the merged weights (`merged/model.safetensors`), written only when asked
/// for, one tensor at a time, from the trained model itself: a job never holds a merged copy
/// of the model, and saving one needs memory for its largest tensor, not for the file.
pub struct Export {
    /// Name → bytes of everything but the merged weights.
    pub files: ExportFiles,
    /// The merged weights.
    merged: MergedWeights,
}

/// The name of the merged weights in an export.
pub const MERGED_WEIGHTS: &str = "merged/model.safetensors";

impl Export {
    /// `files` plus the merged model of `model`: its weights stored in `dtype`, and `config`
    /// (the config.json it was loaded from, or a head's) as `merged/config.json` with `dtype`
    /// recorded as its `torch_dtype`.
    pub fn new(
        mut files: ExportFiles,
        config: &Value,
        model: &TrainableModel,
        dtype: StoreDtype,
    ) -> Result<Self> {
        files.insert(0, ("merged/config.json".into(), with_dtype(config, dtype)?));
        Ok(Self {
            files,
            merged: MergedWeights::of(model, dtype)?,
        })
    }

    /// Every file's name: the adapter's, then the merged model's (its weights first).
    pub fn names(&self) -> Vec<String> {
        let named = |merged: bool| {
            self.files
                .iter()
                .filter(move |(n, _)| n.starts_with("merged/") == merged)
                .map(|(n, _)| n.clone())
        };
        let weights = std::iter::once(MERGED_WEIGHTS.to_string());
        named(false).chain(weights).chain(named(true)).collect()
    }

    /// The size of `name` in bytes, known before it is written.
    pub fn size(&self, name: &str) -> Option<u64> {
        match name {
            MERGED_WEIGHTS => Some(self.merged.size()),
            _ => self
                .files
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, b)| b.len() as u64),
        }
    }

    /// Write `name` through `sink`, in pieces (one tensor of the merged weights at a time).
    pub async fn write(&self, name: &str, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        match name {
            MERGED_WEIGHTS => self.merged.write(sink).await,
            _ => {
                let (_, bytes) = self.files.iter().find(|(n, _)| n == name).ok_or_else(|| {
                    Error::new(
                        Code::ModelMissingFile,
                        format!("the export has no file {name}"),
                    )
                })?;
                sink(bytes)
            }
        }
    }

    /// One file whole (the merged weights materialized: for small models and tests).
    pub async fn read(&self, name: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write(name, &mut |b| {
            out.extend_from_slice(b);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Every file whole, in [`names`](Self::names) order.
    pub async fn read_all(&self) -> Result<ExportFiles> {
        let mut out = Vec::new();
        for name in self.names() {
            let bytes = self.read(&name).await?;
            out.push((name, bytes));
        }
        Ok(out)
    }

    /// Add a small file (or replace one of the same name).
    pub fn insert(&mut self, name: impl Into<String>, bytes: Vec<u8>) {
        let name = name.into();
        self.files.retain(|(n, _)| *n != name);
        self.files.push((name, bytes));
    }

    pub fn has(&self, name: &str) -> bool {
        self.size(name).is_some()
    }
}

/// Everything a fine-tuned causal LM exports: for LoRA the PEFT adapter (`adapter/…`, naming
/// `base_model` as its base), and the merged model with the base's tokenizer files
/// (`merged/…`), its weights stored in `dtype`. `files` are the base model's.
pub async fn export_all(
    model: &TrainableModel,
    files: &ModelFiles,
    base_model: &str,
    dtype: StoreDtype,
) -> Result<Export> {
    let mut out: ExportFiles = Vec::new();
    if model.lora.is_some() {
        for (n, b) in export_adapter(model, base_model).await? {
            out.push((format!("adapter/{n}"), b));
        }
    }
    out.extend(tokenizer_files(files));
    Export::new(out, &files.config()?, model, dtype)
}

/// One tensor of the merged model, computed when it is written.
struct MergedTensor {
    /// Hugging Face's name and shape (as written).
    name: String,
    shape: Vec<usize>,
    /// burn keeps it `[in, out]`; the file has `[out, in]`.
    transposed: bool,
    /// burn's shape.
    dims: Vec<usize>,
    /// The stored base, flattened (dequantized when it is quantized).
    base: Box<dyn Fn() -> Tensor<1>>,
    /// LoRA factors `a [in, r]`, `b [r, out]`, flattened, with the rank.
    lora: Option<(Tensor<1>, Tensor<1>, usize)>,
}

/// The merged weights of a trained model under Hugging Face names, in model order: each is
/// `base + scale · a @ b` where LoRA adapted it, the (dequantized) base or the trained weight
/// elsewhere. The tensors are shared with the model, not copied.
struct MergedWeights {
    tensors: Vec<MergedTensor>,
    scale: f64,
    dtype: StoreDtype,
}

impl MergedWeights {
    fn of(model: &TrainableModel, dtype: StoreDtype) -> Result<Self> {
        struct Walk {
            kind: FamilyKind,
            out: Vec<MergedTensor>,
            factor: Option<(String, Tensor<1>)>,
            error: Option<Error>,
        }
        impl VisitAt for Walk {
            fn visit_at<const D: usize>(&mut self, path: &str, param: &Param<Tensor<D>>) {
                let value = param.base();
                let dims = value.dims().to_vec();
                let n = dims.iter().product::<usize>();
                // Inside an adapted parameter the walk sees the base, then `lora.a`, `lora.b`.
                if let Some(owner) = path.strip_suffix(".lora.a") {
                    self.factor = Some((owner.to_string(), value.reshape([n])));
                    return;
                }
                if let Some(owner) = path.strip_suffix(".lora.b") {
                    let a = self.factor.take().filter(|(o, _)| o == owner);
                    let base = self.out.last_mut().filter(|_| a.is_some());
                    match (a, base) {
                        (Some((_, a)), Some(base)) => {
                            base.lora = Some((a, value.reshape([n]), dims[0]));
                        }
                        _ => {
                            self.error = Some(Error::new(
                                Code::Internal,
                                format!("LoRA factors of {owner} out of order"),
                            ))
                        }
                    }
                    return;
                }
                let Some(hf) = hf_tensor(self.kind, path) else {
                    self.error = Some(Error::new(
                        Code::Internal,
                        format!("no Hugging Face name for parameter {path}"),
                    ));
                    return;
                };
                let base = move || dequantize(value.clone()).reshape([n]);
                let shape = if hf.transposed {
                    vec![dims[1], dims[0]]
                } else {
                    dims.clone()
                };
                self.out.push(MergedTensor {
                    name: hf.name,
                    shape,
                    transposed: hf.transposed,
                    dims,
                    base: Box::new(base),
                    lora: None,
                });
            }
        }
        let family = model.family.valid();
        let mut walk = Paths::new(Walk {
            kind: FamilyKind::of(&family),
            out: Vec::new(),
            factor: None,
            error: None,
        });
        match &family {
            Family::Gpt2(m) => m.visit(&mut walk),
            Family::Llama(m) => m.visit(&mut walk),
            Family::Bert(m) => m.visit(&mut walk),
        }
        if let Some(e) = walk.inner.error {
            return Err(e);
        }
        Ok(Self {
            tensors: walk.inner.out,
            scale: model.lora.as_ref().map_or(0.0, |l| l.scale()),
            dtype,
        })
    }

    fn header(&self) -> Vec<u8> {
        let entries: Vec<(&str, &[usize])> = self
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), t.shape.as_slice()))
            .collect();
        safetensors::header(&entries, &[("format", "pt")], self.dtype)
    }

    fn size(&self) -> u64 {
        let values: usize = self
            .tensors
            .iter()
            .map(|t| t.shape.iter().product::<usize>())
            .sum();
        (self.header().len() + values * self.dtype.width()) as u64
    }

    /// The tensor's merged values as stored in the file (Hugging Face's layout).
    async fn values(&self, t: &MergedTensor) -> Result<Vec<f32>> {
        let mut w = (t.base)();
        if let Some((a, b, r)) = &t.lora {
            let (d_in, d_out) = (t.dims[0], t.dims[1]);
            let a = a.clone().reshape([d_in, *r]);
            let b = b.clone().reshape([*r, d_out]);
            let merged = w.reshape([d_in, d_out]) + a.matmul(b).mul_scalar(self.scale);
            w = merged.reshape([d_in * d_out]);
        }
        let data = read_f32(w).await?;
        Ok(if t.transposed {
            transpose_2d(&data, &t.dims)
        } else {
            data
        })
    }

    async fn write(&self, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        sink(&self.header())?;
        let mut buf = Vec::new();
        for t in &self.tensors {
            buf.clear();
            safetensors::encode(&self.values(t).await?, self.dtype, &mut buf);
            sink(&buf)?;
        }
        Ok(())
    }
}

/// Merged f32 weights under Hugging Face names, `(name, shape, data)`, in model order.
pub async fn merged_tensors(model: &TrainableModel) -> Result<Vec<(String, Vec<usize>, Vec<f32>)>> {
    let merged = MergedWeights::of(model, StoreDtype::F32)?;
    let mut out = Vec::new();
    for t in &merged.tensors {
        out.push((t.name.clone(), t.shape.clone(), merged.values(t).await?));
    }
    Ok(out)
}

/// `config` as config.json bytes with `dtype` as its `torch_dtype` and `dtype` where it names
/// one (transformers reads a missing `torch_dtype` as f32, so f32 adds none).
fn with_dtype(config: &Value, dtype: StoreDtype) -> Result<Vec<u8>> {
    let mut config = config.clone();
    if let Some(obj) = config.as_object_mut() {
        for key in ["torch_dtype", "dtype"] {
            let add = key == "torch_dtype" && dtype != StoreDtype::F32;
            if add || obj.contains_key(key) {
                obj.insert(key.into(), json!(dtype.torch_name()));
            }
        }
    }
    serde_json::to_vec_pretty(&config).map_err(|e| Error::new(Code::Internal, format!("{e}")))
}

/// `model.safetensors` + `config.json` of the merged model, whole (f32). `base_config` is the
/// config.json the model was loaded from.
pub async fn export_merged(model: &TrainableModel, base_config: &Value) -> Result<ExportFiles> {
    let export = Export::new(Vec::new(), base_config, model, StoreDtype::F32)?;
    let mut out = Vec::new();
    for (name, bytes) in export.read_all().await? {
        out.push((name.trim_start_matches("merged/").to_string(), bytes));
    }
    Ok(out)
}

/// `adapter_model.safetensors` + `adapter_config.json` in PEFT's format, loadable with
/// `PeftModel.from_pretrained(base, dir)`. `base_model` is recorded as
/// `base_model_name_or_path` (a Hub id or a path).
pub async fn export_adapter(model: &TrainableModel, base_model: &str) -> Result<ExportFiles> {
    export_adapter_with(model, base_model, &[], &[]).await
}

/// [`export_adapter`] with modules PEFT saves whole beside the factors (`modules_to_save`, such
/// as a classifier's head): their names in `modules` and their tensors in `saved`, under their
/// Hugging Face names (stored as `base_model.model.<name>`).
pub async fn export_adapter_with(
    model: &TrainableModel,
    base_model: &str,
    modules: &[&str],
    saved: &[(&str, &[usize], &[f32])],
) -> Result<ExportFiles> {
    let spec = model.lora.as_ref().ok_or_else(|| {
        Error::config("this model was fully fine-tuned; export the merged model instead")
    })?;
    let factors = lora_factors(&model.family).await?;
    let names: Vec<(String, String)> = factors
        .iter()
        .map(|f| {
            (
                format!("base_model.model.{}.lora_A.weight", f.module),
                format!("base_model.model.{}.lora_B.weight", f.module),
            )
        })
        .collect();
    let shapes: Vec<([usize; 2], [usize; 2])> = factors
        .iter()
        .map(|f| ([f.rank, f.d_in], [f.d_out, f.rank]))
        .collect();
    let mut refs: Vec<(&str, &[usize], &[f32])> = Vec::new();
    for ((f, (na, nb)), (sa, sb)) in factors.iter().zip(&names).zip(&shapes) {
        refs.push((na.as_str(), sa.as_slice(), f.a.as_slice()));
        refs.push((nb.as_str(), sb.as_slice(), f.b.as_slice()));
    }
    let saved_names: Vec<String> = saved
        .iter()
        .map(|(name, _, _)| format!("base_model.model.{name}"))
        .collect();
    for ((_, shape, data), name) in saved.iter().zip(&saved_names) {
        refs.push((name.as_str(), shape, data));
    }
    let weights = write_f32_with_metadata(&refs, &[("format", "pt")]);
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "target_modules": spec.targets,
        "bias": "none",
        // GPT-2's Conv1D stores [in, out]; PEFT needs to know to transpose its delta.
        "fan_in_fan_out": model.kind == FamilyKind::Gpt2,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": if modules.is_empty() { Value::Null } else { json!(modules) },
        "use_rslora": false,
        "use_dora": false,
    });
    let config = serde_json::to_vec_pretty(&config)
        .map_err(|e| Error::new(Code::Internal, format!("{e}")))?;
    Ok(vec![
        ("adapter_model.safetensors".into(), weights),
        ("adapter_config.json".into(), config),
    ])
}
