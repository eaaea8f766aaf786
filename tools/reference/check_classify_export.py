"""Load webtune's classification exports (left in target/tmp by
`cargo test -p webtune --test classify`) with AutoModelForSequenceClassification and compare
their logits with the ones webtune computed (webtune_logits.json). Exit 1 on any mismatch.

- classify_export: a pooler-pooled head, transformers' own BertForSequenceClassification;
- classify_export_mean: a mean-pooled head, loaded through the export's modeling_webtune.py
  (`trust_remote_code=True`, as its config's auto_map says)."""

import json

import torch
from _common import REPO_ROOT, require
from transformers import AutoModelForSequenceClassification

EXPORTS = [("classify_export", False), ("classify_export_mean", True)]


def check(name, remote_code):
    path = REPO_ROOT / "target/tmp" / name
    model, info = AutoModelForSequenceClassification.from_pretrained(
        str(path),
        dtype=torch.float32,
        attn_implementation="eager",
        output_loading_info=True,
        trust_remote_code=remote_code,
    )
    for k in ("missing_keys", "mismatched_keys"):
        require(not info.get(k), f"{name}: loading reported {k}: {info.get(k)}")
    unexpected = [k for k in info.get("unexpected_keys", []) if not (remote_code and "pooler" in k)]
    require(not unexpected, f"{name}: loading reported unexpected keys: {unexpected}")
    model.eval()
    ours = json.loads((path / "webtune_logits.json").read_text())
    b = ours["batch"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(b["input_ids"]), attention_mask=torch.tensor(b["attention_mask"])).logits
    diff = float((logits - torch.tensor(ours["logits"])).abs().max())
    print(f"{name}: class {type(model).__name__}; id2label {model.config.id2label}; max |logit diff| {diff:.2e}")
    require(diff < 1e-4, f"{name}: logits differ by {diff}")


def main():
    for name, remote_code in EXPORTS:
        check(name, remote_code)


if __name__ == "__main__":
    main()
