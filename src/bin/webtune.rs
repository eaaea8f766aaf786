//! `webtune`: the native command line on the same core as the browser build (CPU backend by
//! default; `--backend webgpu` uses burn's wgpu backend on Vulkan/Metal where one exists).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;
use webtune::backend::{Backend, BackendKind};
use webtune::train::toy::{train_toy, ToyTrainConfig};
use webtune::Error;

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the toy transformer on the copy task (the foundation's end-to-end check).
    Toy {
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
    },
}

#[derive(Serialize)]
struct ErrorOutput<'a> {
    error: &'a Error,
}

fn main() -> ExitCode {
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

fn run(cli: &Cli) -> Result<(), Error> {
    match &cli.command {
        Command::Toy {
            config,
            steps,
            seed,
            lr,
            backend,
        } => {
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
            let mut summary = pollster::block_on(train_toy(&backend, &cfg, |p| {
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
    }
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::new(webtune::Code::Internal, e.to_string())
}
