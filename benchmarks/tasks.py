"""One measurement each ("tasks"), run in this process or in a fresh child process.

A task is a JSON-able dict with a ``kind`` (a key of ``TASKS``); its result is a dict (with
``error`` and a traceback tail if it raised). ``python -m benchmarks.tasks '<json>'`` runs one
and prints its result after a marker line, which is how :func:`run_child` gives every row its
own process (so that its peak memory is its own, and so that the PyTorch rows never start JAX).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from benchmarks.common import (
    MODES,
    NOTE_RANDOM,
    PHOTOS,
    REPO,
    config_dict,
    cpu_has_bf16,
    cpu_model,
    images,
    json_default,
    maxrss_mb,
    median,
    num_cores,
    pearson,
    status_mb,
    time_calls,
    timing_fields,
)

VITJAX_ROWS = ("capture", "lean", "plain", "capture_attention")
MARK = "@@VITJAX_BENCH_RESULT@@ "


# --- vitjax ----------------------------------------------------------------------------------


def load_model(ckpt: str, mode: str):
    """``vitjax.load_checkpoint`` in one of ``MODES`` (compute dtype and matmul precision)."""
    import jax.numpy as jnp

    import vitjax

    m = MODES[mode]
    dtype = jnp.bfloat16 if m["dtype"] == "bfloat16" else jnp.float32
    return vitjax.load_checkpoint(ckpt, dtype=dtype, matmul_precision=m["matmul_precision"])


def vitjax_call(model, params, row: str, x):
    """A no-argument callable for one timed call of a vitjax row on images ``x [B, H, W, 3]``.

    ``plain``: :func:`vitjax.predict` (logits); ``capture``: :func:`vitjax.compute_maps`
    (logits and every map, attention captured then reduced); ``capture_attention``: the same
    keeping ``attention [B, L, H, N, N]``; ``lean``: ``compute_maps(..., lean=True)``.
    """
    import vitjax

    calls = {
        "plain": lambda: vitjax.predict(model, params, x),
        "capture": lambda: vitjax.compute_maps(model, params, x),
        "capture_attention": lambda: vitjax.compute_maps(model, params, x, keep_attention=True),
        "lean": lambda: vitjax.compute_maps(model, params, x, lean=True),
    }
    if row not in calls:
        raise ValueError(f"unknown vitjax row {row!r}; known: {', '.join(calls)}")
    return calls[row]


def device_peak_mb(dev) -> Optional[float]:
    """JAX's ``peak_bytes_in_use`` of ``dev`` (process lifetime) in MiB; None on CPU."""
    if dev.platform == "cpu":
        return None
    try:
        v = (dev.memory_stats() or {}).get("peak_bytes_in_use")
    except Exception:  # noqa: BLE001 - backends without stats
        return None
    return None if v is None else v / 2**20


def check_fields(row: str, out) -> Dict[str, Any]:
    """Logits and joint map of image 0 and output shapes, for cross-library consistency."""
    logits = np.asarray(out if row == "plain" else out["logits"], np.float32)
    res = {"check": {"logits0": logits[0, :16].tolist(), "top5_0": np.argsort(-logits[0])[:5].tolist()},
           "outputs": {"logits": list(logits.shape)}}
    if row != "plain":
        res["check"]["rollout0"] = np.asarray(out["rollout"][0], np.float32).ravel().tolist()
        res["outputs"] = {k: list(v.shape) for k, v in out.items()}
    return res


def _task_row_vitjax(task) -> Dict[str, Any]:
    import jax
    import jax.numpy as jnp

    rss0 = status_mb("VmRSS")
    t = time.perf_counter()
    model, params = load_model(task["ckpt"], task["mode"])
    jax.block_until_ready(params)
    load_s = time.perf_counter() - t
    x = jax.block_until_ready(jnp.asarray(images(task["batch"], model.config.image_size)))
    rss_ready = status_mb("VmRSS")
    r = time_calls(vitjax_call(model, params, task["row"], x), jax.block_until_ready, task["reps"], task["warmup"])
    out = r.pop("last")
    return {**timing_fields(task["batch"], r, load_s), "rss_start_mb": rss0, "rss_ready_mb": rss_ready,
            "peak_rss_mb": maxrss_mb(), "device_peak_mb": device_peak_mb(jax.devices()[0]),
            **check_fields(task["row"], out)}


def xla_gemm(n: int, reps: int, mode: str) -> Dict[str, Any]:
    """XLA's dense ``n^3`` matrix product rate (GFLOP/s, median) in one of ``MODES``.

    float32: float32 operands at ``Precision.HIGHEST``; tensorfloat32: ``HIGH``; bfloat16:
    bfloat16 operands (``DEFAULT``).
    """
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    dt = jnp.bfloat16 if MODES[mode]["dtype"] == "bfloat16" else jnp.float32
    prec = {"float32": jax.lax.Precision.HIGHEST, "tensorfloat32": jax.lax.Precision.HIGH,
            "bfloat16": jax.lax.Precision.DEFAULT}[mode]
    a = jnp.asarray(rng.standard_normal((n, n), dtype=np.float32), dt)
    b = jnp.asarray(rng.standard_normal((n, n), dtype=np.float32), dt)
    f = jax.jit(lambda u, v: jnp.dot(u, v, precision=prec))
    r = time_calls(lambda: f(a, b), jax.block_until_ready, reps, warmup=1)
    return {"impl": f"XLA (jax {jax.__version__}, {jax.devices()[0].platform})", "n": n, "dtype": mode, "reps": reps,
            "gflops": 2.0 * n**3 / r["median_s"] / 1e9, "gflops_best": 2.0 * n**3 / r["min_s"] / 1e9,
            "median_s": r["median_s"], "foreign_cpu": r["foreign_cpu"]}


def _task_gemm(task) -> Dict[str, Any]:
    if task["lib"] == "xla":
        return xla_gemm(int(task["n"]), int(task["reps"]), task["dtype"])
    from benchmarks.torch_rows import torch_gemm

    return torch_gemm(int(task["n"]), int(task["reps"]), task["dtype"], task.get("platform", "cpu"))


def _task_row_torch(task) -> Dict[str, Any]:
    from benchmarks.torch_rows import torch_row

    return torch_row(task)


def _task_info(task) -> Dict[str, Any]:
    import jax

    dev = jax.devices()[0]
    info = {"python": platform.python_version(), "machine": platform.machine(), "cores": num_cores(),
            "cpu": cpu_model(), "cpu_bf16_native": cpu_has_bf16(), "jax": jax.__version__, "platform": dev.platform,
            "device_kind": getattr(dev, "device_kind", str(dev)), "device_count": jax.device_count(),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}
    try:
        import flax

        info["flax"] = flax.__version__
    except ImportError:
        pass
    if task.get("ckpt"):
        import vitjax

        model, _ = vitjax.load_checkpoint(task["ckpt"])
        info["config"] = config_dict(model.config)
    return info


def _task_torch_info(task) -> Dict[str, Any]:
    try:
        import timm
        import torch
    except ImportError as e:
        return {"error": f"torch/timm unavailable: {e}"}
    return {"torch": torch.__version__, "timm": timm.__version__, "cuda": bool(torch.cuda.is_available()),
            "torch_threads_default": torch.get_num_threads()}


def _task_make_ckpt(task) -> Dict[str, Any]:
    from vitjax.checkpoints.synthetic import random_checkpoint, save_npz
    from vitjax.model.config import get_config

    config = get_config(task["variant"], **task.get("overrides", {}))
    save_npz(random_checkpoint(config, seed=task.get("seed", 0)), task["path"])
    return {"path": task["path"], "config": config_dict(config)}


def sample_images(limit: Optional[int] = None, root: Optional[str] = None) -> List[str]:
    """Photographs: ``root`` (default: the checkout's shared Caltech101 samples), else grace_hopper.jpg."""
    root = Path(root) if root else PHOTOS
    paths = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")) \
        if root.is_dir() else []
    if not paths:
        from matplotlib import cbook

        paths = [str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))]
    return paths[:limit] if limit else paths


def _task_fidelity(task) -> Dict[str, Any]:
    """bfloat16 against float32 maps on photos: Pearson of the joint and cumulative maps, top-1/5."""
    import jax
    import jax.numpy as jnp

    import vitjax

    paths = sample_images(task.get("limit"), task.get("photos"))
    bs = max(1, int(task.get("batch", 8)))
    outs = {}
    for mode in ("float32", "bfloat16"):
        model, params = load_model(task["ckpt"], mode)
        imgs = np.stack([vitjax.preprocess(p, model.config.image_size) for p in paths])
        chunks = [jax.device_get(vitjax.compute_maps(model, params, jnp.asarray(imgs[i:i + bs])))
                  for i in range(0, len(imgs), bs)]  # a plain slice: the last batch may be smaller
        outs[mode] = {k: np.concatenate([c[k] for c in chunks]) for k in ("logits", "rollout", "cumulative")}
    f, h = outs["float32"], outs["bfloat16"]
    n = len(paths)
    corr = [pearson(f["rollout"][i], h["rollout"][i]) for i in range(n)]
    layer_corr = [min(pearson(f["cumulative"][i, j], h["cumulative"][i, j]) for j in range(f["cumulative"].shape[1]))
                  for i in range(n)]
    top5 = [set(np.argsort(-f["logits"][i])[:5]) == set(np.argsort(-h["logits"][i])[:5]) for i in range(n)]
    top1 = [int(np.argmax(f["logits"][i])) == int(np.argmax(h["logits"][i])) for i in range(n)]
    return {"images": n, "source": os.path.commonpath(paths) if n > 1 else os.path.dirname(paths[0]),
            "joint_map_pearson_min": float(min(corr)), "joint_map_pearson_median": median(corr),
            "cumulative_maps_pearson_min": float(min(layer_corr)), "top5_equal": int(sum(top5)),
            "top5_all_equal": bool(all(top5)), "top1_equal": int(sum(top1)),
            "logits_max_abs_diff": float(np.max(np.abs(f["logits"] - h["logits"]))), "note": NOTE_RANDOM}


def _task_compile(task) -> Dict[str, Any]:
    """Trace + lower and XLA compile time of predict / compute_maps from abstract parameters."""
    import jax
    import jax.numpy as jnp

    import vitjax
    from vitjax.model.config import get_config

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
    lowered.compile()
    compile_s = time.perf_counter() - t
    return {"variant": task["variant"], "what": task["what"], "batch": int(task["batch"]), "layers": config.num_layers,
            "params": n_params, "eval_shape_s": shape_s, "trace_lower_s": lower_s, "compile_s": compile_s,
            "total_s": shape_s + lower_s + compile_s, "peak_rss_mb": maxrss_mb()}


TASKS = {
    "info": _task_info,
    "torch_info": _task_torch_info,
    "make_ckpt": _task_make_ckpt,
    "gemm": _task_gemm,
    "row_vitjax": _task_row_vitjax,
    "row_torch": _task_row_torch,
    "fidelity": _task_fidelity,
    "compile": _task_compile,
}


# --- running ---------------------------------------------------------------------------------


def run_here(task: Dict[str, Any]) -> Dict[str, Any]:
    """Runs ``task`` in this process; an exception becomes ``{"error", "traceback"}``."""
    t = time.perf_counter()
    try:
        out = TASKS[task["kind"]](task)
    except Exception as e:  # noqa: BLE001 - reported in the JSON, the run goes on
        out = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
    out["task_wall_s"] = time.perf_counter() - t
    return out


def child_env(env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """``env`` (default: this one) with the repository first on ``PYTHONPATH`` and Agg plots."""
    out = dict(os.environ if env is None else env)
    out["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in out.get("PYTHONPATH", "").split(os.pathsep) if p])
    out.setdefault("MPLBACKEND", "Agg")
    return out


def run_child(task: Dict[str, Any], timeout: float, env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Runs ``task`` in a fresh interpreter (``python -m benchmarks.tasks``); returns its result."""
    cmd = [sys.executable, "-m", "benchmarks.tasks", json.dumps(task)]
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env(env), cwd=str(REPO))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "task_wall_s": time.perf_counter() - t}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(MARK):
            out = json.loads(line[len(MARK):])
            out["process_wall_s"] = time.perf_counter() - t
            return out
    return {"error": f"child exited with {p.returncode} without a result", "stderr": p.stderr[-2000:],
            "task_wall_s": time.perf_counter() - t}


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m benchmarks.tasks '<task json>'``: prints the marker line and the result."""
    argv = sys.argv[1:] if argv is None else argv
    out = run_here(json.loads(argv[0]))
    sys.stdout.write(MARK + json.dumps(out, default=json_default) + "\n")
    sys.stdout.flush()
    return 0 if "error" not in out else 1


if __name__ == "__main__":
    sys.exit(main())
