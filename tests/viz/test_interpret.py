"""The lens and head-importance figures (vitjax.viz.interpret) and ``vitjax-visualize --method lens|...``."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vitjax.attribution import methods
from vitjax.cli import visualize as cli
from vitjax.evaluation import perturbation
from vitjax.viz import interpret


def _photo(path, size=(40, 30)):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_new_kinds_are_registered_once_and_never_taken_for_maps():
    assert methods.get("lens").kind == "lens" and methods.get("head-importance").kind == "importance"
    assert {"lens", "head-importance"} <= set(methods.names())  # the --method choices
    for name in ("lens", "head-importance"):
        m = methods.get(name)
        assert not m.gives_maps and not m.single and not m.needs_gradients
        assert name not in methods.names("attention") and name not in methods.names(single=True)
        assert name not in perturbation.RUNNER_METHODS
    assert all(methods.get(n).gives_maps for n in methods.names(single=True))


def test_figures_draw_the_arrays():
    photo = np.zeros((30, 40, 3), np.uint8)
    logits = np.random.default_rng(0).normal(size=(4, 7))
    fig = interpret.lens_figure(photo, logits, np.random.default_rng(1).normal(size=(4, 2, 2)),
                                labels=[f"class {i}" for i in range(7)], map_label="logit of class 3", k=3,
                                title="t", footer="f")
    assert len(fig.axes) == 4 * 2 + 1  # a photo tile and bars per depth, one colour bar
    fig = interpret.importance_figure(np.arange(12.0).reshape(3, 4) - 6, quantity="q", spread=np.ones((3, 4)))
    assert fig.axes[0].images[0].get_array().shape == (3, 4)
    fig = interpret.feature_lens_figure(photo, np.linspace(0.2, 1.0, 5))
    assert len(fig.axes[1].lines) == 1
    with pytest.raises(ValueError, match="same rows"):
        interpret.lens_figure(photo, logits, np.zeros((3, 2, 2)), labels=["a"] * 7, map_label="x")
    with pytest.raises(ValueError, match="L, H"):
        interpret.importance_figure(np.zeros(3), quantity="q")


@pytest.mark.parametrize("method", ["lens", "head-importance"])
@pytest.mark.parametrize("head", [True, False], ids=["classifier", "headless"])
def test_visualize_lens_and_head_importance(make_checkpoint, tmp_path, capsys, monkeypatch, method, head):
    footers = []
    def spying(draw):
        def spy(*a, **kw):
            footers.append(kw.get("footer"))
            return draw(*a, **kw)
        return spy

    for name in ("importance_figure", "lens_figure", "feature_lens_figure"):
        monkeypatch.setattr(interpret, name, spying(getattr(interpret, name)))
    ckpt = make_checkpoint("testing", num_layers=2, **({} if head else {"num_classes": None}))
    images = [_photo(tmp_path / "a.png"), _photo(tmp_path / "b.png", (30, 50))]
    code = cli.main(["--ckpt", str(ckpt), "--out", str(tmp_path / "out"), "--no-compile-cache", "--run-name", "r",
                     "--method", method, "--images", *map(str, images), "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    run = tmp_path / "out" / "r"
    names = sorted(p.name for p in run.iterdir())
    assert f"001-a-{method}.png" in names and f"002-b-{method}.png" in names
    assert ("head-importance-run.png" in names) == (method == "head-importance")
    assert not any(n.startswith("grid-") for n in names)  # no map grid for these kinds
    assert "predictions.tsv" in names
    # each footer says what was computed, for this model, never rollout options that do not apply
    assert footers and all("rollout" not in f and "random weights" in f for f in footers)
    want = {("lens", True): "logit lens", ("lens", False): "feature lens",
            ("head-importance", True): "target logit's change", ("head-importance", False): "features' cosine"}
    assert all(want[method, head] in f for f in footers), footers


def test_a_one_image_run_without_summaries_still_writes_the_run_importance(make_checkpoint, tmp_path, capsys):
    ckpt = make_checkpoint("testing", num_layers=1)
    code = cli.main(["--ckpt", str(ckpt), "--out", str(tmp_path), "--no-compile-cache", "--run-name", "r",
                     "--method", "head-importance", "--images", str(_photo(tmp_path / "a.png")), "--no-summary",
                     "-q"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["head-importance-run.png", "predictions.tsv"]
