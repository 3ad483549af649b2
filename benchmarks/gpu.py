"""The GPU check (``benchmarks/gpu.sh``): precision parity with timm and speed, within a time budget.

Phases, each in a fresh process (:mod:`benchmarks.gpu_phases`; torch and JAX never share one),
in this order:

1. ``prepare`` (JAX on the CPU): random-weight checkpoints, ViT-B/16 at 224 and R50+ViT-B/16 at 384;
2. ``reference`` (torch): timm's logits and attention for both, in float32 (TF32 off for
   matmuls and cuDNN, tanh GELU, fused attention off, hooks on ``attn_drop``), saved to disk;
3. ``vitjax``: parity against them in every mode of ``PARITY_MODES`` (float32, tensorfloat32
   and bfloat16 through ``matmul_precision``, ``dtype=bfloat16``, and float32 under a global
   ``jax.default_matmul_precision("bfloat16")``; the hybrid in float32): logits and attention
   max differences; then XLA's GEMM rate per mode; then rows ``plain`` (logits only),
   ``capture`` (``compute_maps``) and ``lean`` at B = 256, 64, 8 in float32-exact, TF32 and
   bf16; then the first call of ``compute_maps`` split into tracing + lowering and compilation;
4. ``torch``: torch's GEMM rate per mode, then timm eager rows: ``torch_logits`` (fused SDPA,
   logits only), ``torch_batched`` (hooks + batched rollout in torch, the strong peer) and
   ``torch`` (hooks + the per-image rollout loop, the common practice);
5. ``parity-hybrid`` (JAX): the hybrid's other modes, if time is left.

Every row reports images/s (batch / median of the timed calls) and the first call (trace +
compile + run for vitjax) as its own figure. A phase gets a deadline that leaves the later
phases their reserve; inside, an item starts only if the time its kind took last still fits
(skipped items are listed). Results go to ``results-gpu.json`` in ``$OUT`` if set, else in
``benchmarks/``. ``--dry-run`` (or ``VITJAX_GPU_DRY_RUN=1``) runs every code path on a CPU in
a minute or two: the ``testing`` model at batch 2, a 1-layer hybrid at 64 px in float32.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from benchmarks.common import BENCHMARKS, REPO, model_flops, write_json
from benchmarks.report import add_rooflines, consistency

SCHEMA = "vitjax-gpu-check/1"
KIND = {"prepare": "prepare", "reference": "parity", "parity": "parity", "vitjax": "vitjax_row",
        "torch": "torch_row"}  # each phase's kind of item
VIT_MODES = ["float32", "tensorfloat32", "bfloat16", "dtype=bfloat16", "float32 under global bfloat16"]
HYBRID_MODES = ["float32", "tensorfloat32", "bfloat16", "dtype=bfloat16"]

FULL = {
    "variant": "ViT-B_16", "batches": [256, 64, 8], "modes": ["bfloat16", "tensorfloat32", "float32"],
    "vitjax_rows": ["plain", "capture", "lean"], "torch_rows": ["torch_logits", "torch_batched", "torch"],
    "reps": 5, "warmup": 1, "gemm_n": 8192, "gemm_reps": 10, "split_batch": 128,
    "split_modes": ["float32", "bfloat16"], "parity_batch": 4,
    "hybrid": {"variant": "R50+ViT-B_16", "overrides": {"image_size": 384}, "batch": 2},
    "hybrid_first": HYBRID_MODES[:1], "hybrid_tail": HYBRID_MODES[1:],  # before the rows / if time is left
    "budget_s": 440.0, "reserve_vitjax_s": 150.0, "reserve_torch_s": 60.0,
    "defaults": {"prepare": 30.0, "parity": 40.0, "gemm": 10.0, "vitjax_row": 30.0, "torch_row": 10.0},
}
DRY = {
    **FULL, "variant": "testing", "batches": [2], "reps": 2, "gemm_n": 128, "gemm_reps": 2, "split_batch": 3,
    "split_modes": ["float32"], "parity_batch": 2,
    "hybrid": {"variant": "R50+ViT-B_16", "overrides": {"image_size": 64, "num_layers": 1}, "batch": 1},
    "hybrid_first": [], "hybrid_tail": ["float32"],  # the hybrid's ResNet takes ~15 s per compile on a CPU
    "budget_s": 240.0, "reserve_vitjax_s": 40.0, "reserve_torch_s": 30.0,
    "defaults": {"prepare": 10.0, "parity": 20.0, "gemm": 5.0, "vitjax_row": 10.0, "torch_row": 5.0},
}


def run_phase(name: str, task: Dict[str, Any], workdir: Path, env: Dict[str, str], grace: float = 20.0):
    """Runs one phase in a fresh process until its deadline (+ ``grace``); returns (records, status)."""
    records = workdir / f"{name}.jsonl"
    task = {**task, "records": str(records), "workdir": str(workdir)}
    timeout = max(5.0, task["deadline"] - time.time() + grace)
    cmd = [sys.executable, "-m", "benchmarks.gpu_phases", json.dumps(task)]
    t = time.time()
    status: Dict[str, Any] = {"phase": name}
    try:
        p = subprocess.run(cmd, env=env, cwd=str(REPO), timeout=timeout)
        status["returncode"] = p.returncode
    except subprocess.TimeoutExpired:
        status["error"] = f"killed after {timeout:.0f} s (deadline + {grace:.0f} s)"
        print(f"phase {name}: {status['error']}", flush=True)
    status["wall_s"] = time.time() - t
    out = [json.loads(line) for line in records.read_text().splitlines()] if records.exists() else []
    records.unlink(missing_ok=True)
    return out, status


def _env(**extra: str) -> Dict[str, str]:
    env = dict(os.environ, MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1"), **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def run_check(s: Dict[str, Any], dry: bool, budget: float) -> Dict[str, Any]:
    """All phases under ``budget`` seconds; the result dictionary (see :data:`SCHEMA`)."""
    t0 = time.time()
    end = t0 + budget
    workdir = Path(tempfile.mkdtemp(prefix="vitjax-gpu-"))
    vit = {"variant": s["variant"], "batch": s["parity_batch"], "overrides": {}}
    hyb = s["hybrid"]
    hybrid = s["hybrid_first"] + s["hybrid_tail"]
    common = {"dry_run": dry, "variant": s["variant"], "batches": s["batches"], "modes": s["modes"],
              "reps": s["reps"], "warmup": s["warmup"], "gemm_n": s["gemm_n"], "gemm_reps": s["gemm_reps"],
              "defaults": s["defaults"]}
    parity_end = end - s["reserve_vitjax_s"] - s["reserve_torch_s"]
    plan = [  # torch and JAX never share a process (nor their CUDA libraries)
        ("prepare", {"phase": "prepare", "deadline": end, "ckpts": [vit] + ([hyb] if hybrid else [])},
         _env(JAX_PLATFORMS="cpu")),
        ("reference", {"phase": "reference", "deadline": parity_end, "items": [vit] + ([hyb] if hybrid else [])},
         _env()),
        ("vitjax", {"phase": "vitjax", "parity_deadline": parity_end, "deadline": end - s["reserve_torch_s"],
                    "items": [{**vit, "modes": VIT_MODES}, {**hyb, "modes": s["hybrid_first"]}],
                    "rows": s["vitjax_rows"], "split_batch": s["split_batch"], "split_modes": s["split_modes"]},
         _env()),
        ("torch", {"phase": "torch", "deadline": end, "rows": s["torch_rows"]}, _env()),
        ("parity-hybrid", {"phase": "parity", "deadline": end, "items": [{**hyb, "modes": s["hybrid_tail"]}]},
         _env()),
    ]
    records: List[Dict[str, Any]] = []
    phases = []
    try:
        for name, task, env in plan:
            if task["phase"] in ("parity", "reference") and not any(i.get("modes", True) for i in task["items"]):
                continue
            need = 15.0 + s["defaults"][KIND[task["phase"]]]
            if task["deadline"] - time.time() < need:  # process start-up + one item
                phases.append({"phase": name, "skipped": f"time budget: {task['deadline'] - time.time():.0f} s left"})
                continue
            print(f"== phase {name} ({task['deadline'] - time.time():.0f} s until its deadline)", flush=True)
            recs, status = run_phase(name, {**common, **task}, workdir, env)
            records += recs
            phases.append(status)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return assemble(records, phases, s, dry, budget, time.time() - t0)


def assemble(records, phases, s, dry: bool, budget: float, wall: float) -> Dict[str, Any]:
    """The JSON document: machine, parity, GEMM, rows (with rooflines), consistency, errors."""
    from vitjax.model.config import get_config

    info: Dict[str, Any] = {}
    for r in records:
        if r["section"] == "info":
            info.update({k: v for k, v in r.items() if k not in ("section", "phase")})
    res: Dict[str, Any] = {"schema": SCHEMA, "dry_run": dry, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "budget_s": budget, "wall_s": wall, "machine": info,
                           "settings": {k: v for k, v in s.items() if k != "defaults"}, "phases": phases}
    res["flops"] = model_flops(get_config(s["variant"]))
    for section in ("reference", "parity", "first_call_split"):
        res[section] = [r for r in records if r["section"] == section]
    res["gemm"] = {f"{r['lib']}_{r['mode']}": r for r in records if r["section"] == "gemm"}
    res["rows"] = [r for r in records if r["section"] == "rows"]
    add_rooflines(res, res["flops"]["gflop_per_image"])
    res["consistency"] = consistency(res["rows"])
    res["errors"] = [r for r in records if r["section"] == "error" or "error" in r] + \
        [p for p in phases if "error" in p or p.get("returncode") not in (0, None)]
    res["skipped"] = [{k: r.get(k) for k in ("section", "lib", "row", "model", "mode", "batch", "skipped")}
                      for r in records if "skipped" in r] + [p for p in phases if "skipped" in p]
    res["notes"] = {
        "weights": ("random (vitjax.checkpoints.synthetic.random_checkpoint), Google .npz layout; "
                    "timm loads the same file"),
        "images_per_s": "batch / median of the timed calls (jax.block_until_ready / torch.cuda.synchronize)",
        "first_call_s": "vitjax: trace + compile (autotuning included) + one run, in a process that may already "
                        "have compiled other rows; torch: the first eager call",
        "memory": "vitjax device_peak_mb_so_far is the process's peak_bytes_in_use up to that row; torch "
                  "device_peak_mb is max_memory_allocated of the row alone",
        "modes": "float32: matmul_precision float32 (HIGHEST) / torch TF32 off; tensorfloat32: TF32; bfloat16: "
                 "dtype=bfloat16 + matmul_precision bfloat16 / torch.autocast(bfloat16)",
    }
    return res


def format_report(res: Dict[str, Any]) -> str:
    """Markdown tables: parity per mode, then rows per batch with rooflines and the peer ratio."""
    m = res["machine"]
    lines = [f"{'DRY RUN, ' if res['dry_run'] else ''}jax {m.get('jax')} on {m.get('platform')} "
             f"({m.get('device_kind')}), torch {m.get('torch')} (cuda {m.get('cuda')}, {m.get('cuda_device')}); "
             f"{res['wall_s']:.0f} s of {res['budget_s']:.0f} s", "",
             "| model | mode | logits max abs diff | relative | attention max abs diff | top-5 equal | "
             "load + first call s | within test tolerance |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for p in res["parity"]:
        if "skipped" in p or "error" in p:
            lines.append(f"| {p['model']} | {p['mode']} | {p.get('skipped') or p.get('error')} | | | | | |")
            continue
        lines.append(f"| {p['model']} | {p['mode']} | {p['logits_max_abs_diff']:.2e} | {p['logits_rel_diff']:.2e} | "
                     f"{p['attention_max_abs_diff']:.2e} | {p['top5_equal']}/{p['batch']} | {p['first_call_s']:.1f} | "
                     f"{'yes' if p['within_parity_tolerance'] else 'no'} |")
    lines += ["", "| B | mode | row | images/s | ms/batch | first call s | % of own GEMM | vs torch batched |",
              "|---:|---|---|---:|---:|---:|---:|---:|"]
    by = {(r["batch"], r["mode"], r["lib"], r["row"]): r for r in res["rows"]}
    for r in res["rows"]:
        name = f"{r['lib']} {r['row']}"
        if "skipped" in r or "error" in r:
            lines.append(f"| {r['batch']} | {r['mode']} | {name} | {(r.get('skipped') or r.get('error'))[:60]} "
                         "| | | | |")
            continue
        peer = by.get((r["batch"], r["mode"], "torch", "torch_batched"))
        vs = f"{r['images_per_s'] / peer['images_per_s']:.2f}x" if peer and "images_per_s" in peer else "n/a"
        frac = r.get("roofline_fraction")
        lines.append(f"| {r['batch']} | {r['mode']} | {name} | {r['images_per_s']:.1f} | "
                     f"{1000 * r['median_batch_s']:.1f} | {r['first_call_s']:.2f} | "
                     f"{'n/a' if frac is None else f'{100 * frac:.0f}%'} | {vs} |")
    if res["gemm"]:
        lines += ["", "GEMM GFLOP/s: " + ", ".join(f"{k} {g['gflops']:.0f}" for k, g in res["gemm"].items()
                                                   if "gflops" in g)]
    for sp in res["first_call_split"]:
        if "compile_s" in sp:
            lines.append(f"first call of compute_maps, {sp['mode']}, B={sp['batch']}: trace+lower "
                         f"{sp['trace_lower_s']:.2f} s, compile {sp['compile_s']:.2f} s, run {sp['run_s']:.3f} s")
    for e in res["errors"]:
        lines.append(f"ERROR {e.get('phase') or e.get('section')}: {str(e.get('error') or e)[:200]}")
    lines.append(f"{len(res['skipped'])} items skipped for time" if res["skipped"] else "nothing skipped")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``benchmarks/gpu.sh [--dry-run] [--budget S] [--out FILE]``; 0 if nothing failed (skips allowed)."""
    p = argparse.ArgumentParser(prog="benchmarks/gpu.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="tiny models on whatever device there is (CPU: 1-2 min)")
    p.add_argument("--budget", type=float, default=None, help="seconds for all phases (default 440; dry run 240)")
    p.add_argument("--out", default=None, help="JSON file (default $OUT/results-gpu.json, else benchmarks/)")
    args = p.parse_args(argv)
    dry = args.dry_run or os.environ.get("VITJAX_GPU_DRY_RUN", "").lower() in ("1", "true", "yes")
    s = DRY if dry else FULL
    res = run_check(s, dry, args.budget or s["budget_s"])
    name = "results-gpu-dry-run.json" if dry else "results-gpu.json"
    default_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else (
        Path(tempfile.gettempdir()) if dry else BENCHMARKS)
    out = Path(args.out) if args.out else default_dir / name
    write_json(res, out)
    print(format_report(res))
    print(f"\nwrote {out}")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
