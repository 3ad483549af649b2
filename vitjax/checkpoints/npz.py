"""Google's ``.npz`` checkpoints, read without ever unpickling anything.

A zip of ``.npy`` members with flat ``/``-joined keys
(``Transformer/encoderblock_0/LayerNorm_0/scale``...), as written by ``vit_jax`` and
big_vision (``np.savez``), read member by member with ``np.lib.format.read_array(...,
allow_pickle=False)`` after every member's declared size has been checked against the file
(the zip directory's sizes, each ``.npy`` header's shape times item size). The tree is
checked and renamed by :mod:`vitjax.checkpoints.load`.
"""

from __future__ import annotations

import math
import os
import zipfile
from typing import Any, Dict, Tuple, Union

import numpy as np

from vitjax.errors import CheckpointError, pickle_refusal, require_file

__all__ = ["load_npz", "read_npz", "RANDOM_WEIGHTS_COMMENT", "DEFLATE_MAX_RATIO", "DENSE_RATIO", "DENSE_LIMIT"]

PathLike = Union[str, os.PathLike]
Flat = Dict[str, np.ndarray]

#: How :mod:`vitjax.checkpoints.synthetic` marks its files: the zip archive's comment begins with these bytes
#: (a comment is no member, so NumPy, timm's ``.npz`` loader and vitjax's strict tree check never see it).
RANDOM_WEIGHTS_COMMENT = b"vitjax: random weights"
#: Deflate cannot expand data more than about 1032:1; a member declaring more is lying about its size.
DEFLATE_MAX_RATIO = 1032
#: Trained float weights compress about 1.1:1; data that compresses better than DENSE_RATIO:1 is constant
#: (zeros), and more than DENSE_LIMIT bytes of it in one archive is a decompression bomb, not weights. The
#: largest such array in a real file is the all-zero 21843-class head of Google's ImageNet-21k ViT-H/G
#: (about 112-145 MB).
DENSE_RATIO = 64
DENSE_LIMIT = 512 << 20
_NUMERIC = "fiub"


def _size(n: int) -> str:
    for unit, step in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= step:
            return f"{n / step:.1f} {unit}"
    return f"{n} bytes"


def _memory() -> int:
    """Physical memory in bytes (0 when the system does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def _member_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: str) -> Tuple[Tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, header bytes)`` declared by one ``.npy`` member, read without reading its data."""
    key = info.filename[: -len(".npy")]
    try:
        with zf.open(info) as fp:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
            else:
                raise CheckpointError(f"{path}: key {key!r} is a .npy of format version {version}, which vitjax "
                                      "does not read")
            header = fp.tell()
    except CheckpointError:
        raise
    except (ValueError, zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as e:
        raise CheckpointError(f"{path}: key {key!r} has no readable .npy header ({' '.join(str(e).split())})") from None
    if dtype.hasobject:
        raise CheckpointError(f"{path}: key {key!r} is an object array, which needs pickle; refused")
    if dtype.kind not in _NUMERIC:
        raise CheckpointError(f"{path}: key {key!r} holds {dtype} data, not numbers")
    return tuple(int(d) for d in shape), dtype, header


def _check_members(zf: zipfile.ZipFile, path: str) -> None:
    """Checks every member's declared sizes against the file before any data is decompressed.

    Raises:
      CheckpointError: encrypted or unknown compression; a size in the zip directory that the
        file cannot hold (stored: more than the file; deflate: more than 1032:1); an ``.npy``
        header whose shape times item size is not the member's size; more than
        :data:`DENSE_LIMIT` bytes compressing better than :data:`DENSE_RATIO`:1 (a bomb); or a
        total larger than the machine's memory.
    """
    archive = os.path.getsize(path)
    total = dense = 0
    seen = set()
    for info in zf.infolist():
        key = info.filename[: -len(".npy")]
        if info.filename in seen:
            raise CheckpointError(f"{path}: member {info.filename!r} appears twice")
        seen.add(info.filename)
        if info.flag_bits & 0x1:
            raise CheckpointError(f"{path}: member {info.filename!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(f"{path}: member {info.filename!r} uses zip compression method "
                                  f"{info.compress_type}; .npz files are stored or deflated")
        declared, packed = int(info.file_size), int(info.compress_size)
        if packed > archive or (info.compress_type == zipfile.ZIP_STORED and packed != declared) or (
                declared > DEFLATE_MAX_RATIO * packed + 1024):
            raise CheckpointError(f"{path}: member {info.filename!r} declares {_size(declared)} in "
                                  f"{_size(packed)} of a {_size(archive)} file, which cannot hold it "
                                  "(a damaged or forged zip directory)")
        shape, dtype, header = _member_header(zf, info, path)
        need = math.prod(shape) * dtype.itemsize
        if header + need != declared:
            raise CheckpointError(f"{path}: key {key!r} declares shape {shape} of {dtype} ({_size(need)}), but its "
                                  f"member holds {_size(max(declared - header, 0))}; truncated or forged")
        total += declared
        if declared > DENSE_RATIO * max(packed, 1):
            dense += declared
    if dense > DENSE_LIMIT:
        raise CheckpointError(f"{path}: {_size(dense)} of its arrays compress more than {DENSE_RATIO}:1 "
                              f"(constant data; the archive is {_size(archive)}); refused as a decompression bomb, "
                              "not weights")
    memory = _memory()
    if memory and total > memory:
        raise CheckpointError(f"{path}: its arrays declare {_size(total)} in all, more than this machine's "
                              f"{_size(memory)} of memory")


def read_npz(path: PathLike) -> Tuple[Flat, Dict[str, Any]]:
    """Reads every array of an ``.npz`` archive, never unpickling anything, and what the archive says of itself.

    Every member's declared size is checked against the file before any data is read
    (:func:`_check_members`): a 100 KB file declaring a ``(10**12,)`` array, or a deflate bomb,
    is refused in one line without allocating.

    Args:
      path: the file.

    Returns:
      ``(flat, info)``: ``{"Transformer/encoderblock_0/LayerNorm_0/scale": ndarray, ...}``, the
      flat ``/``-joined keys of the file, arrays as stored (numeric dtypes); ``info``
      ``{"random_weights": True}`` when the archive comment marks the file as written by
      :mod:`vitjax.checkpoints.synthetic` (:data:`RANDOM_WEIGHTS_COMMENT`), else ``{}``.

    Raises:
      CheckpointError: missing, empty, truncated, not a zip/npz archive, a
        PyTorch file, any member that is not a numeric ``.npy`` array
        (object arrays would need pickle and are refused), or sizes the file
        cannot hold (see above).
    """
    path = require_file(path, "an .npz checkpoint")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(2)
        if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
            raise CheckpointError(pickle_refusal(path))
        raise CheckpointError(
            f"{path}: not an .npz archive (no zip directory found; truncated or another format)"
        )
    out: Flat = {}
    key = "?"
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if any(n.endswith(".pkl") for n in names):
                raise CheckpointError(pickle_refusal(path))
            not_npy = [n for n in names if not n.endswith(".npy")]
            if not_npy:
                raise CheckpointError(f"{path}: member {not_npy[0]!r} is not a .npy array; not an .npz checkpoint")
            _check_members(zf, path)
            comment = zf.comment
            for info in zf.infolist():
                key = info.filename[: -len(".npy")]
                with zf.open(info) as fp:
                    out[key] = np.lib.format.read_array(fp, allow_pickle=False)
    except CheckpointError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise CheckpointError(f"{path}: key {key!r} is an object array, which needs pickle; refused") from None
        raise CheckpointError(f"{path}: unreadable array {key!r} ({' '.join(str(e).split())})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt archive ({type(e).__name__}: "
                              f"{' '.join(str(e).split())})") from None
    if not out:
        raise CheckpointError(f"{path}: the archive holds no arrays")
    return out, ({"random_weights": True} if comment.startswith(RANDOM_WEIGHTS_COMMENT) else {})


def load_npz(path: PathLike) -> Flat:
    """The arrays of an ``.npz`` archive (:func:`read_npz` without what the archive says of itself).

    Returns:
      ``{"Transformer/encoderblock_0/LayerNorm_0/scale": ndarray, ...}``, arrays as stored.

    Raises:
      CheckpointError: see :func:`read_npz`.
    """
    return read_npz(path)[0]
