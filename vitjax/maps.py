"""Attention maps straight from a model: one jitted pass from images to maps.

Two paths give the same numbers (within 1e-6):

* two-step: forward pass with every layer's attention ``[B, L, H, N, N]``
  materialised, then the pure functions of :mod:`vitjax.attention`;
* memory-lean (``lean=True``): each layer's attention is folded into the
  running rollout product as soon as its block finishes (the model's
  ``attention_step`` hook), so only ``[B, N, N]`` plus small per-layer rows
  are kept; memory per image no longer grows with layers x heads.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Dict, Optional

import jax
import jax.numpy as jnp

from vitjax.attention import (
    _HI,
    _cumulative_rows,
    _layer_matrices,
    _reader,
    check_options,
    layer_matrix,
    read_row,
    row_to_map,
)
from vitjax.inference import _forward, check_images
from vitjax.model import ViT

__all__ = ["METHODS", "RolloutStep", "compute_maps", "attention_maps"]

METHODS = ("rollout", "layer", "cumulative", "heads")


@dataclasses.dataclass(frozen=True)
class RolloutStep:
    """Folds one layer's attention into the running rollout (hashable: a jit static argument).

    Called by :class:`vitjax.model.Encoder` after each block as
    ``carry = step(carry, probs [B, H, N, N], layer)``. The carry holds
    ``joint [B, N, N]`` and, per layer, the rows read from Abar_l (``own``), from
    the joint so far (``cumulative``) and each head's class row (``heads``,
    ``[B, H, N]``).
    """

    head_fusion: str = "mean"
    discard_ratio: float = 0.0
    start_layer: int = 0
    residual: bool = True
    num_prefix_tokens: int = 1
    class_token: bool = True

    def _row(self, m):  # [N, N] -> [N - prefix]
        return read_row(m, num_prefix_tokens=self.num_prefix_tokens, class_token=self.class_token)

    def __call__(self, carry, probs, layer):
        b, _, n, _ = probs.shape
        if carry is None:
            carry = {"joint": jnp.broadcast_to(jnp.eye(n, dtype=jnp.float32), (b, n, n)),
                     "own": [], "cumulative": [], "heads": []}
        fn = functools.partial(layer_matrix, head_fusion=self.head_fusion, discard_ratio=self.discard_ratio,
                               residual=self.residual)
        a = jax.vmap(fn)(probs)  # [B, N, N]
        joint = carry["joint"]
        if layer >= self.start_layer:
            joint = jnp.matmul(a, joint, precision=_HI)
        heads = jax.vmap(jax.vmap(self._row))(probs.astype(jnp.float32))  # [B, H, N - prefix]
        return {
            "joint": joint,
            "own": carry["own"] + [jax.vmap(self._row)(a)],
            "cumulative": carry["cumulative"] + [jax.vmap(self._row)(joint)],
            "heads": carry["heads"] + [heads],
        }


def _to_maps(rows, grid, normalize=True):
    """``[..., gh*gw]`` -> ``[..., gh, gw]``, each map divided by its max."""
    lead = rows.shape[:-1]
    flat = rows.reshape((-1, rows.shape[-1]))
    maps = jax.vmap(lambda r: row_to_map(r, grid, normalize))(flat)
    return maps.reshape(lead + tuple(grid))


@functools.partial(jax.jit, static_argnames=("model", "step", "keep_attention"))
def _maps_two_step(model: ViT, params, images, step: RolloutStep, keep_attention: bool):
    logits, attention = _forward(model, params, images)
    grid = model.config.grid

    def one(att):  # [L, H, N, N]
        mats = _layer_matrices(att, step.head_fusion, step.discard_ratio, step.residual)
        v = _reader(att.shape[-1], step.num_prefix_tokens, step.class_token)
        cum = _cumulative_rows(mats, v, step.start_layer)[:, step.num_prefix_tokens:]
        heads = jax.vmap(jax.vmap(step._row))(att)
        return jax.vmap(step._row)(mats), cum, heads

    own, cum, heads = jax.vmap(one)(attention)
    out = {
        "logits": logits,
        "rollout": _to_maps(cum[:, -1], grid),
        "layer": _to_maps(own, grid),
        "cumulative": _to_maps(cum, grid),
        "heads": _to_maps(heads, grid),
    }
    if keep_attention:
        out["attention"] = attention
    return out


@functools.partial(jax.jit, static_argnames=("model", "step"))
def _maps_lean(model: ViT, params, images, step: RolloutStep):
    logits, carry = model.clone(attention_step=step).apply({"params": params}, images, return_carry=True)
    grid = model.config.grid
    cum = jnp.stack(carry["cumulative"], axis=1)  # [B, L, P]
    return {
        "logits": logits,
        "rollout": _to_maps(cum[:, -1], grid),
        "layer": _to_maps(jnp.stack(carry["own"], axis=1), grid),
        "cumulative": _to_maps(cum, grid),
        "heads": _to_maps(jnp.stack(carry["heads"], axis=1), grid),
    }


def compute_maps(
    model: ViT,
    params,
    images,
    *,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
    residual: bool = True,
    lean: bool = False,
    keep_attention: bool = False,
) -> Dict[str, jnp.ndarray]:
    """Logits and every attention map of a batch, in one jitted pass.

    Args:
      model, params: from :func:`vitjax.load_checkpoint`.
      images: ``[B, H, W, 3]`` float in [-1, 1] at ``model.config.image_size``.
      head_fusion, discard_ratio, start_layer, residual: rollout options, see
        :func:`vitjax.attention_rollout`.
      lean: fold the attention into the rollout inside the forward pass
        (memory per image independent of layers x heads); same results.
      keep_attention: also return ``attention [B, L, H, N, N]`` (two-step only).

    Returns:
      dict of float32 arrays: ``logits [B, C]``; ``rollout [B, gh, gw]`` (joint
      map); ``layer [B, L, gh, gw]`` (each layer's own map); ``cumulative
      [B, L, gh, gw]`` (joint map through layer l); ``heads [B, L, H, gh, gw]``
      (raw class-token attention per head). Maps are divided by their max.

    Raises:
      ValueError: bad images or options.
    """
    check_images(model, images)
    check_options(head_fusion=head_fusion, discard_ratio=discard_ratio, start_layer=start_layer,
                  num_layers=model.config.num_layers)
    if lean and keep_attention:
        raise ValueError("keep_attention=True needs the two-step path; it cannot be combined with lean=True")
    c = model.config
    step = RolloutStep(head_fusion, float(discard_ratio), int(start_layer), bool(residual),
                       c.num_prefix_tokens, c.classifier == "token")
    images = jnp.asarray(images)
    if lean:
        return _maps_lean(model, params, images, step)
    return _maps_two_step(model, params, images, step, bool(keep_attention))


def attention_maps(model: ViT, params, images, *, method: str = "rollout", layer: Optional[int] = -1,
                   lean: bool = False, **options):
    """Attention maps of one kind, with the logits: ``(maps, logits [B, C])``.

    Args:
      method: "rollout" -> joint map ``[B, gh, gw]``; "layer" -> each layer's
        own map ``[B, L, gh, gw]``; "cumulative" -> joint map through each
        layer ``[B, L, gh, gw]``; "heads" -> per-head maps of ``layer``
        (last by default) ``[B, H, gh, gw]``.
      layer: which layer for "heads" (0-based, negative from the end).
      lean: compute inside the forward pass (see :func:`compute_maps`).
      **options: head_fusion, discard_ratio, start_layer, residual.

    Maps are float32 in [0, 1] (each divided by its max) on the model's grid;
    lay them over a photo with :func:`vitjax.attention.upsample`.

    Raises:
      ValueError: unknown method or option, bad layer, bad images.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    L = model.config.num_layers
    if method == "heads" and not -L <= int(layer) < L:
        raise ValueError(f"layer must be in [{-L}, {L - 1}], got {layer!r}")
    out = compute_maps(model, params, images, lean=lean, **options)
    maps = out[method] if method != "heads" else out["heads"][:, int(layer)]
    return maps, out["logits"]
