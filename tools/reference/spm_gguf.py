#!/usr/bin/env python3
"""A SentencePiece (`tokenizer.ggml.model = "llama"`) vocabulary in a tiny GGUF, and how
sentencepiece and transformers tokenize with it.

Trains a small SentencePiece BPE model the way Llama's was set up (byte fallback, identity
normalisation, whitespace kept, dummy prefix, digits split; <unk>/<s>/</s> = 0/1/2) on a text
generated here, and stores its vocabulary in a GGUF file exactly as llama.cpp's
convert_hf_to_gguf.py (`_set_vocab_sentencepiece` + `gguf.SpecialVocab`) writes one: tokens,
scores, token types (byte tokens included), bos/eos/unk ids, add_bos_token / add_eos_token. It
also writes `add_space_prefix = true`, which llama.cpp's Llama converter leaves out (true is the
default everywhere), so the key is exercised. The file holds a loadable 1-layer Llama (hidden 8,
random weights) so that tests can go through the whole model-loading path.

Writes (small, committed):
  tests/fixtures/tiny_gguf/tiny_spm_vocab.gguf   the vocabulary (512 tokens) and the tiny model
  tests/fixtures/reference/spm_gguf.json         per test string: the ids sentencepiece gives
                                                 (with BOS, as llama.cpp adds it) and the ids,
                                                 tokens and decoded text of transformers'
                                                 tokenizer loaded from the GGUF
                                                 (AutoTokenizer.from_pretrained(dir, gguf_file=)),
                                                 and where the two disagree. webtune's target is
                                                 transformers (what a user fine-tuning with
                                                 transformers gets).

`--check-export DIR` instead loads DIR/tokenizer.json (the tokenizer.json webtune exports for a
GGUF base, left in target/tmp/gguf_spm_export/ by `cargo test -p webtune --test gguf_spm`) in
transformers, both as a bare `tokenizers` file and through AutoTokenizer with a Llama
config.json, and checks it tokenizes and decodes every reference string as transformers does
from the GGUF. It writes nothing.

    /work/venv-ref/bin/python tools/reference/spm_gguf.py
    /work/venv-ref/bin/python tools/reference/spm_gguf.py --check-export target/tmp/gguf_spm_export
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, require, write_json  # noqa: E402  (sets HF_HUB_OFFLINE first)

import numpy as np  # noqa: E402

GGUF_PATH = REPO_ROOT / "tests/fixtures/tiny_gguf/tiny_spm_vocab.gguf"
REF_NAME = "spm_gguf.json"
VOCAB_SIZE = 512

# The strings every tokenizer is compared on.
CASES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    " leading space",
    "trailing space ",
    "  two leading spaces",
    "repeated    spaces   inside",
    "line one\nline two\n\nline four",
    "\nstarts with a newline",
    "tabs\tand\ttabs",
    "Café, résumé, naïve façade; déjà vu in Zürich",
    "東京は日本の首都です。",
    "未知的汉字",
    "emoji 🙂 and 👍🏽 need bytes",
    "a literal <s> and </s> in text",
    "<unk>",
    "",
    " ",
    "digits 0123456789 and 3.14159",
]


def corpus() -> list[str]:
    """A deterministic training text: English sentences built from word lists, plus accented
    words, a little Japanese, indented code and numbers, so that merges of every kind form."""
    subjects = ["the quick brown fox", "a lazy dog", "Hello world", "my friend", "the teacher", "our model"]
    verbs = ["jumps over", "reads", "writes about", "tokenizes", "learns from", "looks at"]
    objects = ["the lazy dog", "a long sentence", "the world", "some text", "every token", "the river bank"]
    lines = []
    for i, s in enumerate(subjects):
        for j, v in enumerate(verbs):
            for k, o in enumerate(objects):
                line = f"{s} {v} {o}."
                lines.append(line[0].upper() + line[1:] if (i + j + k) % 2 else line)
    lines += [
        "Café résumé naïve façade déjà vu.",
        "Zürich, São Paulo and Kraków are cities.",
        "Crème brûlée in the café is très bien.",
        "東京は日本の首都です。",
        "日本の東京に行きます。",
        "    return x + 1",
        "\tif (a < b) {",
        "        print(value)",
        "In 1999 there were 42 cats and 7 dogs.",
        "Call 555 0123 or 2024 at 10:30.",
        "line one  and  line two   with spaces",
    ]
    return lines * 3


def train():
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()),
        model_writer=model,
        model_type="bpe",
        vocab_size=VOCAB_SIZE,
        byte_fallback=True,
        # Llama's trainer settings: no normalisation, whitespace kept as is, a dummy prefix.
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def token_types(sp) -> list[int]:
    """gguf.TokenType as convert_hf_to_gguf.py's _create_vocab_sentencepiece assigns them."""
    types = []
    for i in range(sp.vocab_size()):
        if sp.is_unknown(i):
            types.append(2)
        elif sp.is_control(i):
            types.append(3)
        elif sp.is_unused(i):
            types.append(5)
        elif sp.is_byte(i):
            types.append(6)
        else:
            types.append(1)
    return types


def write_gguf(path: Path, sp, add_space_prefix: bool = True) -> None:
    import gguf

    hidden, heads, ff = 8, 2, 16
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-spm-llama")
    w.add_context_length(64)
    w.add_embedding_length(hidden)
    w.add_block_count(1)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_rope_dimension_count(hidden // heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_vocab_size(sp.vocab_size())
    # _set_vocab_sentencepiece, then SpecialVocab.add_to_gguf with Llama 2's tokenizer_config.
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list([sp.id_to_piece(i).encode("utf-8") for i in range(sp.vocab_size())])
    w.add_token_scores([sp.get_score(i) for i in range(sp.vocab_size())])
    w.add_token_types(token_types(sp))
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(add_space_prefix)
    rng = np.random.default_rng(0)

    def t(*shape):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    w.add_tensor("token_embd.weight", t(sp.vocab_size(), hidden))  # tied: no output.weight
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(hidden, np.float32))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(hidden, np.float32))
    for name in ["attn_q", "attn_k", "attn_v", "attn_output"]:
        w.add_tensor(f"blk.0.{name}.weight", t(hidden, hidden))
    w.add_tensor("blk.0.ffn_gate.weight", t(ff, hidden))
    w.add_tensor("blk.0.ffn_up.weight", t(ff, hidden))
    w.add_tensor("blk.0.ffn_down.weight", t(hidden, ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def hf_tokenizer(gguf_path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)


def without_dummy_prefix(model: bytes):
    """The same model with `add_dummy_prefix` off: what add_space_prefix = false means to
    sentencepiece (and llama.cpp)."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(model)
    proto.normalizer_spec.add_dummy_prefix = False
    return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


def tie_merges() -> dict:
    """Merges transformers derives (the function its GGUF loader calls) for a vocabulary whose
    scores tie, with -0.0 next to 0.0 and a token listed twice: the orderings the trained fixture
    never exercises (its scores are all distinct)."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import get_merges

    tokens = ["<unk>", "<s>", "</s>", "a", "b", "c", "ab", "bc", "abc", "ca", "cab", "abca", "b", "aa", "aaa",
              "▁", "▁a", "▁ab", "▁abc", "bca", "cabc"]
    scores = [0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -5.0, -5.0, -4.0, -0.0, 0.0, -4.0, -7.0, -5.0, -5.0,
              -1.0, -6.0, -6.0, -6.0, -0.0, -4.0]
    merges = get_merges({"tokens": tokens, "scores": scores})
    return {"tokens": tokens, "scores": scores, "merges": [list(m) for m in merges]}


def generate() -> int:
    import gguf
    import sentencepiece as spm
    import tokenizers
    import transformers

    model = train()
    sp = spm.SentencePieceProcessor(model_proto=model)
    require(sp.vocab_size() == VOCAB_SIZE, f"vocab {sp.vocab_size()} != {VOCAB_SIZE}")
    require(all(sp.is_byte(3 + b) and sp.id_to_piece(3 + b) == f"<0x{b:02X}>" for b in range(256)), "byte pieces")
    GGUF_PATH.parent.mkdir(parents=True, exist_ok=True)
    write_gguf(GGUF_PATH, sp)
    size = GGUF_PATH.stat().st_size
    require(size < 100_000, f"{GGUF_PATH.name} is {size} bytes")
    print(f"wrote {GGUF_PATH.relative_to(REPO_ROOT)} ({size:,} bytes)")

    tok = hf_tokenizer(GGUF_PATH)
    cases = []
    for text in CASES:
        sp_ids = [sp.bos_id()] + sp.encode(text)
        ids = tok(text)["input_ids"]
        case = {
            "text": text,
            "ids": ids,
            "tokens": tok.convert_ids_to_tokens(ids),
            "ids_no_special": tok(text, add_special_tokens=False)["input_ids"],
            "decoded": tok.decode(ids),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
            "sentencepiece_ids": sp_ids,
            "sentencepiece_decoded": sp.decode(sp_ids),
            "agree": sp_ids == ids,
        }
        cases.append(case)

    # add_space_prefix = false: transformers ignores the key (its Llama tokenizer always adds
    # the prefix); sentencepiece without a dummy prefix is what the model was trained with.
    with tempfile.TemporaryDirectory() as tmp:
        off = Path(tmp) / "no_prefix.gguf"
        write_gguf(off, sp, add_space_prefix=False)
        tok_off = hf_tokenizer(off)
        sp_off = without_dummy_prefix(model)
        no_prefix = []
        for text in CASES:
            if "<" in text:
                continue  # literal special tokens: a separate disagreement, shown above
            ids = [sp.bos_id()] + sp_off.encode(text)
            no_prefix.append(
                {
                    "text": text,
                    "sentencepiece_ids": ids,
                    "sentencepiece_decoded": sp_off.decode(ids),
                    "transformers_ids": tok_off(text)["input_ids"],
                }
            )
    require(
        any(c["sentencepiece_ids"] != c["transformers_ids"] for c in no_prefix),
        "transformers now honours add_space_prefix = false: update the notes",
    )

    disagree = [c["text"] for c in cases if not c["agree"]]
    # The backend tokenizer transformers built, less its vocabulary (the GGUF's tokens in order).
    backend = json.loads(tok.backend_tokenizer.to_str())
    pieces = [sp.id_to_piece(i) for i in range(VOCAB_SIZE)]
    require(backend["model"]["vocab"] == {t: i for i, t in enumerate(pieces)}, "vocab is the GGUF's tokens")
    del backend["model"]["vocab"]
    ref = {
        "generated_by": {
            "script": "tools/reference/spm_gguf.py",
            "python": sys.version.split()[0],
            "sentencepiece": spm.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "gguf": gguf.__version__ if hasattr(gguf, "__version__") else "0.19.0",
        },
        "gguf": {
            "file": "tiny_gguf/tiny_spm_vocab.gguf",
            "sha256": hashlib.sha256(GGUF_PATH.read_bytes()).hexdigest(),
            "vocab_size": sp.vocab_size(),
            "bos_id": sp.bos_id(),
            "eos_id": sp.eos_id(),
            "unk_id": sp.unk_id(),
        },
        "notes": [
            "ids: transformers' tokenizer loaded from the GGUF, tok(text) (BOS added); this is webtune's target.",
            "sentencepiece_ids: [bos] + SentencePieceProcessor.encode(text), as llama.cpp tokenizes.",
            "Disagreements (agree = false): (1) text starting with spaces: sentencepiece adds its "
            "dummy prefix to every text ('  two' -> three U+2581), transformers' Metaspace only when "
            "the text does not already start with one (two U+2581), so sentencepiece has one more "
            "token; (2) '<s>', '</s>', '<unk>' written in the text: transformers matches them as "
            "special tokens (one id), sentencepiece encodes the characters.",
            "decoded: tok.decode(ids), special tokens kept; decoded_skip_special: "
            "skip_special_tokens=True.",
            "transformers_tokenizer: tok.backend_tokenizer as tokenizer.json, without the vocabulary "
            "(the GGUF's tokens, id = position); its merges are the ones derived from the scores.",
            "tie_merges: transformers' merges for a made-up vocabulary with tied scores, -0.0 and a "
            "repeated token (tokens and scores as a GGUF would list them).",
            "no_prefix: the same vocabulary with add_space_prefix = false. transformers 5.24 ignores "
            "the key (transformers_ids keep the prefix); webtune follows sentencepiece and llama.cpp "
            "there (no prefix) and is tested against sentencepiece_ids.",
        ],
        "disagree": disagree,
        "cases": cases,
        "no_prefix": no_prefix,
        "transformers_tokenizer": backend,
        "tie_merges": tie_merges(),
    }
    write_json(REF_NAME, ref, indent=1)
    print(f"sentencepiece and transformers disagree on {len(disagree)} of {len(cases)} strings: {disagree}")
    return 0


def check_export(d: Path) -> int:
    """Load webtune's exported tokenizer.json in transformers and compare with the reference."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    ref = json.loads((REPO_ROOT / "tests/fixtures/reference" / REF_NAME).read_text(encoding="utf-8"))
    path = d / "tokenizer.json"
    require(path.is_file(), f"{path} is missing: run `cargo test -p webtune --test gguf_spm` first")
    with tempfile.TemporaryDirectory() as tmp:
        # As a fine-tuned export: tokenizer.json next to a Llama config.json.
        shutil.copy(path, Path(tmp) / "tokenizer.json")
        (Path(tmp) / "config.json").write_text(json.dumps({"model_type": "llama"}))
        loaded = {
            "tokenizer_file": PreTrainedTokenizerFast(tokenizer_file=str(path)),
            "AutoTokenizer": AutoTokenizer.from_pretrained(tmp),
        }
        for how, tok in loaded.items():
            for c in ref["cases"]:
                ids = tok(c["text"])["input_ids"]
                require(ids == c["ids"], f"{how}: {c['text']!r}: {ids} != {c['ids']}")
                got = tok.decode(ids)
                require(got == c["decoded"], f"{how}: {c['text']!r} decodes to {got!r}, not {c['decoded']!r}")
            print(f"{how}: {type(tok).__name__} matches all {len(ref['cases'])} cases")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check-export", metavar="DIR", help="check DIR/tokenizer.json instead of generating")
    args = ap.parse_args()
    if args.check_export:
        return check_export(Path(args.check_export))
    return generate()


if __name__ == "__main__":
    sys.exit(main())
