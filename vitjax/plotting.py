"""Figures of attention maps laid over photos: arrays in, :class:`matplotlib.figure.Figure` out.

Nothing here touches pyplot's global state: every function builds a
``matplotlib.figure.Figure`` (Agg canvas) and returns it, so the module works
in scripts, servers, tests and notebooks alike. :func:`save_figure` writes a
PNG atomically; :func:`figure_png` returns the PNG bytes (for
``IPython.display.Image``).

Maps are laid over each photo at the photo's OWN size and aspect ratio: a
``[gh, gw]`` map is resized bilinearly to the photo's ``(height, width)``
(:func:`upsample_map`, the same numbers as :func:`vitjax.attention.upsample`),
never shown at the model's 224x224. Two renderings (``mode``):

* ``"heatmap"``: a colour map (default ``"jet"``, as in the original study's
  OpenCV ``COLORMAP_JET``) blended over the photo with weight ``alpha``;
* ``"mask"``: the original study's darkening, ``photo * map[..., None]``.

Layouts are placed in inches on fixed grids and figure sizes are multiples
of 1/4 inch, so at 100 dpi a PNG is exactly ``figsize * 100`` pixels, known in advance:
:data:`SUMMARY_FIGSIZE` for :func:`summary_figure`, :func:`grid_figsize` for
the grids.
"""

from __future__ import annotations

import io
import math
import os
import textwrap
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from vitjax.io import write_atomic
from vitjax.labels import class_label, topk  # noqa: F401  (re-exported for the notebook; defined in labels)

__all__ = [
    "DPI",
    "MODES",
    "SUMMARY_FIGSIZE",
    "class_label",
    "figure_png",
    "grid_figsize",
    "head_grid",
    "layer_grid",
    "map_grid",
    "overlay",
    "photo_array",
    "rollout_grid",
    "save_figure",
    "summary_figure",
    "topk",
    "upsample_map",
]

#: Default resolution of every figure (pixels per inch).
DPI = 100
#: Renderings of a map over a photo.
MODES = ("heatmap", "mask")
#: (width, height) in inches of :func:`summary_figure`: 1600 x 550 pixels at 100 dpi.
SUMMARY_FIGSIZE = (16.0, 5.5)

# Grid geometry, inches (binary fractions: no rounding error in inches * dpi).
_GAP = 0.0625
_GRID_LEFT = 1.5  # row labels: up to 4 lines of ~25 characters at 7 pt
_GRID_TOP = 0.875  # figure title + column titles
_GRID_BOTTOM = 0.125
_GRID_RIGHT = 1.0  # colour bar, its ticks and label
_GRID_MIN_WIDTH = 7.0  # room for the title however few columns

ArrayLike = Union[np.ndarray, Sequence]


# --------------------------------------------------------------------------- arrays


def _bilinear_weights(n_out: int, n_in: int) -> np.ndarray:
    """``[n_out, n_in]`` weights of a half-pixel-centre linear resize (edges clamped)."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    w = np.zeros((n_out, n_in), np.float64)
    rows = np.arange(n_out)
    np.add.at(w, (rows, lo), 1.0 - frac)
    np.add.at(w, (rows, hi), frac)
    return w


def upsample_map(maps: ArrayLike, size: Sequence[int]) -> np.ndarray:
    """Bilinear resize of the last two axes ``[..., gh, gw]`` -> ``[..., height, width]`` (NumPy).

    Half-pixel centres and clamped edges: the numbers of
    :func:`vitjax.attention.upsample` (``jax.image.resize``, bilinear, no
    antialiasing) without compiling one XLA program per photo size.

    Raises:
      ValueError: ``maps`` of rank < 2 or a size that is not two integers >= 1.
    """
    height, width = (int(s) for s in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be (height, width) in pixels >= 1, got {tuple(size)}")
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim < 2:
        raise ValueError(f"maps must be [..., gh, gw], got shape {maps.shape}")
    gh, gw = maps.shape[-2:]
    wy = _bilinear_weights(height, gh).astype(np.float32)
    wx = _bilinear_weights(width, gw).astype(np.float32)
    out = np.einsum("hi,...ij,wj->...hw", wy, maps, wx, optimize=True)
    return out.astype(np.float32)


def _as_photo(photo: ArrayLike) -> np.ndarray:
    """uint8 ``[h, w, 3]`` from a uint8 array, a float array in [0, 1], or a PIL image."""
    a = np.asarray(photo)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"photo must be [h, w, 3] (RGB), got shape {a.shape}")
    a = a[..., :3]
    if a.dtype != np.uint8:
        a = np.clip(np.rint(np.asarray(a, np.float64) * 255.0), 0, 255).astype(np.uint8)
    return a


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def overlay(
    photo: ArrayLike,
    attention_map: ArrayLike,
    *,
    mode: str = "heatmap",
    cmap: str = "jet",
    alpha: float = 0.5,
) -> np.ndarray:
    """A map laid over a photo at the photo's own size: uint8 ``[h, w, 3]``.

    Args:
      photo: uint8 ``[h, w, 3]`` (or float in [0, 1], or a PIL image).
      attention_map: ``[gh, gw]`` (resized bilinearly to ``(h, w)``) or
        already ``[h, w]``; values in [0, 1].
      mode: ``"heatmap"`` (``cmap`` blended over the photo:
        ``(1 - alpha) * photo + alpha * cmap(map)``) or ``"mask"`` (the
        original study's ``photo * map[..., None]``).
      cmap: a matplotlib colour map name (heatmap only).
      alpha: weight of the colour map in [0, 1] (heatmap only).

    Raises:
      ValueError: bad shapes, mode, colour map or alpha.
    """
    _check_mode(mode)
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    img = _as_photo(photo)
    h, w = img.shape[:2]
    m = np.asarray(attention_map, np.float32)
    if m.ndim != 2:
        raise ValueError(f"attention_map must be [gh, gw], got shape {m.shape}")
    if m.shape != (h, w):
        m = upsample_map(m, (h, w))
    m = np.clip(np.nan_to_num(m), 0.0, 1.0)
    base = img.astype(np.float32) / 255.0
    if mode == "mask":
        out = base * m[..., None]
    else:
        colours = _cmap(cmap)(m)[..., :3].astype(np.float32)
        out = (1.0 - alpha) * base + alpha * colours
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def _cmap(name: str):
    try:
        return colormaps[name]
    except KeyError:
        raise ValueError(f"unknown matplotlib colour map {name!r} (e.g. jet, inferno, viridis)") from None


# --------------------------------------------------------------------------- layout helpers


def _new_figure(figsize: Tuple[float, float], dpi: float) -> Figure:
    fig = Figure(figsize=figsize, dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def _fit(aspect_hw: float, box: Tuple[float, float, float, float]) -> Tuple[float, float, float, float]:
    """Largest ``(x, y, w, h)`` of aspect ``h / w = aspect_hw`` centred in ``box`` (inches)."""
    x, y, bw, bh = box
    w = min(bw, bh / aspect_hw)
    h = w * aspect_hw
    return (x + (bw - w) / 2, y + (bh - h) / 2, w, h)


def _axes(fig: Figure, rect_in: Tuple[float, float, float, float]):
    """Axes at ``(x, y, w, h)`` inches from the bottom-left corner."""
    fw, fh = fig.get_size_inches()
    x, y, w, h = rect_in
    return fig.add_axes((x / fw, y / fh, w / fw, h / fh))


def _image_axes(fig: Figure, rect_in, image: np.ndarray):
    ax = _axes(fig, rect_in)
    ax.imshow(image, interpolation="antialiased")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    return ax


def _shorten(text: str, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: max(1, limit - 1)] + "\u2026"


def _wrap(text: str, width: int, lines: int) -> str:
    """At most ``lines`` lines of at most ``width`` characters, "…" where cut."""
    # paths break after a "/" rather than inside a name
    parts = textwrap.wrap(str(text).replace("/", "/ "), width=width, break_long_words=True) or [""]
    parts = [p.replace("/ ", "/") for p in parts]
    if len(parts) > lines:
        parts = parts[:lines]
        parts[-1] = _shorten(parts[-1] + " ", width)
        if not parts[-1].endswith("\u2026"):
            parts[-1] = parts[-1][: width - 1].rstrip() + "\u2026"
    return "\n".join(parts)


def _colorbar(fig: Figure, rect_in, mode: str, cmap: str, fontsize: float = 8) -> None:
    cax = _axes(fig, rect_in)
    name = "gray" if mode == "mask" else cmap
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap=_cmap(name)), cax=cax)
    bar.set_ticks([0.0, 0.25, 0.5, 0.75, 1.0])
    bar.ax.tick_params(labelsize=fontsize)
    label = "brightness kept (map value)" if mode == "mask" else "attention (map / max)"
    bar.set_label(label, fontsize=fontsize)


# --------------------------------------------------------------------------- figures


def summary_figure(
    photo: ArrayLike,
    joint_map: ArrayLike,
    *,
    labels: Optional[Sequence[str]] = None,
    probs: Optional[Sequence[float]] = None,
    title: Optional[str] = None,
    map_title: str = "joint attention (rollout)",
    mode: str = "heatmap",
    cmap: str = "jet",
    alpha: float = 0.5,
    dpi: float = DPI,
) -> Figure:
    """One image: original | joint map over it (with colour bar) | top-k predictions.

    Args:
      photo: the photo at its own size, uint8 ``[h, w, 3]``.
      joint_map: ``[gh, gw]`` map in [0, 1] (resized to ``(h, w)``).
      labels, probs: the top-k class names and softmax probabilities, best
        first (see :func:`topk`, :func:`class_label`); ``None`` for a model
        without classification head (the panel says so).
      title: figure title (e.g. the file name).
      map_title: title over the map panel.
      mode, cmap, alpha: see :func:`overlay`.
      dpi: pixels per inch; the figure is :data:`SUMMARY_FIGSIZE` inches
        (1600 x 550 pixels at the default 100).

    Returns:
      A :class:`matplotlib.figure.Figure` (save with :func:`save_figure`).
    """
    img = _as_photo(photo)
    h, w = img.shape[:2]
    shown = overlay(img, joint_map, mode=mode, cmap=cmap, alpha=alpha)
    fig = _new_figure(SUMMARY_FIGSIZE, dpi)
    fw, fh = SUMMARY_FIGSIZE
    bottom, top = 0.375, fh - 0.9375  # panel boxes: room for the figure title and panel titles
    ph = top - bottom
    if title:
        fig.text(0.5, 1 - 0.15 / fh, _shorten(title, 150), ha="center", va="top", fontsize=12,
                 fontweight="bold")

    ax = _image_axes(fig, _fit(h / w, (0.25, bottom, 4.5, ph)), img)
    ax.set_title(f"original ({w}\u00d7{h} px)", fontsize=10)

    rect = _fit(h / w, (5.0, bottom, 4.5, ph))
    ax = _image_axes(fig, rect, shown)
    ax.set_title(map_title, fontsize=10)
    _colorbar(fig, (9.625, rect[1], 0.15, rect[3]), mode, cmap, fontsize=8)

    bar_box = (12.875, bottom + 0.25, 2.75, ph - 0.25)  # names go left of it, from ~10.5 in
    ax = _axes(fig, bar_box)
    if labels is None or probs is None or len(probs) == 0:
        ax.axis("off")
        ax.text(0.5, 0.5, "no classification head:\nthe model outputs features,\nno class predictions",
                ha="center", va="center", fontsize=10, transform=ax.transAxes)
        return fig
    probs = [float(p) for p in probs]
    k = len(probs)
    if len(labels) != k:
        raise ValueError(f"labels and probs differ in length ({len(labels)} vs {k})")
    fontsize = 9 if k <= 8 else max(5.0, 9 * 8 / k)
    lines = 2 if k <= 8 else 1
    width = int(2.25 * 72 / (0.55 * fontsize))  # characters that fit in 2.25 inches
    ypos = np.arange(k)
    ax.barh(ypos, probs, color="#3b75af", height=0.7)
    ax.set_yticks(ypos, [_wrap(name, width, lines) for name in labels], fontsize=fontsize)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(k - 0.5, -0.5)
    ax.set_xticks([0.0, 0.25, 0.5, 0.75, 1.0])
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel("probability (softmax)", fontsize=9)
    ax.set_title(f"top-{k} predictions", fontsize=10)
    for y, p in zip(ypos, probs, strict=True):
        inside = p > 0.75
        ax.text(p - 0.02 if inside else p + 0.02, y, f"{p:.3f}", va="center", ha="right" if inside else "left",
                fontsize=fontsize, color="white" if inside else "black")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig


def grid_figsize(nrows: int, ncols: int, aspect_hw: float = 1.0) -> Tuple[float, float]:
    """(width, height) in inches of a :func:`map_grid` with these rows and columns.

    Cells are 1.5 inches wide (1 inch beyond 17 columns), their height the
    median photo aspect ``h / w`` clipped to [0.5, 1.5], rounded to 1/8 inch;
    margins hold the title, column titles, row labels and the colour bar. The
    total is rounded up to a multiple of 1/4 inch (at least 7 inches wide), so
    at 100 dpi the PNG is exactly ``100 * width`` x ``100 * height`` pixels.
    """
    cell_w, cell_h = _cell(ncols, aspect_hw)
    width = _GRID_LEFT + ncols * cell_w + (ncols - 1) * _GAP + _GRID_RIGHT
    height = _GRID_TOP + nrows * cell_h + (nrows - 1) * _GAP + _GRID_BOTTOM
    # Rounded up to 1/4 inch (slack goes to the right and bottom margins): whole pixels at 100 dpi.
    return (max(math.ceil(width * 4) / 4, _GRID_MIN_WIDTH), math.ceil(height * 4) / 4)


def _cell(ncols: int, aspect_hw: float) -> Tuple[float, float]:
    cell_w = 1.5 if ncols <= 17 else 1.0
    cell_h = round(cell_w * min(max(float(aspect_hw), 0.5), 1.5) * 8) / 8
    return cell_w, cell_h


def map_grid(
    photos: Sequence[ArrayLike],
    maps: Sequence[ArrayLike],
    *,
    column_titles: Sequence[str],
    row_labels: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    mode: str = "heatmap",
    cmap: str = "jet",
    alpha: float = 0.5,
    dpi: float = DPI,
) -> Figure:
    """Rows = images, columns = the original then each map over it, with one colour bar.

    Args:
      photos: B photos, uint8 ``[h_i, w_i, 3]``, each at its own size.
      maps: B arrays ``[C, gh, gw]`` (values in [0, 1]), one per photo.
      column_titles: C + 1 titles (the first for the original photo).
      row_labels: B labels written left of each row: up to two ``"\\n"``-separated
        parts (e.g. file name and top-1 class), each wrapped to two lines.
      title: figure title.
      mode, cmap, alpha: see :func:`overlay`.
      dpi: pixels per inch; size in inches from :func:`grid_figsize`.
    """
    _check_mode(mode)
    b = len(photos)
    if b == 0 or len(maps) != b:
        raise ValueError(f"need one [C, gh, gw] maps array per photo, got {b} photos and {len(maps)} maps")
    imgs = [_as_photo(p) for p in photos]
    maps = [np.asarray(m, np.float32) for m in maps]
    c = maps[0].shape[0] if maps[0].ndim == 3 else -1
    if any(m.ndim != 3 or m.shape[0] != c for m in maps):
        raise ValueError(f"every maps array must be [C, gh, gw] with the same C, got {[m.shape for m in maps]}")
    if len(column_titles) != c + 1:
        raise ValueError(f"need {c + 1} column titles (original + {c} maps), got {len(column_titles)}")
    if row_labels is not None and len(row_labels) != b:
        raise ValueError(f"need {b} row labels, got {len(row_labels)}")
    ncols = c + 1
    aspect = float(np.median([im.shape[0] / im.shape[1] for im in imgs]))
    cell_w, cell_h = _cell(ncols, aspect)
    fw, fh = grid_figsize(b, ncols, aspect)
    fig = _new_figure((fw, fh), dpi)
    grid_w = ncols * cell_w + (ncols - 1) * _GAP
    x0 = _GRID_LEFT + max(0.0, (fw - _GRID_LEFT - _GRID_RIGHT - grid_w) / 2)
    title_size = 8 if cell_w >= 1.5 else 7
    if title:
        fig.text(0.5, 1 - 0.1 / fh, _shorten(title, int(fw * 72 / 6.5)), ha="center", va="top", fontsize=11,
                 fontweight="bold")
    for i, (img, m) in enumerate(zip(imgs, maps, strict=True)):
        h, w = img.shape[:2]
        up = upsample_map(m, (h, w))
        y = fh - _GRID_TOP - (i + 1) * cell_h - i * _GAP
        for j in range(ncols):
            x = x0 + j * (cell_w + _GAP)
            shown = img if j == 0 else overlay(img, up[j - 1], mode=mode, cmap=cmap, alpha=alpha)
            _image_axes(fig, _fit(h / w, (x, y, cell_w, cell_h)), shown)
            if i == 0:
                # column titles sit at a fixed height above the first row, whatever the photo's aspect
                fig.text((x + cell_w / 2) / fw, (y + cell_h + 0.06) / fh,
                         _shorten(column_titles[j], int(cell_w * 72 / (0.6 * title_size))),
                         ha="center", va="bottom", fontsize=title_size)
        if row_labels is not None:
            limit = int((_GRID_LEFT - 0.125) * 72 / (0.62 * 7))  # ~0.6 em per character, wide letters included
            lines = [_wrap(s, limit, 2) for s in str(row_labels[i]).split("\n")[:2]]
            fig.text((x0 - 0.08) / fw, (y + cell_h / 2) / fh, "\n".join(lines), ha="right", va="center",
                     fontsize=7, multialignment="right")
    grid_h = b * cell_h + (b - 1) * _GAP
    bar_h = min(grid_h, 3.0)
    bar_y = fh - _GRID_TOP - grid_h / 2 - bar_h / 2
    _colorbar(fig, (x0 + grid_w + 0.15, bar_y, 0.12, bar_h), mode, cmap, fontsize=7)
    return fig


def layer_grid(
    photos: Sequence[ArrayLike],
    maps: ArrayLike,
    *,
    method: str = "cumulative",
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
      row_labels, title, mode, cmap, alpha, dpi: see :func:`map_grid`.
    """
    if method not in ("layer", "cumulative"):
        raise ValueError(f"method must be 'layer' or 'cumulative', got {method!r}")
    maps = [np.asarray(m) for m in maps]
    num_layers = maps[0].shape[0] if maps and maps[0].ndim == 3 else 0
    if method == "layer":
        cols = [f"layer {i + 1}" for i in range(num_layers)]
        default = "Each layer's own attention map (class-token row of that layer alone)"
    else:
        cols = ["layer 1"] + [f"layers 1\u2013{i + 1}" for i in range(1, num_layers)]
        default = "Cumulative rollout: joint attention through layers 1\u2026l"
    return map_grid(photos, maps, column_titles=["original"] + cols, row_labels=row_labels,
                    title=default if title is None else title, **kw)


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
    """Rows = images, columns = original | joint map (``maps [B, gh, gw]``): a contact sheet."""
    maps = [np.asarray(m)[None] for m in maps]
    return map_grid(photos, maps, column_titles=["original", "joint attention"], row_labels=row_labels,
                    title="Joint attention (rollout)" if title is None else title, **kw)


# --------------------------------------------------------------------------- output


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes, at its own size and dpi (``IPython.display.Image(data=...)``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, facecolor="white")
    return buf.getvalue()


def save_figure(fig: Figure, path: Union[str, os.PathLike], *, overwrite: bool = False) -> Path:
    """Writes ``fig`` as a PNG at ``path``, atomically, at its own size and dpi.

    The PNG goes to a temporary file in the same folder, which is then moved
    onto ``path`` (``os.replace``), so ``path`` is never a partial file. The
    folder must exist.

    Args:
      overwrite: replace an existing file; otherwise refuse it.

    Returns:
      ``path`` as a :class:`pathlib.Path`.

    Raises:
      FileExistsError: ``path`` exists and ``overwrite`` is False.
      OSError: the folder is missing or not writable.
    """
    path = Path(path)
    data = figure_png(fig)
    return write_atomic(path, data, overwrite=overwrite)


def photo_array(image, max_side: Optional[int] = None) -> np.ndarray:
    """uint8 ``[h, w, 3]`` of a PIL image (or anything :func:`vitjax.load_image` reads).

    With ``max_side``, a photo whose long side is larger is shrunk (Lanczos,
    aspect ratio kept) so figures of huge photos stay light; smaller photos
    keep their own size.
    """
    from PIL import Image

    from vitjax.preprocess import load_image

    image = load_image(image)
    if max_side is not None and max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
        image = image.resize(size, Image.LANCZOS)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)
