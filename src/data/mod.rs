//! Data: the files people already have, read locally, checked line by line, split, and turned
//! into token batches. The path reads in one direction:
//!
//! bytes → [`formats`] (records with their file/line) → [`schema`] (which fields mean what) →
//! [`validate`] (examples + a report of everything skipped) → [`split`] → [`batching`]
//! ([`TokenBatch`] for causal LM, [`ClassBatch`] for classification). Chat conversations are
//! rendered with the model's own template by [`chat`].
//!
//! [`inspect`] runs the whole front half in one call for the CLI and the wasm layer.

pub mod batching;
pub mod chat;
pub mod formats;
pub mod schema;
pub mod split;
pub mod toy;
pub mod validate;

pub use batching::{ClassBatch, LabelMap};
pub use chat::{ChatTemplate, Message};
pub use formats::{Format, Location, TextMode};
pub use schema::Schema;
pub use validate::{inspect, Content, Dataset, Example, InspectOptions, Issue, Policy, Report};

/// One training batch in host memory, ready to become tensors on any device.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    pub batch_size: usize,
    pub seq_len: usize,
    /// `[batch_size × seq_len]` input ids, row-major.
    pub inputs: Vec<i64>,
    /// `[batch_size × seq_len]` next-token targets.
    pub targets: Vec<i64>,
    /// `[batch_size × seq_len]` 1.0 where the target counts in the loss, 0.0 elsewhere.
    pub loss_mask: Vec<f32>,
}

impl TokenBatch {
    /// Number of positions that count in the loss.
    pub fn counted(&self) -> usize {
        self.loss_mask.iter().filter(|&&w| w > 0.0).count()
    }
}
