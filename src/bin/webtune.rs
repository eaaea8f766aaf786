//! `webtune`: the native command line on the same core as the browser build (CPU backend by
//! default; `--backend webgpu` uses burn's wgpu backend on Vulkan/Metal where one exists).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use serde_json::{json, Value};
use webtune::backend::{Backend, BackendKind};
use webtune::data::chat::Message;
use webtune::data::validate::OnDataProgress;
use webtune::error::Code;
use webtune::eval::generate::GenerateOptions;
use webtune::eval::respond::{respond, Prompt};
use webtune::io::hf::ModelFiles;
use webtune::models::loaded::LoadedModel;
use webtune::train::adapter::{apply_peft_adapter, read_peft_adapter};
use webtune::train::checkpoint::{Checkpoint, Checkpointing};
use webtune::train::export::Export;
use webtune::train::finetune::Method;
use webtune::train::qlora::{load_quantized, BaseQuant};
use webtune::train::recipe::{recipe, BaseModelRef};
use webtune::train::toy::{train_toy, ToyTrainConfig};
use webtune::Error;
use webtune::{run_task, JobResult, Progress};
use webtune::{DataSource, DatasetFile, DatasetFiles, JobConfig, JobEvent};

#[derive(Parser)]
#[command(
    name = "webtune",
    version,
    about = "Fine-tune small language models (native CLI of webtune)"
)]
struct Cli {
    /// Print machine-readable JSON on stdout (errors too, as {"error": {code, message, details}}).
    #[arg(long, global = true)]
    json: bool,
    /// `train` and `toy`: also print every step's progress as one JSON line on stderr (used
    /// by `cargo xtask bench` for per-step timings).
    #[arg(long, global = true, hide = true)]
    progress_json: bool,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of the train variant's many flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Architecture, parameter count, sizes and stored dtype of a model.
    Info(InfoArgs),
    /// Run the model on a text (or token ids) and print the last position's logits.
    Forward(ForwardArgs),
    /// Continue a prompt.
    Generate(GenerateArgs),
    /// Fine-tune a model on a dataset file (JSONL, JSON, CSV, TSV or TXT): validates the data,
    /// holds out a validation share (or reads --validation), trains (LoRA by default), evaluates
    /// before and after, and writes the merged model (and the PEFT adapter) to --out.
    Train(TrainArgs),
    /// Write the job `train` would run (same arguments) as a Python project for Hugging Face
    /// transformers + PEFT launched by Accelerate, to --out: the same data, split, tokens,
    /// batches, LoRA start and optimiser, for one GPU, several, or a cluster.
    Recipe(TrainArgs),
    /// Read, validate, split and tokenize a dataset file for a model without training: the
    /// report (format, schema, examples kept and skipped with file and line, labels, token
    /// lengths), the train/validation split and the read speed.
    Data(DataArgs),
    /// Loss and perplexity of a model on a dataset file.
    Eval(EvalArgs),
    /// Train the toy transformer on the copy task (the foundation's end-to-end check).
    Toy(ToyArgs),
    /// Write a model folder with the exact shapes of a real model (smollm2-135m, smollm2-360m,
    /// qwen2.5-0.5b, smollm2-1.7b) and seeded random weights: for sizing memory and speed of a
    /// run before downloading the real weights (its outputs mean nothing).
    Shape(ShapeArgs),
}

#[derive(Args)]
struct ShapeArgs {
    /// One of smollm2-135m, smollm2-360m, qwen2.5-0.5b, smollm2-1.7b.
    name: String,
    /// The folder to write (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    out: PathBuf,
    /// A model whose tokenizer to copy (a folder with tokenizer.json, or a .gguf file); its ids
    /// must fit the shape's vocabulary (SmolLM2's 49,152 fit every shape here).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The stored precision: bf16 (default, as the real checkpoints), f16 or f32.
    #[arg(long, default_value = "bf16")]
    dtype: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
struct InfoArgs {
    /// A model folder in Hugging Face layout, or a .gguf file.
    model: PathBuf,
}

#[derive(Args)]
struct ForwardArgs {
    model: PathBuf,
    #[arg(long, conflicts_with = "ids")]
    text: Option<String>,
    /// Comma-separated token ids instead of text.
    #[arg(long, value_delimiter = ',')]
    ids: Option<Vec<u32>>,
}

#[derive(Args)]
struct GenerateArgs {
    model: PathBuf,
    #[arg(long, conflicts_with_all = ["ids", "chat"])]
    prompt: Option<String>,
    /// Comma-separated prompt token ids instead of text.
    #[arg(long, value_delimiter = ',', conflicts_with = "chat")]
    ids: Option<Vec<u32>>,
    /// A user message, formatted with the model's chat template (the answer stops at the
    /// template's end-of-turn token).
    #[arg(long)]
    chat: Option<String>,
    /// A system message before --chat.
    #[arg(long, requires = "chat")]
    system: Option<String>,
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Always pick the most likely token.
    #[arg(long)]
    greedy: bool,
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// 0 turns top-k off.
    #[arg(long, default_value_t = 50)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Recompute every position for each token (to measure what the KV cache saves).
    #[arg(long)]
    no_cache: bool,
    /// Keep going past the end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
    /// A LoRA adapter folder (PEFT's `adapter_config.json` + `adapter_model.safetensors`, as
    /// `webtune train --out DIR` writes to DIR/adapter), merged into the model first.
    #[arg(long)]
    adapter: Option<PathBuf>,
}

#[derive(Args)]
struct TrainArgs {
    model: PathBuf,
    #[arg(long)]
    data: PathBuf,
    /// A separate validation file (same fields as --data) instead of holding out a share of
    /// --data; training examples that also appear in it are dropped from training.
    #[arg(long, alias = "val-data")]
    validation: Option<PathBuf>,
    /// The whole job configuration as JSON (same keys as the browser API's `finetune`); the
    /// flags below override it.
    #[arg(long)]
    config: Option<String>,
    /// `causal-lm`, `classification` or `embedding`: checked against the model and the data (an
    /// encoder classifies labelled texts and learns sentence embeddings from pairs; any other
    /// model continues text).
    #[arg(long)]
    task: Option<String>,
    /// `lora` or `full`.
    #[arg(long)]
    method: Option<String>,
    #[arg(long, conflicts_with = "epochs")]
    steps: Option<usize>,
    /// Passes over the training batches (instead of --steps).
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    lora_r: Option<usize>,
    #[arg(long)]
    lora_alpha: Option<f64>,
    /// Module names (`q_proj,v_proj`, `c_attn`, `query,value`) or `all-linear`.
    #[arg(long, value_delimiter = ',')]
    lora_targets: Option<Vec<String>>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    grad_accum: Option<usize>,
    #[arg(long)]
    seq_len: Option<usize>,
    /// How a .txt file becomes examples: `auto` (detected: continuous text such as a play or
    /// prose is one document in chunks, self-contained lines are one example each), `lines` or
    /// `document`.
    #[arg(long, value_parser = ["auto", "lines", "document"])]
    text_mode: Option<String>,
    /// Warmup steps.
    #[arg(long)]
    warmup: Option<usize>,
    /// `constant`, `linear` or `cosine`.
    #[arg(long)]
    schedule: Option<String>,
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Global gradient-norm clipping (0: off).
    #[arg(long)]
    clip: Option<f64>,
    /// Share of --data held out for validation (without --validation); default: a tenth, but
    /// at least 40 examples of a small file (up to a quarter).
    #[arg(long)]
    val_fraction: Option<f64>,
    /// Score at most this many held-out examples (default: as many as ~15 s of evaluation on
    /// two CPU cores in the page allow for the model; the rest of a held-out share trains).
    #[arg(long)]
    val_max: Option<usize>,
    /// Recompute cheap activations in the backward pass instead of keeping them (less
    /// memory for long sequences, same results).
    #[arg(long)]
    gradient_checkpointing: bool,
    /// QLoRA: keep the frozen base's linear weights quantized while training with LoRA,
    /// `q8` or `q4` (blocks of 32 values per scale; `train.quantize_block_size` changes it).
    #[arg(long)]
    quantize_base: Option<String>,
    /// Precision of the merged model's weights: `f32` (as trained), `f16` or `bf16` (half
    /// the size; transformers loads it with `torch_dtype` from its config).
    #[arg(long)]
    export_dtype: Option<String>,
    /// Continue training. A LoRA adapter folder in PEFT's format (such as a previous run's
    /// DIR/adapter): its factors are where training starts, its rank, alpha and modules are the
    /// run's, the optimiser starts fresh. Or a checkpoint file written by --checkpoint: the run
    /// it belongs to continues where it stopped (its weights, AdamW's state, its place in the
    /// data and its training settings), with the losses of a run that never stopped.
    #[arg(long, conflicts_with_all = ["lora_r", "lora_alpha", "lora_targets"])]
    init_adapter: Option<PathBuf>,
    /// Save checkpoints of the run to FILE every --checkpoint-every steps (written beside it,
    /// then renamed over it), for --init-adapter FILE to continue.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Steps between checkpoints (default 25).
    #[arg(long, requires = "checkpoint")]
    checkpoint_every: Option<usize>,
    /// Where to write `merged/` and `adapter/`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Device for training: `cpu` (default) or `webgpu` (native wgpu).
    #[arg(long, default_value = "cpu")]
    backend: String,
}

impl TrainArgs {
    /// The job configuration: --config with the flags patched in, continuing --init-adapter
    /// when given (an adapter folder: refused for an encoder, see
    /// `FinetuneConfig::continue_adapter`), and the checkpoint to resume when --init-adapter is
    /// one (its training settings are the run's).
    fn job(&self, base: &LoadedModel) -> Result<(JobConfig, Option<Checkpoint>), Error> {
        let overrides = self.overrides()?;
        let mut cfg = job_config(&self.config)?.with_overrides(&overrides)?;
        let Some(path) = &self.init_adapter else {
            return Ok((cfg, None));
        };
        if path.is_file() {
            let bytes = std::fs::read(path).map_err(|e| {
                Error::new(
                    Code::ModelMissingFile,
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let ck = Checkpoint::from_bytes(&bytes).map_err(|e| Error {
                message: format!(
                    "{} is not a webtune checkpoint ({}); --init-adapter takes a PEFT adapter \
                     folder or a file written by --checkpoint",
                    path.display(),
                    e.message
                ),
                ..e
            })?;
            if overrides
                .get("train")
                .is_some_and(|t| t.as_object().is_some_and(|t| !t.is_empty()))
            {
                return Err(Error::config(
                    "a checkpoint continues its run with that run's training settings (steps, \
                     learning rate, LoRA, seed, ...): drop the training flags, or continue from \
                     an adapter folder to train it anew",
                )
                .with_details(json!({ "field": "init_adapter" })));
            }
            cfg.train = ck.config.clone();
            return Ok((cfg, Some(ck)));
        }
        if base.is_encoder() {
            return Err(Error::config(
                "--init-adapter continues a causal language model's adapter; a classifier \
                 continues from its merged model (DIR/merged) instead",
            ));
        }
        cfg.train = cfg.train.continue_adapter(read_peft_adapter(path)?)?;
        Ok((cfg, None))
    }

    /// The flags given, as a patch of the job configuration (`JobConfig::with_overrides`).
    fn overrides(&self) -> Result<Value, Error> {
        let mut train = serde_json::Map::new();
        let mut job = serde_json::Map::new();
        // --steps and --epochs each replace the other (clap refuses both together).
        if let Some(v) = self.steps {
            train.insert("steps".into(), json!(v));
            train.insert("epochs".into(), Value::Null);
        }
        if let Some(v) = self.epochs {
            train.insert("epochs".into(), json!(v));
            train.insert("steps".into(), Value::Null);
        }
        let flags = [
            ("method", self.method.as_ref().map(|v| json!(v))),
            ("lr", self.lr.map(|v| json!(v))),
            ("seed", self.seed.map(|v| json!(v))),
            ("lora_r", self.lora_r.map(|v| json!(v))),
            ("lora_alpha", self.lora_alpha.map(|v| json!(v))),
            ("lora_targets", self.lora_targets.as_ref().map(|v| json!(v))),
            ("grad_accum", self.grad_accum.map(|v| json!(v))),
            ("warmup", self.warmup.map(|v| json!(v))),
            ("schedule", self.schedule.as_ref().map(|v| json!(v))),
            ("weight_decay", self.weight_decay.map(|v| json!(v))),
            ("max_grad_norm", self.clip.map(|v| json!(v))),
            (
                "gradient_checkpointing",
                self.gradient_checkpointing.then_some(json!(true)),
            ),
            (
                "quantize_base",
                self.quantize_base
                    .as_deref()
                    .map(|v| BaseQuant::parse(v).map(|q| json!(q.as_str())))
                    .transpose()?,
            ),
        ];
        for (key, value) in flags {
            if let Some(value) = value {
                train.insert(key.into(), value);
            }
        }
        if let Some(v) = self.batch_size {
            job.insert("batch_size".into(), json!(v));
        }
        if let Some(v) = self.val_fraction {
            job.insert("validation_fraction".into(), json!(v));
        }
        if let Some(v) = self.val_max {
            job.insert("validation_max".into(), json!(v));
        }
        if let Some(v) = &self.export_dtype {
            job.insert("export_dtype".into(), json!(v));
        }
        if let Some(v) = self.checkpoint_every {
            job.insert("checkpoint_every".into(), json!(v));
        }
        let mut data = serde_json::Map::new();
        if let Some(v) = self.seq_len {
            data.insert("causal".into(), json!({ "seq_len": v }));
        }
        match self.text_mode.as_deref() {
            // A document's chunks default to ~one row of tokens (see the dataset reader).
            Some(mode @ ("auto" | "document")) => {
                data.insert(
                    "text_mode".into(),
                    json!({ "mode": mode, "chunk_chars": 0 }),
                );
            }
            Some(mode) => {
                data.insert("text_mode".into(), json!({ "mode": mode }));
            }
            None => {}
        }
        if !data.is_empty() {
            job.insert("data".into(), Value::Object(data));
        }
        job.insert("train".into(), Value::Object(train));
        Ok(Value::Object(job))
    }
}

#[derive(Args)]
struct DataArgs {
    model: PathBuf,
    #[arg(long)]
    data: PathBuf,
    /// A separate validation file (as for `train`).
    #[arg(long)]
    validation: Option<PathBuf>,
    /// The job configuration as JSON (its `data`, `validation_fraction`, `batch_size` ...).
    #[arg(long)]
    config: Option<String>,
}

#[derive(Args)]
struct EvalArgs {
    model: PathBuf,
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    config: Option<String>,
    /// A LoRA adapter folder (PEFT format, e.g. DIR/adapter of `webtune train --out DIR`),
    /// merged into the model before evaluating.
    #[arg(long)]
    adapter: Option<PathBuf>,
}

#[derive(Args)]
struct ToyArgs {
    /// Full configuration as a JSON object (same keys as the browser API's `trainToy`).
    #[arg(long)]
    config: Option<String>,
    /// Override the number of steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Override the seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override the peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// `cpu` (default) or `webgpu` (native wgpu).
    #[arg(long, default_value = "cpu")]
    backend: String,
}

#[derive(Serialize)]
struct ErrorOutput<'a> {
    error: &'a Error,
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string(&ErrorOutput { error: &error }).unwrap_or_else(
                        |_| format!("{{\"error\":{{\"message\":{:?}}}}}", error.message)
                    )
                );
            } else {
                eprintln!("error[{}]: {}", error.code.as_str(), error.message);
            }
            ExitCode::FAILURE
        }
    }
}

/// Asks glibc's malloc to keep freed memory for reuse instead of handing it back to the kernel.
/// A training step allocates and frees the same large activations every time; by default
/// glibc serves those from fresh `mmap`s and trims its heaps after each free, so every step
/// paid for page faults, zeroing pages and TLB shootdowns (~15% of a SmolLM2 LoRA 1 x 64 step
/// in `perf`; 91 -> 99 tokens/s with this). Memory is only kept for reuse, not added: peak RSS
/// moved by 2% in that measurement.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    use std::ffi::c_int;
    // From glibc's malloc.h.
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_MMAP_THRESHOLD: c_int = -3;
    extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }
    // SAFETY: mallopt only sets malloc's tuning parameters; it is called before any thread
    // starts. A refused value (returns 0) leaves glibc's default, which is only slower.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, c_int::MAX);
        mallopt(M_TRIM_THRESHOLD, c_int::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn load(model: &Path) -> Result<LoadedModel, Error> {
    let files = ModelFiles::from_dir(model)?;
    // Inference needs no autodiff graph.
    LoadedModel::load(files, &burn::tensor::Device::flex())
}

/// Merge a PEFT LoRA adapter into a loaded model; returns what was applied for `--json`.
fn with_adapter(
    model: LoadedModel,
    adapter: Option<&Path>,
) -> Result<(LoadedModel, Option<Value>), Error> {
    let Some(dir) = adapter else {
        return Ok((model, None));
    };
    let parsed = read_peft_adapter(dir)?;
    let model = apply_peft_adapter(model, &parsed)?;
    let mut summary = parsed.summary();
    summary["path"] = json!(dir.display().to_string());
    Ok((model, Some(summary)))
}

fn input_ids(
    model: &LoadedModel,
    text: &Option<String>,
    ids: &Option<Vec<u32>>,
) -> Result<Vec<u32>, Error> {
    match (text, ids) {
        (Some(text), _) => model.encode(text),
        (None, Some(ids)) => Ok(ids.clone()),
        (None, None) => Err(Error::config("give the input as --text/--prompt or --ids")),
    }
}

/// `--data` and `--validation` as the job reads them: from disk, by their file names.
struct DataPaths<'p> {
    name: String,
    path: &'p Path,
    held_out: Option<(String, &'p Path)>,
}

impl<'p> DataPaths<'p> {
    fn new(data: &'p Path, validation: Option<&'p Path>) -> Result<Self, Error> {
        let held_out = validation
            .map(|p| data_file_name(p).map(|n| (n, p)))
            .transpose()?;
        Ok(Self {
            name: data_file_name(data)?,
            path: data,
            held_out,
        })
    }

    fn files<'a>(&'a self, progress: OnDataProgress<'a>) -> DatasetFiles<'a> {
        DatasetFiles {
            train: DatasetFile {
                name: &self.name,
                source: DataSource::Path(self.path),
            },
            validation: self.held_out.as_ref().map(|(name, path)| DatasetFile {
                name,
                source: DataSource::Path(path),
            }),
            progress: Some(progress),
        }
    }
}

/// `--config` (JSON), or the defaults.
fn job_config(config: &Option<String>) -> Result<JobConfig, Error> {
    match config {
        Some(text) => JobConfig::from_json(text),
        None => Ok(JobConfig::default()),
    }
}

fn print_json(value: &impl Serialize) -> Result<(), Error> {
    println!("{}", serde_json::to_string(value).map_err(internal)?);
    Ok(())
}

fn run(cli: &Cli) -> Result<(), Error> {
    match &cli.command {
        Command::Info(args) => run_info(cli, args),
        Command::Forward(args) => run_forward(cli, args),
        Command::Generate(args) => run_generate(cli, args),
        Command::Train(args) => run_train(cli, args),
        Command::Recipe(args) => run_recipe(cli, args),
        Command::Data(args) => run_data(cli, args),
        Command::Eval(args) => run_eval(cli, args),
        Command::Toy(args) => run_toy(cli, args),
        Command::Shape(args) => run_shape(cli, args),
    }
}

fn run_info(cli: &Cli, args: &InfoArgs) -> Result<(), Error> {
    let InfoArgs { model } = args;
    let files = ModelFiles::from_dir(model)?;
    // The identity an adapter records of its base (the page's ModelInfo.fingerprint).
    let fingerprint = files.fingerprint()?;
    let model = LoadedModel::load(files, &burn::tensor::Device::flex())?;
    if cli.json {
        let mut value = serde_json::to_value(&model.info).map_err(internal)?;
        value["fingerprint"] = json!(fingerprint);
        print_json(&value)?;
    } else {
        let i = &model.info;
        println!("architecture   {}", i.architecture);
        println!(
            "parameters     {} ({:.1}M)",
            i.dims.parameters,
            i.dims.parameters as f64 / 1e6
        );
        println!("layers         {}", i.dims.layers);
        println!("hidden size    {}", i.dims.hidden_size);
        println!("heads          {}", i.dims.heads);
        println!(
            "matmul weights {} ({:.1}M per token, LM head included)",
            i.dims.matmul_weights,
            i.dims.matmul_weights as f64 / 1e6
        );
        println!("vocab size     {}", i.dims.vocab_size);
        println!("max positions  {}", i.dims.max_positions);
        println!("stored dtype   {}", i.dtype.join(", "));
        println!(
            "tokenizer      {}",
            if i.has_tokenizer { "yes" } else { "no" }
        );
        match (&i.chat.chat_template_source, &i.chat.chat_template_error) {
            (Some(source), _) => println!("chat template  yes ({source})"),
            (None, Some(error)) => println!("chat template  unusable: {error}"),
            (None, None) => println!("chat template  no"),
        }
        println!("fingerprint    {fingerprint}");
    }
    Ok(())
}

fn run_forward(cli: &Cli, args: &ForwardArgs) -> Result<(), Error> {
    let ForwardArgs { model, text, ids } = args;
    let model = load(model)?;
    let ids = input_ids(&model, text, ids)?;
    if model.is_encoder() {
        // An encoder: the first token's last hidden state and the mean-pooled sentence
        // embedding (sentence-transformers' pooling for MiniLM).
        let hidden = pollster::block_on(model.encode_hidden(&ids))?;
        let first = hidden.first().cloned().unwrap_or_default();
        let d = first.len();
        let mean: Vec<f32> = (0..d)
            .map(|j| hidden.iter().map(|h| h[j]).sum::<f32>() / hidden.len() as f32)
            .collect();
        if cli.json {
            print_json(&json!({ "input_ids": ids, "hidden_first": first, "pooled_mean": mean }))?;
        } else {
            println!("input ids: {ids:?}");
            println!(
                "mean-pooled embedding ({d} values): {:?}",
                &mean[..d.min(8)]
            );
        }
        return Ok(());
    }
    let logits = pollster::block_on(model.logits(&ids))?;
    let last = logits.last().cloned().unwrap_or_default();
    if cli.json {
        print_json(&json!({ "input_ids": ids, "logits_last": last }))?;
    } else {
        let best = last
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap_or(0);
        println!("input ids: {ids:?}");
        println!(
            "most likely next token: {best} (logit {:.4})",
            last.get(best).copied().unwrap_or(f32::NAN)
        );
    }
    Ok(())
}

fn run_generate(cli: &Cli, args: &GenerateArgs) -> Result<(), Error> {
    let GenerateArgs {
        model,
        prompt,
        ids,
        chat,
        system,
        max_new_tokens,
        greedy,
        temperature,
        top_k,
        top_p,
        repetition_penalty,
        seed,
        no_cache,
        ignore_eos,
        adapter,
    } = args;
    let (model, applied) = with_adapter(load(model)?, adapter.as_deref())?;
    let prompt = match chat {
        Some(message) => {
            let mut messages = Vec::new();
            if let Some(system) = system {
                messages.push(Message::new("system", system));
            }
            messages.push(Message::new("user", message));
            Prompt::Chat {
                messages,
                add_generation_prompt: true,
            }
        }
        None => Prompt::Ids(input_ids(&model, prompt, ids)?),
    };
    let opts = GenerateOptions {
        max_new_tokens: *max_new_tokens,
        greedy: *greedy,
        temperature: *temperature,
        top_k: *top_k,
        top_p: *top_p,
        repetition_penalty: *repetition_penalty,
        seed: *seed,
        use_cache: !no_cache,
        stop_tokens: Vec::new(),
    };
    let prompt = prompt.prepare(&model, opts, *ignore_eos)?;
    let stream = !cli.json && model.tokenizer.is_some();
    let mut shown = String::new();
    let mut so_far = Vec::new();
    let reply = pollster::block_on(respond(&model, &prompt, |t| {
        // The token that closes a chat turn is not part of the reply.
        if stream && !prompt.ends_turn(t) {
            // Decode the whole continuation each time: a token can end mid-character.
            so_far.push(t);
            if let Some(Ok(text)) = model.tokenizer.as_ref().map(|tk| tk.decode(&so_far)) {
                if let Some(new) = text.strip_prefix(shown.as_str()) {
                    print!("{new}");
                    let _ = std::io::stdout().flush();
                }
                shown = text;
            }
        }
        true
    }))?;
    if cli.json {
        let mut value =
            serde_json::to_value(&reply).map_err(|e| Error::new(Code::Internal, e.to_string()))?;
        value["adapter"] = json!(applied);
        print_json(&value)?;
    } else {
        if !stream {
            println!("{:?}", reply.generated_ids);
        } else {
            println!();
        }
        eprintln!(
            "{} tokens in {:.2}s ({:.1} tokens/s)",
            reply.generated_ids.len(),
            reply.seconds,
            reply.tokens_per_s
        );
    }
    Ok(())
}

fn run_recipe(cli: &Cli, args: &TrainArgs) -> Result<(), Error> {
    let out = args.out.as_ref().ok_or_else(|| {
        Error::config("webtune recipe needs --out DIR: the folder to write the project to")
    })?;
    // Check the arguments before loading the model.
    job_config(&args.config)?.with_overrides(&args.overrides()?)?;
    let files = ModelFiles::from_dir(&args.model)?;
    let meta = files.without_weights();
    let base = LoadedModel::load(files, &burn::tensor::Device::flex())?;
    let (cfg, resume) = args.job(&base)?;
    if resume.is_some() {
        // Its AdamW state is burn's: the Python project starts from an adapter instead.
        return Err(Error::config(
            "a recipe continues an adapter folder (--init-adapter DIR/adapter), not a webtune \
             checkpoint: export the run (--out) and continue its adapter",
        )
        .with_details(json!({ "field": "init_adapter" })));
    }
    let model_ref = base_model_ref(&args.model);
    let paths = DataPaths::new(&args.data, args.validation.as_deref())?;
    let backend = pollster::block_on(Backend::create(BackendKind::parse(&args.backend)?))?;
    let progress = data_progress(cli.json);
    let written = pollster::block_on(recipe(
        &model_ref,
        &meta,
        &base,
        &backend,
        paths.files(&progress),
        &cfg,
    ))?;
    let mut names = Vec::new();
    for (name, bytes) in &written {
        let path = out.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::config(format!("cannot create {}: {e}", parent.display())))?;
        }
        std::fs::write(&path, bytes)
            .map_err(|e| Error::config(format!("cannot write {}: {e}", path.display())))?;
        names.push(name.as_str());
    }
    if cli.json {
        print_json(&json!({ "out": out, "files": names }))?;
    } else {
        println!("wrote {} files under {}:", names.len(), out.display());
        for name in names {
            println!("  {name}");
        }
        println!(
            "run it with: cd {} && pip install -r requirements.txt && python train.py",
            out.display()
        );
    }
    Ok(())
}

/// The base model as the recipe's `job.json` names it: the folder as given (absolute, so the
/// project runs from anywhere on this machine), and the GGUF file in it for a `.gguf` path.
fn base_model_ref(model: &Path) -> BaseModelRef {
    let absolute = std::fs::canonicalize(model).unwrap_or_else(|_| model.to_path_buf());
    if absolute.is_file() {
        let dir = absolute.parent().unwrap_or(Path::new("."));
        BaseModelRef {
            path: dir.display().to_string(),
            gguf_file: absolute
                .file_name()
                .map(|n| n.to_string_lossy().into_owned()),
        }
    } else {
        BaseModelRef {
            path: absolute.display().to_string(),
            gguf_file: None,
        }
    }
}

/// Resuming `resume` and saving checkpoints to `file` (a failed write is said on stderr: the
/// run goes on), or neither.
fn checkpointing(
    resume: Option<Checkpoint>,
    file: Option<PathBuf>,
) -> Option<Checkpointing<'static>> {
    if resume.is_none() && file.is_none() {
        return None;
    }
    let save = move |ck: Checkpoint| {
        let Some(file) = &file else { return };
        let mut partial = file.clone().into_os_string();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let written =
            std::fs::write(&partial, ck.to_bytes()).and_then(|()| std::fs::rename(&partial, file));
        match written {
            Ok(()) => eprintln!("checkpoint of step {} saved to {}", ck.step, file.display()),
            Err(e) => eprintln!(
                "warning: could not save the checkpoint to {}: {e}",
                file.display()
            ),
        }
    };
    Some(Checkpointing {
        resume,
        // The job sets it from its configuration (checkpoint_every).
        every: 0,
        save: Box::new(save),
    })
}

fn run_train(cli: &Cli, args: &TrainArgs) -> Result<(), Error> {
    let TrainArgs {
        model,
        data,
        validation,
        config,
        task,
        out,
        backend,
        ..
    } = args;
    // How to load depends on the configuration; an adapter to continue is read once the model
    // is there (`TrainArgs::job`).
    let cfg = job_config(config)?.with_overrides(&args.overrides()?)?;
    let files = ModelFiles::from_dir(model)?;
    let meta = files.without_weights();
    let device = burn::tensor::Device::flex();
    // QLoRA: quantize the projections as they are read, so no f32 copy of them ever exists.
    let base = match (cfg.train.method, cfg.train.quantize_base) {
        (Method::Lora, Some(quant)) => {
            load_quantized(files, &device, quant, cfg.train.quantize_block_size)?.0
        }
        _ => LoadedModel::load(files, &device)?,
    };
    let (cfg, resume) = args.job(&base)?;
    let checkpointing = checkpointing(resume, args.checkpoint.clone());
    let paths = DataPaths::new(data, validation.as_deref())?;
    if let Some(task) = task {
        let would = webtune::task_name(&base, &paths.files(&|_| {}), &cfg)?;
        if task != would {
            let why = if base.is_encoder() {
                "an encoder learns a classifier from labelled texts and sentence embeddings \
                 from pairs"
            } else {
                "it is a causal language model, which learns to continue text"
            };
            return Err(Error::config(format!(
                "--task {task}: {} on {} is a {would} job: {why}",
                model.display(),
                data.display()
            )));
        }
    }
    let backend = pollster::block_on(Backend::create(BackendKind::parse(backend)?))?;
    let json_out = cli.json;
    let progress_json = cli.progress_json;
    if progress_json {
        eprintln!("{}", json!({ "backend_info": &backend.info }));
    }
    let progress = data_progress(json_out || progress_json);
    let output = pollster::block_on(run_task(
        &meta,
        &base,
        &backend,
        paths.files(&progress),
        &cfg,
        &model.display().to_string(),
        checkpointing,
        |event| {
            if progress_json {
                if let Ok(line) = serde_json::to_string(&event) {
                    eprintln!("{line}");
                }
            }
            if !json_out {
                match event {
                    JobEvent::Phase { message, .. } => eprintln!("{message}"),
                    JobEvent::Step(p) => {
                        if p.step == 1 || p.step % 10 == 0 || p.step == p.total_steps {
                            eprintln!("{}", step_line(p));
                        }
                    }
                }
            }
            true
        },
    ))?;
    if let Some(out) = out {
        pollster::block_on(write_export(output.export(), out))?;
    }
    if cli.json {
        // The result as the page gets it, plus the headline numbers at the top.
        let (steps, train_loss, tokens_per_s) = match &output {
            JobResult::Causal(o) => (o.summary.steps, &o.summary.losses, o.summary.tokens_per_s),
            JobResult::Classification(o) => {
                (o.summary.steps, &o.summary.losses, o.summary.tokens_per_s)
            }
            JobResult::Embedding(o) => (o.summary.steps, &o.summary.losses, o.summary.tokens_per_s),
        };
        let mut value = serde_json::to_value(&output).map_err(internal)?;
        value["steps"] = json!(steps);
        value["train_loss"] = json!(train_loss);
        value["tokens_per_s"] = json!(tokens_per_s);
        print_json(&value)?;
    } else {
        match &output {
            JobResult::Causal(output) => print_causal(output),
            JobResult::Classification(output) => print_classification(output),
            JobResult::Embedding(output) => print_embedding(output),
        }
        match out {
            Some(out) => println!(
                "\nwrote {} files under {}",
                output.export().names().len(),
                out.display()
            ),
            None => println!("\n(no --out given: nothing written)"),
        }
    }
    Ok(())
}

/// Write every exported file under `out`, the merged weights tensor by tensor (never whole in
/// memory).
async fn write_export(export: &Export, out: &Path) -> Result<(), Error> {
    for name in export.names() {
        let path = out.join(&name);
        let fail =
            |e: std::io::Error| Error::config(format!("cannot write {}: {e}", path.display()));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::config(format!("cannot create {}: {e}", parent.display())))?;
        }
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).map_err(fail)?);
        export
            .write(&name, &mut |bytes| file.write_all(bytes).map_err(fail))
            .await?;
        file.flush().map_err(fail)?;
    }
    Ok(())
}

fn run_data(cli: &Cli, args: &DataArgs) -> Result<(), Error> {
    let DataArgs {
        model,
        data,
        validation,
        config,
    } = args;
    let cfg = job_config(config)?;
    let files = ModelFiles::from_dir(model)?;
    let base = LoadedModel::load(files.clone(), &burn::tensor::Device::flex())?;
    let paths = DataPaths::new(data, validation.as_deref())?;
    let progress = data_progress(cli.json);
    let dataset = paths.files(&progress);
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let total_bytes = size(data) + paths.held_out.as_ref().map_or(0, |(_, p)| size(p));
    let start = std::time::Instant::now();
    // Native memory has no fixed ceiling: the estimate is shown, nothing is refused.
    let room = webtune::train::Room {
        kept_files: files.resident_bytes(),
        ..Default::default()
    };
    let mut value = webtune::inspect_data(&base, Some(&files), dataset, &cfg, room)?;
    let seconds = start.elapsed().as_secs_f64();
    value["seconds"] = json!(seconds);
    value["bytes"] = json!(total_bytes);
    value["mb_per_s"] = json!(total_bytes as f64 / 1e6 / seconds.max(1e-9));
    if cli.json {
        print_json(&value)?;
    } else {
        print_data_report(&value);
    }
    Ok(())
}

fn run_eval(cli: &Cli, args: &EvalArgs) -> Result<(), Error> {
    let EvalArgs {
        model,
        data,
        config,
        adapter,
    } = args;
    let cfg = job_config(config)?;
    let files = ModelFiles::from_dir(model)?;
    let base = LoadedModel::load(files.clone(), &burn::tensor::Device::flex())?;
    let (base, applied) = with_adapter(base, adapter.as_deref())?;
    let (name, bytes) = named_file(data)?;
    let mut value = pollster::block_on(webtune::eval_data(&base, &files, &name, &bytes, &cfg))?;
    if let Some(summary) = applied {
        value["adapter"] = summary;
    }
    if base.is_encoder() {
        if cli.json {
            print_json(&value)?;
        } else {
            let m = |k: &str| value["eval"][k].as_f64().unwrap_or(f64::NAN);
            if value["task"] == "embedding" {
                println!(
                    "{} pairs, each anchor searching all positives: recall@1 {:.3}, MRR {:.3}, \
                     cosine of a pair {:.3} (others {:.3}), loss {:.4}",
                    value["examples"],
                    m("accuracy"),
                    m("mrr"),
                    m("positive_cosine"),
                    m("negative_cosine"),
                    m("loss")
                );
            } else {
                println!(
                    "{} examples: accuracy {:.3}, macro-F1 {:.3}, loss {:.4}",
                    value["examples"],
                    m("accuracy"),
                    m("macro_f1"),
                    m("loss")
                );
            }
        }
        return Ok(());
    }
    if cli.json {
        print_json(&value)?;
    } else {
        if let Some(a) = value.get("adapter") {
            println!(
                "with LoRA adapter {} (r {}, {} modules, merged)",
                a["path"], a["r"], a["modules"]
            );
        }
        println!(
            "{} examples: loss {:.4}, perplexity {:.2}",
            value["examples"], value["eval"]["loss"], value["eval"]["perplexity"]
        );
        let a = &value["answers"];
        if !a.is_null() {
            println!(
                "greedy answers to {} prompts: exact match {:.3}, token F1 {:.3}",
                a["examples"],
                a["exact_match"].as_f64().unwrap_or(f64::NAN),
                a["token_f1"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    Ok(())
}

fn run_shape(cli: &Cli, args: &ShapeArgs) -> Result<(), Error> {
    use webtune::io::safetensors::StoreDtype;
    use webtune::models::shapes;
    let ShapeArgs {
        name,
        out,
        tokenizer,
        dtype,
        seed,
    } = args;
    let config = shapes::config(name)?;
    let dtype: StoreDtype = serde_json::from_value(json!(dtype))
        .map_err(|_| Error::config(format!("--dtype {dtype}: choose bf16, f16 or f32")))?;
    let fail = |path: &Path, e: std::io::Error| {
        Error::config(format!("cannot write {}: {e}", path.display()))
    };
    std::fs::create_dir_all(out).map_err(|e| fail(out, e))?;
    let mut config_out = config.clone();
    config_out["torch_dtype"] = json!(dtype.torch_name());
    let path = out.join("config.json");
    let text = serde_json::to_vec_pretty(&config_out).map_err(internal)?;
    std::fs::write(&path, text).map_err(|e| fail(&path, e))?;
    if let Some(model) = tokenizer {
        let json = ModelFiles::from_dir(model)?
            .tokenizer()?
            .and_then(|t| t.to_json().transpose())
            .transpose()?
            .ok_or_else(|| {
                Error::config(format!("{} has no tokenizer to copy", model.display()))
            })?;
        let path = out.join("tokenizer.json");
        std::fs::write(&path, json).map_err(|e| fail(&path, e))?;
    }
    let path = out.join("model.safetensors");
    let file = std::fs::File::create(&path).map_err(|e| fail(&path, e))?;
    let mut file = std::io::BufWriter::new(file);
    shapes::write_weights(&config, *seed, dtype, &mut file)?;
    file.flush().map_err(|e| fail(&path, e))?;
    let parameters = shapes::parameters(&config)?;
    if cli.json {
        print_json(&json!({ "shape": name, "parameters": parameters, "out": out }))?;
    } else {
        println!(
            "wrote {} ({:.0}M parameters, random weights, {}) to {}",
            name,
            parameters as f64 / 1e6,
            dtype.torch_name(),
            out.display()
        );
    }
    Ok(())
}

fn run_toy(cli: &Cli, args: &ToyArgs) -> Result<(), Error> {
    let ToyArgs {
        config,
        steps,
        seed,
        lr,
        backend,
    } = args;
    let mut cfg = match config {
        Some(text) => ToyTrainConfig::from_json(text)?,
        None => ToyTrainConfig::default(),
    };
    if let Some(steps) = steps {
        cfg.steps = *steps;
    }
    if let Some(seed) = seed {
        cfg.seed = *seed;
    }
    if let Some(lr) = lr {
        cfg.lr = *lr;
    }
    let kind = BackendKind::parse(backend)?;
    let backend = pollster::block_on(Backend::create(kind))?;
    let json = cli.json;
    let progress_json = cli.progress_json;
    if progress_json {
        eprintln!("{}", json!({ "backend_info": &backend.info }));
    }
    let mut summary = pollster::block_on(train_toy(&backend, &cfg, |p| {
        if progress_json {
            if let Ok(line) = serde_json::to_string(p) {
                eprintln!("{line}");
            }
        }
        if !json && (p.step == 1 || p.step % 20 == 0 || p.step == p.total_steps) {
            eprintln!(
                "step {:>5}/{}  loss {:.4}  lr {:.2e}  {:.0} tok/s  eta {:.1}s",
                p.step, p.total_steps, p.loss, p.lr, p.tokens_per_s, p.eta_s
            );
        }
        true
    }))?;
    summary.backend = format!("{}-native", summary.backend);
    if json {
        println!("{}", serde_json::to_string(&summary).map_err(internal)?);
    } else {
        println!(
            "{} steps on {}: loss {:.4} → {:.4}, {:.2} ms/step (first step {:.0} ms), {:.0} tokens/s",
            summary.steps,
            summary.backend,
            summary.initial_loss,
            summary.final_loss,
            summary.median_step_ms,
            summary.first_step_ms,
            summary.tokens_per_s
        );
    }
    Ok(())
}

/// "step   10/100  loss 1.2345  lr 2.00e-4  1234 tok/s  eta 12s  val loss 1.3000".
fn step_line(p: &Progress) -> String {
    let speed = match (p.tokens_per_s, p.examples_per_s) {
        (Some(t), _) => format!("{t:.0} tok/s"),
        (None, Some(e)) => format!("{e:.1} examples/s"),
        (None, None) => String::new(),
    };
    let mut eval = String::new();
    if let Some(e) = &p.eval {
        if let Some(loss) = e["loss"].as_f64() {
            eval += &format!("  val loss {loss:.4}");
        }
        if let Some(accuracy) = e["accuracy"].as_f64() {
            eval += &format!(" accuracy {accuracy:.3}");
        }
    }
    format!(
        "step {:>4}/{}  loss {:.4}  lr {:.2e}  {speed}  eta {:.0}s{eval}",
        p.step, p.total_steps, p.loss, p.lr, p.eta_s
    )
}

fn print_causal(output: &webtune::JobOutput) {
    let fmt = |e: &Option<webtune::train::causal::EvalLoss>| {
        e.as_ref()
            .map(|e| format!("loss {:.4}, perplexity {:.2}", e.loss, e.perplexity))
            .unwrap_or_else(|| "–".into())
    };
    println!(
        "{} steps; validation before: {}; after: {}",
        output.summary.steps,
        fmt(&output.before),
        fmt(&output.after)
    );
    if let Some(c) = &output.comparison {
        println!(
            "{}",
            judged(
                "validation loss",
                &c.loss_change,
                |x| format!("{:+.1}%", x * 100.0),
                c.units,
                "held-out rows"
            )
        );
    }
    if let (Some(b), Some(a)) = (output.answers_before, output.answers_after) {
        println!(
            "answers on {} samples: exact match {:.2} → {:.2}, token F1 {:.2} → {:.2}",
            a.examples, b.exact_match, a.exact_match, b.token_f1, a.token_f1
        );
    }
    for s in &output.samples {
        println!(
            "\n[{}] {}\n  reference: {}\n  before:    {}\n  after:     {}",
            s.source,
            s.prompt.trim_end(),
            s.reference,
            s.before,
            s.after
        );
    }
}

/// "accuracy: +12.5 pts (95% interval +4.0 to +21.0 pts over 64 held-out examples): better".
fn judged(
    what: &str,
    change: &webtune::eval::uncertainty::Change,
    fmt: impl Fn(f64) -> String,
    units: usize,
    of: &str,
) -> String {
    use webtune::eval::uncertainty::{Outcome, MIN_UNITS};
    let interval = match change.interval {
        Some(i) => format!("95% interval {} to {}", fmt(i.low), fmt(i.high)),
        None => format!("no interval: fewer than {MIN_UNITS}"),
    };
    let outcome = match change.outcome {
        Outcome::Better => "better",
        Outcome::Worse => "worse",
        Outcome::Same => "no clear change",
    };
    format!(
        "{what}: {} ({interval} over {units} {of}): {outcome}",
        fmt(change.value)
    )
}

fn print_classification(output: &webtune::ClassifyJobOutput) {
    let (b, a) = (&output.before, &output.after);
    println!(
        "{} steps; {} validation examples, labels {}",
        output.summary.steps,
        a.examples,
        output.labels.join(", ")
    );
    println!(
        "accuracy {:.3} → {:.3}; macro-F1 {:.3} → {:.3}; loss {:.4} → {:.4}",
        b.accuracy, a.accuracy, b.macro_f1, a.macro_f1, b.loss, a.loss
    );
    if let Some(c) = &output.comparison {
        let points = |x: f64| format!("{:+.1} pts", x * 100.0);
        let n = c.examples;
        println!(
            "{}",
            judged(
                "accuracy",
                &c.accuracy_change,
                points,
                n,
                "held-out examples"
            )
        );
    }
    for (before, after) in b.per_class.iter().zip(&a.per_class) {
        println!(
            "  {:<16} F1 {:.3} → {:.3}  (support {})",
            after.label, before.f1, after.f1, after.support
        );
    }
    println!(
        "{} predictions changed: {} fixed, {} broken",
        output.changed_total, output.fixed, output.broken
    );
    for c in &output.changed {
        println!(
            "  [{}] {} {:?}: {} ({:.2}) → {} ({:.2}), true {}",
            c.status,
            c.source,
            c.text,
            c.before.label,
            c.before.prob,
            c.after.label,
            c.after.prob,
            c.label
        );
    }
}

fn print_embedding(output: &webtune::EmbedJobOutput) {
    let (b, a) = (&output.before, &output.after);
    println!(
        "{} steps; {} held-out pairs, each anchor searching all {} positives ({:?} pooling)",
        output.summary.steps, a.pairs, a.pairs, output.pooling
    );
    println!(
        "recall@1 {:.3} → {:.3}; MRR {:.3} → {:.3}; loss {:.4} → {:.4}",
        b.accuracy, a.accuracy, b.mrr, a.mrr, b.loss, a.loss
    );
    println!(
        "cosine of a pair {:.3} → {:.3}; of other pairs {:.3} → {:.3}",
        b.positive_cosine, a.positive_cosine, b.negative_cosine, a.negative_cosine
    );
    if let Some(c) = &output.comparison {
        let points = |x: f64| format!("{:+.1} pts", x * 100.0);
        let n = c.pairs;
        println!(
            "{}",
            judged(
                "recall@1",
                &c.accuracy_change,
                points,
                n,
                "held-out anchors"
            )
        );
    }
    println!(
        "{} best matches changed: {} fixed, {} broken",
        output.changed_total, output.fixed, output.broken
    );
    for c in &output.changed {
        println!(
            "  [{}] {} {:?}: {:?} → {:?}",
            c.status, c.source, c.anchor, c.before.text, c.after.text
        );
    }
}

/// Reading progress on stderr ("reading train.jsonl: 40% of 52.1 MB, 120000 records") at every
/// tenth of a file over 2 MB; nothing when `quiet`.
fn data_progress(quiet: bool) -> impl Fn(webtune::data::validate::DataProgress<'_>) {
    let shown = std::cell::Cell::new(0usize);
    move |p| {
        if quiet || p.bytes <= 2_000_000 {
            return;
        }
        let tenth = p.bytes_done * 10 / p.bytes;
        if p.bytes_done == 0 || tenth > shown.get() {
            shown.set(tenth);
            eprintln!(
                "reading {}: {}% of {:.1} MB, {} records",
                p.file,
                tenth * 10,
                p.bytes as f64 / 1e6,
                p.records_done
            );
        }
    }
}

/// A dataset file's name (for messages) and bytes.
fn named_file(path: &Path) -> Result<(String, Vec<u8>), Error> {
    Ok((file_name(path), read_data(path)?))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A dataset file's name (for messages), once it is known to be there: `train` and `data`
/// stream the file itself from disk.
fn data_file_name(path: &Path) -> Result<String, Error> {
    std::fs::metadata(path).map_err(|e| {
        Error::new(
            webtune::Code::DataInvalid,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    Ok(file_name(path))
}

/// `webtune data` without --json: the report as a person reads it.
fn print_data_report(value: &serde_json::Value) {
    for key in ["report", "validation_report"] {
        let r = &value[key];
        if r.is_null() {
            continue;
        }
        println!(
            "{}: {} bytes, {} ({}), {}",
            r["file"].as_str().unwrap_or("?"),
            r["bytes"],
            r["format"].as_str().unwrap_or("?"),
            r["encoding"].as_str().unwrap_or("?"),
            r["schema"]["explanation"].as_str().unwrap_or("")
        );
        println!(
            "  {} records, {} examples kept, {} skipped {}, {} duplicates",
            r["records"], r["examples"], r["skipped"], r["skipped_by_reason"], r["duplicates"]
        );
        if let Some(reason) = r["text_mode"]["reason"].as_str() {
            println!("  text: {reason}");
        }
        for issue in r["issues"].as_array().into_iter().flatten().take(20) {
            println!("  {}", issue["message"].as_str().unwrap_or("?"));
        }
        if let Some(labels) = r["labels"].as_object() {
            let list: Vec<String> = labels.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
            println!("  labels: {}", list.join(", "));
        }
        let t = &r["tokens"];
        if !t.is_null() {
            println!(
                "  tokens: min {} median {} p95 {} max {}; {} longer than {}",
                t["min"], t["median"], t["p95"], t["max"], t["truncated"], t["seq_len"]
            );
        }
    }
    println!(
        "split: {} training, {} validation{}",
        value["train_examples"],
        value["validation_examples"],
        match value["overlap_removed"].as_u64() {
            Some(n) if n > 0 =>
                format!(" ({n} training examples also in the validation file left out)"),
            _ => String::new(),
        }
    );
    println!(
        "read, validated and tokenized {:.1} MB in {:.2} s ({:.1} MB/s)",
        value["bytes"].as_f64().unwrap_or(0.0) / 1e6,
        value["seconds"].as_f64().unwrap_or(0.0),
        value["mb_per_s"].as_f64().unwrap_or(0.0)
    );
}

fn read_data(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| {
        Error::new(
            webtune::Code::DataInvalid,
            format!("cannot read {}: {e}", path.display()),
        )
    })
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::new(webtune::Code::Internal, e.to_string())
}
