"""What each layer already knows: the logit lens, the feature lens and direct logit attribution.

The residual stream after each block is read the way the model reads its last
one (:func:`readout`: the final LayerNorm ``encoder_norm``, the class token or,
for global-average-pooled models, the mean of the patch tokens, ``pre_logits``
where present, the head). Rows are indexed ``0..L``: row 0 is the input of the
first block (embedding + position), row ``l`` the output of block ``l`` (1-based),
row ``L`` the model's own output.

* :func:`logit_lens` -- nostalgebraist, "interpreting GPT: the logit lens"
  (LessWrong, 2020); for ViTs, ViT-Prisma's per-patch logit lens
  (``get_patch_logit_directions``). Row ``L`` is the model's output itself,
  bit for bit.
* :func:`feature_lens` -- for every model, headless ones too (DINOv2): the cosine
  of each layer's normalised class token (after ``encoder_norm``) to the final one.
* :func:`direct_logit_attribution` -- Elhage et al., "A Mathematical Framework for
  Transformer Circuits" (2021), as TransformerLens computes it: with the final
  LayerNorm's scale frozen at the clean run, the target logit is a sum of the
  embedding's, each head's (``z_h @ W_O[h]``, after LayerScale), each MLP's, and
  the bias terms' (attention output biases, the final LayerNorm's bias, the head's
  bias) contributions.
"""

from __future__ import annotations

import functools
from typing import Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vitjax.attribution.hooks import apply_hooked
from vitjax.model.forward import check_images, finite_rows, output_kind, raise_non_finite
from vitjax.model.vit import ViT

__all__ = ["direct_logit_attribution", "feature_lens", "final_norm", "logit_lens", "readout", "stream_names",
           "target_classes"]


def stream_names(num_layers: int):
    """The sites of the residual stream rows ``0..L``: block 0's input, then every block's output."""
    return ("blocks.0.hook_resid_pre",) + tuple(f"blocks.{layer}.hook_resid_post" for layer in range(num_layers))


def final_norm(model: ViT, params, tokens):
    """``encoder_norm`` (the final LayerNorm) of ``tokens [..., D]``, in the model's compute dtype."""
    c = model.config
    ln = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=model.dtype, use_fast_variance=False)
    return ln.apply({"params": params["Transformer"]["encoder_norm"]}, tokens)


def _pool(model: ViT, x):
    """``[..., N, D]`` -> ``[..., D]``: the class token, or the mean of the patch tokens (GAP models)."""
    c = model.config
    return x[..., 0, :] if c.class_token else jnp.mean(x[..., c.num_prefix_tokens:, :], axis=-2)


def _pre_logits(model: ViT, params, x):
    c = model.config
    if c.representation_size is None:
        return x
    dense = nn.Dense(c.representation_size, dtype=model.dtype, precision=c.precision)
    return jnp.tanh(dense.apply({"params": params["pre_logits"]}, x))


def readout(model: ViT, params, tokens) -> jnp.ndarray:
    """What the model makes of residual tokens ``[..., N, D]``: its tail after the last block -> ``[..., C]``.

    ``encoder_norm``, the class token (or the mean of the patch tokens for GAP models),
    ``pre_logits`` + tanh where present, the head; float32. A headless model returns its
    features (``[..., D]`` or ``[..., R]``), as :func:`vitjax.forward`. Applied to the last
    block's output it equals the model's output up to float32 rounding (same modules and
    parameters; ``vitjax.model.vit.ViT``).
    """
    c = model.config
    x = _pre_logits(model, params, _pool(model, final_norm(model, params, tokens)))
    if c.num_classes:
        x = nn.Dense(c.num_classes, dtype=model.dtype, precision=c.precision).apply({"params": params["head"]}, x)
    return x.astype(jnp.float32)


def target_classes(target, batch: int, num_classes: int) -> jnp.ndarray:
    """``None | int | int array [B]`` -> int32 ``[B]`` (-1 = each image's predicted class).

    Raises:
      ValueError: not an integer or an integer array of shape ``[B]``, or a class out of range.
    """
    if target is None:
        return jnp.full((batch,), -1, jnp.int32)
    arr = np.asarray(target)
    if arr.dtype == object and arr.ndim == 0 and isinstance(target, int) and not isinstance(target, bool):
        raise ValueError(f"target classes must be in [0, {num_classes - 1}], got {target}")  # beyond int64
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"target must be None, an int or an int array [B], got dtype {arr.dtype}")
    if arr.ndim == 0:
        arr = np.full((batch,), int(arr))
    if arr.shape != (batch,):
        raise ValueError(f"target must be an int or an int array of shape ({batch},), got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(f"target classes must be in [0, {num_classes - 1}], got {arr.min()}..{arr.max()}")
    return jnp.asarray(arr, jnp.int32)


def _stream(model: ViT, params, images):
    """``(out [B, C], stream [B, L+1, N, D])`` (traceable)."""
    names = stream_names(model.config.num_layers)
    out, cache = apply_hooked(model, params, images, record=names)
    return out, jnp.stack([cache[n] for n in names], axis=1)


@functools.partial(jax.jit, static_argnames=("model",))
def _logit_lens(model: ViT, params, images, targets):
    c = model.config
    out, stream = _stream(model, params, images)
    logits = readout(model, params, stream[:, :-1])  # [B, L, C]
    logits = jnp.concatenate([logits, out[:, None]], axis=1)  # row L: the model's output itself
    classes = jnp.where(targets < 0, jnp.argmax(out, axis=-1), targets).astype(jnp.int32)
    patches = _pre_logits(model, params, final_norm(model, params, stream[:, :, c.num_prefix_tokens:]))
    w = jnp.take(params["head"]["kernel"], classes, axis=1).T.astype(patches.dtype)  # [B, D']
    b = jnp.take(params["head"]["bias"], classes)
    maps = jnp.einsum("blpd,bd->blp", patches, w, precision=c.precision,
                      preferred_element_type=jnp.float32) + b[:, None, None]
    b_, rows = maps.shape[:2]
    finite = {"logits": finite_rows(logits), "maps": finite_rows(maps)}  # every row of the lens, the output's too
    return logits, maps.reshape((b_, rows) + tuple(c.grid)), classes, finite


def _need_head(model: ViT, what: str) -> int:
    if not model.config.num_classes:
        raise ValueError(f"{what} needs a classification head, but model.config.num_classes is None (a headless "
                         "checkpoint: its outputs are features); use vitjax.feature_lens")
    return int(model.config.num_classes)


def logit_lens(model: ViT, params, images, *, target=None, valid=None) -> Dict[str, jnp.ndarray]:
    """The logit lens: every layer's residual stream read by the model's own head.

    Args:
      model, params: from :func:`vitjax.load_checkpoint`; the model needs a head.
      images: ``[B, H, W, 3]`` float32 at ``model.config.image_size``, preprocessed.
      target: the class of the per-patch maps: None (each image's predicted class), an int, or
        an int array ``[B]``.
      valid: ``[B]`` bool, the rows checked for non-finite values (None: every row; padded rows
        may hold anything).

    Returns:
      dict of float32 arrays: ``logits [B, L+1, C]`` (row 0: block 0's input; row l: block l's
      output read through ``encoder_norm``, the class token or the patch mean (GAP),
      ``pre_logits`` and the head; row L is the model's output, exactly); ``maps
      [B, L+1, gh, gw]`` (the target class's logit read at each patch token the same way; raw
      logits, not normalised); ``target [B]`` int32 (the class of the maps).

    Raises:
      ValueError: a headless model (one line: use :func:`feature_lens`), bad images or target.
      NonFiniteError: a lens logit (any layer's, the model's output included) or map value is not
        finite (NaN/inf) for a valid row; ``.rows`` names them, ``.result`` holds the dict above.
        Flags computed in the compiled program, one per image and kind, checked after it.

    Follows nostalgebraist (2020) and ViT-Prisma's per-patch lens; one jitted pass.
    """
    num_classes = _need_head(model, "the logit lens")
    check_images(model, images)
    images = jnp.asarray(images)
    logits, maps, classes, finite = _logit_lens(model, params, images,
                                                target_classes(target, images.shape[0], num_classes))
    result = {"logits": logits, "maps": maps, "target": classes}
    raise_non_finite(finite, valid=valid, result=result)
    return result


@functools.partial(jax.jit, static_argnames=("model",))
def _feature_lens(model: ViT, params, images):
    out, stream = _stream(model, params, images)
    f = _pool(model, final_norm(model, params, stream)).astype(jnp.float32)  # [B, L+1, D]
    f = f / jnp.maximum(jnp.linalg.norm(f, axis=-1, keepdims=True), jnp.finfo(jnp.float32).tiny)
    cos = jnp.einsum("bld,bd->bl", f, f[:, -1], precision=jax.lax.Precision.HIGHEST)
    finite = {output_kind(model): finite_rows(out)}
    finite["features"] = finite.get("features", True) & finite_rows(cos)
    return cos, finite


def feature_lens(model: ViT, params, images, *, valid=None) -> jnp.ndarray:
    """Cosine of each layer's normalised class token to the final one: ``[B, L+1]`` float32 in [-1, 1].

    Each row of the residual stream (block 0's input, each block's output) goes through the
    final LayerNorm ``encoder_norm`` and is read at the class token (GAP models: the mean of
    the patch tokens), as the model reads its last layer before ``pre_logits`` / the head; the
    last column is 1 (up to float32 rounding). Works for every model, headless ones included.
    ``valid``: ``[B]`` bool, the rows checked for non-finite values (None: every row).

    Raises:
      ValueError: bad images.
      NonFiniteError: the model's output (logits or features) or a cosine is not finite (NaN/inf)
        for a valid row; ``.rows`` names them, ``.result`` holds the ``[B, L+1]`` cosines. Flags
        computed in the compiled program, checked after it.
    """
    check_images(model, images)
    cos, finite = _feature_lens(model, params, jnp.asarray(images))
    raise_non_finite(finite, valid=valid, result=cos)
    return cos


@functools.partial(jax.jit, static_argnames=("model",))
def _dla(model: ViT, params, images, targets):
    c = model.config
    L = c.num_layers
    names = (("blocks.0.hook_resid_pre", f"blocks.{L - 1}.hook_resid_post")
             + tuple(f"blocks.{layer}.attn.hook_z" for layer in range(L))
             + tuple(f"blocks.{layer}.hook_mlp_out" for layer in range(L)))
    out, cache = apply_hooked(model, params, images, record=names)
    classes = jnp.where(targets < 0, jnp.argmax(out, axis=-1), targets).astype(jnp.int32)
    hp = jax.lax.Precision.HIGHEST
    final = cache[f"blocks.{L - 1}.hook_resid_post"].astype(jnp.float32)  # [B, N, D]
    mu = jnp.mean(final, axis=-1, keepdims=True)
    sigma = jnp.sqrt(jnp.mean(jnp.square(final - mu), axis=-1, keepdims=True) + c.layer_norm_eps)  # frozen
    ln = params["Transformer"]["encoder_norm"]
    u = jnp.take(params["head"]["kernel"], classes, axis=1).T.astype(jnp.float32) * ln["scale"][None]  # [B, D]
    n = final.shape[1]
    weights = (jnp.zeros((n,), jnp.float32).at[0].set(1.0) if c.class_token
               else jnp.zeros((n,), jnp.float32).at[c.num_prefix_tokens:].set(1.0 / (n - c.num_prefix_tokens)))
    w_tok = weights[None, :] / sigma[..., 0]  # [B, N]: the readout's weight of each token, frozen scale
    read = slice(0, 1) if c.class_token else slice(None)  # the tokens the readout reads
    w_tok = w_tok[:, read]

    def direct(comp, spec):  # comp [B, N, ..., D] -> [B, ...]: mean-centred, scaled, pooled, read by u
        comp = comp[:, read].astype(jnp.float32)
        comp = comp - jnp.mean(comp, axis=-1, keepdims=True)
        return jnp.einsum(spec, comp, w_tok, u, precision=hp)

    embed = direct(cache["blocks.0.hook_resid_pre"], "bnd,bn,bd->b")
    heads, mlps, attn_bias = [], [], []
    for layer in range(L):
        block = params["Transformer"][f"encoderblock_{layer}"]
        out_p = block["MultiHeadDotProductAttention_1"]["out"]
        scale = block["ls1"]["scale"] if c.layer_scale else jnp.ones((c.hidden_size,), jnp.float32)
        per_head = jnp.einsum("bnhe,hed->bnhd", cache[f"blocks.{layer}.attn.hook_z"][:, read].astype(jnp.float32),
                              out_p["kernel"].astype(jnp.float32), precision=hp) * scale[None, None, None]
        heads.append(direct(per_head, "bnhd,bn,bd->bh"))
        bias = jnp.broadcast_to(out_p["bias"] * scale, final[:, read].shape)
        attn_bias.append(direct(bias, "bnd,bn,bd->b"))
        mlps.append(direct(cache[f"blocks.{layer}.hook_mlp_out"], "bnd,bn,bd->b"))
    ln_bias = jnp.einsum("d,bd->b", ln["bias"].astype(jnp.float32),
                         jnp.take(params["head"]["kernel"], classes, axis=1).T.astype(jnp.float32), precision=hp)
    bias = sum(attn_bias) + ln_bias + jnp.take(params["head"]["bias"], classes).astype(jnp.float32)
    logit = jnp.take_along_axis(out, classes[:, None], axis=1)[:, 0]
    result = {"embed": embed, "heads": jnp.stack(heads, axis=1), "mlps": jnp.stack(mlps, axis=1), "bias": bias,
              "logit": logit, "target": classes}
    parts = jnp.concatenate([result[k].reshape(out.shape[0], -1) for k in ("embed", "heads", "mlps", "bias")], 1)
    return result, {"logits": finite_rows(out), "attribution": finite_rows(parts)}


def direct_logit_attribution(model: ViT, params, images, *, target=None, valid=None) -> Dict[str, jnp.ndarray]:
    """Direct logit attribution: the target logit split into the embedding's, each head's and each MLP's part.

    With the final LayerNorm's scale frozen at the clean run (each token's ``1 / sqrt(var + eps)``,
    as TransformerLens' ``apply_ln_to_stack`` does), the model's readout is linear in the
    residual stream, which is the sum of the embedding, every attention output and every MLP
    output; each head's part of an attention output is ``ls1 * (z_h @ W_O[h])``.

    Args:
      model, params: a model with a linear head (no ``pre_logits`` tanh layer).
      images: ``[B, H, W, 3]`` float32, preprocessed.
      target: None (each image's predicted class), an int or an int array ``[B]``.
      valid: ``[B]`` bool, the rows checked for non-finite values (None: every row).

    Returns:
      dict of float32 arrays: ``embed [B]``, ``heads [B, L, H]``, ``mlps [B, L]`` (each
      component's direct contribution to the target logit), ``bias [B]`` (the bias terms:
      every layer's attention output bias through the frozen norm, the norm's bias
      ``beta @ W_U[:, c]`` and the head's bias ``b_U[c]``), ``logit [B]`` (the model's target
      logit) and ``target [B]`` int32. ``embed + heads.sum((1, 2)) + mlps.sum(1) == logit - bias``
      up to float32 rounding.

    Raises:
      ValueError: a headless model, one with ``pre_logits`` (its tanh is not linear), bad images
        or target.
      NonFiniteError: the logits or a contribution is not finite (NaN/inf) for a valid row;
        ``.rows`` names them, ``.result`` holds the dict above. Flags computed in the compiled
        program, checked after it.

    Follows Elhage et al., "A Mathematical Framework for Transformer Circuits" (2021) and
    TransformerLens' ``ActivationCache.decompose_resid`` / ``stack_head_results``.
    """
    num_classes = _need_head(model, "direct logit attribution")
    if model.config.representation_size is not None:
        raise ValueError("direct logit attribution needs a linear readout, but the model has a pre_logits layer "
                         f"(tanh, width {model.config.representation_size}); use vitjax.logit_lens")
    check_images(model, images)
    images = jnp.asarray(images)
    result, finite = _dla(model, params, images, target_classes(target, images.shape[0], num_classes))
    raise_non_finite(finite, valid=valid, result=result)
    return result
