"""Image decoding and ViT preprocessing: pixels on one scale, Google's resize, the model's normalisation.

Three steps, shared by the library, the command line and the notebook:

1. **Decode** (:func:`load_image` for display, the same rules inside :func:`preprocess`): EXIF
   orientation applied; any PIL mode to RGB in 8-bit units [0, 255]. Deep images are scaled by
   the range of their *type*, never by their own minimum and maximum, so a dark 16-bit photo stays
   dark: 16-bit ÷ 257 (65535 → 255), n-bit unsigned ÷ (2^n − 1)/255, signed integers clip below 0
   and divide by (2^(n−1) − 1)/255 (scikit-image's ``img_as_ubyte`` rule), float images are taken
   as [0, 1] (scikit-image, OpenCV, TIFF exports) and multiplied by 255, out-of-range values
   clipped. A PIL mode-``I`` file takes its bit depth from the file's pixel format (a 16-bit PGM
   or PNG opened as ``I`` is ÷ 257; a 32-bit TIFF uses the int32 range); an ``I`` image made in
   memory is 32-bit signed. Arrays are scaled by dtype. Transparent pixels are laid on white.
2. **Resize** the whole image (no crop) to the model's input size. ``resize="google"`` (default):
   Google's evaluation pipeline (``vit_jax/input_pipeline.py``: ``tf.image.resize``), bilinear
   with half-pixel centres, **no antialiasing**, on float pixels with no uint8 rounding;
   identical to ``jax.image.resize(x, shape, "bilinear", antialias=False)`` up to float32
   rounding. ``resize="pil"``: PIL's bilinear on the 8-bit RGB image, which antialiases when it
   shrinks and rounds to uint8 (vitjax's earlier default, and many PyTorch ports').
   ``resize="bicubic"``: PIL's antialiased bicubic on the 8-bit image (timm's default
   interpolation, DINOv2's processor). By default a config's ``input_resize`` decides: what the
   checkpoint's library does when its JSON says it (timm ``pretrained_cfg.interpolation``,
   transformers ``preprocessor_config.json`` ``resample``), else Google's. Crops
   (``crop_pct``, ``do_center_crop``) are never applied: the maps cover the whole photo.
3. **Normalise** per channel: ``(x / 255 - mean) / std`` with ``mean``/``std`` in [0, 1] pixel
   units: Google (0.5, 0.5, 0.5)/(0.5, 0.5, 0.5), i.e. ``(x - 127.5) / 127.5``; ImageNet
   (0.485, 0.456, 0.406)/(0.229, 0.224, 0.225) for DeiT and DINOv2.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageOps

from vitjax.model.config import INPUT_RESIZES

__all__ = ["GOOGLE_MEAN", "GOOGLE_STD", "RESIZE_METHODS", "bilinear_taps", "load_image", "load_pixels", "preprocess",
           "resize_bilinear"]

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]

GOOGLE_MEAN = (0.5, 0.5, 0.5)
GOOGLE_STD = (0.5, 0.5, 0.5)
RESIZE_METHODS = INPUT_RESIZES  # ("google", "pil", "bicubic"); ViTConfig.input_resize is one of them

_DEEP_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")
# One decoded image before resizing: its array in the file's own dtype ([H, W] or [H, W, 3]) and
# the map from those values (as float64) to [0, 255]; applied after rows are picked, so a huge
# 16-bit photo is never held as float64 in full.
_Decoded = Tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _integer_scale(bits: int, signed: bool) -> Callable[[np.ndarray], np.ndarray]:
    top = float(2 ** (bits - 1) - 1 if signed else 2**bits - 1)

    def scale(x: np.ndarray) -> np.ndarray:
        # x * 255 / top, divided last: a 16-bit value 257 * v gives exactly v
        return np.clip(x, 0.0, None) * 255.0 / top if signed else x * 255.0 / top

    return scale


def _float_scale(x: np.ndarray) -> np.ndarray:
    return np.clip(x * 255.0, 0.0, 255.0)


def _raw_mode(image: Image.Image) -> Optional[str]:
    """The raw mode of a not-yet-loaded image's pixel data (``"I;16B"``, ``"I;32S"``...), else None."""
    tile = getattr(image, "tile", None) or []
    if not tile:
        return None
    args = getattr(tile[0], "args", None)
    if isinstance(args, tuple):
        args = args[0] if args else None
    return args if isinstance(args, str) else None


def _open(image, name: str) -> Tuple[Image.Image, Optional[str]]:
    """Opens and decodes a file; also returns its raw mode (the bit depth of mode-'I' files)."""
    try:
        with Image.open(image) as im:
            raw = _raw_mode(im)
            im.load()
            return ImageOps.exif_transpose(im), raw
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{name}: cannot read image ({' '.join(str(e).split())})") from None


def _int_mode_depth(raw: Optional[str]) -> Tuple[int, bool]:
    """(bits, signed) of a mode-'I' image: from the file's raw mode (PNG/PGM 16-bit, TIFF I;16S,
    I;32...), else the mode's own range, 32-bit signed."""
    if raw and raw.startswith("I;") and raw not in ("I;32S", "I;32BS", "I;32NS"):
        bits = 16 if "16" in raw else 8 if raw.startswith("I;8") else 32
        return bits, raw.endswith("S")
    return 32, True


def _decode_pil(image: Image.Image, raw: Optional[str], name: str) -> _Decoded:
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image), _identity
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")  # composite on white rather than letting transparent pixels turn black
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB")), _identity
    if mode.startswith("I;16"):
        return np.asarray(image), _integer_scale(16, mode.endswith("S"))
    if mode == "I":
        bits, signed = _int_mode_depth(raw)
        arr = np.asarray(image)
        if not signed:
            arr = arr.view(np.uint32) if bits == 32 else arr
        return arr, _integer_scale(bits, signed)
    if mode == "F":
        arr = np.asarray(image)
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: float image has NaN or infinite pixels")
        return arr, _float_scale
    if mode == "L":
        return np.asarray(image), _identity
    try:
        return np.asarray(image.convert("RGB")), _identity
    except ValueError as e:
        raise ValueError(f"{name}: cannot convert PIL mode {mode} to RGB ({e})") from None


_ARRAY_SCALES = {
    np.dtype(np.uint16): _integer_scale(16, False),
    np.dtype(np.uint32): _integer_scale(32, False),
    np.dtype(np.int16): _integer_scale(16, True),
    np.dtype(np.int32): _integer_scale(32, True),
}


def _decode_array(arr: np.ndarray) -> _Decoded:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (2, 3, 4)):
        raise ValueError(f"image array must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"image array is empty: shape {arr.shape}")
    if arr.dtype == np.uint8:
        return _decode_pil(Image.fromarray(arr), None, "image array")
    if arr.dtype == np.bool_:
        scale = _float_scale
    elif arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ValueError("image array has NaN or infinite pixels")
        scale = _float_scale
    elif arr.dtype in _ARRAY_SCALES:
        scale = _ARRAY_SCALES[arr.dtype]
    else:
        raise ValueError(
            f"image array dtype {arr.dtype} has no pixel range; use uint8 (0..255), uint16 (0..65535) "
            "or float (0..1)"
        )
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):  # alpha: lay the colours on white
        pix = scale(arr.astype(np.float64))
        alpha = pix[..., -1:] / 255.0
        pix = pix[..., :-1] * alpha + 255.0 * (1.0 - alpha)
        return pix, _identity
    return arr, scale


def _decode(image: ImageLike) -> _Decoded:
    if isinstance(image, np.ndarray):
        return _decode_array(image)
    if isinstance(image, Image.Image):
        name = getattr(image, "filename", "") or "image"
        raw = _raw_mode(image)
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ValueError(f"{name}: cannot read image ({' '.join(str(e).split())})") from None
        return _decode_pil(ImageOps.exif_transpose(image), raw, name)
    if hasattr(image, "read"):
        name = str(getattr(image, "name", "file object"))
        return _decode_pil(*_open(image, name), name)
    name = os.fspath(image)
    return _decode_pil(*_open(name, name), name)


def _full(decoded: _Decoded) -> np.ndarray:
    """The whole decoded image as float64 [H, W, 3] in [0, 255]."""
    arr, scale = decoded
    pix = scale(np.asarray(arr, dtype=np.float64))
    return np.repeat(pix[..., None], 3, axis=-1) if pix.ndim == 2 else pix


def load_pixels(image: ImageLike) -> np.ndarray:
    """Decodes an image to float pixels, with no rounding: ``[H, W, 3]`` float32 in [0, 255].

    The decoding rules (EXIF, modes, bit depths, transparency) are those of the module docstring.

    Raises:
      ValueError: unreadable file (message names it), non-finite float pixels, or an array whose
        shape or dtype is not an image.
    """
    return _full(_decode(image)).astype(np.float32)


def load_image(image: ImageLike) -> Image.Image:
    """Opens an image as 8-bit RGB with its EXIF orientation applied, for display.

    Args:
      image: a path, a binary file object, a ``PIL.Image`` of any mode (grayscale, palette, RGBA,
        CMYK, 16-bit ``I;16``, 32-bit ``I``, float ``F``...) or an array ``[H, W]`` /
        ``[H, W, 1|3|4]`` of dtype uint8 (0..255), uint16 (0..65535), int16/int32 (negative = 0),
        float (0..1) or bool.

    Returns:
      A ``PIL.Image`` in mode ``RGB``. Deep images are scaled by their type's range (see the
      module docstring), then rounded to 8 bits.

    Raises:
      ValueError: the file cannot be decoded as an image (message names it), or an array whose
        shape or dtype is not an image.
    """
    arr, scale = _decode(image)
    if scale is _identity and arr.dtype == np.uint8:
        pix = arr
    else:
        pix = np.round(scale(np.asarray(arr, dtype=np.float64))).astype(np.uint8)
    return Image.fromarray(pix if pix.ndim == 3 else np.repeat(pix[..., None], 3, axis=-1))


def bilinear_taps(n_in: int, n_out: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices ``lo, hi [n_out]`` and weights ``frac`` of a half-pixel-centre, non-antialiased
    linear resize along one axis (out-of-range neighbours clamped to the edge): output ``i`` is
    ``(1 - frac[i]) * x[lo[i]] + frac[i] * x[hi[i]]``."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    lo = np.floor(src)
    frac = src - lo
    lo = lo.astype(np.int64)
    return np.clip(lo, 0, n_in - 1), np.clip(lo + 1, 0, n_in - 1), frac


def _resize(arr: np.ndarray, scale: Callable[[np.ndarray], np.ndarray], height: int, width: int) -> np.ndarray:
    """Rows first, then columns, in float64; ``scale`` maps the picked rows to pixel units."""
    lo, hi, fy = bilinear_taps(arr.shape[0], height)
    fy = fy.reshape((-1,) + (1,) * (arr.ndim - 1))
    rows = scale(arr[lo].astype(np.float64)) * (1.0 - fy) + scale(arr[hi].astype(np.float64)) * fy
    lo, hi, fx = bilinear_taps(arr.shape[1], width)
    fx = fx.reshape((-1,) + (1,) * (arr.ndim - 2))
    return rows[:, lo] * (1.0 - fx) + rows[:, hi] * fx


def resize_bilinear(pixels: np.ndarray, size: Union[int, Sequence[int]]) -> np.ndarray:
    """Google's evaluation resize: bilinear, half-pixel centres, no antialiasing, float output.

    This is ``tf.image.resize(x, size)`` (TF2's default method, ``antialias=False``) as used by
    ``vit_jax/input_pipeline.py``, and equals ``jax.image.resize(x, shape, "bilinear",
    antialias=False)``: output pixel ``i`` samples the input at ``(i + 0.5) * n_in / n_out - 0.5``,
    mixing its two neighbours linearly; samples beyond the first or last pixel take that pixel.
    Shrinking by more than 2x therefore skips input pixels (aliasing), as Google's pipeline does.
    Separable: rows first, then columns, computed in float64.

    Args:
      pixels: ``[H, W]`` or ``[H, W, C]`` numbers, any dtype (values are not rescaled).
      size: ``(height, width)`` in pixels, or an int for a square.

    Returns:
      ``[height, width]`` or ``[height, width, C]`` float32.

    Raises:
      ValueError: a size below 1 or an empty input.
    """
    pixels = np.asarray(pixels)
    h, w = _size(size)
    if pixels.ndim not in (2, 3) or pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise ValueError(f"pixels must be a non-empty [H, W] or [H, W, C] array, got shape {pixels.shape}")
    return _resize(pixels, _identity, h, w).astype(np.float32)


def _size(size) -> Tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        size = (size, size)
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be an int or (height, width), got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"size must be at least 1x1 pixels, got {h}x{w}")
    return h, w


def _triple(name: str, value) -> np.ndarray:
    try:
        v = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        v = np.zeros(0)
    if v.size == 1:
        v = np.repeat(v, 3)
    if v.size != 3 or not np.isfinite(v).all() or (name == "std" and (v <= 0).any()):
        raise ValueError(f"{name} must be 3 finite numbers in [0, 1] pixel units (std > 0), got {value!r}")
    return v


def preprocess(
    image: ImageLike,
    size_or_config,
    *,
    resize: Optional[str] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> np.ndarray:
    """One image as a model input: decode, resize (whole image, no crop), normalise.

    Args:
      image: a path, a binary file object, a ``PIL.Image`` of any mode, or an array (see
        :func:`load_image` for the accepted dtypes and how deep images are scaled).
      size_or_config: a :class:`vitjax.ViTConfig` (its ``image_size``, ``pixel_mean`` and
        ``pixel_std`` are used; a config without the pixel fields means Google's), or the size
        ``(height, width)`` in pixels, or an int for a square (Google's normalisation).
      resize: ``"google"``: bilinear, half-pixel centres, no antialiasing, float
        pixels (``tf.image.resize`` in Google's ``vit_jax/input_pipeline.py``; equals
        ``jax.image.resize(..., "bilinear", antialias=False)``). ``"pil"``: PIL's antialiased
        bilinear on the 8-bit RGB image, rounded to uint8 (transformers' ``ViTImageProcessorPil``,
        timm's ``interpolation="bilinear"``). ``"bicubic"``: PIL's antialiased bicubic on the 8-bit
        image (timm's ``interpolation="bicubic"``, transformers' ``resample=3``). None (default):
        the config's ``input_resize`` (what the checkpoint's library does), ``"google"`` for a size.
      mean, std: per-channel ``(x / 255 - mean) / std`` in [0, 1] pixel units (3 numbers, or
        one for all channels); override the config's. Google: 0.5 / 0.5, i.e.
        ``(x - 127.5) / 127.5`` in [-1, 1]; ImageNet: (0.485, 0.456, 0.406) /
        (0.229, 0.224, 0.225).

    Returns:
      ``[H, W, 3]`` float32, normalised (``[-1, 1]`` with Google's mean and std).

    Raises:
      ValueError: unreadable image (the message names the file), an unknown ``resize``, a bad
        size, mean or std.
    """
    if resize is None:
        resize = getattr(size_or_config, "input_resize", "google")
    if resize not in RESIZE_METHODS:
        raise ValueError(f"resize must be one of {', '.join(RESIZE_METHODS)}, got {resize!r}")
    if hasattr(size_or_config, "image_size"):
        h, w = _size(size_or_config.image_size)
        mean = getattr(size_or_config, "pixel_mean", GOOGLE_MEAN) if mean is None else mean
        std = getattr(size_or_config, "pixel_std", GOOGLE_STD) if std is None else std
    else:
        h, w = _size(size_or_config)
    m = _triple("mean", GOOGLE_MEAN if mean is None else mean)
    s = _triple("std", GOOGLE_STD if std is None else std)
    if resize in ("pil", "bicubic"):
        pil_filter = Image.BILINEAR if resize == "pil" else Image.BICUBIC
        x = np.asarray(load_image(image).resize((w, h), pil_filter), dtype=np.float32)
    else:
        x = _resize(*_decode(image), h, w).astype(np.float32)
        x = np.repeat(x[..., None], 3, axis=-1) if x.ndim == 2 else x
    # (x - 255 m) / (255 s) in float32: for Google exactly TF's (x - 127.5) / 127.5
    return ((x - (255.0 * m).astype(np.float32)) / (255.0 * s).astype(np.float32)).astype(np.float32)
