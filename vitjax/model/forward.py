"""Jitted forward passes that return logits with every layer's attention.

Finite weights can still give NaN or inf (a negative ``layer_norm_eps``, huge weights, an input
far outside the preprocessed range). Every compiled program of vitjax therefore also returns one
finite flag per image and kind of output (:func:`finite_rows`, :func:`attention_finite`: ``[B]``
bool, reduced where the outputs are made), and the host turns a non-finite valid row into
:class:`vitjax.errors.NonFiniteError` (:func:`raise_non_finite`): never a number in a table.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from vitjax.errors import NonFiniteError
from vitjax.model.vit import ATTENTION, ViT

__all__ = ["forward", "predict", "collect_attention", "check_images", "apply_with_attention", "finite_rows",
           "attention_finite", "output_kind", "raise_non_finite", "non_finite_reason", "NON_FINITE"]

#: How every reason recorded for a non-finite output begins (:func:`non_finite_reason`).
NON_FINITE = "the model's output is not finite (NaN/inf)"


# --- non-finite outputs --------------------------------------------------------------------------------------------


def finite_rows(x) -> jnp.ndarray:
    """``[B, ...]`` -> ``[B]`` bool: True where every value of the row is finite (no NaN, no inf).

    Traceable: meant to run inside the jitted program beside the outputs it checks, so
    only ``[B]`` flags leave it (one reduction of ``x``, no copy of it).
    """
    x = jnp.asarray(x)
    return jnp.all(jnp.isfinite(x).reshape(x.shape[0], -1), axis=1)


def attention_finite(attention) -> jnp.ndarray:
    """``attention [B, ..., N, N]`` softmax probabilities -> ``[B]`` bool: every row finite.

    A softmax row is finite entirely or not at all (a NaN or inf score makes every entry
    of its row NaN), so the first entry of each row decides: 1/N of the tensor is read,
    not a second pass over ``[B, L, H, N, N]``. Traceable. For arrays that are not softmax
    rows (gradients) use :func:`finite_rows`.
    """
    return finite_rows(jnp.asarray(attention)[..., 0])


def output_kind(model: ViT) -> str:
    """What the model outputs: ``"logits"`` (a classification head) or ``"features"`` (headless)."""
    return "logits" if model.config.num_classes else "features"


def _rows_text(rows: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(str(r) for r in rows[:limit])
    return shown + (f", ... ({len(rows)} in all)" if len(rows) > limit else "")


def raise_non_finite(finite: Mapping[str, Any], *, valid=None, result=None) -> None:
    """Raises :class:`vitjax.errors.NonFiniteError` when a valid row of a batch has a non-finite output.

    Args:
      finite: ``{kind: [B] bool}`` from a compiled program (:func:`finite_rows` of
        each output), kind e.g. "logits", "attention", "maps".
      valid: ``[B]`` bool, the rows that hold an image (None: every row); padded
        rows are never reported, whatever they hold.
      result: attached to the error (``.result``), so a caller can still use the finite rows.

    Inside a traced function (``jax.jit``) nothing is concrete and nothing is checked:
    the jitted callers return the flags instead.

    Raises:
      NonFiniteError: naming the rows (0-based) and what was not finite in them.
      ValueError: ``valid`` not of shape ``[B]``.
    """
    if not finite or any(isinstance(v, jax.core.Tracer) for v in finite.values()):
        return
    flags = {k: np.asarray(v, bool).reshape(-1) for k, v in finite.items()}
    b = next(iter(flags.values())).shape[0]
    ok = np.ones((b,), bool) if valid is None else np.asarray(valid, bool)
    if ok.shape != (b,):
        raise ValueError(f"valid must be a bool array of shape ({b},), got shape {ok.shape}")
    what: Dict[int, list] = {}
    for kind, f in flags.items():
        for r in np.nonzero(ok & ~f)[0]:
            what.setdefault(int(r), []).append(kind)
    if what:
        rows = sorted(what)
        what = {r: sorted(k, key=_kind_order) for r, k in what.items()}
        kinds = sorted({k for r in rows for k in what[r]}, key=_kind_order)
        raise NonFiniteError(
            f"{NON_FINITE} for image(s) {_rows_text(rows)} of this batch of {b} "
            f"(rows from 0; {', '.join(kinds)}): NaN/inf in those images, or a checkpoint whose weights or config "
            "(e.g. layer_norm_eps) give no usable numbers", what=what, result=result)


_KINDS = ("logits", "features", "attention", "gradients", "maps")


def _kind_order(kind: str):
    return (_KINDS.index(kind) if kind in _KINDS else len(_KINDS), kind)


def non_finite_reason(kinds: Sequence[str] = (), checkpoint: Optional[str] = None, *, images: Optional[int] = None
                      ) -> str:
    """The one line recorded for an image whose outputs are not finite, or for a run where all of them are.

    ``kinds``: what was not finite (:attr:`vitjax.errors.NonFiniteError.what`); ``checkpoint``: its
    name (None: not known); ``images``: None for one image, else the count of a run where every
    image failed so.
    """
    kinds = sorted(set(kinds), key=_kind_order)
    what = f" ({', '.join(kinds)})" if kinds else ""
    ckpt = f"; checkpoint {checkpoint}" if checkpoint else ""
    if images is None:
        return f"{NON_FINITE} for this image{what}{ckpt}"
    every = "the one image" if images == 1 else f"any of the {images} images"
    return (f"{NON_FINITE} for {every}{what}{ckpt}: nothing was computed from it; "
            "check its weights and config (e.g. layer_norm_eps)")


def check_images(model: ViT, images) -> None:
    """Raises ValueError unless ``images`` is a floating ``[B, H, W, 3]`` array at the model's size.

    Integer, bool or complex images are refused: the model takes preprocessed floats
    (:func:`vitjax.preprocess`, values about -1..1); uint8 pixels 0..255 would run and mean nothing.
    """
    shape = tuple(getattr(images, "shape", ()))
    want = model.config.image_size
    if len(shape) != 4 or shape[-1] != 3:
        if not hasattr(images, "shape"):
            raise ValueError(f"images must be an array [B, H, W, 3], got {type(images).__name__}")
        raise ValueError(f"images must be [B, H, W, 3], got shape {shape}")
    dtype = getattr(images, "dtype", np.float32)
    if not jnp.issubdtype(dtype, jnp.floating):  # bfloat16 included
        raise ValueError(f"images must be floating point, preprocessed (vitjax.preprocess: values about -1..1), "
                         f"got dtype {dtype}")
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


@functools.partial(jax.jit, static_argnums=0)
def _forward(model: ViT, params, images):
    logits, attention = apply_with_attention(model, params, images)
    return logits, attention, {output_kind(model): finite_rows(logits), "attention": attention_finite(attention)}


def forward(model: ViT, params, images, *, valid=None) -> Tuple[jnp.ndarray, jnp.ndarray]:
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
      The compiled program also reduces both to one finite flag per image; only
      rows where ``valid`` (``[B]`` bool, None: all) is True are checked.

    Raises:
      ValueError: images of the wrong rank, channels or size.
      NonFiniteError: logits (features) or attention not finite (NaN/inf) for a
        valid row; ``.rows`` names them, ``.result`` holds ``(logits, attention)``.
    """
    check_images(model, images)
    logits, attention, finite = _forward(model, params, jnp.asarray(images))
    raise_non_finite(finite, valid=valid, result=(logits, attention))
    return logits, attention


@functools.partial(jax.jit, static_argnums=0)
def _predict(model: ViT, params, images):
    logits = model.apply({"params": params}, images)
    return logits, {output_kind(model): finite_rows(logits)}


def predict(model: ViT, params, images, *, valid=None) -> jnp.ndarray:
    """Logits ``[B, C]`` only (nothing sown); same arguments and errors as :func:`forward`.

    Raises:
      NonFiniteError: logits (features) not finite for a valid row (``.result``: the logits).
    """
    check_images(model, images)
    logits, finite = _predict(model, params, jnp.asarray(images))
    raise_non_finite(finite, valid=valid, result=logits)
    return logits
