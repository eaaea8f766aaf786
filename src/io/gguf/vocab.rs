//! The tokenizer from `tokenizer.ggml.*` metadata: a `tokenizer.json` rebuilt for byte-level BPE
//! (`gpt2`) and SentencePiece (`llama`) vocabularies, and the chat template with its BOS/EOS
//! token strings.

use serde_json::{json, Map, Value};

use super::reader::{GgufHeader, MetaValue};
use crate::error::{Code, Error, Result};

/// The chat template a GGUF file carries (`tokenizer.chat_template`, as llama.cpp's converter
/// writes it from tokenizer_config.json) with the BOS/EOS token strings the template may insert
/// (looked up by `tokenizer.ggml.{bos,eos}_token_id` in `tokenizer.ggml.tokens`, as transformers
/// does when it loads a GGUF tokenizer). Named extra templates (`tokenizer.chat_template.<name>`)
/// are not used: transformers renders the default one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufChatTemplate {
    pub template: String,
    pub bos_token: String,
    pub eos_token: String,
}

pub fn chat_template(h: &GgufHeader) -> Option<GgufChatTemplate> {
    let template = h.get("tokenizer.chat_template")?.as_str()?.to_string();
    let tokens = h.get("tokenizer.ggml.tokens").and_then(MetaValue::as_array);
    let token = |key: &str| -> String {
        let id = h.get(key).and_then(MetaValue::as_u64);
        id.and_then(|id| tokens?.get(usize::try_from(id).ok()?)?.as_str())
            .unwrap_or_default()
            .to_string()
    };
    Some(GgufChatTemplate {
        template,
        bos_token: token("tokenizer.ggml.bos_token_id"),
        eos_token: token("tokenizer.ggml.eos_token_id"),
    })
}

/// A `tokenizer.json` for the file's vocabulary, when it is a byte-level BPE (`tokenizer.ggml.model`
/// = `gpt2`) with a pre-tokenizer webtune knows, or SentencePiece (`llama`, see
/// [`sentencepiece_json`]). `Ok(None)` when there is no vocabulary or it is of another kind.
pub fn tokenizer_json(file: &str, h: &GgufHeader) -> Result<Option<Value>> {
    let model = h.get("tokenizer.ggml.model").and_then(MetaValue::as_str);
    if model == Some("llama") {
        return sentencepiece_json(file, h).map(Some);
    }
    if model != Some("gpt2") {
        return Ok(None);
    }
    let invalid = |m: String| {
        Error::new(Code::TokenizerInvalid, format!("{file}: {m}"))
            .with_details(json!({ "file": file }))
    };
    let strings = |key: &str| -> Result<Vec<&str>> {
        let arr = h
            .get(key)
            .and_then(MetaValue::as_array)
            .ok_or_else(|| invalid(format!("{key} is missing or not an array")))?;
        arr.iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| invalid(format!("{key} holds a non-string")))
            })
            .collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = if h.get("tokenizer.ggml.merges").is_some() {
        strings("tokenizer.ggml.merges")?
    } else {
        Vec::new()
    };
    let types: Vec<u64> = h
        .get("tokenizer.ggml.token_type")
        .and_then(MetaValue::as_array)
        .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(1)).collect())
        .unwrap_or_default();
    let pre = h
        .get("tokenizer.ggml.pre")
        .and_then(MetaValue::as_str)
        .unwrap_or("gpt2");

    // llama.cpp's pre-tokenizer regexes (llama-vocab.cpp), as the Hugging Face pre-tokenizers
    // the original tokenizer.json files use (`gpt2`'s is ByteLevel's built-in one).
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let byte_level = |use_regex: bool| json!({ "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex });
    let split = |regex: &str| {
        json!({ "type": "Sequence", "pretokenizers": [
            { "type": "Split", "pattern": { "Regex": regex }, "behavior": "Isolated", "invert": false },
            byte_level(false),
        ]})
    };
    let pre_tokenizer = match pre {
        "gpt2" | "default" => byte_level(true),
        "smollm" => json!({ "type": "Sequence", "pretokenizers": [
            { "type": "Digits", "individual_digits": true },
            byte_level(true),
        ]}),
        "llama-bpe" | "llama3" => split(LLAMA3),
        "qwen2" => split(QWEN2),
        _ => return Ok(None),
    };

    let vocab: Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i.into()))
        .collect();
    // Control (3) and user-defined (4) tokens are matched whole before BPE, as llama.cpp does.
    let added: Vec<Value> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(types.get(*i), Some(3) | Some(4)))
        .map(|(i, t)| {
            json!({ "id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": false, "special": types.get(i) == Some(&3) })
        })
        .collect();
    let add_bos = h
        .get("tokenizer.ggml.add_bos_token")
        .and_then(MetaValue::as_bool)
        == Some(true);
    let bos = h
        .get("tokenizer.ggml.bos_token_id")
        .and_then(MetaValue::as_u64);
    let post_processor = match (add_bos, bos) {
        (true, Some(id)) => {
            let Some(&tok) = tokens.get(id as usize) else {
                return Err(invalid(format!(
                    "the BOS id {id} is outside the vocabulary of {}",
                    tokens.len()
                )));
            };
            json!({
                "type": "TemplateProcessing",
                "single": [{ "SpecialToken": { "id": tok, "type_id": 0 } }, { "Sequence": { "id": "A", "type_id": 0 } }],
                "pair": [{ "SpecialToken": { "id": tok, "type_id": 0 } }, { "Sequence": { "id": "A", "type_id": 0 } },
                         { "SpecialToken": { "id": tok, "type_id": 1 } }, { "Sequence": { "id": "B", "type_id": 1 } }],
                "special_tokens": { tok: { "id": tok, "ids": [id], "tokens": [tok] } },
            })
        }
        _ => Value::Null,
    };
    Ok(Some(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": { "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true },
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        },
    })))
}

// llama.cpp's token types (`tokenizer.ggml.token_type`, gguf's `TokenType`).
const TOKEN_NORMAL: u64 = 1;
const TOKEN_UNKNOWN: u64 = 2;
const TOKEN_CONTROL: u64 = 3;
const TOKEN_USER_DEFINED: u64 = 4;
const TOKEN_BYTE: u64 = 6;

/// Deriving merges looks every way of cutting a token in two up in the vocabulary, hashing the
/// token's bytes each time. Real vocabularies cost a few million bytes (GPT-2's 50k tokens
/// would cost 2.5M); a file of very long tokens could cost quadratically more, so past this it
/// is refused rather than freezing the tab.
const MERGE_WORK_LIMIT: usize = 1 << 27;

fn tokenizer_invalid(file: &str, message: String) -> Error {
    Error::new(Code::TokenizerInvalid, format!("{file}: {message}"))
        .with_details(json!({ "file": file }))
}

/// The byte a `<0xXX>` byte-fallback token stands for.
fn byte_token(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// A SentencePiece vocabulary (`tokenizer.ggml.model` = `llama`) as the tokenizer transformers
/// builds from the same file (its GGUF loader hands the pieces to `LlamaTokenizer`):
/// - a BPE model over the pieces, with the merges SentencePiece applies recovered from the
///   scores (a GGUF of this kind stores none; see [`sentencepiece_merges`]);
/// - byte fallback: a character the vocabulary lacks becomes its UTF-8 bytes as `<0xXX>` tokens;
/// - spaces as "▁", with one put in front of the text (`Metaspace`, prepend "first") unless
///   `tokenizer.ggml.add_space_prefix` is false, and taken off again when decoding;
/// - control tokens and the BOS/EOS/UNK/PAD tokens matched whole in the text as special tokens,
///   user-defined ones as plain added tokens;
/// - BOS (default on) and EOS (default off) added as `add_bos_token` / `add_eos_token` say.
///
/// transformers 5.24 ignores `add_space_prefix = false` (its Llama tokenizer always prepends);
/// webtune follows SentencePiece and llama.cpp there, since that is how such a model was
/// trained. Inconsistent metadata (lengths that differ, a byte token missing, a special id
/// outside the vocabulary, NaN scores) is an error naming the key.
fn sentencepiece_json(file: &str, h: &GgufHeader) -> Result<Value> {
    use std::collections::{HashMap, HashSet};

    let invalid = |m: String| tokenizer_invalid(file, m);
    let array = |key: &str| -> Result<&[MetaValue]> {
        h.get(key)
            .and_then(MetaValue::as_array)
            .ok_or_else(|| invalid(format!("{key} is missing or not an array")))
    };
    let tokens = array("tokenizer.ggml.tokens")?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .ok_or_else(|| invalid(format!("tokenizer.ggml.tokens[{i}] is not a string")))
        })
        .collect::<Result<Vec<&str>>>()?;
    let n = tokens.len();
    if n == 0 {
        return Err(invalid("tokenizer.ggml.tokens is empty".into()));
    }
    let same_length = |key: &str, len: usize| {
        if len == n {
            Ok(())
        } else {
            Err(invalid(format!(
                "{key} has {len} entries for {n} tokens in tokenizer.ggml.tokens"
            )))
        }
    };
    let scores_meta = array("tokenizer.ggml.scores")?;
    same_length("tokenizer.ggml.scores", scores_meta.len())?;
    let scores = scores_meta
        .iter()
        .enumerate()
        .map(|(i, v)| match v.as_f64() {
            Some(s) if !s.is_nan() => Ok(s),
            _ => Err(invalid(format!(
                "tokenizer.ggml.scores[{i}] is not a number"
            ))),
        })
        .collect::<Result<Vec<f64>>>()?;
    let types = match h.get("tokenizer.ggml.token_type") {
        None => vec![TOKEN_NORMAL; n],
        Some(_) => {
            let meta = array("tokenizer.ggml.token_type")?;
            same_length("tokenizer.ggml.token_type", meta.len())?;
            meta.iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_u64().ok_or_else(|| {
                        invalid(format!(
                            "tokenizer.ggml.token_type[{i}] is not a token type"
                        ))
                    })
                })
                .collect::<Result<Vec<u64>>>()?
        }
    };

    // Where a token is listed twice the later id wins, as in transformers' vocabulary dict.
    let id_of: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, &t)| (t, i)).collect();
    let special_id = |key: &str| -> Result<Option<usize>> {
        let Some(v) = h.get(key) else {
            return Ok(None);
        };
        match v.as_u64() {
            Some(id) if id < n as u64 => Ok(Some(id_of[tokens[id as usize]])),
            Some(id) => Err(invalid(format!(
                "{key} is {id}, outside the vocabulary of {n} tokens"
            ))),
            None => Err(invalid(format!(
                "{key} is not a token id (a non-negative integer)"
            ))),
        }
    };
    let bos = special_id("tokenizer.ggml.bos_token_id")?;
    let eos = special_id("tokenizer.ggml.eos_token_id")?;
    let unk = special_id("tokenizer.ggml.unknown_token_id")?;
    let pad = special_id("tokenizer.ggml.padding_token_id")?;
    let flag = |key: &str, default: bool| match h.get(key) {
        None => Ok(default),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| invalid(format!("{key} is not a boolean"))),
    };
    let add_bos = flag("tokenizer.ggml.add_bos_token", true)?;
    let add_eos = flag("tokenizer.ggml.add_eos_token", false)?;
    let space_prefix = flag("tokenizer.ggml.add_space_prefix", true)?;

    // Byte fallback needs all 256 byte tokens, spelled as `tokenizers` looks them up; a
    // vocabulary with some but not all of them is corrupt (SentencePiece adds all or none).
    for (i, (&t, &ty)) in tokens.iter().zip(&types).enumerate() {
        if ty == TOKEN_BYTE && byte_token(t).is_none() {
            return Err(invalid(format!(
                "token {i} ({t:?}) is marked as a byte token but is not of the form <0xXX>"
            )));
        }
    }
    let has_byte = |b: u8| id_of.contains_key(format!("<0x{b:02X}>").as_str());
    let byte_fallback = (0..=255).any(has_byte) || types.contains(&TOKEN_BYTE);
    if byte_fallback {
        if let Some(b) = (0..=255).find(|&b| !has_byte(b)) {
            return Err(invalid(format!(
                "the vocabulary has byte tokens but lacks <0x{b:02X}>, so text it cannot spell \
                 would lose characters"
            )));
        }
    }

    let vocab: Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| (t.to_string(), i.into()))
        .collect();
    let merges: Vec<Value> = sentencepiece_merges(file, &tokens, &scores, &id_of)?
        .into_iter()
        .map(|(l, r)| json!([l, r]))
        .collect();

    // The named special tokens and control tokens are special; user-defined ones are matched
    // whole but decoded like text. An empty token cannot be matched in text and is left out.
    let named: HashSet<usize> = [bos, eos, unk, pad].into_iter().flatten().collect();
    let added: Vec<Value> = tokens
        .iter()
        .enumerate()
        .filter(|&(i, t)| !t.is_empty() && id_of[t] == i)
        .filter_map(|(i, &t)| {
            let special = types[i] == TOKEN_CONTROL || named.contains(&i);
            (special || types[i] == TOKEN_USER_DEFINED).then(|| {
                json!({ "id": i, "content": t, "single_word": false, "lstrip": false,
                        "rstrip": false, "normalized": false, "special": special })
            })
        })
        .collect();

    // transformers' post-processor: `<s>:0 $A:0 </s>:0`, and for pairs the same again with
    // type id 1, each special token only when its add_*_token flag is on.
    let bos = bos.filter(|_| add_bos).map(|id| (tokens[id], id));
    let eos = eos.filter(|_| add_eos).map(|id| (tokens[id], id));
    let piece = |(t, _): (&str, usize), type_id: u32| json!({ "SpecialToken": { "id": t, "type_id": type_id } });
    let sequence =
        |name: &str, type_id: u32| json!({ "Sequence": { "id": name, "type_id": type_id } });
    let side = |name: &str, type_id: u32| -> Vec<Value> {
        bos.map(|b| piece(b, type_id))
            .into_iter()
            .chain([sequence(name, type_id)])
            .chain(eos.map(|e| piece(e, type_id)))
            .collect()
    };
    let single = side("A", 0);
    let pair: Vec<Value> = single.iter().cloned().chain(side("B", 1)).collect();
    let special_tokens: Map<String, Value> = bos
        .into_iter()
        .chain(eos)
        .map(|(t, id)| {
            (
                t.to_string(),
                json!({ "id": t, "ids": [id], "tokens": [t] }),
            )
        })
        .collect();

    let mut decoders = vec![
        json!({ "type": "Replace", "pattern": { "String": "▁" }, "content": " " }),
        json!({ "type": "ByteFallback" }),
        json!({ "type": "Fuse" }),
    ];
    if space_prefix {
        decoders.push(json!({ "type": "Strip", "content": " ", "start": 1, "stop": 0 }));
    }
    // Only matters when there is no byte fallback: an unknown character becomes this token
    // (SentencePiece's behaviour) instead of vanishing.
    let unk_token = unk
        .or_else(|| types.iter().position(|&t| t == TOKEN_UNKNOWN))
        .map(|id| tokens[id]);
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": { "type": "Metaspace", "replacement": "▁", "split": false,
                           "prepend_scheme": if space_prefix { "first" } else { "never" } },
        "post_processor": { "type": "TemplateProcessing", "single": single, "pair": pair,
                            "special_tokens": special_tokens },
        "decoder": { "type": "Sequence", "decoders": decoders },
        "model": {
            "type": "BPE", "dropout": null, "unk_token": unk_token, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": byte_fallback,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    }))
}

/// The BPE merges a SentencePiece vocabulary implies, in the order transformers derives them
/// (`generate_merges` in tokenization_utils_base.py), so that both tokenize alike: every way
/// of cutting a token into two tokens is a merge ranked by the whole token's score, best first;
/// ties go to the longer left piece, then the longer right piece, then to the order of the
/// tokens in the file and of the pieces' ids. SentencePiece's BPE joins the adjacent pair
/// whose union scores highest, which this ranking reproduces up to ties.
fn sentencepiece_merges<'a>(
    file: &str,
    tokens: &[&'a str],
    scores: &[f64],
    id_of: &std::collections::HashMap<&str, usize>,
) -> Result<Vec<(&'a str, &'a str)>> {
    use std::collections::{HashMap, HashSet};

    struct Merge<'a> {
        left: &'a str,
        right: &'a str,
        score: f64,
        left_chars: usize,
        right_chars: usize,
    }
    // Python's dict(zip(tokens, scores)): a repeated token keeps its first place and its last
    // score. Adding 0.0 turns -0.0 into 0.0, which Python compares as equal.
    let mut score_of: HashMap<&str, f64> = HashMap::new();
    for (&t, &s) in tokens.iter().zip(scores) {
        score_of.insert(t, s + 0.0);
    }
    // A cut can only give two tokens if both sides have lengths some token has.
    let lengths: HashSet<usize> = tokens.iter().map(|t| t.len()).collect();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut work = 0usize;
    let mut merges: Vec<Merge<'a>> = Vec::new();
    for &token in tokens {
        if !seen.insert(token) {
            continue;
        }
        let score = score_of[token];
        let mut local: Vec<(usize, usize, Merge<'a>)> = Vec::new();
        for (at, _) in token.char_indices().skip(1) {
            if !lengths.contains(&at) || !lengths.contains(&(token.len() - at)) {
                continue;
            }
            work += token.len();
            if work > MERGE_WORK_LIMIT {
                return Err(tokenizer_invalid(
                    file,
                    "the vocabulary's tokens are too long and too many to derive its merges from"
                        .into(),
                ));
            }
            let (left, right) = token.split_at(at);
            if let (Some(&l), Some(&r)) = (id_of.get(left), id_of.get(right)) {
                let merge = Merge {
                    left,
                    right,
                    score,
                    left_chars: left.chars().count(),
                    right_chars: right.chars().count(),
                };
                local.push((l, r, merge));
            }
        }
        local.sort_by_key(|&(l, r, _)| (l, r));
        merges.extend(local.into_iter().map(|(_, _, m)| m));
    }
    // Stable: equal keys keep the order above, as Python's sorted(…, reverse=True) does.
    merges.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.left_chars.cmp(&a.left_chars))
            .then(b.right_chars.cmp(&a.right_chars))
    });
    Ok(merges.into_iter().map(|m| (m.left, m.right)).collect())
}
