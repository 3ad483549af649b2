"""vitjax: Google's Vision Transformers in JAX/Flax, with every layer's attention in view."""

from vitjax.attention import (
    attention_rollout,
    cumulative_maps,
    head_maps,
    layer_maps,
    rollout_map,
    upsample,
)
from vitjax.checkpoint import CheckpointError, load_checkpoint
from vitjax.config import VARIANTS, ViTConfig, get_config
from vitjax.explain import class_maps
from vitjax.inference import forward, predict
from vitjax.io import load_maps, save_maps
from vitjax.maps import attention_maps, compute_maps
from vitjax.model import ViT
from vitjax.options import RolloutOptions
from vitjax.preprocess import load_image, preprocess

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "VARIANTS",
    "RolloutOptions",
    "ViT",
    "ViTConfig",
    "attention_maps",
    "attention_rollout",
    "class_maps",
    "compute_maps",
    "cumulative_maps",
    "forward",
    "get_config",
    "head_maps",
    "layer_maps",
    "load_checkpoint",
    "load_image",
    "load_maps",
    "predict",
    "preprocess",
    "rollout_map",
    "save_maps",
    "upsample",
]
