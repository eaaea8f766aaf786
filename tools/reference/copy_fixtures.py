#!/usr/bin/env python3
"""Copy the small inputs the tests need from shared/ into tests/fixtures/.

A user's clone has no ../shared, so the tests read these copies:

  shared/fixtures/tiny_random/{gpt2,llama,bert}/{config.json,model.safetensors,generation_config.json}
      -> tests/fixtures/tiny_random/<family>/   (byte-for-byte)
  shared/tokenizers/gpt2/tokenizer.json
      -> tests/fixtures/tokenizers/gpt2/tokenizer.json
         re-serialized as compact JSON (3.56 MB pretty-printed -> ~1.56 MB); the parsed JSON is
         asserted equal to the original. Pass --verbatim-tokenizer for a byte-for-byte copy.

    /path/to/venv/bin/python tools/reference/copy_fixtures.py [--shared ../shared]

Prints the sha256 of every source and copy (recorded in tests/fixtures/README.md).
"""

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_SHARED, REPO_ROOT, require  # noqa: E402

FAMILIES = ("gpt2", "llama", "bert")
MODEL_FILES = ("config.json", "model.safetensors", "generation_config.json")


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help=f"shared/ directory (default {DEFAULT_SHARED})")
    ap.add_argument("--verbatim-tokenizer", action="store_true", help="copy tokenizer.json byte-for-byte")
    args = ap.parse_args()
    shared = args.shared.resolve()
    dest_root = REPO_ROOT / "tests" / "fixtures"

    for fam in FAMILIES:
        src_dir = shared / "fixtures" / "tiny_random" / fam
        dst_dir = dest_root / "tiny_random" / fam
        dst_dir.mkdir(parents=True, exist_ok=True)
        for name in MODEL_FILES:
            src = src_dir / name
            if not src.is_file():
                require(name == "generation_config.json", f"missing {src}")
                print(f"  (no {fam}/{name} in shared/)")
                continue
            dst = dst_dir / name
            shutil.copyfile(src, dst)
            dst.chmod(0o644)
            require(sha(src) == sha(dst), f"copy of {src} differs")
            print(f"  {dst.relative_to(REPO_ROOT)}  {dst.stat().st_size:>9,} B  sha256 {sha(dst)}")

    src = shared / "tokenizers" / "gpt2" / "tokenizer.json"
    dst = dest_root / "tokenizers" / "gpt2" / "tokenizer.json"
    dst.parent.mkdir(parents=True, exist_ok=True)
    if args.verbatim_tokenizer:
        shutil.copyfile(src, dst)
    else:
        data = json.loads(src.read_text(encoding="utf-8"))
        dst.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
        require(json.loads(dst.read_text(encoding="utf-8")) == data, "compact tokenizer.json is not JSON-equal")
    dst.chmod(0o644)
    print(f"  source {src} {src.stat().st_size:,} B sha256 {sha(src)}")
    print(f"  {dst.relative_to(REPO_ROOT)}  {dst.stat().st_size:>9,} B  sha256 {sha(dst)}")


if __name__ == "__main__":
    main()
