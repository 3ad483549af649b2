"""vitjax-synthetic (python -m vitjax.cli.synthetic): a small CLI that writes a random checkpoint and says so."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from vitjax.checkpoints.load import load_checkpoint
from vitjax.cli.synthetic import main


def run(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_writes_the_file_and_says_what_it_wrote(tmp_path, capsys):
    out = tmp_path / "sub" / "tiny.npz"  # the folder is created
    code, stdout, stderr = run(["--variant", "testing", "--out", out, "--seed", 3, "--image-size", "48"], capsys)
    assert code == 0 and stderr == ""
    assert str(out) in stdout and "testing" in stdout and "48x48 px" in stdout and "seed 3" in stdout
    with np.load(out) as f:
        count = sum(int(f[k].size) for k in f.files)
    assert f"{count:,} parameters" in stdout
    model, _ = load_checkpoint(out)
    assert model.config.image_size == (48, 48) and model.config.num_classes == 1000
    assert model.config.random_weights is True  # the file says so (issue #17, fault 12)
    assert [p.name for p in out.parent.iterdir()] == ["tiny.npz"]  # no temp file left


def test_headless(tmp_path, capsys):
    out = tmp_path / "headless.npz"
    code, stdout, _ = run(["--variant", "testing", "--out", out, "--num-classes", "none"], capsys)
    assert code == 0 and "no head" in stdout
    with np.load(out) as f:
        assert not any(k.startswith("head/") for k in f.files)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--variant", "ViT-B_61"], "invalid choice: 'ViT-B_61'"),
        (["--variant", "testing", "--image-size", "0"], "--image-size"),
        (["--variant", "testing", "--image-size", "32x48"], "--image-size"),
        (["--variant", "testing", "--image-size", "8"], "empty patch grid"),
        (["--variant", "testing", "--num-classes", "-3"], "--num-classes"),
        (["--variant", "testing", "--attention-peak", "nan"], "--attention-peak"),
        (["--out", "x.npz"], "required: --variant"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, needle):
    argv = argv + (["--out", tmp_path / "x.npz"] if "--out" not in argv else [])
    code, stdout, stderr = run(argv, capsys)
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and needle in stderr
    assert list(tmp_path.iterdir()) == []


def test_existing_file_needs_overwrite_and_wrong_suffix_is_refused(tmp_path, capsys):
    out = tmp_path / "a.npz"
    out.write_bytes(b"keep me")
    code, _, stderr = run(["--variant", "testing", "--out", out], capsys)
    assert code == 2 and "--overwrite" in stderr and out.read_bytes() == b"keep me"
    assert run(["--variant", "testing", "--out", out, "--overwrite"], capsys)[0] == 0
    assert out.read_bytes() != b"keep me"
    code, _, stderr = run(["--variant", "testing", "--out", tmp_path / "a.safetensors"], capsys)
    assert code == 2 and ".npz" in stderr and stderr.count("\n") == 1


def test_python_dash_m_entry_point(tmp_path):
    out = tmp_path / "m.npz"
    done = subprocess.run([sys.executable, "-m", "vitjax.cli.synthetic", "--variant", "testing", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and f"wrote {out}" in done.stdout and out.is_file()  # it printed nothing before
