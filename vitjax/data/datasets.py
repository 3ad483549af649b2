"""Image lists, Caltech101 records and Caltech101 object annotations (box, contour, mask).

Pure Python and NumPy (plus Pillow and SciPy at the file edges); no JAX. Readers
return lists of :class:`ImageRecord` -- paths and labels only, nothing is decoded
-- so a dataset run can be sampled, sharded and resumed before any image is read.

Caltech101 layout (from the Caltech101 distribution, ``101_ObjectCategories.tar.gz``
and ``Annotations.tar``; torchvision's ``Caltech101`` dataset reads the same tree
with the same annotation-folder renames)::

    <root>/101_ObjectCategories/<class>/image_0001.jpg ...
    <root>/Annotations/<annotation_class>/annotation_0001.mat ...

Class indices come from a case-sensitive sort of the class folder names, so the
capitalised ``Faces``, ``Faces_easy``, ``Leopards``, ``Motorbikes`` are 0-3 and
``BACKGROUND_Google`` (clutter, not a class) is left out of the numbering.
"""

from __future__ import annotations

import glob
import operator
import os
import re
import stat
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from vitjax.errors import DatasetError, VitjaxWarning

__all__ = [
    "DatasetError",
    "ImageRecord",
    "ImageList",
    "skipped_note",
    "IMAGE_EXTENSIONS",
    "CALTECH101_ANNOTATION_FOLDERS",
    "CALTECH101_BACKGROUND",
    "image_files",
    "caltech101",
    "ImageItem",
    "SAMPLE_PHOTO",
    "display_names",
    "gather_images",
    "class_folders",
    "dataset_records",
    "sample_records",
    "positive_int",
    "seed_int",
    "load_annotation",
    "annotation_mask",
    "box_mask",
    "check_annotation",
    "ANNOTATION_SLACK",
    "ANNOTATION_SLACK_PIXELS",
]

PathLike = Union[str, os.PathLike]

#: Suffixes (compared lower-case) that :func:`image_files` and :func:`caltech101` treat as images.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

#: Image folder -> annotation folder where the Caltech101 distribution names them differently.
CALTECH101_ANNOTATION_FOLDERS = {
    "Faces": "Faces_2",
    "Faces_easy": "Faces_3",
    "Motorbikes": "Motorbikes_16",
    "airplanes": "Airplanes_Side_2",
}

#: The clutter folder of Caltech101: not a class, never annotated.
CALTECH101_BACKGROUND = "BACKGROUND_Google"

_CATEGORIES = "101_ObjectCategories"
_ANNOTATIONS = "Annotations"
_MATLAB_NUMERIC = frozenset({"double", "single", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                             "uint64"})  # the classes of whosmat that hold real numbers
_IMAGE_NUMBER = re.compile(r"^image_(\d+)$")
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset.

    Attributes:
      path: the image file.
      label: class index (0-based), or ``None`` for unlabelled images (plain image
        lists, Caltech101's ``BACKGROUND_Google``).
      class_name: the class folder name, or ``None`` for plain image lists.
      annotation: the object annotation file (Caltech101 ``annotation_XXXX.mat``),
        or ``None`` when there is none.
    """

    path: Path
    label: Optional[int]
    class_name: Optional[str]
    annotation: Optional[Path]


# --------------------------------------------------------------------------- image lists


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


class ImageList(list):
    """A list of images (paths, :class:`ImageRecord` or :class:`ImageItem`) and what the folder walk left out.

    Attributes:
      skipped: ``((path, reason), ...)`` sorted by path: entries that look like images or
        folders of images but were not listed -- a FIFO, socket or device named like an
        image (``"not a regular file (a FIFO)"``: opening it could block forever), a link
        to a folder already listed (``l1 -> .``), a second name of a file already listed,
        a link that cannot be followed, a folder that cannot be read. Hidden entries and
        files with other suffixes are not "skipped": they are simply not images.
    """

    skipped: Tuple[Tuple[Path, str], ...] = ()


def _image_list(items: Iterable, skipped: Iterable[Tuple[Path, str]]) -> ImageList:
    out = ImageList(items)
    out.skipped = tuple(sorted(set(skipped), key=lambda t: (str(t[0]), t[1])))
    return out


def skipped_note(skipped: Sequence[Tuple[Path, str]], root: Optional[PathLike] = None, show: int = 3) -> str:
    """One line telling what a listing skipped (:attr:`ImageList.skipped`): count, the first ``show``, the rest counted.

    Paths are shown relative to ``root`` when they are inside it. Returns "" when nothing was skipped.
    """
    if not skipped:
        return ""
    base = None if root is None else os.path.abspath(os.path.expanduser(os.fspath(root)))

    def name(path) -> str:
        text = os.path.abspath(path)
        if base is not None and os.path.commonpath([base, text]) == base and text != base:
            return Path(os.path.relpath(text, base)).as_posix()
        return os.fspath(path)

    shown = "; ".join(f"{name(p)}: {why}" for p, why in skipped[:show])
    more = f"; and {len(skipped) - show} more" if len(skipped) > show else ""
    where = f"{root}: " if root is not None else ""
    return f"{where}skipped {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'}: {shown}{more}"


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return kind
    return "not a plain file"


class _Walk:
    """One listing of image files: each real folder visited once, each real file listed once, regular files only.

    Folders are identified by ``(st_dev, st_ino)`` of their target, so ``l1 -> .`` or a
    link to a sibling class folder is recognised as a folder already listed (no
    exponential walk, no double counting). Real folders are claimed before any link is
    followed, and real file names before linked ones, so the names listed do not depend
    on where a link sorts. Nothing is opened here: ``os.stat`` never blocks on a FIFO.
    """

    def __init__(self) -> None:
        self.dirs: Dict[Tuple[int, int], Path] = {}
        self.files: List[Tuple[bool, int, Tuple[str, ...], Path, Tuple[int, int]]] = []
        self.links: List[Tuple[int, Path, Path]] = []
        self.skipped: List[Tuple[Path, str]] = []

    def claim(self, path: Path) -> bool:
        """Marks the folder ``path`` as listed; False (and a skip) if it was listed already or cannot be read."""
        try:
            st = os.stat(path)
        except OSError as e:
            self.skipped.append((path, f"a link that cannot be followed ({e.strerror or e})"))
            return False
        key = (st.st_dev, st.st_ino)
        if key in self.dirs:
            first = self.dirs[key]
            why = "a link to a folder already listed" if os.path.islink(path) else "the same folder as one listed"
            self.skipped.append((path, f"{why} ({first})"))
            return False
        self.dirs[key] = path
        return True

    def tree(self, group: int, base: Path, folder: Path, recursive: bool) -> None:
        """Collects the images under the claimed ``folder`` without following links; links to folders wait."""
        stack = [folder]
        while stack:
            current = stack.pop()
            try:
                with os.scandir(current) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as e:
                self.skipped.append((current, f"cannot list the folder ({e.strerror or e})"))
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                path = Path(entry.path)
                link = entry.is_symlink()
                try:
                    st = os.stat(path)  # follows links; never opens
                except OSError as e:
                    if link or _is_image(path):
                        self.skipped.append((path, f"a link that cannot be followed ({e.strerror or e})" if link
                                             else f"cannot read its status ({e.strerror or e})"))
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if not recursive:
                        continue
                    if link:
                        self.links.append((group, base, path))
                    elif self.claim(path):
                        stack.append(path)
                elif _is_image(path):
                    if not stat.S_ISREG(st.st_mode):
                        self.skipped.append((path, f"not a regular file ({_file_kind(st.st_mode)})"))
                    else:
                        rel = path.relative_to(base).parts
                        self.files.append((link, group, rel, path, (st.st_dev, st.st_ino)))

    def follow(self) -> None:
        """Walks the links to folders not listed yet (in group and path order), until none is left."""
        while self.links:
            pending = sorted(self.links, key=lambda t: (t[0], t[2].relative_to(t[1]).parts))
            self.links = []
            for group, base, path in pending:
                if self.claim(path):
                    self.tree(group, base, path, True)

    def resolve(self) -> Dict[int, List[Path]]:
        """``{group: image paths sorted by relative path}``; a file reached twice is listed once (real name first)."""
        self.follow()
        seen: Dict[Tuple[int, int], Path] = {}
        out: Dict[int, List[Tuple[Tuple[str, ...], Path]]] = {}
        for _link, group, rel, path, key in sorted(self.files, key=lambda t: t[:3]):
            if key in seen:
                self.skipped.append((path, f"the same file as {seen[key]}"))
                continue
            seen[key] = path
            out.setdefault(group, []).append((rel, path))
        return {g: [p for _, p in sorted(items, key=lambda t: t[0])] for g, items in out.items()}


def _folder_images(folder: Path, skipped: List[Tuple[Path, str]]) -> List[Path]:
    """Image files under ``folder`` (recursive, :class:`_Walk`), hidden files and folders skipped, sorted.

    What was left out is appended to ``skipped``.
    """
    walk = _Walk()
    if walk.claim(folder):
        walk.tree(0, folder, folder, True)
    found = walk.resolve().get(0, [])
    skipped.extend(walk.skipped)
    return found


def _regular_file(path: Path) -> Optional[str]:
    """None when ``path`` is a regular file (links followed), else why not; never opens it."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        what = "a link that cannot be followed" if os.path.islink(path) else "cannot read its status"
        return f"{what} ({e.strerror or e})"
    return None if stat.S_ISREG(mode) else f"not a regular file ({_file_kind(mode)})"


def image_files(inputs: Sequence[PathLike]) -> List[Path]:
    """Expands files, folders and glob patterns into a list of image paths.

    Each input is, in this order of precedence:

    * an existing file: kept as given, whatever its extension (the decoder reports a non-image);
    * an existing folder: every image file under it, recursively, sorted by path relative to
      the folder (case-sensitive); names starting with ``.`` are skipped (macOS ``._x.jpg``);
    * otherwise a glob pattern (``*``, ``?``, ``[...]``; ``**`` recurses): the matching image
      files, and the images under matching folders, sorted.

    Image files: suffix, lower-cased, in :data:`IMAGE_EXTENSIONS`. ``~`` is expanded.
    Duplicates (same resolved file) are dropped, keeping the first, so input order is kept.
    Folders are walked by :class:`_Walk`: each real folder once (links such as ``l1 -> .``
    do not loop or repeat photos), regular files only (a FIFO named ``pipe.jpg`` is never
    opened); what was left out is in the result's ``skipped``.

    Args:
      inputs: paths, folders or glob patterns (``str`` or ``os.PathLike``).

    Returns:
      :class:`ImageList` of ``pathlib.Path`` (a list; ``.skipped``: ``(path, reason)``),
      empty only when ``inputs`` is empty.

    Raises:
      DatasetError: an input does not exist and, as a pattern, matches no image;
        a folder holds no image files; a file input is not a regular file (a FIFO,
        a device). The message names the input.
    """
    out: List[Path] = []
    seen = set()
    skipped: List[Tuple[Path, str]] = []

    def add(paths: Iterable[Path]) -> None:
        for p in paths:
            key = os.path.realpath(p)
            if key not in seen:
                seen.add(key)
                out.append(p)

    exts = " ".join(sorted(IMAGE_EXTENSIONS))
    for item in inputs:
        text = os.path.expanduser(_non_empty(item, "an image path"))
        path = Path(text)
        if path.is_dir():
            found = _folder_images(path, skipped)
            if not found:
                raise DatasetError(f"{text}: folder holds no image files ({exts})")
            add(found)
        elif os.path.exists(path):
            problem = _regular_file(path)
            if problem:
                raise DatasetError(f"{text}: {problem}; only regular image files are read")
            add([path])
        elif _GLOB_CHARS.search(text):
            found = []
            for match in sorted(glob.glob(text, recursive=True)):
                m = Path(match)
                if m.is_dir():
                    found.extend(_folder_images(m, skipped))
                elif _is_image(m):
                    problem = _regular_file(m)
                    if problem:
                        skipped.append((m, problem))
                    else:
                        found.append(m)
            if not found:
                raise DatasetError(f"{text}: pattern matches no image files ({exts})")
            add(found)
        else:
            raise DatasetError(f"{text}: no such file or folder")
    return _image_list(out, skipped)


# --------------------------------------------------------------------------- Caltech101


def _caltech_folders(root: Path) -> Tuple[Path, Path]:
    """(101_ObjectCategories folder, Annotations folder) for any accepted ``root``."""
    if not root.exists():
        raise DatasetError(f"{root}: Caltech101 root does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root}: Caltech101 root is not a folder")
    for categories in (root / _CATEGORIES, root / "caltech101" / _CATEGORIES):
        if categories.is_dir():
            return categories, categories.parent / _ANNOTATIONS
    if root.name == _CATEGORIES:
        return root, root.parent / _ANNOTATIONS
    raise DatasetError(
        f"{root}: no {_CATEGORIES}/ folder here; pass the folder that holds it (or the folder itself)"
    )


def caltech101(root: PathLike, *, include_background: bool = False) -> List[ImageRecord]:
    """Lists the Caltech101 images with their class indices and annotation files.

    Layout (Caltech101 distribution): ``101_ObjectCategories/<class>/image_%04d.jpg``
    and ``Annotations/<annotation_class>/annotation_%04d.mat``. The annotation
    folder is the class name except ``Faces`` -> ``Faces_2``, ``Faces_easy`` ->
    ``Faces_3``, ``Motorbikes`` -> ``Motorbikes_16``, ``airplanes`` ->
    ``Airplanes_Side_2`` (:data:`CALTECH101_ANNOTATION_FOLDERS`; torchvision's
    ``Caltech101`` uses the same renames). ``image_0042.jpg`` pairs with
    ``annotation_0042.mat``.

    Class indices are positions in the case-sensitive sort of the class folder
    names (``Faces``, ``Faces_easy``, ``Leopards``, ``Motorbikes`` first, then
    ``accordion`` ...), with ``BACKGROUND_Google`` left out, as torchvision does:
    101 classes, labels 0-100, on the full dataset. A class folder without
    images still takes its index, so indices never shift.

    Args:
      root: the folder holding ``101_ObjectCategories/`` (and usually
        ``Annotations/``), or the ``101_ObjectCategories`` folder itself (then
        ``Annotations/`` is looked for beside it). torchvision's download root
        (``<root>/caltech101/101_ObjectCategories``) is accepted too.
      include_background: also list ``BACKGROUND_Google`` images, with
        ``label=None``, ``class_name="BACKGROUND_Google"`` and no annotation
        (they are clutter, not a class, and take no index).

    Returns:
      Records sorted by class index, then file name; background images, when
      included, come last. ``annotation`` is ``None`` where the ``.mat`` file
      (or the whole ``Annotations/`` folder) is missing. Non-image files,
      hidden files and loose files beside the class folders are ignored, as
      are the top-level ``.mat`` files of ``Annotations/``. An :class:`ImageList`:
      its ``skipped`` names what looked like an image or a class but was left
      out (a FIFO named ``.jpg``, a second name of a photo, a link to a folder
      already listed such as ``l1 -> .``, which takes no class index).

    Raises:
      DatasetError: ``root`` missing, no ``101_ObjectCategories`` folder, or no
        images in it (one line naming the folder).
    """
    categories, annotations = _caltech_folders(Path(os.path.expanduser(os.fspath(root))))
    walk = _Walk()
    names = _class_names(walk, categories)
    classes = [n for n in names if n != CALTECH101_BACKGROUND]
    for group, name in enumerate(names):
        walk.tree(group, categories / name, categories / name, False)
    found = walk.resolve()
    records: List[ImageRecord] = []
    for label, name in enumerate(classes):
        ann_dir = annotations / CALTECH101_ANNOTATION_FOLDERS.get(name, name)
        have = {p.name for p in ann_dir.iterdir() if p.is_file()} if ann_dir.is_dir() else set()
        for image in found.get(names.index(name), []):
            m = _IMAGE_NUMBER.match(image.stem)
            ann_name = f"annotation_{m.group(1)}.mat" if m else None
            annotation = ann_dir / ann_name if ann_name in have else None
            records.append(ImageRecord(image, label, name, annotation))
    if include_background and CALTECH101_BACKGROUND in names:
        records.extend(
            ImageRecord(image, None, CALTECH101_BACKGROUND, None)
            for image in found.get(names.index(CALTECH101_BACKGROUND), [])
        )
    if not records:
        what = "images" if include_background else "class images (BACKGROUND_Google excluded)"
        raise DatasetError(f"{categories}: no {what} found")
    return _image_list(records, walk.skipped)


def _class_names(walk: _Walk, base: Path) -> List[str]:
    """The class folders of ``base`` (not hidden), sorted; claims ``base`` and each of them in ``walk``.

    Real folders are claimed before links, so a link to ``base`` itself or to another class
    folder is skipped (it is no class and takes no index); a link to a folder elsewhere is a class.
    """
    walk.claim(base)
    try:
        with os.scandir(base) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        raise DatasetError(f"{base}: cannot list the folder ({e.strerror or e})") from None
    folders = []
    for e in entries:
        if os.path.isdir(e.path):
            folders.append(e)
        elif e.is_symlink() and not os.path.exists(e.path):
            walk.claim(Path(e.path))  # records why the link cannot be followed
    names = [e.name for e in folders if not e.is_symlink() and walk.claim(Path(e.path))]
    names += [e.name for e in folders if e.is_symlink() and walk.claim(Path(e.path))]
    return sorted(names)


def class_folders(root: PathLike) -> List[ImageRecord]:
    """Lists a folder of class folders: ``<root>/<class>/**/<image>``, one class per subfolder.

    Classes are the subfolders (hidden ones skipped) in case-sensitive order, labelled 0, 1, ...;
    their images are found recursively, sorted. Images directly in ``root`` come first,
    unlabelled (``label=None``, ``class_name=None``). No annotations.

    The walk (:class:`_Walk`) visits each real folder once and reads only regular files: a
    link to ``root`` or to another class folder is no class; ``l1 -> .`` inside a class
    neither loops nor repeats its photos; a FIFO named ``.jpg`` is not listed. Returns an
    :class:`ImageList` whose ``skipped`` says what was left out and why.

    Raises:
      DatasetError: ``root`` is not a folder or holds no image (one line naming it).
    """
    base = Path(os.path.expanduser(os.fspath(root)))
    if not base.is_dir():
        raise DatasetError(f"{base}: not a folder")
    walk = _Walk()
    names = _class_names(walk, base)
    walk.tree(0, base, base, False)
    for group, name in enumerate(names, start=1):
        walk.tree(group, base / name, base / name, True)
    found = walk.resolve()
    records = [ImageRecord(p, None, None, None) for p in found.get(0, [])]
    for label, name in enumerate(names):
        records.extend(ImageRecord(p, label, name, None) for p in found.get(label + 1, []))
    if not records:
        raise DatasetError(f"{base}: no image files in it or in its class folders")
    return _image_list(records, walk.skipped)


def _non_empty(path: PathLike, what: str) -> str:
    """``path`` as a string; DatasetError when it is empty (``Path("")`` is the current folder, read by mistake)."""
    text = os.fspath(path)
    if not text.strip():
        raise DatasetError(f"{what}: an empty path ({text!r}); name a folder (. for the current one)")
    return text


def dataset_records(root: PathLike) -> List[ImageRecord]:
    """The images of a dataset root: Caltech101 if it looks like one, else a folder of class folders.

    A root holding ``101_ObjectCategories/`` (or being it) is read by :func:`caltech101` with
    ``BACKGROUND_Google`` included (unlabelled, not annotated); anything else by :func:`class_folders`.
    Returns their :class:`ImageList` (``.skipped``: what the walk left out, and why).

    Raises:
      DatasetError: an empty path (it would be the current folder), no such folder, or no images
        (one line naming it).
    """
    base = Path(os.path.expanduser(_non_empty(root, "the dataset root")))
    try:
        _caltech_folders(base)
    except DatasetError:
        return class_folders(base)
    return caltech101(base, include_background=True)


# --------------------------------------------------------------------------- sampling


def positive_int(name: str, value) -> int:
    """``value`` as an int >= 1; ValueError naming ``name`` otherwise (bools are refused)."""
    return _int_at_least(name, value, 1, "a positive integer")


def seed_int(name: str, value) -> int:
    """``value`` as an int >= 0 (a random seed); ValueError naming ``name`` otherwise (bools, floats such as
    1.5 and negative numbers, which NumPy refuses without naming anything, are refused)."""
    return _int_at_least(name, value, 0, "a non-negative integer")


def _int_at_least(name: str, value, low: int, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    try:
        n = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be {what}, got {value!r}") from None
    if n < low:
        raise ValueError(f"{name} must be {what}, got {n}")
    return n


def sample_records(
    records: Sequence[ImageRecord],
    *,
    per_class: Optional[int] = None,
    sample: Optional[int] = None,
    seed: int = 0,
) -> List[ImageRecord]:
    """A deterministic random subset of ``records``: K per class or N overall.

    * ``per_class=K``: up to K records of each class (a class is the pair
      ``(label, class_name)``; all of a class when it has fewer). Classes keep
      the order in which they first appear in ``records``; each class's picks
      are sorted by path. Each class draws from its own generator, seeded with
      ``seed`` and a CRC32 of ``(label, class_name)``, so a class's picks do not change
      when other classes are added, removed or reordered.
    * ``sample=N``: N records drawn without replacement from all of them (all
      when there are fewer), returned in their original order.
    * neither: a copy of ``records``.

    Args:
      records: e.g. from :func:`caltech101`.
      per_class: K >= 1, or ``None``.
      sample: N >= 1, or ``None``.
      seed: non-negative integer; the same seed and records give the same subset.

    Returns:
      ``list[ImageRecord]``.

    Raises:
      ValueError: ``per_class`` or ``sample`` not a positive integer, ``seed`` not a
        non-negative integer (message names the argument), or both given.
    """
    if per_class is not None and sample is not None:
        raise ValueError("give per_class or sample, not both")
    seed = seed_int("seed", seed)
    records = list(records)
    if per_class is not None:
        k = positive_int("per_class", per_class)
        groups: Dict[Tuple[Optional[int], Optional[str]], List[ImageRecord]] = {}
        for r in records:
            groups.setdefault((r.label, r.class_name), []).append(r)
        out: List[ImageRecord] = []
        for (label, name), members in groups.items():
            tag = zlib.crc32(f"{label}:{name}".encode())
            rng = np.random.default_rng([seed, tag])
            if len(members) > k:
                members = [members[i] for i in rng.choice(len(members), size=k, replace=False)]
            out.extend(sorted(members, key=lambda r: r.path))
        return out
    if sample is not None:
        n = positive_int("sample", sample)
        if n >= len(records):
            return records
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(records), size=n, replace=False))
        return [records[i] for i in keep]
    return records


# --------------------------------------------------------------------------- annotations


def load_annotation(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Reads a Caltech101 ``annotation_XXXX.mat`` into absolute pixel coordinates.

    File layout (Caltech101 distribution, MATLAB v5): ``box_coord`` is 1x4
    ``[top, bottom, left, right]`` (= ``[y1, y2, x1, x2]``) in pixels;
    ``obj_contour`` is 2xK, row 0 = x, row 1 = y, relative to the box's top-left
    corner. The contour is returned in image coordinates: ``x + left``,
    ``y + top``. Values are used as stored (MATLAB's 1-based pixel convention is
    not shifted), so they may sit up to one pixel from 0-based array indices.

    Args:
      path: the ``.mat`` file.

    Returns:
      ``(box, contour)``: ``box`` float64 ``[4]`` = ``[y1, y2, x1, x2]`` pixels;
      ``contour`` float64 ``[K, 2]`` of absolute ``(x, y)`` pixels, K >= 3.

    Each array is judged by what is stored: its MATLAB class (``whosmat``) must be
    numeric (not logical, text, a struct or a cell) and its values real and finite. The
    file is read without ``mat_dtype`` (which would cast a complex array to real, with a
    ``ComplexWarning`` on the terminal, before any check could see it).

    Raises:
      DatasetError: the file is missing, unreadable, or lacks a 4-value
        ``box_coord`` or a 2xK (K >= 3) finite ``obj_contour``, or either holds
        complex, true/false, text or other non-numeric values (message names it).
    """
    from scipy.io import loadmat, whosmat

    name = os.fspath(path)
    problem = _regular_file(Path(name))
    if problem:  # checked before opening: a FIFO would block the reader forever
        if not os.path.lexists(name):
            raise DatasetError(f"{name}: annotation file does not exist")
        raise DatasetError(f"{name}: cannot use as an annotation: {problem}")
    keys = ("box_coord", "obj_contour")
    try:
        classes = {var: cls for var, _, cls in whosmat(name)}  # MATLAB's own classes: logical is stored as uint8
        data = loadmat(name, variable_names=keys)  # as stored: a complex array stays complex (no cast, no warning)
    except FileNotFoundError:
        raise DatasetError(f"{name}: annotation file does not exist") from None
    except Exception as e:  # scipy raises MatReadError, ValueError, IndexError... on bad files
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DatasetError(f"{name}: cannot read annotation ({detail})") from None
    for key in keys:
        if key not in data:
            raise DatasetError(f"{name}: not a Caltech101 annotation (no {key!r})")
    for key in keys:
        cls = classes.get(key)
        kind = getattr(data[key], "dtype", np.dtype(object)).kind
        if cls not in _MATLAB_NUMERIC or kind not in "iuf":  # bool, complex, text, structs, cells: no coordinates
            if kind == "c":
                what = "complex numbers"
            elif cls in _MATLAB_NUMERIC:  # numeric class, yet no numbers read back (scipy's "Read error: ...")
                what = "values that cannot be read"
            else:
                what = {"logical": "true/false values", "char": "text"}.get(cls, f"a MATLAB {cls} array")
            raise DatasetError(f"{name}: {key} holds {what}, not pixel coordinates")
    try:
        box = np.asarray(data["box_coord"], dtype=np.float64)
        contour = np.asarray(data["obj_contour"], dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{name}: box_coord/obj_contour are not numeric arrays") from None
    if box.size != 4:
        raise DatasetError(
            f"{name}: box_coord has shape {box.shape}, expected 1x4 [top, bottom, left, right]"
        )
    if contour.ndim != 2 or contour.shape[0] != 2 or contour.shape[1] < 3:
        raise DatasetError(f"{name}: obj_contour has shape {contour.shape}, expected 2xK with K >= 3")
    box = box.reshape(4)
    if not (np.isfinite(box).all() and np.isfinite(contour).all()):
        raise DatasetError(f"{name}: box_coord/obj_contour hold non-finite values")
    top, _, left, _ = box
    absolute = np.stack([contour[0] + left, contour[1] + top], axis=1)
    return box, absolute


def _image_size(image_size) -> Tuple[int, int]:
    try:
        height, width = (operator.index(s) for s in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (height, width) integers, got {image_size!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be positive, got {(height, width)}")
    return height, width


def annotation_mask(
    path_or_arrays: Union[PathLike, Tuple[np.ndarray, np.ndarray], np.ndarray],
    image_size: Tuple[int, int],
) -> np.ndarray:
    """The object mask of a Caltech101 annotation: the filled contour polygon.

    Vertices are rounded to the nearest pixel and the polygon is rasterised with
    ``PIL.ImageDraw.polygon`` (interior and boundary pixels set) on an image of
    ``image_size``; parts outside the image are clipped.

    Args:
      path_or_arrays: an annotation ``.mat`` path, the ``(box, contour)`` pair
        from :func:`load_annotation`, or a contour ``[K, 2]`` of absolute
        ``(x, y)`` pixels.
      image_size: ``(height, width)`` of the photo, in pixels.

    Returns:
      bool ``[height, width]``, True on the object.

    Raises:
      DatasetError: unreadable or malformed annotation file (see
        :func:`load_annotation`).
      ValueError: ``image_size`` not two positive integers, or a contour that
        is not ``[K, 2]`` with K >= 3, not finite, or beyond 2**24 pixels (whether
        it describes an object in this photo at all: :func:`check_annotation`).
    """
    from PIL import Image, ImageDraw

    height, width = _image_size(image_size)
    if isinstance(path_or_arrays, (str, os.PathLike)):
        contour = load_annotation(path_or_arrays)[1]
    elif isinstance(path_or_arrays, (tuple, list)):
        if len(path_or_arrays) != 2:
            raise ValueError("path_or_arrays must be a path, (box, contour) or a [K, 2] contour")
        contour = np.asarray(path_or_arrays[1], dtype=np.float64)
    else:
        contour = np.asarray(path_or_arrays, dtype=np.float64)
    if contour.ndim != 2 or contour.shape[1] != 2 or contour.shape[0] < 3:
        raise ValueError(f"contour must be [K, 2] (x, y) with K >= 3, got shape {contour.shape}")
    if not np.isfinite(contour).all():
        raise ValueError("contour holds non-finite values")
    if np.abs(contour).max() > _RASTER_LIMIT:  # the rasteriser's integers; no photo is this large
        raise ValueError(f"contour reaches {np.abs(contour).max():.6g} pixels, beyond any image "
                         f"(limit {_RASTER_LIMIT}); see check_annotation")
    canvas = Image.new("L", (width, height), 0)
    vertices = [(int(x), int(y)) for x, y in np.rint(contour)]
    ImageDraw.Draw(canvas).polygon(vertices, fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


_RASTER_LIMIT = 1 << 24


def box_mask(box: Sequence[float], image_size: Tuple[int, int]) -> np.ndarray:
    """The bounding box of a Caltech101 annotation as a mask: rows ``y1..y2``, columns ``x1..x2``.

    Args:
      box: ``[y1, y2, x1, x2]`` = ``box_coord`` ``[top, bottom, left, right]`` pixels (see
        :func:`load_annotation`); rounded, both ends included, clipped to the image.
      image_size: ``(height, width)`` of the photo, in pixels.

    Returns bool ``[height, width]``, True inside the box (all False if it lies outside).

    Raises:
      ValueError: ``box`` not 4 finite numbers or ``image_size`` not two positive integers.
    """
    height, width = _image_size(image_size)
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.size != 4 or not np.isfinite(b).all():
        raise ValueError(f"box must be 4 finite numbers [y1, y2, x1, x2], got {box!r}")
    y1, y2, x1, x2 = (int(v) for v in np.rint(b))
    mask = np.zeros((height, width), bool)
    mask[max(y1, 0) : max(y2 + 1, 0), max(x1, 0) : max(x2 + 1, 0)] = True
    return mask


#: How far outside the photo an annotation coordinate may lie and still be believed: this share of the
#: side (at least :data:`ANNOTATION_SLACK_PIXELS`); hand-drawn outlines and 1-based boxes overshoot a little.
ANNOTATION_SLACK = 0.1
ANNOTATION_SLACK_PIXELS = 2.0


def _far_outside(yx: np.ndarray, height: int, width: int) -> Optional[Tuple[float, float]]:
    """The first ``(y, x)`` of ``yx [K, 2]`` further outside the image than the slack allows, else None."""
    slack = np.maximum(ANNOTATION_SLACK * np.array([height, width], np.float64), ANNOTATION_SLACK_PIXELS)
    bad = ((yx < -slack) | (yx > np.array([height - 1, width - 1]) + slack)).any(axis=1)
    if not bad.any():
        return None
    y, x = yx[int(np.argmax(bad))]
    return float(y), float(x)


def check_annotation(box: Sequence[float], contour, image_size: Tuple[int, int]) -> None:
    """Refuses an annotation that cannot describe an object in a photo of ``image_size``.

    Caltech101's files are mostly right, but a box or outline from another photo, a
    file written by another tool, or damage gives numbers that describe nothing here;
    scoring them would count a meaningless 0 (or 1) in the means. Refused, each with its
    reason: a box that is inverted (top below bottom, left right of right), that lies
    entirely outside the photo, or with a coordinate far outside it; an outline
    (``contour [K, 2]`` absolute ``(x, y)``, K >= 3, finite) with a vertex far outside the
    photo, that encloses no area, or that covers no pixel of it. "Far" is more than
    :data:`ANNOTATION_SLACK` of the side (at least :data:`ANNOTATION_SLACK_PIXELS` pixels)
    beyond the edge; closer overshoots are clipped (hand-drawn outlines, 1-based boxes).

    Args:
      box: ``[y1, y2, x1, x2]`` pixels (:func:`load_annotation`).
      contour: ``[K, 2]`` absolute ``(x, y)`` pixels (:func:`load_annotation`).
      image_size: ``(height, width)`` of the photo as stored (before any EXIF turn).

    Raises:
      DatasetError: one line saying what is wrong (the caller adds the file's name).
      ValueError: ``image_size`` not two positive integers.
    """
    height, width = _image_size(image_size)
    size = f"{width} x {height}"
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.size != 4 or not np.isfinite(b).all():
        raise DatasetError(f"box_coord must be 4 finite numbers [top, bottom, left, right], got {b.tolist()}")
    top, bottom, left, right = (float(v) for v in b)
    shown = f"[top, bottom, left, right] = [{top:.6g}, {bottom:.6g}, {left:.6g}, {right:.6g}]"
    if top > bottom or left > right:
        raise DatasetError(f"box_coord is inverted: {shown}")
    if not box_mask(b, (height, width)).any():
        raise DatasetError(f"box_coord {shown} lies entirely outside the {size} image")
    if _far_outside(np.array([[top, left], [bottom, right]]), height, width) is not None:
        raise DatasetError(f"box_coord {shown} reaches far outside the {size} image")
    c = np.asarray(contour)
    if c.dtype.kind not in "iuf":
        raise DatasetError(f"obj_contour holds {c.dtype} values, not pixel coordinates")
    c = c.astype(np.float64)
    if c.ndim != 2 or c.shape[1] != 2 or c.shape[0] < 3 or not np.isfinite(c).all():
        raise DatasetError(f"obj_contour must be K >= 3 finite (x, y) points, got shape {c.shape}")
    far = _far_outside(c[:, ::-1], height, width)
    if far is not None:
        raise DatasetError(f"obj_contour reaches (x, y) = ({far[1]:.6g}, {far[0]:.6g}), far outside the {size} "
                           "image")
    x, y = c[:, 0], c[:, 1]
    if abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) < 1.0:  # shoelace: twice the signed area
        raise DatasetError("obj_contour encloses no area (under half a pixel: its points lie on a line)")
    if not annotation_mask(c, (height, width)).any():
        raise DatasetError(f"obj_contour covers no pixel of the {size} image")


# --------------------------------------------------------------------------- the images of a run

_read_caltech101 = caltech101  # gather_images' keyword argument shadows the reader's name

SAMPLE_PHOTO = "grace_hopper.jpg"  # matplotlib's bundled photo, the default image


@dataclass(frozen=True)
class ImageItem:
    """One input image: its ``path``, the short unique ``display`` name, and its ``true_class`` if known."""

    path: Path
    display: str
    true_class: Optional[str] = None


def display_names(paths: Sequence[Path]) -> List[str]:
    """Short unique names: paths relative to their common folder when that is short (at most
    3 parts, e.g. ``airplanes/image_0001.jpg`` for a folder of class folders), otherwise the
    shortest unique trailing parts (``name``, then ``parent/name``...)."""
    paths = [Path(p) for p in paths]
    if len(paths) > 1:
        absolute = [os.path.abspath(p) for p in paths]
        try:
            common = os.path.commonpath(absolute)
        except ValueError:  # different drives
            common = None
        if common is not None:
            rel = [Path(os.path.relpath(a, common)) for a in absolute]
            if all(len(r.parts) <= 3 for r in rel) and len({r.as_posix() for r in rel}) == len(rel):
                return [r.as_posix() for r in rel]
    depth = [1] * len(paths)
    while True:
        names = ["/".join(p.parts[-d:]) for p, d in zip(paths, depth, strict=True)]
        seen: Dict[str, List[int]] = {}
        for i, n in enumerate(names):
            seen.setdefault(n, []).append(i)
        grow = [i for group in seen.values() if len(group) > 1 for i in group if depth[i] < len(paths[i].parts)]
        if not grow:
            return names
        for i in grow:
            depth[i] += 1


def gather_images(images: Optional[Sequence] = None, *, caltech101=None, include_background: bool = False,
                  per_class: Optional[int] = None, sample: Optional[int] = None, seed: int = 0) -> List[ImageItem]:
    """The images of a run, in order.

    Args:
      images: files, folders (searched recursively) or glob patterns; None and no
        ``caltech101``: matplotlib's bundled photo of Grace Hopper. One folder of class folders
        (no image at its top, images in two or more subfolders, as ``vitjax-evaluate`` reads a
        dataset) gives each image its subfolder's name as its true class; anything else none.
      caltech101: a Caltech101 root (holding ``101_ObjectCategories/``); the class is the true label.
      include_background: with ``caltech101``, also the ``BACKGROUND_Google`` images.
      per_class, sample, seed: a seeded random choice (see :func:`vitjax.data.datasets.sample_records`).

    Returns:
      :class:`ImageList` of :class:`ImageItem`; its ``skipped`` lists what the folder walks
      left out (:func:`image_files`, :func:`caltech101`), and then one
      :class:`vitjax.errors.VitjaxWarning` says so (:func:`skipped_note`).

    Raises:
      ValueError: (``DatasetError``) a missing path or a folder without images, a
        tree that is not Caltech101, or ``include_background`` without ``caltech101``.
    """
    if caltech101 is not None:
        _non_empty(caltech101, "the Caltech101 root")
        try:
            records = _read_caltech101(caltech101, include_background=include_background)
        except DatasetError as e:
            if "101_ObjectCategories" not in str(e):
                raise
            raise DatasetError(f"{e}; for a plain folder of class folders use --images DIR --per-class K") from None
    else:
        if include_background:
            raise DatasetError("--include-background needs --caltech101")
        if images:
            paths = image_files(images)
        else:
            import matplotlib.cbook

            paths = [Path(matplotlib.cbook.get_sample_data(SAMPLE_PHOTO, asfileobj=False))]
        classes = _top_folders(images, paths) if images else None
        records = [ImageRecord(p, None, classes[i] if classes else p.parent.name, None) for i, p in enumerate(paths)]
    skipped = getattr(records, "skipped", ()) if caltech101 is not None else paths.skipped if images else ()
    if skipped:
        warnings.warn(skipped_note(skipped, caltech101), VitjaxWarning, stacklevel=2)
    records = sample_records(records, per_class=per_class, sample=sample, seed=seed)
    if caltech101 is not None:
        return _image_list([ImageItem(r.path, f"{r.class_name}/{r.path.name}", r.class_name) for r in records],
                           skipped)
    names = display_names([r.path for r in records])
    truth = caltech101 is None and images and classes  # a folder of class folders: its folders name the truth
    return _image_list([ImageItem(r.path, n, r.class_name if truth else None)
                        for r, n in zip(records, names, strict=True)], skipped)


def _top_folders(images: Sequence, paths: Sequence[Path]) -> Optional[List[str]]:
    """Each image's class when ``images`` is one folder of class folders, else None.

    A folder of class folders (as :func:`class_folders` reads one for ``vitjax-evaluate``): the one
    folder given holds no image itself, and its images lie in at least two subfolders; an image's
    class is the name of the subfolder of that folder it lies in (at any depth below it).
    """
    if len(images) != 1 or not os.path.isdir(os.path.expanduser(os.fspath(images[0]))):
        return None
    base = os.path.abspath(os.path.expanduser(os.fspath(images[0])))
    out = []
    for p in paths:
        parts = Path(os.path.relpath(os.path.abspath(p), base)).parts
        if len(parts) < 2 or parts[0] == "..":
            return None  # an image at the top (or outside): not a folder of class folders
        out.append(parts[0])
    return out if len(set(out)) >= 2 else None
