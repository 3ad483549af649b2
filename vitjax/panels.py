"""The side panels of :func:`vitjax.plotting.summary_figure`: top-k predictions, or every head's map.

Placed in inches on a :class:`matplotlib.figure.Figure` (see :mod:`vitjax.drawing`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from vitjax.drawing import (
    ArrayLike,
    Box,
    axes_at,
    image_axes,
    mark_tokens,
    overlay,
    probability_axis,
    probability_text,
    upsample_map,
    wrap,
)

__all__ = ["GAP", "NAMES_W", "heads_panel", "predictions_panel"]

NAMES_W = 2.4  # inches: the class-name column left of the bars
GAP = 0.0625  # inches between tiles


def predictions_panel(fig: Figure, box: Box, labels: Sequence[str], probs: Sequence[float]) -> None:
    """Top-k horizontal bars at ``box`` (inches; class names in the :data:`NAMES_W` inches left of it).

    Args:
      labels: k class names, best first; each is wrapped whole at the largest
        font (9 to 6 pt) at which every name fits its row.
      probs: k softmax probabilities; the axis fits the largest (:func:`probability_axis`).

    Raises:
      ValueError: ``labels`` and ``probs`` of different lengths.
    """
    probs = [float(p) for p in probs]
    k = len(probs)
    if len(labels) != k:
        raise ValueError(f"labels and probs differ in length ({len(labels)} vs {k})")
    row_h = box[3] / k
    for fontsize in (9.0, 8.0, 7.0, 6.0):  # the largest font at which every name fits whole
        width = int(NAMES_W * 72 / (0.55 * fontsize))
        room = max(1, int(row_h * 0.95 * 72 / (1.2 * fontsize)))
        names = [wrap(name, width) for name in labels]
        if max(n.count("\n") + 1 for n in names) <= room:
            break
    else:
        names = [wrap(name, width, room) for name in labels]  # only past 6 pt does a name lose its end
    ax = axes_at(fig, box)
    ypos = np.arange(k)
    xmax = probability_axis(max(probs))
    ax.barh(ypos, probs, color="#3b75af", height=0.7)
    ax.set_yticks(ypos, names, fontsize=fontsize)
    ax.set_xlim(0.0, xmax)
    ax.set_ylim(k - 0.5, -0.5)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]))
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel("probability (softmax)" + ("" if xmax == 1.0 else f"; axis 0\u2013{xmax:g}"), fontsize=9)
    ax.set_title(f"top-{k} predictions", fontsize=10)
    for y, p in zip(ypos, probs, strict=True):
        inside = p > 0.75 * xmax
        ax.text(p - 0.02 * xmax if inside else p + 0.02 * xmax, y, probability_text(p), va="center",
                ha="right" if inside else "left", fontsize=min(fontsize, 8.0), color="white" if inside else "black")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def heads_panel(fig: Figure, box: Box, img: np.ndarray, head_maps: ArrayLike, title: str, marks, style) -> None:
    """Every head's map over the photo, tiled to fill ``box`` (inches), ``title`` right above the tiles.

    Args:
      img: uint8 ``[h, w, 3]``; head_maps: ``[H, gh, gw]`` in [0, 1].
      marks: ``(outliers, sinks)`` masks ``[gh, gw]`` bool or None (:func:`vitjax.drawing.mark_tokens`).
      style: keywords of :func:`vitjax.drawing.overlay` (mode, cmap, alpha).

    Raises:
      ValueError: ``head_maps`` not ``[H, gh, gw]``.
    """
    maps = np.asarray(head_maps, np.float32)
    if maps.ndim != 3:
        raise ValueError(f"head_maps must be [H, gh, gw], got shape {maps.shape}")
    n = maps.shape[0]
    x0, y0, bw, bh = box
    h, w = img.shape[:2]
    bh -= 0.1  # panel title
    label_h = 0.17

    def tile(cols: int) -> float:  # tile width with ``cols`` columns
        rows = -(-n // cols)
        by_w = (bw - (cols - 1) * GAP) / cols
        by_h = (bh - rows * label_h - (rows - 1) * GAP) / rows / (h / w)
        return min(by_w, by_h)

    cols = max(range(1, n + 1), key=tile)
    tw = tile(cols)
    th = tw * h / w
    rows = -(-n // cols)
    used_w = cols * tw + (cols - 1) * GAP
    used_h = rows * (th + label_h) + (rows - 1) * GAP
    left = x0 + (bw - used_w) / 2
    top = y0 + bh - (bh - used_h) / 2
    fw, fh = fig.get_size_inches()
    fig.text((x0 + bw / 2) / fw, (top + 0.03) / fh, title, ha="center", va="bottom", fontsize=9)  # right over the tiles
    ups = upsample_map(maps, (h, w))
    for i in range(n):
        r, c = divmod(i, cols)
        x = left + c * (tw + GAP)
        y = top - (r + 1) * (th + label_h) - r * GAP
        ax = image_axes(fig, (x, y, tw, th), overlay(img, ups[i], **style))
        ax.set_title(f"head {i + 1}", fontsize=7, pad=2)
        mark_tokens(ax, *marks, (h, w))
