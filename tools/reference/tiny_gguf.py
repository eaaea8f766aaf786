#!/usr/bin/env python3
"""Convert the tiny Llama fixture to GGUF, as llama.cpp's convert_hf_to_gguf.py would, and write
reference dequantised values computed by the `gguf` package's own `quants.dequantize`.

Writes (all small, committed):
  tests/fixtures/tiny_gguf/tiny_llama_f32.gguf    every tensor F32 (exact: tests the layout, the
                                                  metadata → config mapping and the Q/K un-permute)
  tests/fixtures/tiny_gguf/tiny_llama_mixed.gguf  Q8_0 / Q4_1 / Q4_0 / F16 / F32 weights, plus a
                                                  few extra random tensors in every other type
                                                  webtune reads (Q5_0, Q5_1, Q4_K, Q5_K, Q6_K,
                                                  BF16); llama.cpp ignores unknown tensor names
  tests/fixtures/reference/tiny_gguf.json         dequantised values of chosen tensors, by
                                                  llama.cpp name, exactly as stored (permuted)

Needs only numpy, safetensors and gguf (no torch):
  python3 -m venv /work/venv-gguf && /work/venv-gguf/bin/pip install gguf numpy safetensors
  /work/venv-gguf/bin/python tools/reference/tiny_gguf.py
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

import gguf
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize, quantize

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "tests/fixtures/tiny_random/llama"
OUT_DIR = ROOT / "tests/fixtures/tiny_gguf"
REF = ROOT / "tests/fixtures/reference/tiny_gguf.json"


def permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: rotate-half rows → interleaved pairs."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(hf: str) -> str:
    if hf in HF_TO_GGUF:
        return HF_TO_GGUF[hf]
    parts = hf.split(".")
    assert parts[0] == "model" and parts[1] == "layers", hf
    return f"blk.{parts[2]}.{LAYER['.'.join(parts[3:])]}"


# Mixed file: the type each tensor gets (the rest stay F32, as llama.cpp keeps norms in F32).
MIXED = {
    "token_embd.weight": Q.F16,
    "output.weight": Q.Q8_0,
    "attn_q.weight": Q.Q8_0,
    "attn_k.weight": Q.Q4_1,
    "attn_v.weight": Q.Q4_1,
    "attn_output.weight": Q.Q8_0,
    "ffn_gate.weight": Q.Q4_0,
    "ffn_up.weight": Q.Q8_0,
    "ffn_down.weight": Q.Q4_1,
}


def tokenizer_metadata(w: gguf.GGUFWriter) -> None:
    """A 100-token byte-level BPE vocabulary (GPT-2's printable ASCII, ids 0..93, then a few
    merged tokens and one control token) so the GGUF → tokenizer.json path can be tested."""
    tokens = [chr(c) for c in range(33, 127)]  # GPT-2 ids 0..93 are '!'..'~'
    tokens += ["Ġ", "he", "ll", "llo", "Ġw", "<|endoftext|>"]
    assert len(tokens) == 100
    types = [1] * 99 + [3]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(["h e", "l l", "ll o", "Ġ w"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)


def write(path: Path, cfg: dict, tensors: dict[str, np.ndarray], types: dict[str, Q], extra: dict) -> None:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-random-llama")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_key_length(cfg["head_dim"])
    w.add_value_length(cfg["head_dim"])
    w.add_rope_dimension_count(cfg["head_dim"])
    w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(cfg["vocab_size"])
    tokenizer_metadata(w)
    for name, data in tensors.items():
        qtype = types.get(name, Q.F32)
        if qtype == Q.F32:
            w.add_tensor(name, data.astype(np.float32))
        elif qtype == Q.F16:
            w.add_tensor(name, data.astype(np.float16))
        else:
            w.add_tensor(name, quantize(data, qtype), raw_dtype=qtype)
    for name, (raw, qtype) in extra.items():
        w.add_tensor(name, raw, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def random_blocks(rng: np.random.Generator, qtype: Q, n_blocks: int) -> np.ndarray:
    """Random bytes for `n_blocks` blocks, with every f16 scale field set to a sane value."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)

    def f16(col: int) -> None:
        raw[:, col : col + 2] = rng.uniform(-0.05, 0.05, size=(n_blocks, 1)).astype(np.float16).view(np.uint8)

    if qtype in (Q.Q5_0,):
        f16(0)
    elif qtype in (Q.Q5_1, Q.Q4_K, Q.Q5_K):
        f16(0)
        f16(2)
    elif qtype == Q.Q6_K:
        f16(size - 2)
    return raw.reshape(2, n_blocks // 2 * size)  # two rows


def main() -> int:
    cfg = json.loads((SRC / "config.json").read_text())
    hf = load_file(str(SRC / "model.safetensors"))
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    tensors: dict[str, np.ndarray] = {}
    for name in sorted(hf):
        data = hf[name]
        if name.endswith("q_proj.weight"):
            data = permute(data, n_head, n_head)
        elif name.endswith("k_proj.weight"):
            data = permute(data, n_head, n_kv)
        tensors[gguf_name(name)] = np.ascontiguousarray(data)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    f32_path = OUT_DIR / "tiny_llama_f32.gguf"
    write(f32_path, cfg, tensors, {}, {})

    def kind(n: str) -> str:
        return n.split(".", 2)[-1] if n.startswith("blk.") else n

    types = {n: MIXED[kind(n)] for n in tensors if kind(n) in MIXED}
    rng = np.random.default_rng(0)
    extra_types = {
        "test.q5_0": Q.Q5_0,
        "test.q5_1": Q.Q5_1,
        "test.q4_k": Q.Q4_K,
        "test.q5_k": Q.Q5_K,
        "test.q6_k": Q.Q6_K,
    }
    extra = {}
    for name, qtype in extra_types.items():
        block = gguf.GGML_QUANT_SIZES[qtype][0]
        extra[name] = (random_blocks(rng, qtype, 512 // block), qtype)  # 512 values each
    bf16_values = rng.standard_normal((4, 8)).astype(np.float32)
    extra["test.bf16"] = (quantize(bf16_values, Q.BF16), Q.BF16)
    mixed_path = OUT_DIR / "tiny_llama_mixed.gguf"
    write(mixed_path, cfg, tensors, types, extra)

    # Read back with the gguf package and dequantise with its own code.
    reader = gguf.GGUFReader(str(mixed_path))
    wanted = [
        "token_embd.weight",
        "blk.0.attn_q.weight",
        "blk.0.attn_k.weight",
        "blk.1.ffn_gate.weight",
        "blk.1.ffn_down.weight",
        "output_norm.weight",
        *extra,
    ]
    ref_tensors = {}
    for t in reader.tensors:
        if t.name not in wanted:
            continue
        values = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
        shape = [int(d) for d in reversed(t.shape.tolist())]
        assert int(np.prod(shape)) == values.size, (t.name, shape, values.shape)
        ref_tensors[t.name] = {
            "type": t.tensor_type.name,
            "shape": shape,
            # float32 → shortest repr that round-trips, so the comparison can be exact.
            "values": [float(str(v)) for v in values.reshape(-1)],
        }
    missing = set(wanted) - set(ref_tensors)
    if missing:
        print(f"FAILED: tensors not found in the written file: {missing}")
        return 1

    # Self-check: undoing the permutation on what the F32 file holds gives the source back.
    def unpermute(w: np.ndarray, heads: int) -> np.ndarray:
        return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    stored = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(f32_path)).tensors}
    for layer in range(cfg["num_hidden_layers"]):
        for proj, heads in (("q", n_head), ("k", n_kv)):
            src = hf[f"model.layers.{layer}.self_attn.{proj}_proj.weight"]
            got = stored[f"blk.{layer}.attn_{proj}.weight"].reshape(src.shape)
            if not np.array_equal(unpermute(got, heads), src) or np.array_equal(got, src):
                print(f"FAILED: {proj}_proj of layer {layer} does not round-trip through the permutation")
                return 1

    out = {
        "generated_by": {
            "script": "tools/reference/tiny_gguf.py",
            "python": sys.version.split()[0],
            "gguf": gguf.__version__ if hasattr(gguf, "__version__") else "0.19.0",
            "numpy": np.__version__,
        },
        "source": "tests/fixtures/tiny_random/llama",
        "files": {
            p.name: {"bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
            for p in (f32_path, mixed_path)
        },
        "mixed_types": {n: t.name for n, t in sorted(types.items())},
        "note": "values: the gguf package's quants.dequantize of each tensor as stored (llama.cpp "
        "name, Q/K rows in llama.cpp's permuted order), row-major with `shape` (ggml ne reversed)",
        "tensors": ref_tensors,
    }
    REF.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    for p in (f32_path, mixed_path, REF):
        print(f"wrote {p.relative_to(ROOT)} ({p.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
