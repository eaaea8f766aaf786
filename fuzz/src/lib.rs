//! What the fuzz targets share: an allocator that turns an oversized allocation into a crash,
//! the check every parser result goes through, and the real files some targets need next to
//! the fuzzed one.
//!
//! libFuzzer itself reports panics (libfuzzer-sys aborts on them), hangs (`-timeout`) and
//! runaway memory (`-rss_limit_mb`); what it cannot see is one allocation far larger than the
//! input justifies, the bug a 2^60 length field causes before it crashes anything. The bound is
//! the one `tests/hostile.rs` enforces, so a crash here fails there too once the input is saved
//! under `tests/fixtures/hostile/`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A single allocation may be this many times the input… (same as tests/hostile.rs)
pub const ALLOC_FACTOR: usize = 48;
/// …plus this (same as tests/hostile.rs).
pub const ALLOC_SLACK: usize = 512 << 20;

/// The largest single allocation allowed now; `usize::MAX` outside [`check`], so libFuzzer's
/// bookkeeping and one-time set-up are never limited.
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The system allocator, refusing (with a report and an abort, which libFuzzer records as a
/// crash with its input) any single allocation above [`LIMIT`].
pub struct Bounded;

fn over_limit(size: usize) {
    let limit = LIMIT.load(Ordering::Relaxed);
    if size <= limit {
        return;
    }
    // Lift the limit first: the report below allocates, and re-enters this allocator.
    LIMIT.store(usize::MAX, Ordering::Relaxed);
    let trace = std::backtrace::Backtrace::force_capture();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "webtune-fuzz: one allocation of {size} bytes exceeds the bound of {limit} bytes \
         ({ALLOC_FACTOR} × input + {ALLOC_SLACK})\n{trace}"
    );
    // An allocator must not unwind, so this is an abort rather than a panic.
    std::process::abort();
}

unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        over_limit(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        over_limit(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        over_limit(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Bounded = Bounded;

/// Lifts the limit again when a case ends, even by a panic.
struct Unlimit;

impl Drop for Unlimit {
    fn drop(&mut self) {
        LIMIT.store(usize::MAX, Ordering::Relaxed);
    }
}

/// Runs one parse of `input_len` bytes of outside input under the allocation bound. An error
/// must carry a code and a message a person can act on (as in tests/hostile.rs); anything else
/// panics, which libFuzzer records as a crash.
pub fn check<T>(input_len: usize, f: impl FnOnce() -> webtune::Result<T>) -> Option<T> {
    let allowed = input_len
        .saturating_mul(ALLOC_FACTOR)
        .saturating_add(ALLOC_SLACK);
    let _unlimit = Unlimit;
    LIMIT.store(allowed, Ordering::Relaxed);
    match f() {
        Ok(v) => Some(v),
        Err(e) => {
            assert!(
                !e.message.trim().is_empty() && !e.code.as_str().is_empty(),
                "error without message or code: {e:?}"
            );
            None
        }
    }
}

/// Splits `data` at NUL bytes, which no JSON document or Jinja template needs, so one fuzz
/// input can carry a file and the extra values a parser takes (text to encode, messages).
pub fn split_nul(data: &[u8]) -> (&[u8], Vec<&[u8]>) {
    let mut parts = data.split(|&b| b == 0);
    let first = parts.next().unwrap_or_default();
    (first, parts.collect())
}

/// The tiny real checkpoints and tokenizer from tests/fixtures, compiled in so a target can
/// put a fuzzed file next to real ones.
pub mod fixtures {
    macro_rules! fixture {
        ($path:literal) => {
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/fixtures/",
                $path
            ))
        };
    }

    /// (family, config.json, model.safetensors)
    pub const CHECKPOINTS: [(&str, &[u8], &[u8]); 3] = [
        (
            "gpt2",
            fixture!("tiny_random/gpt2/config.json"),
            fixture!("tiny_random/gpt2/model.safetensors"),
        ),
        (
            "llama",
            fixture!("tiny_random/llama/config.json"),
            fixture!("tiny_random/llama/model.safetensors"),
        ),
        (
            "bert",
            fixture!("tiny_random/bert/config.json"),
            fixture!("tiny_random/bert/model.safetensors"),
        ),
    ];

    pub const GPT2_TOKENIZER: &[u8] = fixture!("tokenizers/gpt2/tokenizer.json");
}
