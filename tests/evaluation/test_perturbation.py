"""The perturbation test (vitjax.evaluation.perturbation): a hand-worked synthetic case, the protocol's
invariants, the runner."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from vitjax.attribution.rollout import upsample
from vitjax.checkpoints.load import load_checkpoint, unflatten
from vitjax.checkpoints.synthetic import random_checkpoint
from vitjax.cli.perturbation import main
from vitjax.data.datasets import DatasetError, dataset_records
from vitjax.evaluation.perturbation import (
    STEPS,
    ModelApply,
    auc,
    fill_value,
    label_notes,
    perturbation_correct,
    perturbation_step,
    pixel_ranks,
    relabel,
    removal_counts,
    remove_pixels,
    run_perturbation,
)
from vitjax.model.config import get_config
from vitjax.model.vit import ViT


def quadrant_model(threshold, images):
    """Class 0 scores the mean [0, 1] brightness of the top-left 4 x 4 pixels; class 1 a constant."""
    pixels = images * 0.5 + 0.5  # Google's normalisation undone
    score = jnp.mean(pixels[:, :4, :4, :], axis=(1, 2, 3))
    return jnp.stack([score, jnp.full_like(score, threshold)], axis=-1)


def test_known_answer_on_a_synthetic_model():
    # Two white 8 x 8 images (every pixel 1 in [0, 1] space, 1.0 after normalisation); a 2 x 2 map
    # [[1, 0], [0, 0]] whose bilinear upsampling ranks the top-left 4 x 4 quadrant first: its lowest
    # value, 0.625^2 = 0.39 at pixel (3, 3), is above the highest outside, 0.375 at (4, 0).
    # Steps remove int(64 k) = 6, 12, 19, 25, 32, 38, 44, 51, 57 pixels. The model says class 0 while
    # more than 0.7 of the quadrant's 16 pixels remain (> 11.2 pixels).
    # positive (quadrant first): 6 removed leaves 10/16 = 0.625 -> class 1 from the first step on.
    # negative (the 48 outside pixels first): 51 removed leaves 13/16 -> class 0; 57 leaves 7/16 -> 1.
    images = np.ones((2, 8, 8, 3), np.float32)
    maps = np.tile(np.array([[1.0, 0.0], [0.0, 0.0]], np.float32), (2, 1, 1))
    labels = np.array([0, 1])  # image 0 labelled with the clean prediction, image 1 with the other class
    pos, pos_pred = perturbation_correct(quadrant_model, jnp.float32(0.7), images, maps, labels, positive=True)
    neg, _ = perturbation_correct(quadrant_model, jnp.float32(0.7), images, maps, labels, positive=False)
    assert pos.shape == neg.shape == (10, 2)
    np.testing.assert_array_equal(pos_pred[:, 0], [0] + [1] * 9)
    np.testing.assert_array_equal(pos[:, 0], [1] + [0] * 9)
    np.testing.assert_array_equal(neg[:, 0], [1] * 9 + [0])
    np.testing.assert_array_equal(pos[:, 1], [0] + [1] * 9)
    np.testing.assert_array_equal(neg[:, 1], [0] * 9 + [1])
    # by hand, trapezoids of width 0.1: [1, 0, ...] -> 0.05; [1] * 9 + [0] -> 0.8 + 0.05; x 100
    assert auc(pos[:, 0]) == pytest.approx(5.0)
    assert auc(neg[:, 0]) == pytest.approx(85.0)
    assert auc(pos[:, 1]) == pytest.approx(85.0)
    assert auc(neg[:, 1]) == pytest.approx(5.0)
    assert auc(pos.mean(axis=1)) == pytest.approx(45.0)  # the mean curve: AUC is linear


def test_auc_and_counts_by_hand():
    assert auc([1.0] * 10) == pytest.approx(90.0)
    assert auc([0.8, 0.6] + [0.0] * 8) == pytest.approx(100 * (0.07 + 0.03))
    with pytest.raises(ValueError, match="10 points"):
        auc([1.0] * 9)
    # the published code's int(224 * 224 * k)
    assert removal_counts(224 * 224) == (0, 5017, 10035, 15052, 20070, 25088, 30105, 35123, 40140, 45158)
    assert removal_counts(64) == (0, 6, 12, 19, 25, 32, 38, 44, 51, 57)
    with pytest.raises(ValueError, match="steps"):
        removal_counts(64, (0.5, 1.5))


def test_removal_order_counts_and_fill(rng):
    # ImageNet normalisation: a removed pixel is 0 in [0, 1] space, i.e. -mean/std after normalising
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    fill = fill_value(mean, std)
    np.testing.assert_allclose(np.asarray(fill) * std + mean, 0.0, atol=1e-6)  # float32 rounding of mean/std
    maps = rng.uniform(0, 1, (2, 3, 5)).astype(np.float32)
    images = rng.uniform(-1, 1, (2, 48, 80, 3)).astype(np.float32)
    up = np.asarray(upsample(maps, (48, 80))).reshape(2, -1)
    for positive in (True, False):
        ranks = np.asarray(pixel_ranks(maps, size=(48, 80), positive=positive))
        for b in range(2):
            np.testing.assert_array_equal(np.sort(ranks[b].ravel()), np.arange(48 * 80))  # a permutation
        for count in removal_counts(48 * 80)[1:]:
            out = np.asarray(remove_pixels(jnp.asarray(images), jnp.asarray(ranks), count, fill))
            removed = np.all(out == np.asarray(fill), axis=-1).reshape(2, -1)
            kept = ~removed
            assert (removed.sum(axis=1) == count).all()
            np.testing.assert_array_equal(out.reshape(2, -1, 3)[kept], images.reshape(2, -1, 3)[kept])
            for b in range(2):  # the removed pixels are the highest-valued (positive) or the lowest
                r, k = up[b][removed[b]], up[b][kept[b]]
                assert (r.min() >= k.max()) if positive else (r.max() <= k.min())


def _small_vit(num_classes=5):
    config = get_config("testing", num_layers=2, hidden_size=16, mlp_dim=32, image_size=(48, 80),
                        num_classes=num_classes)
    return ViT(config), unflatten(random_checkpoint(config))


def test_clean_point_is_clean_accuracy_and_removing_nothing_changes_nothing(rng):
    model, params = _small_vit()
    images = rng.uniform(-1, 1, (4, 48, 80, 3)).astype(np.float32)
    maps = rng.uniform(0, 1, (4, 3, 5)).astype(np.float32)
    clean = np.argmax(np.asarray(model.apply({"params": params}, images)), axis=1)
    labels = np.array([clean[0], clean[1], (clean[2] + 1) % 5, (clean[3] + 1) % 5])
    correct, preds = perturbation_correct(ModelApply(model), params, images, maps, labels, positive=True)
    np.testing.assert_array_equal(preds[0], clean)
    np.testing.assert_array_equal(correct[0], [True, True, False, False])
    assert correct[0].mean() == 0.5  # the 0 % point is the clean accuracy
    # against the predicted class, the clean point is always right
    by_pred, _ = perturbation_correct(ModelApply(model), params, images, maps, None, positive=False)
    assert by_pred[0].all()
    # removing 0 pixels: the very same input, so the very same predictions at every "step"
    ranks = pixel_ranks(maps, size=(48, 80), positive=True)
    same = remove_pixels(jnp.asarray(images), ranks, 0, fill_value((0.5,) * 3, (0.5,) * 3))
    np.testing.assert_array_equal(np.asarray(same), images)
    zero, zero_preds = perturbation_correct(ModelApply(model), params, images, maps, labels, positive=True,
                                            steps=(0.0, 0.0))
    np.testing.assert_array_equal(zero, np.repeat(correct[:1], 3, axis=0))
    np.testing.assert_array_equal(zero_preds, np.repeat(preds[:1], 3, axis=0))


def test_bad_arguments(rng):
    model, params = _small_vit()
    images = rng.uniform(-1, 1, (2, 48, 80, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="maps must be"):
        perturbation_correct(ModelApply(model), params, images, np.zeros((3, 3, 5)), positive=True)
    with pytest.raises(ValueError, match="labels must be"):
        perturbation_correct(ModelApply(model), params, images, np.zeros((2, 3, 5)), [0.5, 1.5], positive=True)
    with pytest.raises(ValueError, match="methods must be among"):
        perturbation_step(model, params, methods=["lrp"])
    with pytest.raises(ValueError, match="explain must be"):
        perturbation_step(model, params, explain="target")
    headless, hparams = _small_vit(num_classes=None)
    with pytest.raises(ValueError, match="num_classes is None"):
        perturbation_step(headless, hparams)


# --- the dataset runner -----------------------------------------------------------------------------------


@pytest.fixture
def class_folder(tmp_path, rng):
    root = tmp_path / "data"
    for name in ("ant", "bee"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    (root / "bee" / "broken.png").write_bytes(b"not an image")
    return root


def test_runner_curves_files_and_resume(make_checkpoint, class_folder, tmp_path):
    model, params = load_checkpoint(make_checkpoint("testing", image_size=32, num_classes=3))
    records = dataset_records(class_folder)
    out = tmp_path / "out"
    methods = ("rollout", "generic")
    res = run_perturbation(model, params, records, out, root=class_folder, methods=methods, batch_size=2)
    assert res["images"] == 4 and len(res["failed"]) == 1 and res["failed"][0][0] == "bee/broken.png"
    # the clean point of every curve is the clean accuracy against the folder labels (ant 0, bee 1)
    from vitjax.data.images import preprocess

    x = np.stack([preprocess(class_folder / c / f"{i}.png", model.config) for c in ("ant", "bee") for i in range(2)])
    clean = np.argmax(np.asarray(model.apply({"params": params}, x)), axis=1)
    want = float(np.mean(clean == np.array([0, 0, 1, 1])))
    assert res["clean_accuracy"] == pytest.approx(want)
    for m in methods:
        for order in ("positive", "negative"):
            curve = res["methods"][m][order]
            assert len(curve["accuracy"]) == 1 + len(STEPS)
            assert curve["accuracy"][0] == pytest.approx(want)
            assert curve["auc"] == pytest.approx(auc(curve["accuracy"]))
    saved = json.loads((out / "perturbation.json").read_text())
    assert saved["methods"] == res["methods"]
    assert (out / "perturbation.csv").read_text().splitlines()[0] == "method,order,fraction_removed,accuracy,auc"
    assert len((out / "perturbation.csv").read_text().splitlines()) == 1 + 2 * 2 * 10
    assert (out / "perturbation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a rerun resumes from the shards (nothing left to compute) and gives the same curves
    again = run_perturbation(model, params, records, out, root=class_folder, methods=methods, batch_size=2)
    assert again["methods"] == res["methods"]
    # scored against the clean prediction instead: every clean point is 1
    pred = run_perturbation(model, params, relabel(records, "predicted"), tmp_path / "pred", root=class_folder,
                            methods=("last_layer",), batch_size=2)
    assert pred["methods"]["last_layer"]["negative"]["accuracy"][0] == 1.0
    with pytest.raises(DatasetError, match="other settings"):
        run_perturbation(model, params, records, out, root=class_folder, methods=("generic",), batch_size=2)


def test_relabel_with_a_mapping(class_folder):
    records = relabel(dataset_records(class_folder), {"bee": 7})
    assert {(r.class_name, r.label) for r in records} == {("ant", None), ("bee", 7)}


def test_command_line(make_checkpoint, class_folder, tmp_path, capsys):
    ckpt = make_checkpoint("testing", image_size=32, num_classes=3)
    code = main(["--ckpt", str(ckpt), "--data", str(class_folder), "--out", str(tmp_path / "cli"),
                 "--methods", "last_layer", "--labels", "predicted", "--batch-size", "4"])
    assert code == 0
    text = capsys.readouterr().out
    assert "4 of 5 images scored (1 failed)" in text and "last_layer" in text
    assert main(["--ckpt", str(ckpt), "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2


def _cli(ckpt, data, out, *extra):
    return ["--ckpt", str(ckpt), "--data", str(data), "--out", str(out), "--methods", "last_layer", *extra]


def test_rejected_run_writes_nothing_and_the_corrected_rerun_runs(make_checkpoint, class_folder, tmp_path, capsys):
    ckpt = make_checkpoint("testing", image_size=32, num_classes=2)
    out = tmp_path / "out"
    for bad in (["--batch-size", "0"], ["--workers", "0"], ["--sample", "0"]):
        assert main(_cli(ckpt, class_folder, out, "--labels", "predicted", *bad)) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {bad[0]} must be a positive integer") and err.count("\n") == 1
        assert not out.exists()  # refused before anything is written
    model, params = load_checkpoint(ckpt)
    records = dataset_records(class_folder)
    for kwargs, message in (({"batch_size": 0}, "batch_size"), ({"resize": "lanczos"}, "resize"),
                            ({"workers": 0}, "workers"), ({"steps": (0.5, 2.0)}, "steps")):
        with pytest.raises(ValueError, match=message):
            run_perturbation(model, params, records, out, root=class_folder, methods=("last_layer",), **kwargs)
        assert not out.exists()
    assert main(_cli(ckpt, class_folder, out, "--labels", "predicted", "--batch-size", "2")) == 0
    assert "4 of 5 images scored (1 failed)" in capsys.readouterr().out


def test_usage_errors_are_one_line(capsys):
    for argv in (["--ckpt", "x", "--data", "y", "--out", "z", "--batch-size", "abc"], ["--ckpt", "x"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("vitjax-perturbation: error: "), err
        assert "usage:" not in err and "(see vitjax-perturbation --help)" in err


def test_folders_that_are_not_the_model_classes_are_warned_about(make_checkpoint, class_folder, tmp_path, capsys):
    """2 class folders (ant, bee) scored as classes 0 and 1 of a 3-class model: a warning, also in the JSON."""
    ckpt = make_checkpoint("testing", image_size=32, num_classes=3)
    out = tmp_path / "out"
    assert main(_cli(ckpt, class_folder, out, "--batch-size", "4")) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1
    assert "2 class folders but the model has 3 classes" in warning[0] and "--labels predicted" in warning[0]
    saved = json.loads((out / "perturbation.json").read_text())
    assert saved["warnings"] == [warning[0][len("warning: "):]]
    assert "failed: bee/broken.png: " in err  # failures on stderr
    # as many folders as classes, or labels that are not folder indices: no warning
    records = dataset_records(class_folder)
    assert label_notes(records, 2, class_folder) == []
    assert label_notes(records, 3, class_folder, "predicted") == []
    assert label_notes(records, 3, class_folder, {"ant": 2}) == []
    # a label the model does not have: refused before anything is written
    (tmp_path / "map.json").write_text(json.dumps({"bee": 7}))
    assert main(_cli(ckpt, class_folder, tmp_path / "bad", "--labels", str(tmp_path / "map.json"))) == 2
    assert "label 7 (folder 'bee') is not a class of the model (0..2)" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_flat_folder_is_scored_against_the_prediction_with_a_note(make_checkpoint, class_folder, tmp_path, capsys):
    """Images directly in ROOT (no class folders) are accepted, unlabelled, and the command says so."""
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in (class_folder / "ant").iterdir():
        (flat / p.name).write_bytes(p.read_bytes())
    ckpt = make_checkpoint("testing", image_size=32, num_classes=2)
    assert main(_cli(ckpt, flat, tmp_path / "out", "--batch-size", "2")) == 0
    captured = capsys.readouterr()
    assert f"warning: {flat}: no class folders; its 2 images are unlabelled" in captured.err
    assert "clean top-1 100.00 %" in captured.out  # scored against the clean prediction


def test_plot_axis_is_accuracy_in_percent():
    """All-zero curves still get a 0-100 % axis, not matplotlib's -0.04..0.04 around 0."""
    from vitjax.evaluation.perturbation import plot_curves

    zero = {"accuracy": [0.0] * 10, "auc": 0.0}
    fig = plot_curves({"steps": [0.0, *STEPS], "images": 3,
                       "methods": {"rollout": {"positive": zero, "negative": zero}},
                       "warnings": ["data has 3 class folders but the model has 1000 classes"]})
    for ax in fig.axes:
        low, high = ax.get_ylim()
        assert low <= 0 and high >= 100 and high - low <= 110
    assert "warning: data has 3 class folders" in fig.get_supxlabel()


def test_ctrl_c_says_what_is_kept_and_resumes(make_checkpoint, class_folder, tmp_path, monkeypatch, capsys):
    """Ctrl-C after the first shard: one line (images kept, the same command resumes), exit 130, no traceback."""
    from vitjax.evaluation import runner

    ckpt = make_checkpoint("testing", image_size=32, num_classes=2)
    out = tmp_path / "out"
    argv = _cli(ckpt, class_folder, out, "--labels", "predicted", "--batch-size", "2")
    real_write = runner.write_atomic

    def write(path, data, **kw):
        result = real_write(path, data, **kw)
        if "shards" in str(path):
            raise KeyboardInterrupt  # as a SIGINT arriving right after the first shard is on disk
        return result

    monkeypatch.setattr(runner, "write_atomic", write)
    assert main(argv) == 130
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-1] == (f"interrupted: 2 images finished, kept in {out / 'shards'}; run the "
                                             "same command to resume")
    assert "Traceback" not in captured.err and not (out / "perturbation.json").exists()
    monkeypatch.undo()
    assert main(argv) == 0
    assert "4 of 5 images scored (1 failed)" in capsys.readouterr().out
