"""The files of a dataset run (:mod:`vitjax.evaluate`): per-image CSV, summary JSON, two figures.

Everything here is a function of the rows (in image order) and the run's
settings, with no clock or machine in it, so an interrupted-and-resumed run and
an uninterrupted one write the same bytes; a file whose bytes would not change is
left untouched. Figures are matplotlib ``Figure`` objects (no pyplot state).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from vitjax.io import write_atomic
from vitjax.metrics import METRICS

__all__ = ["write_report", "summarize", "metrics_figure", "distance_figure", "write_if_changed"]

_META = ["image", "class", "label", "status", "reason"]
_LABELS = {"pointing": "pointing game (hit rate)", "iou": "IoU at mean threshold", "auc": "ROC-AUC",
           "boxmass": "fraction of mass in box"}


def write_if_changed(path: Path, data: bytes) -> bool:
    """Writes ``data`` atomically unless ``path`` already holds exactly these bytes; True if written."""
    path = Path(path)
    if path.is_file() and path.read_bytes() == data:
        return False
    write_atomic(path, data, overwrite=True)
    return True


def _mean(values) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return math.fsum(vals) / len(vals) if vals else None


def summarize(rows: Sequence[Dict[str, Any]], names: Sequence[str], num_layers: int, num_heads: int) -> Dict:
    """Means over ``rows`` (images with a value; NaN/None skipped) of every map's metrics and of the distances.

    Returns:
      ``{"images", "annotated", "maps": {map: {metric: mean | None}},
      "mean_attention_distance": [L][H] pixels | None}``.
    """
    maps = {n: {m: _mean(r.get(f"{n}_{m}") for r in rows) for m in METRICS} for n in names}
    mad = [[_mean(r.get(f"mad_l{layer:02d}_h{h:02d}") for r in rows) for h in range(1, num_heads + 1)]
           for layer in range(1, num_layers + 1)]
    return {"images": len(rows), "annotated": sum(int(r.get("annotated") or 0) for r in rows), "maps": maps,
            "mean_attention_distance": mad if rows else None}


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


def write_report(out, results, *, names, num_layers: int, num_heads: int, grid_size, run: Dict) -> List[Path]:
    """Writes ``images.csv``, ``summary.json``, ``metrics_vs_depth.png``, ``attention_distance.png`` to ``out``.

    Args:
      results: one dict per image in image order (:func:`vitjax.evaluate.run`): ``image, class,
        label, status`` ("ok" or "failed"), ``reason`` (why it failed, else ""), and the step's values.
      names: the scored maps (:func:`vitjax.evaluate.map_names`).
      num_layers, num_heads: of the model.
      grid_size: the scoring grid ``(rh, rw)``.
      run: the run's settings (checkpoint, data, options), copied into the summary.

    Returns:
      the four paths (written or already up to date).
    """
    out = Path(out)
    results = list(results)
    rows = [r for r in results if r["status"] == "ok"]
    failures = [r for r in results if r["status"] != "ok"]
    classes: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        classes.setdefault(r["class"] if r["class"] is not None else "(no class)", []).append(r)
    summary = {
        "run": run,
        "scoring_grid": list(grid_size),
        "images": {"total": len(results), "evaluated": len(rows), "failed": len(failures),
                   "annotated": sum(int(r.get("annotated") or 0) for r in rows)},
        "failures": [{"image": f["image"], "reason": f["reason"]} for f in failures],
        "annotation_problems": [{"image": r["image"], "note": r["note"]} for r in rows if r.get("note")],
        "overall": summarize(rows, names, num_layers, num_heads),
        "per_class": {c: summarize(rs, names, num_layers, num_heads) for c, rs in classes.items()},
    }
    title = f"{run.get('checkpoint')}: {len(rows)} images"
    annotated = f"{title}, {summary['images']['annotated']} annotated"
    paths = [out / "images.csv", out / "summary.json", out / "metrics_vs_depth.png", out / "attention_distance.png"]
    write_if_changed(paths[0], _csv(results))
    write_if_changed(paths[1], (json.dumps(summary, indent=1, allow_nan=False) + "\n").encode("utf-8"))
    write_if_changed(paths[2], _png(metrics_figure(summary["overall"], num_layers, title=annotated)))
    write_if_changed(paths[3], _png(distance_figure(summary["overall"]["mean_attention_distance"], title=title)))
    return paths


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def metrics_figure(summary: Dict, num_layers: int, *, title: str = ""):
    """Each metric against layer depth: own-layer and cumulative maps, joint map and baselines as lines.

    Args:
      summary: one entry of :func:`summarize` (``{"maps": {...}}``).

    Returns:
      a ``matplotlib.figure.Figure`` of 1 x 4 panels.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(17, 4.2), layout="constrained")
    axes = fig.subplots(1, len(METRICS))
    depth = list(range(1, num_layers + 1))
    maps = summary["maps"]

    def nan(v):
        return float("nan") if v is None else v

    for ax, metric in zip(axes, METRICS, strict=True):
        ax.plot(depth, [nan(maps[f"layer{d:02d}"][metric]) for d in depth], "o-", label="layer's own map")
        ax.plot(depth, [nan(maps[f"cumul{d:02d}"][metric]) for d in depth], "s-", label="cumulative (rollout to l)")
        for name, style, color in (("joint", "-", "black"), ("gaussian", "--", "tab:red"),
                                   ("uniform", ":", "tab:gray")):
            value = maps[name][metric]
            if value is not None:
                ax.axhline(value, linestyle=style, color=color, label=f"{name} map" if name == "joint" else name)
        ax.set_xlabel("layer")
        ax.set_title(_LABELS[metric])
        ax.set_xticks(depth)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if summary.get("annotated", 0) == 0:
        fig.text(0.5, 0.5, "no annotated images", ha="center", va="center", fontsize=14)
    fig.suptitle(title)
    return fig


def distance_figure(mad: Optional[Sequence[Sequence[Optional[float]]]], *, title: str = ""):
    """Mean attention distance (pixels) of every head against layer depth (ViT paper, Fig. 7).

    Args:
      mad: ``[L][H]`` pixels (``summarize(...)["mean_attention_distance"]``), or None.

    Returns:
      a ``matplotlib.figure.Figure``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    if mad:
        num_heads = len(mad[0])
        for h in range(num_heads):
            ys = [float("nan") if row[h] is None else row[h] for row in mad]
            ax.plot(range(1, len(mad) + 1), ys, "o", markersize=4, label=f"head {h + 1}")
        ax.set_xticks(range(1, len(mad) + 1))
        if num_heads <= 16:
            ax.legend(fontsize=7, ncol=2)
    else:
        ax.text(0.5, 0.5, "no images", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("network depth (layer)")
    ax.set_ylabel("mean attention distance (pixels)")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    return fig
