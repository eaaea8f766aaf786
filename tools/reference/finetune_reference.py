#!/usr/bin/env python3
"""Reference fine-tuning runs (PyTorch + PEFT) on the tiny random GPT-2 and Llama fixtures.

For each model, the same fixed micro-batches, the same hyperparameters and the same LoRA
factors at the start, runs N optimiser steps of
  - LoRA (PEFT, dropout 0, target modules = webtune's per-family defaults), and
  - full fine-tuning,
with torch.optim.AdamW (decay on matrices, none on biases and norm weights, as transformers'
Trainer groups them), transformers' get_linear_schedule_with_warmup, gradient accumulation over
two micro-batches (each micro-batch's masked CE sum divided by the tokens counted in the whole
step, as Trainer does since 4.46) and torch.nn.utils.clip_grad_norm_.

Writes tests/fixtures/reference/finetune_{gpt2,llama}.json with the batches, the
hyperparameters, PEFT's initial lora_A/lora_B (B set non-zero so both factors get gradients
from the first step), the per-step losses / pre-clip grad norms / learning rates, the final
LoRA factors, and for full fine-tuning selected final weights plus per-tensor sums.

    /path/to/venv/bin/python tools/reference/finetune_reference.py

The models run in eval mode (their dropout off: webtune has no dropout in the base models)
with eager attention, on the CPU in float32.
"""

import sys
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402  (sets HF_HUB_OFFLINE before transformers is imported)
    REPO_ROOT,
    generated_by,
    require,
    rnd,
    tensor_to_list,
    write_json,
)

import peft  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, get_linear_schedule_with_warmup  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.disable_progress_bar()

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "tiny_random"
STEPS = 20
BATCH, SEQ = 2, 12
HP = {
    "lora": {
        "method": "lora",
        "lora_r": 4,
        "lora_alpha": 8.0,
        "lr": 2e-2,
        "weight_decay": 0.1,
        "warmup": 2,
        "schedule": "linear",
        "steps": STEPS,
        "grad_accum": 2,
        "max_grad_norm": 0.07,
        "adam_beta1": 0.9,
        "adam_beta2": 0.999,
        "adam_eps": 1e-8,
        "shuffle": False,
    },
    "full": {
        "method": "full",
        "lr": 5e-3,
        "weight_decay": 0.1,
        "warmup": 2,
        "schedule": "linear",
        "steps": STEPS,
        "grad_accum": 2,
        "max_grad_norm": 1.0,
        "adam_beta1": 0.9,
        "adam_beta2": 0.999,
        "adam_eps": 1e-8,
        "shuffle": False,
    },
}
TARGETS = {"gpt2": ["c_attn"], "llama": ["q_proj", "v_proj"]}
# Full fine-tuning: these weights are stored whole (the rest as sums), in HF names.
FULL_TENSORS = {
    "gpt2": ["transformer.h.0.attn.c_attn.weight", "transformer.ln_f.weight", "transformer.wpe.weight"],
    "llama": ["model.layers.0.self_attn.q_proj.weight", "model.norm.weight", "lm_head.weight"],
}


def micro_batches(vocab):
    """Two fixed micro-batches [B, T]: ids, next-token targets, a loss mask with a masked
    prompt and padding (mask 0) so that masking matters."""
    out = []
    for m in range(2):
        ids, targets, mask = [], [], []
        for b in range(BATCH):
            seq = [((m * 31 + b * 17 + i * 7 + 3) * 13) % vocab for i in range(SEQ + 1)]
            ids.append(seq[:-1])
            targets.append(seq[1:])
            prompt = 3 + b + m  # first positions are "prompt": not counted
            pad = 2 if b == 1 else 0  # last positions of row 1 are "padding"
            mask.append([0.0 if i < prompt or i >= SEQ - pad else 1.0 for i in range(SEQ)])
        out.append({"inputs": ids, "targets": targets, "loss_mask": mask})
    return out


def masked_ce_sum(logits, targets, mask):
    logp = torch.log_softmax(logits, dim=-1)
    picked = logp.gather(2, targets.unsqueeze(-1)).squeeze(-1)
    return -(picked * mask).sum()


def train(model, params_decay, params_no_decay, hp, batches):
    opt = torch.optim.AdamW(
        [
            {"params": params_decay, "weight_decay": hp["weight_decay"]},
            {"params": params_no_decay, "weight_decay": 0.0},
        ],
        lr=hp["lr"],
        betas=(hp["adam_beta1"], hp["adam_beta2"]),
        eps=hp["adam_eps"],
    )
    sched = get_linear_schedule_with_warmup(opt, hp["warmup"], hp["steps"])
    trainable = params_decay + params_no_decay
    tensors = [
        (
            torch.tensor(b["inputs"]),
            torch.tensor(b["targets"]),
            torch.tensor(b["loss_mask"], dtype=torch.float32),
        )
        for b in batches
    ]
    counted = sum(float(m.sum()) for _, _, m in tensors)
    losses, norms, lrs = [], [], []
    for _ in range(hp["steps"]):
        lrs.append(sched.get_last_lr()[0])
        total = 0.0
        for ids, targets, mask in tensors:
            logits = model(input_ids=ids).logits
            loss = masked_ce_sum(logits, targets, mask) / counted
            loss.backward()
            total += loss.item()
        norm = torch.nn.utils.clip_grad_norm_(trainable, hp["max_grad_norm"])
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total)
        norms.append(float(norm))
    return losses, norms, lrs


def load(name):
    model = AutoModelForCausalLM.from_pretrained(
        FIXTURES / name, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()  # no dropout: webtune's base models have none
    return model


def lora_run(name, batches):
    hp = HP["lora"]
    torch.manual_seed(1234)
    base = load(name)
    cfg = peft.LoraConfig(
        r=hp["lora_r"],
        lora_alpha=hp["lora_alpha"],
        lora_dropout=0.0,
        target_modules=TARGETS[name],
        fan_in_fan_out=(name == "gpt2"),
        task_type="CAUSAL_LM",
    )
    model = peft.get_peft_model(base, cfg)
    model.eval()
    gen = torch.Generator().manual_seed(99)
    initial = {}
    for mod_name, module in model.named_modules():
        if isinstance(module, peft.tuners.lora.LoraLayer) and "default" in module.lora_A:
            b = module.lora_B["default"].weight
            # Non-zero B so that lora_A gets a gradient from the first step on.
            with torch.no_grad():
                b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
            hf = mod_name.removeprefix("base_model.model.")
            initial[hf] = {
                "lora_A": tensor_to_list(module.lora_A["default"].weight),
                "lora_B": tensor_to_list(b),
            }
    trainable = [p for p in model.parameters() if p.requires_grad]
    require(len(initial) > 0 and all(p.dim() == 2 for p in trainable), "LoRA factors only")
    losses, norms, lrs = train(model, trainable, [], hp, batches)
    final = {}
    for mod_name, module in model.named_modules():
        if isinstance(module, peft.tuners.lora.LoraLayer) and "default" in module.lora_A:
            hf = mod_name.removeprefix("base_model.model.")
            final[hf] = {
                "lora_A": tensor_to_list(module.lora_A["default"].weight),
                "lora_B": tensor_to_list(module.lora_B["default"].weight),
            }
    return {
        "config": dict(hp, lora_targets=TARGETS[name]),
        "initial_factors": initial,
        "losses": rnd(losses),
        "grad_norms": rnd(norms),
        "lrs": rnd(lrs),
        "final_factors": final,
    }


def full_run(name, batches):
    hp = HP["full"]
    model = load(name)
    # Tied weights appear once in parameters().
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    losses, norms, lrs = train(model, decay, no_decay, hp, batches)
    state = model.state_dict()
    sums = {}
    for k, v in state.items():
        if v.dtype.is_floating_point and not k.endswith("attn.bias") and not k.endswith("masked_bias"):
            sums[k] = {"sum": rnd(float(v.double().sum())), "abs_sum": rnd(float(v.double().abs().sum()))}
    return {
        "config": hp,
        "losses": rnd(losses),
        "grad_norms": rnd(norms),
        "lrs": rnd(lrs),
        "final_tensors": {k: tensor_to_list(state[k]) for k in FULL_TENSORS[name]},
        "final_sums": sums,
    }


def main():
    torch.use_deterministic_algorithms(True)
    for name in ["gpt2", "llama"]:
        vocab = load(name).config.vocab_size
        batches = micro_batches(vocab)
        obj = {
            "generated_by": generated_by("finetune_reference.py", peft=peft.__version__),
            "model": f"tests/fixtures/tiny_random/{name}",
            "batches": batches,
            "lora": lora_run(name, batches),
            "full": full_run(name, batches),
        }
        write_json(f"finetune_{name}.json", obj)
        print(name, "lora losses", obj["lora"]["losses"], "norms", obj["lora"]["grad_norms"])
        print(name, "full losses", obj["full"]["losses"], "norms", obj["full"]["grad_norms"])


if __name__ == "__main__":
    main()
