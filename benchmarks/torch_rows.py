"""The PyTorch peers: timm eager (weights from the same .npz), hooked attention, rollout in torch.

Rows (``TORCH_ROWS``):

* ``torch``: the usual practice: timm ``VisionTransformer``, ``fused_attn = False``, forward
  hooks on every block's ``attn.attn_drop``, then the per-image rollout loop (mean over heads,
  + I, rows normalised, left-multiplied; class row -> joint, own, cumulative and per-head maps);
* ``torch_batched``: the strong peer: the same forward and hooks, the rollout batched over
  images (one ``[B, N, N]`` matrix product per layer);
* ``torch_logits``: timm's forward alone with its fused attention (SDPA): logits only.

All under ``torch.no_grad()``; ``precision`` ``"float32"`` turns TF32 off for matmuls and
cuDNN convolutions, ``"tensorfloat32"`` on, ``"bfloat16"`` runs the model under
``torch.autocast(bfloat16)`` (softmax and the maps stay float32). Imports no JAX.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Dict, List

import numpy as np

from benchmarks.common import (
    config_namespace,
    images,
    maxrss_mb,
    num_cores,
    reference,
    status_mb,
    time_calls,
    timing_fields,
)

TORCH_ROWS = ("torch", "torch_batched", "torch_logits")
PRECISIONS = ("float32", "tensorfloat32", "bfloat16")
MAPS = ("rollout", "layer", "cumulative", "heads")  # what the rollout peers return, in order


def set_precision(precision: str):
    """Sets torch's global float32 matmul/conv flags for ``precision``; returns the autocast context.

    Raises:
      ValueError: ``precision`` not one of ``PRECISIONS``.
    """
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    tf32 = precision == "tensorfloat32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    if precision == "bfloat16":
        return lambda dev: torch.autocast(dev.type, dtype=torch.bfloat16)
    return lambda dev: contextlib.nullcontext()


def precision_flags() -> Dict[str, Any]:
    """torch's global precision flags now (recorded with every row)."""
    import torch

    return {"cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


def _norm(r, grid):
    """Each map divided by its max, last axis reshaped to the grid."""
    return (r / r.amax(dim=-1, keepdim=True)).reshape(r.shape[:-1] + tuple(grid))


def practice_maps(attentions: List, grid, prefix: int = 1):
    """The per-image rollout loop of the PyTorch tools on hooked attentions ``L x [B, H, N, N]``.

    For each image: mean over heads, + I, rows normalised, joint = Abar_l @ joint; the class row
    over the patches of Abar_l (own map), of the joint so far (cumulative) and of each head;
    every map divided by its max (Abnar & Zuidema 2020; jacobgil/vit-explain). Returns float32
    ``(rollout [B, gh, gw], layer [B, L, gh, gw], cumulative [B, L, gh, gw], heads [B, L, H, gh, gw])``.
    """
    import torch

    n = attentions[0].shape[-1]
    eye = torch.eye(n, device=attentions[0].device)
    out: Dict[str, list] = {"rollout": [], "layer": [], "cumulative": [], "heads": []}
    for i in range(attentions[0].shape[0]):
        joint = eye
        own, cum, heads = [], [], []
        for att in attentions:
            a = att[i].float()  # [H, N, N]
            heads.append(a[:, 0, prefix:])
            m = a.mean(dim=0) + eye
            m = m / m.sum(dim=-1, keepdim=True)
            joint = m @ joint
            own.append(m[0, prefix:])
            cum.append(joint[0, prefix:])
        cum_i = _norm(torch.stack(cum), grid)
        out["rollout"].append(cum_i[-1])
        out["layer"].append(_norm(torch.stack(own), grid))
        out["cumulative"].append(cum_i)
        out["heads"].append(_norm(torch.stack(heads), grid))
    return tuple(torch.stack(out[k]) for k in MAPS)


def batched_maps(attentions: List, grid, prefix: int = 1):
    """The same maps as :func:`practice_maps`, batched over images: the strong PyTorch peer.

    ``[B, L, H, N, N]`` stacked once; head mean, + I and row normalisation as one tensor op each;
    the joint product one batched ``[B, N, N]`` matmul per layer (its class row is the
    cumulative map). Returns the same four float32 tensors.
    """
    import torch

    a = torch.stack(attentions, dim=1).float()  # [B, L, H, N, N]
    n = a.shape[-1]
    heads = a[:, :, :, 0, prefix:]
    m = a.mean(dim=2) + torch.eye(n, device=a.device)
    m = m / m.sum(dim=-1, keepdim=True)  # [B, L, N, N]
    joint = m[:, 0]
    cum = [joint[:, 0, prefix:]]
    for layer in range(1, m.shape[1]):
        joint = torch.bmm(m[:, layer], joint)
        cum.append(joint[:, 0, prefix:])
    cum = _norm(torch.stack(cum, dim=1), grid)
    return cum[:, -1], _norm(m[:, :, 0, prefix:], grid), cum, _norm(heads, grid)


def device_of(platform: str):
    """``cuda`` when JAX's platform is a GPU and torch sees one, else ``cpu``."""
    import torch

    return torch.device("cuda" if platform == "gpu" and torch.cuda.is_available() else "cpu")


def sync_for(dev):
    """A ``sync(x) -> x`` that waits for the device's queue."""
    import torch

    def sync(x):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return x

    return sync


def runner(model, row: str, x, autocast, grid, prefix: int = 1):
    """A no-argument callable running one timed call of ``row`` on input ``x [B, 3, H, W]``.

    It returns ``(logits [B, C] float32, maps or None)``. Hooks (rows ``torch`` and
    ``torch_batched``) stay installed until the returned callable's ``close()`` is called.
    """
    import torch

    dev = x.device
    if row == "torch_logits":
        def run():
            with torch.no_grad(), autocast(dev):
                logits = model(x)
            return logits.float(), None
        run.close = lambda: None
        return run
    if row not in ("torch", "torch_batched"):
        raise ValueError(f"unknown torch row {row!r}; known: {', '.join(TORCH_ROWS)}")
    hooks = reference().attention_hooks(model)
    captured = hooks.__enter__()
    maps_fn = practice_maps if row == "torch" else batched_maps

    def run():
        captured.clear()
        with torch.no_grad():
            with autocast(dev):
                logits = model(x)
            maps = maps_fn(captured, grid, prefix)
        captured.clear()
        return logits.float(), maps

    run.close = lambda: hooks.__exit__(None, None, None)
    return run


def torch_row(task: Dict[str, Any]) -> Dict[str, Any]:
    """One PyTorch row: ``task`` has row, batch, mode, reps, warmup, ckpt, config (dict), platform.

    Returns images/s, median and first-call seconds, peak memory (process RSS; the device's
    ``max_memory_allocated`` on CUDA), the precision flags, output shapes and a ``check``
    (logits and joint map of image 0) for cross-library consistency.
    """
    import torch

    rss0 = status_mb("VmRSS")
    torch.set_num_threads(num_cores())
    cfg = task["config"]
    dev = device_of(task.get("platform", "cpu"))
    autocast = set_precision(task["mode"])
    t = time.perf_counter()
    model = reference().timm_model(config_namespace(cfg), task["ckpt"],
                                   act_layer="gelu_tanh" if cfg.get("gelu_approximate", True) else None).to(dev)
    load_s = time.perf_counter() - t
    x = torch.from_numpy(np.ascontiguousarray(images(task["batch"], cfg["image_size"]).transpose(0, 3, 1, 2)))
    x = x.to(dev)
    prefix = 1 if cfg.get("classifier", "token") == "token" else 0
    if prefix != 1:
        raise ValueError("the PyTorch rows support class-token ViTs only")
    run = runner(model, task["row"], x, autocast, tuple(cfg["grid"]), prefix)
    sync = sync_for(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    rss_ready = status_mb("VmRSS")
    try:
        r = time_calls(run, sync, task["reps"], task["warmup"])
    finally:
        run.close()
    logits, maps = r.pop("last")
    lg = logits.cpu().numpy()
    res = {**timing_fields(task["batch"], r, load_s), "rss_start_mb": rss0, "rss_ready_mb": rss_ready,
           "peak_rss_mb": maxrss_mb(),
           "device_peak_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
           "torch_threads": torch.get_num_threads(), "torch_device": str(dev), "torch_flags": precision_flags(),
           "check": {"logits0": lg[0, :16].tolist(), "top5_0": np.argsort(-lg[0])[:5].tolist()},
           "outputs": {"logits": list(lg.shape)}}
    if maps is not None:
        res["check"]["rollout0"] = maps[0][0].float().cpu().numpy().ravel().tolist()
        res["outputs"].update({k: list(v.shape) for k, v in zip(MAPS, maps, strict=True)})
    return res


def torch_gemm(n: int, reps: int, mode: str, platform: str = "cpu") -> Dict[str, Any]:
    """torch's dense ``n^3`` matrix product rate (GFLOP/s, median of ``reps``) in a precision mode.

    float32: TF32 off; tensorfloat32: TF32 on; bfloat16: bfloat16 operands.
    """
    import torch

    torch.set_num_threads(num_cores())
    set_precision(mode)
    dev = device_of(platform)
    rng = np.random.default_rng(0)
    dt = torch.bfloat16 if mode == "bfloat16" else torch.float32
    a = torch.from_numpy(rng.standard_normal((n, n), dtype=np.float32)).to(dev, dt)
    b = torch.from_numpy(rng.standard_normal((n, n), dtype=np.float32)).to(dev, dt)
    r = time_calls(lambda: torch.mm(a, b), sync_for(dev), reps, warmup=1)
    return {"impl": f"torch {torch.__version__} ({dev}, {torch.get_num_threads()} threads)", "n": n, "dtype": mode,
            "reps": reps, "gflops": 2.0 * n**3 / r["median_s"] / 1e9, "gflops_best": 2.0 * n**3 / r["min_s"] / 1e9,
            "median_s": r["median_s"], "foreign_cpu": r["foreign_cpu"]}
