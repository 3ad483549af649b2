"""Flax linen modules of the Vision Transformer, named like Google's checkpoint tree.

Follows Google's ``vit_jax/models_vit.py`` and ``vit_jax/models_resnet.py``
(Dosovitskiy et al., ICLR 2021). Module names are the ones stored in the
original ``.npz`` files (pre-Linen names such as ``MultiHeadDotProductAttention_1``
and ``MlpBlock_3``), so a checkpoint loads as a plain tree, with no renaming.

Every attention module sows its probabilities (after softmax, before any
dropout) as ``intermediates/.../MultiHeadDotProductAttention_1/attention``,
shape ``[B, H, N, N]`` (query rows, key columns; token 0 is the class token),
and passes them through ``perturb("attention", ...)`` so ``jax.grad`` can reach
them. Nothing is stored unless the ``intermediates`` collection is mutable.

Every dot product and convolution is computed with ``config.precision``
(``Precision.HIGHEST`` unless ``matmul_precision`` says otherwise), whatever
the global ``jax_default_matmul_precision`` is, so float32 means float32 on
GPUs and TPUs too.

The model knows nothing of attention maps: the memory-lean maps of
:mod:`vitjax.attribution.maps` intercept the attention modules' calls from outside
(``flax.linen.intercept_methods``). Four values that no submodule call carries
pass through :meth:`HookPoints.hook_point` (the identity; an interceptor sees and
may replace them): the attention scores before the softmax and the
probabilities (``MultiHeadDotProductAttention_1``), the residual stream between
attention and MLP (``Encoder1DBlock``), and the ``pre_logits`` output after its
tanh (``ViT``). :mod:`vitjax.attribution.hooks` names every site.

Shapes: B batch, N tokens (class token, registers, then patches), D width,
H heads, L layers.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from vitjax.model.config import ViTConfig

__all__ = ["ViT", "Encoder", "Encoder1DBlock", "HookPoints", "MultiHeadDotProductAttention", "MlpBlock", "LayerScale"]

ATTENTION = "attention"  # name of the sown / perturbed attention probabilities
FEATURES = "features"  # name of the sown class-token features before pre_logits

Dtype = Any
Precision = Any


def _layer_norm(name: str, dtype: Dtype, eps: float = 1e-6) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, dtype=dtype, use_fast_variance=False, name=name)


class HookPoints(nn.Module):
    """Base of the modules with values no submodule call carries: ``hook_point(name, value)`` returns ``value``.

    It holds no parameters and adds no operation; it is a method so that
    ``flax.linen.intercept_methods`` sees each call (``context.method_name ==
    "hook_point"``, ``args == (name, value)``) and may return another value.
    """

    def hook_point(self, name: str, value):
        del name
        return value


class MultiHeadDotProductAttention(HookPoints):
    """Self-attention whose probabilities are sown and perturbable.

    Parameters as in the checkpoints: ``query|key|value/kernel [D, H, D/H]``,
    ``.../bias [H, D/H]``, ``out/kernel [H, D/H, D]``, ``out/bias [D]``.
    Logits are computed as ``(q / sqrt(D/H)) . k`` and the softmax in float32.
    Returns ``(out [B, N, D], probabilities [B, H, N, N] float32)``; with ``rows=R`` only the
    first ``R`` tokens query (keys and values come from all ``N``): ``(out [B, R, D],
    probabilities [B, H, R, N])``, the same values as those rows of the full call.
    """

    num_heads: int
    dtype: Dtype = jnp.float32
    precision: Precision = lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x, rows: Optional[int] = None):  # x: [B, N, D]
        d = x.shape[-1]
        head_dim = d // self.num_heads

        def proj(name, tokens):
            return nn.DenseGeneral((self.num_heads, head_dim), dtype=self.dtype, precision=self.precision,
                                   name=name)(tokens)

        q = proj("query", x if rows is None else x[:, :rows])  # [B, N (R), H, hd]
        k, v = proj("key", x), proj("value", x)  # [B, N, H, hd]
        q = q / jnp.sqrt(head_dim).astype(q.dtype)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=self.precision,
                            preferred_element_type=jnp.float32)
        logits = self.hook_point("attn_scores", logits)
        probs = jax.nn.softmax(logits, axis=-1)  # [B, H, N, N] float32
        probs = self.hook_point("pattern", probs)
        probs = self.perturb(ATTENTION, probs)
        self.sow("intermediates", ATTENTION, probs)
        # reduce_precision to float32 is the identity on these float32 values; it keeps XLA:CPU from
        # fusing q.k -> softmax -> p.v into one YNNPACK subgraph that ran ~1.4x slower at B = 8
        # (measured with the benchmark, jax 0.10.2). Logits are bit-identical with and without it.
        probs_v = lax.reduce_precision(probs, exponent_bits=8, mantissa_bits=23).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs_v, v, precision=self.precision)
        out = nn.DenseGeneral(d, axis=(-2, -1), dtype=self.dtype, precision=self.precision, name="out")(out)
        return out, probs


class MlpBlock(nn.Module):
    """Dense -> GELU -> Dense (``Dense_0``, ``Dense_1``)."""

    mlp_dim: int
    gelu_approximate: bool = True
    dtype: Dtype = jnp.float32
    precision: Precision = lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        y = nn.Dense(self.mlp_dim, dtype=self.dtype, precision=self.precision, name="Dense_0")(x)
        y = nn.gelu(y, approximate=self.gelu_approximate)
        return nn.Dense(x.shape[-1], dtype=self.dtype, precision=self.precision, name="Dense_1")(y)


class LayerScale(nn.Module):
    """Per-channel scale ``x * scale [D]`` (Touvron et al., CaiT, ICCV 2021; used by DINOv2)."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.constant(1e-5), (x.shape[-1],))
        return x * scale.astype(self.dtype)[None, None, :]


class Encoder1DBlock(HookPoints):
    """Pre-LayerNorm block: ``x + ls1(MHA(LN_0(x)))``, then ``x + ls2(MLP(LN_2(x)))``.

    LayerScale (``ls1``, ``ls2``) only with ``config.layer_scale``.
    Returns ``(x [B, N, D], attention probabilities [B, H, N, N] float32)``. ``rows=R``: the
    output of the first ``R`` tokens only, ``(x [B, R, D], [B, H, R, N])``, for a reader that
    needs no more (head importance reads the class token of the last block); the model never
    passes it.
    """

    config: ViTConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, rows: Optional[int] = None):
        c = self.config
        y = _layer_norm("LayerNorm_0", self.dtype, c.layer_norm_eps)(x)
        y, probs = MultiHeadDotProductAttention(
            c.num_heads, dtype=self.dtype, precision=c.precision, name="MultiHeadDotProductAttention_1"
        )(y, rows)
        if c.layer_scale:
            y = LayerScale(self.dtype, name="ls1")(y)
        if rows is not None:
            x = x[:, :rows]
        x = self.hook_point("resid_mid", x + y)
        y = _layer_norm("LayerNorm_2", self.dtype, c.layer_norm_eps)(x)
        y = MlpBlock(c.mlp_dim, c.gelu_approximate, self.dtype, c.precision, name="MlpBlock_3")(y)
        if c.layer_scale:
            y = LayerScale(self.dtype, name="ls2")(y)
        return x + y, probs


class Encoder(nn.Module):
    """Position embedding, registers, L blocks, final LayerNorm (``Transformer`` in the files).

    ``x`` is ``[B, P, D]``: the class token (if any) and the patch tokens; the
    position embedding ``[1, P, D]`` is added to them, then the register tokens
    ``[B, R, D]`` (if any) are inserted after the class token, with no position
    (as Hugging Face ``Dinov2WithRegisters`` and timm do).
    """

    config: ViTConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, registers=None):  # x: [B, P, D]
        c = self.config
        x = AddPositionEmbs(name="posembed_input")(x)
        if registers is not None:
            k = 1 if c.class_token else 0
            x = jnp.concatenate([x[:, :k], registers.astype(x.dtype), x[:, k:]], axis=1)
        for layer in range(c.num_layers):
            x, _ = Encoder1DBlock(c, self.dtype, name=f"encoderblock_{layer}")(x)
        return _layer_norm("encoder_norm", self.dtype, c.layer_norm_eps)(x)


class AddPositionEmbs(nn.Module):
    """Adds the learned ``pos_embedding [1, P, D]`` (class-token slot first)."""

    @nn.compact
    def __call__(self, x):
        pe = self.param("pos_embedding", nn.initializers.normal(0.02), (1,) + x.shape[1:])
        return x + pe.astype(x.dtype)


def _weight_standardize(w, eps=1e-5):
    """Google's weight standardisation: (w - mean) / (std + eps) over H, W, I."""
    w = w - jnp.mean(w, axis=(0, 1, 2), keepdims=True)
    return w / (jnp.std(w, axis=(0, 1, 2), keepdims=True) + eps)


class StdConv(nn.Conv):
    """Convolution whose kernel is weight-standardised at use time (no bias)."""

    def param(self, name, *args, **kwargs):
        p = super().param(name, *args, **kwargs)
        return _weight_standardize(p) if name == "kernel" else p


def _group_norm(name: str, dtype: Dtype) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, epsilon=1e-6, dtype=dtype, use_fast_variance=False, name=name)


class ResidualUnit(nn.Module):
    """Bottleneck ResNet-v2 unit (conv1 1x1, conv2 3x3, conv3 1x1, GroupNorm each)."""

    features: int
    strides: tuple = (1, 1)
    dtype: Dtype = jnp.float32
    precision: Precision = lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        def conv(f, k, s, name):
            return StdConv(f, k, s, use_bias=False, padding="SAME", dtype=self.dtype, precision=self.precision,
                           name=name)

        residual = x
        if x.shape[-1] != self.features * 4 or tuple(self.strides) != (1, 1):
            residual = conv(self.features * 4, (1, 1), self.strides, "conv_proj")(x)
            residual = _group_norm("gn_proj", self.dtype)(residual)
        y = nn.relu(_group_norm("gn1", self.dtype)(conv(self.features, (1, 1), (1, 1), "conv1")(x)))
        y = conv(self.features, (3, 3), self.strides, "conv2")(y)
        y = nn.relu(_group_norm("gn2", self.dtype)(y))
        y = _group_norm("gn3", self.dtype)(conv(self.features * 4, (1, 1), (1, 1), "conv3")(y))
        return nn.relu(residual + y)


class ResNetStage(nn.Module):
    """``units`` residual units (``unit1`` ... ``unitK``); the first one strides."""

    units: int
    features: int
    first_stride: tuple = (1, 1)
    dtype: Dtype = jnp.float32
    precision: Precision = lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        for unit in range(self.units):
            stride = self.first_stride if unit == 0 else (1, 1)
            x = ResidualUnit(self.features, stride, self.dtype, self.precision, name=f"unit{unit + 1}")(x)
        return x


class ViT(HookPoints):
    """Vision Transformer (and R50 hybrid) with class-token readout.

    Call: ``out = ViT(config).apply({"params": params}, images)`` with
    ``images [B, H, W, 3]`` float32, preprocessed as the family expects
    (:func:`vitjax.preprocess`), at ``config.image_size``. ``out`` is
    ``logits [B, num_classes]``; a model without ``head`` returns the
    features instead: ``[B, representation_size]`` after ``pre_logits``, or
    the class-token features after the final LayerNorm ``[B, D]`` (DINOv2).
    With ``mutable=["intermediates"]`` every layer's attention
    ``[B, H, N, N]`` is sown, and the class-token features after the final
    LayerNorm (``[B, D]``) as ``intermediates/features``.

    ``dtype`` is the compute dtype (e.g. ``jnp.bfloat16``); parameters stay
    float32 and the softmax is computed in float32. ``config.matmul_precision``
    sets the precision of every dot product and convolution.
    """

    config: ViTConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images):
        c = self.config
        hi = c.precision
        x = images.astype(self.dtype)
        if c.resnet_layers is not None:
            width = 64 * c.resnet_width
            x = StdConv(width, (7, 7), (2, 2), use_bias=False, padding="SAME",
                        dtype=self.dtype, precision=hi, name="conv_root")(x)
            x = nn.relu(_group_norm("gn_root", self.dtype)(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
            for stage, units in enumerate(c.resnet_layers):
                stride = (1, 1) if stage == 0 else (2, 2)
                x = ResNetStage(units, width * 2**stage, stride, self.dtype, hi, name=f"block{stage + 1}")(x)
        x = nn.Conv(c.hidden_size, c.patch_size, c.patch_size, padding="VALID",
                    dtype=self.dtype, precision=hi, name="embedding")(x)
        b, gh, gw, d = x.shape
        x = x.reshape(b, gh * gw, d)  # [B, gh*gw, D]
        if c.class_token:
            cls = self.param("cls", nn.initializers.zeros, (1, 1, d))
            x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, d)), x], axis=1)
        registers = None
        if c.num_registers:
            reg = self.param("reg", nn.initializers.zeros, (1, c.num_registers, d))
            registers = jnp.broadcast_to(reg, (b, c.num_registers, d))
        x = Encoder(c, self.dtype, name="Transformer")(x, registers)
        x = x[:, 0] if c.class_token else jnp.mean(x[:, c.num_prefix_tokens:], axis=1)  # [B, D]
        self.sow("intermediates", FEATURES, x)
        if c.representation_size is not None:
            x = jnp.tanh(nn.Dense(c.representation_size, dtype=self.dtype, precision=hi, name="pre_logits")(x))
            x = self.hook_point("pre_logits", x)
        if c.num_classes:
            x = nn.Dense(c.num_classes, dtype=self.dtype, precision=hi, name="head")(x)
        return x.astype(jnp.float32)
