"""vitjax: Google's Vision Transformers in JAX/Flax, with every layer's attention in view."""

from vitjax.checkpoint import CheckpointError, load_checkpoint
from vitjax.config import VARIANTS, ViTConfig, get_config
from vitjax.inference import forward, predict
from vitjax.model import ViT
from vitjax.preprocess import load_image, preprocess

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "VARIANTS",
    "ViT",
    "ViTConfig",
    "forward",
    "get_config",
    "load_checkpoint",
    "load_image",
    "predict",
    "preprocess",
]
