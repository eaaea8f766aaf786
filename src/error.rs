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
