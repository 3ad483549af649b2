"""Class-specific maps: where is the evidence for *this* class? Gradients of one logit w.r.t. every attention.

Every attention module passes its probabilities through ``perturb("attention", probs)``
(:mod:`vitjax.model.vit`), so one ``jax.vjp`` of the forward pass with respect to a zero
``perturbations`` tree gives, for the chosen class c, ``dy_c / dA_l`` for every layer l,
beside the logits and the attention itself. Layers are paired by their module names
(``encoderblock_{l}``), never by list order, so the gradient of layer l always meets
the attention of layer l (jacobgil/vit-explain's hooks paired them reversed).

Methods (the ``class`` entries of :mod:`vitjax.attribution.methods`), for one image with attention
``A_l [H, N, N]`` and its gradient
``G_l = dy_c / dA_l [H, N, N]``, l = 1..L, and the reading row vector ``v`` (``e_0``, the
class token; for global-average-pooled models the mean over patch rows):

* ``"generic"`` -- Chefer, Gur & Wolf, "Generic Attention-model Explainability for
  Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV 2021 (their
  ``Transformer-MM-Explainability`` ViT code, ``avg_heads`` + ``apply_self_attention_rules``):
  ``R = I``; for l = 1..L: ``Abar_l = mean_h clip(G_l * A_l, 0)``, ``R <- R + Abar_l R``;
  the map is ``v R`` over the patch columns. Every layer is used; no options apply.
* ``"grad_rollout"`` -- gradient-weighted rollout as jacobgil/vit-explain's
  ``grad_rollout.py`` intends: ``F_l = clip(fuse_h(A_l * G_l), 0)`` (fuse = ``options.head_fusion``,
  fused first, then negatives clipped, as there), the lowest ``options.discard_ratio`` of
  ``F_l`` zeroed (never [0, 0]), ``+ I`` when ``options.residual``, rows renormalised, and
  the rollout product ``v Abar_L ... Abar_{start_layer+1}`` (``options.start_layer``).
* ``"attention_gradcam"`` -- GradCAM on the last block's attention, the baseline of
  Chefer, Gur & Wolf, "Transformer Interpretability Beyond Attention Visualization",
  CVPR 2021 (``Baselines.generate_cam_attn`` in their ``baselines/ViT/ViT_explanation_generator.py``):
  per head h, the weight ``w_h`` is the mean of the gradient over the class row's patch
  columns, ``w_h = mean_j G_L[h, 0, j]``; the map is ``clip(mean_h w_h A_L[h, 0, j], 0)``.
* ``"last_layer"`` -- the raw last-layer class-token attention, mean over heads
  (their ``attn_last_layer`` baseline). It does not depend on the class.

Prefix tokens (class token, registers) are never map columns. Each map is divided by its
maximum (an all-zero map stays zero), so maps are in [0, 1]; Chefer et al.'s code min-max
normalises instead, which differs only by an offset where the minimum is above 0 and
ranks pixels identically (the perturbation test in :mod:`vitjax.evaluation.perturbation` min-max
normalises the upsampled map itself).
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp

from vitjax.attribution import methods
from vitjax.attribution.lens import target_classes
from vitjax.attribution.options import RolloutOptions, as_options
from vitjax.attribution.rollout import reader, row_to_map
from vitjax.model.forward import (
    attention_finite,
    check_images,
    collect_attention,
    finite_rows,
    output_kind,
    raise_non_finite,
)
from vitjax.model.vit import ViT

__all__ = ["class_maps", "class_gradients", "maps_from_gradients", "map_from_gradients"]


# --- forward + vjp, one image ---------------------------------------------------------------


def _per_layer(tree: Mapping[str, Any], num_layers: int) -> jnp.ndarray:
    """``[L, H, N, N]`` of the single image in ``tree`` (sown or perturbation-shaped), paired by layer name."""
    return collect_attention(tree, num_layers)[0]


def _one_image_gradients(model: ViT, params, image, target):
    """One image ``[H, W, 3]`` -> ``(logits [C], attention [L, H, N, N], grads [L, H, N, N], class)``.

    ``target < 0`` means the image's predicted class.
    """
    x = image[None]
    shapes = jax.eval_shape(lambda p, y: model.apply({"params": p}, y, mutable=["perturbations"])[1],
                            params, x)["perturbations"]
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def fwd(perturbations):
        logits, state = model.apply({"params": params, "perturbations": perturbations}, x,
                                    mutable=["intermediates"])
        return logits[0], state["intermediates"]

    logits, pullback, inter = jax.vjp(fwd, zeros, has_aux=True)
    cls = jnp.where(target < 0, jnp.argmax(logits), target).astype(jnp.int32)
    (grads,) = pullback(jax.nn.one_hot(cls, logits.shape[-1], dtype=logits.dtype))
    num_layers = model.config.num_layers
    return logits, _per_layer(inter, num_layers), _per_layer(grads, num_layers), cls


def map_from_gradients(att, grad, *, method: str, grid: Tuple[int, int], options: RolloutOptions) -> jnp.ndarray:
    """One image's class map from its attention and gradient, both ``[L, H, N, N]`` -> ``[gh, gw]``.

    The pure core of :func:`class_maps` (see the module docstring for each method);
    ``options`` must carry the model's token layout (``RolloutOptions.for_config``).
    """
    att = att.astype(jnp.float32)
    grad = grad.astype(jnp.float32)
    entry = methods.get(method, "class")
    row = entry.row(att, grad, reader(att.shape[-1], options), options)
    return row_to_map(row[options.num_prefix_tokens:], grid)


# --- public entry points ------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("model",))
def _class_gradients(model: ViT, params, images, targets):
    """``((logits, attention, gradients, classes), finite)``; ``finite``: ``{kind: [B] bool}``, reduced here."""
    logits, att, grad, cls = jax.vmap(lambda x, t: _one_image_gradients(model, params, x, t))(images, targets)
    finite = {output_kind(model): finite_rows(logits), "attention": attention_finite(att),
              "gradients": finite_rows(grad)}
    return (logits, att, grad, cls), finite


@functools.partial(jax.jit, static_argnames=("grid", "method", "options", "inputs"))
def _maps(att, grad, *, grid, method: str, options: RolloutOptions, inputs: bool = False):
    """``(maps [B, gh, gw], {kind: [B] bool})``: the maps' finite flags, and with ``inputs`` those of
    ``att`` and ``grad`` (a NaN row can come out as an all-zero map: the division by the max skips it)."""
    fn = functools.partial(map_from_gradients, method=method, grid=grid, options=options)
    maps = jax.vmap(fn)(att, grad)
    finite = {"attention": attention_finite(att), "gradients": finite_rows(grad)} if inputs else {}
    return maps, {**finite, "maps": finite_rows(maps)}


def _check_model(model: ViT) -> int:
    c = model.config
    if not c.num_classes:
        raise ValueError("class_maps needs a classification head, but model.config.num_classes is None "
                         "(a headless checkpoint: its outputs are features, not class scores)")
    return int(c.num_classes)


def class_maps(
    model: ViT,
    params,
    images,
    *,
    method: str,
    target=None,
    options: Optional[RolloutOptions] = None,
    valid=None,
) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """Class-specific maps: gradient-weighted attention for one class per image.

    Args:
      model, params: from :func:`vitjax.load_checkpoint`; the model needs a head.
      images: ``[B, H, W, 3]`` float, normalised as the model expects
        (:func:`vitjax.preprocess`), at ``model.config.image_size``.
      method: a class method of :mod:`vitjax.attribution.methods`: ``"generic"`` (Chefer, Gur & Wolf, ICCV 2021),
        ``"grad_rollout"`` (attention x gradient rollout, jacobgil/vit-explain),
        ``"attention_gradcam"`` (GradCAM on the last attention; Chefer et al.,
        CVPR 2021 baseline), ``"last_layer"`` (raw last-layer class-token
        attention, mean over heads; ignores ``target``). Formulas in the module
        docstring.
      target: the class to explain: ``None`` (each image's predicted class),
        an int (the same class for every image) or an int array ``[B]``.
      options: :class:`vitjax.RolloutOptions` (default ``RolloutOptions()``); ``head_fusion``,
        ``discard_ratio``, ``start_layer`` and ``residual`` are used by
        ``"grad_rollout"`` only; the token layout (prefix tokens, class token)
        is always taken from ``model.config``.
      valid: ``[B]`` bool, the rows that hold an image (None: all); only they
        are checked for non-finite values.

    Returns:
      ``(maps [B, gh, gw], logits [B, C])``, float32; each map divided by its
      maximum (in [0, 1]; an all-zero map stays zero). Two jitted steps, each
      written for one image and batched with ``jax.vmap``: the forward pass
      and its vjp (compiled once per model and batch shape, shared by all
      methods; holds ``[B, L, H, N, N]`` attention and gradient), then the
      method (compiled per method and options). Each step also reduces its
      outputs (logits, attention, gradients; maps) to finite flags per image.

    Raises:
      ValueError: unknown method, headless model, bad images, bad target
        (wrong dtype or shape, class out of range), bad options.
      NonFiniteError (a ValueError): logits, attention, gradients or map of a
        valid row not finite (NaN/inf); ``.rows``, ``.what``, and ``.result`` =
        ``(maps, logits)``.
    """
    methods.get(method, "class")
    num_classes = _check_model(model)
    check_images(model, images)
    options = as_options(options)
    if not isinstance(options, RolloutOptions):
        raise ValueError(f"options must be a vitjax.RolloutOptions, got {type(options).__name__}")
    options = options.for_config(model.config)
    images = jnp.asarray(images)
    (logits, att, grad, _), finite = _class_gradients(model, params, images,
                                                      target_classes(target, images.shape[0], num_classes))
    maps, maps_finite = _maps(att, grad, grid=model.config.grid, method=method, options=options)
    raise_non_finite({**finite, **maps_finite}, valid=valid, result=(maps, logits))
    return maps, logits


def class_gradients(model: ViT, params, images, target=None, *, valid=None):
    """The raw material of :func:`class_maps`, for one class per image.

    Returns ``(logits [B, C], attention [B, L, H, N, N], gradients [B, L, H, N, N],
    classes [B] int32)``: ``gradients[b, l] = d logits[b, classes[b]] / d attention[b, l]``,
    float32; ``classes`` are the explained classes (``target``, or the predicted
    ones where ``target`` is None). ``valid`` as in :func:`class_maps`.

    Raises:
      ValueError: headless model, bad images or target (as :func:`class_maps`).
      NonFiniteError: logits, attention or gradients of a valid row not finite;
        ``.result`` is the 4-tuple above.
    """
    num_classes = _check_model(model)
    check_images(model, images)
    images = jnp.asarray(images)
    out, finite = _class_gradients(model, params, images, target_classes(target, images.shape[0], num_classes))
    raise_non_finite(finite, valid=valid, result=out)
    return out


def maps_from_gradients(model: ViT, attention, gradients, *, method: str, options: Optional[RolloutOptions] = None,
                        valid=None) -> jnp.ndarray:
    """Class maps of several methods from one :func:`class_gradients` pass: ``[B, gh, gw]``.

    ``attention`` and ``gradients`` are ``[B, L, H, N, N]`` from :func:`class_gradients`;
    the result equals ``class_maps(..., method=method, options=options)[0]`` for the
    same targets, without repeating the forward pass and its vjp. ``valid`` as in :func:`class_maps`.

    Raises:
      ValueError: unknown method, options not a RolloutOptions.
      NonFiniteError: the attention, gradients or map of a valid row not finite (``.result``: the maps).
    """
    methods.get(method, "class")
    options = as_options(options)
    if not isinstance(options, RolloutOptions):
        raise ValueError(f"options must be a vitjax.RolloutOptions, got {type(options).__name__}")
    maps, finite = _maps(attention, gradients, grid=model.config.grid, method=method,
                         options=options.for_config(model.config), inputs=True)
    raise_non_finite(finite, valid=valid, result=maps)
    return maps
