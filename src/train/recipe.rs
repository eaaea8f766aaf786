//! A way out of the tab: the same job as a small Python project for Hugging Face transformers +
//! PEFT, launched by Accelerate, so it runs on one GPU, several, or a cluster.
//!
//! The project reproduces the job rather than resembling it. webtune does the parts where two
//! implementations would drift (reading the file, the schema mapping, the split, the seeded
//! draws, the chat template's choice, the LoRA factors' seeded start) and writes their results:
//! the examples as read, in training order (`data/*.jsonl`), the tokenizer it used, and for LoRA
//! the initial adapter. The script does the rest the way webtune does (tokens and loss masks,
//! padding, packing, the seeded batch order, AdamW, the schedule, clipping) and hands the steps to
//! transformers' `Trainer`. `tools/reference/check_recipe.py` runs a generated recipe with torch
//! and compares its losses with webtune's; `tests/recipe.rs` keeps the generated files equal to a
//! reviewed copy.

use serde_json::{json, Value};

use super::causal_job::{causal_options, is_plain, prepare_data};
use super::export::{export_adapter, ExportFiles};
use super::finetune::{Method, TrainableModel};
use super::job::{tokenizer_of, DatasetFiles, JobConfig};
use crate::backend::Backend;
use crate::data::batching::{CausalEncoder, PAD_MULTIPLE};
use crate::data::chat::ChatTemplate;
use crate::data::validate::Content;
use crate::error::{Code, Error, Result};
use crate::io::hf::ModelFiles;
use crate::models::loaded::LoadedModel;

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

/// The recipe's files for the job `config` of `base` on `data`. Only causal-LM jobs for now: a
/// classifier's is refused with a `config.invalid` that says so.
pub async fn recipe(
    model_ref: &BaseModelRef,
    files: &ModelFiles,
    base: &LoadedModel,
    backend: &Backend,
    data: DatasetFiles<'_>,
    config: &JobConfig,
) -> Result<ExportFiles> {
    if base.is_encoder() {
        return Err(Error::config(
            "training recipes are written for causal language models so far; this model is an \
             encoder (a classifier), whose recipe webtune does not write yet",
        )
        .with_details(json!({ "field": "task", "reason": "classification" })));
    }
    if config.train.quantize_base.is_some() {
        // bitsandbytes' 4/8-bit formats are not webtune's blocks: the numbers would differ and
        // the recipe would promise a reproduction it cannot give.
        return Err(Error::config(
            "a recipe reproduces the job in f32 on a GPU, where a quantized base (QLoRA) is not \
             needed to fit; write it without quantize_base",
        )
        .with_details(json!({ "field": "quantize_base" })));
    }
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

    let rows = |idx: &[usize]| -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for &i in idx {
            let e = &prepared.dataset.examples[i];
            let mut line = match &e.content {
                Content::Text { text } => json!({ "text": text }),
                Content::Pair { prompt, completion } => {
                    json!({ "prompt": prompt, "completion": completion })
                }
                Content::Chat { messages } => json!({ "messages": messages }),
                Content::Labeled { .. } => {
                    return Err(Error::new(
                        Code::Internal,
                        "a labelled example in a causal job",
                    ))
                }
            };
            line["source"] = json!(e.loc.to_string());
            out.extend(serde_json::to_vec(&line).map_err(internal)?);
            out.push(b'\n');
        }
        Ok(out)
    };

    let train = &config.train;
    let steps = train.total_steps(prepared.train_batches.len());
    let mut out: ExportFiles = vec![
        ("data/train.jsonl".into(), rows(&prepared.train)?),
        ("data/validation.jsonl".into(), rows(&prepared.validation)?),
    ];
    let tokenizer_json = tokenizer
        .to_json()?
        .ok_or_else(|| Error::new(Code::Internal, "the tokenizer could not be written as JSON"))?;
    out.push(("tokenizer.json".into(), tokenizer_json.into_bytes()));

    let lora = match train.method {
        Method::Lora => {
            // The factors' seeded start as webtune draws it: the script starts from it, so its
            // run and webtune's are the same run from the first step.
            let device = train.training_device(backend);
            let model = TrainableModel::prepare(base.family.trainable_on(&device), train)?;
            for (name, bytes) in export_adapter(&model, &model_ref.path).await? {
                out.push((format!("initial_adapter/{name}"), bytes));
            }
            let spec = model.lora.as_ref().expect("a LoRA model has its spec");
            json!({
                "r": spec.rank,
                "alpha": spec.alpha,
                "dropout": spec.dropout,
                "targets": spec.targets,
                "initial_adapter": "initial_adapter",
            })
        }
        Method::Full => Value::Null,
    };

    let data_files: Vec<&str> = std::iter::once(data.train.name)
        .chain(data.validation.map(|v| v.name))
        .collect();
    let job = json!({
        "recipe_version": RECIPE_VERSION,
        "written_by": format!("webtune {}", env!("CARGO_PKG_VERSION")),
        "task": "causal_lm",
        "base_model": {
            "path": model_ref.path,
            "gguf_file": model_ref.gguf_file,
            "architecture": base.info.architecture,
            "parameters": base.info.parameters,
        },
        "data": {
            "files": data_files,
            "schema": prepared.dataset.schema,
            "train": "data/train.jsonl",
            "validation": "data/validation.jsonl",
            "train_examples": prepared.train.len(),
            "validation_examples": prepared.validation.len(),
            "packed": is_plain(&prepared.dataset),
        },
        "tokens": {
            "tokenizer": "tokenizer.json",
            "seq_len": causal.seq_len,
            "separator": causal.separator,
            "add_eos": causal.add_eos,
            "eos_id": encoder.eos_id(),
            "pad_id": encoder.pad_id(),
            "train_on_prompt": causal.train_on_prompt,
            "pad_multiple": PAD_MULTIPLE,
        },
        "chat_template": template.as_ref().map(|t| json!({
            "source": t.source(),
            "bos_token": t.bos_token,
            "eos_token": t.eos_token,
        })),
        "batch_size": config.batch_size,
        "grad_accum": train.grad_accum,
        "steps": steps,
        "train_batches": prepared.train_batches.len(),
        "shuffle": train.shuffle,
        "seed": train.seed,
        "method": train.method,
        "lora": lora,
        "full": match train.method {
            Method::Full => json!({
                "freeze_embeddings": train.freeze_embeddings,
                "freeze_layers": train.freeze_layers,
            }),
            Method::Lora => Value::Null,
        },
        "optimizer": {
            "lr": train.lr,
            "weight_decay": train.weight_decay,
            "decay_bias_and_norm": train.decay_bias_and_norm,
            "adam_beta1": train.adam_beta1,
            "adam_beta2": train.adam_beta2,
            "adam_eps": train.adam_eps,
            "max_grad_norm": train.max_grad_norm,
        },
        "schedule": { "kind": train.schedule, "warmup": train.warmup },
        "model_dropout": train.model_dropout,
        "gradient_checkpointing": train.gradient_checkpointing,
        "export_dtype": config.export_dtype,
    });
    let mut job = serde_json::to_vec_pretty(&job).map_err(internal)?;
    job.push(b'\n');
    out.push(("job.json".into(), job));
    out.push(("train.py".into(), TRAIN_PY.as_bytes().to_vec()));
    out.push(("requirements.txt".into(), REQUIREMENTS.as_bytes().to_vec()));
    out.push((
        "README.md".into(),
        readme(model_ref, base, config, steps, causal.seq_len).into_bytes(),
    ));
    for (name, text) in ACCELERATE {
        out.push(((*name).into(), text.as_bytes().to_vec()));
    }
    Ok(out)
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
}
