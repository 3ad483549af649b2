"""``vitjax-synthetic``: write a checkpoint of random weights in Google's ``.npz`` layout, to try vitjax offline.

The weights come from :func:`vitjax.checkpoints.synthetic.random_checkpoint`; exit
status 0 when written, 2 for bad arguments, 1 when the file cannot be written.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

import numpy as np

from vitjax.checkpoints.synthetic import random_checkpoint, save_npz
from vitjax.cli.common import OneLineParser, checked
from vitjax.model.config import VARIANTS, get_config

__all__ = ["main"]


def _num_classes(text: str):
    if text.lower() in ("none", "0"):
        return None
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of classes or 'none', got {text!r}")
    return n


def _build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="vitjax-synthetic",
        description="Write a checkpoint of random weights in Google's .npz layout (realistic scales, peaked "
        "attention), to try vitjax offline. Its predictions and maps mean nothing about images.",
    )
    p.add_argument("--variant", required=True, choices=list(VARIANTS), metavar="NAME",
                   help=f"architecture: {', '.join(VARIANTS)}")
    p.add_argument("--out", required=True, metavar="PATH", help="the .npz file to write (its folder is created)")
    p.add_argument("--seed", type=int, default=0, help="NumPy seed (default: %(default)s)")
    p.add_argument("--image-size", type=checked(int, lambda n: n >= 1, "a square size in pixels"), metavar="SIZE",
                   help="square input size in pixels, as in Google's files (default: the variant's, 224); "
                        "load_checkpoint(path, image_size=(h, w)) runs it at any other size")
    p.add_argument("--num-classes", type=_num_classes, metavar="N", default=argparse.SUPPRESS,
                   help="classes of the head, or 'none' for a model without head (default: the variant's, 1000)")
    p.add_argument("--attention-peak", type=float, default=2.0, metavar="STD",
                   help="standard deviation of the attention logits (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace PATH if it exists")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``vitjax-synthetic``: writes one random checkpoint and prints what it wrote.

    Returns:
      0 on success; 2 on bad arguments (unknown variant, a bad size, an existing file without
      ``--overwrite``, a path that is not ``.npz``), 1 when the file cannot be written; the
      reason on one line of stderr.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    prog = parser.prog
    out = os.path.abspath(os.path.expanduser(args.out))
    if not out.lower().endswith(".npz"):
        parser.error(f"--out must name an .npz file, got {args.out!r}")
    if os.path.isdir(out):
        parser.error(f"--out {args.out!r} is a directory")
    if os.path.exists(out) and not args.overwrite:
        parser.error(f"{args.out} exists; pass --overwrite to replace it")
    overrides = {}
    if args.image_size is not None:
        overrides["image_size"] = args.image_size
    if hasattr(args, "num_classes"):  # given ("none" is None); absent otherwise
        overrides["num_classes"] = args.num_classes
    try:
        config = get_config(args.variant, **overrides)
    except ValueError as e:
        parser.error(str(e))
    if not (np.isfinite(args.attention_peak) and args.attention_peak > 0):
        parser.error(f"--attention-peak must be a positive number, got {args.attention_peak}")

    flat = random_checkpoint(config, seed=args.seed, attention_peak=args.attention_peak)
    try:
        os.makedirs(os.path.dirname(out), exist_ok=True)
        save_npz(flat, out)
    except OSError as e:
        print(f"{prog}: error: cannot write {args.out} ({' '.join(str(e).split())})", file=sys.stderr)
        return 1
    count = sum(int(a.size) for a in flat.values())
    h, w = config.image_size
    head = "no head" if config.num_classes is None else f"{config.num_classes} classes"
    size = os.path.getsize(out)
    size_text = f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"
    layers = f"{config.num_layers} layer{'s' if config.num_layers != 1 else ''}"
    print(f"wrote {out}: random {args.variant} ({layers} x {config.num_heads} heads, {h}x{w} px, "
          f"{head}, {count:,} parameters, {size_text}, seed {args.seed})")
    print(f"try: vitjax-visualize --ckpt {out}  (random weights: predictions and maps mean nothing)")
    return 0


def entry() -> None:
    """Console-script entry point (``vitjax-synthetic``)."""
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
