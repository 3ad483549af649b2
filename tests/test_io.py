"""vitjax.io: the maps file (msgpack round trip), the atomic writer, one-line errors naming the file."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from flax.serialization import msgpack_serialize

from vitjax import io as vio
from vitjax.errors import MapsFileError, one_line
from vitjax.io import FORMAT, VERSION, file_fingerprint, file_sha256, load_maps, save_maps, write_atomic


def arrays(rng):
    return {
        "rollout": rng.random((2, 14, 14)).astype(np.float32),  # [N, gh, gw]: N = 2 images in the metadata
        "layer": rng.random((2, 12, 14, 14)).astype(np.float32),
        "coarse": rng.random((3, 12, 7, 9)).astype(np.float32),  # a name vitjax does not know: any shape
        "topk_indices": rng.integers(0, 1000, (2, 5)).astype(np.int32),
        "topk_probs": rng.random((2, 5)).astype(np.float32),
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


# --------------------------------------------------------------------------- the maps file is never trusted


def visualize_like(rng, n=2, layers=3, heads=2, grid=(4, 5), k=3):
    """Arrays and metadata shaped as the visualize run writes them (vitjax/viz/run.py _save_maps)."""
    gh, gw = grid
    arrays = {
        "rollout": rng.random((n, gh, gw)).astype(np.float32),
        "layer": rng.random((n, layers, gh, gw)).astype(np.float32),
        "cumulative": rng.random((n, layers, gh, gw)).astype(np.float32),
        "heads": rng.random((n, heads, gh, gw)).astype(np.float32),
        "token_norms": (10 * rng.random((n, gh, gw))).astype(np.float32),
        "received": rng.random((n, layers, gh, gw)).astype(np.float32),
        "received_heads": rng.random((n, layers, heads, gh, gw)).astype(np.float32),
        "topk_indices": rng.integers(0, 10, (n, k)).astype(np.int32),
        "topk_probs": rng.random((n, k)).astype(np.float32),
    }
    metadata = {"images": [f"/photos/{i}.jpg" for i in range(n)], "display_names": [f"{i}.jpg" for i in range(n)],
                "true_classes": [None] * n, "original_sizes": [[30, 40]] * n, "grid": list(grid),
                "image_size": [4 * gh, 4 * gw], "num_layers": layers, "num_heads": heads, "num_classes": 10,
                "topk_labels": [["a"] * k] * n, "outlier_counts": [0] * n, "sink_counts": [1] * n,
                "options": {"head_fusion": "mean", "discard_ratio": 0.0}, "checkpoint_sha256": "ab" * 32}
    return arrays, metadata


def forge(path, arrays, metadata, *, version=VERSION, extra=None, checksum=True):
    """A maps file with any content and (unless told otherwise) a correct checksum: only the schema can refuse it."""
    tree = {"format": FORMAT, "version": version, "arrays": arrays, "metadata": metadata,
            "sha256": vio._digest(arrays, metadata) if checksum else "0" * 64, **(extra or {})}
    path.write_bytes(msgpack_serialize(tree))
    return path


def refused(path, *needles):
    with pytest.raises(MapsFileError) as e:
        load_maps(path)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def test_random_bit_flips_are_all_refused_or_change_nothing(tmp_path, rng):
    """1-5 flipped bits anywhere in a saved file: refused in one line, or (flips that cancel) the same values.

    Before the checksum, 30 of 30 such files loaded with changed values (maps of 1.3e38).
    """
    arrays, metadata = visualize_like(rng)
    good = save_maps(tmp_path / "maps.msgpack", arrays, metadata)
    data = np.frombuffer(good.read_bytes(), np.uint8)
    flips = np.random.default_rng(1234)
    outcomes = {"refused": 0, "same": 0}
    for trial in range(300):
        bad = data.copy()
        for bit in flips.choice(8 * data.size, size=int(flips.integers(1, 6)), replace=False):
            bad[bit // 8] ^= np.uint8(1 << (bit % 8))
        path = tmp_path / f"flip{trial}.msgpack"
        path.write_bytes(bad.tobytes())
        try:
            loaded = load_maps(path)
        except MapsFileError as e:
            assert "\n" not in str(e) and str(e).startswith(f"{path}: ")
            outcomes["refused"] += 1
            continue
        assert loaded["metadata"] == metadata and set(loaded["arrays"]) == set(arrays), trial
        for name, a in arrays.items():
            np.testing.assert_array_equal(loaded["arrays"][name], a)
        outcomes["same"] += 1
    assert outcomes["refused"] >= 290, outcomes


def test_old_files_without_checksum_are_refused_by_name(tmp_path, rng):
    arrays, metadata = visualize_like(rng)
    old = tmp_path / "old.msgpack"
    old.write_bytes(msgpack_serialize({"format": FORMAT, "version": 1, "arrays": arrays, "metadata": metadata}))
    refused(old, "version 1", "older vitjax", "save the maps again")
    refused(forge(tmp_path / "new", arrays, metadata, version=VERSION + 1), f"version {VERSION + 1}")


def test_checksum_mismatch_and_unknown_keys(tmp_path, rng):
    arrays, metadata = visualize_like(rng)
    refused(forge(tmp_path / "sum", arrays, metadata, checksum=False), "checksum mismatch")
    changed = dict(arrays, rollout=arrays["rollout"] * 0.5)  # valid values, but not the ones written
    tree = {"format": FORMAT, "version": VERSION, "arrays": changed, "metadata": metadata,
            "sha256": vio._digest(arrays, metadata)}
    (tmp_path / "edited").write_bytes(msgpack_serialize(tree))
    refused(tmp_path / "edited", "checksum mismatch")
    refused(forge(tmp_path / "extra", arrays, metadata, extra={"note": "x"}), "keys")


@pytest.mark.parametrize("case", ["text array", "complex dtype", "string dtype", "complex metadata",
                                  "bytes metadata", "int keys", "numpy scalar"])
def test_unknown_types_are_refused(tmp_path, rng, case):
    """Whatever msgpack can carry but a maps file never holds: refused in one line (before: returned as is)."""
    arrays, metadata = visualize_like(rng)
    if case == "text array":
        arrays["rollout"] = "not an array"
    elif case == "complex dtype":
        arrays["rollout"] = arrays["rollout"].astype(np.complex64)
    elif case == "string dtype":
        arrays["extra"] = np.array(["a", "b"])
    elif case == "complex metadata":
        metadata["grid"] = [4 + 1j, 5]
    elif case == "bytes metadata":
        metadata["checkpoint_sha256"] = b"\x00\x01"
    elif case == "int keys":
        metadata["options"] = {1: "x"}
    elif case == "numpy scalar":
        arrays["rollout"] = np.float32(0.5)
    path = tmp_path / "m.msgpack"
    tree = {"format": FORMAT, "version": VERSION, "arrays": arrays, "metadata": metadata, "sha256": "0" * 64}
    path.write_bytes(msgpack_serialize(tree))
    refused(path, "not a vitjax maps file (msgpack" if case == "string dtype" else "damaged")


@pytest.mark.parametrize("case, needle", [
    ("rollout grid", "arrays.rollout has shape (2, 5, 4)"),
    ("layers", "arrays.layer has shape"),
    ("heads", "arrays.heads has shape"),
    ("images", "arrays.cumulative has shape"),
    ("topk", "arrays.topk_probs has shape"),
    ("ndim", "expected [N, gh, gw]"),
    ("int maps", "arrays.rollout has dtype int32; expected floats"),
    ("float indices", "arrays.topk_indices has dtype float32; expected integers"),
    ("nan", "arrays.layer holds NaN or infinite values"),
    ("inf norms", "arrays.token_norms holds NaN or infinite values"),
    ("nan other", "arrays.extra holds NaN or infinite values"),
    ("huge", "1.3e+38]; expected [0, 1]"),
    ("negative", "arrays.heads holds values in [-0.5,"),
    ("class index", "10]; expected [0, 9]"),
    ("metadata grid", "metadata.grid is not two positive integers"),
    ("metadata layers", "metadata.num_layers is not a positive integer"),
    ("metadata sizes", "metadata.original_sizes has 1 entries for 2 images"),
    ("metadata bool", "metadata.num_heads is not a positive integer: True"),
])
def test_schema_and_ranges_are_checked_on_load(tmp_path, rng, case, needle):
    """A file with a correct checksum still has to make sense: shapes, dtypes and value ranges."""
    arrays, metadata = visualize_like(rng)
    change = {
        "rollout grid": lambda: arrays.update(rollout=arrays["rollout"].transpose(0, 2, 1).copy()),
        "layers": lambda: arrays.update(layer=arrays["layer"][:, :2].copy()),
        "heads": lambda: arrays.update(heads=arrays["heads"][:, :1].copy()),
        "images": lambda: arrays.update(cumulative=arrays["cumulative"][:1].copy()),
        "topk": lambda: arrays.update(topk_probs=arrays["topk_probs"][:, :2].copy()),
        "ndim": lambda: arrays.update(rollout=arrays["rollout"][None]),
        "int maps": lambda: arrays.update(rollout=arrays["rollout"].astype(np.int32)),
        "float indices": lambda: arrays.update(topk_indices=arrays["topk_indices"].astype(np.float32)),
        "nan": lambda: arrays["layer"].__setitem__((0, 1, 2, 3), np.nan),
        "inf norms": lambda: arrays["token_norms"].__setitem__((1, 0, 0), np.inf),
        "nan other": lambda: arrays.update(extra=np.array([1.0, np.nan])),
        "huge": lambda: arrays["rollout"].__setitem__((0, 0, 0), 1.3e38),
        "negative": lambda: arrays["heads"].__setitem__((0, 0, 0, 0), -0.5),
        "class index": lambda: arrays["topk_indices"].__setitem__((0, 0), 10),
        "metadata grid": lambda: metadata.update(grid=[4, 0]),
        "metadata layers": lambda: metadata.update(num_layers=-3),
        "metadata sizes": lambda: metadata.update(original_sizes=[[30, 40]]),
        "metadata bool": lambda: metadata.update(num_heads=True),
    }
    change[case]()
    refused(forge(tmp_path / "m.msgpack", arrays, metadata), needle)
    with pytest.raises(MapsFileError, match="not written"):  # and what would be refused is never written
        save_maps(tmp_path / "never.msgpack", arrays, metadata)
    assert not (tmp_path / "never.msgpack").exists()


def test_a_visualize_like_file_round_trips(tmp_path, rng):
    arrays, metadata = visualize_like(rng)
    big_endian = dict(arrays, rollout=arrays["rollout"].astype(">f4"))  # stored in native order, same values
    loaded = load_maps(save_maps(tmp_path / "m.msgpack", big_endian, metadata))
    assert loaded["metadata"] == metadata and loaded["sha256"] == vio._digest(loaded["arrays"], metadata)
    for name, a in arrays.items():
        np.testing.assert_array_equal(loaded["arrays"][name], a)


def test_file_fingerprint_refuses_what_is_not_a_regular_file(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"12345")
    assert file_fingerprint(path) == (5, hashlib.sha256(b"12345").hexdigest())
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):  # returns at once: never blocks on the FIFO
        file_fingerprint(fifo)
    with pytest.raises(ValueError, match="cannot read"):
        file_fingerprint(tmp_path / "missing.jpg")
