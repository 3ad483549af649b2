"""Whole-dataset runs: batched, multi-device, resumable; how well each layer's attention matches the object.

``python scripts/evaluate.py --ckpt CKPT --data ROOT --out DIR [--batch-size B]``
or :func:`evaluate` from Python. ``ROOT`` is a Caltech101 root (annotations
optional) or any folder of class folders (:func:`vitjax.data.datasets.dataset_records`).

How a run goes (:func:`run`, which knows nothing of maps):

1. The images are listed; this process takes its share
   (:func:`vitjax.data.batching.process_items`); images already in a shard of ``DIR``
   are skipped.
2. :func:`vitjax.data.batching.padded_batches` decodes and preprocesses in a
   background pool (and rasterises the object masks); each batch is split over
   the local devices (:func:`vitjax.data.batching.shard_batch`).
3. A *step* turns a batch into one row per image. The default,
   :func:`map_metrics_step`, computes every map on the devices, upsamples them to
   the scoring grid and reduces the attention to mean attention distances there
   (``[B, L, H, N, N]`` never reaches the host), then scores each map against the
   object (:mod:`vitjax.evaluation.metrics`). Another step (e.g. a perturbation test) plugs
   in unchanged: ``step(batch) -> [row dict per valid row]``.
4. The batch's rows and failures go to ``DIR/shards/p<process>-<n>.json``,
   written atomically before the next batch starts: a SIGKILL loses at most the
   batch in flight, and a rerun computes only what is missing.
5. From all shards, in image order: ``images.csv`` (one row per image, failures
   with their reason), ``summary.json`` (per class and overall), and the figures
   (:mod:`vitjax.evaluation.report`; the metrics figure only with annotations). Files
   whose bytes would not change are not rewritten. They cover exactly the images of
   the run's settings (``run.json``: checkpoint, data, options, size, and the
   ``--per-class``/``--sample`` selection); rows of changed images, damaged shards
   and folders of other settings are handled by :mod:`vitjax.evaluation.runner`.

With several processes (after ``jax.distributed.initialize()``), each runs its
own share on its own devices and process 0 writes the final files after a
barrier (``jax.experimental.multihost_utils.sync_global_devices``).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from vitjax.attribution.maps import maps_and_finite
from vitjax.attribution.options import RolloutOptions, as_options
from vitjax.attribution.rollout import upsample
from vitjax.checkpoints.load import load_checkpoint
from vitjax.data.batching import Batch, local_mesh, replicate, shard_batch
from vitjax.data.datasets import (
    ImageRecord,
    annotation_mask,
    box_mask,
    check_annotation,
    dataset_records,
    load_annotation,
    positive_int,
    sample_records,
)
from vitjax.data.images import preprocess
from vitjax.errors import NonFiniteError, one_line
from vitjax.evaluation.metrics import (
    METRICS,
    area_fraction,
    eval_size,
    gaussian_map,
    mean_attention_distance,
    score_maps,
    uniform_map,
)
from vitjax.evaluation.report import run_notes, write_report
from vitjax.evaluation.runner import (
    INTEGER,
    NUMBER_OR_NULL,
    TEXT_OR_NULL,
    Kind,
    Results,
    Row,
    Step,
    check_outside,
    checkpoint_identity,
    claim_folder,
    refuse_all_non_finite,
    run,
    shown_path,
)
from vitjax.model.forward import finite_rows, non_finite_reason, raise_non_finite
from vitjax.model.memory import plan_batch_size

#: The files :func:`evaluate` writes into its results folder at the end (besides run.json and shards/).
REPORTS = ("images.csv", "summary.json", "metrics_vs_depth.png", "attention_distance.png")

__all__ = ["REPORTS", "Target", "Results", "run", "load_target", "map_names", "maps_program", "score_row", "row_schema",
           "map_metrics_step", "evaluate", "evaluate_run"]

_EXIF_TRANSPOSE = {2: (False, True, 0), 3: (False, False, 2), 4: (True, False, 0), 5: (False, True, 1),
                   6: (False, False, 3), 7: (False, True, 3), 8: (False, False, 1)}  # (flip rows, flip cols, rot90 k)

_PROGRAMS: Dict[Any, Callable] = {}


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
    (:func:`vitjax.data.datasets.annotation_mask`, :func:`vitjax.data.datasets.box_mask`),
    turned like the photo by its EXIF orientation, and reduced by area to
    ``grid_size`` (:func:`vitjax.evaluation.metrics.area_fraction`; object = cells at least
    half covered). An annotation that is unreadable or cannot describe an object in this
    photo (:func:`vitjax.data.datasets.check_annotation`: an inverted box, a box outside
    the photo, an outline far outside it or enclosing nothing) gives no mask and a
    ``note`` with the reason: the image is counted as an invalid annotation, never scored.

    Raises:
      ValueError: the photo's header cannot be read.
    """
    from PIL import Image

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
    except ValueError as e:
        return Target(*shown, note=one_line(e))
    try:
        check_annotation(box, contour, (height, width))
        mask = _orient(annotation_mask(contour, (height, width)), orientation)
        boxm = _orient(box_mask(box, (height, width)), orientation)
    except ValueError as e:
        return Target(*shown, note=f"{record.annotation}: {one_line(e)}")
    rows = area_fraction(boxm.any(1)[:, None], (grid_size[0], 1))  # a box is separable: rows x columns
    cols = area_fraction(boxm.any(0)[None], (1, grid_size[1]))
    return Target(*shown, mask=area_fraction(mask, grid_size) >= 0.5, box=rows * cols)


def map_names(num_layers: int) -> List[str]:
    """Names of the scored maps: the joint map, each layer's own, each cumulative, then the two baselines."""
    return (["joint"] + [f"layer{i:02d}" for i in range(1, num_layers + 1)]
            + [f"cumul{i:02d}" for i in range(1, num_layers + 1)] + ["gaussian", "uniform"])


def maps_program(model, *, options=None, scale: int = 4) -> Tuple[Callable, Tuple[int, int]]:
    """The device half of :func:`map_metrics_step`: one jitted program ``fn(params, images) -> (maps, mad, finite)``.

    :func:`vitjax.compute_maps` with the attention kept; the joint, per-layer and
    cumulative maps (the order of :func:`map_names`, baselines excluded)
    upsampled bilinearly to the scoring grid (``scale`` x the patch grid, see
    :mod:`vitjax.evaluation.metrics`): ``maps [B, 1 + 2L, rh, rw]`` float32 in [0, 1];
    :func:`vitjax.evaluation.metrics.mean_attention_distance` ``mad [B, L, H]`` pixels. The
    attention ``[B, L, H, N, N]`` is reduced where it was computed. ``finite``:
    ``{kind: [B] bool}`` (:func:`vitjax.attribution.maps.maps_and_finite`, the maps
    and distances included), for :func:`vitjax.model.forward.raise_non_finite`. With images
    sharded over a mesh (:func:`vitjax.data.batching.shard_batch`) it runs data parallel.

    Programs are cached per (config, options, scale), so runs in one process compile once.

    Returns:
      ``(fn, (rh, rw))``.
    """
    import jax
    import jax.numpy as jnp

    cfg = model.config
    size = eval_size(cfg.grid, scale)
    options = as_options(options, cfg)
    key = (cfg, options, int(scale))
    if key in _PROGRAMS:
        return _PROGRAMS[key], size

    @jax.jit
    def fn(params, images):
        out, finite = maps_and_finite(model, params, images, options, keep_attention=True)
        maps = jnp.concatenate([out["rollout"][:, None], out["layer"], out["cumulative"]], axis=1)
        mad = mean_attention_distance(out["attention"], cfg.grid, cfg.stride, cfg.num_prefix_tokens)
        maps = upsample(maps, size)
        return maps, mad, {**finite, "maps": finite["maps"] & finite_rows(maps) & finite_rows(mad)}

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


def row_schema(names: Sequence[str], num_layers: int, num_heads: int) -> Dict[str, Kind]:
    """What every key of a :func:`score_row` row may hold (:func:`vitjax.evaluation.runner.row_problem`).

    A shard row read back from disk that does not fit (a metric that is text, a bool or a
    list; a key missing) makes its shard damaged: set aside and computed again.
    """
    flag = Kind("0 or 1", lambda v: type(v) is int and v in (0, 1))
    schema = {"height": INTEGER, "width": INTEGER, "annotated": flag, "object_fraction": NUMBER_OR_NULL,
              "note": TEXT_OR_NULL}
    schema.update({f"{name}_{metric}": NUMBER_OR_NULL for name in names for metric in METRICS})
    schema.update({f"mad_l{layer:02d}_h{h:02d}": NUMBER_OR_NULL for layer in range(1, num_layers + 1)
                   for h in range(1, num_heads + 1)})
    return schema


@functools.lru_cache(maxsize=8)
def _baselines(size: Tuple[int, int]) -> np.ndarray:
    return np.stack([gaussian_map(size), uniform_map(size)])


def map_metrics_step(model, params, *, mesh=None, options=None, scale: int = 4, workers: Optional[int] = None,
                     checkpoint: Optional[str] = None) -> Tuple[Step, Tuple[int, int]]:
    """The default per-batch step: :func:`maps_program` on the devices, :func:`score_row` per image on the host.

    Scoring runs in a thread pool of ``workers`` threads (default: CPU count). An image
    whose logits, attention or maps are not finite (NaN/inf) is never scored: its row is
    ``{"status": "failed", "reason": ...}`` (:func:`vitjax.model.forward.non_finite_reason`,
    naming ``checkpoint``); padded rows are not checked.

    Returns:
      ``(step, grid_size)``: ``step(batch) -> rows`` (one :func:`score_row` dict per
      valid row, in row order; ``step.schema``: :func:`row_schema`, what the runner
      checks every row read back from disk against) and the scoring grid ``(rh, rw)`` the loader
      must reduce masks to (:func:`load_target`).
    """
    import concurrent.futures as cf

    mesh = local_mesh() if mesh is None else mesh
    program, size = maps_program(model, options=options, scale=scale)
    names = map_names(model.config.num_layers)
    params = replicate(params, mesh)
    pool = cf.ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1, thread_name_prefix="vitjax-score")

    def step(batch: Batch) -> List[Row]:
        maps, mad, finite = program(params, shard_batch(batch.images, mesh))
        maps, mad = np.asarray(maps), np.asarray(mad)
        try:
            raise_non_finite(finite, valid=batch.valid)
            bad = {}
        except NonFiniteError as e:  # never a number in a table: the image fails, with the reason
            bad = e.what
        return list(pool.map(lambda r: {"status": "failed", "reason": non_finite_reason(bad[r], checkpoint)}
                             if r in bad else score_row(maps[r], mad[r], batch.extras[r], names), batch.rows))

    step.close = functools.partial(pool.shutdown, wait=True, cancel_futures=True)  # type: ignore[attr-defined]
    step.schema = row_schema(names, model.config.num_layers, model.config.num_heads)  # type: ignore[attr-defined]
    return step, size


def _number(x) -> Optional[float]:
    x = float(x)
    return None if x != x else x  # NaN -> None (JSON null, empty CSV cell)


# --------------------------------------------------------------------------- the command


def _identity(ckpt, data, options: RolloutOptions, scale: int) -> Dict[str, Any]:
    return {**checkpoint_identity(ckpt), "data": str(Path(os.path.expanduser(os.fspath(data))).resolve()),
            "scale": int(scale), "options": options.to_dict()}


def evaluate(ckpt, data, out, *, batch_size: int = 32, options=None, scale: int = 4, workers: Optional[int] = None,
             image_size=None, per_class: Optional[int] = None, sample: Optional[int] = None, seed: int = 0,
             progress: bool = True, note: Optional[Callable[[str], None]] = None,
             memory_budget: Optional[int] = None) -> Path:
    """Evaluates a checkpoint's attention maps over a dataset; see the module docstring.

    Arguments, data and checkpoint are checked before anything is written: a refused run leaves nothing.

    Args:
      ckpt: checkpoint path or name (:func:`vitjax.load_checkpoint`).
      data: Caltech101 root or folder of class folders (:func:`vitjax.evaluation.report.run_notes`).
      out: results folder (created; a rerun resumes).
      batch_size: images per batch at most, rounded up to a multiple of the local devices; smaller when
        ``memory_budget`` asks for it (:func:`vitjax.model.memory.plan_batch_size`), never more than the images.
      memory_budget: bytes the run may use (default: half the memory available now).
      options: :class:`vitjax.RolloutOptions` for the joint and cumulative maps.
      scale: scoring grid = ``scale`` x the patch grid (:func:`vitjax.evaluation.metrics.eval_size`).
      workers: loader and scorer threads (default: CPU count).
      image_size: run the model at this ``(height, width)`` (or square side; position
        embedding resized by :func:`vitjax.load_checkpoint`); default: the checkpoint's.
      per_class, sample, seed: evaluate a deterministic subset
        (:func:`vitjax.data.datasets.sample_records`). The selection is one of the run's
        settings (``run.json``): a results folder holds one image set, and its
        ``summary.json``/``images.csv`` cover exactly that set; a rerun with another
        selection into a folder with results is refused, naming it.
      progress: show a progress bar.
      note: called with each line of :func:`vitjax.evaluation.report.run_notes` before the run.

    Returns:
      the path of ``summary.json`` (written by process 0).

    Raises:
      DatasetError, CheckpointError (ValueErrors, one line): bad arguments, data,
      checkpoint or a results folder of other settings.
      NonFiniteError (a ValueError, one line naming the checkpoint): the model's output is not
      finite (NaN/inf) for every image that reached it; the shards keep each image's reason, no
      summary is written. Where only some images are so, they are listed as failed.
    """
    return evaluate_run(ckpt, data, out, batch_size=batch_size, options=options, scale=scale, workers=workers,
                     image_size=image_size, per_class=per_class, sample=sample, seed=seed, progress=progress,
                     note=note, memory_budget=memory_budget)[0]


def evaluate_run(ckpt, data, out, *, batch_size, options, scale, workers, image_size, per_class, sample, seed,
              progress, note, memory_budget=None) -> Tuple[Path, Results]:
    """:func:`evaluate`, returning ``(summary path, run's Results)``."""
    for name, value in (("batch_size", batch_size), ("scale", scale), ("workers", workers)):
        if value is not None:
            positive_int(name, value)
    out, root = Path(out), Path(os.path.expanduser(os.fspath(data)))
    check_outside(out, root)
    listed = dataset_records(data)
    skipped = getattr(listed, "skipped", ())
    records = sample_records(listed, per_class=per_class, sample=sample, seed=seed)
    model, params = load_checkpoint(ckpt, image_size=image_size)
    options = as_options(options, model.config)
    cfg = model.config
    mesh = local_mesh()
    batch_size = plan_batch_size(cfg, batch_size, workload="evaluate", budget=memory_budget, num_images=len(records),
                                 multiple=mesh.devices.size, scale=scale)
    say = note or (lambda _: None)
    for line in run_notes(records, root, skipped):
        say(line)
    selection = {"per_class": per_class, "sample": sample, "seed": seed if per_class or sample else None}
    ident = {**_identity(ckpt, data, options, scale), "image_size": list(cfg.image_size), "selection": selection}
    taken = claim_folder(out, "run.json", ident, files=REPORTS)
    if taken:
        say(taken)
    step, grid_size = map_metrics_step(model, params, mesh=mesh, options=options, scale=scale, workers=workers,
                                       checkpoint=ident["checkpoint"])

    def load(record):
        return preprocess(record.path, cfg), load_target(record, grid_size)

    try:
        results = run(records, step, out, root=root, load=load, batch_size=batch_size,
                      shape=tuple(cfg.image_size) + (3,), workers=workers, progress=progress)
    finally:
        step.close()
    refuse_all_non_finite(results, ident["checkpoint"])
    if jax.process_index() == 0:
        write_report(out, results, names=map_names(cfg.num_layers), num_layers=cfg.num_layers,
                     num_heads=cfg.num_heads, grid_size=grid_size, run=ident,
                     skipped=[(shown_path(p, root), why) for p, why in skipped],
                     random_weights=bool(getattr(cfg, "random_weights", False)))
    return out / "summary.json", results
