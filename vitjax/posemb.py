"""Position-embedding resampling to another resolution, as each checkpoint's framework does it."""

from __future__ import annotations

from typing import Tuple

import numpy as np

from vitjax.config import ViTConfig

__all__ = ["resample_posemb", "resample"]


def resample_posemb(posemb: np.ndarray, grid_new: Tuple[int, int], num_prefix_tokens: int = 1) -> np.ndarray:
    """Resizes the grid part of a position embedding, as Google's loader does.

    The prefix (class-token) slots are kept apart; the ``g x g`` grid part is
    reshaped to ``[g, g, D]`` and resized with ``scipy.ndimage.zoom(order=1)``
    (linear) to ``grid_new`` (which may be non-square). Follows
    ``vit_jax/checkpoint.py:load_pretrained``.

    Args:
      posemb: ``[1, prefix + g*g, D]`` float.
      grid_new: target grid ``(gh, gw)`` in tokens.
      num_prefix_tokens: 1 with a class token, 0 without.

    Returns:
      ``[1, prefix + gh*gw, D]`` float32 (the input unchanged when the grid matches).
    """
    from scipy import ndimage

    tok, grid = posemb[:, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
    g = int(round(np.sqrt(grid.shape[0])))
    if g * g != grid.shape[0]:
        raise ValueError(f"position embedding grid of {grid.shape[0]} tokens is not square")
    gh, gw = grid_new
    if (gh, gw) == (g, g):
        return posemb
    grid = grid.reshape(g, g, -1)
    grid = ndimage.zoom(grid, (gh / g, gw / g, 1), order=1)
    if grid.shape[:2] != (gh, gw):  # zoom rounds the output size; never silently off by one
        raise ValueError(f"resampling {g}x{g} to {gh}x{gw} gave {grid.shape[:2]}")
    return np.concatenate([tok, grid.reshape(1, gh * gw, -1)], axis=1)



def resample(posemb: np.ndarray, config: ViTConfig, grid_old: Tuple[int, int]) -> np.ndarray:
    """Resizes ``posemb [1, k + gh0*gw0, D]`` to ``config.grid`` the way ``config.posemb_resize`` says.

    ``k`` is the class slot (0 or 1; registers carry no position). Google:
    :func:`resample_posemb`; timm and Hugging Face: the NumPy equivalents of
    their torch resizes in :mod:`vitjax.formats`.

    Raises:
      ValueError: a grid that does not match ``grid_old``.
    """
    k = config.num_prefix_tokens - config.num_registers  # the class slot (registers carry no position)
    if config.posemb_resize == "zoom_linear" or tuple(grid_old) == tuple(config.grid):
        return resample_posemb(posemb, config.grid, k)
    from vitjax.formats import RESAMPLERS

    fn = RESAMPLERS[config.posemb_resize]
    grid = posemb[0, k:].reshape(tuple(grid_old) + posemb.shape[-1:])
    grid = np.asarray(fn(grid, tuple(config.grid)), np.float32).reshape(1, -1, posemb.shape[-1])
    return np.concatenate([posemb[:, :k], grid], axis=1)
