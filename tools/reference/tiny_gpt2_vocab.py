#!/usr/bin/env python3
"""A tiny random GPT-2 with the real GPT-2 vocabulary (50257 tokens), for end-to-end tests that
go from text to tokens to training: the other tiny fixtures have a 100-token vocabulary, so no
real tokenizer fits them.

Writes tests/fixtures/tiny_random/gpt2-vocab/{config.json, generation_config.json,
model.safetensors (float16, ~1.7 MB)}; tokenizer.json there is a symlink to the committed real
GPT-2 tokenizer (tests/fixtures/tokenizers/gpt2/tokenizer.json).

    /path/to/venv/bin/python tools/reference/tiny_gpt2_vocab.py
"""

import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT  # noqa: E402

import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

OUT = REPO_ROOT / "tests" / "fixtures" / "tiny_random" / "gpt2-vocab"


def main() -> None:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=50257,
        n_positions=128,
        n_embd=16,
        n_layer=2,
        n_head=2,
        bos_token_id=50256,
        eos_token_id=50256,
    )
    model = GPT2LMHeadModel(config).eval()
    OUT.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(OUT, safe_serialization=True)
    link = OUT / "tokenizer.json"
    if not link.exists():
        link.symlink_to(Path("../../tokenizers/gpt2/tokenizer.json"))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
