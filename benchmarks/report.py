"""Results of the CPU harness: rounds pooled, rooflines, cross-library consistency, markdown tables."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from benchmarks.common import median

ROW_LABELS = {
    "capture": "vitjax capture",
    "lean": "vitjax lean",
    "plain": "vitjax plain",
    "capture_attention": "vitjax capture + attention",
    "torch": "pytorch practice",
    "torch_batched": "pytorch batched rollout",
    "torch_logits": "pytorch logits (fused)",
}


def ok(r) -> bool:
    """A row (or task) that produced numbers: neither failed nor skipped."""
    return "error" not in r and "skipped" not in r


def merge_rounds(results: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One row from its rounds (fresh processes interleaved with the other rows): timed
    repetitions pooled (median over all), memory and other-process load the worst round's."""
    bad = [r for r in results if "error" in r]
    if bad or len(results) == 1:
        return bad[0] if bad else results[0]
    out = dict(results[0])
    times = [t for r in results for t in r["times_s"]]
    med = median(times)
    out.update(rounds=len(results), reps=len(times), times_s=times, median_batch_s=med, min_batch_s=float(min(times)),
               images_per_s=out["batch"] / med, images_per_s_by_round=[r["images_per_s"] for r in results],
               first_call_s=median([r["first_call_s"] for r in results]),
               load_s=median([r["load_s"] for r in results]))
    for key in ("peak_rss_mb", "steady_peak_rss_mb", "device_peak_mb", "foreign_cpu", "rss_ready_mb"):
        vals = [r.get(key) for r in results if r.get(key) is not None]
        out[key] = max(vals) if vals else None
    return out


def gemm_best(res, key) -> Optional[float]:
    """The better of the start and end GEMM rates for ``key`` (``"xla_float32"``...), or None."""
    runs = (res.get("gemm"), res.get("gemm_end"))
    vals = [g[key]["gflops"] for g in runs if g and key in g and "error" not in g[key]]
    return max(vals) if vals else None


def add_rooflines(res, gflop: float) -> None:
    """Adds ``gflops``, ``roofline_fraction`` (own library's GEMM in the row's mode) and
    ``roofline_fraction_best`` (the faster library's) to every measured row."""
    for r in res["rows"]:
        if not ok(r):
            continue
        lib = "torch" if r["row"].startswith("torch") else "xla"
        own = gemm_best(res, f"{lib}_{r['mode']}")
        oth = gemm_best(res, f"{'xla' if lib == 'torch' else 'torch'}_{r['mode']}")
        r["gflops"] = r["images_per_s"] * gflop
        r["roofline_fraction"] = r["gflops"] / own if own else None
        best = max((v for v in (own, oth) if v), default=None)
        r["roofline_fraction_best"] = r["gflops"] / best if best else None


def consistency(rows) -> Dict[str, float]:
    """Max abs differences of image 0's joint map and logits between rows of one (mode, batch):
    vitjax capture against lean and the PyTorch rows, vitjax plain against PyTorch. Removes the
    rows' ``check`` entries."""
    out: Dict[str, float] = {}
    by: Dict[tuple, Dict[str, Any]] = {}
    for r in rows:
        if ok(r) and "check" in r:
            by.setdefault((r["mode"], r["batch"]), {})[r["row"]] = r["check"]
    for (mode, b), d in sorted(by.items()):
        ref = d.get("capture")
        for name in ("lean", "torch", "torch_batched"):
            if ref and name in d and "rollout0" in d[name]:
                diff = np.abs(np.asarray(ref["rollout0"]) - np.asarray(d[name]["rollout0"]))
                out[f"{mode} B={b} capture vs {name}: joint map max abs diff"] = float(diff.max())
        first = d.get("plain") or ref
        for name in ("torch", "torch_batched", "torch_logits"):
            if first and name in d:
                diff = np.abs(np.asarray(first["logits0"]) - np.asarray(d[name]["logits0"]))
                out[f"{mode} B={b} vitjax vs {name}: logits max abs diff"] = float(diff.max())
    for r in rows:
        r.pop("check", None)
    return out


def find(res, row, batch, mode="float32") -> Optional[Dict[str, Any]]:
    for r in res.get("rows", []):
        if r.get("row") == row and r.get("batch") == batch and r.get("mode") == mode and ok(r):
            return r
    return None


def _fmt(v, spec) -> str:
    return "n/a" if v is None else format(v, spec)


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.0f}%"


def format_table(res: Dict[str, Any]) -> str:
    """Markdown tables of the rows, GEMM rates, fidelity, compile times and start-up."""
    gflop = res["flops"]["gflop_per_image"]
    m = res["machine"]
    lines = [f"Device: {m.get('platform')} ({m.get('device_kind')}), {m.get('cores')} cores, {m.get('cpu')}; "
             f"jax {m.get('jax')}, torch {m.get('torch', 'n/a')}; model {gflop:.2f} GFLOP/image.", "",
             "| mode | batch | row | images/s | ms/batch (median) | first call s | peak MB | steady peak MB "
             "| % of own GEMM | vs PyTorch practice | other load |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        if not ok(r):
            why = f"error: {r['error'][:60]}" if "error" in r else f"skipped: {r['skipped'][:60]}"
            lines.append(f"| {r['mode']} | {r['batch']} | {r['label']} | {why} | | | | | | | |")
            continue
        tor = find(res, "torch", r["batch"], r["mode"])
        vs = f"{r['images_per_s'] / tor['images_per_s']:.2f}x" if tor else "n/a"
        frac = r.get("roofline_fraction")
        lines.append(
            f"| {r['mode']} | {r['batch']} | {r['label']} | {r['images_per_s']:.2f} | "
            f"{1000 * r['median_batch_s']:.0f} | "
            f"{r['first_call_s']:.2f} | {r.get('device_peak_mb') or r.get('peak_rss_mb'):.0f} | "
            f"{_fmt(r.get('steady_peak_rss_mb'), '.0f')} | {_pct(frac)} | {vs} | {_pct(r.get('foreign_cpu'))} |")
    lines += ["", "| GEMM | n | GFLOP/s (start) | GFLOP/s (end) |", "|---|---:|---:|---:|"]
    for k, g in (res.get("gemm") or {}).items():
        if "error" not in g:
            end = (res.get("gemm_end") or {}).get(k, {})
            lines.append(f"| {k.replace('_', ' ')} | {g['n']} | {g['gflops']:.1f} | {_fmt(end.get('gflops'), '.1f')} |")
    fid = res.get("bf16_fidelity")
    if fid and "error" not in fid:
        lines += ["", f"bfloat16 fidelity on {fid['images']} photos: joint-map Pearson min "
                      f"{fid['joint_map_pearson_min']:.4f}, median {fid['joint_map_pearson_median']:.4f}; cumulative "
                      f"maps min {fid['cumulative_maps_pearson_min']:.4f}; top-5 equal {fid['top5_equal']}/"
                      f"{fid['images']}, top-1 equal {fid['top1_equal']}/{fid['images']} (random weights)."]
    comp = [c for c in res.get("compile", []) if "error" not in c]
    if comp:
        lines += ["", "| compile (abstract params) | layers | batch | trace+lower s | XLA compile s | peak RSS MB |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {c['variant']} {c['what']} | {c['layers']} | {c['batch']} | {c['trace_lower_s']:.1f} | "
                  f"{c['compile_s']:.1f} | {c['peak_rss_mb']:.0f} |" for c in comp]
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
