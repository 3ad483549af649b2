"""Speed of activations by name and of head importance (issue #19), side by side in one run; not a test.

ViT-B/16 at 224 px, float32, random weights (Google layout; timm gets the same weights from the
same .npz), one batch of B images. Each group runs in its own process, so each process's peak
resident memory is that group's own; vitjax programs also report XLA's buffer assignment
(``compiled.memory_analysis()``: arguments + outputs + temporaries). Timings are medians of the
timed calls after a warm-up call (which includes compilation, reported apart); within a group the
compared calls alternate, so load from other processes falls on both.

Groups:

* ``cache``: ``vitjax.predict``-like plain forward vs ``run_with_cache`` of every site (all
  outputs ``block_until_ready``); target ratio <= 1.15.
* ``importance``: ``vitjax.head_importance`` (all L x H ablations in one program, the clean
  prefix reused) vs a straightforward loop of L x H ablated forward passes through one compiled
  vitjax program (the head as an argument): the loop's time is L x H x the median of ``--loop-calls``
  ablated calls spread over the layers (each call is the same work); target ratio >= 1.8.
* ``timm``: the same loop in timm (eager, a forward pre-hook on ``blocks[l].attn.proj`` zeroing the
  head's slice, as ``test_hooks_reference.py`` checks), timed the same way.

    python benchmarks/hooks_speed.py                          # B = 8, every group (~15 min on 2 cores)
    python benchmarks/hooks_speed.py --batch 2 --groups cache  # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks import common  # noqa: E402

GROUPS = ("cache", "importance", "timm")


def _xla_bytes(compiled) -> int:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)


def _setup(batch: int, npz: str):
    import jax.numpy as jnp

    import vitjax

    model, params = vitjax.load_checkpoint(npz)
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (batch, 224, 224, 3)).astype(np.float32))
    return model, params, x


def _alternate(fns: Dict[str, Any], reps: int) -> Dict[str, Dict[str, Any]]:
    """Times each ``fns[name]()`` (which must block) once untimed, then ``reps`` rounds, alternating."""
    out: Dict[str, Dict[str, Any]] = {name: {"times_s": [], "cpu_s": []} for name in fns}
    for name, fn in fns.items():
        t = time.perf_counter()
        fn()
        out[name]["first_call_s"] = time.perf_counter() - t
    for _ in range(reps):
        for name, fn in fns.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            out[name]["times_s"].append(time.perf_counter() - t)
            out[name]["cpu_s"].append(time.process_time() - c)
    for row in out.values():
        row["median_s"] = common.median(row["times_s"])
        row["median_cpu_s"] = common.median(row["cpu_s"])
    return out


def group_cache(batch: int, npz: str, reps: int) -> Dict[str, Any]:
    import jax

    from vitjax.attribution import hooks

    model, params, x = _setup(batch, npz)
    plain = jax.jit(lambda p, y: model.apply({"params": p}, y))
    static, arrays = hooks._split({})
    names = hooks.site_names(model.config)

    def cached():
        return jax.block_until_ready(hooks.run_with_cache(model, params, x))

    rows = _alternate({"forward": lambda: jax.block_until_ready(plain(params, x)), "run_with_cache": cached}, reps)
    rows["forward"]["xla_bytes"] = _xla_bytes(plain.lower(params, x).compile())
    rows["run_with_cache"]["xla_bytes"] = _xla_bytes(
        hooks._run.lower(model, params, x, arrays, names=names, static=static).compile())
    rows["run_with_cache"]["sites"] = len(names)
    return rows


def group_importance(batch: int, npz: str, reps: int, loop_calls: int) -> Dict[str, Any]:
    import jax
    import jax.numpy as jnp

    from vitjax.attribution import hooks, importance

    model, params, x = _setup(batch, npz)
    c = model.config
    L, H = c.num_layers, c.num_heads
    chunk = importance.chunk_size(c, batch, importance.DEFAULT_BUDGET)

    @jax.jit
    def ablated(p, y, mask):  # one ablated forward pass: mask [L, H] is 0 at the ablated head, 1 elsewhere
        fns = {f"blocks.{layer}.attn.hook_z": (lambda z, hook: z * mask[hook.layer][None, None, :, None],)
               for layer in range(L)}
        out, _ = hooks.apply_hooked(model, p, y, hooks=fns)
        return out

    clean = jax.block_until_ready(ablated(params, x, jnp.ones((L, H))))
    cls = jnp.argmax(clean, axis=-1)
    pairs = [(k * L * H // loop_calls) for k in range(loop_calls)]  # spread over every layer
    calls: List[float] = []
    cpu: List[float] = []

    def loop_sample():
        for i in pairs:
            mask = jnp.ones((L, H)).at[i // H, i % H].set(0.0)
            t, c = time.perf_counter(), time.process_time()
            o = jax.block_until_ready(ablated(params, x, mask))
            calls.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            _ = o[jnp.arange(batch), cls] - clean[jnp.arange(batch), cls]

    imp = lambda: jax.block_until_ready(importance.head_importance(model, params, x))  # noqa: E731
    rows = _alternate({"head_importance": imp}, reps)
    loop_sample()  # warm-up + the first sample
    calls.clear()
    cpu.clear()
    loop_sample()
    rows["loop"] = {"per_call_median_s": common.median(calls), "calls_timed": len(calls),
                    "median_s": L * H * common.median(calls), "median_cpu_s": L * H * common.median(cpu)}
    targets = jnp.full((batch,), -1, jnp.int32)
    rows["head_importance"]["xla_bytes"] = _xla_bytes(importance._importance.lower(
        model, params, x, targets, jnp.ones((batch,)), mode="zero", chunk=chunk).compile())
    rows["head_importance"]["chunk"] = chunk
    rows["loop"]["xla_bytes"] = _xla_bytes(ablated.lower(params, x, jnp.ones((L, H))).compile())
    return rows


def group_timm(batch: int, npz: str, loop_calls: int) -> Dict[str, Any]:
    import torch

    import vitjax

    ref = common.reference()
    model, _ = vitjax.load_checkpoint(npz)
    net = ref.timm_model(model.config, npz)
    L, H, d = model.config.num_layers, model.config.num_heads, model.config.head_dim
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (batch, 3, 224, 224)).astype(np.float32))
    calls: List[float] = []
    cpu: List[float] = []
    pairs = [(k * L * H // loop_calls) for k in range(loop_calls)]
    with torch.no_grad():
        clean = net(x)
        first = time.perf_counter()
        for n, i in enumerate(pairs):
            layer, head = divmod(i, H)

            def zero(module, args, h=head):
                y = args[0].clone()
                y[..., h * d:(h + 1) * d] = 0
                return (y,)

            handle = net.blocks[layer].attn.proj.register_forward_pre_hook(zero)
            t, c = time.perf_counter(), time.process_time()
            out = net(x)
            _ = out - clean
            if n:  # the first call warms up
                calls.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
            handle.remove()
        del first
    return {"timm_loop": {"per_call_median_s": common.median(calls), "calls_timed": len(calls),
                          "median_s": L * H * common.median(calls), "median_cpu_s": L * H * common.median(cpu),
                          "torch_threads": torch.get_num_threads()}}


def _child(args) -> None:
    if args.group == "cache":
        rows = group_cache(args.batch, args.npz, args.reps)
    elif args.group == "importance":
        rows = group_importance(args.batch, args.npz, args.importance_reps, args.loop_calls)
    else:
        rows = group_timm(args.batch, args.npz, args.loop_calls)
    for row in rows.values():
        row["process_peak_rss_mb"] = common.maxrss_mb()
    print("RESULT " + json.dumps(rows, default=common.json_default))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--reps", type=int, default=7, help="timed rounds of the cache group")
    p.add_argument("--importance-reps", type=int, default=2, help="timed head_importance calls")
    p.add_argument("--loop-calls", type=int, default=24, help="ablated calls timed to price the loops")
    p.add_argument("--groups", default=",".join(GROUPS))
    p.add_argument("--out", default=str(HERE / "results-hooks-cpu.json"))
    p.add_argument("--group", help=argparse.SUPPRESS)
    p.add_argument("--npz", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.group:
        _child(args)
        return 0
    from vitjax.checkpoints.synthetic import random_checkpoint, save_npz
    from vitjax.model.config import get_config

    results: Dict[str, Any] = {"batch": args.batch, "model": "ViT-B_16 224 px float32, random weights",
                               "cores": common.num_cores(), "cpu": common.cpu_model(), "rows": {}}
    with tempfile.TemporaryDirectory() as tmp:
        npz = save_npz(random_checkpoint(get_config("ViT-B_16"), seed=0), Path(tmp) / "vit_b16.npz")
        for group in args.groups.split(","):
            cmd = [sys.executable, __file__, "--group", group, "--npz", str(npz), "--batch", str(args.batch),
                   "--reps", str(args.reps), "--importance-reps", str(args.importance_reps),
                   "--loop-calls", str(args.loop_calls)]
            t = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
            line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
            if done.returncode or not line:
                print(f"group {group} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
                return 1
            results["rows"].update(json.loads(line[0][7:]))
            print(f"group {group}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    r = results["rows"]
    ratios = {}
    for key in ("median_s", "median_cpu_s"):
        what = "wall" if key == "median_s" else "cpu"
        if "forward" in r:
            ratios[f"run_with_cache / forward ({what})"] = r["run_with_cache"][key] / r["forward"][key]
        if "head_importance" in r:
            ratios[f"vitjax loop / head_importance ({what})"] = r["loop"][key] / r["head_importance"][key]
            ratios[f"144 plain forwards / head_importance ({what})"] = 144 * r["forward"][key] / \
                r["head_importance"][key] if "forward" in r else float("nan")
        if "timm_loop" in r and "head_importance" in r:
            ratios[f"timm loop / head_importance ({what})"] = r["timm_loop"][key] / r["head_importance"][key]
    results["load_average"] = os.getloadavg()
    results["ratios"] = ratios
    common.write_json(results, args.out)
    print(f"| row | median wall s (B = {args.batch}) | median CPU s | peak RSS of its process | XLA buffers |")
    print("|---|---:|---:|---:|---:|")
    for name, row in r.items():
        xla = f"{row['xla_bytes'] / 2**20:.0f} MB" if "xla_bytes" in row else ""
        print(f"| {name} | {row['median_s']:.2f} | {row['median_cpu_s']:.2f} | {row['process_peak_rss_mb']:.0f} MB "
              f"| {xla} |")
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
