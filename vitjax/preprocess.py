"""Image decoding and Google's ViT preprocessing (resize, then x / 127.5 - 1)."""

from __future__ import annotations

import os
from typing import Tuple, Union

import numpy as np
from PIL import Image, ImageOps

__all__ = ["load_image", "preprocess"]

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]


def load_image(image: ImageLike) -> Image.Image:
    """Opens an image as RGB with its EXIF orientation applied.

    Accepts a path, a binary file object, a ``PIL.Image`` of any mode (grayscale, palette, RGBA,
    CMYK, 16-bit...) or a uint8 array ``[H, W]``/``[H, W, 3|4]``.

    Raises:
      ValueError: the file cannot be decoded as an image (message names it).
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    elif not isinstance(image, Image.Image):
        name = getattr(image, "name", None) if hasattr(image, "read") else os.fspath(image)
        try:
            with Image.open(image if hasattr(image, "read") else name) as im:
                im.load()
                return _to_rgb(ImageOps.exif_transpose(im))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ValueError(f"{name}: cannot read image ({e})") from None
    return _to_rgb(ImageOps.exif_transpose(image))


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # composite on white rather than letting transparent pixels turn black
        rgba = image.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        image = Image.fromarray(arr.round().astype(np.uint8))
    return image.convert("RGB")


def preprocess(image: ImageLike, size: Union[int, Tuple[int, int]]) -> np.ndarray:
    """Google's ViT preprocessing of one image.

    Decode (EXIF orientation applied, any PIL mode -> RGB), resize to ``size``
    with bilinear interpolation (the whole image, no crop, as Google's
    fine-tuning pipeline and notebook do), then scale pixels to [-1, 1] with
    ``x / 127.5 - 1``.

    Args:
      image: a path, a ``PIL.Image`` or a uint8 array.
      size: ``(height, width)`` in pixels, or an int for a square.

    Returns:
      ``[H, W, 3]`` float32 in [-1, 1].

    Raises:
      ValueError: unreadable image file.
    """
    h, w = (size, size) if isinstance(size, int) else size
    img = load_image(image).resize((int(w), int(h)), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 127.5 - 1.0
