"""The benchmark harness (benchmarks/, outside the package) on the tiny ``testing`` model.

Nothing here asserts speed. What can fail: the FLOP formula, the PyTorch rollout peers against
vitjax's maps, the harness's rows, JSON and consistency checks, and the package's independence
from the harness, torch and timm.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.helpers import rounding_tol

from vitjax.model.config import get_config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # benchmarks/ is a top-level folder of the checkout, not installed

from benchmarks import common, harness  # noqa: E402


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_flops_of_vit_b16_match_the_known_count():
    f = common.model_flops(get_config("ViT-B_16"))
    # 12 x (4 N D^2 + 2 N^2 D + 2 N D 4D) + 196 x 16 x 16 x 3 x 768 patch embedding, times 2
    n, d = 197, 768
    macs = 12 * (4 * n * d * d + 2 * n * n * d + 2 * n * d * 4 * d) + 196 * 16 * 16 * 3 * d
    assert f["gflop_per_image_no_head"] == pytest.approx(2 * macs / 1e9, rel=1e-12)
    assert f["head_gflop"] == pytest.approx(2 * 768 * 1000 / 1e9)
    assert f["tokens"] == 197


def test_package_imports_neither_harness_nor_torch():
    code = ("import sys, vitjax, vitjax.cli.visualize, vitjax.attribution.maps; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'benchmarks')); "
            "print(bad); sys.exit(1 if bad else 0)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO))
    assert p.returncode == 0, p.stdout + p.stderr
    assert not (REPO / "vitjax" / "benchmark.py").exists()


def test_torch_rollout_peers_equal_vitjax_maps(make_checkpoint, rng):
    torch = pytest.importorskip("torch")
    pytest.importorskip("timm")
    import vitjax
    from benchmarks.torch_rows import MAPS, batched_maps, practice_maps

    config = get_config("testing", num_layers=3)
    model, params = vitjax.load_checkpoint(make_checkpoint("testing", num_layers=3))
    images = rng.uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    ours = vitjax.compute_maps(model, params, images, keep_attention=True)
    att = np.asarray(ours["attention"])
    layers = [torch.from_numpy(np.ascontiguousarray(att[:, i])) for i in range(config.num_layers)]
    # maps in [0, 1]; per layer 4 float32 stages (head mean, + I, row sums and the product over
    # N = 197 terms), then the division by the max
    tol = rounding_tol(1.0, steps=4 * config.num_layers + 1, fan_in=config.num_tokens)
    for peer in (practice_maps, batched_maps):
        got = peer(layers, config.grid)
        for key, value in zip(MAPS, got, strict=True):
            assert value.shape == ours[key].shape, (peer.__name__, key)
            np.testing.assert_allclose(value.numpy(), np.asarray(ours[key]), atol=tol, err_msg=peer.__name__ + key)


def test_harness_smoke_on_the_testing_variant(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    out = tmp_path / "results.json"
    rc = harness.main([
        "--variant", "testing", "--batch-sizes", "2", "--modes", "float32", "--reps", "1", "--warmup", "0",
        "--gemm-size", "64", "--gemm-reps", "1", "--fidelity-images", "2", "--compile-variants", "testing",
        "--compile-capture-variants", "", "--no-startup", "--inprocess", "--idle-wait", "0", "--quiet",
        "--out", str(out),
    ])
    assert rc == 0
    res = json.loads(out.read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # written atomically, nothing left behind
    assert res["schema"] == harness.SCHEMA
    rows = {r["row"]: r for r in res["rows"]}
    assert set(rows) == set(harness.ROWS)
    for r in res["rows"]:
        assert "error" not in r, r
        assert r["batch"] == 2 and r["mode"] == "float32"
        for field in ("images_per_s", "median_batch_s", "first_call_s", "peak_rss_mb", "gflops"):
            assert _positive(r[field]), (r["row"], field, r[field])
    for name in ("capture", "lean", "torch", "torch_batched"):
        assert rows[name]["outputs"]["cumulative"] == [2, 1, 14, 14]
        assert rows[name]["outputs"]["heads"] == [2, 1, 2, 14, 14]
    # every row computed the same thing; float32 rounding of a 1-layer, width-10 model is ~1e-6
    # relative on O(1) logits and maps in [0, 1], so 1e-4 leaves room and still catches a wrong map
    assert len(res["consistency"]) == 5  # capture vs lean, torch, torch_batched; plain vs torch, torch_batched
    for key, diff in res["consistency"].items():
        assert diff < 1e-4, key
    fid = res["bf16_fidelity"]  # bfloat16 rounds to 2^-8 relative: one layer's maps correlate far above 0.9
    assert "error" not in fid and fid["images"] >= 1 and fid["joint_map_pearson_min"] > 0.9
    (comp,) = res["compile"]
    assert comp["variant"] == "testing" and _positive(comp["compile_s"])
    table = harness.format_table(res)
    assert "vitjax capture" in table and "pytorch batched rollout" in table


def test_gpu_check_guard_skips_and_reports(tmp_path):
    import time

    from benchmarks import gpu, gpu_phases

    emit = gpu_phases.Recorder(tmp_path / "records.jsonl")
    budget = gpu_phases.Budget(time.time() + 60.0, {"vitjax_row": 1.0})

    def row(ips, shift=0.0):
        return {"images_per_s": ips, "median_batch_s": 8 / ips, "first_call_s": 1.5, "times_s": [8 / ips],
                "check": {"logits0": [0.5, 1.0 + shift], "rollout0": [1.0, 0.25 + shift]}}

    def boom():
        raise ValueError("out of memory")

    base = {"section": "rows", "mode": "float32", "batch": 8}
    gpu_phases.guarded(emit, budget, "vitjax float32 capture", "vitjax_row", {**base, "lib": "vitjax",
                       "row": "capture"}, row, 200.0)
    gpu_phases.guarded(emit, budget, "torch float32 torch_batched", "torch_row", {**base, "lib": "torch",
                       "row": "torch_batched"}, row, 100.0, 0.125)
    gpu_phases.guarded(emit, budget, "vitjax float32 lean", "vitjax_row", {**base, "lib": "vitjax", "row": "lean"},
                       boom)
    budget.done("vitjax float32 plain", 120.0)  # the last plain row took longer than what is left
    gpu_phases.guarded(emit, budget, "vitjax float32 plain", "vitjax_row", {**base, "lib": "vitjax", "row": "plain"},
                       row, 300.0)
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert [("error" in r, "skipped" in r) for r in records] == [(False, False), (False, False), (True, False),
                                                                 (False, True)]
    assert records[0]["images_per_s"] == 200.0 and records[0]["lib"] == "vitjax"  # the base keys win

    res = gpu.assemble(records, [{"phase": "vitjax", "returncode": 0}], gpu.DRY, True, 60.0, 1.0)
    assert [e["row"] for e in res["errors"]] == ["lean"] and "out of memory" in res["errors"][0]["error"]
    assert [s["row"] for s in res["skipped"]] == ["plain"]
    assert res["consistency"] == {"float32 B=8 capture vs torch_batched: joint map max abs diff": 0.125,
                                  "float32 B=8 vitjax vs torch_batched: logits max abs diff": 0.125}
    report = gpu.format_report(res)
    assert "| 8 | float32 | vitjax capture | 200.0 |" in report and "| 2.00x |" in report
    assert "time budget: needs ~120 s" in report and "ERROR" in report
