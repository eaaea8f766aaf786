//! `cargo xtask fuzz`: the long hostile-input run. First tests/hostile.rs (proptest, stable) in
//! release with many cases; then, where a nightly toolchain is installed, each cargo-fuzz target
//! in fuzz/ for a fixed time, seeded from tests/fixtures, with a summary per target.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::util::{self, repo_root};

pub struct FuzzOptions {
    /// Cases per proptest property.
    pub cases: u32,
    /// Skip the proptest run.
    pub no_proptest: bool,
    /// Seconds per fuzz target.
    pub seconds: u64,
    /// Only these targets (all when `None`).
    pub targets: Option<Vec<String>>,
    /// cargo-fuzz's `--sanitizer`.
    pub sanitizer: String,
}

/// A fuzz target and where its seeds come from.
struct Target {
    name: &'static str,
    /// Files or folders (searched recursively) under tests/fixtures, with the extensions kept
    /// (all files when empty).
    seeds: &'static [(&'static str, &'static [&'static str])],
}

const TARGETS: &[Target] = &[
    Target {
        name: "safetensors",
        seeds: &[
            ("hostile/safetensors", &[]),
            ("hostile/model", &["safetensors"]),
            ("tiny_random/gpt2/model.safetensors", &[]),
            ("tiny_random/llama/model.safetensors", &[]),
            ("tiny_random/bert/model.safetensors", &[]),
        ],
    },
    Target {
        name: "gguf",
        seeds: &[("hostile/gguf", &[]), ("tiny_gguf", &["gguf"])],
    },
    Target {
        name: "hf_config",
        seeds: &[
            ("hostile/config", &[]),
            ("hostile/model", &["json"]),
            ("tiny_random/gpt2/config.json", &[]),
            ("tiny_random/llama/config.json", &[]),
            ("tiny_random/bert/config.json", &[]),
        ],
    },
    Target {
        name: "tokenizer_json",
        seeds: &[("hostile/tokenizer", &[])],
    },
    Target {
        name: "dataset",
        seeds: &[("hostile/data", &[]), ("data", &[])],
    },
    Target {
        name: "chat_template",
        seeds: &[("hostile/chat", &[])],
    },
];

pub fn fuzz(options: &FuzzOptions) -> Result<()> {
    let targets = chosen_targets(options.targets.as_deref())?;
    let started = Instant::now();
    if !options.no_proptest {
        util::run(
            util::cargo()
                .args(["test", "-p", "webtune", "--release", "--test", "hostile"])
                .env("WEBTUNE_HOSTILE_CASES", options.cases.to_string()),
        )?;
        println!(
            "xtask fuzz: proptest run passed ({} cases per property)",
            options.cases
        );
    }
    if !has_nightly() {
        println!(
            "xtask fuzz: no nightly toolchain (`rustup toolchain install nightly`), so the \
             cargo-fuzz targets in fuzz/ were skipped; only the proptest run was done"
        );
        return Ok(());
    }
    ensure_cargo_fuzz()?;

    let root = repo_root();
    let fuzz_dir = root.join("fuzz");
    // cargo-fuzz's own default (fuzz/target) unless WEBTUNE_FUZZ_TARGET_DIR says otherwise —
    // not CARGO_TARGET_DIR, which the release proptest run above shares with the normal build:
    // the fuzz build (every crate instrumented, nightly) shares nothing with it, so keeping
    // them apart costs no rebuilds and never blocks a `cargo build` in the repository.
    let target_dir = std::env::var_os("WEBTUNE_FUZZ_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| fuzz_dir.join("target"));

    // All targets in one build first, so a compile error shows before any time is spent.
    println!("xtask fuzz: building the fuzz targets (the first build is long: burn and wgpu)");
    util::run(&mut cargo_fuzz(
        "build",
        &fuzz_dir,
        &target_dir,
        &options.sanitizer,
    ))?;

    let mut summaries = Vec::new();
    for target in targets {
        summaries.push(run_target(
            target,
            &fuzz_dir,
            &target_dir,
            options.seconds,
            &options.sanitizer,
        )?);
    }

    println!("\nxtask fuzz: {} s per target", options.seconds);
    println!(
        "{:<16} {:>12} {:>10} {:>10}  crashes",
        "target", "executions", "exec/s", "corpus"
    );
    for s in &summaries {
        println!(
            "{:<16} {:>12} {:>10} {:>10}  {}",
            s.name,
            s.executions.map_or("?".into(), |n| n.to_string()),
            s.exec_per_sec.map_or("?".into(), |n| n.to_string()),
            s.corpus,
            if s.crashes.is_empty() {
                "none".to_string()
            } else {
                s.crashes.len().to_string()
            }
        );
        for crash in &s.crashes {
            println!("    {}", crash.display());
        }
        if !s.crashes.is_empty() {
            println!("    log: {}", s.log.display());
        }
    }
    let crashed: Vec<&str> = summaries
        .iter()
        .filter(|s| !s.crashes.is_empty())
        .map(|s| s.name)
        .collect();
    println!(
        "xtask fuzz: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if !crashed.is_empty() {
        bail!(
            "fuzz targets crashed: {} (replay one with `cargo +nightly fuzz run --fuzz-dir fuzz \
             -s {} <target> <file>`; minimise with `cargo +nightly fuzz tmin`; keep it under \
             tests/fixtures/hostile/<family>/ so the stable seed replay covers it)",
            crashed.join(", "),
            options.sanitizer
        );
    }
    Ok(())
}

fn chosen_targets(names: Option<&[String]>) -> Result<Vec<&'static Target>> {
    let Some(names) = names else {
        return Ok(TARGETS.iter().collect());
    };
    names
        .iter()
        .map(|n| {
            TARGETS.iter().find(|t| t.name == n).with_context(|| {
                let all: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
                format!("no fuzz target {n:?}; the targets are {}", all.join(", "))
            })
        })
        .collect()
}

fn has_nightly() -> bool {
    Command::new("rustup")
        .args(["toolchain", "list"])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.starts_with("nightly"))
        })
}

fn ensure_cargo_fuzz() -> Result<()> {
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if installed {
        return Ok(());
    }
    println!("xtask fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked)");
    util::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

/// `cargo +nightly fuzz <subcommand>` with the options every call must share: cargo-fuzz
/// rebuilds when any of them differs between `build` and `run`.
fn cargo_fuzz(subcommand: &str, fuzz_dir: &Path, target_dir: &Path, sanitizer: &str) -> Command {
    let mut cmd = util::nightly_cargo();
    cmd.args(["fuzz", subcommand, "--fuzz-dir"])
        .arg(fuzz_dir)
        .arg("--target-dir")
        .arg(target_dir)
        // Parsers in safe Rust: what we look for is panics, oversized allocations and hangs,
        // which need no sanitizer; AddressSanitizer would halve the executions per second.
        .args(["--sanitizer", sanitizer])
        // webtune pulls in burn, cubecl and wgpu; one codegen unit per crate (cargo-fuzz's
        // default) makes the first build far longer for little speed in the parsers.
        .args(["--codegen-units", "16"]);
    cmd
}

struct Summary {
    name: &'static str,
    executions: Option<u64>,
    exec_per_sec: Option<u64>,
    corpus: usize,
    crashes: Vec<PathBuf>,
    log: PathBuf,
}

fn run_target(
    target: &Target,
    fuzz_dir: &Path,
    target_dir: &Path,
    seconds: u64,
    sanitizer: &str,
) -> Result<Summary> {
    let corpus = fuzz_dir.join("corpus").join(target.name);
    let seeded = copy_seeds(target, &corpus)?;
    let artifacts = fuzz_dir.join("artifacts").join(target.name);
    fs::create_dir_all(&artifacts)
        .with_context(|| format!("cannot create {}", artifacts.display()))?;
    let before = list(&artifacts)?;
    let logs = fuzz_dir.join("logs");
    fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let log_path = logs.join(format!("{}.log", target.name));
    println!(
        "xtask fuzz: {} for {seconds} s ({seeded} seeds; full log in {})",
        target.name,
        log_path.display()
    );

    let mut cmd = cargo_fuzz("run", fuzz_dir, target_dir, sanitizer);
    cmd.arg(target.name)
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-rss_limit_mb=2048")
        .arg("-timeout=10")
        .arg("-print_final_stats=1")
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start cargo fuzz run {}", target.name))?;
    let mut log = fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut stats = Stats::default();
    let stderr = child.stderr.take().context("no stderr")?;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap_or_default();
        writeln!(log, "{line}")?;
        stats.read(&line);
        // libFuzzer prints a line per new coverage find and, at the end, a dictionary; the log
        // keeps them, the terminal gets its periodic pulse and everything else (build, crashes).
        let progress = line.starts_with('#') && !line.contains("pulse") && !line.contains("DONE");
        let dictionary = line.starts_with('"') && line.contains("# Uses:");
        if !progress && !dictionary && !line.trim_start().starts_with("NEW_FUNC") {
            eprintln!("{line}");
        }
    }
    // A crash ends the run with a failure status; it is reported in the summary, and the
    // remaining targets still run.
    let status = child.wait()?;
    let crashes: Vec<PathBuf> = list(&artifacts)?
        .difference(&before)
        .map(|f| artifacts.join(f))
        .collect();
    if !status.success() && crashes.is_empty() {
        bail!(
            "cargo fuzz run {} failed ({status}) without leaving a crash input; see {}",
            target.name,
            log_path.display()
        );
    }
    Ok(Summary {
        name: target.name,
        executions: stats.executions,
        exec_per_sec: stats.exec_per_sec,
        corpus: list(&corpus)?.len(),
        crashes,
        log: log_path,
    })
}

/// What libFuzzer reported: its final stats (`-print_final_stats=1`), else its last status line.
#[derive(Default)]
struct Stats {
    executions: Option<u64>,
    exec_per_sec: Option<u64>,
}

impl Stats {
    fn read(&mut self, line: &str) {
        let number = |s: &str| s.trim().parse::<u64>().ok();
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            self.executions = number(n).or(self.executions);
        } else if let Some(n) = line.strip_prefix("stat::average_exec_per_sec:") {
            self.exec_per_sec = number(n).or(self.exec_per_sec);
        } else if let Some(rest) = line.strip_prefix('#') {
            // `#123456	pulse  cov: … exec/s: 2048 rss: 90Mb`
            if let Some(n) = rest.split_whitespace().next().and_then(number) {
                self.executions = Some(n);
            }
            let mut words = rest.split_whitespace();
            if words.any(|w| w == "exec/s:") {
                self.exec_per_sec = words.next().and_then(number).or(self.exec_per_sec);
            }
        }
    }
}

/// Copies the target's seeds into its corpus folder (kept between runs: it grows with what
/// libFuzzer finds). Returns how many seed files were written.
fn copy_seeds(target: &Target, corpus: &Path) -> Result<usize> {
    fs::create_dir_all(corpus).with_context(|| format!("cannot create {}", corpus.display()))?;
    let fixtures = repo_root().join("tests/fixtures");
    let mut files = Vec::new();
    for (path, extensions) in target.seeds {
        collect(&fixtures.join(path), extensions, &mut files)?;
    }
    let mut written = 0;
    for file in files {
        let bytes = fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let name = file
            .strip_prefix(&fixtures)
            .unwrap_or(&file)
            .to_string_lossy()
            .replace(['/', '\\'], "_");
        for (prefix, bytes) in seed_variants(target.name, &file, bytes) {
            let dest = corpus.join(format!("seed{prefix}-{name}"));
            fs::write(&dest, bytes).with_context(|| format!("cannot write {}", dest.display()))?;
            written += 1;
        }
    }
    Ok(written)
}

/// The `dataset` target reads its first byte as the format and options (see
/// fuzz/fuzz_targets/dataset.rs): a seed file gets the byte its extension calls for, once as
/// it is and once tokenized. Other targets take files as they are.
fn seed_variants(target: &str, file: &Path, bytes: Vec<u8>) -> Vec<(String, Vec<u8>)> {
    if target != "dataset" {
        return vec![(String::new(), bytes)];
    }
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    let format: u8 = match ext {
        "jsonl" => 1,
        "json" => 2,
        "csv" => 3,
        "tsv" => 4,
        "txt" => 5,
        _ => 0,
    };
    [format, format | 0x40]
        .into_iter()
        .map(|mode| {
            let mut b = vec![mode];
            b.extend_from_slice(&bytes);
            (format!("-{mode:02x}"), b)
        })
        .collect()
}

fn collect(path: &Path, extensions: &[&str], files: &mut Vec<PathBuf>) -> Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = fs::read_dir(path)
            .with_context(|| format!("cannot list {}", path.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        entries.sort();
        for entry in entries {
            collect(&entry, extensions, files)?;
        }
    } else if path.is_file() {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if extensions.is_empty() || extensions.contains(&ext) {
            files.push(path.to_path_buf());
        }
    } else {
        bail!("seed path {} does not exist", path.display());
    }
    Ok(())
}

/// File names in `dir` (empty when it does not exist).
fn list(dir: &Path) -> Result<BTreeSet<String>> {
    if !dir.is_dir() {
        return Ok(BTreeSet::new());
    }
    fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect()
}
