"""Bundled ImageNet class names, label files and class_names()."""

from __future__ import annotations

import importlib.resources
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vitjax.data.labels import (
    build_label_files,
    class_label,
    class_names,
    imagenet1k_names,
    imagenet21k_names,
    load_label_file,
    timm_info_dir,
    topk,
)

REPO = Path(__file__).resolve().parents[2]


def test_imagenet1k_names_match_google_notebook_format():
    names = imagenet1k_names()
    assert len(names) == 1000
    assert names[0] == "tench, Tinca_tinca"
    assert names[281] == "tabby, tabby_cat"
    assert names[285] == "Egyptian_cat"
    assert names[652] == "military_uniform"
    assert names[817] == "sports_car, sport_car"
    assert names[999] == "toilet_tissue, toilet_paper, bathroom_tissue"


def test_imagenet1k_file_is_exactly_the_documented_bytes():
    data = (importlib.resources.files("vitjax") / "data" / "imagenet1k.txt").read_bytes()
    assert len(data) == 21_675
    assert data.endswith(b"\n") and not data.endswith(b"\n\n")
    assert b"\r" not in data
    assert data.count(b"\n") == 1000


def test_imagenet21k_names_in_google_head_order():
    names = imagenet21k_names()
    assert len(names) == 21843
    assert names[0] == "organism, being"
    # Lemmas are joined by ", " and carry no inner spaces.
    assert all(n and " " not in n.replace(", ", "") for n in names)
    # Every ImageNet-1k class but one (teddy bear, n04399382) has a 21k head.
    assert set(imagenet1k_names()) - set(names) == {"teddy, teddy_bear"}


def test_returned_lists_are_copies_of_the_cache():
    names = imagenet1k_names()
    names[281] = "changed"
    names.clear()
    assert imagenet1k_names()[281] == "tabby, tabby_cat"


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm not installed")
def test_bundled_files_match_the_generator():
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_labels.py"), "--check"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(": ok") == 2


def test_load_label_file_accepts_crlf_bom_and_trailing_blank_lines(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_bytes("\ufeffcat\r\n dog \r\nbird, small_bird\r\n\r\n\n".encode())
    assert load_label_file(path) == ["cat", "dog", "bird, small_bird"]
    assert load_label_file(str(path)) == ["cat", "dog", "bird, small_bird"]


@pytest.mark.parametrize(
    "content, needle",
    [(b"", "empty"), (b"\n \n", "empty"), (b"cat\n\ndog\n", "line 2"), (b"\xff\xfe\xfa\n", "cannot read")],
)
def test_load_label_file_rejects_bad_files_naming_them(tmp_path, content, needle):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=needle) as info:
        load_label_file(path)
    assert str(path) in str(info.value)


def test_load_label_file_missing_or_directory(tmp_path):
    with pytest.raises(ValueError, match="nope.txt"):
        load_label_file(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="cannot read"):
        load_label_file(tmp_path)


def test_class_names_auto():
    assert class_names(1000) == imagenet1k_names()
    assert class_names(21843) == imagenet21k_names()
    assert class_names(10) is None
    assert class_names(None) is None
    assert class_names(1000, "auto")[652] == "military_uniform"


def test_class_names_explicit_builtin():
    assert class_names(1000, "imagenet1k")[817] == "sports_car, sport_car"
    assert len(class_names(21843, "imagenet21k")) == 21843
    with pytest.raises(ValueError) as info:
        class_names(10, "imagenet1k")
    msg = str(info.value)
    assert "labels='imagenet1k'" in msg and "1000" in msg and "10 classes" in msg
    with pytest.raises(ValueError, match="21843 names but the model has 1000"):
        class_names(1000, "imagenet21k")
    with pytest.raises(ValueError, match="no classification head"):
        class_names(None, "imagenet1k")


def test_class_names_from_file(tmp_path):
    path = tmp_path / "three.txt"
    path.write_text("a\nb\nc\n", encoding="utf-8")
    assert class_names(3, str(path)) == ["a", "b", "c"]
    assert class_names(3, path) == ["a", "b", "c"]
    with pytest.raises(ValueError) as info:
        class_names(4, str(path))
    msg = str(info.value)
    assert "labels=" in msg and str(path) in msg and "3 names" in msg and "4 classes" in msg


def test_class_names_rejects_unknown_keyword_and_bad_counts():
    with pytest.raises(ValueError, match="'imagenet'.*no such file.*imagenet1k"):
        class_names(1000, "imagenet")
    for bad in (0, -1, True, 3.0):
        with pytest.raises(ValueError, match="positive integer"):
            class_names(bad)


def test_topk_softmax_and_labels():
    logits = np.array([[0.0, 3.0, 1.0, 2.0], [5.0, 5.0, 0.0, -1.0]], np.float32)
    idx, prob = topk(logits, 3)
    np.testing.assert_array_equal(idx, [[1, 3, 2], [0, 1, 2]])
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    # topk works in float64 and stores float32: one rounding (2^-24 relative) from this float64 reference
    np.testing.assert_allclose(prob, np.take_along_axis(p, idx, 1), rtol=2**-23)
    assert topk(logits, 10)[0].shape == (2, 4)  # capped at C
    assert class_label(17) == "class 17"
    assert class_label(1, ["a", "b"]) == "b"


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm not installed")
def test_build_label_files_reproduces_the_bundled_files():
    files = build_label_files(timm_info_dir())
    for fname, text in files.items():
        assert text.encode("utf-8") == (importlib.resources.files("vitjax") / "data" / fname).read_bytes()


def test_build_label_files_refuses_short_lists(tmp_path):
    (tmp_path / "imagenet_synset_to_lemma.txt").write_text("n01\ttench, Tinca tinca\n")
    (tmp_path / "imagenet_synsets.txt").write_text("n01\n" * 999)
    (tmp_path / "imagenet21k_goog_synsets.txt").write_text("n01\n" * 21843)
    with pytest.raises(ValueError, match="imagenet_synsets.txt: has 999 ids, expected 1000"):
        build_label_files(tmp_path)
    (tmp_path / "imagenet_synsets.txt").write_text("n01\n" * 1000)  # right count, wrong names
    with pytest.raises(ValueError, match="index 281 would be 'tench, Tinca_tinca'"):
        build_label_files(tmp_path)


def test_the_checkpoints_own_names_win_with_auto():
    """Names the checkpoint file gives (ViTConfig.class_names: id2label, label_names) come before ImageNet's."""
    own = [f"name {i}" for i in range(1000)]
    assert class_names(1000, "auto", checkpoint=own) == own  # before: ImageNet's names for any 1000-class head
    assert class_names(1000, "imagenet1k", checkpoint=own)[281] == "tabby, tabby_cat"  # an explicit choice wins
    assert class_names(3, "checkpoint", checkpoint=("a", "b", "c")) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="checkpoint has 2 class names but the model has 3 classes"):
        class_names(3, "auto", checkpoint=["a", "b"])
    with pytest.raises(ValueError, match="the checkpoint file gives no class names"):
        class_names(3, "checkpoint")
