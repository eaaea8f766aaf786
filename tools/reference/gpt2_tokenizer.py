#!/usr/bin/env python3
"""Reference encodings of the GPT-2 byte-level BPE tokenizer.

Loads shared/tokenizers/gpt2/tokenizer.json twice — with transformers'
`PreTrainedTokenizerFast(tokenizer_file=...)` and with the `tokenizers` library directly —
encodes a list of tricky strings, asserts that both agree (ids, tokens, decoded text) and
writes tests/fixtures/reference/gpt2_tokenizer.json.

    /path/to/venv/bin/python tools/reference/gpt2_tokenizer.py [--shared ../shared]

Exits non-zero on any disagreement between the libraries or with the known GPT-2 ids.
"""

import argparse
import hashlib
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_SHARED, REPO_ROOT, generated_by, require, write_json  # noqa: E402

import tokenizers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

ENDOFTEXT = "<|endoftext|>"


def long_string() -> str:
    """A deterministic 1000-character string: prose, numbers, punctuation, accents, emoji."""
    unit = (
        "The quick brown fox jumps over the lazy dog; 1234567 sheep, café & naïve résumé. "
        "\u201cQuoted\u201d \u2014 it's 3.14! \U0001F980 Rust\tand\nnew lines.  Two spaces. "
    )
    s = (unit * (1000 // len(unit) + 1))[:1000]
    assert len(s) == 1000
    return s


# (name, text). Names are stable keys for tests.
CASES = [
    ("empty", ""),
    ("single_space", " "),
    ("only_spaces", "   "),
    ("leading_spaces", "   leading spaces"),
    ("trailing_spaces", "trailing spaces   "),
    ("multiple_spaces", "multiple     spaces  between   words"),
    ("tabs", "col1\tcol2\t\tcol3\t"),
    ("newline", "line one\nline two"),
    ("crlf", "windows\r\nline\r\nendings\r\n"),
    ("blank_lines", "para one\n\npara two\n\n\nend\n"),
    ("mixed_whitespace", " \n \t\n  x  \n"),
    ("unicode_spaces", "a\u00a0b\u2003c\u3000d"),
    ("hello_world", "Hello world, this is GPT-2's tokenizer."),
    ("contractions", "it's don't they're we've I'm you'll he'd"),
    ("contractions_upper", "IT'S DON'T THEY'RE WE'VE I'M YOU'LL HE'D Tom'S"),
    ("apostrophes", "'s 't 're 've 'm 'll 'd '' ' x 'tis rock 'n' roll"),
    ("digits", "0 1 12 123 1234 12345 3.14159 -42 2024-01-01 1,000,000 $9.99 50%"),
    ("long_number", "12345678901234567890123456789"),
    ("punctuation_runs", "Wait... what?!?! (yes) [no] {maybe} --- *** !!! ??? ;; ::"),
    ("emoji", "I \u2764\ufe0f Rust \U0001F980 and \U0001F680\U0001F680\U0001F680"),
    (
        "emoji_zwj",
        "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466 family, "
        "\U0001F3F3\ufe0f\u200d\U0001F308 flag, \U0001F44D\U0001F3FD thumbs",
    ),
    ("accented_latin", "Café naïve résumé façade Ångström Zürich São Paulo Łódź"),
    ("cjk", "你好，世界！日本語のテキスト。한국어 텍스트"),
    ("arabic", "مرحبا بالعالم، كيف حالك؟"),
    ("combining_marks", "e\u0301 a\u0308 n\u0303 Z\u0351\u0325\u0332 \u00e9 vs e\u0301"),
    ("endoftext_alone", ENDOFTEXT),
    ("endoftext_in_text", f"First document.{ENDOFTEXT}Second document."),
    ("url", "https://example.com/path/to/page?query=1&b=two#frag <a href=\"x\">link</a>"),
    ("rust_code", 'fn main() {\n    let name = "world";\n    println!("Hello, {}!", name);\n}\n'),
    ("python_code", "def f(x):\n    if x > 0:\n        return x ** 2  # square\n    return -x\n"),
    ("control_chars", "a\u0000b\u0007c\u001bd"),
    ("long_1000_chars", long_string()),
]

# Ids known independently of this file (GPT-2 vocabulary facts); checked to catch a wrong file.
KNOWN = {
    "Hello world, this is GPT-2's tokenizer.": [15496, 995, 11, 428, 318, 402, 11571, 12, 17, 338, 11241, 7509, 13],
    " ": [220],
    "\n": [198],
    "\n\n": [628],
    ENDOFTEXT: [27, 91, 437, 1659, 5239, 91, 29],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help=f"shared/ directory (default {DEFAULT_SHARED})")
    args = ap.parse_args()
    path = (args.shared / "tokenizers" / "gpt2" / "tokenizer.json").resolve()
    require(path.is_file(), f"missing {path}")

    hf = PreTrainedTokenizerFast(tokenizer_file=str(path))
    tk = tokenizers.Tokenizer.from_file(str(path))
    require(tk.get_vocab_size(with_added_tokens=True) == 50257, "vocab size is not 50257")
    require(hf.all_special_ids == [], f"transformers registered special tokens: {hf.all_special_ids}")
    require(hf.clean_up_tokenization_spaces is False, "clean_up_tokenization_spaces is on")

    def encode_both(text: str, hf_tok, tk_tok):
        a = hf_tok.encode(text, add_special_tokens=False)
        a2 = hf_tok.encode(text, add_special_tokens=True)
        enc = tk_tok.encode(text)
        require(a == a2, f"{text!r}: add_special_tokens changes ids {a} vs {a2}")
        require(a == enc.ids, f"{text!r}: transformers {a} != tokenizers {enc.ids}")
        require(hf_tok.convert_ids_to_tokens(a) == enc.tokens, f"{text!r}: token strings differ")
        d1 = hf_tok.decode(a)
        d2 = tk_tok.decode(a, skip_special_tokens=False)
        require(d1 == d2, f"{text!r}: decodes differ {d1!r} vs {d2!r}")
        return a, enc.tokens, d1

    for text, ids in KNOWN.items():
        got, _, _ = encode_both(text, hf, tk)
        require(got == ids, f"{text!r}: expected {ids}, got {got}")

    cases = []
    for name, text in CASES:
        ids, toks, decoded = encode_both(text, hf, tk)
        require(decoded == text, f"{name}: round trip failed: {decoded!r}")
        cases.append(
            {
                "name": name,
                "text": text,
                "n_chars": len(text),
                "n_utf8_bytes": len(text.encode("utf-8")),
                "ids": ids,
                "tokens": toks,
                "decoded": decoded,
                "round_trip": decoded == text,
            }
        )
        shown = ids if len(ids) <= 12 else ids[:12] + ["..."]
        print(f"  {name:20s} {len(ids):4d} ids {shown}")

    # "<|endoftext|>" when it is registered as a special token, as Hugging Face's own gpt2
    # tokenizer does (bos = eos = unk = "<|endoftext|>"). Same in both libraries.
    hf_sp = PreTrainedTokenizerFast(
        tokenizer_file=str(path), bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, unk_token=ENDOFTEXT
    )
    tk_sp = tokenizers.Tokenizer.from_file(str(path))
    tk_sp.add_special_tokens([tokenizers.AddedToken(ENDOFTEXT, special=True, normalized=False)])
    special = []
    for name, text in CASES:
        if ENDOFTEXT not in text:
            continue
        ids, toks, decoded = encode_both(text, hf_sp, tk_sp)
        skipped = hf_sp.decode(ids, skip_special_tokens=True)
        require(skipped == tk_sp.decode(ids, skip_special_tokens=True), f"{name}: skip decode differs")
        special.append({"name": name, "text": text, "ids": ids, "tokens": toks, "decoded": decoded,
                         "decoded_skip_special_tokens": skipped})
    require(hf_sp.eos_token_id == 50256, f"eos id {hf_sp.eos_token_id}")
    require(special[0]["ids"] == [50256], f"special endoftext -> {special[0]['ids']}")
    split = PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token=ENDOFTEXT, split_special_tokens=True)
    split_ids = split.encode(ENDOFTEXT)
    require(split_ids == KNOWN[ENDOFTEXT], f"split_special_tokens gives {split_ids}")

    default_eot = next(c for c in cases if c["name"] == "endoftext_alone")["ids"]
    out = {
        "generated_by": generated_by("gpt2_tokenizer.py"),
        "tokenizer": "shared/tokenizers/gpt2/tokenizer.json",
        "tokenizer_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "vocab_size": tk.get_vocab_size(with_added_tokens=True),
        "notes": [
            "ids/tokens/decoded are identical from transformers.PreTrainedTokenizerFast(tokenizer_file=...) "
            "(in transformers 5 an alias of TokenizersBackend) and tokenizers.Tokenizer.from_file; the script "
            "asserts it. add_special_tokens=True and False give the same ids (the ByteLevel post-processor adds nothing).",
            "tokens are the byte-level BPE strings (bytes mapped to printable code points, e.g. space -> 'Ġ', '\\n' -> 'Ċ').",
            "decoded = decode(ids) with skip_special_tokens=False; transformers' clean_up_tokenization_spaces is False "
            "for this tokenizer, so every case round-trips exactly.",
            "No normalizer: precomposed 'é' (U+00E9) and 'e'+U+0301 encode differently.",
            f"The file has an empty added_tokens list, so by default '{ENDOFTEXT}' is ordinary text in BOTH libraries: "
            f"{default_eot}. Token 50256 exists in the vocab ('{ENDOFTEXT}') and decode([50256]) gives '{ENDOFTEXT}'. "
            "Only when '<|endoftext|>' is registered as a special token (PreTrainedTokenizerFast(..., eos_token=...), "
            "as HF's own gpt2 tokenizer does, or tokenizers' add_special_tokens) does the text map to 50256: see "
            "endoftext_registered_special. With split_special_tokens=True it is split again into the BPE pieces.",
        ],
        "endoftext": {
            "token": ENDOFTEXT,
            "vocab_id": 50256,
            "default_ids": default_eot,
            "registered_special_ids": special[0]["ids"],
            "registered_special_split_special_tokens_ids": split_ids,
        },
        "cases": cases,
        "endoftext_registered_special": special,
    }
    write_json("gpt2_tokenizer.json", out, indent=1)

    # If the repository carries its own copy of the tokenizer, it must tokenize identically.
    repo_copy = REPO_ROOT / "tests" / "fixtures" / "tokenizers" / "gpt2" / "tokenizer.json"
    if repo_copy.is_file():
        rc = tokenizers.Tokenizer.from_file(str(repo_copy))
        for c in cases:
            require(rc.encode(c["text"]).ids == c["ids"], f"repo copy differs on {c['name']}")
        print(f"  repo copy {repo_copy.relative_to(REPO_ROOT)} tokenizes identically")


if __name__ == "__main__":
    main()
