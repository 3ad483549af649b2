"""Caltech101 / image-list readers and annotation masks, on a fixture tree written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat
from support.helpers import SAMPLES

from vitjax.data.datasets import (
    DatasetError,
    ImageRecord,
    annotation_mask,
    box_mask,
    caltech101,
    check_annotation,
    class_folders,
    dataset_records,
    gather_images,
    image_files,
    load_annotation,
    sample_records,
)
from vitjax.errors import VitjaxWarning

# class folder -> number of images (image_0001.jpg ...)
CLASSES = {
    "Faces": 3,
    "Faces_easy": 2,
    "Leopards": 2,
    "Motorbikes": 3,
    "airplanes": 2,
    "ant": 4,
}
BACKGROUND = 3
RENAMES = {
    "Faces": "Faces_2",
    "Faces_easy": "Faces_3",
    "Motorbikes": "Motorbikes_16",
    "airplanes": "Airplanes_Side_2",
}
# annotation files deliberately absent: all of Leopards (no folder), ant #3
MISSING = {("ant", 3)}

# The test polygon: box [top, bottom, left, right] and a contour relative to its top-left.
BOX = (5, 30, 10, 50)
REL = np.array([[0.0, 30.0, 38.0, 12.0, 0.0], [0.0, 2.0, 18.0, 22.0, 12.0]])  # rows x, y
IMAGE_HW = (40, 60)


def _jpeg(path: Path, mode: str = "RGB", size=(24, 16), value=128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, 40)
    Image.new(mode, size, color).save(path, format="JPEG")


def _annotation(path: Path, box=BOX, rel=REL) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # dtypes as in the distribution: uint16 box, float64 contour
    savemat(path, {"box_coord": np.array([box], dtype=np.uint16), "obj_contour": np.asarray(rel, np.float64)})


@pytest.fixture
def caltech(tmp_path) -> Path:
    """A miniature Caltech101 tree: ``<root>/101_ObjectCategories`` and ``<root>/Annotations``."""
    root = tmp_path / "caltech"
    cats = root / "101_ObjectCategories"
    ann = root / "Annotations"
    for name, n in CLASSES.items():
        for i in range(1, n + 1):
            gray = name == "ant" and i == 2
            _jpeg(cats / name / f"image_{i:04d}.jpg", mode="L" if gray else "RGB", value=20 * i)
            if name != "Leopards" and (name, i) not in MISSING:
                _annotation(ann / RENAMES.get(name, name) / f"annotation_{i:04d}.mat")
    for i in range(1, BACKGROUND + 1):
        _jpeg(cats / "BACKGROUND_Google" / f"image_{i:04d}.jpg")
    (cats / "ant" / "Thumbs.db").write_bytes(b"not an image")
    (cats / "ant" / "._image_0001.jpg").write_bytes(b"macOS resource fork")
    (cats / "stray.txt").write_text("loose file beside the class folders")
    # stray top-level .mat files in Annotations/, as in the distribution
    savemat(ann / "README.mat", {"note": np.array([1.0])})
    savemat(ann / "Leopards.mat", {"note": np.array([2.0])})
    return root


def _one_line(excinfo, *needles) -> None:
    msg = str(excinfo.value)
    assert "\n" not in msg
    for needle in needles:
        assert str(needle) in msg, (needle, msg)


# --------------------------------------------------------------------------- caltech101


def test_class_order_is_case_sensitive_and_background_excluded(caltech):
    records = caltech101(caltech)
    names = sorted({(r.label, r.class_name) for r in records})
    assert names == [
        (0, "Faces"),
        (1, "Faces_easy"),
        (2, "Leopards"),
        (3, "Motorbikes"),
        (4, "airplanes"),
        (5, "ant"),
    ]
    assert all(r.class_name != "BACKGROUND_Google" for r in records)
    assert len(records) == sum(CLASSES.values())
    # sorted by label, then file name; only images listed
    assert [r.label for r in records] == sorted(r.label for r in records)
    ant = [r.path.name for r in records if r.class_name == "ant"]
    assert ant == ["image_0001.jpg", "image_0002.jpg", "image_0003.jpg", "image_0004.jpg"]
    assert all(isinstance(r, ImageRecord) and isinstance(r.path, Path) and r.path.is_file() for r in records)


def test_background_included_without_label_or_annotation(caltech):
    records = caltech101(caltech, include_background=True)
    background = [r for r in records if r.class_name == "BACKGROUND_Google"]
    assert len(background) == BACKGROUND
    assert all(r.label is None and r.annotation is None for r in background)
    assert records[-BACKGROUND:] == background  # background last, class indices unchanged
    assert [r for r in records if r.label is not None] == caltech101(caltech)


def test_annotation_renames_resolved(caltech):
    records = {(r.class_name, r.path.name): r for r in caltech101(caltech)}
    for image_folder, ann_folder in RENAMES.items():
        rec = records[(image_folder, "image_0002.jpg")]
        assert rec.annotation == caltech / "Annotations" / ann_folder / "annotation_0002.mat"
        assert rec.annotation.is_file()
    assert (
        records[("ant", "image_0004.jpg")].annotation
        == caltech / "Annotations" / "ant" / "annotation_0004.mat"
    )


def test_missing_annotation_is_none(caltech):
    records = {(r.class_name, r.path.name): r for r in caltech101(caltech)}
    assert records[("ant", "image_0003.jpg")].annotation is None
    assert records[("ant", "image_0001.jpg")].annotation is not None
    assert all(records[("Leopards", f"image_{i:04d}.jpg")].annotation is None for i in (1, 2))
    with_ann = sum(r.annotation is not None for r in records.values())
    assert with_ann == sum(CLASSES.values()) - CLASSES["Leopards"] - len(MISSING)


def test_accepts_categories_folder_itself_and_missing_annotations(caltech, tmp_path):
    assert caltech101(caltech / "101_ObjectCategories") == caltech101(caltech)
    # no Annotations/ at all: every annotation None, labels unchanged
    only = tmp_path / "only"
    only.mkdir()
    (caltech / "101_ObjectCategories").rename(only / "101_ObjectCategories")
    records = caltech101(only)
    assert len(records) == sum(CLASSES.values())
    assert all(r.annotation is None for r in records)


def test_grayscale_image_is_listed(caltech):
    (gray,) = [r for r in caltech101(caltech) if r.class_name == "ant" and r.path.name == "image_0002.jpg"]
    with Image.open(gray.path) as im:
        assert im.mode == "L"
        width, height = im.size
    mask = annotation_mask(gray.annotation, (height, width))
    assert mask.shape == (height, width) and mask.dtype == bool


def test_caltech_errors(caltech, tmp_path):
    with pytest.raises(DatasetError) as e:
        caltech101(tmp_path / "nowhere")
    _one_line(e, tmp_path / "nowhere")
    with pytest.raises(DatasetError) as e:
        caltech101(caltech / "Annotations")
    _one_line(e, "101_ObjectCategories")
    empty = tmp_path / "empty" / "101_ObjectCategories"
    (empty / "BACKGROUND_Google").mkdir(parents=True)
    _jpeg(empty / "BACKGROUND_Google" / "image_0001.jpg")
    (empty / "ant").mkdir()
    with pytest.raises(DatasetError) as e:
        caltech101(empty.parent)
    _one_line(e, empty)
    assert len(caltech101(empty.parent, include_background=True)) == 1
    assert issubclass(DatasetError, ValueError)


# --------------------------------------------------------------------------- sampling


def _fake_records(sizes):
    return [
        ImageRecord(Path(f"/data/{name}/image_{i:04d}.jpg"), label, name, None)
        for label, (name, n) in enumerate(sizes.items())
        for i in range(1, n + 1)
    ]


def test_per_class_sampling_counts_and_determinism():
    records = _fake_records({"A": 30, "B": 2, "C": 12})
    picked = sample_records(records, per_class=5, seed=3)
    counts = {}
    for r in picked:
        counts[r.class_name] = counts.get(r.class_name, 0) + 1
    assert counts == {"A": 5, "B": 2, "C": 5}
    assert [r.class_name for r in picked] == ["A"] * 5 + ["B"] * 2 + ["C"] * 5
    for name in "ABC":
        paths = [r.path for r in picked if r.class_name == name]
        assert paths == sorted(paths)
    assert set(picked) <= set(records)
    assert sample_records(records, per_class=5, seed=3) == picked
    draws = {tuple(r.path for r in sample_records(records, per_class=5, seed=s)) for s in range(5)}
    assert len(draws) > 1  # the seed matters
    # a class's picks do not depend on the other classes
    alone = sample_records([r for r in records if r.class_name == "A"], per_class=5, seed=3)
    assert alone == [r for r in picked if r.class_name == "A"]


def test_overall_sampling():
    records = _fake_records({"A": 30, "B": 20})
    picked = sample_records(records, sample=7, seed=1)
    assert len(picked) == 7 and len(set(picked)) == 7
    assert picked == [r for r in records if r in set(picked)]  # original order kept
    assert sample_records(records, sample=7, seed=1) == picked
    assert len({tuple(sample_records(records, sample=7, seed=s)) for s in range(5)}) > 1
    assert sample_records(records, sample=500) == records
    assert sample_records(records) == records


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "3"])
def test_bad_per_class_value(bad):
    with pytest.raises(ValueError, match="per_class"):
        sample_records(_fake_records({"A": 3}), per_class=bad)


def test_bad_sample_value_and_both():
    records = _fake_records({"A": 3})
    with pytest.raises(ValueError, match="sample"):
        sample_records(records, sample=0)
    with pytest.raises(ValueError, match="per_class or sample"):
        sample_records(records, per_class=1, sample=1)


# --------------------------------------------------------------------------- annotations


def _polygon_area_perimeter(points):
    x, y = points[:, 0], points[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    perimeter = np.linalg.norm(points - np.roll(points, -1, axis=0), axis=1).sum()
    return area, perimeter


def test_load_annotation_absolute_coordinates(tmp_path):
    path = tmp_path / "annotation_0001.mat"
    _annotation(path)
    box, contour = load_annotation(path)
    assert box.dtype == np.float64 and box.shape == (4,)
    np.testing.assert_array_equal(box, [5.0, 30.0, 10.0, 50.0])  # [y1, y2, x1, x2]
    assert contour.dtype == np.float64 and contour.shape == (5, 2)
    np.testing.assert_array_equal(contour[:, 0], REL[0] + 10.0)  # x + left
    np.testing.assert_array_equal(contour[:, 1], REL[1] + 5.0)  # y + top
    np.testing.assert_array_equal(contour[2], [48.0, 23.0])


def test_annotation_mask(tmp_path):
    path = tmp_path / "annotation_0001.mat"
    _annotation(path)
    mask = annotation_mask(path, IMAGE_HW)
    assert mask.shape == IMAGE_HW and mask.dtype == bool
    _, contour = load_annotation(path)
    cx, cy = contour.mean(axis=0)
    assert mask[int(round(cy)), int(round(cx))]  # inside the object
    assert not mask[0, 0] and not mask[39, 59]  # far outside
    assert not mask[4, 10] and not mask[12, 9]  # just outside the box's top-left corner
    assert not mask[:, 49:].any() and not mask[28:].any()  # contour reaches x = 48, y = 27
    area, perimeter = _polygon_area_perimeter(contour)
    assert abs(mask.sum() - area) <= perimeter / 2 + 4, (mask.sum(), area)
    # same result from the arrays or the bare contour
    np.testing.assert_array_equal(annotation_mask(load_annotation(path), IMAGE_HW), mask)
    np.testing.assert_array_equal(annotation_mask(contour, IMAGE_HW), mask)
    # (height, width), not (width, height)
    assert annotation_mask(contour, (60, 40)).shape == (60, 40)


def test_mask_of_rectangle_counts_boundary_pixels():
    square = np.array([[2.0, 3.0], [7.0, 3.0], [7.0, 6.0], [2.0, 6.0]])
    mask = annotation_mask(square, (10, 12))
    expected = np.zeros((10, 12), bool)
    expected[3:7, 2:8] = True
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize(
    "content",
    [
        {"box_coord": np.array([[1, 2, 3, 4]], np.uint16)},  # no obj_contour
        {"box_coord": np.array([[1, 2, 3]], np.uint16), "obj_contour": REL},
        {"box_coord": np.array([BOX], np.uint16), "obj_contour": REL.T},  # K x 2
        {"box_coord": np.array([BOX], np.uint16), "obj_contour": REL[:, :2]},  # 2 points
    ],
)
def test_malformed_annotation(tmp_path, content):
    path = tmp_path / "annotation_0009.mat"
    savemat(path, content)
    with pytest.raises(DatasetError) as e:
        load_annotation(path)
    _one_line(e, path)
    with pytest.raises(DatasetError):
        annotation_mask(path, IMAGE_HW)


def test_unreadable_annotation(tmp_path):
    for name, data in [("garbage.mat", b"garbage" * 20), ("empty.mat", b"")]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(DatasetError) as e:
            load_annotation(path)
        _one_line(e, path)
    with pytest.raises(DatasetError) as e:
        load_annotation(tmp_path / "absent.mat")
    _one_line(e, "absent.mat")


def test_mask_bad_size():
    with pytest.raises(ValueError, match="image_size"):
        annotation_mask(np.zeros((3, 2)), (0, 5))


# --------------------------------------------------------------------------- image_files


@pytest.fixture
def photos(tmp_path) -> Path:
    root = tmp_path / "photos"
    _jpeg(root / "b.jpg")
    _jpeg(root / "a.JPG")
    _jpeg(root / "sub" / "c.jpeg")
    Image.new("RGB", (8, 8)).save(root / "sub" / "d.png")
    (root / "deep" / "er").mkdir(parents=True)
    Image.new("L", (8, 8)).save(root / "deep" / "er" / "e.TIFF")
    (root / "notes.txt").write_text("not an image")
    (root / "annotation_0001.mat").write_bytes(b"x")
    (root / ".hidden.jpg").write_bytes(b"x")
    (root / ".cache").mkdir()
    _jpeg(root / ".cache" / "thumb.jpg")
    return root


def test_image_files_folder_is_recursive_sorted_and_filtered(photos):
    found = image_files([photos])
    rel = [p.relative_to(photos).as_posix() for p in found]
    assert rel == ["a.JPG", "b.jpg", "deep/er/e.TIFF", "sub/c.jpeg", "sub/d.png"]
    assert image_files([str(photos)]) == found


def test_image_files_glob_file_and_dedup(photos):
    assert image_files([str(photos / "*.jpg")]) == [photos / "b.jpg"]
    assert image_files([str(photos / "**" / "*.png")]) == [photos / "sub" / "d.png"]
    assert image_files([str(photos / "s*")]) == [photos / "sub" / "c.jpeg", photos / "sub" / "d.png"]
    # an explicit file is kept whatever its extension
    assert image_files([photos / "notes.txt"]) == [photos / "notes.txt"]
    mixed = image_files(
        [photos / "sub" / "d.png", photos, str(photos / "*.jpg"), photos / "sub" / ".." / "b.jpg"]
    )
    rel = [p.relative_to(photos).as_posix() for p in mixed]
    assert rel == ["sub/d.png", "a.JPG", "b.jpg", "deep/er/e.TIFF", "sub/c.jpeg"]
    assert image_files([]) == []


def test_image_files_errors(photos, tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(DatasetError) as e:
        image_files([photos, missing])
    _one_line(e, missing)
    with pytest.raises(DatasetError) as e:
        image_files([str(photos / "*.gif")])
    _one_line(e, "*.gif")
    (tmp_path / "void").mkdir()
    with pytest.raises(DatasetError) as e:
        image_files([tmp_path / "void"])
    _one_line(e, tmp_path / "void")


def test_image_files_on_caltech_tree(caltech):
    found = image_files([caltech / "101_ObjectCategories"])
    assert len(found) == sum(CLASSES.values()) + BACKGROUND
    assert found[0].relative_to(caltech).as_posix() == "101_ObjectCategories/BACKGROUND_Google/image_0001.jpg"


def test_real_samples_when_present():
    if not SAMPLES.is_dir():
        pytest.skip(f"{SAMPLES} not present (real Caltech101 samples live outside the repository)")
    found = image_files([SAMPLES])
    assert len(found) == 25
    assert len({p.parent.name for p in found}) == 5
    assert all(p.suffix == ".jpg" for p in found)


# ---------------------------------------------------------------- contour rasterisation, boxes, class folders

L_SHAPE = """
..........
..#####...
..#####...
..#####...
..###.....
..###.....
..###.....
..........
"""


def _drawing(text: str) -> np.ndarray:
    return np.array([[c == "#" for c in row] for row in text.strip("\n").splitlines()])


def test_contour_rasterisation_hand_drawn_l_shape(tmp_path):
    """A non-convex polygon read from a .mat (contour relative to box_coord) fills exactly the drawn pixels."""
    top, left = 1, 2
    vertices = np.array([[2, 1], [6, 1], [6, 3], [4, 3], [4, 6], [2, 6]], float)  # absolute (x, y)
    rel = (vertices - [left, top]).T  # 2 x K, rows x and y, relative to the box's top-left
    path = tmp_path / "annotation_0001.mat"
    _annotation(path, box=(top, 6, left, 6), rel=rel)
    expected = _drawing(L_SHAPE)
    np.testing.assert_array_equal(annotation_mask(path, expected.shape), expected)


def test_contour_rasterisation_hand_drawn_triangle():
    """Boundary pixels belong to the object: the 45-degree edge x + y = 6 runs through pixel centres."""
    expected = _drawing("""
.......
.#####.
.####..
.###...
.##....
.#.....
.......
""")
    got = annotation_mask(np.array([[1.0, 1.0], [5.0, 1.0], [1.0, 5.0]]), expected.shape)
    np.testing.assert_array_equal(got, expected)


def test_box_mask():
    m = box_mask([1, 3, 2, 5], (5, 8))  # [y1, y2, x1, x2], both ends included
    expected = np.zeros((5, 8), bool)
    expected[1:4, 2:6] = True
    np.testing.assert_array_equal(m, expected)
    clipped = box_mask(np.array([[-3.0, 2.4, 6.6, 20.0]]), (4, 9))  # rounded, clipped, 1x4 accepted
    expected = np.zeros((4, 9), bool)
    expected[0:3, 7:9] = True
    np.testing.assert_array_equal(clipped, expected)
    assert not box_mask([10, 12, 0, 3], (4, 4)).any()
    with pytest.raises(ValueError, match="box"):
        box_mask([1, 2, 3], (4, 4))
    with pytest.raises(ValueError, match="image_size"):
        box_mask([1, 2, 3, 4], (0, 4))


def test_class_folders_and_dataset_records(tmp_path, caltech):
    root = tmp_path / "folders"
    _jpeg(root / "zebra" / "a.jpg")
    _jpeg(root / "Apple" / "sub" / "b.jpg")
    _jpeg(root / "Apple" / "c.jpg")
    _jpeg(root / "loose.jpg")
    (root / ".hidden").mkdir()
    _jpeg(root / ".hidden" / "x.jpg")
    recs = class_folders(root)
    assert [(r.path.relative_to(root).as_posix(), r.label, r.class_name) for r in recs] == [
        ("loose.jpg", None, None),
        ("Apple/c.jpg", 0, "Apple"),
        ("Apple/sub/b.jpg", 0, "Apple"),
        ("zebra/a.jpg", 1, "zebra"),
    ]
    assert all(r.annotation is None for r in recs)
    assert dataset_records(root) == recs
    # a Caltech101 root is read as Caltech101, background included
    assert dataset_records(caltech) == caltech101(caltech, include_background=True)
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DatasetError, match="empty"):
        class_folders(tmp_path / "empty")
    with pytest.raises(DatasetError, match="not a folder"):
        dataset_records(tmp_path / "nope")


# --------------------------------------------------------------------------- folder walks that end (#17)


def _within(seconds, fn, *args, **kwargs):
    """``fn(*args)`` in a daemon thread; fails (instead of hanging the suite) if it has not returned in time."""
    import threading

    box = {}

    def target():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 -- handed to the test
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{fn.__name__} did not return within {seconds} s (a looping walk or a FIFO)"
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.fixture
def tangled(tmp_path) -> Path:
    """Class folders with every kind of entry a walk must not follow twice or open: self links, a link to
    the root and to a sibling class, a second name of a photo, a FIFO named like a photo, a dangling link."""
    import os

    root = tmp_path / "tangled"
    _jpeg(root / "ant" / "a1.jpg")
    _jpeg(root / "ant" / "sub" / "a2.jpg")
    _jpeg(root / "bee" / "b1.jpg")
    os.symlink(".", root / "ant" / "l1")  # l1 -> .  and  l2 -> .: an exponential walk before
    os.symlink(".", root / "ant" / "l2")
    os.symlink("../bee", root / "ant" / "to_bee")  # bee's photos are bee's, not ant's too
    os.symlink("a1.jpg", root / "ant" / "again.jpg")  # a second name: listed once
    os.mkfifo(root / "ant" / "pipe.jpg")  # opening it would block forever
    os.symlink("nowhere.jpg", root / "ant" / "dangling.jpg")
    os.symlink(".", root / "self")  # the root again: no class, no index
    outside = tmp_path / "elsewhere"
    _jpeg(outside / "w1.jpg")
    os.symlink(outside, root / "wasp")  # a class kept elsewhere: a class like any other
    return root


def _reasons(listing, root):
    return {Path(p).relative_to(root).as_posix(): why.split(" (")[0] for p, why in listing.skipped}


SKIPPED = {
    "ant/l1": "a link to a folder already listed",
    "ant/l2": "a link to a folder already listed",
    "ant/to_bee": "a link to a folder already listed",
    "ant/again.jpg": "the same file as " + "{root}/ant/a1.jpg",
    "ant/pipe.jpg": "not a regular file",
    "ant/dangling.jpg": "a link that cannot be followed",
}


def _expected_skips(root, *, top=True):
    out = {k: v.format(root=root) for k, v in SKIPPED.items()}
    if top:
        out["self"] = "a link to a folder already listed"
    return out


def test_class_folders_visit_each_real_folder_once_and_read_only_regular_files(tangled):
    records = _within(60, class_folders, tangled)
    assert [(r.path.relative_to(tangled).as_posix(), r.label, r.class_name) for r in records] == [
        ("ant/a1.jpg", 0, "ant"),
        ("ant/sub/a2.jpg", 0, "ant"),
        ("bee/b1.jpg", 1, "bee"),
        ("wasp/w1.jpg", 2, "wasp"),
    ]
    assert _reasons(records, tangled) == _expected_skips(tangled)
    assert dict(records.skipped)[tangled / "ant" / "pipe.jpg"] == "not a regular file (a FIFO)"
    assert _within(60, dataset_records, tangled) == records


def test_image_files_walks_each_folder_once_and_refuses_a_fifo_by_name(tangled):
    found = _within(60, image_files, [tangled])
    assert [p.relative_to(tangled).as_posix() for p in found] == ["ant/a1.jpg", "ant/sub/a2.jpg", "bee/b1.jpg",
                                                                  "wasp/w1.jpg"]
    assert _reasons(found, tangled) == _expected_skips(tangled)
    with pytest.raises(DatasetError) as e:
        _within(60, image_files, [tangled / "ant" / "pipe.jpg"])
    _one_line(e, tangled / "ant" / "pipe.jpg", "not a regular file (a FIFO)")
    found = _within(60, image_files, [str(tangled / "ant" / "*.jpg")])  # a pattern matching the FIFO too
    assert [p.name for p in found] == ["a1.jpg"]  # again.jpg: the same file, dropped as documented
    assert _reasons(found, tangled) == {"ant/pipe.jpg": "not a regular file",
                                        "ant/dangling.jpg": "a link that cannot be followed"}


def test_a_real_name_wins_over_a_link_whatever_the_order(tmp_path):
    import os

    root = tmp_path / "cls"
    _jpeg(root / "x" / "photo.jpg")
    os.symlink("x", root / "a_link")  # sorts before its target
    os.symlink("x/photo.jpg", root / "a_photo.jpg")
    found = image_files([root])
    assert found == [root / "x" / "photo.jpg"]
    assert _reasons(found, root) == {"a_link": "a link to a folder already listed",
                                     "a_photo.jpg": f"the same file as {root / 'x' / 'photo.jpg'}"}


def test_caltech101_skips_links_and_fifos_without_shifting_labels(caltech):
    import os

    cats = caltech / "101_ObjectCategories"
    os.symlink(".", cats / "aaa_self")  # sorts among the classes; before, it took index 4 and shifted the rest
    os.symlink("Faces", cats / "Faces_link")
    os.mkfifo(cats / "ant" / "image_0009.jpg")
    os.symlink("image_0001.jpg", cats / "ant" / "image_0010.jpg")
    records = _within(60, caltech101, caltech)
    assert {r.class_name: r.label for r in records} == {"Faces": 0, "Faces_easy": 1, "Leopards": 2, "Motorbikes": 3,
                                                        "airplanes": 4, "ant": 5}
    assert [r.path.name for r in records if r.class_name == "ant"] == [f"image_{i:04d}.jpg" for i in range(1, 5)]
    assert _reasons(records, caltech) == {
        "101_ObjectCategories/aaa_self": "a link to a folder already listed",
        "101_ObjectCategories/Faces_link": "a link to a folder already listed",
        "101_ObjectCategories/ant/image_0009.jpg": "not a regular file",
        "101_ObjectCategories/ant/image_0010.jpg": f"the same file as {cats / 'ant' / 'image_0001.jpg'}",
    }


def test_gather_images_says_what_it_skipped(tangled):
    with pytest.warns(VitjaxWarning) as caught:
        items = _within(60, gather_images, [tangled])
    assert [i.display for i in items] == ["ant/a1.jpg", "ant/sub/a2.jpg", "bee/b1.jpg", "wasp/w1.jpg"]
    (message,) = [str(w.message) for w in caught]
    assert "\n" not in message and message.startswith("skipped 7 entries: ") and "and 4 more" in message
    assert len(items.skipped) == 7


def test_an_annotation_that_is_a_fifo_is_refused_without_opening_it(tmp_path):
    import os

    fifo = tmp_path / "annotation_0001.mat"
    os.mkfifo(fifo)
    with pytest.raises(DatasetError) as e:
        _within(60, load_annotation, fifo)
    _one_line(e, fifo, "not a regular file (a FIFO)")


# --------------------------------------------------------------------------- annotations that describe nothing (#17)


@pytest.mark.parametrize("box, contour, needle", [
    ([100, 130, 200, 250], [[110, 120, 115], [210, 210, 240]], "lies entirely outside the 60 x 40 image"),
    ([-50, -10, 5, 30], [[10, 20, 15], [-40, -40, -20]], "lies entirely outside"),
    ([30, 5, 8, 40], [[10, 20, 15], [10, 10, 20]], "box_coord is inverted"),
    ([5, 30, 40, 8], [[10, 20, 15], [10, 10, 20]], "box_coord is inverted"),
    ([5, 1e20, 8, 40], [[10, 20, 15], [10, 10, 20]], "reaches far outside"),
    ([5, 30, 8, 40], [[10, 1e20, 15], [10, 10, 20]], "obj_contour reaches (x, y) = (1e+20, 10)"),
    ([5, 30, 8, 40], [[10, 20, 15], [10, -1e6, 20]], "far outside the 60 x 40 image"),
    ([5, 30, 8, 40], [[10, 20, 30], [10, 10, 10]], "encloses no area"),
    ([5, 30, 8, 40], [[-30, -20, -25], [10, 10, 20]], "far outside"),
    ([5, 30, 8, 40], [[-5, -2, -4], [10, 10, 20]], "covers no pixel"),
    ([5, 30, 8, 40], np.array([[True, False, True], [False, True, True]]), "holds bool values"),
    ([5, 30, 8, 40], [[10, np.nan, 15], [10, 10, 20]], "finite"),
    ([5, 30, 8, 40], np.zeros((2, 0)), "K >= 3"),
])
def test_check_annotation_refuses_what_describes_no_object(box, contour, needle):
    with pytest.raises(DatasetError) as e:  # contours given as 2 x K rows x, y, as in the file
        check_annotation(box, np.asarray(contour).T, (40, 60))
    _one_line(e, needle)


def test_check_annotation_accepts_small_overshoots():
    """Hand-drawn outlines and 1-based boxes overshoot the photo by a pixel or two: clipped, not refused."""
    check_annotation([0, 40, 0, 60], [[-1.5, -1], [60.5, -1], [60, 40.5], [0, 40]], (40, 60))
    check_annotation([5, 30, 8, 40], [[8, 5], [38, 5], [38, 25]], (40, 60))


def test_a_logical_matlab_contour_reads_back_as_bool_and_is_refused(tmp_path):
    path = tmp_path / "annotation_0001.mat"
    savemat(path, {"box_coord": np.array([[5, 30, 10, 50]], np.uint16),
                   "obj_contour": np.array([[True, False, True], [False, True, True]])})
    with pytest.raises(DatasetError) as e:
        load_annotation(path)
    _one_line(e, path, "obj_contour holds true/false values")


@pytest.mark.parametrize("key, value, needle", [
    ("obj_contour", REL + 1j, "obj_contour holds complex numbers"),
    ("obj_contour", REL * (1 + 0j), "obj_contour holds complex numbers"),  # imaginary part 0: still complex
    ("box_coord", np.array([BOX], np.float64) + 0.5j, "box_coord holds complex numbers"),
    ("obj_contour", "abcd", "obj_contour holds text"),
    ("box_coord", {"a": 1.0}, "box_coord holds a MATLAB struct array"),
    ("obj_contour", np.array([REL, REL], dtype=object), "obj_contour holds a MATLAB cell array"),
    ("obj_contour", REL * np.array([[1, np.nan, 1, 1, 1], [1] * 5]), "non-finite"),
    ("box_coord", np.array([[5.0, np.inf, 10.0, 50.0]]), "non-finite"),
])
def test_an_annotation_of_complex_or_non_numeric_values_is_refused_without_a_scipy_warning(tmp_path, key, value,
                                                                                           needle):
    """Before: ``loadmat(mat_dtype=True)`` cast a complex contour to real (scipy's ComplexWarning on the terminal),
    and the photo was scored against the real part as if it were an object."""
    import warnings

    path = tmp_path / "annotation_0001.mat"
    savemat(path, {"box_coord": np.array([BOX], np.float64), "obj_contour": REL, key: value})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DatasetError) as e:
            load_annotation(path)
    _one_line(e, path, needle)
    assert not caught, [str(w.message) for w in caught]


def test_annotations_stored_as_any_real_matlab_class_still_load(tmp_path):
    """Read as stored (no ``mat_dtype``): integer classes are coordinates as before, converted to float64."""
    for dtype in (np.uint8, np.uint16, np.int32, np.int64, np.float32, np.float64):
        path = tmp_path / f"annotation_{np.dtype(dtype).name}.mat"
        savemat(path, {"box_coord": np.array([BOX], dtype), "obj_contour": REL.astype(dtype)})
        box, contour = load_annotation(path)
        assert box.dtype == contour.dtype == np.float64
        np.testing.assert_array_equal(box, BOX)
        np.testing.assert_array_equal(contour[:, 0], REL[0].astype(dtype) + BOX[2])


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3", None])
def test_a_bad_seed_is_refused_naming_seed(bad):
    """Before: -1 reached NumPy ("expected non-negative integer", no argument named); 1.5 was used as 1."""
    records = _fake_records({"A": 3, "B": 3})
    for kwargs in ({"sample": 2}, {"per_class": 1}, {}):
        with pytest.raises(ValueError, match="^seed must be a non-negative integer, got"):
            sample_records(records, seed=bad, **kwargs)
    assert sample_records(records, sample=2, seed=np.int64(3)) == sample_records(records, sample=2, seed=3)


def test_an_empty_path_is_refused_not_read_as_the_current_folder(tmp_path, monkeypatch):
    """Before: ``--data ""`` (``Path("")``) read the current folder."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "b" / "y.png")
    monkeypatch.chdir(tmp_path)
    for call in (lambda: dataset_records(""), lambda: image_files([""]), lambda: gather_images([""]),
                 lambda: gather_images(caltech101="")):
        with pytest.raises(DatasetError, match="an empty path"):
            call()
