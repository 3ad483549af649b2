"""Head importance: what each head alone is worth to the answer, all ``L x H`` ablations in one compiled program.

For every head ``h`` of every layer ``l``, the head's output ``z_h`` (``hook_z``)
is zeroed (or replaced by its mean over the batch) and the change of the target
logit is measured, ``ablated - clean`` (Michel, Levy & Neubig, "Are Sixteen Heads
Really Better than One?", NeurIPS 2019, who prune by the same single-head
ablations; TransformerLens and ViT-Prisma loop over forward passes). A model
without a head (DINOv2) is measured by its features instead: the cosine of the
ablated features to the clean ones, minus 1.

The program reuses the clean prefix. One clean pass records every block's input
``resid_pre`` and every head's output ``z``; an ablation in layer ``l`` starts from
the clean ``resid_pre[l]`` and the clean ``z[l]`` (ablating ``z_h`` changes nothing
before it), recomputes block ``l`` from its output projection on and then blocks
``l+1 .. L-1`` and the readout. When the readout reads the class token (every
model but GAP ones), the last block is computed for that one row: keys and values
of every token, the query, attention, projection and MLP of the class token alone
(``Encoder1DBlock(rows=1)``). That is ``H (L-1)(L-2)/2`` full blocks, ``H (L-1)``
blocks from the projection on, ``H (L-1)`` key/value passes and ``H`` single rows,
against ``L^2 H`` full blocks for a loop of forward passes (ViT-B/16: 660 + 132 +
132 + 12 against 1728, about 780 full-block equivalents by FLOPs: 2.2x fewer).
Ablations are batched with ``jax.vmap`` in chunks of heads sized to a memory
budget (:func:`ablation_bytes`; on CPU also to :data:`CPU_IMAGES` images per
block) and run in sequence with ``jax.lax.map``;
the later blocks run in a ``jax.lax.fori_loop`` over the stacked layer
parameters, so the program holds one block, whatever ``L``.
"""

from __future__ import annotations

import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vitjax.attribution.hooks import apply_hooked
from vitjax.attribution.lens import readout, target_classes
from vitjax.model.config import ViTConfig
from vitjax.model.forward import check_images, finite_rows, output_kind, raise_non_finite
from vitjax.model.vit import Encoder1DBlock, MultiHeadDotProductAttention, ViT

__all__ = ["CPU_IMAGES", "DEFAULT_BUDGET", "MODES", "ablation_bytes", "chunk_size", "head_importance"]

MODES = ("zero", "mean")
#: Default memory budget of the ablations in flight (bytes): 2 GiB, a tenth of a 24 GB machine.
DEFAULT_BUDGET = 2 * 2**30
#: On XLA:CPU, at most this many images go through a block at once (ablations x batch): a block runs slower per
#: image on larger batches there (ViT-B/16 block, 2-core AMD EPYC: 36 ms per image at 8 and 16 images, 41 at 32,
#: 45 at 96), and head importance at B = 8 ran 1.84x a loop of 144 forward passes one head at a time against
#: 1.57x twelve at a time. Accelerators take as many as the budget allows.
CPU_IMAGES = 8


def ablation_bytes(config: ViTConfig, batch: int) -> int:
    """Bytes one ablation in flight needs: ``4 B (8 N D + 2 N M + 3 H N^2)``.

    The live buffers of one block evaluation in float32 (FACTS section 9): the residual, its
    normalised copy, q, k, v, z and the block's outputs (about 8 ``N x D``), the MLP's hidden
    layer before and after the GELU (``2 N x M``), the scores, probabilities and the softmax's
    temporary (``3 H x N x N``). The clean cache (``2 L B N D``) and the parameters come once.
    """
    n, d, m, h = config.num_tokens, config.hidden_size, config.mlp_dim, config.num_heads
    return 4 * int(batch) * (8 * n * d + 2 * n * m + 3 * h * n * n)


def chunk_size(config: ViTConfig, batch: int, budget: int, *, platform: Optional[str] = None) -> int:
    """Heads ablated at once (1..H) so that ``chunk x ablation_bytes <= budget``, balanced over the chunks.

    At least 1, even when one ablation alone is over the budget. On ``platform`` ``"cpu"`` (default:
    JAX's default backend) also ``chunk x batch <= CPU_IMAGES`` (see :data:`CPU_IMAGES`).
    """
    h = config.num_heads
    most = max(1, min(h, int(budget) // max(1, ablation_bytes(config, batch))))
    if (platform or jax.default_backend()) == "cpu":
        most = min(most, max(1, CPU_IMAGES // max(1, int(batch))))
    chunks = -(-h // most)
    return -(-h // chunks)


@functools.partial(jax.jit, static_argnames=("model", "mode", "chunk"))
def _importance(model: ViT, params, images, targets, weights, *, mode: str, chunk: int):
    c = model.config
    L, H = c.num_layers, c.num_heads
    names = (tuple(f"blocks.{layer}.hook_resid_pre" for layer in range(L))
             + tuple(f"blocks.{layer}.attn.hook_z" for layer in range(L)))
    out, cache = apply_hooked(model, params, images, record=names)
    resid = jnp.stack([cache[f"blocks.{layer}.hook_resid_pre"] for layer in range(L)])  # [L, B, N, D]
    z = jnp.stack([cache[f"blocks.{layer}.attn.hook_z"] for layer in range(L)])  # [L, B, N, H, d]
    if mode == "mean":
        w = weights.astype(jnp.float32) / jnp.maximum(jnp.sum(weights.astype(jnp.float32)), 1.0)
        fill = jnp.einsum("b,lbnhd->lnhd", w, z.astype(jnp.float32),
                          precision=jax.lax.Precision.HIGHEST)[:, None].astype(z.dtype)  # [L, 1, N, H, d]
    else:
        fill = jnp.zeros((L, 1) + z.shape[2:], z.dtype)
    blocks = jax.tree_util.tree_map(lambda *a: jnp.stack(a),
                                    *[params["Transformer"][f"encoderblock_{layer}"] for layer in range(L)])

    if c.num_classes:
        classes = jnp.where(targets < 0, jnp.argmax(out, axis=-1), targets).astype(jnp.int32)

        def score(o):  # [B, C] -> [B]: the target logit
            return jnp.take_along_axis(o, classes[:, None], axis=1)[:, 0]
    else:
        classes = jnp.full(targets.shape, -1, jnp.int32)
        unit = out / jnp.maximum(jnp.linalg.norm(out, axis=-1, keepdims=True), jnp.finfo(jnp.float32).tiny)

        def score(o):  # [B, D] -> [B]: cosine to the clean features
            return jnp.sum(o * unit, axis=-1) / jnp.maximum(jnp.linalg.norm(o, axis=-1), jnp.finfo(jnp.float32).tiny)

    clean = score(out)
    block = Encoder1DBlock(c, model.dtype)
    out_proj = nn.DenseGeneral(c.hidden_size, axis=(-2, -1), dtype=model.dtype, precision=c.precision)

    def layer_params(j):
        return jax.tree_util.tree_map(lambda a: a[j], blocks)

    def run_block(j, x):
        return block.apply({"params": layer_params(j)}, x)[0]

    def ablated_block(p, x, zh):  # block l with its attention output projected from the edited z
        attn = out_proj.apply({"params": p["MultiHeadDotProductAttention_1"]["out"]}, zh)

        def reuse(next_fun, args, kwargs, context):
            if context.method_name == "__call__" and isinstance(context.module, MultiHeadDotProductAttention):
                return attn, None  # q, k, v and the pattern are the clean ones: not recomputed
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(reuse):
            return block.apply({"params": p}, x)[0]

    chunks = -(-H // chunk)
    table = jnp.minimum(jnp.arange(chunks * chunk), H - 1).reshape(chunks, chunk)  # padded with the last head
    rows = 1 if c.class_token else None  # the readout reads the class token alone (GAP: every patch)
    last = layer_params(L - 1)

    def ablations(layer, heads, final: bool):  # [chunk, B]: ablating each of ``heads`` in ``layer``
        k = rows if final else None  # in the last block only the rows the readout reads
        p, x0, zl, fl = layer_params(layer), resid[layer][:, :k], z[layer][:, :k], fill[layer][:, :k]

        def ablate(h):
            zh = jnp.where((jnp.arange(H) == h)[None, None, :, None], fl, zl)
            x = ablated_block(p, x0, zh)
            if not final:
                x = jax.lax.fori_loop(layer + 1, L - 1, run_block, x)
                x = block.apply({"params": last}, x, rows=rows)[0]
            return score(readout(model, params, x))

        return jax.vmap(ablate)(heads)

    parts = []
    if L > 1:
        parts.append(jax.lax.map(lambda i: ablations(i // chunks, table[i % chunks], False),
                                 jnp.arange((L - 1) * chunks)))
    parts.append(jax.lax.map(lambda i: ablations(L - 1, table[i], True), jnp.arange(chunks)))
    res = jnp.concatenate(parts)  # [L * chunks, chunk, B]
    res = res.reshape(L, chunks * chunk, -1)[:, :H]
    imp = jnp.transpose(res, (2, 0, 1)) - clean[:, None, None]
    return imp, classes, {output_kind(model): finite_rows(out), "importance": finite_rows(imp)}


def _check_settings(mode: str, budget) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget <= 0:
        raise ValueError(f"budget must be a positive number of bytes, got {budget!r}")


def head_importance(model: ViT, params, images, *, target=None, mode: str = "zero",
                    budget: int = DEFAULT_BUDGET) -> jnp.ndarray:
    """Every head's importance: the change of the target logit when it alone is ablated, ``[B, L, H]``.

    Args:
      model, params: from :func:`vitjax.load_checkpoint`.
      images: ``[B, H, W, 3]`` float32 at ``model.config.image_size``, preprocessed.
      target: the class whose logit is measured: None (each image's predicted class), an int or an
        int array ``[B]``. Must be None for a model without a head.
      mode: ``"zero"`` (the head's output ``hook_z[..., h, :]`` set to 0) or ``"mean"`` (set to its
        mean over the batch, per token position, as :func:`vitjax.ablate_heads`; at least 2 images, and
        the numbers depend on which images share the batch).
      budget: bytes the ablations in flight may use (:func:`chunk_size`, :func:`ablation_bytes`);
        the clean cache ``2 L B N D x 4`` bytes and the parameters come on top.

    Returns:
      float32 ``[B, L, H]`` (layers and heads 0-based): ``ablated - clean`` of the target logit
      (negative: the head supports the class), or, for a headless model, ``cos(ablated features,
      clean features) - 1`` (<= 0; the more negative, the more the features depend on the head).
      Equals a forward pass with ``ablate_heads({l: h}, mode)`` minus the clean one (float32
      rounding apart). One jitted program over all ``L x H`` ablations that reuses the clean prefix
      (see the module docstring).

    Raises:
      ValueError: bad images (an empty batch too), mode (``"mean"`` with one image), budget or target
        (a target for a headless model).
      NonFiniteError (a ValueError): the clean output or the importance of a row is not finite
        (NaN/inf), naming the rows (``.result``: the ``[B, L, H]`` values).
    """
    _check_settings(mode, budget)
    check_images(model, images)
    images = jnp.asarray(images)
    b = images.shape[0]
    if b == 0:
        raise ValueError("images must hold at least one image, got a batch of 0")
    if mode == "mean" and b < 2:
        raise ValueError("mode 'mean' needs at least 2 images: the mean over one image is the image itself, so "
                         "nothing would be ablated (use mode 'zero', or a batch of several images)")
    targets = _targets(model, target, b)
    imp, _, finite = _importance(model, params, images, targets, jnp.ones((b,), jnp.float32), mode=mode,
                                 chunk=chunk_size(model.config, b, budget))
    raise_non_finite(finite, result=imp)
    return imp


def _targets(model: ViT, target, batch: int) -> jnp.ndarray:
    if not model.config.num_classes:
        if target is not None:
            raise ValueError("target must be None for a model without a head (its importance is measured on the "
                             "features' cosine)")
        return jnp.full((batch,), -1, jnp.int32)
    return target_classes(target, batch, int(model.config.num_classes))
