//! GGUF SentencePiece vocabularies (`tokenizer.ggml.model = "llama"`: Llama 2, TinyLlama,
//! Mistral): the tokenizer rebuilt from the metadata of `tiny_gguf/tiny_spm_vocab.gguf` tokenizes
//! and decodes like transformers' tokenizer loaded from the same file (reference:
//! tools/reference/spm_gguf.py), survives export as tokenizer.json, and inconsistent metadata
//! is a clear error.

use std::collections::BTreeMap;

use burn::tensor::Device;
use serde_json::Value;
use webtune::io::gguf::{GgufHeader, MetaValue};
use webtune::io::hf::ModelFiles;
use webtune::io::tokenizer::Tokenizer;
use webtune::models::loaded::LoadedModel;
use webtune::Code;

mod common;
use common::{fixture, ids};

const FIXTURE: &str = "tiny_spm_vocab.gguf";

fn fixture_bytes() -> Vec<u8> {
    std::fs::read(fixture(&format!("tiny_gguf/{FIXTURE}"))).expect("fixture readable")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixture("reference/spm_gguf.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn files(name: &str, bytes: Vec<u8>) -> ModelFiles {
    let mut files = ModelFiles::new();
    files.insert(name, bytes);
    files
}

/// The fixture's metadata, to edit and write back as a vocabulary-only GGUF.
fn metadata() -> BTreeMap<String, MetaValue> {
    GgufHeader::parse(FIXTURE, &fixture_bytes())
        .unwrap()
        .metadata
}

/// A GGUF v3 file holding `metadata` and no tensors: enough for the tokenizer.
fn gguf(metadata: &BTreeMap<String, MetaValue>) -> Vec<u8> {
    fn type_id(v: &MetaValue) -> u32 {
        match v {
            MetaValue::U8(_) => 0,
            MetaValue::I8(_) => 1,
            MetaValue::U16(_) => 2,
            MetaValue::I16(_) => 3,
            MetaValue::U32(_) => 4,
            MetaValue::I32(_) => 5,
            MetaValue::F32(_) => 6,
            MetaValue::Bool(_) => 7,
            MetaValue::String(_) => 8,
            MetaValue::Array(_) => 9,
            MetaValue::U64(_) => 10,
            MetaValue::I64(_) => 11,
            MetaValue::F64(_) => 12,
        }
    }
    fn string(b: &mut Vec<u8>, s: &str) {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    }
    fn value(b: &mut Vec<u8>, v: &MetaValue) {
        match v {
            MetaValue::U8(x) => b.push(*x),
            MetaValue::I8(x) => b.extend_from_slice(&x.to_le_bytes()),
            MetaValue::U16(x) => b.extend_from_slice(&x.to_le_bytes()),
            MetaValue::I16(x) => b.extend_from_slice(&x.to_le_bytes()),
            MetaValue::U32(x) => b.extend_from_slice(&x.to_le_bytes()),
            MetaValue::I32(x) => b.extend_from_slice(&x.to_le_bytes()),
            MetaValue::F32(x) => b.extend_from_slice(&x.to_le_bytes()),
            MetaValue::Bool(x) => b.push(u8::from(*x)),
            MetaValue::String(s) => string(b, s),
            MetaValue::Array(items) => {
                // Items of one type; an empty array is written as one of u32.
                b.extend_from_slice(&items.first().map_or(4, type_id).to_le_bytes());
                b.extend_from_slice(&(items.len() as u64).to_le_bytes());
                items.iter().for_each(|item| value(b, item));
            }
            MetaValue::U64(x) => b.extend_from_slice(&x.to_le_bytes()),
            MetaValue::I64(x) => b.extend_from_slice(&x.to_le_bytes()),
            MetaValue::F64(x) => b.extend_from_slice(&x.to_le_bytes()),
        }
    }
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, v) in metadata {
        string(&mut b, key);
        b.extend_from_slice(&type_id(v).to_le_bytes());
        value(&mut b, v);
    }
    b
}

/// The tokenizer the user path builds from a vocabulary-only GGUF with this metadata.
fn tokenizer_from(metadata: &BTreeMap<String, MetaValue>) -> Result<Tokenizer, webtune::Error> {
    files("edited.gguf", gguf(metadata))
        .tokenizer()
        .map(|t| t.expect("a llama vocabulary gives a tokenizer"))
}

fn cases(reference: &Value, key: &str) -> Vec<Value> {
    reference[key].as_array().unwrap().clone()
}

fn assert_matches_reference(tok: &Tokenizer, what: &str) {
    let reference = reference();
    for case in cases(&reference, "cases") {
        let text = case["text"].as_str().unwrap();
        let got = tok.encode(text).unwrap();
        assert_eq!(got, ids(&case["ids"]), "{what}: {text:?}");
        assert_eq!(
            tok.encode_with(text, false).unwrap(),
            ids(&case["ids_no_special"]),
            "{what}: {text:?} without special tokens"
        );
        assert_eq!(
            tok.decode(&got).unwrap(),
            case["decoded"].as_str().unwrap(),
            "{what}: decoding {text:?}"
        );
    }
}

#[test]
fn the_sentencepiece_vocabulary_tokenizes_like_transformers() {
    let reference = reference();
    assert!(cases(&reference, "cases").len() >= 15);
    // The user path: a GGUF file on its own becomes a model with a tokenizer.
    let model = LoadedModel::load(files(FIXTURE, fixture_bytes()), &Device::flex()).unwrap();
    assert!(model.info.has_tokenizer);
    assert_eq!(model.info.dims.vocab_size, 512);
    let tok = model.tokenizer.as_ref().unwrap();
    assert_eq!(tok.vocab_size(), 512);
    assert_matches_reference(tok, "from the GGUF");
    assert_eq!(model.encode("Hello world").unwrap(), vec![1, 353, 289]);
    assert!(tok.is_special(1) && tok.is_special(2) && !tok.is_special(353));

    // The reference's known disagreements with sentencepiece are the ones its notes explain:
    // a text starting with a space, and special tokens written in the text.
    let disagree: Vec<&str> = reference["disagree"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(disagree
        .iter()
        .all(|t| t.starts_with(' ') || t.contains("<s>") || t.contains("<unk>")));
}

#[test]
fn the_rebuilt_tokenizer_survives_export_as_tokenizer_json() {
    let tok = files(FIXTURE, fixture_bytes())
        .tokenizer()
        .unwrap()
        .unwrap();
    let json = tok.to_json().unwrap().unwrap();
    let value: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["model"]["type"], "BPE");
    assert_eq!(value["model"]["byte_fallback"], true);
    assert_eq!(value["pre_tokenizer"]["type"], "Metaspace");
    // The same pipeline as transformers' tokenizer, piece by piece; the merges in the same
    // order. Only the model's unk_token differs (transformers leaves it unset; it matters only
    // without byte fallback).
    let theirs = &reference()["transformers_tokenizer"];
    for part in [
        "added_tokens",
        "normalizer",
        "pre_tokenizer",
        "post_processor",
        "decoder",
    ] {
        assert_eq!(value[part], theirs[part], "{part}");
    }
    for (key, v) in theirs["model"].as_object().unwrap() {
        if key != "unk_token" {
            assert_eq!(&value["model"][key], v, "model.{key}");
        }
    }
    let reloaded = Tokenizer::from_bytes(json.as_bytes()).unwrap();
    assert_matches_reference(&reloaded, "reloaded from tokenizer.json");
    // For tools/reference/spm_gguf.py --check-export, which loads it in transformers.
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gguf_spm_export");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), json).unwrap();
}

#[test]
fn add_space_prefix_follows_the_metadata() {
    let mut meta = metadata();
    // Absent means true (llama.cpp's Llama converter does not write it).
    meta.remove("tokenizer.ggml.add_space_prefix");
    assert_matches_reference(&tokenizer_from(&meta).unwrap(), "without add_space_prefix");

    // false: no "▁" in front of the text, as sentencepiece without its dummy prefix (transformers
    // 5.24 ignores the key; see the reference's notes).
    meta.insert(
        "tokenizer.ggml.add_space_prefix".into(),
        MetaValue::Bool(false),
    );
    let tok = tokenizer_from(&meta).unwrap();
    let reference = reference();
    for case in cases(&reference, "no_prefix") {
        let text = case["text"].as_str().unwrap();
        let got = tok.encode(text).unwrap();
        assert_eq!(got, ids(&case["sentencepiece_ids"]), "{text:?}");
        let decoded = tok.decode(&got).unwrap();
        // Ours keeps the BOS token's text, as transformers' decode does.
        assert_eq!(
            decoded.strip_prefix("<s>"),
            Some(case["sentencepiece_decoded"].as_str().unwrap()),
            "decoding {text:?}"
        );
    }
}

#[test]
fn add_bos_and_add_eos_flags_shape_the_post_processor() {
    let mut meta = metadata();
    meta.insert(
        "tokenizer.ggml.add_bos_token".into(),
        MetaValue::Bool(false),
    );
    meta.insert("tokenizer.ggml.add_eos_token".into(), MetaValue::Bool(true));
    let tok = tokenizer_from(&meta).unwrap();
    assert_eq!(tok.encode("Hello world").unwrap(), vec![353, 289, 2]);
    assert_eq!(
        tok.encode_with("Hello world", false).unwrap(),
        vec![353, 289]
    );
    // Older files have no flag: llama.cpp and transformers add BOS.
    meta.remove("tokenizer.ggml.add_bos_token");
    meta.remove("tokenizer.ggml.add_eos_token");
    assert_eq!(
        tokenizer_from(&meta)
            .unwrap()
            .encode("Hello world")
            .unwrap(),
        vec![1, 353, 289]
    );
}

#[test]
fn a_vocabulary_without_byte_tokens_falls_back_to_unk() {
    // Rename every <0xXX> token and mark it normal: no byte fallback, so an emoji the
    // vocabulary cannot spell becomes <unk> (id 0), as SentencePiece does without byte fallback.
    let mut meta = metadata();
    let Some(MetaValue::Array(tokens)) = meta.get_mut("tokenizer.ggml.tokens") else {
        panic!("tokens");
    };
    for t in tokens.iter_mut() {
        if let MetaValue::String(s) = t {
            if s.starts_with("<0x") {
                *s = s.replace("<0x", "[byte ");
            }
        }
    }
    let Some(MetaValue::Array(types)) = meta.get_mut("tokenizer.ggml.token_type") else {
        panic!("types");
    };
    for t in types.iter_mut() {
        if *t == MetaValue::I32(6) {
            *t = MetaValue::I32(1);
        }
    }
    let tok = tokenizer_from(&meta).unwrap();
    let got = tok.encode("Hello 🙂").unwrap();
    assert_eq!(got.first(), Some(&1));
    assert_eq!(got.last(), Some(&0), "{got:?}");
    assert_eq!(tok.encode("Hello world").unwrap(), vec![1, 353, 289]);
}

#[test]
fn inconsistent_metadata_is_a_clear_error() {
    type Edit = fn(&mut BTreeMap<String, MetaValue>);
    fn array(meta: &mut BTreeMap<String, MetaValue>, key: &str) -> Vec<MetaValue> {
        match meta.get_mut(key) {
            Some(MetaValue::Array(a)) => std::mem::take(a),
            _ => panic!("{key}"),
        }
    }
    fn set(meta: &mut BTreeMap<String, MetaValue>, key: &str, v: MetaValue) {
        meta.insert(key.into(), v);
    }
    let edits: &[(&str, &str, Edit)] = &[
        ("scores shorter than tokens", "tokenizer.ggml.scores", |m| {
            let mut s = array(m, "tokenizer.ggml.scores");
            s.pop();
            set(m, "tokenizer.ggml.scores", MetaValue::Array(s));
        }),
        ("scores missing", "tokenizer.ggml.scores", |m| {
            m.remove("tokenizer.ggml.scores");
        }),
        ("a NaN score", "tokenizer.ggml.scores[300]", |m| {
            let mut s = array(m, "tokenizer.ggml.scores");
            s[300] = MetaValue::F32(f32::NAN);
            set(m, "tokenizer.ggml.scores", MetaValue::Array(s));
        }),
        (
            "token types longer than tokens",
            "tokenizer.ggml.token_type",
            |m| {
                let mut t = array(m, "tokenizer.ggml.token_type");
                t.push(MetaValue::I32(1));
                set(m, "tokenizer.ggml.token_type", MetaValue::Array(t));
            },
        ),
        (
            "tokens that are not strings",
            "tokenizer.ggml.tokens[0]",
            |m| {
                // GGUF arrays hold one type: these are integers.
                let t = array(m, "tokenizer.ggml.tokens");
                let ints = (0..t.len() as u32).map(MetaValue::U32).collect();
                set(m, "tokenizer.ggml.tokens", MetaValue::Array(ints));
            },
        ),
        ("no tokens", "tokenizer.ggml.tokens", |m| {
            set(m, "tokenizer.ggml.tokens", MetaValue::Array(Vec::new()));
            set(m, "tokenizer.ggml.scores", MetaValue::Array(Vec::new()));
            set(m, "tokenizer.ggml.token_type", MetaValue::Array(Vec::new()));
        }),
        ("a byte token missing", "<0x41>", |m| {
            // <0x41> (id 3 + 0x41) renamed and marked normal.
            let mut t = array(m, "tokenizer.ggml.tokens");
            t[3 + 0x41] = MetaValue::String("A-byte".into());
            set(m, "tokenizer.ggml.tokens", MetaValue::Array(t));
            let mut ty = array(m, "tokenizer.ggml.token_type");
            ty[3 + 0x41] = MetaValue::I32(1);
            set(m, "tokenizer.ggml.token_type", MetaValue::Array(ty));
        }),
        ("a byte token misspelt", "token 68", |m| {
            let mut t = array(m, "tokenizer.ggml.tokens");
            t[3 + 0x41] = MetaValue::String("<0x4G>".into());
            set(m, "tokenizer.ggml.tokens", MetaValue::Array(t));
        }),
        (
            "BOS outside the vocabulary",
            "tokenizer.ggml.bos_token_id",
            |m| {
                set(m, "tokenizer.ggml.bos_token_id", MetaValue::U32(512));
            },
        ),
        ("EOS not an integer", "tokenizer.ggml.eos_token_id", |m| {
            set(
                m,
                "tokenizer.ggml.eos_token_id",
                MetaValue::String("2".into()),
            );
        }),
        ("UNK negative", "tokenizer.ggml.unknown_token_id", |m| {
            set(m, "tokenizer.ggml.unknown_token_id", MetaValue::I32(-1));
        }),
        ("PAD huge", "tokenizer.ggml.padding_token_id", |m| {
            set(
                m,
                "tokenizer.ggml.padding_token_id",
                MetaValue::U64(u64::MAX),
            );
        }),
        (
            "add_bos_token not a boolean",
            "tokenizer.ggml.add_bos_token",
            |m| {
                set(m, "tokenizer.ggml.add_bos_token", MetaValue::U8(1));
            },
        ),
    ];
    for (what, names, edit) in edits {
        let mut meta = metadata();
        edit(&mut meta);
        let err = tokenizer_from(&meta).unwrap_err();
        assert_eq!(err.code, Code::TokenizerInvalid, "{what}: {err}");
        assert!(
            err.message.starts_with("edited.gguf: ") && err.message.contains(names),
            "{what}: {}",
            err.message
        );
    }

    // Loading the whole model reports the same error rather than panicking or dropping the
    // tokenizer silently. The BOS id is patched in place: key, type (u32), value.
    let mut bytes = fixture_bytes();
    let key = b"tokenizer.ggml.bos_token_id";
    let at = bytes
        .windows(key.len())
        .position(|w| w == key)
        .expect("BOS key")
        + key.len();
    assert_eq!(bytes[at..at + 4], 4u32.to_le_bytes());
    bytes[at + 4..at + 8].copy_from_slice(&100_000u32.to_le_bytes());
    let err = LoadedModel::load(files(FIXTURE, bytes), &Device::flex()).unwrap_err();
    assert_eq!(err.code, Code::TokenizerInvalid);
    assert!(
        err.message
            .contains("tokenizer.ggml.bos_token_id is 100000"),
        "{}",
        err.message
    );
}

#[test]
fn merges_are_ranked_as_transformers_ranks_them_when_scores_tie() {
    let reference = reference();
    let case = &reference["tie_merges"];
    let strings = |v: &Value| -> Vec<MetaValue> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| MetaValue::String(t.as_str().unwrap().into()))
            .collect()
    };
    let scores: Vec<MetaValue> = case["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| MetaValue::F32(s.as_f64().unwrap() as f32))
        .collect();
    let mut meta = BTreeMap::new();
    meta.insert(
        "tokenizer.ggml.model".to_string(),
        MetaValue::String("llama".into()),
    );
    meta.insert(
        "tokenizer.ggml.tokens".into(),
        MetaValue::Array(strings(&case["tokens"])),
    );
    meta.insert("tokenizer.ggml.scores".into(), MetaValue::Array(scores));
    let json = tokenizer_from(&meta).unwrap().to_json().unwrap().unwrap();
    let ours: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(ours["model"]["merges"], case["merges"]);
}

#[test]
fn repeated_and_empty_tokens_and_odd_scores_do_not_panic() {
    // A vocabulary SentencePiece would refuse but a hand-made GGUF may hold: tokens listed
    // twice, empty tokens (one of them control, one the BOS), infinite and negative-zero
    // scores. Whatever it tokenizes to, it must not panic.
    let mut meta = metadata();
    let n = 512;
    let tokens: Vec<MetaValue> = (0..n)
        .map(|i| {
            MetaValue::String(match i {
                0..=258 => format!("<0x{:02X}>", i % 256),
                259..=299 => String::new(),
                _ => "▁a".into(),
            })
        })
        .collect();
    let scores: Vec<MetaValue> = (0..n)
        .map(|i| MetaValue::F32([f32::INFINITY, -0.0, 0.0, f32::NEG_INFINITY][i % 4]))
        .collect();
    let types: Vec<MetaValue> = (0..n)
        .map(|i| MetaValue::I32(if i == 260 { 3 } else { 1 }))
        .collect();
    meta.insert("tokenizer.ggml.tokens".into(), MetaValue::Array(tokens));
    meta.insert("tokenizer.ggml.scores".into(), MetaValue::Array(scores));
    meta.insert("tokenizer.ggml.token_type".into(), MetaValue::Array(types));
    meta.insert("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(259));
    meta.insert("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(259));
    let tok = tokenizer_from(&meta).unwrap();
    let ids = tok.encode("a a 🙂").unwrap();
    tok.decode(&ids).unwrap();
}

#[test]
fn a_vocabulary_too_costly_to_derive_merges_from_is_refused_quickly() {
    // "a", "aa", … "a"×1500: every cut of every token is a merge, and looking them all up would
    // hash ~10⁹ bytes; the work limit stops it with an error instead of freezing the page.
    let n = 1500;
    let mut meta = BTreeMap::new();
    meta.insert(
        "tokenizer.ggml.model".to_string(),
        MetaValue::String("llama".into()),
    );
    meta.insert(
        "tokenizer.ggml.tokens".into(),
        MetaValue::Array((1..=n).map(|k| MetaValue::String("a".repeat(k))).collect()),
    );
    meta.insert(
        "tokenizer.ggml.scores".into(),
        MetaValue::Array((0..n).map(|i| MetaValue::F32(-(i as f32))).collect()),
    );
    let start = std::time::Instant::now();
    let err = tokenizer_from(&meta).unwrap_err();
    assert_eq!(err.code, Code::TokenizerInvalid);
    assert!(err.message.contains("merges"), "{}", err.message);
    assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
}
