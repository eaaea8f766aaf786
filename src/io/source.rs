//! Where a model file's bytes are: in memory, or behind a handle that reads a range at a time
//! (a file on disk natively; a `Blob`/`File` in the browser's worker, read with
//! `FileReaderSync`). Weight files behind a handle are read tensor by tensor as the model is
//! built, so loading never holds a whole weight file beside the model: what made a Qwen2.5-0.5B
//! QLoRA load peak at file + model (2.0 GB natively), and what kept files larger than the wasm
//! module's memory out of the page.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use serde_json::json;

use crate::error::{Code, Error, Result};

/// A file read a range at a time. Natively it is shared with the rayon pool, so it must be
/// `Send + Sync`; in the browser a `Blob` lives on the worker's thread and never leaves it.
#[cfg(not(target_arch = "wasm32"))]
pub trait ReadAt: Send + Sync {
    /// Bytes in the file.
    fn size(&self) -> u64;
    /// Fill `buf` from `offset` on; why not, when it cannot.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::result::Result<(), String>;
}

/// A file read a range at a time (see the native definition).
#[cfg(target_arch = "wasm32")]
pub trait ReadAt {
    fn size(&self) -> u64;
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::result::Result<(), String>;
}

/// One file's bytes.
#[derive(Clone)]
pub enum FileBytes {
    Memory(Vec<u8>),
    Handle(Arc<dyn ReadAt>),
}

impl std::fmt::Debug for FileBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory(b) => write!(f, "Memory({} bytes)", b.len()),
            Self::Handle(h) => write!(f, "Handle({} bytes)", h.size()),
        }
    }
}

impl Default for FileBytes {
    fn default() -> Self {
        Self::Memory(Vec::new())
    }
}

impl From<Vec<u8>> for FileBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Memory(bytes)
    }
}

impl FileBytes {
    pub fn len(&self) -> usize {
        match self {
            Self::Memory(b) => b.len(),
            Self::Handle(h) => usize::try_from(h.size()).unwrap_or(usize::MAX),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes this file holds in memory (none behind a handle).
    pub fn resident(&self) -> usize {
        match self {
            Self::Memory(b) => b.len(),
            Self::Handle(_) => 0,
        }
    }

    /// The whole file, when it is in memory.
    pub fn as_slice(&self) -> Option<&[u8]> {
        match self {
            Self::Memory(b) => Some(b),
            Self::Handle(_) => None,
        }
    }

    /// The bytes in `range` of the file `name`: borrowed when in memory, read when behind a
    /// handle. A range past the end is `weights.truncated`; a failed read says why.
    pub fn read(&self, name: &str, range: Range<usize>) -> Result<Cow<'_, [u8]>> {
        if range.start > range.end || range.end > self.len() {
            return Err(Error::new(
                Code::WeightsTruncated,
                format!(
                    "{name} is truncated: it has {} bytes but bytes {}..{} were needed; download it again",
                    self.len(),
                    range.start,
                    range.end
                ),
            )
            .with_details(json!({ "file": name, "bytes": self.len(), "needed": range.end })));
        }
        match self {
            Self::Memory(b) => Ok(Cow::Borrowed(&b[range])),
            Self::Handle(h) => {
                let mut buf = Vec::new();
                buf.try_reserve_exact(range.len()).map_err(|_| {
                    Error::new(
                        Code::MemoryInsufficient,
                        format!("{} bytes of {name} do not fit in memory", range.len()),
                    )
                })?;
                buf.resize(range.len(), 0);
                h.read_at(range.start as u64, &mut buf).map_err(|why| {
                    Error::new(
                        Code::ModelMissingFile,
                        format!(
                            "cannot read bytes {}..{} of {name}: {why}",
                            range.start, range.end
                        ),
                    )
                    .with_details(json!({ "file": name }))
                })?;
                Ok(Cow::Owned(buf))
            }
        }
    }

    /// The whole file.
    pub fn read_all(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        self.read(name, 0..self.len())
    }

    /// At most the first `n` bytes.
    pub fn prefix(&self, name: &str, n: usize) -> Result<Cow<'_, [u8]>> {
        self.read(name, 0..n.min(self.len()))
    }
}

/// A file on disk, read with a seek and a read per range.
#[cfg(not(target_arch = "wasm32"))]
pub struct DiskFile {
    file: std::sync::Mutex<std::fs::File>,
    len: u64,
}

#[cfg(not(target_arch = "wasm32"))]
impl DiskFile {
    pub fn open(path: &std::path::Path) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            file: std::sync::Mutex::new(file),
            len,
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl ReadAt for DiskFile {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::result::Result<(), String> {
        use std::io::{Read, Seek, SeekFrom};
        // A poisoned lock only means another read panicked; the file handle itself is fine.
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(buf))
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Shared(Vec<u8>);

    impl ReadAt for Shared {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::result::Result<(), String> {
            let start = offset as usize;
            buf.copy_from_slice(&self.0[start..start + buf.len()]);
            Ok(())
        }
    }

    #[test]
    fn a_handle_reads_what_memory_holds_and_refuses_past_the_end() {
        let bytes: Vec<u8> = (0..=255).collect();
        let memory = FileBytes::Memory(bytes.clone());
        let handle = FileBytes::Handle(Arc::new(Shared(bytes)));
        for range in [0..0, 0..10, 100..256, 255..256] {
            assert_eq!(
                memory.read("f", range.clone()).unwrap(),
                handle.read("f", range).unwrap()
            );
        }
        assert_eq!(memory.resident(), 256);
        assert_eq!(handle.resident(), 0);
        for file in [&memory, &handle] {
            let e = file.read("f", 250..257).unwrap_err();
            assert_eq!(e.code, Code::WeightsTruncated, "{}", e.message);
            assert_eq!(file.prefix("f", 1000).unwrap().len(), 256);
        }
    }
}
