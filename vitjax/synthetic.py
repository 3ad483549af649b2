"""Random checkpoints in Google's ``.npz`` layout, for tests, benchmarks and demos.

Weights are drawn at a realistic scale (activations stay O(1) through depth,
attention logits have a standard deviation of about ``attention_peak`` so the
softmax is peaked as in trained models), which makes parity tests meaningful:
near-uniform attention would hide errors.

From the command line (offline, no download)::

    python -m vitjax.synthetic --variant ViT-B_16 --out vit-b16-random.npz
    vitjax-visualize --ckpt vit-b16-random.npz

It prints the file it wrote; bad arguments exit with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, Optional, Sequence

import numpy as np

from vitjax.checkpoint import expected_shapes
from vitjax.config import ViTConfig
from vitjax.model import ViT

__all__ = ["main", "random_checkpoint", "save_npz"]


def random_checkpoint(config: ViTConfig, *, seed: int = 0, attention_peak: float = 2.0) -> Dict[str, np.ndarray]:
    """Random float32 arrays for every key of ``config``'s checkpoint.

    Args:
      config: the architecture (keys and shapes follow :class:`vitjax.ViT`,
        which mirrors Google's files).
      seed: NumPy seed.
      attention_peak: target standard deviation of the attention logits.

    Returns:
      ``{"Transformer/encoderblock_0/...": ndarray}`` flat, ``/``-joined.
    """
    rng = np.random.default_rng(seed)
    d = config.hidden_size
    out: Dict[str, np.ndarray] = {}
    for key, shape in expected_shapes(ViT(config)).items():
        leaf = key.rsplit("/", 1)[-1]
        parent = key.rsplit("/", 2)[-2] if key.count("/") else ""
        if leaf == "scale" and parent == "gn3":
            # The last GroupNorm of each ResNet unit is zero-initialised in BiT/ViT
            # hybrids and stays small after training; with O(1) scales a random
            # 16-unit ResNet is chaotic (float32 rounding grows ~1000x through it).
            a = 0.2 + 0.05 * rng.standard_normal(shape)
        elif leaf == "scale":
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif leaf == "bias":
            a = 0.05 * rng.standard_normal(shape)
        elif leaf == "cls" or leaf == "pos_embedding":
            a = 0.1 * rng.standard_normal(shape)
        elif parent in ("query", "key"):
            a = rng.standard_normal(shape) * np.sqrt(attention_peak / d)
        elif leaf == "kernel" and parent.startswith(("conv", "conv_")):
            a = rng.standard_normal(shape)  # weight-standardised at use time
        elif leaf == "kernel":
            fan_in = int(np.prod(shape[:-1])) if parent != "out" else int(shape[0] * shape[1])
            a = rng.standard_normal(shape) / np.sqrt(fan_in)
        else:
            a = 0.1 * rng.standard_normal(shape)
        out[key] = a.astype(np.float32)
    return out


def save_npz(flat: Dict[str, np.ndarray], path: os.PathLike) -> str:
    """Writes ``flat`` as an uncompressed ``.npz`` atomically (temp file beside it, then rename).

    Returns the path as a string. A failed write removes the temp file and leaves ``path`` as it was.
    """
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **flat)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _image_size(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a square size in pixels, got {text!r}")
    return n


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
    from vitjax.config import VARIANTS

    p = _Parser(
        prog="python -m vitjax.synthetic",
        description="Write a checkpoint of random weights in Google's .npz layout (realistic scales, peaked "
        "attention), to try vitjax offline. Its predictions and maps mean nothing about images.",
    )
    p.add_argument("--variant", required=True, choices=list(VARIANTS), metavar="NAME",
                   help=f"architecture: {', '.join(VARIANTS)}")
    p.add_argument("--out", required=True, metavar="PATH", help="the .npz file to write (its folder is created)")
    p.add_argument("--seed", type=int, default=0, help="NumPy seed (default: %(default)s)")
    p.add_argument("--image-size", type=_image_size, metavar="SIZE",
                   help="square input size in pixels, as in Google's files (default: the variant's, 224); "
                        "load_checkpoint(path, image_size=(h, w)) runs it at any other size")
    p.add_argument("--num-classes", type=_num_classes, metavar="N", default=argparse.SUPPRESS,
                   help="classes of the head, or 'none' for a model without head (default: the variant's, 1000)")
    p.add_argument("--attention-peak", type=float, default=2.0, metavar="STD",
                   help="standard deviation of the attention logits (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace PATH if it exists")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m vitjax.synthetic``: writes one random checkpoint and prints what it wrote.

    Returns:
      0 on success; 2 on bad arguments (unknown variant, a bad size, an existing file without
      ``--overwrite``, a path that is not ``.npz``), 1 when the file cannot be written; the
      reason on one line of stderr.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    from vitjax.config import get_config

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


if __name__ == "__main__":
    sys.exit(main())
