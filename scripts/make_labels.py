#!/usr/bin/env python
"""Builds (or with --check verifies) vitjax/data/imagenet{1k,21k}.txt from timm's WordNet lists.

The logic is vitjax.data.labels.build_label_files (see its docstring for the format).
"""
import argparse
import sys
from pathlib import Path

from vitjax.data.labels import build_label_files, timm_info_dir
from vitjax.io import write_atomic

OUT = Path(__file__).resolve().parents[1] / "vitjax" / "data"

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--info", type=Path, help="timm's data/_info folder (default: the installed timm's)")
ap.add_argument("--out", type=Path, default=OUT, help=f"output folder (default: {OUT})")
ap.add_argument("--check", action="store_true", help="compare with the existing files, write nothing")
args = ap.parse_args()
try:
    files = build_label_files(args.info or timm_info_dir())
except (ValueError, OSError) as e:
    sys.exit(f"make_labels: {e}")
bad = 0
for fname, text in files.items():
    path, data = args.out / fname, text.encode("utf-8")
    if args.check:
        ok = path.is_file() and path.read_bytes() == data
        bad += not ok
        print(f"{path}: {'ok' if ok else 'DIFFERS'} ({len(data)} bytes, {text.count(chr(10))} names)")
    else:
        write_atomic(path, data, overwrite=True)
        print(f"wrote {path} ({len(data)} bytes, {text.count(chr(10))} names)")
sys.exit(1 if bad else 0)
