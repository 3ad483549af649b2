#!/usr/bin/env python
"""Builds ``vitjax/data/imagenet1k.txt`` and ``vitjax/data/imagenet21k.txt``.

How the label files were made (run from the repository root; needs timm
installed, nothing is downloaded)::

    python scripts/make_labels.py            # (re)write both files
    python scripts/make_labels.py --check    # verify the committed files

Source: the lists that ship inside the timm wheel (``timm/data/_info/``;
timm 1.0.31 was used):

* ``imagenet_synsets.txt``: the 1000 WordNet ids of ImageNet-1k in
  class-index order;
* ``imagenet21k_goog_synsets.txt``: the 21,843 WordNet ids in the order of
  the heads of Google's ImageNet-21k ViT checkpoints;
* ``imagenet_synset_to_lemma.txt``: ``<wnid> TAB <lemma, lemma, ...>``.

Each class name is written the way Google's ViT notebook prints ImageNet
labels: the synset's lemmas joined by ``", "``, spaces inside a lemma
replaced by ``"_"`` (index 281 -> ``tabby, tabby_cat``, 817 ->
``sports_car, sport_car``). A synset without a lemma falls back to its
WordNet id. One name per line, ``\\n`` line endings, a final newline:
``imagenet1k.txt`` is then exactly 21,675 bytes.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "vitjax" / "data"
IMAGENET1K_BYTES = 21_675
SPOT_CHECKS = {
    281: "tabby, tabby_cat",
    285: "Egyptian_cat",
    652: "military_uniform",
    817: "sports_car, sport_car",
}


def timm_info_dir() -> Path:
    """``timm/data/_info`` of the installed timm, found without importing timm (and torch)."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("make_labels: timm is not installed; pip install timm (or pass --info DIR)")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "_info"


def read_ids(path: Path) -> List[str]:
    """WordNet ids, one per line, in file order."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_lemmas(path: Path) -> Dict[str, str]:
    """``{wnid: "lemma, lemma"}`` from ``imagenet_synset_to_lemma.txt``."""
    out: Dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        wnid, _, lemmas = line.partition("\t")
        out[wnid.strip()] = lemmas.strip()
    return out


def format_name(wnid: str, lemmas: Dict[str, str]) -> str:
    """Google's notebook form: lemmas joined by ", ", spaces inside a lemma -> "_"."""
    parts = [p.strip().replace(" ", "_") for p in lemmas.get(wnid, "").split(",")]
    parts = [p for p in parts if p]
    return ", ".join(parts) if parts else wnid


def build(info: Path) -> Dict[str, str]:
    """File name -> full file text for both label files."""
    lemmas = read_lemmas(info / "imagenet_synset_to_lemma.txt")
    out = {}
    for fname, src, count in (
        ("imagenet1k.txt", "imagenet_synsets.txt", 1000),
        ("imagenet21k.txt", "imagenet21k_goog_synsets.txt", 21843),
    ):
        ids = read_ids(info / src)
        if len(ids) != count:
            raise SystemExit(f"make_labels: {info / src} has {len(ids)} ids, expected {count}")
        out[fname] = "".join(format_name(i, lemmas) + "\n" for i in ids)
    names = out["imagenet1k.txt"].splitlines()
    for idx, want in SPOT_CHECKS.items():
        if names[idx] != want:
            raise SystemExit(f"make_labels: imagenet1k index {idx} is {names[idx]!r}, expected {want!r}")
    size = len(out["imagenet1k.txt"].encode("utf-8"))
    if size != IMAGENET1K_BYTES:
        raise SystemExit(f"make_labels: imagenet1k.txt would be {size} bytes, expected {IMAGENET1K_BYTES}")
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--info", type=Path, default=None, help="timm's data/_info folder (default: the installed timm's)"
    )
    ap.add_argument("--out", type=Path, default=OUT_DIR, help=f"output folder (default: {OUT_DIR})")
    ap.add_argument("--check", action="store_true", help="compare with the existing files, write nothing")
    args = ap.parse_args(argv)
    files = build(args.info or timm_info_dir())
    bad = 0
    for fname, text in files.items():
        path = args.out / fname
        data = text.encode("utf-8")
        if args.check:
            ok = path.is_file() and path.read_bytes() == data
            print(f"{path}: {'ok' if ok else 'DIFFERS'} ({len(data)} bytes, {text.count(chr(10))} names)")
            bad += not ok
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            print(f"wrote {path} ({len(data)} bytes, {text.count(chr(10))} names)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
