//! Data: formats, tokenisation and batching. For now, the synthetic task of the foundation.

pub mod toy;

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
