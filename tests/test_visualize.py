"""vitjax.visualize: outlier tokens, image gathering, run folders and the run pipeline called from Python."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import vitjax
from vitjax import visualize
from vitjax.visualize import OUTLIER_RATIO, ImageItem, RunSettings


def test_outlier_tokens_use_the_median_of_each_image():
    norms = np.ones((2, 3, 4), np.float32)
    norms[0, 1, 2] = OUTLIER_RATIO * 1.01  # just above 4 x median
    norms[1] *= 50.0  # a uniformly larger image: nothing stands out
    norms[1, 0, 0] = 50.0 * OUTLIER_RATIO * 0.99  # just below
    mask = visualize.outlier_tokens(norms)
    assert mask.shape == (2, 3, 4) and mask.dtype == bool
    assert np.argwhere(mask).tolist() == [[0, 1, 2]]
    assert visualize.outlier_tokens(norms, ratio=1.0)[1, 0, 0]


def test_outlier_share_and_the_note_that_says_rollout_is_dominated():
    norms = np.ones((4, 4))
    norms[0, 0] = norms[3, 3] = 10.0
    joint = np.full((4, 4), 0.01)
    joint[0, 0] = 1.0  # 1 / (1 + 0.01 * 14 + 0.01) of the mass on (0, 0), plus 0.01 on (3, 3)
    share = (1.0 + 0.01) / (1.0 + 0.15)
    assert visualize.outlier_share(joint, visualize.outlier_tokens(norms)) == pytest.approx(share)
    mask, note = visualize.outlier_note(norms, joint)
    assert mask.sum() == 2
    assert note == f"rollout dominated by 2 high-norm tokens (\u25a1, norm > 4\u00d7 median): {share:.0%} of its mass"
    mask, note = visualize.outlier_note(norms, np.ones((4, 4)))  # 2 of 16 equal patches: 12 %
    assert note == "2 high-norm tokens (\u25a1, norm > 4\u00d7 median): 12% of the rollout's mass"
    assert visualize.outlier_note(np.ones((4, 4)), joint) == (None, None)
    assert visualize.outlier_share(np.zeros((2, 2)), np.ones((2, 2), bool)) == 0.0


def test_display_and_file_names(tmp_path):
    paths = [tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg"]
    assert visualize.display_names(paths) == ["a/x.jpg", "b/x.jpg"]
    assert visualize.display_names([tmp_path / "only.png"]) == ["only.png"]
    assert visualize.safe_name("Faces/image 0001.jpg") == "Faces_image_0001"
    assert visualize.safe_name("...") == "image"


def test_gather_images_and_run_folders(tmp_path):
    (tmp_path / "p").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "p" / "a.png")
    items = visualize.gather_images([tmp_path / "p"])
    assert items == [ImageItem(tmp_path / "p" / "a.png", "a.png", None)]
    assert visualize.gather_images()[0].display == "grace_hopper.jpg"  # matplotlib's bundled photo
    with pytest.raises(ValueError, match="--include-background needs --caltech101"):
        visualize.gather_images([tmp_path / "p"], include_background=True)
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
    result = visualize.run(model, params, visualize.gather_images([photos]), tmp_path, settings,
                           out=out.append, err=err.append)
    assert [i.display for i in result.processed] == ["red.png"]
    assert [(i.display, why) for i, why in result.skipped] == [("zz.png", "cannot read image (cannot identify "
                                                                          "image file)")]
    assert sorted(p.name for p in result.written) == ["grid-rollout-01.png", "predictions.tsv"]
    assert result.figures == 1 and result.maps_file is None
    assert out[0].splitlines()[0] == "red.png" and len(out[0].splitlines()) == 3
    assert err == [f"warning: skipped {photos / 'zz.png'}: cannot read image (cannot identify image file)"]


def test_run_refuses_what_the_model_cannot_do(make_checkpoint, tmp_path):
    model, params = vitjax.load_checkpoint(make_checkpoint("testing", num_classes=None))
    items = visualize.gather_images()
    with pytest.raises(ValueError, match="method must be one of"):
        visualize.run(model, params, items, tmp_path, RunSettings(method="gradcam"))
    with pytest.raises(ValueError, match="layer must be in"):
        visualize.run(model, params, items, tmp_path, RunSettings(method="heads", layer=3))
    if "generic" in visualize.all_methods():
        with pytest.raises(ValueError, match="explains a class, but the model has no classification head"):
            visualize.run(model, params, items, tmp_path, RunSettings(method="generic"))
    assert list(tmp_path.iterdir()) == []
