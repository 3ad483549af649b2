"""vitjax.viz.run: outlier tokens, attention sinks, image gathering, run folders and the run pipeline from Python."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from support.helpers import rounding_tol

import vitjax
from vitjax.attribution import diagnostics, methods
from vitjax.attribution.diagnostics import OUTLIER_RATIO
from vitjax.data import datasets
from vitjax.data.datasets import ImageItem
from vitjax.viz import notes
from vitjax.viz import run as visualize
from vitjax.viz.run import RunSettings


def test_outlier_tokens_use_the_median_of_each_image():
    norms = np.ones((2, 3, 4), np.float32)
    norms[0, 1, 2] = OUTLIER_RATIO * 1.01  # just above 4 x median
    norms[1] *= 50.0  # a uniformly larger image: nothing stands out
    norms[1, 0, 0] = 50.0 * OUTLIER_RATIO * 0.99  # just below
    mask = diagnostics.outlier_tokens(norms)
    assert mask.shape == (2, 3, 4) and mask.dtype == bool
    assert np.argwhere(mask).tolist() == [[0, 1, 2]]
    assert diagnostics.outlier_tokens(norms, ratio=1.0)[1, 0, 0]


def test_outlier_share_and_the_note_that_says_rollout_is_dominated():
    norms = np.ones((4, 4))
    norms[0, 0] = norms[3, 3] = 10.0
    joint = np.full((4, 4), 0.01)
    joint[0, 0] = 1.0  # 1 / (1 + 0.01 * 14 + 0.01) of the mass on (0, 0), plus 0.01 on (3, 3)
    share = (1.0 + 0.01) / (1.0 + 0.15)
    assert diagnostics.outlier_share(joint, diagnostics.outlier_tokens(norms)) == pytest.approx(share)
    mask, note = notes.outlier_note(norms, joint)
    assert mask.sum() == 2
    assert note == f"rollout dominated by 2 high-norm tokens (\u25a1, norm > 4\u00d7 median): {share:.0%} of its mass"
    mask, note = notes.outlier_note(norms, np.ones((4, 4)))  # 2 of 16 equal patches: 12 %
    assert note == "2 high-norm tokens (\u25a1, norm > 4\u00d7 median): 12% of the rollout's mass"
    assert notes.outlier_note(np.ones((4, 4)), joint) == (None, None)
    assert diagnostics.outlier_share(np.zeros((2, 2)), np.ones((2, 2), bool)) == 0.0


def test_display_and_file_names(tmp_path):
    paths = [tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg"]
    assert datasets.display_names(paths) == ["a/x.jpg", "b/x.jpg"]
    assert datasets.display_names([tmp_path / "only.png"]) == ["only.png"]
    assert visualize.safe_name("Faces/image 0001.jpg") == "Faces_image_0001"
    assert visualize.safe_name("...") == "image"


def test_gather_images_and_run_folders(tmp_path):
    (tmp_path / "p").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "p" / "a.png")
    items = datasets.gather_images([tmp_path / "p"])
    assert items == [ImageItem(tmp_path / "p" / "a.png", "a.png", None)]
    assert datasets.gather_images()[0].display == "grace_hopper.jpg"  # matplotlib's bundled photo
    with pytest.raises(ValueError, match="--include-background needs --caltech101"):
        datasets.gather_images([tmp_path / "p"], include_background=True)
    first = visualize.make_run_dir(tmp_path / "out")
    second = visualize.make_run_dir(tmp_path / "out")
    assert first != second and first.is_dir() and second.is_dir()
    named = visualize.make_run_dir(tmp_path / "out", "mine")
    with pytest.raises(ValueError, match="--overwrite"):
        visualize.make_run_dir(tmp_path / "out", "mine")
    assert visualize.make_run_dir(tmp_path / "out", "mine", overwrite=True) == named


def test_run_from_python_collects_outputs_through_callbacks(tiny_checkpoint, tmp_path):
    model, params = vitjax.load_checkpoint(tiny_checkpoint)
    photos = tmp_path / "p"
    photos.mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(photos / "red.png")
    (photos / "zz.png").write_bytes(b"broken")
    out, err = [], []
    settings = RunSettings(checkpoint="tiny", checkpoint_path=tiny_checkpoint, method="rollout", topk=2,
                           summary=False)
    result = visualize.run(model, params, datasets.gather_images([photos]), tmp_path, settings,
                           out=out.append, err=err.append)
    assert [i.display for i in result.processed] == ["red.png"]
    assert [(i.display, why) for i, why in result.skipped] == [("zz.png", "cannot read image (cannot identify "
                                                                          "image file)")]
    assert sorted(p.name for p in result.written) == ["grid-rollout-01.png", "predictions.tsv"]
    assert result.figures == 1 and result.maps_file is None
    random = getattr(model.config, "random_weights", False)  # a vitjax-synthetic file: its console lines say so
    assert out[0].splitlines()[0] == "red.png" + (f"  [{notes.RANDOM_CONSOLE}]" if random else "")
    assert len(out[0].splitlines()) == 3
    assert err == [f"warning: skipped {photos / 'zz.png'}: cannot read image (cannot identify image file)"]


def test_run_refuses_what_the_model_cannot_do(make_checkpoint, tmp_path):
    model, params = vitjax.load_checkpoint(make_checkpoint("testing", num_classes=None))
    items = datasets.gather_images()
    with pytest.raises(ValueError, match="method must be one of"):
        visualize.run(model, params, items, tmp_path, RunSettings(method="gradcam"))
    with pytest.raises(ValueError, match="layer must be in"):
        visualize.run(model, params, items, tmp_path, RunSettings(method="heads", layer=3))
    if "generic" in methods.names():
        with pytest.raises(ValueError, match="explains a class, but the model has no classification head"):
            visualize.run(model, params, items, tmp_path, RunSettings(method="generic"))
    assert list(tmp_path.iterdir()) == []


def test_attention_sinks_are_patches_one_head_gives_more_than_the_share():
    # 2 images, 3 layers, 2 heads, a 4 x 5 grid; every head spreads 1 / 20 on each patch
    received = np.full((2, 3, 2, 4, 5), 1 / 20)
    received[0, 0, 1, 1, 2] = 0.26  # head 2 of layer 1: above 0.25
    received[1, 2, 0, 3, 4] = 0.25  # exactly the share: not above it
    received[1, 1, :, 0, 0] = 0.2  # every head of layer 2 at 0.2: a large share of the layer, no sink
    by_layer = diagnostics.sink_layers(received)
    assert by_layer.shape == (2, 3, 4, 5) and by_layer.dtype == bool
    assert np.argwhere(by_layer).tolist() == [[0, 0, 1, 2]]
    assert np.argwhere(diagnostics.sink_layers(received, share=0.24)).tolist() == [[0, 0, 1, 2], [1, 2, 3, 4]]
    assert np.argwhere(diagnostics.attention_sinks(received, 0.19)).tolist() == [[0, 1, 2], [1, 0, 0], [1, 3, 4]]
    assert not diagnostics.attention_sinks(np.full((3, 2, 4, 5), 1 / 20)).any()  # uniform attention
    with pytest.raises(ValueError, match="received_heads must be"):
        diagnostics.sink_layers(np.zeros((3, 4, 5)))
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match="share"):
            diagnostics.sink_layers(received, share=bad)


def test_sink_note_names_the_layer_head_shares_and_start_layer():
    # 3 layers, 2 heads, 4 x 4 grid
    received = np.full((3, 2, 4, 4), 0.01)
    received[0, 1, 1, 1] = 0.9  # layer 1, head 2: 90 % of its attention; (0.9 + 0.01) / 2 = 46 % of the layer's
    peak = np.zeros((4, 4))
    peak[1, 1] = 1.0
    elsewhere = np.zeros((4, 4))
    elsewhere[2, 3] = 1.0
    mask, note = notes.sink_note(received, peak)
    assert np.argwhere(mask).tolist() == [[1, 1]]
    assert note == ("rollout peak = layer-1 attention sink (\u25cb, takes 90% of head 2's attention, 46% of the "
                    "layer's); --start-layer 1 leaves layer 1 out")
    # start layer 1: the rollout of layers 2-3 does not include layer 1's attention: no ring, and no \u25cb in the note
    # (before: the mask ringed the layer-1 sink on the map of layers 2-3, and the note drew \u25cb for it)
    assert notes.sink_note(received, peak, start_layer=1) == (
        None, "rollout peak on a layer-1 attention sink (takes 90% of head 2's attention, 46% of the layer's), "
              "though start layer 1 leaves layer 1 out")
    assert notes.sink_note(received, elsewhere, start_layer=1) == (
        None, "1 attention sink of layer 1 (> 25% of one head's attention), left out by start layer 1: not ringed")
    received[1, 0, 1, 1], received[2, 0, 0, 0] = 0.8, 0.7  # the peak patch is a sink of layers 1 and 2; another in 3
    # two rings: the note names both (before: it named the peak's only)
    mask, note = notes.sink_note(received, peak)
    assert np.argwhere(mask).tolist() == [[0, 0], [1, 1]]
    assert note == (
        "rollout peak = attention sink of layers 1, 2 (\u25cb, takes 90% of layer-1 head 2's attention, 46% of the "
        "layer's); --start-layer 2 leaves layers 1\u20132 out; 1 more attention sink (\u25cb, > 25% of one head's "
        "attention in layer 3)")
    mask, note = notes.sink_note(received, peak, start_layer=1)
    assert np.argwhere(mask).tolist() == [[0, 0], [1, 1]]  # (1, 1) is a sink of layer 2 too
    assert note == (
        "rollout peak = layer-2 attention sink (\u25cb, takes 80% of head 1's attention, 40% of the layer's); "
        "--start-layer 2 leaves layers 1\u20132 out; 1 more attention sink (\u25cb, > 25% of one head's attention in "
        "layer 3)")
    mask, note = notes.sink_note(received, peak, start_layer=2)  # only layer 3 is in the rollout
    assert np.argwhere(mask).tolist() == [[0, 0]]
    assert note == ("rollout peak on an attention sink of layers 1, 2 (takes 90% of layer-1 head 2's attention, 46% "
                    "of the layer's), though start layer 2 leaves layers 1\u20132 out; 1 attention sink (\u25cb, > 25% "
                    "of one head's attention in layer 3)")
    assert notes.sink_note(received, elsewhere)[1] == (
        "2 attention sinks (\u25cb, > 25% of one head's attention in layers 1, 2, 3), not the rollout's peak")
    last = np.zeros((4, 4))
    last[0, 0] = 1.0  # a sink of the last layer: no start layer leaves it out
    assert notes.sink_note(received, last)[1] == ("rollout peak = layer-3 attention sink (\u25cb, takes 70% of "
                                                      "head 1's attention, 36% of the layer's); 1 more attention "
                                                      "sink (\u25cb, > 25% of one head's attention in layers 1, 2)")
    assert notes.sink_note(np.full((3, 2, 4, 4), 1 / 16), peak) == (None, None)
    with pytest.raises(ValueError, match="joint_map"):
        notes.sink_note(received, np.zeros((4, 5)))


def test_received_heads_is_each_heads_column_mean_in_both_paths(make_checkpoint):
    model, params = vitjax.load_checkpoint(make_checkpoint("testing", num_layers=2))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    two = vitjax.compute_maps(model, params, x, keep_attention=True)
    lean = vitjax.compute_maps(model, params, x, lean=True)
    att = np.asarray(two["attention"], np.float64)  # [B, L, H, N, N]
    want = att[..., 1:].mean(axis=3).reshape(2, 2, 2, 14, 14)
    # the lean path's probabilities come from another compiled forward pass: 9 rounding stages per layer for
    # L = 2 layers plus embedding and softmax (as the logits' tolerance), then the mean over N = 197 queries
    tol = rounding_tol(want.max(), steps=9 * 2 + 3 + 1, fan_in=197)
    for got in (two["received_heads"], lean["received_heads"]):
        assert got.shape == (2, 2, 2, 14, 14)
        np.testing.assert_allclose(np.asarray(got), want, atol=tol)
    np.testing.assert_allclose(np.asarray(two["received_heads"]).mean(axis=2), np.asarray(two["received"]), atol=tol)
