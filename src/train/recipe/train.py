#!/usr/bin/env python3
"""Run a webtune fine-tuning job with Hugging Face transformers + PEFT, launched by Accelerate.

webtune wrote this folder for one job: `job.json` (every setting), `data/` (the examples as
webtune read them from your file, in its training order, with the schema mapping applied),
`tokenizer.json` (the tokenizer webtune used) and, for LoRA, `initial_adapter/` (the factors'
seeded start). This script turns the examples into tokens, loss masks and micro-batches as
webtune does, draws the micro-batches in webtune's seeded order, and hands the optimiser steps
to transformers' Trainer (AdamW, the same schedule, warmup and clipping), so the run is the
same run: on the tiny test models its per-step losses equal webtune's within 1e-4.

    python train.py                                          # one device
    accelerate launch --config_file accelerate/multi_gpu.yaml train.py
    accelerate launch --config_file accelerate/fsdp.yaml train.py

Writes `output/adapter/` (LoRA, PEFT format), `output/merged/` (the full model, transformers
format), `output/losses.jsonl` (one line per optimiser step) and `output/result.json`
(held-out loss and perplexity before and after). `--help` lists the options.
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
    return p.parse_args()


def load_job(path):
    job = json.loads(path.read_text(encoding="utf-8"))
    if job.get("recipe_version") != RECIPE_VERSION:
        sys.exit(f"{path}: recipe version {job.get('recipe_version')}; this script reads version {RECIPE_VERSION}")
    if job.get("task") != "causal_lm":
        sys.exit(f"{path}: task {job.get('task')!r}; this script trains causal language models")
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
    epoch shuffled (seeded) when the job shuffles; steps × grad_accum of them."""

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


def load_model(job, model_arg):
    base = job["base_model"]
    path = model_arg or base["path"]
    if not model_arg and not Path(path).is_absolute():
        path = str((HERE / path).resolve()) if (HERE / path).exists() else path
    gguf = None if model_arg else base.get("gguf_file")
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
            if name.endswith(("wpe", "embed_positions")):
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


def main():
    args = parse_args()
    job = load_job(args.job)
    tokenizer = Tokenizer.from_file(str(HERE / job["tokens"]["tokenizer"]))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    encoder = Encoder(job, tokenizer)
    pad = job["tokens"]["pad_id"]
    train_rows, train_batches = micro_batches(read_jsonl(HERE / job["data"]["train"]), encoder, job)
    val_rows, val_batches = micro_batches(read_jsonl(HERE / job["data"]["validation"]), encoder, job)
    if len(train_batches) != job["train_batches"]:
        sys.exit(f"{len(train_batches)} training micro-batches where webtune made {job['train_batches']}: the data or tokenizer changed")
    packed = job["data"]["packed"]
    seq_len = job["tokens"]["seq_len"]
    mult = job["tokens"]["pad_multiple"]

    def width_of(items):
        if packed:
            return seq_len
        return padded_len(max(len(ids) - 1 for ids, _ in items), seq_len, mult)

    collate_fn = collate(pad, width_of)
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
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        **({"gradient_checkpointing": True} if job["gradient_checkpointing"] else {}),
    )
    model = load_model(job, args.model)
    batch_order = BatchOrder(train_batches, job["steps"] * job["grad_accum"], job["seed"], job["shuffle"])
    losses = StepLosses(args.output / "losses.jsonl")
    trainer = RecipeTrainer(
        model=model,
        args=training_args,
        train_dataset=Rows(train_rows),
        batch_order=batch_order,
        collate_fn=collate_fn,
        decay_all=opt["decay_bias_and_norm"],
        callbacks=[losses],
    )
    losses.trainer = trainer
    if args.max_steps is not None:
        trainer.add_callback(StopAt(steps))
    result = {"job": str(args.job), "steps": steps}
    if not args.no_eval and val_batches:
        result["before"] = held_out_loss(trainer, val_rows, val_batches, collate_fn)
        print(f"held-out loss before: {result['before']['loss']:.4f}", flush=True)
    trainer.train()
    if not args.no_eval and val_batches:
        result["after"] = held_out_loss(trainer, val_rows, val_batches, collate_fn)
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
    if job["method"] == "lora":
        model.save_pretrained(str(out / "adapter"))
        model = model.merge_and_unload()
    merged = out / "merged"
    model.to(dtype).save_pretrained(str(merged))
    fast = PreTrainedTokenizerFast(tokenizer_file=str(HERE / job["tokens"]["tokenizer"]))
    eos = job["tokens"]["eos_id"]
    if eos is not None:
        fast.eos_token = fast.pad_token = fast.convert_ids_to_tokens(eos)
    if job.get("chat_template"):
        fast.chat_template = job["chat_template"]["source"]
    fast.save_pretrained(str(merged))
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
