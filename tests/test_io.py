"""vitjax.io: the maps file (msgpack round trip), the atomic writer, one-line errors naming the file."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from flax.serialization import msgpack_serialize

from vitjax.errors import one_line
from vitjax.io import FORMAT, VERSION, file_sha256, load_maps, save_maps, write_atomic


def arrays(rng):
    return {
        "rollout": rng.random((3, 14, 14)).astype(np.float32),
        "layer": rng.random((3, 12, 14, 14)).astype(np.float32),
        "cumulative": rng.random((3, 12, 7, 9)).astype(np.float32),
        "topk_indices": rng.integers(0, 1000, (3, 5)).astype(np.int32),
        "topk_probs": rng.random((3, 5)).astype(np.float32),
        "empty": np.zeros((3, 0), np.int32),
        "half": rng.random((2, 2)).astype(np.float16),
    }


def test_round_trip_arrays_and_metadata(tmp_path, rng):
    data = arrays(rng)
    meta = {
        "images": [Path("a/b.jpg"), "c.png"],
        "original_sizes": [(300, 200), (np.int64(10), 20)],
        "grid": (14, 14),
        "options": {"head_fusion": "mean", "discard_ratio": np.float32(0.5), "residual": True, "layer": None},
        "checkpoint_sha256": "ab" * 32,
        "true_classes": [None, "Faces"],
    }
    path = save_maps(tmp_path / "maps.msgpack", data, meta)
    assert path == tmp_path / "maps.msgpack"
    assert os.listdir(tmp_path) == ["maps.msgpack"]  # no temporary file left
    loaded = load_maps(path)
    assert loaded["format"] == FORMAT and loaded["version"] == VERSION
    assert set(loaded["arrays"]) == set(data)
    for k, v in data.items():
        got = loaded["arrays"][k]
        assert isinstance(got, np.ndarray) and got.dtype == v.dtype and got.shape == v.shape
        np.testing.assert_array_equal(got, v)
    assert loaded["metadata"] == {
        "images": ["a/b.jpg", "c.png"],
        "original_sizes": [[300, 200], [10, 20]],
        "grid": [14, 14],
        "options": {"head_fusion": "mean", "discard_ratio": 0.5, "residual": True, "layer": None},
        "checkpoint_sha256": "ab" * 32,
        "true_classes": [None, "Faces"],
    }


def test_jax_arrays_are_stored_as_numpy(tmp_path):
    import jax.numpy as jnp

    save_maps(tmp_path / "m", {"x": jnp.arange(6.0).reshape(2, 3)})
    got = load_maps(tmp_path / "m")["arrays"]["x"]
    np.testing.assert_array_equal(got, np.arange(6.0).reshape(2, 3))
    assert load_maps(tmp_path / "m")["metadata"] == {}


def test_never_overwrites_unless_asked(tmp_path, rng):
    path = tmp_path / "maps.msgpack"
    save_maps(path, {"a": np.ones(2)}, {"run": 1})
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="maps.msgpack"):
        save_maps(path, {"a": np.zeros(2)}, {"run": 2})
    assert path.read_bytes() == before
    save_maps(path, {"a": np.zeros(2)}, {"run": 2}, overwrite=True)
    assert load_maps(path)["metadata"] == {"run": 2}
    assert sorted(os.listdir(tmp_path)) == ["maps.msgpack"]


def test_files_get_the_usual_permissions(tmp_path):
    path = write_atomic(tmp_path / "x.bin", b"abc")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert path.read_bytes() == b"abc"


def test_bad_metadata_and_names(tmp_path):
    with pytest.raises(ValueError, match="metadata.options.fn"):
        save_maps(tmp_path / "m", {}, {"options": {"fn": object()}})
    with pytest.raises(ValueError, match="strings"):
        save_maps(tmp_path / "m", {}, {1: "x"})
    with pytest.raises(ValueError, match="strings"):
        save_maps(tmp_path / "m", {3: np.zeros(1)})
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("content", [b"", b"garbage that is not msgpack", b"\x93\x01\x02"])
def test_unreadable_files_raise_one_line_naming_the_file(tmp_path, content):
    path = tmp_path / "bad.msgpack"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="bad.msgpack") as e:
        load_maps(path)
    assert "\n" not in str(e.value)


def test_truncated_foreign_and_missing_files(tmp_path, rng):
    good = save_maps(tmp_path / "good", arrays(rng), {"x": 1})
    cut = tmp_path / "cut"
    cut.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ValueError, match="cut"):
        load_maps(cut)
    foreign = tmp_path / "foreign"
    foreign.write_bytes(msgpack_serialize({"params": {"w": np.zeros(2)}}))
    with pytest.raises(ValueError, match="not a vitjax maps file"):
        load_maps(foreign)
    with pytest.raises(ValueError, match="missing"):
        load_maps(tmp_path / "missing")


def test_file_sha256(tmp_path):
    path = tmp_path / "blob"
    data = os.urandom(5000)
    path.write_bytes(data)
    assert file_sha256(path, chunk=1000) == hashlib.sha256(data).hexdigest()


def test_one_line():
    assert one_line("a.jpg:\n  cannot read\timage \r\n(truncated) ") == "a.jpg: cannot read image (truncated)"
