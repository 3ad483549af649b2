""".npz files that lie about their sizes, empty dimensions, and files marked as random weights (issue #17).

Fault 5: a 100 KB ``.npz`` whose member header declares shape (10**12,) tried to allocate 3.6 TiB, and a small
deflate bomb took seconds and gigabytes before it was refused; every member's declared size is now checked
against the file (zip directory and ``.npy`` header) before any data is read. A zero-sized dimension in a patch
or query kernel raised ZeroDivisionError. Fault 12 (the loader's part): files written by
``vitjax.checkpoints.synthetic`` are marked, and ``load_checkpoint`` says so in ``config.random_weights``.
"""

from __future__ import annotations

import io
import tracemalloc
import zipfile

import numpy as np
import pytest

import vitjax
from vitjax.checkpoints import npz as npz_module
from vitjax.checkpoints.npz import RANDOM_WEIGHTS_COMMENT, load_npz
from vitjax.checkpoints.synthetic import random_checkpoint, save_npz
from vitjax.errors import CheckpointError


def _npy_header(shape, descr="<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def _zip(path, members, compression=zipfile.ZIP_STORED):
    """A zip of ``{name: bytes or callable(writer)}`` members."""
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in members.items():
            if callable(data):
                with z.open(name, "w", force_zip64=True) as w:
                    data(w)
            else:
                z.writestr(name, data)
    return path


def _one_line(info, *needles):
    text = str(info.value)
    assert "\n" not in text, text
    for n in needles:
        assert n in text, text
    return text


def test_a_member_declaring_a_huge_shape_is_refused_without_allocating(tmp_path):
    flat = random_checkpoint(vitjax.get_config("testing"))
    members = {k + ".npy": _npy_header(v.shape) + v.astype("<f4").tobytes() for k, v in flat.items()}
    members["cls.npy"] = _npy_header((10**12,)) + bytes(100_000)  # 100 KB of data under a 3.6 TiB header
    path = _zip(tmp_path / "huge.npz", members)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError) as info:
            vitjax.load_checkpoint(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _one_line(info, str(path), "'cls'", "(1000000000000,)", "truncated or forged")
    assert peak < 2 * path.stat().st_size + (8 << 20)  # nothing near the declared size was allocated


def test_a_deflate_bomb_is_refused_before_decompressing(tmp_path, monkeypatch):
    # The real limit (DENSE_LIMIT, 512 MiB of data that compresses > 64:1) scaled down, so the test stays small.
    monkeypatch.setattr(npz_module, "DENSE_LIMIT", 8 << 20)
    n = (16 << 20) // 4

    def zeros(w):
        w.write(_npy_header((n,)))
        chunk = bytes(1 << 20)
        for _ in range(16):
            w.write(chunk)

    path = _zip(tmp_path / "bomb.npz", {"cls.npy": zeros}, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < (1 << 20)
    with pytest.raises(CheckpointError) as info:
        load_npz(path)
    _one_line(info, str(path), "decompression bomb", f"{npz_module.DENSE_RATIO}:1")


def test_compressed_checkpoints_and_zero_heads_still_load(tmp_path):
    flat = random_checkpoint(vitjax.get_config("testing"))
    flat["head/kernel"][:] = 0  # compresses far better than 64:1, but is small
    path = tmp_path / "compressed.npz"
    np.savez_compressed(path, **flat)
    info = zipfile.ZipFile(path).getinfo("head/kernel.npy")
    assert info.file_size > npz_module.DENSE_RATIO * info.compress_size
    _, params = vitjax.load_checkpoint(path)
    np.testing.assert_array_equal(np.asarray(params["cls"]), flat["cls"])
    assert not np.asarray(params["head"]["kernel"]).any()


def _patch_central_size(data: bytes, name: bytes, size: int) -> bytes:
    """``data`` with the uncompressed size of member ``name`` in the zip's central directory set to ``size``."""
    i = data.index(b"PK\x01\x02")
    while data[i + 46:i + 46 + len(name)] != name:
        i = data.index(b"PK\x01\x02", i + 4)
    return data[:i + 24] + size.to_bytes(4, "little") + data[i + 28:]


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_forged_zip_directory_is_refused(tmp_path, compression):
    arr = np.zeros(256, np.float32)
    good = _zip(tmp_path / "good.npz", {"cls.npy": _npy_header(arr.shape) + arr.tobytes()}, compression)
    path = tmp_path / "forged.npz"
    path.write_bytes(_patch_central_size(good.read_bytes(), b"cls.npy", 0xF0000000))
    assert zipfile.ZipFile(path).getinfo("cls.npy").file_size == 0xF0000000
    with pytest.raises(CheckpointError) as info:
        load_npz(path)
    _one_line(info, str(path), "'cls.npy'", "cannot hold it")


def test_a_header_that_disagrees_with_its_member_is_refused(tmp_path):
    path = _zip(tmp_path / "long.npz", {"cls.npy": _npy_header((4,)) + bytes(4 * 4 + 100)})
    with pytest.raises(CheckpointError) as info:
        load_npz(path)
    _one_line(info, "'cls'", "declares shape (4,)")


def test_a_file_larger_than_memory_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(npz_module, "_memory", lambda: 1 << 16)
    path = save_npz(random_checkpoint(vitjax.get_config("testing")), tmp_path / "big.npz")
    with pytest.raises(CheckpointError) as info:
        load_npz(path)
    _one_line(info, str(path), "more than this machine's")


def test_a_bare_pickle_under_an_npz_name_is_named(tmp_path):
    path = tmp_path / "w.npz"
    path.write_bytes(b"\x80\x04\x95" + bytes(40))
    with pytest.raises(CheckpointError) as info:
        vitjax.load_checkpoint(path)
    _one_line(info, "a PyTorch pickle")


@pytest.mark.parametrize("key,shape", [
    ("embedding/kernel", (0, 16, 3, 10)),
    ("embedding/kernel", (16, 16, 3, 0)),
    ("Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel", (10, 0, 5)),
    ("Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel", (10, 2, 0)),
])
def test_a_zero_sized_dimension_is_one_line_not_a_division_by_zero(tmp_path, key, shape):
    flat = random_checkpoint(vitjax.get_config("testing"))
    flat[key] = np.zeros(shape, np.float32)
    path = save_npz(flat, tmp_path / "empty-dim.npz")
    with pytest.raises(CheckpointError) as info:
        vitjax.load_checkpoint(path)
    _one_line(info, str(path), f"'{key}'", "zero-sized dimension")


# --- random weights are marked (issue #17, fault 12) --------------------------------------------------------------


def test_synthetic_files_are_marked_and_the_config_says_so(tmp_path):
    flat = random_checkpoint(vitjax.get_config("testing"))
    marked = save_npz(flat, tmp_path / "random.npz")
    with zipfile.ZipFile(marked) as z:
        assert z.comment.startswith(RANDOM_WEIGHTS_COMMENT)
        assert sorted(z.namelist()) == sorted(k + ".npy" for k in flat)  # no extra member for the strict loader
    with np.load(marked) as f:  # NumPy (and timm's .npz loader, which uses it) read it as before
        np.testing.assert_array_equal(f["cls"], flat["cls"])
    model, _ = vitjax.load_checkpoint(marked)
    assert model.config.random_weights is True
    plain = tmp_path / "plain.npz"
    np.savez(plain, **flat)
    model, _ = vitjax.load_checkpoint(plain)
    assert model.config.random_weights is False
    assert vitjax.load_checkpoint(marked, image_size=32)[0].config.random_weights is True


def test_safetensors_metadata_can_mark_random_weights(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    from safetensors.torch import save_file
    from timm.models.vision_transformer import VisionTransformer

    sd = VisionTransformer(img_size=32, patch_size=16, embed_dim=64, depth=1, num_heads=1, num_classes=3).state_dict()
    for value, expect in (("true", True), ("false", False)):
        save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "m.safetensors"),
                  metadata={"vitjax.random_weights": value})
        assert vitjax.load_checkpoint(tmp_path / "m.safetensors")[0].config.random_weights is expect
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "m.safetensors"),
              metadata={"vitjax.random_weights": "yes"})
    with pytest.raises(CheckpointError) as info:
        vitjax.load_checkpoint(tmp_path / "m.safetensors")
    _one_line(info, "vitjax.random_weights")
