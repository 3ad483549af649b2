import io
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest
from scipy import ndimage

import vitjax
from vitjax.checkpoints.load import (
    POSEMB,
    CheckpointError,
    infer_config,
    rename_legacy,
)
from vitjax.checkpoints.npz import load_npz
from vitjax.checkpoints.posemb import resample_posemb
from vitjax.checkpoints.synthetic import random_checkpoint, save_npz


def _write(tmp_path, flat, name="ckpt.npz"):
    return save_npz(flat, tmp_path / name)


@pytest.mark.parametrize(
    "variant,overrides",
    [
        ("testing", {}),
        ("ViT-B_16", {"image_size": 384}),
        ("ViT-B_32", {"representation_size": 768, "num_classes": 21843}),
        ("ViT-S_16", {"num_classes": None}),
        ("R50+ViT-B_16", {"image_size": 384}),
        ("testing", {"classifier": "gap"}),
    ],
)
def test_infer_config_from_keys_and_shapes(variant, overrides):
    config = vitjax.get_config(variant, **overrides)
    flat = random_checkpoint(config)
    assert infer_config(flat) == config


def test_infer_config_of_fine_tuned_384_file(make_checkpoint):
    model, _ = vitjax.load_checkpoint(make_checkpoint("testing", image_size=384))
    assert model.config.image_size == (384, 384)
    assert model.config.grid == (24, 24)


def test_modern_linen_names_are_renamed():
    config = vitjax.get_config("testing", num_layers=2)
    flat = random_checkpoint(config)
    modern = {}
    for k, v in flat.items():
        k = k.replace("MultiHeadDotProductAttention_1", "MultiHeadDotProductAttention_0")
        k = k.replace("LayerNorm_2", "LayerNorm_1").replace("MlpBlock_3", "MlpBlock_0")
        modern[k] = v
    assert set(modern) != set(flat)
    renamed = rename_legacy(modern)
    assert set(renamed) == set(flat)
    for k in flat:
        np.testing.assert_array_equal(renamed[k], flat[k])


def test_old_groupnorm_shapes_are_squeezed(tmp_path):
    config = vitjax.get_config("R50+ViT-B_16", resnet_layers=(1, 1), num_layers=1, hidden_size=64,
                               mlp_dim=64, num_heads=2)
    flat = random_checkpoint(config)
    old = {k: (v.reshape(1, 1, 1, -1) if "/gn" in "/" + k and v.ndim == 1 else v) for k, v in flat.items()}
    assert old["gn_root/scale"].shape == (1, 1, 1, 64)
    model, params = vitjax.load_checkpoint(_write(tmp_path, old))
    assert params["gn_root"]["scale"].shape == (64,)
    assert model.config.resnet_layers == (1, 1)


def test_loaded_params_equal_file(tiny_checkpoint):
    _, params = vitjax.load_checkpoint(tiny_checkpoint)
    with np.load(tiny_checkpoint) as f:
        np.testing.assert_array_equal(
            np.asarray(params["Transformer"]["encoderblock_0"]["MlpBlock_3"]["Dense_0"]["kernel"]),
            f["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"],
        )
        np.testing.assert_array_equal(np.asarray(params["cls"]), f["cls"])


# --- position-embedding resampling -------------------------------------------------------


def test_resample_identity_when_sizes_match(rng):
    pe = rng.standard_normal((1, 1 + 14 * 14, 8)).astype(np.float32)
    np.testing.assert_array_equal(resample_posemb(pe, (14, 14)), pe)


def test_resample_equals_scipy_zoom_on_known_grid(rng):
    g, d = 7, 5
    pe = rng.standard_normal((1, 1 + g * g, d)).astype(np.float32)
    out = resample_posemb(pe, (12, 12))
    want = ndimage.zoom(pe[0, 1:].reshape(g, g, d), (12 / 7, 12 / 7, 1), order=1)
    np.testing.assert_array_equal(out[0, 0], pe[0, 0])  # class-token slot kept apart
    np.testing.assert_allclose(out[0, 1:].reshape(12, 12, d), want, rtol=0, atol=0)
    # corners of a linear zoom are the original corners
    np.testing.assert_allclose(out[0, 1:].reshape(12, 12, d)[-1, -1], pe[0, -1], atol=1e-6)


def test_resample_linear_ramp_stays_linear():
    g = 4
    ramp = np.arange(g, dtype=np.float32)
    grid = (ramp[:, None] + 10 * ramp[None, :])[..., None]  # [g, g, 1]
    pe = np.concatenate([np.zeros((1, 1, 1), np.float32), grid.reshape(1, g * g, 1)], axis=1)
    out = resample_posemb(pe, (7, 10))[0, 1:].reshape(7, 10)
    np.testing.assert_allclose(out[:, 0], np.linspace(0, 3, 7), atol=1e-5)
    np.testing.assert_allclose(out[0, :], np.linspace(0, 30, 10), atol=1e-4)


@pytest.mark.parametrize("start,target", [(224, 384), (384, 224)])
def test_round_trip_resolutions_load_and_run(make_checkpoint, rng, start, target):
    path = make_checkpoint("testing", image_size=start)
    model, params = vitjax.load_checkpoint(path, image_size=target)
    assert model.config.image_size == (target, target)
    n = 1 + (target // 16) ** 2
    assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, n, 10)
    x = rng.uniform(-1, 1, (1, target, target, 3)).astype(np.float32)
    logits, attention = vitjax.forward(model, params, x)
    assert logits.shape == (1, 1000) and attention.shape == (1, 1, 2, n, n)
    assert np.isfinite(np.asarray(logits)).all()


def test_non_square_target(tiny_checkpoint, rng):
    model, params = vitjax.load_checkpoint(tiny_checkpoint, image_size=(192, 320))
    assert model.config.grid == (12, 20)
    x = rng.uniform(-1, 1, (2, 192, 320, 3)).astype(np.float32)
    _, attention = vitjax.forward(model, params, x)
    assert attention.shape == (2, 1, 2, 241, 241)


# --- bad checkpoints ---------------------------------------------------------------------


def _one_line(exc_info, *needles):
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, msg
    assert isinstance(exc_info.value, ValueError)
    return msg


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError) as e:
        vitjax.load_checkpoint(tmp_path / "nope.npz")
    _one_line(e, "nope.npz", "no such file")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.npz"
    p.write_bytes(b"")
    with pytest.raises(CheckpointError) as e:
        vitjax.load_checkpoint(p)
    _one_line(e, "empty.npz", "empty")


def test_non_npz_file(tmp_path):
    p = tmp_path / "notes.npz"
    p.write_text("hello, I am text\n" * 50)
    with pytest.raises(CheckpointError) as e:
        vitjax.load_checkpoint(p)
    _one_line(e, "notes.npz", "not an .npz archive")


def test_random_zip(tmp_path):
    p = tmp_path / "random.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "not arrays")
    with pytest.raises(CheckpointError) as e:
        vitjax.load_checkpoint(p)
    _one_line(e, "random.zip", "readme.txt")


def test_truncated_file(tmp_path, tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    p = tmp_path / "truncated.npz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as e:
        vitjax.load_checkpoint(p)
    _one_line(e, "truncated.npz")


def test_corrupt_member(tmp_path, tiny_checkpoint):
    # zip directory intact, one member's bytes damaged: must still be one clean line
    p = tmp_path / "corrupt.npz"
    buf = io.BytesIO()
    with zipfile.ZipFile(tiny_checkpoint) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "cls.npy":
                data = data[:20]
            dst.writestr(info, data)
    p.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError) as e:
        vitjax.load_checkpoint(p)
    _one_line(e, "corrupt.npz", "cls")


def test_object_array_is_refused_not_unpickled(tmp_path):
    flat = random_checkpoint(vitjax.get_config("testing"))
    flat["cls"] = np.array([{"evil": 1}], dtype=object)
    p = tmp_path / "pickled.npz"
    np.savez(p, **flat)  # allow_pickle applies on load; savez writes the pickle
    with pytest.raises(CheckpointError) as e:
        vitjax.load_checkpoint(p)
    _one_line(e, "pickled.npz", "'cls'", "pickle")


def test_pytorch_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    p = tmp_path / "model.pth"
    torch.save({"patch_embed.proj.weight": torch.zeros(3, 3)}, p)
    with pytest.raises(CheckpointError) as e:
        vitjax.load_checkpoint(p)
    _one_line(e, "model.pth", "PyTorch")


def test_missing_key(tmp_path):
    flat = random_checkpoint(vitjax.get_config("testing"))
    del flat["Transformer/encoderblock_0/MlpBlock_3/Dense_1/bias"]
    with pytest.raises(CheckpointError) as e:
        vitjax.load_checkpoint(_write(tmp_path, flat))
    _one_line(e, "missing 1 key", "Transformer/encoderblock_0/MlpBlock_3/Dense_1/bias (10)")


def test_missing_required_key_for_inference(tmp_path):
    flat = random_checkpoint(vitjax.get_config("testing"))
    del flat[POSEMB]
    with pytest.raises(CheckpointError) as e:
        vitjax.load_checkpoint(_write(tmp_path, flat))
    _one_line(e, POSEMB, "missing")


def test_extra_key(tmp_path):
    flat = random_checkpoint(vitjax.get_config("testing"))
    flat["Transformer/encoderblock_0/Surprise/kernel"] = np.zeros((3, 4), np.float32)
    with pytest.raises(CheckpointError) as e:
        vitjax.load_checkpoint(_write(tmp_path, flat))
    _one_line(e, "extra 1 key", "Transformer/encoderblock_0/Surprise/kernel (3, 4)")


def test_wrong_shape_names_both_shapes(tmp_path):
    flat = random_checkpoint(vitjax.get_config("testing"))
    flat["Transformer/encoderblock_0/MlpBlock_3/Dense_1/kernel"] = np.zeros((12, 10), np.float32)
    with pytest.raises(CheckpointError) as e:
        vitjax.load_checkpoint(_write(tmp_path, flat))
    _one_line(e, "1 wrong shape", "Transformer/encoderblock_0/MlpBlock_3/Dense_1/kernel is (12, 10) in the file",
              "model expects (10, 10)")


def test_string_array_rejected(tmp_path):
    flat = random_checkpoint(vitjax.get_config("testing"))
    flat["note"] = np.array(["hello"])
    with pytest.raises(CheckpointError) as e:
        load_npz(_write(tmp_path, flat))
    _one_line(e, "'note'")


def test_load_npz_never_unpickles(tmp_path, monkeypatch):
    import pickle

    calls = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: calls.append(a))
    flat = {"cls": np.array([object()], dtype=object)}
    p = tmp_path / "obj.npz"
    np.savez(p, **flat)
    with pytest.raises(CheckpointError):
        load_npz(p)
    assert calls == []


# --- training wrappers, corrupt values, zero heads, names (issue #13 faults 4-7) ----------------


@pytest.mark.parametrize("prefix", ["opt/target/", "params/"])
def test_training_wrappers_are_stripped(tmp_path, tiny_checkpoint, prefix):
    flat = random_checkpoint(vitjax.get_config("testing"))
    wrapped = {prefix + k: v for k, v in flat.items()}
    wrapped["opt/state/step"] = np.zeros((), np.float32)  # optimizer state beside the model is dropped
    model, params = vitjax.load_checkpoint(_write(tmp_path, wrapped))
    _, ref = vitjax.load_checkpoint(_write(tmp_path, flat, "plain.npz"))
    np.testing.assert_array_equal(np.asarray(params["cls"]), np.asarray(ref["cls"]))


def test_unknown_wrapper_names_the_prefix_seen(tmp_path):
    flat = {"model/" + k: v for k, v in random_checkpoint(vitjax.get_config("testing")).items()}
    with pytest.raises(CheckpointError) as e:
        vitjax.load_checkpoint(_write(tmp_path, flat))
    _one_line(e, "ckpt.npz", "top-level names seen: model/", "opt/target/")


@pytest.mark.parametrize("bad,what", [(np.nan, "NaN"), (np.inf, "NaN or inf")])
def test_non_finite_arrays_are_refused(tmp_path, bad, what):
    flat = random_checkpoint(vitjax.get_config("testing"))
    key = "Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"
    flat[key] = np.full_like(flat[key], bad)
    with pytest.raises(CheckpointError) as e:
        vitjax.load_checkpoint(_write(tmp_path, flat))
    _one_line(e, key, "non-finite", what)
    flat[key][:] = 0
    flat[key][3, 4] = bad  # one bad value is enough
    with pytest.raises(CheckpointError, match="1 non-finite"):
        vitjax.load_checkpoint(_write(tmp_path, flat, "one.npz"))


def test_integer_arrays_are_refused(tmp_path):
    flat = random_checkpoint(vitjax.get_config("testing"))
    flat["cls"] = np.zeros(flat["cls"].shape, np.int32)
    with pytest.raises(CheckpointError) as e:
        vitjax.load_checkpoint(_write(tmp_path, flat))
    _one_line(e, "'cls'", "int32", "floating point")


def test_zero_head_loads_with_one_warning_naming_the_file(tmp_path, capsys):
    import warnings

    from vitjax.checkpoints.load import head_is_zero
    from vitjax.errors import VitjaxWarning

    flat = random_checkpoint(vitjax.get_config("testing"))
    flat["head/kernel"][:] = 0
    flat["head/bias"][:] = 0
    path = _write(tmp_path, flat, "i21k.npz")
    with pytest.warns(VitjaxWarning) as caught:
        model, params = vitjax.load_checkpoint(path)
    assert head_is_zero(params)
    assert len(caught) == 1 and str(path) in str(caught[0].message) and "no trained head" in str(caught[0].message)
    assert capsys.readouterr().err == ""  # the library warns; it never prints
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise here
        vitjax.load_checkpoint(path)  # once per file
        _, trained = vitjax.load_checkpoint(_write(tmp_path, random_checkpoint(vitjax.get_config("testing")),
                                                   "ok.npz"))
    assert not head_is_zero(trained)


def test_known_name_resolves_in_the_library(tmp_path, monkeypatch):
    monkeypatch.setenv("VITJAX_CHECKPOINT_DIR", str(tmp_path))
    dest = tmp_path / "imagenet21k+imagenet2012" / "ViT-B_16-224.npz"
    dest.parent.mkdir()
    save_npz(random_checkpoint(vitjax.get_config("testing")), dest)  # already "downloaded": no network
    model, _ = vitjax.load_checkpoint("ViT-B_16-224")
    assert model.config.hidden_size == 10
    with pytest.raises(CheckpointError) as e:
        vitjax.load_checkpoint("ViT-Q_99")
    _one_line(e, "ViT-Q_99", "no such file")


def test_torch_pickles_are_refused_with_how_to_save_safetensors(tmp_path):
    for name in ("model.bin", "model.pt", "model.pth"):
        p = tmp_path / name
        p.write_bytes(b"\x80\x02}q\x00.")
        with pytest.raises(CheckpointError) as e:
            vitjax.load_checkpoint(p)
        _one_line(e, name, "never unpickles", "safetensors.torch.save_file")


@pytest.mark.parametrize("name", ["base.bin", "base.pth", "model.pt", "weights.ckpt", "base.pkl"])
def test_an_npz_under_a_pytorch_name_is_read_by_its_bytes_not_called_a_pickle(tmp_path, name):
    """Before: refused as "a PyTorch pickle" by its suffix alone (fuzz case npz-renamed-bin), which it is not."""
    flat = random_checkpoint(vitjax.get_config("testing"))
    npz = _write(tmp_path, flat)
    renamed = tmp_path / name
    renamed.write_bytes(Path(npz).read_bytes())
    model, params = vitjax.load_checkpoint(renamed)
    want_model, want = vitjax.load_checkpoint(npz)
    assert model.config == want_model.config
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)


def _torch_zip(path):
    """The layout of ``torch.save`` (a zip whose ``data.pkl`` is the pickle), written without torch."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("archive/version", b"3\n")
        z.writestr("archive/data/0", b"\x00" * 16)
    return path


@pytest.mark.parametrize("name", ["model.bin", "model.npz", "model", "model.data"])
def test_a_pickle_or_torch_archive_is_refused_as_one_whatever_its_name(tmp_path, name):
    for make in (_torch_zip, lambda p: (p.write_bytes(b"\x80\x02}q\x00."), p)[1]):
        p = make(tmp_path / name)
        with pytest.raises(CheckpointError) as e:
            vitjax.load_checkpoint(p)
        _one_line(e, name, "a PyTorch pickle", "never unpickles")


@pytest.mark.parametrize("content, needle", [
    (b"hello\n" * 50, "neither a pickle, a zip archive nor a .safetensors file"),
    (b"\x93NUMPY\x01\x00" + b" " * 60, "a NumPy .npy array"),
    (None, "a zip archive ('readme.txt')"),
])
def test_a_file_named_like_pytorch_that_is_no_pickle_is_not_called_one(tmp_path, content, needle):
    p = tmp_path / "model.bin"
    if content is None:
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("readme.txt", b"hello")
    else:
        p.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        vitjax.load_checkpoint(p)
    msg = _one_line(e, "model.bin", "named like a PyTorch file", needle)
    assert "pickle, which" not in msg and "never unpickles" not in msg
