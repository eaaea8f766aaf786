//! The real GPT-2 tokenizer (tests/fixtures/tokenizers/gpt2) encodes tricky strings exactly as
//! transformers does (reference: tools/reference/gpt2_tokenizer.py).

use serde_json::Value;
use webtune::io::tokenizer::Tokenizer;
use webtune::Code;

mod common;
use common::fixture;

#[test]
fn gpt2_encodes_like_transformers() {
    let bytes = std::fs::read(fixture("tokenizers/gpt2/tokenizer.json")).unwrap();
    let tokenizer = Tokenizer::from_bytes(&bytes).unwrap();
    assert_eq!(tokenizer.vocab_size(), 50257);
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("reference/gpt2_tokenizer.json")).unwrap(),
    )
    .unwrap();
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ids = tokenizer.encode(text).unwrap();
        assert_eq!(ids, expected, "case {}: {text:?}", case["name"]);
        assert_eq!(
            tokenizer.decode(&ids).unwrap(),
            case["decoded"].as_str().unwrap(),
            "decode {}",
            case["name"]
        );
    }
    assert_eq!(
        tokenizer
            .encode("Hello world, this is GPT-2's tokenizer.")
            .unwrap(),
        vec![15496, 995, 11, 428, 318, 402, 11571, 12, 17, 338, 11241, 7509, 13]
    );
}

#[test]
fn baked_in_padding_and_truncation_are_switched_off() {
    let bytes = std::fs::read(fixture("tokenizers/gpt2/tokenizer.json")).unwrap();
    let mut json: Value = serde_json::from_slice(&bytes).unwrap();
    // As all-MiniLM's tokenizer.json ships: pad and truncate everything to 8 tokens here.
    json["truncation"] = serde_json::json!({"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0});
    json["padding"] = serde_json::json!({"strategy": {"Fixed": 8}, "direction": "Right", "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "!"});
    let tokenizer = Tokenizer::from_bytes(&serde_json::to_vec(&json).unwrap()).unwrap();
    let long = "one two three four five six seven eight nine ten eleven";
    assert_eq!(tokenizer.encode(long).unwrap().len(), 11, "no truncation");
    assert_eq!(tokenizer.encode("hi").unwrap().len(), 1, "no padding");
}

#[test]
fn broken_tokenizer_json_is_a_clear_error() {
    for bad in [&b"{"[..], b"[]", b"{\"model\": 3}"] {
        let err = Tokenizer::from_bytes(bad).unwrap_err();
        assert_eq!(err.code, Code::TokenizerInvalid);
        assert!(err.message.contains("tokenizer.json"));
    }
}
