"""Every command sizes its batches from an estimate of peak memory and refuses, before allocating, a run that
cannot fit even one image (issue: a newcomer's first dataset run died out of memory with its defaults)."""

from __future__ import annotations

import pytest

import vitjax
from vitjax.cli import evaluate as cli_evaluate
from vitjax.cli import perturbation as cli_perturbation
from vitjax.cli import visualize as cli_visualize
from vitjax.errors import MemoryBudgetError
from vitjax.evaluation import runner


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_visualize_refuses_an_image_size_that_cannot_fit_before_allocating(tiny_checkpoint, photos, tmp_path,
                                                                          capsys):
    out = tmp_path / "out"
    # 1024 px: 4097 tokens; one image of this 1-layer model needs ~0.5 GB for its lean maps (the loader's own
    # guard, against half the free memory, lets it load) but ~1 GB for the two-step maps: over a 100 MB budget
    code = cli_visualize.main(["--ckpt", str(tiny_checkpoint), "--images", str(photos), "--out", str(out),
                               "--image-size", "1024", "--memory-budget", "100M", "-q", "--no-compile-cache"])
    err = _one_line(capsys.readouterr().err)
    assert code == 2 and "1024x1024" in err and "100.0 MB" in err and "--memory-budget" in err
    assert not out.exists()


def test_load_checkpoint_refuses_a_size_no_machine_here_can_run(tiny_checkpoint):
    # before: --image-size 99984 spent a minute resizing the position embedding, then died allocating
    with pytest.raises(MemoryBudgetError) as info:
        vitjax.load_checkpoint(tiny_checkpoint, image_size=99984)
    assert "99984x99984" in str(info.value) and "\n" not in str(info.value)


def test_visualize_batches_never_exceed_the_images_nor_the_budget(tiny_checkpoint, photos, tmp_path, capsys,
                                                                monkeypatch):
    seen = []
    real = cli_visualize.run

    def spy(model, params, items, run_dir, settings, **kw):
        seen.append(settings.batch_size)
        return real(model, params, items, run_dir, settings, **kw)

    monkeypatch.setattr(cli_visualize, "run", spy)
    code = cli_visualize.main(["--ckpt", str(tiny_checkpoint), "--images", str(photos), "--out", str(tmp_path / "o"),
                               "--batch-size", "1000000000", "--no-grid", "--no-summary", "--no-compile-cache"])
    assert code == 0 and seen == [4]  # 4 photos: the batch is 4, not a billion
    assert "batch size 4" in capsys.readouterr().err


def test_evaluate_huge_batch_is_capped_and_a_huge_scale_refused(tiny_checkpoint, photos, tmp_path, capsys,
                                                                 monkeypatch):
    sizes = []
    real = runner.run

    def spy(*a, batch_size, **kw):
        sizes.append(batch_size)
        return real(*a, batch_size=batch_size, **kw)

    monkeypatch.setattr("vitjax.evaluation.localisation.run", spy)
    args = ["--ckpt", str(tiny_checkpoint), "--data", str(photos), "--no-progress"]
    assert cli_evaluate.main(args + ["--out", str(tmp_path / "e1"), "--batch-size", "1000000000"]) == 0
    assert sizes == [4]
    capsys.readouterr()
    code = cli_evaluate.main(args + ["--out", str(tmp_path / "e2"), "--scale", "1000", "--memory-budget", "200M"])
    err = _one_line(capsys.readouterr().err)
    assert code == 2 and "200.0 MB" in err and "evaluate" in err
    assert not (tmp_path / "e2").exists()


def test_perturbation_huge_batch_is_planned(make_checkpoint, photos, tmp_path, capsys, monkeypatch):
    ckpt = make_checkpoint("testing", image_size=32, num_classes=2)
    sizes = []
    real = runner.run

    def spy(*a, batch_size, **kw):
        sizes.append(batch_size)
        return real(*a, batch_size=batch_size, **kw)

    monkeypatch.setattr("vitjax.evaluation.perturbation.run", spy)
    code = cli_perturbation.main(["--ckpt", str(ckpt), "--data", str(photos), "--out", str(tmp_path / "p"),
                                  "--methods", "last_layer", "--labels", "predicted", "--batch-size", "100000"])
    assert code == 0, capsys.readouterr().err
    assert sizes == [4]


def test_an_allocation_failure_is_one_line_naming_batch_and_size(tiny_checkpoint, photos, tmp_path, capsys,
                                                                 monkeypatch):
    def boom(*a, **kw):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 37462330728 bytes.")

    monkeypatch.setattr(cli_visualize, "run", boom)
    code = cli_visualize.main(["--ckpt", str(tiny_checkpoint), "--images", str(photos), "--out", str(tmp_path / "o"),
                               "--batch-size", "4", "-q", "--no-compile-cache"])
    err = _one_line(capsys.readouterr().err)
    assert code == 1 and "out of memory at batch size 4" in err and "--batch-size 2" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("*.png"))


def test_memory_budget_argument_is_checked(tiny_checkpoint, photos, tmp_path, capsys):
    code = cli_visualize.main(["--ckpt", str(tiny_checkpoint), "--images", str(photos), "--out", str(tmp_path),
                               "--memory-budget", "lots"])
    err = _one_line(capsys.readouterr().err)
    assert code == 2 and "--memory-budget" in err and "12G" in err
