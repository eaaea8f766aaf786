#!/usr/bin/env python3
"""LoRA adapters saved by PEFT itself, and the logits of the tiny models with them applied.

`webtune eval|generate --adapter DIR` reads adapters in PEFT's format; these fixtures check that
it reads what PEFT writes (not just webtune's own exports): names, layouts, GPT-2's Conv1D
(fan_in_fan_out), rsLoRA's alpha/sqrt(r) scaling, all-linear targets.

Writes (small, committed):
  tests/fixtures/peft_adapters/<case>/adapter_config.json, adapter_model.safetensors
  tests/fixtures/reference/peft_adapters.json   per case: base, sequence, logits with the adapter
                                                (all positions), and the max |change| it makes

    /path/to/venv-ref/bin/python tools/reference/peft_adapters.py
"""

import json
import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, generated_by, require, tensor_to_list, write_json  # noqa: E402

import peft  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

FIXTURES = REPO_ROOT / "tests" / "fixtures"
OUT = FIXTURES / "peft_adapters"
SEQUENCE = [(i * 29 + 3) % 100 for i in range(12)]

CASES = [
    # name, base fixture, LoraConfig keyword arguments
    ("gpt2_c_attn", "gpt2", dict(r=4, lora_alpha=8, target_modules=["c_attn"])),
    (
        "llama_all_linear_rslora",
        "llama",
        dict(r=4, lora_alpha=6, target_modules="all-linear", use_rslora=True),
    ),
    ("llama_q_v", "llama", dict(r=2, lora_alpha=16, target_modules=["q_proj", "v_proj"])),
]


def main():
    cases = {}
    for i, (name, base, kwargs) in enumerate(CASES):
        torch.manual_seed(1000 + i)
        model = AutoModelForCausalLM.from_pretrained(
            FIXTURES / "tiny_random" / base, attn_implementation="eager"
        ).eval()
        ids = torch.tensor([SEQUENCE])
        with torch.no_grad():
            before = model(ids).logits[0]
        cfg = peft.LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, **kwargs)
        model = peft.get_peft_model(model, cfg)
        # PEFT starts B at zero (the adapter would change nothing); give both factors values.
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, peft.tuners.lora.LoraLayer):
                    m.lora_A["default"].weight.normal_(0, 0.3)
                    m.lora_B["default"].weight.normal_(0, 0.3)
        model.eval()
        with torch.no_grad():
            after = model(ids).logits[0]
        change = (after - before).abs().max().item()
        require(change > 1e-2, f"{name}: the adapter barely changes the logits ({change})")
        out = OUT / name
        model.save_pretrained(out)
        # Keep the fixture free of this machine's paths and of PEFT's model-card template.
        (out / "README.md").unlink(missing_ok=True)
        config_path = out / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = f"tests/fixtures/tiny_random/{base}"
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        # Reload through PEFT to be sure the saved files are what PeftModel.from_pretrained reads.
        reloaded = peft.PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(
                FIXTURES / "tiny_random" / base, attn_implementation="eager"
            ),
            out,
        ).eval()
        with torch.no_grad():
            again = reloaded(ids).logits[0]
        require(torch.equal(again, after), f"{name}: reloaded adapter gives other logits")
        # The merged model, as webtune merges before running.
        with torch.no_grad():
            merged = reloaded.merge_and_unload()(ids).logits[0]
        cases[name] = {
            "base": f"tiny_random/{base}",
            "adapter": f"peft_adapters/{name}",
            "lora_config": {k: v for k, v in kwargs.items()},
            "sequence": SEQUENCE,
            "logits": tensor_to_list(after),
            "max_abs_change_from_base": change,
            "merged_vs_unmerged_max_abs": (merged - after).abs().max().item(),
        }
        print(f"{name}: adapter changes logits by up to {change:.3f}")
    write_json(
        "peft_adapters.json",
        {"generated_by": generated_by("peft_adapters.py", peft=peft.__version__), "cases": cases},
    )


if __name__ == "__main__":
    main()
