//! Evaluation: generation and the metrics reported before and after fine-tuning.

pub mod generate;
pub mod metrics;
pub mod respond;
pub mod uncertainty;
