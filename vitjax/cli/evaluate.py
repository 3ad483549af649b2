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


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="evaluate.py", description=_localisation.__doc__.splitlines()[0],
                      epilog="Files in DIR: images.csv, summary.json, metrics_vs_depth.png (with annotations), "
                             "attention_distance.png, run.json, shards/.")
    p.add_argument("--ckpt", required=True, help="checkpoint file (.npz, .safetensors) or name")
    p.add_argument("--data", required=True, metavar="ROOT", help="Caltech101 root or a folder of class folders")
    p.add_argument("--out", required=True, metavar="DIR", help="results folder (a rerun resumes)")
    add_memory_arguments(p, batch_size=32, what="images per batch", batch_type=int)
    p.add_argument("--image-size", type=image_size_arg, default=None, metavar="SIZE",
                   help="model input size: SIZE (square) or HEIGHTxWIDTH, e.g. 384 or 384x512 "
                        "(default: the checkpoint's)")
    p.add_argument("--scale", type=int, default=4, help="scoring grid = SCALE x patch grid (default 4)")
    p.add_argument("--workers", type=int, default=None, help="loader/scorer threads (default: CPU count)")
    p.add_argument("--per-class", type=int, default=None, metavar="K", help="only K images per class")
    p.add_argument("--sample", type=int, default=None, metavar="N", help="only N images in all")
    p.add_argument("--seed", type=int, default=0, help="seed of --per-class/--sample (default 0)")
    add_rollout_arguments(p.add_argument_group("rollout (the joint and cumulative maps)"))
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; returns the exit status (0 done, 2 bad arguments or data, one line on stderr;
    130 on Ctrl-C, after one line saying how many images are kept and that the same command resumes).

    Prints ``"N new, M already done (T in all, F failed); DIR/summary.json"`` on stdout;
    notes (``note: ...``) and ``failed: IMAGE: reason`` lines go to stderr.
    """
    args = _parser().parse_args(argv)
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
            print(f"error: {one_line(e)}", file=sys.stderr)
            return 2
        except (RuntimeError, MemoryError) as e:
            if not is_out_of_memory(e):
                raise
            print(f"error: out of memory with batches of up to {args.batch_size} images; pass a smaller "
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
