//! Reading a PEFT LoRA adapter (`adapter_config.json` + `adapter_model.safetensors`) back onto its
//! base model: webtune's own adapter exports, or adapters trained with PEFT on a workstation.
//!
//! The factors are attached with [`apply_lora`] from their stored values, un-merged beside the
//! base (hot swap) or merged into it. A classifier's adapter also saves its head whole
//! (`modules_to_save: ["classifier"]`, as PEFT's `SEQ_CLS` task does); webtune's own carry the
//! head's labels and pooling in [`ADAPTER_CLASSIFIER`] beside PEFT's two files. Only what
//! changes the function is refused (DoRA, per-module rank/alpha patterns, trained biases,
//! other saved modules); `lora_dropout` does not matter at inference and is ignored.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use burn::prelude::*;
use burn::tensor::TensorData;

use super::lora::{apply_lora, merge, FamilyKind, LoraInit, LoraSpec};
use crate::error::{Code, Error, Result};
use crate::io::hf::transposed;
use crate::io::safetensors::SafeTensorsFile;
use crate::models::bert::Pooling;
use crate::models::loaded::{Family, LoadedModel};

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// webtune's note beside a classifier's adapter: `{"labels": [...], "pooling": "mean"}`, what
/// PEFT's config does not record (the head's rows' names and the pooling it was trained on).
pub const ADAPTER_CLASSIFIER: &str = "webtune_classifier.json";

/// Modules PEFT saves whole for a sequence-classification head (`SEQ_CLS` adds both names).
const HEAD_MODULES: [&str; 2] = ["classifier", "score"];

/// A parsed adapter, ready to attach.
#[derive(Debug, Clone)]
pub struct PeftAdapter {
    pub spec: LoraSpec,
    /// Hugging Face names of the adapted modules, sorted.
    pub modules: Vec<String>,
    /// `base_model_name_or_path` from the config, for messages.
    pub base_model: Option<String>,
    /// `lora_alpha` as written (the spec's alpha folds in rsLoRA's scaling).
    pub lora_alpha: f64,
    pub use_rslora: bool,
    /// A classifier's head, saved whole beside the factors.
    pub head: Option<AdapterHead>,
}

/// A classification head an adapter carries: `classifier.weight` `[labels, hidden]` (PEFT's
/// layout, row-major) and `classifier.bias`, with the labels and pooling when
/// [`ADAPTER_CLASSIFIER`] gives them.
#[derive(Debug, Clone)]
pub struct AdapterHead {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub num_labels: usize,
    pub hidden: usize,
    pub labels: Option<Vec<String>>,
    pub pooling: Option<Pooling>,
}

impl PeftAdapter {
    /// With the labels and pooling of [`ADAPTER_CLASSIFIER`] (its bytes): one label per row of
    /// the head.
    pub fn with_classifier_note(mut self, note: &[u8]) -> Result<Self> {
        #[derive(serde::Deserialize)]
        struct Note {
            labels: Vec<String>,
            pooling: Option<Pooling>,
        }
        let note: Note = serde_json::from_slice(note).map_err(|e| {
            bad(format!(
                "{ADAPTER_CLASSIFIER} is not what webtune writes: {e}"
            ))
            .with_details(json!({ "file": ADAPTER_CLASSIFIER }))
        })?;
        let head = self.head.as_mut().ok_or_else(|| {
            bad(format!(
                "{ADAPTER_CLASSIFIER} names a classifier's labels, but the adapter saves no \
                 classifier head"
            ))
        })?;
        if note.labels.len() != head.num_labels {
            return Err(Error::new(
                Code::ShapeMismatch,
                format!(
                    "{ADAPTER_CLASSIFIER} names {} labels, but the adapter's head has {} rows",
                    note.labels.len(),
                    head.num_labels
                ),
            ));
        }
        head.labels = Some(note.labels);
        head.pooling = note.pooling;
        Ok(self)
    }

    /// What the CLI prints about the adapter it applied.
    pub fn summary(&self) -> Value {
        json!({
            "r": self.spec.rank,
            "lora_alpha": self.lora_alpha,
            "use_rslora": self.use_rslora,
            "scale": self.spec.scale(),
            "modules": self.modules.len(),
            "base_model_name_or_path": self.base_model,
            "classifier_labels": self.head.as_ref().map(|h| h.num_labels),
        })
    }
}

/// `(lora_A, lora_B)` of one module as they are found in the file.
type FactorPair = (Option<Vec<f32>>, Option<Vec<f32>>);

fn bad(message: impl Into<String>) -> Error {
    Error::new(Code::ModelConfigInvalid, message)
}

/// Parse an adapter from the bytes of its two files. `file` names the weights in messages.
pub fn parse_peft_adapter(config: &[u8], file: &str, weights: Vec<u8>) -> Result<PeftAdapter> {
    let config: Value = serde_json::from_slice(config).map_err(|e| {
        bad(format!("{ADAPTER_CONFIG} is not valid JSON: {e}"))
            .with_details(json!({ "file": ADAPTER_CONFIG }))
    })?;
    let field = |key: &str| config.get(key).filter(|v| !v.is_null());
    let peft_type = field("peft_type").and_then(Value::as_str).unwrap_or("");
    if !peft_type.eq_ignore_ascii_case("lora") {
        return Err(bad(format!(
            "{ADAPTER_CONFIG} describes a {peft_type:?} adapter; webtune reads LoRA adapters only"
        )));
    }
    let rank = field("r")
        .and_then(Value::as_u64)
        .filter(|&r| r > 0)
        .ok_or_else(|| bad(format!("{ADAPTER_CONFIG} needs a positive integer \"r\"")))?
        as usize;
    let lora_alpha = field("lora_alpha")
        .and_then(Value::as_f64)
        .filter(|a| a.is_finite())
        .ok_or_else(|| bad(format!("{ADAPTER_CONFIG} needs a numeric \"lora_alpha\"")))?;
    let flag = |key: &str| field(key).and_then(Value::as_bool).unwrap_or(false);
    let use_rslora = flag("use_rslora");
    if flag("use_dora") {
        return Err(bad(
            "this is a DoRA adapter (use_dora: true), which webtune does not implement; merge it \
             in PEFT (merge_and_unload) and load the merged model instead",
        ));
    }
    for key in ["rank_pattern", "alpha_pattern"] {
        if field(key)
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
        {
            return Err(bad(format!(
                "{ADAPTER_CONFIG} sets per-module ranks or alphas ({key}), which webtune does not \
                 read; merge the adapter in PEFT and load the merged model instead"
            )));
        }
    }
    if let Some(bias) = field("bias").and_then(Value::as_str) {
        if bias != "none" {
            return Err(bad(format!(
                "the adapter trains biases (bias: {bias:?}); webtune reads adapters with bias \"none\""
            )));
        }
    }
    if let Some(m) = field("modules_to_save").and_then(Value::as_array) {
        let other: Vec<&str> = m
            .iter()
            .map(|v| v.as_str().unwrap_or("?"))
            .filter(|name| !HEAD_MODULES.contains(name))
            .collect();
        if !other.is_empty() {
            return Err(bad(format!(
                "the adapter also saves whole modules ({}); webtune reads LoRA factors and a \
                 classifier's head only — load the merged model instead",
                other.join(", ")
            )));
        }
    }
    if flag("lora_bias") {
        return Err(bad(
            "the adapter has a bias on lora_B (lora_bias: true), which webtune does not read; \
             merge it in PEFT (merge_and_unload) and load the merged model instead",
        ));
    }
    // PEFT options that change which weights the factors apply to or add other trained
    // tensors; present in newer PEFT configs as null when unused.
    for key in [
        "layers_to_transform",
        "layer_replication",
        "trainable_token_indices",
        "target_parameters",
        "alora_invocation_tokens",
    ] {
        let used = match field(key) {
            None => false,
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Object(o)) => !o.is_empty(),
            Some(_) => true,
        };
        if used {
            return Err(bad(format!(
                "the adapter uses PEFT's {key}, which webtune does not read; merge it in PEFT \
                 (merge_and_unload) and load the merged model instead"
            )));
        }
    }

    let weights = SafeTensorsFile::parse(file, weights)?;
    // PEFT saves `base_model.model.<module>.lora_{A,B}.weight`; an adapter name may sit before
    // `.weight` in hand-saved state dicts.
    let mut factors: BTreeMap<String, FactorPair> = BTreeMap::new();
    let mut head: FactorPair = (None, None);
    let mut head_shape = Vec::new();
    for name in weights.tensors.keys() {
        let unknown = || {
            bad(format!(
                "{file} holds {name}, which is not a LoRA factor of a linear layer; webtune reads \
                 lora_A/lora_B pairs only"
            ))
            .with_details(json!({ "file": file, "tensor": name }))
        };
        let rest = name.strip_prefix("base_model.model.").ok_or_else(unknown)?;
        // A saved head: `classifier.weight` as PEFT writes it (its wrapper's
        // `modules_to_save.<adapter>.` taken out), or with the wrapper left in.
        let head_part = rest.strip_prefix("classifier.").map(|tail| {
            tail.split_once("modules_to_save.")
                .and_then(|(_, t)| t.split_once('.'))
                .map_or(tail, |(_, t)| t)
        });
        if let Some(part @ ("weight" | "bias")) = head_part {
            let (data, shape) = weights.read_f32(name).ok_or_else(|| {
                Error::new(
                    Code::WeightsTruncated,
                    format!("{file}: {name} cannot be read"),
                )
            })?;
            if part == "weight" {
                head_shape = shape;
                head.0 = Some(data);
            } else {
                head.1 = Some(data);
            }
            continue;
        }
        let (module, which) = ["lora_A", "lora_B"]
            .iter()
            .find_map(|w| {
                let (m, tail) = rest.split_once(&format!(".{w}."))?;
                let adapter_name_ok = match tail.strip_suffix(".weight") {
                    Some(adapter_name) => !adapter_name.contains('.'),
                    None => tail == "weight",
                };
                adapter_name_ok.then(|| (m.to_string(), *w))
            })
            .ok_or_else(unknown)?;
        let (data, shape) = weights.read_f32(name).ok_or_else(|| {
            Error::new(
                Code::WeightsTruncated,
                format!("{file}: {name} cannot be read"),
            )
        })?;
        let expected_rank_axis = if which == "lora_A" { 0 } else { 1 };
        if shape.len() != 2 || shape[expected_rank_axis] != rank {
            return Err(Error::new(
                Code::ShapeMismatch,
                format!(
                    "{name} has shape {shape:?}, but the adapter's rank is {rank} ({which} is \
                     stored {})",
                    if which == "lora_A" {
                        "[r, in]"
                    } else {
                        "[out, r]"
                    }
                ),
            )
            .with_details(json!({ "file": file, "tensor": name, "shape": shape, "r": rank })));
        }
        let slot = factors.entry(module).or_default();
        if which == "lora_A" {
            slot.0 = Some(data);
        } else {
            slot.1 = Some(data);
        }
    }
    let mut given = BTreeMap::new();
    for (module, pair) in factors {
        match pair {
            (Some(a), Some(b)) => {
                given.insert(module, (a, b));
            }
            _ => {
                return Err(bad(format!(
                    "{file} has only one of lora_A and lora_B for {module}"
                )));
            }
        }
    }
    if given.is_empty() {
        return Err(bad(format!("{file} holds no LoRA factors")));
    }
    let head = match head {
        (None, None) => None,
        (Some(weight), Some(bias)) => match head_shape[..] {
            [num_labels, hidden] if bias.len() == num_labels && num_labels > 0 => {
                Some(AdapterHead {
                    weight,
                    bias,
                    num_labels,
                    hidden,
                    labels: None,
                    pooling: None,
                })
            }
            _ => {
                return Err(Error::new(
                    Code::ShapeMismatch,
                    format!(
                        "{file}: the classifier's weight has shape {head_shape:?} and its bias \
                         {} values; a head is [labels, hidden] and [labels]",
                        bias.len()
                    ),
                ))
            }
        },
        _ => {
            return Err(bad(format!(
                "{file} has only one of classifier.weight and classifier.bias"
            )))
        }
    };
    let modules: Vec<String> = given.keys().cloned().collect();
    // rsLoRA scales by alpha/sqrt(r); the spec scales by alpha/r.
    let alpha = if use_rslora {
        lora_alpha * (rank as f64).sqrt()
    } else {
        lora_alpha
    };
    Ok(PeftAdapter {
        spec: LoraSpec {
            rank,
            alpha,
            targets: modules.clone(),
            init: LoraInit::Given(given),
            dropout: 0.0,
        },
        modules,
        base_model: field("base_model_name_or_path")
            .and_then(Value::as_str)
            .map(str::to_string),
        lora_alpha,
        use_rslora,
        head,
    })
}

/// Read `adapter_config.json` and `adapter_model.safetensors` from a folder.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_peft_adapter(dir: &std::path::Path) -> Result<PeftAdapter> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|e| {
            Error::new(
                Code::ModelMissingFile,
                format!(
                    "cannot read {}: {e} (an adapter folder holds {ADAPTER_CONFIG} and \
                     {ADAPTER_WEIGHTS}, as PEFT's save_pretrained and `webtune train --out` write)",
                    path.display()
                ),
            )
        })
    };
    let config = read(ADAPTER_CONFIG)?;
    let weights = read(ADAPTER_WEIGHTS)?;
    let adapter = parse_peft_adapter(&config, ADAPTER_WEIGHTS, weights)?;
    match std::fs::read(dir.join(ADAPTER_CLASSIFIER)) {
        Ok(note) => adapter.with_classifier_note(&note),
        Err(_) => Ok(adapter),
    }
}

/// Attach the adapter and merge it into the weights.
pub fn apply_peft_adapter(model: LoadedModel, adapter: &PeftAdapter) -> Result<LoadedModel> {
    let mut attached = attach_peft_adapter(&model, adapter)?;
    attached.family = merge(attached.family);
    Ok(attached)
}

/// The model with the adapter attached beside its weights, un-merged: the base's tensors are
/// shared (a family's clone copies handles, not values), so any number of adapters can sit on
/// one loaded base at the cost of their factors, and switching among them costs nothing.
pub fn attach_peft_adapter(model: &LoadedModel, adapter: &PeftAdapter) -> Result<LoadedModel> {
    let base = adapter
        .base_model
        .as_deref()
        .map(|b| format!(" (it was trained on {b})"))
        .unwrap_or_default();
    if adapter.head.is_some() && !model.is_encoder() {
        return Err(Error::new(
            Code::ShapeMismatch,
            format!(
                "this adapter is a classifier's (it saves a classification head){base}; load \
                 the encoder it was trained on"
            ),
        ));
    }
    // A BertModel's modules (PEFT on a bare encoder) are the classifier's under `bert.`.
    let bert_names;
    let adapter = if model.is_encoder() && adapter.modules.iter().any(|m| !m.starts_with("bert.")) {
        bert_names = under_bert(adapter);
        &bert_names
    } else {
        adapter
    };
    let kind = FamilyKind::of(&model.family);
    let (adapted, attached) = apply_lora(model.family.clone(), &adapter.spec).map_err(|e| {
        let message = format!("the adapter does not fit this model{base}: {}", e.message);
        // Whatever attaching found wrong (no such module, other sizes) is a mismatch between
        // the adapter and this base, not a bad setting of the user's.
        Error {
            code: Code::ShapeMismatch,
            message,
            ..e
        }
    })?;
    let missing: Vec<&String> = adapter
        .modules
        .iter()
        .filter(|m| !attached.contains(m))
        .collect();
    if !missing.is_empty() {
        return Err(Error::new(
            Code::ShapeMismatch,
            format!(
                "the adapter adapts modules this {kind:?} model does not have{base}: {}",
                missing
                    .iter()
                    .take(3)
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .with_details(json!({ "missing": missing })));
    }
    let mut attached = model.with_family(adapted);
    if let Some(head) = &adapter.head {
        with_head(&mut attached, head, &base)?;
    }
    Ok(attached)
}

/// The adapter with its encoder modules named as in `BertForSequenceClassification`.
fn under_bert(adapter: &PeftAdapter) -> PeftAdapter {
    let rename = |m: &String| {
        if m.starts_with("bert.") {
            m.clone()
        } else {
            format!("bert.{m}")
        }
    };
    let mut out = adapter.clone();
    out.modules = adapter.modules.iter().map(rename).collect();
    out.spec.targets = adapter.spec.targets.iter().map(rename).collect();
    if let LoraInit::Given(given) = &adapter.spec.init {
        out.spec.init =
            LoraInit::Given(given.iter().map(|(k, v)| (rename(k), v.clone())).collect());
    }
    out
}

/// Put the adapter's classification head on the encoder, with its labels (the note's, else the
/// base's own when it has as many, else transformers' `LABEL_i`) and pooling (the note's, else
/// what a checkpoint's head uses: the pooler when there is one).
fn with_head(model: &mut LoadedModel, head: &AdapterHead, base: &str) -> Result<()> {
    let Family::Bert(bert) = &model.family else {
        return Err(Error::new(Code::Internal, "an encoder that is not BERT"));
    };
    let hidden = bert.hidden_size();
    if head.hidden != hidden {
        return Err(Error::new(
            Code::ShapeMismatch,
            format!(
                "the adapter's classifier reads {} values per text, but this encoder's hidden \
                 size is {hidden}{base}",
                head.hidden
            ),
        ));
    }
    let n = head.num_labels;
    let device = model.device.clone();
    let weight = Tensor::<2>::from_data(
        TensorData::new(transposed(&head.weight, n, hidden), [hidden, n]),
        &device,
    );
    let bias = Tensor::<1>::from_data(TensorData::new(head.bias.clone(), [n]), &device);
    let pooling = head.pooling.unwrap_or(if bert.has_pooler() {
        Pooling::Pooler
    } else {
        Pooling::Mean
    });
    if pooling == Pooling::Pooler && !bert.has_pooler() {
        return Err(Error::new(
            Code::ShapeMismatch,
            format!("the adapter's head classifies the pooler's output, but this encoder has no pooler{base}"),
        ));
    }
    let labels = head.labels.clone().unwrap_or_else(|| {
        model
            .info
            .labels
            .clone()
            .filter(|l| l.len() == n)
            .unwrap_or_else(|| (0..n).map(|i| format!("LABEL_{i}")).collect())
    });
    model.family = Family::Bert(bert.clone().with_classifier(weight, bias));
    model.info.labels = Some(labels);
    model.info.pooling = Some(pooling);
    Ok(())
}
