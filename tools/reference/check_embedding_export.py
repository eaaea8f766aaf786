"""Load webtune's sentence-embedding exports (left in target/tmp by
`cargo test -p webtune --test embed`) with sentence-transformers and compare their embeddings
with the ones webtune computed (webtune_embeddings.json). Exit 1 on any mismatch.

- embedding_export_{lora,full}/merged: `SentenceTransformer(dir)` (modules.json → the encoder
  and its mean pooling), embeddings of the same texts;
- embedding_export_lora/adapter: the LoRA factors as a PEFT adapter (FEATURE_EXTRACTION) on the
  base encoder (tests/fixtures/tiny_random/bert), mean-pooled by hand: the same embeddings."""

import json

import torch
from _common import REPO_ROOT, require
from sentence_transformers import SentenceTransformer

BASE = REPO_ROOT / "tests/fixtures/tiny_random/bert"


def ours(path):
    data = json.loads((path / "webtune_embeddings.json").read_text())
    return data["texts"], torch.tensor(data["embeddings"])


def check_merged(method):
    path = REPO_ROOT / "target/tmp" / f"embedding_export_{method}"
    texts, expected = ours(path)
    model = SentenceTransformer(str(path / "merged"), device="cpu")
    got = model.encode(texts, convert_to_tensor=True)
    diff = float((got - expected).abs().max())
    print(f"{method} merged: {[type(m).__name__ for m in model]}; max |embedding diff| {diff:.2e}")
    require(diff < 1e-4, f"{method}: embeddings differ by {diff}")
    return model


def check_adapter(st_model):
    import peft
    from transformers import BertModel

    path = REPO_ROOT / "target/tmp/embedding_export_lora"
    texts, expected = ours(path)
    base = BertModel.from_pretrained(str(BASE), dtype=torch.float32, attn_implementation="eager")
    model = peft.PeftModel.from_pretrained(base, str(path / "adapter")).eval()
    require(model.peft_config["default"].task_type == "FEATURE_EXTRACTION", "task type")
    # The merged folder's tokenizer is the one the adapter was trained with.
    features = st_model.tokenize(texts)
    with torch.no_grad():
        hidden = model(input_ids=features["input_ids"], attention_mask=features["attention_mask"]).last_hidden_state
    mask = features["attention_mask"].unsqueeze(-1).float()
    got = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    diff = float((got - expected).abs().max())
    print(f"lora adapter on the base (PEFT): max |embedding diff| {diff:.2e}")
    require(diff < 1e-4, f"adapter: embeddings differ by {diff}")


def main():
    st_lora = check_merged("lora")
    check_merged("full")
    check_adapter(st_lora)


if __name__ == "__main__":
    main()
