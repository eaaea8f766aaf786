"""Helpers shared by the reference scripts: paths, version stamp, float rounding, JSON output."""

import json
import os
import platform
import sys
from pathlib import Path

# Never touch the Hugging Face Hub: every model and tokenizer is loaded from a local path.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SHARED = REPO_ROOT.parent / "shared"
OUT_DIR = REPO_ROOT / "tests" / "fixtures" / "reference"

SIG_DIGITS = 7


def generated_by(script: str, **extra) -> dict:
    """Versions of everything that could change the numbers, recorded in every fixture."""
    import numpy
    import safetensors
    import tokenizers
    import torch
    import transformers

    info = {
        "script": f"tools/reference/{script}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": numpy.__version__,
        "device": "cpu",
        "dtype": "float32",
    }
    info.update(extra)
    return info


def rnd(x):
    """Round a float (or nested list of floats) to SIG_DIGITS significant digits."""
    if isinstance(x, list):
        return [rnd(v) for v in x]
    return float(f"{float(x):.{SIG_DIGITS}g}")


def tensor_to_list(t):
    """A float tensor as nested lists rounded to SIG_DIGITS significant digits."""
    return rnd(t.detach().cpu().double().tolist())


def write_json(name: str, obj: dict, indent=None) -> Path:
    """Write UTF-8 JSON (compact unless `indent` is given) to tests/fixtures/reference/."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / name
    seps = (",", ":") if indent is None else (",", ": ")
    text = json.dumps(obj, ensure_ascii=False, indent=indent, separators=seps)
    path.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(REPO_ROOT)} ({path.stat().st_size:,} bytes)")
    return path


def require(cond: bool, msg: str):
    if not cond:
        print(f"FAILED: {msg}", file=sys.stderr)
        sys.exit(1)
