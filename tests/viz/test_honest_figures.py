"""Figures that say nothing false: sink rings only on the maps that include their layer, rings that are circles,
a sentence for every ring, random weights said on every figure, no 0-px panels, no orphaned words in titles."""

from __future__ import annotations

import re

import numpy as np
import pytest
from matplotlib.patches import Ellipse
from PIL import Image

from vitjax.viz import drawing, notes
from vitjax.viz import figures as plotting

G = 14  # patch grid of every map here


def ringed(ax, size_hw):
    """The patches ``(i, j)`` ringed on ``ax`` (two Ellipse patches, black under white, per ring)."""
    h, w = size_hw
    rings = [p for p in ax.patches if isinstance(p, Ellipse)]
    assert len(rings) % 2 == 0
    return sorted({(int((p.center[1] + 0.5) // (h / G)), int((p.center[0] + 0.5) // (w / G))) for p in rings})


def sinks_by_layer():
    """12 layers: a layer-1 sink at (10, 2), a layer-10 sink at (3, 5)."""
    by_layer = np.zeros((12, G, G), bool)
    by_layer[0, 10, 2] = True
    by_layer[9, 3, 5] = True
    return by_layer


def test_tile_sinks_keeps_each_sink_to_the_tiles_whose_map_includes_its_layer():
    by_layer = sinks_by_layer()
    layer = plotting.tile_sinks(by_layer, "layer")
    assert [np.argwhere(t).tolist() for t in layer] == [[[10, 2]]] + [[]] * 8 + [[[3, 5]]] + [[]] * 2
    cumulative = plotting.tile_sinks(by_layer, "cumulative")
    assert [np.argwhere(t).tolist() for t in cumulative] == [[[10, 2]]] * 9 + [[[3, 5], [10, 2]]] * 3
    start1 = plotting.tile_sinks(by_layer, "cumulative", 1)  # "layers 2-k": the layer-1 sink is in none of them
    assert [np.argwhere(t).tolist() for t in start1] == [[]] * 9 + [[[3, 5]]] * 3
    with pytest.raises(ValueError, match="method"):
        plotting.tile_sinks(by_layer, "heads")
    with pytest.raises(ValueError, match="start_layer"):
        plotting.tile_sinks(by_layer, "cumulative", 12)
    with pytest.raises(ValueError, match="by_layer"):
        plotting.tile_sinks(by_layer[0], "layer")


@pytest.mark.parametrize("method, start, want", [
    ("layer", 0, [[(10, 2)]] + [[]] * 8 + [[(3, 5)]] + [[]] * 2),
    ("cumulative", 0, [[(10, 2)]] * 9 + [[(3, 5), (10, 2)]] * 3),
    ("cumulative", 1, [[]] * 9 + [[(3, 5)]] * 3),
])
def test_layer_grid_rings_a_sink_only_on_the_tiles_that_include_its_layer(rng, method, start, want):
    # before: one [gh, gw] mask per row ringed both sinks on all 12 tiles: the layer-10 sink from the "layer 1"
    # column on, the layer-1 sink on the "layers 2-k" tiles of --start-layer 1
    photo = rng.integers(0, 256, (90, 160, 3), np.uint8)
    maps = rng.random((1, 12, G, G)).astype(np.float32)
    fig = plotting.layer_grid([photo], maps, method=method, start_layer=start,
                              sinks=[plotting.tile_sinks(sinks_by_layer(), method, start)])
    tiles = fig.axes[1:13]  # row 1: the original, then one tile per layer; the colour bar last
    assert [ringed(ax, (90, 160)) for ax in tiles] == want
    assert not fig.axes[0].patches  # never on the photo itself
    legend = [t.get_text() for t in fig.texts if "\u25cb" in t.get_text()]
    assert legend == ["\u25cb attention sink"]  # the grid says what a ring is
    one_mask = sinks_by_layer().any(axis=0)
    with pytest.raises(ValueError, match="one per tile"):
        plotting.layer_grid([photo], maps, method=method, sinks=[one_mask])


def test_map_grid_takes_one_mask_per_tile_and_heads_ring_only_their_own_sinks(rng):
    photo = rng.integers(0, 256, (90, 160, 3), np.uint8)
    rollout_only = np.zeros((2, G, G), bool)
    rollout_only[0, 3, 5] = True  # the rollout column; the class map (column 2) is not a rollout
    fig = plotting.map_grid([photo], rng.random((1, 2, G, G)), column_titles=["o", "rollout", "generic"],
                            sinks=[rollout_only])
    assert [ringed(ax, (90, 160)) for ax in fig.axes[1:3]] == [[(3, 5)], []]
    with pytest.raises(ValueError, match="sink masks of row 1"):
        plotting.map_grid([photo], rng.random((1, 2, G, G)), column_titles=["o", "a", "b"],
                          sinks=[np.zeros((3, G, G), bool)])
    per_head = np.zeros((4, G, G), bool)
    per_head[2, 7, 7] = True  # head 3 of the layer sinks (7, 7); heads 1, 2 and 4 do not
    fig = plotting.summary_figure(photo, rng.random((G, G)), head_maps=rng.random((4, G, G)), head_sinks=per_head)
    heads = [ax for ax in fig.axes if ax.get_title().startswith("head ")]
    assert [ringed(ax, (90, 160)) for ax in heads] == [[], [], [(7, 7)], []]


def _page_size(patch):
    """Width and height of a patch on the page, in pixels (its edge line included on both sides alike)."""
    box = patch.get_window_extent()
    return box.width, box.height


@pytest.mark.parametrize("hw", [(300, 200), (198, 300), (1, 1024), (1024, 1)])  # portrait, landscape, 1:1024 both
def test_rings_are_circles_on_the_page(rng, hw):
    photo = rng.integers(0, 256, hw + (3,), np.uint8)
    sinks = np.zeros((G, G), bool)
    sinks[3, 5] = True
    figs = [plotting.summary_figure(photo, rng.random((G, G)), sinks=sinks),
            plotting.rollout_grid([photo], rng.random((1, G, G)), sinks=[sinks])]
    for fig in figs:
        fig.canvas.draw()
        rings = [p for ax in fig.axes for p in ax.patches if isinstance(p, Ellipse)]
        assert len(rings) == 2  # black and white: one ring
        for ring in rings:
            width, height = _page_size(ring)
            # before: 1.5 patch widths by 1.5 patch heights, e.g. 32 x 48 px on the 200 x 300 photo
            assert abs(width - height) <= 1e-6 * width, (width, height)  # float64 geometry: equal to rounding
        ax = next(ax for ax in fig.axes if ax.patches)
        box = ax.get_window_extent()
        patch_w, patch_h = box.width / G, box.height / G
        assert width >= np.hypot(patch_w, patch_h)  # it rings the whole patch, not a part of it


def test_every_ring_on_the_rollout_is_in_its_note(rng):
    # 12 layers, 2 heads; sinks as the real DINOv2-S/14 has them: two patches, both of layer 1, one the peak
    received = np.full((12, 2, G, G), 0.004)
    received[0, 1, 12, 8] = 0.63
    received[0, 0, 31 % G, 8] = 0.40
    joint = rng.random((G, G)) * 0.5
    joint[12, 8] = 1.0
    mask, note = notes.sink_note(received, joint)
    photo = rng.integers(0, 256, (198, 300, 3), np.uint8)
    fig = plotting.summary_figure(photo, joint, sinks=mask, note=note)
    (ax,) = [ax for ax in fig.axes if ax.patches]
    drawn = len(ringed(ax, (198, 300)))
    said = 1 + sum(int(n) for n in re.findall(r"(\d+) more attention sinks? \(\u25cb", note))
    assert drawn == said == 2  # before: two rings under "rollout peak = layer-1 attention sink (○, ...)" alone
    # the rollout of layers 2-12 includes no layer-1 attention: no ring, and no ○ in its note
    mask, note = notes.sink_note(received, joint, start_layer=1)
    assert mask is None and "\u25cb" not in note and "left out" in note


def _image_axes(fig):
    return [ax for ax in fig.axes if ax.get_images()]


def _pixels(fig, ax):
    box = ax.get_position()
    fw, fh = fig.get_size_inches()
    return box.width * fw * fig.dpi, box.height * fh * fig.dpi


@pytest.mark.parametrize("size_wh, note", [((20000, 20), "drawn 250\u00d7 taller"),
                                           ((20, 20000), "drawn 250\u00d7 wider")])
def test_extreme_aspect_photos_get_visible_panels_that_say_they_are_stretched(rng, size_wh, note):
    # the photo as the visualize run holds it: shrunk to at most 1024 px (a 1024 x 1 px copy)
    photo = drawing.photo_array(Image.new("RGB", size_wh, (200, 30, 30)), 1024)
    assert 1 in photo.shape[:2]
    real = size_wh[::-1]
    figs = [lambda: plotting.summary_figure(photo, rng.random((G, G)), head_maps=rng.random((6, G, G)),
                                            original_size=real),
            lambda: plotting.layer_grid([photo, rng.integers(0, 256, (90, 160, 3), np.uint8)],
                                        rng.random((2, 3, G, G)), row_labels=["x.png\ntop-1 0.5: cat", "y.png"],
                                        original_sizes=[real, (90, 160)])]
    for i, make in enumerate(figs):
        fig = figs[i] = make()
        smallest = min(min(_pixels(fig, ax)) for ax in _image_axes(fig))
        # before: 0 px (the summary's map 4.5 in x 0.0045 in; the grid's 1.5 in x 0.0015 in)
        assert smallest >= 0.375 * fig.dpi - 1e-6  # 1:4 at least (MAX_ASPECT): 0.375 in of a 1.5-inch cell
        shown = [ax.get_images()[0].get_array() for ax in _image_axes(fig)]
        assert min(min(a.shape[:2]) for a in shown) >= G  # every row and column of the map is drawn, not one
    flat = [" ".join(t.get_text().split()) for fig in figs for t in fig.texts] + \
        [ax.get_title() for ax in figs[0].axes]
    assert f"original ({size_wh[0]}\u00d7{size_wh[1]} px; {note})" in flat
    assert f"x.png ({note}) top-1 0.5: cat" in flat


def test_stretch_note_and_display_aspect():
    assert drawing.display_aspect(20, 20000) == 1 / drawing.MAX_ASPECT
    assert drawing.display_aspect(20000, 20) == drawing.MAX_ASPECT
    assert drawing.display_aspect(600, 512) == 600 / 512
    assert drawing.stretch_note(600, 512) == "" and drawing.stretch_note(1, 5) == "drawn 1.2\u00d7 taller"
    assert drawing.at_display_aspect(np.zeros((1, 1024, 3), np.uint8)).shape == (256, 1024, 3)
    assert drawing.at_display_aspect(np.zeros((1024, 1, 3), np.uint8)).shape == (1024, 256, 3)


TITLES = [
    "joint attention (rollout of layers 2\u201312; layer 1 left out: --start-layer 1)",
    "Cumulative rollout: column 'layers 2\u2013k' = joint attention of layers 2 through k (layer 1 left out: "
    "--start-layer 1)",
    "rollout peak = layer-1 attention sink (\u25cb, takes 66% of head 6's attention, 11% of the layer's); "
    "--start-layer 1 leaves layer 1 out",
    "2 high-norm tokens (\u25a1, norm > 4\u00d7 median): 19% of the rollout's mass",
    "1 attention sink of layer 1 (> 25% of one head's attention), left out by start layer 1: not ringed",
    "attention \u00f7 each tile's own maximum",
    notes.RANDOM_BANNER,
]


@pytest.mark.parametrize("text", TITLES)
def test_wrap_never_leaves_a_lone_short_token_on_a_line(text):
    for width in range(20, 121):  # the narrowest figure text: ~25 characters a line (a colour bar's label)
        lines = drawing.wrap(text, width).split("\n")
        assert " ".join(lines) == text  # every word kept, in order
        assert max(len(line) for line in lines) <= width
        if len(lines) > 1:
            for line in lines:
                # before: "...--start-layer" then "1)" alone; "...left" then "out"
                assert " " in line or len(line) > 3, (width, lines)


def test_summary_title_with_the_start_layer_keeps_its_last_words_together(rng):
    photo = rng.integers(0, 256, (300, 200, 3), np.uint8)
    fig = plotting.summary_figure(photo, rng.random((G, G)), map_title=TITLES[0], note=TITLES[4])
    title = next(ax.get_title() for ax in fig.axes if ax.get_title().startswith("joint"))
    assert all(" " in line for line in title.split("\n"))  # before: the title's second line was "1)"


def test_random_weights_banner_and_footer(rng):
    line = notes.provenance("x.npz", None, "float32", sha256="0123456789abcdef" * 4, random_weights=True)
    assert line == "x.npz (sha256 0123456789ab; random weights) \u00b7 precision float32"
    assert notes.provenance("x.npz", random_weights=True) == "x.npz (random weights)"
    photo = rng.integers(0, 256, (90, 160, 3), np.uint8)
    fig = plotting.summary_figure(photo, rng.random((G, G)), labels=["a"], probs=[1.0], banner=notes.RANDOM_BANNER)
    banner = [t for t in fig.texts if t.get_text().replace("\n", " ") == notes.RANDOM_BANNER]
    assert len(banner) == 1 and banner[0].get_color() == "#b00000" and banner[0].get_fontweight() == "bold"
    for hw in ((90, 160), (300, 200), (800, 200)):  # the banner overlaps no other text, even over a portrait
        tall = rng.integers(0, 256, hw + (3,), np.uint8)
        fig = plotting.summary_figure(tall, rng.random((G, G)), labels=["a"], probs=[1.0], banner=notes.RANDOM_BANNER,
                                      title="x.jpg   top-1: a (1.000)", map_title=TITLES[0], note=TITLES[2])
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        (mine,) = [t.get_window_extent(renderer) for t in fig.texts if t.get_text() == notes.RANDOM_BANNER]
        others = [t.get_window_extent(renderer) for t in fig.texts if t.get_text() != notes.RANDOM_BANNER]
        others += [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
        assert not any(mine.overlaps(box) for box in others), hw
    assert plotting.grid_figsize(1, 2, 0.75, banner=True) == (7.0, plotting.grid_figsize(1, 2, 0.75)[1] + 0.25)
    fig = plotting.rollout_grid([photo], rng.random((1, G, G)), banner=notes.RANDOM_BANNER)
    assert notes.RANDOM_BANNER in [t.get_text() for t in fig.texts]
    assert tuple(fig.get_size_inches()) == plotting.grid_figsize(1, 2, 90 / 160, banner=True)
    fig.canvas.draw()  # the banner sits between the title and the column titles, over nothing
    renderer = fig.canvas.get_renderer()
    boxes = {t.get_text(): t.get_window_extent(renderer) for t in fig.texts}
    below = boxes[notes.RANDOM_BANNER]
    assert boxes["Joint attention (rollout)"].y0 > below.y1 and below.y0 > boxes["original"].y1
