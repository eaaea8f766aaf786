#!/usr/bin/env python3
"""Tiny random Llama relatives — Qwen2 (q/k/v biases), Llama with Llama 3.1 rope scaling, Mistral
with a sliding window — their transformers reference outputs, and the Llama-3-rope model as an
F32 GGUF carrying llama.cpp's per-frequency `rope_freqs.weight`.

Writes (all small, committed):
  tests/fixtures/tiny_random/{qwen2,llama3_rope,mistral_sw}/   save_pretrained (fp32, ~100 KB each)
  tests/fixtures/tiny_gguf/tiny_llama3_rope_f32.gguf           llama3_rope as convert_hf_to_gguf.py
                                                               would write it (rope_freqs.weight)
  tests/fixtures/reference/tiny_variants.json                  logits, greedy ids, self-checks

    HF_HUB_OFFLINE=1 /path/to/venv-ref/bin/python tools/reference/tiny_variants.py

The checkpoints are made here (seeded), not copied from shared/. Every property a test relies on
is asserted before anything is written (exit 1, `FAILED: …` otherwise): that the q/k/v biases,
the rope scaling and the sliding window each change the logits by far more than the tests'
1e-4 tolerance, that the window is applied with exactly transformers' boundary, and that the GGUF
factors reproduce transformers' llama3 frequencies. See tools/reference/README.md.
"""

import hashlib
import json
import math
import shutil
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, generated_by, require, rnd, tensor_to_list, write_json  # noqa: E402

import gguf  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from tiny_gguf import gguf_name, permute, tokenizer_metadata  # noqa: E402
from tiny_models import CAUSAL_SEQUENCES, GEN_PROMPTS, greedy_hf, greedy_manual, st_tensors  # noqa: E402
from transformers import (  # noqa: E402
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.disable_progress_bar()

ATTN_IMPL = "eager"
FIXTURES = REPO_ROOT / "tests" / "fixtures"
GGUF_PATH = FIXTURES / "tiny_gguf" / "tiny_llama3_rope_f32.gguf"
# Model k of MODELS is seeded with SEED + k. Random models often fall into repeating one token
# under greedy decoding, which tests little: 6 is the first of 0, 3, 6, … where every model's
# greedy output for both prompts varies (>= 12 distinct tokens of 30) with top-2 logit margins
# >= 7e-3 (weaker bounds are asserted below).
SEED = 6
GEN_NEW_TOKENS = 30  # prompt 3 + 30 = 33 positions: the Mistral window (8) is crossed 25 times
# Far above the tests' 1e-4: a feature that is ignored must move the logits this much at least.
MUST_MATTER = 1e-2

# transformers' default initializer_range (0.02) leaves attention almost uniform at hidden 32, so
# rotary frequencies or a window would barely move the logits. 0.2 gives q·k/√Dh scores of a
# few units: position-dependent attention, and logits of a few units.
INIT_STD = 0.2

COMMON = dict(
    vocab_size=100,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-6,
    hidden_act="silu",
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
    initializer_range=INIT_STD,
)

# Llama 3.1's scaling with its real factor/low/high (8, 1, 4) and theta (500000). At head_dim 8
# the four frequencies have wavelengths 2π·500000^(i/4) ≈ 6.3, 167, 4443, 118000; an original
# context of 256 puts them in all three of llama3's bands (< 256/4: kept, 64..256: smoothed,
# > 256: divided by 8). max_position_embeddings must exceed the original context (transformers
# warns otherwise); it does not change any weight.
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 256,
}
LLAMA3_MAX_POSITIONS = 1024
SLIDING_WINDOW = 8
MODELS = ("qwen2", "llama3_rope", "mistral_sw")


def randomize_norms(model, gen: torch.Generator):
    """RMSNorm gains start at exactly 1; make them 1 ± noise so a norm weight that is ignored or
    misplaced shows up in the logits."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.add_(0.2 * torch.randn(p.shape, generator=gen))


def make(name: str):
    """Build, seed, save and reload one fixture; returns (reloaded model, its directory)."""
    # One seed per model, so that no two fixtures share weights (a mix-up could pass unnoticed).
    seed = SEED + list(MODELS).index(name)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if name == "qwen2":
        cfg = Qwen2Config(**COMMON)  # use_sliding_window defaults to False
        model = Qwen2ForCausalLM(cfg)
        # Random init leaves the q/k/v biases at zero; a test could not tell they are used.
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.copy_(0.5 * torch.randn(proj.bias.shape, generator=gen))
    elif name == "llama3_rope":
        cfg = LlamaConfig(
            **{**COMMON, "max_position_embeddings": LLAMA3_MAX_POSITIONS},
            head_dim=8,
            rope_parameters=dict(LLAMA3_ROPE),
        )
        model = LlamaForCausalLM(cfg)
    elif name == "mistral_sw":
        cfg = MistralConfig(**COMMON, head_dim=8, sliding_window=SLIDING_WINDOW)
        model = MistralForCausalLM(cfg)
    else:
        raise ValueError(name)
    randomize_norms(model, gen)
    out = FIXTURES / "tiny_random" / name
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(str(out))
    return load(out, type(model)), out


def load(path: Path, cls, **overrides):
    model, info = cls.from_pretrained(
        str(path), dtype=torch.float32, attn_implementation=ATTN_IMPL, output_loading_info=True, **overrides
    )
    for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        require(not info.get(k), f"{path.name}: loading reported {k}: {info.get(k)}")
    model.eval()
    require(next(model.parameters()).dtype == torch.float32, f"{path.name}: not fp32")
    return model


def logits(model, ids: list) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def max_diff_over_cases(a, b, names=None) -> dict:
    """Per case name: max |logits(a) − logits(b)|."""
    return {
        n: float((logits(a, ids) - logits(b, ids)).abs().max())
        for n, _, ids in CAUSAL_SEQUENCES
        if names is None or n in names
    }


def config_summary(cfg) -> dict:
    rp = cfg.rope_parameters
    return {
        "model_type": cfg.model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
        "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_parameters": dict(rp),
        "sliding_window": getattr(cfg, "sliding_window", None),
        "use_sliding_window": getattr(cfg, "use_sliding_window", None),
        "layer_types": getattr(cfg, "layer_types", None),
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "initializer_range": cfg.initializer_range,
    }


def round_floats(x):
    """Floats anywhere in a nested dict/list rounded like the logits."""
    if isinstance(x, dict):
        return {k: round_floats(v) for k, v in x.items()}
    if isinstance(x, list):
        return [round_floats(v) for v in x]
    return rnd(x) if isinstance(x, float) else x


def reference(name: str, model, path: Path, checks: dict) -> dict:
    cfg = model.config
    cases = []
    for case, formula, ids in CAUSAL_SEQUENCES:
        require(len(ids) <= cfg.max_position_embeddings, f"{name}: {case} too long")
        out = logits(model, ids)
        require(bool(torch.isfinite(out).all()), f"{name}: {case}: non-finite logits")
        cases.append(
            {
                "name": case,
                "ids_formula": formula,
                "input_ids": ids,
                "logits": tensor_to_list(out),
                "argmax": out.argmax(-1).tolist(),
            }
        )
    generation = []
    for prompt in GEN_PROMPTS:
        manual, margin = greedy_manual(model, prompt, GEN_NEW_TOKENS)
        hf = greedy_hf(model, prompt, GEN_NEW_TOKENS)
        require(manual == hf, f"{name}: greedy without cache {manual} != generate (cache) {hf}")
        require(margin > 5e-3, f"{name}: greedy top-2 margin {margin} too small to compare argmaxes")
        require(len(set(hf)) >= 10, f"{name}: greedy output {hf} barely varies")
        generation.append(
            {
                "prompt_ids": prompt,
                "max_new_tokens": GEN_NEW_TOKENS,
                "generated_ids": hf,
                "min_top2_logit_margin": rnd(margin),
            }
        )
        print(f"  {name}: {prompt} -> {hf} (min top-2 margin {margin:.2e})")
    max_abs = max(abs(x) for c in cases for row in c["logits"] for x in row)
    print(f"  {name}: max|logit| {max_abs:.3f}; checks {checks}")
    return {
        "repo_copy": f"tests/fixtures/tiny_random/{name}",
        "model_safetensors_sha256": hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest(),
        "architecture": cfg.architectures[0],
        "config": config_summary(cfg),
        "tensors": st_tensors(path / "model.safetensors"),
        "checks": round_floats(checks),
        "cases": cases,
        "generation": generation,
    }


# ------------------------------------------------------------------------------------- qwen2


def qwen2_checks(model, path: Path) -> dict:
    require(model.config.use_sliding_window is False, "qwen2: default config uses a sliding window")
    require(set(model.config.layer_types) == {"full_attention"}, f"qwen2: {model.config.layer_types}")
    biases = [
        float(layer.self_attn.q_proj.bias.detach().abs().min()) for layer in model.model.layers
    ]
    require(min(biases) > 0, "qwen2: a q bias is exactly zero")
    require(model.model.layers[0].self_attn.o_proj.bias is None, "qwen2: o_proj has a bias")
    unbiased = load(path, Qwen2ForCausalLM)
    with torch.no_grad():
        for layer in unbiased.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.zero_()
    d = max_diff_over_cases(model, unbiased)
    require(min(d.values()) > MUST_MATTER, f"qwen2: zeroing the biases changes the logits only by {d}")
    return {"max_diff_if_qkv_biases_were_zero": d}


# ------------------------------------------------------------------------------- llama3_rope


def llama_cpp_rope_freqs(rope: dict, head_dim: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors for rope_type "llama3": one
    divisor per frequency. (The converter reads original_max_position_embeddings from the top of
    config.json and falls back to 8192 — Llama 3.1's value, which real checkpoints only keep under
    rope_scaling; the tiny model's 256 is taken from the rope parameters here.)"""
    base = rope["rope_theta"]
    freqs = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old = rope["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    out = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def default_inv_freq(theta: float, head_dim: int) -> torch.Tensor:
    """transformers' unscaled frequencies, in float32 as it computes them."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def llama3_checks(model, path: Path) -> dict:
    head_dim = model.config.head_dim
    theta = LLAMA3_ROPE["rope_theta"]
    hf_inv = model.model.rotary_emb.inv_freq.detach().clone()
    plain = default_inv_freq(theta, head_dim)
    # Independent numpy check that the scaling changes some frequencies, and which band each is in.
    f = plain.double().numpy()
    wavelen = 2 * np.pi / f
    old = LLAMA3_ROPE["original_max_position_embeddings"]
    bands = [
        "kept" if w < old / LLAMA3_ROPE["high_freq_factor"]
        else "divided" if w > old / LLAMA3_ROPE["low_freq_factor"]
        else "smoothed"
        for w in wavelen
    ]
    require(set(bands) == {"kept", "smoothed", "divided"}, f"llama3: bands {bands} miss one")
    rel = np.abs(hf_inv.double().numpy() - f) / f
    require(int((rel > 1e-3).sum()) >= 1, f"llama3: scaled inv_freq {hf_inv} == unscaled {plain}")

    # The same weights with plain rope must give other logits.
    unscaled = load(path, LlamaForCausalLM, rope_parameters={"rope_type": "default", "rope_theta": theta})
    require(
        torch.allclose(unscaled.model.rotary_emb.inv_freq, plain), "llama3: default-rope reload is not default"
    )
    d = max_diff_over_cases(model, unscaled, names={"short", "len20", "full64"})
    require(min(d.values()) > MUST_MATTER, f"llama3: unscaled rope changes the logits only by {d}")

    # llama.cpp's rope_freqs: default / factors must be transformers' llama3 frequencies.
    rope_freqs = llama_cpp_rope_freqs(LLAMA3_ROPE, head_dim)
    via_gguf = plain / torch.from_numpy(rope_freqs)
    rel_gguf = float(((via_gguf - hf_inv).abs() / hf_inv).max())
    require(rel_gguf <= 1e-6, f"llama3: default/rope_freqs differs from transformers by {rel_gguf} (relative)")

    # webtune reads rope_freqs into transformers' own spelling of per-frequency divisors: longrope
    # with short_factor = long_factor = rope_freqs and attention_factor 1. That config must be the
    # same model in transformers (so an export of the GGUF model stays right).
    longrope = {
        "rope_type": "longrope",
        "rope_theta": theta,
        "short_factor": [float(x) for x in rope_freqs],
        "long_factor": [float(x) for x in rope_freqs],
        "factor": 1.0,
        "attention_factor": 1.0,
        "original_max_position_embeddings": LLAMA3_MAX_POSITIONS,
    }
    as_longrope = load(path, LlamaForCausalLM, rope_parameters=longrope)
    d_long = max_diff_over_cases(model, as_longrope)
    require(max(d_long.values()) <= 1e-5, f"llama3: the longrope spelling differs by {d_long}")
    return {
        "rope_bands": bands,
        "default_inv_freq": [float(x) for x in plain],
        "llama3_inv_freq": [float(x) for x in hf_inv],
        "max_diff_if_rope_were_unscaled": d,
        "rope_freqs": [float(x) for x in rope_freqs],
        "max_rel_diff_default_over_rope_freqs_vs_llama3": rel_gguf,
        "max_diff_as_longrope_config": max(d_long.values()),
    }


def write_gguf(path: Path, rope_freqs: np.ndarray) -> dict:
    """llama3_rope → F32 GGUF as convert_hf_to_gguf.py would write it: llama.* metadata without
    any rope scaling keys (llama.cpp has no llama3 scaling type) and `rope_freqs.weight`."""
    cfg_path = FIXTURES / "tiny_random" / "llama3_rope"
    cfg = json.loads((cfg_path / "config.json").read_text())
    hf = load_file(str(cfg_path / "model.safetensors"))
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    GGUF_PATH.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(GGUF_PATH), "llama")
    w.add_name("tiny-random-llama3-rope")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_key_length(cfg["head_dim"])
    w.add_value_length(cfg["head_dim"])
    w.add_rope_dimension_count(cfg["head_dim"])
    w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(cfg["vocab_size"])
    tokenizer_metadata(w)
    w.add_tensor("rope_freqs.weight", rope_freqs.astype(np.float32))
    for name in sorted(hf):
        data = hf[name]
        if name.endswith("q_proj.weight"):
            data = permute(data, n_head, n_head)
        elif name.endswith("k_proj.weight"):
            data = permute(data, n_head, n_kv)
        w.add_tensor(gguf_name(name), np.ascontiguousarray(data).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    stored = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(GGUF_PATH)).tensors}
    require(np.array_equal(stored["rope_freqs.weight"], rope_freqs), "gguf: rope_freqs did not round-trip")
    require("rope_freqs.weight" in stored and len(stored) == len(hf) + 1, f"gguf: tensors {sorted(stored)}")
    print(f"wrote {GGUF_PATH.relative_to(REPO_ROOT)} ({GGUF_PATH.stat().st_size:,} bytes)")
    return {
        "file": str(GGUF_PATH.relative_to(REPO_ROOT)),
        "bytes": GGUF_PATH.stat().st_size,
        "sha256": hashlib.sha256(GGUF_PATH.read_bytes()).hexdigest(),
        "gguf": "0.19.0" if not hasattr(gguf, "__version__") else gguf.__version__,
        "rope_freqs": [float(x) for x in rope_freqs],
    }


# -------------------------------------------------------------------------------- mistral_sw


def mistral_checks(model, path: Path) -> dict:
    require(model.config.sliding_window == SLIDING_WINDOW, f"mistral: {model.config.sliding_window}")
    full = load(path, MistralForCausalLM, sliding_window=None)
    require(full.config.sliding_window is None, "mistral: sliding_window=None did not stick")
    d = max_diff_over_cases(model, full)
    # Up to `window` tokens every key is inside the window: identical. Beyond: must differ.
    short = [n for n, _, ids in CAUSAL_SEQUENCES if len(ids) <= SLIDING_WINDOW]
    long = [n for n, _, ids in CAUSAL_SEQUENCES if len(ids) >= 20]
    require(short and long, "mistral: need sequences on both sides of the window")
    require(all(d[n] < 1e-6 for n in short), f"mistral: window changes short sequences: {d}")
    require(all(d[n] > MUST_MATTER for n in long), f"mistral: eager attention ignores the window: {d}")
    # The boundary: a window one narrower or wider is another model, so an off-by-one shows.
    off_by_one = {}
    for w in (SLIDING_WINDOW - 1, SLIDING_WINDOW + 1):
        other = load(path, MistralForCausalLM, sliding_window=w)
        off_by_one[w] = max_diff_over_cases(model, other, names={"len20"})["len20"]
        require(off_by_one[w] > MUST_MATTER, f"mistral: window {w} vs {SLIDING_WINDOW}: {off_by_one[w]}")
    # And the boundary itself, against an explicit mask: query i sees keys j with i - w < j <= i.
    ids = CAUSAL_SEQUENCES[2][2]
    t = len(ids)
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    allowed = (j <= i) & (j > i - SLIDING_WINDOW)
    mask = torch.zeros(1, 1, t, t).masked_fill(~allowed, torch.finfo(torch.float32).min)
    with torch.no_grad():
        explicit = full(torch.tensor([ids]), attention_mask=mask).logits[0]
    d_explicit = float((explicit - logits(model, ids)).abs().max())
    require(d_explicit < 1e-5, f"mistral: window != explicit (i - w < j <= i) mask: {d_explicit}")
    return {
        "max_diff_if_no_window": d,
        "max_diff_len20_other_window": {str(k): v for k, v in off_by_one.items()},
        "max_diff_vs_explicit_mask_len20": d_explicit,
        "window_rule": "query i attends to keys j with i - sliding_window < j <= i",
    }


def main():
    out = {
        "generated_by": generated_by("tiny_variants.py", attn_implementation=ATTN_IMPL, seed=SEED),
        "float_format": "rounded to 7 significant digits",
        "note": (
            "Tiny random Llama relatives made by this script (seeded, initializer_range 0.2, RMSNorm "
            "gains 1 ± 0.2) and saved with save_pretrained. cases: logits [T][vocab] with eager "
            "attention; generation: greedy ids from model.generate (KV cache), asserted equal to a "
            "no-cache argmax loop; checks: how much each feature moves the logits."
        ),
        "models": {},
    }
    qwen2, qwen2_path = make("qwen2")
    out["models"]["qwen2"] = reference("qwen2", qwen2, qwen2_path, qwen2_checks(qwen2, qwen2_path))
    llama3, llama3_path = make("llama3_rope")
    checks = llama3_checks(llama3, llama3_path)
    out["models"]["llama3_rope"] = reference("llama3_rope", llama3, llama3_path, checks)
    out["models"]["llama3_rope"]["gguf"] = write_gguf(GGUF_PATH, np.array(checks["rope_freqs"], dtype=np.float32))
    mistral, mistral_path = make("mistral_sw")
    out["models"]["mistral_sw"] = reference("mistral_sw", mistral, mistral_path, mistral_checks(mistral, mistral_path))
    write_json("tiny_variants.json", out)


if __name__ == "__main__":
    main()
