"""Head importance over a dataset: each head's mean and spread of single-head ablation effects.

``vitjax-evaluate --method head-importance --ckpt CKPT --data ROOT --out DIR`` or
:func:`importance_run` from Python; the localisation evaluator
(:mod:`vitjax.evaluation.localisation`) is its sibling behind the same command and runner.

For every image, :func:`vitjax.head_importance` ablates each head of each layer alone
(``mode`` "zero" or "mean", as :func:`vitjax.ablate_heads`) and measures the change of
the target logit, ``ablated - clean`` (Michel, Levy & Neubig, "Are Sixteen Heads Really
Better than One?", NeurIPS 2019), or, for a model without a trained head (DINOv2; a
head of zeros), the cosine of the ablated features to the clean ones minus 1. The
rows go through the resumable runner (:func:`vitjax.evaluation.runner.run`: atomic
shards, a rerun computes only what is missing, every row read back is checked against
:func:`row_schema`), and process 0 writes, each atomically:

* ``head_importance.json``: the run's settings (checkpoint and its SHA-256, data,
  mode, target, image size, selection), what the numbers are (``quantity``), the
  counts, the ``[L][H]`` mean and population standard deviation over the images
  (:func:`aggregate_importance`), the same per class, and the failures;
* ``head_importance.png``: the mean as an ``L x H`` heat map, the spread in each cell
  (:func:`importance_figure`);
* ``images.csv``: one row per image, failures with their reason, with its target class
  and its three most important heads (``"L.H"``, 1-based; :func:`top_heads`).

Layers and heads are 0-based in the arrays and 1-based in the figure and the CSV.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from vitjax.attribution.importance import (
    CPU_IMAGES,
    DEFAULT_BUDGET,
    _check_settings,
    _importance,
    _targets,
    ablation_bytes,
    chunk_size,
)
from vitjax.checkpoints.load import head_is_zero, load_checkpoint
from vitjax.data.batching import Batch, local_mesh, replicate, shard_batch
from vitjax.data.datasets import dataset_records, positive_int, sample_records, skipped_note
from vitjax.data.images import preprocess
from vitjax.evaluation.report import write_if_changed
from vitjax.evaluation.runner import (
    INTEGER,
    Kind,
    Results,
    Row,
    Step,
    check_outside,
    checkpoint_identity,
    claim_folder,
    number_array,
    refuse_all_non_finite,
    run,
    shown_path,
)
from vitjax.model.forward import check_images, non_finite_reason
from vitjax.model.memory import default_budget, plan_batch_size
from vitjax.model.vit import ViT

__all__ = ["QUANTITIES", "aggregate_importance", "importance_figure", "importance_run", "importance_step",
           "row_schema", "top_heads", "write_importance_report"]

#: What the numbers are, by the model's readout: a trained head's target logit, or the features' cosine.
QUANTITIES = {"logits": "target logit change", "features": "feature cosine - 1"}
_MEANINGS = {"logits": "ablated - clean logit of the target class; negative: the head supports the class",
             "features": "cosine(ablated, clean features) - 1, <= 0; the more negative, the more the features "
                         "depend on the head"}
_CELL_TEXT_HEADS = 16  # up to this many heads per layer the figure prints each cell's mean (and std)
_CSV_COLUMNS = ("image", "class", "label", "status", "reason", "target_class", "top_heads")


def row_schema(num_layers: int, num_heads: int, num_classes: Optional[int]) -> Dict[str, Kind]:
    """What every key of an :func:`importance_step` row may hold (:func:`vitjax.evaluation.runner.row_problem`).

    ``head_importance``: an ``L x H`` array of finite numbers (a 2-D
    :func:`vitjax.evaluation.runner.number_array` of exactly this model's shape); ``target_class``:
    an integer class of the head, ``[0, num_classes)``, or -1 for a model without one. A shard row
    read back from disk that does not fit makes its shard damaged: set aside and computed again.
    """
    grid = number_array(2)

    def shaped(v: Any) -> bool:
        return grid.test(v) and len(v) == num_layers and all(len(r) == num_heads for r in v)

    if num_classes:
        target = Kind(f"an integer in [0, {num_classes - 1}]",
                      lambda v: INTEGER.test(v) and 0 <= v < num_classes)
    else:
        target = Kind("-1 (a model without a head)", lambda v: INTEGER.test(v) and v == -1)
    return {"head_importance": Kind(f"a {num_layers} x {num_heads} array of finite numbers", shaped),
            "target_class": target}


def importance_step(model: ViT, params, *, target=None, mode: str = "zero", budget: int = DEFAULT_BUDGET,
                    checkpoint: Optional[str] = None, mesh=None) -> Step:
    """A step of the dataset runner (:func:`vitjax.evaluation.runner.run`): one row of head importance per image.

    ``step(batch) -> [{"head_importance": [[float] * H] * L, "target_class": int}, ...]`` for the
    batch's valid rows (``[L][H]`` float32 values of :func:`vitjax.head_importance`, layers and
    heads 0-based; ``target_class`` -1 for a headless model). ``mode="mean"`` takes the mean over
    the batch's valid rows only (padding rows are zeros), so its numbers depend on the batching; a
    batch with one valid row fails that row (its mean is itself). Aggregate the rows with
    :func:`aggregate_importance`. An image whose clean output or importance is not finite
    (NaN/inf) is never a number in the table: its row is ``{"status": "failed", "reason": ...}``
    (:func:`vitjax.model.forward.non_finite_reason`, naming ``checkpoint``). ``step.schema``
    (:func:`row_schema`) is what the runner checks every row read back from disk against.

    Args:
      model, params: from :func:`vitjax.load_checkpoint`.
      target, mode, budget: as :func:`vitjax.head_importance` (``budget``: bytes of the ablations in
        flight, :func:`vitjax.attribution.importance.chunk_size`).
      checkpoint: the checkpoint's name, for the failure reasons.
      mesh: from :func:`vitjax.data.batching.local_mesh`: each batch is split over its devices
        (data parallel; the batch size must be a multiple of the device count). None: the default device.

    Raises:
      ValueError: bad mode, budget or target (at once, before any batch).
    """
    _check_settings(mode, budget)
    if target is not None:
        _targets(model, target, 1)
    if mesh is not None:
        params = replicate(params, mesh)

    def step(batch: Batch) -> List[Row]:
        check_images(model, batch.images)
        b = batch.images.shape[0]
        images = jnp.asarray(batch.images) if mesh is None else shard_batch(batch.images, mesh)
        imp, classes, finite = _importance(model, params, images, _targets(model, target, b),
                                           jnp.asarray(batch.valid, jnp.float32), mode=mode,
                                           chunk=chunk_size(model.config, b, budget))
        imp, classes = np.asarray(imp), np.asarray(classes)
        flags = {k: np.asarray(v, bool) for k, v in finite.items()}
        rows: List[Row] = []
        alone = mode == "mean" and len(batch.rows) < 2  # the mean of one image is that image: nothing ablated
        for r in batch.rows:
            bad = [k for k, f in flags.items() if not f[r]]
            if alone:
                rows.append({"status": "failed", "reason": "mean ablation in a batch of one image: the mean is the "
                                                           "image itself, nothing would be ablated"})
            elif bad:  # never a number in a table: the image fails, with the reason
                rows.append({"status": "failed", "reason": non_finite_reason(bad, checkpoint)})
            else:
                rows.append({"head_importance": imp[r].tolist(), "target_class": int(classes[r])})
        return rows

    c = model.config
    step.schema = row_schema(c.num_layers, c.num_heads, c.num_classes)  # type: ignore[attr-defined]
    return step


def aggregate_importance(rows: Union[np.ndarray, Sequence[Mapping[str, Any]]]) -> Dict[str, Any]:
    """Mean and spread of head importance over a dataset.

    Args:
      rows: ``[n, L, H]`` values, or the runner's rows (dicts; those without ``head_importance``,
        e.g. failed images, are skipped).

    Returns:
      ``{"mean": [L, H], "std": [L, H], "count": n}`` (float64; ``std`` is the population standard
      deviation, ddof 0; NaN where ``n == 0``).

    Raises:
      ValueError: values that are not ``[n, L, H]`` or rows of different shapes.
    """
    if isinstance(rows, np.ndarray) or hasattr(rows, "shape"):
        values = np.asarray(rows, np.float64)
    else:
        kept = [r["head_importance"] for r in rows if isinstance(r, Mapping) and "head_importance" in r]
        try:
            values = np.asarray(kept, np.float64)
        except ValueError:
            raise ValueError("head importance rows of different shapes (several models in one run?)") from None
    if values.ndim != 3:
        if values.size == 0:
            return {"mean": np.full((0, 0), np.nan), "std": np.full((0, 0), np.nan), "count": 0}
        raise ValueError(f"head importance must be [n, L, H], got shape {values.shape}")
    n = values.shape[0]
    if n == 0:
        nan = np.full(values.shape[1:], np.nan)
        return {"mean": nan, "std": nan.copy(), "count": 0}
    return {"mean": values.mean(axis=0), "std": values.std(axis=0), "count": int(n)}


def top_heads(table, k: int = 3) -> List[str]:
    """The ``k`` most important heads of an ``[L, H]`` table, ``"L.H"`` 1-based (``"3.5"``: layer 3, head 5).

    Most important = the lowest value: the largest fall of the target logit, or the largest change of
    the features (their cosine furthest below 1). Ties go to the lower layer, then the lower head.
    """
    t = np.asarray(table, np.float64)
    if t.ndim != 2:
        raise ValueError(f"table must be [L, H], got shape {t.shape}")
    order = np.argsort(t.reshape(-1), kind="stable")[:k]
    return [f"{i // t.shape[1] + 1}.{i % t.shape[1] + 1}" for i in order]


# --------------------------------------------------------------------------- the run


def _headless(model: ViT, params) -> Tuple[ViT, Any]:
    """The model read by its features: the classifier head dropped (an all-zero head predicts nothing)."""
    return type(model)(model.config.replace(num_classes=None), model.dtype), \
        {k: v for k, v in params.items() if k != "head"}


def _ablation_reserve(config, budget: int) -> int:
    """Bytes of ablations in flight beyond one per image (:func:`vitjax.attribution.importance.chunk_size`).

    A batch of ``B`` runs ``chunk`` ablations at once, ``chunk x ablation_bytes(B) <= max(budget,
    ablation_bytes(B))``; on CPU also ``chunk x B <= CPU_IMAGES``. The ``ablation_bytes(B)`` part grows
    with the batch (counted per image by the ``"importance"`` workload); this is the rest.
    """
    if jax.default_backend() == "cpu":
        return min(int(budget), CPU_IMAGES * ablation_bytes(config, 1))
    return int(budget)


def importance_run(ckpt, data, out, *, batch_size: int = 32, mode: str = "zero", target: Optional[int] = None,
                   budget: Optional[int] = None, image_size=None, per_class: Optional[int] = None,
                   sample: Optional[int] = None, seed: int = 0, workers: Optional[int] = None, progress: bool = True,
                   note: Optional[Callable[[str], None]] = None,
                   memory_budget: Optional[int] = None) -> Tuple[Path, Results]:
    """Head importance of a checkpoint over a dataset: mean and spread per head; see the module docstring.

    Arguments, data and checkpoint are checked before anything is written: a refused run leaves nothing.

    Args:
      ckpt: checkpoint path or name (:func:`vitjax.load_checkpoint`).
      data: Caltech101 root or folder of class folders (:func:`vitjax.data.datasets.dataset_records`).
      out: results folder (created; a rerun with the same settings resumes; other settings are refused).
      batch_size: images per batch at most, rounded up to a multiple of the local devices; smaller when
        ``memory_budget`` asks for it (:func:`vitjax.model.memory.plan_batch_size`, workload
        ``"importance"``: the clean cache, one ablation per image and the ablations' budget), never
        more than the images.
      mode: ``"zero"`` (each head's output ``hook_z`` set to 0). ``"mean"`` is refused: a mean over a
        batch depends on the batching, so a run's numbers would depend on ``batch_size`` and the memory.
      target: the class whose logit is measured, an index of the head; None: each image's predicted
        class. Only for a model with a trained head.
      budget: bytes the ablations in flight may use (:func:`vitjax.attribution.importance.chunk_size`);
        default: 2 GiB, at most a quarter of the memory budget. Not a setting of the results (it changes
        the speed, not the numbers).
      image_size, per_class, sample, seed, workers, progress: as :func:`vitjax.evaluation.localisation.evaluate`.
      note: called with one-line notes before the run (images skipped by the listing, an unlabelled
        folder, a head of zeros read by its features, a folder taken over).
      memory_budget: bytes the run may use (default: half the memory available now).

    Returns:
      ``(path of head_importance.json, the run's Results)``; the files are written by process 0.

    Raises:
      DatasetError, CheckpointError (ValueErrors, one line): bad arguments, data, checkpoint or a
        results folder of other settings; ValueError: a ``target`` out of the head's range or for a
        model without a trained head. MemoryBudgetError: not even one image fits ``memory_budget``.
      NonFiniteError (a ValueError, one line naming the checkpoint): the model's output is not
        finite (NaN/inf) for every image that reached it; the shards keep each image's reason, no
        report is written. Where only some images are so, they are listed as failed.
    """
    for name, value in (("batch_size", batch_size), ("workers", workers)):
        if value is not None:
            positive_int(name, value)
    _check_settings(mode, 1 if budget is None else budget)
    if mode == "mean":
        raise ValueError("mode 'mean' is not offered for a dataset run: the mean over a batch depends on how the "
                         "images are batched (--batch-size, the memory budget, the last batch's size); use mode "
                         "'zero', or vitjax.head_importance(..., mode='mean') on a batch you fix")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, np.integer))):
        raise ValueError(f"target must be a class index (an integer), got {target!r}")
    out, root = Path(out), Path(os.path.expanduser(os.fspath(data)))
    check_outside(out, root)  # before anything is written: a refused run leaves nothing
    listed = dataset_records(data)
    skipped = getattr(listed, "skipped", ())
    records = sample_records(listed, per_class=per_class, sample=sample, seed=seed)
    model, params = load_checkpoint(ckpt, image_size=image_size)
    notes = [skipped_note(skipped, root)] if skipped else []
    if records and all(r.class_name is None for r in records):
        notes.append(f"{root}: no class folders; its {len(records)} images form one unlabelled group")
    head = "none" if not model.config.num_classes else "zero" if head_is_zero(params) else "trained"
    ident = checkpoint_identity(ckpt)
    if target is not None and head != "trained":
        what = "no classification head" if head == "none" else "a classification head of zeros"
        raise ValueError(f"target {target}: {ident['checkpoint']} has {what}; its head importance is measured on "
                         "the features' cosine, for no class: leave the target out")
    if head == "zero":  # its logits are all 0: no logit moves, the features do
        model, params = _headless(model, params)
        notes.append(f"{ident['checkpoint']}: the classification head is all zeros; head importance is measured "
                     "on the features' cosine")
    cfg = model.config
    if target is not None:
        _targets(model, int(target), 1)  # in the head's range, before anything is written
    mesh = local_mesh()
    memory = default_budget() if memory_budget is None else int(memory_budget)
    budget = min(DEFAULT_BUDGET, max(1, memory // 4)) if budget is None else int(budget)
    batch_size = plan_batch_size(cfg, batch_size, workload="importance", budget=memory, num_images=len(records),
                                 multiple=mesh.devices.size, ablations=_ablation_reserve(cfg, budget))
    say = note or (lambda _: None)
    for line in notes:
        say(line)
    selection = {"per_class": per_class, "sample": sample, "seed": seed if per_class or sample else None}
    ident = {**ident, "method": "head-importance", "mode": mode, "target": None if target is None else int(target),
             "data": str(root.resolve()), "image_size": list(cfg.image_size), "selection": selection}
    taken = claim_folder(out, "run.json", ident)
    if taken:
        say(taken)
    step = importance_step(model, params, target=target, mode=mode, budget=budget, checkpoint=ident["checkpoint"],
                           mesh=mesh)

    def load(record):
        return preprocess(record.path, cfg), None

    results = run(records, step, out, root=root, load=load, batch_size=batch_size,
                  shape=tuple(cfg.image_size) + (3,), workers=workers, progress=progress)
    refuse_all_non_finite(results, ident["checkpoint"])
    if jax.process_index() == 0:
        write_importance_report(out, results, run=ident, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
                                kind="logits" if cfg.num_classes else "features",
                                random_weights=bool(getattr(cfg, "random_weights", False)),
                                skipped=[(shown_path(p, root), why) for p, why in skipped])
    return out / "head_importance.json", results


# --------------------------------------------------------------------------- files and figure


def _table(a: np.ndarray) -> Optional[List[List[Optional[float]]]]:
    """``[L, H]`` as nested lists for JSON (NaN -> null); None without values."""
    if a.size == 0:
        return None
    return [[None if not math.isfinite(v) else float(v) for v in row] for row in a.tolist()]


def _summary(rows: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    agg = aggregate_importance(rows)
    mean = agg["mean"]
    return {"count": agg["count"], "mean": _table(mean), "std": _table(agg["std"]),
            "top_heads": top_heads(mean) if agg["count"] else []}


def write_importance_report(out, results: Sequence[Mapping[str, Any]], *, run: Mapping[str, Any], num_layers: int,
                            num_heads: int, kind: str, random_weights: bool = False,
                            skipped: Sequence[Tuple[str, str]] = ()) -> List[Path]:
    """Writes ``head_importance.json``, ``head_importance.png`` and ``images.csv`` to ``out`` (module docstring).

    Each file is written atomically, and only when its bytes change (a resumed run rewrites nothing
    it would write the same; :func:`vitjax.evaluation.report.write_if_changed`).

    Args:
      results: one dict per image in image order (:func:`vitjax.evaluation.runner.run` with
        :func:`importance_step`): ``image, class, label, status, reason`` and, when "ok",
        ``head_importance [L][H]`` and ``target_class``.
      run: the run's settings (``run.json``), copied into the JSON and named in the figure's title.
      num_layers, num_heads: of the model.
      kind: ``"logits"`` (target logit change) or ``"features"`` (feature cosine - 1): :data:`QUANTITIES`.
      random_weights: the checkpoint holds random weights; the JSON and the figure's title say so.
      skipped: ``(path, reason)`` the dataset listing left out.

    Returns:
      the paths of the three files.

    Raises:
      ValueError: rows of different shapes, or not ``[num_layers][num_heads]`` (before anything is written).
    """
    out = Path(out)
    results = list(results)
    rows = [r for r in results if r["status"] == "ok"]
    failures = [r for r in results if r["status"] != "ok"]
    for r in rows:
        if np.shape(r["head_importance"]) != (num_layers, num_heads):
            raise ValueError(f"{r['image']}: head importance of shape {np.shape(r['head_importance'])}, not "
                             f"[{num_layers}, {num_heads}] (a results row of another model?)")
    classes: Dict[str, List[Mapping[str, Any]]] = {}
    for r in rows:
        if r.get("class") is not None:
            classes.setdefault(r["class"], []).append(r)
    overall = _summary(rows)
    summary = {
        "run": dict(run),
        "quantity": QUANTITIES[kind],
        "meaning": _MEANINGS[kind],
        "random_weights": bool(random_weights),
        "count": overall["count"],
        "failed": len(failures),
        "total": len(results),
        "mean": overall["mean"],
        "std": overall["std"],
        "top_heads": overall["top_heads"],
        "per_class": {c: _summary(rs) for c, rs in classes.items()},
        "failures": [{"image": f["image"], "reason": f["reason"]} for f in failures],
        "skipped": [{"path": str(p), "reason": why} for p, why in skipped],
    }
    paths = [out / "head_importance.json", out / "head_importance.png", out / "images.csv"]
    write_if_changed(paths[0], (json.dumps(summary, indent=1, allow_nan=False) + "\n").encode("utf-8"))
    values = np.asarray([r["head_importance"] for r in rows], np.float64).reshape(-1, num_layers, num_heads)
    agg = aggregate_importance(values)
    fig = importance_figure(agg["mean"] if agg["count"] else None, agg["std"] if agg["count"] > 1 else None,
                            quantity=_colour_label(kind, run.get("target")),
                            title=_title(run, agg["count"], kind, random_weights, num_heads),
                            random_weights=random_weights)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    write_if_changed(paths[1], buf.getvalue())
    write_if_changed(paths[2], _csv(results))
    return paths


def _colour_label(kind: str, target) -> str:
    if kind == "features":
        return "cosine(ablated, clean features) \u2212 1"
    return ("logit of " + ("each image's top-1 class" if target is None else f"class {target}")
            + ": ablated \u2212 clean")


def _title(run: Mapping[str, Any], count: int, kind: str, random_weights: bool, num_heads: int) -> str:
    size = run.get("image_size")
    at = f" at {size[0]}\u00d7{size[1]} px" if isinstance(size, (list, tuple)) and len(size) == 2 else ""
    shown = count > 1 and num_heads <= _CELL_TEXT_HEADS  # the std is printed in the cells
    spread = " (\u00b1\u00a0std)" if shown else ""  # a no-break space: never wrapped apart
    what = "target logit change" if kind == "logits" else "feature cosine \u2212 1"
    how = "its mean over the batch" if run.get("mode") == "mean" else "zero"
    name = f"{run.get('checkpoint')}" + (" (random weights)" if random_weights else "")
    return (f"Head importance of {name}{at}: {what} when one head's output is set to {how}, "
            f"mean over {count} image{'s' if count != 1 else ''}{spread}")


def _csv(results: Sequence[Mapping[str, Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_CSV_COLUMNS)
    for r in results:
        ok = r["status"] == "ok"
        w.writerow([r["image"], r.get("class") or "", "" if r.get("label") is None else r["label"], r["status"],
                    r.get("reason") or "", r["target_class"] if ok else "",
                    " ".join(top_heads(r["head_importance"])) if ok else ""])
    return buf.getvalue().encode("utf-8")


def importance_figure(mean: Optional[np.ndarray], std: Optional[np.ndarray] = None, *, quantity: str, title: str = "",
                      random_weights: bool = False):
    """The run's head importance as an ``L x H`` heat map: rows layers 1..L, columns heads 1..H, diverging at 0.

    Args:
      mean: ``[L, H]`` (:func:`aggregate_importance`), or None (no image: the figure says so).
      std: ``[L, H]``, printed under each cell's mean (``±``), or None (one image).
      quantity: the colour bar's label (what the values are).
      title: above the map (wrapped).
      random_weights: a red line between the title and the map says that the checkpoint holds random
        weights (the numbers mean nothing about the images).

    Returns:
      a ``matplotlib.figure.Figure`` (no pyplot state). Cell text only up to ``_CELL_TEXT_HEADS`` (16) heads per layer.
    """
    import textwrap

    from matplotlib.colors import Normalize, TwoSlopeNorm
    from matplotlib.figure import Figure

    wrapped = textwrap.fill(title, 80)
    banner = "random weights: these numbers mean nothing about the images" if random_weights else ""
    if mean is None:
        fig = Figure(figsize=(7, 2.2), layout="constrained")
        ax = fig.subplots()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no image was evaluated (see images.csv for the reasons)", ha="center", va="center")
        ax.set_title(banner, fontsize=9, color="tab:red")
        fig.suptitle(wrapped, fontsize=9)
        return fig
    t = np.asarray(mean, np.float64)
    L, H = t.shape
    cell = 0.55 if H <= _CELL_TEXT_HEADS else 0.3
    fig = Figure(figsize=(max(6.0, 1.6 + H * cell + 1.6), 1.9 + L * cell + 0.15 * wrapped.count("\n")),
                 layout="constrained")
    ax = fig.subplots()
    ax.set_title(banner, fontsize=9, color="tab:red")
    finite = np.isfinite(t)
    bound = float(np.abs(t[finite]).max()) if finite.any() and np.abs(t[finite]).max() > 0 else 1.0
    if finite.any() and t[finite].max() <= 0:  # e.g. feature cosine - 1: one-sided, white at 0
        im = ax.imshow(t, cmap="Blues_r", norm=Normalize(-bound, 0.0), aspect="auto")
    else:  # diverging around 0: blue = the head supports the target, red = it works against it
        im = ax.imshow(t, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -bound, bound), aspect="auto")
    ax.set_xticks(np.arange(H), [str(h + 1) for h in range(H)], fontsize=7)
    ax.set_yticks(np.arange(L), [str(layer + 1) for layer in range(L)], fontsize=7)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    if H <= _CELL_TEXT_HEADS:
        s = None if std is None else np.asarray(std, np.float64)
        size = 8 if H <= 8 else 6
        for i in range(L):
            for j in range(H):
                text = f"{t[i, j]:.2g}" + ("" if s is None else f"\n\u00b1{s[i, j]:.1g}")
                ax.text(j, i, text, ha="center", va="center", fontsize=size if s is None else size - 1,
                        color="white" if abs(t[i, j]) > 0.6 * bound else "black")
    bar = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    bar.ax.tick_params(labelsize=7)
    # the label wrapped to the bar's height (a 1-layer map is ~2 inches tall: one line would be cut)
    bar.set_label(textwrap.fill(quantity, max(16, int((0.9 + L * cell) * 72 / (0.55 * 8)))), fontsize=8)
    fig.suptitle(wrapped, fontsize=9)
    return fig
