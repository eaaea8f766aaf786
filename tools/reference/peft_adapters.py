#!/usr/bin/env python3
"""LoRA adapters saved by PEFT itself, and the logits of the tiny models with them applied.

`webtune eval|generate --adapter DIR` reads adapters in PEFT's format; these fixtures check that
it reads what PEFT writes (not just webtune's own exports): names, layouts, GPT-2's Conv1D
(fan_in_fan_out), rsLoRA's alpha/sqrt(r) scaling, all-linear targets.

A classifier's adapter too: LoRA on the tiny BERT with PEFT's SEQ_CLS task, which saves the
classification head whole (`modules_to_save`); webtune attaches it to the bare encoder.

Writes (small, committed):
  tests/fixtures/peft_adapters/<case>/adapter_config.json, adapter_model.safetensors
  tests/fixtures/reference/peft_adapters.json   per case: base, sequence, logits with the adapter
                                                (all positions), and the max |change| it makes;
                                                `classifiers`: the same for the SEQ_CLS case
                                                (one row of class logits)

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
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification  # noqa: E402

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


def saved(model, name, base):
    """Save the adapter as the fixture `name`, free of this machine's paths and PEFT's model card."""
    out = OUT / name
    model.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)
    config_path = out / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = f"tests/fixtures/tiny_random/{base}"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out


def randomize(model):
    """PEFT starts B at zero (the adapter would change nothing); give both factors values."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, peft.tuners.lora.LoraLayer):
                m.lora_A["default"].weight.normal_(0, 0.3)
                m.lora_B["default"].weight.normal_(0, 0.3)


def classifier_case():
    """LoRA r=4 on the tiny BERT's query/value, SEQ_CLS with 3 labels: the head is saved whole."""
    name, base = "bert_seq_cls", "bert"
    torch.manual_seed(2000)
    load = lambda: AutoModelForSequenceClassification.from_pretrained(  # noqa: E731
        FIXTURES / "tiny_random" / base, num_labels=3, attn_implementation="eager"
    )
    model = load().eval()
    ids = torch.tensor([SEQUENCE])
    mask = torch.ones_like(ids)
    cfg = peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"], lora_dropout=0.0)
    model = peft.get_peft_model(model, cfg)
    randomize(model)
    # The saved head: a copy PEFT trains in place of the original; give it values of its own.
    with torch.no_grad():
        for p in model.base_model.model.classifier.modules_to_save["default"].parameters():
            p.normal_(0, 0.5)
    model.eval()
    with torch.no_grad():
        after = model(input_ids=ids, attention_mask=mask).logits[0]
    out = saved(model, name, base)
    # Reloaded on a base whose own head is drawn anew: the adapter's head replaces it.
    torch.manual_seed(7)
    reloaded = peft.PeftModel.from_pretrained(load(), out).eval()
    with torch.no_grad():
        again = reloaded(input_ids=ids, attention_mask=mask).logits[0]
    require(torch.allclose(again, after, atol=1e-6), f"{name}: reloaded adapter gives other logits")
    print(f"{name}: logits {after.tolist()}")
    return name, {
        "base": f"tiny_random/{base}",
        "adapter": f"peft_adapters/{name}",
        "num_labels": 3,
        "pooling": "pooler",
        "sequence": SEQUENCE,
        "logits": tensor_to_list(after),
    }


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
        randomize(model)
        model.eval()
        with torch.no_grad():
            after = model(ids).logits[0]
        change = (after - before).abs().max().item()
        require(change > 1e-2, f"{name}: the adapter barely changes the logits ({change})")
        out = saved(model, name, base)
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
    name, classifier = classifier_case()
    write_json(
        "peft_adapters.json",
        {
            "generated_by": generated_by("peft_adapters.py", peft=peft.__version__),
            "cases": cases,
            "classifiers": {name: classifier},
        },
    )


if __name__ == "__main__":
    main()
