"""Figures and overlays of vitjax.viz.figures: pixel sizes, numbers, atomic saving."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

import vitjax
from vitjax.viz import drawing, notes
from vitjax.viz import figures as plotting


def png(fig):
    with Image.open(io.BytesIO(drawing.figure_png(fig))) as im:
        return im.size


@pytest.fixture
def photo(rng):
    return rng.integers(0, 256, size=(90, 160, 3), dtype=np.uint8)  # landscape, not 224 x 224


@pytest.mark.parametrize("shape, size", [((14, 14), (90, 160)), ((3, 24, 24), (601, 1023)), ((2, 7, 5), (4, 3)),
                                         ((1, 14, 14), (14, 14))])
def test_upsample_map_matches_vitjax_upsample(rng, shape, size):
    maps = rng.random(shape).astype(np.float32)
    ours = drawing.upsample_map(maps, size)
    assert ours.shape == shape[:-2] + size and ours.dtype == np.float32
    # values in [0, 1]; each output sums 2 x 2 products with float32-rounded weights in both codes:
    # a few float32 ulps of 1 (2^-24 ~ 6e-8 each) per side, far below 2e-6
    np.testing.assert_allclose(ours, np.asarray(vitjax.upsample(maps, size)), atol=2e-6)


def test_upsample_map_rejects_bad_input():
    with pytest.raises(ValueError, match="size"):
        drawing.upsample_map(np.zeros((2, 2)), (0, 5))
    with pytest.raises(ValueError, match="maps"):
        drawing.upsample_map(np.zeros(4), (2, 2))


def test_overlay_mask_is_photo_times_map_at_the_photo_size(photo, rng):
    m = rng.random((14, 14)).astype(np.float32)
    out = drawing.overlay(photo, m, mode="mask")
    assert out.shape == photo.shape and out.dtype == np.uint8
    up = drawing.upsample_map(m, photo.shape[:2])
    expected = photo.astype(np.float64) * up[..., None]
    assert np.abs(out.astype(np.float64) - expected).max() <= 0.51  # rounding to uint8 (0.5) + float32 (255 * 1e-7)


def test_overlay_heatmap_blends_the_colour_map(photo, rng):
    m = rng.random((7, 12)).astype(np.float32)
    np.testing.assert_array_equal(drawing.overlay(photo, m, alpha=0.0), photo)
    full = drawing.overlay(photo, m, alpha=1.0, cmap="inferno")
    from matplotlib import colormaps

    colours = colormaps["inferno"](drawing.upsample_map(m, photo.shape[:2]))[..., :3] * 255
    assert np.abs(full - colours).max() <= 0.51
    with pytest.raises(ValueError, match="colour map"):
        drawing.overlay(photo, m, cmap="no-such-map")
    with pytest.raises(ValueError, match="mode"):
        drawing.overlay(photo, m, mode="blend")
    with pytest.raises(ValueError, match="alpha"):
        drawing.overlay(photo, m, alpha=2)


def texts(fig):
    """Every text drawn in a figure: figure texts, axes titles and tick labels, colour bar labels."""
    out = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()] + [t.get_text() for t in ax.texts]
        out += [t.get_text() for t in ax.get_yticklabels()]
    return out


FOOTER = notes.provenance("ViT-B_16-224.npz", vitjax.RolloutOptions(head_fusion="max", discard_ratio=0.9,
                                                                        start_layer=1), "bfloat16",
                             sha256="0123456789abcdef" * 4)


def test_provenance_names_checkpoint_options_and_precision():
    assert FOOTER == ("ViT-B_16-224.npz (sha256 0123456789ab) \u00b7 rollout: head fusion max, discard ratio 0.9, "
                      "start layer 1, residual \u00b7 precision bfloat16")
    no_res = notes.provenance("x.npz", vitjax.RolloutOptions(residual=False).to_dict())
    assert no_res == "x.npz \u00b7 rollout: head fusion mean, discard ratio 0, start layer 0, no residual"


def test_summary_figure_size_and_panels(photo, rng):
    m = rng.random((14, 14)).astype(np.float32)
    labels = ["military_uniform", "b", "c", "d", "e"]
    fig = plotting.summary_figure(photo, m, labels=labels, probs=[0.9, 0.05, 0.02, 0.02, 0.01], title="x.jpg",
                                  footer=FOOTER)
    assert isinstance(fig, Figure)
    assert png(fig) == (1600, 550)  # a landscape photo: SUMMARY_FIGSIZE (16 x 5.5 in) at 100 dpi
    assert tuple(fig.get_size_inches()) == plotting.SUMMARY_FIGSIZE == plotting.summary_figsize(90 / 160)
    assert FOOTER in texts(fig)  # every figure says what made it
    assert "original (160\u00d790 px)" in texts(fig)
    assert "attention \u00f7 this map's maximum" in texts(fig)
    # photo and map axes keep the photo's aspect ratio (90 x 160), not 224 x 224
    for ax in fig.axes[:2]:
        box = ax.get_position()
        w, h = box.width * 16, box.height * 5.5
        assert h / w == pytest.approx(90 / 160)
    fig = plotting.summary_figure(photo, m, dpi=50)  # no head and no head maps: a sentence instead
    assert png(fig) == (800, 275)
    assert any("no classification head" in t for t in texts(fig))


def test_summary_shows_the_photos_real_size(photo, rng):
    fig = plotting.summary_figure(photo, rng.random((14, 14)), original_size=(3000, 4000))
    assert "original (4000\u00d73000 px)" in texts(fig)  # not the 160 x 90 display copy


def test_portrait_photo_is_not_a_sliver(rng):
    tall = rng.integers(0, 256, size=(400, 200, 3), dtype=np.uint8)  # h / w = 2
    fig = plotting.summary_figure(tall, rng.random((14, 14)), labels=["a"], probs=[1.0])
    fw, fh = fig.get_size_inches()
    assert (fw, fh) == plotting.summary_figsize(2.0) == (16.0, 9.5)  # the page grows: 8-inch panels
    width_in = fig.axes[0].get_position().width * fw
    # panels fill the page between the 0.5-inch footer and the 0.9375-inch titles: 8.0625 in high / aspect 2;
    # the fixed 5.5-inch page gave (5.5 - 1.3125) / 2 = 2.1 in
    assert width_in == pytest.approx((9.5 - 0.5 - 0.9375) / 2)


def test_long_class_names_are_wrapped_whole_and_hyphens_kept(photo, rng):
    longest = ("California_laurel, California_bay_tree, Oregon_myrtle, pepperwood, spice_tree, "
               "sassafras_laurel, California_olive, mountain_laurel, Umbellularia_californica")  # 156 characters
    bike = "mountain_bike, all-terrain_bike, off-roader"
    fig = plotting.summary_figure(photo, rng.random((14, 14)), labels=[longest, bike, "c", "d", "e"],
                                  probs=[0.5, 0.2, 0.1, 0.1, 0.1])
    ticks = [t.get_text() for t in fig.axes[-1].get_yticklabels()]
    assert ticks[0].replace("\n", " ") == longest and "\n" in ticks[0]  # wrapped, every word kept
    assert ticks[1].replace("\n", " ") == bike and "all-\n" not in ticks[1]  # never broken at a hyphen
    assert all("\u2026" not in t for t in ticks)


def test_probability_axis_fits_small_probabilities(photo, rng):
    assert drawing.probability_axis(0.9) == 1.0
    assert drawing.probability_axis(0.5) == 1.0
    assert drawing.probability_axis(0.3) == 0.5
    assert drawing.probability_axis(0.0031) == 0.005
    assert drawing.probability_axis(0.0016) == 0.002
    assert drawing.probability_axis(0.07) == 0.1
    fig = plotting.summary_figure(photo, rng.random((14, 14)), labels=list("abcde"),
                                  probs=[0.0031, 0.0012, 0.0009, 0.0002, 0.00001])
    bars = fig.axes[-1]
    assert bars.get_xlim() == (0.0, 0.005)  # a fixed 0-1 axis drew these bars a pixel long
    assert "1.0e-05" in [t.get_text() for t in bars.texts]  # tiny values stay readable


def test_headless_summary_shows_each_head_and_marks_outliers(photo, rng):
    heads = rng.random((6, 14, 14)).astype(np.float32)
    mask = np.zeros((14, 14), bool)
    mask[2, 3] = mask[10, 11] = True
    fig = plotting.summary_figure(photo, rng.random((14, 14)), head_maps=heads, outliers=mask,
                                  no_predictions="no trained head", heads_title="layer 12 of 12: heads",
                                  note="rollout dominated by 2 high-norm tokens")
    titles = [ax.get_title() for ax in fig.axes]
    assert [t for t in titles if t.startswith("head ")] == [f"head {i}" for i in range(1, 7)]
    assert "no trained head\nlayer 12 of 12: heads" in texts(fig)
    assert "joint attention (rollout)\nrollout dominated by 2 high-norm tokens" in titles
    # two outlined patches (two rectangles each) on the joint map and on every head
    assert sum(1 for ax in fig.axes if len(ax.patches) == 4) == 1 + 6


def test_mark_patches_outlines_the_right_pixels(photo):
    fig = drawing.new_figure((4, 3))
    ax = drawing.image_axes(fig, (0, 0, 4, 3), photo)
    mask = np.zeros((9, 16), bool)
    mask[4, 10] = True
    assert drawing.mark_patches(ax, mask, photo.shape[:2]) == 1
    rect = ax.patches[0]
    assert rect.get_xy() == (10 * 10 - 0.5, 4 * 10 - 0.5)  # 160 x 90 photo, 16 x 9 grid: 10-pixel patches
    assert (rect.get_width(), rect.get_height()) == (10, 10)


def test_sinks_are_ringed_apart_from_high_norm_squares(photo, rng):
    fig = drawing.new_figure((4, 3))
    ax = drawing.image_axes(fig, (0, 0, 4, 3), photo)
    mask = np.zeros((9, 16), bool)
    mask[4, 10] = True
    assert drawing.mark_patches(ax, mask, photo.shape[:2], marker="circle") == 1
    ring = ax.patches[0]
    assert type(ring).__name__ == "Ellipse"
    # 10-pixel patches; the ring is centred on the patch (imshow's pixel centres are integers) and 1.5 patches wide
    assert tuple(ring.center) == (10 * 10 - 0.5 + 5, 4 * 10 - 0.5 + 5) and (ring.width, ring.height) == (15, 15)
    with pytest.raises(ValueError, match="marker"):
        drawing.mark_patches(ax, mask, photo.shape[:2], marker="star")
    heads = rng.random((6, 14, 14)).astype(np.float32)
    sinks = np.zeros((14, 14), bool)
    sinks[0, 0] = True
    note = ("rollout peak = layer-1 attention sink (\u25cb, takes 93% of head 6's attention, 16% of the layer's); "
            "--start-layer 1 leaves layer 1 out")
    fig = plotting.summary_figure(photo, rng.random((14, 14)), head_maps=heads, outliers=sinks.T, sinks=sinks,
                                  note=f"1 high-norm token\n{note}")
    kinds = [sorted(type(p).__name__ for p in ax.patches) for ax in fig.axes]
    # the joint map: one square (two rectangles) and one ring (two ellipses); the heads: squares only (no head_sinks)
    assert kinds.count(["Ellipse", "Ellipse", "Rectangle", "Rectangle"]) == 1
    assert kinds.count(["Rectangle", "Rectangle"]) == 6
    title = next(ax.get_title() for ax in fig.axes if ax.get_title().startswith("joint attention"))
    lines = title.split("\n")
    assert lines[:2] == ["joint attention (rollout)", "1 high-norm token"]
    assert " ".join(lines[2:]) == note and len(lines) == 4  # wrapped to the panel, every word kept
    fig = plotting.summary_figure(photo, rng.random((14, 14)), head_maps=heads, sinks=sinks, head_sinks=sinks)
    assert sum(1 for ax in fig.axes if len(ax.patches) == 2) == 1 + 6  # rings on the joint map and every head
    fig = plotting.rollout_grid([photo, photo], rng.random((2, 14, 14)), sinks=[sinks, None])
    assert sum(len(ax.patches) for ax in fig.axes) == 2  # one ring on the first row's map
    with pytest.raises(ValueError, match="sink masks"):
        plotting.rollout_grid([photo], rng.random((1, 14, 14)), sinks=[sinks, sinks])


def test_grid_sizes(rng):
    photos = [rng.integers(0, 256, (60, 80, 3), np.uint8), rng.integers(0, 256, (80, 60, 3), np.uint8),
              rng.integers(0, 256, (45, 80, 3), np.uint8)]
    maps = rng.random((3, 12, 14, 14)).astype(np.float32)
    # 13 columns: width 1.5 + 13 * 1.5 + 12 * 0.0625 + 1.0 = 22.75; each row as high as its own photo makes it:
    # aspects 0.75, 1.333, 0.5625 -> 1.125, 2.0, 0.875 (1/8 in); 0.875 + 4.0 + 2 * 0.0625 + 0.125 = 5.125 -> 5.25
    assert plotting.grid_figsize(3, 13, [0.75, 80 / 60, 45 / 80]) == (22.75, 5.25)
    assert plotting.grid_figsize(3, 13, 0.75) == (22.75, 4.5)  # one aspect for all rows
    assert plotting.grid_figsize(3, 13, 0.75, footer=True) == (22.75, 5.0)  # + 0.375 in of provenance
    fig = plotting.layer_grid(photos, maps, method="cumulative", row_labels=["a", "b\ntop-1 0.5: x", "c"],
                              footer=FOOTER)
    assert png(fig) == (2275, 550)  # 5.125 + 0.375 in of footer
    all_text = texts(fig)
    assert "layers 1\u201312" in all_text and "original" in all_text and "layer 1" in all_text
    assert FOOTER.replace(" ", "") in "".join(all_text).replace("\n", "").replace(" ", "")
    assert "attention \u00f7 each tile's own maximum" in all_text
    title = all_text[0].replace("\n", " ")
    assert "1\u2026l" not in title and "layers 1 through k" in title  # never read as "1...1"
    # the portrait photo's row is 2 inches high: its original is 1.5 in wide, as the landscapes'
    widths = sorted(round(ax.get_position().width * 22.75, 3) for ax in fig.axes if not ax.get_ylabel())
    assert widths[0] == pytest.approx(1.5)
    fig = plotting.layer_grid(photos, maps, method="layer")
    assert "layer 12" in [t.get_text() for t in fig.texts]
    fig = plotting.head_grid(photos[:1], maps[:1, :4], layer=11, num_layers=12)
    assert "head 4" in [t.get_text() for t in fig.texts]
    # 1 row, 5 columns: 1.5 + 5 * 1.5 + 4 * 0.0625 + 1.0 = 10.25; 0.875 + 1.125 + 0.125 = 2.125 -> 2.25
    assert png(fig) == (1025, 225)
    fig = plotting.rollout_grid(photos, maps[:, 0], mode="mask")
    assert png(fig) == (700, 525)  # 2 columns: the 7-inch minimum width; same height as above
    assert "brightness kept: each tile \u00f7 its maximum" in texts(fig)
    with pytest.raises(ValueError, match="method"):
        plotting.layer_grid(photos, maps, method="heads")
    with pytest.raises(ValueError, match="one"):
        plotting.map_grid(photos, maps[:2], column_titles=["o"] + ["l"] * 12)
    with pytest.raises(ValueError, match="outlier masks"):
        plotting.map_grid(photos, maps, column_titles=["o"] + ["l"] * 12, outliers=[None])


def test_grid_row_labels_wrap_long_class_names(rng):
    photos = [rng.integers(0, 256, (80, 80, 3), np.uint8)]
    name = "bomber, grinder, hero, hero_sandwich, hoagie, hoagy, Cuban_sandwich"
    fig = plotting.rollout_grid(photos, rng.random((1, 14, 14)), row_labels=[f"a.jpg\ntop-1 0.500: {name}"])
    label = next(t.get_text() for t in fig.texts if t.get_text().startswith("a.jpg"))
    assert label.replace("\n", " ").endswith(name)  # a 1.5-inch row holds every word


def test_save_figure_is_atomic_and_refuses_to_overwrite(tmp_path, photo, rng):
    fig = plotting.summary_figure(photo, rng.random((14, 14)), dpi=20)
    path = drawing.save_figure(fig, tmp_path / "f.png")
    assert path == tmp_path / "f.png" and sorted(os.listdir(tmp_path)) == ["f.png"]
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (320, 110)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        drawing.save_figure(plotting.summary_figure(photo, rng.random((14, 14)), dpi=30), path)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["f.png"]
    drawing.save_figure(plotting.summary_figure(photo, rng.random((14, 14)), dpi=30), path, overwrite=True)
    with Image.open(path) as im:
        assert im.size == (480, 165)
    assert sorted(os.listdir(tmp_path)) == ["f.png"]
    with pytest.raises(OSError):
        drawing.save_figure(fig, tmp_path / "missing-dir" / "f.png")


def test_photo_array_shrinks_large_photos_keeping_aspect(tmp_path):
    Image.new("RGB", (3000, 1000), (10, 20, 30)).save(tmp_path / "big.png")
    a = drawing.photo_array(tmp_path / "big.png", 600)
    assert a.shape == (200, 600, 3) and a.dtype == np.uint8
    assert drawing.photo_array(Image.new("L", (50, 40)), 600).shape == (40, 50, 3)


# --------------------------------------------------------------------------- start layer, colour bars, footers


def _left_out_axes(fig):
    return [ax for ax in fig.axes if [t.get_text() for t in ax.texts] == ["left out"]]


def test_cumulative_grid_names_the_start_layer_and_marks_left_out_tiles(rng):
    photos = [rng.integers(0, 256, (60, 80, 3), np.uint8), rng.integers(0, 256, (80, 60, 3), np.uint8)]
    maps = rng.random((2, 4, 14, 14)).astype(np.float32)
    maps[:, :2] = 0.0  # what compute_maps gives for layers before start_layer 2: all zero
    by_layer = np.zeros((4, 14, 14), bool)
    by_layer[2, 3, 4] = True  # a sink of layer 3: ringed on "layer 3" and "layers 3-4"
    sinks = plotting.tile_sinks(by_layer, "cumulative", 2)
    fig = plotting.layer_grid(photos, maps, method="cumulative", start_layer=2, start_flag="--start-layer 2",
                              sinks=[sinks, sinks])
    title = fig.texts[0].get_text().replace("\n", " ")
    # before: "column 'layers 1-k' = joint attention of layers 1 through k", whatever the start layer
    assert title == ("Cumulative rollout: column 'layers 3\u2013k' = joint attention of layers 3 through k "
                     "(layers 1\u20132 left out: --start-layer 2)")
    columns = [t.get_text() for t in fig.texts[1:6]]
    assert columns == ["original", "layer 1", "layer 2", "layer 3", "layers 3\u20134"]  # were layers 1-3, 1-4
    # the two left-out layers of both rows: a faded grey photo saying so (before: a uniform blue map), no rings
    left = _left_out_axes(fig)
    assert len(left) == 4
    for ax in left:
        tile = ax.get_images()[0].get_array()
        assert np.array_equal(tile[..., 0], tile[..., 1]) and np.array_equal(tile[..., 1], tile[..., 2])
        assert not ax.patches
    assert sum(1 for ax in fig.axes if len(ax.patches) == 2) == 2 * 2  # a ring on each row's two real maps
    # start layer 0 and each layer's own map (which never uses it) keep every tile
    fig = plotting.layer_grid(photos, maps, method="cumulative")
    assert "layers 1 through k" in fig.texts[0].get_text() and not _left_out_axes(fig)
    fig = plotting.layer_grid(photos, maps, method="layer", start_layer=2)
    assert not _left_out_axes(fig) and "left out" not in fig.texts[0].get_text()
    with pytest.raises(ValueError, match="start_layer"):
        plotting.layer_grid(photos, maps, start_layer=4)
    with pytest.raises(ValueError, match="left_out"):
        plotting.map_grid(photos, maps, column_titles=["o"] + ["l"] * 4, left_out=[4])


def _inside(fig, artist, renderer):
    box = artist.get_window_extent(renderer)
    width, height = fig.bbox.width, fig.bbox.height
    return box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, box


@pytest.mark.parametrize("hw", [(40, 80), (600, 512)])  # a row 0.75 in high (the shortest); Grace Hopper's
def test_one_row_grid_colour_bar_label_stays_inside_the_figure(rng, hw):
    photo = rng.integers(0, 256, hw + (3,), np.uint8)
    fig = plotting.layer_grid([photo], rng.random((1, 12, 14, 14)), footer=FOOTER)
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    (bar,) = [ax for ax in fig.axes if ax.get_ylabel()]
    label = bar.yaxis.label
    ok, box = _inside(fig, label, renderer)
    assert ok, box  # before: the 38-character label ran off the bottom edge (and into the footer)
    footer = next(t for t in fig.texts if t.get_text().startswith("ViT-B_16-224.npz"))
    assert box.y0 > footer.get_window_extent(renderer).y1
    assert " ".join(label.get_text().split()) == "attention \u00f7 each tile's own maximum"  # wrapped, not cut


def test_colour_bar_sits_beside_a_tall_photos_map(rng):
    tall = rng.integers(0, 256, (600, 115, 3), np.uint8)  # 115 x 600 px
    fig = plotting.summary_figure(tall, rng.random((14, 14)), labels=["a"], probs=[1.0])
    fw = fig.get_size_inches()[0]
    bar = next(ax for ax in fig.axes if ax.get_ylabel())
    joint = fig.axes[1]
    gap = (bar.get_position().x0 - joint.get_position().x1) * fw
    assert 0.0 < gap <= 0.2  # inches; before: 1.6 inches right of the narrow map
    fig = plotting.rollout_grid([tall], rng.random((1, 14, 14)))
    fw = fig.get_size_inches()[0]
    bar = next(ax for ax in fig.axes if ax.get_ylabel())
    right = max(ax.get_position().x1 for ax in fig.axes if ax is not bar)
    assert 0.0 < (bar.get_position().x0 - right) * fw <= 0.2


def test_class_map_colour_bar_says_what_the_map_is(photo, rng):
    fig = plotting.summary_figure(photo, rng.random((14, 14)), quantity="generic relevance",
                                  map_title="generic map of class 3")
    flat = [" ".join(t.split()) for t in texts(fig)]  # colour-bar labels are wrapped to the bar's height
    assert "generic relevance \u00f7 this map's maximum" in flat
    assert not any("attention \u00f7" in t for t in flat)  # before: "attention ÷ this map's maximum"
    fig = plotting.map_grid([photo], rng.random((1, 2, 14, 14)), column_titles=["o", "rollout", "generic"],
                            quantity="rollout attention, generic relevance")
    label = next(ax.get_ylabel() for ax in fig.axes if ax.get_ylabel())
    assert " ".join(label.split()) == "rollout attention, generic relevance \u00f7 each tile's own maximum"


def test_provenance_names_the_input_and_the_options_each_map_uses():
    options = vitjax.RolloutOptions(start_layer=1)
    line = notes.provenance("d.safetensors", options, "float32", input_size=(518, 518), grid=(37, 37),
                               maps=[("joint map", notes.OPTION_FIELDS), ("head maps", ())])
    assert line == ("d.safetensors \u00b7 518\u00d7518 px input, 37\u00d737 patches \u00b7 joint map: head fusion "
                    "mean, discard ratio 0, start layer 1, residual \u00b7 head maps: no rollout options \u00b7 "
                    "precision float32")
    line = notes.provenance("x.npz", options, None, input_size=224,
                               maps=[("each layer's map", ("head_fusion", "discard_ratio", "residual"))])
    assert line == ("x.npz \u00b7 224\u00d7224 px input \u00b7 each layer's map: head fusion mean, discard ratio 0, "
                    "residual")
