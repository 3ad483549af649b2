"""Attention maps from attention probabilities: pure functions on arrays, no I/O.

Each method is written for ONE image and batched with ``jax.vmap``; the public
entry points are jitted with one static :class:`vitjax.RolloutOptions` (only its
compile-relevant part: head fusion, discard on/off, token layout); the discard
ratio, start layer and residual flag are traced values, so changing them does
not recompile. Every matrix product is ``Precision.HIGHEST`` (float32 on every
device). Shapes:
``[B, L, H, N, N]`` = batch, layers, heads, tokens (queries) x tokens (keys);
tokens are ``num_prefix_tokens`` prefix tokens (class token first) followed by
the ``gh * gw`` patch tokens in row-major order.

Attention rollout ("joint attention") follows Abnar & Zuidema, "Quantifying
Attention Flow in Transformers" (ACL 2020) and the ViT paper's appendix D.8
(Dosovitskiy et al., ICLR 2021), with the options of the widely used PyTorch
port (jacobgil/vit-explain: ``head_fusion``, ``discard_ratio``) and of Chefer
et al.'s evaluation code (``start_layer``). For each layer l:

    A_l   = fuse_heads(attention_l)                 # mean | max | min over heads
    A_l   = discard the lowest ``discard_ratio`` of A_l's entries (never [0, 0])
    Abar_l = (A_l + I) / rowsum(A_l + I)            # residual, rows sum to 1
    joint = Abar_L @ ... @ Abar_{start_layer+1}     # each new layer multiplies from the left

and the map is the class token's row of ``joint`` over the patch columns,
reshaped to the grid and divided by its maximum. Known faults of the PyTorch
tools that these functions avoid: row sums taken without keeping dims (rows not
normalised, broken for B > 1), discard applied to the first image only, square
grids guessed with a square root, and class rows read from models without one.
"""

from __future__ import annotations

import functools
from typing import Sequence, Tuple

import jax
import jax.numpy as jnp
from jax import lax

from vitjax.attribution.options import HEAD_FUSIONS, RolloutOptions

__all__ = [
    "HEAD_FUSIONS",
    "RolloutOptions",
    "fuse_heads",
    "layer_matrix",
    "rollout",
    "attention_rollout",
    "read_row",
    "row_to_map",
    "rollout_map",
    "layer_maps",
    "cumulative_maps",
    "head_maps",
    "upsample",
    "check_attention",
    "dynamic_options",
    "layer_matrices",
    "rollout_rows",
    "rollout_row",
    "layer_factor",
    "reader",
]

HIGHEST = lax.Precision.HIGHEST  # exact float32 products on GPU/TPU too
DEFAULT_OPTIONS = RolloutOptions()


# --- validation ---------------------------------------------------------------------------


def check_attention(attention, *, name: str = "attention") -> None:
    """Raises ValueError unless ``attention`` is ``[L, H, N, N]`` or ``[B, L, H, N, N]``."""
    shape = tuple(getattr(attention, "shape", ()))
    if len(shape) not in (4, 5):
        raise ValueError(f"{name} must be [L, H, N, N] or [B, L, H, N, N], got shape {shape}")
    if shape[-1] != shape[-2]:
        raise ValueError(f"{name} must be square in its last two axes (queries x keys), got shape {shape}")


def dynamic_options(options: RolloutOptions, num_tokens: int) -> Tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """The traced part of ``options`` for ``N = num_tokens``: (entries to discard, start layer, residual weight).

    The discard count is ``int(N * N * discard_ratio)``, computed here in
    Python's double precision, as jacobgil/vit-explain does.
    """
    k = int(num_tokens * num_tokens * options.discard_ratio)
    return jnp.int32(k), jnp.int32(options.start_layer), jnp.float32(1.0 if options.residual else 0.0)


# --- one layer, one image -----------------------------------------------------------------


def fuse_heads(attention: jnp.ndarray, head_fusion: str = "mean") -> jnp.ndarray:
    """``[H, N, N]`` -> ``[N, N]``: mean, max or min over heads."""
    return {"mean": jnp.mean, "max": jnp.max, "min": jnp.min}[head_fusion](attention, axis=0)


def _discard(a: jnp.ndarray, k) -> jnp.ndarray:
    """Zeroes the ``k`` lowest entries of ``a [N, N]`` (stable order for ties), never [0, 0].

    As in jacobgil/vit-explain: the ``int(N*N*ratio)`` smallest entries are
    dropped, except the class-to-class entry if among them. ``k`` may be traced.
    """
    flat = a.reshape(-1)
    order = jnp.argsort(flat, stable=True)
    drop = jnp.zeros(flat.shape, bool).at[order].set(jnp.arange(flat.shape[0]) < k).at[0].set(False)
    return jnp.where(drop, 0.0, flat).reshape(a.shape)


def _normalize_rows(a: jnp.ndarray) -> jnp.ndarray:
    s = jnp.sum(a, axis=-1, keepdims=True)
    return jnp.where(s > 0, a / jnp.where(s > 0, s, 1.0), 0.0)


def layer_factor(fused: jnp.ndarray, static: RolloutOptions, k, residual_w) -> jnp.ndarray:
    """The rollout recipe after head fusion: ``[N, N]`` -> discard the ``k`` lowest entries (when
    ``static.discard_ratio > 0``), add ``residual_w`` x identity, renormalise the rows.

    Shared by attention rollout and gradient-weighted rollout (:mod:`vitjax.attribution.class_maps`);
    ``k`` and ``residual_w`` come from :func:`dynamic_options` and may be traced.
    """
    a = fused
    if static.discard_ratio > 0:
        a = _discard(a, k)
    a = a + residual_w * jnp.eye(a.shape[-1], dtype=a.dtype)
    return _normalize_rows(a)


def _layer_matrix(attention, static: RolloutOptions, k, residual_w):
    return layer_factor(fuse_heads(attention.astype(jnp.float32), static.head_fusion), static, k, residual_w)


def layer_matrix(attention: jnp.ndarray, options: RolloutOptions = DEFAULT_OPTIONS) -> jnp.ndarray:
    """One layer's rollout factor Abar: ``[H, N, N]`` -> ``[N, N]`` float32, rows summing to 1.

    Heads fused, lowest entries discarded, identity added for the residual
    connection (``options.residual``), each row divided by its sum (a row
    that is all zero stays zero). Not jitted; for the batched maps use
    :func:`rollout_map` and friends.
    """
    k, _, residual_w = dynamic_options(options, attention.shape[-1])
    return _layer_matrix(jnp.asarray(attention), options.static, k, residual_w)


def layer_matrices(attention, static: RolloutOptions, dyn) -> jnp.ndarray:
    """``[L, H, N, N]`` -> ``[L, N, N]``: :func:`layer_matrix` of every layer (``dyn`` from :func:`dynamic_options`)."""
    k, _, residual_w = dyn
    return jax.vmap(lambda a: _layer_matrix(a, static, k, residual_w))(attention)


def reader(n: int, options: RolloutOptions) -> jnp.ndarray:
    """The row vector v ``[N]`` with ``v @ M`` = the attribution row of M: e_0, or the mean over patch rows."""
    if options.class_token:
        return jnp.zeros((n,), jnp.float32).at[0].set(1.0)
    p = options.num_prefix_tokens
    return jnp.zeros((n,), jnp.float32).at[p:].set(1.0 / (n - p))


def rollout_rows(mats: jnp.ndarray, v: jnp.ndarray, start_layer) -> jnp.ndarray:
    """``[L, N, N]`` -> ``[L, N]``: row l is ``v @ Abar_l @ ... @ Abar_{start+1}`` (``v`` before start).

    The maps need one row of each joint matrix, so the products are taken from
    the left with vectors, last layer first: O(L^2 N^2), not O(L N^3). Row
    ``L - 1`` is the joint map's row.
    """
    num_layers = mats.shape[0]
    target = jnp.arange(num_layers)

    def step(rows, k):  # rows [L, N]; layer k is applied to every target l >= k
        new = jnp.matmul(rows, mats[k], precision=HIGHEST)
        return jnp.where(((target >= k) & (k >= start_layer))[:, None], new, rows), None

    rows, _ = lax.scan(step, jnp.broadcast_to(v, (num_layers, v.shape[0])), jnp.arange(num_layers - 1, -1, -1))
    return rows


def rollout_row(mats: jnp.ndarray, v: jnp.ndarray, start_layer) -> jnp.ndarray:
    """``v @ Abar_L @ ... @ Abar_{start+1}`` -> ``[N]`` in O(L N^2): ``mats [L, N, N]``, ``v [N]``."""

    def step(row, k):
        return jnp.where(k >= start_layer, jnp.matmul(row, mats[k], precision=HIGHEST), row), None

    row, _ = lax.scan(step, v, jnp.arange(mats.shape[0] - 1, -1, -1))
    return row


def rollout(attention: jnp.ndarray, static: RolloutOptions, dyn) -> jnp.ndarray:
    """Joint attention of one image: ``[L, H, N, N]`` -> ``[N, N]`` = Abar_L ... Abar_{start+1}.

    Zero layers (or ``start_layer == L``) give the identity. ``dyn`` from
    :func:`dynamic_options`.
    """
    n = attention.shape[-1]
    if attention.shape[0] == 0:
        return jnp.eye(n, dtype=jnp.float32)
    mats = layer_matrices(attention, static, dyn)
    start = dyn[1]

    def step(joint, layer):
        return jnp.where(layer >= start, jnp.matmul(mats[layer], joint, precision=HIGHEST), joint), None

    joint, _ = lax.scan(step, jnp.eye(n, dtype=jnp.float32), jnp.arange(mats.shape[0]))
    return joint


# --- reading maps -------------------------------------------------------------------------


def read_row(matrix: jnp.ndarray, options: RolloutOptions = DEFAULT_OPTIONS) -> jnp.ndarray:
    """The attribution row of a ``[N, N]`` matrix over the patch columns -> ``[N - prefix]``.

    With a class token (token 0): its row. Without one (global-average-pooled
    models): the mean over the patch rows, i.e. the attribution of the pooled
    output. Prefix tokens (class, registers, distillation) are never columns.
    """
    p = options.num_prefix_tokens
    rows = matrix[0] if options.class_token else jnp.mean(matrix[p:], axis=0)
    return rows[p:]


def row_to_map(row: jnp.ndarray, grid: Tuple[int, int], normalize: bool = True) -> jnp.ndarray:
    """``[gh * gw]`` -> ``[gh, gw]`` (row-major patches), divided by its max when ``normalize``."""
    m = row.reshape(grid)
    if not normalize:
        return m
    mx = jnp.max(m)
    return jnp.where(mx > 0, m / jnp.where(mx > 0, mx, 1.0), m)


def _check_grid(grid, n, num_prefix_tokens):
    gh, gw = (int(g) for g in grid)
    if gh * gw + num_prefix_tokens != n:
        raise ValueError(
            f"grid {gh}x{gw} with {num_prefix_tokens} prefix token(s) needs N = {gh * gw + num_prefix_tokens} "
            f"tokens, attention has N = {n}"
        )
    return gh, gw


def _batched(fn, attention, grid, options: RolloutOptions, **kw):
    check_attention(attention)
    if not isinstance(options, RolloutOptions):
        raise ValueError(f"options must be a vitjax.RolloutOptions, got {type(options).__name__}")
    options.check_layers(attention.shape[-4])
    n = attention.shape[-1]
    grid = _check_grid(grid, n, options.num_prefix_tokens) if grid is not None else None
    single = attention.ndim == 4
    x = jnp.asarray(attention)
    x = x[None] if single else x
    out = fn(x, dynamic_options(options, n), grid=grid, static=options.static, **kw)
    return out[0] if single else out


@functools.partial(jax.jit, static_argnames=("grid", "static", "what"))
def _maps(attention, dyn, *, grid, static, what):
    def one(att):  # [L, H, N, N]
        mats = layer_matrices(att, static, dyn)
        if what == "layer":
            rows = jax.vmap(lambda m: read_row(m, static))(mats)
        else:
            v = reader(att.shape[-1], static)
            rows = (rollout_rows(mats, v, dyn[1]) if what == "cumulative"
                    else rollout_row(mats, v, dyn[1])[None])[:, static.num_prefix_tokens:]
        maps = jax.vmap(lambda r: row_to_map(r, grid))(rows)
        return maps[0] if what == "rollout" else maps

    return jax.vmap(one)(attention)


def rollout_map(attention: jnp.ndarray, grid: Sequence[int], options: RolloutOptions = DEFAULT_OPTIONS):
    """Joint attention map (rollout): ``[B, L, H, N, N]`` -> ``[B, gh, gw]`` float32 in [0, 1].

    Args:
      attention: softmax probabilities ``[B, L, H, N, N]`` (or one image's
        ``[L, H, N, N]`` -> ``[gh, gw]``).
      grid: the model's patch grid ``(gh, gw)`` (``model.config.grid``); never
        guessed, so non-square grids work.
      options: :class:`vitjax.RolloutOptions` (head fusion, discard ratio,
        start layer, residual, prefix tokens, class token; use
        ``options.for_config(model.config)`` for models with registers or
        without class token).

    Returns:
      maps divided by their maximum (each image separately).

    Raises:
      ValueError: bad rank, non-square attention, grid not matching N,
        ``start_layer`` beyond the number of layers.
    """
    return _batched(_maps, attention, grid, options, what="rollout")


def layer_maps(attention, grid, options: RolloutOptions = DEFAULT_OPTIONS):
    """Each layer's OWN map: class row of Abar_l, ``[B, L, H, N, N]`` -> ``[B, L, gh, gw]`` in [0, 1].

    Abar_l is :func:`layer_matrix` (fused heads, residual, rows renormalised);
    no product over layers (``start_layer`` is not used). Arguments as in
    :func:`rollout_map`.
    """
    return _batched(_maps, attention, grid, options, what="layer")


def cumulative_maps(attention, grid, options: RolloutOptions = DEFAULT_OPTIONS):
    """The joint map through each layer l (rollout of layers 1..l): ``[B, L, gh, gw]`` in [0, 1].

    This is what the well-known "attention map of each layer" figure of the
    PyTorch notebooks shows (a cumulative rollout, not the layer's own
    attention). Layers before ``start_layer`` give all-zero maps (identity).
    The last entry equals :func:`rollout_map`. Arguments as in :func:`rollout_map`.
    """
    return _batched(_maps, attention, grid, options, what="cumulative")


@functools.partial(jax.jit, static_argnames=("grid", "static", "layer", "normalize"))
def _head_maps(attention, dyn, *, grid, static, layer, normalize):
    def one(att):  # [L, H, N, N] -> [H, gh, gw]
        return jax.vmap(lambda m: row_to_map(read_row(m, static), grid, normalize))(att[layer])

    return jax.vmap(one)(attention)


def head_maps(attention, grid, *, layer: int = -1, options: RolloutOptions = DEFAULT_OPTIONS,
              normalize: bool = True):
    """Per-head maps of one layer (last by default): ``[B, L, H, N, N]`` -> ``[B, H, gh, gw]``.

    The raw attention of the class token to each patch in every head (no
    residual, no fusion), as shown in DINO (Caron et al., ICCV 2021); each head
    divided by its max when ``normalize``. Only the token layout of
    ``options`` is used.

    Raises:
      ValueError: bad attention shape or grid, ``layer`` out of range.
    """
    check_attention(attention)
    num_layers = attention.shape[-4]
    if not -num_layers <= int(layer) < num_layers:
        raise ValueError(f"layer must be in [{-num_layers}, {num_layers - 1}], got {layer!r}")
    return _batched(_head_maps, attention, grid, options, layer=int(layer) % num_layers, normalize=bool(normalize))


@functools.partial(jax.jit, static_argnames=("grid", "static"))
def _joint(attention, dyn, *, grid, static):
    return jax.vmap(lambda a: rollout(a, static, dyn))(attention)


def attention_rollout(attention: jnp.ndarray, options: RolloutOptions = DEFAULT_OPTIONS) -> jnp.ndarray:
    """Joint attention matrices by attention rollout: ``[B, L, H, N, N]`` -> ``[B, N, N]``.

    Args:
      attention: softmax probabilities, batched ``[B, L, H, N, N]`` or one
        image's ``[L, H, N, N]`` (then ``[N, N]`` is returned).
      options: :class:`vitjax.RolloutOptions`; see there for the sources of
        head fusion, discard ratio, start layer and residual.

    Returns:
      float32 ``[B, N, N]``, each row summing to 1 (``Abar_L @ ... @ Abar_{start+1}``).

    Raises:
      ValueError: wrong rank, non-square attention, ``start_layer`` outside [0, L].
    """
    return _batched(_joint, attention, None, options)


def upsample(maps: jnp.ndarray, size: Sequence[int]) -> jnp.ndarray:
    """Bilinear resize of the last two axes ``[..., gh, gw]`` -> ``[..., height, width]`` (pixels).

    Half-pixel centres (``jax.image.resize(method="bilinear")``), so a map lays
    over a photo of any aspect ratio; values stay within the input's range.
    """
    height, width = (int(s) for s in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be (height, width) in pixels >= 1, got {tuple(size)}")
    maps = jnp.asarray(maps, jnp.float32)
    if maps.ndim < 2:
        raise ValueError(f"maps must be [..., gh, gw], got shape {maps.shape}")
    return jax.image.resize(maps, maps.shape[:-2] + (height, width), method="bilinear", antialias=False,
                            precision=HIGHEST)
