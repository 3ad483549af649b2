"""What every benchmark module shares: paths, the timm reference, timing, CPU load, FLOPs, JSON.

Nothing here imports JAX or torch at module level (the PyTorch rows run in processes that must
not start JAX).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
PHOTOS = REPO.parent / "shared" / "data" / "caltech101-samples"  # this checkout's sample photos, if present

# Precision modes of the rows: vitjax's compute dtype and ViTConfig.matmul_precision; the torch
# rows take the mode's name (benchmarks.torch_rows.set_precision).
MODES = {
    "float32": {"dtype": "float32", "matmul_precision": "float32"},  # exact: no TF32 anywhere
    "tensorfloat32": {"dtype": "float32", "matmul_precision": "tensorfloat32"},
    "bfloat16": {"dtype": "bfloat16", "matmul_precision": "bfloat16"},
}

NOTE_RANDOM = (
    "Weights are random (vitjax.checkpoints.synthetic.random_checkpoint, realistic scale, peaked attention), "
    "not trained: throughput does not depend on the values, but the bfloat16 fidelity of maps and "
    "top-5 classes on a trained model can differ, so treat fidelity numbers as indicative."
)


def reference():
    """The tests' timm reference (``tests/reference.py``), the one both tests and benchmarks use.

    Loaded from its file under the name ``vitjax_timm_reference`` so that ``tests/`` need not be
    on ``sys.path``. Provides ``timm_model(config, path, act_layer=...)``, ``timm_forward``,
    ``attention_hooks`` and ``torch_device``.
    """
    name = "vitjax_timm_reference"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "tests" / "support" / "reference.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def config_namespace(cfg: Dict[str, Any]):
    """A ViTConfig-like object (attribute access) from :func:`config_dict`'s output, without JAX."""
    import types

    return types.SimpleNamespace(**{**cfg, "image_size": tuple(cfg["image_size"]),
                                    "patch_size": tuple(cfg["patch_size"]), "grid": tuple(cfg["grid"])})


def config_dict(config) -> Dict[str, Any]:
    """A ViTConfig as a JSON-able dict, with its derived ``grid`` and ``num_tokens``."""
    d = dataclasses.asdict(config)
    d["grid"] = list(config.grid)
    d["num_tokens"] = int(config.num_tokens)
    return d


# --- model arithmetic ------------------------------------------------------------------------


def model_flops(config) -> Dict[str, Any]:
    """FLOPs per image of a ViT's matrix products (2 x multiply-accumulates).

    ``config`` is a :class:`vitjax.ViTConfig` or :func:`config_dict`'s output. Per image:
    L x (QKV and output projections 4 N D^2 + attention logits and weighted sum 2 N^2 D + MLP
    2 N D M) + patch embedding (gh gw ph pw C_in D) + head (D C). Softmax, norms, GELU, the
    rollout and the hybrid's ResNet stem (``stem_counted`` False) are not counted.
    ViT-B/16 at 224 px: 35.13 GFLOP.
    """
    c = config if isinstance(config, dict) else config_dict(config)
    gh, gw = c["grid"]
    n = c["num_tokens"]
    d, m, layers = c["hidden_size"], c["mlp_dim"], c["num_layers"]
    ph, pw = c["patch_size"]
    in_ch = 3 if c.get("resnet_layers") is None else 64 * c.get("resnet_width", 1) * 16
    per_layer = {"qkv_out": 4 * n * d * d, "attention": 2 * n * n * d, "mlp": 2 * n * d * m}
    patch = gh * gw * ph * pw * in_ch * d
    rep = c.get("representation_size") or 0
    head = d * rep + (rep or d) * (c.get("num_classes") or 0)
    macs = layers * sum(per_layer.values()) + patch + head
    return {
        "gflop_per_image": 2 * macs / 1e9,
        "gflop_per_image_no_head": 2 * (macs - head) / 1e9,
        "per_layer_gflop": {k: 2 * v / 1e9 for k, v in per_layer.items()},
        "patch_embedding_gflop": 2 * patch / 1e9,
        "head_gflop": 2 * head / 1e9,
        "tokens": n,
        "stem_counted": c.get("resnet_layers") is None,
    }


# --- process and machine ---------------------------------------------------------------------


def num_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def status_mb(field: str) -> Optional[float]:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def reset_peak_rss() -> bool:
    """Resets the process's RSS high-water mark (Linux ``clear_refs`` 5); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or "unknown"


def cpu_has_bf16() -> bool:
    """Native bfloat16 arithmetic on this CPU (AVX512-BF16 or AMX-BF16)."""
    return bool(set((_cpuinfo("flags") or "").split()) & {"avx512_bf16", "amx_bf16"})


def _cpuinfo(field: str) -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_busy() -> Optional[tuple]:
    """(busy, total) jiffies of all CPUs from /proc/stat, or None."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals) - idle, sum(vals)


def _own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class CpuWatch:
    """Share of the machine's CPU time used by OTHER processes while a block runs (``foreign``)."""

    def __enter__(self):
        self.t, self.own, self.stat = time.perf_counter(), _own_cpu_s(), _cpu_busy()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t
        stat = _cpu_busy()
        self.own_util = (_own_cpu_s() - self.own) / max(wall, 1e-9) / num_cores()
        self.foreign = None  # unknown for windows too short for /proc/stat's clock ticks
        if self.stat and stat and stat[1] > self.stat[1] and wall >= 0.5:
            busy = (stat[0] - self.stat[0]) / (stat[1] - self.stat[1])
            self.foreign = max(0.0, busy - self.own_util)
        return False


def background_load(seconds: float = 1.0) -> Optional[float]:
    """Fraction of all CPUs busy with other processes over ``seconds`` (this one sleeps)."""
    a = _cpu_busy()
    time.sleep(seconds)
    b = _cpu_busy()
    if not a or not b or b[1] <= a[1]:
        return None
    return (b[0] - a[0]) / (b[1] - a[1])


def wait_for_idle(max_wait: float, threshold: float = 0.25, log=None) -> Optional[float]:
    """Waits (at most ``max_wait`` s) until other processes use < ``threshold`` of the CPUs."""
    load = background_load(0.5)
    t0 = time.perf_counter()
    announced = False
    while load is not None and load > threshold and time.perf_counter() - t0 < max_wait:
        if log and not announced:
            log(f"  (machine busy: {100 * load:.0f}% of CPUs used by others; waiting up to {max_wait:.0f} s)")
            announced = True
        time.sleep(2.0)
        load = background_load(1.0)
    return load


# --- timing ----------------------------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    return float(np.median(np.asarray(xs, dtype=np.float64)))


def time_calls(fn: Callable[[], Any], sync: Callable[[Any], Any], reps: int, warmup: int) -> Dict[str, Any]:
    """Times ``sync(fn())``: the first call apart, ``warmup`` untimed calls, then ``reps`` timed.

    ``sync`` must wait for the device (``jax.block_until_ready``, ``torch.cuda.synchronize``)
    and return its argument. Returns seconds: ``first_call_s``, ``times_s``, ``median_s``,
    ``min_s``; ``steady_peak_rss_mb`` (RSS high-water mark of the timed calls alone, MiB),
    ``cpu_util`` and ``foreign_cpu`` (shares of all CPUs), and ``last`` (the last output).
    """
    t = time.perf_counter()
    out = sync(fn())
    first = time.perf_counter() - t
    for _ in range(warmup):
        out = sync(fn())
    del out
    reset = reset_peak_rss()
    times = []
    with CpuWatch() as w:
        for _ in range(max(1, reps)):
            t = time.perf_counter()
            out = sync(fn())
            times.append(time.perf_counter() - t)
    return {"first_call_s": first, "times_s": times, "median_s": median(times), "min_s": float(min(times)),
            "steady_peak_rss_mb": status_mb("VmHWM") if reset else None, "cpu_util": w.own_util,
            "foreign_cpu": w.foreign, "last": out}


def timing_fields(batch: int, r: Dict[str, Any], load_s: float) -> Dict[str, Any]:
    """The row fields every library reports, from :func:`time_calls`' result ``r``."""
    return {"images_per_s": batch / r["median_s"], "median_batch_s": r["median_s"], "min_batch_s": r["min_s"],
            "times_s": r["times_s"], "first_call_s": r["first_call_s"], "load_s": load_s,
            "steady_peak_rss_mb": r["steady_peak_rss_mb"], "cpu_util": r["cpu_util"], "foreign_cpu": r["foreign_cpu"]}


def images(batch: int, size, seed: int = 0) -> np.ndarray:
    """Fixed random images ``[B, H, W, 3]`` float32 in [-1, 1]."""
    h, w = size
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (batch, h, w, 3)).astype(np.float32)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel().astype(np.float64) - a.mean()
    b = b.ravel().astype(np.float64) - b.mean()
    den = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else (1.0 if np.allclose(a, b) else 0.0)


# --- output ----------------------------------------------------------------------------------


def json_default(o):
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def write_json(obj: Dict[str, Any], path: os.PathLike) -> Path:
    """Writes ``obj`` as indented JSON atomically, replacing an existing file (vitjax's writer)."""
    try:
        from vitjax.io import write_atomic
    except ImportError:  # before vitjax/io.py existed the writer lived in mapsio
        from vitjax.io import write_atomic

    data = (json.dumps(obj, indent=1, default=json_default) + "\n").encode()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, data, overwrite=True)
