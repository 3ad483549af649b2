"""vitjax: Vision Transformers in JAX/Flax, with every layer's attention in view.

The public API (each name is documented in the README's API section). Everything
else is reached through its subpackage and may change between releases:

* ``vitjax.model``: the configuration, the Flax modules (named like Google's tree), the forward pass;
* ``vitjax.checkpoints``: reading ``.npz`` and ``.safetensors`` files, names -> files;
* ``vitjax.data``: images, datasets, labels, batching;
* ``vitjax.attribution``: rollout options, the method registry, maps, class maps, diagnostics,
  activations by name and interventions (``hooks``), the lens (``lens``), head importance (``importance``);
* ``vitjax.evaluation``: the resumable dataset runner, localisation metrics, the perturbation test;
* ``vitjax.viz``: figures, their notes, the visualize run;
* ``vitjax.cli``: the commands.
"""

from vitjax.attribution.class_maps import class_maps
from vitjax.attribution.diagnostics import attention_sinks, outlier_tokens
from vitjax.attribution.hooks import ablate_heads, patch_from, run_with_cache, run_with_hooks, scale_heads
from vitjax.attribution.importance import head_importance
from vitjax.attribution.lens import direct_logit_attribution, feature_lens, logit_lens
from vitjax.attribution.maps import attention_maps, compute_maps
from vitjax.attribution.methods import METHODS
from vitjax.attribution.options import RolloutOptions
from vitjax.attribution.rollout import (
    attention_rollout,
    cumulative_maps,
    head_maps,
    layer_maps,
    rollout_map,
    upsample,
)
from vitjax.checkpoints.load import load_checkpoint
from vitjax.data.images import load_image, preprocess
from vitjax.errors import CheckpointError, DatasetError
from vitjax.evaluation.localisation import evaluate
from vitjax.evaluation.perturbation import run_perturbation
from vitjax.io import load_maps, save_maps
from vitjax.model.config import VARIANTS, ViTConfig, get_config
from vitjax.model.forward import forward, predict
from vitjax.model.vit import ViT
from vitjax.version import __version__  # noqa: F401 (vitjax.__version__)
from vitjax.viz.drawing import overlay
from vitjax.viz.figures import summary_figure

__all__ = [
    # loading
    "CheckpointError",
    "VARIANTS",
    "ViT",
    "ViTConfig",
    "get_config",
    "load_checkpoint",
    # running
    "load_image",
    "preprocess",
    "forward",
    "predict",
    # maps
    "METHODS",
    "RolloutOptions",
    "attention_maps",
    "attention_rollout",
    "attention_sinks",
    "class_maps",
    "compute_maps",
    "cumulative_maps",
    "head_maps",
    "layer_maps",
    "outlier_tokens",
    "rollout_map",
    "upsample",
    # activations, interventions, the lens
    "run_with_cache",
    "run_with_hooks",
    "ablate_heads",
    "patch_from",
    "scale_heads",
    "logit_lens",
    "feature_lens",
    "direct_logit_attribution",
    "head_importance",
    # files and runs
    "DatasetError",
    "evaluate",
    "load_maps",
    "run_perturbation",
    "save_maps",
    # figures
    "overlay",
    "summary_figure",
]
