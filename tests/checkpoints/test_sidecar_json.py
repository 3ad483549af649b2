"""The JSON files beside a timm / Hugging Face .safetensors (issue #17, fault 5): every field vitjax reads is checked.

``config.json`` and ``preprocessor_config.json`` decide the head count, the LayerNorm epsilon, the GELU flavour,
the normalisation and the trained size. A value of the wrong type, range or finiteness (``true`` or ``2.9``
heads, ``1e400``, a NaN or negative epsilon, ``["gelu"]``, bools as pixel means, a std of 1e-300) is refused in
one line naming the file and the field; before, some crashed and others were silently coerced.
"""

from __future__ import annotations

import json
import shutil

import pytest

from vitjax.checkpoints.safetensors import read_safetensors
from vitjax.errors import CheckpointError

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def hf_file(tmp_path_factory):
    """A Hugging Face ViTModel (width 128, 2 heads, 1 layer, 32 px, patch 16) and its config.json."""
    folder = tmp_path_factory.mktemp("hf")
    cfg = transformers.ViTConfig(hidden_size=128, num_hidden_layers=1, num_attention_heads=2, intermediate_size=256,
                                 image_size=32, patch_size=16)
    transformers.ViTModel(cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory):
    """A timm ViT (width 128, 2 heads) saved with its Hub config.json (save_for_hf)."""
    from timm.models._hub import save_for_hf

    folder = tmp_path_factory.mktemp("timm")
    model = timm.create_model("vit_small_patch16_224", pretrained=False, img_size=32, depth=1, embed_dim=128,
                              num_heads=2, num_classes=3)
    save_for_hf(model, folder, safe_serialization=True)
    return folder


def _copy(src, dst):
    shutil.copy(src / "model.safetensors", dst / "model.safetensors")
    return dst / "model.safetensors"


def _with_raw(data: dict, dotted: str, raw: str) -> str:
    """``data`` as JSON text with the field at ``dotted`` set to the literal JSON text ``raw`` (e.g. ``1e400``)."""
    data = json.loads(json.dumps(data))
    node = data
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = "@@RAW@@"
    return json.dumps(data).replace('"@@RAW@@"', raw)


def _refused(path, file, field):
    with pytest.raises(CheckpointError) as info:
        read_safetensors(path)
    text = str(info.value)
    assert "\n" not in text
    assert str(file) in text and f"field {field!r}" in text, text
    return text


HF_CONFIG_CASES = [
    ("num_attention_heads", "1e400", "an integer"),
    ("num_attention_heads", "true", "an integer"),
    ("num_attention_heads", "2.9", "an integer"),
    ("num_attention_heads", '"2"', "an integer"),
    ("num_attention_heads", "0", "an integer >= 1"),
    ("num_attention_heads", "3", "does not divide the width 128"),
    ("hidden_act", '["gelu"]', "a string"),
    ("hidden_act", '"relu"', "not a GELU"),
    ("layer_norm_eps", "null", "finite number"),
    ("layer_norm_eps", "-1", "finite number"),
    ("layer_norm_eps", "NaN", "finite number"),
    ("layer_norm_eps", "1e300", "finite number"),
    ("layer_norm_eps", "0", "finite number"),
    ("layer_norm_eps", '"abc"', "finite number"),
    ("pooler_act", '"relu"', "tanh"),
    ("image_size", "true", "height, width"),
    ("image_size", "[32]", "height, width"),
    ("patch_size", "8", "16x16 patches"),
    ("hidden_size", "true", "an integer"),
]


@pytest.mark.parametrize("field,raw,needle", HF_CONFIG_CASES, ids=[f"{f}={r}" for f, r, _ in HF_CONFIG_CASES])
def test_hf_config_json_fields_are_checked(hf_file, tmp_path, field, raw, needle):
    path = _copy(hf_file, tmp_path)
    config = json.loads((hf_file / "config.json").read_text())
    (tmp_path / "config.json").write_text(_with_raw(config, field, raw))
    text = _refused(path, tmp_path / "config.json", field)
    assert needle in text, text


PRE_CASES = [
    ({"image_mean": "[true, false, true]", "image_std": "[0.5, 0.5, 0.5]"}, "image_mean", "3 numbers"),
    ({"image_mean": "[0.5, 0.5, 0.5]", "image_std": "1e-300"}, "image_std", "outside"),
    ({"image_mean": "[0.5, 0.5, 0.5]", "image_std": "[1e-300, 0.5, 0.5]"}, "image_std", "outside"),
    ({"image_mean": "[0.5, 0.5, 0.5]", "image_std": '"abc"'}, "image_std", "3 numbers"),
    ({"image_mean": "[0.5, 0.5]", "image_std": "[0.5, 0.5, 0.5]"}, "image_mean", "3 numbers"),
    ({"image_mean": "[1e400, 0.5, 0.5]", "image_std": "[0.5, 0.5, 0.5]"}, "image_mean", "3 numbers"),
    ({"image_std": "[0.5, 0.5, 0.5]"}, "image_mean", "missing"),
    ({"do_normalize": '"yes"'}, "do_normalize", "true or false"),
    ({"rescale_factor": "0", "image_mean": "[0.5, 0.5, 0.5]", "image_std": "[0.5, 0.5, 0.5]"}, "rescale_factor",
     "finite number"),
]


@pytest.mark.parametrize("fields,field,needle", PRE_CASES, ids=[str(i) for i in range(len(PRE_CASES))])
def test_hf_preprocessor_config_fields_are_checked(hf_file, tmp_path, fields, field, needle):
    path = _copy(hf_file, tmp_path)
    shutil.copy(hf_file / "config.json", tmp_path / "config.json")
    text = "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"
    (tmp_path / "preprocessor_config.json").write_text(text)
    message = _refused(path, tmp_path / "preprocessor_config.json", field)
    assert needle in message, message


def test_hf_preprocessor_rescaling_and_no_normalisation_are_folded_into_pixel_units(hf_file, tmp_path):
    path = _copy(hf_file, tmp_path)
    shutil.copy(hf_file / "config.json", tmp_path / "config.json")
    pre = tmp_path / "preprocessor_config.json"
    # (x * 1 - 127.5) / 63.75 on 0-255 pixels is (x / 255 - 0.5) / 0.25
    pre.write_text(json.dumps({"rescale_factor": 1.0, "image_mean": [127.5] * 3, "image_std": [63.75] * 3}))
    info = read_safetensors(path)[1]
    assert info["pixel_mean"] == (0.5,) * 3 and info["pixel_std"] == (0.25,) * 3
    pre.write_text(json.dumps({"do_normalize": False, "image_mean": [0.1] * 3, "image_std": [0.2] * 3}))
    info = read_safetensors(path)[1]  # x / 255 only: mean 0, std 1 (before: the family's 0.5 / 0.5)
    assert info["pixel_mean"] == (0.0,) * 3 and info["pixel_std"] == (1.0,) * 3


TIMM_CASES = [
    ("model_args.num_heads", "true", "an integer"),
    ("model_args.num_heads", "2.5", "an integer"),
    ("pretrained_cfg.mean", "[true, false, true]", "3 numbers"),
    ("pretrained_cfg.std", "[1e-300, 1e-300, 1e-300]", "outside"),
    ("model_args.img_size", '"abc"', "height, width"),
    ("global_pool", '["avg"]', "a string"),
    ("global_pool", '"avg"', "class token"),
    ("model_args", '"x"', "an object"),
    ("num_features", "1e400", "an integer"),
]


@pytest.mark.parametrize("field,raw,needle", TIMM_CASES, ids=[f"{f}={r}" for f, r, _ in TIMM_CASES])
def test_timm_config_json_fields_are_checked(timm_file, tmp_path, field, raw, needle):
    path = _copy(timm_file, tmp_path)
    config = json.loads((timm_file / "config.json").read_text())
    (tmp_path / "config.json").write_text(_with_raw(config, field, raw))
    text = _refused(path, tmp_path / "config.json", field)
    assert needle in text, text


@pytest.mark.parametrize("content", ["{not json", "[1, 2, 3]", "\xff\xfe"])
def test_an_unreadable_json_file_beside_the_weights_is_named(hf_file, tmp_path, content):
    path = _copy(hf_file, tmp_path)
    (tmp_path / "config.json").write_bytes(content.encode("latin-1"))
    with pytest.raises(CheckpointError) as info:
        read_safetensors(path)
    text = str(info.value)
    assert "\n" not in text and str(tmp_path / "config.json") in text, text


def test_valid_files_still_give_their_values(hf_file, timm_file, tmp_path):
    info = read_safetensors(hf_file / "model.safetensors")[1]
    assert (info["num_heads"], info["layer_norm_eps"], info["grid"]) == (2, 1e-12, (2, 2))
    info = read_safetensors(timm_file / "model.safetensors")[1]
    assert (info["num_heads"], info["pixel_mean"], info["grid"]) == (2, (0.5,) * 3, (2, 2))
