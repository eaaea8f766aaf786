//! webtune: fine-tune small pretrained language models inside a browser tab, on WebGPU through
//! burn, with a CPU fallback inside wasm. The same core backs the native CLI `webtune`.
//!
//! The data path reads in one direction: data → token batches → train → models → metrics.

pub mod backend;
pub mod data;
pub mod error;
pub mod eval;
pub mod io;
pub mod models;
pub mod platform;
pub mod rng;
pub mod train;

#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Code, Error, Result};

// What the CLI and an embedder start jobs with; the modules behind them are for the rest.
pub use train::job::{DataSource, DatasetFile, DatasetFiles, JobConfig, JobEvent};
pub use train::trainer::Progress;
pub use train::{
    eval_data, inspect_data, run_task, task_name, ClassifyJobOutput, EmbedJobOutput, JobOutput,
    JobResult,
};

/// The crate version, shown by the page and the CLI.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
