"""Load webtune's classification export (target/tmp/classify_export, left by
`cargo test -p webtune --test classify`) with AutoModelForSequenceClassification and compare its
logits with the ones webtune computed (webtune_logits.json). Exit 1 on any mismatch."""

import json

import torch
from _common import REPO_ROOT, require
from transformers import AutoModelForSequenceClassification

DIR = REPO_ROOT / "target/tmp/classify_export"


def main():
    model, info = AutoModelForSequenceClassification.from_pretrained(
        str(DIR), dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    for k in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        require(not info.get(k), f"loading reported {k}: {info.get(k)}")
    model.eval()
    ours = json.loads((DIR / "webtune_logits.json").read_text())
    b = ours["batch"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(b["input_ids"]), attention_mask=torch.tensor(b["attention_mask"])).logits
    diff = float((logits - torch.tensor(ours["logits"])).abs().max())
    print(f"class {type(model).__name__}; id2label {model.config.id2label}; max |logit diff| {diff:.2e}")
    require(diff < 1e-4, f"logits differ by {diff}")


if __name__ == "__main__":
    main()
