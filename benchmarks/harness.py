"""The CPU harness: throughput, memory and start-up of vitjax against the PyTorch practice.

``python scripts/benchmark.py`` (``--help``) runs :func:`main`. For one ViT (ViT-B/16 at 224 px
by default) with random weights in Google's ``.npz`` layout (no download) it measures:

* rows, each in a fresh child process so that its peak memory is its own: ``capture``
  (:func:`vitjax.compute_maps`), ``lean`` (``lean=True``), ``plain`` (:func:`vitjax.predict`),
  ``torch`` (timm + hooks + the per-image rollout loop) and ``torch_batched`` (timm + hooks + a
  batched rollout in torch), see :mod:`benchmarks.torch_rows`; at batch sizes 1, 8, 32, in the
  precision modes of :data:`benchmarks.common.MODES` (float32 by default; bfloat16 where the
  device computes it natively). Images/s is the batch over the median of the timed repetitions;
  the first call (trace + compile + one run for vitjax) is reported apart;
* each library's dense ``n^3`` GEMM rate before and after the rows (the roofline);
* the bfloat16 fidelity of the maps on photographs, compile times of larger models from
  abstract parameters, and the start-up of ``scripts/visualize.py`` (cold / warm cache).

Nothing here asserts timings. The GPU check is :mod:`benchmarks.gpu` (``benchmarks/gpu.sh``).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from benchmarks.common import (
    BENCHMARKS,
    MODES,
    NOTE_RANDOM,
    REPO,
    background_load,
    model_flops,
    wait_for_idle,
    write_json,
)
from benchmarks.report import ROW_LABELS, add_rooflines, consistency, format_table, merge_rounds
from benchmarks.tasks import child_env, run_child, run_here, sample_images

SCHEMA = "vitjax-benchmark/2"
ROWS = ("capture", "lean", "plain", "torch", "torch_batched")


def measure_startup(ckpt: str, image: str, script: Optional[Path] = None, timeout: float = 600.0) -> Dict[str, Any]:
    """Wall time of ``scripts/visualize.py`` for one image, with an empty and a warm compilation cache."""
    script = Path(script) if script else REPO / "scripts" / "visualize.py"
    res: Dict[str, Any] = {"script": str(script), "image": image, "ckpt": ckpt}
    if not script.is_file():
        res.update(status="unavailable", reason=f"{script} does not exist")
        return res
    with tempfile.TemporaryDirectory(prefix="vitjax-startup-") as tmp:
        env = child_env(dict(os.environ, VITJAX_CACHE_DIR=str(Path(tmp) / "cache")))
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
            runs[name] = {"wall_s": time.perf_counter() - t, "returncode": rc}
            if rc != 0:
                runs[name]["stderr_tail"] = err
        res.update(runs, status="ok" if all(r["returncode"] == 0 for r in runs.values()) else "failed")
        if res["status"] == "ok":
            res["warm_over_cold"] = runs["warm"]["wall_s"] / runs["cold"]["wall_s"]
    return res


def _parse_list(s: str, cast=str) -> List[Any]:
    return [cast(v) for v in str(s).split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/benchmark.py",
        description="Throughput, memory and start-up of vitjax (capture / lean / plain) against PyTorch (timm + "
                    "hooks + per-image or batched rollout), with each library's GEMM roofline.")
    a = p.add_argument
    a("--variant", default="ViT-B_16", help="model of the random checkpoint (default ViT-B_16)")
    a("--ckpt", default=None, help="benchmark this checkpoint instead of a random one")
    a("--batch-sizes", default="1,8,32", help="comma list (default 1,8,32)")
    a("--modes", default="auto", help=f"comma list of {','.join(MODES)}, or 'auto' = float32 plus bfloat16 "
                                      "where the device computes it natively")
    a("--rows", default=",".join(ROWS), help=f"comma list of {','.join(ROW_LABELS)}")
    a("--reps", type=int, default=5, help="timed repetitions per row (median reported)")
    a("--rounds", type=int, default=1, help="run every row this many times in fresh processes, interleaved, "
                                            "and pool the repetitions (steadier medians on drifting machines)")
    a("--warmup", type=int, default=1, help="untimed calls after the first call")
    a("--gemm-size", type=int, default=2048, help="n of the n^3 GEMM roofline")
    a("--gemm-reps", type=int, default=10)
    a("--fidelity-images", type=int, default=0, help="photos for the bf16 fidelity (0 = all found)")
    a("--photos", default=None, help="folder of photos for the fidelity (default: ../shared Caltech101 samples)")
    a("--no-fidelity", action="store_true")
    a("--no-startup", action="store_true")
    a("--compile-variants", default="ViT-B_16,ViT-L_16,ViT-H_14", help="predict compile times ('' for none)")
    a("--compile-capture-variants", default="ViT-B_16,ViT-L_16", help="compute_maps compile times ('' for none)")
    a("--compile-batch", type=int, default=8)
    a("--out", default=None, help="JSON output (default benchmarks/results-<platform>.json)")
    a("--workdir", default=None, help="where the random checkpoint is written (default: a temp dir)")
    a("--inprocess", action="store_true", help="run every task in this process (fast; memory not per row)")
    a("--idle-wait", type=float, default=60.0, help="wait up to this many s for other processes to leave the CPUs")
    a("--idle-threshold", type=float, default=0.25, help="share of CPUs used by others counted as busy")
    a("--force-slow", action="store_true", help="run PyTorch bfloat16 rows on CPUs without native bfloat16")
    a("--timeout", type=float, default=1200.0, help="per task, seconds")
    a("--quiet", action="store_true")
    return p


def run_benchmark(args: argparse.Namespace, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Runs everything ``args`` asks for; returns the result dictionary (see :data:`SCHEMA`)."""
    t_start = time.perf_counter()

    def task(t: Dict[str, Any]) -> Dict[str, Any]:
        if args.inprocess:
            return run_here(t)
        if args.idle_wait > 0:
            wait_for_idle(args.idle_wait, args.idle_threshold, log=log)
        return run_child(t, args.timeout)

    tmp = tempfile.TemporaryDirectory(prefix="vitjax-bench-") if args.workdir is None else None
    workdir = Path(args.workdir or tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        res: Dict[str, Any] = {"schema": SCHEMA, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               "background_cpu_at_start": background_load(1.0)}
        if args.ckpt:
            ckpt = str(Path(args.ckpt).resolve())
            info = task({"kind": "info", "ckpt": ckpt})
            source = ckpt
        else:
            ckpt = str(workdir / f"{args.variant.replace('+', '_')}-random.npz")
            info = task({"kind": "info"})
            if "error" not in info:
                made = task({"kind": "make_ckpt", "variant": args.variant, "path": ckpt})
                info.update({k: made[k] for k in ("config", "error") if k in made})
            source = (f"random {args.variant} (vitjax.checkpoints.synthetic.random_checkpoint, seed 0), "
                      "Google .npz layout")
        if info.get("error"):
            raise RuntimeError(f"cannot start JAX or read the checkpoint: {info['error']}")
        config = info.pop("config")
        tinfo = task({"kind": "torch_info"})
        has_torch = "error" not in tinfo
        info.update({k: v for k, v in tinfo.items() if k != "task_wall_s"})
        plat = info["platform"]
        res.update(machine=info, model={"checkpoint": source, "config": config}, flops=model_flops(config))
        gflop = res["flops"]["gflop_per_image"]
        log(f"device: {plat} ({info.get('device_kind')}), {info['cores']} cores ({info['cpu']}); "
            f"{gflop:.2f} GFLOP/image")
        native_bf16 = plat in ("gpu", "tpu") or info.get("cpu_bf16_native", False)
        modes = ["float32"] + (["bfloat16"] if native_bf16 else []) if args.modes == "auto" else _parse_list(args.modes)
        batches, rows = _parse_list(args.batch_sizes, int), _parse_list(args.rows)
        res["settings"] = {"batch_sizes": batches, "modes": modes, "rows": rows, "reps": args.reps,
                           "rounds": args.rounds, "warmup": args.warmup, "inprocess": bool(args.inprocess),
                           "cpu_bf16_native": info.get("cpu_bf16_native")}

        def gemms(tag):
            out = {}
            for dt in ("float32", "bfloat16"):
                slow = dt == "bfloat16" and not native_bf16
                for lib in ("xla", "torch") if has_torch else ("xla",):
                    n = min(args.gemm_size, 512 if lib == "torch" else 1024) if slow else args.gemm_size
                    r = task({"kind": "gemm", "lib": lib, "n": n, "dtype": dt, "reps": 3 if slow else args.gemm_reps,
                              "platform": plat})
                    out[f"{lib}_{dt}"] = r
                    log(f"  GEMM {tag} {lib:5s} {dt:8s} n={n}: " +
                        (f"{r['gflops']:.1f} GFLOP/s" if "error" not in r else r["error"]))
            return out

        res["gemm"] = gemms("start")
        order: List[Any] = []
        for mode in modes:
            for b in batches:
                for row in rows:
                    if row.startswith("torch") and not has_torch:
                        continue
                    if row.startswith("torch") and mode == "bfloat16" and not native_bf16 and not args.force_slow:
                        order.append({"row": row, "label": ROW_LABELS[row], "batch": b, "mode": mode,
                                      "skipped": "PyTorch bfloat16 on a CPU without native bfloat16 (--force-slow)"})
                        continue
                    order.append((mode, b, row))
        specs = [o for o in order if isinstance(o, tuple)]
        rounds = max(1, args.rounds)
        done: Dict[tuple, List[Dict[str, Any]]] = {s: [] for s in specs}
        for rnd in range(rounds):
            if rounds > 1:
                log(f" round {rnd + 1}/{rounds}")
            for mode, b, row in specs:
                r = task({"kind": "row_torch" if row.startswith("torch") else "row_vitjax", "row": row, "batch": b,
                          "mode": mode, "reps": max(1, math.ceil(args.reps / rounds)), "warmup": args.warmup,
                          "ckpt": ckpt, "config": config, "platform": plat})
                r.update(row=row, label=ROW_LABELS.get(row, row), batch=b, mode=mode)
                done[(mode, b, row)].append(r)
                log(f"  {mode:13s} B={b:<4d} {r['label']:26s} " + (f"ERROR {r['error']}" if "error" in r else
                    f"{r['images_per_s']:8.2f} img/s  first call {r['first_call_s']:6.2f} s  "
                    f"peak {r.get('device_peak_mb') or r['peak_rss_mb']:7.0f} MB"))
        res["rows"] = [merge_rounds(done[o]) if isinstance(o, tuple) else o for o in order]
        res["gemm_end"] = gemms("end") if not args.inprocess else None
        add_rooflines(res, gflop)
        res["consistency"] = consistency(res["rows"])
        if not args.no_fidelity:
            log("bfloat16 fidelity on photos ...")
            res["bf16_fidelity"] = task({"kind": "fidelity", "ckpt": ckpt, "limit": args.fidelity_images or None,
                                         "photos": args.photos, "batch": 8})
        res["compile"] = []
        for what, vs in (("predict", _parse_list(args.compile_variants)),
                         ("capture", _parse_list(args.compile_capture_variants))):
            for v in vs:
                log(f"compile time {what} {v} ...")
                r = task({"kind": "compile", "variant": v, "what": what, "batch": args.compile_batch})
                res["compile"].append({"variant": v, "what": what, **r})
        if not args.no_startup:
            log("start-up of scripts/visualize.py (cold / warm compilation cache) ...")
            res["startup"] = measure_startup(ckpt, sample_images(1, args.photos)[0], timeout=args.timeout)
        res["notes"] = {
            "random_weights": NOTE_RANDOM,
            "images_per_s": "batch / median wall time of the timed repetitions (outputs block_until_ready / "
                            "torch.cuda.synchronize); first call (trace + compile + run) reported apart",
            "memory": "peak_rss_mb: the row process's resident-set high-water mark; steady_peak_rss_mb: during the "
                      "timed repetitions alone (reset via /proc/self/clear_refs); device_peak_mb on accelerators",
            "roofline": "images/s x GFLOP/image over the same library's measured GEMM in the row's mode",
        }
        res["wall_s"] = time.perf_counter() - t_start
        return res
    finally:
        if tmp is not None:
            tmp.cleanup()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the benchmark, prints the tables, writes the JSON; 0 if every row ran, else 1."""
    args = build_parser().parse_args(argv)
    if args.reps < 1:
        print("--reps must be >= 1", file=sys.stderr)
        return 2
    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    try:
        res = run_benchmark(args, log=log)
    except RuntimeError as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else BENCHMARKS / f"results-{res['machine']['platform']}.json"
    res["command"] = "python scripts/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv)
    write_json(res, out)
    if not args.quiet:
        print(format_table(res))
        print(f"\nwrote {out}")
    return 1 if any("error" in r for r in res["rows"]) else 0
