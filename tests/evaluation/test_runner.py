"""The runner never trusts a shard on disk: a row that does not fit its step's schema makes the shard damaged
(set aside, recomputed, said in one line), checksum or not; the report refuses a value that is not a number in
one line instead of a traceback."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitjax.cli import evaluate as cli_evaluate
from vitjax.data.datasets import ImageRecord
from vitjax.errors import DatasetError, VitjaxWarning
from vitjax.evaluation import report, runner
from vitjax.evaluation.perturbation import summarize as perturbation_summary


def _photos(root: Path, n: int = 3) -> list:
    records = []
    for i in range(n):
        path = root / "cls" / f"image_{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(i).integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, format="JPEG")
        records.append(ImageRecord(path, 0, "cls", None))
    return records


def _step():
    def step(batch):
        return [{"score": 0.25 * (int(r) + 1), "count": int(r), "note": ""} for r in batch.rows]

    step.schema = {"score": runner.NUMBER_OR_NULL, "count": runner.INTEGER, "note": runner.TEXT_OR_NULL}
    return step


def _run(records, root, out):
    return runner.run(records, _step(), out, root=root, load=lambda r: (np.zeros((4, 4, 3), np.float32), None),
                      batch_size=8, shape=(4, 4, 3), workers=1, progress=False)


def _forge(path: Path, edit) -> None:
    """Edits the rows and recomputes the checksum: only the schema check can tell."""
    data = json.loads(path.read_text())
    edit(data["rows"])
    data["sha256"] = runner.shard_sha256(data["rows"], data["failed"])
    path.write_text(json.dumps(data))


FORGERIES = {
    "text": lambda rows: rows[0].update(score="abc"),
    "bool": lambda rows: rows[0].update(score=True),
    "list": lambda rows: rows[1].update(score=[0.5]),
    "object": lambda rows: rows[2].update(count={"n": 1}),
    "float-for-int": lambda rows: rows[0].update(count=1.5),
    "huge-int": lambda rows: rows[0].update(score=10 ** 400),  # valid JSON, no float holds it
    "missing-key": lambda rows: rows[0].pop("score"),
    "extra-key": lambda rows: rows[0].update(x=1),
    "status-unknown": lambda rows: rows[0].update(status="weird"),
    "failed-without-reason": lambda rows: rows[0].update(status="failed"),
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_forged_row_makes_its_shard_damaged_and_recomputed(tmp_path, forgery):
    """Before: values of any JSON type were trusted once the (recomputable) checksum matched; a metric that is
    text reached the report and ended in ``TypeError: must be real number, not str``."""
    records = _photos(tmp_path / "data")
    out = tmp_path / "out"
    first = _run(records, tmp_path / "data", out)
    assert first.new == 3
    shard, = sorted((out / "shards").glob("p*.json"))
    _forge(shard, FORGERIES[forgery])
    with pytest.warns(VitjaxWarning) as caught:
        again = _run(records, tmp_path / "data", out)
    lines = [str(w.message) for w in caught]
    assert len(lines) == 1 and "damaged shard" in lines[0] and "computed again" in lines[0], lines
    assert "\n" not in lines[0]
    assert again.new == 3 and [r["score"] for r in again] == [r["score"] for r in first]
    assert (out / "shards" / f"damaged-{shard.name}").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _run(records, tmp_path / "data", out).new == 0  # the recomputed shard is intact


def test_without_a_schema_a_step_values_are_any_json(tmp_path):
    records = _photos(tmp_path / "data", 2)

    def step(batch):
        return [{"values": [[1.0, 2.0]], "label_text": "x"} for _ in batch.rows]

    def go():
        return runner.run(records, step, tmp_path / "out", root=tmp_path / "data",
                          load=lambda r: (np.zeros((4, 4, 3), np.float32), None), batch_size=2, shape=(4, 4, 3),
                          workers=1, progress=False)

    assert go().new == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert go().new == 0


def test_row_problem_names_the_image_the_key_and_the_kind():
    schema = {"a": runner.NUMBER, "b": runner.number_array(2), "c": runner.text_matching("[01]{3}")}
    good = {"image": "c/i.jpg", "a": 1.5, "b": [[1, 2], [3, 4]], "c": "010"}
    assert runner.row_problem(good, schema) is None
    assert runner.row_problem({**good, "a": "abc"}, schema) == "c/i.jpg: 'a' is \"abc\", not a finite number"
    assert "not a 2-d array" in runner.row_problem({**good, "b": [[1, 2], [3]]}, schema)
    assert "not a 2-d array" in runner.row_problem({**good, "b": [[1, True]]}, schema)
    assert "not text matching" in runner.row_problem({**good, "c": "0102"}, schema)
    assert runner.row_problem({"image": "c/i.jpg", "status": "failed", "reason": "x"}, schema) is None


ROWS = [{"image": "c/a.jpg", "class": "c", "status": "ok", "annotated": 1, "note": "", "joint_auc": 0.5},
        {"image": "c/b.jpg", "class": "c", "status": "ok", "annotated": 1, "note": "", "joint_auc": 0.7}]


@pytest.mark.parametrize("bad", ["abc", True, [0.5], float("inf"), {"x": 1}, 10 ** 400])
def test_the_report_refuses_a_value_that_is_not_a_number_in_one_line(bad):
    """Before: ``TypeError: must be real number, not str`` from ``math.fsum`` (a traceback)."""
    rows = [ROWS[0], {**ROWS[1], "joint_auc": bad}]
    with pytest.raises(DatasetError) as e:
        report.summarize(rows, ["joint"], 0, 0)
    text = str(e.value)
    assert "\n" not in text and "c/b.jpg" in text and "'joint_auc'" in text and "not a finite number" in text


def test_the_report_skips_nan_and_none_and_refuses_a_bad_annotated_flag():
    rows = [ROWS[0], {**ROWS[1], "joint_auc": float("nan")}, {**ROWS[1], "image": "c/c.jpg", "joint_auc": None}]
    assert report.summarize(rows, ["joint"], 0, 0)["maps"]["joint"]["auc"] == 0.5
    with pytest.raises(DatasetError, match="'annotated' is \"yes\", not 0 or 1"):
        report.summarize([{**ROWS[0], "annotated": "yes"}], ["joint"], 0, 0)


def test_the_perturbation_summary_refuses_a_curve_that_is_not_one():
    row = {"image": "c/a.jpg", "status": "ok", "prediction": 1, "scored_label": 1, "rollout_positive": "110",
           "rollout_negative": "111"}
    assert perturbation_summary([row], ["rollout"], (0.5, 0.9))["images"] == 1
    for key, value in (("rollout_positive", "abc"), ("rollout_negative", "11"), ("prediction", "1")):
        with pytest.raises(ValueError, match=f"c/a.jpg: '{key}' is .*, not"):
            perturbation_summary([{**row, key: value}], ["rollout"], (0.5, 0.9))


def test_evaluate_recomputes_a_shard_whose_metrics_were_forged_into_text(make_checkpoint, tmp_path, capsys):
    """The fuzz case ``shards-forged-strings``: before, a traceback (``TypeError`` in ``report._mean``)."""
    ckpt = make_checkpoint("testing", image_size=(32, 32), patch_size=(8, 8), num_layers=2)
    _photos(tmp_path / "data", 2)
    argv = ["--ckpt", str(ckpt), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--no-progress"]
    assert cli_evaluate.main(argv) == 0
    clean = (tmp_path / "out" / "summary.json").read_bytes()
    capsys.readouterr()
    shard, = sorted((tmp_path / "out" / "shards").glob("p*.json"))
    _forge(shard, lambda rows: [row.update({k: "abc" for k in row if k.endswith("_auc") or k.startswith("mad_")})
                                for row in rows])
    assert cli_evaluate.main(argv) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "damaged shard" in err, err
    assert (tmp_path / "out" / "summary.json").read_bytes() == clean


# --------------------------------------------------------------------------- the results folder's own files


def test_finished_shards_without_their_settings_file_are_refused_not_adopted(tmp_path):
    """Before: with run.json deleted, claim_folder wrote this run's settings over the old shards and a
    zero-mode run reported the mean-mode numbers already there ("0 new, 9 already done")."""
    records = _photos(tmp_path / "data")
    out = tmp_path / "out"
    assert runner.claim_folder(out, "run.json", {"mode": "mean"}) is None
    _run(records, tmp_path / "data", out)
    (out / "run.json").unlink()
    with pytest.raises(DatasetError) as caught:
        runner.claim_folder(out, "run.json", {"mode": "zero"})
    line = str(caught.value)
    assert "\n" not in line and str(out) in line and "1 finished shard of unknown settings" in line, line
    assert "run.json is missing" in line and "use another --out, or delete" in line, line
    assert not (out / "run.json").exists()  # nothing adopted
    # a folder without finished shards is anybody's
    (out / "shards" / sorted(p.name for p in (out / "shards").glob("p*.json"))[0]).unlink()
    assert runner.claim_folder(out, "run.json", {"mode": "zero"}) is None


@pytest.mark.parametrize("where", ["shards-file", "report-folder", "settings-folder"])
def test_a_results_folder_whose_layout_cannot_be_written_is_refused_before_anything_runs(tmp_path, where):
    """Before: ``[Errno 17] File exists: 'out/shards'`` or ``[Errno 21] Is a directory: '...tmp' -> '...'``,
    after the whole computation."""
    out = tmp_path / "out"
    out.mkdir()
    blocked = {"shards-file": out / "shards", "report-folder": out / "summary.json",
               "settings-folder": out / "run.json"}[where]
    if where == "shards-file":
        blocked.write_text("not a folder\n")
    else:
        blocked.mkdir()
    with pytest.raises(DatasetError) as caught:
        runner.claim_folder(out, "run.json", {"x": 1}, files=("summary.json",))
    line = str(caught.value)
    assert "\n" not in line and str(blocked) in line and "Errno" not in line, line
    assert ("a file, not a folder" if where == "shards-file" else "a folder, where the run writes a file") in line
    if where == "shards-file":  # the runner itself too, before the first batch
        with pytest.raises(DatasetError, match="a file, not a folder of shards"):
            _run(_photos(tmp_path / "data"), tmp_path / "data", out)


def test_a_results_folder_inside_the_dataset_root_is_refused(tmp_path):
    """Before: the run's own files (figures, shards) were listed as images on the next run."""
    records = _photos(tmp_path / "data")
    for out in (tmp_path / "data" / "results", tmp_path / "data"):
        with pytest.raises(DatasetError, match="is inside data .*the run's own files would be read as images"):
            _run(records, tmp_path / "data", out)
    assert not (tmp_path / "data" / "results").exists()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    with pytest.raises(DatasetError, match="is inside data"):
        runner.check_outside(tmp_path / "link" / "out", tmp_path / "data")
    runner.check_outside(tmp_path / "elsewhere", tmp_path / "data")  # fine
    runner.check_outside(tmp_path, tmp_path / "data")  # the data inside the results folder: fine


def test_claim_folder_refuses_an_empty_path(tmp_path, monkeypatch):
    """Before: ``--out ""`` wrote run.json and shards/ into the current folder."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match="an empty path"):
        runner.claim_folder("", "run.json", {"x": 1})
    assert not list(tmp_path.iterdir())
