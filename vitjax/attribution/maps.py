"""Attention maps straight from a model: one jitted pass from images to maps.

Two paths give the same numbers (within float32 rounding):

* two-step: forward pass with every layer's attention ``[B, L, H, N, N]``
  materialised, then the pure functions of :mod:`vitjax.attribution.rollout`;
* memory-lean (``lean=True``): each layer's attention is folded into the
  running rollout product as soon as its block finishes, so only
  ``[B, N, N]`` plus small per-layer rows are kept; memory per image no longer
  grows with layers x heads. The model knows nothing of this: the attention
  modules' calls are intercepted from outside with
  ``flax.linen.intercept_methods``.

Both paths also return two diagnostics of tokens that dominate a rollout:
``token_norms [B, gh, gw]``, the L2 norm of each patch token at the output of
the last block (before the final LayerNorm), whose outliers mark the
"artifact" tokens of Darcet et al., "Vision Transformers Need Registers" (ICLR
2024); and ``received [B, L, gh, gw]``, the share of each layer's attention
that each patch receives (mean over heads and queries), whose outliers are
attention sinks: a patch that every query of an early layer attends to
dominates the rollout product of all later layers. ``received_heads [B, L, H, gh, gw]`` keeps
the same share per head (a sink is usually the work of one head).
"""

from __future__ import annotations

import functools
from typing import Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitjax.attribution import methods
from vitjax.attribution.options import RolloutOptions, as_options
from vitjax.attribution.rollout import (
    HIGHEST,
    dynamic_options,
    layer_matrices,
    read_row,
    reader,
    rollout_rows,
    row_to_map,
)
from vitjax.model.forward import check_images, collect_attention, finite_rows, output_kind, raise_non_finite
from vitjax.model.vit import Encoder1DBlock, MultiHeadDotProductAttention, ViT

__all__ = ["compute_maps", "maps_and_finite", "attention_maps", "MAP_KEYS"]
#: The keys of :func:`compute_maps` besides ``logits``: the attention methods, then the diagnostics.
MAP_KEYS = methods.names("attention") + ("token_norms", "received", "received_heads")


def _to_maps(rows, grid, normalize=True):
    """``[..., gh*gw]`` -> ``[..., gh, gw]``, each map divided by its max."""
    lead = rows.shape[:-1]
    flat = rows.reshape((-1, rows.shape[-1]))
    maps = jax.vmap(lambda r: row_to_map(r, grid, normalize))(flat)
    return maps.reshape(lead + tuple(grid))


def _apply(model: ViT, params, images, on_attention=None, intermediates=False):
    """``model.apply`` that also returns the last block's output tokens ``[B, N, D]``.

    ``on_attention(probs [B, H, N, N])`` is called after every attention module,
    in layer order (from an interceptor, so the model is unchanged).
    """
    last = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__":
            if isinstance(context.module, Encoder1DBlock):
                last["tokens"] = out[0]
            elif on_attention is not None and isinstance(context.module, MultiHeadDotProductAttention):
                on_attention(out[1])
        return out

    with nn.intercept_methods(interceptor):
        if intermediates:
            logits, state = model.apply({"params": params}, images, mutable=["intermediates"])
        else:
            logits, state = model.apply({"params": params}, images), None
    return logits, last["tokens"], state


def _received_heads(probs, static: RolloutOptions):
    """``[B, H, N, N]`` -> ``[B, H, N - prefix]``: attention each patch receives in each head, mean over queries."""
    return jnp.mean(probs[..., static.num_prefix_tokens:].astype(jnp.float32), axis=2)


def _diagnostics(tokens, received_heads, static: RolloutOptions, grid):
    """Token norms ``[B, gh, gw]``, received attention per layer ``[B, L, gh, gw]`` (mean over heads) and
    per head ``[B, L, H, gh, gw]``, from the last block's tokens and ``received_heads [B, L, H, P]``."""
    per_head = _to_maps(received_heads, grid, normalize=False)
    return {"token_norms": _token_norms(tokens, static, grid), "received": jnp.mean(per_head, axis=2),
            "received_heads": per_head}


def _token_norms(tokens, static: RolloutOptions, grid):
    patches = tokens[:, static.num_prefix_tokens:].astype(jnp.float32)  # [B, gh*gw, D]
    return jnp.sqrt(jnp.sum(patches * patches, axis=-1)).reshape((-1,) + tuple(grid))


_FROM_ATTENTION = ("received_heads", "heads")  # the attention's mean over queries, and its class-token rows


def _finite(model: ViT, out):
    """``{kind: [B] bool}`` of a maps program's outputs: logits (features), attention, every other map.

    The attention is judged by ``received_heads`` (every layer's and head's attention, averaged
    over the queries) and ``heads`` (its class-token rows), which the program computes anyway: a
    softmax row is finite entirely or not at all (a NaN or inf score makes the whole row NaN), so
    a non-finite row of any layer makes that layer's received shares non-finite. No second pass
    over ``[B, L, H, N, N]``.
    """
    def rows(keys):
        return functools.reduce(jnp.logical_and, [finite_rows(out[k]) for k in keys])

    others = [k for k in out if k not in ("logits", "attention", *_FROM_ATTENTION)]
    return {output_kind(model): finite_rows(out["logits"]), "attention": rows(_FROM_ATTENTION), "maps": rows(others)}


@functools.partial(jax.jit, static_argnames=("model", "static", "keep_attention"))
def _maps_two_step(model: ViT, params, images, dyn, static: RolloutOptions, keep_attention: bool):
    logits, tokens, state = _apply(model, params, images, intermediates=True)
    attention = collect_attention(state["intermediates"], model.config.num_layers)
    grid = model.config.grid
    p = static.num_prefix_tokens

    def one(att):  # [L, H, N, N]
        mats = layer_matrices(att, static, dyn)
        cum = rollout_rows(mats, reader(att.shape[-1], static), dyn[1])[:, p:]
        heads = jax.vmap(jax.vmap(lambda m: read_row(m, static)))(att)
        return jax.vmap(lambda m: read_row(m, static))(mats), cum, heads

    own, cum, heads = jax.vmap(one)(attention)
    out = {
        "logits": logits,
        "rollout": _to_maps(cum[:, -1], grid),
        "layer": _to_maps(own, grid),
        "cumulative": _to_maps(cum, grid),
        "heads": _to_maps(heads, grid),
        **_diagnostics(tokens, jax.vmap(lambda a: _received_heads(a, static), in_axes=1, out_axes=1)(attention),
                       static, grid),
    }
    if keep_attention:
        out["attention"] = attention
    return out, _finite(model, out)


@functools.partial(jax.jit, static_argnames=("model", "static"))
def _maps_lean(model: ViT, params, images, dyn, static: RolloutOptions):
    grid = model.config.grid
    read = jax.vmap(lambda m: read_row(m, static))
    state = {"joint": None, "own": [], "cumulative": [], "heads": [], "received_heads": []}

    def fold(probs):  # [B, H, N, N], called once per layer, in order
        b, _, n, _ = probs.shape
        layer = len(state["own"])
        a = jax.vmap(lambda att: layer_matrices(att[None], static, dyn)[0])(probs)  # [B, N, N]
        joint = state["joint"]
        if joint is None:
            joint = jnp.broadcast_to(jnp.eye(n, dtype=jnp.float32), (b, n, n))
        joint = jnp.where(layer >= dyn[1], jnp.matmul(a, joint, precision=HIGHEST), joint)
        state["joint"] = joint
        state["own"].append(read(a))
        state["cumulative"].append(read(joint))
        state["heads"].append(jax.vmap(read)(probs.astype(jnp.float32)))
        state["received_heads"].append(_received_heads(probs, static))

    logits, tokens, _ = _apply(model, params, images, on_attention=fold)
    cum = jnp.stack(state["cumulative"], axis=1)  # [B, L, P]
    out = {
        "logits": logits,
        "rollout": _to_maps(cum[:, -1], grid),
        "layer": _to_maps(jnp.stack(state["own"], axis=1), grid),
        "cumulative": _to_maps(cum, grid),
        "heads": _to_maps(jnp.stack(state["heads"], axis=1), grid),
        **_diagnostics(tokens, jnp.stack(state["received_heads"], axis=1), static, grid),
    }
    return out, _finite(model, out)


def maps_and_finite(model: ViT, params, images, options: Optional[RolloutOptions] = None, *, lean: bool = False,
                    keep_attention: bool = False) -> Tuple[Dict[str, jnp.ndarray], Dict[str, jnp.ndarray]]:
    """:func:`compute_maps` without the check: ``(maps, finite)``, usable inside ``jax.jit``.

    ``finite`` is ``{kind: [B] bool}``, True where the row is finite (no NaN, no inf):
    ``"logits"`` (``"features"`` for a headless model), ``"attention"`` (every layer's
    attention probabilities, judged by their mean over queries ``received_heads`` and
    class-token rows ``heads``: a softmax row is NaN entirely or not at all) and
    ``"maps"`` (every other output). All reduced in the compiled program; only the flags leave it. Pass it to
    :func:`vitjax.model.forward.raise_non_finite` on the host, or combine it with
    other flags inside a jitted program of your own.

    Raises:
      ValueError: as :func:`compute_maps`, before anything is computed.
    """
    check_images(model, images)
    options = as_options(options)
    if not isinstance(options, RolloutOptions):
        raise ValueError(f"options must be a vitjax.RolloutOptions, got {type(options).__name__}")
    if lean and keep_attention:
        raise ValueError("keep_attention=True needs the two-step path; it cannot be combined with lean=True")
    options = options.for_config(model.config)
    dyn = dynamic_options(options, model.config.num_tokens)
    images = jnp.asarray(images)
    if lean:
        return _maps_lean(model, params, images, dyn, options.static)
    return _maps_two_step(model, params, images, dyn, options.static, bool(keep_attention))


def compute_maps(
    model: ViT,
    params,
    images,
    options: Optional[RolloutOptions] = None,
    *,
    lean: bool = False,
    keep_attention: bool = False,
    valid=None,
) -> Dict[str, jnp.ndarray]:
    """Logits and every attention map of a batch, in one jitted pass.

    Args:
      model, params: from :func:`vitjax.load_checkpoint`.
      images: ``[B, H, W, 3]`` float32 at ``model.config.image_size``,
        preprocessed for the model (:func:`vitjax.preprocess`).
      options: :class:`vitjax.RolloutOptions` (default: mean fusion, no
        discard, all layers, residual); its token layout is taken from the
        model (class token, registers). Changing ``discard_ratio`` (between
        positive values), ``start_layer`` or ``residual`` does not recompile.
      lean: fold the attention into the rollout inside the forward pass
        (memory per image independent of layers x heads); same results.
      keep_attention: also return ``attention [B, L, H, N, N]`` (two-step only).
      valid: ``[B]`` bool, the rows that hold an image (None: all); padded rows
        are not checked for non-finite values.

    Returns:
      dict of float32 arrays: ``logits [B, C]`` (a model without head: its
      features, see :func:`vitjax.forward`); ``rollout [B, gh, gw]`` (joint
      map); ``layer [B, L, gh, gw]`` (each layer's own map); ``cumulative
      [B, L, gh, gw]`` (joint map through layer l); ``heads [B, L, H, gh, gw]``
      (raw class-token attention per head); ``token_norms [B, gh, gw]`` (L2
      norm of each patch token's output of the last block, not normalised);
      ``received [B, L, gh, gw]`` (share of layer l's attention each patch
      receives, mean over heads and all queries; probabilities, not
      normalised; uniform attention gives ``1 / N``); ``received_heads
      [B, L, H, gh, gw]`` (the same per head, mean over queries only: a head
      that puts most of its attention on one patch marks an attention sink,
      see :func:`vitjax.viz.run.sink_layers`). The other maps are divided by
      their max.

    The compiled program also reduces the logits, every layer's attention and
    every map to one finite flag per image and kind (:func:`maps_and_finite`),
    checked here on the host; inside ``jax.jit`` nothing can be checked (use
    :func:`maps_and_finite` there).

    Raises:
      ValueError: bad images, options not a RolloutOptions, ``start_layer``
        beyond the model's layers, ``lean`` with ``keep_attention``.
      NonFiniteError (a ValueError): the logits, attention or maps of a valid
        row are not finite (NaN/inf); ``.rows`` names them (0-based), ``.what``
        what was not finite, ``.result`` is the dict (its other rows usable).
    """
    out, finite = maps_and_finite(model, params, images, options, lean=lean, keep_attention=keep_attention)
    raise_non_finite(finite, valid=valid, result=out)
    return out


def attention_maps(model: ViT, params, images, *, method: str = "rollout", layer: Optional[int] = -1,
                   options: Optional[RolloutOptions] = None, lean: bool = False, valid=None):
    """Attention maps of one kind, with the logits: ``(maps, logits [B, C])``.

    Args:
      method: "rollout" -> joint map ``[B, gh, gw]``; "layer" -> each layer's
        own map ``[B, L, gh, gw]``; "cumulative" -> joint map through each
        layer ``[B, L, gh, gw]``; "heads" -> per-head maps of ``layer``
        (last by default) ``[B, H, gh, gw]``.
      layer: which layer for "heads" (0-based, negative from the end).
      options: :class:`vitjax.RolloutOptions`.
      lean: compute inside the forward pass (see :func:`compute_maps`).
      valid: ``[B]`` bool, the rows checked for non-finite outputs (None: all).

    Maps are float32 in [0, 1] (each divided by its max) on the model's grid;
    lay them over a photo with :func:`vitjax.upsample`.

    Raises:
      ValueError: unknown method, bad layer, bad images or options.
      NonFiniteError: non-finite outputs of a valid row (as :func:`compute_maps`;
        ``.result`` is ``(maps, logits)``).
    """
    methods.get(method, "attention")
    L = model.config.num_layers
    if method == "heads" and not -L <= int(layer) < L:
        raise ValueError(f"layer must be in [{-L}, {L - 1}], got {layer!r}")
    out, finite = maps_and_finite(model, params, images, options, lean=lean)
    maps = out[method] if method != "heads" else out["heads"][:, int(layer)]
    raise_non_finite(finite, valid=valid, result=(maps, out["logits"]))
    return maps, out["logits"]
