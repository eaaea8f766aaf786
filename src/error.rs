//! One error type for the whole crate: a stable machine-readable code, a sentence a person can
//! act on, and structured details (file, line, tensor, shapes…). The same codes reach the CLI's
//! JSON, the JS API and the page.

use serde::Serialize;
use serde_json::Value;
use std::fmt;

/// Stable error codes. The string forms (`as_str`) are part of the public API: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// A configuration value is out of range or inconsistent.
    ConfigInvalid,
    /// The requested compute device could not be created or is not available.
    DeviceUnavailable,
    /// The compute device failed while running (lost GPU, out of memory, driver error).
    DeviceLost,
    /// Training produced a NaN or infinite loss.
    NonFiniteLoss,
    /// A file the model needs (config.json, weights…) is not among those given.
    ModelMissingFile,
    /// An operation needs a model and none is loaded.
    ModelNotLoaded,
    /// The checkpoint's architecture is not one webtune implements.
    UnsupportedArchitecture,
    /// The model's config.json is malformed or inconsistent.
    ModelConfigInvalid,
    /// A weight tensor's shape disagrees with the config.
    ShapeMismatch,
    /// A weights file ends before the data its header promises.
    WeightsTruncated,
    /// A weights file is malformed (bad header, bad offsets, unsupported dtype).
    WeightsCorrupt,
    /// A weight tensor the model needs is not in the checkpoint.
    WeightsMissingTensor,
    /// tokenizer.json could not be read or used.
    TokenizerInvalid,
    /// A dataset file is unreadable or one of its records is invalid (details name file/line/field).
    DataInvalid,
    /// A chat template could not be compiled or rendered.
    ChatTemplateInvalid,
    /// The run would not fit the memory the backend can give it.
    MemoryInsufficient,
    /// Something inside webtune went wrong that is not the user's fault.
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::ConfigInvalid => "config.invalid",
            Code::DeviceUnavailable => "device.unavailable",
            Code::DeviceLost => "device.lost",
            Code::NonFiniteLoss => "train.non_finite_loss",
            Code::ModelMissingFile => "model.missing_file",
            Code::ModelNotLoaded => "model.not_loaded",
            Code::UnsupportedArchitecture => "model.unsupported_architecture",
            Code::ModelConfigInvalid => "model.config_invalid",
            Code::ShapeMismatch => "model.shape_mismatch",
            Code::WeightsTruncated => "weights.truncated",
            Code::WeightsCorrupt => "weights.corrupt",
            Code::WeightsMissingTensor => "weights.missing_tensor",
            Code::TokenizerInvalid => "tokenizer.invalid",
            Code::DataInvalid => "data.invalid",
            Code::ChatTemplateInvalid => "chat_template.invalid",
            Code::MemoryInsufficient => "memory.insufficient",
            Code::Internal => "internal",
        }
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Error {
    pub code: Code,
    pub message: String,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Value::Null,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(Code::ConfigInvalid, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code.as_str())
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;
