"""Class names for ImageNet-1k / ImageNet-21k heads, or from a label file.

The two bundled lists (``vitjax/data/imagenet1k.txt``, ``imagenet21k.txt``)
were made by ``scripts/make_labels.py`` from the WordNet lists in the timm
wheel (``timm/data/_info/``). Names are in the form Google's ViT notebook
prints: a synset's lemmas joined by ``", "`` with spaces inside a lemma
replaced by ``"_"`` (index 281 = ``tabby, tabby_cat``).
"""

from __future__ import annotations

import functools
import importlib.resources
import os
from typing import List, Optional, Tuple, Union

__all__ = [
    "IMAGENET1K_CLASSES",
    "IMAGENET21K_CLASSES",
    "imagenet1k_names",
    "imagenet21k_names",
    "load_label_file",
    "class_names",
]

IMAGENET1K_CLASSES = 1000
IMAGENET21K_CLASSES = 21843
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
    try:
        with open(where, encoding="utf-8-sig") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ValueError(f"{where}: cannot read label file ({reason})") from None
    return _parse(text, where)


def class_names(
    num_classes: Optional[int], labels: Union[str, os.PathLike] = "auto"
) -> Optional[List[str]]:
    """Names for a classifier head with ``num_classes`` outputs.

    Args:
      num_classes: the head's width (``logits.shape[-1]``), or None for a
        model without a classification head.
      labels: ``"auto"`` (default), ``"imagenet1k"``, ``"imagenet21k"`` or
        the path of a label file (see :func:`load_label_file`).

    Returns:
      With ``"auto"``: the ImageNet-1k names for 1000 classes, the
      ImageNet-21k names for 21843 classes, otherwise None (the caller shows
      class indices). With an explicit choice: a list of exactly
      ``num_classes`` names.

    Raises:
      ValueError: an explicit ``labels`` whose length differs from
        ``num_classes`` (the message names the argument and both lengths),
        an explicit ``labels`` for a model without head, a ``labels`` that is
        neither a keyword nor an existing file, an unreadable label file, or
        a ``num_classes`` that is not a positive integer.
    """
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}")
    if isinstance(labels, str) and labels == "auto":
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
            f"labels={shown!r}: no such file; use 'auto', 'imagenet1k', 'imagenet21k' "
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
