"""The perturbation test of explanation maps (Chefer, Gur & Wolf, CVPR 2021), batched and jitted.

Protocol, as in their ``baselines/ViT/pertubation_eval_from_hdf5.py`` and
``generate_visualizations.py`` (Transformer-Explainability):

1. each map ``[gh, gw]`` is upsampled bilinearly (half-pixel centres, as
   ``F.interpolate(scale_factor=16, mode="bilinear")``) to the input ``[H, W]``
   and min-max normalised;
2. for k in 10 %, 20 %, ..., 90 %, the ``int(H * W * k)`` pixels with the
   highest map values (*positive* perturbation: most relevant first) or the
   lowest (*negative*: least relevant first) are set to 0 in [0, 1] pixel space,
   i.e. before the model's normalisation ``(x - mean) / std`` -- so a removed
   pixel enters the model as ``-mean / std`` in every channel;
3. top-1 correctness of the perturbed image against the true label (their
   ``target``) or, for unlabelled data, the clean image's predicted class;
4. AUC: the trapezoidal rule over x = 0, 0.1, ..., 0.9 of the accuracy,
   the clean accuracy at x = 0 included, times 100 (at most 90).

Ties between equal map values are broken by pixel index (row-major, lower
first) for both orders; PyTorch's ``topk`` leaves them unspecified.
Their published ViT-B/16 numbers (ImageNet val, predicted class explained):
negative: rollout 53.1, relevance propagation 54.16; positive: relevance
propagation 17.03. :func:`run_perturbation` runs the test over a dataset
through the resumable runner of :mod:`vitjax.evaluation.localisation`;
``vitjax-perturbation --help`` (:mod:`vitjax.cli.perturbation`) is its command line.

Reproducing the published table (ViT-B/16 at 224 = Google's ``ViT-B_16-224``,
which timm's ``vit_base_patch16_224`` of 2021 was; ImageNet val as 1000 class
folders ``val/<wnid>/``, whose sorted order is the class index)::

    vitjax-perturbation --ckpt ViT-B_16-224 --data IMAGENET/val --out runs/chefer \\
        --labels dataset --explain predicted --resize pil --rollout-start-layer 1 --batch-size 64

``--resize pil`` is torchvision's ``Resize((224, 224))`` of their loader. Their
"relevance propagation" row is their LRP-based method, which vitjax does not
implement; ``generic`` is their ICCV 2021 follow-up.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from vitjax.attribution import methods as _methods
from vitjax.attribution.class_maps import class_gradients, maps_from_gradients
from vitjax.attribution.maps import attention_maps
from vitjax.attribution.options import RolloutOptions, as_options
from vitjax.attribution.rollout import upsample
from vitjax.data.batching import local_mesh, replicate, shard_batch
from vitjax.data.datasets import positive_int
from vitjax.data.images import RESIZE_METHODS, preprocess
from vitjax.errors import NonFiniteError
from vitjax.evaluation.runner import (
    INTEGER,
    Kind,
    check_outside,
    claim_folder,
    refuse_all_non_finite,
    run,
    text_matching,
)
from vitjax.io import write_atomic
from vitjax.model.forward import finite_rows, non_finite_reason, raise_non_finite
from vitjax.model.memory import plan_batch_size

__all__ = ["STEPS", "ORDERS", "RUNNER_METHODS", "ModelApply", "removal_counts", "fill_value", "pixel_ranks",
           "remove_pixels", "perturbation_correct", "auc", "relabel", "label_notes", "perturbation_step", "summarize",
           "run_perturbation", "write_results", "plot_curves", "write_results", "plot_curves", "REPORTS"]

#: The files :func:`run_perturbation` writes into its results folder at the end (:func:`write_results`).
REPORTS = ("perturbation.json", "perturbation.csv", "perturbation.png")

STEPS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # fractions of the pixels removed
ORDERS = ("positive", "negative")  # most relevant first / least relevant first


@dataclasses.dataclass(frozen=True)
class ModelApply:
    """``apply(params, images) -> logits`` of a :class:`vitjax.ViT` (hashable: a jit static argument)."""

    model: Any

    def __call__(self, params, images):
        return self.model.apply({"params": params}, images)


def removal_counts(num_pixels: int, steps: Sequence[float] = STEPS) -> Tuple[int, ...]:
    """Pixels removed at each step: ``int(num_pixels * k)`` (as the published code), 0 first.

    Raises:
      ValueError: a step outside [0, 1].
    """
    for k in steps:
        if not 0.0 <= float(k) <= 1.0:
            raise ValueError(f"steps must be fractions in [0, 1], got {k!r}")
    return (0,) + tuple(int(num_pixels * float(k)) for k in steps)


def fill_value(pixel_mean: Sequence[float], pixel_std: Sequence[float]) -> jnp.ndarray:
    """``[3]`` float32: a pixel set to 0 in [0, 1] space, after ``(x - mean) / std``."""
    return -jnp.asarray(pixel_mean, jnp.float32) / jnp.asarray(pixel_std, jnp.float32)


@functools.partial(jax.jit, static_argnames=("size", "positive"))
def pixel_ranks(maps, *, size: Tuple[int, int], positive: bool) -> jnp.ndarray:
    """Removal order of every pixel: ``maps [B, gh, gw]`` -> int32 ``[B, H, W]``, 0 = removed first.

    Maps are upsampled bilinearly (half-pixel centres, no antialiasing) to
    ``size = (H, W)`` and min-max normalised per image; ``positive`` ranks the
    highest values first, otherwise the lowest; ties go to the lower pixel index.
    """
    h, w = size
    up = upsample(maps, (h, w)).reshape(-1, h * w)
    lo, hi = up.min(axis=1, keepdims=True), up.max(axis=1, keepdims=True)
    up = jnp.where(hi > lo, (up - lo) / jnp.where(hi > lo, hi - lo, 1.0), 0.0)
    order = jnp.argsort(-up if positive else up, axis=1, stable=True)  # pixel indices, removal order

    def invert(o):
        return jnp.zeros_like(o).at[o].set(jnp.arange(o.shape[0], dtype=o.dtype))

    return jax.vmap(invert)(order).astype(jnp.int32).reshape(-1, h, w)


def remove_pixels(images, ranks, count, fill) -> jnp.ndarray:
    """``images [B, H, W, 3]`` with the ``count`` first-ranked pixels set to ``fill [3]`` (model units)."""
    return jnp.where((ranks < count)[..., None], fill.astype(images.dtype), images)


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _curve(apply_fn, params, images, ranks, labels, fill, counts):
    def step(count):
        logits = apply_fn(params, remove_pixels(images, ranks, count, fill))
        return jnp.argmax(logits, axis=-1).astype(jnp.int32), finite_rows(logits)

    preds, finite = jax.lax.map(step, counts)  # [1 + K, B] each; counts[0] = 0: the clean images
    truth = jnp.where(labels < 0, preds[0], labels)
    return preds == truth[None], preds, {"logits": finite[0], "perturbed logits": jnp.all(finite[1:], axis=0)}


def perturbation_correct(
    apply_fn: Callable,
    params,
    images,
    maps,
    labels=None,
    *,
    positive: bool,
    steps: Sequence[float] = STEPS,
    pixel_mean: Sequence[float] = (0.5, 0.5, 0.5),
    pixel_std: Sequence[float] = (0.5, 0.5, 0.5),
    valid=None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Top-1 correctness of each image at 0 % and at each step of pixel removal.

    Args:
      apply_fn: hashable ``apply_fn(params, images [B, H, W, 3]) -> logits [B, C]``
        (a jit static argument), e.g. ``ModelApply(model)``.
      images: ``[B, H, W, 3]`` float32, already normalised for the model.
      maps: ``[B, gh, gw]`` (any grid; upsampled to ``H x W``).
      labels: int ``[B]`` true classes; ``None`` or entries < 0 mean the clean
        image's predicted class.
      positive: remove the highest-ranked pixels first (else the lowest).
      steps: fractions removed after the clean point (default 0.1 ... 0.9).
      pixel_mean, pixel_std: the model's normalisation in [0, 1] pixel units.
      valid: ``[B]`` bool, the rows that hold an image (None: all): only they are
        checked for non-finite logits (reduced in the compiled program, at every step).

    Returns:
      ``(correct [1 + K, B] bool, predictions [1 + K, B] int32)``; row 0 is the
      clean image (0 pixels removed, the input unchanged).

    Raises:
      ValueError: shapes that do not match, a step outside [0, 1].
      NonFiniteError: logits of a valid row not finite (NaN/inf) for the clean or a
        perturbed image (an argmax of NaN is no prediction); ``.result`` is the pair above.
    """
    images = jnp.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [B, H, W, 3], got shape {images.shape}")
    b, h, w, _ = images.shape
    if np.ndim(maps) != 3 or np.shape(maps)[0] != b:
        raise ValueError(f"maps must be [B, gh, gw] with B = {b}, got shape {np.shape(maps)}")
    labels = np.full((b,), -1) if labels is None else np.asarray(labels)
    if labels.shape != (b,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an int array of shape ({b},), got {labels.dtype} {labels.shape}")
    counts = jnp.asarray(removal_counts(h * w, steps), jnp.int32)
    ranks = pixel_ranks(maps, size=(h, w), positive=bool(positive))
    correct, preds, finite = _curve(apply_fn, params, images, ranks, jnp.asarray(labels, jnp.int32),
                                    fill_value(pixel_mean, pixel_std), counts)
    result = (np.asarray(correct), np.asarray(preds))
    raise_non_finite(finite, valid=valid, result=result)
    return result


def auc(accuracy, steps: Sequence[float] = STEPS) -> float:
    """Area under the accuracy curve ``[1 + K]`` (fractions; x = 0 then ``steps``), trapezoidal rule, x100."""
    x = np.asarray((0.0,) + tuple(float(s) for s in steps))
    y = np.asarray(accuracy, np.float64)
    if y.shape != x.shape:
        raise ValueError(f"accuracy must have {x.size} points (clean + {x.size - 1} steps), got shape {y.shape}")
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2 * 100)


# --- the dataset runner -----------------------------------------------------------------------

#: The methods the test can rank pixels by: one map per image (:mod:`vitjax.attribution.methods`).
RUNNER_METHODS = _methods.names(single=True)


def relabel(records: Sequence[Any], labels: Union[str, Mapping[str, int]] = "dataset") -> list:
    """Chooses what each image is scored against: a copy of ``records`` with new labels.

    ``labels``: ``"dataset"`` keeps them (a folder of class folders is labelled by
    sorted folder index, which for ImageNet's ``val/<wnid>/`` layout is the
    1000-class index of Google's and timm's heads); ``"predicted"`` drops them (each
    image is scored against its clean prediction); a mapping from class-folder name
    to the model's class index (images of other folders keep no label).
    """
    if labels == "dataset":
        return list(records)
    if labels == "predicted":
        return [dataclasses.replace(r, label=None) for r in records]
    if not isinstance(labels, Mapping):
        raise ValueError(f"labels must be 'dataset', 'predicted' or a folder -> class mapping, got {labels!r}")
    return [dataclasses.replace(r, label=None if labels.get(r.class_name) is None else int(labels[r.class_name]))
            for r in records]


def label_notes(records: Sequence[Any], num_classes: int, root, labels: Union[str, Mapping[str, int]] = "dataset"
                ) -> List[str]:
    """One-line warnings on how ``records`` (before sampling) will be scored with ``labels`` (see :func:`relabel`).

    Only ``labels="dataset"`` (folder index = class index) can silently go wrong:
    without class folders every image is scored against its clean prediction;
    with another number of class folders than the model's ``num_classes`` the
    folders are most likely not the model's classes (then every curve is near 0).
    """
    if labels != "dataset":
        return []
    folders = {r.class_name for r in records if r.label is not None}
    if not folders:
        return [f"{root}: no class folders; its {len(records)} images are unlabelled, each scored against its "
                "clean prediction (as --labels predicted)"]
    if len(folders) != num_classes:
        return [f"{root} has {len(folders)} class folders but the model has {num_classes} classes, yet folder i "
                "(sorted names) is scored as class i: use --labels predicted, or --labels FILE.json mapping "
                "folder names to the model's class indices"]
    return []


def _check_labels(records: Sequence[Any], num_classes: int) -> None:
    for r in records:
        if r.label is not None and not 0 <= r.label < num_classes:
            raise ValueError(f"{r.path}: label {r.label} (folder {r.class_name!r}) is not a class of the model "
                             f"(0..{num_classes - 1}); use --labels predicted or a JSON {{folder: class index}}")


def _all_maps(model, params, images, methods, target, options, valid=None, bad=None) -> Dict[str, Any]:
    """``{method: maps [B, gh, gw]}``; the class-specific ones share one forward pass and vjp.

    Valid rows whose outputs are not finite go into ``bad`` (``{row: kinds}``) instead of raising.
    """
    out: Dict[str, Any] = {}
    bad = {} if bad is None else bad
    if any(m != "rollout" for m in methods):
        _, att, grad, _ = _kept(bad, class_gradients, model, params, images, target, valid=valid)
    for m in methods:
        if m == "rollout":
            out[m] = _kept(bad, attention_maps, model, params, images, method="rollout",
                           options=_options_for(options, m), valid=valid)[0]
        else:
            out[m] = _kept(bad, maps_from_gradients, model, att, grad, method=m, options=_options_for(options, m),
                           valid=valid)
    return out


def _kept(bad: Dict[int, tuple], fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)``; on :class:`NonFiniteError` its rows and kinds go into ``bad`` and its result is
    returned (the other rows are usable)."""
    try:
        return fn(*args, **kwargs)
    except NonFiniteError as e:
        for r, kinds in e.what.items():
            bad[r] = tuple(dict.fromkeys(bad.get(r, ()) + kinds))
        return e.result


def _options_for(options, method) -> RolloutOptions:
    if isinstance(options, Mapping):
        return options.get(method, RolloutOptions())
    return as_options(options)


def perturbation_step(model, params, *, methods: Sequence[str] = RUNNER_METHODS, explain: str = "predicted",
                      steps: Sequence[float] = STEPS, options=None, mesh=None, checkpoint: Optional[str] = None
                      ) -> Callable:
    """A per-batch step for :func:`vitjax.evaluation.localisation.run`: ``step(batch) -> [row per valid image]``.

    Each row: ``prediction`` (clean top-1), ``scored_label`` (the label, or the
    prediction for unlabelled images) and, per method and order, ``"<method>_<order>"``:
    a string of ``1 + K`` characters '1'/'0', top-1 correct at 0 % and at each step.
    Maps are computed on the batch split over ``mesh`` (default: all local devices).
    An image whose logits (clean or perturbed), attention, gradients or maps are not
    finite (NaN/inf; checked in the compiled programs, padded rows left out) gets
    ``{"status": "failed", "reason": ...}`` naming ``checkpoint`` instead: never a curve.
    ``step.schema`` (:func:`vitjax.evaluation.runner.row_problem`): what a row read back from
    disk must hold (a curve of exactly ``1 + K`` '0'/'1', integer predictions), else its shard
    is damaged and computed again.

    Raises:
      ValueError: unknown method or ``explain``, a headless model.
    """
    if not methods:
        raise ValueError("methods must name at least one method")
    for m in methods:
        if m not in RUNNER_METHODS:
            raise ValueError(f"methods must be among {', '.join(RUNNER_METHODS)}, got {m!r}")
    if explain not in ("predicted", "label"):
        raise ValueError(f"explain must be 'predicted' or 'label', got {explain!r}")
    c = model.config
    if not c.num_classes:
        raise ValueError("the perturbation test needs a classifier; model.config.num_classes is None")
    mean, std = getattr(c, "pixel_mean", (0.5,) * 3), getattr(c, "pixel_std", (0.5,) * 3)
    mesh = local_mesh() if mesh is None else mesh
    params = replicate(params, mesh)
    apply_fn = ModelApply(model)

    def step(batch) -> List[Dict[str, Any]]:
        labels = np.full((batch.images.shape[0],), -1, np.int32)
        labels[: len(batch.items)] = [-1 if r.label is None else r.label for r in batch.items]
        images = shard_batch(batch.images, mesh)
        target = None if explain == "predicted" else np.where(labels < 0, 0, labels)  # padding/unlabelled: 0
        rows: List[Dict[str, Any]] = [{} for _ in batch.rows]
        bad: Dict[int, tuple] = {}  # row -> what was not finite
        for m, maps in _all_maps(model, params, images, methods, target, options, batch.valid, bad).items():
            for order in ORDERS:
                correct, preds = _kept(bad, perturbation_correct, apply_fn, params, images, maps, labels,
                                       steps=steps, positive=order == "positive", pixel_mean=mean, pixel_std=std,
                                       valid=batch.valid)
                for row, r in zip(rows, batch.rows, strict=True):
                    row[f"{m}_{order}"] = "".join("1" if v else "0" for v in correct[:, r])
        for row, r in zip(rows, batch.rows, strict=True):  # preds[0]: the clean images, the same for every map
            if r in bad:  # NaN/inf: no curve, no prediction, the reason instead
                row.clear()
                row.update(status="failed", reason=non_finite_reason(bad[r], checkpoint))
                continue
            row["prediction"] = int(preds[0, r])
            row["scored_label"] = int(labels[r]) if labels[r] >= 0 else int(preds[0, r])
        return rows

    step.schema = _row_schema(methods, steps)  # type: ignore[attr-defined]
    return step


def _row_schema(methods: Sequence[str], steps: Sequence[float]) -> Dict[str, Kind]:
    """What each key of a :func:`perturbation_step` row holds: ``1 + K`` '0'/'1' per curve, integer classes."""
    curve = text_matching(f"[01]{{{1 + len(steps)}}}")
    return {"prediction": INTEGER, "scored_label": INTEGER, **{f"{m}_{order}": curve for m in methods
                                                               for order in ORDERS}}


def summarize(results: Sequence[Mapping[str, Any]], methods: Sequence[str], steps: Sequence[float] = STEPS
              ) -> Dict[str, Any]:
    """Curves and AUCs from the rows of :func:`vitjax.evaluation.localisation.run` with :func:`perturbation_step`.

    Returns ``{"steps": [0, ...], "images": n, "failed": [[image, reason]...], "clean_accuracy",
    "methods": {method: {order: {"accuracy": [1 + K], "auc": float}}}}`` (accuracies as fractions).

    Raises:
      ValueError: no image evaluated; a row whose curve is not ``1 + K`` '0'/'1' or whose
        ``prediction``/``scored_label`` is not an integer (one line naming the image and key).
    """
    ok = [r for r in results if r.get("status", "ok") == "ok"]
    out: Dict[str, Any] = {"steps": [0.0] + [float(s) for s in steps], "images": len(ok),
                           "failed": [[r["image"], r["reason"]] for r in results if r.get("status") == "failed"],
                           "methods": {}}
    if not ok:
        raise ValueError("no image could be loaded; nothing to summarise")
    schema = _row_schema(methods, steps)
    for r in ok:  # never a curve or an accuracy made up from a value that is not one
        for key, kind in schema.items():
            if not kind.test(r.get(key)):
                raise ValueError(f"{r.get('image')}: '{key}' is {json.dumps(r.get(key), default=repr)[:40]}, not "
                                 f"{kind.what} (a results row edited by hand? delete its shard and run again)")
    for m in methods:
        out["methods"][m] = {}
        for order in ORDERS:
            hits = np.array([[ch == "1" for ch in r[f"{m}_{order}"]] for r in ok], np.float64)  # [n, 1 + K]
            acc = hits.mean(axis=0)
            out["methods"][m][order] = {"accuracy": [float(a) for a in acc], "auc": auc(acc, steps)}
    out["clean_accuracy"] = float(np.mean([r["prediction"] == r["scored_label"] for r in ok]))
    return out


def run_perturbation(model, params, records: Sequence[Any], out_dir, *, root, methods: Sequence[str] = RUNNER_METHODS,
                     explain: str = "predicted", steps: Sequence[float] = STEPS, options=None, batch_size: int = 16,
                     resize: str = "google", workers: Optional[int] = None, progress: bool = False,
                     settings: Optional[Mapping[str, Any]] = None, notes: Sequence[str] = (),
                     memory_budget: Optional[int] = None) -> Dict[str, Any]:
    """The perturbation test over a dataset: resumable, batched, sharded, through :func:`vitjax.evaluation.runner.run`.

    Args:
      model, params: a classifier (:func:`vitjax.load_checkpoint`).
      records: :class:`vitjax.data.datasets.ImageRecord` under ``root``
        (:func:`vitjax.data.datasets.dataset_records`, then :func:`relabel`); an
        image without a label is scored against its clean prediction.
      out_dir: results folder: ``shards/`` (per batch, atomic; a rerun resumes),
        ``perturbation_run.json`` (the settings; another run's folder is
        refused), and from process 0 ``perturbation.json``, ``perturbation.csv``,
        ``perturbation.png`` (:func:`write_results`).
      methods: of ``RUNNER_METHODS`` (``"rollout"`` = :func:`vitjax.attention_maps`).
      explain: the class each class-specific map explains: ``"predicted"``
        (Chefer et al.'s "top") or ``"label"`` (unlabelled images: class 0).
      options: one :class:`vitjax.RolloutOptions`, or a mapping method -> options;
        Chefer et al. ran rollout with ``start_layer=1``.
      batch_size: images per batch at most, rounded up to a multiple of the local devices; smaller when
        ``memory_budget`` (bytes; default: half the memory available) asks for it, never more than the images.
      resize: ``"google"`` or ``"pil"`` (:func:`vitjax.preprocess`; Chefer et al.
        used torchvision's ``Resize((224, 224))``, i.e. PIL's).
      settings: extra identity recorded in ``perturbation_run.json`` (checkpoint...).
      notes: warnings to keep with the results (:func:`label_notes`).

    Returns:
      :func:`summarize`'s dict plus ``"settings"`` and ``"warnings"`` (``notes``).

    Raises:
      ValueError: bad method/explain/steps/resize/batch size/workers, a label that
        is not a class of the model, a headless model, a folder of other settings
        (vitjax.data.datasets.DatasetError), ``out_dir`` inside ``root`` or a report file there that is a
        folder (DatasetError) -- all before anything is written --, or no image loaded.
      NonFiniteError (a ValueError, one line naming ``settings["checkpoint"]``): the model's output is
        not finite (NaN/inf) for every image that reached it (no curve, no file but the shards); where
        only some images are so, they are in ``"failed"`` with that reason and left out of the curves.
    """
    mesh = local_mesh()
    checkpoint = (settings or {}).get("checkpoint")
    step = perturbation_step(model, params, methods=methods, explain=explain, steps=steps, options=options, mesh=mesh,
                             checkpoint=checkpoint)
    c = model.config
    removal_counts(1, steps)
    if resize not in RESIZE_METHODS:
        raise ValueError(f"resize must be one of {', '.join(RESIZE_METHODS)}, got {resize!r}")
    batch_size = plan_batch_size(c, batch_size, workload="perturbation", budget=memory_budget,
                                 num_images=len(records), multiple=mesh.devices.size, methods=len(methods),
                                 steps=len(steps))
    if workers is not None:
        positive_int("workers", workers)
    _check_labels(records, c.num_classes)
    ident = {"format": "vitjax-perturbation/1", "methods": list(methods), "explain": explain,
             "steps": [float(s) for s in steps], "resize": resize, "image_size": list(c.image_size),
             "options": {m: _options_for(options, m).for_config(c).to_dict() for m in methods},
             **dict(settings or {})}
    out = Path(out_dir)
    check_outside(out, root)
    claim_folder(out, "perturbation_run.json", ident, files=REPORTS)

    def load(record):
        return preprocess(record.path, c, resize=resize), None

    results = run(records, step, out, root=root, load=load, batch_size=batch_size,
                  shape=tuple(c.image_size) + (3,), workers=workers, progress=progress)
    refuse_all_non_finite(results, checkpoint)
    summary = {**summarize(results, methods, steps), "settings": ident, "warnings": list(notes)}
    if jax.process_index() == 0:
        write_results(summary, out)
    return summary


# --------------------------------------------------------------------------- files and figure


def write_results(results: Mapping[str, Any], out_dir) -> List[Path]:
    """Writes (replacing) ``perturbation.json``, ``perturbation.csv`` (method, order, fraction_removed,
    accuracy, auc) and ``perturbation.png`` (:func:`plot_curves`) into ``out_dir``, each atomically."""
    out = Path(out_dir)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["method", "order", "fraction_removed", "accuracy", "auc"])
    for m, orders in results["methods"].items():
        for order, curve in orders.items():
            for x, y in zip(results["steps"], curve["accuracy"], strict=True):
                writer.writerow([m, order, f"{x:g}", f"{y:.6f}", f"{curve['auc']:.4f}"])
    png = io.BytesIO()
    plot_curves(results).savefig(png, format="png", dpi=120)
    json_name, csv_name, png_name = REPORTS
    return [write_atomic(out / json_name, (json.dumps(results, indent=1) + "\n").encode(), overwrite=True),
            write_atomic(out / csv_name, text.getvalue().encode(), overwrite=True),
            write_atomic(out / png_name, png.getvalue(), overwrite=True)]


def plot_curves(results: Mapping[str, Any]):
    """A :class:`matplotlib.figure.Figure` (no pyplot): accuracy (y axis 0-100 %) against the fraction removed,
    one panel per order, one line per method, AUC in the legend; ``results["warnings"]`` in red at the bottom."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, len(ORDERS), sharey=True)
    x = 100 * np.asarray(results["steps"])
    for ax, order in zip(axes, ORDERS, strict=True):
        for i, (m, orders) in enumerate(results["methods"].items()):  # markers shrink: equal curves stay visible
            ax.plot(x, 100 * np.asarray(orders[order]["accuracy"]), marker="osD^v"[i % 5], ms=max(7 - 1.2 * i, 3),
                    label=f"{m} (AUC {orders[order]['auc']:.2f})")
        first = "most" if order == "positive" else "least"
        ax.set(title=f"{order}: {first} relevant pixels removed first", xlabel="pixels removed (%)",
               ylim=(-2, 102), yticks=range(0, 101, 20))  # accuracy in %, whatever the values
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("top-1 accuracy (%)")
    fig.suptitle(f"Perturbation test (Chefer, Gur & Wolf, CVPR 2021), {results['images']} images")
    if results.get("warnings"):  # below the panels, inside the layout
        import textwrap

        fig.supxlabel("\n".join(textwrap.fill(f"warning: {w}", 150) for w in results["warnings"]), fontsize=7.5,
                      color="tab:red")
    return fig
