//! Helpers shared by the integration tests (each test file includes this with `mod common;`).
#![allow(dead_code)] // every test file uses a different subset

use std::path::PathBuf;

use serde_json::Value;

/// A path under `tests/fixtures/`.
pub fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// Token ids from a JSON array in a reference fixture.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}
