import numpy as np
import pytest
from PIL import Image

import vitjax


def test_range_shape_dtype(tmp_path):
    p = tmp_path / "a.png"
    Image.fromarray(np.array([[[0, 255, 128]] * 4] * 3, dtype=np.uint8)).save(p)
    x = vitjax.preprocess(p, (6, 8))
    assert x.shape == (6, 8, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[..., 0], -1.0)
    np.testing.assert_allclose(x[..., 1], 1.0)
    np.testing.assert_allclose(x[..., 2], 128 / 127.5 - 1, atol=1e-6)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "1", "LA", "F"])
def test_any_mode_to_rgb(mode):
    base = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    img = base.convert(mode) if mode not in ("I;16", "F") else base.convert("L").convert(mode)
    x = vitjax.preprocess(img, 16)
    assert x.shape == (16, 16, 3)
    assert x.min() >= -1.0 and x.max() <= 1.0


def test_exif_orientation_applied(tmp_path):
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = 255  # left half white
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif, quality=100)
    shown = vitjax.load_image(p)
    assert shown.size == (10, 20)  # width, height swapped
    top = np.asarray(shown)[:5].mean()
    bottom = np.asarray(shown)[-5:].mean()
    assert top > 200 and bottom < 50  # left half became the top half


def test_matches_pil_bilinear_then_scale(rng):
    arr = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    want = np.asarray(Image.fromarray(arr).resize((24, 16), Image.BILINEAR), np.float32) / 127.5 - 1
    np.testing.assert_array_equal(vitjax.preprocess(arr, (16, 24)), want)


def test_unreadable_file_names_it(tmp_path):
    p = tmp_path / "broken.jpg"
    p.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        vitjax.preprocess(p, 16)
