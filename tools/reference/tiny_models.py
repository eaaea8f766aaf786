#!/usr/bin/env python3
"""Reference outputs of the tiny random GPT-2, Llama and BERT checkpoints.

Loads shared/fixtures/tiny_random/{gpt2,llama,bert} with transformers (fp32, CPU, eval mode,
eager attention) and writes tests/fixtures/reference/tiny_{gpt2,llama,bert}.json.

    /path/to/venv/bin/python tools/reference/tiny_models.py [--shared ../shared]

See tools/reference/README.md for the fields of each file.
"""

import argparse
import hashlib
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402  (sets HF_HUB_OFFLINE before transformers is imported)
    DEFAULT_SHARED,
    REPO_ROOT,
    generated_by,
    require,
    rnd,
    tensor_to_list,
    write_json,
)

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, GenerationConfig  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.disable_progress_bar()

ATTN_IMPL = "eager"

# Causal-LM inputs. Ids are arbitrary (the models are random); the formulas are recorded in the
# JSON. The 64-token sequence uses a different formula from the 20-token one so that it is not
# a prefix-extension of it (causal logits of a shared prefix would be identical).
CAUSAL_SEQUENCES = [
    ("single", "[0]", [0]),
    ("short", "[5, 17, 42, 99, 3]", [5, 17, 42, 99, 3]),
    ("len20", "[(i*37 + 11) % 100 for i in range(20)]", [(i * 37 + 11) % 100 for i in range(20)]),
    ("full64", "[(i*53 + 7) % 100 for i in range(64)]", [(i * 53 + 7) % 100 for i in range(64)]),
]
HIDDEN_STATES_FOR = "short"  # per-layer activations are stored for this sequence only

# Greedy generation prompts. [1, 2, 3] is the primary case (`generation`); tied-embedding GPT-2 at random init
# just repeats the last prompt token there, so [7, 81, 45] is added: it switches token mid-way.
GEN_PROMPTS = [[1, 2, 3], [7, 81, 45]]
GEN_NEW_TOKENS = 20

# BERT: three sequences of lengths 7, 4, 2, right-padded to 7 with pad id 0.
BERT_SEQUENCES = [
    ([2, 15, 33, 47, 61, 88, 3], [0, 0, 0, 0, 1, 1, 1]),
    ([2, 9, 71, 3], [0, 0, 0, 0]),
    ([2, 54], [0, 0]),
]
BERT_PAD_ID = 0


def st_tensors(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return {k: list(f.get_slice(k).get_shape()) for k in sorted(f.keys())}


def provenance(path: Path, family: str) -> dict:
    """Where the checkpoint came from, its sha256, and whether the repository copy matches."""
    digest = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    copy = REPO_ROOT / "tests" / "fixtures" / "tiny_random" / family / "model.safetensors"
    if copy.is_file():
        require(hashlib.sha256(copy.read_bytes()).hexdigest() == digest, f"{copy} differs from {path}")
    return {
        "model": f"shared/fixtures/tiny_random/{family}",
        "repo_copy": f"tests/fixtures/tiny_random/{family}",
        "model_safetensors_sha256": digest,
    }


def config_essentials(cfg, family: str) -> dict:
    """Model hyper-parameters as transformers parsed them, in one uniform shape.

    `derived` lists the keys whose value is not spelled out in config.json but implied by
    transformers' defaults (so a parser must derive it the same way).
    """
    derived = []
    if family == "gpt2":
        inner = cfg.n_inner
        if inner is None:
            inner = 4 * cfg.n_embd
            derived.append("intermediate_size")
        derived += ["num_key_value_heads", "head_dim"]
        out = {
            "model_type": cfg.model_type,
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.n_embd,
            "num_hidden_layers": cfg.n_layer,
            "num_attention_heads": cfg.n_head,
            "num_key_value_heads": cfg.n_head,
            "head_dim": cfg.n_embd // cfg.n_head,
            "intermediate_size": inner,
            "max_position_embeddings": cfg.n_positions,
            "norm_type": "layernorm",
            "norm_eps": cfg.layer_norm_epsilon,
            "activation": cfg.activation_function,
            "rope_theta": None,
            "rope_type": None,
            "rope_config_key": None,
            "scale_attn_weights": cfg.scale_attn_weights,
            "scale_attn_by_inverse_layer_idx": cfg.scale_attn_by_inverse_layer_idx,
            "reorder_and_upcast_attn": cfg.reorder_and_upcast_attn,
        }
    elif family == "llama":
        rp = getattr(cfg, "rope_parameters", None)
        if isinstance(rp, dict) and "rope_theta" in rp:
            theta, rtype, key = rp["rope_theta"], rp.get("rope_type", "default"), "rope_parameters"
        else:
            theta, rtype, key = cfg.rope_theta, "default", "rope_theta"
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        out = {
            "model_type": cfg.model_type,
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.hidden_size,
            "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": cfg.num_key_value_heads,
            "head_dim": head_dim,
            "intermediate_size": cfg.intermediate_size,
            "max_position_embeddings": cfg.max_position_embeddings,
            "norm_type": "rmsnorm",
            "norm_eps": cfg.rms_norm_eps,
            "activation": cfg.hidden_act,
            "rope_theta": theta,
            "rope_type": rtype,
            "rope_config_key": key,
            "attention_bias": cfg.attention_bias,
            "mlp_bias": cfg.mlp_bias,
        }
    elif family == "bert":
        derived += ["num_key_value_heads", "head_dim"]
        out = {
            "model_type": cfg.model_type,
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.hidden_size,
            "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": cfg.num_attention_heads,
            "head_dim": cfg.hidden_size // cfg.num_attention_heads,
            "intermediate_size": cfg.intermediate_size,
            "max_position_embeddings": cfg.max_position_embeddings,
            "norm_type": "layernorm",
            "norm_eps": cfg.layer_norm_eps,
            "activation": cfg.hidden_act,
            "rope_theta": None,
            "rope_type": None,
            "rope_config_key": None,
            "type_vocab_size": cfg.type_vocab_size,
            "position_embedding_type": getattr(cfg, "position_embedding_type", "absolute"),
        }
    else:
        raise ValueError(family)
    out.update(
        {
            "tie_word_embeddings": cfg.tie_word_embeddings,
            "bos_token_id": cfg.bos_token_id,
            "eos_token_id": cfg.eos_token_id,
            "pad_token_id": cfg.pad_token_id,
            "derived": derived,
        }
    )
    return out


def load(path: Path, family: str):
    cls = AutoModel if family == "bert" else AutoModelForCausalLM
    model, info = cls.from_pretrained(
        str(path), dtype=torch.float32, attn_implementation=ATTN_IMPL, output_loading_info=True
    )
    for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        require(not info.get(k), f"{family}: loading reported {k}: {info.get(k)}")
    model.eval()
    require(next(model.parameters()).dtype == torch.float32, f"{family}: not fp32")
    return model


def capture_layers(model, family: str, ids: list) -> dict:
    """Residual stream at each stage: embeddings (input to layer 0), output of every layer,
    and the final norm output (the lm_head input). Recorded with forward hooks, so there is no
    doubt about which tensor HF's `hidden_states` tuple means."""
    if family == "gpt2":
        blocks, final_norm = model.transformer.h, model.transformer.ln_f
    else:
        blocks, final_norm = model.model.layers, model.model.norm
    got = {"layer_outputs": []}

    def pre0(_m, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        got["embeddings"] = x[0]

    def post(_m, _a, out):
        x = out[0] if isinstance(out, tuple) else out
        got["layer_outputs"].append(x[0])

    def post_norm(_m, _a, out):
        got["final_norm"] = out[0]

    handles = [blocks[0].register_forward_pre_hook(pre0, with_kwargs=True)]
    handles += [b.register_forward_hook(post) for b in blocks]
    handles.append(final_norm.register_forward_hook(post_norm))
    with torch.no_grad():
        model(torch.tensor([ids]))
    for h in handles:
        h.remove()
    return {
        "embeddings": tensor_to_list(got["embeddings"]),
        "layer_outputs": [tensor_to_list(t) for t in got["layer_outputs"]],
        "final_norm": tensor_to_list(got["final_norm"]),
    }


def greedy_manual(model, prompt: list, n: int):
    """Plain greedy decoding: full recompute each step, argmax over all vocab, no stopping.
    Also returns the smallest top-1 minus top-2 logit gap seen (how robust the argmax is)."""
    ids = list(prompt)
    margin = float("inf")
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids])).logits[0, -1]
            top = torch.topk(logits, 2)
            margin = min(margin, float(top.values[0] - top.values[1]))
            ids.append(int(torch.argmax(logits)))
    return ids[len(prompt):], margin


def greedy_hf(model, prompt: list, n: int) -> list:
    """transformers' generate (with KV cache), EOS disabled so exactly n tokens come out."""
    model.generation_config.eos_token_id = None  # generate() would otherwise merge it back in
    gc = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=n,
        min_new_tokens=n,
        eos_token_id=None,
        pad_token_id=0,  # only used for padding finished rows; there are none
        use_cache=True,
    )
    inp = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(inp, attention_mask=torch.ones_like(inp), generation_config=gc)
    return out[0, len(prompt):].tolist()


def causal(shared: Path, family: str) -> dict:
    path = shared / "fixtures" / "tiny_random" / family
    cfg = AutoConfig.from_pretrained(str(path))
    model = load(path, family)
    n_pos = cfg.n_positions if family == "gpt2" else cfg.max_position_embeddings

    # Tying as transformers applies it.
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    tied = emb.data_ptr() == head.data_ptr()
    require(tied == bool(cfg.tie_word_embeddings), f"{family}: tie mismatch {tied}")

    seqs = []
    max_abs = 0.0
    for name, formula, ids in CAUSAL_SEQUENCES:
        require(len(ids) <= n_pos, f"{family}: {name} longer than {n_pos}")
        require(all(0 <= i < cfg.vocab_size for i in ids), f"{name}: id out of range")
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        require(list(logits.shape) == [len(ids), cfg.vocab_size], f"{name}: shape {logits.shape}")
        require(bool(torch.isfinite(logits).all()), f"{name}: non-finite logits")
        max_abs = max(max_abs, float(logits.abs().max()))
        entry = {
            "name": name,
            "ids_formula": formula,
            "input_ids": ids,
            "logits": tensor_to_list(logits),
            "argmax": logits.argmax(-1).tolist(),
        }
        if name == HIDDEN_STATES_FOR:
            entry["activations"] = capture_layers(model, family, ids)
        seqs.append(entry)
    require(len(seqs[-1]["input_ids"]) == n_pos, f"{family}: full-length sequence != {n_pos}")

    eos = cfg.eos_token_id
    eos_in_range = eos is not None and 0 <= eos < cfg.vocab_size
    greedy = []
    for prompt in GEN_PROMPTS:
        require(len(prompt) + GEN_NEW_TOKENS <= n_pos, f"{family}: generation exceeds {n_pos}")
        manual, margin = greedy_manual(model, prompt, GEN_NEW_TOKENS)
        hf = greedy_hf(model, prompt, GEN_NEW_TOKENS)
        require(manual == hf, f"{family}: manual greedy {manual} != generate {hf}")
        require(len(hf) == GEN_NEW_TOKENS, f"{family}: generated {len(hf)} tokens")
        greedy.append(
            {
                "prompt_ids": prompt,
                "max_new_tokens": GEN_NEW_TOKENS,
                "generated_ids": hf,
                "eos_appears_in_generated": eos in hf,
                "min_top2_logit_margin": rnd(margin),
            }
        )
        print(f"  {family}: prompt {prompt} -> {hf} (min top-2 margin {margin:.2e})")
    print(
        f"  {family}: max|logit| {max_abs:.4f}; "
        f"eos {eos} (in vocab: {eos_in_range}, generated: {any(g['eos_appears_in_generated'] for g in greedy)})"
    )
    return {
        "generated_by": generated_by("tiny_models.py", attn_implementation=ATTN_IMPL),
        **provenance(path, family),
        "architecture": cfg.architectures[0],
        "config": config_essentials(cfg, family),
        "tensors": st_tensors(path / "model.safetensors"),
        "lm_head_tied_to_embeddings": tied,
        "float_format": "rounded to 7 significant digits",
        "cases": seqs,
        "activations_note": (
            f"For sequence '{HIDDEN_STATES_FOR}' only: `embeddings` = input to layer 0 "
            "(gpt2: wte+wpe; llama: embed_tokens), `layer_outputs[i]` = residual stream after "
            "layer i, `final_norm` = output of ln_f / norm (the lm_head input). Shapes [T][hidden]."
        ),
        "generation": {
            **greedy[0],
            "eos_token_id_in_config": eos,
            "eos_in_vocab": eos_in_range,
            "method": (
                "Pure greedy: at each step argmax over all vocab_size logits of the last "
                "position (first index on ties), no EOS stopping, exactly max_new_tokens tokens. "
                "Produced by model.generate(do_sample=False, num_beams=1, max_new_tokens=20, "
                "min_new_tokens=20, eos_token_id=None, with model.generation_config.eos_token_id "
                "also set to None; KV cache on) and asserted equal to a manual loop that "
                "recomputes the full sequence each step without cache. min_new_tokens would only "
                "mask an EOS id; with EOS disabled nothing is masked, so the ids are plain argmax. "
                "generated_ids holds the new tokens only. min_top2_logit_margin is the smallest "
                "gap between the best and second-best logit over the steps."
            ),
        },
        "generation_more": greedy[1:],
        "generation_more_note": "More greedy cases, same method as `generation`.",
    }


def bert(shared: Path) -> dict:
    path = shared / "fixtures" / "tiny_random" / "bert"
    cfg = AutoConfig.from_pretrained(str(path))
    tensors = st_tensors(path / "model.safetensors")
    has_pooler = any(k.startswith("pooler.") for k in tensors)
    model = load(path, "bert")
    require((model.pooler is not None) == has_pooler, "bert: pooler presence mismatch")

    T = max(len(s) for s, _ in BERT_SEQUENCES)
    ids = [s + [BERT_PAD_ID] * (T - len(s)) for s, _ in BERT_SEQUENCES]
    mask = [[1] * len(s) + [0] * (T - len(s)) for s, _ in BERT_SEQUENCES]
    tt = [t + [0] * (T - len(t)) for _, t in BERT_SEQUENCES]
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            token_type_ids=torch.tensor(tt),
        )
    h = out.last_hidden_state
    require(list(h.shape) == [len(ids), T, cfg.hidden_size], f"bert: shape {h.shape}")
    require(bool(torch.isfinite(h).all()), "bert: non-finite")
    m = torch.tensor(mask, dtype=h.dtype).unsqueeze(-1)
    mean_pooled = (h * m).sum(1) / m.sum(1)

    # Each sequence alone (no padding): valid positions must match the padded batch.
    unpadded = []
    worst = 0.0
    for b, (s, t) in enumerate(BERT_SEQUENCES):
        with torch.no_grad():
            o = model(
                input_ids=torch.tensor([s]),
                attention_mask=torch.ones(1, len(s), dtype=torch.long),
                token_type_ids=torch.tensor([t]),
            ).last_hidden_state[0]
        worst = max(worst, float((o - h[b, : len(s)]).abs().max()))
        unpadded.append(tensor_to_list(o))
    require(worst < 1e-5, f"bert: padded vs unpadded differ by {worst}")
    print(
        f"  bert: max|h| {float(h.abs().max()):.4f}; has_pooler {has_pooler}; "
        f"padded-vs-unpadded max diff {worst:.2e}"
    )

    res = {
        "generated_by": generated_by("tiny_models.py", attn_implementation=ATTN_IMPL),
        **provenance(path, "bert"),
        "architecture": cfg.architectures[0],
        "config": config_essentials(cfg, "bert"),
        "tensors": tensors,
        "has_pooler": has_pooler,
        "float_format": "rounded to 7 significant digits",
        "pad_token_id": BERT_PAD_ID,
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": tt,
        "last_hidden_state": tensor_to_list(h),
        "last_hidden_state_note": (
            "[B][T][hidden], padded positions included exactly as transformers computes them "
            "(padded queries still attend to the unmasked keys; mask is additive "
            "finfo(float32).min on masked keys)."
        ),
        "mean_pooled": tensor_to_list(mean_pooled),
        "mean_pooled_note": "sum(last_hidden_state * mask) / sum(mask) over T (sentence-transformers mean pooling, no normalisation).",
        "unpadded_last_hidden_state": unpadded,
        "unpadded_note": f"Each sequence run alone without padding ([len][hidden]); max |diff| to the padded batch's valid positions = {rnd(worst)}.",
    }
    if has_pooler:
        res["pooler_output"] = tensor_to_list(out.pooler_output)
        res["pooler_note"] = "tanh(dense(last_hidden_state[:, 0])) -> [B][hidden]."
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help=f"shared/ directory (default {DEFAULT_SHARED})")
    args = ap.parse_args()
    shared = args.shared.resolve()
    require((shared / "fixtures" / "tiny_random").is_dir(), f"no fixtures/tiny_random under {shared}")
    torch.manual_seed(0)  # nothing here is random; set anyway
    for family in ("gpt2", "llama"):
        write_json(f"tiny_{family}.json", causal(shared, family))
    write_json("tiny_bert.json", bert(shared))


if __name__ == "__main__":
    main()
