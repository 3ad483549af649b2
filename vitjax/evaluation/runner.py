"""The generic resumable runner: records in, one row per image out, atomic shards on disk.

:func:`run` knows nothing of maps: a *step* turns a padded batch
(:func:`vitjax.data.batching.padded_batches`) into one row dict per valid image
(the localisation metrics of :mod:`vitjax.evaluation.localisation`, the
perturbation curves of :mod:`vitjax.evaluation.perturbation`). Each batch's rows
and failures go to ``DIR/shards/p<process>-<n>.json``, written atomically before
the next batch starts: a SIGKILL loses at most the batch in flight, and a rerun
computes only what is missing. Each process takes its share of the records
(:func:`vitjax.data.batching.process_items`); with several processes, all of them
meet at a barrier before the results are read back.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax

from vitjax.data.batching import Batch, padded_batches, process_items
from vitjax.data.datasets import ImageRecord, positive_int
from vitjax.errors import DatasetError, one_line
from vitjax.io import write_atomic

__all__ = ["FORMAT", "SHARDS", "Results", "Row", "Step", "claim_folder", "counts_line", "run"]

SHARDS = "shards"
FORMAT = "vitjax-evaluate-shard/1"

Row = Dict[str, Any]
Step = Callable[[Batch], List[Row]]


class Results(list):
    """What :func:`run` returns: a list of rows, plus ``new``, how many of them this call computed."""

    new: int = 0


def _read_shards(folder: Path) -> Tuple[Dict[str, Row], Dict[str, str]]:
    rows: Dict[str, Row] = {}
    failed: Dict[str, str] = {}
    for path in sorted(folder.glob("p*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as e:
            raise DatasetError(f"{path}: unreadable shard ({one_line(e)}); delete it to recompute its images") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DatasetError(f"{path}: not a shard of this runner (format {FORMAT!r} expected)")
        rows.update((r["image"], r) for r in data["rows"])
        failed.update((f["image"], f["reason"]) for f in data["failed"])
    return rows, failed


def run(records: Sequence[ImageRecord], step: Step, out_dir, *, root, load: Callable, batch_size: int,
        shape: Sequence[int], workers: Optional[int] = None, progress: bool = True
        ) -> List[Row]:
    """Runs ``step`` over every record not yet in a shard of ``out_dir``; returns all results.

    Args:
      records: the images (all processes pass the same list; each takes its share).
      step: ``step(batch) -> rows`` for the batch's valid rows (e.g.
        :func:`vitjax.evaluation.localisation.map_metrics_step`).
      out_dir: results folder; shards go to ``out_dir/shards``.
      root: the dataset root, above every record; an image's key is its path
        relative to it (POSIX), so results survive moving the dataset.
      load: ``load(record) -> (x [H, W, 3] float32, extra)``; ValueError = unreadable.
      batch_size: rows per batch, a multiple of the local device count.
      shape: ``(H, W, 3)`` of ``x``.
      workers, progress: loader threads; show a tqdm bar (images/s) on stderr.

    Returns:
      :class:`Results`: one dict per finished image (all shards), in ``records``
      order: ``{"image", "class", "label", "status": "ok", "reason": "",
      **step_row}`` or ``{..., "status": "failed", "reason": why}``; ``.new`` of
      them computed by this call. Unfinished images (another process's share still
      running) are absent.

    Raises:
      DatasetError: a record outside ``root`` (before anything is written), an unreadable shard.
      ValueError: ``batch_size`` or ``workers`` not positive (before anything is written).
    """
    from tqdm import tqdm

    root = Path(root)
    shards = Path(out_dir) / SHARDS
    key = {r.path: _key(r.path, root) for r in records}
    positive_int("batch_size", batch_size)
    if workers is not None:
        positive_int("workers", workers)
    shards.mkdir(parents=True, exist_ok=True)
    rows, failed = _read_shards(shards)
    mine = process_items(records)
    todo = [r for r in mine if key[r.path] not in rows and key[r.path] not in failed]
    prefix = f"p{jax.process_index():03d}-"
    serial = 1 + max((int(p.stem[len(prefix):]) for p in shards.glob(prefix + "*.json")), default=0)
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), unit="img", disable=not progress or None,
               dynamic_ncols=True, file=sys.stderr)
    try:
        for batch in padded_batches(todo, load, batch_size, shape=shape, workers=workers):
            out = step(batch) if batch.count else []
            meta = [_meta(r, key) for _, r, _ in batch.loaded()]
            shard = {"format": FORMAT, "rows": [{**m, **o} for m, o in zip(meta, out, strict=True)],
                     "failed": [{**_meta(r, key), "reason": why} for r, why in batch.failed]}
            write_atomic(shards / f"{prefix}{serial:06d}.json", json.dumps(shard, allow_nan=False).encode())
            serial += 1
            rows.update((r["image"], r) for r in shard["rows"])
            failed.update((f["image"], f["reason"]) for f in shard["failed"])
            bar.update(len(batch.items))
    finally:
        bar.close()
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("vitjax.evaluation.runner.run")
        rows, failed = _read_shards(shards)
    results = Results()
    for r in records:
        k = key[r.path]
        if k in rows:
            results.append({**_meta(r, key), "status": "ok", "reason": "", **rows[k]})
        elif k in failed:
            results.append({**_meta(r, key), "status": "failed", "reason": failed[k]})
    results.new = len(todo)
    return results


def _key(path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        raise DatasetError(f"{path}: not inside the dataset root {root}") from None


def _meta(record: ImageRecord, key) -> Row:
    return {"image": key[record.path], "class": record.class_name, "label": record.label}


def claim_folder(out, name: str, ident: Dict[str, Any]) -> None:
    """Creates ``out`` and records a run's settings in ``out/name``; refuses a folder holding other settings.

    Call it after every check of the run: it is the run's first write.

    Raises:
      vitjax.data.datasets.DatasetError: ``out/name`` holds other settings (one line).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    data = (json.dumps(ident, indent=1, sort_keys=True) + "\n").encode()
    try:
        write_atomic(path, data)
    except FileExistsError:
        if path.read_bytes() != data:
            raise DatasetError(f"{path}: {out} holds results of other settings; use another --out") from None


def counts_line(results: Sequence[Dict[str, Any]], new: int) -> str:
    """The console's account of a run: ``"2 new, 4 already done (6 in all, 1 failed)"``.

    Args:
      results: every finished image (:func:`run`), ``status`` "ok" or "failed".
      new: how many of them this run computed (the rest were in the shards before).
    """
    failed = sum(1 for r in results if r.get("status") == "failed")
    return f"{new} new, {len(results) - new} already done ({len(results)} in all, {failed} failed)"
