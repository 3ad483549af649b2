"""Figures of what each layer knows and which heads matter: the lens and head importance.

Arrays in, :class:`matplotlib.figure.Figure` out (no pyplot), like :mod:`vitjax.viz.figures`:

* :func:`lens_figure` -- one row per depth (the embedding, then every block): the
  lens map of one class laid over the photo and that depth's top-k classes with
  their probabilities (:func:`vitjax.logit_lens`);
* :func:`feature_lens_figure` -- a headless model's feature lens, the cosine of
  each depth's normalised class token to the final one (:func:`vitjax.feature_lens`);
* :func:`importance_figure` -- an ``L x H`` heat map of head importance
  (:func:`vitjax.head_importance`), per image or its mean over a run.

:func:`analysis_arrays` computes what they draw for one batch (the visualize run calls it).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from vitjax.attribution.importance import head_importance
from vitjax.attribution.lens import feature_lens, logit_lens
from vitjax.errors import NonFiniteError
from vitjax.viz.drawing import (
    ArrayLike,
    as_photo,
    axes_at,
    colorbar,
    display_aspect,
    image_axes,
    new_figure,
    overlay,
    probability_text,
    shorten,
    wrap,
)

__all__ = ["analysis_arrays", "feature_lens_figure", "importance_figure", "lens_figure", "softmax"]

_TOP = 0.75  # inches: title
_BOTTOM = 0.875  # the last row's axis label and the footer
_ROW = 1.25  # one depth of the lens figure
_TILE = 1.125  # the photo tile of a row
_NAMES = 2.5  # class names left of the bars
_BARS = 2.0
_BAR = 0.25  # colour bar


def softmax(logits: ArrayLike) -> np.ndarray:
    """Softmax over the last axis in float64 (probabilities of the lens rows)."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _footer(fig: Figure, text: Optional[str]) -> None:
    if text:
        fw, _ = fig.get_size_inches()
        _, fh = fig.get_size_inches()
        fig.text(0.1 / fw, 0.08 / fh, wrap(text, int((fw - 0.2) * 72 / (0.55 * 7)), 3), ha="left", va="bottom",
                 fontsize=7, color="#444444")  # up to 3 lines: the settings are never cut on a narrow figure


def _title(fig: Figure, title: Optional[str], banner: Optional[str] = None) -> None:
    fw, fh = fig.get_size_inches()
    if title:
        fig.text(0.5, 1 - 0.12 / fh, title, ha="center", va="top", fontsize=11)
    if banner:
        fig.text(0.5, 1 - 0.42 / fh, banner, ha="center", va="top", fontsize=8.5, fontweight="bold",
                 color="#b00000")


def _depth_label(row: int) -> str:
    return "embedding (block 1's input)" if row == 0 else f"after block {row}"


def lens_figure(photo: ArrayLike, logits: ArrayLike, maps: ArrayLike, *, labels: Sequence[str],
                map_label: str, k: int = 5, title: Optional[str] = None, footer: Optional[str] = None,
                mode: str = "heatmap", cmap: str = "jet", alpha: float = 0.5, dpi: float = 100,
                banner: Optional[str] = None) -> Figure:
    """The logit lens of one image: a row per depth with the lens map over the photo and the top-k classes.

    Args:
      photo: uint8 ``[h, w, 3]``.
      logits: ``[L+1, C]`` lens logits (:func:`vitjax.logit_lens` ``["logits"][b]``).
      maps: ``[L+1, gh, gw]`` the lens map of one class (raw logits); each row is drawn min-max
        normalised over its own patches (the colour bar says so).
      labels: the ``C`` class names (index -> name).
      map_label: what the maps show, e.g. ``"logit of tabby, tabby_cat"``.
      k: classes per row (probabilities: the softmax of that row's lens logits).
      title, footer, banner: the figure's title, provenance line and warning line.
      mode, cmap, alpha: the overlay (:func:`vitjax.overlay`).

    Raises:
      ValueError: shapes that do not agree.
    """
    logits = np.asarray(logits, np.float64)
    maps = np.asarray(maps, np.float64)
    if logits.ndim != 2 or maps.ndim != 3 or maps.shape[0] != logits.shape[0]:
        raise ValueError(f"logits must be [L+1, C] and maps [L+1, gh, gw] with the same rows, got {logits.shape} "
                         f"and {maps.shape}")
    if len(labels) != logits.shape[1]:
        raise ValueError(f"labels must name the {logits.shape[1]} classes, got {len(labels)}")
    img = as_photo(photo)
    rows, k = logits.shape[0], min(int(k), logits.shape[1])
    aspect = display_aspect(*img.shape[:2])
    tile_w = min(_TILE, (_ROW - 0.125) / aspect)
    width = 1.75 + tile_w + 0.25 + _NAMES + _BARS + 0.75 + _BAR
    height = _TOP + rows * _ROW + _BOTTOM
    fig = new_figure((width, height), dpi)
    _title(fig, title, banner)
    probs = softmax(logits)
    for r in range(rows):
        y = height - _TOP - (r + 1) * _ROW + 0.0625
        m = maps[r]
        lo, hi = np.nanmin(m), np.nanmax(m)
        norm = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
        fw, fh = fig.get_size_inches()
        fig.text(0.1 / fw, (y + _ROW / 2) / fh, _depth_label(r), ha="left", va="center", fontsize=8)
        image_axes(fig, (1.75, y, tile_w, tile_w * aspect), overlay(img, norm, mode=mode, cmap=cmap, alpha=alpha),
                   stretch=True)
        top = np.argsort(-probs[r])[:k]
        ax = axes_at(fig, (1.75 + tile_w + 0.25 + _NAMES, y + 0.0625, _BARS, _ROW - 0.25))
        ax.barh(np.arange(k), probs[r, top], color="#3b75af", height=0.7)
        ax.set_yticks(np.arange(k), [shorten(labels[c], 38) for c in top], fontsize=7)
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(k - 0.5, -0.5)
        ax.tick_params(axis="x", labelsize=7)
        for yy, c in enumerate(top):
            ax.text(min(probs[r, c], 0.8) + 0.02, yy, probability_text(probs[r, c]), va="center", fontsize=6.5)
        if r < rows - 1:
            ax.set_xticklabels([])
        else:
            ax.set_xlabel("probability (softmax of the lens logits)", fontsize=8)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    colorbar(fig, (width - _BAR - 0.5, _BOTTOM + 0.0625, _BAR, rows * _ROW - 0.25), mode, cmap,
             label=f"lens map: {map_label}, min\u2013max per row")
    _footer(fig, footer)
    return fig


def feature_lens_figure(photo: ArrayLike, cosine: ArrayLike, *, title: Optional[str] = None,
                        footer: Optional[str] = None, dpi: float = 100, banner: Optional[str] = None) -> Figure:
    """A headless model's feature lens: the photo and the cosine of each depth's class token to the final one.

    ``cosine``: ``[L+1]`` (:func:`vitjax.feature_lens` ``[b]``); depth 0 is the embedding.
    """
    cos = np.asarray(cosine, np.float64)
    if cos.ndim != 1:
        raise ValueError(f"cosine must be [L+1], got shape {cos.shape}")
    img = as_photo(photo)
    aspect = display_aspect(*img.shape[:2])
    tile_w = min(3.5, 3.5 / aspect)
    width, height = 0.5 + tile_w + 1.0 + 5.5 + 0.25, _TOP + 3.75 + _BOTTOM
    fig = new_figure((width, height), dpi)
    _title(fig, title, banner)
    image_axes(fig, (0.5, _BOTTOM + 0.25, tile_w, tile_w * aspect), img, stretch=True)
    ax = axes_at(fig, (0.5 + tile_w + 1.0, _BOTTOM + 0.5, 5.5, 3.0))
    depth = np.arange(cos.shape[0])
    ax.plot(depth, cos, marker="o", color="#3b75af")
    ax.set_xticks(depth, ["emb"] + [str(d) for d in depth[1:]], fontsize=8)
    ax.set_xlabel("depth (blocks done)", fontsize=9)
    ax.set_ylabel("cosine to the final features", fontsize=9)
    ax.set_ylim(min(0.0, float(np.nanmin(cos)) - 0.05), 1.05)
    ax.grid(alpha=0.3)
    ax.set_title("feature lens: each depth's class token after the final norm", fontsize=10)
    _footer(fig, footer)
    return fig


def importance_figure(table: ArrayLike, *, quantity: str, title: Optional[str] = None,
                      footer: Optional[str] = None, photo: Optional[ArrayLike] = None,
                      spread: Optional[ArrayLike] = None, dpi: float = 100, banner: Optional[str] = None) -> Figure:
    """Head importance as an ``L x H`` heat map (rows: layers 1..L; columns: heads 1..H), diverging around 0.

    Args:
      table: ``[L, H]`` (:func:`vitjax.head_importance` of one image, or a run's mean).
      quantity: what the values are, for the colour bar (e.g. ``"target logit: ablated - clean"``).
      photo: the image, drawn beside the map (per-image figures).
      spread: ``[L, H]`` standard deviations, printed in each cell under the value (a run's figure).
      title, footer, banner: as :func:`lens_figure`.
    """
    t = np.asarray(table, np.float64)
    if t.ndim != 2:
        raise ValueError(f"table must be [L, H], got shape {t.shape}")
    L, H = t.shape
    cell = 0.5 if H <= 16 else 0.3
    left = 0.75 + (3.0 if photo is not None else 0.0)
    width = left + H * cell + 1.75
    height = _TOP + 0.5 + L * cell + _BOTTOM + 0.25
    fig = new_figure((max(width, 6.0), height), dpi)
    _title(fig, title, banner)
    if photo is not None:
        img = as_photo(photo)
        aspect = display_aspect(*img.shape[:2])
        w = min(2.5, 2.5 / aspect)
        image_axes(fig, (0.25, height - _TOP - 0.25 - w * aspect, w, w * aspect), img, stretch=True)
    ax = axes_at(fig, (left, _BOTTOM + 0.25, H * cell, L * cell))
    bound = float(np.nanmax(np.abs(t))) if np.isfinite(t).any() and np.nanmax(np.abs(t)) > 0 else 1.0
    im = ax.imshow(t, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -bound, bound), aspect="auto")
    ax.set_xticks(np.arange(H), [str(h + 1) for h in range(H)], fontsize=7)
    ax.set_yticks(np.arange(L), [str(layer + 1) for layer in range(L)], fontsize=7)
    ax.set_xlabel("head", fontsize=9)
    ax.set_ylabel("layer", fontsize=9)
    if H <= 16:
        s = None if spread is None else np.asarray(spread, np.float64)
        for i in range(L):
            for j in range(H):
                text = f"{t[i, j]:.2g}" + ("" if s is None else f"\n\u00b1{s[i, j]:.1g}")
                ax.text(j, i, text, ha="center", va="center", fontsize=5.5 if s is None else 4.5,
                        color="white" if abs(t[i, j]) > 0.6 * bound else "black")
    cax = axes_at(fig, (left + H * cell + 0.25, _BOTTOM + 0.25, 0.2, L * cell))
    bar = fig.colorbar(im, cax=cax)
    bar.ax.tick_params(labelsize=7)
    bar.set_label(quantity, fontsize=8)
    _footer(fig, footer)
    return fig


def analysis_arrays(model, params, images, *, kind: str, trained_head: bool, target=None,
                    valid: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """What the lens and importance figures draw, for one batch (NumPy).

    ``kind`` ``"lens"``: ``lens_logits [B, L+1, C]``, ``lens_maps [B, L+1, gh, gw]``, ``lens_target [B]``
    with a trained head; otherwise ``feature_lens [B, L+1]``. ``kind`` ``"importance"``:
    ``importance [B, L, H]`` (:func:`vitjax.head_importance`; with no trained head, by the features' cosine:
    an all-zero head is left out).
    Padding rows (``valid`` False) are computed but meaningless, and never checked.

    Raises:
      NonFiniteError: a valid row's lens or importance is not finite (NaN/inf); ``.result`` holds the
        dict above (the other rows are usable), ``.what`` names the rows.
    """
    if kind == "lens":
        def arrays(lens):
            if not trained_head:
                return {"feature_lens": np.asarray(lens)}
            return {"lens_logits": np.asarray(lens["logits"]), "lens_maps": np.asarray(lens["maps"]),
                    "lens_target": np.asarray(lens["target"])}

        try:
            if trained_head:
                return arrays(logit_lens(model, params, images, target=target, valid=valid))
            return arrays(feature_lens(model, params, images, valid=valid))
        except NonFiniteError as e:
            raise NonFiniteError(str(e), what=e.what, result=arrays(e.result)) from None
    if kind == "importance":
        if not trained_head and model.config.num_classes:  # an all-zero head: measure the features instead
            model = type(model)(model.config.replace(num_classes=None), model.dtype)
            params = {k: v for k, v in params.items() if k != "head"}
            target = None
        return {"importance": np.asarray(head_importance(model, params, images, target=target))}
    raise ValueError(f"kind must be 'lens' or 'importance', got {kind!r}")

