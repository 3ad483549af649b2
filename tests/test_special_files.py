"""Files that are not regular files (a FIFO nobody writes to, /dev/zero) are refused by their kind, in one line,
never opened: reading them would block forever or never end (found by benchmarks/fuzz.py)."""

import os

import pytest

import vitjax
from vitjax.data.labels import load_label_file
from vitjax.errors import CheckpointError, MapsFileError, require_file
from vitjax.evaluation.runner import _read_shards

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


def _named(tmp_path, target, name):
    link = tmp_path / name
    link.symlink_to(target)
    return link


@pytest.mark.parametrize("name", ["w.npz", "w.safetensors"])
def test_a_checkpoint_that_is_a_fifo_or_a_device_is_named_for_what_it_is(tmp_path, fifo, name):
    with pytest.raises(CheckpointError, match="is a FIFO"):
        vitjax.load_checkpoint(_named(tmp_path, fifo, name))
    with pytest.raises(CheckpointError, match="is a device"):
        vitjax.load_checkpoint(_named(tmp_path, "/dev/zero", "z" + name))


def test_a_maps_file_label_file_or_shard_that_is_a_fifo_is_refused_without_blocking(tmp_path, fifo):
    with pytest.raises(MapsFileError, match="is a FIFO"):
        vitjax.load_maps(_named(tmp_path, fifo, "maps.msgpack"))
    with pytest.raises(MapsFileError, match="is a device"):
        vitjax.load_maps(_named(tmp_path, "/dev/zero", "zero.msgpack"))
    with pytest.raises(ValueError, match="is a FIFO"):
        load_label_file(_named(tmp_path, fifo, "labels.txt"))
    shards = tmp_path / "shards"
    shards.mkdir()
    _named(shards, fifo, "p000-000001.json")
    found, damaged = _read_shards(shards)
    assert found == {} and len(damaged) == 1 and "FIFO" in damaged[0][1]


def test_require_file_keeps_its_messages_for_missing_empty_and_folders(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        require_file(tmp_path / "nope", "a file")
    with pytest.raises(CheckpointError, match="is a directory"):
        require_file(tmp_path, "a file")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(ValueError, match="the file is empty"):
        require_file(tmp_path / "empty", "a file", ValueError)
