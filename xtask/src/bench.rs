//! `cargo xtask bench`: the same workloads on every path this machine has — the native CLI (CPU,
//! release build), headless Chromium on the CPU-wasm backend and on WebGPU (SwiftShader when there
//! is no GPU), and the PyTorch reference (eager, CPU, fp32, transformers + PEFT) — in one
//! invocation. Prints a table (Markdown, ready for the README) and writes everything measured to
//! `<target>/bench/<timestamp>.json`.
//!
//! Per-step times come from the progress events of each path (the native CLI prints them with its
//! hidden `--progress-json` flag; the page reports them to `window.webtune`); the first step is
//! reported apart (warm-up: kernel compilation, allocator growth) and steps that also ran an
//! evaluation are left out of the median and spread.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::serve::serve_dir;
use crate::util::{self, repo_root, CHROMIUM};
use crate::wasm::{build_wasm, gzip_size};
use crate::{prepare_models, Profile};

pub struct BenchOptions {
    pub full: bool,
    pub cases: Option<Vec<String>>,
    pub browser: bool,
    pub torch: bool,
    /// Measure what is already built (www/pkg, target/release/webtune): no builds.
    pub no_build: bool,
    /// Only these columns (names of [`PATHS`]); all when `None`.
    pub paths: Option<Vec<String>>,
}

impl BenchOptions {
    /// Every case on every path.
    fn complete(&self) -> bool {
        self.cases.is_none() && self.paths.is_none() && self.browser && self.torch
    }

    /// Whether the column `path` is measured in this run.
    fn wants(&self, path: &str) -> bool {
        let selected = self
            .paths
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == path));
        selected
            && match path {
                "torch" => self.torch,
                p if p.starts_with("wasm-") => self.browser,
                _ => true,
            }
    }
}

/// The Vulkan driver file of the SwiftShader that Debian's Chromium ships and falls back to for
/// WebGPU on a machine without a GPU. The native CLI can load the same driver (through the
/// Vulkan loader next to it), which makes "browser WebGPU vs native burn-wgpu on the same
/// adapter" measurable on such a machine.
const SWIFTSHADER_ICD: &str = "/usr/lib/chromium/vk_swiftshader_icd.json";

/// What a column left out by `--paths` shows.
const NOT_SELECTED: &str = "not selected (--paths)";

/// The case names `--cases` accepts.
pub const CASES: &[&str] = &[
    "toy-train",
    "smollm2-lora-step",
    "smollm2-generate",
    "smollm2-adapter",
    "tiny-gpt2-vocab-train",
    "data-read",
    "shapes",
];

const SMOLLM2_ID: &str = "smollm2-135m-instruct";
const SMOLLM2_GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const TINY_GPT2: &str = "tests/fixtures/tiny_random/gpt2-vocab";
const DATASET: &str = "shakespeare_excerpt.txt";
const MINILM_ID: &str = "all-minilm-l6-v2";
/// Where the generated large datasets of the data-read cases go (served with the page, ignored
/// by git).
const BENCH_DATA: &str = "www/bench-data";
/// Where the checkpoints with real models' shapes and random weights go (ignored by git).
const SHAPES: &str = "target/bench-shapes";
/// The SmolLM2 LoRA adapter of the adapter case (PEFT files), trained for two steps by the CLI.
const BENCH_ADAPTER: &str = "target/bench-adapter";
const ADAPTER_FILES: [&str; 2] = ["adapter_config.json", "adapter_model.safetensors"];
/// A fixed prompt (token ids of SmolLM2's vocabulary), so every path generates from the same one.
const PROMPT_IDS: &[u32] = &[1, 9690, 198, 2683, 359, 253, 5356, 5646];

/// The columns of the table, in order.
const PATHS: &[(&str, &str)] = &[
    ("native-cpu", "native CLI, CPU (release)"),
    ("native-wgpu", "native CLI, burn-wgpu"),
    ("native-wgpu-ss", "native CLI, burn-wgpu on SwiftShader"),
    ("wasm-cpu", "Chromium, CPU-wasm (threads)"),
    ("wasm-cpu-1t", "Chromium, CPU-wasm 1 thread"),
    ("wasm-webgpu", "Chromium, WebGPU"),
    ("torch", "PyTorch eager CPU"),
];

/// bench.mjs's backends and the columns they fill.
const BROWSER_PATHS: [(&str, &str); 3] = [
    ("cpu", "wasm-cpu"),
    ("cpu-1t", "wasm-cpu-1t"),
    ("webgpu", "wasm-webgpu"),
];

/// One workload, described for every path.
struct Case {
    name: String,
    /// The `--cases` name that selects it.
    group: &'static str,
    /// What the figures mean: "train" (step times), "generate" (tokens/s only) or "data"
    /// (dataset read + validate + tokenize throughput, MB/s).
    kind: &'static str,
    tokens_per_step: Option<usize>,
    /// Arguments of the native CLI (after the binary).
    native: Vec<String>,
    /// Also run on burn's wgpu backend natively: the native arguments plus these and
    /// `--backend webgpu` (skipped when the machine has no wgpu adapter).
    native_wgpu: Option<Vec<String>>,
    /// The case as tests/bench/bench.mjs reads it.
    browser: Value,
    /// Arguments of tools/reference/bench_torch.py, when PyTorch has the workload.
    torch: Option<Vec<String>>,
    /// For a fine-tuning case, what its model FLOPs per step are counted from.
    flops: Option<TrainShape>,
    /// A model with a real model's shapes and random weights (`webtune shape <name>`), written
    /// under [`SHAPES`] before the case runs.
    shape: Option<&'static str>,
}

/// A fine-tuning workload's model and sequence shape.
struct TrainShape {
    /// The model `webtune info --json` describes (`matmul_weights`, `layers`,
    /// `attention_width`).
    model: PathBuf,
    seq_len: usize,
    /// Full fine-tuning (weight gradients for every matrix) rather than LoRA.
    full: bool,
}

/// Model FLOPs of one training step of `tokens` tokens, counted as is usual: 2 per weight and
/// token for each matrix product; attention as computed (the whole T × T scores, masked after).
/// The forward pass costs 2·W per token plus 4·L·T·A for the scores and the weighted sum; the
/// backward pass the same again for the input gradients (frozen weights get no weight gradients
/// under LoRA), another 2·W for the weight gradients of a full fine-tune, and twice the
/// forward attention. LoRA's own rank-r products are left out (< 1% for r = 8).
fn train_flops_per_step(info: &Value, shape: &TrainShape, tokens: usize) -> Option<f64> {
    let w = info["matmul_weights"].as_f64()?;
    let layers = info["layers"].as_f64()?;
    let width = info["attention_width"].as_f64()?;
    let linear = 2.0 * w * if shape.full { 3.0 } else { 2.0 };
    let attention = 3.0 * 4.0 * layers * shape.seq_len as f64 * width;
    Some(tokens as f64 * (linear + attention))
}

fn s(v: impl ToString) -> String {
    v.to_string()
}

fn cases(full: bool) -> Vec<Case> {
    let root = repo_root();
    let smollm2 = root
        .join("www/models")
        .join(SMOLLM2_ID)
        .join("resolve/main")
        .join(SMOLLM2_GGUF);
    let data = root.join("www/samples").join(DATASET);
    let mut out = Vec::new();

    // Toy transformer on the copy task (the foundation's check): tiny, so it shows overheads.
    let toy_steps = if full { 200 } else { 40 };
    let toy = json!({ "steps": toy_steps, "batch_size": 16, "seq_len": 16 });
    let toy_args = vec![
        s("toy"),
        s("--config"),
        toy.to_string(),
        s("--json"),
        s("--progress-json"),
    ];
    out.push(Case {
        name: s("toy-train"),
        group: "toy-train",
        kind: "train",
        tokens_per_step: Some(16 * 16),
        native: toy_args,
        native_wgpu: Some(vec![]),
        browser: json!({ "kind": "toy", "config": toy }),
        torch: None,
        flops: None,
        shape: None,
    });

    // SmolLM2-135M, LoRA r=8 on q/v, packed plain text (every row is seq_len tokens).
    let (batch, seq, steps) = if full { (4, 128, 12) } else { (1, 64, 6) };
    let job = |targets: &[&str], batch: usize, seq: usize, steps: usize| {
        json!({
            "batch_size": batch,
            "validation_max": 2,
            "samples": 0,
            "data": { "causal": { "seq_len": seq } },
            "train": {
                "method": "lora", "lora_r": 8, "lora_alpha": 16.0, "lora_targets": targets,
                "steps": steps, "eval_every": 1_000_000, "seed": 0
            }
        })
    };
    // `webtune train MODEL --data DATA --config JOB`, with the progress events the bench reads.
    let train_args = |model: &Path, data: &Path, job: &Value| {
        vec![
            s("train"),
            model.display().to_string(),
            s("--data"),
            data.display().to_string(),
            s("--config"),
            job.to_string(),
            s("--json"),
            s("--progress-json"),
        ]
    };
    let smol_job = job(&["q_proj", "v_proj"], batch, seq, steps);
    out.push(Case {
        name: s("smollm2-lora-step"),
        group: "smollm2-lora-step",
        kind: "train",
        tokens_per_step: Some(batch * seq),
        native: train_args(&smollm2, &data, &smol_job),
        native_wgpu: Some(vec![]),
        browser: json!({
            "kind": "finetune", "model": { "default": SMOLLM2_ID }, "dataset": DATASET,
            "config": smol_job, "tokens_per_step": batch * seq,
        }),
        torch: Some(vec![
            s("--case"),
            s("smollm2-lora-step"),
            s("--batch"),
            s(batch),
            s("--seq"),
            s(seq),
            s("--steps"),
            s(steps),
        ]),
        flops: Some(TrainShape {
            model: smollm2.clone(),
            seq_len: seq,
            full: false,
        }),
        shape: None,
    });

    // Generation, with and without the KV cache.
    let ids: Vec<String> = PROMPT_IDS.iter().map(u32::to_string).collect();
    // `webtune generate SMOLLM2` from the prompt, greedy, `new_tokens` tokens.
    let generate_args = |new_tokens: usize| {
        vec![
            s("generate"),
            smollm2.display().to_string(),
            s("--ids"),
            ids.join(","),
            s("--max-new-tokens"),
            s(new_tokens),
            s("--greedy"),
            s("--ignore-eos"),
            s("--json"),
        ]
    };
    for (use_cache, new_tokens) in [
        (true, if full { 64 } else { 24 }),
        (false, if full { 32 } else { 12 }),
    ] {
        let mut native = generate_args(new_tokens);
        let mut torch = vec![
            s("--case"),
            s("smollm2-generate"),
            s("--prompt-len"),
            s(PROMPT_IDS.len()),
            s("--new-tokens"),
            s(new_tokens),
        ];
        if !use_cache {
            native.push(s("--no-cache"));
            torch.push(s("--no-cache"));
        }
        out.push(Case {
            name: if use_cache {
                s("smollm2-generate (KV cache)")
            } else {
                s("smollm2-generate (no cache)")
            },
            group: "smollm2-generate",
            kind: "generate",
            tokens_per_step: None,
            native,
            native_wgpu: None,
            browser: json!({
                "kind": "generate", "model": { "default": SMOLLM2_ID }, "ids": PROMPT_IDS,
                "max_new_tokens": new_tokens, "use_cache": use_cache,
            }),
            torch: Some(torch),
            flops: None,
            shape: None,
        });
    }

    // Hot swap: the same generation with a LoRA adapter (r=8 on q/v) on the base. The page keeps
    // it un-merged beside the base and switches between base and adapter without a reload (the
    // switch and attach times are in the notes); the native CLI merges it (`--adapter`).
    let adapter = root.join(BENCH_ADAPTER).join("adapter");
    let new_tokens = if full { 64 } else { 24 };
    out.push(Case {
        name: s("smollm2-generate (LoRA adapter)"),
        group: "smollm2-adapter",
        kind: "generate",
        tokens_per_step: None,
        native: [
            generate_args(new_tokens),
            vec![s("--adapter"), adapter.display().to_string()],
        ]
        .concat(),
        native_wgpu: None,
        browser: json!({
            "kind": "generate", "model": { "default": SMOLLM2_ID }, "ids": PROMPT_IDS,
            "max_new_tokens": new_tokens, "use_cache": true,
            "adapter": { "dir": adapter, "files": ADAPTER_FILES },
        }),
        torch: None,
        flops: None,
        shape: None,
    });

    // Tiny GPT-2 with the real 50257-token vocabulary: the LM head dominates.
    let (batch, seq, steps) = if full { (4, 64, 30) } else { (4, 64, 10) };
    let gpt2_job = job(&["c_attn"], batch, seq, steps);
    let gpt2_dir = root.join(TINY_GPT2);
    out.push(Case {
        name: s("tiny-gpt2-vocab-train"),
        group: "tiny-gpt2-vocab-train",
        kind: "train",
        tokens_per_step: Some(batch * seq),
        native: train_args(&gpt2_dir, &data, &gpt2_job),
        native_wgpu: Some(vec![]),
        browser: json!({
            "kind": "finetune",
            "model": { "dir": gpt2_dir, "files": ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json"] },
            "dataset": DATASET, "config": gpt2_job, "tokens_per_step": batch * seq,
        }),
        torch: Some(vec![
            s("--case"),
            s("tiny-gpt2-vocab-train"),
            s("--batch"),
            s(batch),
            s("--seq"),
            s(seq),
            s("--steps"),
            s(steps),
        ]),
        flops: Some(TrainShape {
            model: gpt2_dir.clone(),
            seq_len: seq,
            full: false,
        }),
        shape: None,
    });

    // Reading a large dataset: parse, validate, tokenize every example for the report, split
    // and batch (`webtune data`; the page's inspectDataset), with each default model's tokenizer.
    let megabytes = if full { 100 } else { 20 };
    let data_config =
        json!({ "data": { "causal": { "seq_len": 128 } }, "validation_fraction": 0.1 });
    for (label, model_id, model_path, file) in [
        (
            "MiniLM, text/label",
            MINILM_ID,
            root.join("www/models").join(MINILM_ID).join("resolve/main"),
            format!("reviews-{megabytes}mb.jsonl"),
        ),
        (
            "SmolLM2, prompt/completion",
            SMOLLM2_ID,
            smollm2.clone(),
            format!("qa-{megabytes}mb.jsonl"),
        ),
    ] {
        let path = root.join(BENCH_DATA).join(&file);
        out.push(Case {
            name: format!("data-read ({label}, {megabytes} MB)"),
            group: "data-read",
            kind: "data",
            tokens_per_step: None,
            native: vec![
                s("data"),
                model_path.display().to_string(),
                s("--data"),
                path.display().to_string(),
                s("--config"),
                data_config.to_string(),
                s("--json"),
            ],
            native_wgpu: None,
            browser: json!({
                "kind": "data", "model": { "default": model_id },
                "url": format!("bench-data/{file}"), "config": data_config,
            }),
            torch: None,
            flops: None,
            shape: None,
        });
    }

    // Models of the sizes people fine-tune, with their exact shapes and seeded random weights
    // (`webtune shape`; memory and speed depend on shapes): LoRA and QLoRA (q8) on SmolLM2-360M
    // at 1 × 128, and with --full QLoRA on Qwen2.5-0.5B (q8) and SmolLM2-1.7B (q4); PyTorch + PEFT
    // runs LoRA (fp32) on the same shapes. The browser runs the 360M LoRA one in
    // tests/e2e/scale.test.mjs.
    let shapes: &[(&str, Option<&str>, usize)] = if full {
        &[
            ("smollm2-360m", None, 3),
            ("smollm2-360m", Some("q8"), 3),
            ("qwen2.5-0.5b", Some("q8"), 3),
            ("smollm2-1.7b", Some("q4"), 2),
        ]
    } else {
        &[("smollm2-360m", None, 3), ("smollm2-360m", Some("q8"), 3)]
    };
    for &(shape, quantize, steps) in shapes {
        let dir = root.join(SHAPES).join(shape);
        let (batch, seq) = (1, 128);
        let mut job = job(&["q_proj", "v_proj"], batch, seq, steps);
        if let Some(q) = quantize {
            job["train"]["quantize_base"] = json!(q);
        }
        out.push(Case {
            name: format!(
                "{shape}-{}",
                quantize.map_or("lora".into(), |q| format!("qlora-{q}"))
            ),
            group: "shapes",
            kind: "train",
            tokens_per_step: Some(batch * seq),
            native: train_args(&dir, &data, &job),
            native_wgpu: None,
            browser: json!(null),
            torch: Some(vec![
                s("--case"),
                s("shape-lora-step"),
                s("--config"),
                dir.join("config.json").display().to_string(),
                s("--batch"),
                s(batch),
                s("--seq"),
                s(seq),
                s("--steps"),
                s(steps),
            ]),
            flops: Some(TrainShape {
                model: dir,
                seq_len: seq,
                full: false,
            }),
            shape: Some(shape),
        });
    }
    out
}

/// Writes the checkpoints of the shape cases with the CLI (`webtune shape`, SmolLM2's tokenizer)
/// if they are not there yet.
fn write_bench_shapes(cli: &Path, cases: &[Case]) -> Result<()> {
    let root = repo_root();
    let tokenizer = root
        .join("www/models")
        .join(SMOLLM2_ID)
        .join("resolve/main")
        .join(SMOLLM2_GGUF);
    for shape in cases.iter().filter_map(|c| c.shape) {
        let dir = root.join(SHAPES).join(shape);
        if dir.join("model.safetensors").is_file() {
            continue;
        }
        println!(
            "xtask bench: writing a {shape}-shaped checkpoint to {}",
            dir.display()
        );
        util::run(
            Command::new(cli)
                .args(["shape", shape, "--out"])
                .arg(&dir)
                .arg("--tokenizer")
                .arg(&tokenizer),
        )?;
    }
    Ok(())
}

/// Trains the adapter case's adapter (two LoRA steps on SmolLM2; PEFT files under
/// [`BENCH_ADAPTER`]`/adapter`) if a selected case needs it and it is not there yet.
fn write_bench_adapter(cli: &Path, cases: &[Case]) -> Result<()> {
    let root = repo_root();
    let out = root.join(BENCH_ADAPTER);
    if !cases.iter().any(|c| c.group == "smollm2-adapter")
        || ADAPTER_FILES
            .iter()
            .all(|f| out.join("adapter").join(f).is_file())
    {
        return Ok(());
    }
    let smollm2 = root
        .join("www/models")
        .join(SMOLLM2_ID)
        .join("resolve/main")
        .join(SMOLLM2_GGUF);
    let job = json!({
        "batch_size": 1, "validation_max": 2, "samples": 0,
        "data": { "causal": { "seq_len": 64 } },
        "train": { "method": "lora", "lora_r": 8, "lora_alpha": 16.0,
                   "lora_targets": ["q_proj", "v_proj"], "steps": 2, "seed": 0 }
    });
    println!(
        "xtask bench: training the adapter case's SmolLM2 adapter into {}",
        out.display()
    );
    util::run(
        Command::new(cli)
            .arg("train")
            .arg(&smollm2)
            .arg("--data")
            .arg(root.join("www/samples").join(DATASET))
            .args(["--config", &job.to_string(), "--out"])
            .arg(&out),
    )
}

/// Writes the data-read cases' datasets (deterministic, from the sentiment sample's words) if
/// they are not there yet: `reviews-*.jsonl` (text/label) and `qa-*.jsonl` (prompt/completion).
fn write_bench_datasets(cases: &[Case]) -> Result<()> {
    let root = repo_root();
    let sample = fs::read_to_string(root.join("www/samples/pang_lee_polarity_200.jsonl"))
        .context("reading the sentiment sample for the data-read datasets")?;
    let words: Vec<String> = sample
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .flat_map(|t| t.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    if words.is_empty() {
        bail!("the sentiment sample has no words");
    }
    for case in cases.iter().filter(|c| c.kind == "data") {
        let Some(path) = case.native.get(3).map(std::path::PathBuf::from) else {
            continue;
        };
        if path.is_file() {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let megabytes: usize = name
            .rsplit('-')
            .next()
            .and_then(|t| t.strip_suffix("mb.jsonl"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(20);
        fs::create_dir_all(path.parent().unwrap_or(&root))?;
        // xorshift64*: the same file on every machine.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |n: usize| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
        };
        let mut text = String::with_capacity(megabytes << 20);
        let mut i = 0usize;
        while text.len() < megabytes * 1_000_000 {
            let phrase = |lo: usize, hi: usize, next: &mut dyn FnMut(usize) -> usize| {
                let n = lo + next(hi - lo);
                (0..n)
                    .map(|_| words[next(words.len())].as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let line = if name.starts_with("reviews") {
                let t = format!("{i} {}", phrase(12, 60, &mut next));
                let label = if next(2) == 0 { "pos" } else { "neg" };
                json!({ "text": t, "label": label })
            } else {
                let p = format!("Q{i}: {}?", phrase(5, 20, &mut next));
                json!({ "prompt": p, "completion": phrase(10, 50, &mut next) })
            };
            text += &line.to_string();
            text.push('\n');
            i += 1;
        }
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("xtask bench: wrote {} ({i} examples)", path.display());
    }
    Ok(())
}

pub fn bench(options: &BenchOptions) -> Result<()> {
    let started = Instant::now();
    let root = repo_root();
    if let Some(names) = &options.cases {
        for n in names {
            if !CASES.contains(&n.as_str()) {
                bail!("unknown case {n:?}; the cases are {}", CASES.join(", "));
            }
        }
    }
    if let Some(names) = &options.paths {
        for n in names {
            if !PATHS.iter().any(|(p, _)| p == n) {
                let all: Vec<&str> = PATHS.iter().map(|(p, _)| *p).collect();
                bail!("unknown path {n:?}; the paths are {}", all.join(", "));
            }
        }
    }
    let browser_backends: Vec<(&str, &str)> = BROWSER_PATHS
        .into_iter()
        .filter(|(_, path)| options.wants(path))
        .collect();
    let browser = !browser_backends.is_empty();
    let selected: Vec<Case> = cases(options.full)
        .into_iter()
        .filter(|c| {
            options
                .cases
                .as_ref()
                .is_none_or(|names| names.iter().any(|n| n == c.group))
        })
        .collect();

    // Builds first, so a missing prerequisite fails before anything is measured.
    if browser {
        util::ensure_wasm_target()?;
        util::ensure_chromium()?;
        util::ensure_npm_deps()?;
    }
    let cli = util::target_dir()?
        .join("release")
        .join(format!("webtune{}", std::env::consts::EXE_SUFFIX));
    if options.no_build {
        if !cli.is_file() {
            bail!("--no-build: {} is not built", cli.display());
        }
    } else {
        println!(
            "xtask bench: building the native CLI in release (the first time this compiles burn \
             natively in release: ~10+ min on 2 cores)"
        );
        util::run(util::cargo().args(["build", "--release", "-p", "webtune", "--bin", "webtune"]))?;
        if browser {
            build_wasm(Profile::Release)?;
        }
        prepare_models()?;
    }
    write_bench_datasets(&selected)?;
    write_bench_shapes(&cli, &selected)?;
    write_bench_adapter(&cli, &selected)?;
    let mut notes: Vec<String> = Vec::new();

    // Model FLOPs per step of the fine-tuning cases, from each model's own description.
    let mut flops: BTreeMap<String, f64> = BTreeMap::new();
    for case in &selected {
        let (Some(shape), Some(tokens)) = (&case.flops, case.tokens_per_step) else {
            continue;
        };
        match model_info(&cli, &shape.model) {
            Ok(info) => match train_flops_per_step(&info, shape, tokens) {
                Some(f) => {
                    flops.insert(case.name.clone(), f);
                }
                None => notes.push(format!("no FLOP count for {}: {info}", case.name)),
            },
            Err(e) => notes.push(format!("no FLOP count for {}: {e:#}", case.name)),
        }
    }

    let machine = machine_info();
    if let Some(load) = load_average() {
        if load > 0.5 {
            let line = format!(
                "the machine is busy (load average {load:.2} before measuring): figures will be \
                 skewed, PyTorch's most of all; rerun on an idle machine"
            );
            println!("xtask bench: warning: {line}");
            notes.push(line);
        }
    }
    let module_size = |dir: &str| -> Result<Value> {
        let path = root.join("www").join(dir).join("webtune_bg.wasm");
        Ok(match fs::metadata(&path) {
            Ok(m) => json!({ "raw_bytes": m.len(), "gzip_bytes": gzip_size(&path)? }),
            Err(_) => json!(null),
        })
    };
    let wasm = module_size("pkg")?;
    // The threaded CPU-only module, which cross-origin isolated pages load for the CPU backend.
    let wasm_threads = module_size("pkg-threads")?;

    // results[case][path] = figures (or {skipped}/{error}).
    let mut results: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();

    // (a) Native CLI.
    for case in &selected {
        let value = if options.wants("native-cpu") {
            println!("xtask bench: native-cpu {}", case.name);
            run_native(&cli, &case.native, &[], case, Duration::from_secs(1800))
        } else {
            json!({ "skipped": NOT_SELECTED })
        };
        record(&mut results, case, "native-cpu", value);
        if let Some(extra) = &case.native_wgpu {
            let mut args = case.native.clone();
            args.extend(extra.iter().cloned());
            args.extend([s("--backend"), s("webgpu")]);
            let value = if options.wants("native-wgpu") {
                println!("xtask bench: native-wgpu {}", case.name);
                run_native(&cli, &args, &[], case, Duration::from_secs(900))
            } else {
                json!({ "skipped": NOT_SELECTED })
            };
            record(&mut results, case, "native-wgpu", value);
            let value = if !options.wants("native-wgpu-ss") {
                json!({ "skipped": NOT_SELECTED })
            } else if !Path::new(SWIFTSHADER_ICD).is_file() {
                json!({ "skipped": format!("no {SWIFTSHADER_ICD} (Debian's chromium package)") })
            } else {
                println!("xtask bench: native-wgpu-ss {}", case.name);
                let chromium_dir = Path::new(SWIFTSHADER_ICD).parent().expect("absolute path");
                let env = [
                    ("VK_ICD_FILENAMES", OsStr::new(SWIFTSHADER_ICD)),
                    // Chromium's own Vulkan loader, for machines without libvulkan1.
                    ("LD_LIBRARY_PATH", chromium_dir.as_os_str()),
                ];
                // The browser's time limit for the same workload on the same adapter.
                let timeout = Duration::from_secs(if options.full { 1800 } else { 150 });
                let value = run_native(&cli, &args, &env, case, timeout);
                match value["backend_info"]["adapter"]["driver"].as_str() {
                    Some(driver) if !driver.contains("SwiftShader") => json!({
                        "error": format!("wgpu picked another adapter ({driver}), not SwiftShader")
                    }),
                    _ => value,
                }
            };
            record(&mut results, case, "native-wgpu-ss", value);
        }
    }

    // (b, c) Headless Chromium, CPU-wasm and WebGPU.
    let mut browser_meta = json!(null);
    for (_, path) in BROWSER_PATHS {
        if !browser_backends.iter().any(|(_, p)| *p == path) {
            let why = if options.browser {
                NOT_SELECTED
            } else {
                "--no-browser"
            };
            for case in &selected {
                record(&mut results, case, path, json!({ "skipped": why }));
            }
        }
    }
    if browser {
        let spec = json!({
            "backends": browser_backends.iter().map(|(b, _)| *b).collect::<Vec<_>>(),
            "timeout_ms": if options.full { 1_800_000 } else { 420_000 },
            // SwiftShader: minutes per SmolLM2 step; the default run reports a timeout.
            "fallback_timeout_ms": if options.full { 1_800_000 } else { 150_000 },
            "cases": selected.iter().filter(|c| !c.browser.is_null()).map(|c| {
                let mut b = c.browser.clone();
                b["name"] = json!(c.name);
                b
            }).collect::<Vec<_>>(),
        });
        let server = serve_dir(&root.join("www"), SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let url = format!("http://{}/", server.addr());
        println!(
            "xtask bench: headless Chromium at {url} ({})",
            browser_backends
                .iter()
                .map(|(_, p)| *p)
                .collect::<Vec<_>>()
                .join(", ")
        );
        let out = Command::new("node")
            .arg("tests/bench/bench.mjs")
            .current_dir(&root)
            .env("WEBTUNE_URL", &url)
            .env("CHROMIUM", CHROMIUM)
            .env("BENCH_SPEC", spec.to_string())
            .stderr(Stdio::inherit())
            .output()
            .context("could not start node tests/bench/bench.mjs")?;
        drop(server);
        let stdout = String::from_utf8_lossy(&out.stdout);
        match last_json(&stdout) {
            Some(v) => {
                for &(backend, path) in &browser_backends {
                    let b = &v["backends"][backend];
                    for case in &selected {
                        let value = if case.browser.is_null() {
                            json!({ "skipped": "no browser version of this workload" })
                        } else if let Some(e) = b["error"].as_str() {
                            json!({ "error": e })
                        } else if let Some(skip) = b["skipped"].as_str() {
                            json!({ "skipped": skip })
                        } else {
                            b["cases"][&case.name].clone()
                        };
                        let value = if value.is_null() {
                            json!({ "skipped": b["aborted"].as_str().unwrap_or("not run") })
                        } else {
                            value
                        };
                        record(&mut results, case, path, value);
                    }
                }
                let mut meta = v.clone();
                for &(backend, _) in &browser_backends {
                    if let Some(o) = meta["backends"][backend].as_object_mut() {
                        o.remove("cases");
                    }
                }
                browser_meta = meta;
            }
            None => {
                let why = format!("bench.mjs printed no JSON ({})", out.status);
                notes.push(why.clone());
                for case in &selected {
                    for &(_, path) in &browser_backends {
                        record(&mut results, case, path, json!({ "error": why }));
                    }
                }
            }
        }
    } else if !options.browser {
        notes.push("browser paths skipped (--no-browser)".into());
    }

    // (d) PyTorch reference.
    let torch_python = if !options.torch {
        Err("--no-torch".into())
    } else if !options.wants("torch") {
        Err(NOT_SELECTED.into())
    } else {
        find_torch_python()
    };
    match &torch_python {
        Ok(python) => {
            for case in &selected {
                let value = match &case.torch {
                    Some(args) => {
                        println!("xtask bench: torch {}", case.name);
                        run_torch(python, args)
                    }
                    None => json!({ "skipped": "no PyTorch version of this workload" }),
                };
                record(&mut results, case, "torch", value);
            }
        }
        Err(why) => {
            let line = format!("PyTorch reference skipped: {why}");
            println!("xtask bench: {line}");
            notes.push(line);
            for case in &selected {
                record(&mut results, case, "torch", json!({ "skipped": why }));
            }
        }
    }

    add_flops(&mut results, &flops);
    add_ratios(&mut results);
    let browser_on_swiftshader = browser_meta["backends"]["webgpu"]["adapter"]["architecture"]
        .as_str()
        .is_some_and(|a| a.eq_ignore_ascii_case("swiftshader"));
    let targets = targets(&results, &wasm, browser_on_swiftshader);
    let table = table(&selected, &results);
    let stamp = timestamp();
    let report = json!({
        "date_utc": stamp,
        "full": options.full,
        "machine": machine,
        "browser": browser_meta,
        "torch_python": torch_python.as_ref().ok(),
        "wasm": wasm,
        "wasm_threads": wasm_threads,
        "cases": results,
        "model_flops_per_step": flops,
        "targets": targets,
        "notes": notes,
        "seconds": started.elapsed().as_secs_f64(),
    });
    let dir = util::target_dir()?.join("bench");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = dir.join(format!("{}.json", stamp.replace(':', "-")));
    fs::write(&file, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("cannot write {}", file.display()))?;

    println!();
    println!(
        "webtune bench, {stamp} UTC, {} ({} cores){}",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cores"],
        if options.full { ", --full" } else { "" }
    );
    if let Some(adapter) = browser_meta["backends"]["webgpu"]["adapter"].as_object() {
        println!("WebGPU adapter: {}", Value::Object(adapter.clone()));
    }
    println!();
    print!("{table}");
    println!();
    for (dir, size) in [("pkg", &wasm), ("pkg-threads", &wasm_threads)] {
        if let Some(w) = size.as_object() {
            println!(
                "www/{dir}/webtune_bg.wasm: {} raw, {} gzip",
                util::megabytes(w["raw_bytes"].as_u64().unwrap_or(0)),
                util::megabytes(w["gzip_bytes"].as_u64().unwrap_or(0))
            );
        }
    }
    println!("\nIssue 11 targets:");
    for t in targets.as_array().into_iter().flatten() {
        println!(
            "  [{}] {}: {}",
            t["status"].as_str().unwrap_or("?"),
            t["target"].as_str().unwrap_or("?"),
            t["measured"].as_str().unwrap_or("?")
        );
    }
    for n in &notes {
        println!("note: {n}");
    }
    println!(
        "\nxtask bench: wrote {} in {:.0} s",
        file.display(),
        started.elapsed().as_secs_f64()
    );
    // docs/benchmarks.md keeps the latest complete run (every case and path; history in git): a
    // run of a few cases or columns would replace the whole table with part of it.
    let doc_path = root.join(DOCS_FILE);
    if options.complete() {
        let command = format!(
            "cargo xtask bench{}{}",
            if options.full { " --full" } else { "" },
            if options.no_build { " --no-build" } else { "" }
        );
        let section = latest_section(&command, &report, &table, &targets);
        let doc = fs::read_to_string(&doc_path)
            .with_context(|| format!("cannot read {}", doc_path.display()))?;
        fs::write(&doc_path, replace_latest(&doc, &section)?)
            .with_context(|| format!("cannot write {}", doc_path.display()))?;
        println!("xtask bench: wrote the latest results into {DOCS_FILE}");
    } else {
        println!(
            "xtask bench: {DOCS_FILE} left as it is (a run of some cases or columns; a run of \
             all of them writes its table there)"
        );
    }
    Ok(())
}

/// Where the latest complete run's results are written, between [`LATEST_BEGIN`] and
/// [`LATEST_END`].
const DOCS_FILE: &str = "docs/benchmarks.md";
const LATEST_BEGIN: &str = "<!-- cargo xtask bench writes from here -->";
const LATEST_END: &str = "<!-- cargo xtask bench writes up to here -->";

/// The docs' "latest results": the command, when and on what, the table, the module sizes, the
/// targets and the run's notes.
fn latest_section(command: &str, report: &Value, table: &str, targets: &Value) -> String {
    let machine = &report["machine"];
    let mut out = format!(
        "`{command}`, {} UTC, {} ({} cores, {}), {:.0} s.\n",
        report["date_utc"].as_str().unwrap_or("?"),
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cores"],
        machine["memory"].as_str().unwrap_or("memory unknown"),
        report["seconds"].as_f64().unwrap_or(0.0),
    );
    if let Some(adapter) = report["browser"]["backends"]["webgpu"]["adapter"].as_object() {
        let field = |k: &str| {
            adapter
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned()
        };
        out += &format!(
            "Browser WebGPU adapter: {} {} ({}).\n",
            field("vendor"),
            field("architecture"),
            field("description")
        );
    }
    out += "\n";
    out += table;
    out += "\n";
    for (dir, size) in [
        ("pkg", &report["wasm"]),
        ("pkg-threads", &report["wasm_threads"]),
    ] {
        if let Some(w) = size.as_object() {
            out += &format!(
                "- `www/{dir}/webtune_bg.wasm`: {} raw, {} gzip\n",
                util::megabytes(w["raw_bytes"].as_u64().unwrap_or(0)),
                util::megabytes(w["gzip_bytes"].as_u64().unwrap_or(0))
            );
        }
    }
    out += "\nTargets:\n\n| target | status | measured |\n|---|---|---|\n";
    for t in targets.as_array().into_iter().flatten() {
        out += &format!(
            "| {} | {} | {} |\n",
            t["target"].as_str().unwrap_or("?"),
            t["status"].as_str().unwrap_or("?"),
            t["measured"].as_str().unwrap_or("?")
        );
    }
    let notes: Vec<&str> = report["notes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !notes.is_empty() {
        out += "\nNotes from the run:\n\n";
        for n in notes {
            out += &format!("- {n}\n");
        }
    }
    out
}

/// `doc` with what lies between the markers replaced by `section`.
fn replace_latest(doc: &str, section: &str) -> Result<String> {
    let (Some(begin), Some(end)) = (doc.find(LATEST_BEGIN), doc.find(LATEST_END)) else {
        bail!("{DOCS_FILE} lacks the markers {LATEST_BEGIN} … {LATEST_END}");
    };
    if end < begin {
        bail!("{DOCS_FILE}: {LATEST_END} comes before {LATEST_BEGIN}");
    }
    let head = &doc[..begin + LATEST_BEGIN.len()];
    Ok(format!("{head}\n{section}{}", &doc[end..]))
}

/// Median, spread and count of `values`.
fn stats(values: &[f64]) -> Value {
    if values.is_empty() {
        return Value::Null;
    }
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    let q = |p: f64| {
        let k = (s.len() - 1) as f64 * p;
        let lo = k.floor() as usize;
        let hi = (lo + 1).min(s.len() - 1);
        s[lo] + (s[hi] - s[lo]) * (k - lo as f64)
    };
    json!({ "n": s.len(), "median": q(0.5), "min": s[0], "max": s[s.len() - 1], "p10": q(0.1), "p90": q(0.9) })
}

/// Figures from per-step (cumulative elapsed seconds, ran an evaluation) pairs.
fn train_figures(steps: &[(f64, bool)], tokens_per_step: Option<usize>) -> Value {
    let mut prev = 0.0;
    let durations: Vec<(f64, bool)> = steps
        .iter()
        .map(|&(elapsed, eval)| {
            let ms = (elapsed - prev) * 1e3;
            prev = elapsed;
            (ms, eval)
        })
        .collect();
    let later: Vec<f64> = durations
        .iter()
        .skip(1)
        .filter(|d| !d.1)
        .map(|d| d.0)
        .collect();
    let st = stats(&later);
    let median = st["median"].as_f64();
    json!({
        "first_step_ms": durations.first().map(|d| d.0),
        "step_ms": durations.iter().map(|d| d.0).collect::<Vec<_>>(),
        "median_step_ms": median,
        "spread_ms": st,
        "tokens_per_step": tokens_per_step,
        "tokens_per_s": match (median, tokens_per_step) {
            (Some(m), Some(t)) if m > 0.0 => Some(t as f64 / (m / 1e3)),
            _ => None,
        },
    })
}

/// A child's output, with when each stderr line arrived, and its peak RSS.
struct ChildRun {
    status: Option<std::process::ExitStatus>,
    stdout: String,
    stderr: Vec<(f64, String)>,
    peak_rss_kb: Option<u64>,
    seconds: f64,
    timed_out: bool,
}

fn run_child(cmd: &mut Command, timeout: Duration) -> Result<ChildRun> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {:?}", cmd.get_program()))?;
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let out_thread = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let (tx, rx) = mpsc::channel();
    let err_thread = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            let _ = tx.send((start.elapsed().as_secs_f64(), line));
        }
    });
    let mut peak = None;
    let mut timed_out = false;
    let status = loop {
        if let Some(kb) = vm_hwm_kb(pid) {
            peak = Some(peak.map_or(kb, |p: u64| p.max(kb)));
        }
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            timed_out = true;
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = err_thread.join();
    let stderr: Vec<(f64, String)> = rx.try_iter().collect();
    Ok(ChildRun {
        status,
        stdout: out_thread.join().unwrap_or_default(),
        stderr,
        peak_rss_kb: peak,
        seconds: start.elapsed().as_secs_f64(),
        timed_out,
    })
}

/// Peak resident set size of a live process (Linux), in kB.
fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn last_json(text: &str) -> Option<Value> {
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(Value::is_object)
}

fn run_native(
    cli: &Path,
    args: &[String],
    env: &[(&str, &OsStr)],
    case: &Case,
    timeout: Duration,
) -> Value {
    let mut cmd = Command::new(cli);
    cmd.args(args).current_dir(repo_root());
    for (key, value) in env {
        cmd.env(key, value);
    }
    let run = match run_child(&mut cmd, timeout) {
        Ok(run) => run,
        Err(e) => return json!({ "error": format!("{e:#}") }),
    };
    if run.timed_out {
        return json!({ "error": format!("timed out after {} s", timeout.as_secs()) });
    }
    let out = last_json(&run.stdout);
    // A process killed by a signal after printing its whole result crashed while exiting: the
    // native CLI on SwiftShader's Vulkan driver does about half the time (the driver's static
    // destructors run while its worker threads still use them; burn keeps the device for the
    // process's lifetime). The figures stand; the crash is recorded beside them.
    let exit_signal =
        exit_signal(run.status).filter(|_| out.as_ref().is_some_and(|o| o.get("error").is_none()));
    let ok = run.status.is_some_and(|s| s.success()) || exit_signal.is_some();
    if !ok {
        let message = out
            .as_ref()
            .and_then(|o| o["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| {
                let tail: Vec<&str> = run
                    .stderr
                    .iter()
                    .rev()
                    .take(3)
                    .map(|l| l.1.as_str())
                    .collect();
                tail.join(" | ")
            });
        // An unavailable native GPU is a skip, not a failure.
        if args.iter().any(|a| a == "webgpu") {
            return json!({ "skipped": format!("no native wgpu device: {message}") });
        }
        return json!({ "error": message });
    }
    let Some(out) = out else {
        return json!({ "error": "the CLI printed no JSON" });
    };
    let mut value = if case.kind == "data" {
        json!({
            "mb_per_s": out["mb_per_s"],
            "seconds": out["seconds"],
            "bytes": out["bytes"],
            "examples": out["report"]["examples"],
        })
    } else if case.kind == "train" {
        // Step events: {"type":"step",...} for train, progress objects for toy.
        let events: Vec<(f64, Value)> = run
            .stderr
            .iter()
            .filter_map(|(t, l)| serde_json::from_str::<Value>(l).ok().map(|v| (*t, v)))
            .filter(|(_, v)| v["step"].is_u64() && v["elapsed_s"].is_number())
            .filter(|(_, v)| v["type"].is_null() || v["type"] == "step")
            .collect();
        let steps: Vec<(f64, bool)> = events
            .iter()
            .map(|(_, v)| (v["elapsed_s"].as_f64().unwrap_or(0.0), !v["eval"].is_null()))
            .collect();
        let mut v = train_figures(&steps, case.tokens_per_step);
        v["process_start_to_first_step_ms"] = json!(events.first().map(|e| e.0 * 1e3));
        // The device the CLI trained on (its `--progress-json` prints it first).
        v["backend_info"] = run
            .stderr
            .iter()
            .find_map(|(_, l)| {
                serde_json::from_str::<Value>(l)
                    .ok()?
                    .get("backend_info")
                    .cloned()
            })
            .unwrap_or(Value::Null);
        let summary = if out["summary"].is_object() {
            &out["summary"]
        } else {
            &out
        };
        v["summary"] = json!({
            "backend": summary["backend"],
            "first_step_ms": summary["first_step_ms"],
            "median_step_ms": summary["median_step_ms"],
            "tokens_per_s": summary["tokens_per_s"],
        });
        v
    } else {
        json!({
            "tokens": out["generated_ids"].as_array().map(Vec::len),
            "tokens_per_s": out["tokens_per_s"],
            "use_cache": out["use_cache"],
            "adapter": out["adapter"],
        })
    };
    value["peak_rss_bytes"] = json!(run.peak_rss_kb.map(|kb| kb * 1024));
    value["process_seconds"] = json!(run.seconds);
    if let Some(signal) = exit_signal {
        value["crashed_at_exit_signal"] = json!(signal);
    }
    value["load_avg"] = json!(load_average());
    value
}

/// Files `value` as `case`'s figures on `path` (a column of [`PATHS`]).
fn record(
    results: &mut BTreeMap<String, BTreeMap<String, Value>>,
    case: &Case,
    path: &str,
    value: Value,
) {
    results
        .entry(case.name.clone())
        .or_default()
        .insert(path.to_owned(), value);
}

/// The signal that ended a process, where the platform has them.
fn exit_signal(status: Option<std::process::ExitStatus>) -> Option<i32> {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        status.and_then(|s| s.signal())
    }
    #[cfg(not(unix))]
    {
        let _ = status;
        None
    }
}

/// The 1-minute load average: other work on the machine (a build, a test run) skews every figure,
/// PyTorch's spinning OpenMP threads most of all.
fn load_average() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A Python that imports torch, transformers and peft: `$WEBTUNE_TORCH_PYTHON`, else `python3`.
fn find_torch_python() -> std::result::Result<String, String> {
    let check = |python: &str| {
        Command::new(python)
            .args(["-c", "import torch, transformers, peft"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if let Ok(python) = std::env::var("WEBTUNE_TORCH_PYTHON") {
        if check(&python) {
            return Ok(python);
        }
        return Err(format!(
            "WEBTUNE_TORCH_PYTHON={python} cannot import torch, transformers and peft"
        ));
    }
    if check("python3") {
        return Ok("python3".into());
    }
    Err(
        "no torch python (set WEBTUNE_TORCH_PYTHON to a Python with torch, transformers and \
         peft: pip install -r tools/reference/requirements.txt)"
            .into(),
    )
}

fn run_torch(python: &str, args: &[String]) -> Value {
    let root = repo_root();
    let run = run_child(
        Command::new(python)
            .arg(root.join("tools/reference/bench_torch.py"))
            .args(args)
            .current_dir(&root),
        Duration::from_secs(1800),
    );
    let run = match run {
        Ok(run) => run,
        Err(e) => return json!({ "error": format!("{e:#}") }),
    };
    match (
        run.status.is_some_and(|s| s.success()),
        last_json(&run.stdout),
    ) {
        (true, Some(mut v)) => {
            if let Some(o) = v.as_object_mut() {
                o.remove("losses");
            }
            v["spread_ms"] = json!({
                "min": v["min_step_ms"], "max": v["max_step_ms"],
                "p10": v["p10_step_ms"], "p90": v["p90_step_ms"],
            });
            v["peak_rss_bytes"] = json!(run.peak_rss_kb.map(|kb| kb * 1024));
            v["load_avg"] = json!(load_average());
            v
        }
        _ => {
            let tail: Vec<&str> = run
                .stderr
                .iter()
                .rev()
                .take(3)
                .map(|l| l.1.as_str())
                .collect();
            json!({ "error": format!("bench_torch.py failed: {}", tail.join(" | ")) })
        }
    }
}

/// `webtune info --json` of `model`.
fn model_info(cli: &Path, model: &Path) -> Result<Value> {
    let out = Command::new(cli)
        .arg("info")
        .arg(model)
        .arg("--json")
        .output()
        .with_context(|| format!("could not start {}", cli.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match last_json(&text) {
        Some(v) if out.status.success() => Ok(v),
        _ => bail!("`webtune info {}` failed: {text}", model.display()),
    }
}

/// Achieved model FLOP/s of each path that has a median step time, for the cases with a FLOP
/// count.
fn add_flops(
    results: &mut BTreeMap<String, BTreeMap<String, Value>>,
    flops: &BTreeMap<String, f64>,
) {
    for (case, paths) in results.iter_mut() {
        let Some(per_step) = flops.get(case) else {
            continue;
        };
        for value in paths.values_mut() {
            if let Some(ms) = value["median_step_ms"].as_f64().filter(|ms| *ms > 0.0) {
                value["model_gflop_per_s"] = json!(per_step / (ms / 1e3) / 1e9);
            }
        }
    }
}

/// tokens/s of each path over PyTorch's and over the native CLI's, for the same case.
fn add_ratios(results: &mut BTreeMap<String, BTreeMap<String, Value>>) {
    for paths in results.values_mut() {
        let tps = |p: &BTreeMap<String, Value>, k: &str| {
            p.get(k)
                .and_then(|v| v["tokens_per_s"].as_f64())
                .filter(|x| *x > 0.0)
        };
        let torch = tps(paths, "torch");
        let native = tps(paths, "native-cpu");
        for (native_path, key) in [
            ("native-wgpu", "vs_native_wgpu"),
            ("native-wgpu-ss", "vs_native_wgpu_ss"),
        ] {
            let native_wgpu = tps(paths, native_path);
            if let (Some(v), Some(r)) = (paths.get_mut("wasm-webgpu"), native_wgpu) {
                if let Some(t) = v["tokens_per_s"].as_f64() {
                    v[key] = json!(t / r);
                }
            }
        }
        let mbs = paths
            .get("native-cpu")
            .and_then(|v| v["mb_per_s"].as_f64())
            .filter(|x| *x > 0.0);
        for value in paths.values_mut() {
            if let (Some(t), Some(r)) = (value["mb_per_s"].as_f64(), mbs) {
                value["vs_native"] = json!(t / r);
            }
            if let Some(t) = value["tokens_per_s"].as_f64() {
                if let Some(r) = torch {
                    value["vs_torch"] = json!(t / r);
                }
                if let Some(r) = native {
                    value["vs_native"] = json!(t / r);
                }
            }
        }
    }
}

fn targets(
    results: &BTreeMap<String, BTreeMap<String, Value>>,
    wasm: &Value,
    browser_on_swiftshader: bool,
) -> Value {
    let get = |case: &str, path: &str, key: &str| {
        results
            .get(case)
            .and_then(|p| p.get(path))
            .and_then(|v| v[key].as_f64())
    };
    let ratio = |value: Option<f64>, goal: f64, what: &str| match value {
        Some(r) => (
            if r >= goal { "met" } else { "not met" },
            format!("{r:.2}× {what}"),
        ),
        None => ("not measured", "no figure on this run".to_owned()),
    };
    let mut out = Vec::new();
    let case = "smollm2-lora-step";
    let (st, m) = ratio(get(case, "wasm-cpu", "vs_torch"), 0.5, "PyTorch");
    out.push(json!({ "target": "CPU-wasm train tokens/s ≥ 0.5× PyTorch (SmolLM2 LoRA)", "status": st, "measured": m }));
    let (st, m) = ratio(get(case, "native-cpu", "vs_torch"), 1.0, "PyTorch");
    out.push(json!({ "target": "native CPU train tokens/s ≥ 1.0× PyTorch (SmolLM2 LoRA)", "status": st, "measured": m }));
    // The same adapter: natively the SwiftShader that Chromium fell back to, when it did (no
    // GPU), else whatever wgpu picks (the GPU both use).
    let (native_path, key) = if browser_on_swiftshader {
        ("native-wgpu-ss", "vs_native_wgpu_ss")
    } else {
        ("native-wgpu", "vs_native_wgpu")
    };
    let measured: Vec<(&str, f64)> = [case, "tiny-gpt2-vocab-train", "toy-train"]
        .into_iter()
        .filter_map(|c| get(c, "wasm-webgpu", key).map(|r| (c, r)))
        .collect();
    let (st, m) = match measured.first() {
        // The largest workload measured decides; the others are listed beside it.
        Some(&(_, r)) => {
            let (st, _) = ratio(Some(r), 0.8, "");
            let list: Vec<String> = measured
                .iter()
                .map(|(c, r)| format!("{r:.2}× ({c})"))
                .collect();
            (
                st,
                format!("{} native burn-wgpu ({native_path})", list.join(", ")),
            )
        }
        None => (
            "not measured",
            format!(
                "no pair of browser WebGPU and {native_path} figures for one case on this run \
                 (timed out, failed or skipped)"
            ),
        ),
    };
    out.push(json!({ "target": "browser WebGPU ≥ 0.8× native burn-wgpu, same adapter", "status": st, "measured": m }));
    for path in ["wasm-cpu", "wasm-webgpu"] {
        let t = get(case, path, "model_in_memory_to_first_step_ms");
        let (st, m) = match t {
            Some(ms) => (
                if ms <= 5000.0 { "met" } else { "not met" },
                format!("{:.1} s", ms / 1e3),
            ),
            None => ("not measured", "no figure on this run".to_owned()),
        };
        out.push(json!({ "target": format!("first training step ≤ 5 s after the model is in memory ({path})"), "status": st, "measured": m }));
    }
    match wasm.as_object() {
        Some(w) => {
            let raw = w["raw_bytes"].as_u64().unwrap_or(0) as f64 / 1e6;
            let gz = w["gzip_bytes"].as_u64().unwrap_or(0) as f64 / 1e6;
            out.push(json!({
                "target": "release wasm ≤ 8 MB (≤ 3 MB gzip)",
                "status": if raw <= 8.0 && gz <= 3.0 { "met" } else { "not met" },
                "measured": format!("{raw:.1} MB raw, {gz:.1} MB gzip"),
            }));
        }
        None => out.push(json!({ "target": "release wasm ≤ 8 MB (≤ 3 MB gzip)", "status": "not measured", "measured": "www/pkg/webtune_bg.wasm missing" })),
    }
    Value::Array(out)
}

fn fmt_num(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.digits$}"),
        None => "–".into(),
    }
}

fn table(cases: &[Case], results: &BTreeMap<String, BTreeMap<String, Value>>) -> String {
    let mut t = String::from(
        "| case | path | median step ms (p10–p90) | first step ms | tokens/s | model GFLOP/s | × PyTorch | × native | notes |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for case in cases {
        let Some(paths) = results.get(&case.name) else {
            continue;
        };
        for (key, label) in PATHS {
            let Some(v) = paths.get(*key) else { continue };
            if let Some(skip) = v["skipped"].as_str() {
                if skip == NOT_SELECTED {
                    continue;
                }
                let short: String = skip.chars().take(90).collect();
                t += &format!(
                    "| {} | {label} | skipped: {short} | | | | | | |\n",
                    case.name
                );
                continue;
            }
            if let Some(err) = v["error"].as_str() {
                let short: String = err.replace('\n', " ").chars().take(120).collect();
                t += &format!("| {} | {label} | error: {short} | | | | | | |\n", case.name);
                continue;
            }
            let median = v["median_step_ms"].as_f64();
            let spread = &v["spread_ms"];
            let step = if case.kind == "train" {
                format!(
                    "{} ({}–{})",
                    fmt_num(median, 1),
                    fmt_num(spread["p10"].as_f64(), 1),
                    fmt_num(spread["p90"].as_f64(), 1)
                )
            } else {
                "–".into()
            };
            let mut notes = Vec::new();
            if let Some(ms) = v["model_in_memory_to_first_step_ms"].as_f64() {
                notes.push(format!("model in memory → 1st step {:.1} s", ms / 1e3));
            }
            if v["fresh_page"] == json!(true) {
                if let Some(ms) = v["page_load_to_first_step_ms"].as_f64() {
                    notes.push(format!("page load → 1st step {:.1} s", ms / 1e3));
                }
            }
            if let Some(r) = v["vs_native_wgpu"].as_f64() {
                notes.push(format!("{r:.2}× native wgpu"));
            }
            if let Some(signal) = v["crashed_at_exit_signal"].as_i64() {
                notes.push(format!(
                    "crashed at exit (signal {signal}) after its results"
                ));
            }
            if let Some(r) = v["vs_native_wgpu_ss"].as_f64() {
                notes.push(format!("{r:.2}× native wgpu on SwiftShader"));
            }
            if let Some(a) = v["backend_info"]["adapter"].as_object() {
                notes.push(format!(
                    "adapter {} ({})",
                    a.get("name").and_then(Value::as_str).unwrap_or("?"),
                    a.get("backend").and_then(Value::as_str).unwrap_or("?")
                ));
            }
            if let Some(b) = v["peak_rss_bytes"].as_u64() {
                notes.push(format!("peak RSS {:.0} MB", b as f64 / 1e6));
            }
            if let Some(b) = v["peak_memory_bytes"].as_u64() {
                notes.push(format!("backend memory {:.0} MB", b as f64 / 1e6));
            }
            if let Some(b) = v["ua_memory_bytes"].as_u64() {
                notes.push(format!("page memory after {:.0} MB", b as f64 / 1e6));
            }
            if v["ua_memory_skipped"].is_string() {
                notes.push("page memory not measured (thread pool)".into());
            }
            if let Some(n) = v["spread_ms"]["n"].as_u64() {
                notes.push(format!("{n} timed steps"));
            }
            if let Some(n) = v["tokens"].as_u64() {
                notes.push(format!("{n} tokens"));
            }
            if let Some(ms) = v["attach_ms"].as_f64() {
                notes.push(format!("adapter attached in {ms:.1} ms"));
            }
            if let Some(ms) = v["switch_ms"]["median"].as_f64() {
                notes.push(format!(
                    "base ↔ adapter switch median {ms:.2} ms (max {:.2}, {} switches)",
                    v["switch_ms"]["max"].as_f64().unwrap_or(f64::NAN),
                    v["switch_ms"]["n"]
                ));
            }
            if v["adapter"].is_object() {
                notes.push("adapter merged at load".into());
            }
            if let Some(m) = v["mb_per_s"].as_f64() {
                notes.push(format!(
                    "{m:.2} MB/s ({} examples in {:.1} s)",
                    v["examples"],
                    v["seconds"].as_f64().unwrap_or(f64::NAN)
                ));
            }
            t += &format!(
                "| {} | {label} | {step} | {} | {} | {} | {} | {} | {} |\n",
                case.name,
                fmt_num(v["first_step_ms"].as_f64(), 1),
                fmt_num(v["tokens_per_s"].as_f64(), 1),
                fmt_num(v["model_gflop_per_s"].as_f64(), 1),
                fmt_num(v["vs_torch"].as_f64(), 2),
                fmt_num(v["vs_native"].as_f64(), 2),
                notes.join("; ")
            );
        }
    }
    t
}

fn machine_info() -> Value {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let memory = fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .map(|v| v.trim().to_owned())
    });
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "memory": memory,
        "os": std::env::consts::OS,
    })
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ` (no date crate needed).
fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_results_replace_what_lies_between_the_markers_only() {
        let doc =
            format!("# B\n\nprose\n\n{LATEST_BEGIN}\nold table\n{LATEST_END}\n\n## Targets\n");
        let out = replace_latest(&doc, "new table\n").unwrap();
        assert_eq!(
            out,
            format!("# B\n\nprose\n\n{LATEST_BEGIN}\nnew table\n{LATEST_END}\n\n## Targets\n")
        );
        // Writing twice gives the same document (nothing accumulates).
        assert_eq!(replace_latest(&out, "new table\n").unwrap(), out);
        assert!(replace_latest("# B\nno markers\n", "x").is_err());
        let swapped = format!("{LATEST_END}\n{LATEST_BEGIN}\n");
        assert!(replace_latest(&swapped, "x").is_err());
        // The project's own page has the markers.
        let real = fs::read_to_string(repo_root().join(DOCS_FILE)).unwrap();
        assert!(replace_latest(&real, "x\n").is_ok());
    }

    #[test]
    fn only_a_run_of_every_case_and_path_is_complete() {
        assert!(options(None, true, true).complete());
        assert!(!options(Some(&["native-cpu"]), true, true).complete());
        assert!(!options(None, false, true).complete());
        assert!(!options(None, true, false).complete());
    }

    #[test]
    fn train_figures_skip_warmup_and_eval_steps() {
        let v = train_figures(
            &[
                (1.0, false),
                (1.1, false),
                (1.3, false),
                (1.4, false),
                (3.0, true),
            ],
            Some(100),
        );
        assert_eq!(v["first_step_ms"].as_f64(), Some(1000.0));
        assert_eq!(v["spread_ms"]["n"], 3);
        let median = v["median_step_ms"].as_f64().unwrap();
        assert!((median - 100.0).abs() < 1e-6, "{median}");
        assert!((v["tokens_per_s"].as_f64().unwrap() - 1000.0).abs() < 1e-6);
    }

    fn options(paths: Option<&[&str]>, browser: bool, torch: bool) -> BenchOptions {
        BenchOptions {
            full: false,
            cases: None,
            browser,
            torch,
            no_build: true,
            paths: paths.map(|p| p.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn paths_select_columns_and_no_flags_still_apply() {
        let all = options(None, true, true);
        assert!(PATHS.iter().all(|(p, _)| all.wants(p)));
        let some = options(Some(&["native-cpu", "wasm-cpu", "torch"]), true, true);
        assert!(some.wants("native-cpu") && some.wants("wasm-cpu") && some.wants("torch"));
        assert!(!some.wants("native-wgpu") && !some.wants("wasm-cpu-1t"));
        let no_browser = options(Some(&["native-cpu", "wasm-cpu", "torch"]), false, false);
        assert!(no_browser.wants("native-cpu"));
        assert!(!no_browser.wants("wasm-cpu") && !no_browser.wants("torch"));
    }

    fn case_results(pairs: &[(&str, &str, f64)]) -> BTreeMap<String, BTreeMap<String, Value>> {
        let mut results: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
        for (case, path, tps) in pairs {
            results
                .entry(case.to_string())
                .or_default()
                .insert(path.to_string(), json!({ "tokens_per_s": tps }));
        }
        add_ratios(&mut results);
        results
    }

    fn webgpu_target(targets: Value) -> (String, String) {
        let t = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["target"].as_str().unwrap().starts_with("browser WebGPU"))
            .unwrap()
            .clone();
        let text = |v: &Value| v.as_str().unwrap().to_owned();
        (text(&t["status"]), text(&t["measured"]))
    }

    #[test]
    fn webgpu_target_compares_the_same_adapter() {
        let results = case_results(&[
            ("toy-train", "wasm-webgpu", 900.0),
            ("toy-train", "native-wgpu", 9000.0),
            ("toy-train", "native-wgpu-ss", 1000.0),
            ("tiny-gpt2-vocab-train", "wasm-webgpu", 40.0),
            ("tiny-gpt2-vocab-train", "native-wgpu", 400.0),
            ("tiny-gpt2-vocab-train", "native-wgpu-ss", 80.0),
        ]);
        // On SwiftShader the browser is compared with native wgpu on SwiftShader, and the
        // largest workload measured decides.
        let (status, measured) = webgpu_target(targets(&results, &json!(null), true));
        assert_eq!(status, "not met", "{measured}");
        assert!(
            measured.starts_with("0.50× (tiny-gpt2-vocab-train), 0.90× (toy-train)"),
            "{measured}"
        );
        assert!(measured.contains("native-wgpu-ss"), "{measured}");
        // With a GPU both use, the plain native wgpu column is the same adapter.
        let (status, measured) = webgpu_target(targets(&results, &json!(null), false));
        assert_eq!(status, "not met", "{measured}");
        assert!(
            measured.starts_with("0.10× (tiny-gpt2-vocab-train)"),
            "{measured}"
        );
        let met = case_results(&[
            ("toy-train", "wasm-webgpu", 900.0),
            ("toy-train", "native-wgpu-ss", 1000.0),
        ]);
        assert_eq!(webgpu_target(targets(&met, &json!(null), true)).0, "met");
        assert_eq!(
            webgpu_target(targets(&met, &json!(null), false)).0,
            "not measured"
        );
    }

    #[test]
    fn flops_count_weights_and_attention_per_token() {
        // SmolLM2-135M as `webtune info --json` describes it.
        let info =
            json!({ "matmul_weights": 134_479_872u64, "layers": 30, "attention_width": 576 });
        let shape = |seq_len, full| TrainShape {
            model: PathBuf::new(),
            seq_len,
            full,
        };
        let lora = train_flops_per_step(&info, &shape(64, false), 64).unwrap();
        // 4 FLOPs per weight and token (forward, input gradients) and 3 × 4·L·T·A.
        let per_token = 4.0 * 134_479_872.0 + 12.0 * 30.0 * 64.0 * 576.0;
        assert!((lora - 64.0 * per_token).abs() < 1.0, "{lora}");
        // Full fine-tuning adds the weight gradients: 2 more per weight and token.
        let full = train_flops_per_step(&info, &shape(64, true), 64).unwrap();
        assert!((full - lora - 64.0 * 2.0 * 134_479_872.0).abs() < 1.0);
        // Longer sequences cost more per token, in attention only.
        let long = train_flops_per_step(&info, &shape(128, false), 64).unwrap();
        assert!((long - lora - 64.0 * 12.0 * 30.0 * 64.0 * 576.0).abs() < 1.0);
        assert!(train_flops_per_step(&json!({ "layers": 30 }), &shape(64, false), 64).is_none());

        let mut results = case_results(&[("smollm2-lora-step", "torch", 1.0)]);
        let paths = results.get_mut("smollm2-lora-step").unwrap();
        paths.insert("native-cpu".into(), json!({ "median_step_ms": 500.0 }));
        paths.insert("wasm-cpu".into(), json!({ "error": "timed out" }));
        let flops = BTreeMap::from([("smollm2-lora-step".to_owned(), 3e9)]);
        add_flops(&mut results, &flops);
        let paths = &results["smollm2-lora-step"];
        assert_eq!(paths["native-cpu"]["model_gflop_per_s"].as_f64(), Some(6.0));
        assert!(paths["wasm-cpu"].get("model_gflop_per_s").is_none());
        assert!(paths["torch"].get("model_gflop_per_s").is_none());
    }

    fn generate_case() -> Case {
        Case {
            name: s("generate"),
            group: "smollm2-generate",
            kind: "generate",
            tokens_per_step: None,
            native: vec![],
            native_wgpu: None,
            browser: json!(null),
            torch: None,
            flops: None,
            shape: None,
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_crash_after_the_result_keeps_the_figures_and_says_so() {
        let sh = Path::new("/bin/sh");
        let run = |script: &str| {
            run_native(
                sh,
                &[s("-c"), s(script)],
                &[],
                &generate_case(),
                Duration::from_secs(60),
            )
        };
        let crashed =
            run(r#"echo '{"tokens_per_s": 12.5, "generated_ids": [1, 2]}'; kill -SEGV $$"#);
        assert_eq!(crashed["tokens_per_s"].as_f64(), Some(12.5), "{crashed}");
        assert_eq!(
            crashed["crashed_at_exit_signal"].as_i64(),
            Some(11),
            "{crashed}"
        );
        // Without a complete result, a crash is an error.
        let early = run("echo starting >&2; kill -SEGV $$");
        assert!(early["error"].is_string(), "{early}");
        let failed = run(r#"echo '{"error": {"message": "bad model"}}'; kill -SEGV $$"#);
        assert_eq!(failed["error"].as_str(), Some("bad model"), "{failed}");
        let clean = run(r#"echo '{"tokens_per_s": 3.0, "generated_ids": [1]}'"#);
        assert_eq!(clean["tokens_per_s"].as_f64(), Some(3.0), "{clean}");
        assert!(clean.get("crashed_at_exit_signal").is_none(), "{clean}");
    }

    #[test]
    fn timestamps_are_iso() {
        let t = timestamp();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
