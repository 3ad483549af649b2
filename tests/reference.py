"""The PyTorch reference: timm's ViT loaded with timm's own Google-.npz loader.

Used only by tests (and the benchmark's PyTorch-practice row): attention is
captured with forward hooks on each block's ``attn_drop`` with fused attention
switched off, which is how the PyTorch tools obtain it.
"""

from __future__ import annotations

import numpy as np


def timm_model(config, path, *, act_layer="gelu_tanh"):
    """A timm VisionTransformer matching ``config``, weights from the .npz at ``path``."""
    import timm
    from timm.models.vision_transformer import VisionTransformer, _load_weights

    kw = {} if act_layer is None else {"act_layer": act_layer}
    if config.resnet_layers is not None:
        assert config.resnet_layers == (3, 4, 9) and config.hidden_size == 768
        model = timm.create_model("vit_base_r50_s16_384", pretrained=False, img_size=config.image_size,
                                  num_classes=config.num_classes or 0, **kw)
    else:
        model = VisionTransformer(
            img_size=config.image_size, patch_size=config.patch_size, num_classes=config.num_classes or 0,
            embed_dim=config.hidden_size, depth=config.num_layers, num_heads=config.num_heads,
            mlp_ratio=config.mlp_dim / config.hidden_size, **kw,
        )
    _load_weights(model, str(path))
    return model.eval()


def timm_forward(model, images: np.ndarray):
    """Runs ``images [B, H, W, 3]``; returns (logits, features before pre_logits, attention [B, L, H, N, N])."""
    import torch

    captured = []
    hooks = []
    for block in model.blocks:
        block.attn.fused_attn = False
        hooks.append(block.attn.attn_drop.register_forward_hook(
            lambda mod, inp, out: captured.append(out.detach().numpy())))
    try:
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
            tokens = model.forward_features(x)
            features = model.forward_head(tokens, pre_logits=True).numpy()
            logits = model.forward_head(tokens).numpy()
    finally:
        for h in hooks:
            h.remove()
    return logits, features, np.stack(captured, axis=1)
