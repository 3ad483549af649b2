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
    class_folders,
    dataset_records,
    image_files,
    load_annotation,
    sample_records,
)

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
