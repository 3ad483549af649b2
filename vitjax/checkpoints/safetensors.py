"""Other checkpoint formats: timm and Hugging Face ViTs stored as ``.safetensors``.

:func:`read_safetensors` reads a file with the ``safetensors`` library (NumPy
framework; nothing is ever unpickled), detects the naming from the keys
(:func:`vitjax.checkpoints.convert.detect`), converts the tensors to vitjax's
canonical Google-layout flat tree (:func:`vitjax.checkpoints.convert.to_canonical`)
and returns the :class:`vitjax.ViTConfig` field values the file's family
implies. Position-embedding resamplers equal to PyTorch's live in
:mod:`vitjax.checkpoints.posemb`.

Family semantics (sources: timm ``vision_transformer.py`` and its
``pretrained_cfg``; transformers ``ViTConfig``, ``Dinov2Config``,
``ViTImageProcessor``, ``BitImageProcessor``):

================================  ====================  =============  ==========  =====================
family                            ``posemb_resize``     LayerNorm eps  GELU        pixel mean / std
================================  ====================  =============  ==========  =====================
timm (any ``VisionTransformer``)  ``"timm"``            1e-6           exact       ImageNet with LayerScale
                                                                                   (DINOv2, DeiT-III), else
                                                                                   (0.5, 0.5) (timm's ViT default)
HF ``ViTModel`` / ``...ForImage``  ``"bicubic"``         1e-12          exact       (0.5, 0.5)
HF ``Dinov2Model``                ``"bicubic"``         1e-6           exact       ImageNet
HF ``Dinov2WithRegistersModel``   ``"timm"`` (it calls  1e-6           exact       ImageNet
                                  the same antialiased
                                  bicubic as timm)
================================  ====================  =============  ==========  =====================

Where the file sits beside the JSON its library writes with it, that JSON
wins: Hugging Face ``config.json`` (``num_attention_heads``,
``layer_norm_eps``, ``hidden_act``; used only when its ``hidden_size`` and
``num_hidden_layers`` match the weights) and ``preprocessor_config.json``
(``image_mean``/``image_std``, with ``rescale_factor`` and ``do_normalize``); timm's
``config.json`` from ``save_for_hf`` / the Hub (``pretrained_cfg.mean/std``,
``model_args.num_heads``, ``global_pool``; used when its ``num_features`` matches). Both
also give the trained size (``image_size``; ``model_args.img_size``), hence the shape of a
position grid that is not square. A JSON file of another model is ignored; an unreadable
one, or a field of the wrong type, range or finiteness (``true`` or ``2.9`` heads, a NaN or
negative ``layer_norm_eps``, a list for ``hidden_act``), is an error naming the file and field.

**Recognising the file.** A ``.safetensors`` is recognised by its own structure
(:func:`parse_header`: an 8-byte little-endian header length that fits the file, a JSON
header whose entries tile the data), never by its first bytes alone: a header length whose
low byte is 0x80 or whose low bytes spell ``PK`` is common. Only a file that is not a valid
safetensors file is then named for what it is (a PyTorch pickle, an ``.npz``, a malformed
header): :func:`not_safetensors_message`.

**Head count.** timm and Hugging Face files do not store it (fused shapes are
``(3D, D)`` whatever the heads). In order: the ``num_heads`` argument, the
file's ``vitjax.num_heads`` metadata, the sidecar JSON, the widths whose
published models break the 64-wide-head rule (1280 ViT-H, 1408 ViT-g,
1664 ViT-G, 1152 SO400M: 16 heads), then ``D / 64`` (every DeiT, DINOv2 and
Google ViT Ti/S/B/L). A wrong count changes the attention maps and the
outputs, so pass ``num_heads`` for anything else.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional, Tuple

import ml_dtypes
import numpy as np

from vitjax.checkpoints.convert import detect, to_canonical
from vitjax.errors import CheckpointError, VitjaxWarning, pickle_refusal, require_file
from vitjax.model.config import PIXEL_MEAN_RANGE, PIXEL_STD_RANGE

__all__ = [
    "read_safetensors",
    "load_safetensors",
    "load_sharded",
    "read_index",
    "is_index",
    "INDEX_SUFFIX",
    "parse_header",
    "not_safetensors_message",
    "Header",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)
_HEADS_BY_WIDTH = {1152: 16, 1280: 16, 1408: 16, 1664: 16}
_APPROX_GELU = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_python_tanh"}
_MAX_JSON = 4 << 20
# transformers' ``resample`` (PIL's filter numbers) -> ViTConfig.input_resize
_PIL_RESAMPLE = {2: "pil", 3: "bicubic"}
# timm's ``pretrained_cfg.interpolation`` -> ViTConfig.input_resize
_TIMM_INTERPOLATION = {"bilinear": "pil", "bicubic": "bicubic"}
#: The ``safetensors`` library's limit on the JSON header (bytes).
MAX_HEADER = 100_000_000
#: LayerNorm epsilons accepted from a ``config.json``: published ViTs use 1e-12 to 1e-5; above 1e-2 the
#: epsilon would dominate the variance of the tokens it normalises.
LAYER_NORM_EPS_RANGE = (0.0, 1e-2)
Flat = Dict[str, np.ndarray]

# safetensors dtype -> little-endian NumPy dtype it is read as. Floats (F*, BF16) are widened to float32,
# which holds every value of the narrower formats exactly (NumPy has no bfloat16 or float8: ml_dtypes, a JAX
# dependency, supplies them; F8_E4M3 is PyTorch's float8_e4m3fn, F8_E5M2 its float8_e5m2).
_DTYPES = {
    "BOOL": np.dtype(np.bool_), "U8": np.dtype("u1"), "I8": np.dtype("i1"), "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"), "U32": np.dtype("<u4"), "I32": np.dtype("<i4"), "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"), "F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"),
    "BF16": np.dtype(ml_dtypes.bfloat16), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}


class Header(NamedTuple):
    """The parsed header of a structurally valid ``.safetensors`` file.

    ``tensors``: ``{key: (dtype name, shape, start, end)}`` with byte offsets into the data
    section; ``metadata``: the ``__metadata__`` strings; ``data_start``: where the data section
    begins (8 + header length), in bytes from the start of the file.
    """

    tensors: Dict[str, Tuple[str, Tuple[int, ...], int, int]]
    metadata: Dict[str, str]
    data_start: int


def _nat(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _why(e: BaseException) -> str:
    """The reason of a read error, one line, without the file name the caller already gives (``OSError``)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return " ".join(str(e).split()) or type(e).__name__


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k!r} appears twice")
        out[k] = v
    return out


def parse_header(path) -> Tuple[Optional[Header], str, bool]:
    """Checks that a file is a ``.safetensors`` file by its own structure, reading only its header.

    The format (huggingface/safetensors): an 8-byte little-endian header length ``n`` that fits
    the file, ``n`` bytes of a UTF-8 JSON object whose entries are ``{"dtype": str, "shape": [int,
    ...], "data_offsets": [start, end]}`` (plus an optional ``"__metadata__"`` of strings), then
    the data, every byte of it owned by exactly one tensor, in order, as the library requires. A
    known dtype's ``end - start`` must equal its element count times its width.

    Returns:
      ``(header, "", True)`` for a valid file; else ``(None, reason, looks)``: ``reason`` one
      clause saying what is wrong, ``looks`` True when the first 8 bytes give a length that
      fits and the header starts with ``{`` (a damaged safetensors file, not another format).
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            first = f.read(8)
            if len(first) < 8:
                return None, f"{size} bytes are too few for the 8-byte header length", False
            n = int.from_bytes(first, "little")
            if n < 2 or n > size - 8:
                return None, (f"the first 8 bytes give a header length of {n} bytes, which does not fit the "
                              f"file of {size} bytes"), False
            if n > MAX_HEADER:
                return None, f"a header of {n} bytes (the safetensors limit is {MAX_HEADER})", False
            text = f.read(n)
    except OSError as e:
        return None, f"cannot read it ({e.strerror or e})", False
    looks = text[:1] == b"{"
    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicates,
                            parse_constant=lambda c: float(c))
    except UnicodeDecodeError:
        return None, "the header is not UTF-8 text", looks
    except ValueError as e:
        return None, f"the header is not valid JSON ({str(e).splitlines()[0]})", looks
    if not isinstance(header, dict):
        return None, "the header is not a JSON object", looks
    data_len = size - 8 - n
    meta = header.pop("__metadata__", None)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        return None, "__metadata__ is not an object of strings", True
    tensors = {}
    for key, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            return None, f"entry {key!r} is not {{dtype, shape, data_offsets}}", True
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str):
            return None, f"entry {key!r} has dtype {dtype!r}, not a name", True
        if not isinstance(shape, list) or not all(_nat(d) for d in shape):
            return None, f"entry {key!r} has shape {shape!r}, not a list of sizes", True
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_nat(o) for o in offsets)
                or offsets[0] > offsets[1]):
            return None, f"entry {key!r} has data_offsets {offsets!r}, not [start, end]", True
        if offsets[1] > data_len:
            return None, (f"entry {key!r} ends at byte {offsets[1]} of the data, which has {data_len} bytes "
                          "(truncated?)"), True
        if dtype in _DTYPES and math.prod(shape) * _DTYPES[dtype].itemsize != offsets[1] - offsets[0]:
            return None, (f"entry {key!r}: {dtype} of shape {tuple(shape)} needs "
                          f"{math.prod(shape) * _DTYPES[dtype].itemsize} bytes, its offsets hold "
                          f"{offsets[1] - offsets[0]}"), True
        tensors[key] = (dtype, tuple(shape), offsets[0], offsets[1])
    end = 0
    for key, (_, _, start, stop) in sorted(tensors.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if start != end:
            return None, (f"entry {key!r} starts at byte {start} of the data, expected {end} (tensors must "
                          "cover the data in order, without gaps or overlaps)"), True
        end = stop
    if end != data_len:
        return None, f"the tensors cover {end} bytes of data, the file holds {data_len}", True
    return Header(tensors, dict(meta), 8 + n), "", True


def _pickle_protocol(head: bytes) -> bool:
    """True for the opening of a pickle (``PROTO`` opcode 0x80, protocol 2-5): torch.save's legacy format."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def not_safetensors_message(path, reason: str, looks: bool) -> str:
    """The one true line for a file that is not a valid ``.safetensors``, after :func:`parse_header` said so.

    In order: a PyTorch pickle (a zip holding ``data.pkl``, torch.save's format, or a bare pickle)
    gets :func:`vitjax.errors.pickle_refusal`; an ``.npz`` (a zip of ``.npy`` members) is named as
    such; another zip or a ``.npy`` file likewise; a header that starts like safetensors but is
    damaged is "a malformed safetensors header" with ``reason``; anything else is "not a
    .safetensors file" with ``reason``.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
        names = None
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        head, names = b"", None
    if names is not None:
        if any(n.endswith(".pkl") for n in names):
            return pickle_refusal(path)
        if names and all(n.endswith(".npy") for n in names):
            return (f"{path}: an .npz archive ({len(names)} arrays), not a .safetensors file; "
                    "give it its own .npz name")
        shown = ", ".join(repr(n) for n in names[:3]) + (", ..." if len(names) > 3 else "")
        return f"{path}: a zip archive ({shown or 'empty'}), not a .safetensors file"
    if _pickle_protocol(head):
        return pickle_refusal(path)
    if head[:6] == b"\x93NUMPY":
        return f"{path}: a NumPy .npy array, not a .safetensors file"
    if looks:
        return f"{path}: a malformed safetensors header: {reason}"
    return f"{path}: not a .safetensors file: {reason}"


def load_safetensors(path) -> Tuple[Flat, Dict[str, str]]:
    """Every tensor of a ``.safetensors`` file as NumPy, and the file's string metadata.

    The file is recognised by its own structure (:func:`parse_header`), whatever its first bytes
    happen to be; each tensor is then read from its offsets. Floating tensors (F8_E4M3, F8_E5M2,
    F16, BF16, F32, F64) come back as float32 (every narrower value is exact in float32; F64
    values beyond float32's range become inf, which the loader refuses as non-finite); integer
    and bool tensors as stored. Nothing is unpickled.

    Returns:
      ``({key: ndarray}, {metadata key: str})``.

    Raises:
      CheckpointError: missing, empty or a directory; a PyTorch pickle (the message says how to
        convert it); an ``.npz`` or other file under this name; a malformed header (what is
        wrong is said); a dtype vitjax does not read (named); no tensors.
    """
    path = require_file(path, "a .safetensors file")
    header, reason, looks = parse_header(path)
    if header is None:
        raise CheckpointError(not_safetensors_message(path, reason, looks))
    for key, (dtype, _, _, _) in header.tensors.items():
        if dtype not in _DTYPES:
            raise CheckpointError(f"{path}: tensor {key!r} has dtype {dtype}, which vitjax does not read "
                                  f"(it reads {', '.join(_DTYPES)})")
    if not header.tensors:
        raise CheckpointError(f"{path}: the file holds no tensors")
    out: Flat = {}
    try:
        with open(path, "rb") as f:
            for key, (dtype, shape, start, end) in sorted(header.tensors.items(), key=lambda kv: kv[1][2]):
                f.seek(header.data_start + start)
                buf = f.read(end - start)
                if len(buf) != end - start:
                    raise CheckpointError(f"{path}: tensor {key!r} is cut short (the file changed while read)")
                arr = np.frombuffer(buf, dtype=_DTYPES[dtype]).reshape(shape)
                out[key] = arr.astype(np.float32) if dtype.startswith(("F", "BF")) else arr.copy()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read it ({e.strerror or e})") from None
    return out, dict(header.metadata)


# --- sharded checkpoints: model.safetensors.index.json and its shards -------------------------------------------------

#: How the index of a sharded ``.safetensors`` checkpoint is named (transformers' ``save_pretrained``,
#: ``model.safetensors.index.json``; any ``<stem>.safetensors.index.json`` is read the same way).
INDEX_SUFFIX = ".safetensors.index.json"


def is_index(path) -> bool:
    """True when ``path`` is named like the index of a sharded ``.safetensors`` checkpoint."""
    return os.fspath(path).lower().endswith(INDEX_SUFFIX)


def read_index(path) -> Dict[str, str]:
    """The ``weight_map`` of a sharded checkpoint's index, checked: ``{tensor name: shard file name}``.

    The index is transformers' ``model.safetensors.index.json``: a JSON object with
    ``"weight_map"`` (an object mapping every tensor name to the file holding it) and an
    optional ``"metadata"`` object (``total_size``: bytes, an integer >= 0). A shard is a plain
    file name in the index's folder ending in ``.safetensors`` (no folder part, not hidden), so
    an index never makes vitjax read a file elsewhere.

    Raises:
      CheckpointError: a missing, empty, unreadable or oversized file, or one that does not
        match this schema (one line naming the file and the field or shard at fault).
    """
    where = require_file(path, "a sharded checkpoint's index")
    size = os.path.getsize(where)
    if size > _MAX_JSON:
        raise CheckpointError(f"{where}: {size} bytes, too large for a checkpoint index (limit {_MAX_JSON})")
    try:
        with open(where, encoding="utf-8") as f:
            data = json.loads(f.read(), object_pairs_hook=_no_duplicates)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{where}: not readable as JSON ({_why(e)})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: holds a JSON {type(data).__name__}, not an index object")
    wm = data.get("weight_map")
    if not isinstance(wm, dict) or not wm:
        raise CheckpointError(f"{where}: field 'weight_map' must be a non-empty object of tensor name -> shard "
                              f"file, got {_show(wm)}")
    meta = data.get("metadata", {})
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where}: field 'metadata' must be an object, got {_show(meta)}")
    total = meta.get("total_size", 0)
    if not _nat(total):
        raise CheckpointError(f"{where}: field 'metadata.total_size' must be an integer >= 0, got {_show(total)}")
    for key, shard in wm.items():
        if not isinstance(shard, str) or not shard.lower().endswith(".safetensors") or shard.startswith(".") \
                or "/" in shard or "\\" in shard or shard != shard.strip():
            raise CheckpointError(f"{where}: field 'weight_map' maps {key!r} to {_show(shard)}, not a .safetensors "
                                  "file name in the index's folder")
    return dict(wm)


def load_sharded(path) -> Tuple[Flat, Dict[str, str]]:
    """Every tensor of a sharded ``.safetensors`` checkpoint, merged, and the shards' metadata.

    Reads the index (:func:`read_index`), then each shard named there (from the index's folder,
    with :func:`load_safetensors`: floats as float32, nothing unpickled). Each shard must hold
    exactly the tensors the index gives it, and the shards' ``vitjax.*`` metadata must agree.

    Returns:
      ``({key: ndarray}, {metadata key: str})`` as :func:`load_safetensors` returns for one file.

    Raises:
      CheckpointError: a bad index (see :func:`read_index`); a missing or unreadable shard, or a
        shard whose tensors differ from the index's list (the shard and the first keys named); shards
        whose ``vitjax.*`` metadata disagree.
    """
    where = os.fspath(path)
    wm = read_index(where)
    folder = Path(where).parent
    out: Flat = {}
    meta: Dict[str, str] = {}
    for shard in sorted(set(wm.values())):
        tensors, shard_meta = load_safetensors(folder / shard)
        listed = {k for k, v in wm.items() if v == shard}
        if set(tensors) != listed:
            missing, extra = sorted(listed - set(tensors)), sorted(set(tensors) - listed)
            parts = ([f"lacks {len(missing)} tensor(s) the index puts there ({', '.join(missing[:3])}"
                      f"{', ...' if len(missing) > 3 else ''})"] if missing else []) + \
                    ([f"holds {len(extra)} tensor(s) the index does not put there ({', '.join(extra[:3])}"
                      f"{', ...' if len(extra) > 3 else ''})"] if extra else [])
            raise CheckpointError(f"{folder / shard}: {'; '.join(parts)} (index {where})")
        for k, v in shard_meta.items():
            if k.startswith("vitjax.") and meta.get(k, v) != v:
                raise CheckpointError(f"{folder / shard}: metadata {k!r} is {_show(v)}, another shard of {where} "
                                      f"says {_show(meta[k])}")
            meta.setdefault(k, v)
        out.update(tensors)
    return out, meta


# --- the JSON files a library writes beside the weights -------------------------------------------------------------


def _read_json(path: Path) -> Optional[dict]:
    """The JSON object in ``path``; None when there is no such file. CheckpointError naming it when unreadable."""
    if not path.is_file():
        return None
    try:
        size = path.stat().st_size
        data = None if size > _MAX_JSON else json.loads(path.read_text(encoding="utf-8"),
                                                         object_pairs_hook=_no_duplicates)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not readable as JSON ({_why(e)}); vitjax reads it because "
                              "it sits beside the weights: fix or move it") from None
    if size > _MAX_JSON:  # the file is named once: a message of its own, not wrapped in another
        raise CheckpointError(f"{path}: {size} bytes, too large for a model's JSON file (limit {_MAX_JSON}); vitjax "
                              "reads it because it sits beside the weights: fix or move it")
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: holds a JSON {type(data).__name__}, not an object; vitjax reads it because "
                              "it sits beside the weights: fix or move it")
    return data


def _show(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


_ABSENT = object()


def _real(x) -> bool:
    """A finite JSON number (bools are not numbers)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class _Fields:
    """Typed, range-checked reads of one JSON file's fields; every error names the file and the field.

    Each reader returns None for an absent field and raises for a present one of the wrong type
    or range, ``null`` included.
    """

    def __init__(self, path: Path, data: dict):
        self.path, self.data = path, data

    def fail(self, name: str, what: str, value) -> CheckpointError:
        return CheckpointError(f"{self.path}: field {name!r} must be {what}, got {_show(value)}")

    def has(self, name: str) -> bool:
        return self.get(name) is not _ABSENT

    def get(self, name: str):
        """The value at a dotted name (``"model_args.num_heads"``), or ``_ABSENT``."""
        node: Any = self.data
        parts = name.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, dict):
                raise self.fail(".".join(parts[:i]), "an object", node)
            if part not in node:
                return _ABSENT
            node = node[part]
        return node

    def integer(self, name: str, lo: int = 1) -> Optional[int]:
        v = self.get(name)
        if v is _ABSENT:
            return None
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise self.fail(name, f"an integer >= {lo}", v)
        return v

    def number(self, name: str, lo: float, hi: float, *, open_lo: bool = False) -> Optional[float]:
        v = self.get(name)
        if v is _ABSENT:
            return None
        if not _real(v) or v > hi or v < lo or (open_lo and v == lo):
            raise self.fail(name, f"a finite number in {'(' if open_lo else '['}{lo:g}, {hi:g}]", v)
        return float(v)

    def string(self, name: str) -> Optional[str]:
        v = self.get(name)
        if v is _ABSENT:
            return None
        if not isinstance(v, str):
            raise self.fail(name, "a string", v)
        return v

    def boolean(self, name: str) -> Optional[bool]:
        v = self.get(name)
        if v is _ABSENT:
            return None
        if not isinstance(v, bool):
            raise self.fail(name, "true or false", v)
        return v

    def size_pair(self, name: str) -> Optional[Tuple[int, int]]:
        """An int or ``[height, width]`` of positive ints (``[C, H, W]`` for timm's ``input_size``)."""
        raw = v = self.get(name)
        if v is _ABSENT:
            return None
        if isinstance(v, list) and len(v) == 3 and name.endswith("input_size"):
            v = v[1:]
        if isinstance(v, int) and not isinstance(v, bool):
            v = [v, v]
        if not (isinstance(v, list) and len(v) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)):
            raise self.fail(name, "a positive integer or [height, width]", raw)
        return (v[0], v[1])

    def names(self, name: str) -> Optional[Tuple[str, ...]]:
        """Class names: a list of strings, or an object ``{"0": name, "1": name, ...}`` whose keys are exactly
        0..n-1 (transformers' ``id2label``, timm's ``label_names``). None when absent or when every name is
        transformers' placeholder ``LABEL_<i>`` (a config saved without names)."""
        v = self.get(name)
        if v is _ABSENT:
            return None
        if isinstance(v, dict):
            keys = sorted(v, key=lambda k: int(k) if isinstance(k, str) and k.isdigit() and k.isascii() else -1)
            if [str(i) for i in range(len(v))] != keys:
                raise self.fail(name, "an object with the keys 0..n-1 (class index -> name)", v)
            v = [v[str(i)] for i in range(len(v))]
        if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
            raise self.fail(name, "class names (a list of strings, or an object index -> name)", v)
        if all(x == f"LABEL_{i}" for i, x in enumerate(v)):
            return None
        return tuple(v)

    def triple(self, name: str) -> Optional[Tuple[float, float, float]]:
        """A number or 3 numbers (RGB), finite; bools are not numbers."""
        v = self.get(name)
        if v is _ABSENT:
            return None
        items = [v] * 3 if _real(v) else v
        if not (isinstance(items, list) and len(items) == 3 and all(_real(x) for x in items)):
            raise self.fail(name, "a number or 3 numbers (RGB)", v)
        return tuple(float(x) for x in items)

    def pixel_stats(self, mean_name: str, std_name: str, scale: float = 1.0) -> dict:
        """``pixel_mean``/``pixel_std`` in [0, 1] pixel units from two fields given in units of ``1 / scale``.

        Both absent: ``{}``. One absent, or a value outside ``PIXEL_MEAN_RANGE`` /
        ``PIXEL_STD_RANGE`` once divided by ``scale``: CheckpointError naming the field.
        """
        mean, std = self.triple(mean_name), self.triple(std_name)
        if mean is None and std is None:
            return {}
        if mean is None or std is None:
            raise CheckpointError(f"{self.path}: field {mean_name if mean is None else std_name!r} is missing "
                                  "(the other one of the pair is given)")
        out = {}
        for name, field, raw, (lo, hi) in (("pixel_mean", mean_name, mean, PIXEL_MEAN_RANGE),
                                           ("pixel_std", std_name, std, PIXEL_STD_RANGE)):
            v = tuple(x / scale for x in raw)
            if not all(lo <= x <= hi for x in v):
                unit = "" if scale == 1.0 else f" (divided by 255 * rescale_factor = {scale:g})"
                raise CheckpointError(f"{self.path}: field {field!r} {_show(self.get(field))}{unit} is outside "
                                      f"[{lo:g}, {hi:g}] in [0, 1] pixel units")
            out[name] = v
        return out


def _hf_processor(folder: Path) -> dict:
    """``pixel_mean``/``pixel_std`` in [0, 1] pixel units from Hugging Face's ``preprocessor_config.json``.

    The processor computes ``(x * rescale_factor - image_mean) / image_std`` on 0-255 pixels x
    (``do_rescale`` false: factor 1; ``do_normalize`` false: mean 0, std 1), which is vitjax's
    ``(x / 255 - mean) / std`` with ``mean = image_mean / (255 * rescale_factor)`` and
    ``std = image_std / (255 * rescale_factor)``.
    """
    pre_path = folder / "preprocessor_config.json"
    pre = _read_json(pre_path)
    if pre is None:
        return {}
    f = _Fields(pre_path, pre)
    normalize, rescale = f.boolean("do_normalize"), f.boolean("do_rescale")
    factor = f.number("rescale_factor", 0.0, 1.0, open_lo=True)
    scale = 255.0 * ((1.0 / 255.0 if factor is None else factor) if rescale is not False else 1.0)
    if abs(scale - 1.0) < 1e-6:
        scale = 1.0  # 1/255 written with fewer digits
    stats = f.pixel_stats("image_mean", "image_std", scale)
    if normalize is False:
        stats = {"pixel_mean": (0.0,) * 3, "pixel_std": (1.0 / scale,) * 3}
    elif not stats and scale != 1.0:
        raise CheckpointError(f"{pre_path}: rescale_factor/do_rescale change the scale of the pixels but no "
                              "image_mean/image_std are given; vitjax cannot tell the normalisation")
    if f.boolean("do_resize") is not False:
        resample = f.integer("resample", lo=0)
        if resample is not None:
            if resample in _PIL_RESAMPLE:
                stats["input_resize"] = _PIL_RESAMPLE[resample]
            else:
                warnings.warn(f"{pre_path}: field 'resample' is {resample}, a PIL filter vitjax does not compute "
                              "(it computes 2 = bilinear, 3 = bicubic); images are resized with Google's bilinear",
                              VitjaxWarning, stacklevel=2)
        # the input size: the crop when the processor crops (vitjax resizes the whole image to it), else the size
        crop = f.boolean("do_center_crop")
        for name in (("crop_size", "size") if crop else ("size",)):
            if f.has(name) and isinstance(f.get(name), dict) and {"height", "width"} <= set(f.get(name)):
                stats["input_size"] = (f.integer(name + ".height"), f.integer(name + ".width"))
                break
    return stats


def _sidecar(folder: Path, family: str, d: int, layers: int) -> dict:
    """Facts from the JSON its library writes beside the weights, when it describes these weights.

    Hugging Face ``config.json`` (when its ``hidden_size`` and ``num_hidden_layers`` match the
    weights): ``num_heads``, ``layer_norm_eps``, ``hidden_act``, ``pooler_act``, the trained
    ``image_size`` and ``patch_size`` (pairs), then ``preprocessor_config.json``'s
    normalisation, ``resample`` (``input_resize``) and input size (``input_size``: ``crop_size``
    when ``do_center_crop``, else ``size`` as height and width), and ``id2label`` (``class_names``).
    timm ``config.json`` (with ``architecture``, when its ``num_features``
    matches): ``num_heads``, ``global_pool``, ``img_size`` (``model_args``, the size the
    position grid was made for), ``input_size`` (``pretrained_cfg``: the default run size, and a
    hint for a non-square grid), ``pretrained_cfg.interpolation`` (``input_resize``),
    ``label_names`` (top level or in ``pretrained_cfg``: ``class_names``) and
    ``pixel_mean``/``pixel_std``. A filter vitjax does not compute is a :class:`VitjaxWarning`
    (Google's resize is used). A ``config.json`` of neither kind, or of another model, is
    ignored; every field that is read is checked (type, range, finiteness).

    Raises:
      CheckpointError: an unreadable JSON file, or a field of the wrong type or range (one line
        naming the file and the field).
    """
    cfg_path = folder / "config.json"
    cfg = _read_json(cfg_path)
    out: dict = {}
    if cfg is None:
        return out
    f = _Fields(cfg_path, cfg)
    if family == "huggingface":
        if not f.has("hidden_size") or not f.has("num_hidden_layers"):
            return out  # not a transformers model config
        if f.integer("hidden_size") != d or f.integer("num_hidden_layers") != layers:
            return out  # another model's config
        out["config"] = str(cfg_path)
        if (v := f.integer("num_attention_heads")) is not None:
            out["num_heads"] = v
        if (v := f.number("layer_norm_eps", *LAYER_NORM_EPS_RANGE, open_lo=True)) is not None:
            out["layer_norm_eps"] = v
        for name in ("hidden_act", "pooler_act"):
            if (v := f.string(name)) is not None:
                out[name] = v
        for name in ("image_size", "patch_size"):
            if (v := f.size_pair(name)) is not None:
                out[name] = v
        if (v := f.names("id2label")) is not None:
            out["class_names"], out["names_field"] = v, "id2label"
        out.update(_hf_processor(folder))
    elif "architecture" in cfg:
        f.string("architecture")
        if not f.has("num_features") or f.integer("num_features") != d:
            return out
        out["config"] = str(cfg_path)
        for name in ("model_args", "pretrained_cfg"):
            if name in cfg and not isinstance(cfg[name], dict):
                raise f.fail(name, "an object", cfg[name])
        if (v := f.integer("model_args.num_heads")) is not None:
            out["num_heads"] = v
        out.update(f.pixel_stats("pretrained_cfg.mean", "pretrained_cfg.std"))
        pool = f.string("global_pool") if "global_pool" in cfg else f.string("model_args.global_pool")
        if pool not in (None, "", "token"):
            out["global_pool"] = pool
        if (v := f.size_pair("model_args.img_size")) is not None:
            out["img_size"] = v
        if (v := f.size_pair("model_args.patch_size")) is not None:
            out["patch_size"] = v
        if (v := f.size_pair("pretrained_cfg.input_size")) is not None:
            out["input_size"] = v
        if (v := f.string("pretrained_cfg.interpolation")) is not None:
            if v in _TIMM_INTERPOLATION:
                out["input_resize"] = _TIMM_INTERPOLATION[v]
            else:
                warnings.warn(f"{cfg_path}: field 'pretrained_cfg.interpolation' is {_show(v)}, which vitjax does not "
                              "compute (it computes bilinear, bicubic); images are resized with Google's bilinear",
                              VitjaxWarning, stacklevel=2)
        for name in ("label_names", "pretrained_cfg.label_names"):
            if (v := f.names(name)) is not None:
                out["class_names"], out["names_field"] = v, name
                break
    return out


def _hint_grid(image_size, ph: int, pw: int) -> Optional[Tuple[int, int]]:
    """The patch grid of a requested ``image_size`` (int or (h, w)), or None when it is not a usable size."""
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    try:
        h, w = (int(x) for x in image_size)
    except (TypeError, ValueError):
        return None
    return (h // ph, w // pw) if h >= ph and w >= pw else None


def read_safetensors(path, *, num_heads: Optional[int] = None, image_size=None) -> Tuple[Flat, dict]:
    """Reads a timm or Hugging Face ViT ``.safetensors`` as vitjax's canonical flat tree.

    Args:
      path: the file, or the ``*.safetensors.index.json`` of a sharded checkpoint (its shards are
        merged: :func:`load_sharded`) (timm ``vit_*``, ``deit_*``, ``vit_*_dinov2``,
        ``*_reg4_dinov2``; Hugging Face ``ViTModel``,
        ``ViTForImageClassification``, ``Dinov2Model``,
        ``Dinov2WithRegistersModel``, with or without the ``vit.`` /
        ``dinov2.`` prefix, in ``save_pretrained`` or transformers-5 module names).
      num_heads: the head count, for a model outside the rule in the module
        docstring (the files do not store it).
      image_size: the size the caller will run the model at (int or ``(h, w)``), used only to
        read a position grid that is not square when no ``config.json`` says its shape: its
        patch grid is taken when it holds as many tokens as the file (see
        :func:`vitjax.checkpoints.convert.to_canonical`).

    Returns:
      ``(flat, info)``. ``flat``: ``{"cls": [1, 1, D], "embedding/kernel":
      [ph, pw, 3, D], "Transformer/posembed_input/pos_embedding": [1, 1 + gh*gw, D],
      "Transformer/encoderblock_{i}/.../query/kernel": [D, H, hd], ..., "reg":
      [1, R, D], ".../ls1/scale": [D], "head/kernel": [D, C]}`` float32 at the
      file's own grid. ``info``: ViTConfig field values, keys ``source``
      (``"timm"``, ``"huggingface"`` or the file's ``vitjax.source``
      metadata), ``num_heads``, ``num_registers``, ``layer_scale``,
      ``gelu_approximate``, ``layer_norm_eps``, ``pixel_mean``,
      ``pixel_std`` (3-tuples, [0, 1] pixel units), ``posemb_resize``
      (``"timm"`` or ``"bicubic"``, see :data:`RESAMPLERS`), ``random_weights`` (the file's
      ``vitjax.random_weights`` metadata is ``"true"``), and when the JSON beside the file says
      them ``input_resize`` and ``class_names`` (one per class of the head); plus ``grid``, the
      file's own patch grid ``(gh, gw)``, and ``input_size``, the size the file's library feeds
      the model, which are not ViTConfig fields.

    Raises:
      CheckpointError: unreadable file or PyTorch pickle (see :func:`load_safetensors`);
        unknown naming; a missing, extra or mis-shaped tensor (one line naming the key
        and both shapes); a feature the ViT cannot compute, named; a ``config.json`` /
        ``preprocessor_config.json`` field of the wrong type or range, or that contradicts the
        weights (file and field named); a position grid whose shape cannot be told.
      ValueError: a ``num_heads`` argument that is not a positive integer.
    """
    where = os.fspath(path)
    if num_heads is not None and (not isinstance(num_heads, (int, np.integer)) or isinstance(num_heads, bool)
                                  or num_heads < 1):
        raise ValueError(f"num_heads argument must be a positive integer, got {_show(num_heads)}")
    raw, meta = load_sharded(path) if is_index(path) else load_safetensors(path)
    try:
        family, prefix = detect(raw)
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from None
    side: dict = {}

    def complete(fn):  # the callbacks' errors already name their file: keep them as they are
        def call(*args):
            try:
                return fn(*args)
            except CheckpointError as e:
                e.complete = True
                raise

        return call

    @complete
    def heads_for(d: int, layers: int) -> int:
        side.update(_sidecar(Path(where).parent, family, d, layers))
        cfg = side.get("config", "config.json")
        meta_heads = meta.get("vitjax.num_heads")
        if meta_heads is not None and not (meta_heads.isdigit() and meta_heads.isascii() and int(meta_heads) >= 1):
            raise CheckpointError(f"{where}: metadata 'vitjax.num_heads' must be a positive integer, "
                                  f"got {_show(meta_heads)}")
        field = "num_attention_heads" if family == "huggingface" else "model_args.num_heads"
        meta_value = None if meta_heads is None else int(meta_heads)
        for value, origin in ((num_heads, "num_heads argument"),
                              (meta_value, f"{where}: metadata 'vitjax.num_heads'"),
                              (side.get("num_heads"), f"{cfg}: field {field!r}")):
            if value is not None:
                if d % int(value):
                    raise CheckpointError(f"{origin} gives {int(value)} heads, which does not divide the width {d} "
                                          "of the weights")
                return int(value)
        if d in _HEADS_BY_WIDTH:
            return _HEADS_BY_WIDTH[d]
        if d % 64:
            raise CheckpointError(f"{where}: width {d} is not a multiple of 64; pass num_heads "
                                  "(the file does not store it)")
        return d // 64

    @complete
    def grid_for(ph: int, pw: int):
        cfg = side.get("config", "config.json")
        if "patch_size" in side and tuple(side["patch_size"]) != (ph, pw):
            field = "patch_size" if family == "huggingface" else "model_args.patch_size"
            raise CheckpointError(f"{cfg}: field {field!r} says {side['patch_size'][0]}x{side['patch_size'][1]}, "
                                  f"the weights have {ph}x{pw} patches")
        known = None
        for name, field in (("image_size", "image_size"), ("img_size", "model_args.img_size")):
            if name in side:
                h, w = side[name]
                known = ((h // ph, w // pw), f"{cfg}: field {field!r} ({h}x{w} px)")
        hints = [g for g in (_hint_grid(side["input_size"], ph, pw) if "input_size" in side else None,
                             _hint_grid(image_size, ph, pw) if image_size is not None else None) if g]
        return known, hints

    try:
        flat, facts = to_canonical(raw, family, prefix, heads_for, grid_fn=grid_for)
    except ValueError as e:
        if getattr(e, "complete", False):
            raise
        raise CheckpointError(f"{where}: {e}") from None
    cfg = side.get("config", "config.json")
    if side.get("global_pool"):
        raise CheckpointError(f"{cfg}: field 'global_pool' is {side['global_pool']!r}; vitjax reads the class token")
    kind = facts.get("hf_kind", "timm")
    act = side.get("hidden_act", "gelu")
    if act != "gelu" and act not in _APPROX_GELU:
        raise CheckpointError(f"{cfg}: field 'hidden_act' is {act!r}, not a GELU "
                              f"(vitjax computes gelu, {', '.join(sorted(_APPROX_GELU))})")
    if side.get("pooler_act", "tanh") != "tanh" and "pre_logits/kernel" in flat:
        raise CheckpointError(f"{cfg}: field 'pooler_act' is {side['pooler_act']!r}; the representation layer is tanh")
    if kind == "timm":
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if facts["layer_scale"] else (HALF, HALF)
    else:
        mean, std = (HALF, HALF) if kind == "vit" else (IMAGENET_MEAN, IMAGENET_STD)
    random = meta.get("vitjax.random_weights")
    if random not in (None, "true", "false"):
        raise CheckpointError(f"{where}: metadata 'vitjax.random_weights' must be 'true' or 'false', "
                              f"got {_show(random)}")
    info = {
        "source": meta.get("vitjax.source") or family,
        "num_heads": facts["heads"],
        "num_registers": facts["registers"],
        "layer_scale": facts["layer_scale"],
        "gelu_approximate": act in _APPROX_GELU,
        "layer_norm_eps": float(side.get("layer_norm_eps", 1e-12 if kind == "vit" else 1e-6)),
        "pixel_mean": side.get("pixel_mean", mean),
        "pixel_std": side.get("pixel_std", std),
        "posemb_resize": "bicubic" if kind in ("vit", "dinov2") and not facts["register_key"] else "timm",
        "random_weights": random == "true",
        "grid": facts["grid"],
    }
    if "input_resize" in side:
        info["input_resize"] = side["input_resize"]
    if "input_size" in side:  # the size the file's library feeds it (not a config field: load_checkpoint's default)
        info["input_size"] = tuple(side["input_size"])
    names = side.get("class_names")
    head = flat.get("head/kernel")
    if names is not None and head is not None:  # names of a model without a head name nothing: ignored
        if len(names) != head.shape[-1]:
            raise CheckpointError(f"{cfg}: field {side['names_field']!r} names {len(names)} classes, the head of "
                                  f"the weights has {head.shape[-1]}")
        info["class_names"] = tuple(names)
    return flat, info
