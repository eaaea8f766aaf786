"""Sequence-classification reference on the tiny BERT for tests/bert.rs and tests/classify.rs.

Loads tests/fixtures/tiny_random/bert as BertForSequenceClassification (3 labels, every dropout
0, CPU, fp32, eager attention) with a classifier drawn by torch.manual_seed(0), and writes
tests/fixtures/reference/classify_bert.json:
- the classifier's initial weight/bias and id2label/label2id;
- logits of the padded batch of tiny_bert.json (token types included, as that fixture has them);
- 20 optimiser steps of full fine-tuning and of LoRA (PEFT, task SEQ_CLS: r=4, alpha=8 on
  query/value, classifier trained as a module to save), each over both fixed batches (gradient
  accumulation 2; no token types, attention masks; the step's loss is the mean cross-entropy
  over its examples), AdamW lr 5e-3 with 2 warmup steps and linear decay, weight decay 0.01 on
  matrices only, global-norm clipping at 0.17 (active on most steps): per-step losses and grad norms, the final
  classifier and the final logits of batch 0.
"""

import copy
import json

import peft
import torch
from _common import REPO_ROOT, generated_by, require, tensor_to_list, write_json
from transformers import AutoConfig, BertForSequenceClassification, get_linear_schedule_with_warmup

PATH = REPO_ROOT / "tests/fixtures/tiny_random/bert"
LABELS = ["negative", "neutral", "positive"]
BATCHES = [
    {
        "input_ids": [[2, 15, 33, 47, 61, 88, 3], [2, 9, 71, 3, 0, 0, 0], [2, 54, 3, 0, 0, 0, 0]],
        "attention_mask": [[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0]],
        "labels": [0, 2, 1],
    },
    {
        "input_ids": [[2, 40, 41, 42, 3], [2, 7, 8, 3, 0]],
        "attention_mask": [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]],
        "labels": [1, 0],
    },
]
HP = {
    "lr": 5e-3,
    "steps": 20,
    "warmup": 2,
    "schedule": "linear",
    "grad_accum": 2,
    "max_grad_norm": 0.17,
    "weight_decay": 0.01,
    "betas": [0.9, 0.999],
    "eps": 1e-8,
}
LORA = {"r": 4, "alpha": 8, "targets": ["query", "value"]}


def base_model():
    cfg = AutoConfig.from_pretrained(str(PATH))
    cfg.num_labels = len(LABELS)
    cfg.id2label = dict(enumerate(LABELS))
    cfg.label2id = {l: i for i, l in enumerate(LABELS)}
    cfg.hidden_dropout_prob = 0.0
    cfg.attention_probs_dropout_prob = 0.0
    cfg.classifier_dropout = 0.0
    torch.manual_seed(0)
    model, info = BertForSequenceClassification.from_pretrained(
        str(PATH), config=cfg, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    require(set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}, f"missing {info['missing_keys']}")
    return model


def tensors(b):
    return torch.tensor(b["input_ids"]), torch.tensor(b["attention_mask"]), torch.tensor(b["labels"])


def train(model, params):
    # Decay on matrices only (transformers' Trainer leaves biases and LayerNorm weights alone).
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": HP["weight_decay"]},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=HP["lr"], betas=tuple(HP["betas"]), eps=HP["eps"])
    sched = get_linear_schedule_with_warmup(opt, HP["warmup"], HP["steps"])
    model.train()  # every dropout is 0, so train and eval modes compute the same
    losses, norms = [], []
    for step in range(HP["steps"]):
        # grad_accum micro-batches per step; the step's loss is the mean over all its examples.
        micro = [BATCHES[(step * HP["grad_accum"] + k) % len(BATCHES)] for k in range(HP["grad_accum"])]
        examples = sum(len(b["labels"]) for b in micro)
        opt.zero_grad()
        total = 0.0
        for b in micro:
            ids, mask, labels = tensors(b)
            logits = model(input_ids=ids, attention_mask=mask).logits
            loss = torch.nn.functional.cross_entropy(logits, labels, reduction="sum") / examples
            loss.backward()
            total += float(loss)
        norm = torch.nn.utils.clip_grad_norm_(params, HP["max_grad_norm"])
        opt.step()
        sched.step()
        losses.append(total)
        norms.append(float(norm))
    model.eval()
    ids, mask, _ = tensors(BATCHES[0])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    return losses, norms, logits


def main():
    model = base_model().eval()
    ref = json.loads((REPO_ROOT / "tests/fixtures/reference/tiny_bert.json").read_text())
    with torch.no_grad():
        logits = model(
            input_ids=torch.tensor(ref["input_ids"]),
            attention_mask=torch.tensor(ref["attention_mask"]),
            token_type_ids=torch.tensor(ref["token_type_ids"]),
        ).logits
    head = {
        "num_labels": len(LABELS),
        "weight": tensor_to_list(model.classifier.weight),
        "bias": tensor_to_list(model.classifier.bias),
    }

    full = copy.deepcopy(model)
    f_losses, f_norms, f_logits = train(full, [p for p in full.parameters() if p.requires_grad])

    cfg = peft.LoraConfig(
        task_type=peft.TaskType.SEQ_CLS, r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0, target_modules=LORA["targets"]
    )
    torch.manual_seed(1)
    lora = peft.get_peft_model(copy.deepcopy(model), cfg)
    init_a = {}
    for name, mod in lora.named_modules():
        if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
            hf = name.removeprefix("base_model.model.")
            init_a[hf] = tensor_to_list(mod.lora_A["default"].weight)
    require(len(init_a) == 4, f"lora modules {list(init_a)}")
    trainable = [p for p in lora.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    l_losses, l_norms, l_logits = train(lora, trainable)
    cls = lora.base_model.model.classifier.modules_to_save["default"]
    print(f"  full losses {f_losses}\n  lora losses {l_losses} ({n_trainable} trainable)")

    write_json(
        "classify_bert.json",
        {
            "generated_by": generated_by("classify_reference.py", peft=peft.__version__, attn_implementation="eager"),
            "model": "tests/fixtures/tiny_random/bert",
            "id2label": {str(i): l for i, l in enumerate(LABELS)},
            "label2id": {l: i for i, l in enumerate(LABELS)},
            "classifier": head,
            "logits": tensor_to_list(logits),
            "logits_note": "BertForSequenceClassification on tiny_bert.json's padded batch (with its token types); pooler → classifier.",
            "batches": BATCHES,
            "hyperparameters": HP,
            "full": {
                "losses": f_losses,
                "grad_norms": f_norms,
                "final_logits": tensor_to_list(f_logits),
                "final_classifier_weight": tensor_to_list(full.classifier.weight),
            },
            "lora": {
                **LORA,
                "trainable_params": n_trainable,
                "init_lora_A": init_a,
                "losses": l_losses,
                "grad_norms": l_norms,
                "final_logits": tensor_to_list(l_logits),
                "final_classifier_weight": tensor_to_list(cls.weight),
            },
        },
    )


if __name__ == "__main__":
    main()
