//! Bytes in, tensors and configs out: checkpoint files (safetensors, Hugging Face layout) and
//! tokenizers. Nothing here knows about model code; families ask for tensors by name.

pub mod gguf;
pub mod hf;
pub mod safetensors;
pub mod source;
pub mod tokenizer;
pub mod zip;
