"""Jitted forward passes that return logits with every layer's attention."""

from __future__ import annotations

import functools
from typing import Any, Mapping, Tuple

import jax
import jax.numpy as jnp

from vitjax.model.vit import ATTENTION, ViT

__all__ = ["forward", "predict", "collect_attention", "check_images", "apply_with_attention"]


def check_images(model: ViT, images) -> None:
    """Raises ValueError unless ``images`` is ``[B, H, W, 3]`` at the model's size."""
    shape = tuple(getattr(images, "shape", ()))
    want = model.config.image_size
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"images must be [B, H, W, 3], got shape {shape}")
    if shape[1:3] != tuple(want):
        raise ValueError(
            f"images are {shape[1]}x{shape[2]} pixels but the model expects {want[0]}x{want[1]}; "
            "preprocess them to that size or load the checkpoint with image_size="
        )


def collect_attention(tree: Mapping[str, Any], num_layers: int) -> jnp.ndarray:
    """Stacks every layer's ``attention`` leaf into ``[B, L, H, N, N]``, looked up by layer name.

    ``tree`` is the ``intermediates`` collection (sown leaves are 1-tuples) or a
    tree shaped like the ``perturbations`` collection (plain arrays, e.g. the
    gradients with respect to the attention); layer l's entry always comes from
    ``encoderblock_l``, so attention and gradient pair by name.
    """
    enc = tree["Transformer"]
    leaves = [enc[f"encoderblock_{i}"]["MultiHeadDotProductAttention_1"][ATTENTION] for i in range(num_layers)]
    return jnp.stack([leaf[0] if isinstance(leaf, tuple) else leaf for leaf in leaves], axis=1)


def apply_with_attention(model: ViT, params, images) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """Un-jitted ``model.apply`` that returns ``(logits [B, C], attention [B, L, H, N, N])``.

    For use inside other jitted functions; :func:`forward` is the jitted entry point.
    """
    logits, state = model.apply({"params": params}, images, mutable=["intermediates"])
    return logits, collect_attention(state["intermediates"], model.config.num_layers)


_forward = jax.jit(apply_with_attention, static_argnums=0)


def forward(model: ViT, params, images) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """Logits and every layer's attention probabilities, in one jitted pass.

    Args:
      model: a :class:`vitjax.ViT` (from :func:`vitjax.load_checkpoint`).
      params: its parameter tree.
      images: ``[B, H, W, 3]`` float32 at ``model.config.image_size``,
        preprocessed for the model's family (see :func:`vitjax.preprocess`).

    Returns:
      ``logits [B, C]`` float32 (pre-softmax scores; a model without head
      returns its features instead: ``[B, D]``, the class-token features after
      the final LayerNorm, or ``[B, representation_size]`` after ``pre_logits``)
      and ``attention [B, L, H, N, N]`` float32 softmax probabilities (rows:
      queries, columns: keys; tokens: class token, registers, patches).

    Raises:
      ValueError: images of the wrong rank, channels or size.
    """
    check_images(model, images)
    return _forward(model, params, jnp.asarray(images))


@functools.partial(jax.jit, static_argnums=0)
def _predict(model: ViT, params, images):
    return model.apply({"params": params}, images)


def predict(model: ViT, params, images) -> jnp.ndarray:
    """Logits ``[B, C]`` only (nothing sown); same arguments as :func:`forward`."""
    check_images(model, images)
    return _predict(model, params, jnp.asarray(images))
