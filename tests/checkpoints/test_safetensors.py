"""timm and Hugging Face .safetensors: parity on random weights, resamplers, strictness.

Parity tolerances are those of the parity issue (#2), float32 throughout: outputs (logits, or
class-token features for headless models) max |d| <= 1e-4 * max(1, max |ref|); first layer's
attention <= 1e-5; every layer's attention <= 1e-4. Float32 rounding (eps = 1.2e-7) through dot
products of length <= 3072 over <= 4 blocks stays about two orders of magnitude below them, while a
wrong transpose, head split, LayerScale, GELU flavour or position resampling moves them by > 1e-3.
The weights are drawn at realistic scales (attention logits with standard deviation ~2, as
vitjax.checkpoints.synthetic does), so the attention is peaked and errors cannot hide in a uniform softmax.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import vitjax
from vitjax.checkpoints.posemb import resample_posemb_bicubic, resample_posemb_timm
from vitjax.checkpoints.safetensors import (
    IMAGENET_MEAN,
    load_safetensors,
    read_safetensors,
)
from vitjax.errors import CheckpointError

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
from safetensors.torch import save_file  # noqa: E402
from support.helpers import EPS32  # noqa: E402
from support.reference import attention_hooks  # noqa: E402
from support.reference import nchw as _nchw  # noqa: E402
from support.reference import photo_batch as _photo_batch  # noqa: E402
from support.reference import randomize as _randomize  # noqa: E402

# --- helpers ----------------------------------------------------------------------------------


def _timm_run(model, images):
    """(output [B, C] or features [B, D], attention [B, L, H, N, N]) of a timm ViT."""
    with attention_hooks(model) as captured, torch.no_grad():
        out = model(_nchw(images)).numpy()
        attention = torch.stack(captured, dim=1).numpy()
    return out, attention


def _hf_run(model, images, **kw):
    with torch.no_grad():
        o = model(_nchw(images), output_attentions=True, **kw)
    out = o.logits if hasattr(o, "logits") else o.pooler_output
    return out.numpy(), np.stack([a.numpy() for a in o.attentions], axis=1)


def _compare(path, ref_out, ref_attention, images, *, image_size=None, first_layer_tol=1e-5):
    model, params = vitjax.load_checkpoint(path, image_size=image_size)  # matmul_precision left at its default
    out, attention = (np.asarray(a) for a in vitjax.forward(model, params, images))
    assert out.shape == ref_out.shape and attention.shape == ref_attention.shape
    out_err = float(np.abs(out - ref_out).max())
    assert out_err <= 1e-4 * max(1.0, float(np.abs(ref_out).max())), out_err
    per_layer = np.abs(attention - ref_attention).max(axis=(0, 2, 3, 4))
    assert per_layer[0] <= first_layer_tol and per_layer.max() <= 1e-4, per_layer
    assert ref_attention.max() > 0.3  # peaked: the bounds above are tight relative to the values
    return model, out_err, per_layer


def _save_timm(model, path):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


# --- parity with timm -------------------------------------------------------------------------


def test_timm_dinov2_reg4_518_file_runs_at_224_like_timm(tmp_path, rng):
    from timm.models.vision_transformer import checkpoint_filter_fn

    src = _randomize(timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, depth=2, img_size=518))
    path = _save_timm(src, tmp_path / "dinov2_reg4.safetensors")
    ref = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, depth=2, img_size=224).eval()
    ref.load_state_dict(checkpoint_filter_fn(src.state_dict(), ref))  # timm's own resize of the 37x37 grid
    images = _photo_batch(224, rng)
    model, _, _ = _compare(path, *_timm_run(ref, images), images, image_size=224)
    c = model.config
    assert (c.num_registers, c.layer_scale, c.num_heads, c.patch_size, c.grid) == (4, True, 6, (14, 14), (16, 16))
    assert (c.posemb_resize, c.gelu_approximate, c.num_classes, c.pixel_mean) == ("timm", False, None, IMAGENET_MEAN)


@pytest.mark.parametrize("arch", ["deit_small_patch16_224", "vit_base_patch16_224"])
def test_timm_classifiers_match_timm(tmp_path, rng, arch):
    from timm.models._hub import save_for_hf

    src = _randomize(timm.create_model(arch, pretrained=False, depth=2), seed=1)
    save_for_hf(src, tmp_path, safe_serialization=True)  # model.safetensors + timm's config.json, as on the Hub
    images = _photo_batch(224, rng)
    model, _, _ = _compare(tmp_path / "model.safetensors", *_timm_run(src, images), images)
    c = model.config
    assert (c.num_classes, c.source, c.num_registers, c.layer_scale) == (1000, "timm", 0, False)
    assert c.pixel_mean == tuple(src.pretrained_cfg["mean"])  # from timm's config.json beside the file


def test_timm_registers_with_positions_are_folded_into_the_tokens(tmp_path, rng):
    from timm.models.vision_transformer import VisionTransformer

    src = _randomize(VisionTransformer(img_size=64, patch_size=16, embed_dim=128, depth=2, num_heads=2,
                                       reg_tokens=2, no_embed_class=False, num_classes=7), seed=2)
    assert src.pos_embed.shape[1] == 1 + 2 + 16
    path = _save_timm(src, tmp_path / "reg_pos.safetensors")
    flat, info = read_safetensors(path)
    assert flat["Transformer/posembed_input/pos_embedding"].shape == (1, 17, 128) and info["num_registers"] == 2
    images = _photo_batch(64, rng)
    _compare(path, *_timm_run(src, images), images)


# --- parity with Hugging Face -----------------------------------------------------------------


def _hf_save(model, folder):
    model.save_pretrained(folder)
    return folder / "model.safetensors"


def test_hf_vit_for_image_classification(tmp_path, rng):
    cfg = transformers.ViTConfig(hidden_size=192, num_hidden_layers=2, num_attention_heads=3, intermediate_size=768,
                                 image_size=224, patch_size=16, num_labels=10, attn_implementation="eager")
    src = _randomize(transformers.ViTForImageClassification(cfg), seed=3)
    path = _hf_save(src, tmp_path)
    images = _photo_batch(224, rng)
    model, _, _ = _compare(path, *_hf_run(src, images), images)
    c = model.config
    assert (c.layer_norm_eps, c.pixel_mean, c.posemb_resize, c.num_classes) == (1e-12, (0.5,) * 3, "bicubic", 10)
    # at another resolution, HF's interpolate_pos_encoding (bicubic, no antialias) and vitjax's resize agree
    small = _photo_batch(160, rng)
    _compare(path, *_hf_run(src, small, interpolate_pos_encoding=True), small, image_size=160)


def test_hf_vit_model_pooler_is_the_representation_layer_and_missing_qkv_bias_is_zero(tmp_path, rng):
    cfg = transformers.ViTConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                                 image_size=64, patch_size=16, qkv_bias=False, attn_implementation="eager")
    src = _randomize(transformers.ViTModel(cfg), seed=4)
    path = _hf_save(src, tmp_path)
    images = _photo_batch(64, rng)
    model, _, _ = _compare(path, *_hf_run(src, images), images)  # pooler_output = tanh(dense(class token))
    assert model.config.representation_size == 128 and model.config.num_classes is None


@pytest.mark.parametrize("registers", [0, 4])
def test_hf_dinov2_518_file_runs_at_224_like_transformers(tmp_path, rng, registers):
    kw = dict(hidden_size=192, num_hidden_layers=2, num_attention_heads=3, mlp_ratio=4, image_size=518,
              patch_size=14, attn_implementation="eager")
    if registers:
        src = transformers.Dinov2WithRegistersModel(
            transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **kw))
    else:
        src = transformers.Dinov2Model(transformers.Dinov2Config(**kw))
    path = _hf_save(_randomize(src, seed=5 + registers), tmp_path)
    images = _photo_batch(224, rng)
    model, _, _ = _compare(path, *_hf_run(src, images), images, image_size=224)
    c = model.config
    assert (c.num_registers, c.layer_scale, c.grid, c.num_classes) == (registers, True, (16, 16), None)
    # Dinov2Model resizes without antialiasing; Dinov2WithRegisters calls timm's antialiased bicubic
    assert c.posemb_resize == ("timm" if registers else "bicubic") and c.pixel_mean == IMAGENET_MEAN


# --- position-grid resamplers against torch ---------------------------------------------------

SIZES = [((37, 37), (16, 16)), ((16, 16), (37, 37)), ((14, 14), (24, 24)), ((24, 24), (7, 7)),
         ((5, 9), (13, 4)), ((3, 3), (1, 1)), ((37, 37), (36, 38))]


@pytest.mark.parametrize("old,new", SIZES)
@pytest.mark.parametrize("antialias", [True, False])
def test_resamplers_equal_torch_interpolate(rng, old, new, antialias):
    grid = rng.normal(size=(*old, 8)).astype(np.float32)
    ours = (resample_posemb_timm if antialias else resample_posemb_bicubic)(grid, new)
    x = torch.from_numpy(grid).permute(2, 0, 1)[None]

    def ref(dtype):
        y = torch.nn.functional.interpolate(x.to(dtype), size=new, mode="bicubic", align_corners=False,
                                            antialias=antialias)
        return y[0].permute(1, 2, 0).double().numpy()

    scale = float(np.abs(grid).max())
    assert ours.shape == (*new, 8) and ours.dtype == np.float32
    # exact arithmetic (torch in float64): ours is built in float64 and rounded once to float32
    assert np.abs(ours - ref(torch.float64)).max() <= 2 * EPS32 * scale
    # torch's float32 kernel computes the cubic coefficients in float32 (cancellation in the
    # polynomial) and sums up to 16 (4x4 taps, more when antialiasing a reduction) products per value
    assert np.abs(ours - ref(torch.float32)).max() <= 64 * EPS32 * scale
    # and the two modes really differ (the test would catch a swap)
    if old != new:
        other = (resample_posemb_bicubic if antialias else resample_posemb_timm)(grid, new)
        assert np.abs(other - ours).max() > 1e3 * EPS32 * scale


def test_resamplers_keep_an_unchanged_grid_and_refuse_bad_shapes(rng):
    grid = rng.normal(size=(4, 5, 3)).astype(np.float32)
    assert np.array_equal(resample_posemb_timm(grid, (4, 5)), grid)
    with pytest.raises(ValueError, match="expected"):
        resample_posemb_bicubic(grid[0], (2, 2))
    with pytest.raises(ValueError, match="empty"):
        resample_posemb_timm(grid, (0, 3))


# --- reading, conversion details and strictness -----------------------------------------------


def _small_timm(**kw):
    from timm.models.vision_transformer import VisionTransformer

    args = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=1, num_classes=5)
    return _randomize(VisionTransformer(**{**args, **kw}))


def _write(tmp_path, sd, name="m.safetensors", metadata=None):
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=metadata)
    return path


def _one_line(info) -> str:
    text = str(info.value)
    assert "\n" not in text
    return text


def test_timm_layout_details(tmp_path):
    src = _small_timm(reg_tokens=3, no_embed_class=True, init_values=0.1)
    sd = src.state_dict()
    flat, info = read_safetensors(_write(tmp_path, sd))
    d, q = 64, "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/"
    np.testing.assert_array_equal(flat["embedding/kernel"], sd["patch_embed.proj.weight"].numpy().transpose(2, 3, 1, 0))
    pos = flat["Transformer/posembed_input/pos_embedding"]
    assert pos.shape == (1, 17, d) and not pos[0, 0].any()  # no_embed_class: a zero class slot
    np.testing.assert_array_equal(pos[:, 1:], sd["pos_embed"].numpy())
    np.testing.assert_array_equal(flat["reg"], sd["reg_token"].numpy())
    qkv = sd["blocks.1.attn.qkv.weight"].numpy()
    np.testing.assert_array_equal(flat[q + "key/kernel"], qkv[d:2 * d].T.reshape(d, 1, d))
    np.testing.assert_array_equal(flat[q + "out/kernel"], sd["blocks.1.attn.proj.weight"].numpy().T.reshape(1, d, d))
    np.testing.assert_array_equal(flat["Transformer/encoderblock_1/ls2/scale"], sd["blocks.1.ls2.gamma"].numpy())
    assert info["num_heads"] == 1 and info["num_registers"] == 3 and info["layer_scale"] is True
    assert info["pixel_mean"] == IMAGENET_MEAN  # LayerScale (DINOv2, DeiT-III) without a config.json


def test_missing_extra_and_misshaped_keys_are_named_in_one_line(tmp_path):
    sd = _small_timm().state_dict()
    missing = {k: v for k, v in sd.items() if k != "blocks.1.norm2.bias"}
    with pytest.raises(CheckpointError) as info:
        vitjax.load_checkpoint(_write(tmp_path, missing, "missing.safetensors"))
    assert "'blocks.1.norm2.bias' (64) is missing" in _one_line(info).replace("(64,)", "(64)")
    extra = {**sd, "blocks.0.attn.rel_pos": torch.zeros(3, 4)}
    with pytest.raises(CheckpointError) as info:
        read_safetensors(_write(tmp_path, extra, "extra.safetensors"))
    assert "blocks.0.attn.rel_pos (3, 4)" in _one_line(info) and "unrecognised" in str(info.value)
    wrong = {**sd, "blocks.1.mlp.fc2.weight": sd["blocks.1.mlp.fc2.weight"].T}
    with pytest.raises(CheckpointError) as info:
        read_safetensors(_write(tmp_path, wrong, "wrong.safetensors"))
    assert "'blocks.1.mlp.fc2.weight' has shape (256, 64), expected (64, 256)" in _one_line(info)


def test_hf_misshaped_and_mixed_names_are_refused(tmp_path):
    cfg = transformers.Dinov2Config(hidden_size=64, num_hidden_layers=1, num_attention_heads=1, mlp_ratio=2,
                                    image_size=28, patch_size=14)
    sd = transformers.Dinov2Model(cfg).state_dict()  # transformers-5 module names (q_proj ...)
    flat, info = read_safetensors(_write(tmp_path, sd, "live.safetensors"))
    assert "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel" in flat and "mask" not in str(flat)
    bad = {**sd, "encoder.layer.0.attention.k_proj.weight": torch.zeros(64, 32)}
    with pytest.raises(CheckpointError) as e:
        read_safetensors(_write(tmp_path, bad, "bad.safetensors"))
    assert "'encoder.layer.0.attention.k_proj.weight' has shape (64, 32), expected (64, 64)" in _one_line(e)
    mixed = {**sd, "encoder.layer.0.attention.attention.query.weight": torch.zeros(64, 64)}
    with pytest.raises(CheckpointError, match="same weight"):
        read_safetensors(_write(tmp_path, mixed, "mixed.safetensors"))


@pytest.mark.parametrize("kind,expect", [
    ("fc_norm", "fc_norm"), ("distilled", "distillation"), ("swiglu", "SwiGLU"), ("dinov2_classifier", "2D inputs"),
])
def test_features_the_vit_cannot_compute_are_refused_by_name(tmp_path, kind, expect):
    if kind == "fc_norm":
        sd = _small_timm(global_pool="avg").state_dict()
    elif kind == "distilled":
        from timm.models.deit import VisionTransformerDistilled

        sd = VisionTransformerDistilled(img_size=32, patch_size=8, embed_dim=64, depth=1, num_heads=1).state_dict()
    else:
        cfg = transformers.Dinov2Config(hidden_size=64, num_hidden_layers=1, num_attention_heads=1, image_size=28,
                                        patch_size=14, use_swiglu_ffn=kind == "swiglu", num_labels=3)
        cls = transformers.Dinov2Model if kind == "swiglu" else transformers.Dinov2ForImageClassification
        sd = cls(cfg).state_dict()
    with pytest.raises(CheckpointError) as info:
        read_safetensors(_write(tmp_path, sd))
    assert expect in _one_line(info)


def test_torch_pickles_are_refused_with_the_way_to_convert(tmp_path):
    sd = _small_timm().state_dict()
    for name in ("w.pth", "w.safetensors"):  # by extension, and by content under a misleading name
        torch.save(sd, tmp_path / name)
        with pytest.raises(CheckpointError) as info:
            vitjax.load_checkpoint(tmp_path / name)
        assert "safetensors.torch.save_file(model.state_dict()" in _one_line(info)
    (tmp_path / "cut.safetensors").write_bytes(_write(tmp_path, sd).read_bytes()[:500])
    with pytest.raises(CheckpointError) as info:
        read_safetensors(tmp_path / "cut.safetensors")
    assert "cut.safetensors" in _one_line(info)


def test_bfloat16_and_float16_files_read_as_float32(tmp_path):
    sd = _small_timm().state_dict()
    half = {k: v.to(torch.bfloat16 if i % 2 else torch.float16) for i, (k, v) in enumerate(sd.items())}
    raw, _ = load_safetensors(_write(tmp_path, half))
    for k, v in half.items():
        assert raw[k].dtype == np.float32 and np.array_equal(raw[k], v.float().numpy()), k


def test_head_count_rules(tmp_path):
    sd = _small_timm(embed_dim=96, num_heads=3).state_dict()  # 96 is not a multiple of 64
    path = _write(tmp_path, sd)
    with pytest.raises(CheckpointError, match="pass num_heads") as info:
        read_safetensors(path)
    _one_line(info)
    assert read_safetensors(path, num_heads=3)[1]["num_heads"] == 3
    meta_path = _write(tmp_path, sd, "meta.safetensors", metadata={"vitjax.num_heads": "3", "vitjax.source": "lab"})
    flat, info = read_safetensors(meta_path)
    assert info["num_heads"] == 3 and info["source"] == "lab"
    assert flat["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"].shape == (96, 3, 32)
    big = {k: v for k, v in _small_timm(embed_dim=1280, depth=1, num_heads=16).state_dict().items()}
    assert read_safetensors(_write(tmp_path, big, "h.safetensors"))[1]["num_heads"] == 16  # ViT-H: 80-wide heads


def test_hf_config_json_beside_the_file_is_used_only_when_it_matches(tmp_path):
    cfg = transformers.ViTConfig(hidden_size=128, num_hidden_layers=1, num_attention_heads=4, intermediate_size=256,
                                 image_size=32, patch_size=16, layer_norm_eps=1e-5, hidden_act="gelu_pytorch_tanh")
    path = _hf_save(transformers.ViTModel(cfg), tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.1, 0.2, 0.3],
                                                                   "image_std": [0.4, 0.5, 0.6]}))
    info = read_safetensors(path)[1]
    assert (info["num_heads"], info["layer_norm_eps"], info["gelu_approximate"]) == (4, 1e-5, True)
    assert info["pixel_mean"] == (0.1, 0.2, 0.3) and info["pixel_std"] == (0.4, 0.5, 0.6)
    (tmp_path / "config.json").write_text(json.dumps({**cfg.to_dict(), "hidden_size": 64}))  # another model's
    info = read_safetensors(path)[1]
    assert (info["num_heads"], info["layer_norm_eps"], info["pixel_mean"]) == (2, 1e-12, (0.5,) * 3)


# --- recognising the file by its structure (issue #17, fault 4) -------------------------------------------------


def _write_with_header_length(path, tensors, low, mask, metadata=None):
    """A valid .safetensors whose 8-byte header length ``n`` has ``n & mask == low`` (the smallest such ``n``
    that holds the JSON, padded with spaces as the safetensors library pads it). F32 tensors, in key order."""
    entries, blobs, offset = ({"__metadata__": metadata} if metadata else {}), [], 0
    for key in sorted(tensors):
        a = np.ascontiguousarray(tensors[key], dtype="<f4")
        entries[key] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        blobs.append(a.tobytes())
        offset += a.nbytes
    text = json.dumps(entries, separators=(",", ":")).encode()
    n = low + max(0, -(-(len(text) - low) // (mask + 1))) * (mask + 1)
    assert n >= len(text) and n & mask == low
    path.write_bytes(n.to_bytes(8, "little") + text + b" " * (n - len(text)) + b"".join(blobs))
    return path


@pytest.mark.parametrize("low,mask", [(0x80, 0xFF), (0x4B50, 0xFFFF)], ids=["0x80", "PK"])
def test_header_lengths_that_look_like_pickles_or_zips_are_read(tmp_path, rng, low, mask):
    from safetensors import safe_open

    src = _small_timm()
    sd = {k: v.numpy() for k, v in src.state_dict().items()}
    path = _write_with_header_length(tmp_path / "m.safetensors", sd, low, mask, metadata={"format": "pt"})
    first = path.read_bytes()[:2]
    assert first[0] == 0x80 if low == 0x80 else first == b"PK"
    with safe_open(str(path), "np") as f:  # the reference reader calls it valid
        assert set(f.keys()) == set(sd)
    for name in ("m.safetensors", "m.bin"):  # by its structure, whatever the name says
        if name != path.name:
            (tmp_path / name).write_bytes(path.read_bytes())
        raw, meta = load_safetensors(path)
        assert meta == {"format": "pt"} and all(np.array_equal(raw[k], v) for k, v in sd.items())
        images = _photo_batch(32, rng)
        _compare(tmp_path / name, *_timm_run(src, images), images)


def _cut_header(tmp_path, edit, name="bad.safetensors"):
    """A real file whose JSON header is replaced by ``edit(header_dict)`` (bytes or dict), length adjusted."""
    good = _write(tmp_path, _small_timm().state_dict(), "good.safetensors").read_bytes()
    n = int.from_bytes(good[:8], "little")
    header, data = json.loads(good[8:8 + n]), good[8 + n:]
    new = edit(header)
    text = new if isinstance(new, bytes) else json.dumps(new).encode()
    path = tmp_path / name
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)
    return path


def _first(header):
    return next(k for k in header if k != "__metadata__")


@pytest.mark.parametrize("edit,needle", [
    (lambda h: b"{" + json.dumps(h).encode()[1:-1] + b",}", "not valid JSON"),
    (lambda h: {**h, _first(h): {**h[_first(h)], "data_offsets": [0, 10**9]}}, "truncated"),
    (lambda h: {**h, _first(h): {**h[_first(h)], "shape": [2, "3"]}}, "not a list of sizes"),
    (lambda h: {**h, _first(h): {**h[_first(h)], "shape": [1, 1, 1]}}, "needs"),
    (lambda h: {**h, "__metadata__": {"format": 3}}, "__metadata__"),
    (lambda h: {**h, _first(h): {"dtype": "F32"}}, "data_offsets"),
])
def test_a_malformed_header_says_so_in_one_line(tmp_path, edit, needle):
    path = _cut_header(tmp_path, edit)
    assert path.read_bytes()[8:9] == b"{"
    for load in (load_safetensors, vitjax.load_checkpoint):
        with pytest.raises(CheckpointError) as info:
            load(path)
        text = _one_line(info)
        assert text.startswith(f"{path}: a malformed safetensors header") and needle in text, text
        assert "PyTorch" not in text


def test_an_npz_or_a_pickle_under_a_safetensors_name_is_named_for_what_it_is(tmp_path):
    from vitjax.checkpoints.synthetic import random_checkpoint, save_npz

    npz = save_npz(random_checkpoint(vitjax.get_config("testing")), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError) as info:
        vitjax.load_checkpoint(npz)
    text = _one_line(info)
    assert "an .npz archive" in text and "PyTorch" not in text, text
    bare = tmp_path / "bare.safetensors"
    torch.save(_small_timm().state_dict(), bare, _use_new_zipfile_serialization=False)
    assert bare.read_bytes()[:1] == b"\x80"
    with pytest.raises(CheckpointError) as info:
        vitjax.load_checkpoint(bare)
    assert "a PyTorch pickle" in _one_line(info)
    text_file = tmp_path / "notes.safetensors"
    text_file.write_text("hello " * 100)
    with pytest.raises(CheckpointError) as info:
        vitjax.load_checkpoint(text_file)
    assert "not a .safetensors file" in _one_line(info) and "does not fit the file" in str(info.value)


# --- dtypes and empty dimensions (issue #17, fault 5) -------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float8_e4m3fn", "float8_e5m2"])
def test_float8_files_are_widened_exactly(tmp_path, rng, dtype):
    src = _small_timm()
    f8 = {k: v.to(getattr(torch, dtype)) for k, v in src.state_dict().items()}
    path = _write(tmp_path, f8)
    raw, _ = load_safetensors(path)
    for k, v in f8.items():  # every float8 value is a float32 value
        assert raw[k].dtype == np.float32 and np.array_equal(raw[k], v.float().numpy()), k
    with torch.no_grad():  # the same model with the rounded weights: vitjax and timm agree on it
        src.load_state_dict({k: v.float() for k, v in f8.items()})
    images = _photo_batch(32, rng)
    out, attention = (np.asarray(a) for a in vitjax.forward(*vitjax.load_checkpoint(path), images))
    ref_out, _ = _timm_run(src, images)
    assert np.abs(out - ref_out).max() <= 1e-4 * max(1.0, float(np.abs(ref_out).max()))


def test_an_unknown_dtype_is_named(tmp_path):
    path = _cut_header(tmp_path, lambda h: {**h, _first(h): {**h[_first(h)], "dtype": "F4"}}, "f4.safetensors")
    with pytest.raises(CheckpointError) as info:
        load_safetensors(path)
    assert "dtype F4, which vitjax does not read" in _one_line(info)


@pytest.mark.parametrize("key,shape", [("patch_embed.proj.weight", (64, 3, 0, 8)),
                                       ("patch_embed.proj.weight", (0, 3, 8, 8)),
                                       ("blocks.0.attn.qkv.weight", (0, 64))])
def test_a_zero_sized_dimension_is_one_line_not_a_division_by_zero(tmp_path, key, shape):
    sd = {**_small_timm().state_dict(), key: torch.zeros(shape)}
    with pytest.raises(CheckpointError) as info:
        vitjax.load_checkpoint(_write(tmp_path, sd))
    text = _one_line(info)
    assert f"'{key}'" in text and "zero-sized dimension" in text, text


def test_zero_register_tokens_are_no_registers(tmp_path):
    cfg = transformers.Dinov2WithRegistersConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=1,
                                                 image_size=28, patch_size=14, num_register_tokens=0)
    sd = transformers.Dinov2WithRegistersModel(cfg).state_dict()
    assert sd["embeddings.register_tokens"].shape == (1, 0, 64)
    model, _ = vitjax.load_checkpoint(_write(tmp_path, sd))
    assert model.config.num_registers == 0 and model.config.posemb_resize == "timm"


# --- non-square trained grids (issue #17, fault 6) ---------------------------------------------------------------


def _timm_160x224(dynamic=False):
    return _randomize(timm.create_model("vit_small_patch16_224", pretrained=False, img_size=(160, 224), depth=2,
                                        embed_dim=128, num_heads=2, num_classes=7, dynamic_img_size=dynamic), seed=7)


def test_timm_non_square_file_loads_from_its_config_json_or_image_size(tmp_path, rng):
    from timm.models._hub import save_for_hf

    src = _timm_160x224()
    assert src.pos_embed.shape == (1, 141, 128)
    bare = _save_timm(src, tmp_path / "bare.safetensors")  # no config.json beside it
    with pytest.raises(CheckpointError) as info:
        vitjax.load_checkpoint(bare)
    text = _one_line(info)
    assert "image_size=(height, width)" in text and "(160, 224)" in text and "config.json" in text, text
    images = _photo_batch((160, 224), rng)
    model, _, _ = _compare(bare, *_timm_run(src, images), images, image_size=(160, 224))
    assert model.config.grid == (10, 14)
    folder = tmp_path / "hub"
    save_for_hf(src, folder, safe_serialization=True)
    for size in (None, (160, 224)):
        model, _, _ = _compare(folder / "model.safetensors", *_timm_run(src, images), images, image_size=size)
        assert model.config.grid == (10, 14) and model.config.image_size == (160, 224)


def test_timm_non_square_file_resizes_like_timm(tmp_path, rng):
    from timm.models._hub import save_for_hf

    src = _timm_160x224(dynamic=True)  # timm resizes its 10x14 grid on the fly to each input's grid
    save_for_hf(src, tmp_path, safe_serialization=True)
    images = _photo_batch((224, 160), rng)
    model, _, _ = _compare(tmp_path / "model.safetensors", *_timm_run(src, images), images, image_size=(224, 160))
    assert model.config.grid == (14, 10) and model.config.posemb_resize == "timm"


def _hf_vit(image_size):
    cfg = transformers.ViTConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                                 image_size=image_size, patch_size=16, num_labels=5, attn_implementation="eager")
    return transformers.ViTForImageClassification(cfg)


def _hf_160x224(folder):
    src = _randomize(_hf_vit([160, 224]), seed=8)
    return src, _hf_save(src, folder)


def test_hf_non_square_file_loads_with_its_config_json_or_image_size(tmp_path, rng):
    src, path = _hf_160x224(tmp_path)
    images = _photo_batch((160, 224), rng)
    ref = _hf_run(src, images)
    for size in (None, (160, 224)):
        model, _, _ = _compare(path, *ref, images, image_size=size)
        assert model.config.grid == (10, 14)
    (tmp_path / "config.json").unlink()  # the weights alone: 140 positions are not a square
    with pytest.raises(CheckpointError) as info:
        vitjax.load_checkpoint(path)
    assert "image_size=(height, width)" in _one_line(info)
    model, _, _ = _compare(path, *ref, images, image_size=(160, 224))
    assert model.config.grid == (10, 14)


def test_hf_non_square_file_resizes_with_hf_bicubic(tmp_path, rng):
    """transformers' own interpolate_pos_encoding assumes a square grid (it cannot run this file at another
    size); vitjax applies the same bicubic (a = -0.75, no antialiasing) to the 10x14 grid. The reference:
    a ViT made for 224x160 holding the file's weights with the grid resized by torch's interpolate."""
    src, path = _hf_160x224(tmp_path)
    sd = src.state_dict()
    pos = sd["vit.embeddings.position_embeddings"]
    grid = pos[:, 1:].reshape(1, 10, 14, 128).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, size=(14, 10), mode="bicubic", align_corners=False)
    sd["vit.embeddings.position_embeddings"] = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, 140, 128)],
                                                         dim=1)
    ref = _hf_vit([224, 160])
    ref.load_state_dict(sd)
    images = _photo_batch((224, 160), rng)
    model, _, _ = _compare(path, *_hf_run(ref.eval(), images), images, image_size=(224, 160))
    assert model.config.posemb_resize == "bicubic"


def test_a_config_json_grid_that_contradicts_the_weights_is_named(tmp_path):
    _, path = _hf_160x224(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "image_size": [224, 224]}))
    with pytest.raises(CheckpointError) as info:
        vitjax.load_checkpoint(path)
    text = _one_line(info)
    assert "config.json: field 'image_size'" in text and "14x14" in text and "141" in text, text


@pytest.mark.parametrize("cls", ["DeiTModel", "DeiTForImageClassification", "DeiTForImageClassificationWithTeacher"])
def test_hf_deit_files_are_refused_by_name(tmp_path, cls):
    cfg = transformers.DeiTConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=1, intermediate_size=128,
                                  image_size=32, patch_size=16, num_labels=3)
    path = _hf_save(getattr(transformers, cls)(cfg), tmp_path)
    with pytest.raises(CheckpointError) as info:
        vitjax.load_checkpoint(path)
    text = _one_line(info)
    assert "a DeiT distillation token is not supported" in text and "distillation_token" in text, text
    assert "is not one of" not in text  # not the prefix message, which suggests renaming would help
