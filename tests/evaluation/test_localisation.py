"""The dataset runner end to end on a Caltech101-layout fixture written here, with a tiny random checkpoint."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from vitjax.cli import evaluate as cli_evaluate
from vitjax.data.datasets import ImageRecord, caltech101
from vitjax.evaluation import localisation as ev
from vitjax.evaluation import report, runner

REPO = Path(__file__).resolve().parents[2]
# class folder -> images; annotation folders as in the distribution (renamed for four classes)
CLASSES = {"Faces": 2, "Faces_easy": 1, "Motorbikes": 2, "airplanes": 2, "ant": 2}
RENAMES = {"Faces": "Faces_2", "Faces_easy": "Faces_3", "Motorbikes": "Motorbikes_16", "airplanes": "Airplanes_Side_2"}
CORRUPT = "101_ObjectCategories/ant/image_0002.jpg"
BROKEN_ANNOTATION = "101_ObjectCategories/Faces_easy/image_0001.jpg"
TOTAL, FAILED, ANNOTATED = 11, 1, 7  # 9 class images + 2 background; Faces_easy's annotation is broken
BATCH = 4  # 11 images -> batches of 4, 4, 3 (the last one uneven)
FINAL = ("images.csv", "summary.json", "metrics_vs_depth.png", "attention_distance.png")
IMAGE_SIZE = (32, 48)  # non-square input (--image-size 32x48): a 4 x 6 patch grid with 8-pixel patches


def _photo(path: Path, size, mode: str, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    image = image.convert(mode) if mode != "RGB" else image
    image.save(path, format="JPEG")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("caltech")
    cats, ann = root / "101_ObjectCategories", root / "Annotations"
    seed = 0
    for name, n in CLASSES.items():
        for i in range(1, n + 1):
            seed += 1
            w, h = 40 + 6 * seed, 30 + 2 * seed
            mode = {("Motorbikes", 2): "CMYK", ("airplanes", 2): "L"}.get((name, i), "RGB")
            _photo(cats / name / f"image_{i:04d}.jpg", (w, h), mode, seed)
            target = ann / RENAMES.get(name, name) / f"annotation_{i:04d}.mat"
            target.parent.mkdir(parents=True, exist_ok=True)
            box = np.array([[5, h - 6, 8, w - 10]], np.uint16)  # [top, bottom, left, right]
            contour = np.array([[0.0, w - 20, w - 18, 2.0], [0.0, 1.0, h - 12, h - 11]])  # relative x; y
            content = {"box_coord": box, "obj_contour": contour}
            savemat(target, {"box_coord": box} if name == "Faces_easy" else content)
    for i in (1, 2):
        _photo(cats / "BACKGROUND_Google" / f"image_{i:04d}.jpg", (50, 40), "RGB", 100 + i)
    (root / CORRUPT).write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    savemat(ann / "README.mat", {"note": np.array([1.0])})  # top-level non-image .mat files
    savemat(ann / "Faces_2.mat", {"note": np.array([2.0])})
    return root


@pytest.fixture(scope="module")
def ckpt(make_checkpoint) -> Path:
    return make_checkpoint("testing", image_size=(32, 32), patch_size=(8, 8), num_layers=2)


def args(ckpt, data, out, *extra):
    return ["--ckpt", str(ckpt), "--data", str(data), "--out", str(out), "--batch-size", str(BATCH),
            "--image-size", "{}x{}".format(*IMAGE_SIZE), "--no-progress", *extra]


@pytest.fixture(scope="module")
def reference(ckpt, dataset, tmp_path_factory) -> Path:
    """One uninterrupted in-process run."""
    out = tmp_path_factory.mktemp("reference")
    assert cli_evaluate.main(args(ckpt, dataset, out)) == 0
    return out


def read_csv(path: Path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def snapshot(folder: Path):
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def env(**extra):
    return {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "MPLBACKEND": "Agg", **extra}


def test_one_row_per_image_corrupt_reported(reference, dataset):
    rows = read_csv(reference / "images.csv")
    records = caltech101(dataset, include_background=True)
    assert [r["image"] for r in rows] == [rec.path.relative_to(dataset).as_posix() for rec in records]
    assert len(rows) == TOTAL
    bad = [r for r in rows if r["status"] != "ok"]
    assert [(r["image"], r["status"]) for r in bad] == [(CORRUPT, "failed")]
    assert "cannot read image" in bad[0]["reason"] and bad[0]["height"] == ""
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["images"] == {"total": TOTAL, "evaluated": TOTAL - FAILED, "failed": FAILED,
                                 "annotated": ANNOTATED, "invalid_annotations": 1}  # Faces_easy: no obj_contour
    assert [f["image"] for f in summary["failures"]] == [CORRUPT]
    assert [p["image"] for p in summary["annotation_problems"]] == [BROKEN_ANNOTATION]
    assert "obj_contour" in summary["annotation_problems"][0]["note"]
    # 2 layers: joint, 2 own, 2 cumulative, 2 baselines; 4 metrics each; 2 x 2 distances
    metric_cols = [c for c in rows[0] if c.endswith(("_pointing", "_iou", "_auc", "_boxmass"))]
    assert len(metric_cols) == 7 * 4
    assert [c for c in rows[0] if c.startswith("mad_")] == ["mad_l01_h01", "mad_l01_h02", "mad_l02_h01", "mad_l02_h02"]
    for r in rows:
        if r["status"] != "ok":
            continue
        annotated = r["annotated"] == "1"
        assert annotated == (r["class"] not in ("BACKGROUND_Google", "Faces_easy"))
        with Image.open(dataset / r["image"]) as im:
            assert (int(r["height"]), int(r["width"])) == im.size[::-1]
        for c in metric_cols:
            assert (r[c] != "") == annotated, (r["image"], c)
            assert not annotated or 0.0 <= float(r[c]) <= 1.0
        if annotated:
            assert float(r["uniform_auc"]) == 0.5  # a constant map ranks every pixel equal
            assert float(r["uniform_iou"]) == float(r["object_fraction"])  # selects every pixel
        # the largest patch distance on a 4 x 6 grid of 8-pixel patches bounds every mean distance
        assert all(0.0 < float(r[c]) < 8 * np.hypot(3, 5) for c in rows[0] if c.startswith("mad_"))
    overall = summary["overall"]
    assert overall["images"] == TOTAL - FAILED and overall["annotated"] == ANNOTATED
    assert np.array(overall["mean_attention_distance"]).shape == (2, 2)
    assert set(summary["per_class"]) == set(CLASSES) | {"BACKGROUND_Google"}
    assert summary["per_class"]["BACKGROUND_Google"]["maps"]["joint"]["auc"] is None
    auc = [float(r["joint_auc"]) for r in rows if r["class"] == "Faces"]
    assert summary["per_class"]["Faces"]["maps"]["joint"]["auc"] == pytest.approx(np.mean(auc), rel=1e-15)
    for name in FINAL[2:]:
        assert (reference / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_does_no_work_and_changes_nothing(reference, ckpt, dataset, monkeypatch, capsys):
    before = snapshot(reference)

    def no_work(*a, **k):
        raise AssertionError("a finished run must load nothing")

    monkeypatch.setattr(ev, "load_target", no_work)
    assert cli_evaluate.main(args(ckpt, dataset, reference)) == 0
    assert snapshot(reference) == before  # same bytes, same modification times, no new shard
    captured = capsys.readouterr()
    assert captured.out.startswith(f"0 new, {TOTAL} already done ({TOTAL} in all, {FAILED} failed); ")
    assert CORRUPT not in captured.out and captured.err.startswith(f"failed: {CORRUPT}: ")
    assert "cannot read image" in captured.err and captured.err.count("\n") == 1


def test_other_settings_and_bad_arguments_refused(reference, ckpt, dataset, tmp_path, capsys):
    assert cli_evaluate.main(args(ckpt, dataset, reference, "--scale", "2")) == 2
    assert "other settings" in capsys.readouterr().err
    assert cli_evaluate.main(args(ckpt, tmp_path / "nope", tmp_path / "out")) == 2
    assert capsys.readouterr().err.startswith(f"evaluate.py: error: {tmp_path / 'nope'}: not a folder")
    assert cli_evaluate.main(args(ckpt, dataset, tmp_path / "out", "--workers", "0")) == 2
    assert "--workers must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything is written
    # the Python API too: every count is checked before the results folder is made
    for kwargs in ({"batch_size": 0}, {"scale": 0}, {"workers": 0}, {"sample": 0}, {"image_size": (32, 0)}):
        with pytest.raises(ValueError):
            ev.evaluate(ckpt, dataset, tmp_path / "out", progress=False, **kwargs)
        assert not (tmp_path / "out").exists(), kwargs
    with pytest.raises(ValueError, match="not inside the dataset root"):
        runner.run(caltech101(dataset), lambda b: [], tmp_path / "out", root=tmp_path, load=None, batch_size=4,
               shape=(32, 48, 3))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["--image-size", "abc"], "argument --image-size: expected SIZE or HEIGHTxWIDTH"),
    (["--image-size", "32", "48"], "unrecognized arguments: 48"),  # HEIGHTxWIDTH, as visualize.py
    (["--batch-size", "abc"], "argument --batch-size: invalid int value"),
    (["--no-such-option"], "unrecognized arguments: --no-such-option"),
])
def test_usage_errors_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_evaluate.main(["--ckpt", "x", "--data", "y", "--out", "z", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"evaluate.py: error: {message}") and err.count("\n") == 1, err
    with pytest.raises(SystemExit):
        cli_evaluate.main(["--ckpt", "x", "--data", "y"])
    assert capsys.readouterr().err == ("evaluate.py: error: the following arguments are required: --out "
                                       "(see evaluate.py --help)\n")


def test_without_annotations_only_distances(reference, ckpt, dataset, tmp_path, capsys):
    """Class folders without annotations: no metrics figure, a note saying why, the distance figure."""
    data = tmp_path / "folders"
    for name in ("Faces", "ant"):
        for p in sorted((dataset / "101_ObjectCategories" / name).glob("*.jpg")):
            (data / name).mkdir(parents=True, exist_ok=True)
            (data / name / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "out"
    assert cli_evaluate.main(args(ckpt, data, out)) == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if line.startswith("note: ")]
    assert notes == ["note: localisation metrics skipped: no object annotations (no Annotations/ folder, as a "
                     "Caltech101 root has); mean attention distances only"]
    assert captured.out.startswith("4 new, 0 already done (4 in all, 1 failed); ")
    assert not (out / "metrics_vs_depth.png").exists()
    assert (out / "attention_distance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["notes"] == [notes[0][len("note: "):]] and summary["images"]["annotated"] == 0
    assert json.loads((reference / "summary.json").read_text())["notes"] == []  # annotated: no note


def test_flat_folder_is_one_unlabelled_group_with_a_note(ckpt, dataset, tmp_path, capsys, monkeypatch):
    """Images directly in ROOT, no class folders: accepted (distances need no label), and said so."""
    titles = []
    draw = report.distance_figure
    monkeypatch.setattr(report, "distance_figure", lambda *a, **kw: titles.append(kw["title"]) or draw(*a, **kw))
    data = tmp_path / "flat"
    data.mkdir()
    for p in sorted((dataset / "101_ObjectCategories" / "Faces").glob("*.jpg")):
        (data / p.name).write_bytes(p.read_bytes())
    assert cli_evaluate.main(args(ckpt, data, tmp_path / "out")) == 0
    assert f"note: {data}: no class folders; its 2 images form one unlabelled group\n" in capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert list(summary["per_class"]) == ["(no class)"] and summary["images"]["evaluated"] == 2
    # a random checkpoint is called random: in the summary and the figure's title
    assert summary["random_weights"] is True and len(titles) == 1 and "(random weights" in titles[0]


def test_distance_figure_tells_every_head_apart():
    """16 heads (ViT-L/H): every head a colour of its own (no 10-colour cycle) and a distinct marker/colour pair."""
    from matplotlib.colors import to_hex

    from vitjax.evaluation.report import distance_figure, head_styles

    for heads in (6, 12, 16, 20, 32):
        styles = head_styles(heads)
        assert len({(s["color"], s["marker"]) for s in styles}) == heads
        if heads <= 20:
            assert len({s["color"] for s in styles}) == heads
    mad = [[10.0 * layer + h for h in range(16)] for layer in range(1, 4)]
    lines = distance_figure(mad).axes[0].get_lines()
    assert len(lines) == 16
    assert len({to_hex(line.get_color()) for line in lines}) == 16
    assert {line.get_label() for line in lines} == {f"head {h}" for h in range(1, 17)}


def test_metrics_figure_axes_and_legend():
    """Fractions on a 0-1 axis even when every value is 0; without annotations one panel that says why."""
    from vitjax.evaluation.report import metrics_figure

    names = ev.map_names(2)
    zero = {"annotated": 3, "maps": {n: {m: 0.0 for m in ("pointing", "iou", "auc", "boxmass")} for n in names}}
    fig = metrics_figure(zero, 2)
    assert len(fig.axes) == 4
    for ax in fig.axes:
        low, high = ax.get_ylim()
        assert low <= 0 and high >= 1 and high - low < 1.1
    none = {"annotated": 0, "maps": {n: {m: None for m in ("pointing", "iou", "auc", "boxmass")} for n in names}}
    fig = metrics_figure(none, 2)
    assert len(fig.axes) == 1 and not fig.axes[0].axison and fig.axes[0].get_legend() is None
    assert "No annotated images" in fig.axes[0].texts[0].get_text()


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import vitjax.io
    from vitjax.cli import evaluate as cli_evaluate
    from vitjax.evaluation import runner

    where = sys.argv[1]
    real_write, real_link = runner.write_atomic, os.link
    shards = []

    def write(path, data, **kw):
        if "shards" in str(path):
            shards.append(path)
        if where == "inside-second-write" and len(shards) == 2:
            def link(src, dst):  # the temporary file is complete; die before it gets its name
                os.kill(os.getpid(), signal.SIGKILL)
            os.link = link
        out = real_write(path, data, **kw)
        if where == "after-first-batch" and len(shards) == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    runner.write_atomic = write
    sys.exit(cli_evaluate.main(sys.argv[2:]))
    """
)


@pytest.mark.parametrize("where, shards_left", [("after-first-batch", 1), ("inside-second-write", 1)])
def test_sigkill_then_resume_gives_the_same_files(reference, ckpt, dataset, tmp_path, where, shards_left, capsys):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", KILLER, where, *args(ckpt, dataset, out)], env=env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(list((out / "shards").glob("p*.json"))) == shards_left
    assert not (out / "images.csv").exists()
    assert cli_evaluate.main(args(ckpt, dataset, out)) == 0
    assert capsys.readouterr().out.startswith(f"{TOTAL - BATCH} new, {BATCH} already done ({TOTAL} in all, ")
    for name in FINAL:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert len(list((out / "shards").glob("p*.json"))) == 3  # 1 + the 2 batches left


def raw_outputs(ckpt, data, out) -> dict:
    """The device program's maps and distances per image, through :func:`vitjax.evaluation.runner.run` on all
    local devices.

    Runs in this process (one device) and, imported, in a subprocess with four.
    """
    import jax

    from vitjax.checkpoints.load import load_checkpoint
    from vitjax.data.batching import local_mesh, replicate, shard_batch
    from vitjax.data.images import preprocess

    model, params = load_checkpoint(ckpt, image_size=IMAGE_SIZE)
    program, _ = ev.maps_program(model)
    mesh = local_mesh()
    params = replicate(params, mesh)

    def step(batch):
        maps, mad, _ = program(params, shard_batch(batch.images, mesh))
        assert len(maps.sharding.device_set) == len(jax.local_devices())
        return [{"maps": np.asarray(maps)[r].ravel().tolist(), "mad": np.asarray(mad)[r].ravel().tolist()}
                for r in batch.rows]

    results = runner.run(caltech101(data, include_background=True), step, out, root=data, batch_size=BATCH,
                     load=lambda rec: preprocess(rec.path, model.config), shape=(32, 48, 3), progress=False)
    return {r["image"]: r for r in results}


MULTI = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import jax
    assert len(jax.local_devices()) == 4, jax.local_devices()
    import test_localisation
    out = test_localisation.raw_outputs(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
    Path(sys.argv[4]).write_text(json.dumps(out))
    sys.exit(test_localisation.cli_evaluate.main(sys.argv[5:]))
    """
)


def test_four_devices_equal_one(reference, ckpt, dataset, tmp_path):
    """Four devices, batches of 4 (one image each) and a last batch of 3: the results of one device.

    Maps are in [0, 1] and come from float32 products whose blocking differs with
    the per-device batch; through 2 layers, rollout and upsampling that moves them
    by a few ulps (eps = 1.2e-7), far below the 1e-5 allowed. The ranking metrics
    (pointing, IoU, AUC) are discontinuous in the maps -- a near-flat random map
    can reorder two cells on one ulp -- so the CSV is compared on the columns that
    are continuous (box mass, distances) and on everything that is not a number.
    """
    out, raw = tmp_path / "multi", tmp_path / "raw.json"
    proc = subprocess.run([sys.executable, "-c", MULTI, str(ckpt), str(dataset), str(tmp_path / "raw"), str(raw),
                           *args(ckpt, dataset, out)],
                          env=env(XLA_FLAGS="--xla_force_host_platform_device_count=4",
                                  PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests"),
                                                              str(REPO / "tests" / "evaluation")])),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    four = json.loads(raw.read_text())
    one = raw_outputs(ckpt, dataset, tmp_path / "raw-one")
    assert list(one) == list(four) and len(one) == TOTAL
    for image, a in one.items():
        b = four[image]
        assert a["status"] == b["status"] and a["reason"] == b["reason"]
        if a["status"] == "ok":
            np.testing.assert_allclose(b["maps"], a["maps"], rtol=0, atol=1e-5, err_msg=image)
            np.testing.assert_allclose(b["mad"], a["mad"], rtol=1e-5, err_msg=image)
    rows_one, rows_four = read_csv(reference / "images.csv"), read_csv(out / "images.csv")
    assert [r["image"] for r in rows_one] == [r["image"] for r in rows_four]
    for a, b in zip(rows_one, rows_four, strict=True):
        assert a.keys() == b.keys()
        for c in a:
            if c.endswith(("_pointing", "_iou", "_auc")):
                assert (a[c] == "") == (b[c] == "")
            elif c.endswith("_boxmass") or c.startswith("mad_"):
                assert (a[c] == "") == (b[c] == "") and (a[c] == "" or float(a[c]) == pytest.approx(
                    float(b[c]), rel=1e-5)), (a["image"], c)
            else:
                assert a[c] == b[c], (a["image"], c)


def test_load_target_follows_exif_orientation(tmp_path):
    """A photo stored 30 wide x 20 high with EXIF orientation 6 is shown 20 wide x 30 high; so is its mask."""
    path = tmp_path / "image_0001.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    Image.new("RGB", (30, 20), (9, 9, 9)).save(path, exif=exif)
    ann = tmp_path / "annotation_0001.mat"
    # object: the stored image's left 10 columns, all rows
    savemat(ann, {"box_coord": np.array([[0, 19, 0, 9]], np.uint16),
                  "obj_contour": np.array([[0.0, 9.0, 9.0, 0.0], [0.0, 0.0, 19.0, 19.0]])})
    t = ev.load_target(ImageRecord(path, 0, "x", ann), (3, 2))
    assert (t.height, t.width) == (30, 20) and t.note == ""
    # clockwise turn: the stored left third becomes the displayed top third
    np.testing.assert_array_equal(t.mask, [[True, True], [False, False], [False, False]])
    np.testing.assert_allclose(t.box, [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]], atol=1e-12)
    assert ev.load_target(ImageRecord(path, 0, "x", None), (3, 2)).mask is None


@pytest.mark.parametrize("orientation", range(1, 9))
def test_mask_turns_like_pillow_turns_the_photo(orientation):
    from PIL import ImageOps

    a = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    image = Image.fromarray(a)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.info["exif"] = exif.tobytes()
    shown = np.asarray(ImageOps.exif_transpose(image))
    np.testing.assert_array_equal(ev._orient(a, orientation), shown)


# --------------------------------------------------------------------------- runs that never trust the disk (#17)


INTERRUPTER = textwrap.dedent(
    """
    import os, signal, sys
    from vitjax.cli import evaluate as cli_evaluate
    from vitjax.evaluation import runner

    real_write = runner.write_atomic

    def write(path, data, **kw):
        out = real_write(path, data, **kw)
        if "shards" in str(path):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C as soon as the first shard is on disk
        return out

    runner.write_atomic = write
    sys.exit(cli_evaluate.main(sys.argv[1:]))
    """
)


def test_ctrl_c_says_what_is_kept_and_the_same_command_resumes(reference, ckpt, dataset, tmp_path, capsys):
    """SIGINT after the first shard: one line (what is kept, how to resume), exit 130, no traceback."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", INTERRUPTER, *args(ckpt, dataset, out)], env=env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-1] == (f"interrupted: {BATCH} images finished, kept in {out / 'shards'}; "
                                            "run the same command to resume")
    assert len(list((out / "shards").glob("p*.json"))) == 1 and not (out / "images.csv").exists()
    assert cli_evaluate.main(args(ckpt, dataset, out)) == 0
    assert capsys.readouterr().out.startswith(f"{TOTAL - BATCH} new, {BATCH} already done ({TOTAL} in all, ")
    for name in FINAL:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def test_ctrl_c_before_any_shard_in_process(ckpt, dataset, tmp_path, monkeypatch, capsys):
    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ev, "load_target", interrupt)  # raised in a loader thread, passed on by the batcher
    assert cli_evaluate.main(args(ckpt, dataset, tmp_path / "out")) == 130
    assert capsys.readouterr().err == ("interrupted before any image was finished; run the same command to start "
                                       "again\n")


def test_a_failed_first_run_leaves_a_folder_the_corrected_run_takes_over(reference, ckpt, dataset, tmp_path,
                                                                          monkeypatch, capsys):
    """run.json and an empty shards/ (a crash in the first batch) hold no results: another setting may use them."""
    out = tmp_path / "out"

    def crash(*a, **k):
        raise RuntimeError("simulated crash in the first batch")

    with monkeypatch.context() as m:
        m.setattr(ev, "load_target", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            cli_evaluate.main(args(ckpt, dataset, out, "--scale", "2"))
    assert json.loads((out / "run.json").read_text())["scale"] == 2 and not list((out / "shards").iterdir())
    capsys.readouterr()
    assert cli_evaluate.main(args(ckpt, dataset, out)) == 0
    captured = capsys.readouterr()
    assert f"note: {out}: held other settings (scale: 2 there, 4 here) but no finished results; this run takes it " \
           "over\n" in captured.err
    assert captured.out.startswith(f"{TOTAL} new, 0 already done")
    assert json.loads((out / "run.json").read_text())["scale"] == 4
    for name in FINAL:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def test_other_settings_are_refused_naming_each_with_both_values(reference, ckpt, dataset, capsys):
    """A folder with results keeps them: a rerun with other settings (a subset included) is refused in one line."""
    before = snapshot(reference)
    argv = args(ckpt, dataset, reference, "--scale", "2", "--image-size", "32x32", "--per-class", "1")
    assert cli_evaluate.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"evaluate.py: error: {reference / 'run.json'}: {reference} holds "
                                                   "results of other settings (")
    for part in ("image_size: [32, 48] there, [32, 32] here", "scale: 4 there, 2 here",
                 "selection.per_class: null there, 1 here", "selection.seed: null there, 0 here"):
        assert part in err, (part, err)
    assert "checkpoint" not in err and "options" not in err  # only what differs
    assert snapshot(reference) == before  # summary.json and images.csv still cover the run's own images


def _rewrite(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_damaged_shards_are_set_aside_and_recomputed(reference, ckpt, dataset, tmp_path, capsys):
    """Valid JSON that is not what was written (no 'image', wrong types, cut): recomputed and said so.

    Before: ``KeyError: 'image'`` or ``TypeError`` on the rerun.
    """
    import shutil

    out = tmp_path / "out"
    shutil.copytree(reference, out)
    shards = sorted((out / "shards").glob("p*.json"))
    assert len(shards) == 3

    def no_image(d):  # the checksum made to match: only the schema check can refuse it
        del d["rows"][0]["image"]
        d["sha256"] = runner.shard_sha256(d["rows"], d["failed"])

    _rewrite(shards[0], no_image)
    _rewrite(shards[1], lambda d: d["rows"][0].update(label="three"))  # checksum no longer matches
    shards[2].write_bytes(shards[2].read_bytes()[:60])
    assert cli_evaluate.main(args(ckpt, dataset, out)) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{TOTAL} new, 0 already done ({TOTAL} in all, {FAILED} failed)")
    warning = [line for line in captured.err.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1 and "damaged shard" in warning[0] and "(and 2 more)" in warning[0], captured.err
    assert "computed again" in warning[0]
    assert sorted(p.name for p in (out / "shards").glob("damaged-*")) == [f"damaged-{p.name}" for p in shards]
    for name in FINAL:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert cli_evaluate.main(args(ckpt, dataset, out)) == 0  # set aside: said once, not on every rerun
    captured = capsys.readouterr()
    assert captured.out.startswith(f"0 new, {TOTAL} already done") and "warning" not in captured.err


def test_a_photo_replaced_under_the_same_name_is_recomputed(ckpt, dataset, tmp_path, capsys):
    import shutil

    from vitjax.io import file_sha256

    data, out = tmp_path / "data", tmp_path / "out"
    shutil.copytree(dataset, data)
    assert cli_evaluate.main(args(ckpt, data, out)) == 0
    name = "101_ObjectCategories/ant/image_0001.jpg"
    before = {r["image"]: r for r in read_csv(out / "images.csv")}
    assert before[name]["sha256"] == file_sha256(data / name) and int(before[name]["bytes"]) > 0
    _photo(data / name, (64, 44), "RGB", 999)  # another photo, same name
    capsys.readouterr()
    assert cli_evaluate.main(args(ckpt, data, out)) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"1 new, {TOTAL - 1} already done")
    assert f"warning: {name}: changed since its row was computed" in captured.err
    after = {r["image"]: r for r in read_csv(out / "images.csv")}
    assert after[name]["sha256"] == file_sha256(data / name) and after[name]["width"] == "64"
    assert all(after[k] == before[k] for k in before if k != name)


def _annotated_tree(root: Path, annotations) -> Path:
    """A Caltech101 tree of one class, ``ant``, one 60 x 40 photo per annotation."""
    for i, content in enumerate(annotations, start=1):
        _photo(root / "101_ObjectCategories" / "ant" / f"image_{i:04d}.jpg", (60, 40), "RGB", 200 + i)
        target = root / "Annotations" / "ant" / f"annotation_{i:04d}.mat"
        target.parent.mkdir(parents=True, exist_ok=True)
        savemat(target, content)
    return root


def _ann(box, contour):
    return {"box_coord": np.asarray([box], np.float64), "obj_contour": np.asarray(contour)}


GOOD_CONTOUR = [[0.0, 30.0, 30.0, 0.0], [0.0, 0.0, 20.0, 20.0]]  # relative x; y: a 30 x 20 rectangle
BROKEN = {  # what each broken annotation is refused for
    "box entirely outside": (_ann([100, 130, 200, 250], GOOD_CONTOUR), "lies entirely outside the 60 x 40 image"),
    "inverted box": (_ann([30, 5, 8, 40], GOOD_CONTOUR), "box_coord is inverted"),
    "huge contour": (_ann([5, 30, 8, 40], [[0.0, 1e20, 30.0], [0.0, 0.0, 20.0]]), "far outside the 60 x 40 image"),
    "bool contour": (_ann([5, 30, 8, 40], np.array([[True, False, True], [False, True, True]])), "true/false"),
    "nan contour": (_ann([5, 30, 8, 40], [[0.0, np.nan, 30.0], [0.0, 0.0, 20.0]]), "non-finite"),
    "empty contour": (_ann([5, 30, 8, 40], np.zeros((2, 0))), "expected 2xK"),
    "flat contour": (_ann([5, 30, 8, 40], [[0.0, 10.0, 20.0], [0.0, 10.0, 20.0]]), "encloses no area"),
}


def test_broken_annotations_are_counted_as_invalid_and_never_scored(ckpt, tmp_path, capsys):
    """Each broken annotation: annotated 0, its reason recorded, out of every mean, counted in the summary.

    Before: the box outside the photo, the inverted box, the 1e20 and the bool contours were scored (box mass 0.0).
    """
    root = _annotated_tree(tmp_path / "caltech", [_ann([5, 30, 8, 40], GOOD_CONTOUR)]
                           + [content for content, _ in BROKEN.values()])
    out = tmp_path / "out"
    assert cli_evaluate.main(args(ckpt, root, out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"]["annotated"] == 1 and summary["images"]["invalid_annotations"] == len(BROKEN)
    assert summary["overall"]["invalid_annotations"] == len(BROKEN)
    assert summary["per_class"]["ant"]["invalid_annotations"] == len(BROKEN)
    problems = {p["image"]: p["note"] for p in summary["annotation_problems"]}
    for i, (case, (_, reason)) in enumerate(BROKEN.items(), start=2):
        note = problems[f"101_ObjectCategories/ant/image_{i:04d}.jpg"]
        assert reason in note and f"annotation_{i:04d}.mat" in note, (case, note)
    rows = read_csv(out / "images.csv")
    assert [r["annotated"] for r in rows] == ["1"] + ["0"] * len(BROKEN)
    assert all(r[c] == "" for r in rows[1:] for c in r if c.endswith(("_pointing", "_iou", "_auc", "_boxmass")))
    for metric in ("pointing", "iou", "auc", "boxmass"):  # the means are the one valid image's values
        assert summary["overall"]["maps"]["joint"][metric] == float(rows[0][f"joint_{metric}"])


def test_self_links_and_a_fifo_in_a_class_folder_neither_hang_nor_count_twice(ckpt, dataset, tmp_path):
    """``l1 -> .``, ``l2 -> .`` and a FIFO named pipe.jpg: each photo once, the skipped entries said and recorded."""
    data, out = tmp_path / "data", tmp_path / "out"
    for name in ("Faces", "ant"):
        for p in sorted((dataset / "101_ObjectCategories" / name).glob("*.jpg")):
            (data / name).mkdir(parents=True, exist_ok=True)
            (data / name / p.name).write_bytes(p.read_bytes())
    os.symlink(".", data / "Faces" / "l1")
    os.symlink(".", data / "Faces" / "l2")
    os.mkfifo(data / "ant" / "pipe.jpg")
    proc = subprocess.run([sys.executable, "-m", "vitjax.cli.evaluate", *args(ckpt, data, out)], env=env(),
                          capture_output=True, text=True, timeout=300)  # before: the walk never ended
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("4 new, 0 already done (4 in all, 1 failed)")
    notes = [line for line in proc.stderr.splitlines() if line.startswith(f"note: {data}: skipped")]
    assert notes == [f"note: {data}: skipped 3 entries: Faces/l1: a link to a folder already listed "
                     f"({data / 'Faces'}); Faces/l2: a link to a folder already listed ({data / 'Faces'}); "
                     "ant/pipe.jpg: not a regular file (a FIFO)"], proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] == [{"path": "Faces/l1", "reason": f"a link to a folder already listed "
                                   f"({data / 'Faces'})"},
                                  {"path": "Faces/l2", "reason": f"a link to a folder already listed "
                                   f"({data / 'Faces'})"},
                                  {"path": "ant/pipe.jpg", "reason": "not a regular file (a FIFO)"}]
    assert summary["per_class"]["Faces"]["images"] == 2  # not 2 x 41
