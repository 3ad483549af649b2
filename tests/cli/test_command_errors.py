"""The commands' own one-line errors (issue #17, found by benchmarks/fuzz.py): a checkpoint path that is a FIFO, an
``--out`` that is a file, the perturbation counts line, and what an out-of-memory line blames."""

from __future__ import annotations

import os

import pytest

from vitjax.cli import common
from vitjax.cli import evaluate as cli_evaluate
from vitjax.cli import perturbation as cli_perturbation
from vitjax.cli import visualize as cli_visualize
from vitjax.evaluation import perturbation as perturbation_lib


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("note: ", "warning: "))]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _commands(ckpt, photos, out):
    return {
        "visualize": (cli_visualize.main, ["--ckpt", str(ckpt), "--images", str(photos), "--out", str(out), "-q",
                                           "--no-compile-cache"]),
        "evaluate": (cli_evaluate.main, ["--ckpt", str(ckpt), "--data", str(photos), "--out", str(out),
                                         "--no-progress"]),
        "perturbation": (cli_perturbation.main, ["--ckpt", str(ckpt), "--data", str(photos), "--out", str(out),
                                                 "--labels", "predicted"]),
    }


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
@pytest.mark.parametrize("command", ["visualize", "evaluate", "perturbation"])
def test_a_checkpoint_path_that_is_a_fifo_is_named_for_what_it_is_by_every_command(command, photos, tmp_path,
                                                                                    capsys):
    """Before: visualize.py said "fifo.npz is neither an existing file nor a known checkpoint name" (it exists)."""
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    main, argv = _commands(fifo, photos, tmp_path / "out")[command]
    assert main(argv) == 2
    err = _one_line(capsys.readouterr().err)
    assert f"{fifo}: is a FIFO, not a checkpoint file" in err and "neither an existing file" not in err, err


@pytest.mark.parametrize("command", ["visualize", "evaluate", "perturbation"])
def test_an_out_that_is_a_file_is_one_line_exit_2(command, tiny_checkpoint, photos, tmp_path, capsys):
    """Before: evaluate.py said "[Errno 17] File exists: ..." (and only after loading the checkpoint)."""
    out = tmp_path / "results.csv"
    out.write_text("keep me\n")
    main, argv = _commands(tiny_checkpoint, photos, out)[command]
    assert main(argv) == 2
    err = _one_line(capsys.readouterr().err)
    assert f"--out: {out} is a file, not a folder" in err and "Errno" not in err, err
    assert out.read_text() == "keep me\n"
    main, argv = _commands(tiny_checkpoint, photos, out / "sub")[command]
    assert main(argv) == 2
    err = _one_line(capsys.readouterr().err)
    assert f"{out} is a file, not a folder" in err and "Errno" not in err, err


def test_the_perturbation_counts_line_says_how_many_of_how_many_were_scored(tiny_checkpoint, photos, tmp_path,
                                                                            capsys, monkeypatch):
    """Before: "2 images (2 failed)" for 2 scored of 4 (the total was nowhere)."""
    def fake(*a, **kw):
        return {"images": 2, "failed": [["a/0.png", "x"], ["b/1.png", "y"]], "clean_accuracy": 0.5,
                "methods": {"rollout": {"negative": {"auc": 50.0}, "positive": {"auc": 40.0}}}}

    monkeypatch.setattr(perturbation_lib, "run_perturbation", fake)
    main, argv = _commands(tiny_checkpoint, photos, tmp_path / "out")["perturbation"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 of 4 images scored (2 failed), clean top-1 50.00 %"), out


def _raise(error):
    def boom(*a, **kw):
        raise error

    return boom


def test_out_of_memory_blames_the_batch_only_when_a_smaller_one_could_help(tiny_checkpoint, photos, tmp_path,
                                                                          capsys, monkeypatch):
    """Before: every MemoryError, reading the checkpoint included, said "pass a smaller --batch-size"."""
    main, argv = _commands(tiny_checkpoint, photos, tmp_path / "out")["evaluate"]
    # while a batch is built (inside the runner's loop): the batch size is to blame
    monkeypatch.setattr("vitjax.evaluation.runner.padded_batches", _raise(MemoryError()))
    assert main(argv + ["--batch-size", "4"]) == 1
    err = _one_line(capsys.readouterr().err)
    assert "with batches of up to 4 images" in err and "--batch-size 2" in err, err
    # ... but not at batch size 1
    assert main(argv + ["--batch-size", "1"]) == 1
    err = _one_line(capsys.readouterr().err)
    assert "--batch-size" not in err and "at batch size 1" in err and "cannot help" in err, err
    # reading the checkpoint: no batch exists yet
    monkeypatch.setattr("vitjax.evaluation.localisation.load_checkpoint", _raise(MemoryError()))
    assert main(argv + ["--batch-size", "4"]) == 1
    err = _one_line(capsys.readouterr().err)
    assert "--batch-size" not in err and "before any batch" in err, err
    main, argv = _commands(tiny_checkpoint, photos, tmp_path / "out2")["visualize"]
    monkeypatch.setattr(cli_visualize, "load_checkpoint", _raise(MemoryError()))
    assert main(argv) == 1
    err = _one_line(capsys.readouterr().err)
    assert "--batch-size" not in err and "before any batch" in err, err


def test_the_out_of_memory_line_without_an_error_keeps_its_batch_advice():
    line = common.out_of_memory_line(8, (224, 224), None)
    assert line.startswith("out of memory at batch size 8, image size 224x224") and "--batch-size 4" in line
    neutral = common.out_of_memory_line(8, (224, 224), None, error=MemoryError())
    assert "--batch-size" not in neutral and "\n" not in neutral


# --------------------------------------------------------------------------- --out, --data and what is printed


@pytest.mark.parametrize("command", ["visualize", "evaluate", "perturbation"])
def test_an_out_inside_the_data_is_refused_before_anything_is_written(command, tiny_checkpoint, photos, tmp_path,
                                                                      capsys):
    """Before: ``--data good --out good/results`` ran; the next run read its own PNG as an image of class
    'results'."""
    (tmp_path / "link").symlink_to(photos)
    for out, data in ((photos / "results", photos), (photos, photos), (photos / "r", tmp_path / "link")):
        main, argv = _commands(tiny_checkpoint, data, out)[command]
        assert main(argv) == 2
        err = _one_line(capsys.readouterr().err)
        flag = "--images" if command == "visualize" else "--data"
        assert f"--out {out} is inside {flag} {data}: the run's own files would be read as images" in err, err
    assert sorted(p.name for p in photos.iterdir()) == ["a", "b"]  # nothing written


@pytest.mark.parametrize("command", ["visualize", "evaluate", "perturbation"])
def test_an_empty_out_or_data_is_refused(command, tiny_checkpoint, photos, tmp_path, capsys, monkeypatch):
    """Before: ``--out ""`` wrote the results into the current folder (and ``--data ""`` read it)."""
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    for out, data, flag in (("", photos, "--out"), (tmp_path / "out", "", None)):
        main, argv = _commands(tiny_checkpoint, data, out)[command]
        assert main(argv) == 2
        err = _one_line(capsys.readouterr().err)
        flag = flag or ("--images" if command == "visualize" else "--data")
        assert f"{flag}: an empty path ('')" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("extra", [["--sample", "2"], ["--per-class", "1"]])
def test_a_negative_seed_is_refused_naming_seed(extra, tiny_checkpoint, photos, tmp_path, capsys):
    """Before: ``evaluate.py: error: expected non-negative integer`` (NumPy's words, no argument named)."""
    main, argv = _commands(tiny_checkpoint, photos, tmp_path / "out")["evaluate"]
    with pytest.raises(SystemExit) as caught:
        main([*argv, *extra, "--seed=-1"])
    assert caught.value.code == 2
    assert "argument --seed: expected an integer >= 0, got '-1'" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["visualize", "evaluate", "perturbation"])
def test_a_file_name_with_a_newline_stays_on_one_line(command, tiny_checkpoint, photos, tmp_path, capsys):
    """Before: ``failed: cl⏎ass/bad⏎name.jpg: ...`` over three lines of stderr."""
    bad = photos / "a" / "bad\nname.png"
    bad.write_bytes(b"not an image")
    main, argv = _commands(tiny_checkpoint, photos, tmp_path / "out")[command]
    if command == "perturbation":  # the tiny model has one layer: the rollout cannot leave it out
        argv = [*argv, "--rollout-start-layer", "0"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).splitlines()
    assert not [line for line in lines if line.startswith(("name.png", "ame.png"))], lines
    assert any("a/bad\\nname.png" in line for line in lines), lines


@pytest.mark.parametrize("where", ["shards", "head_importance.json"])
def test_a_results_folder_that_cannot_be_written_is_refused_before_computing(where, tiny_checkpoint, photos,
                                                                            tmp_path, capsys):
    """Before: ``[Errno 17] File exists: 'out/shards'`` / ``[Errno 21] Is a directory`` after the whole run."""
    out = tmp_path / "out"
    out.mkdir()
    if where == "shards":
        (out / where).write_text("x\n")
    else:
        (out / where).mkdir()
    main, argv = _commands(tiny_checkpoint, photos, out)["evaluate"]
    assert main([*argv, "--method", "head-importance"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert str(out / where) in err and "Errno" not in err, err
    assert sorted(p.name for p in out.iterdir()) == [where]  # nothing computed, nothing written


def test_printable_escapes_every_control_character():
    from vitjax.errors import printable

    assert printable("a\nb\rc\td\x1be\x7ff\x85g\u2028h é") == "a\\nb\\rc\\td\\x1be\\x7ff\\x85g\\u2028h é"
    assert len(common.shown("x\ny\n").splitlines()) == 1
