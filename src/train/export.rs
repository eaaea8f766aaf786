//! Exports in the formats practitioners already use, as `(file name, bytes)` pairs so that the
//! CLI writes them to a folder and the browser offers them as downloads:
//! - the merged model: `model.safetensors` under Hugging Face's tensor names (GPT-2's Conv1D
//!   `[in, out]` kept as is, Llama's `nn.Linear` transposed back to `[out, in]`, a tied LM head
//!   left out as transformers expects) and `config.json`;
//! - a PEFT adapter: `adapter_model.safetensors` (`base_model.model.<module>.lora_A.weight`
//!   `[r, in]`, `lora_B.weight` `[out, r]`) and `adapter_config.json`.

use serde_json::{json, Value};

use super::finetune::TrainableModel;
use super::lora::{
    hf_tensor, lora_factors, merge, named_tensors, read_f32, transpose_2d, FamilyKind,
};
use crate::error::{Code, Error, Result};
use crate::io::hf::ModelFiles;
use crate::io::safetensors::{
    write_f32_with_metadata, write_with_metadata, SafeTensorsFile, StoreDtype,
};
use crate::models::loaded::Family;
use burn::module::Module;

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

/// Everything a fine-tuned causal LM exports: for LoRA the PEFT adapter (`adapter/…`, naming
/// `base_model` as its base), and the merged model with the base's tokenizer files
/// (`merged/…`). `files` are the base model's.
pub async fn export_all(
    model: &TrainableModel,
    files: &ModelFiles,
    base_model: &str,
) -> Result<ExportFiles> {
    let mut out: ExportFiles = Vec::new();
    if model.lora.is_some() {
        for (n, b) in export_adapter(model, base_model).await? {
            out.push((format!("adapter/{n}"), b));
        }
    }
    for (n, b) in export_merged(&model.family, &files.config()?).await? {
        out.push((format!("merged/{n}"), b));
    }
    out.extend(tokenizer_files(files));
    Ok(out)
}

fn inference_copy(family: &Family) -> Family {
    match family {
        Family::Gpt2(m) => Family::Gpt2(m.valid()),
        Family::Llama(m) => Family::Llama(m.valid()),
        Family::Bert(m) => Family::Bert(m.valid()),
    }
}

/// Merged f32 weights under Hugging Face names, `(name, shape, data)`, in model order.
pub async fn merged_tensors(family: &Family) -> Result<Vec<(String, Vec<usize>, Vec<f32>)>> {
    let kind = FamilyKind::of(family);
    // Merge a copy: the caller's model keeps its adapters.
    let merged = merge(inference_copy(family));
    let mut out = Vec::new();
    for t in named_tensors(&merged) {
        let hf = hf_tensor(kind, &t.path).ok_or_else(|| {
            Error::new(
                Code::Internal,
                format!("no Hugging Face name for parameter {}", t.path),
            )
        })?;
        let data = read_f32(t.value).await?;
        let (shape, data) = if hf.transposed {
            (vec![t.shape[1], t.shape[0]], transpose_2d(&data, &t.shape))
        } else {
            (t.shape, data)
        };
        out.push((hf.name, shape, data));
    }
    Ok(out)
}

/// `model.safetensors` bytes of the merged model (f32, transformers' `format: pt`).
pub async fn merged_safetensors(family: &Family) -> Result<Vec<u8>> {
    let tensors = merged_tensors(family).await?;
    let refs: Vec<(&str, &[usize], &[f32])> = tensors
        .iter()
        .map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice()))
        .collect();
    Ok(write_f32_with_metadata(&refs, &[("format", "pt")]))
}

/// `model.safetensors` + `config.json` of the merged model. `base_config` is the config.json
/// the model was loaded from; only its dtype is changed (the weights are written as f32).
pub async fn export_merged(family: &Family, base_config: &Value) -> Result<ExportFiles> {
    let weights = merged_safetensors(family).await?;
    let mut config = base_config.clone();
    if let Some(obj) = config.as_object_mut() {
        for key in ["torch_dtype", "dtype"] {
            if obj.contains_key(key) {
                obj.insert(key.into(), json!("float32"));
            }
        }
    }
    let config = serde_json::to_vec_pretty(&config)
        .map_err(|e| Error::new(Code::Internal, format!("{e}")))?;
    Ok(vec![
        ("model.safetensors".into(), weights),
        ("config.json".into(), config),
    ])
}

/// Rewrites an export's merged weights (`merged/model.safetensors`, written in f32) in `dtype`
/// and records it as `torch_dtype` in `merged/config.json`; the adapter stays f32, as PEFT
/// keeps adapters. Nothing to do for f32.
pub fn store_merged_as(files: &mut ExportFiles, dtype: StoreDtype) -> Result<()> {
    if dtype == StoreDtype::F32 {
        return Ok(());
    }
    for (name, bytes) in files.iter_mut() {
        match name.as_str() {
            "merged/model.safetensors" => {
                let file = SafeTensorsFile::parse(name, std::mem::take(bytes))?;
                let mut tensors = Vec::with_capacity(file.tensors.len());
                for tensor in file.tensors.keys() {
                    let (data, shape) = file.read_f32(tensor).ok_or_else(|| {
                        Error::new(Code::Internal, format!("{tensor} cannot be read back"))
                    })?;
                    tensors.push((tensor.as_str(), shape, data));
                }
                let refs: Vec<(&str, &[usize], &[f32])> = tensors
                    .iter()
                    .map(|(n, s, d)| (*n, s.as_slice(), d.as_slice()))
                    .collect();
                *bytes = write_with_metadata(&refs, &[("format", "pt")], dtype);
            }
            "merged/config.json" => {
                let mut config: Value = serde_json::from_slice(bytes)
                    .map_err(|e| Error::new(Code::Internal, format!("{e}")))?;
                if let Some(obj) = config.as_object_mut() {
                    obj.insert("torch_dtype".into(), json!(dtype.torch_name()));
                    if obj.contains_key("dtype") {
                        obj.insert("dtype".into(), json!(dtype.torch_name()));
                    }
                }
                *bytes = serde_json::to_vec_pretty(&config)
                    .map_err(|e| Error::new(Code::Internal, format!("{e}")))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// `adapter_model.safetensors` + `adapter_config.json` in PEFT's format, loadable with
/// `PeftModel.from_pretrained(base, dir)`. `base_model` is recorded as
/// `base_model_name_or_path` (a Hub id or a path).
pub async fn export_adapter(model: &TrainableModel, base_model: &str) -> Result<ExportFiles> {
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
        "modules_to_save": null,
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
