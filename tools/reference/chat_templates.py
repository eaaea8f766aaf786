#!/usr/bin/env python3
"""Reference renderings of chat templates, made the way transformers' `apply_chat_template`
renders them, for tests/chat.rs.

transformers compiles a template with jinja2's ImmutableSandboxedEnvironment (trim_blocks and
lstrip_blocks on, the loopcontrols extension, `raise_exception` and `strftime_now` globals, a
`tojson` filter that keeps non-ASCII) and renders it with `messages`, `add_generation_prompt`
and the tokenizer's special tokens (`bos_token`, `eos_token`, ...); see
transformers/utils/chat_template_utils.py (`_compile_jinja_template`, `render_jinja_template`).
This script does exactly that with jinja2 alone, so it runs without torch or transformers
(`pip install jinja2`; 3.1.6 was used). With transformers installed, `--check` also renders
every case through `PreTrainedTokenizerFast.apply_chat_template` and asserts the same text (that
path was written where transformers was not installed, and has not been run yet).

Writes tests/fixtures/reference/chat_templates.json.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/reference/chat_templates.json"

TEMPLATES = {
    # HuggingFaceTB/SmolLM2-135M-Instruct (tokenizer_config.json and its GGUF's
    # tokenizer.chat_template are the same string).
    "smollm2": (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
        "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
        "<|im_start|>",
        "<|im_end|>",
    ),
    # meta-llama/Meta-Llama-3-8B-Instruct.
    "llama3": (
        "{% set loop_messages = messages %}{% for message in loop_messages %}"
        "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
        "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
        "<|begin_of_text|>",
        "<|eot_id|>",
    ),
    # mistralai/Mistral-7B-Instruct-v0.1 (raise_exception on a bad conversation).
    "mistral": (
        "{{ bos_token }}{% for message in messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
        "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}",
        "<s>",
        "</s>",
    ),
    # HuggingFaceH4/zephyr-7b-beta: one tag per line, so trim_blocks/lstrip_blocks matter.
    "zephyr": (
        "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
        "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
        "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
        "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}",
        "<s>",
        "</s>",
    ),
}

CONVERSATIONS = {
    "hi": [{"role": "user", "content": "hi"}],
    "system": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "turns": [
        {"role": "user", "content": "  Hello there  "},
        {"role": "assistant", "content": "Hi! How can I help?"},
        {"role": "user", "content": "Tell me a joke about café crème."},
    ],
}


def compile_template(source: str) -> jinja2.Template:
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)


def main() -> None:
    cases = []
    for name, (source, bos, eos) in TEMPLATES.items():
        template = compile_template(source)
        for conv_name, messages in CONVERSATIONS.items():
            for add in (True, False):
                case = {
                    "template": name,
                    "conversation": conv_name,
                    "add_generation_prompt": add,
                }
                try:
                    case["text"] = template.render(messages=messages, add_generation_prompt=add, bos_token=bos, eos_token=eos)
                except jinja2.exceptions.TemplateError as e:
                    case["error"] = str(e)
                cases.append(case)
    out = {
        "generator": f"tools/reference/chat_templates.py (jinja2 {jinja2.__version__}, transformers' settings)",
        "templates": {k: {"source": s, "bos_token": b, "eos_token": e} for k, (s, b, e) in TEMPLATES.items()},
        "conversations": CONVERSATIONS,
        "cases": cases,
    }
    if "--check" in sys.argv:
        from transformers import PreTrainedTokenizerFast  # noqa: PLC0415
        from tokenizers import Tokenizer, models  # noqa: PLC0415

        for case in cases:
            source, bos, eos = TEMPLATES[case["template"]]
            tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"x": 0}, unk_token="x")), bos_token=bos, eos_token=eos)
            tok.chat_template = source
            try:
                text = tok.apply_chat_template(CONVERSATIONS[case["conversation"]], tokenize=False, add_generation_prompt=case["add_generation_prompt"])
                assert text == case.get("text"), (case, text)
            except Exception as e:  # noqa: BLE001
                assert "error" in case, (case, e)
        print("transformers agrees on every case")
    OUT.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
