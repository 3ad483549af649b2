"""Class names: the checkpoint's own, ImageNet-1k / ImageNet-21k, or from a label file.

This module is the one place that decides what a class index is called (:func:`class_names`):
with ``labels="auto"`` the names the checkpoint file gives (``ViTConfig.class_names``, read by the
loader from transformers' ``id2label`` or timm's ``label_names``; an HF ViT's 281 is
``"tabby, tabby cat"``), else the bundled ImageNet names for 1000- and 21843-class heads.

The two bundled lists (``vitjax/data/imagenet1k.txt``, ``imagenet21k.txt``)
were made by :func:`build_label_files` (``scripts/make_labels.py``) from the
WordNet lists in the timm wheel (``timm/data/_info/``). Names are in the form
Google's ViT notebook prints: a synset's lemmas joined by ``", "`` with spaces
inside a lemma replaced by ``"_"`` (index 281 = ``tabby, tabby_cat``).

Also here: :func:`topk` (softmax top-k of logits) and :func:`class_label`
(a class index as text), shared by the CLI, the notebook and the dataset runner.
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from vitjax.errors import require_file

__all__ = [
    "IMAGENET1K_BYTES",
    "IMAGENET1K_CLASSES",
    "IMAGENET21K_CLASSES",
    "NO_HEAD",
    "build_label_files",
    "class_label",
    "imagenet1k_names",
    "imagenet21k_names",
    "load_label_file",
    "class_names",
    "timm_info_dir",
    "topk",
]

IMAGENET1K_CLASSES = 1000
IMAGENET21K_CLASSES = 21843
#: Size of the bundled ``imagenet1k.txt`` as built by :func:`build_label_files` (a format check).
IMAGENET1K_BYTES = 21_675
#: What figures, TSV files and printed predictions say for a model whose head cannot predict: a
#: headless model (features only) or an all-zero head (Google's ImageNet-21k files).
NO_HEAD = "no trained head"
_SPOT_CHECKS = {281: "tabby, tabby_cat", 285: "Egyptian_cat", 652: "military_uniform",
                817: "sports_car, sport_car"}
_BUILTIN = {
    "imagenet1k": ("imagenet1k.txt", IMAGENET1K_CLASSES),
    "imagenet21k": ("imagenet21k.txt", IMAGENET21K_CLASSES),
}


def _parse(text: str, where: str) -> List[str]:
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ValueError(f"{where}: the label file is empty (expected one class name per line)")
    names = []
    for i, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            raise ValueError(f"{where}: line {i} is empty (expected one class name per line)")
        names.append(name)
    return names


@functools.cache
def _builtin(key: str) -> Tuple[str, ...]:
    fname, count = _BUILTIN[key]
    res = importlib.resources.files("vitjax") / "data" / fname
    try:
        text = res.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"vitjax/data/{fname}: cannot read the bundled label file ({e})") from None
    names = _parse(text, f"vitjax/data/{fname}")
    if len(names) != count:
        raise ValueError(f"vitjax/data/{fname}: holds {len(names)} names, expected {count}")
    return tuple(names)


def imagenet1k_names() -> List[str]:
    """The 1000 ImageNet-1k (ILSVRC-2012) class names, in class-index order.

    Returns:
      A new list of 1000 strings, e.g. ``names[281] == "tabby, tabby_cat"``,
      ``names[652] == "military_uniform"``. Source: timm's
      ``imagenet_synsets.txt`` + ``imagenet_synset_to_lemma.txt``, formatted
      as Google's notebook prints them (see ``scripts/make_labels.py``).
      Read once from the package data, then cached.

    Raises:
      ValueError: the bundled file is missing or damaged (broken install).
    """
    return list(_builtin("imagenet1k"))


def imagenet21k_names() -> List[str]:
    """The 21,843 ImageNet-21k class names, in the order of Google's 21k heads.

    Returns:
      A new list of 21,843 strings (``names[0] == "organism, being"``).
      Source: timm's ``imagenet21k_goog_synsets.txt`` (Google's head order)
      named through ``imagenet_synset_to_lemma.txt``; a synset without a
      lemma would appear as its WordNet id. Read once, then cached.

    Raises:
      ValueError: the bundled file is missing or damaged (broken install).
    """
    return list(_builtin("imagenet21k"))


def load_label_file(path: Union[str, os.PathLike]) -> List[str]:
    """Reads class names from a UTF-8 text file, one name per line.

    Line ``i`` (0-based) names class index ``i``. Surrounding whitespace and
    trailing blank lines are dropped; ``\\n`` and ``\\r\\n`` both work.

    Returns:
      The names, in file order.

    Raises:
      ValueError: the file cannot be read or decoded, is empty, or has an
        empty line before its last name; the message names the file.
    """
    where = os.fspath(path)
    if os.path.exists(where) and not os.path.isdir(where):
        require_file(where, "a label file", ValueError)  # a FIFO or a device: refused, never opened
    try:
        with open(where, encoding="utf-8-sig") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ValueError(f"{where}: cannot read label file ({reason})") from None
    return _parse(text, where)


def class_names(
    num_classes: Optional[int], labels: Union[str, os.PathLike] = "auto", *,
    checkpoint: Optional[Sequence[str]] = None,
) -> Optional[List[str]]:
    """Names for a classifier head with ``num_classes`` outputs.

    Args:
      num_classes: the head's width (``logits.shape[-1]``), or None for a
        model without a classification head.
      labels: ``"auto"`` (default), ``"checkpoint"``, ``"imagenet1k"``, ``"imagenet21k"``
        or the path of a label file (see :func:`load_label_file`).
      checkpoint: the names the checkpoint file gives, one per class
        (``model.config.class_names``), or None.

    Returns:
      With ``"auto"``: the checkpoint's names when it gives them, else the
      ImageNet-1k names for 1000 classes, the ImageNet-21k names for 21843
      classes, otherwise None (the caller shows class indices). With
      ``"checkpoint"``: the checkpoint's names. With another explicit choice:
      a list of exactly ``num_classes`` names.

    Raises:
      ValueError: an explicit ``labels`` (or ``checkpoint``) whose length differs from
        ``num_classes`` (the message names the argument and both lengths),
        ``"checkpoint"`` for a checkpoint that gives no names,
        an explicit ``labels`` for a model without head, a ``labels`` that is
        neither a keyword nor an existing file, an unreadable label file, or
        a ``num_classes`` that is not a positive integer.
    """
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}")
    if checkpoint is not None:
        checkpoint = [str(n) for n in checkpoint]
        if num_classes is None or len(checkpoint) != num_classes:
            raise ValueError(f"checkpoint has {len(checkpoint)} class names but the model has "
                             f"{num_classes or 'no'} classes")
    if isinstance(labels, str) and labels == "checkpoint":
        if checkpoint is None:
            raise ValueError("labels='checkpoint': the checkpoint file gives no class names (no id2label or "
                             "label_names in its config.json); use 'auto', 'imagenet1k', 'imagenet21k' or a label file")
        return checkpoint
    if isinstance(labels, str) and labels == "auto":
        if checkpoint is not None:
            return checkpoint
        if num_classes == IMAGENET1K_CLASSES:
            return imagenet1k_names()
        if num_classes == IMAGENET21K_CLASSES:
            return imagenet21k_names()
        return None
    shown = labels if isinstance(labels, str) else os.fspath(labels)
    if isinstance(labels, str) and labels in _BUILTIN:
        names = list(_builtin(labels))
    elif not os.path.exists(shown):
        raise ValueError(
            f"labels={shown!r}: no such file; use 'auto', 'checkpoint', 'imagenet1k', 'imagenet21k' "
            "or the path of a label file (one class name per line)"
        )
    else:
        names = load_label_file(labels)
    if num_classes is None:
        raise ValueError(
            f"labels={shown!r} has {len(names)} names but the model has no classification head"
        )
    if len(names) != num_classes:
        raise ValueError(
            f"labels={shown!r} has {len(names)} names but the model has {num_classes} classes"
        )
    return names


# --------------------------------------------------------------------------- predictions


def topk(logits, k: int = 5) -> Tuple[np.ndarray, np.ndarray]:
    """Top-k classes of ``logits [B, C]``: ``(indices [B, k] int32, probabilities [B, k] float32)``.

    Probabilities are the softmax over all C classes (computed in float64), in
    decreasing order, ties by the lower index; ``k`` is capped at C.

    Raises:
      ValueError: ``logits`` not of rank 2.
    """
    z = np.asarray(logits, np.float64)
    if z.ndim != 2:
        raise ValueError(f"logits must be [B, C], got shape {z.shape}")
    k = max(0, min(int(k), z.shape[-1]))
    with np.errstate(invalid="ignore", over="ignore"):  # a non-finite row stays NaN; callers refuse it
        z = z - z.max(axis=-1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=-1, keepdims=True)
    idx = np.argsort(-p, axis=-1, kind="stable")[:, :k]
    return idx.astype(np.int32), np.take_along_axis(p, idx, axis=-1).astype(np.float32)


def class_label(index: int, names: Optional[Sequence[str]] = None) -> str:
    """``names[index]``, or ``"class 17"`` without names (custom heads) or outside them."""
    index = int(index)
    if names is not None and 0 <= index < len(names):
        return str(names[index])
    return f"class {index}"


# --------------------------------------------------------------------------- building the bundled files


def timm_info_dir() -> Path:
    """``timm/data/_info`` of the installed timm, found without importing timm (or torch).

    Raises:
      ValueError: timm is not installed.
    """
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("timm is not installed: pip install timm, or pass the folder holding its data/_info files")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "_info"


def _read_ids(path: Path) -> List[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _read_lemmas(path: Path) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            wnid, _, lemmas = line.partition("\t")
            out[wnid.strip()] = lemmas.strip()
    return out


def _format_name(wnid: str, lemmas: Dict[str, str]) -> str:
    parts = [p.strip().replace(" ", "_") for p in lemmas.get(wnid, "").split(",")]
    parts = [p for p in parts if p]
    return ", ".join(parts) if parts else wnid


def build_label_files(info: Union[str, os.PathLike]) -> Dict[str, str]:
    """The text of ``imagenet1k.txt`` and ``imagenet21k.txt`` from timm's WordNet lists.

    Reads, in ``info`` (timm's ``data/_info``; see :func:`timm_info_dir`):
    ``imagenet_synsets.txt`` (the 1000 ImageNet-1k ids in class-index order),
    ``imagenet21k_goog_synsets.txt`` (the 21,843 ids in the order of Google's
    ImageNet-21k heads) and ``imagenet_synset_to_lemma.txt`` (``wnid TAB
    lemma, lemma``). Each name is written as Google's ViT notebook prints it:
    lemmas joined by ``", "``, spaces inside a lemma replaced by ``"_"``; a
    synset without a lemma falls back to its WordNet id. One name per line,
    ``\\n`` endings, a final newline.

    Returns:
      ``{"imagenet1k.txt": text, "imagenet21k.txt": text}``.

    Raises:
      ValueError: a list with the wrong number of ids, a spot check that fails
        (281 tabby, 285 Egyptian_cat, 652 military_uniform, 817 sports_car),
        or an ``imagenet1k.txt`` that is not :data:`IMAGENET1K_BYTES` bytes.
      OSError: a list cannot be read.
    """
    info = Path(info)
    lemmas = _read_lemmas(info / "imagenet_synset_to_lemma.txt")
    out = {}
    for fname, src, count in (("imagenet1k.txt", "imagenet_synsets.txt", IMAGENET1K_CLASSES),
                              ("imagenet21k.txt", "imagenet21k_goog_synsets.txt", IMAGENET21K_CLASSES)):
        ids = _read_ids(info / src)
        if len(ids) != count:
            raise ValueError(f"{info / src}: has {len(ids)} ids, expected {count}")
        out[fname] = "".join(_format_name(i, lemmas) + "\n" for i in ids)
    names = out["imagenet1k.txt"].splitlines()
    for idx, want in _SPOT_CHECKS.items():
        if names[idx] != want:
            raise ValueError(f"{info}: imagenet1k index {idx} would be {names[idx]!r}, expected {want!r}")
    size = len(out["imagenet1k.txt"].encode("utf-8"))
    if size != IMAGENET1K_BYTES:
        raise ValueError(f"{info}: imagenet1k.txt would be {size} bytes, expected {IMAGENET1K_BYTES}")
    return out
