"""Reading Google's original ViT ``.npz`` checkpoints.

Small named steps, after Google's ``vit_jax/checkpoint.py`` and big_vision's
``load``/``merge_params``: :func:`load_npz` (safe read, no pickle) ->
:func:`rename_legacy` (Linen-era names and old GroupNorm shapes) ->
:func:`infer_config` (architecture from key names and shapes alone) ->
:func:`resample_posemb` (new resolution, as the official loader does) ->
:func:`check_tree` (strict: every missing, extra or mis-shaped key) ->
:func:`load_checkpoint` (all of it).
"""

from __future__ import annotations

import os
import re
import zipfile
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from vitjax.config import ViTConfig, stem_halvings
from vitjax.model import ViT

__all__ = [
    "CheckpointError",
    "load_npz",
    "rename_legacy",
    "infer_config",
    "resample_posemb",
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


class CheckpointError(ValueError):
    """A file is not a usable Google ViT checkpoint; the message is one line naming it."""


def _fmt(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def load_npz(path: PathLike) -> Flat:
    """Reads every array of an ``.npz`` archive, never unpickling anything.

    Args:
      path: the file.

    Returns:
      ``{"Transformer/encoderblock_0/LayerNorm_0/scale": ndarray, ...}``, the
      flat ``/``-joined keys of the file; arrays as stored (numeric dtypes).

    Raises:
      CheckpointError: missing, empty, truncated, not a zip/npz archive, a
        PyTorch file, or any member that is not a numeric ``.npy`` array
        (object arrays would need pickle and are refused).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory, not an .npz checkpoint")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: the file is empty")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not an .npz archive (no zip directory found; truncated or another format)"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise CheckpointError(f"{path}: unreadable zip archive ({e})") from None
    if any(n.endswith(".pkl") for n in names):
        raise CheckpointError(
            f"{path}: looks like a PyTorch checkpoint (contains a pickle); "
            "vitjax reads Google's .npz ViT checkpoints"
        )
    not_npy = [n for n in names if not n.endswith(".npy")]
    if not_npy:
        raise CheckpointError(f"{path}: member {not_npy[0]!r} is not a .npy array; not an .npz checkpoint")
    out: Flat = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                arr = npz[key]
                if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiub":
                    kind = getattr(arr, "dtype", type(arr).__name__)
                    raise CheckpointError(f"{path}: key {key!r} holds {kind} data, not numbers")
                out[key] = arr
    except CheckpointError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise CheckpointError(
                f"{path}: key {key!r} is an object array, which needs pickle; refused"
            ) from None
        raise CheckpointError(f"{path}: unreadable array {key!r} ({e})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt archive ({type(e).__name__}: {e})") from None
    if not out:
        raise CheckpointError(f"{path}: the archive holds no arrays")
    return out


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
    return ViTConfig(
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


def resample_posemb(posemb: np.ndarray, grid_new: Tuple[int, int], num_prefix_tokens: int = 1) -> np.ndarray:
    """Resizes the grid part of a position embedding, as Google's loader does.

    The prefix (class-token) slots are kept apart; the ``g x g`` grid part is
    reshaped to ``[g, g, D]`` and resized with ``scipy.ndimage.zoom(order=1)``
    (linear) to ``grid_new`` (which may be non-square). Follows
    ``vit_jax/checkpoint.py:load_pretrained``.

    Args:
      posemb: ``[1, prefix + g*g, D]`` float.
      grid_new: target grid ``(gh, gw)`` in tokens.
      num_prefix_tokens: 1 with a class token, 0 without.

    Returns:
      ``[1, prefix + gh*gw, D]`` float32 (the input unchanged when the grid matches).
    """
    from scipy import ndimage

    tok, grid = posemb[:, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
    g = int(round(np.sqrt(grid.shape[0])))
    if g * g != grid.shape[0]:
        raise ValueError(f"position embedding grid of {grid.shape[0]} tokens is not square")
    gh, gw = grid_new
    if (gh, gw) == (g, g):
        return posemb
    grid = grid.reshape(g, g, -1)
    grid = ndimage.zoom(grid, (gh / g, gw / g, 1), order=1)
    if grid.shape[:2] != (gh, gw):  # zoom rounds the output size; never silently off by one
        raise ValueError(f"resampling {g}x{g} to {gh}x{gw} gave {grid.shape[:2]}")
    return np.concatenate([tok, grid.reshape(1, gh * gw, -1)], axis=1)


def flatten(tree: Mapping, prefix: str = "") -> Dict[str, object]:
    """Nested dicts -> ``{"a/b/c": leaf}``."""
    out: Dict[str, object] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def unflatten(flat: Mapping[str, object]) -> Dict[str, object]:
    """``{"a/b/c": leaf}`` -> nested dicts."""
    tree: Dict[str, object] = {}
    for key, v in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


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


def load_checkpoint(
    path: PathLike,
    *,
    image_size: Optional[Union[int, Tuple[int, int]]] = None,
    gelu_approximate: bool = True,
    dtype=jnp.float32,
):
    """Loads a Google ViT ``.npz`` checkpoint: architecture inferred from the file.

    Args:
      path: a ``.npz`` file from Google's ViT releases (``ViT-B_16.npz``,
        ``ViT-B_16-224.npz``, ``R50+ViT-B_16.npz``, i21k, AugReg, ...) or one
        written in the same layout.
      image_size: input size in pixels, an int or ``(height, width)``; when it
        differs from the checkpoint's (read from the position embedding), the
        position embedding is resampled linearly (:func:`resample_posemb`).
      gelu_approximate: True (default) for the tanh GELU the checkpoints were
        trained with; False for the exact GELU (timm's default).
      dtype: compute dtype of the model (parameters stay float32).

    Returns:
      ``(model, params)``: a :class:`vitjax.ViT` whose ``config`` describes the
      file, and the float32 parameter tree for ``model.apply({"params": params}, x)``.

    Raises:
      CheckpointError: unreadable file, unknown layout, or a missing, extra or
        mis-shaped array (all of them named, with both shapes).
    """
    where = os.fspath(path)
    flat = rename_legacy(load_npz(path))
    config = infer_config(flat, where=where).replace(gelu_approximate=gelu_approximate)
    if image_size is not None:
        config = config.replace(image_size=image_size)
        if POSEMB in flat:
            try:
                flat[POSEMB] = resample_posemb(flat[POSEMB], config.grid, config.num_prefix_tokens)
            except ValueError as e:
                raise CheckpointError(f"{where}: {e}") from None
    model = ViT(config, dtype=dtype)
    check_tree(expected_shapes(model), flat, where=where)
    params = unflatten({k: jnp.asarray(v, dtype=jnp.float32) for k, v in flat.items()})
    return model, params
