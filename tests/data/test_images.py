"""vitjax.data.images: decoding by bit depth, Google's resize, the model's normalisation.

Tolerances are in the units of the value compared and come from float32 rounding:
EPS = 2**-23 is float32's relative spacing at 1, so one rounding of a value of
magnitude m is off by at most m * EPS / 2.
"""

import dataclasses
import importlib
import io
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import vitjax

pp = importlib.import_module("vitjax.data.images")  # the module (vitjax.data.images is the function)

EPS = float(np.finfo(np.float32).eps)

# jax.image.resize against ours, when every scale factor is a power of two: jax's sample positions and
# weights are then exact in float32. Each output mixes at most 4 input pixels (2 taps per axis); in whatever
# order XLA contracts its one einsum, each term is a pixel times two weights (2 roundings) and the sum adds 3
# roundings, all at magnitudes <= 255; our own float64 result is rounded once to float32: 12 roundings.
EXACT_SCALE_TOL = 12 * 255 * EPS / 2


def any_scale_tol(n_in: int) -> float:
    """EXACT_SCALE_TOL plus jax's float32 sample positions at any scale.

    jax computes scale = out / in (1 rounding), 1 / scale (1), (i + 0.5) * inv (1) and - 0.5 (1): a sample
    position, of magnitude <= n_in, is off by <= 2 * n_in * EPS; |position - j| (1) and 1 - x (1) and the
    weight-sum normalisation (2) add little: a linear weight is off by <= 4 * n_in * EPS. Two taps per axis,
    two axes, pixels <= 255: 16 * n_in * 255 * EPS.
    """
    return 16 * n_in * 255 * EPS + EXACT_SCALE_TOL


# Deep images (float, int32) whose pixel values equal an 8-bit photo's up to less than one float32 spacing at
# 255: see test_float_tiff_is_taken_as_0_to_1.
DEEP_TOL = 3 * EPS


def google(pixels):
    """Google's normalisation in float32, as vit_jax/input_pipeline.py writes it."""
    return ((np.asarray(pixels, np.float32) - np.float32(127.5)) / np.float32(127.5)).astype(np.float32)


def saved(image: Image.Image, fmt: str) -> io.BytesIO:
    buf = io.BytesIO()
    image.save(buf, fmt)
    buf.seek(0)
    return buf


@pytest.fixture
def photo(rng):
    """An 8-bit 'photo': smooth gradients plus noise, darkened to a quarter of the range (a dark photo)."""
    h, w = 37, 53
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([yy * 255 / h, xx * 255 / w, (yy + xx) * 255 / (h + w)], -1)
    noisy = base + rng.normal(0, 20, base.shape)
    return (np.clip(noisy, 0, 255) // 4).astype(np.uint8)


def test_range_shape_dtype(tmp_path):
    p = tmp_path / "a.png"
    Image.fromarray(np.array([[[0, 255, 128]] * 4] * 3, dtype=np.uint8)).save(p)
    x = vitjax.preprocess(p, (6, 8))
    assert x.shape == (6, 8, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[..., 0], -1.0)
    np.testing.assert_array_equal(x[..., 1], 1.0)
    # one float32 rounding of a value below 1: at most EPS / 2
    np.testing.assert_allclose(x[..., 2], 0.5 / 127.5, rtol=0, atol=EPS / 2)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "I", "1", "LA", "F", "YCbCr"])
def test_any_mode_to_rgb(mode):
    base = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    img = base.convert(mode) if mode not in ("I;16", "I", "F") else base.convert("L").convert(mode)
    x = vitjax.preprocess(img, 16)
    assert x.shape == (16, 16, 3) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert vitjax.load_image(img).mode == "RGB"


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
    x = vitjax.preprocess(p, (20, 10))  # the model input is turned too
    assert x[:5].mean() > 0.5 and x[-5:].mean() < -0.5


# --- bit depth: scaled by the type's range, never by the image's own min / max ------------------------


def test_dark_16bit_png_preprocesses_exactly_like_the_8bit_photo(photo):
    want = vitjax.preprocess(photo, (16, 24))
    wide = Image.fromarray(photo[..., 0].astype(np.uint16) * 257)  # 16-bit grayscale PNG, same brightness
    got = vitjax.preprocess(saved(wide, "PNG"), (16, 24))
    # v * 257 * 255 / 65535 == v exactly in float64, so every later step sees identical numbers
    np.testing.assert_array_equal(got, vitjax.preprocess(photo[..., 0], (16, 24)))
    assert got.mean() < -0.5  # a dark photo stays dark (the per-image stretch made it about 0)
    np.testing.assert_array_equal(np.asarray(vitjax.load_image(saved(wide, "PNG"))),
                                  np.repeat(photo[..., :1], 3, -1))
    assert want.shape == got.shape


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "PPM"])
def test_16bit_files_are_divided_by_257(photo, fmt):
    gray = photo[..., 1]
    img = Image.fromarray(gray.astype(np.uint16) * 257)  # opens as I;16, or as I with raw mode I;16B (PPM)
    got = vitjax.preprocess(saved(img, fmt), (16, 24))
    np.testing.assert_array_equal(got, vitjax.preprocess(gray, (16, 24)))


def test_uint16_arrays_and_images_are_divided_by_257(photo):
    want = vitjax.preprocess(photo, (16, 24))
    np.testing.assert_array_equal(vitjax.preprocess(photo.astype(np.uint16) * 257, (16, 24)), want)
    img16 = Image.fromarray(photo[..., 2].astype(np.uint16) * 257)
    assert img16.mode == "I;16"
    np.testing.assert_array_equal(vitjax.preprocess(img16, (16, 24)), vitjax.preprocess(photo[..., 2], (16, 24)))


def test_float_tiff_is_taken_as_0_to_1(photo):
    gray = photo[..., 0]
    img = Image.fromarray(gray.astype(np.float32) / np.float32(255))
    assert img.mode == "F"
    got = vitjax.preprocess(saved(img, "TIFF"), (16, 24))
    want = vitjax.preprocess(gray, (16, 24))
    # v / 255 rounded to float32 is off by <= 255 * EPS / 2 pixel units after * 255: less than one float32
    # spacing at [128, 256) (128 EPS), so the resized float32 pixels differ by <= 1 spacing: / 127.5 -> ~EPS;
    # google() rounds twice at magnitude <= 1 on each side: 2 EPS. Total DEEP_TOL = 3 EPS.
    np.testing.assert_allclose(got, want, rtol=0, atol=DEEP_TOL)
    assert got.mean() < -0.5
    # float arrays follow the same rule; values outside [0, 1] are clipped, not stretched
    np.testing.assert_allclose(vitjax.preprocess(photo / 255.0, (16, 24)), vitjax.preprocess(photo, (16, 24)),
                               rtol=0, atol=DEEP_TOL)
    np.testing.assert_array_equal(vitjax.preprocess(np.full((4, 4), 2.0), 2), 1.0)
    np.testing.assert_array_equal(vitjax.preprocess(np.full((4, 4), -3.0), 2), -1.0)


def test_32bit_integer_tiff_uses_the_int32_range(photo):
    gray = photo[..., 0]
    step = (2**31 - 1) // 255  # 8421504: v * step is v / 255 of the int32 range, less a relative 5.9e-8
    img = Image.fromarray(gray.astype(np.int32) * step)
    assert img.mode == "I"
    want = vitjax.preprocess(gray, (16, 24))
    for source in (saved(img, "TIFF"), img, gray.astype(np.int32) * step):
        got = vitjax.preprocess(source, (16, 24))
        # scale error: 255 * (1 - 255 * step / (2**31 - 1)) = 1.5e-5 pixel units < 255 * EPS / 2: as for float
        # TIFFs, the resized float32 pixels differ by <= one spacing, so DEEP_TOL
        np.testing.assert_allclose(got, want, rtol=0, atol=DEEP_TOL)
    # negative values of a signed image are black, not the bottom of a stretch
    neg = np.full((4, 4), -(2**31), np.int32)
    neg[0, 0] = 2**31 - 1
    x = vitjax.preprocess(Image.fromarray(neg), (4, 4), resize="google")
    assert x[0, 0, 0] == 1.0 and (x.reshape(-1, 3)[1:] == -1.0).all()


def test_16bit_signed_arrays_clip_negatives():
    arr = np.array([[-5, 0], [32767, 16384]], np.int16)
    x = pp.load_pixels(arr)
    np.testing.assert_allclose(x[..., 0], [[0, 0], [255, 16384 * 255 / 32767]], rtol=EPS)


def test_unsupported_arrays_are_one_line_errors():
    with pytest.raises(ValueError, match="dtype int64 has no pixel range") as info:
        vitjax.preprocess(np.zeros((4, 4, 3), np.int64), 2)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="shape"):
        vitjax.preprocess(np.zeros((4, 4, 5), np.uint8), 2)
    with pytest.raises(ValueError, match="NaN"):
        vitjax.preprocess(np.full((4, 4), np.nan, np.float32), 2)


def test_rgba_arrays_lie_on_white():
    arr = np.zeros((4, 4, 4), np.float32)  # black, fully transparent
    np.testing.assert_array_equal(vitjax.preprocess(arr, 2), 1.0)
    arr[..., 3] = 1.0  # black, opaque
    np.testing.assert_array_equal(vitjax.preprocess(arr, 2), -1.0)


# --- Google's resize ----------------------------------------------------------------------------------


def test_google_resize_by_hand():
    # 4 -> 2: samples at (i + 0.5) * 2 - 0.5 = 0.5, 2.5: no antialiasing, so pixels 0-1 and 2-3 are averaged
    row = np.array([[0.0, 10.0, 20.0, 30.0]])
    np.testing.assert_array_equal(pp.resize_bilinear(row, (1, 2)), [[5.0, 25.0]])
    # 8 -> 2 skips pixels: samples at 1.5 and 5.5 (an antialiased resize would average all of them)
    np.testing.assert_array_equal(pp.resize_bilinear(np.arange(8.0)[None], (1, 2)), [[1.5, 5.5]])
    # 2 -> 4 clamps at the edges: samples at -0.25, 0.25, 0.75, 1.25
    np.testing.assert_array_equal(pp.resize_bilinear(np.array([[0.0, 8.0]]), (1, 4)), [[0.0, 2.0, 6.0, 8.0]])


@pytest.mark.parametrize("src, dst", [((64, 48), (16, 96)), ((32, 32), (8, 8)), ((24, 40), (48, 20))])
def test_google_resize_equals_jax_on_exact_scales(rng, src, dst):
    x = rng.uniform(0, 255, src + (3,)).astype(np.float32)
    ours = pp.resize_bilinear(x, dst)
    ref = np.asarray(jax.image.resize(jnp.asarray(x), dst + (3,), "bilinear", antialias=False))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=EXACT_SCALE_TOL)


@pytest.mark.parametrize("src, dst", [((37, 53), (16, 24)), ((37, 53), (80, 100)), ((50, 7), (3, 29))])
def test_google_resize_equals_jax_on_any_scale(rng, src, dst):
    x = rng.uniform(0, 255, src + (3,)).astype(np.float32)
    ours = pp.resize_bilinear(x, dst)
    ref = np.asarray(jax.image.resize(jnp.asarray(x), dst + (3,), "bilinear", antialias=False))
    tol = any_scale_tol(max(src))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=tol)
    # the test can tell resizes apart: PIL's antialiased bilinear is far outside that tolerance when shrinking
    if dst[0] < src[0]:
        pil = np.stack([np.asarray(Image.fromarray(x[..., c], "F").resize(dst[::-1], Image.BILINEAR))
                        for c in range(3)], -1)
        assert np.abs(pil - ref).max() > 100 * tol


def test_preprocess_default_is_google_then_normalise(photo):
    got = vitjax.preprocess(photo, (16, 24))
    ref = google(jax.image.resize(jnp.asarray(photo, jnp.float32), (16, 24, 3), "bilinear", antialias=False))
    # the resize tolerance / 127.5, plus google()'s two roundings on each side at magnitude <= 1
    tol = any_scale_tol(53) / 127.5 + 2 * EPS
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol)
    # both sides: float64 resize -> float32 -> google() in float32; identical arithmetic
    np.testing.assert_array_equal(got, google(pp.resize_bilinear(photo, (16, 24))))


def test_pil_option_is_pil_bilinear_then_scale(rng):
    arr = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    want = google(Image.fromarray(arr).resize((24, 16), Image.BILINEAR))
    np.testing.assert_array_equal(vitjax.preprocess(arr, (16, 24), resize="pil"), want)
    # and it is not the default: shrinking noise, antialiasing differs by far more than any rounding
    assert np.abs(vitjax.preprocess(arr, (16, 24)) - want).max() > 0.1


def test_unknown_resize_is_refused():
    with pytest.raises(ValueError, match="resize must be one of google, pil, bicubic"):
        vitjax.preprocess(np.zeros((4, 4, 3), np.uint8), 2, resize="lanczos")


# --- normalisation from the config ---------------------------------------------------------------------


def test_config_gives_size_mean_and_std(photo):
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    cfg = SimpleNamespace(image_size=(16, 24), pixel_mean=imagenet[0], pixel_std=imagenet[1])
    got = vitjax.preprocess(photo, cfg)
    pixels = pp.resize_bilinear(photo, (16, 24))
    want = (pixels / 255.0 - np.array(imagenet[0])) / np.array(imagenet[1])
    # float32: 255 m (1 rounding) and x - 255 m (1), at magnitudes <= 255: <= 255 EPS; divided by 255 s with
    # s >= 0.224 -> EPS / 0.224. 255 s (1) and the quotient (1) add EPS relative to |result|, which is at most
    # max|(0 or 1 - m) / s| over the channels.
    m, sd = np.array(imagenet[0]), np.array(imagenet[1])
    big = max((m / sd).max(), ((1 - m) / sd).max())
    np.testing.assert_allclose(got, want, rtol=0, atol=EPS / 0.224 + big * EPS)
    assert got.shape == (16, 24, 3)
    # explicit mean / std override the config's; a scalar means all three channels
    np.testing.assert_array_equal(vitjax.preprocess(photo, cfg, mean=0.5, std=0.5), google(pixels))


def test_config_without_pixel_fields_means_google(photo):
    old_style = SimpleNamespace(image_size=(16, 24))
    np.testing.assert_array_equal(vitjax.preprocess(photo, old_style), vitjax.preprocess(photo, (16, 24)))


def test_vitconfig_pixel_fields_are_used(photo):
    cfg = vitjax.get_config("testing", image_size=(16, 32))
    if not all(hasattr(cfg, f) for f in ("pixel_mean", "pixel_std")):
        pytest.skip("ViTConfig has no pixel_mean / pixel_std yet")
    np.testing.assert_array_equal(vitjax.preprocess(photo, cfg), vitjax.preprocess(photo, (16, 32)))
    inet = dataclasses.replace(cfg, pixel_mean=(0.485, 0.456, 0.406), pixel_std=(0.229, 0.224, 0.225))
    np.testing.assert_array_equal(vitjax.preprocess(photo, inet),
                                  vitjax.preprocess(photo, (16, 32), mean=inet.pixel_mean, std=inet.pixel_std))


@pytest.mark.parametrize("kw", [{"mean": (0.5, 0.5)}, {"std": (0.5, 0.0, 0.5)}, {"std": "x"}])
def test_bad_mean_or_std_is_refused(kw):
    with pytest.raises(ValueError, match="mean|std"):
        vitjax.preprocess(np.zeros((4, 4, 3), np.uint8), 2, **kw)


def test_unreadable_file_names_it(tmp_path):
    p = tmp_path / "broken.jpg"
    p.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match="broken.jpg") as info:
        vitjax.preprocess(p, 16)
    assert "\n" not in str(info.value)
