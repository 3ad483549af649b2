"""Memory budgets: how much a batch of images needs, how much the machine can give, and the batch that fits.

Every entry point (the visualize run, the dataset runner, the perturbation test)
sizes its batches here before anything is allocated: :func:`estimate_bytes`
gives the peak memory of one workload for a model at its image size and a batch
size, :func:`available_bytes` the memory free now (host RAM, or the device's own
memory on a GPU/TPU), :func:`default_budget` a safe share of it, and
:func:`plan_batch_size` the largest batch up to the requested one that fits, or a
one-line :class:`vitjax.errors.MemoryBudgetError` naming the image size, the
estimate and the budget when not even one image fits.

The estimate is an upper bound built from the shapes (float32, 4 bytes), per
image (FACTS §9; Abnar & Zuidema's rollout keeps the attention of every layer):

* the attention kept for maps, ``L x H x N x N`` (twice: the sown
  probabilities and the per-head reductions read from them), and the fused
  per-layer matrices ``L x N x N`` (twice: factors and products);
* one layer's transient attention (scores, probabilities, softmax temporary)
  ``3 x H x N x N`` and activations ``N x (4 D + 2 M)``;
* the input image and its copy on the device, the maps returned;
* for gradients (class maps, the perturbation test): every layer's
  activations and attention kept for the backward pass, and their cotangents;
* for head importance (:mod:`vitjax.attribution.importance`): the clean cache, every block's
  input and every head's output ``2 x L x N x D`` (twice: recorded and stacked), one layer's
  transients and one ablation in flight per image; the ablations the budget lets run at once
  beyond that and a stacked copy of the blocks' parameters are counted once (``ablations``).

Checked against XLA's own buffer assignment (``compiled.memory_analysis()``)
in ``tests/model/test_memory.py`` (the estimate is never below it) and against
the measured peak RSS in ``benchmarks/memory.py``.
"""

from __future__ import annotations

import math
import operator
import os
from typing import Optional

from vitjax.errors import MemoryBudgetError
from vitjax.model.config import ViTConfig

__all__ = ["WORKLOADS", "available_bytes", "default_budget", "estimate_bytes", "format_bytes", "parse_bytes",
           "plan_batch_size"]

#: What a batch computes: ``"forward"`` (logits and attention, :func:`vitjax.forward`), ``"maps"`` (two-step
#: :func:`vitjax.compute_maps`), ``"lean"`` (lean maps), ``"class"`` (maps plus :func:`vitjax.class_maps`: a
#: ``jax.vjp``), ``"evaluate"`` (the dataset runner's maps, upsampled scoring maps and attention distances),
#: ``"perturbation"`` (class maps of several methods and the perturbed forward passes), ``"importance"`` (head
#: importance, :func:`vitjax.head_importance`: the clean cache and the single-head ablations).
WORKLOADS = ("forward", "maps", "lean", "class", "evaluate", "perturbation", "importance")

#: The share of the available memory a run uses by default: the rest is left to XLA's own buffers,
#: compiled code, the loader threads and everything else on the machine.
DEFAULT_SHARE = 0.5
#: Python, NumPy, JAX and XLA themselves (measured: ~0.45 GB RSS after importing vitjax and compiling a
#: ViT on CPU), counted once per process.
RUNTIME_BYTES = 600 * 2**20

_F32 = 4


def _per_image(config: ViTConfig, workload: str, *, scale: int = 4, methods: int = 5, steps: int = 9) -> int:
    """Bytes one more image adds to the peak of ``workload`` (see the module docstring)."""
    n, d, m = config.num_tokens, config.hidden_size, config.mlp_dim
    layers, heads = config.num_layers, config.num_heads
    h, w = config.image_size
    pixels = h * w * 3 * 2  # the batch on the host and on the device
    att_layer = heads * n * n
    transient = 3 * att_layer + n * (4 * d + 2 * m)
    gh, gw = config.grid
    maps = (3 * layers + 2) * gh * gw + layers * heads * gh * gw * 2
    if config.resnet_layers:  # the hybrid stem: a stride-2 root map of 64 * width channels, then stages to 1024
        transient = max(transient, (h // 2) * (w // 2) * 64 * config.resnet_width * 4)
    kept = 2 * layers * att_layer + 2 * layers * n * n
    if workload == "forward":
        per = layers * att_layer + transient
    elif workload == "maps":
        per = kept + transient + maps
    elif workload == "lean":
        per = transient + 2 * n * n + maps
    elif workload in ("class", "perturbation"):
        saved = layers * (2 * att_layer + n * (4 * d + 2 * m))  # residuals of the backward pass
        per = kept + transient + maps + 2 * saved  # + their cotangents
        if workload == "perturbation":
            per += methods * (h * w) * 2 + steps * pixels  # one map per method, perturbed copies
    elif workload == "evaluate":
        rh, rw = gh * scale, gw * scale
        per = kept + layers * att_layer + transient + maps + (2 * layers + 1) * rh * rw * 2
    elif workload == "importance":  # the clean cache (recorded, then stacked) and one ablation in flight
        per = 4 * layers * n * d + transient + (8 * n * d + 2 * n * m + 3 * att_layer)
    else:
        raise ValueError(f"workload must be one of {', '.join(WORKLOADS)}, got {workload!r}")
    return int((per + pixels) * _F32)


def estimate_bytes(config: ViTConfig, batch_size: int, workload: str = "maps", *, scale: int = 4,
                   methods: int = 5, steps: int = 9, ablations: int = 0, runtime: bool = True) -> int:
    """Upper bound of the peak memory of one batch of ``workload`` for ``config`` at its image size, in bytes.

    Args:
      config: the model (its ``image_size`` is the input size).
      batch_size: images per batch ``B`` (>= 1).
      workload: one of :data:`WORKLOADS`.
      scale: the dataset runner's scoring grid (``evaluate``).
      methods, steps: maps and perturbation steps per image (``perturbation``).
      ablations: ``importance``: bytes of the ablations in flight beyond one per image (the part of
        :func:`vitjax.attribution.importance.chunk_size`'s budget a batch can fill), counted once.
      runtime: add :data:`RUNTIME_BYTES` and the parameters (host and device copies; ``importance``: also
        the blocks' parameters stacked, and ``ablations``).

    Returns:
      bytes (int): ``runtime + 2 x params + B x per-image`` (``importance``: ``+ params + ablations``).

    Raises:
      ValueError: an unknown workload or a batch size below 1.
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    fixed = RUNTIME_BYTES + 2 * _F32 * _param_count(config) if runtime else 0
    if runtime and workload == "importance":
        fixed += _F32 * _param_count(config) + max(0, int(ablations))
    return fixed + int(batch_size) * _per_image(config, workload, scale=scale, methods=methods, steps=steps)


def _param_count(config: ViTConfig) -> int:
    """Parameters of the transformer (the hybrid stem's ~1/4 of R50 counted as 25 M)."""
    d, m, layers = config.hidden_size, config.mlp_dim, config.num_layers
    ph, pw = config.patch_size
    block = 4 * d * d + 2 * d * m + 9 * d + m
    head = (config.num_classes or 0) * (config.representation_size or d)
    stem = 25_000_000 if config.resnet_layers else 3 * ph * pw * d
    return stem + layers * block + config.num_tokens * d + head


def available_bytes(device=None) -> int:
    """Memory free now, in bytes: the device's (``bytes_limit - bytes_in_use``) on an accelerator, else the host's.

    The host's is ``MemAvailable`` of ``/proc/meminfo`` (Linux), else free physical pages
    (``os.sysconf``); on an accelerator the smaller of the device's free memory and the host's.
    """
    host = _host_available()
    stats = None
    try:
        if device is None:
            import jax

            device = jax.local_devices()[0]
        stats = device.memory_stats() if getattr(device, "platform", "cpu") != "cpu" else None
    except Exception:  # noqa: BLE001 (a backend without memory statistics)
        stats = None
    if stats and stats.get("bytes_limit"):
        return min(host, int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)))
    return host


def _host_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30  # unknown: assume a small machine


def default_budget() -> int:
    """:data:`DEFAULT_SHARE` of :func:`available_bytes`."""
    return int(DEFAULT_SHARE * available_bytes())


def format_bytes(n: float) -> str:
    """``1536 * 2**20`` -> ``"1.5 GB"`` (binary units, one decimal)."""
    for unit, size in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def parse_bytes(text: str) -> int:
    """``"12G"``, ``"12 GB"``, ``"512M"``, ``"3.5g"``, ``"1000000"`` -> bytes (binary units: G = 2**30).

    Raises:
      ValueError: anything else, or a size that is not positive and finite.
    """
    s = str(text).strip().upper().replace(" ", "")
    units = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "M": 2**20, "MB": 2**20, "G": 2**30, "GB": 2**30,
             "T": 2**40, "TB": 2**40}
    num = s.rstrip("KMGTB")
    unit = s[len(num):]
    try:
        value = float(num)
    except ValueError:
        value = float("nan")
    if unit not in units or not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a memory size such as 12G, 512M or 4.5GB, got {text!r}")
    return int(value * units[unit])


def plan_batch_size(config: ViTConfig, requested: int, *, workload: str, budget: Optional[int] = None,
                    num_images: Optional[int] = None, multiple: int = 1, **kw) -> int:
    """The largest batch size up to ``requested`` (and to ``num_images``) whose estimate fits ``budget``.

    Args:
      config: the model at its input size.
      requested: the upper bound the user asked for (``--batch-size``).
      workload: see :data:`WORKLOADS`; ``kw`` goes to :func:`estimate_bytes`.
      budget: bytes (default :func:`default_budget`).
      num_images: no batch is larger than the images there are (rounded up to ``multiple``).
      multiple: the batch is a multiple of this (the local device count).

    Returns:
      int, a multiple of ``multiple``, at least ``multiple``.

    Raises:
      ValueError: ``requested`` is not a positive integer.
      MemoryBudgetError: not even one batch of ``multiple`` images fits; one line naming the image
        size, the estimate and the budget, and what to change.
    """
    try:
        top = operator.index(requested)
    except TypeError:
        top = 0
    if isinstance(requested, bool) or top < 1:
        raise ValueError(f"batch_size must be a positive integer, got {requested!r}")
    budget = default_budget() if budget is None else int(budget)
    multiple = max(1, int(multiple))
    if num_images is not None:
        top = min(top, max(1, int(num_images)))
    top = -(-top // multiple) * multiple
    need = estimate_bytes(config, multiple, workload, **kw)
    if need > budget:
        h, w = config.image_size
        raise MemoryBudgetError(
            f"image size {h}x{w}: one batch of {multiple} needs about {format_bytes(need)} ({workload}), more than "
            f"the memory budget of {format_bytes(budget)}; use a smaller --image-size, a lean method, or a larger "
            "--memory-budget if the machine has the memory")
    fixed = estimate_bytes(config, 1, workload, **kw) - estimate_bytes(config, 1, workload, runtime=False, **kw)
    per = estimate_bytes(config, 1, workload, runtime=False, **kw)
    fits = max(multiple, (budget - fixed) // per // multiple * multiple)
    return int(min(top, fits))
