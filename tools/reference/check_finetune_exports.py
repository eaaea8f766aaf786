#!/usr/bin/env python3
"""Load webtune's fine-tuning exports in transformers and PEFT and compare logits with webtune's.

`cargo test -p webtune --test finetune train_and_eval_entry_points` leaves, per tiny model,
target/tmp/finetune_exports/<model>/{merged/, adapter/, webtune_logits.json}. This script loads
  - merged/ with AutoModelForCausalLM.from_pretrained, and
  - adapter/ with PeftModel.from_pretrained over the original tiny base,
and checks both models' logits against webtune's. It writes nothing; it exits non-zero on a
mismatch.

    /path/to/venv/bin/python tools/reference/check_finetune_exports.py [--dir target/tmp/finetune_exports]
"""

import argparse
import json
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, require  # noqa: E402  (sets HF_HUB_OFFLINE first)

import torch  # noqa: E402
from peft import PeftModel  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

TOL = 1e-4


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=str(REPO_ROOT / "target" / "tmp" / "finetune_exports"))
    args = ap.parse_args()
    root = Path(args.dir)
    for name in ["gpt2", "llama"]:
        d = root / name
        require(d.exists(), f"{d} is missing: run the cargo test named in the docstring first")
        ours = json.loads((d / "webtune_logits.json").read_text())
        ids = torch.tensor([ours["input_ids"]])
        expected = torch.tensor(ours["logits"]).reshape(1, len(ours["input_ids"]), -1)
        kw = dict(dtype=torch.float32, attn_implementation="eager")
        merged = AutoModelForCausalLM.from_pretrained(d / "merged", **kw).eval()
        base = AutoModelForCausalLM.from_pretrained(REPO_ROOT / "tests/fixtures/tiny_random" / name, **kw)
        adapted = PeftModel.from_pretrained(base, d / "adapter").eval()
        with torch.no_grad():
            for label, model in [("merged", merged), ("adapter", adapted)]:
                diff = (model(input_ids=ids).logits - expected).abs().max().item()
                print(f"{name} {label}: max |logit diff| vs webtune {diff:.3e}")
                require(diff < TOL, f"{name} {label} differs by {diff}")
    print("ok")


if __name__ == "__main__":
    main()
