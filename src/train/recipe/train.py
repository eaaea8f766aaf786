#!/usr/bin/env python3
"""Run a webtune fine-tuning job with Hugging Face transformers + PEFT, launched by Accelerate.

webtune wrote this folder for one job, a causal LM's or a classifier's: `job.json` (every
setting), `data/` (the examples as webtune read them from your file, in its training order,
with the schema mapping applied), `tokenizer.json` (the tokenizer webtune used), for LoRA
`initial_adapter/` (the factors' start) and for a classifier `initial_head.safetensors` and
`modeling_webtune.py` (the head's start and its pooling). This script turns the examples into
tokens, loss masks and micro-batches as webtune does, draws the micro-batches in webtune's
seeded order, and hands the optimiser steps to transformers' Trainer (AdamW, the same schedule,
warmup and clipping), so the run is the same run: its per-step losses equal webtune's (within
2e-7 relative on webtune's test models).

    python train.py                                          # one device
    accelerate launch --config_file accelerate/multi_gpu.yaml train.py
    accelerate launch --config_file accelerate/fsdp.yaml train.py

Writes `output/adapter/` (LoRA, PEFT format), `output/merged/` (the full model, transformers
format), `output/losses.jsonl` (one line per optimiser step) and `output/result.json`
(held-out loss and perplexity, or a classifier's loss and accuracy, before and after).
`--help` lists the options.
"""

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, Dataset
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    PreTrainedTokenizerFast,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

HERE = Path(__file__).resolve().parent
RECIPE_VERSION = 1
MASK64 = (1 << 64) - 1


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--job", type=Path, default=HERE / "job.json", help="the job (default: job.json here)")
    p.add_argument("--output", type=Path, default=HERE / "output", help="where results go")
    p.add_argument("--model", help="the base model: a folder or a Hub id (default: job.json's)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (the schedule stays the job's)")
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision (faster on recent GPUs; the numbers then differ from webtune's f32)")
    p.add_argument("--no-export", action="store_true", help="do not write output/adapter and output/merged")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out loss before and after")
    p.add_argument(
        "--cpu-processes",
        action="store_true",
        help="several processes on the CPU (gloo), to try the multi-process path without GPUs: torchrun --nproc_per_node N train.py --cpu-processes",
    )
    return p.parse_args()


def load_job(path):
    job = json.loads(path.read_text(encoding="utf-8"))
    if job.get("recipe_version") != RECIPE_VERSION:
        sys.exit(f"{path}: recipe version {job.get('recipe_version')}; this script reads version {RECIPE_VERSION}")
    if job.get("task") not in ("causal_lm", "classification"):
        sys.exit(f"{path}: task {job.get('task')!r}; this script trains causal_lm and classification jobs")
    return job


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# --- Tokens and loss masks, as webtune makes them (src/data/batching.rs, src/data/chat.rs) ---------


def compile_chat_template(source):
    """transformers' setup for chat templates: a sandbox, trim/lstrip blocks, loop controls."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        from datetime import datetime

        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)


class Encoder:
    """Example → (token ids, whether each token counts in the loss)."""

    def __init__(self, job, tokenizer):
        self.tok = tokenizer
        t = job["tokens"]
        self.separator = t["separator"]
        self.add_eos = t["add_eos"]
        self.eos = t["eos_id"]
        self.train_on_prompt = t["train_on_prompt"]
        chat = job.get("chat_template")
        self.chat = chat and (compile_chat_template(chat["source"]), chat["bos_token"], chat["eos_token"])

    def ids(self, text, special):
        return self.tok.encode(text, add_special_tokens=special).ids

    def encode(self, ex):
        if "messages" in ex:
            ids, counted = self.encode_chat(ex["messages"])
            if self.train_on_prompt:
                counted = [True] * len(ids)
            return ids, counted  # the template ends each turn itself: no extra EOS
        if "prompt" in ex:
            ids = self.ids(ex["prompt"] + self.separator, True)
            counted = [self.train_on_prompt] * len(ids)
            completion = self.ids(ex["completion"], False)
            ids, counted = ids + completion, counted + [True] * len(completion)
        else:
            ids = self.ids(ex["text"], True)
            counted = [True] * len(ids)
        if self.add_eos and self.eos is not None:
            ids, counted = ids + [self.eos], counted + [True]
        return ids, counted

    def render(self, messages, add_generation_prompt):
        template, bos, eos = self.chat
        return template.render(
            messages=messages, add_generation_prompt=add_generation_prompt, bos_token=bos, eos_token=eos
        )

    def encode_chat(self, messages):
        """The rendered conversation's tokens; an assistant turn's tokens run from where the
        conversation before it, with the assistant header, stops matching to where the
        conversation up to it does."""
        ids = self.ids(self.render(messages, False), False)
        counted = [False] * len(ids)

        def boundary(text):
            n = 0
            for a, b in zip(self.ids(text, False), ids):
                if a != b:
                    break
                n += 1
            return n

        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            start = boundary(self.render(messages[:i], True))
            end = boundary(self.render(messages[: i + 1], False))
            for k in range(start, end):
                counted[k] = True
        return ids, counted


def padded_len(longest, seq_len, multiple):
    """Positions a micro-batch takes: its longest row rounded up to `multiple`, at most seq_len."""
    return min(-(-max(longest, 1) // multiple) * multiple, max(seq_len, 1))


def micro_batches(examples, encoder, job):
    """Rows (token ids, loss flags) and micro-batches (lists of row indices, width): plain text
    packed into full rows of seq_len + 1 tokens overlapping by one, anything else one example
    per row in consecutive groups of batch_size."""
    t, size = job["tokens"], job["batch_size"]
    seq_len = t["seq_len"]
    encoded = [encoder.encode(ex) for ex in examples]
    if job["data"]["packed"]:
        ids = [i for e in encoded for i in e[0]]
        counted = [c for e in encoded for c in e[1]]
        rows, start = [], 0
        while start + 1 < len(ids):
            end = min(start + seq_len + 1, len(ids))
            rows.append((ids[start:end], counted[start:end]))
            start += seq_len
        groups = [list(range(i, min(i + size, len(rows)))) for i in range(0, len(rows), size)]
        return rows, [(g, seq_len) for g in groups]
    rows, batches = encoded, []
    for i in range(0, len(rows), size):
        group = list(range(i, min(i + size, len(rows))))
        longest = max(len(rows[r][0]) - 1 for r in group)
        batches.append((group, padded_len(longest, seq_len, t["pad_multiple"])))
    return rows, batches


def class_batches(examples, tokenizer, job):
    """Classification rows (token ids with the tokenizer's special tokens, label id) and
    micro-batches: consecutive groups of batch_size. A text longer than seq_len keeps its
    trailing special token (BERT's [SEP]), as webtune truncates."""
    seq_len, size = job["tokens"]["seq_len"], job["batch_size"]
    label_id = {label: i for i, label in enumerate(job["data"]["labels"])}
    suffix = len(tokenizer.encode("", add_special_tokens=True).ids) // 2
    rows = []
    for ex in examples:
        ids = tokenizer.encode(ex["text"], add_special_tokens=True).ids
        if len(ids) > seq_len:
            tail = ids[len(ids) - min(suffix, seq_len):]
            ids = ids[: seq_len - len(tail)] + tail
        rows.append((ids, label_id[ex["label"]]))
    groups = [list(range(i, min(i + size, len(rows)))) for i in range(0, len(rows), size)]
    return rows, [(g, None) for g in groups]


def class_collate(pad_id, seq_len, multiple):
    def run(items):
        width = padded_len(max(len(ids) for ids, _ in items), seq_len, multiple)
        return {
            "input_ids": torch.tensor([ids + [pad_id] * (width - len(ids)) for ids, _ in items]),
            "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in items]),
            "labels": torch.tensor([label for _, label in items]),
        }

    return run


def class_loss(outputs, labels, num_items_in_batch=None):
    """Cross-entropy summed over the micro-batch, divided by the examples of the whole step."""
    total = torch.nn.functional.cross_entropy(outputs.logits.float(), labels, reduction="sum")
    return total / (num_items_in_batch if num_items_in_batch is not None else labels.numel())


class Rows(Dataset):
    """Each item: one row as transformers' causal LMs take it. A row of `width` inputs holds
    width + 1 tokens; labels[0] is -100 (nothing predicts the first token) and labels[t] is
    token t where it counts, so the model's shifted loss scores the same positions as webtune
    (the extra last position's logits are unused)."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def collate(pad_id, width_of):
    def run(items):
        width = width_of(items)
        input_ids, labels, attention = [], [], []
        for ids, counted in items:
            n = min(len(ids), width + 1)
            input_ids.append(ids[:n] + [pad_id] * (width + 1 - n))
            labels.append([-100] + [ids[k] if counted[k] else -100 for k in range(1, n)] + [-100] * (width + 1 - n))
            attention.append([1] * n + [0] * (width + 1 - n))
        return {
            "input_ids": torch.tensor(input_ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(attention),
        }

    return run


class SplitMix64:
    """webtune's generator (src/rng.rs), for the same batch order."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, n):
        return (self.next_u64() * n) >> 64

    def shuffle(self, items):
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]


class BatchOrder:
    """The micro-batches of the whole run, in webtune's order: epochs over the batches, each
    epoch shuffled (seeded) when the job shuffles; `count` of them."""

    def __init__(self, batches, count, seed, shuffle):
        self.batches, self.count, self.seed, self.shuffle = batches, count, seed, shuffle

    def __len__(self):
        return self.count

    def __iter__(self):
        rng = SplitMix64(self.seed ^ 0x0D0ED0E5)
        n, order = len(self.batches), []
        for consumed in range(self.count):
            if consumed % n == 0:
                order = list(range(n))
                if self.shuffle:
                    rng.shuffle(order)
            yield self.batches[order[consumed % n]][0]


# --- The model -------------------------------------------------------------------------------------


def base_path(job, model_arg):
    path = model_arg or job["base_model"]["path"]
    if not model_arg and not Path(path).is_absolute() and (HERE / path).exists():
        path = str((HERE / path).resolve())
    return path


def load_classifier(job, model_arg):
    """The encoder with webtune's head (modeling_webtune.py: pooler, cls or mean pooling), the
    head's starting weights as webtune drew them, and LoRA on the encoder or parts frozen."""
    import safetensors.torch

    sys.path.insert(0, str(HERE))
    from modeling_webtune import WebtuneBertForSequenceClassification

    path = base_path(job, model_arg)
    labels = job["data"]["labels"]
    config = AutoConfig.from_pretrained(path)
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    config.webtune_pooling = job["head"]["pooling"]
    # webtune applies no dropout inside the encoder; the head's is the job's.
    config.hidden_dropout_prob = 0.0
    config.attention_probs_dropout_prob = 0.0
    config.classifier_dropout = job["head"]["dropout"]
    model = WebtuneBertForSequenceClassification.from_pretrained(
        path, config=config, dtype=torch.float32, attn_implementation="eager"
    )
    head = safetensors.torch.load_file(str(HERE / job["head"]["initial"]))
    with torch.no_grad():
        model.classifier.weight.copy_(head["classifier.weight"])
        model.classifier.bias.copy_(head["classifier.bias"])
    # The loss is class_loss (Trainer's compute_loss_func), not a model argument.
    model.accepts_loss_kwargs = False
    if job["gradient_checkpointing"]:
        model.gradient_checkpointing_enable()
    if job["method"] == "lora":
        from peft import PeftModel

        # LoRA on the encoder; the head trains whole, a module the adapter saves (modules_to_save).
        adapter = str(HERE / job["lora"]["initial_adapter"])
        model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
    else:
        freeze(model, job["full"])
    return model


def load_model(job, model_arg):
    if job["task"] == "classification":
        return load_classifier(job, model_arg)
    path = base_path(job, model_arg)
    gguf = None if model_arg else job["base_model"].get("gguf_file")
    overrides = {}
    config = AutoConfig.from_pretrained(path, gguf_file=gguf) if gguf else AutoConfig.from_pretrained(path)
    if not job["model_dropout"]:
        # webtune trains without the model's own dropout unless the job asks for it: the run is
        # then deterministic and compares step for step.
        for key, value in config.to_dict().items():
            if isinstance(value, float) and ("dropout" in key or "pdrop" in key):
                overrides[key] = 0.0
    kwargs = dict(dtype=torch.float32, attn_implementation="eager", **overrides)
    if gguf:
        kwargs["gguf_file"] = gguf
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if gguf:
        # transformers dequantizes a GGUF file to f32 as it loads, but still marks the model
        # "quantized with GGUF", which Trainer refuses to train; the weights are plain tensors.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    if job["gradient_checkpointing"]:
        model.config.use_cache = False
    if job["method"] == "lora":
        from peft import PeftModel

        adapter = HERE / job["lora"]["initial_adapter"]
        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    else:
        freeze(model, job["full"])
    return model


def freeze(model, full):
    """Full fine-tuning's frozen parts: the token (and position) embeddings, the first N blocks."""
    frozen = set()
    if full["freeze_embeddings"]:
        frozen |= {id(p) for p in model.get_input_embeddings().parameters()}
        for name, module in model.named_modules():
            # GPT-2's positions; BERT's embeddings module (words, positions, token types, norm).
            if name.endswith(("wpe", "embed_positions")) or name.split(".")[-1] == "embeddings":
                frozen |= {id(p) for p in module.parameters()}
    block = re.compile(r"\.(?:h|layers|layer|blocks)\.(\d+)\.")
    for name, p in model.named_parameters():
        m = block.search(name)
        if id(p) in frozen or (m and int(m.group(1)) < full["freeze_layers"]):
            p.requires_grad_(False)


class RecipeTrainer(Trainer):
    """Trainer with webtune's micro-batches and, where the job asks, weight decay on every
    parameter; it keeps each step's loss (the sum over its micro-batches, as webtune reports)."""

    def __init__(self, *a, batch_order, collate_fn, decay_all, **kw):
        super().__init__(*a, **kw)
        self.batch_order, self.collate_fn, self.decay_all = batch_order, collate_fn, decay_all
        self.step_loss = 0.0

    def get_train_dataloader(self):
        loader = DataLoader(self.train_dataset, batch_sampler=self.batch_order, collate_fn=self.collate_fn)
        return self.accelerator.prepare(loader)

    def get_decay_parameter_names(self, model):
        if self.decay_all:
            return [n for n, _ in model.named_parameters()]
        return super().get_decay_parameter_names(model)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss = result[0] if return_outputs else result
        if model.training:
            # Trainer scales by the process count when it averages tokens across devices.
            scale = self.accelerator.num_processes if self.args.average_tokens_across_devices else 1
            self.step_loss = self.step_loss + loss.detach().float() / scale
        return result


class StepLosses(TrainerCallback):
    def __init__(self, path):
        self.path, self.trainer, self.file, self.lr = path, None, None, None

    def on_step_begin(self, args, state, control, **kw):
        scheduler = self.trainer.lr_scheduler
        self.lr = scheduler.get_last_lr()[0] if scheduler else None

    def on_step_end(self, args, state, control, **kw):
        t = self.trainer
        value = t.step_loss if torch.is_tensor(t.step_loss) else torch.tensor(t.step_loss)
        value = t.accelerator.reduce(value.to(t.accelerator.device), reduction="sum").item()
        t.step_loss = 0.0
        if t.accelerator.is_main_process:
            if self.file is None:
                self.file = open(self.path, "w", encoding="utf-8")
            self.file.write(json.dumps({"step": state.global_step, "loss": value, "lr": self.lr}) + "\n")
            self.file.flush()
            print(f"step {state.global_step}/{state.max_steps}  loss {value:.4f}", flush=True)


@torch.no_grad()
def held_out_loss(trainer, rows, batches, collate_fn):
    """Token-weighted mean loss over the held-out micro-batches (webtune's "before/after")."""
    model = trainer.model
    was_training = model.training
    model.eval()
    total, counted = 0.0, 0
    device = trainer.accelerator.device
    for group, _ in batches:
        batch = {k: v.to(device) for k, v in collate_fn([rows[r] for r in group]).items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits[:, :-1].float()
        target = labels[:, 1:]
        total += torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="sum"
        ).item()
        counted += int((target != -100).sum())
    model.train(was_training)
    loss = total / max(counted, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": counted}


@torch.no_grad()
def held_out_classes(trainer, rows, batches, collate_fn):
    """Mean cross-entropy and accuracy over the held-out examples."""
    model = trainer.model
    was_training = model.training
    model.eval()
    total, right, n = 0.0, 0, 0
    device = trainer.accelerator.device
    for group, _ in batches:
        batch = {k: v.to(device) for k, v in collate_fn([rows[r] for r in group]).items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        total += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        right += int((logits.argmax(-1) == labels).sum())
        n += len(group)
    model.train(was_training)
    return {"loss": total / max(n, 1), "accuracy": right / max(n, 1), "examples": n}


def main():
    args = parse_args()
    job = load_job(args.job)
    tokenizer = Tokenizer.from_file(str(HERE / job["tokens"]["tokenizer"]))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    pad = job["tokens"]["pad_id"]
    seq_len = job["tokens"]["seq_len"]
    mult = job["tokens"]["pad_multiple"]
    train_data = read_jsonl(HERE / job["data"]["train"])
    val_data = read_jsonl(HERE / job["data"]["validation"])
    classify = job["task"] == "classification"
    if classify:
        train_rows, train_batches = class_batches(train_data, tokenizer, job)
        val_rows, val_batches = class_batches(val_data, tokenizer, job)
        collate_fn = class_collate(pad, seq_len, mult)
        held_out = held_out_classes
    else:
        encoder = Encoder(job, tokenizer)
        train_rows, train_batches = micro_batches(train_data, encoder, job)
        val_rows, val_batches = micro_batches(val_data, encoder, job)
        packed = job["data"]["packed"]

        def width_of(items):
            if packed:
                return seq_len
            return padded_len(max(len(ids) - 1 for ids, _ in items), seq_len, mult)

        collate_fn = collate(pad, width_of)
        held_out = held_out_loss
    if len(train_batches) != job["train_batches"]:
        sys.exit(f"{len(train_batches)} training micro-batches where webtune made {job['train_batches']}: the data or tokenizer changed")
    steps = job["steps"] if args.max_steps is None else min(args.max_steps, job["steps"])
    opt, sched = job["optimizer"], job["schedule"]
    schedule = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[sched["kind"]]
    args.output.mkdir(parents=True, exist_ok=True)
    training_args = TrainingArguments(
        output_dir=str(args.output / "trainer"),
        max_steps=job["steps"],
        per_device_train_batch_size=job["batch_size"],
        gradient_accumulation_steps=job["grad_accum"],
        learning_rate=opt["lr"],
        weight_decay=opt["weight_decay"],
        adam_beta1=opt["adam_beta1"],
        adam_beta2=opt["adam_beta2"],
        adam_epsilon=opt["adam_eps"],
        max_grad_norm=opt["max_grad_norm"],
        lr_scheduler_type=schedule,
        warmup_steps=sched["warmup"],
        optim="adamw_torch",
        seed=job["seed"],
        bf16=args.bf16,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        **({"use_cpu": True, "ddp_backend": "gloo"} if args.cpu_processes else {}),
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        **({"gradient_checkpointing": True} if job["gradient_checkpointing"] else {}),
    )
    model = load_model(job, args.model)
    # The whole run's micro-batches: each of N processes takes every N-th, so one optimiser step
    # sees N × grad_accum of them, in the order one process would take N × grad_accum.
    micro = job["steps"] * job["grad_accum"] * training_args.world_size
    batch_order = BatchOrder(train_batches, micro, job["seed"], job["shuffle"])
    losses = StepLosses(args.output / "losses.jsonl")
    trainer = RecipeTrainer(
        model=model,
        args=training_args,
        train_dataset=Rows(train_rows),
        batch_order=batch_order,
        collate_fn=collate_fn,
        decay_all=opt["decay_bias_and_norm"],
        callbacks=[losses],
        compute_loss_func=class_loss if classify else None,
    )
    losses.trainer = trainer
    if args.max_steps is not None:
        trainer.add_callback(StopAt(steps))
    result = {"job": str(args.job), "steps": steps}
    if not args.no_eval and val_batches:
        result["before"] = held_out(trainer, val_rows, val_batches, collate_fn)
        print(f"held-out loss before: {result['before']['loss']:.4f}", flush=True)
    trainer.train()
    if not args.no_eval and val_batches:
        result["after"] = held_out(trainer, val_rows, val_batches, collate_fn)
        print(f"held-out loss after: {result['after']['loss']:.4f}", flush=True)
    if trainer.accelerator.is_main_process:
        (args.output / "result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if not args.no_export:
        export(trainer, job, args.output)


class StopAt(TrainerCallback):
    """--max-steps: stop early without changing the job's schedule."""

    def __init__(self, steps):
        self.steps = steps

    def on_step_end(self, args, state, control, **kw):
        if state.global_step >= self.steps:
            control.should_training_stop = True


def export(trainer, job, out):
    """output/adapter (LoRA) and output/merged, in the layout webtune exports."""
    trainer.accelerator.wait_for_everyone()
    model = trainer.accelerator.unwrap_model(trainer.model)
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[job["export_dtype"]]
    if not trainer.accelerator.is_main_process:
        return
    merged = out / "merged"
    if job["task"] == "classification":
        if job["method"] == "lora":
            model.save_pretrained(str(out / "adapter"))  # the encoder's factors and the head
            model = model.merge_and_unload()
        model.to(dtype).save_pretrained(str(merged))
        # A BertForSequenceClassification checkpoint; a head on cls/mean pooling also carries
        # the class that pools that way (load it with trust_remote_code=True).
        config = json.loads((merged / "config.json").read_text(encoding="utf-8"))
        config["architectures"] = ["BertForSequenceClassification"]
        config.pop("auto_map", None)
        if job["head"]["pooling"] != "pooler":
            auto = "modeling_webtune.WebtuneBertForSequenceClassification"
            config["auto_map"] = {"AutoModelForSequenceClassification": auto}
            (merged / "modeling_webtune.py").write_bytes((HERE / "modeling_webtune.py").read_bytes())
        (merged / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    else:
        if job["method"] == "lora":
            model.save_pretrained(str(out / "adapter"))
            model = model.merge_and_unload()
        model.to(dtype).save_pretrained(str(merged))
    fast = PreTrainedTokenizerFast(tokenizer_file=str(HERE / job["tokens"]["tokenizer"]))
    eos = job["tokens"].get("eos_id")
    if eos is not None:
        fast.eos_token = fast.pad_token = fast.convert_ids_to_tokens(eos)
    if job.get("chat_template"):
        fast.chat_template = job["chat_template"]["source"]
    fast.save_pretrained(str(merged))
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
