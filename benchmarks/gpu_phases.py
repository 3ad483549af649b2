"""The phases of the GPU check (:mod:`benchmarks.gpu`), each run in its own process.

``python -m benchmarks.gpu_phases '<task json>'`` runs one phase. A phase appends one JSON line
per finished item (``section`` = info, parity, gemm, rows or first_call_split; ``skipped`` or
``error`` when it did not run) to ``task["records"]`` as soon as the item is done, so that a
phase killed at its deadline keeps what it measured; progress goes to stderr.

Every item is guarded by the phase's deadline (``task["deadline"]``, epoch seconds): it runs
only if the time the same kind of item took last (or ``task["defaults"]``) still fits.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np

from benchmarks.common import (
    config_dict,
    config_namespace,
    images,
    json_default,
    reference,
    time_calls,
    timing_fields,
)

# Parity modes: vitjax's compute dtype and matmul_precision, and optionally a global JAX
# default precision the model must ignore (ViTConfig.matmul_precision wins).
PARITY_MODES = {
    "float32": {"dtype": "float32", "matmul_precision": "float32"},
    "tensorfloat32": {"dtype": "float32", "matmul_precision": "tensorfloat32"},
    "bfloat16": {"dtype": "float32", "matmul_precision": "bfloat16"},
    "dtype=bfloat16": {"dtype": "bfloat16", "matmul_precision": "float32"},
    "float32 under global bfloat16": {"dtype": "float32", "matmul_precision": "float32", "global": "bfloat16"},
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Budget:
    """Time guard: an item runs only if its estimate (the last duration of its kind) fits."""

    def __init__(self, deadline: float, defaults: Dict[str, float]):
        self.deadline, self.defaults, self.seen = deadline, defaults, {}

    def left(self) -> float:
        return self.deadline - time.time()

    def check(self, key: str, kind: str) -> Optional[str]:
        """None if ``key`` fits, else the reason it is skipped."""
        est = self.seen.get(key, self.defaults.get(kind, 30.0))
        left = self.left()
        return None if est <= left else f"time budget: needs ~{est:.0f} s, {max(left, 0):.0f} s left"

    def done(self, key: str, seconds: float) -> None:
        self.seen[key] = seconds


class Recorder:
    """Appends records to the phase's JSON-lines file."""

    def __init__(self, path: str):
        self.path = Path(path)

    def __call__(self, record: Dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=json_default) + "\n")


def guarded(emit: Recorder, budget: Budget, key: str, kind: str, base: Dict[str, Any],
            fn: Callable[..., Dict[str, Any]], *args) -> Optional[Dict[str, Any]]:
    """Runs ``fn(*args)`` if the budget allows; emits its result + ``base``, ``skipped`` or ``error``."""
    why = budget.check(key, kind)
    if why:
        emit({**base, "skipped": why})
        log(f"  skip {key}: {why}")
        return None
    t = time.time()
    try:
        rec = {**fn(*args), **base}
    except Exception as e:  # noqa: BLE001 - reported, the phase goes on
        rec = {**base, "error": f"{type(e).__name__}: {e}"[:500], "traceback": traceback.format_exc()[-1500:]}
        log(f"  ERROR {key}: {rec['error']}")
    rec["item_wall_s"] = time.time() - t
    budget.done(key, rec["item_wall_s"])
    emit(rec)
    return rec


def _stem(workdir: str, variant: str, overrides: Dict[str, Any]) -> Path:
    tag = "-".join(f"{k}{v}" for k, v in sorted(overrides.items()))
    return Path(workdir) / f"{variant.replace('+', '_')}{'-' + tag if tag else ''}"


def ensure_ckpt(workdir: str, variant: str, overrides: Dict[str, Any]) -> str:
    """Writes a random Google-layout .npz of ``variant`` and its config (.json) once; the .npz path."""
    from vitjax.checkpoints.synthetic import random_checkpoint, save_npz
    from vitjax.model.config import get_config

    stem = _stem(workdir, variant, overrides)
    config = get_config(variant, **overrides)
    if not stem.with_suffix(".npz").exists():
        save_npz(random_checkpoint(config, seed=0), stem.with_suffix(".npz"))
    stem.with_suffix(".json").write_text(json.dumps(config_dict(config)))
    return str(stem.with_suffix(".npz"))


def read_ckpt(workdir: str, variant: str, overrides: Dict[str, Any]):
    """(npz path, config dict) written by the prepare phase; no JAX needed (the torch phases).

    Raises:
      FileNotFoundError: the prepare phase did not write it.
    """
    stem = _stem(workdir, variant, overrides)
    return str(stem.with_suffix(".npz")), json.loads(stem.with_suffix(".json").read_text())


def torch_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def jax_info() -> Dict[str, Any]:
    import jax

    dev = jax.devices()[0]
    return {"jax": jax.__version__, "platform": dev.platform, "device_kind": getattr(dev, "device_kind", str(dev)),
            "device_count": jax.device_count(), "python": platform.python_version(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "jax_default_matmul_precision": str(getattr(jax.config, "jax_default_matmul_precision", "unknown"))}


def torch_info() -> Dict[str, Any]:
    import timm
    import torch

    cuda = torch.cuda.is_available()
    return {"torch": torch.__version__, "timm": timm.__version__, "cuda": cuda,
            "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
            "nvidia_tf32_override": os.environ.get("NVIDIA_TF32_OVERRIDE")}


# --- phases ----------------------------------------------------------------------------------


def phase_prepare(task, emit: Recorder, budget: Budget) -> None:
    """Random checkpoints (and their configs) for every model of the check (JAX on the CPU)."""
    for spec in task["ckpts"]:
        path = ensure_ckpt(task["workdir"], spec["variant"], spec.get("overrides", {}))
        emit({"section": "ckpt", **spec, "path": path})


def phase_reference(task, emit: Recorder, budget: Budget) -> None:
    """timm's outputs for each parity model: float32, TF32 off (matmuls and cuDNN convolutions),
    tanh GELU, fused attention off, attention hooked on ``attn_drop``; saved for the JAX phases.
    A process of its own, so that torch's and JAX's CUDA libraries never share one."""
    import torch

    from benchmarks.torch_rows import precision_flags, set_precision

    ref = reference()
    dev = torch_device()
    emit({"section": "info", "phase": "reference", **torch_info()})
    if dev.type != "cuda" and not task["dry_run"]:
        raise RuntimeError("torch sees no CUDA device: use --dry-run on a CPU")
    for item in task["items"]:
        path, cfg = read_ckpt(task["workdir"], item["variant"], item.get("overrides", {}))
        base = {"section": "reference", "model": model_name(item["variant"], cfg), "batch": item["batch"]}

        def run(item=item, path=path, cfg=cfg):
            set_precision("float32")  # the reference is true float32
            t = time.time()
            model = ref.timm_model(config_namespace(cfg), path, act_layer="gelu_tanh").to(dev)
            logits, _, att = ref.timm_forward(model, images(item["batch"], cfg["image_size"], seed=1))
            out = {"timm_s": time.time() - t, "timm_flags": precision_flags(), "timm_device": str(dev)}
            del model
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            np.savez(Path(path).with_suffix(".ref.npz"), logits=logits, attention=att)
            return out

        rec = guarded(emit, budget, "reference", "parity", base, run)
        if rec and "error" not in rec:
            log(f"reference {base['model']}: timm on {dev} in {rec['timm_s']:.1f} s")


def model_name(variant: str, cfg) -> str:
    return f"{variant} {cfg['image_size'][0]}px"


def phase_parity(task, emit: Recorder, budget: Budget) -> None:
    """vitjax's forward pass in each parity mode against the saved timm outputs."""
    emit({"section": "info", "phase": "parity", **jax_info()})
    run_parity(task, emit, budget)


def run_parity(task, emit: Recorder, budget: Budget) -> None:
    for item in [i for i in task["items"] if i["modes"]]:
        path, cfg = read_ckpt(task["workdir"], item["variant"], item.get("overrides", {}))
        name = model_name(item["variant"], cfg)
        refs = Path(path).with_suffix(".ref.npz")
        if not refs.exists():
            for mode in item["modes"]:
                emit({"section": "parity", "model": name, "mode": mode, "batch": item["batch"],
                      "skipped": "no timm reference (the reference phase did not run or failed)"})
            continue
        with np.load(refs) as f:
            ref_logits, ref_att = f["logits"], f["attention"]
        x = images(item["batch"], cfg["image_size"], seed=1)
        for mode in item["modes"]:
            m = PARITY_MODES[mode]
            base = {"section": "parity", "model": name, "mode": mode, **m, "batch": item["batch"]}
            rec = guarded(emit, budget, f"parity {item['variant']}", "parity", base, parity_mode, path, m, x,
                          ref_logits, ref_att)
            if rec and "error" not in rec:
                log(f"  {mode:30s} logits max|d| {rec['logits_max_abs_diff']:.2e} (rel {rec['logits_rel_diff']:.2e})"
                    f"  attention max|d| {rec['attention_max_abs_diff']:.2e}  top-5 equal {rec['top5_equal']}/"
                    f"{item['batch']}")


def parity_mode(path, m, x, ref_logits, ref_att) -> Dict[str, Any]:
    """vitjax's forward pass in parity mode ``m`` against the reference's outputs."""
    import jax

    import vitjax

    ctx = global_precision(m["global"]) if "global" in m else contextlib.nullcontext()
    t = time.time()
    with ctx:
        model, params = vitjax.load_checkpoint(path, dtype=getattr(jax.numpy, m["dtype"]),
                                               matmul_precision=m["matmul_precision"])
        logits, att = jax.block_until_ready(vitjax.forward(model, params, x))
    return {"first_call_s": time.time() - t,
            **compare(np.asarray(logits, np.float32), np.asarray(att, np.float32), ref_logits, ref_att)}


@contextlib.contextmanager
def global_precision(name: str):
    """JAX's global default matmul precision set to ``name`` inside the block (restored after)."""
    import jax

    with jax.default_matmul_precision(name):
        yield


def compare(logits, att, ref_logits, ref_att) -> Dict[str, Any]:
    """Max differences against the reference; tolerances of tests/test_parity.py for float32."""
    scale = float(np.abs(ref_logits).max())
    d_logits = float(np.abs(logits - ref_logits).max())
    per_layer = np.abs(att - ref_att).max(axis=(0, 2, 3, 4))
    top5 = [set(np.argsort(-logits[i])[:5]) == set(np.argsort(-ref_logits[i])[:5]) for i in range(len(logits))]
    return {"logits_max_abs_diff": d_logits, "logits_rel_diff": d_logits / max(scale, 1e-30),
            "attention_max_abs_diff": float(per_layer.max()), "attention_per_layer": per_layer.tolist(),
            "top5_equal": int(sum(top5)), "top1_equal": int(sum(np.argmax(logits, -1) == np.argmax(ref_logits, -1))),
            "within_parity_tolerance": bool(d_logits <= 1e-4 * max(1.0, scale) and per_layer.max() <= 1e-4)}


def phase_vitjax(task, emit: Recorder, budget: Budget) -> None:
    """Parity (until ``task["parity_deadline"]``), then GEMM rates, then the rows (plain / capture /
    lean) per batch (largest first) and mode, then the first-call split."""
    import jax
    import jax.numpy as jnp

    from benchmarks.tasks import xla_gemm

    info = jax_info()
    emit({"section": "info", "phase": "vitjax", **info})
    if info["platform"] != "gpu" and not task["dry_run"]:
        raise RuntimeError(f"JAX runs on {info['platform']}, not a GPU: use --dry-run on a CPU")
    run_parity(task, emit, Budget(task["parity_deadline"], budget.defaults))
    path, cfg = read_ckpt(task["workdir"], task["variant"], {})
    for mode in task["modes"]:
        guarded(emit, budget, f"gemm xla {mode}", "gemm", {"section": "gemm", "lib": "xla", "mode": mode},
                lambda mode=mode: xla_gemm(task["gemm_n"], task["gemm_reps"], mode))
    models: Dict[str, Any] = {}
    for b in task["batches"]:
        x = jax.block_until_ready(jnp.asarray(images(b, cfg["image_size"])))
        for mode in task["modes"]:
            for row in task["rows"]:
                base = {"section": "rows", "lib": "vitjax", "row": row, "mode": mode, "batch": b}
                rec = guarded(emit, budget, f"vitjax {mode} {row}", "vitjax_row", base, vitjax_row, models, path,
                              mode, row, x, task)
                if rec and "error" not in rec:
                    log(f"  vitjax {mode:13s} B={b:<4d} {row:8s} {rec['images_per_s']:9.1f} img/s  "
                        f"first call {rec['first_call_s']:6.2f} s")
        del x
    # where the first call goes: tracing + lowering vs XLA compilation (autotuning included) + run;
    # at a batch size no row used, so that no autotuning result is cached in this process yet
    for mode in task["split_modes"]:
        base = {"section": "first_call_split", "lib": "vitjax", "row": "capture", "mode": mode,
                "batch": task["split_batch"]}
        rec = guarded(emit, budget, f"vitjax {mode} capture", "vitjax_row", base, first_call_split, models, path,
                      mode, task["split_batch"], cfg)
        if rec and "error" not in rec:
            log(f"  first call split {mode} B={rec['batch']}: trace+lower {rec['trace_lower_s']:.2f} s, compile "
                f"{rec['compile_s']:.2f} s, run {rec['run_s']:.3f} s")


def _model(models: Dict[str, Any], path: str, mode: str):
    """The model of ``mode``, loaded on first use; (model, params, seconds spent loading)."""
    import jax

    from benchmarks.tasks import load_model

    t = time.perf_counter()
    if mode not in models:
        models[mode] = load_model(path, mode)
        jax.block_until_ready(models[mode][1])
    return (*models[mode], time.perf_counter() - t)


def vitjax_row(models, path: str, mode: str, row: str, x, task) -> Dict[str, Any]:
    """One vitjax row on the device: timed calls, process peak memory so far, consistency check."""
    import jax

    from benchmarks.tasks import check_fields, device_peak_mb, vitjax_call

    model, params, load_s = _model(models, path, mode)
    r = time_calls(vitjax_call(model, params, row, x), jax.block_until_ready, task["reps"], task["warmup"])
    out = r.pop("last")
    return {**timing_fields(x.shape[0], r, load_s), "device_peak_mb_so_far": device_peak_mb(jax.devices()[0]),
            **check_fields(row, out)}


def first_call_split(models, path: str, mode: str, batch: int, cfg) -> Dict[str, Any]:
    """compute_maps wrapped in jax.jit, lowered and compiled ahead of time, timed per stage."""
    import jax
    import jax.numpy as jnp

    import vitjax

    model, params, _ = _model(models, path, mode)
    x = jnp.asarray(images(batch, cfg["image_size"], seed=2))
    fn = jax.jit(lambda p, im: vitjax.compute_maps(model, p, im))
    t = time.perf_counter()
    lowered = fn.lower(params, x)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    jax.block_until_ready(compiled(params, x))
    t3 = time.perf_counter()
    return {"trace_lower_s": t1 - t, "compile_s": t2 - t1, "run_s": t3 - t2}


def phase_torch(task, emit: Recorder, budget: Budget) -> None:
    """torch GEMM rates, then the PyTorch rows per batch (largest first) and mode."""
    import torch

    from benchmarks.torch_rows import set_precision, torch_gemm

    emit({"section": "info", "phase": "torch", **torch_info()})
    dev = torch_device()
    if dev.type != "cuda" and not task["dry_run"]:
        raise RuntimeError("torch sees no CUDA device: use --dry-run on a CPU")
    plat = "gpu" if dev.type == "cuda" else "cpu"
    for mode in task["modes"]:
        guarded(emit, budget, f"gemm torch {mode}", "gemm", {"section": "gemm", "lib": "torch", "mode": mode},
                lambda mode=mode: torch_gemm(task["gemm_n"], task["gemm_reps"], mode, plat))
    path, cfg = read_ckpt(task["workdir"], task["variant"], {})
    set_precision("float32")
    model = reference().timm_model(config_namespace(cfg), path, act_layer="gelu_tanh").to(dev)
    for b in task["batches"]:
        x = torch.from_numpy(np.ascontiguousarray(images(b, cfg["image_size"]).transpose(0, 3, 1, 2))).to(dev)
        for mode in task["modes"]:
            for row in task["rows"]:
                base = {"section": "rows", "lib": "torch", "row": row, "mode": mode, "batch": b}
                rec = guarded(emit, budget, f"torch {mode} {row}", "torch_row", base, torch_row, model, row, mode,
                              x, tuple(cfg["grid"]), task)
                if rec and "error" not in rec:
                    log(f"  torch  {mode:13s} B={b:<4d} {row:13s} {rec['images_per_s']:9.1f} img/s  "
                        f"first call {rec['first_call_s']:6.2f} s")
        del x


def torch_row(model, row: str, mode: str, x, grid, task) -> Dict[str, Any]:
    """One PyTorch row on the device: timed calls, peak memory of this row, consistency check."""
    import torch

    from benchmarks.torch_rows import precision_flags, runner, set_precision, sync_for

    dev = x.device
    autocast = set_precision(mode)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    call = runner(model, row, x, autocast, grid)
    try:
        r = time_calls(call, sync_for(dev), task["reps"], task["warmup"])
    finally:
        call.close()
    logits, maps = r.pop("last")
    lg = logits.cpu().numpy()
    check = {"logits0": lg[0, :16].tolist()}
    if maps is not None:
        check["rollout0"] = maps[0][0].float().cpu().numpy().ravel().tolist()
    return {**timing_fields(x.shape[0], r, 0.0), "torch_flags": precision_flags(), "check": check,
            "device_peak_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None}


PHASES = {"prepare": phase_prepare, "reference": phase_reference, "parity": phase_parity, "vitjax": phase_vitjax,
          "torch": phase_torch}


def main(argv=None) -> int:
    task = json.loads((sys.argv[1:] if argv is None else argv)[0])
    emit = Recorder(task["records"])
    budget = Budget(task["deadline"], task.get("defaults", {}))
    try:
        PHASES[task["phase"]](task, emit, budget)
    except Exception as e:  # noqa: BLE001 - the orchestrator reports it
        emit({"section": "error", "phase": task["phase"], "error": f"{type(e).__name__}: {e}"[:500],
              "traceback": traceback.format_exc()[-2000:]})
        log(f"phase {task['phase']} failed: {type(e).__name__}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
