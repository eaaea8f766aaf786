"""Load webtune's classification exports (left in target/tmp by
`cargo test -p webtune --test classify`) with AutoModelForSequenceClassification and compare
their logits with the ones webtune computed (webtune_logits.json). Exit 1 on any mismatch.

- classify_export: a pooler-pooled head, transformers' own BertForSequenceClassification;
- classify_export_mean: a mean-pooled head, loaded through the export's modeling_webtune.py
  (`trust_remote_code=True`, as its config's auto_map says);
- classify_export_mean/adapter: the same LoRA classifier as a PEFT adapter (SEQ_CLS, the head
  saved whole) on the base encoder, with the labels and pooling of webtune_classifier.json."""

import json

import torch
from _common import REPO_ROOT, require
from transformers import AutoConfig, AutoModelForSequenceClassification

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
    compare(name, model, path, f"class {type(model).__name__}; id2label {model.config.id2label}")


def compare(label, model, path, what):
    """Require `model`'s logits on the batch of path/webtune_logits.json to be webtune's."""
    ours = json.loads((path / "webtune_logits.json").read_text())
    b = ours["batch"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(b["input_ids"]), attention_mask=torch.tensor(b["attention_mask"])).logits
    diff = float((logits - torch.tensor(ours["logits"])).abs().max())
    print(f"{label}: {what}; max |logit diff| {diff:.2e}")
    require(diff < 1e-4, f"{label}: logits differ by {diff}")


def check_adapter(name):
    import sys

    from peft import PeftModel

    path = REPO_ROOT / "target/tmp" / name
    adapter = path / "adapter"
    note = json.loads((adapter / "webtune_classifier.json").read_text())
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    sys.path.insert(0, str(path))
    from modeling_webtune import WebtuneBertForSequenceClassification

    labels = note["labels"]
    config = AutoConfig.from_pretrained(str(REPO_ROOT / base), num_labels=len(labels), id2label=dict(enumerate(labels)))
    config.webtune_pooling = note["pooling"]
    model = WebtuneBertForSequenceClassification.from_pretrained(
        str(REPO_ROOT / base), config=config, attn_implementation="eager"
    )
    model = PeftModel.from_pretrained(model, str(adapter)).eval()
    compare(f"{name}/adapter", model, path, f"{type(model).__name__} on {base}")


def main():
    for name, remote_code in EXPORTS:
        check(name, remote_code)
    check_adapter("classify_export_mean")


if __name__ == "__main__":
    main()
