"""Checkpoints by their Hugging Face Hub names, resolved offline through the real ``huggingface_hub``.

Each test lays out a Hub cache in tmp_path as ``huggingface_hub`` writes it (``HF_HOME/hub/models--org--name/``
with ``refs/<branch or tag>`` holding a commit, ``blobs/<sha256>`` holding the bytes and
``snapshots/<commit>/<file>`` linking to them), with tiny models written by timm (``save_for_hf``: its
``config.json`` with ``pretrained_cfg`` and ``label_names``) and transformers (``save_pretrained``, with
``id2label``), sets ``HF_HOME`` and ``HF_HUB_OFFLINE=1`` after ``huggingface_hub`` was imported (vitjax reads
them at each call), and loads ``hf-hub:org/name[@revision]`` names. Nothing reaches a network: the commands run
in subprocesses whose every HTTP(S) request goes to a closed local port.

Parity tolerances are those of tests/checkpoints/test_safetensors.py (issue #2): outputs max |d| <= 1e-4 *
max(1, max |ref|); the preprocessed pixels, computed by PIL in both libraries and normalised in float32, agree
to float32 rounding (``rounding_tol`` of the normalised values over the two float32 steps).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import vitjax
from vitjax.checkpoints.download import resolve_checkpoint
from vitjax.checkpoints.hub import checkpoint_label, hub_cache_dir, parse_hub_name, resolve_hub
from vitjax.checkpoints.load import checkpoint_sha256
from vitjax.data.labels import class_names
from vitjax.errors import CheckpointError, DownloadError, VitjaxWarning
from vitjax.io import file_sha256

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
from support.helpers import rounding_tol  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
COMMIT_A = "a" * 40
COMMIT_B = "b" * 40
NAMES3 = ["tabby, tabby cat", "Egyptian cat", "sports car, sport car"]


# --------------------------------------------------------------------------- a Hub cache, as huggingface_hub lays it


def put_repo(home: Path, repo: str, files: dict, *, commit: str = COMMIT_A, refs=("main",)) -> Path:
    """``files`` ({name: bytes or a path to copy}) as one commit of ``repo`` in the cache under ``home``."""
    repo_dir = home / "hub" / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo_dir / "blobs").mkdir(exist_ok=True)
    for name, content in files.items():
        data = Path(content).read_bytes() if isinstance(content, (str, Path)) else content
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (repo_dir / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo_dir / "refs" / ref).write_text(commit)  # no newline, as huggingface_hub writes it
    return snapshot


def folder_files(folder: Path) -> dict:
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def hub_home(tmp_path, monkeypatch):
    """HF_HOME in tmp_path, offline; huggingface_hub was imported before (its constants hold the old values)."""
    import huggingface_hub  # noqa: F401  imported first: vitjax must still see the variables set below

    home = tmp_path / "hf"
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def _randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.05 if p.ndim == 1 else p.shape[-1] ** -0.5))
    return model.eval()


def timm_folder(tmp_path, *, label_names=("apple", "banana", "cherry"), interpolation="bicubic", seed=0):
    """A tiny timm ViT saved as timm pushes to the Hub: model.safetensors + config.json (pretrained_cfg...)."""
    from timm.models._hub import save_for_hf

    model = _randomize(timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32,
                                         num_classes=len(label_names)), seed)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 32, 32), "interpolation": interpolation}
    folder = tmp_path / f"timm-{seed}"
    save_for_hf(model, str(folder), safe_serialization=True, model_config={"label_names": list(label_names)})
    return model, folder


def hf_vit_folder(tmp_path, *, names=NAMES3, shard=None, processor=True):
    """A tiny transformers ViTForImageClassification with id2label (and its processor), via save_pretrained."""
    cfg = transformers.ViTConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128,
                                 image_size=32, patch_size=16, num_labels=len(names),
                                 id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                                 attn_implementation="eager")
    model = _randomize(transformers.ViTForImageClassification(cfg), 1)
    folder = tmp_path / ("hf-vit" + ("-sharded" if shard else ""))
    model.save_pretrained(folder, **({"max_shard_size": shard} if shard else {}))
    if processor:
        transformers.ViTImageProcessorPil(size={"height": 32, "width": 32}, resample=2).save_pretrained(folder)
    return model, folder


def photo():
    from matplotlib import cbook

    return cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


def one_line_error(info) -> str:
    msg = str(info.value)
    assert "\n" not in msg and msg == " ".join(msg.split()), msg
    return msg


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("name, repo, rev", [
    ("hf-hub:google/vit-base-patch16-224", "google/vit-base-patch16-224", None),
    ("HF-HUB:facebook/dinov2-small@main", "facebook/dinov2-small", "main"),
    ("hf-hub:timm/vit_base_patch16_224.augreg2_in21k_ft_in1k@refs/pr/1",
     "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k", "refs/pr/1"),
])
def test_hub_names_parse(name, repo, rev):
    assert parse_hub_name(name) == (repo, rev)


@pytest.mark.parametrize("name", ["hf-hub:", "hf-hub:a/b/c", "hf-hub:org/na me", "hf-hub:org/name@", "hf-hub:-x/y",
                                  "hf-hub:org--x/y", "hf-hub:org/name@ v1"])
def test_bad_hub_names_are_one_line(name, hub_home):
    with pytest.raises(DownloadError) as info:
        resolve_hub(name)
    assert "hf-hub:ORG/NAME[@REVISION]" in one_line_error(info)


def test_the_cache_folder_follows_the_environment_at_call_time(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "h"))
    assert hub_cache_dir() == tmp_path / "h" / "hub" and c.HF_HUB_CACHE != str(tmp_path / "h" / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))
    assert hub_cache_dir() == tmp_path / "c"


# --------------------------------------------------------------------------- repositories in the cache


def test_timm_repository_by_name_with_its_labels_preprocessing_and_parity_with_timm(tmp_path, hub_home):
    """timm's config.json: label_names name the classes, pretrained_cfg's interpolation/mean/std/input_size are
    the preprocessing; photo -> logits equals timm's own pipeline on the same photo (squash, as vitjax never crops)."""
    from PIL import Image

    src, folder = timm_folder(tmp_path)
    put_repo(hub_home, "timm/tiny_vit.test", folder_files(folder))
    model, params = vitjax.load_checkpoint("hf-hub:timm/tiny_vit.test")
    cfg = model.config
    assert cfg.class_names == ("apple", "banana", "cherry") and cfg.input_resize == "bicubic"
    assert cfg.image_size == (32, 32) and cfg.pixel_mean == tuple(src.pretrained_cfg["mean"])
    assert class_names(cfg.num_classes, checkpoint=cfg.class_names) == ["apple", "banana", "cherry"]
    data_cfg = timm.data.resolve_data_config({}, model=src)
    assert data_cfg["interpolation"] == "bicubic"
    transform = timm.data.create_transform(**{**data_cfg, "crop_pct": 1.0, "crop_mode": "squash"})
    with Image.open(photo()) as im:
        ref_x = transform(im.convert("RGB")).numpy().transpose(1, 2, 0)
    x = vitjax.preprocess(photo(), cfg)  # the config's resize: PIL bicubic, as timm's pipeline
    assert np.abs(x - ref_x).max() <= rounding_tol(np.abs(ref_x).max(), 3)
    google = vitjax.preprocess(photo(), cfg, resize="google")
    assert np.abs(google - ref_x).max() > 1e-2  # the difference the file's interpolation makes
    with torch.no_grad():
        ref = src(torch.from_numpy(ref_x.transpose(2, 0, 1)[None].copy())).numpy()
    out = np.asarray(vitjax.forward(model, params, x[None])[0])
    assert np.abs(out - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))


def test_transformers_vit_by_name_says_its_id2label_names_and_matches_transformers(tmp_path, hub_home):
    from PIL import Image

    src, folder = hf_vit_folder(tmp_path)
    put_repo(hub_home, "google/tiny-vit", folder_files(folder))
    path = resolve_checkpoint("hf-hub:google/tiny-vit")
    assert path.name == "model.safetensors" and path.parent.name == COMMIT_A
    model, params = vitjax.load_checkpoint("hf-hub:google/tiny-vit")
    cfg = model.config
    assert cfg.class_names == tuple(NAMES3) and cfg.input_resize == "pil" and cfg.layer_norm_eps == 1e-12
    processor = transformers.ViTImageProcessorPil.from_pretrained(path.parent)  # the repo's preprocessor_config
    with Image.open(photo()) as im:
        ref_x = processor(im.convert("RGB"), return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
    x = vitjax.preprocess(photo(), cfg)
    assert x.shape == ref_x.shape and np.abs(x - ref_x).max() <= rounding_tol(np.abs(ref_x).max(), 3)
    with torch.no_grad():
        ref = src(torch.from_numpy(ref_x.transpose(2, 0, 1)[None].copy())).logits.numpy()
    out = np.asarray(vitjax.forward(model, params, x[None])[0])
    assert np.abs(out - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))


def test_visualize_prints_and_writes_the_checkpoints_class_names(tmp_path, hub_home, capsys):
    from vitjax.cli import visualize

    _, folder = hf_vit_folder(tmp_path)
    put_repo(hub_home, "google/tiny-vit", folder_files(folder))
    code = visualize.main(["--ckpt", "hf-hub:google/tiny-vit", "--out", str(tmp_path / "out"), "--run-name", "r",
                           "--no-compile-cache", "--topk", "3", "--no-grid", "--no-summary", "--save-maps", "-q"])
    out, err = capsys.readouterr()
    assert code == 0, err
    for name in NAMES3:  # before: "class 0", "class 1", "class 2"
        assert name in out
    assert "class 0" not in out
    rows = [line.split("\t") for line in (tmp_path / "out" / "r" / "predictions.tsv").read_text().splitlines()[1:]]
    assert sorted(r[4] for r in rows) == sorted(NAMES3)
    maps = vitjax.load_maps(tmp_path / "out" / "r" / "maps.msgpack")["metadata"]
    snapshot = hub_home / "hub" / "models--google--tiny-vit" / "snapshots" / COMMIT_A
    assert maps["checkpoint_sha256"] == file_sha256(snapshot / "model.safetensors")
    assert maps["checkpoint"] == "hf-hub:google/tiny-vit"


def test_labels_auto_prefers_the_checkpoints_names_and_checkpoint_requires_them():
    names = ["a", "b"]
    assert class_names(2, "auto", checkpoint=names) == names
    assert class_names(2, "checkpoint", checkpoint=names) == names
    with pytest.raises(ValueError, match="gives no class names"):
        class_names(2, "checkpoint")
    assert class_names(1000, "auto")[281] == "tabby, tabby_cat"  # no names in the file: ImageNet's


def test_dinov2_with_registers_by_name_and_its_processor_size(tmp_path, hub_home):
    from PIL import Image

    cfg_kw = dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=4, image_size=56,
                  patch_size=14, num_register_tokens=2, attn_implementation="eager")
    src = _randomize(transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(**cfg_kw)), 2)
    folder = tmp_path / "dinov2"
    src.save_pretrained(folder)
    transformers.BitImageProcessorPil(size={"height": 28, "width": 28}, do_center_crop=False, resample=3,
                                      image_mean=[0.485, 0.456, 0.406],
                                      image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    put_repo(hub_home, "facebook/tiny-dinov2-with-registers", folder_files(folder))
    model, params = vitjax.load_checkpoint("hf-hub:facebook/tiny-dinov2-with-registers")
    cfg = model.config
    # the processor's input size (28, not the 56 of the position grid) and its bicubic resize are honoured
    assert (cfg.num_registers, cfg.image_size, cfg.input_resize, cfg.num_classes) == (2, (28, 28), "bicubic", None)
    processor = transformers.BitImageProcessorPil.from_pretrained(folder)
    with Image.open(photo()) as im:
        ref_x = processor(im.convert("RGB"), return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
    x = vitjax.preprocess(photo(), cfg)
    assert np.abs(x - ref_x).max() <= rounding_tol(np.abs(ref_x).max(), 3)
    with torch.no_grad():
        ref = src(torch.from_numpy(ref_x.transpose(2, 0, 1)[None].copy())).pooler_output.numpy()
    out = np.asarray(vitjax.forward(model, params, x[None])[0])
    assert np.abs(out - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))


def test_a_center_crop_processor_gives_the_crop_size_as_input_size(tmp_path, hub_home):
    """facebook/dinov2-*: shortest edge 256, center crop 224 -> vitjax runs at 224 (the whole photo, squashed)."""
    src = _randomize(transformers.Dinov2Model(transformers.Dinov2Config(
        hidden_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=56, patch_size=14)), 3)
    folder = tmp_path / "dinov2-crop"
    src.save_pretrained(folder)
    transformers.BitImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 28, "width": 28},
                                      do_center_crop=True, resample=3).save_pretrained(folder)
    model, _ = vitjax.load_checkpoint(folder / "model.safetensors")
    assert model.config.image_size == (28, 28) and model.config.input_resize == "bicubic"
    assert vitjax.load_checkpoint(folder / "model.safetensors", image_size=56)[0].config.image_size == (56, 56)


def test_sharded_checkpoint_by_name_merges_every_shard(tmp_path, hub_home):
    src, folder = hf_vit_folder(tmp_path, shard="40KB")
    files = folder_files(folder)
    shards = sorted(n for n in files if n.startswith("model-") and n.endswith(".safetensors"))
    assert "model.safetensors.index.json" in files and len(shards) >= 2
    snapshot = put_repo(hub_home, "google/tiny-vit-sharded", files)
    path = resolve_checkpoint("hf-hub:google/tiny-vit-sharded")
    assert path == snapshot / "model.safetensors.index.json"
    model, params = vitjax.load_checkpoint("hf-hub:google/tiny-vit-sharded")
    single, single_params = vitjax.load_checkpoint(_hf_single(src, tmp_path))
    assert model.config == single.config.replace(input_resize="pil")  # the repo's processor: PIL bilinear
    assert model.config.class_names == single.config.class_names == tuple(NAMES3)
    for a, b in zip(jax_leaves(params), jax_leaves(single_params), strict=True):
        np.testing.assert_array_equal(a, b)
    # the digest of a sharded checkpoint: sha256sum's listing of the index and its shards, hashed
    listing = "".join(f"{file_sha256(snapshot / n)}  {n}\n" for n in ["model.safetensors.index.json"] + shards)
    assert checkpoint_sha256(path) == hashlib.sha256(listing.encode()).hexdigest()


def _hf_single(src, tmp_path):
    folder = tmp_path / "single"
    src.save_pretrained(folder)
    return folder / "model.safetensors"


def jax_leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_a_bad_index_or_a_shard_that_differs_from_it_is_one_line(tmp_path):
    _, folder = hf_vit_folder(tmp_path, shard="40KB", processor=False)
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    for bad, needle in ((dict(data, weight_map={"x": "../../etc/passwd.safetensors"}), "not a .safetensors file name"),
                        ([1, 2], "not an index object"),
                        (dict(data, weight_map={}), "field 'weight_map'"),
                        (dict(data, metadata={"total_size": -1}), "metadata.total_size")):
        index.write_text(json.dumps(bad))
        with pytest.raises(CheckpointError) as info:
            vitjax.load_checkpoint(index)
        assert needle in one_line_error(info) and str(index) in str(info.value)
    moved = dict(data["weight_map"])
    key = next(iter(moved))
    moved[key] = next(s for s in sorted(set(moved.values())) if s != moved[key])
    index.write_text(json.dumps(dict(data, weight_map=moved)))
    with pytest.raises(CheckpointError) as info:
        vitjax.load_checkpoint(index)
    assert "tensor(s) the index" in one_line_error(info) and key in str(info.value)


def test_a_pinned_revision_by_commit_or_tag(tmp_path, hub_home):
    _, old = timm_folder(tmp_path, label_names=("old0", "old1"), seed=5)
    _, new = timm_folder(tmp_path, label_names=("new0", "new1", "new2"), seed=6)
    put_repo(hub_home, "timm/pinned", folder_files(old), commit=COMMIT_A, refs=("v1.0",))
    put_repo(hub_home, "timm/pinned", folder_files(new), commit=COMMIT_B, refs=("main",))
    for name, names in (("hf-hub:timm/pinned", ("new0", "new1", "new2")),
                        (f"hf-hub:timm/pinned@{COMMIT_A}", ("old0", "old1")),
                        ("hf-hub:timm/pinned@v1.0", ("old0", "old1")),
                        (f"hf-hub:timm/pinned@{COMMIT_B}", ("new0", "new1", "new2"))):
        model, _ = vitjax.load_checkpoint(name)
        assert model.config.class_names == names, name
    path = resolve_checkpoint("hf-hub:timm/pinned@v1.0")
    assert path.parent.name == COMMIT_A and checkpoint_label(path) == f"hf-hub:timm/pinned@{COMMIT_A[:12]}"
    with pytest.raises(CheckpointError) as info:
        vitjax.load_checkpoint("hf-hub:timm/pinned@v2.0")
    assert "hf-hub:timm/pinned@v2.0: config.json: not in the cache" in one_line_error(info)


def test_a_repository_with_only_a_pickle_is_refused_with_the_way_to_convert(hub_home):
    pickle = b"\x80\x02}q\x00."  # never unpickled: the name alone refuses it
    put_repo(hub_home, "someone/old-vit", {"config.json": b'{"model_type": "vit"}', "pytorch_model.bin": pickle})
    with pytest.raises(CheckpointError) as info:
        vitjax.load_checkpoint("hf-hub:someone/old-vit")
    msg = one_line_error(info)
    assert "hf-hub:someone/old-vit: pytorch_model.bin: a PyTorch pickle, which vitjax never unpickles" in msg
    assert "save_pretrained" in msg and "no .safetensors" in msg


def test_a_missing_file_and_an_empty_cache_offline_are_one_line(tmp_path, hub_home):
    _, folder = hf_vit_folder(tmp_path, processor=False)
    put_repo(hub_home, "google/half-cached", {"config.json": folder / "config.json"})
    cache = hub_home / "hub"
    with pytest.raises(CheckpointError) as info:
        vitjax.load_checkpoint("hf-hub:google/half-cached")
    msg = one_line_error(info)
    assert msg.startswith("hf-hub:google/half-cached: model.safetensors: not in the cache, and HF_HUB_OFFLINE is set")
    assert f"(Hugging Face cache: {cache})" in msg
    for name, file in (("hf-hub:facebook/dinov2-small", "config.json"), ("hf-hub:google/half-cached@main2",
                                                                         "config.json")):
        with pytest.raises(DownloadError) as info:
            resolve_checkpoint(name)
        msg = one_line_error(info)
        assert msg.startswith(f"{name}: {file}: not in the cache") and str(cache) in msg
    assert not (cache / "models--facebook--dinov2-small").exists()  # nothing created for a failure


def test_a_processor_config_missing_from_the_cache_offline_is_said(tmp_path, hub_home):
    """A cache filled by transformers' from_pretrained (no preprocessor_config.json): the model loads with the
    family's defaults, and a warning says the processor's settings were not seen."""
    _, folder = hf_vit_folder(tmp_path, processor=False)
    put_repo(hub_home, "google/no-processor", folder_files(folder))
    with pytest.warns(VitjaxWarning, match="preprocessor_config.json is not in the Hugging Face cache"):
        model, _ = vitjax.load_checkpoint("hf-hub:google/no-processor")
    assert model.config.input_resize == "google"


# --------------------------------------------------------------------------- the command line, without network


def _no_network_env(tmp_path, offline: bool):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "NO_PROXY",
                                                            "no_proxy", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    env.update(HF_HOME=str(tmp_path / "empty-hf"), XDG_CACHE_HOME=str(tmp_path / "xdg"),
               VITJAX_CHECKPOINT_DIR=str(tmp_path / "ck"), MPLBACKEND="Agg", HF_HUB_ETAG_TIMEOUT="5")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env[name] = "http://127.0.0.1:9"  # nothing listens there: every request is refused at once
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


@pytest.mark.parametrize("offline", [True, False])
def test_visualize_a_hub_name_with_an_empty_cache_and_no_network_fails_in_one_line(tmp_path, offline):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "visualize.py"), "--ckpt",
                           "hf-hub:facebook/dinov2-small", "--out", str(tmp_path / "out"), "--no-compile-cache"],
                          env=_no_network_env(tmp_path, offline), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("visualize.py: error: hf-hub:facebook/dinov2-small: config.json: ")
    assert str(tmp_path / "empty-hf" / "hub") in line
    assert ("HF_HUB_OFFLINE is set" if offline else "cannot reach the Hugging Face Hub") in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_visualize_a_cached_hub_name_runs_without_network(tmp_path):
    """Not offline, the Hub unreachable: the files in the cache are used (the Hub's own fallback)."""
    _, folder = hf_vit_folder(tmp_path)
    env = _no_network_env(tmp_path, offline=False)
    put_repo(Path(env["HF_HOME"]), "google/tiny-vit", folder_files(folder))
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "visualize.py"), "--ckpt", "hf-hub:google/tiny-vit",
                           "--out", str(tmp_path / "out"), "--run-name", "r", "--no-compile-cache", "--no-grid",
                           "--topk", "3", "-q"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert all(name in proc.stdout for name in NAMES3)
    assert (tmp_path / "out" / "r" / "001-grace_hopper.png").is_file()
    # the issue's own example, its files in the cache (a tiny stand-in under the real name): it runs
    dino = _randomize(transformers.Dinov2Model(transformers.Dinov2Config(
        hidden_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=56, patch_size=14)), 4)
    dino.save_pretrained(tmp_path / "dino")
    put_repo(Path(env["HF_HOME"]), "facebook/dinov2-small", folder_files(tmp_path / "dino"))
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "visualize.py"), "--ckpt",
                           "hf-hub:facebook/dinov2-small", "--out", str(tmp_path / "out"), "--run-name", "d",
                           "--no-compile-cache", "--no-grid", "-q"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "d" / "001-grace_hopper.png").is_file()


def test_list_checkpoints_explains_the_hub_form(capsys):
    from vitjax.cli import visualize

    assert visualize.main(["--list-checkpoints"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    form, what = line.split("\t")
    assert form == "hf-hub:ORG/NAME[@REVISION]" and "hf-hub:google/vit-base-patch16-224" in what
    assert "HF_HUB_OFFLINE" in what


def test_an_org_slash_name_that_is_no_known_name_suggests_the_hub_form(tmp_path):
    with pytest.raises(DownloadError, match=r"name it hf-hub:google/vit-base-patch16-224"):
        resolve_checkpoint("google/vit-base-patch16-224", checkpoint_dir=tmp_path)


# --------------------------------------------------------------------------- what the JSON files say, checked


def _edit_config(folder: Path, **fields) -> Path:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(fields)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder / "model.safetensors"


@pytest.mark.parametrize("id2label, needle", [
    ({"0": "a", "2": "b", "1": "c", "3": "d"}, "names 4 classes, the head of the weights has 3"),
    ({"0": "a", "1": "b", "x": "c"}, "an object with the keys 0..n-1"),
    ({"0": "a", "1": 5, "2": "c"}, "class names (a list of strings"),
])
def test_a_bad_id2label_is_one_line_naming_the_field(tmp_path, id2label, needle):
    _, folder = hf_vit_folder(tmp_path, processor=False)
    path = _edit_config(folder, id2label=id2label)
    with pytest.raises(CheckpointError) as info:
        vitjax.load_checkpoint(path)
    msg = one_line_error(info)
    assert needle in msg and str(folder / "config.json") in msg and "id2label" in msg


def test_placeholder_label_names_are_no_names(tmp_path):
    _, folder = hf_vit_folder(tmp_path, processor=False)
    path = _edit_config(folder, id2label={str(i): f"LABEL_{i}" for i in range(3)})
    model, _ = vitjax.load_checkpoint(path)
    assert model.config.class_names is None  # "LABEL_0"... say nothing: 'class 0' is shown, not "LABEL_0"


def test_an_interpolation_vitjax_does_not_compute_is_said(tmp_path):
    _, folder = timm_folder(tmp_path, interpolation="lanczos")
    with pytest.warns(VitjaxWarning, match="'lanczos', which vitjax does not compute"):
        model, _ = vitjax.load_checkpoint(folder / "model.safetensors")
    assert model.config.input_resize == "google"
