"""Throughput, memory and start-up benchmark: vitjax against the usual PyTorch practice.

Run it as ``python scripts/benchmark.py`` (see ``--help``); ``main(argv)`` is the entry point.
It measures, for one ViT (ViT-B/16 at 224 px by default) with random weights in Google's
``.npz`` layout (:func:`vitjax.synthetic.random_checkpoint`, no download):

* rows, each in a fresh child process so that its peak memory is its own:

  - ``vitjax capture``: :func:`vitjax.compute_maps` (two-step path): logits, every layer's
    attention inside, joint map (rollout), each layer's own and cumulative map, per-head maps;
  - ``vitjax lean``: the same with ``lean=True`` (rollout folded into the forward pass);
  - ``vitjax plain``: :func:`vitjax.predict` (logits only);
  - ``pytorch practice``: timm ``VisionTransformer`` (weights from the same ``.npz`` with timm's
    ``_load_weights``, tanh GELU as in Google's checkpoints), eager, ``fused_attn = False``,
    forward hooks on every block's ``attn.attn_drop`` collecting the attention, then the
    per-image rollout loop in torch (mean over heads, + I, rows normalised, left-multiplied,
    class row -> joint map; each layer's own and cumulative map and the per-head class rows
    too), under ``torch.no_grad()`` with as many threads as cores;

  at batch sizes 1, 8, 32 (and 256 on a GPU), float32 and, where the device computes it
  natively, bfloat16 (vitjax: ``load_checkpoint(..., dtype=jnp.bfloat16)``, softmax in float32;
  torch: ``torch.autocast``). Images/s is the batch size over the median of the timed
  repetitions (after the first call, timed apart as "first call": tracing + compilation + one
  run for vitjax); peak memory is the process's resident-set high-water mark on CPU (whole
  row, and during the timed repetitions alone) or ``peak_bytes_in_use`` /
  ``torch.cuda.max_memory_allocated`` on a GPU;
* the machine's dense matrix-multiply rate of both libraries in the same run (an ``n^3`` GEMM,
  jitted ``jnp.dot`` against ``torch.mm``, median of repetitions, measured before and after the
  rows) and every row's fraction of that roofline;
* the bfloat16 fidelity of the joint maps on real photographs (Pearson correlation per image
  against float32, and whether the top-5 classes agree);
* start-up of ``scripts/visualize.py`` for one image with an empty and with a warm compilation
  cache (``VITJAX_CACHE_DIR``), and the compile time of :func:`vitjax.predict` for larger
  models from abstract parameters (``jax.eval_shape``; no weights allocated).

FLOP count (:func:`model_flops`): 2 x the multiply-accumulates of every matrix product, per
image: L x (QKV and output projections 4 N D^2 + attention logits and weighted sum 2 N^2 D
+ MLP 2 N D M) + patch embedding (gh gw ph pw 3 D) + head (D C), with N tokens, D width,
M MLP width. ViT-B/16 at 224 px (N = 197, D = 768, M = 3072): 35.13 GFLOP per image (the
head adds 0.0015). Softmax, LayerNorm, GELU and the rollout (L N^3 per image, 0.5 %) are
not counted.

Wall-clock numbers on shared or virtual machines drift; each row records the share of the CPUs
other processes used while it ran, the benchmark waits for an idle machine before each row, and
``--rounds N`` interleaves N fresh runs of every row and pools their repetitions.

Nothing here asserts timings; targets are reported with pass/fail beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

__all__ = ["model_flops", "run_benchmark", "format_table", "write_json", "main", "ROWS", "SCHEMA"]

SCHEMA = "vitjax-benchmark/1"
ROWS = ("capture", "lean", "plain", "torch")
ROW_LABELS = {
    "capture": "vitjax capture",
    "lean": "vitjax lean",
    "plain": "vitjax plain",
    "torch": "pytorch practice",
    "capture_attention": "vitjax capture + attention",
}
_MARK = "@@VITJAX_BENCH_RESULT@@ "
_HERE = Path(__file__).resolve()
REPO = _HERE.parents[1]

NOTE_RANDOM = (
    "Weights are random (vitjax.synthetic.random_checkpoint, realistic scale, peaked attention), "
    "not trained: throughput and memory do not depend on the values, but the bfloat16 fidelity of "
    "maps and top-5 classes on a trained model can differ (random logits are less separated, "
    "random attention less structured), so treat the fidelity numbers as indicative."
)


# --- model arithmetic ------------------------------------------------------------------------


def model_flops(config) -> Dict[str, Any]:
    """FLOPs per image of a ViT's matrix products (2 x multiply-accumulates).

    ``config`` is a :class:`vitjax.ViTConfig` or a dict of its fields. The hybrid's ResNet stem
    is not counted (``stem_counted`` False).
    """
    c = config if isinstance(config, dict) else _config_dict(config)
    gh, gw = c["grid"]
    n = c["num_tokens"]
    d, m, layers = c["hidden_size"], c["mlp_dim"], c["num_layers"]
    ph, pw = c["patch_size"]
    in_ch = 3 if c.get("resnet_layers") is None else 64 * c.get("resnet_width", 1) * 16
    per_layer = {"qkv_out": 4 * n * d * d, "attention": 2 * n * n * d, "mlp": 2 * n * d * m}
    macs_layer = sum(per_layer.values())
    patch = gh * gw * ph * pw * in_ch * d
    head = d * (c.get("representation_size") or 0) + (c.get("representation_size") or d) * (c.get("num_classes") or 0)
    macs = layers * macs_layer + patch + head
    return {
        "gflop_per_image": 2 * macs / 1e9,
        "gflop_per_image_no_head": 2 * (macs - head) / 1e9,
        "per_layer_gflop": {k: 2 * v / 1e9 for k, v in per_layer.items()},
        "patch_embedding_gflop": 2 * patch / 1e9,
        "head_gflop": 2 * head / 1e9,
        "tokens": n,
        "stem_counted": c.get("resnet_layers") is None,
        "formula": (
            "2 x MACs of all matmuls per image: L x (QKV + out projections 4*N*D^2 + attention 2*N^2*D "
            "+ MLP 2*N*D*M) + patch embedding gh*gw*ph*pw*3*D + head D*C; softmax, norms, GELU and "
            "the rollout are not counted"
        ),
    }


def _config_dict(config) -> Dict[str, Any]:
    import dataclasses

    d = dataclasses.asdict(config)
    d["grid"] = tuple(config.grid)
    d["num_tokens"] = int(config.num_tokens)
    return d


# --- process measurements ------------------------------------------------------------------


def num_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _status_mb(field: str) -> Optional[float]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def _reset_peak_rss() -> bool:
    """Resets the process's RSS high-water mark (Linux ``clear_refs`` 5); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


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


class _CpuWatch:
    """Share of the machine's CPU time used by OTHER processes while a block runs."""

    def __enter__(self):
        self.t, self.own, self.stat = time.perf_counter(), _own_cpu_s(), _cpu_busy()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t
        own = _own_cpu_s() - self.own
        stat = _cpu_busy()
        self.own_util = own / max(wall, 1e-9) / num_cores()
        self.foreign = None  # unknown for windows too short for /proc/stat's clock ticks
        if self.stat and stat and stat[1] > self.stat[1] and wall >= 0.5:
            busy = (stat[0] - self.stat[0]) / (stat[1] - self.stat[1])  # fraction of all CPUs busy
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
            log(f"  (machine busy: {100 * load:.0f}% of CPUs used by other processes; waiting up to {max_wait:.0f} s)")
            announced = True
        time.sleep(2.0)
        load = background_load(1.0)
    return load


def _median(xs: Sequence[float]) -> float:
    return float(np.median(np.asarray(xs, dtype=np.float64)))


def _time_calls(fn: Callable[[], Any], sync: Callable[[Any], Any], reps: int, warmup: int) -> Dict[str, Any]:
    """First call timed apart, ``warmup`` more untimed calls, then ``reps`` timed calls."""
    t = time.perf_counter()
    out = sync(fn())
    first = time.perf_counter() - t
    for _ in range(warmup):
        out = sync(fn())
    del out
    reset = _reset_peak_rss()
    times = []
    with _CpuWatch() as w:
        for _ in range(reps):
            t = time.perf_counter()
            out = sync(fn())
            times.append(time.perf_counter() - t)
    return {
        "first_call_s": first,
        "times_s": times,
        "median_s": _median(times),
        "min_s": float(min(times)),
        "steady_peak_rss_mb": _status_mb("VmHWM") if reset else None,
        "cpu_util": w.own_util,
        "foreign_cpu": w.foreign,
        "last": out,
    }


def _images(batch: int, size) -> np.ndarray:
    """Fixed random images ``[B, H, W, 3]`` float32 in [-1, 1] (seed 0)."""
    h, w = size
    return np.random.default_rng(0).uniform(-1.0, 1.0, (batch, h, w, 3)).astype(np.float32)


# --- child tasks ---------------------------------------------------------------------------


def _task_info(task) -> Dict[str, Any]:
    info: Dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cores": num_cores(),
        "cpu": _cpu_model(),
        "cpu_bf16_native": _cpu_has_bf16(),
    }
    import jax

    dev = jax.devices()[0]
    info.update(jax=jax.__version__, platform=dev.platform, device_kind=getattr(dev, "device_kind", str(dev)),
                device_count=jax.device_count())
    try:
        import flax

        info["flax"] = flax.__version__
    except ImportError:
        pass
    info["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    if task.get("ckpt"):
        from vitjax.checkpoint import infer_config, load_npz, rename_legacy

        info["config"] = _config_dict(infer_config(rename_legacy(load_npz(task["ckpt"])), where=task["ckpt"]))
    return info


def _task_torch_info(task) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    try:
        import timm
        import torch

        out.update(torch=torch.__version__, timm=timm.__version__, cuda=bool(torch.cuda.is_available()),
                   torch_threads_default=torch.get_num_threads())
    except ImportError as e:
        out["error"] = f"torch/timm unavailable: {e}"
    return out


def _task_make_ckpt(task) -> Dict[str, Any]:
    from vitjax.config import get_config
    from vitjax.synthetic import random_checkpoint, save_npz

    config = get_config(task["variant"], **task.get("overrides", {}))
    save_npz(random_checkpoint(config, seed=task.get("seed", 0)), task["path"])
    return {"path": task["path"], "config": _config_dict(config)}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_has_bf16() -> bool:
    """Native bfloat16 arithmetic on this CPU (AVX512-BF16 or AMX-BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def _task_gemm(task) -> Dict[str, Any]:
    n, reps, dtype = int(task["n"]), int(task["reps"]), task["dtype"]
    rng = np.random.default_rng(0)
    a_np = rng.standard_normal((n, n), dtype=np.float32)
    b_np = rng.standard_normal((n, n), dtype=np.float32)
    if task["lib"] == "xla":
        import jax
        import jax.numpy as jnp

        dt = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
        a, b = jnp.asarray(a_np, dt), jnp.asarray(b_np, dt)
        f = jax.jit(jnp.dot)
        fn, sync = (lambda: f(a, b)), jax.block_until_ready
        lib = f"XLA (jax {jax.__version__}, {jax.devices()[0].platform})"
    else:
        import torch

        torch.set_num_threads(num_cores())
        dev = "cuda" if task.get("platform") == "gpu" and torch.cuda.is_available() else "cpu"
        dt = torch.bfloat16 if dtype == "bfloat16" else torch.float32
        a, b = torch.from_numpy(a_np).to(dev, dt), torch.from_numpy(b_np).to(dev, dt)

        def sync(x):
            if dev == "cuda":
                torch.cuda.synchronize()
            return x

        fn = lambda: torch.mm(a, b)  # noqa: E731
        lib = f"torch {torch.__version__} ({dev}, {torch.get_num_threads()} threads)"
    r = _time_calls(fn, sync, reps, warmup=1)
    flop = 2.0 * n**3
    return {"lib": lib, "n": n, "dtype": dtype, "reps": reps, "gflops": flop / r["median_s"] / 1e9,
            "gflops_best": flop / r["min_s"] / 1e9, "median_s": r["median_s"], "foreign_cpu": r["foreign_cpu"]}


def _device_peak_jax(dev) -> Optional[float]:
    try:
        stats = dev.memory_stats() or {}
    except Exception:  # noqa: BLE001 - backends without stats
        return None
    v = stats.get("peak_bytes_in_use")
    return None if v is None else v / 2**20


def _task_row_vitjax(task) -> Dict[str, Any]:
    import jax
    import jax.numpy as jnp

    import vitjax

    rss0 = _status_mb("VmRSS")
    dt = jnp.bfloat16 if task["dtype"] == "bfloat16" else jnp.float32
    t = time.perf_counter()
    model, params = vitjax.load_checkpoint(task["ckpt"], dtype=dt)
    jax.block_until_ready(params)
    load_s = time.perf_counter() - t
    x = jax.block_until_ready(jnp.asarray(_images(task["batch"], model.config.image_size)))
    mode = task["row"]
    if mode == "plain":
        fn = lambda: vitjax.predict(model, params, x)  # noqa: E731
    elif mode == "capture":
        fn = lambda: vitjax.compute_maps(model, params, x)  # noqa: E731
    elif mode == "capture_attention":
        fn = lambda: vitjax.compute_maps(model, params, x, keep_attention=True)  # noqa: E731
    elif mode == "lean":
        fn = lambda: vitjax.compute_maps(model, params, x, lean=True)  # noqa: E731
    else:
        raise ValueError(f"unknown vitjax row {mode!r}")
    rss_ready = _status_mb("VmRSS")
    r = _time_calls(fn, jax.block_until_ready, task["reps"], task["warmup"])
    out = r.pop("last")
    dev = jax.devices()[0]
    res = _row_result(task, r, load_s)
    res.update(rss_start_mb=rss0, rss_ready_mb=rss_ready, peak_rss_mb=_maxrss_mb(),
               device_peak_mb=_device_peak_jax(dev) if dev.platform != "cpu" else None)
    logits = np.asarray(out if mode == "plain" else out["logits"], np.float32)
    res["check"] = {"logits0": logits[0, :16].tolist(), "top5_0": np.argsort(-logits[0])[:5].tolist()}
    if mode != "plain":
        res["check"]["rollout0"] = np.asarray(out["rollout"][0], np.float32).ravel().tolist()
        res["outputs"] = {k: list(v.shape) for k, v in out.items()}
    return res


def _row_result(task, r, load_s) -> Dict[str, Any]:
    b = task["batch"]
    return {
        "row": task["row"],
        "label": ROW_LABELS.get(task["row"], task["row"]),
        "batch": b,
        "dtype": task["dtype"],
        "reps": task["reps"],
        "warmup": task["warmup"],
        "images_per_s": b / r["median_s"],
        "median_batch_s": r["median_s"],
        "min_batch_s": r["min_s"],
        "times_s": r["times_s"],
        "first_call_s": r["first_call_s"],
        "load_s": load_s,
        "steady_peak_rss_mb": r["steady_peak_rss_mb"],
        "cpu_util": r["cpu_util"],
        "foreign_cpu": r["foreign_cpu"],
    }


def _timm_model(cfg: Dict[str, Any], path: str):
    from timm.models.vision_transformer import VisionTransformer, _load_weights

    if cfg.get("resnet_layers") is not None or cfg.get("classifier", "token") != "token":
        raise ValueError("the PyTorch row supports plain class-token ViTs only")
    kw = {"act_layer": "gelu_tanh"} if cfg.get("gelu_approximate", True) else {}
    model = VisionTransformer(
        img_size=tuple(cfg["image_size"]), patch_size=tuple(cfg["patch_size"]),
        num_classes=cfg.get("num_classes") or 0, embed_dim=cfg["hidden_size"], depth=cfg["num_layers"],
        num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_dim"] / cfg["hidden_size"], **kw,
    )
    _load_weights(model, str(path))
    return model.eval()


def torch_practice_maps(attentions, grid, eye):
    """The per-image rollout loop of the PyTorch tools, on hooked attentions ``L x [B, H, N, N]``.

    For each image: mean over heads, + I, rows normalised, joint = Abar_l @ joint; the class row
    over the patches of Abar_l (own map), of the joint so far (cumulative map) and of each head;
    every map divided by its max. Returns ``(rollout [B, gh, gw], layer [B, L, gh, gw],
    cumulative [B, L, gh, gw], heads [B, L, H, gh, gw])``.
    """
    import torch

    gh, gw = grid
    rollout, own_all, cum_all, heads_all = [], [], [], []
    for i in range(attentions[0].shape[0]):
        joint = eye
        own, cum, heads = [], [], []
        for att in attentions:
            a = att[i].float()  # [H, N, N]
            heads.append(a[:, 0, 1:])
            m = a.mean(dim=0) + eye
            m = m / m.sum(dim=-1, keepdim=True)
            joint = m @ joint
            own.append(m[0, 1:])
            cum.append(joint[0, 1:])

        def norm(r):
            return (r / r.amax(dim=-1, keepdim=True)).reshape(r.shape[:-1] + (gh, gw))

        cum_i = norm(torch.stack(cum))
        rollout.append(cum_i[-1])
        own_all.append(norm(torch.stack(own)))
        cum_all.append(cum_i)
        heads_all.append(norm(torch.stack(heads)))
    return torch.stack(rollout), torch.stack(own_all), torch.stack(cum_all), torch.stack(heads_all)


def _task_row_torch(task) -> Dict[str, Any]:
    import contextlib

    import torch

    rss0 = _status_mb("VmRSS")
    torch.set_num_threads(num_cores())
    cfg = task["config"]
    dev = "cuda" if task.get("platform") == "gpu" and torch.cuda.is_available() else "cpu"
    t = time.perf_counter()
    model = _timm_model(cfg, task["ckpt"]).to(dev)
    load_s = time.perf_counter() - t
    x = torch.from_numpy(np.ascontiguousarray(_images(task["batch"], cfg["image_size"]).transpose(0, 3, 1, 2)))
    x = x.to(dev)
    captured: List[Any] = []
    for block in model.blocks:
        block.attn.fused_attn = False
        block.attn.attn_drop.register_forward_hook(lambda mod, inp, out: captured.append(out))
    n = cfg["num_tokens"]
    eye = torch.eye(n, device=dev)
    bf16 = task["dtype"] == "bfloat16"

    def run():
        captured.clear()
        ctx = torch.autocast(dev, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            logits = model(x)
        maps = torch_practice_maps(captured, tuple(cfg["grid"]), eye)
        captured.clear()
        return logits.float(), maps

    def sync(o):
        if dev == "cuda":
            torch.cuda.synchronize()
        return o

    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_ready = _status_mb("VmRSS")
    with torch.no_grad():
        r = _time_calls(run, sync, task["reps"], task["warmup"])
    logits, maps = r.pop("last")
    res = _row_result(task, r, load_s)
    res.update(rss_start_mb=rss0, rss_ready_mb=rss_ready, peak_rss_mb=_maxrss_mb(),
               device_peak_mb=torch.cuda.max_memory_allocated() / 2**20 if dev == "cuda" else None,
               torch_threads=torch.get_num_threads(), torch_device=dev)
    lg = logits.cpu().numpy()
    res["check"] = {"logits0": lg[0, :16].tolist(), "top5_0": np.argsort(-lg[0])[:5].tolist(),
                    "rollout0": maps[0][0].cpu().float().numpy().ravel().tolist()}
    res["outputs"] = {"logits": list(lg.shape), "rollout": list(maps[0].shape), "layer": list(maps[1].shape),
                      "cumulative": list(maps[2].shape), "heads": list(maps[3].shape)}
    return res


def sample_images(limit: Optional[int] = None) -> List[str]:
    """Real photographs: the Caltech101 samples next to the repository, else grace_hopper.jpg."""
    import vitjax

    root = Path(vitjax.__file__).resolve().parents[2] / "shared" / "data" / "caltech101-samples"
    paths = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")) \
        if root.is_dir() else []
    if not paths:
        from matplotlib import cbook

        paths = [str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))]
    return paths[:limit] if limit else paths


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel().astype(np.float64) - a.mean()
    b = b.ravel().astype(np.float64) - b.mean()
    den = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else (1.0 if np.allclose(a, b) else 0.0)


def _task_fidelity(task) -> Dict[str, Any]:
    import jax
    import jax.numpy as jnp

    import vitjax

    paths = sample_images(task.get("limit"))
    m32, p32 = vitjax.load_checkpoint(task["ckpt"])
    m16, p16 = vitjax.load_checkpoint(task["ckpt"], dtype=jnp.bfloat16)
    imgs = np.stack([vitjax.preprocess(p, m32.config.image_size) for p in paths])
    bs = max(1, min(int(task.get("batch", 8)), len(paths)))
    pad = (-len(paths)) % bs
    full = np.concatenate([imgs, np.repeat(imgs[-1:], pad, axis=0)]) if pad else imgs
    outs = {}
    for name, (m, p) in (("float32", (m32, p32)), ("bfloat16", (m16, p16))):
        chunks = [jax.device_get(vitjax.compute_maps(m, p, jnp.asarray(full[i:i + bs])))
                  for i in range(0, len(full), bs)]
        outs[name] = {k: np.concatenate([c[k] for c in chunks])[: len(paths)]
                      for k in ("logits", "rollout", "cumulative")}
    f, h = outs["float32"], outs["bfloat16"]
    corr = [_pearson(f["rollout"][i], h["rollout"][i]) for i in range(len(paths))]
    layer_corr = [min(_pearson(f["cumulative"][i, j], h["cumulative"][i, j]) for j in range(f["cumulative"].shape[1]))
                  for i in range(len(paths))]
    top5 = [set(np.argsort(-f["logits"][i])[:5].tolist()) == set(np.argsort(-h["logits"][i])[:5].tolist())
            for i in range(len(paths))]
    top1 = [int(np.argmax(f["logits"][i])) == int(np.argmax(h["logits"][i])) for i in range(len(paths))]
    root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    return {
        "images": len(paths),
        "source": root,
        "joint_map_pearson_min": float(min(corr)),
        "joint_map_pearson_median": _median(corr),
        "cumulative_maps_pearson_min": float(min(layer_corr)),
        "top5_equal": int(sum(top5)),
        "top5_all_equal": bool(all(top5)),
        "top1_equal": int(sum(top1)),
        "logits_max_abs_diff": float(np.max(np.abs(f["logits"] - h["logits"]))),
        "bf16_compute": "load_checkpoint(..., dtype=jnp.bfloat16): bfloat16 matmuls, float32 parameters "
                        "and softmax; maps computed in float32 from the float32 softmax",
        "note": NOTE_RANDOM,
    }


def _task_compile(task) -> Dict[str, Any]:
    import jax
    import jax.numpy as jnp

    import vitjax
    from vitjax.config import get_config

    config = get_config(task["variant"])
    model = vitjax.ViT(config)
    h, w = config.image_size
    x = jax.ShapeDtypeStruct((int(task["batch"]), h, w, 3), jnp.float32)
    t = time.perf_counter()
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)["params"]
    shape_s = time.perf_counter() - t
    n_params = int(sum(math.prod(v.shape) for v in jax.tree_util.tree_leaves(params)))
    if task["what"] == "predict":
        fn = jax.jit(lambda p, im: vitjax.predict(model, p, im))
    else:
        fn = jax.jit(lambda p, im: vitjax.compute_maps(model, p, im))
    t = time.perf_counter()
    lowered = fn.lower(params, x)
    lower_s = time.perf_counter() - t
    t = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t
    del compiled
    return {"variant": task["variant"], "what": task["what"], "batch": int(task["batch"]), "layers": config.num_layers,
            "params": n_params, "eval_shape_s": shape_s, "trace_lower_s": lower_s, "compile_s": compile_s,
            "total_s": shape_s + lower_s + compile_s, "peak_rss_mb": _maxrss_mb()}


def _task_rollout(task) -> Dict[str, Any]:
    """Issue #3: jitted, vmapped rollout vs the per-image NumPy loop vs a jitted read of the tensor.

    Random row-stochastic attention ``[B, L, H, N, N]`` (ViT-B/16 shapes by
    default). The read is ``jnp.sum`` over layers and heads: the least any
    method must do is touch every element once.
    """
    import jax
    import jax.numpy as jnp

    import vitjax

    b, layers, heads, n = task["shape"]
    grid = tuple(task["grid"])
    rng = np.random.default_rng(0)
    att = rng.random((b, layers, heads, n, n), dtype=np.float32)
    att /= att.sum(-1, keepdims=True)
    dev = jax.device_put(att)
    read = jax.jit(lambda a: jnp.sum(a, axis=(1, 2)))
    eye = np.eye(n, dtype=np.float32)

    def numpy_loop():  # the recipe, literally, one image at a time
        out = []
        for img in att:
            joint = eye
            for layer in img:
                m = layer.mean(axis=0) + eye
                joint = (m / m.sum(axis=-1, keepdims=True)) @ joint
            row = joint[0, 1:].reshape(grid)
            out.append(row / row.max())
        return np.stack(out)

    calls = {"read": lambda: read(dev), "rollout": lambda: vitjax.rollout_map(dev, grid), "numpy_loop": numpy_loop}
    times: Dict[str, List[float]] = {k: [] for k in calls}
    for _ in range(2):  # interleaved rounds, so drift hits all three alike
        for k, fn in calls.items():
            r = _time_calls(fn, lambda x: getattr(x, "block_until_ready", lambda: x)(), task["reps"], 1)
            times[k].extend(r["times_s"])
    med = {f"{k}_s": _median(v) for k, v in times.items()}
    diff = float(np.abs(np.asarray(vitjax.rollout_map(dev, grid)) - numpy_loop()).max())
    return {**med, "shape": [b, layers, heads, n, n], "attention_mb": att.nbytes / 2**20,
            "speedup_vs_numpy_loop": med["numpy_loop_s"] / med["rollout_s"],
            "rollout_over_read": med["rollout_s"] / med["read_s"], "max_abs_diff_vs_numpy": diff}


TASKS = {
    "rollout": _task_rollout,
    "info": _task_info,
    "torch_info": _task_torch_info,
    "make_ckpt": _task_make_ckpt,
    "gemm": _task_gemm,
    "row_vitjax": _task_row_vitjax,
    "row_torch": _task_row_torch,
    "fidelity": _task_fidelity,
    "compile": _task_compile,
}


def _run_task_here(task: Dict[str, Any]) -> Dict[str, Any]:
    t = time.perf_counter()
    try:
        out = TASKS[task["kind"]](task)
    except Exception as e:  # noqa: BLE001 - reported in the JSON, the run goes on
        import traceback

        out = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
    out["task_wall_s"] = time.perf_counter() - t
    return out


_CHILD = (
    "import importlib.util, sys; "
    "s = importlib.util.spec_from_file_location('_vitjax_benchmark', sys.argv[1]); "
    "m = importlib.util.module_from_spec(s); sys.modules['_vitjax_benchmark'] = m; "
    "s.loader.exec_module(m); sys.exit(m.main(sys.argv[2:]))"
)


def _run_task_child(task: Dict[str, Any], timeout: float, env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Runs one task in a fresh interpreter that loads this file without importing the vitjax
    package first (so the PyTorch rows never import JAX), and returns its JSON result."""
    child_env = dict(os.environ if env is None else env)
    child_env["PYTHONPATH"] = _pythonpath(child_env)
    child_env.setdefault("MPLBACKEND", "Agg")
    cmd = [sys.executable, "-c", _CHILD, str(_HERE), "--task", json.dumps(task)]
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env, cwd=str(REPO))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "task_wall_s": time.perf_counter() - t}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(_MARK):
            out = json.loads(line[len(_MARK):])
            out["process_wall_s"] = time.perf_counter() - t
            return out
    return {"error": f"child exited with {p.returncode} without a result", "stderr": p.stderr[-2000:],
            "task_wall_s": time.perf_counter() - t}


def _pythonpath(env: Dict[str, str]) -> str:
    """The repository first on PYTHONPATH, then whatever was there."""
    return os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])


# --- start-up ------------------------------------------------------------------------------


def measure_startup(ckpt: str, image: str, script: Optional[Path] = None, timeout: float = 600.0) -> Dict[str, Any]:
    """Wall time of ``scripts/visualize.py`` for one image, cold and warm compilation cache."""
    script = Path(script) if script else REPO / "scripts" / "visualize.py"
    res: Dict[str, Any] = {"script": str(script), "image": image, "ckpt": ckpt}
    if not script.is_file():
        res.update(status="unavailable", reason=f"{script} does not exist")
        return res
    with tempfile.TemporaryDirectory(prefix="vitjax-startup-") as tmp:
        cache = Path(tmp) / "cache"
        env = dict(os.environ, VITJAX_CACHE_DIR=str(cache), MPLBACKEND="Agg")
        env["PYTHONPATH"] = _pythonpath(env)
        runs = {}
        for name in ("cold", "warm"):
            out = Path(tmp) / f"out-{name}"
            cmd = [sys.executable, str(script), "--ckpt", ckpt, "--images", image, "--out", str(out)]
            t = time.perf_counter()
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(REPO))
                rc, err = p.returncode, p.stderr[-1500:]
            except subprocess.TimeoutExpired:
                rc, err = None, f"timed out after {timeout:.0f} s"
            wall = time.perf_counter() - t
            files = sorted(str(f.relative_to(out)) for f in out.rglob("*") if f.is_file()) if out.is_dir() else []
            runs[name] = {"wall_s": wall, "returncode": rc, "outputs": files[:20]}
            if rc != 0:
                runs[name]["stderr_tail"] = err
            if name == "cold":
                runs[name]["cache_entries"] = sum(1 for f in cache.rglob("*") if f.is_file()) if cache.is_dir() else 0
        res["command"] = ("VITJAX_CACHE_DIR=<fresh dir> python scripts/visualize.py --ckpt <ckpt> --images <image> "
                          "--out <dir>")
        res.update(runs)
        ok = all(runs[k]["returncode"] == 0 for k in runs)
        res["status"] = "ok" if ok else "failed"
        if ok:
            res["warm_over_cold"] = runs["warm"]["wall_s"] / runs["cold"]["wall_s"]
    return res


# --- orchestration -------------------------------------------------------------------------


def _parse_list(s: str, cast=str) -> List[Any]:
    return [cast(v) for v in str(s).split(",") if v.strip()]


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/benchmark.py",
        description="Throughput, memory and start-up of vitjax (capture / lean / plain) against the PyTorch "
                    "practice (timm + hooks + per-image rollout loop), with the machine's GEMM roofline.",
    )
    p.add_argument("--variant", default="ViT-B_16", help="model for the random checkpoint (default ViT-B_16)")
    p.add_argument("--ckpt", default=None, help="use this Google-layout .npz instead of a random checkpoint")
    p.add_argument("--batch-sizes", default=None, help="comma list (default 1,8,32; 1,8,32,256 on a GPU)")
    p.add_argument("--dtypes", default="auto",
                   help="comma list of float32,bfloat16, or 'auto' = float32 plus bfloat16 where the device "
                        "computes it natively (GPU/TPU, CPUs with AVX512-BF16/AMX)")
    p.add_argument("--rows", default=",".join(ROWS),
                   help="comma list of capture,lean,plain,torch (also capture_attention)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per row (median reported; >= 5 for results)")
    p.add_argument("--rounds", type=int, default=1,
                   help="run every row this many times (fresh processes, rows interleaved) and pool the "
                        "--reps repetitions over them: steadier medians on machines whose speed drifts")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls after the first call (default 1)")
    p.add_argument("--large-batch", type=int, default=32, help="from this batch size on, --warmup-large applies")
    p.add_argument("--warmup-large", type=int, default=0, help="untimed calls after the first at large batches")
    p.add_argument("--gemm-size", type=int, default=2048, help="n of the n^3 GEMM roofline (default 2048)")
    p.add_argument("--gemm-reps", type=int, default=10)
    p.add_argument("--fidelity-images", type=int, default=0, help="photos for the bf16 fidelity (0 = all found)")
    p.add_argument("--no-fidelity", action="store_true")
    p.add_argument("--no-rollout", action="store_true", help="skip the rollout-vs-NumPy-loop measurement")
    p.add_argument("--rollout-batch", type=int, default=32, help="batch of the rollout measurement (default 32)")
    p.add_argument("--no-startup", action="store_true")
    p.add_argument("--startup-ckpt", default=None, help="checkpoint for the start-up run (default: the benchmark's)")
    p.add_argument("--compile-variants", default="ViT-B_16,ViT-L_16,ViT-H_14",
                   help="models whose predict compile time is measured ('' for none)")
    p.add_argument("--compile-capture-variants", default="ViT-B_16,ViT-L_16",
                   help="models whose compute_maps compile time is measured ('' for none)")
    p.add_argument("--compile-batch", type=int, default=8)
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/results-<platform>.json)")
    p.add_argument("--workdir", default=None, help="where the random checkpoint is written (default: a temp dir)")
    p.add_argument("--inprocess", action="store_true",
                   help="run every task in this process (fast; peak memory then not per row)")
    p.add_argument("--idle-wait", type=float, default=60.0,
                   help="before each task, wait up to this many seconds for other processes to leave the CPUs")
    p.add_argument("--idle-threshold", type=float, default=0.25,
                   help="share of all CPUs used by other processes counted as busy (default 0.25)")
    p.add_argument("--retry-busy", type=int, default=1,
                   help="repeat a row (keeping the quieter result) when other processes were busy during it")
    p.add_argument("--force-slow", action="store_true",
                   help="run PyTorch bfloat16 rows even on CPUs without native bfloat16 (very slow)")
    p.add_argument("--timeout", type=float, default=1200.0, help="per task, seconds")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--task", default=None, help=argparse.SUPPRESS)  # internal: run one task, print its JSON
    return p


def run_benchmark(args: argparse.Namespace, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Runs everything ``args`` asks for and returns the result dictionary (see :data:`SCHEMA`)."""
    t_start = time.perf_counter()
    env = dict(os.environ)

    def task(t: Dict[str, Any], timeout: Optional[float] = None) -> Dict[str, Any]:
        if args.inprocess:
            return _run_task_here(t)
        if args.idle_wait > 0:
            wait_for_idle(args.idle_wait, args.idle_threshold, log=log)
        return _run_task_child(t, timeout or args.timeout, env)

    tmp = tempfile.TemporaryDirectory(prefix="vitjax-bench-") if args.workdir is None else None
    workdir = Path(args.workdir or tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        res: Dict[str, Any] = {"schema": SCHEMA, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        res["background_cpu_at_start"] = background_load(1.0)
        res["loadavg_at_start"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        if args.ckpt:
            ckpt = str(Path(args.ckpt).resolve())
            info = task({"kind": "info", "ckpt": ckpt})
            if "error" in info:
                raise RuntimeError(f"cannot read {ckpt}: {info['error']}")
            config, source = info.pop("config"), ckpt
        else:
            info = task({"kind": "info"})
            if "error" in info:
                raise RuntimeError(f"JAX does not start: {info['error']}")
            ckpt = str(workdir / f"{args.variant.replace('+', '_')}-random.npz")
            made = task({"kind": "make_ckpt", "variant": args.variant, "path": ckpt})
            if "error" in made:
                raise RuntimeError(f"cannot write the random checkpoint: {made['error']}")
            config = made["config"]
            source = f"random {args.variant} (vitjax.synthetic.random_checkpoint, seed 0), Google .npz layout"
        tinfo = task({"kind": "torch_info"})
        if "error" in tinfo:
            info["torch_error"] = tinfo["error"]
        else:
            info.update({k: v for k, v in tinfo.items() if k != "task_wall_s"})
        plat = info["platform"]
        info["torch_threads"] = num_cores()
        res["machine"] = info
        res["model"] = {"checkpoint": source, "config": config}
        res["flops"] = model_flops(config)
        gflop = res["flops"]["gflop_per_image"]
        log(f"device: {plat} ({info.get('device_kind')}), {info['cores']} cores ({info['cpu']}); model "
            f"{args.variant if not args.ckpt else ckpt}: {gflop:.2f} GFLOP/image")

        native_bf16 = plat in ("gpu", "tpu") or info.get("cpu_bf16_native", False)
        if args.dtypes == "auto":
            dtypes = ["float32"] + (["bfloat16"] if native_bf16 else [])
        else:
            dtypes = _parse_list(args.dtypes)
        default_batches = [1, 8, 32] + ([256] if plat == "gpu" else [])
        batches = _parse_list(args.batch_sizes, int) if args.batch_sizes else default_batches
        rows = _parse_list(args.rows)
        res["settings"] = {"batch_sizes": batches, "dtypes": dtypes, "rows": rows, "reps": args.reps,
                           "rounds": args.rounds,
                           "warmup": args.warmup, "warmup_large": args.warmup_large, "large_batch": args.large_batch,
                           "inprocess": bool(args.inprocess), "memory_per_row": not args.inprocess,
                           "idle_wait_s": args.idle_wait, "cpu_bf16_native": info.get("cpu_bf16_native"),
                           "bf16_skipped_reason": None if "bfloat16" in dtypes else
                           "no native bfloat16 on this device (no AVX512-BF16/AMX): XLA and PyTorch emulate it, "
                           "slower than float32; pass --dtypes float32,bfloat16 to measure anyway"}

        # GEMM roofline, both libraries, before the rows (and again after them).
        def gemms(tag):
            out = {}
            for dt in ("float32", "bfloat16"):
                slow = dt == "bfloat16" and not native_bf16
                n = args.gemm_size if not slow else min(args.gemm_size, 1024)
                reps = args.gemm_reps if not slow else 3
                for lib in ("xla", "torch"):
                    if lib == "torch" and "torch" not in info:
                        continue
                    if slow and lib == "torch":
                        n = min(n, 512)  # oneDNN/MKL fall back to a reference kernel (~1 GFLOP/s)
                    r = task({"kind": "gemm", "lib": lib, "n": n, "dtype": dt, "reps": max(1, reps), "platform": plat})
                    out[f"{lib}_{dt}"] = r
                    if "error" not in r:
                        log(f"  GEMM {tag} {lib:5s} {dt:8s} n={n}: {r['gflops']:.1f} GFLOP/s  other load "
                            f"{_pct(r.get('foreign_cpu'))}")
                    else:
                        log(f"  GEMM {tag} {lib} {dt}: {r['error']}")
            return out

        res["gemm"] = gemms("start")

        specs: List[tuple] = []
        order: List[Any] = []  # specs to run, and rows skipped, in table order
        for dt in dtypes:
            for b in batches:
                for row in rows:
                    if row == "torch" and "torch" not in info:
                        continue
                    if row == "torch" and dt == "bfloat16" and not native_bf16 and not args.force_slow:
                        order.append({"row": row, "label": ROW_LABELS[row], "batch": b, "dtype": dt,
                                      "skipped": "PyTorch bfloat16 on a CPU without native bfloat16 runs "
                                                 "at ~2 GFLOP/s (see gemm); --force-slow to run it"})
                        log(f"  {dt:8s} B={b:<4d} {ROW_LABELS[row]:18s} skipped (no native bfloat16)")
                        continue
                    specs.append((dt, b, row))
                    order.append((dt, b, row))
        rounds = max(1, args.rounds)
        reps_round = max(1, math.ceil(args.reps / rounds))
        done: Dict[tuple, List[Dict[str, Any]]] = {spec: [] for spec in specs}
        for rnd in range(rounds):
            if rounds > 1:
                log(f" round {rnd + 1}/{rounds}")
            for dt, b, row in specs:
                warm = args.warmup_large if b >= args.large_batch else args.warmup
                t = {"kind": "row_torch" if row == "torch" else "row_vitjax", "row": row, "batch": b, "dtype": dt,
                     "reps": reps_round, "warmup": warm, "ckpt": ckpt, "config": config, "platform": plat}
                r = task(t)
                for _ in range(args.retry_busy):
                    busy = r.get("foreign_cpu")
                    if "error" in r or busy is None or busy <= args.idle_threshold or args.inprocess:
                        break
                    log(f"  (other processes used {100 * busy:.0f}% of the CPUs during the row: repeating it)")
                    again = task(t)
                    if "error" not in again and (again.get("foreign_cpu") or 0) < busy:
                        again["attempts"] = r.get("attempts", 1) + 1
                        r = again
                    else:
                        r["attempts"] = r.get("attempts", 1) + 1
                r.update(row=row, label=ROW_LABELS.get(row, row), batch=b, dtype=dt)
                done[(dt, b, row)].append(r)
                if "error" in r:
                    log(f"  {dt:8s} B={b:<4d} {ROW_LABELS.get(row, row):18s} ERROR {r['error']}")
                else:
                    log(f"  {dt:8s} B={b:<4d} {r['label']:18s} {r['images_per_s']:8.2f} img/s  first call "
                        f"{r['first_call_s']:6.2f} s  peak RSS {r['peak_rss_mb']:7.0f} MB  other load "
                        f"{_pct(r.get('foreign_cpu'))}")
        res["rows"] = [_merge_rounds(done[o]) if isinstance(o, tuple) else o for o in order]
        res["gemm_end"] = gemms("end") if not args.inprocess else None
        _rooflines(res, gflop)
        res["consistency"] = _consistency(res["rows"])

        if not args.no_rollout:
            log("rollout: jitted vs per-image NumPy loop vs reading the attention tensor ...")
            cfgd = res["model"]["config"]
            n_tok = 1 + cfgd["grid"][0] * cfgd["grid"][1]
            res["rollout"] = task({"kind": "rollout", "reps": args.reps, "grid": cfgd["grid"],
                                   "shape": [args.rollout_batch, cfgd["num_layers"], cfgd["num_heads"], n_tok]})
        if not args.no_fidelity:
            log("bfloat16 fidelity on photos ...")
            res["bf16_fidelity"] = task({"kind": "fidelity", "ckpt": ckpt, "limit": args.fidelity_images or None,
                                         "batch": 8})
        variants = _parse_list(args.compile_variants)
        cap_variants = _parse_list(args.compile_capture_variants)
        res["compile"] = []
        for what, vs in (("predict", variants), ("capture", cap_variants)):
            for v in vs:
                log(f"compile time {what} {v} ...")
                r = task({"kind": "compile", "variant": v, "what": what, "batch": args.compile_batch})
                r.setdefault("variant", v)
                r.setdefault("what", what)
                res["compile"].append(r)
                if "error" not in r:
                    log(f"  {v} {what}: trace+lower {r['trace_lower_s']:.1f} s, compile {r['compile_s']:.1f} s")
        if not args.no_startup:
            log("start-up of scripts/visualize.py (cold / warm compilation cache) ...")
            img = sample_images_safe()
            res["startup"] = measure_startup(args.startup_ckpt or ckpt, img, timeout=args.timeout)
        res["targets"] = evaluate_targets(res)
        res["notes"] = {
            "random_weights": NOTE_RANDOM,
            "images_per_s": "batch / median wall time of the timed repetitions (outputs block_until_ready / "
                            "torch.cuda.synchronize); first call (trace + compile + run) reported apart",
            "memory": "peak_rss_mb: process resident-set high-water mark of the row's own process (imports, "
                      "weights, compilation and runs); steady_peak_rss_mb: high-water mark during the timed "
                      "repetitions alone (reset via /proc/self/clear_refs); device_peak_mb on accelerators",
            "roofline": "achieved GFLOP/s = images/s x GFLOP/image; fraction of the same library's measured GEMM "
                        "(float32 or bfloat16, best of the start/end measurements), and of the faster library",
            "foreign_cpu": "share of all CPUs used by other processes during the timed repetitions (noise)",
            "gpu_precision": "on GPUs JAX's default float32 matmul precision may use TF32 (in the GEMM and in the "
                             "model alike) while PyTorch's float32 matmuls do not by default",
            "rounds": "with --rounds N each row ran N times in fresh processes interleaved with the other rows; "
                      "repetitions are pooled (images_per_s_by_round shows the spread)",
        }
        res["wall_s"] = time.perf_counter() - t_start
        return res
    finally:
        if tmp is not None:
            tmp.cleanup()


def sample_images_safe() -> str:
    try:
        return sample_images(1)[0]
    except Exception:  # noqa: BLE001
        return ""


def _merge_rounds(results: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One row from its rounds (fresh processes, interleaved with the other rows): timed repetitions
    pooled (median over all of them), memory and other-process load the worst round's."""
    bad = [r for r in results if "error" in r]
    if bad or len(results) == 1:
        return bad[0] if bad else results[0]
    out = dict(results[0])
    times = [t for r in results for t in r["times_s"]]
    med = _median(times)
    out.update(
        rounds=len(results), reps=len(times), times_s=times, median_batch_s=med, min_batch_s=float(min(times)),
        images_per_s=out["batch"] / med,
        images_per_s_by_round=[r["images_per_s"] for r in results],
        first_call_s=_median([r["first_call_s"] for r in results]),
        load_s=_median([r["load_s"] for r in results]),
    )
    for key in ("peak_rss_mb", "steady_peak_rss_mb", "device_peak_mb", "foreign_cpu", "rss_ready_mb"):
        vals = [r.get(key) for r in results if r.get(key) is not None]
        out[key] = max(vals) if vals else None
    return out


def _ok(r) -> bool:
    """A row (or task) that produced numbers: neither failed nor skipped."""
    return "error" not in r and "skipped" not in r


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.0f}%"


def _gemm_best(res, key) -> Optional[float]:
    vals = [g[key]["gflops"] for g in (res.get("gemm"), res.get("gemm_end"))
            if g and key in g and "error" not in g[key]]
    return max(vals) if vals else None


def _rooflines(res, gflop) -> None:
    for r in res["rows"]:
        if not _ok(r):
            continue
        lib = "torch" if r["row"] == "torch" else "xla"
        other = "xla" if lib == "torch" else "torch"
        own = _gemm_best(res, f"{lib}_{r['dtype']}")
        oth = _gemm_best(res, f"{other}_{r['dtype']}")
        r["gflops"] = r["images_per_s"] * gflop
        r["roofline_gemm"] = lib
        r["roofline_fraction"] = r["gflops"] / own if own else None
        best = max(v for v in (own, oth) if v) if (own or oth) else None
        r["roofline_fraction_best"] = r["gflops"] / best if best else None


def _consistency(rows) -> Dict[str, Any]:
    """Joint map of image 0 and logits: vitjax capture vs lean vs the PyTorch practice."""
    out: Dict[str, Any] = {}
    by = {}
    for r in rows:
        if _ok(r) and "check" in r:
            by.setdefault((r["dtype"], r["batch"]), {})[r["row"]] = r["check"]
    for (dt, b), d in sorted(by.items()):
        ref = d.get("capture")
        for name in ("lean", "torch"):
            if ref and name in d and "rollout0" in d[name]:
                a, c = np.asarray(ref["rollout0"]), np.asarray(d[name]["rollout0"])
                out[f"{dt} B={b} capture vs {name}: joint map max abs diff"] = float(np.max(np.abs(a - c)))
        if "plain" in d and "torch" in d:
            a, c = np.asarray(d["plain"]["logits0"]), np.asarray(d["torch"]["logits0"])
            out[f"{dt} B={b} plain vs torch: logits max abs diff"] = float(np.max(np.abs(a - c)))
    for r in rows:
        r.pop("check", None)
    return out


def _find(res, row, batch, dtype="float32") -> Optional[Dict[str, Any]]:
    for r in res.get("rows", []):
        if r.get("row") == row and r.get("batch") == batch and r.get("dtype") == dtype and _ok(r):
            return r
    return None


def _peak(r) -> float:
    """Peak memory of a row: the device's on accelerators, else the process RSS high-water mark."""
    return r.get("device_peak_mb") or r["peak_rss_mb"]


def _target(name, value, op, target, stretch=None, unit="") -> Dict[str, Any]:
    if value is None:
        return {"name": name, "value": None, "target": f"{op} {target}{unit}", "pass": None}
    ok = value >= target if op == ">=" else value <= target
    t = {"name": name, "value": value, "target": f"{op} {target}{unit}", "pass": bool(ok)}
    if stretch is not None:
        t["stretch"] = f"{op} {stretch}{unit}"
        t["stretch_pass"] = bool(value >= stretch if op == ">=" else value <= stretch)
    return t


def evaluate_targets(res) -> List[Dict[str, Any]]:
    """The issue's targets, evaluated on float32 batch 8 (memory: batch 32) of this run."""
    rows = [r["batch"] for r in res.get("rows", []) if _ok(r)]
    b = 8 if 8 in rows else (max(rows) if rows else 8)
    bm = 32 if 32 in rows else (max(rows) if rows else 32)
    cap, pl, tor = _find(res, "capture", b), _find(res, "plain", b), _find(res, "torch", b)
    lean_m, plain_m = _find(res, "lean", bm), _find(res, "plain", bm)
    out = [
        _target(f"capture vs PyTorch practice, images/s ratio (float32, B={b})",
                cap["images_per_s"] / tor["images_per_s"] if cap and tor else None, ">=", 1.0, 1.15, "x"),
        _target(f"capture overhead over plain (float32, B={b})",
                cap["median_batch_s"] / pl["median_batch_s"] - 1 if cap and pl else None, "<=", 0.10),
        _target(f"plain: fraction of XLA's float32 GEMM roofline (B={b})",
                pl.get("roofline_fraction") if pl else None, ">=", 0.85),
        _target(f"lean peak memory / plain peak memory (float32, B={bm})",
                _peak(lean_m) / _peak(plain_m)
                if lean_m and plain_m and not res["settings"]["inprocess"] else None, "<=", 1.3, unit="x"),
    ]
    fid = res.get("bf16_fidelity") or {}
    ok_fid = "error" not in fid and fid
    out.append(_target("bf16 joint-map Pearson vs float32, min over photos",
                       fid.get("joint_map_pearson_min") if ok_fid else None, ">=", 0.99))
    t5 = {"name": "bf16 top-5 classes equal to float32 on every photo", "target": "all",
          "value": f"{fid['top5_equal']}/{fid['images']}" if ok_fid else None,
          "pass": fid.get("top5_all_equal") if ok_fid else None}
    out.append(t5)
    ro = res.get("rollout") or {}
    ok_ro = ro and "error" not in ro
    out.append(_target(f"rollout: speed-up over the per-image NumPy loop (B={ro.get('shape', ['?'])[0]})",
                       ro.get("speedup_vs_numpy_loop") if ok_ro else None, ">=", 3.0, unit="x"))
    out.append(_target("rollout time / time of a jitted read of the attention tensor",
                       ro.get("rollout_over_read") if ok_ro else None, "<=", 2.0, unit="x"))
    st = res.get("startup") or {}
    out.append(_target("visualize.py warm start / cold start", st.get("warm_over_cold"), "<=", round(1 / 3, 3)))
    return out


# --- reporting ------------------------------------------------------------------------------


def format_table(res: Dict[str, Any]) -> str:
    """Markdown tables of the rows, GEMM rooflines, targets, fidelity, compile and start-up."""
    lines = []
    gflop = res["flops"]["gflop_per_image"]
    m = res["machine"]
    lines.append(f"Device: {m.get('platform')} ({m.get('device_kind')}), {m.get('cores')} cores, {m.get('cpu')}; "
                 f"jax {m.get('jax')}, torch {m.get('torch', 'n/a')}; model {gflop:.2f} GFLOP/image.")
    lines.append("")
    lines.append("| dtype | batch | row | images/s | ms/batch (median) | first call s | peak RSS MB | steady peak MB "
                 "| % of own GEMM | vs PyTorch | other load |")
    lines.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in res["rows"]:
        if not _ok(r):
            why = f"error: {r['error'][:60]}" if "error" in r else "skipped"
            lines.append(f"| {r['dtype']} | {r['batch']} | {r['label']} | {why} | | | | | | | |")
            continue
        tor = _find(res, "torch", r["batch"], r["dtype"])
        vs = f"{r['images_per_s'] / tor['images_per_s']:.2f}x" if tor else "n/a"
        frac = r.get("roofline_fraction")
        peak = r.get("device_peak_mb") or r.get("peak_rss_mb")
        lines.append(
            f"| {r['dtype']} | {r['batch']} | {r['label']} | {r['images_per_s']:.2f} | "
            f"{1000 * r['median_batch_s']:.0f} | "
            f"{r['first_call_s']:.2f} | {peak:.0f} | {_fmt(r.get('steady_peak_rss_mb'), '.0f')} | "
            f"{'n/a' if frac is None else f'{100 * frac:.0f}%'} | {vs} | {_pct(r.get('foreign_cpu'))} |"
        )
    lines.append("")
    lines.append("| GEMM | n | GFLOP/s (start) | GFLOP/s (end) |")
    lines.append("|---|---:|---:|---:|")
    for k, g in (res.get("gemm") or {}).items():
        if "error" in g:
            continue
        end = (res.get("gemm_end") or {}).get(k, {})
        lines.append(f"| {k.replace('_', ' ')} | {g['n']} | {g['gflops']:.1f} | {_fmt(end.get('gflops'), '.1f')} |")
    lines.append("")
    lines.append("| target | value | goal | pass |")
    lines.append("|---|---:|---:|---|")
    for t in res.get("targets", []):
        v = t["value"]
        vs = "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
        p = {True: "PASS", False: "FAIL", None: "n/a"}[t["pass"]]
        if "stretch_pass" in t:
            p += f" (stretch {t['stretch']}: {'PASS' if t['stretch_pass'] else 'FAIL'})"
        lines.append(f"| {t['name']} | {vs} | {t['target']} | {p} |")
    fid = res.get("bf16_fidelity")
    if fid and "error" not in fid:
        lines.append("")
        lines.append(f"bfloat16 fidelity on {fid['images']} photos: joint-map Pearson min "
                     f"{fid['joint_map_pearson_min']:.4f}, median {fid['joint_map_pearson_median']:.4f}; cumulative "
                     f"maps min {fid['cumulative_maps_pearson_min']:.4f}; top-5 equal {fid['top5_equal']}/"
                     f"{fid['images']}, top-1 equal {fid['top1_equal']}/{fid['images']} (random weights).")
    comp = [c for c in res.get("compile", []) if "error" not in c]
    if comp:
        lines.append("")
        lines.append("| compile (abstract params) | layers | batch | trace+lower s | XLA compile s | peak RSS MB |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for c in comp:
            lines.append(f"| {c['variant']} {c['what']} | {c['layers']} | {c['batch']} | {c['trace_lower_s']:.1f} | "
                         f"{c['compile_s']:.1f} | {c['peak_rss_mb']:.0f} |")
    st = res.get("startup")
    if st:
        lines.append("")
        if st.get("status") == "ok":
            lines.append(f"visualize.py start-up, one image: cold {st['cold']['wall_s']:.1f} s, warm "
                         f"{st['warm']['wall_s']:.1f} s (warm/cold {st['warm_over_cold']:.2f}).")
        else:
            why = st.get("reason") or st.get("cold", {}).get("stderr_tail", "")[-200:]
            lines.append(f"visualize.py start-up: {st.get('status')} ({why})")
    return "\n".join(lines)


def _fmt(v, spec) -> str:
    return "n/a" if v is None else format(v, spec)


def write_json(obj: Dict[str, Any], path: os.PathLike) -> Path:
    """Writes ``obj`` as JSON atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=False, default=_json_default)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``scripts/benchmark.py``: runs the benchmark, prints the tables, writes the JSON. Returns 0/1."""
    args = _build_parser().parse_args(argv)
    if args.task is not None:
        out = _run_task_here(json.loads(args.task))
        sys.stdout.write(_MARK + json.dumps(out, default=_json_default) + "\n")
        sys.stdout.flush()
        return 0 if "error" not in out else 1
    if args.reps < 1:
        print("--reps must be >= 1", file=sys.stderr)
        return 2
    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    try:
        res = run_benchmark(args, log=log)
    except RuntimeError as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else REPO / "benchmarks" / f"results-{res['machine']['platform']}.json"
    res["command"] = "python scripts/benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_json(res, out)
    print(format_table(res))
    print(f"\nwrote {out}")
    errors = [r for r in res["rows"] if "error" in r]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
