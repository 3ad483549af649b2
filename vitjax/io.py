"""Files vitjax writes: one atomic writer, file hashes, and the maps file (msgpack).

:func:`write_atomic` is the one way the package writes a file (figures,
TSV, maps, run metadata): bytes go to a hidden temporary file beside the
target, which is then moved into place, so a reader never sees a partial
file and, unless asked, nobody else's file is replaced.

The maps file is ``flax.serialization.msgpack_serialize`` of one dict::

    {
      "format": "vitjax-maps",
      "version": 2,
      "arrays": {"rollout": [N, gh, gw], "layer": [N, L, gh, gw], ...},   # NumPy arrays
      "metadata": {"images": [...], "original_sizes": [[h, w], ...], ...},  # plain values
      "sha256": "...",  # of the arrays (name, dtype, shape, bytes) and the metadata (canonical JSON)
    }

Nothing in a maps file is trusted: :func:`load_maps` checks the structure, the
checksum, the schema (the known arrays' shapes against the metadata, dtypes) and the
value ranges, and refuses a file that fails any of them in one line
(:class:`vitjax.errors.MapsFileError`); :func:`save_maps` refuses to write what
would be refused. Version 1 files (no checksum) are refused: save them again.

Arrays keep their dtype and shape (flax's msgpack extension); metadata holds
only msgpack-native values (str, int, float, bool, None, lists, string-keyed
dicts): tuples become lists, paths become strings, NumPy scalars Python
numbers. :func:`load_maps` reads it back with
``flax.serialization.msgpack_restore``.

What the visualize run stores (``--save-maps``), for N processed images:

* arrays: ``rollout [N, gh, gw]`` (joint map), ``layer [N, L, gh, gw]`` (each
  layer's own map), ``cumulative [N, L, gh, gw]`` (joint map through each
  layer), ``heads [N, H, gh, gw]`` (per-head maps of ``metadata["heads_layer"]``),
  ``token_norms [N, gh, gw]`` (last block's output-token norms, when the model
  provides them), ``topk_indices [N, k]`` int32 and ``topk_probs [N, k]``
  float32 (softmax; k = 0 for a headless model or a zero head); maps in
  [0, 1] on the model's patch grid.
* metadata: ``images`` (paths), ``original_sizes`` (``[height, width]`` each),
  ``grid``, ``image_size``, ``method``, ``options`` (``RolloutOptions.to_dict()``),
  ``precision``, ``checkpoint`` (as given), ``checkpoint_path``,
  ``checkpoint_sha256``, ``topk_labels``, ``head`` and more.
"""


from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from vitjax.errors import MapsFileError, one_line, require_file

__all__ = ["FORMAT", "MAP_ARRAYS", "VERSION", "file_fingerprint", "file_sha256", "load_maps", "save_maps",
           "write_atomic"]

FORMAT = "vitjax-maps"
VERSION = 2  # 2: a SHA-256 of arrays and metadata, checked with the schema on load (1: no checksum)

PathLike = Union[str, os.PathLike]


def _plain(value: Any, where: str) -> Any:
    """A msgpack-native copy of a metadata value (tuples -> lists, paths -> str, NumPy -> Python)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, np.generic):
        return _plain(value.item(), where)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.ndarray):
        return _plain(value.tolist(), where)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise MapsFileError(f"{where}: metadata keys must be strings, got {k!r}")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise MapsFileError(f"{where}: cannot store a {type(value).__name__} in metadata")


# --------------------------------------------------------------------------- the maps file's schema

#: The arrays vitjax writes: name -> (axes, dtype kind, (low, high)). Axes name the sizes they must share
#: with the metadata and each other: N images (``len(metadata["images"])``), gh x gw ``metadata["grid"]``,
#: L ``metadata["num_layers"]``, H ``metadata["num_heads"]``, k predictions kept.
MAP_ARRAYS: Dict[str, Tuple[Tuple[str, ...], str, Tuple[float, float]]] = {
    "rollout": (("N", "gh", "gw"), "f", (0.0, 1.0)),
    "layer": (("N", "L", "gh", "gw"), "f", (0.0, 1.0)),
    "cumulative": (("N", "L", "gh", "gw"), "f", (0.0, 1.0)),
    "heads": (("N", "H", "gh", "gw"), "f", (0.0, 1.0)),
    "class_maps": (("N", "gh", "gw"), "f", (0.0, 1.0)),
    "received": (("N", "L", "gh", "gw"), "f", (0.0, 1.0)),
    "received_heads": (("N", "L", "H", "gh", "gw"), "f", (0.0, 1.0)),
    "token_norms": (("N", "gh", "gw"), "f", (0.0, float("inf"))),
    "topk_indices": (("N", "k"), "i", (0.0, float("inf"))),
    "topk_probs": (("N", "k"), "f", (0.0, 1.0)),
}

_KEYS = {"format", "version", "arrays", "metadata", "sha256"}


def _is_int(v: Any, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _kind(a: np.ndarray) -> str:
    """"f" (floats, bfloat16 included), "i" (integers), "b" (bool) or "" (anything else: refused)."""
    if a.dtype.name == "bfloat16" or a.dtype.kind == "f":
        return "f"
    return {"i": "i", "u": "i", "b": "b"}.get(a.dtype.kind, "")


def _plain_problem(value: Any, where: str) -> Optional[str]:
    """Why ``value`` (metadata read back) is not plain msgpack data, or None."""
    if value is None or isinstance(value, (bool, str, int, float)):
        return None
    if isinstance(value, list):
        for i, v in enumerate(value):
            problem = _plain_problem(v, f"{where}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"{where}: a key that is not text ({type(k).__name__})"
            problem = _plain_problem(v, f"{where}.{k}")
            if problem:
                return problem
        return None
    return f"{where}: a value of unknown type ({type(value).__name__})"


def _digest(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, Any]) -> str:
    """SHA-256 of the arrays (name, dtype, shape, C-order bytes, by name) and the metadata (canonical JSON)."""
    h = hashlib.sha256(f"{FORMAT}/{VERSION}\0".encode())
    for name in sorted(arrays):
        a = arrays[name]
        head = json.dumps([name, a.dtype.name, [int(n) for n in a.shape]]).encode()
        body = np.ascontiguousarray(a).tobytes()
        h.update(len(head).to_bytes(8, "little") + head + len(body).to_bytes(8, "little"))
        h.update(body)
    h.update(json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode())
    return h.hexdigest()


def _schema_problem(arrays: Mapping[str, Any], metadata: Mapping[str, Any]) -> Optional[str]:
    """Why ``arrays``/``metadata`` do not form a maps file (:data:`MAP_ARRAYS`, the metadata fields), or None."""
    dims: Dict[str, Optional[int]] = {"N": None, "gh": None, "gw": None, "L": None, "H": None, "k": None}
    images = metadata.get("images")
    if images is not None:
        if not isinstance(images, list) or not all(isinstance(x, str) for x in images):
            return "metadata.images is not a list of paths"
        dims["N"] = len(images)
    for field in ("grid", "image_size"):
        value = metadata.get(field)
        if value is not None and not (isinstance(value, list) and len(value) == 2
                                      and all(_is_int(v, 1) for v in value)):
            return f"metadata.{field} is not two positive integers: {value!r}"
    if metadata.get("grid") is not None:
        dims["gh"], dims["gw"] = metadata["grid"]
    for field, dim in (("num_layers", "L"), ("num_heads", "H")):
        value = metadata.get(field)
        if value is not None:
            if not _is_int(value, 1):
                return f"metadata.{field} is not a positive integer: {value!r}"
            dims[dim] = value
    num_classes = metadata.get("num_classes")
    if num_classes is not None and not _is_int(num_classes, 1):
        return f"metadata.num_classes is not a positive integer: {num_classes!r}"
    for field, ok in (("display_names", lambda v: isinstance(v, str)),
                      ("true_classes", lambda v: v is None or isinstance(v, str)),
                      ("original_sizes", lambda v: isinstance(v, list) and len(v) == 2
                       and all(_is_int(x, 1) for x in v)),
                      ("class_targets", lambda v: _is_int(v)),
                      ("outlier_counts", lambda v: _is_int(v)), ("sink_counts", lambda v: _is_int(v)),
                      ("topk_labels", lambda v: isinstance(v, list))):
        value = metadata.get(field)
        if value is None:
            continue
        if not isinstance(value, list) or not all(ok(v) for v in value):
            return f"metadata.{field} holds values of the wrong type"
        if dims["N"] is not None and len(value) != dims["N"]:
            return f"metadata.{field} has {len(value)} entries for {dims['N']} images"
    for name in sorted(arrays):
        a = arrays[name]
        if not isinstance(a, np.ndarray):
            return f"arrays.{name} is a {type(a).__name__}, not an array"
        kind = _kind(a)
        if not kind:
            return f"arrays.{name} has dtype {a.dtype}, not numbers"
        if name not in MAP_ARRAYS:
            if kind == "f" and a.size and not np.isfinite(a.astype(np.float64)).all():
                return f"arrays.{name} holds NaN or infinite values"
            continue
        axes, want, (low, high) = MAP_ARRAYS[name]
        if kind != want:
            return f"arrays.{name} has dtype {a.dtype}; expected {'floats' if want == 'f' else 'integers'}"
        if a.ndim != len(axes):
            return f"arrays.{name} has shape {a.shape}; expected [{', '.join(axes)}]"
        for axis, n in zip(axes, a.shape, strict=True):
            if dims[axis] is None:
                dims[axis] = int(n)
            elif dims[axis] != n:
                return (f"arrays.{name} has shape {a.shape}; expected [{', '.join(axes)}] with {axis} = {dims[axis]} "
                        "(from the metadata and the other arrays)")
        if not a.size:
            continue
        v = a.astype(np.float64)
        if kind == "f" and not np.isfinite(v).all():
            return f"arrays.{name} holds NaN or infinite values"
        top = high if name != "topk_indices" or num_classes is None else num_classes - 1
        if v.min() < low or v.max() > top:
            return f"arrays.{name} holds values in [{v.min():.6g}, {v.max():.6g}]; expected [{low:g}, {top:g}]"
    return None


def save_maps(
    path: PathLike,
    arrays: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Writes ``arrays`` and ``metadata`` to ``path`` as one msgpack file, atomically, with their checksum.

    The arrays vitjax knows (:data:`MAP_ARRAYS`) must have the shapes, dtypes and
    value ranges documented there, consistent with each other and with the metadata
    (``images``, ``grid``, ``num_layers``, ``num_heads``); any float array must be
    finite. What :func:`load_maps` would refuse is not written.

    Args:
      path: the file (conventionally ``maps.msgpack``); its folder must exist.
      arrays: name -> array (NumPy or JAX; stored as NumPy with dtype and shape, in native byte order).
      metadata: plain values describing the arrays (see the module docstring).
      overwrite: replace an existing file; otherwise refuse it.

    Returns:
      ``path`` as a :class:`pathlib.Path`.

    Raises:
      vitjax.errors.MapsFileError (a ValueError): an array name that is not a string,
        metadata that cannot be stored, or arrays that break the schema (one line).
      FileExistsError: ``path`` exists and ``overwrite`` is False.
      OSError: the folder is missing or not writable.
    """
    from flax.serialization import msgpack_serialize

    path = Path(path)
    stored = {}
    for name, a in arrays.items():
        if not isinstance(name, str):
            raise MapsFileError(f"{path}: array names must be strings, got {name!r}")
        a = np.asarray(a)
        stored[name] = a.astype(a.dtype.newbyteorder("=")) if a.dtype.byteorder not in ("=", "|") else a
    plain = _plain(dict(metadata or {}), "metadata")
    problem = _schema_problem(stored, plain)
    if problem:
        raise MapsFileError(f"{path}: not written: {problem}")
    tree = {"format": FORMAT, "version": VERSION, "arrays": stored, "metadata": plain,
            "sha256": _digest(stored, plain)}
    try:
        data = msgpack_serialize(tree)
    except (OverflowError, TypeError, ValueError) as e:
        raise MapsFileError(f"{path}: not written: {one_line(e)}") from None
    write_atomic(path, data, overwrite=overwrite)
    return path


def load_maps(path: PathLike) -> Dict[str, Any]:
    """Reads a file written by :func:`save_maps`, trusting nothing in it.

    Checked in this order, each failure one line naming the file and what is wrong:
    the msgpack structure, the format marker and version (files of version 1, written
    by vitjax < 0.3 without a checksum, are refused: save the maps again), the keys,
    the types (arrays of numbers, plain metadata), the SHA-256 of arrays and
    metadata, then the schema: known arrays' shapes against the metadata and each
    other, their dtypes and value ranges (maps in [0, 1], everything finite;
    :data:`MAP_ARRAYS`).

    Returns:
      ``{"format": "vitjax-maps", "version": 2, "arrays": {name: np.ndarray},
      "metadata": {...}, "sha256": hex}``.

    Raises:
      vitjax.errors.MapsFileError (a ValueError): the file is missing, unreadable,
        not a vitjax maps file, of another version, damaged or altered.
    """
    from flax.serialization import msgpack_restore

    where = require_file(path, "a vitjax maps file", MapsFileError)
    try:
        with open(where, "rb") as f:
            data = f.read()
    except OSError as e:
        raise MapsFileError(f"{where}: cannot read maps file ({e.strerror or e})") from None
    try:
        tree = msgpack_restore(data)
    except Exception as e:  # msgpack raises ValueError subclasses, TypeError, StackError...
        raise MapsFileError(f"{where}: not a vitjax maps file (msgpack: {one_line(e) or type(e).__name__})") from None
    if not isinstance(tree, dict) or tree.get("format") != FORMAT:
        raise MapsFileError(f"{where}: not a vitjax maps file (no format={FORMAT!r} marker)")
    version = tree.get("version")
    if _is_int(version) and version < VERSION:
        raise MapsFileError(f"{where}: maps file version {version}, written by an older vitjax without a checksum; "
                            f"this vitjax reads version {VERSION}: save the maps again")
    if version != VERSION or isinstance(version, bool):
        raise MapsFileError(f"{where}: maps file version {version!r}; this vitjax reads version {VERSION}")
    if set(tree) != _KEYS:
        raise MapsFileError(f"{where}: damaged vitjax maps file (keys {sorted(map(str, tree))}; expected "
                            f"{sorted(_KEYS)})")
    arrays, metadata = tree["arrays"], tree["metadata"]
    if not isinstance(arrays, dict) or not isinstance(metadata, dict):
        raise MapsFileError(f"{where}: damaged vitjax maps file (arrays/metadata are not maps)")
    for name, a in arrays.items():
        if not isinstance(name, str) or not isinstance(a, np.ndarray) or not _kind(a):
            what = f"{type(a).__name__}" + (f" of {a.dtype}" if isinstance(a, np.ndarray) else "")
            raise MapsFileError(f"{where}: damaged vitjax maps file (arrays.{name} is a {what}, not numbers)")
    problem = _plain_problem(metadata, "metadata")
    if problem:
        raise MapsFileError(f"{where}: damaged vitjax maps file ({problem})")
    if not isinstance(tree["sha256"], str) or tree["sha256"] != _digest(arrays, metadata):
        raise MapsFileError(f"{where}: checksum mismatch: the maps file was changed or damaged after it was written")
    problem = _schema_problem(arrays, metadata)
    if problem:
        raise MapsFileError(f"{where}: {problem}")
    return tree


def write_atomic(path: PathLike, data: bytes, *, overwrite: bool = False) -> Path:
    """Writes ``data`` to ``path`` through a temporary file in the same folder.

    The bytes go to a hidden temporary file beside ``path``, which is then
    moved into place (``os.replace`` with ``overwrite``; otherwise a hard link,
    which fails if ``path`` appeared meanwhile), so ``path`` is never a
    partial file and, without ``overwrite``, never someone else's file.

    Raises:
      FileExistsError: ``path`` exists and ``overwrite`` is False.
      OSError: the folder is missing or not writable.
    """
    path = Path(path)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"{path}: exists; not overwritten")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic "create if absent"
            except FileExistsError:
                raise FileExistsError(f"{path}: exists; not overwritten") from None
            except OSError:  # file systems without hard links
                if os.path.lexists(path):
                    raise FileExistsError(f"{path}: exists; not overwritten") from None
                os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_fingerprint(path: PathLike, chunk: int = 1 << 22) -> Tuple[int, str]:
    """``(size in bytes, hex SHA-256)`` of a regular file, for telling whether it changed.

    The file is opened non-blocking and checked to be a regular file (``fstat``,
    links followed) before anything is read, so a FIFO or device under an image's
    name is refused instead of blocking the reader.

    Raises:
      ValueError: not a regular file, missing or unreadable (one line naming it).
    """
    where = os.fspath(path)
    try:
        fd = os.open(where, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise ValueError(f"{where}: cannot read ({e.strerror or e})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{where}: not a regular file; only regular image files are read")
        h = hashlib.sha256()
        size = 0
        try:
            while True:
                block = f.read(chunk)
                if not block:
                    break
                size += len(block)
                h.update(block)
        except OSError as e:
            raise ValueError(f"{where}: cannot read ({e.strerror or e})") from None
    return size, h.hexdigest()


def file_sha256(path: PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file (read in 4 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()
