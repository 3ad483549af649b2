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
from vitjax.evaluation import runner

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
                                 "annotated": ANNOTATED}
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
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'nope'}: not a folder")
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


def test_flat_folder_is_one_unlabelled_group_with_a_note(ckpt, dataset, tmp_path, capsys):
    """Images directly in ROOT, no class folders: accepted (distances need no label), and said so."""
    data = tmp_path / "flat"
    data.mkdir()
    for p in sorted((dataset / "101_ObjectCategories" / "Faces").glob("*.jpg")):
        (data / p.name).write_bytes(p.read_bytes())
    assert cli_evaluate.main(args(ckpt, data, tmp_path / "out")) == 0
    assert f"note: {data}: no class folders; its 2 images form one unlabelled group\n" in capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert list(summary["per_class"]) == ["(no class)"] and summary["images"]["evaluated"] == 2


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
        maps, mad = program(params, shard_batch(batch.images, mesh))
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
