"""PyTorch reference timings for `cargo xtask bench` (eager, CPU, fp32, transformers + PEFT).

One case per call; prints one JSON object on stdout:

  bench_torch.py --case smollm2-lora-step --batch 1 --seq 64 --steps 6
  bench_torch.py --case tiny-gpt2-vocab-train --batch 4 --seq 64 --steps 10
  bench_torch.py --case smollm2-generate --prompt-len 8 --new-tokens 16 [--no-cache]
  bench_torch.py --case shape-lora-step --config DIR/config.json --batch 1 --seq 128 --steps 3

The workload is the same shape as webtune's: SmolLM2-135M (Llama: 30 layers, hidden 576, 9 heads,
3 KV heads, MLP 1536, vocab 49152, tied head), LoRA r=8 alpha=16 on q_proj/v_proj (c_attn for
GPT-2), AdamW, global-norm clipping at 1.0, batch × seq tokens per step, float32, threads = the
number of cores (--threads overrides). SmolLM2's weights are randomly initialised here — the
default model ships as a GGUF, and step time does not depend on weight values; the token ids are
random too. The tiny GPT-2 case loads tests/fixtures/tiny_random/gpt2-vocab. The shape case builds
the model of a config.json (one `webtune shape` wrote: SmolLM2-360M/1.7B, Qwen2.5-0.5B) with
random weights, in fp32, and trains LoRA on q_proj/v_proj as the SmolLM2 case does.

Step times are wall-clock per optimiser step (forward, backward, clip, AdamW, zero_grad); the first
step is reported apart (warm-up), the rest give the median and spread.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[2]

SMOLLM2_135M = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=8192,
    rms_norm_eps=1e-5,
    rope_theta=100000.0,
    tie_word_embeddings=True,
    bos_token_id=1,
    eos_token_id=2,
)


def percentile(values, q):
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def smollm2(torch):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**SMOLLM2_135M)
    return LlamaForCausalLM(config).float()


def train_case(torch, model, targets, batch, seq, steps, fan_in_fan_out=False):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=targets,
        fan_in_fan_out=fan_in_fan_out,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=2e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    step_ms, losses = [], []
    for _ in range(steps):
        ids = torch.randint(0, vocab, (batch, seq + 1), generator=gen)
        inputs, labels = ids[:, :-1], ids[:, 1:]
        t0 = time.perf_counter()
        logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), labels.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        optim.zero_grad(set_to_none=True)
        losses.append(loss.item())
        step_ms.append((time.perf_counter() - t0) * 1e3)
    later = step_ms[1:] or step_ms
    median = statistics.median(later)
    return {
        "steps": steps,
        "batch": batch,
        "seq_len": seq,
        "tokens_per_step": batch * seq,
        "first_step_ms": step_ms[0],
        "median_step_ms": median,
        "min_step_ms": min(later),
        "max_step_ms": max(later),
        "p10_step_ms": percentile(later, 0.1),
        "p90_step_ms": percentile(later, 0.9),
        "tokens_per_s": batch * seq / (median / 1e3),
        "step_ms": step_ms,
        "losses": losses,
        "trainable_params": sum(p.numel() for p in params),
    }


def generate_case(torch, model, prompt_len, new_tokens, use_cache):
    model.eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (1, prompt_len), generator=gen)
    with torch.no_grad():
        # One short warm-up call (allocator, thread pool).
        model.generate(ids, max_new_tokens=2, min_new_tokens=2, do_sample=False, use_cache=use_cache)
        t0 = time.perf_counter()
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            use_cache=use_cache,
            pad_token_id=0,
        )
        seconds = time.perf_counter() - t0
    n = out.shape[1] - prompt_len
    return {"prompt_len": prompt_len, "new_tokens": n, "seconds": seconds, "tokens_per_s": n / seconds, "use_cache": use_cache}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", required=True, choices=["smollm2-lora-step", "tiny-gpt2-vocab-train", "smollm2-generate", "shape-lora-step"])
    ap.add_argument("--config", help="the config.json of the shape-lora-step case")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--prompt-len", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    import torch
    import transformers
    import peft

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.case == "smollm2-lora-step":
        model = smollm2(torch)
        load_s = time.perf_counter() - t0
        result = train_case(torch, model, ["q_proj", "v_proj"], args.batch, args.seq, args.steps)
    elif args.case == "shape-lora-step":
        from transformers import AutoConfig, AutoModelForCausalLM

        torch.manual_seed(0)
        config = AutoConfig.from_pretrained(Path(args.config).parent)
        model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32).float()
        load_s = time.perf_counter() - t0
        result = train_case(torch, model, ["q_proj", "v_proj"], args.batch, args.seq, args.steps)
    elif args.case == "tiny-gpt2-vocab-train":
        from transformers import GPT2LMHeadModel

        model = GPT2LMHeadModel.from_pretrained(
            REPO_ROOT / "tests/fixtures/tiny_random/gpt2-vocab", dtype=torch.float32
        )
        model.config.attn_pdrop = model.config.resid_pdrop = model.config.embd_pdrop = 0.0
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        load_s = time.perf_counter() - t0
        result = train_case(torch, model, ["c_attn"], args.batch, args.seq, args.steps, fan_in_fan_out=True)
    else:
        model = smollm2(torch)
        load_s = time.perf_counter() - t0
        result = generate_case(torch, model, args.prompt_len, args.new_tokens, not args.no_cache)
    result.update(
        {
            "case": args.case,
            "threads": torch.get_num_threads(),
            "load_s": load_s,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "dtype": "float32",
        }
    )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
