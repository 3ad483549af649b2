"""Head importance over a dataset (vitjax.evaluation.importance, ``evaluate.py --method head-importance``): the
runner's step and aggregate, the run's files against vitjax.head_importance on the same images, resume, forged
shard rows, the command's errors. Tiny random checkpoints and image folders written here; no network."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from support.helpers import rounding_tol
from support.tiny_models import tiny_model as _model

import vitjax
from vitjax.attribution.importance import CPU_IMAGES, _importance, ablation_bytes, chunk_size, head_importance
from vitjax.checkpoints.synthetic import random_checkpoint, save_npz
from vitjax.cli import evaluate as cli_evaluate
from vitjax.data.batching import Batch
from vitjax.errors import NonFiniteError, VitjaxWarning
from vitjax.evaluation import importance as ev
from vitjax.evaluation import runner
from vitjax.evaluation.importance import aggregate_importance, importance_step, row_schema, top_heads
from vitjax.model import memory
from vitjax.model.config import get_config
from vitjax.model.vit import ViT

NOT_FINITE = "the model's output is not finite (NaN/inf)"
LAYERS, HEADS, SIZE = 3, 2, 32
CLASSES = {"cat": 3, "dog": 2}  # 5 images: batches of 2, 2, 1 (the last one padded)


# --------------------------------------------------------------------------- the step and the aggregate
# (moved with importance_step / aggregate_importance from tests/attribution/test_importance.py)


def test_non_finite_output_is_a_failed_row():
    model, params, x = _model(num_layers=2)
    bad = jax.tree_util.tree_map(lambda a: a, params)
    bad["head"]["bias"] = bad["head"]["bias"].at[0].set(jnp.nan)  # every logit of class 0 NaN
    batch = Batch(index=0, start=0, images=np.asarray(x), valid=np.array([True, True]), items=("a", "b"),
                  extras=(None, None), failed=())
    rows = importance_step(model, bad, checkpoint="nan.npz")(batch)
    assert [r["status"] for r in rows] == ["failed", "failed"] and "nan.npz" in rows[0]["reason"]
    assert aggregate_importance(rows)["count"] == 0


def test_the_dataset_step_skips_padding_and_aggregates():
    model, params, x = _model(num_layers=2, num_heads=4, batch=3)
    images = np.asarray(x).copy()
    images[2] = 0.0  # a padding row
    batch = Batch(index=0, start=0, images=images, valid=np.array([True, True, False]), items=("a", "b"),
                  extras=(None, None), failed=())
    rows = importance_step(model, params, mode="mean")(batch)
    assert len(rows) == 2 and np.asarray(rows[0]["head_importance"]).shape == (2, 4)
    want = head_importance(model, params, x[:2], mode="mean")  # the mean over the two real images only
    np.testing.assert_allclose(np.asarray([r["head_importance"] for r in rows]), want, atol=1e-5)
    assert [r["target_class"] for r in rows] == np.argmax(vitjax.predict(model, params, x[:2]), -1).tolist()
    agg = aggregate_importance(rows + [{"image": "c", "status": "failed"}])
    assert agg["count"] == 2 and agg["mean"].shape == (2, 4)
    np.testing.assert_allclose(agg["mean"], np.mean(want, axis=0), atol=1e-5)
    np.testing.assert_allclose(agg["std"], np.std(want, axis=0), atol=1e-5)
    assert aggregate_importance(np.zeros((0, 2, 4)))["count"] == 0


def test_bad_step_settings_are_one_line_errors():
    headless, p2, _ = _model(num_layers=1, num_classes=None)
    with pytest.raises(ValueError, match="target must be None"):
        importance_step(headless, p2, target=1)
    model, params, _ = _model(num_layers=1)
    for kw, text in ((dict(mode="max"), "mode must be"), (dict(budget=0), "budget must be"),
                     (dict(target=9), "in \\[0, 6\\]")):
        with pytest.raises(ValueError, match=text) as e:
            importance_step(model, params, **kw)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="n, L, H"):
        aggregate_importance(np.zeros((2, 3)))


def test_the_row_schema_takes_this_models_rows_only():
    schema = row_schema(2, 3, 5)
    good = {"image": "a/1.png", "head_importance": [[0.5, -1, 2.0], [0, 0, -3.25]], "target_class": 4}
    assert runner.row_problem(good, schema) is None
    forged = {
        "head_importance": ([[0.5, -1, 2.0]], [[1, 2], [3, 4]], [[0.5, "x", 2.0], [0, 0, 0]],
                            [[0.5, True, 2.0], [0, 0, 0]], [[0.5, 1, 2.0], [0, 0]], "0.5", 1.0, None),
        "target_class": (5, -1, 2.0, True, "3", None),
    }
    for key, values in forged.items():
        for v in values:
            problem = runner.row_problem({**good, key: v}, schema)
            assert problem is not None and problem.startswith(f"a/1.png: '{key}' is "), (key, v, problem)
    headless = row_schema(2, 3, None)
    assert runner.row_problem({**good, "target_class": -1}, headless) is None
    assert "-1" in runner.row_problem(good, headless)


def test_top_heads_are_the_lowest_values_one_based():
    t = np.array([[0.0, -2.0, 1.0], [-3.0, -2.0, 0.5]])
    assert top_heads(t) == ["2.1", "1.2", "2.2"]  # ties: the lower layer first
    assert top_heads(t, k=1) == ["2.1"]


# --------------------------------------------------------------------------- the run


def _photo(path: Path, seed: int, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), np.uint8)).save(path)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("heads-data")
    seed = 0
    for name, n in CLASSES.items():
        for i in range(n):
            seed += 1
            _photo(root / name / f"{i}.png", seed, (40 + 3 * seed, 30 + seed))
    return root


@pytest.fixture(scope="module")
def ckpt(make_checkpoint) -> Path:
    return make_checkpoint("testing", image_size=(SIZE, SIZE), patch_size=(8, 8), num_layers=LAYERS,
                           num_heads=HEADS)


def _reference(ckpt, root: Path, mode: str, batch: int):
    """``[n, L, H]`` of vitjax.head_importance on the run's images in the run's batches, and the logits' scale."""
    model, params = vitjax.load_checkpoint(ckpt)
    paths = sorted(root.rglob("*.png"))
    x = np.stack([vitjax.preprocess(p, model.config) for p in paths])
    parts = [np.asarray(head_importance(model, params, x[i:i + batch], mode=mode)) for i in range(0, len(x), batch)]
    return [p.relative_to(root).as_posix() for p in paths], np.concatenate(parts), \
        float(np.abs(vitjax.predict(model, params, x)).max())


@pytest.mark.parametrize("mode,batch", [("zero", 2), ("zero", 8)], ids=["batches-of-2", "one-batch"])
def test_the_runs_mean_is_head_importance_averaged_over_the_images(ckpt, dataset, tmp_path, mode, batch):
    out = tmp_path / "run"
    path, results = ev.importance_run(ckpt, dataset, out, batch_size=batch, mode=mode, progress=False)
    names, want, scale = _reference(ckpt, dataset, mode, batch)  # "mean": one batch of all 5, as the run's
    assert path == out / "head_importance.json" and results.new == 5
    assert [r["image"] for r in results] == names and all(r["status"] == "ok" for r in results)
    tol = rounding_tol(scale, steps=2 * LAYERS * HEADS, fan_in=10)
    np.testing.assert_allclose(np.asarray([r["head_importance"] for r in results]), want, rtol=0, atol=tol)
    summary = json.loads(path.read_text())
    assert summary["count"] == 5 and summary["failed"] == 0 and summary["quantity"] == "target logit change"
    np.testing.assert_allclose(summary["mean"], want.mean(0), rtol=0, atol=tol)
    np.testing.assert_allclose(summary["std"], want.std(0), rtol=0, atol=2 * tol)
    cats = [i for i, n in enumerate(names) if n.startswith("cat/")]
    assert summary["per_class"]["cat"]["count"] == 3
    np.testing.assert_allclose(summary["per_class"]["cat"]["mean"], want[cats].mean(0), rtol=0, atol=tol)
    run = summary["run"]
    assert run["method"] == "head-importance" and run["mode"] == mode and run["target"] is None
    assert run["checkpoint"] == ckpt.name and re.fullmatch("[0-9a-f]{64}", run["checkpoint_sha256"])
    assert summary["random_weights"] is True and summary["top_heads"] == top_heads(np.asarray(summary["mean"]))
    assert json.loads((out / "run.json").read_text()) == run
    assert (out / "head_importance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_rerun_reuses_every_row_and_rewrites_nothing(ckpt, dataset, tmp_path, monkeypatch):
    out = tmp_path / "run"
    ev.importance_run(ckpt, dataset, out, batch_size=2, progress=False)
    files = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir() if p.is_file()}

    def never(*a, **kw):
        raise AssertionError("computed again")

    monkeypatch.setattr(ev, "_importance", never)
    _, results = ev.importance_run(ckpt, dataset, out, batch_size=2, progress=False)
    assert results.new == 0 and len(results) == 5
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir() if p.is_file()} == files
    with pytest.raises(ValueError, match="target: null there, 1 here"):  # other settings: refused
        ev.importance_run(ckpt, dataset, out, batch_size=2, target=1, progress=False)


def test_an_out_inside_the_data_is_refused_before_anything_is_written(ckpt, dataset):
    out = dataset / "results"
    with pytest.raises(ValueError, match="is inside data") as e:
        ev.importance_run(ckpt, dataset, out, batch_size=2, progress=False)
    assert "\n" not in str(e.value) and not out.exists()  # not even run.json


def test_mean_ablation_is_refused_where_it_would_depend_on_the_batching(ckpt, dataset, tmp_path, capsys):
    """A dataset run's batches depend on --batch-size and the memory: a mean over a batch is no setting."""
    with pytest.raises(ValueError, match="mode 'mean' is not offered for a dataset run") as e:
        ev.importance_run(ckpt, dataset, tmp_path / "run", batch_size=2, mode="mean", progress=False)
    assert "\n" not in str(e.value) and not (tmp_path / "run").exists()
    assert cli_evaluate.main(_argv(ckpt, dataset, tmp_path / "cli", "--mode", "mean")) == 2
    assert "mode 'mean' is not offered" in _error_line(capsys.readouterr().err)
    # the step (library) keeps the batch mean, but a batch with one image fails it: nothing would be ablated
    model, params = vitjax.load_checkpoint(ckpt)
    x = np.zeros((2, SIZE, SIZE, 3), np.float32)
    batch = Batch(index=0, start=0, images=x, valid=np.array([True, False]), items=("a",), extras=(None,), failed=())
    (row,) = importance_step(model, params, mode="mean")(batch)
    assert row["status"] == "failed" and "batch of one image" in row["reason"]


def test_a_forged_shard_row_is_refused_and_computed_again(ckpt, dataset, tmp_path):
    out = tmp_path / "run"
    _, first = ev.importance_run(ckpt, dataset, out, batch_size=2, progress=False)
    shard = sorted((out / "shards").glob("p*.json"))[0]
    data = json.loads(shard.read_text())
    data["rows"][0]["head_importance"][0] = [1e3] * (HEADS + 1)  # a layer of the wrong width, checksum redone
    data["sha256"] = runner.shard_sha256(data["rows"], data["failed"])
    shard.write_text(json.dumps(data))
    with pytest.warns(VitjaxWarning, match="damaged shard, .*'head_importance' is .*not a 3 x 2 array"):
        _, again = ev.importance_run(ckpt, dataset, out, batch_size=2, progress=False)
    assert again.new == 2 and (shard.parent / f"damaged-{shard.name}").is_file()
    assert [r["head_importance"] for r in again] == [r["head_importance"] for r in first]


def test_the_run_plans_its_batch_from_the_importance_workload(ckpt, dataset, tmp_path, monkeypatch):
    seen = {}
    real = ev.plan_batch_size

    def spy(config, requested, **kw):
        seen.update(kw, requested=requested)
        return real(config, requested, **kw)

    monkeypatch.setattr(ev, "plan_batch_size", spy)
    ev.importance_run(ckpt, dataset, tmp_path / "run", batch_size=4, progress=False, memory_budget=2**30)
    model, _ = vitjax.load_checkpoint(ckpt)
    assert seen["workload"] == "importance" and seen["budget"] == 2**30 and seen["num_images"] == 5
    on_cpu = jax.default_backend() == "cpu"  # at most CPU_IMAGES images per block there
    assert seen["ablations"] == (min(2**28, CPU_IMAGES * ablation_bytes(model.config, 1)) if on_cpu else 2**28)


def test_the_importance_estimate_bounds_xlas_buffer_assignment():
    """The "importance" workload is an upper bound of the compiled program's arguments, outputs and temporaries."""
    config = get_config("ViT-Ti_16", image_size=64, num_layers=3, num_classes=10)
    model = ViT(config)
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))["params"])
    for batch in (1, 4):
        for budget, platform in ((2**40, "gpu"), (2**40, "cpu"), (1, "gpu")):
            chunk = chunk_size(config, batch, budget, platform=platform)
            x = jax.ShapeDtypeStruct((batch, 64, 64, 3), jnp.float32)
            t = jax.ShapeDtypeStruct((batch,), jnp.int32)
            w = jax.ShapeDtypeStruct((batch,), jnp.float32)
            m = _importance.lower(model, params, x, t, w, mode="mean", chunk=chunk).compile().memory_analysis()
            xla = m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
            reserve = min(budget, CPU_IMAGES * ablation_bytes(config, 1)) if platform == "cpu" else budget
            in_flight = chunk * ablation_bytes(config, batch) - batch * ablation_bytes(config, 1)
            assert in_flight <= reserve  # what the run reserves covers what chunk_size lets run at once
            est = (memory.estimate_bytes(config, batch, "importance", runtime=False)
                   + 3 * 4 * memory._param_count(config) + in_flight)
            assert est >= xla, (batch, platform, chunk, est, xla)


# --------------------------------------------------------------------------- the command


def _argv(ckpt, data, out, *extra):
    return ["--method", "head-importance", "--ckpt", str(ckpt), "--data", str(data), "--out", str(out),
            "--batch-size", "2", "--no-progress", *extra]


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("note: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_the_command_end_to_end_with_a_bad_image(ckpt, dataset, tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    for p in dataset.rglob("*.png"):
        (data / p.relative_to(dataset)).parent.mkdir(parents=True, exist_ok=True)
        (data / p.relative_to(dataset)).write_bytes(p.read_bytes())
    (data / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")
    figures = []
    real = ev.importance_figure
    monkeypatch.setattr(ev, "importance_figure", lambda *a, **kw: figures.append(real(*a, **kw)) or figures[-1])
    out = tmp_path / "run"
    code = cli_evaluate.main(_argv(ckpt, data, out, "--mode", "zero"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.strip() == f"6 new, 0 already done (6 in all, 1 failed); {out / 'head_importance.json'}"
    assert re.search(r"^failed: dog/broken\.jpg: .+", captured.err, re.M), captured.err
    rows = list(csv.DictReader((out / "images.csv").read_text().splitlines()))
    assert list(rows[0]) == ["image", "class", "label", "status", "reason", "target_class", "top_heads"]
    bad = [r for r in rows if r["image"] == "dog/broken.jpg"]
    assert len(rows) == 6 and bad[0]["status"] == "failed" and bad[0]["reason"] and bad[0]["top_heads"] == ""
    for r in rows:
        if r["status"] == "ok":
            assert re.fullmatch(r"[1-3]\.[1-2] [1-3]\.[1-2] [1-3]\.[1-2]", r["top_heads"]), r
            assert 0 <= int(r["target_class"]) < 1000  # the "testing" variant's head
    summary = json.loads((out / "head_importance.json").read_text())
    assert summary["count"] == 5 and summary["failed"] == 1 and summary["run"]["mode"] == "zero"
    assert summary["failures"][0]["image"] == "dog/broken.jpg"
    assert (out / "head_importance.png").is_file()
    (fig,) = figures
    title = " ".join(fig._suptitle.get_text().split())  # wrapped
    assert f"{ckpt.name} (random weights)" in title and "mean over 5 images" in title, title
    assert fig.axes[0].get_title().startswith("random weights: ")  # the red line above the map
    texts = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels() + ax.get_xticklabels()]
    assert {"1", "2", "3"} <= set(texts)  # layers and heads 1-based


def test_the_commands_errors_are_one_line_and_write_nothing(ckpt, dataset, make_checkpoint, tmp_path, capsys):
    headless = make_checkpoint("testing", image_size=(SIZE, SIZE), patch_size=(8, 8), num_classes=None)
    cases = [
        (_argv(headless, dataset, tmp_path / "a", "--target", "1"), "has no classification head"),
        (_argv(ckpt, dataset, tmp_path / "b", "--target", "1000"), "in [0, 999]"),
        (_argv(ckpt, dataset, tmp_path / "c", "--scale", "2"), "--scale: only for --method maps"),
        (_argv(ckpt, dataset, tmp_path / "d", "--start-layer", "1"), "--start-layer: only for --method maps"),
        (_argv(ckpt, dataset, tmp_path / "e")[2:] + ["--mode", "mean"], "--mode goes with --method head-importance"),
        (_argv(ckpt, dataset, tmp_path / "f")[2:] + ["--target", "1"], "--target goes with --method head-importance"),
    ]
    for argv, text in cases:
        code = cli_evaluate.main(argv)
        line = _error_line(capsys.readouterr().err)
        assert code == 2 and line.startswith("evaluate.py: error: ") and text in line, (argv, line)
        assert not Path(argv[argv.index("--out") + 1]).exists(), argv


def test_a_run_where_every_image_is_non_finite_is_an_error(tmp_path, dataset, capsys):
    config = get_config("testing", image_size=SIZE, patch_size=8, num_layers=2)
    nan = random_checkpoint(config)
    nan["Transformer/encoderblock_0/LayerNorm_0/scale"] = np.full((10,), 1e30, np.float32)
    ckpt = save_npz(nan, tmp_path / "nan.npz")
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError, match="for any of the 5 images; checkpoint nan.npz"):
        ev.importance_run(ckpt, dataset, out, batch_size=2, progress=False)
    assert cli_evaluate.main(_argv(ckpt, dataset, out)) == 2
    assert "for any of the 5 images" in _error_line(capsys.readouterr().err)
    assert not (out / "head_importance.json").exists() and not (out / "images.csv").exists()
