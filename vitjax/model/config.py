"""Model configuration: one frozen dataclass and one table of named variants.

The variants and their sizes follow Google's ``vit_jax/configs/models.py``
(Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021, Table 1) and
the hybrid R50+ViT-B/16 of the same paper.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Optional, Tuple

import numpy as np

__all__ = ["ViTConfig", "VARIANTS", "INPUT_RESIZES", "MATMUL_PRECISIONS", "PIXEL_MEAN_RANGE", "PIXEL_STD_RANGE",
           "get_config"]

# Names of jax_default_matmul_precision; see ViTConfig.matmul_precision.
MATMUL_PRECISIONS = ("float32", "tensorfloat32", "bfloat16")
POSEMB_RESIZES = ("zoom_linear", "timm", "bicubic")
#: How :func:`vitjax.preprocess` resizes an image to the input (see ``ViTConfig.input_resize``).
INPUT_RESIZES = ("google", "pil", "bicubic")
#: Accepted per-channel normalisation, in [0, 1] pixel units: trained models use means in [0, 1] and standard
#: deviations of 0.2-0.5 (1 / 255 = 0.0039 when the model reads raw 0-255 values); outside these the inputs
#: become huge or vanish (a std of 1e-300 gives inf).
PIXEL_MEAN_RANGE = (-10.0, 10.0)
PIXEL_STD_RANGE = (1e-3, 10.0)


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """Architecture of a Vision Transformer (hashable, usable as a jit static argument).

    Attributes:
      hidden_size: token width D.
      mlp_dim: hidden width of each MLP block.
      num_heads: attention heads H per layer (``hidden_size % num_heads == 0``).
      num_layers: encoder blocks L.
      patch_size: (ph, pw) in pixels for plain ViTs; in feature-map cells for
        hybrids (then usually (1, 1) over the stride-16 ResNet map).
      image_size: (height, width) in pixels the position embedding was made for.
      num_classes: width of the ``head`` layer; ``None`` for a model without head
        (the output is then the pre-logits features).
      representation_size: width of the ``pre_logits`` Dense + tanh layer
        (ImageNet-21k pre-trained files), or ``None``.
      resnet_layers: units per ResNet-v2 stage for the hybrid stem, e.g. (3, 4, 9);
        ``None`` for a plain ViT.
      resnet_width: width factor of the hybrid stem (64 * factor root channels).
      classifier: ``"token"`` (class token prepended, read at token 0) or
        ``"gap"`` (no class token, mean over patch tokens).
      gelu_approximate: tanh-approximate GELU as in Flax and Google's checkpoints
        (True, the default) or the exact erf GELU of PyTorch/timm (False).
      layer_scale: per-channel LayerScale after attention and MLP (CaiT, DINOv2):
        parameters ``ls1/scale``, ``ls2/scale`` ``[D]`` in every block.
      num_registers: register tokens after the class token (Darcet et al.,
        "Vision Transformers Need Registers", ICLR 2024); they carry no
        position embedding and are never map columns.
      layer_norm_eps: LayerNorm epsilon (1e-6 for Google, timm and DINOv2;
        1e-12 for Hugging Face ``ViTModel``).
      matmul_precision: how every dot product and convolution is computed, in
        the names of JAX's ``jax_default_matmul_precision``: ``"float32"`` (the
        default: ``Precision.HIGHEST``, true float32 on every device),
        ``"tensorfloat32"`` (``HIGH``: TF32 on NVIDIA GPUs, about 1e-3 relative
        error) or ``"bfloat16"`` (``DEFAULT``: one bfloat16 pass on GPUs/TPUs,
        about 1e-2 relative error). Honoured whatever the global JAX setting is.
      pixel_mean, pixel_std: the normalisation ``(x / 255 - mean) / std`` the
        model was trained with, per RGB channel in [0, 1] pixel units: Google
        (0.5, 0.5, 0.5) / (0.5, 0.5, 0.5), i.e. ``x / 127.5 - 1``; ImageNet
        (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225) for DeiT and DINOv2.
        Applied by :func:`vitjax.preprocess`, never inside the model.
      posemb_resize: how the loader resizes the position grid to another
        resolution, as the file's own framework does: ``"zoom_linear"``
        (Google: ``scipy.ndimage.zoom(order=1)``), ``"timm"`` (timm's
        ``resample_abs_pos_embed``: bicubic with antialiasing; also Hugging
        Face ``Dinov2WithRegistersModel``) or ``"bicubic"`` (Hugging Face
        ``Dinov2Model`` and ``ViTModel``: bicubic a = -0.75, half-pixel, no
        antialiasing, size-based).
      source: where the weights came from, for display ("google", "timm",
        "huggingface", ...).
      random_weights: the file holds random weights (written by
        :mod:`vitjax.checkpoints.synthetic`), not a trained model: predictions and
        maps mean nothing about images, and figures and tables say so.
      input_resize: how an image is resized to ``image_size`` by :func:`vitjax.preprocess` unless
        a call says otherwise, as the library that wrote the file does (one of
        :data:`INPUT_RESIZES`): ``"google"`` (Google's evaluation pipeline: bilinear, no
        antialiasing, float pixels; the default, and Google's files), ``"pil"`` (PIL's
        antialiased bilinear on 8-bit pixels: timm ``interpolation="bilinear"``, transformers
        ``resample=2``) or ``"bicubic"`` (PIL's antialiased bicubic on 8-bit pixels: timm's
        ``interpolation="bicubic"``, transformers ``resample=3``). The whole image is resized, never
        cropped (the maps cover the whole photo).
      class_names: the class names the checkpoint file gives for its head (transformers
        ``id2label``, timm ``label_names``), one per class, or None. Not part of equality or the
        hash (a jit static argument does not depend on it) and not shown in ``repr``;
        :func:`vitjax.data.labels.class_names` prefers it with ``labels="auto"``.

    Every field is checked on construction (type, range, finiteness; a bool is
    not an integer and 2.9 is not one either): ``ValueError`` naming the field.
    ``layer_norm_eps`` must only be a finite number here (the loader refuses
    files with eps <= 0; a negative eps is allowed for experiments).
    """

    hidden_size: int = 768
    mlp_dim: int = 3072
    num_heads: int = 12
    num_layers: int = 12
    patch_size: Tuple[int, int] = (16, 16)
    image_size: Tuple[int, int] = (224, 224)
    num_classes: Optional[int] = 1000
    representation_size: Optional[int] = None
    resnet_layers: Optional[Tuple[int, ...]] = None
    resnet_width: int = 1
    classifier: str = "token"
    gelu_approximate: bool = True
    layer_scale: bool = False
    num_registers: int = 0
    layer_norm_eps: float = 1e-6
    matmul_precision: str = "float32"
    pixel_mean: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    pixel_std: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    posemb_resize: str = "zoom_linear"
    source: str = "google"
    random_weights: bool = False
    input_resize: str = "google"
    class_names: Optional[Tuple[str, ...]] = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        for name in ("hidden_size", "mlp_dim", "num_heads", "num_layers", "resnet_width"):
            put(name, _integer(name, getattr(self, name), 1))
        put("num_registers", _integer("num_registers", self.num_registers, 0))
        for name in ("num_classes", "representation_size"):
            if getattr(self, name) is not None:  # num_classes 0: no head, as in timm
                put(name, _integer(name, getattr(self, name), 0 if name == "num_classes" else 1))
        put("patch_size", _pair("patch_size", self.patch_size))
        put("image_size", _pair("image_size", self.image_size))
        if self.resnet_layers is not None:
            layers = self.resnet_layers
            if isinstance(layers, (str, bytes)) or not hasattr(layers, "__len__") or not len(layers):
                raise ValueError(f"resnet_layers must be None or units per stage (positive integers), got {layers!r}")
            put("resnet_layers", tuple(_integer("resnet_layers", x, 1) for x in layers))
        for name in ("gelu_approximate", "layer_scale", "random_weights"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
            put(name, bool(getattr(self, name)))
        eps = self.layer_norm_eps
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(float(eps)):
            raise ValueError(f"layer_norm_eps must be a finite number, got {eps!r}")
        put("layer_norm_eps", float(eps))
        if not isinstance(self.source, str):
            raise ValueError(f"source must be a string, got {self.source!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if self.classifier not in ("token", "gap"):
            raise ValueError(f"classifier must be 'token' or 'gap', got {self.classifier!r}")
        if self.matmul_precision not in MATMUL_PRECISIONS:
            raise ValueError(
                f"matmul_precision must be one of {', '.join(MATMUL_PRECISIONS)}, got {self.matmul_precision!r}"
            )
        if self.posemb_resize not in POSEMB_RESIZES:
            raise ValueError(f"posemb_resize must be one of {', '.join(POSEMB_RESIZES)}, got {self.posemb_resize!r}")
        if self.input_resize not in INPUT_RESIZES:
            raise ValueError(f"input_resize must be one of {', '.join(INPUT_RESIZES)}, got {self.input_resize!r}")
        if self.class_names is not None:
            names = self.class_names
            if isinstance(names, (str, bytes)) or not hasattr(names, "__len__") \
                    or not all(isinstance(n, str) for n in names):
                raise ValueError("class_names must be None or one string per class")
            if self.num_classes is None or len(names) != self.num_classes:
                raise ValueError(f"class_names has {len(names)} names but the head has "
                                 f"{self.num_classes or 'no'} classes")
            put("class_names", tuple(names))
        for name, (lo, hi) in (("pixel_mean", PIXEL_MEAN_RANGE), ("pixel_std", PIXEL_STD_RANGE)):
            put(name, _triple(name, getattr(self, name), lo, hi))
        gh, gw = self.grid
        if gh < 1 or gw < 1:
            raise ValueError(f"image_size {self.image_size} gives an empty patch grid {self.grid}")
        if self.resnet_layers is None and (self.image_size[0] % self.patch_size[0]
                                           or self.image_size[1] % self.patch_size[1]):
            (h, w), (ph, pw) = self.image_size, self.patch_size
            raise ValueError(f"image_size {h}x{w} is not a multiple of the patch size {ph}x{pw}: the last "
                             f"{h % ph} row(s) / {w % pw} column(s) of pixels would be dropped silently; "
                             f"use e.g. {h - h % ph or ph}x{w - w % pw or pw}")

    @property
    def stem_halvings(self) -> int:
        """Stride-2 steps of the hybrid's ResNet-v2 stem (0 for a plain ViT); see :func:`stem_halvings`."""
        return stem_halvings(self.resnet_layers)

    @property
    def stride(self) -> Tuple[int, int]:
        """Pixels per patch token along (height, width), stem included."""
        s = 2**self.stem_halvings
        return (self.patch_size[0] * s, self.patch_size[1] * s)

    @property
    def grid(self) -> Tuple[int, int]:
        """Patch grid (gh, gw) at ``image_size``: tokens per column and per row."""
        h, w = self.image_size
        for _ in range(self.stem_halvings):  # SAME padding: ceil division
            h, w = -(-h // 2), -(-w // 2)
        return (h // self.patch_size[0], w // self.patch_size[1])

    @property
    def class_token(self) -> bool:
        """True when token 0 is a class token (``classifier == "token"``)."""
        return self.classifier == "token"

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens: the class token (if any) plus the registers."""
        return (1 if self.class_token else 0) + self.num_registers

    @property
    def precision(self):
        """``jax.lax.Precision`` of every dot and convolution (from ``matmul_precision``)."""
        from jax import lax

        return {"float32": lax.Precision.HIGHEST, "tensorfloat32": lax.Precision.HIGH,
                "bfloat16": lax.Precision.DEFAULT}[self.matmul_precision]

    @property
    def num_tokens(self) -> int:
        """Sequence length N = prefix tokens + gh * gw."""
        gh, gw = self.grid
        return self.num_prefix_tokens + gh * gw

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def replace(self, **changes) -> ViTConfig:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


def _integer(name: str, value, lo: int) -> int:
    """``value`` as an int >= ``lo``; ValueError naming ``name`` for a bool, a fraction, a string, inf or NaN."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        v = int(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) \
            and math.isfinite(float(value)) and float(value).is_integer():
        v = int(value)  # 224.0: a whole number written as a float
    else:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    if v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return v


def _pair(name: str, value) -> Tuple[int, int]:
    """An int or two ints -> ``(a, b)``, each >= 1; ValueError naming ``name`` otherwise."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        v = _integer(name, value, 1)
        return (v, v)
    if len(value) != 2:
        raise ValueError(f"{name} must be one integer or (height, width), got {value!r}")
    return (_integer(name, value[0], 1), _integer(name, value[1], 1))


def _triple(name: str, value, lo: float, hi: float) -> Tuple[float, float, float]:
    """Three finite numbers in [lo, hi] (RGB); ValueError naming ``name`` otherwise (bools are not numbers)."""
    ok = (not isinstance(value, (str, bytes)) and hasattr(value, "__len__") and len(value) == 3
          and all(isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_)) for x in value))
    v = tuple(float(x) for x in value) if ok else ()
    if not ok or not all(math.isfinite(x) and lo <= x <= hi for x in v):
        raise ValueError(f"{name} must be 3 numbers in [{lo:g}, {hi:g}] (RGB, [0, 1] pixel units), got {value!r}")
    return v


def stem_halvings(resnet_layers: Optional[Tuple[int, ...]]) -> int:
    """Stride-2 steps of a ResNet-v2 stem with these units per stage (0 for none).

    Root conv and max-pool halve the image; every stage after the first halves
    it again, so (3, 4, 9) gives 4 steps, a stride of 16.
    """
    if resnet_layers is None:
        return 0
    return 2 + max(0, len(resnet_layers) - 1)


def _vit(hidden, mlp, heads, layers, patch, **kw):
    return ViTConfig(
        hidden_size=hidden, mlp_dim=mlp, num_heads=heads, num_layers=layers, patch_size=patch, **kw
    )


# Sizes: Ti (192/768/3/12), S (384/1536/6/12), B (768/3072/12/12),
# L (1024/4096/16/24), H (1280/5120/16/32); all 224 px with a 1000-class head.
VARIANTS = {
    "testing": _vit(10, 10, 2, 1, 16),
    "ViT-Ti_16": _vit(192, 768, 3, 12, 16),
    "ViT-S_16": _vit(384, 1536, 6, 12, 16),
    "ViT-S_32": _vit(384, 1536, 6, 12, 32),
    "ViT-B_8": _vit(768, 3072, 12, 12, 8),
    "ViT-B_16": _vit(768, 3072, 12, 12, 16),
    "ViT-B_32": _vit(768, 3072, 12, 12, 32),
    "ViT-L_16": _vit(1024, 4096, 16, 24, 16),
    "ViT-L_32": _vit(1024, 4096, 16, 24, 32),
    "ViT-H_14": _vit(1280, 5120, 16, 32, 14),
    "R50+ViT-B_16": _vit(768, 3072, 12, 12, 1, resnet_layers=(3, 4, 9)),
}


def get_config(name: str, **overrides) -> ViTConfig:
    """The named variant's config, with optional field overrides.

    Args:
      name: a key of ``VARIANTS`` ("ViT-B_16", "R50+ViT-B_16", "testing", ...).
      **overrides: fields to change, e.g. ``image_size=384, num_classes=21843``.

    Raises:
      ValueError: unknown name (the message lists the known ones) or a bad field.
    """
    try:
        config = VARIANTS[name]
    except KeyError:
        raise ValueError(
            f"unknown model variant {name!r}; known: {', '.join(VARIANTS)}"
        ) from None
    return config.replace(**overrides) if overrides else config
