"""How well attention maps match an object: pure functions on maps and masks, plus mean attention distance.

Map-vs-object metrics (NumPy, float64 inside). Each is defined for ONE map
``[H, W]`` and one mask ``[H, W]`` and vectorised over any leading axes of the
map (``[..., H, W]`` -> ``[...]``), so the ~2L + 3 maps of an image are scored
in one call. Maps are non-negative (attention maps, baselines); masks are bool.

* :func:`pointing_game` -- a hit when the map's maximum lies on the object
  (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016,
  here with no tolerance margin). When several pixels share the maximum the
  value is the share of them on the object: the expected hit when ties are broken
  at random (a constant map scores the object's area fraction).
* :func:`iou_at_mean` -- intersection over union of the object and the pixels
  whose value is at least the map's mean (a constant map selects every pixel).
* :func:`roc_auc` -- area under the ROC curve of the map as a score for "pixel
  on the object": the Mann-Whitney probability that an object pixel outscores a
  background pixel, ties counting one half (a constant map scores 0.5).
* :func:`mass_in_box` -- the share of the map's total mass inside the bounding
  box; box weights in [0, 1] (the part of each pixel the box covers).

All return NaN where the metric is undefined: no object pixel (every metric),
no background pixel (AUC), a map of zero mass (mass in box).

Resolution. vitjax scores maps in the model's input frame, on a grid
``scale`` times finer than the patch grid (:func:`eval_size`; default 4: 56 x 56
for a 224-pixel /16 model, each patch 4 x 4 cells). The model sees the whole
photo squashed to its input size (no crop), so this frame is the photo stretched
by a constant factor per axis: areas scale uniformly, and pointing, IoU, AUC and
mass fractions are those of the photo frame up to resampling. Maps are
bilinearly upsampled to it (:func:`vitjax.attribution.rollout.upsample`); the object mask is
rasterised at the photo's own size (:func:`vitjax.data.datasets.annotation_mask`) and
reduced by area (:func:`area_fraction`; a cell is on the object when at least
half of it is). Four cells per patch keep the boundary error (a quarter patch)
far below the maps' own resolution while scoring costs ~10 ms per image on one
CPU core instead of ~200 ms at 224 x 224.

Baselines: :func:`gaussian_map` (centred, sigma a quarter of each side) and
:func:`uniform_map`, scored like any map, tell whether attention beats "the
object is in the middle".

Mean attention distance (:func:`mean_attention_distance`, jax.numpy, runs inside
the jitted step on the attention of the forward pass): ViT paper (Dosovitskiy et
al., ICLR 2021), Fig. 7; see its docstring.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

__all__ = [
    "METRICS",
    "pointing_game",
    "iou_at_mean",
    "roc_auc",
    "mass_in_box",
    "score_maps",
    "eval_size",
    "area_fraction",
    "gaussian_map",
    "uniform_map",
    "patch_distances",
    "mean_attention_distance",
]

#: Names of the map-vs-object metrics, in the order of :func:`score_maps`.
METRICS = ("pointing", "iou", "auc", "boxmass")


def _flat(maps, mask) -> Tuple[np.ndarray, np.ndarray, Tuple[int, ...]]:
    maps = np.asarray(maps, dtype=np.float64)
    mask = np.asarray(mask)
    if maps.ndim < 2 or maps.shape[-2:] != mask.shape:
        raise ValueError(f"maps [..., H, W] and mask [H, W] must share H, W; got {maps.shape} and {mask.shape}")
    lead = maps.shape[:-2]
    return maps.reshape((-1, mask.size)), mask.reshape(-1), lead


def pointing_game(maps, mask) -> np.ndarray:
    """Pointing-game hit: share of the map's maximal pixels that lie on the object.

    Args:
      maps: ``[..., H, W]`` float.
      mask: ``[H, W]`` bool, True on the object.

    Returns:
      float64 ``[...]`` in [0, 1]: 1 or 0 when the maximum is unique; NaN when
      the mask is empty.

    Raises:
      ValueError: shapes do not match.
    """
    v, m, lead = _flat(maps, np.asarray(mask, bool))
    top = v == v.max(axis=1, keepdims=True)
    hit = (top & m).sum(axis=1) / top.sum(axis=1)
    return np.where(m.any(), hit, np.nan).reshape(lead)


def iou_at_mean(maps, mask) -> np.ndarray:
    """IoU of the object with the map thresholded at its mean (pixels ``>= mean``).

    A constant map selects every pixel (its mean, rounded, could otherwise sit
    above its value). Returns float64 ``[...]`` in [0, 1]; NaN for an empty mask.

    Raises:
      ValueError: shapes do not match.
    """
    v, m, lead = _flat(maps, np.asarray(mask, bool))
    flat = v.max(axis=1, keepdims=True) == v.min(axis=1, keepdims=True)
    sel = (v >= v.mean(axis=1, keepdims=True)) | flat
    iou = (sel & m).sum(axis=1) / (sel | m).sum(axis=1)
    return np.where(m.any(), iou, np.nan).reshape(lead)


def roc_auc(maps, mask) -> np.ndarray:
    """ROC-AUC of the map's values as scores for the mask's pixels.

    Computed exactly as the Mann-Whitney statistic with mid-ranks for ties:
    ``(R_pos - P (P + 1) / 2) / (P N)``, ``R_pos`` the sum of the object pixels'
    ranks among all pixels, P object and N background pixels (Hanley & McNeil,
    Radiology 1982).

    Returns:
      float64 ``[...]`` in [0, 1]; NaN when the mask is empty or full.

    Raises:
      ValueError: shapes do not match.
    """
    v, m, lead = _flat(maps, np.asarray(mask, bool))
    n = m.size
    p = int(m.sum())
    if p == 0 or p == n:
        return np.full(lead, np.nan)
    order = np.argsort(v, axis=1, kind="stable")
    s = np.take_along_axis(v, order, axis=1)
    start = np.ones(s.shape, bool)
    start[:, 1:] = s[:, 1:] != s[:, :-1]
    end = np.ones(s.shape, bool)
    end[:, :-1] = start[:, 1:]
    idx = np.arange(n)
    first = np.maximum.accumulate(np.where(start, idx, 0), axis=1)
    last = np.minimum.accumulate(np.where(end, idx, n)[:, ::-1], axis=1)[:, ::-1]
    ranks = (first + last) / 2.0 + 1.0  # mid-ranks, 1-based
    r_pos = (ranks * m[order]).sum(axis=1)
    return ((r_pos - p * (p + 1) / 2.0) / (p * (n - p))).reshape(lead)


def mass_in_box(maps, box) -> np.ndarray:
    """Share of the map's mass inside the bounding box: ``sum(map * box) / sum(map)``.

    Args:
      maps: ``[..., H, W]`` non-negative float.
      box: ``[H, W]`` weights in [0, 1] (1 inside the box; fractions where a
        cell is partly covered, see :func:`area_fraction`) or bool.

    Returns:
      float64 ``[...]``; NaN where the map sums to 0.

    Raises:
      ValueError: shapes do not match.
    """
    v, b, lead = _flat(maps, np.asarray(box, np.float64))
    total = v.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (v * b).sum(axis=1) / total  # not v @ b: no BLAS threads
    return np.where(total > 0, share, np.nan).reshape(lead)


def score_maps(maps, mask, box) -> Dict[str, np.ndarray]:
    """All of :data:`METRICS` for a stack of maps against one object.

    Args:
      maps: ``[..., H, W]`` non-negative float.
      mask: ``[H, W]`` bool object mask, or ``None`` (no annotation: all NaN).
      box: ``[H, W]`` box weights in [0, 1], or ``None``.

    Returns:
      ``{"pointing", "iou", "auc", "boxmass"}`` -> float64 ``[...]``.
    """
    lead = np.shape(maps)[:-2]
    if mask is None:
        return {k: np.full(lead, np.nan) for k in METRICS}
    out = {"pointing": pointing_game(maps, mask), "iou": iou_at_mean(maps, mask), "auc": roc_auc(maps, mask)}
    out["boxmass"] = np.full(lead, np.nan) if box is None else mass_in_box(maps, box)
    return out


# --------------------------------------------------------------------------- frames and baselines


def eval_size(grid: Sequence[int], scale: int = 4) -> Tuple[int, int]:
    """The scoring resolution ``(scale * gh, scale * gw)`` for a patch grid ``(gh, gw)``."""
    gh, gw = (int(g) for g in grid)
    if scale < 1 or gh < 1 or gw < 1:
        raise ValueError(f"scale and grid must be positive, got scale={scale}, grid={(gh, gw)}")
    return gh * int(scale), gw * int(scale)


def area_fraction(mask, size: Sequence[int]) -> np.ndarray:
    """Resamples a mask by area: the fraction of each output cell the mask covers.

    Args:
      mask: ``[h, w]`` bool or float in [0, 1], at the photo's size.
      size: ``(H, W)`` output cells; the photo's frame is divided into an
        ``H x W`` grid of equal rectangles (the model input's squash).

    Returns:
      float64 ``[H, W]`` in [0, 1]: exact area averages (each photo pixel is a
      unit square, split between the cells it overlaps), from running sums along
      each axis (no BLAS: its threads would fight the accelerator's for the CPU).
    """
    a = np.asarray(mask, np.float64)
    H, W = (int(s) for s in size)
    if a.ndim != 2 or H < 1 or W < 1:
        raise ValueError(f"mask must be [h, w] and size two positive integers, got {a.shape} and {tuple(size)}")
    return _integrate(_integrate(a, H).T, W).T


def _integrate(a: np.ndarray, n_out: int) -> np.ndarray:
    """Averages of ``a`` (piecewise constant on unit pixels) over ``n_out`` equal spans of axis 0."""
    n_in = a.shape[0]
    run = np.concatenate([np.zeros((1,) + a.shape[1:]), np.cumsum(a, axis=0)])  # integral up to each pixel edge
    edges = np.arange(n_out + 1) * (n_in / n_out)
    k = np.minimum(np.floor(edges).astype(np.int64), n_in - 1)
    at = run[k] + (edges - k)[:, None] * a[k]  # integral up to each cell edge
    return (at[1:] - at[:-1]) / (n_in / n_out)


def gaussian_map(size: Sequence[int], sigma: float = 0.25) -> np.ndarray:
    """Centred Gaussian baseline ``[H, W]`` float64, peak 1 at the centre.

    ``exp(-((y - cy)^2 / (2 (sigma H)^2) + (x - cx)^2 / (2 (sigma W)^2)))`` at pixel
    centres, ``cy = (H - 1) / 2``, ``cx = (W - 1) / 2``: sigma is a fraction of each
    side, so the blob stretches with the photo as the model's input does.
    """
    H, W = (int(s) for s in size)
    y = (np.arange(H) - (H - 1) / 2.0) / (sigma * H)
    x = (np.arange(W) - (W - 1) / 2.0) / (sigma * W)
    return np.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2))


def uniform_map(size: Sequence[int]) -> np.ndarray:
    """Uniform baseline ``[H, W]`` float64 of ones (no information about where the object is)."""
    return np.ones(tuple(int(s) for s in size))


# --------------------------------------------------------------------------- attention distance


def patch_distances(grid: Sequence[int], stride: Sequence[float]) -> np.ndarray:
    """Pixel distances between patch centres: float64 ``[gh*gw, gh*gw]``, row-major patch order.

    ``d(i, j) = sqrt((sy (ri - rj))^2 + (sx (ci - cj))^2)`` with ``(sy, sx)`` the
    pixels per patch (``ViTConfig.stride``; the patch size for plain ViTs).
    """
    gh, gw = (int(g) for g in grid)
    sy, sx = (float(s) for s in stride)
    r, c = np.divmod(np.arange(gh * gw), gw)
    return np.hypot(sy * (r[:, None] - r[None, :]), sx * (c[:, None] - c[None, :]))


def mean_attention_distance(attention, grid: Sequence[int], stride: Sequence[float], num_prefix_tokens: int):
    """Mean attention distance in pixels (ViT paper, Dosovitskiy et al. ICLR 2021, Fig. 7).

    For each query patch i, ``sum_j a_ij d(i, j)`` over the key patches j
    (:func:`patch_distances`), averaged over the query patches. Prefix tokens
    (class token, registers) are excluded as queries and as keys; the
    probabilities are used as they come from the softmax over all tokens (not
    renormalised over the patches), as in the common reference implementation
    (Paul & Gosthipaty, "probing-vits", 2022), so attention paid to the class
    token counts as distance 0 and a head that looks mostly at the class token
    reads as local.

    Args:
      attention: ``[..., N, N]`` probabilities (e.g. ``[B, L, H, N, N]``),
        ``N = num_prefix_tokens + gh * gw``; NumPy or JAX (jit-traceable).
      grid: ``(gh, gw)`` patch grid.
      stride: ``(sy, sx)`` pixels per patch.
      num_prefix_tokens: tokens before the patches.

    Returns:
      float32 ``[...]`` (e.g. ``[B, L, H]``) in pixels of the model's input.

    Raises:
      ValueError: ``N`` does not match the grid and prefix.
    """
    import jax
    import jax.numpy as jnp

    gh, gw = (int(g) for g in grid)
    p = int(num_prefix_tokens)
    n = gh * gw
    if attention.shape[-2:] != (p + n, p + n):
        raise ValueError(f"attention [..., N, N] needs N = {p} + {gh}x{gw} = {p + n}, got shape {attention.shape}")
    d = jnp.asarray(patch_distances((gh, gw), stride), jnp.float32)
    a = jnp.asarray(attention, jnp.float32)[..., p:, p:]
    return jnp.einsum("...qk,qk->...", a, d, precision=jax.lax.Precision.HIGHEST) / n
