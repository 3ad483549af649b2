"""Figures of attention maps laid over photos: arrays in, :class:`matplotlib.figure.Figure` out.

Nothing here touches pyplot's global state: every function builds a
``matplotlib.figure.Figure`` (Agg canvas) and returns it, so the module works
in scripts, servers, tests and notebooks alike. The primitives
(:func:`vitjax.viz.drawing.overlay`, ``upsample_map``, ``photo_array``,
``save_figure`` which writes a PNG atomically, ``figure_png`` which returns
its bytes) live in :mod:`vitjax.viz.drawing`.

Maps are laid over each photo at the photo's OWN size and aspect ratio: a
``[gh, gw]`` map is resized bilinearly to the photo's ``(height, width)``,
never shown at the model's 224x224. Two renderings (``mode``): ``"heatmap"``
(a colour map, default ``"jet"`` as in the original study's OpenCV
``COLORMAP_JET``, blended with weight ``alpha``) and ``"mask"`` (the original
study's darkening, ``photo * map[..., None]``). Every map is divided by its
own maximum (see :func:`vitjax.compute_maps`), and the colour bars say so.

A figure a researcher can cite says what made it: pass ``footer=`` the line
:func:`vitjax.viz.notes.provenance` builds (checkpoint, rollout options, matmul precision).

Layouts are placed in inches on fixed grids and figure sizes are multiples
of 1/4 inch, so at 100 dpi a PNG is exactly ``figsize * 100`` pixels, known in
advance: :func:`summary_figsize` for :func:`summary_figure`,
:func:`grid_figsize` for the grids.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from vitjax.viz.drawing import (
    DPI,
    ArrayLike,
    Box,
    as_photo,
    at_display_aspect,
    axes_at,
    check_mode,
    colorbar,
    display_aspect,
    fit_box,
    image_axes,
    layer_span,
    left_out_tile,
    mark_tokens,
    new_figure,
    note_title,
    overlay,
    probability_axis,
    probability_text,
    shorten,
    stretch_note,
    upsample_map,
    wrap,
)

__all__ = [
    "SUMMARY_FIGSIZE",
    "grid_figsize",
    "head_grid",
    "heads_panel",
    "layer_grid",
    "map_grid",
    "predictions_panel",
    "rollout_grid",
    "summary_figsize",
    "summary_figure",
    "tile_sinks",
]

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
        width = int(NAMES_W * 72 / (0.62 * fontsize))  # ~0.6 em per character, wide letters included
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
      marks: ``(outliers, sinks)``, each None, a mask ``[gh, gw]`` bool for every head, or ``[H, gh, gw]``
        one per head (:func:`vitjax.viz.drawing.mark_tokens`): a sink is ringed only on the heads that sink it.
      style: keywords of :func:`vitjax.viz.drawing.overlay` (mode, cmap, alpha).

    Raises:
      ValueError: ``head_maps`` not ``[H, gh, gw]``, or masks of another shape.
    """
    maps = np.asarray(head_maps, np.float32)
    if maps.ndim != 3:
        raise ValueError(f"head_maps must be [H, gh, gw], got shape {maps.shape}")
    n = maps.shape[0]
    outliers, sinks = (_per_tile(m, n, maps.shape[1:], name)
                       for m, name in zip(marks, ("outliers", "sinks"), strict=True))
    x0, y0, bw, bh = box
    h, w = img.shape[:2]
    aspect = display_aspect(h, w)
    bh -= 0.1  # panel title
    label_h = 0.17

    def tile(cols: int) -> float:  # tile width with ``cols`` columns
        rows = -(-n // cols)
        by_w = (bw - (cols - 1) * GAP) / cols
        by_h = (bh - rows * label_h - (rows - 1) * GAP) / rows / aspect
        return min(by_w, by_h)

    cols = max(range(1, n + 1), key=tile)
    tw = tile(cols)
    th = tw * aspect
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
        ax = image_axes(fig, (x, y, tw, th), overlay(img, ups[i], **style), stretch=True)
        ax.set_title(f"head {i + 1}", fontsize=7, pad=2)
        mark_tokens(ax, outliers[i], sinks[i], (h, w))


def _per_tile(mask, n: int, grid: Tuple[int, int], name: str) -> List[Optional[np.ndarray]]:
    """``n`` masks ``[gh, gw]`` (or None) from None, one ``[gh, gw]`` mask for every tile, or ``[n, gh, gw]``."""
    if mask is None:
        return [None] * n
    m = np.asarray(mask, bool)
    if m.shape == tuple(grid):
        return [m] * n
    if m.shape == (n,) + tuple(grid):
        return [t if t.any() else None for t in m]
    raise ValueError(f"{name} must be [gh, gw] or [{n}, gh, gw] with gh, gw = {tuple(grid)}, got shape {m.shape}")


#: (width, height) in inches of :func:`summary_figure` for a landscape photo: 1600 x 550 pixels at 100 dpi.
SUMMARY_FIGSIZE = (16.0, 5.5)

# Summary geometry, inches.
_SUM_BOTTOM = 0.5  # footer line below the panels
_SUM_TOP = 0.9375  # figure title + panel titles
_SUM_PANEL_W = 4.5
_SUM_MAX_PANEL_H = 8.0  # a tall portrait grows the page up to this, rather than shrinking to a sliver

# Grid geometry, inches (binary fractions: no rounding error in inches * dpi).
_GRID_LEFT = 1.5  # row labels: up to 4 lines of ~25 characters at 7 pt
_GRID_TOP = 0.875  # figure title + column titles
_BANNER = 0.25  # a warning line (random weights) between the title and the column titles
_GRID_BOTTOM = 0.125
_FOOTER = 0.375  # up to two lines of provenance under a grid
_GRID_RIGHT = 1.0  # colour bar, its ticks and label
_GRID_MIN_WIDTH = 7.0  # room for the title however few columns

_SCALE_ONE = "{} \u00f7 this map's maximum"
_SCALE_EACH = "{} \u00f7 each tile's own maximum"


def _banner(fig: Figure, text: Optional[str], x: float, top: float, width: float) -> None:
    """``text`` in bold dark red, left-aligned at ``x`` inches, its top ``top`` inches below the figure's top edge,
    wrapped to ``width`` inches (e.g. that the weights are random: it must not be missed)."""
    if text:
        fw, fh = fig.get_size_inches()
        fig.text(x / fw, 1 - top / fh, wrap(text, int(width * 72 / (0.62 * 9)), 2), ha="left", va="top", fontsize=9,
                 fontweight="bold", color="#b00000", linespacing=1.05)


def _footer(fig: Figure, text: Optional[str]) -> None:
    """``text`` at the bottom-left, 7 pt, wrapped to at most two lines (narrow grids)."""
    if text:
        fw, fh = fig.get_size_inches()
        fig.text(0.125 / fw, 0.06 / fh, wrap(text, int((fw - 0.25) * 72 / (0.55 * 7)), 2), ha="left",
                 va="bottom", fontsize=7, color="#333333", linespacing=1.1)


# --------------------------------------------------------------------------- the per-image figure


def summary_figsize(aspect_hw: float = 0.75) -> Tuple[float, float]:
    """(width, height) in inches of :func:`summary_figure` for a photo of aspect ``h / w``.

    16 inches wide; landscape photos give :data:`SUMMARY_FIGSIZE` (5.5 inches
    high); a portrait photo makes the page taller (its panels stay 4.5 inches
    wide up to 8 inches high) instead of shrinking to a sliver. Heights are
    multiples of 1/4 inch. The aspect is clipped to :data:`vitjax.viz.drawing.MAX_ASPECT`
    as the panels are (:func:`vitjax.viz.drawing.display_aspect`).
    """
    aspect_hw = display_aspect(float(aspect_hw), 1.0)
    panel_h = min(max(_SUM_PANEL_W * aspect_hw, 5.5 - _SUM_BOTTOM - _SUM_TOP), _SUM_MAX_PANEL_H)
    return (SUMMARY_FIGSIZE[0], math.ceil((_SUM_BOTTOM + panel_h + _SUM_TOP) * 4) / 4)


def summary_figure(
    photo: ArrayLike,
    joint_map: ArrayLike,
    *,
    labels: Optional[Sequence[str]] = None,
    probs: Optional[Sequence[float]] = None,
    head_maps: Optional[ArrayLike] = None,
    heads_title: str = "last layer: each head's class-token attention",
    no_predictions: str = "no classification head (the model outputs features)",
    outliers: Optional[ArrayLike] = None,
    sinks: Optional[ArrayLike] = None,
    head_sinks: Optional[ArrayLike] = None,
    note: Optional[str] = None,
    original_size: Optional[Tuple[int, int]] = None,
    title: Optional[str] = None,
    footer: Optional[str] = None,
    banner: Optional[str] = None,
    map_title: str = "joint attention (rollout)",
    quantity: str = "attention",
    mode: str = "heatmap",
    cmap: str = "jet",
    alpha: float = 0.5,
    dpi: float = DPI,
) -> Figure:
    """One image: original | joint map over it (with colour bar) | top-k predictions or per-head maps.

    Args:
      photo: the photo, uint8 ``[h, w, 3]`` (possibly shrunk for display; see ``original_size``).
      joint_map: ``[gh, gw]`` map in [0, 1] (resized to ``(h, w)``).
      labels, probs: the top-k class names and softmax probabilities, best
        first (see :func:`vitjax.data.labels.topk`); the probability axis fits the
        largest (:func:`probability_axis`); long names are wrapped, not cut.
      head_maps: ``[H, gh, gw]``, shown when there are no predictions
        (headless models such as DINOv2, or a zero head): the DINO-style
        per-head maps of one layer, titled ``heads_title``.
      no_predictions: what the figure says instead of predictions (e.g.
        :data:`vitjax.data.labels.NO_HEAD`).
      outliers: ``[gh, gw]`` bool: patches outlined on the joint map and the
        head maps (high-norm "artifact" tokens, see
        :func:`vitjax.viz.run.outlier_tokens`).
      sinks: ``[gh, gw]`` bool: attention-sink patches ringed on the joint map: only sinks of
        layers that map includes (:func:`vitjax.viz.notes.sink_note`), none on a class map that
        is not a rollout; head_sinks: those ringed on the head maps, ``[gh, gw]`` for every head
        or ``[H, gh, gw]`` per head (the sinks of each head of their own layer).
      note: lines under the map panel's title (e.g. that the rollout is
        dominated by outlier tokens, or peaks on an attention sink); each
        ``"\\n"``-separated line is wrapped to the panel's width.
      original_size: the photo's real ``(height, width)`` in pixels, shown in
        the first panel's title (default: ``photo``'s own size).
      title: figure title (e.g. the file name); footer: a last line (see :func:`vitjax.viz.notes.provenance`).
      banner: a warning in bold red under the title, over the photo (e.g.
        :data:`vitjax.viz.notes.RANDOM_BANNER`).
      map_title: title over the map panel.
      quantity: what the map's values are, for its colour bar: ``"attention"``
        (default), or e.g. ``"generic relevance"`` for a class-specific map.
      mode, cmap, alpha: see :func:`overlay`.
      dpi: pixels per inch; the figure is :func:`summary_figsize` inches. A photo more elongated than
        :data:`vitjax.viz.drawing.MAX_ASPECT` is drawn stretched to it, and the first panel's title says so.

    Returns:
      A :class:`matplotlib.figure.Figure` (save with :func:`save_figure`).

    Raises:
      ValueError: ``labels`` and ``probs`` of different lengths, bad shapes or style.
    """
    img = as_photo(photo)
    oh, ow = original_size if original_size is not None else img.shape[:2]
    img = at_display_aspect(img)  # a photo beyond MAX_ASPECT: resampled to it, so its panels show the whole map
    h, w = img.shape[:2]
    aspect = display_aspect(h, w)
    fw, fh = summary_figsize(aspect)
    fig = new_figure((fw, fh), dpi)
    bottom = _SUM_BOTTOM
    ph = fh - _SUM_BOTTOM - _SUM_TOP
    if title:
        fig.text(0.5, 1 - 0.15 / fh, shorten(title, 150), ha="center", va="top", fontsize=12, fontweight="bold")
    _banner(fig, banner, 0.25, 0.4, _SUM_PANEL_W)  # over the photo's panel, clear of the map's title and notes
    _footer(fig, footer)
    ax = image_axes(fig, fit_box(aspect, (0.25, bottom, _SUM_PANEL_W, ph)), img, stretch=True)
    stretched = stretch_note(oh, ow)
    ax.set_title(f"original ({int(ow)}\u00d7{int(oh)} px" + (f"; {stretched})" if stretched else ")"), fontsize=10)

    rect = fit_box(aspect, (5.0, bottom, _SUM_PANEL_W, ph))
    ax = image_axes(fig, rect, overlay(img, joint_map, mode=mode, cmap=cmap, alpha=alpha), stretch=True)
    ax.set_title(*note_title(map_title, note, _SUM_PANEL_W))  # the panel's width, however narrow a tall map
    mark_tokens(ax, outliers, sinks, (h, w))
    label = "brightness kept: map \u00f7 its maximum" if mode == "mask" else _SCALE_ONE.format(quantity)
    # right beside the map, however narrow a tall photo makes it
    colorbar(fig, (rect[0] + rect[2] + 0.125, rect[1], 0.15, rect[3]), mode, cmap, label=label, fontsize=8)

    if labels is not None and probs is not None and len(probs) > 0:
        predictions_panel(fig, (10.375 + NAMES_W + 0.2, bottom + 0.375, 2.75, ph - 0.375), labels, probs)
    elif head_maps is not None:
        heads_panel(fig, (10.625, bottom, 5.25, ph), img, head_maps, f"{no_predictions}\n{heads_title}",
                    (outliers, head_sinks), dict(mode=mode, cmap=cmap, alpha=alpha))
    else:
        ax = axes_at(fig, (10.625, bottom, 5.0, ph))
        ax.axis("off")
        ax.text(0.5, 0.5, wrap(no_predictions, 40), ha="center", va="center", fontsize=10, transform=ax.transAxes)
    return fig


# --------------------------------------------------------------------------- grids


def grid_figsize(nrows: int, ncols: int, aspect_hw: Union[float, Sequence[float]] = 1.0, *,
                 footer: bool = False, banner: bool = False) -> Tuple[float, float]:
    """(width, height) in inches of a :func:`map_grid` with these rows and columns.

    Cells are 1.5 inches wide (1 inch beyond 17 columns); each row is as high
    as its photo's aspect ``h / w`` (one number for every row, or one per
    row) clipped to [0.5, 1.5] makes it, rounded to 1/8 inch, so a portrait
    photo among landscapes keeps a usable size. Margins hold the title,
    column titles, row labels, the colour bar, with ``footer`` a
    provenance line and with ``banner`` a warning line under the title. The
    total is rounded up to a multiple of 1/4 inch (at least 7 inches wide),
    so at 100 dpi the PNG is exactly ``100 * width`` x ``100 * height`` pixels.
    """
    cell_w, heights = _cells(nrows, ncols, aspect_hw)
    width = _GRID_LEFT + ncols * cell_w + (ncols - 1) * GAP + _GRID_RIGHT
    height = (_GRID_TOP + (_BANNER if banner else 0.0) + sum(heights) + (nrows - 1) * GAP + _GRID_BOTTOM
              + (_FOOTER if footer else 0.0))
    return (max(math.ceil(width * 4) / 4, _GRID_MIN_WIDTH), math.ceil(height * 4) / 4)


def _cells(nrows: int, ncols: int, aspect_hw) -> Tuple[float, List[float]]:
    cell_w = 1.5 if ncols <= 17 else 1.0
    aspects = [float(aspect_hw)] * nrows if np.ndim(aspect_hw) == 0 else [float(a) for a in aspect_hw]
    if len(aspects) != nrows:
        raise ValueError(f"need one aspect per row ({nrows}), got {len(aspects)}")
    return cell_w, [round(cell_w * min(max(a, 0.5), 1.5) * 8) / 8 for a in aspects]


def map_grid(
    photos: Sequence[ArrayLike],
    maps: Sequence[ArrayLike],
    *,
    column_titles: Sequence[str],
    row_labels: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    footer: Optional[str] = None,
    banner: Optional[str] = None,
    original_sizes: Optional[Sequence[Tuple[int, int]]] = None,
    outliers: Optional[Sequence[Optional[ArrayLike]]] = None,
    sinks: Optional[Sequence[Optional[ArrayLike]]] = None,
    left_out: Sequence[int] = (),
    left_out_text: str = "left out",
    quantity: str = "attention",
    mode: str = "heatmap",
    cmap: str = "jet",
    alpha: float = 0.5,
    dpi: float = DPI,
) -> Figure:
    """Rows = images, columns = the original then each map over it, with one colour bar.

    Args:
      photos: B photos, uint8 ``[h_i, w_i, 3]``, each at its own size.
      maps: B arrays ``[C, gh, gw]`` (values in [0, 1], each divided by its own maximum), one per photo.
      column_titles: C + 1 titles (the first for the original photo).
      row_labels: B labels written left of each row: up to two ``"\\n"``-separated
        parts (e.g. file name and top-1 class); the first is wrapped to two
        lines, the second to as many as the row's height holds.
      title: figure title; footer: a last line (see :func:`vitjax.viz.notes.provenance`).
      banner: a warning in bold red under the title (e.g. :data:`vitjax.viz.notes.RANDOM_BANNER`).
      original_sizes: per row, the photo's real ``(height, width)`` in pixels, for what a stretched row's
        label says (default: each photo's own size).
      outliers: per row, None, ``[gh, gw]`` bool patches to outline in every map of the row, or
        ``[C, gh, gw]`` one mask per map column.
      sinks: per row, None, ``[gh, gw]`` bool attention-sink patches to ring in every map of the row, or
        ``[C, gh, gw]`` one mask per map column: ring a sink only on the tiles whose map includes its
        layer's attention (:func:`tile_sinks`). A legend over the row labels names the marks drawn.
      left_out: map columns (0-based among the C maps) that hold no result, e.g. the layers a rollout's
        start layer leaves out: drawn as the photo in faded grey with ``left_out_text``
        (:func:`vitjax.viz.drawing.left_out_tile`), unmarked, never as a blank map.
      quantity: what the maps' values are, for the colour bar (``"attention"``; e.g.
        ``"attention (rollout), relevance (generic)"`` for mixed columns).
      mode, cmap, alpha: see :func:`overlay`.
      dpi: pixels per inch; size in inches from :func:`grid_figsize`. A photo more elongated than
        :data:`vitjax.viz.drawing.MAX_ASPECT` is drawn stretched to it, and its row label says so.

    Raises:
      ValueError: counts or shapes that do not match, a ``left_out`` column out of range, bad style.
    """
    check_mode(mode)
    b = len(photos)
    if b == 0 or len(maps) != b:
        raise ValueError(f"need one [C, gh, gw] maps array per photo, got {b} photos and {len(maps)} maps")
    imgs = [as_photo(p) for p in photos]
    sizes = [tuple(im.shape[:2]) for im in imgs] if original_sizes is None else list(original_sizes)
    imgs = [at_display_aspect(im) for im in imgs]  # beyond MAX_ASPECT: resampled to it, to show the whole map
    maps = [np.asarray(m, np.float32) for m in maps]
    c = maps[0].shape[0] if maps[0].ndim == 3 else -1
    if any(m.ndim != 3 or m.shape[0] != c for m in maps):
        raise ValueError(f"every maps array must be [C, gh, gw] with the same C, got {[m.shape for m in maps]}")
    if len(column_titles) != c + 1:
        raise ValueError(f"need {c + 1} column titles (original + {c} maps), got {len(column_titles)}")
    for name, seq in (("row labels", row_labels), ("outlier masks", outliers), ("sink masks", sinks),
                      ("original sizes", original_sizes)):
        if seq is not None and len(seq) != b:
            raise ValueError(f"need {b} {name}, got {len(seq)}")
    left_out = {int(k) for k in left_out}
    if any(not 0 <= k < c for k in left_out):
        raise ValueError(f"left_out columns must be in [0, {c - 1}], got {sorted(left_out)}")
    marks = [[_per_tile(None if seq is None else seq[i], c, m.shape[1:], f"{name} of row {i + 1}")
              for seq, name in ((outliers, "outlier masks"), (sinks, "sink masks"))] for i, m in enumerate(maps)]
    ncols = c + 1
    aspects = [display_aspect(*im.shape[:2]) for im in imgs]
    cell_w, heights = _cells(b, ncols, aspects)
    fw, fh = grid_figsize(b, ncols, aspects, footer=bool(footer), banner=bool(banner))
    top = _GRID_TOP + (_BANNER if banner else 0.0)  # inches above the first row
    fig = new_figure((fw, fh), dpi)
    grid_w = ncols * cell_w + (ncols - 1) * GAP
    x0 = _GRID_LEFT + max(0.0, (fw - _GRID_LEFT - _GRID_RIGHT - grid_w) / 2)
    title_size = 8 if cell_w >= 1.5 else 7
    if title:  # two lines at most: a narrow grid wraps it instead of cutting it
        fig.text(0.5, 1 - 0.08 / fh, wrap(title, int((fw - 0.25) * 72 / (0.62 * 11)), 2), ha="center", va="top",
                 fontsize=11, fontweight="bold", linespacing=1.05)
    _footer(fig, footer)
    _banner(fig, banner, 0.125, 0.5, fw - 0.25)
    y = fh - top + GAP
    right = x0  # right edge of the rightmost tile: the colour bar sits beside it, however narrow the photos
    drawn = set()  # the marks drawn, for the legend
    for i, (img, m, cell_h, aspect) in enumerate(zip(imgs, maps, heights, aspects, strict=True)):
        h, w = img.shape[:2]
        up = upsample_map(m, (h, w))
        y -= cell_h + GAP
        for j in range(ncols):
            x = x0 + j * (cell_w + GAP)
            box = fit_box(aspect, (x, y, cell_w, cell_h))
            right = max(right, box[0] + box[2])
            if j - 1 in left_out:
                left_out_tile(fig, box, img, left_out_text, fontsize=title_size)
            else:
                shown = img if j == 0 else overlay(img, up[j - 1], mode=mode, cmap=cmap, alpha=alpha)
                ax = image_axes(fig, box, shown, stretch=True)
                if j > 0:
                    square, ring = marks[i][0][j - 1], marks[i][1][j - 1]
                    mark_tokens(ax, square, ring, (h, w))
                    drawn |= {k for k, v in (("square", square), ("circle", ring)) if v is not None and v.any()}
            if i == 0:
                # column titles sit at a fixed height above the first row, whatever the photo's aspect
                fig.text((x + cell_w / 2) / fw, (y + cell_h + 0.06) / fh,
                         shorten(column_titles[j], int(cell_w * 72 / (0.6 * title_size))),
                         ha="center", va="bottom", fontsize=title_size)
        stretched = stretch_note(*sizes[i][:2])
        if row_labels is not None or stretched:
            limit = int((_GRID_LEFT - 0.125) * 72 / (0.62 * 7))  # ~0.6 em per character, wide letters included
            room = max(2, int(cell_h * 72 / (1.2 * 7)))  # 7 pt lines beside this row
            parts = str(row_labels[i]).split("\n")[:2] if row_labels is not None else []
            if stretched:  # said right after the name, before a class name that may be cut to the row's height
                parts.insert(min(1, len(parts)), f"({stretched})")
            lines = [wrap(parts[0], limit, 2)]
            for part in parts[1:]:
                lines.append(wrap(part, limit, max(1, room - sum(t.count("\n") + 1 for t in lines))))
            fig.text((x0 - 0.08) / fw, (y + cell_h / 2) / fh, "\n".join(lines), ha="right", va="center",
                     fontsize=7, multialignment="right")
    grid_h = sum(heights) + (b - 1) * GAP
    bar_h = min(grid_h, 3.0)
    bar_y = fh - top - grid_h / 2 - bar_h / 2
    label = "brightness kept: each tile \u00f7 its maximum" if mode == "mask" else _SCALE_EACH.format(quantity)
    colorbar(fig, (right + 0.15, bar_y, 0.12, bar_h), mode, cmap, label=label, fontsize=7)
    legend = [text for kind, text in (("circle", "\u25cb attention sink"), ("square", "\u25a1 high-norm token"))
              if kind in drawn]
    if legend:  # over the row labels, level with the column titles
        fig.text((x0 - 0.08) / fw, (fh - top + 0.06) / fh, "\n".join(legend), ha="right", va="bottom",
                 fontsize=7, multialignment="left")
    return fig


def layer_grid(
    photos: Sequence[ArrayLike],
    maps: ArrayLike,
    *,
    method: str = "cumulative",
    start_layer: int = 0,
    start_flag: Optional[str] = None,
    row_labels: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    **kw,
) -> Figure:
    """Rows = images, columns = original, layer 1 ... layer L.

    Args:
      photos: B photos at their own sizes.
      maps: ``[B, L, gh, gw]``: each layer's own map (``method="layer"``) or
        the joint map through each layer (``method="cumulative"``), from
        :func:`vitjax.compute_maps`.
      method: ``"layer"`` or ``"cumulative"``; sets column and figure titles.
      start_layer: the rollout's :class:`vitjax.RolloutOptions` ``start_layer`` (0-based: the number
        of layers left out). With ``"cumulative"`` and s > 0, column k reads ``"layers s+1\u2013k"``,
        the title says which layers are left out, and the first s tiles are marked
        ``"left out"`` (:func:`vitjax.viz.drawing.left_out_tile`) instead of drawn as all-zero maps.
        Each layer's own map (``"layer"``) does not use it.
      start_flag: how the title names the setting, e.g. ``"--start-layer 1"`` (default ``"start layer s"``).
      row_labels, title, footer, banner, outliers, quantity, mode, cmap, alpha, dpi: see :func:`map_grid`.
      sinks: per row, ``[L, gh, gw]`` one mask per tile (:func:`tile_sinks` makes them from each layer's
        sinks), or None; ``[gh, gw]`` would ring the same patches on every tile, which no layer-wise
        map warrants.

    Raises:
      ValueError: a bad ``method``, or ``start_layer`` outside [0, L).
    """
    if method not in ("layer", "cumulative"):
        raise ValueError(f"method must be 'layer' or 'cumulative', got {method!r}")
    if any(m is not None and np.ndim(m) != 3 for m in kw.get("sinks") or ()):
        raise ValueError("sinks must be one [L, gh, gw] mask per row (one per tile, see tile_sinks): "
                         "a [gh, gw] mask would ring every layer's tile")
    maps = [np.asarray(m) for m in maps]
    num_layers = maps[0].shape[0] if maps and maps[0].ndim == 3 else 0
    s = int(start_layer)
    if not 0 <= s < max(num_layers, 1):
        raise ValueError(f"start_layer must be in [0, {num_layers - 1}] for {num_layers} layers, got {start_layer!r}")
    if method == "layer":
        cols = [f"layer {i + 1}" for i in range(num_layers)]
        default = "Each layer's own attention map (class-token row of that layer alone)"
        s = 0
    else:
        cols = [f"layer {i + 1}" if i <= s else layer_span(s + 1, i + 1) for i in range(num_layers)]
        default = f"Cumulative rollout: column 'layers {s + 1}\u2013k' = joint attention of layers {s + 1} through k"
        if s:
            default += f" ({layer_span(1, s)} left out: {start_flag or f'start layer {s}'})"
    return map_grid(photos, maps, column_titles=["original"] + cols, row_labels=row_labels,
                    title=default if title is None else title, left_out=range(s), **kw)


def tile_sinks(by_layer: ArrayLike, method: str, start_layer: int = 0) -> np.ndarray:
    """The sinks to ring on each tile of one :func:`layer_grid` row: bool ``[L, gh, gw]``.

    A tile's map includes the attention of some layers only, and rings only their sinks: layer l's
    own map (``"layer"``) the sinks of layer l; the rollout through layer k from ``start_layer``
    (``"cumulative"``, layers s+1..k) those of layers s+1..k; a left-out tile (k <= s) none. So
    a sink of layer 10 is not ringed on the "layer 1" column, nor a layer-1 sink on the
    "layers 2\u2013k" tiles of ``start_layer=1``.

    Args:
      by_layer: ``[L, gh, gw]`` bool, the sinks of each layer of one image
        (:func:`vitjax.attribution.diagnostics.sink_layers` of ``compute_maps(...)["received_heads"][b]``).
      method: ``"layer"`` or ``"cumulative"``.
      start_layer: the rollout's start layer, 0-based (``"cumulative"`` only).

    Raises:
      ValueError: a bad ``method``, ``by_layer`` not ``[L, gh, gw]``, ``start_layer`` outside [0, L).
    """
    m = np.asarray(by_layer, bool)
    if m.ndim != 3:
        raise ValueError(f"by_layer must be [L, gh, gw], got shape {m.shape}")
    if method == "layer":
        return m.copy()
    if method != "cumulative":
        raise ValueError(f"method must be 'layer' or 'cumulative', got {method!r}")
    s = int(start_layer)
    if not 0 <= s < m.shape[0]:
        raise ValueError(f"start_layer must be in [0, {m.shape[0] - 1}] for {m.shape[0]} layers, got {start_layer!r}")
    out = np.logical_or.accumulate(m[s:], axis=0)  # tile k (0-based, k >= s): any sink of layers s..k
    return np.concatenate([np.zeros_like(m[:s]), out], axis=0)


def head_grid(
    photos: Sequence[ArrayLike],
    maps: ArrayLike,
    *,
    layer: int,
    num_layers: Optional[int] = None,
    row_labels: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    **kw,
) -> Figure:
    """Rows = images, columns = original, head 1 ... head H of one layer.

    Args:
      photos: B photos at their own sizes.
      maps: ``[B, H, gh, gw]``: each head's class-token attention in ``layer``
        (``compute_maps(...)["heads"][:, layer]``).
      layer: the layer shown, 0-based (titles say ``layer + 1``).
      num_layers: the model's depth, for the title.
      row_labels, title, footer, banner, outliers, mode, cmap, alpha, dpi: see :func:`map_grid`.
      sinks: per row, ``[H, gh, gw]`` the sinks of each head of ``layer`` (``sink_layers`` of
        ``received_heads[b, layer][:, None]``), ``[gh, gw]`` for every head, or None.
    """
    maps = [np.asarray(m) for m in maps]
    heads = maps[0].shape[0] if maps and maps[0].ndim == 3 else 0
    of = f" of {num_layers}" if num_layers else ""
    default = f"Layer {int(layer) + 1}{of}: class-token attention of each head"
    return map_grid(photos, maps, column_titles=["original"] + [f"head {i + 1}" for i in range(heads)],
                    row_labels=row_labels, title=default if title is None else title, **kw)


def rollout_grid(
    photos: Sequence[ArrayLike],
    maps: ArrayLike,
    *,
    row_labels: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    **kw,
) -> Figure:
    """Rows = images, columns = original | joint map (``maps [B, gh, gw]``): a contact sheet.

    Keywords as :func:`map_grid`.
    """
    maps = [np.asarray(m)[None] for m in maps]
    return map_grid(photos, maps, column_titles=["original", "joint attention"], row_labels=row_labels,
                    title="Joint attention (rollout)" if title is None else title, **kw)
