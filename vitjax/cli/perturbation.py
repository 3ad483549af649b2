"""``vitjax-perturbation``: the perturbation test of Chefer, Gur & Wolf (CVPR 2021) over a folder of class folders.

Parses the arguments and calls :func:`vitjax.evaluation.perturbation.run_perturbation`;
prints the AUC table. Exit status 0 when done, 2 for bad arguments or data (one line on stderr).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from vitjax.attribution.options import RolloutOptions
from vitjax.checkpoints.download import resolve_checkpoint
from vitjax.checkpoints.load import checkpoint_sha256, load_checkpoint
from vitjax.cli.common import (
    OneLineParser,
    add_memory_arguments,
    check_data_path,
    check_out_folder,
    check_out_outside,
    is_out_of_memory,
    out_of_memory_line,
    shown,
    terminal_warnings,
)
from vitjax.cli.evaluate import interrupted
from vitjax.data.datasets import dataset_records, positive_int, sample_records, skipped_note
from vitjax.errors import one_line, printable, require_file
from vitjax.evaluation import perturbation
from vitjax.evaluation.runner import check_layout

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``vitjax-perturbation --ckpt CKPT --data ROOT --out DIR``; prints the AUC table.

    Returns the exit status (0 done, 2 bad arguments or data, one line on stderr; 130 on
    Ctrl-C, after one line saying how many images are kept and that the same command
    resumes). Library warnings (a damaged shard recomputed, entries the dataset listing
    skipped) are printed as one ``warning: ...`` line each.
    """
    with terminal_warnings():
        return _main(argv)


def _main(argv: Optional[Sequence[str]]) -> int:
    p = OneLineParser(prog="vitjax-perturbation", description=perturbation.__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True, help="checkpoint file (.npz, .safetensors) or name")
    p.add_argument("--data", required=True, metavar="ROOT", help="folder of class folders (ImageNet val/<wnid>/)")
    p.add_argument("--out", required=True, metavar="DIR", help="results folder (a rerun resumes)")
    p.add_argument("--methods", default=",".join(perturbation.RUNNER_METHODS),
                   help="comma-separated, of " + ", ".join(perturbation.RUNNER_METHODS))
    p.add_argument("--labels", default="dataset", metavar="dataset|predicted|FILE.json",
                   help="score against the folder's label (sorted folder index = the model's class index; "
                        "default), the clean prediction, or a JSON {folder: class index}")
    p.add_argument("--explain", default="predicted", choices=("predicted", "label"), help="class the maps explain")
    p.add_argument("--rollout-start-layer", type=int, default=1, help="rollout's start layer (Chefer et al.: 1)")
    p.add_argument("--resize", default="google", choices=("google", "pil"), help="'pil' as torchvision Resize")
    add_memory_arguments(p, batch_size=16, what="images per batch", batch_type=int)
    p.add_argument("--sample", type=int, default=None, metavar="N", help="a seeded random subset of N images")
    p.add_argument("--workers", type=int, default=None, help="loader threads (default: CPU count)")
    a = p.parse_args(argv)
    try:
        check_out_folder(a.out)
        check_data_path(a.data)
        check_out_outside(a.out, a.data)
        for name in ("batch_size", "sample", "workers"):
            if getattr(a, name) is not None:
                positive_int("--" + name.replace("_", "-"), getattr(a, name))
        check_layout(a.out, ("perturbation_run.json", *perturbation.REPORTS))
        labels: Any = a.labels if a.labels in ("dataset", "predicted") else _read_labels(a.labels)
        every = dataset_records(a.data)
        records = perturbation.relabel(sample_records(every, sample=a.sample), labels)
        ckpt = resolve_checkpoint(a.ckpt)  # a name: the file it resolves to, hashed below
        model, params = load_checkpoint(ckpt)
        notes = (perturbation.label_notes(every, model.config.num_classes, a.data, labels)
                 if model.config.num_classes else [])
        if getattr(every, "skipped", ()):  # kept with the results too: the data were not all read
            notes = [*notes, skipped_note(every.skipped, a.data)]
        for text in notes:
            print(f"warning: {shown(text)}", file=sys.stderr)
        methods = [m.strip() for m in a.methods.split(",") if m.strip()]
        options = {"rollout": RolloutOptions(start_layer=a.rollout_start_layer)}
        res = perturbation.run_perturbation(model, params, records, a.out, root=Path(a.data).expanduser(),
                                            methods=methods,
                               explain=a.explain, options=options, notes=notes,
                               batch_size=a.batch_size, resize=a.resize, workers=a.workers, progress=True,
                               memory_budget=a.memory_budget,
                               settings={"checkpoint": str(a.ckpt), "checkpoint_sha256": checkpoint_sha256(ckpt),
                                         "labels": a.labels, "sample": a.sample})
    except (ValueError, OSError) as e:
        print(f"error: {shown(e)}", file=sys.stderr)
        return 2
    except (RuntimeError, MemoryError) as e:
        if not is_out_of_memory(e):
            raise
        print(f"error: {out_of_memory_line(a.batch_size, None, a.memory_budget, error=e, up_to=True)}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return interrupted(a.out)
    scored, failed = res["images"], len(res["failed"])
    print(f"{scored} of {scored + failed} images scored ({failed} failed), clean top-1 "
          f"{100 * res['clean_accuracy']:.2f} %; AUC x100 (negative: higher is better; positive: lower is better):")
    for m, orders in res["methods"].items():
        print(f"  {m:18s} negative {orders['negative']['auc']:6.2f}   positive {orders['positive']['auc']:6.2f}")
    for image, reason in res["failed"]:
        print(f"failed: {printable(image)}: {shown(reason)}", file=sys.stderr)
    return 0


def _read_labels(path: str) -> Dict[str, int]:
    try:
        mapping = json.loads(Path(require_file(path, "a JSON file", ValueError)).read_text("utf-8"))
    except (OSError, ValueError) as e:  # the reason without the path, named once already
        why = e.strerror if isinstance(e, OSError) and e.strerror else one_line(e)
        why = why[len(f"{path}: "):] if why.startswith(f"{path}: ") else why
        raise ValueError(f"--labels {path}: not 'dataset', 'predicted' or a readable JSON file ({why})") from None
    if not isinstance(mapping, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in mapping.values()):
        raise ValueError(f"--labels {path}: expected a JSON object {{folder name: class index >= 0}}")
    return mapping


def entry() -> None:
    """Console-script entry point (``vitjax-perturbation``)."""
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
