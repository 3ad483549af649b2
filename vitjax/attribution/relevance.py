"""The class-specific relevance rows, one image at a time: the maths of :func:`vitjax.class_maps`.

Each function takes one image's attention ``att [L, H, N, N]`` (float32), its
gradient ``grad = dy_c / dA [L, H, N, N]`` for the explained class ``c``, the
reading row ``v [N]`` (:func:`vitjax.attribution.rollout.reader`) and the
:class:`vitjax.RolloutOptions`, and returns the relevance row ``[N]`` over all
tokens (the caller drops the prefix columns and reshapes to the grid). The
papers and code each follows are in :mod:`vitjax.attribution.class_maps`; the
registry :mod:`vitjax.attribution.methods` names them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from vitjax.attribution.options import RolloutOptions
from vitjax.attribution.rollout import HIGHEST as _HI
from vitjax.attribution.rollout import dynamic_options, fuse_heads, layer_factor, rollout_row

__all__ = ["attention_gradcam_row", "generic_row", "grad_rollout_row", "last_layer_row"]


def generic_row(att, grad, v, options: RolloutOptions):
    """``v (I + Abar_L) ... (I + Abar_1)`` with ``Abar_l = mean_h clip(G_l A_l, 0)``: ``[N]``."""
    abar = jnp.mean(jnp.maximum(grad * att, 0.0), axis=1)  # [L, N, N]

    def step(row, m):  # the product is read from the left, last layer first: O(L N^2)
        return row + jnp.matmul(row, m, precision=_HI), None

    row, _ = lax.scan(step, v, abar[::-1])
    return row


def grad_rollout_row(att, grad, v, opts: RolloutOptions):
    """``v Abar_L ... Abar_{start+1}`` with ``Abar_l`` = rows-renormalised ``discard(clip(fuse(A G), 0)) + I``.

    Heads are fused before negatives are clipped, as jacobgil/vit-explain does; the rest is the
    rollout recipe of :func:`vitjax.attribution.rollout.layer_factor`.
    """
    k, start, residual_w = dynamic_options(opts, att.shape[-1])
    static = opts.static

    def layer(a, g):
        return layer_factor(jnp.maximum(fuse_heads(a * g, opts.head_fusion), 0.0), static, k, residual_w)

    return rollout_row(jax.vmap(layer)(att, grad), v, start)


def attention_gradcam_row(att, grad, v, opts: RolloutOptions):
    """``clip(mean_h w_h (v A_L[h]), 0)``, ``w_h`` = mean of ``v G_L[h]`` over the patch columns."""
    p = opts.num_prefix_tokens
    rows = jnp.einsum("n,hnm->hm", v, att[-1], precision=_HI)  # [H, N]
    grows = jnp.einsum("n,hnm->hm", v, grad[-1], precision=_HI)
    w = jnp.mean(grows[:, p:], axis=-1, keepdims=True)  # [H, 1]
    return jnp.maximum(jnp.mean(rows * w, axis=0), 0.0)


def last_layer_row(att, grad, v, options: RolloutOptions):
    """``mean_h v A_L[h]``: the last layer's class-token attention (the gradient is not used)."""
    return jnp.mean(jnp.einsum("n,hnm->hm", v, att[-1], precision=_HI), axis=0)
