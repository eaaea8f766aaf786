"""Contrastive sentence-embedding reference on the tiny BERT for webtune's embedding fine-tuning.

Loads tests/fixtures/tiny_random/bert as a plain BertModel (every dropout 0, CPU, fp32, eager
attention; token ids used directly, the checkpoint has no tokenizer), embeds a row as the masked
mean of its last hidden state (sentence-transformers' mean pooling, no normalisation; the pooler
is unused), and writes tests/fixtures/reference/contrastive_bert.json:
- the two fixed (anchor, positive) pair batches, anchors and positives each padded to their own
  longest row;
- batch 0's anchor and positive embeddings and its MultipleNegativesRankingLoss under the base
  model;
- 12 optimiser steps of full fine-tuning and of LoRA (PEFT, task FEATURE_EXTRACTION: r=4,
  alpha=8 on query/value), each over both batches (gradient accumulation 2). The loss is
  sentence-transformers' own MultipleNegativesRankingLoss (scale 20, cosine similarity, in-batch
  negatives), taken as a sum over each micro-batch's anchors and divided by the pairs in the whole
  step. AdamW with 2 warmup steps and linear decay, weight decay 0.01 on matrices only,
  global-norm clipping at 0.17: per-step losses and pre-clip grad norms, and batch 0's anchor
  embeddings after training. The peak lr is 5e-3 for LoRA and 5e-4 for full fine-tuning (each
  run's "lr"): at 5e-3 full fine-tuning separates the 5 pairs completely, its loss 0.0 in
  float32 from step 4 on and its later grad norms rounding-sized, which would check nothing.
"""

import copy

import peft
import sentence_transformers
import torch
import torch.nn.functional as F
from _common import REPO_ROOT, generated_by, require, tensor_to_list, write_json
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.sentence_transformer.modules import Pooling
from transformers import AutoConfig, BertModel, get_linear_schedule_with_warmup

PATH = REPO_ROOT / "tests/fixtures/tiny_random/bert"
SCALE = 20.0


def padded(rows):
    """Right-pad token-id rows with 0 to the longest one; mask 1 on real tokens."""
    width = max(len(r) for r in rows)
    return {
        "input_ids": [r + [0] * (width - len(r)) for r in rows],
        "attention_mask": [[1] * len(r) + [0] * (width - len(r)) for r in rows],
    }


# [CLS] = 2 first, [SEP] = 3 last; anchors and positives have their own lengths.
BATCHES = [
    {
        "anchors": padded([[2, 15, 33, 47, 61, 88, 3], [2, 9, 71, 24, 3], [2, 54, 12, 3]]),
        "positives": padded([[2, 15, 34, 60, 88, 3], [2, 71, 9, 25, 80, 44, 17, 3], [2, 54, 13, 3]]),
    },
    {
        "anchors": padded([[2, 40, 41, 42, 3], [2, 7, 8, 95, 66, 3]]),
        "positives": padded([[2, 42, 41, 3], [2, 8, 7, 96, 67, 31, 58, 19, 3]]),
    },
]
# Full fine-tuning's peak lr (HP["lr"] is LoRA's): see the docstring.
FULL_LR = 5e-4
HP = {
    "lr": 5e-3,
    "steps": 12,
    "warmup": 2,
    "schedule": "linear",
    "grad_accum": 2,
    "max_grad_norm": 0.17,
    "weight_decay": 0.01,
    "betas": [0.9, 0.999],
    "eps": 1e-8,
}
LORA = {"r": 4, "alpha": 8, "targets": ["query", "value"]}


def mean_pool(hidden, mask):
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / torch.clamp(m.sum(dim=1), min=1e-9)


class MeanPooled(torch.nn.Module):
    """What MultipleNegativesRankingLoss needs of its `model`: features dict → {"sentence_embedding"}."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, features):
        out = self.bert(input_ids=features["input_ids"], attention_mask=features["attention_mask"])
        return {"sentence_embedding": mean_pool(out.last_hidden_state, features["attention_mask"])}


def feats(side):
    return {k: torch.tensor(v) for k, v in side.items()}


def base_model():
    cfg = AutoConfig.from_pretrained(str(PATH))
    cfg.hidden_dropout_prob = 0.0
    cfg.attention_probs_dropout_prob = 0.0
    model, info = BertModel.from_pretrained(
        str(PATH), config=cfg, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    require(not any(info.values()), f"loading info {info}")
    return model


def embed(model, side):
    model.eval()
    with torch.no_grad():
        return MeanPooled(model)(feats(side))["sentence_embedding"]


def train(model, params, lr):
    loss_fn = MultipleNegativesRankingLoss(MeanPooled(model), scale=SCALE)
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": HP["weight_decay"]},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=lr, betas=tuple(HP["betas"]), eps=HP["eps"])
    sched = get_linear_schedule_with_warmup(opt, HP["warmup"], HP["steps"])
    model.train()  # every dropout is 0, so train and eval modes compute the same
    losses, norms = [], []
    for step in range(HP["steps"]):
        micro = [BATCHES[(step * HP["grad_accum"] + k) % len(BATCHES)] for k in range(HP["grad_accum"])]
        pairs = sum(len(b["anchors"]["input_ids"]) for b in micro)
        opt.zero_grad()
        total = 0.0
        for b in micro:
            n = len(b["anchors"]["input_ids"])
            # MNRL averages over the micro-batch's anchors: back to a sum, then over the step's pairs.
            loss = loss_fn([feats(b["anchors"]), feats(b["positives"])], None) * n / pairs
            loss.backward()
            total += float(loss.detach())
        norm = torch.nn.utils.clip_grad_norm_(params, HP["max_grad_norm"])
        opt.step()
        sched.step()
        losses.append(total)
        norms.append(float(norm))
    return losses, norms, embed(model, BATCHES[0]["anchors"])


def main():
    model = base_model().eval()
    b0 = BATCHES[0]
    emb_a = embed(model, b0["anchors"])
    emb_p = embed(model, b0["positives"])

    # The hand-written pooling is sentence-transformers' own mean Pooling module.
    with torch.no_grad():
        f = feats(b0["anchors"])
        h = model(**f).last_hidden_state
        st = Pooling(h.shape[-1], pooling_mode="mean")({"token_embeddings": h, "attention_mask": f["attention_mask"]})
    diff = float((st["sentence_embedding"] - emb_a).abs().max())
    require(diff < 1e-7, f"mean pooling differs from ST Pooling by {diff}")

    # MNRL (mean over anchors) × B equals a plain summed cross-entropy over the scaled cosine matrix.
    # Checked in float64: with logits near 20, float32 rounding alone separates MNRL's
    # logsumexp-minus-positive form from F.cross_entropy by ~1.5e-6 (looser check below).
    n0 = len(b0["anchors"]["input_ids"])
    for dtype, tol in ((torch.float64, 1e-6), (torch.float32, 1e-5)):
        m = copy.deepcopy(model).to(dtype)
        a, p = embed(m, b0["anchors"]), embed(m, b0["positives"])
        with torch.no_grad():
            mnrl = MultipleNegativesRankingLoss(MeanPooled(m), scale=SCALE)([feats(b0["anchors"]), feats(b0["positives"])], None)
            cos = F.normalize(a, dim=-1) @ F.normalize(p, dim=-1).T
            plain = F.cross_entropy(cos * SCALE, torch.arange(n0), reduction="sum")
        gap = abs(float(mnrl) * n0 - float(plain))
        require(gap < tol, f"{dtype}: MNRL x B {float(mnrl) * n0} vs plain cross-entropy {float(plain)}")
        print(f"  {dtype}: batch-0 MNRL {float(mnrl):.8f}, |MNRL x B - plain CE sum| {gap:.2e}")
    initial_loss = float(mnrl)  # the float32 value, as the training runs compute it

    full = copy.deepcopy(model)
    f_losses, f_norms, f_emb = train(full, [p for p in full.parameters() if p.requires_grad], FULL_LR)

    cfg = peft.LoraConfig(
        task_type=peft.TaskType.FEATURE_EXTRACTION,
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=0.0,
        target_modules=LORA["targets"],
    )
    torch.manual_seed(1)
    lora = peft.get_peft_model(copy.deepcopy(model), cfg)
    init_a = {}
    for name, mod in lora.named_modules():
        if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
            init_a[name.removeprefix("base_model.model.")] = tensor_to_list(mod.lora_A["default"].weight)
    require(len(init_a) == 4, f"lora modules {list(init_a)}")
    trainable = [p for p in lora.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    l_losses, l_norms, l_emb = train(lora, trainable, HP["lr"])
    print(f"  full losses {f_losses}\n  lora losses {l_losses} ({n_trainable} trainable)")
    require(f_losses[-1] < f_losses[0] and l_losses[-1] < l_losses[0], "losses did not fall")
    require(all(a >= b for a, b in zip(l_losses, l_losses[1:])), "LoRA losses not monotone")

    write_json(
        "contrastive_bert.json",
        {
            "generated_by": generated_by(
                "contrastive_reference.py",
                peft=peft.__version__,
                sentence_transformers=sentence_transformers.__version__,
                attn_implementation="eager",
            ),
            "model": "tests/fixtures/tiny_random/bert",
            "scale": SCALE,
            "pooling": "mean",
            "batches": BATCHES,
            "hyperparameters": HP,
            "initial_embeddings": tensor_to_list(emb_a),
            "initial_positive_embeddings": tensor_to_list(emb_p),
            "initial_loss_batch0": initial_loss,
            "full": {"lr": FULL_LR, "losses": f_losses, "grad_norms": f_norms, "final_embeddings": tensor_to_list(f_emb)},
            "lora": {
                **LORA,
                "lr": HP["lr"],
                "trainable_params": n_trainable,
                "init_lora_A": init_a,
                "losses": l_losses,
                "grad_norms": l_norms,
                "final_embeddings": tensor_to_list(l_emb),
            },
        },
    )


if __name__ == "__main__":
    main()
