"""Figures and overlays of vitjax.plotting: pixel sizes, numbers, atomic saving."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

import vitjax
from vitjax import plotting


def png(fig):
    with Image.open(io.BytesIO(plotting.figure_png(fig))) as im:
        return im.size


@pytest.fixture
def photo(rng):
    return rng.integers(0, 256, size=(90, 160, 3), dtype=np.uint8)  # landscape, not 224 x 224


@pytest.mark.parametrize("shape, size", [((14, 14), (90, 160)), ((3, 24, 24), (601, 1023)), ((2, 7, 5), (4, 3)),
                                         ((1, 14, 14), (14, 14))])
def test_upsample_map_matches_vitjax_upsample(rng, shape, size):
    maps = rng.random(shape).astype(np.float32)
    ours = plotting.upsample_map(maps, size)
    assert ours.shape == shape[:-2] + size and ours.dtype == np.float32
    np.testing.assert_allclose(ours, np.asarray(vitjax.upsample(maps, size)), atol=2e-6)


def test_upsample_map_rejects_bad_input():
    with pytest.raises(ValueError, match="size"):
        plotting.upsample_map(np.zeros((2, 2)), (0, 5))
    with pytest.raises(ValueError, match="maps"):
        plotting.upsample_map(np.zeros(4), (2, 2))


def test_overlay_mask_is_photo_times_map_at_the_photo_size(photo, rng):
    m = rng.random((14, 14)).astype(np.float32)
    out = plotting.overlay(photo, m, mode="mask")
    assert out.shape == photo.shape and out.dtype == np.uint8
    up = plotting.upsample_map(m, photo.shape[:2])
    expected = photo.astype(np.float64) * up[..., None]
    assert np.abs(out.astype(np.float64) - expected).max() <= 0.51


def test_overlay_heatmap_blends_the_colour_map(photo, rng):
    m = rng.random((7, 12)).astype(np.float32)
    np.testing.assert_array_equal(plotting.overlay(photo, m, alpha=0.0), photo)
    full = plotting.overlay(photo, m, alpha=1.0, cmap="inferno")
    from matplotlib import colormaps

    colours = colormaps["inferno"](plotting.upsample_map(m, photo.shape[:2]))[..., :3] * 255
    assert np.abs(full - colours).max() <= 0.51
    with pytest.raises(ValueError, match="colour map"):
        plotting.overlay(photo, m, cmap="no-such-map")
    with pytest.raises(ValueError, match="mode"):
        plotting.overlay(photo, m, mode="blend")
    with pytest.raises(ValueError, match="alpha"):
        plotting.overlay(photo, m, alpha=2)


def test_summary_figure_size_and_panels(photo, rng):
    m = rng.random((14, 14)).astype(np.float32)
    labels = ["military_uniform", "a very long class name, " * 4, "c", "d", "e"]
    fig = plotting.summary_figure(photo, m, labels=labels, probs=[0.9, 0.05, 0.02, 0.02, 0.01], title="x.jpg")
    assert isinstance(fig, Figure)
    assert png(fig) == (1600, 550)  # SUMMARY_FIGSIZE (16 x 5.5 in) at 100 dpi
    assert tuple(fig.get_size_inches()) == plotting.SUMMARY_FIGSIZE
    ticks = [t.get_text() for t in fig.axes[-1].get_yticklabels()]
    assert ticks[0] == "military_uniform" and ticks[1].endswith("\u2026")  # long names shortened
    # photo and map axes keep the photo's aspect ratio (90 x 160), not 224 x 224
    for ax in fig.axes[:2]:
        box = ax.get_position()
        w, h = box.width * 16, box.height * 5.5
        assert h / w == pytest.approx(90 / 160)
    fig = plotting.summary_figure(photo, m, dpi=50)  # no head: no predictions panel
    assert png(fig) == (800, 275)


def test_grid_sizes(rng):
    photos = [rng.integers(0, 256, (60, 80, 3), np.uint8), rng.integers(0, 256, (80, 60, 3), np.uint8),
              rng.integers(0, 256, (45, 80, 3), np.uint8)]
    maps = rng.random((3, 12, 14, 14)).astype(np.float32)
    # 3 rows, 13 columns; median aspect 0.75 -> cells 1.5 x 1.125 in
    # width 1.5 + 13 * 1.5 + 12 * 0.0625 + 1.0 = 22.75; height 0.875 + 3 * 1.125 + 2 * 0.0625 + 0.125 = 4.5
    assert plotting.grid_figsize(3, 13, 0.75) == (22.75, 4.5)
    fig = plotting.layer_grid(photos, maps, method="cumulative", row_labels=["a", "b\ntop-1 0.5: x", "c"])
    assert png(fig) == (2275, 450)
    texts = [t.get_text() for t in fig.texts]
    assert "layers 1\u201312" in texts and "original" in texts and "layer 1" in texts
    fig = plotting.layer_grid(photos, maps, method="layer")
    assert "layer 12" in [t.get_text() for t in fig.texts]
    fig = plotting.head_grid(photos[:1], maps[:1, :4], layer=11, num_layers=12)
    assert "head 4" in [t.get_text() for t in fig.texts]
    # 1 row, 5 columns: 1.5 + 5 * 1.5 + 4 * 0.0625 + 1.0 = 10.25; 0.875 + 1.125 + 0.125 = 2.125 -> 2.25
    assert png(fig) == (1025, 225)
    fig = plotting.rollout_grid(photos, maps[:, 0], mode="mask")
    assert png(fig) == (700, 450)  # 2 columns: the 7-inch minimum width; same height as above
    with pytest.raises(ValueError, match="method"):
        plotting.layer_grid(photos, maps, method="heads")
    with pytest.raises(ValueError, match="one"):
        plotting.map_grid(photos, maps[:2], column_titles=["o"] + ["l"] * 12)


def test_save_figure_is_atomic_and_refuses_to_overwrite(tmp_path, photo, rng):
    fig = plotting.summary_figure(photo, rng.random((14, 14)), dpi=20)
    path = plotting.save_figure(fig, tmp_path / "f.png")
    assert path == tmp_path / "f.png" and sorted(os.listdir(tmp_path)) == ["f.png"]
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (320, 110)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        plotting.save_figure(plotting.summary_figure(photo, rng.random((14, 14)), dpi=30), path)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["f.png"]
    plotting.save_figure(plotting.summary_figure(photo, rng.random((14, 14)), dpi=30), path, overwrite=True)
    with Image.open(path) as im:
        assert im.size == (480, 165)
    assert sorted(os.listdir(tmp_path)) == ["f.png"]
    with pytest.raises(OSError):
        plotting.save_figure(fig, tmp_path / "missing-dir" / "f.png")


def test_photo_array_shrinks_large_photos_keeping_aspect(tmp_path):
    Image.new("RGB", (3000, 1000), (10, 20, 30)).save(tmp_path / "big.png")
    a = plotting.photo_array(tmp_path / "big.png", 600)
    assert a.shape == (200, 600, 3) and a.dtype == np.uint8
    assert plotting.photo_array(Image.new("L", (50, 40)), 600).shape == (40, 50, 3)
