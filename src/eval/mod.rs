//! Evaluation: generation (and, with the evaluation issue, metrics).

pub mod generate;
