//! Hostile-input property tests: every parser of outside bytes (safetensors, GGUF, config.json,
//! the sharded index, tokenizer.json, JSONL/JSON/CSV/TSV/TXT datasets, chat templates, and a
//! whole model load) is fed random bytes, real fixtures truncated, bit-flipped and with absurd
//! length/offset/count fields, deeply nested JSON, garbage lines, unbalanced quotes and invalid
//! UTF-8. Each case must:
//!
//! - return `Ok` or a webtune `Error` with a code and a non-empty message — never panic (each
//!   case runs under `catch_unwind`; a panicking input is saved under
//!   `target/hostile-failures/` for replay);
//! - finish (inputs are bounded; a case slower than [`HANG_LIMIT`] fails);
//! - allocate no more than the input justifies: a counting global allocator records the largest
//!   single allocation of the case's thread, which must stay under
//!   `ALLOC_FACTOR × input + ALLOC_SLACK` (claims of 2^60 bytes are refused before allocating).
//!
//! Cases per property: `WEBTUNE_HOSTILE_CASES` (default 64, a few seconds in the dev profile);
//! `cargo xtask fuzz` runs them in release with 20 000. The seed corpus in
//! `tests/fixtures/hostile/` (truncated and bit-flipped real files, inputs that once found bugs)
//! is replayed by [`seed_corpus_replays`].

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use burn::tensor::Device;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};
use serde_json::{json, Value};
use webtune::data::{self, ChatTemplate, Format, InspectOptions, Message, Policy, TextMode};
use webtune::io::gguf::{self, GgufFile, GgufHeader};
use webtune::io::hf::ModelFiles;
use webtune::io::safetensors::SafeTensorsFile;
use webtune::io::source::{FileBytes, ReadAt};
use webtune::io::tokenizer::Tokenizer;
use webtune::models::bert::BertConfig;
use webtune::models::gpt2::Gpt2Config;
use webtune::models::llama::LlamaConfig;
use webtune::models::loaded::LoadedModel;

mod common;
use common::fixture;

// ---------------------------------------------------------------------------------------------
// Allocation accounting

/// Counts, per thread, the largest single allocation since the last [`reset_alloc`].
struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the slot may be gone while a thread shuts down.
    let _ = LARGEST.try_with(|l| {
        if size > l.get() {
            l.set(size)
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn reset_alloc() {
    LARGEST.with(|l| l.set(0));
}

fn largest_alloc() -> usize {
    LARGEST.with(Cell::get)
}

/// A single allocation may be this many times the input (f16 → f32 doubles, dequantised Q4
/// blocks grow ~7×, JSON values and GGUF metadata items are a few words each)…
const ALLOC_FACTOR: usize = 48;
/// …plus this (thread stacks, tokenizer tables, burn's buffers, minijinja's fuel-bounded output).
const ALLOC_SLACK: usize = 512 << 20;
/// No single case may take longer (dev profile, 2 shared cores).
const HANG_LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Harness

fn cases() -> u32 {
    std::env::var("WEBTUNE_HOSTILE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

fn config() -> Config {
    Config {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    }
}

fn failures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/hostile-failures")
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Saves a failing input (one file, or several for a model folder) and returns where.
fn save_failure(target: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let mut h = 0u64;
    for (n, b) in files {
        h ^= fnv(n.as_bytes()).rotate_left(7) ^ fnv(b);
    }
    let dir = failures_dir().join(format!("{target}-{h:016x}"));
    let _ = std::fs::create_dir_all(&dir);
    for (name, bytes) in files {
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let _ = std::fs::write(
            dir.join(if safe.is_empty() { "input" } else { &safe }),
            bytes,
        );
    }
    dir
}

/// Runs one case: no panic, no hang, no oversized allocation; an error must carry a code and
/// a message. `files` is what gets saved when the case fails.
fn check<T>(
    target: &str,
    files: &[(&str, &[u8])],
    f: impl FnOnce() -> webtune::error::Result<T>,
) -> Result<Option<T>, TestCaseError> {
    let input: usize = files.iter().map(|(_, b)| b.len()).sum();
    let start = Instant::now();
    reset_alloc();
    let result = catch_unwind(AssertUnwindSafe(f));
    let largest = largest_alloc();
    let elapsed = start.elapsed();
    let fail = |why: String| {
        let dir = save_failure(target, files);
        TestCaseError::fail(format!(
            "{target}: {why} (input saved in {})",
            dir.display()
        ))
    };
    let out = match result {
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            return Err(fail(format!("panicked: {msg}")));
        }
        Ok(Err(e)) => {
            if e.message.trim().is_empty() || e.code.as_str().is_empty() {
                return Err(fail(format!("error without message or code: {e:?}")));
            }
            None
        }
        Ok(Ok(v)) => Some(v),
    };
    if elapsed > HANG_LIMIT {
        return Err(fail(format!("took {elapsed:?}")));
    }
    let allowed = input.saturating_mul(ALLOC_FACTOR) + ALLOC_SLACK;
    if largest > allowed {
        return Err(fail(format!(
            "allocated {largest} bytes at once for {input} bytes of input (allowed {allowed})"
        )));
    }
    Ok(out)
}

fn read_fixture(path: &str) -> Vec<u8> {
    std::fs::read(fixture(path)).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

/// (family, config.json, model.safetensors)
type Checkpoint = (&'static str, Vec<u8>, Vec<u8>);

/// The tiny real checkpoints.
fn models() -> &'static [Checkpoint] {
    static M: OnceLock<Vec<Checkpoint>> = OnceLock::new();
    M.get_or_init(|| {
        ["gpt2", "llama", "bert"]
            .into_iter()
            .map(|f| {
                (
                    f,
                    read_fixture(&format!("tiny_random/{f}/config.json")),
                    read_fixture(&format!("tiny_random/{f}/model.safetensors")),
                )
            })
            .collect()
    })
}

fn ggufs() -> &'static [(&'static str, Vec<u8>)] {
    static G: OnceLock<Vec<(&'static str, Vec<u8>)>> = OnceLock::new();
    G.get_or_init(|| {
        // The SentencePiece one exercises the `llama` vocabulary path (merges from scores).
        [
            "tiny_llama_f32.gguf",
            "tiny_llama_mixed.gguf",
            "tiny_spm_vocab.gguf",
        ]
        .into_iter()
        .map(|n| (n, read_fixture(&format!("tiny_gguf/{n}"))))
        .collect()
    })
}

fn gpt2_tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        Tokenizer::from_bytes(&read_fixture("tokenizers/gpt2/tokenizer.json")).expect("tokenizer")
    })
}

// ---------------------------------------------------------------------------------------------
// Mutations

/// Values that break length, offset and count fields.
fn absurd_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(u64::MAX),
        Just(u64::MAX - 7),
        Just(1u64 << 63),
        Just(1u64 << 60),
        Just(1u64 << 40),
        Just(1u64 << 32),
        Just(u32::MAX as u64),
        Just(u32::MAX as u64 + 1),
        Just(i64::MIN as u64),
        Just(0u64),
        Just(1u64),
        0..4096u64,
        any::<u64>(),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Cut at this fraction (per 10 000) of the length.
    Truncate(u32),
    /// Flip bits at these (position per 10 000 of the header region or file, bit).
    Flip(Vec<(u32, u8)>),
    /// Overwrite 8 bytes with an absurd little-endian u64.
    PutU64(u32, u64),
    /// Overwrite 4 bytes.
    PutU32(u32, u32),
    /// Copy a range over another (duplicated/overlapping structures).
    Copy(u32, u32, u16),
    /// Insert bytes.
    Insert(u32, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0..10_000u32).prop_map(Mutation::Truncate),
        prop::collection::vec((0..10_000u32, 0..8u8), 1..8).prop_map(Mutation::Flip),
        (0..10_000u32, absurd_u64()).prop_map(|(p, v)| Mutation::PutU64(p, v)),
        (
            0..10_000u32,
            prop_oneof![Just(u32::MAX), 0..64u32, any::<u32>()]
        )
            .prop_map(|(p, v)| Mutation::PutU32(p, v)),
        (0..10_000u32, 0..10_000u32, 1..512u16).prop_map(|(a, b, n)| Mutation::Copy(a, b, n)),
        (0..10_000u32, prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(p, v)| Mutation::Insert(p, v)),
    ]
}

/// Applies mutations; positions fall in the first `region` bytes (the header) three times out
/// of four, where one bad byte matters most.
fn mutate(bytes: &[u8], region: usize, mutations: &[Mutation]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for (i, m) in mutations.iter().enumerate() {
        let span = if i % 4 == 3 || region == 0 {
            b.len()
        } else {
            region.min(b.len())
        };
        let at = |p: u32| (p as usize * span) / 10_000;
        match m {
            Mutation::Truncate(p) => {
                let cut = (*p as usize * b.len()) / 10_000;
                b.truncate(cut);
            }
            Mutation::Flip(flips) => {
                for &(p, bit) in flips {
                    let p = at(p);
                    if p < b.len() {
                        b[p] ^= 1 << bit;
                    }
                }
            }
            Mutation::PutU64(p, v) => {
                let p = at(*p);
                if p + 8 <= b.len() {
                    b[p..p + 8].copy_from_slice(&v.to_le_bytes());
                }
            }
            Mutation::PutU32(p, v) => {
                let p = at(*p);
                if p + 4 <= b.len() {
                    b[p..p + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
            Mutation::Copy(from, to, n) => {
                let (from, to, n) = (at(*from), at(*to), *n as usize);
                if from + n <= b.len() && to + n <= b.len() {
                    b.copy_within(from..from + n, to);
                }
            }
            Mutation::Insert(p, v) => {
                let p = at(*p).min(b.len());
                b.splice(p..p, v.iter().copied());
            }
        }
    }
    b
}

/// Length of a safetensors file's header region (8 + JSON).
fn st_header_region(bytes: &[u8]) -> usize {
    bytes
        .get(..8)
        .map(|l| 8 + u64::from_le_bytes(l.try_into().unwrap_or([0; 8])) as usize)
        .unwrap_or(0)
}

fn gguf_header_region(bytes: &[u8]) -> usize {
    GgufHeader::parse("x.gguf", bytes).map_or(bytes.len(), |h| h.data_start)
}

/// The same bytes behind a handle, read a range at a time as a weight file on disk is.
struct Behind(Vec<u8>);

impl ReadAt for Behind {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let start = usize::try_from(offset).map_err(|e| e.to_string())?;
        let bytes = start
            .checked_add(buf.len())
            .and_then(|end| self.0.get(start..end));
        buf.copy_from_slice(bytes.ok_or("past the end")?);
        Ok(())
    }
}

fn behind(bytes: Vec<u8>) -> FileBytes {
    FileBytes::Handle(Arc::new(Behind(bytes)))
}

/// What reading gave: each tensor's values (as bits: a bit flip can make NaNs), or the
/// error's code.
type Outcome = Result<Vec<(String, Vec<u32>)>, webtune::error::Code>;

fn outcome(read: &webtune::error::Result<Vec<(String, Vec<f32>)>>) -> Outcome {
    let bits = |d: &[f32]| d.iter().map(|v| v.to_bits()).collect();
    match read {
        Ok(t) => Ok(t.iter().map(|(n, d)| (n.clone(), bits(d))).collect()),
        Err(e) => Err(e.code),
    }
}

/// The same outcome whether the file is in memory or read tensor by tensor from a handle; the
/// memory one's result is returned.
fn both_ways(
    bytes: Vec<u8>,
    read: impl Fn(FileBytes) -> webtune::error::Result<Vec<(String, Vec<f32>)>>,
) -> webtune::error::Result<usize> {
    let from_handle = outcome(&read(behind(bytes.clone())));
    let from_memory = read(FileBytes::Memory(bytes));
    assert_eq!(
        outcome(&from_memory),
        from_handle,
        "in memory vs behind a handle"
    );
    from_memory.map(|t| t.iter().map(|(_, d)| d.len()).sum())
}

/// Parses and then reads every tensor (the read path is where offsets are used), from memory
/// and behind a handle.
fn exercise_safetensors(name: &str, bytes: Vec<u8>) -> webtune::error::Result<usize> {
    both_ways(bytes, |bytes| {
        let f = SafeTensorsFile::parse(name, bytes)?;
        let names: Vec<String> = f.tensors.keys().cloned().collect();
        let mut out = Vec::new();
        for t in names {
            if let Some((data, _)) = f.read_f32(&t) {
                out.push((t, data));
            }
        }
        Ok(out)
    })
}

fn exercise_gguf(name: &str, bytes: Vec<u8>) -> webtune::error::Result<usize> {
    let header = GgufHeader::parse(name, &bytes)?;
    let _ = gguf::hf_config(name, &header, &FileBytes::Memory(bytes.clone()));
    if let Ok(Some(json)) = gguf::tokenizer_json(name, &header) {
        let _ = Tokenizer::from_bytes(json.to_string().as_bytes());
    }
    both_ways(bytes, |bytes| {
        let f = GgufFile::parse(name, bytes)?;
        let _ = (f.num_values(), f.dtype_names().count());
        let names: Vec<String> = f.hf_names().map(str::to_string).collect();
        let mut out = Vec::new();
        for t in names {
            if let Some((data, _)) = f.read_f32(&t) {
                out.push((t, data));
            }
        }
        let raw: Vec<String> = f.header.tensors.keys().cloned().collect();
        for t in raw {
            if let Some((data, _)) = f.read_raw(&t) {
                out.push((t, data));
            }
        }
        Ok(out)
    })
}

fn load(files: &[(&str, &[u8])]) -> webtune::error::Result<usize> {
    let mut mf = ModelFiles::new();
    for (n, b) in files {
        mf.insert(*n, b.to_vec());
    }
    let _ = mf.config();
    let _ = mf.tokenizer();
    let model = LoadedModel::load(mf, &Device::flex())?;
    Ok(model.info.dims.parameters)
}

// ---------------------------------------------------------------------------------------------
// safetensors

/// A safetensors header entry with hostile values, written as raw JSON so that duplicate keys,
/// negative and out-of-range numbers survive.
fn hostile_number() -> impl Strategy<Value = String> {
    prop_oneof![
        absurd_u64().prop_map(|v| v.to_string()),
        (0..256u64).prop_map(|v| v.to_string()),
        Just("-1".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("18446744073709551616".to_string()),
        Just("1e300".to_string()),
        Just("1.5".to_string()),
        Just("null".to_string()),
        Just("\"8\"".to_string()),
    ]
}

fn st_entry() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("a"), Just("b"), Just("__metadata__"), Just("w")],
        prop_oneof![
            Just("F32"),
            Just("F16"),
            Just("BF16"),
            Just("I64"),
            Just("Q7"),
            Just("")
        ],
        prop::collection::vec(hostile_number(), 0..5),
        hostile_number(),
        hostile_number(),
    )
        .prop_map(|(name, dtype, shape, a, b)| {
            format!(
                r#""{name}":{{"dtype":"{dtype}","shape":[{}],"data_offsets":[{a},{b}]}}"#,
                shape.join(",")
            )
        })
}

fn st_file(entries: &[String], data_len: usize, len_override: Option<u64>) -> Vec<u8> {
    let header = format!("{{{}}}", entries.join(","));
    let len = len_override.unwrap_or(header.len() as u64);
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend(std::iter::repeat_n(0x3fu8, data_len));
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn safetensors_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        check("safetensors", &[("model.safetensors", &bytes)], || {
            exercise_safetensors("model.safetensors", bytes.clone())
        })?;
    }

    #[test]
    fn safetensors_mutated_fixtures(
        which in 0..3usize,
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let real = &models()[which].2;
        let bytes = mutate(real, st_header_region(real), &mutations);
        check("safetensors", &[("model.safetensors", &bytes)], || {
            exercise_safetensors("model.safetensors", bytes.clone())
        })?;
    }

    #[test]
    fn safetensors_hostile_headers(
        entries in prop::collection::vec(st_entry(), 0..5),
        data_len in 0..256usize,
        len_override in prop::option::weighted(0.2, absurd_u64()),
    ) {
        let bytes = st_file(&entries, data_len, len_override);
        check("safetensors", &[("model.safetensors", &bytes)], || {
            exercise_safetensors("model.safetensors", bytes.clone())
        })?;
    }
}

// ---------------------------------------------------------------------------------------------
// GGUF

#[derive(Debug, Clone)]
enum Meta {
    /// A string whose declared length may lie.
    Str(Option<u64>, String),
    /// An array of `item` type with a declared count that may lie, and some real items.
    Array(u32, u64, Vec<u8>),
    /// A scalar of any type id (13+ are undefined).
    Scalar(u32, Vec<u8>),
}

fn meta() -> impl Strategy<Value = Meta> {
    prop_oneof![
        (prop::option::weighted(0.3, absurd_u64()), "[a-z.]{0,12}")
            .prop_map(|(l, s)| Meta::Str(l, s)),
        (
            0..14u32,
            absurd_u64(),
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(t, n, b)| Meta::Array(t, n, b)),
        (0..16u32, prop::collection::vec(any::<u8>(), 0..9)).prop_map(|(t, b)| Meta::Scalar(t, b)),
    ]
}

#[derive(Debug, Clone)]
struct TensorInfo {
    name: String,
    dims: Vec<u64>,
    ty: u32,
    offset: u64,
}

fn tensor_info() -> impl Strategy<Value = TensorInfo> {
    (
        prop_oneof![
            Just("token_embd.weight".to_string()),
            Just("blk.0.attn_q.weight".to_string()),
            Just("blk.0.attn_k.weight".to_string()),
            Just("output.weight".to_string()),
            "[a-z.0-9]{1,10}",
        ],
        prop::collection::vec(
            prop_oneof![absurd_u64(), 0..64u64, Just(32u64), Just(256u64)],
            0..6,
        ),
        prop_oneof![0..16u32, Just(30u32), any::<u32>()],
        prop_oneof![absurd_u64(), Just(0u64), (0..8u64).prop_map(|v| v * 32)],
    )
        .prop_map(|(name, dims, ty, offset)| TensorInfo {
            name,
            dims,
            ty,
            offset,
        })
}

fn put_str(b: &mut Vec<u8>, declared: Option<u64>, s: &str) {
    b.extend_from_slice(&declared.unwrap_or(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

#[allow(clippy::too_many_arguments)]
fn gguf_file(
    version: u32,
    counts: (Option<u64>, Option<u64>),
    arch: &str,
    metas: &[(String, Meta)],
    tensors: &[TensorInfo],
    data_len: usize,
) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&counts.0.unwrap_or(tensors.len() as u64).to_le_bytes());
    b.extend_from_slice(&counts.1.unwrap_or(metas.len() as u64 + 1).to_le_bytes());
    put_str(&mut b, None, "general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes());
    put_str(&mut b, None, arch);
    for (key, m) in metas {
        put_str(&mut b, None, key);
        match m {
            Meta::Str(l, s) => {
                b.extend_from_slice(&8u32.to_le_bytes());
                put_str(&mut b, *l, s);
            }
            Meta::Array(t, n, items) => {
                b.extend_from_slice(&9u32.to_le_bytes());
                b.extend_from_slice(&t.to_le_bytes());
                b.extend_from_slice(&n.to_le_bytes());
                b.extend_from_slice(items);
            }
            Meta::Scalar(t, v) => {
                b.extend_from_slice(&t.to_le_bytes());
                b.extend_from_slice(v);
            }
        }
    }
    for t in tensors {
        put_str(&mut b, None, &t.name);
        b.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&t.ty.to_le_bytes());
        b.extend_from_slice(&t.offset.to_le_bytes());
    }
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b.extend(std::iter::repeat_n(0x11u8, data_len));
    b
}

fn meta_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("general.alignment".to_string()),
        Just("llama.attention.head_count".to_string()),
        Just("llama.attention.head_count_kv".to_string()),
        Just("llama.embedding_length".to_string()),
        Just("llama.block_count".to_string()),
        Just("tokenizer.ggml.model".to_string()),
        Just("tokenizer.ggml.tokens".to_string()),
        Just("tokenizer.ggml.merges".to_string()),
        Just("tokenizer.ggml.token_type".to_string()),
        Just("tokenizer.ggml.bos_token_id".to_string()),
        Just("tokenizer.ggml.add_bos_token".to_string()),
        Just("tokenizer.ggml.pre".to_string()),
        Just("tokenizer.ggml.scores".to_string()),
        Just("tokenizer.ggml.unknown_token_id".to_string()),
        Just("tokenizer.ggml.add_space_prefix".to_string()),
        "[a-z.]{1,16}",
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn gguf_random_bytes(
        version in prop_oneof![Just(2u32), Just(3u32), any::<u32>()],
        rest in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend_from_slice(&version.to_le_bytes());
        bytes.extend_from_slice(&rest);
        check("gguf", &[("model.gguf", &bytes)], || exercise_gguf("model.gguf", bytes.clone()))?;
    }

    #[test]
    fn gguf_mutated_fixtures(
        which in 0..3usize,
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let real = &ggufs()[which].1;
        let bytes = mutate(real, gguf_header_region(real), &mutations);
        check("gguf", &[("model.gguf", &bytes)], || exercise_gguf("model.gguf", bytes.clone()))?;
    }

    #[test]
    fn gguf_hostile_headers(
        version in prop_oneof![Just(2u32), Just(3u32)],
        counts in (prop::option::weighted(0.2, absurd_u64()), prop::option::weighted(0.2, absurd_u64())),
        arch in prop_oneof![Just("llama"), Just("qwen2"), Just("gpt2"), Just("")],
        metas in prop::collection::vec((meta_key(), meta()), 0..6),
        tensors in prop::collection::vec(tensor_info(), 0..5),
        data_len in 0..2048usize,
    ) {
        let bytes = gguf_file(version, counts, arch, &metas, &tensors, data_len);
        check("gguf", &[("model.gguf", &bytes)], || exercise_gguf("model.gguf", bytes.clone()))?;
        check("gguf-load", &[("model.gguf", &bytes)], || load(&[("model.gguf", &bytes)]))?;
    }

    #[test]
    fn gguf_mutated_fixtures_load(
        which in 0..3usize,
        mutations in prop::collection::vec(mutation(), 1..3),
    ) {
        let (name, real) = &ggufs()[which];
        let bytes = mutate(real, gguf_header_region(real), &mutations);
        check("gguf-load", &[(name, &bytes)], || load(&[(name, &bytes)]))?;
    }
}

// ---------------------------------------------------------------------------------------------
// config.json and whole-model loads

fn hostile_json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        absurd_u64().prop_map(Value::from),
        (-4i64..4).prop_map(Value::from),
        Just(json!(i64::MIN)),
        Just(json!(1e300)),
        Just(json!(-0.5)),
        Just(json!(f64::MAX)),
        Just(Value::Null),
        Just(json!("12")),
        Just(json!([1, 2])),
        Just(json!({})),
        (0..4096u64).prop_map(Value::from),
    ]
}

const CONFIG_KEYS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "n_embd",
    "n_head",
    "n_layer",
    "n_positions",
    "n_inner",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "type_vocab_size",
    "rms_norm_eps",
    "layer_norm_eps",
    "layer_norm_epsilon",
    "rope_theta",
    "sliding_window",
    "eos_token_id",
    "bos_token_id",
    "pad_token_id",
    "tie_word_embeddings",
    "model_type",
    "hidden_act",
    "activation_function",
    "rope_parameters",
    "rope_scaling",
    "id2label",
    "position_embedding_type",
];

fn config_edits() -> impl Strategy<Value = Vec<(usize, Value)>> {
    prop::collection::vec(
        (
            0..CONFIG_KEYS.len(),
            prop_oneof![
                4 => hostile_json_number(),
                1 => Just(json!({"rope_type": "llama3", "factor": -1.0})),
                1 => Just(json!({"rope_type": "linear", "factor": 1e-300})),
                1 => Just(json!({"0": "a", "18446744073709551615": "b"})),
                1 => prop_oneof![Just("gpt2"), Just("llama"), Just("qwen2"), Just("bert"), Just("gelu_new"), Just("silu"), Just("x")].prop_map(Value::from),
            ],
        ),
        1..5,
    )
}

fn edit_config(real: &[u8], edits: &[(usize, Value)]) -> Vec<u8> {
    let mut cfg: Value = serde_json::from_slice(real).expect("fixture config");
    for (k, v) in edits {
        cfg[CONFIG_KEYS[*k]] = v.clone();
    }
    serde_json::to_vec(&cfg).expect("json")
}

/// JSON nested `depth` deep, with garbage after it sometimes.
fn deep_json(depth: usize, kind: u8) -> Vec<u8> {
    let (open, close): (&str, &str) = match kind % 3 {
        0 => ("[", "]"),
        1 => ("{\"a\":", "}"),
        _ => ("[{\"k\":[", "]}]"),
    };
    let mut s = open.repeat(depth);
    s.push('1');
    s.push_str(&close.repeat(depth));
    s.into_bytes()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn config_json_from_json(which in 0..3usize, edits in config_edits()) {
        let cfg = edit_config(&models()[which].1, &edits);
        check("config", &[("config.json", &cfg)], || {
            let mut mf = ModelFiles::new();
            mf.insert("config.json", cfg.clone());
            let v = mf.config()?;
            let _ = webtune::io::hf::architecture(&v);
            let a = Gpt2Config::from_json(&v).map(|_| ());
            let b = LlamaConfig::from_json(&v).map(|_| ());
            let c = BertConfig::from_json(&v).map(|c| c.labels().map(|l| l.len()));
            a.and(b).and(c.map(|_| ()))
        })?;
    }

    #[test]
    fn config_json_random_and_deep(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        depth in 0..20_000usize,
        kind in any::<u8>(),
        deep in any::<bool>(),
    ) {
        let cfg = if deep { deep_json(depth, kind) } else { bytes };
        check("config", &[("config.json", &cfg)], || {
            let mut mf = ModelFiles::new();
            mf.insert("config.json", cfg.clone());
            let v = mf.config()?;
            Gpt2Config::from_json(&v)
                .map(|_| ())
                .or_else(|_| LlamaConfig::from_json(&v).map(|_| ()))
                .or_else(|_| BertConfig::from_json(&v).map(|_| ()))
        })?;
    }

    #[test]
    fn load_with_hostile_config(which in 0..3usize, edits in config_edits()) {
        let (_, config, weights) = &models()[which];
        let cfg = edit_config(config, &edits);
        let files = [("config.json", cfg.as_slice()), ("model.safetensors", weights.as_slice())];
        check("load", &files, || load(&files))?;
    }

    #[test]
    fn load_with_mutated_weights(
        which in 0..3usize,
        mutations in prop::collection::vec(mutation(), 1..3),
        generation in prop::option::weighted(0.3, prop::collection::vec(any::<u8>(), 0..40)),
    ) {
        let (_, config, weights) = &models()[which];
        let bytes = mutate(weights, st_header_region(weights), &mutations);
        let mut files = vec![("config.json", config.as_slice()), ("model.safetensors", bytes.as_slice())];
        if let Some(g) = &generation {
            files.push(("generation_config.json", g.as_slice()));
        }
        check("load", &files, || load(&files))?;
    }

    #[test]
    fn load_with_hostile_shard_index(
        which in 0..3usize,
        index in prop_oneof![
            Just(r#"{"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}"#.to_string()),
            Just(r#"{"weight_map": {"a": "config.json"}}"#.to_string()),
            Just(r#"{"weight_map": {"a": "model.safetensors", "b": "model.safetensors"}}"#.to_string()),
            Just(r#"{"weight_map": {"a": "model.safetensors", "b": "model.safetensors.index.json"}}"#.to_string()),
            Just(r#"{"weight_map": {"a": 7, "b": null}}"#.to_string()),
            Just(r#"{"weight_map": []}"#.to_string()),
            Just("[]".to_string()),
            "[ -~]{0,80}",
        ],
        cut in 0..10_000u32,
    ) {
        let (_, config, weights) = &models()[which];
        let shard = &weights[..(cut as usize * weights.len()) / 10_000];
        let files = [
            ("config.json", config.as_slice()),
            ("model.safetensors.index.json", index.as_bytes()),
            ("model.safetensors", weights.as_slice()),
            ("model-1.safetensors", shard),
            ("model-2.safetensors", weights.as_slice()),
        ];
        check("load-sharded", &files, || load(&files))?;
    }
}

// ---------------------------------------------------------------------------------------------
// tokenizer.json

const SMALL_TOKENIZER: &str = r#"{"version":"1.0","truncation":null,"padding":null,
"added_tokens":[{"id":5,"content":"<s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],
"normalizer":null,"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true},
"post_processor":null,"decoder":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},
"model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,
"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,
"vocab":{"a":0,"b":1,"ab":2,"Ġ":3,"Ġa":4,"<s>":5},"merges":["a b","Ġ a"]}}"#;

fn tokenizer_variant() -> impl Strategy<Value = Value> {
    let base: Value = serde_json::from_str(SMALL_TOKENIZER).expect("small tokenizer");
    (
        0..8usize,
        prop_oneof![
            hostile_json_number(),
            Just(json!({"type": "Split", "pattern": {"Regex": "(((a*)*)*)*b"}, "behavior": "Isolated", "invert": false})),
            Just(json!({"type": "Split", "pattern": {"Regex": "["}, "behavior": "Isolated", "invert": false})),
            Just(json!({"type": "Split", "pattern": {"Regex": "a{1000}{1000}"}, "behavior": "Isolated", "invert": false})),
            Just(json!(["a b", "x y", "ab ab", "Ġa b"])),
            Just(json!({"a": 18446744073709551615u64, "b": 4294967295u64})),
            Just(json!({"a": 0, "b": 0})),
            Just(json!([{"id": 4294967295u64, "content": "<x>", "special": true}])),
            Just(json!([{"id": 99, "content": "", "special": true}])),
            Just(json!({"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<nope>", "type_id": 0}}], "pair": [], "special_tokens": {}})),
            Just(json!({"type": "WordPiece", "vocab": {}, "unk_token": "[UNK]", "max_input_chars_per_word": 0})),
            Just(json!({"type": "Unigram", "vocab": [["a", 1e300], ["b", -1e300]], "unk_id": 99})),
            Just(json!({"type": "WordLevel", "vocab": {}, "unk_token": "<unk>"})),
            Just(json!({"type": "Precompiled", "precompiled_charsmap": "AAAA"})),
            Just(json!({"type": "Sequence", "processors": [{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [5, 6, 7], "tokens": ["<s>"]}}}]})),
            Just(json!({"type": "Sequence", "normalizers": [{"type": "Precompiled", "precompiled_charsmap": null}]})),
        ],
    )
        .prop_map(move |(slot, v)| {
            let mut t = base.clone();
            match slot {
                0 => t["pre_tokenizer"] = v,
                1 => t["model"]["merges"] = v,
                2 => t["model"]["vocab"] = v,
                3 => t["added_tokens"] = v,
                4 => t["post_processor"] = v,
                5 => t["model"] = v,
                6 => t["decoder"] = v,
                _ => t["normalizer"] = v,
            }
            t
        })
}

fn exercise_tokenizer(bytes: &[u8], text: &str) -> webtune::error::Result<usize> {
    let t = Tokenizer::from_bytes(bytes)?;
    let ids = t.encode(text)?;
    let _ = t.decode(&ids)?;
    let _ = t.decode(&[0, 1, u32::MAX, 7])?;
    let _ = t.to_json()?;
    Ok(t.vocab_size())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn tokenizer_random_and_mutated(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        mutations in prop::collection::vec(mutation(), 1..4),
        mode in 0..3u8,
        depth in 0..20_000usize,
        text in "\\PC{0,40}",
    ) {
        let input = match mode {
            0 => bytes,
            1 => mutate(SMALL_TOKENIZER.as_bytes(), 0, &mutations),
            _ => deep_json(depth, depth as u8),
        };
        check("tokenizer", &[("tokenizer.json", &input)], || exercise_tokenizer(&input, &text))?;
    }

    #[test]
    fn tokenizer_hostile_fields(t in tokenizer_variant(), text in "[ab <>s]{0,40}") {
        let input = serde_json::to_vec(&t).expect("json");
        check("tokenizer", &[("tokenizer.json", &input)], || exercise_tokenizer(&input, &text))?;
    }
}

// ---------------------------------------------------------------------------------------------
// Datasets

fn jsonl_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#"{"text": "hello world"}"#.to_string()),
        Just(r#"{"prompt": "q", "completion": "a"}"#.to_string()),
        Just(r#"{"instruction": "i", "input": null, "output": "o"}"#.to_string()),
        Just(r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#.to_string()),
        Just(r#"{"messages": [{"role": 1}], "text": []}"#.to_string()),
        Just(r#"{"text": "a", "label": 1e400}"#.to_string()),
        Just(r#"{"text": "b", "label": true}"#.to_string()),
        Just("\"just a string\"".to_string()),
        Just("[1, 2]".to_string()),
        Just("null".to_string()),
        Just("{\"text\": \"unterminated".to_string()),
        Just("\r".to_string()),
        Just(String::new()),
        "[ -~]{0,60}",
        "\\PC{0,30}",
        (1..3000usize).prop_map(|d| String::from_utf8(deep_json(d, d as u8)).unwrap_or_default()),
    ]
}

fn csv_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("text,label".to_string()),
        Just("\"hello, world\",pos".to_string()),
        Just("\"unbalanced,neg".to_string()),
        Just("a\"b\"c,\"d".to_string()),
        Just("\"\"\"\",x".to_string()),
        Just(",,,,,,".to_string()),
        Just("text,text".to_string()),
        Just("\t\t\"\t".to_string()),
        "[ -~\t]{0,60}",
    ]
}

fn dataset_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("d.jsonl"),
        Just("d.json"),
        Just("d.csv"),
        Just("d.tsv"),
        Just("d.txt"),
        Just("d.dat"),
        Just(""),
        Just(".json"),
    ]
    .prop_map(str::to_string)
}

fn inspect_options() -> impl Strategy<Value = InspectOptions> {
    (
        prop::option::weighted(
            0.3,
            prop_oneof![
                Just(Format::Jsonl),
                Just(Format::Json),
                Just(Format::Csv),
                Just(Format::Tsv),
                Just(Format::Text)
            ],
        ),
        prop_oneof![
            Just(TextMode::Lines),
            prop_oneof![
                Just(0usize),
                Just(1),
                Just(7),
                Just(usize::MAX),
                0..100usize
            ]
            .prop_map(|chunk_chars| TextMode::Document { chunk_chars }),
        ],
        any::<bool>(),
        prop_oneof![
            Just(0usize),
            Just(1),
            Just(256),
            Just(usize::MAX),
            Just(usize::MAX / 2)
        ],
        prop_oneof![Just(0usize), Just(8), Just(usize::MAX)],
        prop_oneof![Just(0usize), Just(3), Just(usize::MAX)],
    )
        .prop_map(|(format, text_mode, stop, seq_len, factor, listed)| {
            let mut o = InspectOptions {
                format,
                text_mode,
                too_long_factor: factor,
                max_listed_issues: listed,
                ..InspectOptions::default()
            };
            o.causal.seq_len = seq_len;
            if stop {
                o.policy = Policy::Stop;
            }
            o
        })
}

/// Inserts invalid UTF-8 at a few positions.
fn corrupt_utf8(mut b: Vec<u8>, at: &[(u32, u8)]) -> Vec<u8> {
    for &(p, which) in at {
        let p = (p as usize * b.len()) / 10_000;
        let bad: &[u8] = match which % 5 {
            0 => b"\xFF",
            1 => b"\xC3",
            2 => b"\xE2\x82",
            3 => b"\xED\xA0\x80",
            _ => b"\xEF\xBB\xBF",
        };
        b.splice(p..p, bad.iter().copied());
    }
    b
}

fn exercise_inspect(
    name: &str,
    bytes: &[u8],
    options: &InspectOptions,
    tokenizer: bool,
) -> webtune::error::Result<usize> {
    let tokenizer = tokenizer.then(gpt2_tokenizer);
    let (ds, report) = data::inspect(name, bytes, options, tokenizer)?;
    let _ = serde_json::to_string(&report);
    Ok(ds.examples.len())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn data_random_bytes(
        name in dataset_name(),
        bytes in prop::collection::vec(any::<u8>(), 0..800),
        options in inspect_options(),
    ) {
        check("data", &[(&name, &bytes)], || exercise_inspect(&name, &bytes, &options, false))?;
    }

    #[test]
    fn data_jsonl_with_garbage(
        name in dataset_name(),
        lines in prop::collection::vec(jsonl_line(), 0..40),
        crlf in any::<bool>(),
        bad_utf8 in prop::collection::vec((0..10_000u32, any::<u8>()), 0..3),
        options in inspect_options(),
        tokenizer in prop::bool::weighted(0.2),
    ) {
        let joined = lines.join(if crlf { "\r\n" } else { "\n" });
        let bytes = corrupt_utf8(joined.into_bytes(), &bad_utf8);
        check("data", &[(&name, &bytes)], || exercise_inspect(&name, &bytes, &options, tokenizer))?;
    }

    #[test]
    fn data_json_arrays(
        elements in prop::collection::vec(jsonl_line(), 0..40),
        close in any::<bool>(),
        separator in prop_oneof![Just(","), Just(",\n"), Just(" "), Just(",,")],
        options in inspect_options(),
    ) {
        let mut s = format!("[{}", elements.join(separator));
        if close {
            s.push(']');
        }
        let bytes = s.into_bytes();
        check("data", &[("d.json", &bytes)], || exercise_inspect("d.json", &bytes, &options, false))?;
    }

    #[test]
    fn data_csv_unbalanced(
        tsv in any::<bool>(),
        lines in prop::collection::vec(csv_line(), 0..40),
        bad_utf8 in prop::collection::vec((0..10_000u32, any::<u8>()), 0..2),
        options in inspect_options(),
    ) {
        let name = if tsv { "d.tsv" } else { "d.csv" };
        let bytes = corrupt_utf8(lines.join("\n").into_bytes(), &bad_utf8);
        check("data", &[(name, &bytes)], || exercise_inspect(name, &bytes, &options, false))?;
    }

    #[test]
    fn data_huge_single_line(
        name in dataset_name(),
        len in 0..300_000usize,
        fill in prop_oneof![Just(b'a'), Just(b'{'), Just(b'['), Just(b'"'), Just(b','), Just(b'\n'), Just(b'\t')],
        options in inspect_options(),
    ) {
        let bytes = vec![fill; len];
        check("data", &[(&name, &bytes)], || exercise_inspect(&name, &bytes, &options, false))?;
    }

    #[test]
    fn data_many_small_records(
        n in 0..50_000usize,
        kind in 0..3u8,
    ) {
        // Many elements in one file: catches work quadratic in the record count.
        let (name, bytes) = match kind {
            0 => ("d.json", format!("[{}]", vec!["{\"text\":\"x\"}"; n].join(","))),
            1 => ("d.csv", format!("{}\n{}", (0..n.min(5000)).map(|i| format!("c{i}")).collect::<Vec<_>>().join(","), "1")),
            _ => ("d.jsonl", vec!["{\"text\":\"x\"}"; n].join("\n")),
        };
        let bytes = bytes.into_bytes();
        check("data", &[(name, &bytes)], || exercise_inspect(name, &bytes, &InspectOptions::default(), false))?;
    }
}

// ---------------------------------------------------------------------------------------------
// Chat templates

fn template_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}".to_string()),
        Just("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}".to_string()),
        Just("{% for i in range(9999999999) %}{{ i }}{% endfor %}".to_string()),
        Just("{{ 'x' * 1000000000 }}".to_string()),
        Just("{{ ('x' * 100000) * 100000 }}".to_string()),
        Just("{% set s = 'ab' %}{% for i in range(60) %}{% set s = s + s %}{% endfor %}{{ s|length }}".to_string()),
        Just("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}".to_string()),
        Just("{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}".to_string()),
        Just("{{ raise_exception('no') }}".to_string()),
        Just("{{ messages[99999999999]['content'] }}".to_string()),
        Just("{{ messages[0]['content'].center(999999999999) }}".to_string()),
        Just("{{ messages[0]['content'].ljust(2000000000) }}".to_string()),
        Just("{{ messages[0]['content'].split('')|list }}".to_string()),
        Just("{{ messages[0]['content'].replace('', 'xx' * 1000) }}".to_string()),
        Just("{{ range(100000)|list|join(',') * 1000 }}".to_string()),
        Just("{{ (range(100000)|list) * 100000 }}".to_string()),
        Just("{{ messages|tojson * 100000000 }}".to_string()),
        Just("{{ 1 / 0 }}{{ 10 ** 100000 }}{{ -9223372036854775808 // -1 }}".to_string()),
        Just("{{ 9223372036854775807 + 1 }}{{ 2 ** 64 }}".to_string()),
        Just("{% include 'chat' %}".to_string()),
        Just("{{ bos_token }}{% if add_generation_prompt %}A:{% endif %}{{ eos_token }}".to_string()),
        "[{}%# a-z()'|.\\[\\]0-9+*]{0,40}",
    ]
}

fn messages() -> impl Strategy<Value = Vec<Message>> {
    prop::collection::vec(
        (
            prop_oneof![Just("user"), Just("assistant"), Just("system"), Just("")],
            "\\PC{0,30}",
        )
            .prop_map(|(r, c)| Message::new(r, &c)),
        0..6,
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn chat_templates(
        pieces in prop::collection::vec(template_piece(), 1..4),
        messages in messages(),
        generation in any::<bool>(),
    ) {
        let source = pieces.concat();
        check("chat", &[("chat_template.jinja", source.as_bytes())], || {
            let t = ChatTemplate::new(&source, "<s>", "</s>")?;
            t.render(&messages, generation).map(|s| s.len())
        })?;
    }

    #[test]
    fn chat_tokenizer_config(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        piece in template_piece(),
        raw in any::<bool>(),
    ) {
        let input = if raw {
            bytes
        } else {
            serde_json::to_vec(&json!({"chat_template": [{"name": "default", "template": piece}], "bos_token": {"content": 7}, "eos_token": null})).expect("json")
        };
        check("chat", &[("tokenizer_config.json", &input)], || {
            match ChatTemplate::from_tokenizer_config(&input)? {
                Some(t) => t.render(&[Message::new("user", "hi")], true).map(|s| s.len()),
                None => Ok(0),
            }
        })?;
    }

    #[test]
    fn chat_datasets_with_hostile_templates(
        piece in template_piece(),
        lines in prop::collection::vec(jsonl_line(), 1..10),
    ) {
        let chat = r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#;
        let bytes = format!("{chat}\n{}", lines.join("\n")).into_bytes();
        let options = InspectOptions { chat_template: Some(piece.clone()), ..InspectOptions::default() };
        check("chat-data", &[("d.jsonl", &bytes), ("chat_template.jinja", piece.as_bytes())], || {
            exercise_inspect("d.jsonl", &bytes, &options, true)
        })?;
    }
}

// ---------------------------------------------------------------------------------------------
// Absurd declared sizes must be refused quickly, before allocating.

#[test]
fn absurd_declared_sizes_are_refused_before_allocating() {
    let quick = |what: &str, files: &[(&str, &[u8])], f: &dyn Fn() -> bool| {
        let start = Instant::now();
        reset_alloc();
        let refused = f();
        let largest = largest_alloc();
        let input: usize = files.iter().map(|(_, b)| b.len()).sum();
        assert!(refused, "{what}: accepted");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what}: took {:?}",
            start.elapsed()
        );
        assert!(
            largest < (1 << 20) + 64 * input,
            "{what}: allocated {largest} bytes at once for {input} bytes of input"
        );
    };
    // safetensors: a header claiming 2^60 bytes, and a tensor claiming 2^60 elements.
    let mut st = (1u64 << 60).to_le_bytes().to_vec();
    st.extend_from_slice(b"{}");
    quick("safetensors header 2^60", &[("m", &st)], &|| {
        SafeTensorsFile::parse("m", st.clone()).is_err()
    });
    let st2 = st_file(
        &[r#""a":{"dtype":"F32","shape":[1152921504606846976],"data_offsets":[0,4611686018427387904]}"#.into()],
        16,
        None,
    );
    quick("safetensors tensor 2^60", &[("m", &st2)], &|| {
        SafeTensorsFile::parse("m", st2.clone()).is_err()
    });
    // GGUF: counts, string lengths and array counts of 2^60; a tensor of 2^60 elements.
    let arr = gguf_file(
        3,
        (None, None),
        "llama",
        &[("x".into(), Meta::Array(4, 1 << 60, vec![0; 16]))],
        &[],
        0,
    );
    quick("gguf array 2^60", &[("m", &arr)], &|| {
        GgufFile::parse("m", arr.clone()).is_err()
    });
    let s = gguf_file(
        3,
        (None, None),
        "llama",
        &[("x".into(), Meta::Str(Some(1 << 60), "abc".into()))],
        &[],
        0,
    );
    quick("gguf string 2^60", &[("m", &s)], &|| {
        GgufFile::parse("m", s.clone()).is_err()
    });
    let counts = gguf_file(3, (Some(1 << 60), Some(1 << 60)), "llama", &[], &[], 0);
    quick("gguf counts 2^60", &[("m", &counts)], &|| {
        GgufFile::parse("m", counts.clone()).is_err()
    });
    let t = gguf_file(
        3,
        (None, None),
        "llama",
        &[],
        &[TensorInfo {
            name: "token_embd.weight".into(),
            dims: vec![1 << 30, 1 << 30],
            ty: 0,
            offset: 0,
        }],
        64,
    );
    quick("gguf tensor 2^60", &[("m", &t)], &|| {
        GgufFile::parse("m", t.clone()).is_err()
    });
    // config.json: sizes of 2^60 next to real weights.
    for (family, config, weights) in models() {
        let mut cfg: Value = serde_json::from_slice(config).unwrap();
        for k in [
            "n_embd",
            "hidden_size",
            "vocab_size",
            "num_hidden_layers",
            "n_layer",
        ] {
            if cfg.get(k).is_some() {
                cfg[k] = json!(1u64 << 60);
            }
        }
        let cfg = serde_json::to_vec(&cfg).unwrap();
        let files = [
            ("config.json", cfg.as_slice()),
            ("model.safetensors", weights.as_slice()),
        ];
        quick(&format!("{family} config 2^60"), &files, &|| {
            load(&files).is_err()
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Seed corpus

/// Replays every file of `tests/fixtures/hostile/<target>/`: each must be handled like a
/// generated case (no panic, no hang, bounded allocation). Model folders under `model/` load as
/// a whole; files under `config/` are tried as config.json next to each real checkpoint.
#[test]
fn seed_corpus_replays() {
    let root = fixture("hostile");
    let mut replayed = 0;
    let list = |dir: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    for target_dir in list(&root) {
        let target = target_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for path in list(&target_dir) {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let result = if path.is_dir() {
                let owned: Vec<(String, Vec<u8>)> = list(&path)
                    .into_iter()
                    .map(|p| {
                        let n = p.file_name().unwrap().to_string_lossy().into_owned();
                        (n, std::fs::read(&p).unwrap())
                    })
                    .collect();
                let files: Vec<(&str, &[u8])> = owned
                    .iter()
                    .map(|(n, b)| (n.as_str(), b.as_slice()))
                    .collect();
                check(&target, &files, || load(&files)).map(|_| ())
            } else {
                let bytes = std::fs::read(&path).unwrap();
                let files = [(name.as_str(), bytes.as_slice())];
                match target.as_str() {
                    "safetensors" => check(&target, &files, || {
                        exercise_safetensors(&name, bytes.clone())
                    })
                    .map(|_| ()),
                    "gguf" => check(&target, &files, || exercise_gguf(&name, bytes.clone()))
                        .and_then(|_| check(&target, &files, || load(&[("m.gguf", &bytes)])))
                        .map(|_| ()),
                    "config" => models().iter().try_for_each(|(_, _, weights)| {
                        let files = [
                            ("config.json", bytes.as_slice()),
                            ("model.safetensors", weights.as_slice()),
                        ];
                        check(&target, &files, || load(&files)).map(|_| ())
                    }),
                    "tokenizer" => check(&target, &files, || {
                        exercise_tokenizer(&bytes, "hello <s> ab")
                    })
                    .map(|_| ()),
                    "data" => [
                        InspectOptions::default(),
                        InspectOptions {
                            text_mode: TextMode::Document { chunk_chars: 3 },
                            ..InspectOptions::default()
                        },
                    ]
                    .iter()
                    .try_for_each(|o| {
                        check(&target, &files, || exercise_inspect(&name, &bytes, o, true))
                            .map(|_| ())
                    }),
                    "chat" => {
                        let source = String::from_utf8_lossy(&bytes).into_owned();
                        check(&target, &files, || {
                            let t = ChatTemplate::new(&source, "<s>", "</s>")?;
                            t.render(
                                &[Message::new("user", "hi"), Message::new("assistant", "yo")],
                                true,
                            )
                        })
                        .map(|_| ())
                    }
                    other => panic!("unknown seed corpus target {other:?} ({})", path.display()),
                }
            };
            if let Err(e) = result {
                panic!("{}: {e}", path.display());
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no seed corpus under {}", root.display());
}
