//! A way out of the tab: the same job (a causal LM's or a classifier's) as a small Python project
//! for Hugging Face transformers + PEFT, launched by Accelerate, so it runs on one GPU, several,
//! or a cluster.
//!
//! The project reproduces the job rather than resembling it. webtune does the parts where two
//! implementations would drift (reading the file, the schema mapping, the split, the seeded
//! draws, the chat template's choice, the LoRA factors' and a new head's seeded start) and writes
//! their results: the examples as read, in training order (`data/*.jsonl`), the tokenizer it
//! used, for LoRA the initial adapter, for a classifier the head's starting weights. The script
//! does the rest the way webtune does (tokens and loss masks, padding, packing, the seeded batch
//! order, AdamW, the schedule, clipping) and hands the steps to transformers' `Trainer`.
//! `tools/reference/check_recipe.py` runs generated recipes with torch and compares their losses
//! with webtune's; `tests/recipe.rs` keeps the generated files equal to a reviewed copy.

use serde_json::{json, Value};

use super::causal_job::{causal_options, is_plain, prepare_data};
use super::classify::{head_tensors, ClassifierModel, MODELING_WEBTUNE_PY};
use super::classify_job::{head_config, prepare_class_data};
use super::export::{export_adapter_with, ExportFiles};
use super::finetune::{FinetuneConfig, Method, TrainableModel};
use super::job::{tokenizer_of, DatasetFiles, JobConfig};
use crate::backend::Backend;
use crate::data::batching::{CausalEncoder, PAD_MULTIPLE};
use crate::data::chat::ChatTemplate;
use crate::data::validate::{Content, Dataset};
use crate::error::{Code, Error, Result};
use crate::io::hf::ModelFiles;
use crate::io::safetensors::write_f32;
use crate::models::loaded::{Family, LoadedModel};

/// The recipe's format; `train.py` refuses a `job.json` of another.
pub const RECIPE_VERSION: u32 = 1;

const TRAIN_PY: &str = include_str!("recipe/train.py");
const REQUIREMENTS: &str = include_str!("recipe/requirements.txt");
const README: &str = include_str!("recipe/README.md");
const ACCELERATE: &[(&str, &str)] = &[
    (
        "accelerate/single_gpu.yaml",
        include_str!("recipe/single_gpu.yaml"),
    ),
    (
        "accelerate/multi_gpu.yaml",
        include_str!("recipe/multi_gpu.yaml"),
    ),
    ("accelerate/fsdp.yaml", include_str!("recipe/fsdp.yaml")),
    (
        "accelerate/deepspeed_zero3.yaml",
        include_str!("recipe/deepspeed_zero3.yaml"),
    ),
];

/// Where the Python side finds the base model: a folder in Hugging Face's layout (or a Hub id,
/// once the user edits `job.json`), and the GGUF file in it when the base is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseModelRef {
    pub path: String,
    pub gguf_file: Option<String>,
}

/// The recipe's files for the job `config` of `base` on `data`: a causal LM's (LoRA or full, on
/// text, pairs or chat) or an encoder's classification job. A QLoRA job's recipe trains the base
/// in f32 (`job.json` and the README say so): bitsandbytes' 4/8-bit formats are not webtune's
/// blocks, and on a GPU the base fits without them.
pub async fn recipe(
    model_ref: &BaseModelRef,
    files: &ModelFiles,
    base: &LoadedModel,
    backend: &Backend,
    data: DatasetFiles<'_>,
    config: &JobConfig,
) -> Result<ExportFiles> {
    let data_files: Vec<&str> = std::iter::once(data.train.name)
        .chain(data.validation.map(|v| v.name))
        .collect();
    let tokenizer = tokenizer_of(base)?;
    if base.is_encoder() && super::embed_job::is_pair_schema(&data.train.schema(&config.data)?) {
        return Err(Error::config(
            "training recipes are written for causal language models and classifiers; a \
             sentence-embedding job (an encoder on pairs) has none: fine-tune it here and \
             download its sentence-transformers export",
        )
        .with_details(json!({ "field": "task", "reason": "embedding" })));
    }
    let mut out: ExportFiles = Vec::new();
    let (mut job, steps, seq_len) = if base.is_encoder() {
        classification(base, files, backend, data, config, &mut out).await?
    } else {
        causal_lm(base, files, backend, data, config, model_ref, &mut out).await?
    };
    let train = &config.train;
    job["recipe_version"] = json!(RECIPE_VERSION);
    job["written_by"] = json!(format!("webtune {}", env!("CARGO_PKG_VERSION")));
    job["base_model"] = json!({
        "path": model_ref.path,
        "gguf_file": model_ref.gguf_file,
        "architecture": base.info.architecture,
        "parameters": base.info.dims.parameters,
    });
    job["data"]["files"] = json!(data_files);
    job["data"]["train"] = json!(TRAIN_EXAMPLES);
    job["data"]["validation"] = json!(VALIDATION_EXAMPLES);
    job["tokens"]["tokenizer"] = json!("tokenizer.json");
    job["tokens"]["seq_len"] = json!(seq_len);
    job["tokens"]["pad_multiple"] = json!(PAD_MULTIPLE);
    job["batch_size"] = json!(config.batch_size);
    job["grad_accum"] = json!(train.grad_accum);
    job["steps"] = json!(steps);
    job["shuffle"] = json!(train.shuffle);
    job["seed"] = json!(train.seed);
    job["method"] = json!(train.method);
    job["full"] = match train.method {
        Method::Full => json!({
            "freeze_embeddings": train.freeze_embeddings,
            "freeze_layers": train.freeze_layers,
        }),
        Method::Lora => Value::Null,
    };
    job["optimizer"] = json!({
        "lr": train.lr,
        "weight_decay": train.weight_decay,
        "decay_bias_and_norm": train.decay_bias_and_norm,
        "adam_beta1": train.adam_beta1,
        "adam_beta2": train.adam_beta2,
        "adam_eps": train.adam_eps,
        "max_grad_norm": train.max_grad_norm,
    });
    job["schedule"] = json!({ "kind": train.schedule, "warmup": train.warmup });
    job["model_dropout"] = json!(train.model_dropout);
    job["gradient_checkpointing"] = json!(train.gradient_checkpointing);
    job["export_dtype"] = json!(config.export_dtype);
    // What webtune's own run kept quantized; the recipe trains that base in f32.
    job["webtune_base_quant"] = json!(train.quantize_base);

    let tokenizer_json = tokenizer
        .to_json()?
        .ok_or_else(|| Error::new(Code::Internal, "the tokenizer could not be written as JSON"))?;
    out.push(("tokenizer.json".into(), tokenizer_json.into_bytes()));
    let mut job = serde_json::to_vec_pretty(&job).map_err(internal)?;
    job.push(b'\n');
    out.push(("job.json".into(), job));
    out.push(("train.py".into(), TRAIN_PY.as_bytes().to_vec()));
    out.push(("requirements.txt".into(), REQUIREMENTS.as_bytes().to_vec()));
    out.push((
        "README.md".into(),
        readme(model_ref, base, config, steps, seq_len).into_bytes(),
    ));
    for (name, text) in ACCELERATE {
        out.push(((*name).into(), text.as_bytes().to_vec()));
    }
    Ok(out)
}

/// Where the project keeps the training and held-out examples.
const TRAIN_EXAMPLES: &str = "data/train.jsonl";
const VALIDATION_EXAMPLES: &str = "data/validation.jsonl";

/// The split's examples as the project's two JSONL files, in the split's order.
fn push_examples(
    out: &mut ExportFiles,
    dataset: &Dataset,
    train: &[usize],
    validation: &[usize],
) -> Result<()> {
    out.push((TRAIN_EXAMPLES.into(), jsonl(dataset, train)?));
    out.push((VALIDATION_EXAMPLES.into(), jsonl(dataset, validation)?));
    Ok(())
}

/// One JSON line per example, in the order given, with where it came from.
fn jsonl(dataset: &Dataset, idx: &[usize]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for &i in idx {
        let e = &dataset.examples[i];
        let mut line = match &e.content {
            Content::Text { text } => json!({ "text": text }),
            Content::Pair { prompt, completion } => {
                json!({ "prompt": prompt, "completion": completion })
            }
            Content::Chat { messages } => json!({ "messages": messages }),
            Content::Labeled { text, label } => json!({ "text": text, "label": label }),
            Content::SentencePair { anchor, positive } => {
                json!({ "anchor": anchor, "positive": positive })
            }
        };
        line["source"] = json!(e.loc.to_string());
        out.extend(serde_json::to_vec(&line).map_err(internal)?);
        out.push(b'\n');
    }
    Ok(out)
}

/// A causal LM's part of `job.json` and its files (data, LoRA's initial adapter); the total
/// steps and the row length.
async fn causal_lm(
    base: &LoadedModel,
    files: &ModelFiles,
    backend: &Backend,
    data: DatasetFiles<'_>,
    config: &JobConfig,
    model_ref: &BaseModelRef,
    out: &mut ExportFiles,
) -> Result<(Value, usize, usize)> {
    let prepared = prepare_data(base, ChatTemplate::from_model_files(files)?, data, config)?;
    let tokenizer = tokenizer_of(base)?;
    let mut causal = causal_options(config, base).causal;
    causal.add_eos &= !prepared.dataset.document;
    let encoder = CausalEncoder::new(tokenizer, prepared.chat.as_ref(), causal.clone());
    let chat = prepared
        .dataset
        .examples
        .iter()
        .any(|e| matches!(e.content, Content::Chat { .. }));
    let template = match (&prepared.chat, chat) {
        (Some(t), true) => Some(t.clone()),
        (None, true) => Some(ChatTemplate::chatml()),
        (_, false) => None,
    };
    push_examples(
        out,
        &prepared.dataset,
        &prepared.train,
        &prepared.validation,
    )?;
    let train = &config.train;
    let lora = match train.method {
        Method::Lora => {
            // The factors' start as webtune draws it (or the adapter it continues): the script
            // starts from it, so its run and webtune's are the same run from the first step.
            let device = train.training_device(backend);
            let model = TrainableModel::prepare(
                base.family.trainable_on(&device),
                &factors_only(train, base),
            )?;
            lora_part(&model, &model_ref.path, Some("CAUSAL_LM"), &[], out).await?
        }
        Method::Full => Value::Null,
    };
    let job = json!({
        "task": "causal_lm",
        "data": {
            "schema": prepared.dataset.schema,
            "train_examples": prepared.train.len(),
            "validation_examples": prepared.validation.len(),
            "packed": is_plain(&prepared.dataset),
        },
        "tokens": {
            "separator": causal.separator,
            "add_eos": causal.add_eos,
            "eos_id": encoder.eos_id(),
            "pad_id": encoder.pad_id(),
            "train_on_prompt": causal.train_on_prompt,
        },
        "chat_template": template.as_ref().map(|t| json!({
            "source": t.source(),
            "bos_token": t.bos_token,
            "eos_token": t.eos_token,
        })),
        "train_batches": prepared.train_batches.len(),
        "lora": lora,
    });
    Ok((
        job,
        train.total_steps(prepared.train_batches.len()),
        causal.seq_len,
    ))
}

/// A classifier's part of `job.json` and its files (data, the head's starting weights, LoRA's
/// initial adapter, the model class for the head's pooling); the total steps and the row length.
async fn classification(
    base: &LoadedModel,
    files: &ModelFiles,
    backend: &Backend,
    data: DatasetFiles<'_>,
    config: &JobConfig,
    out: &mut ExportFiles,
) -> Result<(Value, usize, usize)> {
    let prepared = prepare_class_data(base, data, config)?;
    let tokenizer = tokenizer_of(base)?;
    push_examples(
        out,
        &prepared.dataset,
        &prepared.train,
        &prepared.validation,
    )?;
    let train = &config.train;
    let device = train.training_device(backend);
    let family = base.family.trainable_on(&device);
    let Family::Bert(bert) = &family else {
        return Err(Error::new(Code::Internal, "an encoder that is not BERT"));
    };
    let from_checkpoint = bert.num_labels() == prepared.labels.len();
    let head = head_config(bert, &files.config()?, config.head, from_checkpoint);
    let model = ClassifierModel::prepare(
        family,
        prepared.labels.clone(),
        &factors_only(train, base),
        head,
    )?;
    // The head as training starts: drawn from the seed, or the checkpoint's own.
    let (w, b) = head_tensors(&model).await?;
    let labels = prepared.labels.len();
    let hidden = w.len() / labels;
    let head_tensors: [(&str, &[usize], &[f32]); 2] = [
        ("classifier.weight", &[labels, hidden], &w),
        ("classifier.bias", &[labels], &b),
    ];
    out.push(("initial_head.safetensors".into(), write_f32(&head_tensors)));
    out.push((
        "modeling_webtune.py".into(),
        MODELING_WEBTUNE_PY.as_bytes().to_vec(),
    ));
    let lora = match train.method {
        // No task type: the script wraps its own classifier class; the head is a module PEFT
        // saves whole.
        Method::Lora => lora_part(&model.model, "", None, &head_tensors, out).await?,
        Method::Full => Value::Null,
    };
    let seq_len = config
        .data
        .causal
        .seq_len
        .min(base.info.dims.max_positions)
        .max(2);
    let job = json!({
        "task": "classification",
        "data": {
            "schema": prepared.dataset.schema,
            "labels": prepared.labels.labels,
            "train_examples": prepared.train.len(),
            "validation_examples": prepared.validation.len(),
        },
        "tokens": {
            "pad_id": tokenizer.token_id("[PAD]").unwrap_or(0),
        },
        "head": {
            "pooling": head.pooling,
            "dropout": head.dropout,
            "initial": "initial_head.safetensors",
            "from_checkpoint": from_checkpoint,
        },
        "train_batches": prepared.train_batches.len(),
        "lora": lora,
    });
    Ok((
        job,
        train.total_steps(prepared.train_batches.len()),
        seq_len,
    ))
}

/// `train` for drawing the starting factors only: no quantized copy of an f32 base (the seeded
/// draw does not read the base's values); a base loaded quantized keeps its own precision.
fn factors_only(train: &FinetuneConfig, base: &LoadedModel) -> FinetuneConfig {
    let mut train = train.clone();
    if base.info.compact.is_none() {
        train.quantize_base = None;
    }
    train
}

/// LoRA's starting factors as a PEFT adapter under `initial_adapter/` (its config's
/// `task_type` set to `task`; `head`, a classifier's, saved whole beside them), and the `lora`
/// part of `job.json`.
async fn lora_part(
    model: &TrainableModel,
    base_path: &str,
    task: Option<&str>,
    head: &[(&str, &[usize], &[f32])],
    out: &mut ExportFiles,
) -> Result<Value> {
    let modules: &[&str] = if head.is_empty() {
        &[]
    } else {
        &["classifier"]
    };
    for (name, mut bytes) in export_adapter_with(model, base_path, modules, head).await? {
        if name == "adapter_config.json" {
            let mut config: Value = serde_json::from_slice(&bytes).map_err(internal)?;
            config["task_type"] = json!(task);
            bytes = serde_json::to_vec_pretty(&config).map_err(internal)?;
        }
        out.push((format!("initial_adapter/{name}"), bytes));
    }
    let spec = model
        .lora
        .as_ref()
        .ok_or_else(|| Error::new(Code::Internal, "a LoRA model without its spec"))?;
    Ok(json!({
        "r": spec.rank,
        "alpha": spec.alpha,
        "dropout": spec.dropout,
        "targets": spec.targets,
        "initial_adapter": "initial_adapter",
    }))
}

fn internal(e: serde_json::Error) -> Error {
    Error::new(Code::Internal, format!("{e}"))
}

/// The folder's README: the job in a few lines, then how to run it (the template).
fn readme(
    model: &BaseModelRef,
    base: &LoadedModel,
    config: &JobConfig,
    steps: usize,
    seq_len: usize,
) -> String {
    let train = &config.train;
    let method = match train.method {
        Method::Lora => format!(
            "LoRA r={} alpha={} on {}",
            train.lora_r,
            train.lora_alpha,
            if train.lora_targets.is_empty() {
                "the family's default modules".to_string()
            } else {
                train.lora_targets.join(", ")
            }
        ),
        Method::Full => "full fine-tuning".to_string(),
    };
    let precision = match train.quantize_base {
        Some(q) => format!(
            "\n- Base weights: f32 here. webtune's run kept them in {} (QLoRA), a format of its \
             own; the losses then differ from webtune's by that rounding.",
            q.as_str()
        ),
        None => String::new(),
    };
    let base_name = match &model.gguf_file {
        Some(file) => format!("{}/{file}", model.path),
        None => model.path.clone(),
    };
    README
        .replace("{{BASE}}", &base_name)
        .replace("{{ARCHITECTURE}}", &base.info.architecture)
        .replace("{{METHOD}}", &method)
        .replace("{{STEPS}}", &steps.to_string())
        .replace(
            "{{BATCH}}",
            &format!(
                "{} × {} micro-batches of up to {} tokens",
                train.grad_accum, config.batch_size, seq_len
            ),
        )
        .replace("{{PRECISION}}", &precision)
}
