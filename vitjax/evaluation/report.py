"""The files of a dataset run (:mod:`vitjax.evaluation.localisation`): per-image CSV, summary JSON, two figures;
console lines.

Everything here is a function of the rows (in image order) and the run's
settings, with no clock or machine in it, so an interrupted-and-resumed run and
an uninterrupted one write the same bytes; a file whose bytes would not change is
left untouched. Figures are matplotlib ``Figure`` objects (no pyplot state).
Without annotated images there is no metrics figure (the summary's ``notes`` say
why); the mean-attention-distance figure needs none.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from vitjax.data.datasets import skipped_note
from vitjax.errors import DatasetError
from vitjax.evaluation.metrics import METRICS
from vitjax.io import write_atomic

__all__ = ["write_report", "summarize", "metrics_figure", "distance_figure", "head_styles", "write_if_changed",
           "annotation_note", "run_notes"]

_META = ["image", "class", "label", "status", "reason", "bytes", "sha256"]
_LABELS = {"pointing": "pointing game (hit rate)", "iou": "IoU at mean threshold", "auc": "ROC-AUC",
           "boxmass": "fraction of mass in box"}


def write_if_changed(path: Path, data: bytes) -> bool:
    """Writes ``data`` atomically unless ``path`` already holds exactly these bytes; True if written."""
    path = Path(path)
    if path.is_file() and path.read_bytes() == data:
        return False
    write_atomic(path, data, overwrite=True)
    return True


def _bad_value(row: Dict[str, Any], key: str, what: str) -> DatasetError:
    shown = json.dumps(row.get(key), default=repr)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return DatasetError(f"{row.get('image', '(no image name)')}: '{key}' is {shown}, not {what} (a results row "
                        "edited by hand? delete its shard and run again)")


def _mean(rows: Sequence[Dict[str, Any]], key: str) -> Optional[float]:
    """Mean of ``row[key]`` over the rows with a number there (None and NaN skipped).

    Raises:
      DatasetError: a value that is not a number (text, a bool, a list) or is infinite, naming the image
        and the key: never a number made up from it.
    """
    vals = []
    for r in rows:
        v = r.get(key)
        if v is None:
            continue
        try:
            bad = not isinstance(v, (int, float)) or isinstance(v, bool) or math.isinf(v)
        except OverflowError:  # an integer too large for a float
            bad = True
        if bad:
            raise _bad_value(r, key, "a finite number or null")
        if v == v:  # NaN: undefined, skipped
            vals.append(v)
    return math.fsum(vals) / len(vals) if vals else None


def _annotated(row: Dict[str, Any]) -> int:
    """``row["annotated"]`` as 0 or 1 (absent or None: 0); DatasetError for anything else."""
    v = row.get("annotated")
    if v is None:
        return 0
    if isinstance(v, (bool, int)) and v in (0, 1):
        return int(v)
    raise _bad_value(row, "annotated", "0 or 1")


def summarize(rows: Sequence[Dict[str, Any]], names: Sequence[str], num_layers: int, num_heads: int) -> Dict:
    """Means over ``rows`` (images with a value; NaN/None skipped) of every map's metrics and of the distances.

    An image whose annotation is invalid (a ``note``, no mask: see
    :func:`vitjax.evaluation.localisation.load_target`) has no metric values, so it is in no
    metric mean; it is counted in ``invalid_annotations``.

    Returns:
      ``{"images", "annotated", "invalid_annotations", "maps": {map: {metric: mean | None}},
      "mean_attention_distance": [L][H] pixels | None}``.

    Raises:
      DatasetError: a value that is not a number or null (text, a bool, a list, infinity), or an
        ``annotated`` other than 0/1: one line naming the image and the key.
    """
    maps = {n: {m: _mean(rows, f"{n}_{m}") for m in METRICS} for n in names}
    mad = [[_mean(rows, f"mad_l{layer:02d}_h{h:02d}") for h in range(1, num_heads + 1)]
           for layer in range(1, num_layers + 1)]
    return {"images": len(rows), "annotated": sum(_annotated(r) for r in rows),
            "invalid_annotations": sum(1 for r in rows if _invalid(r)), "maps": maps,
            "mean_attention_distance": mad if rows else None}


def _invalid(row: Dict[str, Any]) -> bool:
    """An evaluated image whose annotation file exists but could not be used (its ``note`` says why)."""
    return bool(row.get("note")) and not _annotated(row)


def _csv(results: Sequence[Dict[str, Any]]) -> bytes:
    columns = list(_META)
    for r in results:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in results:
        w.writerow(["" if r.get(c) is None else repr(r[c]) if isinstance(r[c], float) else r[c] for c in columns])
    return buf.getvalue().encode("utf-8")


def write_report(out, results, *, names, num_layers: int, num_heads: int, grid_size, run: Dict,
                 skipped: Sequence = (), random_weights: bool = False) -> List[Path]:
    """Writes ``images.csv``, ``summary.json``, ``metrics_vs_depth.png``, ``attention_distance.png`` to ``out``.

    ``metrics_vs_depth.png`` only when at least one image is annotated; otherwise
    ``summary["notes"]`` holds :func:`annotation_note`'s line (why the localisation
    metrics were skipped).

    Args:
      results: one dict per image in image order (:func:`vitjax.evaluation.localisation.run`): ``image, class,
        label, status`` ("ok" or "failed"), ``reason`` (why it failed, else ""), and the step's values.
      names: the scored maps (:func:`vitjax.evaluation.localisation.map_names`).
      num_layers, num_heads: of the model.
      grid_size: the scoring grid ``(rh, rw)``.
      run: the run's settings (checkpoint, data, options), copied into the summary.
      skipped: ``(path, reason)`` pairs the dataset listing left out
        (:attr:`vitjax.data.datasets.ImageList.skipped`), recorded as ``summary["skipped"]``.
      random_weights: the checkpoint holds random weights (``ViTConfig.random_weights``): the summary
        (``"random_weights": true``) and both figures' titles say so.

    ``summary["images"]`` counts ``total``, ``evaluated``, ``failed``, ``annotated`` (scored
    against an object) and ``invalid_annotations`` (an annotation file that cannot
    describe an object in its photo; listed with the reason in ``annotation_problems``
    and left out of every metric mean).

    Returns:
      the paths of the files (written or already up to date), the metrics figure
      only when it was drawn.

    Raises:
      DatasetError: a row value that is not a number where one is expected (:func:`summarize`), before
        any file is written.
    """
    out = Path(out)
    results = list(results)
    rows = [r for r in results if r["status"] == "ok"]
    failures = [r for r in results if r["status"] != "ok"]
    classes: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        classes.setdefault(r["class"] if r["class"] is not None else "(no class)", []).append(r)
    annotated = sum(_annotated(r) for r in rows)
    note = annotation_note(rows) if rows and not annotated else None
    summary = {
        "run": run,
        "random_weights": bool(random_weights),
        "scoring_grid": list(grid_size),
        "images": {"total": len(results), "evaluated": len(rows), "failed": len(failures), "annotated": annotated,
                   "invalid_annotations": sum(1 for r in rows if _invalid(r))},
        "notes": [note] if note else [],
        "failures": [{"image": f["image"], "reason": f["reason"]} for f in failures],
        "annotation_problems": [{"image": r["image"], "note": r["note"]} for r in rows if r.get("note")],
        "skipped": [{"path": str(p), "reason": why} for p, why in skipped],
        "overall": summarize(rows, names, num_layers, num_heads),
        "per_class": {c: summarize(rs, names, num_layers, num_heads) for c, rs in classes.items()},
    }
    title = f"{run.get('checkpoint')}" + (" (random weights: the numbers mean nothing about images)"
                                          if random_weights else "") + f": {len(rows)} images"
    paths = [out / "images.csv", out / "summary.json"]
    write_if_changed(paths[0], _csv(results))
    write_if_changed(paths[1], (json.dumps(summary, indent=1, allow_nan=False) + "\n").encode("utf-8"))
    if annotated:
        paths.append(out / "metrics_vs_depth.png")
        write_if_changed(paths[-1], _png(metrics_figure(summary["overall"], num_layers,
                                                        title=f"{title}, {annotated} annotated")))
    paths.append(out / "attention_distance.png")
    write_if_changed(paths[-1], _png(distance_figure(summary["overall"]["mean_attention_distance"], title=title,
                                                     input_size=run.get("image_size"))))
    return paths


def annotation_note(rows: Sequence[Dict[str, Any]]) -> str:
    """One line: why no image of ``rows`` (the evaluated rows) could be scored against an object."""
    broken = sum(1 for r in rows if r.get("note"))
    if broken:
        return (f"localisation metrics skipped: none of the {broken} annotation files could be used "
                "(see annotation_problems); mean attention distances only")
    return ("localisation metrics skipped: no object annotations (no Annotations/ folder, as a Caltech101 root "
            "has); mean attention distances only")


def run_notes(records: Sequence[Any], root, skipped: Sequence = ()) -> List[str]:
    """One-line notes on a dataset before it is run (:class:`vitjax.data.datasets.ImageRecord` list).

    Images directly in ``root`` (no class folders) are accepted as one unlabelled
    group, and said so; without any annotation file the localisation metrics are
    skipped (:func:`annotation_note`); entries the listing left out (``skipped``,
    :attr:`vitjax.data.datasets.ImageList.skipped`) are counted and the first named
    (:func:`vitjax.data.datasets.skipped_note`).
    """
    notes = [skipped_note(skipped, root)] if skipped else []
    if records and all(r.class_name is None for r in records):
        notes.append(f"{root}: no class folders; its {len(records)} images form one unlabelled group")
    if not any(getattr(r, "annotation", None) is not None for r in records):
        notes.append(annotation_note([]))
    return notes


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def metrics_figure(summary: Dict, num_layers: int, *, title: str = ""):
    """Each metric against layer depth: own-layer and cumulative maps, joint map and baselines as lines.

    Every metric is a fraction, so each panel's y axis is [0, 1]. Without an
    annotated image (``summary["annotated"] == 0``) the figure is one panel that
    says so (:func:`write_report` then writes no figure at all).

    Args:
      summary: one entry of :func:`summarize` (``{"maps": {...}, "annotated": n}``).

    Returns:
      a ``matplotlib.figure.Figure`` of 1 x 4 panels.
    """
    from matplotlib.figure import Figure

    if not summary.get("annotated"):
        fig = Figure(figsize=(8, 2.2), layout="constrained")
        ax = fig.subplots()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "No annotated images: the localisation metrics need object annotations\n"
                "(a Caltech101 root with an Annotations/ folder).", ha="center", va="center", fontsize=11)
        fig.suptitle(title)
        return fig
    fig = Figure(figsize=(17, 4.2), layout="constrained")
    axes = fig.subplots(1, len(METRICS))
    depth = list(range(1, num_layers + 1))
    maps = summary["maps"]

    def nan(v):
        return float("nan") if v is None else v

    for ax, metric in zip(axes, METRICS, strict=True):
        own = [nan(maps[f"layer{d:02d}"][metric]) for d in depth]
        cumul = [nan(maps[f"cumul{d:02d}"][metric]) for d in depth]
        for ys, style, label in ((own, "o-", "layer's own map"), (cumul, "s-", "cumulative (rollout to l)")):
            if any(y == y for y in ys):
                ax.plot(depth, ys, style, label=label)
        for name, style, color in (("joint", "-", "black"), ("gaussian", "--", "tab:red"),
                                   ("uniform", ":", "tab:gray")):
            value = maps[name][metric]
            if value is not None:
                ax.axhline(value, linestyle=style, color=color, label=f"{name} map" if name == "joint" else name)
        ax.set_xlabel("layer")
        ax.set_title(_LABELS[metric])
        ax.set_xticks(depth)
        ax.set_ylim(-0.02, 1.02)  # every metric is a fraction
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:  # only the lines drawn
        axes[0].legend(fontsize=8)
    fig.suptitle(title)
    return fig


def head_styles(num_heads: int) -> List[Dict[str, Any]]:
    """One ``{"color", "marker"}`` per head, no two alike; colours repeat nowhere up to 20 heads.

    Up to 10 heads: matplotlib's ``tab10`` with circles. 11-20: the dark half of
    ``tab20`` with circles, then its light half with squares (head 11 is a light
    blue square where head 1 is a blue circle). More: ``turbo`` sampled evenly,
    four marker shapes in turn.
    """
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    if num_heads <= 10:
        colors = [colormaps["tab10"](h) for h in range(num_heads)]
        markers = ["o"] * num_heads
    elif num_heads <= 20:
        colors = [colormaps["tab20"](2 * h) for h in range(10)] + [colormaps["tab20"](2 * h + 1) for h in range(10)]
        markers = ["o"] * 10 + ["s"] * 10
    else:
        colors = [colormaps["turbo"](h / (num_heads - 1)) for h in range(num_heads)]
        markers = [("o", "s", "^", "D")[h % 4] for h in range(num_heads)]
    return [{"color": to_hex(c), "marker": m} for c, m in zip(colors[:num_heads], markers[:num_heads], strict=True)]


def distance_figure(mad: Optional[Sequence[Sequence[Optional[float]]]], *, title: str = "",
                    input_size: Optional[Sequence[int]] = None):
    """Mean attention distance (pixels) of every head against layer depth (ViT paper, Fig. 7).

    Each head has its own colour and marker (:func:`head_styles`) and is shifted
    sideways by up to a quarter layer so that heads of equal distance stay visible;
    the legend (up to 24 heads) sits right of the plot.

    Args:
      mad: ``[L][H]`` pixels (``summarize(...)["mean_attention_distance"]``), or None.
      input_size: the model input ``(height, width)`` in pixels the distances are measured in (the same
        heads give twice the pixels at twice the size); named in the y label when given.

    Returns:
      a ``matplotlib.figure.Figure``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    if mad:
        num_heads = len(mad[0])
        for h, style in enumerate(head_styles(num_heads)):
            shift = 0.5 * (h + 0.5) / num_heads - 0.25 if num_heads > 1 else 0.0
            ys = [float("nan") if row[h] is None else row[h] for row in mad]
            ax.plot([d + shift for d in range(1, len(mad) + 1)], ys, linestyle="none", markersize=4.5,
                    markeredgewidth=0.4, markeredgecolor="black", label=f"head {h + 1}", **style)
        ax.set_xticks(range(1, len(mad) + 1))
        if num_heads <= 24:
            fig.legend(loc="outside right upper", fontsize=7, ncol=1 if num_heads <= 16 else 2)
    else:
        ax.text(0.5, 0.5, "no images", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("network depth (layer)")
    ax.set_ylabel("mean attention distance (pixels)" if input_size is None else
                  f"mean attention distance\n(pixels of the {int(input_size[0])}\u00d7{int(input_size[1])} px input)")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    return fig
