"""Whole-dataset runs: batched, multi-device, resumable; how well each layer's attention matches the object.

``python scripts/evaluate.py --ckpt CKPT --data ROOT --out DIR [--batch-size B]``
or :func:`evaluate` from Python. ``ROOT`` is a Caltech101 root (annotations
optional) or any folder of class folders (:func:`vitjax.datasets.dataset_records`).

How a run goes (:func:`run`, which knows nothing of maps):

1. The images are listed; this process takes its share
   (:func:`vitjax.pipeline.process_items`); images already in a shard of ``DIR``
   are skipped.
2. :func:`vitjax.pipeline.padded_batches` decodes and preprocesses in a
   background pool (and rasterises the object masks); each batch is split over
   the local devices (:func:`vitjax.pipeline.shard_batch`).
3. A *step* turns a batch into one row per image. The default,
   :func:`map_metrics_step`, computes every map on the devices, upsamples them to
   the scoring grid and reduces the attention to mean attention distances there
   (``[B, L, H, N, N]`` never reaches the host), then scores each map against the
   object (:mod:`vitjax.metrics`). Another step (e.g. a perturbation test) plugs
   in unchanged: ``step(batch) -> [row dict per valid row]``.
4. The batch's rows and failures go to ``DIR/shards/p<process>-<n>.json``,
   written atomically before the next batch starts: a SIGKILL loses at most the
   batch in flight, and a rerun computes only what is missing.
5. From all shards, in image order: ``images.csv`` (one row per image, failures
   with their reason), ``summary.json`` (per class and overall), and the figures
   (:mod:`vitjax.evalreport`; the metrics figure only with annotations). Files
   whose bytes would not change are not rewritten.

With several processes (after ``jax.distributed.initialize()``), each runs its
own share on its own devices and process 0 writes the final files after a
barrier (``jax.experimental.multihost_utils.sync_global_devices``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from vitjax.datasets import (
    DatasetError,
    ImageRecord,
    annotation_mask,
    box_mask,
    dataset_records,
    load_annotation,
    positive_int,
    sample_records,
)
from vitjax.io import OneLineParser, file_sha256, image_size_arg, one_line, write_atomic
from vitjax.options import RolloutOptions
from vitjax.pipeline import Batch, local_mesh, padded_batches, process_items, replicate, round_batch_size, shard_batch

__all__ = ["Target", "Results", "run", "load_target", "map_names", "maps_program", "score_row", "map_metrics_step",
           "evaluate", "main", "SHARDS", "FORMAT"]

SHARDS = "shards"
FORMAT = "vitjax-evaluate-shard/1"
_EXIF_TRANSPOSE = {2: (False, True, 0), 3: (False, False, 2), 4: (True, False, 0), 5: (False, True, 1),
                   6: (False, False, 3), 7: (False, True, 3), 8: (False, False, 1)}  # (flip rows, flip cols, rot90 k)

Row = Dict[str, Any]
_PROGRAMS: Dict[Any, Callable] = {}
Step = Callable[[Batch], List[Row]]


@dataclass(frozen=True)
class Target:
    """What the scorer needs of one photo (the ``extra`` of :func:`padded_batches`).

    Attributes:
      height, width: the photo's size in pixels (as displayed, EXIF applied).
      mask: ``[rh, rw]`` bool object mask on the scoring grid, or None.
      box: ``[rh, rw]`` float box coverage in [0, 1], or None.
      note: why an annotation could not be used ("" when fine or absent).
    """

    height: int
    width: int
    mask: Optional[np.ndarray] = None
    box: Optional[np.ndarray] = None
    note: str = ""


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    flip_rows, flip_cols, k = _EXIF_TRANSPOSE.get(orientation, (False, False, 0))
    a = a[::-1] if flip_rows else a
    a = a[:, ::-1] if flip_cols else a
    return np.rot90(a, k)


def load_target(record: ImageRecord, grid_size: Tuple[int, int]) -> Target:
    """The photo's size and, when annotated, its object mask and box on the scoring grid.

    The annotation is rasterised at the photo's stored size
    (:func:`vitjax.datasets.annotation_mask`, :func:`vitjax.datasets.box_mask`),
    turned like the photo by its EXIF orientation, and reduced by area to
    ``grid_size`` (:func:`vitjax.metrics.area_fraction`; object = cells at least
    half covered). A broken annotation gives no mask and a ``note``.

    Raises:
      ValueError: the photo's header cannot be read.
    """
    from PIL import Image

    from vitjax.metrics import area_fraction

    try:
        with Image.open(record.path) as im:
            width, height = im.size
            orientation = int(im.getexif().get(0x0112, 1))
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{record.path}: cannot read image ({one_line(e)})") from None
    shown = (width, height) if orientation in (5, 6, 7, 8) else (height, width)
    if record.annotation is None:
        return Target(*shown)
    try:
        box, contour = load_annotation(record.annotation)
        mask = _orient(annotation_mask(contour, (height, width)), orientation)
        boxm = _orient(box_mask(box, (height, width)), orientation)
    except ValueError as e:
        return Target(*shown, note=one_line(e))
    rows = area_fraction(boxm.any(1)[:, None], (grid_size[0], 1))  # a box is separable: rows x columns
    cols = area_fraction(boxm.any(0)[None], (1, grid_size[1]))
    return Target(*shown, mask=area_fraction(mask, grid_size) >= 0.5, box=rows * cols)


def map_names(num_layers: int) -> List[str]:
    """Names of the scored maps: the joint map, each layer's own, each cumulative, then the two baselines."""
    return (["joint"] + [f"layer{i:02d}" for i in range(1, num_layers + 1)]
            + [f"cumul{i:02d}" for i in range(1, num_layers + 1)] + ["gaussian", "uniform"])


def maps_program(model, *, options=None, scale: int = 4) -> Tuple[Callable, Tuple[int, int]]:
    """The device half of :func:`map_metrics_step`: one jitted program ``fn(params, images) -> (maps, mad)``.

    :func:`vitjax.compute_maps` with the attention kept; the joint, per-layer and
    cumulative maps (the order of :func:`map_names`, baselines excluded)
    upsampled bilinearly to the scoring grid (``scale`` x the patch grid, see
    :mod:`vitjax.metrics`): ``maps [B, 1 + 2L, rh, rw]`` float32 in [0, 1];
    :func:`vitjax.metrics.mean_attention_distance` ``mad [B, L, H]`` pixels. The
    attention ``[B, L, H, N, N]`` is reduced where it was computed. With images
    sharded over a mesh (:func:`vitjax.pipeline.shard_batch`) it runs data parallel.

    Programs are cached per (config, options, scale), so runs in one process compile once.

    Returns:
      ``(fn, (rh, rw))``.
    """
    import jax
    import jax.numpy as jnp

    from vitjax.attention import upsample
    from vitjax.maps import compute_maps
    from vitjax.metrics import eval_size, mean_attention_distance

    cfg = model.config
    size = eval_size(cfg.grid, scale)
    options = (RolloutOptions() if options is None else options).for_config(cfg)
    key = (cfg, options, int(scale))
    if key in _PROGRAMS:
        return _PROGRAMS[key], size

    @jax.jit
    def fn(params, images):
        out = compute_maps(model, params, images, options, keep_attention=True)
        maps = jnp.concatenate([out["rollout"][:, None], out["layer"], out["cumulative"]], axis=1)
        mad = mean_attention_distance(out["attention"], cfg.grid, cfg.stride, cfg.num_prefix_tokens)
        return upsample(maps, size), mad

    _PROGRAMS[key] = fn
    return fn, size


def score_row(maps: np.ndarray, mad: np.ndarray, target: Target, names: Sequence[str]) -> Row:
    """The host half of :func:`map_metrics_step` for one image: metadata, every metric, every distance.

    Args:
      maps: ``[1 + 2L, rh, rw]`` from :func:`maps_program`; the Gaussian and
        uniform baselines are added here.
      mad: ``[L, H]`` pixels.
      target: the photo's :class:`Target`.
      names: :func:`map_names` of the model.

    Returns:
      ``{"height", "width", "annotated", "object_fraction", "note", "<map>_<metric>"...,
      "mad_l<l>_h<h>"...}``; None where a value is undefined (NaN).
    """
    from vitjax.metrics import METRICS, score_maps

    row: Row = {"height": target.height, "width": target.width, "annotated": int(target.mask is not None),
                "object_fraction": float(target.mask.mean()) if target.mask is not None else None,
                "note": target.note}
    scores = score_maps(np.concatenate([maps, _baselines(maps.shape[-2:])]), target.mask, target.box)
    for i, name in enumerate(names):
        for metric in METRICS:
            row[f"{name}_{metric}"] = _number(scores[metric][i])
    for (layer, h), v in np.ndenumerate(mad):
        row[f"mad_l{layer + 1:02d}_h{h + 1:02d}"] = _number(v)
    return row


@functools.lru_cache(maxsize=8)
def _baselines(size: Tuple[int, int]) -> np.ndarray:
    from vitjax.metrics import gaussian_map, uniform_map

    return np.stack([gaussian_map(size), uniform_map(size)])


def map_metrics_step(model, params, *, mesh=None, options=None, scale: int = 4, workers: Optional[int] = None
                     ) -> Tuple[Step, Tuple[int, int]]:
    """The default per-batch step: :func:`maps_program` on the devices, :func:`score_row` per image on the host.

    Scoring runs in a thread pool of ``workers`` threads (default: CPU count).

    Returns:
      ``(step, grid_size)``: ``step(batch) -> rows`` (one :func:`score_row` dict per
      valid row, in row order) and the scoring grid ``(rh, rw)`` the loader
      must reduce masks to (:func:`load_target`).
    """
    import concurrent.futures as cf

    mesh = local_mesh() if mesh is None else mesh
    program, size = maps_program(model, options=options, scale=scale)
    names = map_names(model.config.num_layers)
    params = replicate(params, mesh)
    pool = cf.ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1, thread_name_prefix="vitjax-score")

    def step(batch: Batch) -> List[Row]:
        maps, mad = program(params, shard_batch(batch.images, mesh))
        maps, mad = np.asarray(maps), np.asarray(mad)
        return list(pool.map(lambda r: score_row(maps[r], mad[r], batch.extras[r], names), batch.rows))

    step.close = pool.shutdown  # type: ignore[attr-defined]
    return step, size


def _number(x) -> Optional[float]:
    x = float(x)
    return None if x != x else x  # NaN -> None (JSON null, empty CSV cell)


# --------------------------------------------------------------------------- the generic runner


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
      step: ``step(batch) -> rows`` for the batch's valid rows (see :func:`map_metrics_step`).
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
    import jax
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

        multihost_utils.sync_global_devices("vitjax.evaluate.run")
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


# --------------------------------------------------------------------------- the command


def _identity(ckpt, data, options: RolloutOptions, scale: int) -> Dict[str, Any]:
    path = Path(os.path.expanduser(os.fspath(ckpt)))
    return {"checkpoint": path.name, "checkpoint_sha256": file_sha256(path) if path.is_file() else None,
            "data": str(Path(os.path.expanduser(os.fspath(data))).resolve()), "scale": int(scale),
            "options": options.to_dict()}


def evaluate(ckpt, data, out, *, batch_size: int = 32, options=None, scale: int = 4, workers: Optional[int] = None,
             image_size=None, per_class: Optional[int] = None, sample: Optional[int] = None, seed: int = 0,
             progress: bool = True, note: Optional[Callable[[str], None]] = None) -> Path:
    """Evaluates a checkpoint's attention maps over a dataset; see the module docstring.

    Arguments, data and checkpoint are checked before anything is written: a refused run leaves nothing.

    Args:
      ckpt: checkpoint path or name (:func:`vitjax.load_checkpoint`).
      data: Caltech101 root or folder of class folders (:func:`vitjax.evalreport.run_notes`).
      out: results folder (created; a rerun resumes).
      batch_size: images per batch, rounded up to a multiple of the local devices.
      options: :class:`vitjax.RolloutOptions` for the joint and cumulative maps.
      scale: scoring grid = ``scale`` x the patch grid (:func:`vitjax.metrics.eval_size`).
      workers: loader and scorer threads (default: CPU count).
      image_size: run the model at this ``(height, width)`` (or square side; position
        embedding resized by :func:`vitjax.load_checkpoint`); default: the checkpoint's.
      per_class, sample, seed: evaluate a deterministic subset
        (:func:`vitjax.datasets.sample_records`).
      progress: show a progress bar.
      note: called with each line of :func:`vitjax.evalreport.run_notes` before the run.

    Returns:
      the path of ``summary.json`` (written by process 0).

    Raises:
      DatasetError, CheckpointError (ValueErrors, one line): bad arguments, data,
      checkpoint or a results folder of other settings.
    """
    return _evaluate(ckpt, data, out, batch_size=batch_size, options=options, scale=scale, workers=workers,
                     image_size=image_size, per_class=per_class, sample=sample, seed=seed, progress=progress,
                     note=note)[0]


def _evaluate(ckpt, data, out, *, batch_size, options, scale, workers, image_size, per_class, sample, seed,
              progress, note) -> Tuple[Path, Results]:
    """:func:`evaluate`, returning ``(summary path, run's Results)``."""
    from vitjax.checkpoint import load_checkpoint
    from vitjax.evalreport import claim_folder, run_notes, write_report
    from vitjax.preprocess import preprocess

    for name, value in (("batch_size", batch_size), ("scale", scale), ("workers", workers)):
        if value is not None:
            positive_int(name, value)
    out, root = Path(out), Path(os.path.expanduser(os.fspath(data)))
    records = sample_records(dataset_records(data), per_class=per_class, sample=sample, seed=seed)
    model, params = load_checkpoint(ckpt, image_size=image_size)
    options = (RolloutOptions() if options is None else options).for_config(model.config)
    cfg = model.config
    mesh = local_mesh()
    batch_size = round_batch_size(batch_size, mesh)
    for line in run_notes(records, root):
        (note or (lambda _: None))(line)
    ident = {**_identity(ckpt, data, options, scale), "image_size": list(cfg.image_size)}
    claim_folder(out, "run.json", ident)
    step, grid_size = map_metrics_step(model, params, mesh=mesh, options=options, scale=scale, workers=workers)

    def load(record):
        return preprocess(record.path, cfg), load_target(record, grid_size)

    try:
        results = run(records, step, out, root=root, load=load, batch_size=batch_size,
                      shape=tuple(cfg.image_size) + (3,), workers=workers, progress=progress)
    finally:
        step.close()
    import jax

    if jax.process_index() == 0:
        write_report(out, results, names=map_names(cfg.num_layers), num_layers=cfg.num_layers,
                     num_heads=cfg.num_heads, grid_size=grid_size, run=ident)
    return out / "summary.json", results


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="evaluate.py", description=__doc__.splitlines()[0],
                      epilog="Files in DIR: images.csv, summary.json, metrics_vs_depth.png (with annotations), "
                             "attention_distance.png, run.json, shards/.")
    p.add_argument("--ckpt", required=True, help="checkpoint file (.npz, .safetensors) or name")
    p.add_argument("--data", required=True, metavar="ROOT", help="Caltech101 root or a folder of class folders")
    p.add_argument("--out", required=True, metavar="DIR", help="results folder (a rerun resumes)")
    p.add_argument("--batch-size", type=int, default=32, metavar="B", help="images per batch (default 32)")
    p.add_argument("--image-size", type=image_size_arg, default=None, metavar="SIZE",
                   help="model input size: SIZE (square) or HEIGHTxWIDTH, e.g. 384 or 384x512 "
                        "(default: the checkpoint's)")
    p.add_argument("--scale", type=int, default=4, help="scoring grid = SCALE x patch grid (default 4)")
    p.add_argument("--workers", type=int, default=None, help="loader/scorer threads (default: CPU count)")
    p.add_argument("--per-class", type=int, default=None, metavar="K", help="only K images per class")
    p.add_argument("--sample", type=int, default=None, metavar="N", help="only N images in all")
    p.add_argument("--seed", type=int, default=0, help="seed of --per-class/--sample (default 0)")
    p.add_argument("--head-fusion", default="mean", choices=("mean", "max", "min"))
    p.add_argument("--discard-ratio", type=float, default=0.0)
    p.add_argument("--start-layer", type=int, default=0)
    p.add_argument("--no-residual", action="store_true", help="rollout without the identity for the residual")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; returns the exit status (0 done, 2 bad arguments or data, one line on stderr).

    Prints ``"N new, M already done (T in all, F failed); DIR/summary.json"`` on stdout;
    notes (``note: ...``) and ``failed: IMAGE: reason`` lines go to stderr.
    """
    from vitjax.evalreport import counts_line

    args = _parser().parse_args(argv)
    try:
        options = _options(args)
        for name in ("batch_size", "scale", "workers", "per_class", "sample"):
            if getattr(args, name) is not None:
                positive_int("--" + name.replace("_", "-"), getattr(args, name))
        summary, results = _evaluate(args.ckpt, args.data, args.out, batch_size=args.batch_size, options=options,
                                     scale=args.scale, workers=args.workers, image_size=args.image_size,
                                     per_class=args.per_class, sample=args.sample, seed=args.seed,
                                     progress=not args.no_progress,
                                     note=lambda line: print(f"note: {line}", file=sys.stderr))
    except (ValueError, OSError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    print(f"{counts_line(results, results.new)}; {summary}")
    for r in results:
        if r["status"] == "failed":
            print(f"failed: {r['image']}: {r['reason']}", file=sys.stderr)
    return 0


def _options(args) -> RolloutOptions:
    return RolloutOptions(head_fusion=args.head_fusion, discard_ratio=args.discard_ratio,
                          start_layer=args.start_layer, residual=not args.no_residual)
