"""Commands on models whose outputs are NaN/inf (issue 17, fault 7): an image whose outputs are not finite is a
failure with its reason, a run where every image is so is one line and a non-zero exit; never a figure, a
distance or an AUC computed from NaN. Padded rows of a batch are never reported, whatever they hold.

Checkpoints (finite weights, written by the tests):
* ``nan.npz``: block 0's first LayerNorm scaled by 1e30: every image gives NaN logits and attention;
* ``bright.npz``: a constant patch-embedding kernel of 1e17: a white or black photo makes tokens of ~1e20
  whose norms overflow to inf (a map), a mid-grey photo stays finite.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitjax.checkpoints.synthetic import random_checkpoint, save_npz
from vitjax.cli import evaluate as cli_evaluate
from vitjax.cli import perturbation as cli_perturbation
from vitjax.cli import visualize as cli_visualize
from vitjax.evaluation import runner
from vitjax.model.config import get_config
from vitjax.viz import run as viz_run

NOT_FINITE = "the model's output is not finite (NaN/inf)"


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("nonfinite-ckpt")
    config = get_config("testing", num_layers=2)
    nan = random_checkpoint(config)
    nan["Transformer/encoderblock_0/LayerNorm_0/scale"] = np.full((10,), 1e30, np.float32)
    bright = random_checkpoint(config)
    bright["embedding/kernel"] = np.full(bright["embedding/kernel"].shape, 1e17, np.float32)
    bright["embedding/bias"] = np.zeros_like(bright["embedding/bias"])
    return {"nan": Path(save_npz(nan, root / "nan.npz")), "bright": Path(save_npz(bright, root / "bright.npz")),
            "fine": Path(save_npz(random_checkpoint(config), root / "fine.npz"))}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two class folders: a/grey.png, a/white.png, b/black.png, b/grey2.png (40 x 30 photos)."""
    root = tmp_path_factory.mktemp("nonfinite-data")
    for rel, value in (("a/grey.png", 128), ("a/white.png", 255), ("b/black.png", 0), ("b/grey2.png", 127)):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((30, 40, 3), value, np.uint8)).save(root / rel)
    return root


def nan_padding(monkeypatch, module):
    """Padded rows hold NaN instead of zeros: nothing may be reported for them."""
    real = module.padded_batches

    def padded(*args, **kwargs):
        for batch in real(*args, **kwargs):
            batch.images[~batch.valid] = np.nan
            yield batch

    monkeypatch.setattr(module, "padded_batches", padded)


def error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("note: ")]
    assert len(lines) == 1, err
    assert "error:" in lines[0]
    return lines[0]


# --------------------------------------------------------------------------- visualize


@pytest.mark.parametrize("extra", [[], ["--no-summary"], ["--method", "heads"], ["--method", "generic"],
                                   ["--lean", "--save-maps", "--method", "layer"], ["--method", "lens"]])
def test_visualize_nan_model_is_one_line_and_no_figure(ckpts, data, tmp_path, capsys, extra):
    out = tmp_path / "out"
    code = cli_visualize.main(["--ckpt", str(ckpts["nan"]), "--out", str(out), "--images", str(data), "--quiet",
                               "--no-compile-cache", *extra])
    captured = capsys.readouterr()
    assert code == 2
    line = error_line(captured.err)
    assert f"{NOT_FINITE} for any of the 4 images (logits, attention" in line
    assert "checkpoint nan.npz" in line
    assert captured.out == ""  # no prediction printed
    assert not [p for p in out.rglob("*") if p.is_file()]  # no figure, no predictions.tsv, no maps file


def test_visualize_skips_only_the_images_whose_outputs_are_not_finite(ckpts, data, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli_visualize.main(["--ckpt", str(ckpts["bright"]), "--out", str(out), "--images", str(data / "a"),
                               "--quiet", "--no-compile-cache", "--run-name", "r"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "grey.png" in captured.out and "white.png" not in captured.out
    reason = f"{NOT_FINITE} for this image (maps); checkpoint bright.npz"
    assert f"white.png: {reason}" in captured.err
    assert "Traceback" not in captured.err
    pngs = sorted(p.name for p in (out / "r").glob("*.png"))
    assert pngs == ["001-grey.png", "grid-cumulative-01.png"]
    tsv = (out / "r" / "predictions.tsv").read_text()
    assert "grey.png" in tsv and "white.png" not in tsv


def test_visualize_lens_skips_only_the_non_finite_images_and_never_padded_rows(ckpts, data, tmp_path, capsys,
                                                                               monkeypatch):
    """The lens raises NonFiniteError now (it returned NaN before): one NaN image in a batch must still cost only
    that image, and NaN padding nothing."""
    out = tmp_path / "out"
    code = cli_visualize.main(["--ckpt", str(ckpts["bright"]), "--out", str(out), "--images", str(data / "a"),
                               "--quiet", "--no-compile-cache", "--run-name", "r", "--method", "lens"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err and "white.png: " + NOT_FINITE in captured.err
    assert "grey.png" in captured.out and "white.png" not in captured.out
    assert sorted(p.name for p in (out / "r").glob("*.png")) == ["001-grey-lens.png"]
    assert not any("white" in p.name for p in (out / "r").rglob("*"))
    nan_padding(monkeypatch, viz_run)
    code = cli_visualize.main(["--ckpt", str(ckpts["fine"]), "--out", str(tmp_path / "o2"), "--images", str(data),
                               "--quiet", "--no-compile-cache", "--batch-size", "3", "--no-summary", "--method",
                               "lens"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "skipped" not in captured.err and NOT_FINITE not in captured.err


def test_visualize_padded_rows_never_count(ckpts, data, tmp_path, capsys, monkeypatch):
    nan_padding(monkeypatch, viz_run)
    code = cli_visualize.main(["--ckpt", str(ckpts["fine"]), "--out", str(tmp_path), "--images", str(data),
                               "--quiet", "--no-compile-cache", "--batch-size", "3", "--no-summary"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "skipped" not in captured.err and NOT_FINITE not in captured.err


# --------------------------------------------------------------------------- evaluate


def test_evaluate_nan_model_fails_every_image_and_exits_nonzero(ckpts, data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--ckpt", str(ckpts["nan"]), "--data", str(data), "--out", str(out), "--no-progress"]
    for _ in range(2):  # the rerun reads the failures back from the shards: the same answer
        code = cli_evaluate.main(argv)
        captured = capsys.readouterr()
        assert code == 2
        line = error_line(captured.err)
        assert f"{NOT_FINITE} for any of the 4 images; checkpoint nan.npz" in line
        assert captured.out == ""
        assert not (out / "summary.json").exists() and not (out / "images.csv").exists()
    rows = [r for p in sorted((out / "shards").glob("*.json")) for r in json.loads(p.read_text())["rows"]]
    assert len(rows) == 4
    assert all(r["status"] == "failed" and r["reason"].startswith(NOT_FINITE) for r in rows)
    assert all(not any(k.startswith("mad_") for k in r) for r in rows)  # no distance computed from NaN


def test_evaluate_lists_non_finite_images_as_failed_with_the_reason(ckpts, data, tmp_path, capsys):
    out = tmp_path / "run"
    code = cli_evaluate.main(["--ckpt", str(ckpts["bright"]), "--data", str(data), "--out", str(out),
                              "--no-progress", "--batch-size", "4"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "(4 in all, 2 failed)" in captured.out
    reason = f"{NOT_FINITE} for this image (maps); checkpoint bright.npz"
    assert f"failed: a/white.png: {reason}" in captured.err
    assert f"failed: b/black.png: {reason}" in captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert {k: summary["images"][k] for k in ("total", "evaluated", "failed")} == {"total": 4, "evaluated": 2,
                                                                                  "failed": 2}
    assert {f["image"]: f["reason"] for f in summary["failures"]} == {"a/white.png": reason, "b/black.png": reason}
    assert summary["overall"]["images"] == 2


def test_evaluate_padded_rows_never_count(ckpts, data, tmp_path, capsys, monkeypatch):
    nan_padding(monkeypatch, runner)
    code = cli_evaluate.main(["--ckpt", str(ckpts["fine"]), "--data", str(data), "--out", str(tmp_path / "run"),
                              "--no-progress", "--batch-size", "3"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "(4 in all, 0 failed)" in captured.out


# --------------------------------------------------------------------------- perturbation


def test_perturbation_nan_model_is_refused_never_an_auc(ckpts, data, tmp_path, capsys):
    out = tmp_path / "run"
    code = cli_perturbation.main(["--ckpt", str(ckpts["nan"]), "--data", str(data), "--out", str(out),
                                  "--labels", "predicted"])
    captured = capsys.readouterr()
    assert code == 2
    line = error_line(captured.err)
    assert f"{NOT_FINITE} for any of the 4 images; checkpoint {ckpts['nan']}" in line
    assert "AUC" not in captured.out
    assert not (out / "perturbation.json").exists() and not (out / "perturbation.csv").exists()


def test_perturbation_leaves_non_finite_images_out_of_the_curves(ckpts, data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    nan_padding(monkeypatch, runner)  # 4 images in batches of 3: the second batch has 2 padded rows
    code = cli_perturbation.main(["--ckpt", str(ckpts["bright"]), "--data", str(data), "--out", str(out),
                                  "--labels", "predicted", "--methods", "rollout,generic", "--batch-size", "3"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "2 of 4 images scored (2 failed)" in captured.out
    result = json.loads((out / "perturbation.json").read_text())
    assert result["images"] == 2
    reason = f"{NOT_FINITE} for this image (maps); checkpoint {ckpts['bright']}"
    assert dict(result["failed"]) == {"a/white.png": reason, "b/black.png": reason}
