"""The PyTorch reference: timm's ViT loaded with timm's own Google-.npz loader.

The one timm reference of the repository: the tests import it (``from support.reference import ...``)
and the benchmarks load this file too (``benchmarks.common.reference``). Attention is captured
with forward hooks on each block's ``attn_drop`` with fused attention switched off, which is how
the PyTorch tools obtain it. Works on whatever device the model was moved to.
"""

from __future__ import annotations

import contextlib
import re
from typing import Iterator, List

import numpy as np


def timm_model(config, path, *, act_layer="gelu_tanh"):
    """A timm VisionTransformer matching ``config``, weights from the .npz at ``path``, in eval mode.

    ``config`` is a :class:`vitjax.ViTConfig` (or any object with its attributes). Hybrids are
    timm's ``vit_base_r50_s16_384`` with ``config.num_layers`` blocks. ``act_layer`` is timm's
    activation name (``"gelu_tanh"`` = Google's tanh GELU; None = timm's default erf GELU).
    """
    import timm
    from timm.models.vision_transformer import VisionTransformer, _load_weights

    kw = {} if act_layer is None else {"act_layer": act_layer}
    if config.resnet_layers is not None:
        assert tuple(config.resnet_layers) == (3, 4, 9) and config.hidden_size == 768
        model = timm.create_model("vit_base_r50_s16_384", pretrained=False, img_size=config.image_size,
                                  num_classes=config.num_classes or 0, depth=config.num_layers, **kw)
    else:
        model = VisionTransformer(
            img_size=config.image_size, patch_size=config.patch_size, num_classes=config.num_classes or 0,
            embed_dim=config.hidden_size, depth=config.num_layers, num_heads=config.num_heads,
            mlp_ratio=config.mlp_dim / config.hidden_size, **kw,
        )
    _load_weights(model, str(path))
    return model.eval()


def torch_device(model):
    """The device of ``model``'s parameters (``cpu`` or ``cuda:N``)."""
    return next(model.parameters()).device


@contextlib.contextmanager
def attention_hooks(model) -> Iterator[List]:
    """Switches fused attention off and hooks every block's ``attn.attn_drop``.

    Yields a list that each forward pass appends L tensors ``[B, H, N, N]`` to (on the model's
    device, in the compute dtype; clear it between passes). Hooks are removed and fused
    attention restored on exit.
    """
    captured: List = []
    hooks, fused = [], []
    for block in model.blocks:
        fused.append(block.attn.fused_attn)
        block.attn.fused_attn = False
        hooks.append(block.attn.attn_drop.register_forward_hook(
            lambda mod, inp, out: captured.append(out.detach())))
    try:
        yield captured
    finally:
        for h in hooks:
            h.remove()
        for block, f in zip(model.blocks, fused, strict=True):
            block.attn.fused_attn = f


def timm_forward(model, images: np.ndarray):
    """Runs ``images [B, H, W, 3]``; returns (logits, features before pre_logits, attention [B, L, H, N, N]).

    NumPy float32 outputs; the computation runs on the model's device in float32.
    """
    import torch

    with attention_hooks(model) as captured, torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(torch_device(model))
        tokens = model.forward_features(x)
        features = model.forward_head(tokens, pre_logits=True).float().cpu().numpy()
        logits = model.forward_head(tokens).float().cpu().numpy()
        attention = torch.stack(captured, dim=1).float().cpu().numpy()
    return logits, features, attention


# --------------------------------------------------------------------------- random torch ViTs and their input


def randomize(model, seed=0, peak=2.0):
    """Realistic random weights for any torch ViT (timm or HF), in place; returns the model in eval mode.

    LayerScale N(0.5, 0.1), LayerNorm scales N(1, 0.1), biases N(0, 0.05), matrices N(0, 1/d_in) with
    the query and key rows at N(0, peak/d_in) so attention is peaked, convolutions N(0, 1/fan_in),
    tokens and position embeddings N(0, 0.1).
    """
    import torch

    g = torch.Generator().manual_seed(seed)

    def normal(shape, std, mean=0.0):
        return torch.randn(shape, generator=g) * std + mean

    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if p.ndim == 1 and leaf in ("gamma", "lambda1"):
                p.copy_(normal(p.shape, 0.1, 0.5))  # LayerScale
            elif p.ndim == 1 and leaf == "weight":
                p.copy_(normal(p.shape, 0.1, 1.0))  # LayerNorm scale
            elif leaf == "bias":
                p.copy_(normal(p.shape, 0.05))
            elif p.ndim == 2:
                d_in = p.shape[1]
                w = normal(p.shape, d_in**-0.5)
                if re.search(r"(qkv|query|key|q_proj|k_proj)\.weight$", name):
                    rows = p.shape[0] if "qkv" not in name else 2 * p.shape[0] // 3  # q and k parts of qkv
                    w[:rows] = normal((rows, d_in), (peak / d_in) ** 0.5)
                p.copy_(w)
            elif p.ndim == 4:
                p.copy_(normal(p.shape, (p.shape[1] * p.shape[2] * p.shape[3]) ** -0.5))
            else:  # class/register tokens, position embeddings, mask token
                p.copy_(normal(p.shape, 0.1))
    return model.eval()


def photo_batch(size, rng):
    """matplotlib's portrait (PIL bilinear, ImageNet-normalised) and uniform noise: [2, H, W, 3] float32."""
    from matplotlib import cbook
    from PIL import Image

    from vitjax.checkpoints.safetensors import IMAGENET_MEAN

    h, w = (size, size) if isinstance(size, int) else size
    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        x = np.asarray(im.convert("RGB").resize((w, h), Image.BILINEAR), np.float32) / 255.0
    photo = (x - np.array(IMAGENET_MEAN, np.float32)) / np.float32(0.226)
    noise = rng.uniform(-2, 2, photo.shape).astype(np.float32)
    return np.stack([photo, noise]).astype(np.float32)


def nchw(images):
    """``[B, H, W, C]`` NumPy -> a contiguous ``[B, C, H, W]`` torch tensor."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2)))
