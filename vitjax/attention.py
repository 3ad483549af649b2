"""Attention maps from attention probabilities: pure functions on arrays, no I/O.

Each method is written for ONE image and batched with ``jax.vmap``; the public
entry points are jitted with their options static. Shapes:
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
from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "HEAD_FUSIONS",
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
    "check_options",
]

HEAD_FUSIONS = ("mean", "max", "min")
_HI = lax.Precision.HIGHEST  # exact float32 products on GPU/TPU too


# --- validation ---------------------------------------------------------------------------


def check_attention(attention, *, batched: Optional[bool] = None, name: str = "attention") -> None:
    """Raises ValueError unless ``attention`` is ``[L, H, N, N]`` or ``[B, L, H, N, N]``."""
    shape = tuple(getattr(attention, "shape", ()))
    ranks = {None: (4, 5), True: (5,), False: (4,)}[batched]
    want = {4: "[L, H, N, N]", 5: "[B, L, H, N, N]"}
    if len(shape) not in ranks:
        raise ValueError(f"{name} must be {' or '.join(want[r] for r in ranks)}, got shape {shape}")
    if shape[-1] != shape[-2]:
        raise ValueError(f"{name} must be square in its last two axes (queries x keys), got shape {shape}")


def check_options(*, head_fusion="mean", discard_ratio=0.0, start_layer=0, num_layers=None) -> None:
    """Raises ValueError naming the option and the value it got."""
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)}, got {head_fusion!r}")
    if not (0.0 <= float(discard_ratio) < 1.0):
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio!r}")
    if int(start_layer) != start_layer or start_layer < 0 or (num_layers is not None and start_layer > num_layers):
        top = "" if num_layers is None else f" (model has {num_layers} layers)"
        raise ValueError(f"start_layer must be an integer in [0, L]{top}, got {start_layer!r}")


# --- one layer, one image -----------------------------------------------------------------


def fuse_heads(attention: jnp.ndarray, head_fusion: str = "mean") -> jnp.ndarray:
    """``[H, N, N]`` -> ``[N, N]``: mean, max or min over heads."""
    return {"mean": jnp.mean, "max": jnp.max, "min": jnp.min}[head_fusion](attention, axis=0)


def _discard(a: jnp.ndarray, discard_ratio: float) -> jnp.ndarray:
    """Zeroes the lowest ``discard_ratio`` fraction of ``a [N, N]``'s entries, never [0, 0].

    As in jacobgil/vit-explain: the ``int(N*N*ratio)`` smallest entries (stable
    order for ties) are dropped, except the class-to-class entry if among them.
    """
    flat = a.reshape(-1)
    k = int(flat.shape[0] * discard_ratio)
    if k == 0:
        return a
    order = jnp.argsort(flat, stable=True)
    drop = jnp.zeros(flat.shape, bool).at[order[:k]].set(True).at[0].set(False)
    return jnp.where(drop, 0.0, flat).reshape(a.shape)


def _normalize_rows(a: jnp.ndarray) -> jnp.ndarray:
    s = jnp.sum(a, axis=-1, keepdims=True)
    return jnp.where(s > 0, a / jnp.where(s > 0, s, 1.0), 0.0)


def layer_matrix(
    attention: jnp.ndarray, *, head_fusion: str = "mean", discard_ratio: float = 0.0, residual: bool = True
) -> jnp.ndarray:
    """One layer's rollout factor Abar: ``[H, N, N]`` -> ``[N, N]`` float32, rows summing to 1.

    Heads fused, lowest entries discarded, identity added for the residual
    connection (``residual=True``), each row divided by its sum (a row that is
    all zero stays zero).
    """
    a = fuse_heads(attention.astype(jnp.float32), head_fusion)
    if discard_ratio > 0:
        a = _discard(a, discard_ratio)
    if residual:
        a = a + jnp.eye(a.shape[-1], dtype=a.dtype)
    return _normalize_rows(a)


def _layer_matrices(attention, head_fusion, discard_ratio, residual):
    # [L, H, N, N] -> [L, N, N]
    fn = functools.partial(layer_matrix, head_fusion=head_fusion, discard_ratio=discard_ratio, residual=residual)
    return jax.vmap(fn)(attention)


def _reader(n: int, num_prefix_tokens: int, class_token: bool) -> jnp.ndarray:
    """The row vector v with ``v @ M == read_row``'s source row: e_0, or the mean over patch rows."""
    if class_token:
        return jnp.zeros((n,), jnp.float32).at[0].set(1.0)
    return jnp.zeros((n,), jnp.float32).at[num_prefix_tokens:].set(1.0 / (n - num_prefix_tokens))


def _rollout_row(mats: jnp.ndarray, v: jnp.ndarray, start_layer: int) -> jnp.ndarray:
    """``v @ Abar_L @ ... @ Abar_{start+1}`` -> ``[N]``: the joint map's row in O(L N^2), not O(L N^3).

    The map needs one row of the joint matrix, so the product is taken from the
    left with a vector, last layer first.
    """

    def step(row, k):
        return jnp.where(k >= start_layer, jnp.matmul(row, mats[k], precision=_HI), row), None

    row, _ = lax.scan(step, v, jnp.arange(mats.shape[0] - 1, -1, -1))
    return row


def _cumulative_rows(mats: jnp.ndarray, v: jnp.ndarray, start_layer: int) -> jnp.ndarray:
    """``[L, N, N]`` -> ``[L, N]``: row l is ``v @ Abar_l @ ... @ Abar_{start+1}`` (``v`` before start)."""
    num_layers = mats.shape[0]
    target = jnp.arange(num_layers)

    def step(rows, k):  # rows [L, N]; layer k is applied to every target l >= k
        new = jnp.matmul(rows, mats[k], precision=_HI)
        return jnp.where(((target >= k) & (k >= start_layer))[:, None], new, rows), None

    rows, _ = lax.scan(step, jnp.broadcast_to(v, (num_layers, v.shape[0])), jnp.arange(num_layers - 1, -1, -1))
    return rows


def rollout(
    attention: jnp.ndarray,
    *,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
    residual: bool = True,
) -> jnp.ndarray:
    """Joint attention of one image: ``[L, H, N, N]`` -> ``[N, N]`` = Abar_L ... Abar_{start+1}.

    Zero layers (or ``start_layer == L``) give the identity.
    """
    n = attention.shape[-1]
    if attention.shape[0] <= start_layer:
        return jnp.eye(n, dtype=jnp.float32)
    mats = _layer_matrices(attention[start_layer:], head_fusion, discard_ratio, residual)

    def step(joint, a):
        return jnp.matmul(a, joint, precision=_HI), None

    joint, _ = lax.scan(step, jnp.eye(n, dtype=jnp.float32), mats)
    return joint


# --- reading maps -------------------------------------------------------------------------


def read_row(matrix: jnp.ndarray, *, num_prefix_tokens: int = 1, class_token: bool = True) -> jnp.ndarray:
    """The attribution row of a ``[N, N]`` matrix over the patch columns -> ``[N - prefix]``.

    With a class token (token 0): its row. Without one (global-average-pooled
    models): the mean over the patch rows, i.e. the attribution of the pooled
    output. Prefix tokens (class, distillation, registers) are never columns.
    """
    rows = matrix[0] if class_token else jnp.mean(matrix[num_prefix_tokens:], axis=0)
    return rows[num_prefix_tokens:]


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


def _batched(fn, attention, grid, num_prefix_tokens, **kw):
    check_attention(attention)
    grid = _check_grid(grid, attention.shape[-1], num_prefix_tokens)
    single = attention.ndim == 4
    x = attention[None] if single else attention
    out = fn(x, grid=grid, num_prefix_tokens=num_prefix_tokens, **kw)
    return out[0] if single else out


@functools.partial(jax.jit, static_argnames=("grid", "num_prefix_tokens", "class_token", "head_fusion",
                                               "discard_ratio", "start_layer", "residual"))
def _rollout_maps(attention, *, grid, num_prefix_tokens, class_token, head_fusion, discard_ratio, start_layer,
                  residual):
    def one(att):  # [L, H, N, N] -> [gh, gw]
        mats = _layer_matrices(att, head_fusion, discard_ratio, residual)
        v = _reader(att.shape[-1], num_prefix_tokens, class_token)
        return row_to_map(_rollout_row(mats, v, start_layer)[num_prefix_tokens:], grid)

    return jax.vmap(one)(attention)


def rollout_map(
    attention: jnp.ndarray,
    grid: Sequence[int],
    *,
    num_prefix_tokens: int = 1,
    class_token: bool = True,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
    residual: bool = True,
) -> jnp.ndarray:
    """Joint attention map (rollout): ``[B, L, H, N, N]`` -> ``[B, gh, gw]`` float32 in [0, 1].

    Args:
      attention: softmax probabilities ``[B, L, H, N, N]`` (or one image's
        ``[L, H, N, N]`` -> ``[gh, gw]``).
      grid: the model's patch grid ``(gh, gw)`` (``model.config.grid``); never
        guessed, so non-square grids work.
      num_prefix_tokens: tokens before the patches (1 = class token; more for
        distillation/register tokens, which are skipped).
      class_token: read the class token's row; False for global-average-pooled
        models, which read the mean over patch rows.
      head_fusion, discard_ratio, start_layer, residual: see :func:`attention_rollout`.

    Returns:
      maps divided by their maximum (each image separately).

    Raises:
      ValueError: bad rank, non-square attention, grid not matching N, bad option.
    """
    check_options(head_fusion=head_fusion, discard_ratio=discard_ratio, start_layer=start_layer,
                  num_layers=getattr(attention, "shape", (0,) * 4)[-4])
    return _batched(_rollout_maps, attention, grid, num_prefix_tokens, class_token=class_token,
                    head_fusion=head_fusion, discard_ratio=float(discard_ratio), start_layer=int(start_layer),
                    residual=bool(residual))


@functools.partial(jax.jit, static_argnames=("grid", "num_prefix_tokens", "class_token", "head_fusion",
                                               "discard_ratio", "start_layer", "residual", "cumulative"))
def _per_layer(attention, *, grid, num_prefix_tokens, class_token, head_fusion, discard_ratio, start_layer,
               residual, cumulative):
    def one(att):  # [L, H, N, N] -> [L, gh, gw]
        mats = _layer_matrices(att, head_fusion, discard_ratio, residual)
        if cumulative:
            v = _reader(att.shape[-1], num_prefix_tokens, class_token)
            rows = _cumulative_rows(mats, v, start_layer)[:, num_prefix_tokens:]
        else:
            read = functools.partial(read_row, num_prefix_tokens=num_prefix_tokens, class_token=class_token)
            rows = jax.vmap(read)(mats)
        return jax.vmap(lambda r: row_to_map(r, grid))(rows)

    return jax.vmap(one)(attention)


def layer_maps(attention, grid, *, num_prefix_tokens=1, class_token=True, head_fusion="mean",
               discard_ratio=0.0, residual=True):
    """Each layer's OWN map: class row of Abar_l, ``[B, L, H, N, N]`` -> ``[B, L, gh, gw]`` in [0, 1].

    Abar_l is :func:`layer_matrix` (fused heads, residual, rows renormalised);
    no product over layers. Options as in :func:`rollout_map`.
    """
    check_options(head_fusion=head_fusion, discard_ratio=discard_ratio)
    return _batched(_per_layer, attention, grid, num_prefix_tokens, class_token=class_token,
                    head_fusion=head_fusion, discard_ratio=float(discard_ratio), start_layer=0,
                    residual=bool(residual), cumulative=False)


def cumulative_maps(attention, grid, *, num_prefix_tokens=1, class_token=True, head_fusion="mean",
                    discard_ratio=0.0, start_layer=0, residual=True):
    """The joint map through each layer l (rollout of layers 1..l): ``[B, L, gh, gw]`` in [0, 1].

    This is what the well-known "attention map of each layer" figure of the
    PyTorch notebooks shows (a cumulative rollout, not the layer's own
    attention). Layers before ``start_layer`` give all-zero maps (identity).
    The last entry equals :func:`rollout_map`.
    """
    check_options(head_fusion=head_fusion, discard_ratio=discard_ratio, start_layer=start_layer,
                  num_layers=getattr(attention, "shape", (0,) * 4)[-4])
    return _batched(_per_layer, attention, grid, num_prefix_tokens, class_token=class_token,
                    head_fusion=head_fusion, discard_ratio=float(discard_ratio), start_layer=int(start_layer),
                    residual=bool(residual), cumulative=True)


@functools.partial(jax.jit, static_argnames=("grid", "num_prefix_tokens", "class_token", "layer", "normalize"))
def _head_maps(attention, *, grid, num_prefix_tokens, class_token, layer, normalize):
    def one(att):  # [L, H, N, N] -> [H, gh, gw]
        read = functools.partial(read_row, num_prefix_tokens=num_prefix_tokens, class_token=class_token)
        return jax.vmap(lambda m: row_to_map(read(m), grid, normalize))(att[layer])

    return jax.vmap(one)(attention)


def head_maps(attention, grid, *, layer=-1, num_prefix_tokens=1, class_token=True, normalize=True):
    """Per-head maps of one layer (last by default): ``[B, L, H, N, N]`` -> ``[B, H, gh, gw]``.

    The raw attention of the class token to each patch in every head (no
    residual, no fusion), as shown in DINO (Caron et al., ICCV 2021); each head
    divided by its max when ``normalize``.
    """
    check_attention(attention)
    num_layers = attention.shape[-4]
    if not -num_layers <= int(layer) < num_layers:
        raise ValueError(f"layer must be in [{-num_layers}, {num_layers - 1}], got {layer!r}")
    return _batched(_head_maps, attention, grid, num_prefix_tokens, class_token=class_token,
                    layer=int(layer) % num_layers, normalize=bool(normalize))


@functools.partial(jax.jit, static_argnames=("head_fusion", "discard_ratio", "start_layer", "residual"))
def _rollout_batch(attention, *, head_fusion, discard_ratio, start_layer, residual):
    fn = functools.partial(rollout, head_fusion=head_fusion, discard_ratio=discard_ratio, start_layer=start_layer,
                           residual=residual)
    return jax.vmap(fn)(attention)


def attention_rollout(
    attention: jnp.ndarray,
    *,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
    residual: bool = True,
) -> jnp.ndarray:
    """Joint attention matrices by attention rollout: ``[B, L, H, N, N]`` -> ``[B, N, N]``.

    Args:
      attention: softmax probabilities, batched ``[B, L, H, N, N]`` or one
        image's ``[L, H, N, N]`` (then ``[N, N]`` is returned).
      head_fusion: "mean" (Abnar & Zuidema; the ViT paper), "max" or "min"
        (jacobgil/vit-explain).
      discard_ratio: per image and layer, the fraction in [0, 1) of the lowest
        fused weights set to zero before the residual is added, never the
        class-to-class entry (jacobgil/vit-explain, without its first-image-only
        and unnormalised-row faults).
      start_layer: layers before it (0-based) are skipped; Chefer et al.'s
        evaluation code uses 1 for the rollout baseline.
      residual: add the identity for the residual connection (Abnar & Zuidema);
        False multiplies the bare renormalised attentions.

    Returns:
      float32 ``[B, N, N]``, each row summing to 1 (``Abar_L @ ... @ Abar_{start+1}``).

    Raises:
      ValueError: wrong rank, non-square attention, unknown ``head_fusion``,
        ``discard_ratio`` outside [0, 1), ``start_layer`` outside [0, L].
    """
    check_attention(attention)
    check_options(head_fusion=head_fusion, discard_ratio=discard_ratio, start_layer=start_layer,
                  num_layers=attention.shape[-4])
    single = attention.ndim == 4
    x = jnp.asarray(attention)[None] if single else jnp.asarray(attention)
    out = _rollout_batch(x, head_fusion=head_fusion, discard_ratio=float(discard_ratio),
                         start_layer=int(start_layer), residual=bool(residual))
    return out[0] if single else out


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
    return jax.image.resize(maps, maps.shape[:-2] + (height, width), method="bilinear", antialias=False)
