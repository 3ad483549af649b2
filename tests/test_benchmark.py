"""scripts/benchmark.py end to end on the tiny model: every row reports finite, positive numbers.

Nothing here asserts speed; the numbers are only checked to exist.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from vitjax import benchmark
from vitjax.config import get_config

REPO = Path(__file__).resolve().parents[1]


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_flops_of_vit_b16_match_the_known_count():
    f = benchmark.model_flops(get_config("ViT-B_16"))
    # 12 x (4 N D^2 + 2 N^2 D + 2 N D 4D) + 196 x 768 x 768, N = 197, D = 768, times 2
    n, d = 197, 768
    macs = 12 * (4 * n * d * d + 2 * n * n * d + 2 * n * d * 4 * d) + 196 * 16 * 16 * 3 * d
    assert f["gflop_per_image_no_head"] == pytest.approx(2 * macs / 1e9, rel=1e-12)
    assert f["gflop_per_image"] == pytest.approx(35.1, abs=0.05)
    assert f["head_gflop"] == pytest.approx(2 * 768 * 1000 / 1e9)
    assert f["tokens"] == 197


def test_benchmark_tiny_in_process(tmp_path, tiny_checkpoint):
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    out = tmp_path / "results.json"
    rc = benchmark.main([
        "--ckpt", str(tiny_checkpoint), "--batch-sizes", "2", "--dtypes", "float32", "--reps", "1",
        "--warmup", "0", "--gemm-size", "64", "--gemm-reps", "1", "--fidelity-images", "2",
        "--compile-variants", "testing", "--compile-capture-variants", "", "--no-startup",
        "--inprocess", "--idle-wait", "0", "--quiet", "--out", str(out), "--rollout-batch", "2",
    ])
    assert rc == 0
    res = json.loads(out.read_text())
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, nothing left behind
    assert res["schema"] == benchmark.SCHEMA
    for key in ("machine", "model", "flops", "settings", "gemm", "rows", "consistency", "bf16_fidelity",
                "compile", "targets", "notes", "command"):
        assert key in res, key

    ro = res["rollout"]
    assert "error" not in ro, ro
    assert ro["shape"][0] == 2
    for field in ("read_s", "rollout_s", "numpy_loop_s", "speedup_vs_numpy_loop", "rollout_over_read"):
        assert _positive(ro[field]), (field, ro[field])
    assert ro["max_abs_diff_vs_numpy"] <= 1e-5  # the timed rollout computes the same maps as the loop

    rows = {r["row"]: r for r in res["rows"]}
    assert set(rows) == set(benchmark.ROWS)
    for r in res["rows"]:
        assert "error" not in r, r
        assert r["batch"] == 2 and r["dtype"] == "float32" and r["reps"] == 1
        for field in ("images_per_s", "median_batch_s", "first_call_s", "peak_rss_mb", "gflops",
                      "roofline_fraction", "roofline_fraction_best"):
            assert _positive(r[field]), (r["row"], field, r[field])
    for name in ("capture", "lean", "torch"):
        assert rows[name]["outputs"]["cumulative"] == [2, 1, 14, 14]
        assert rows[name]["outputs"]["heads"] == [2, 1, 2, 14, 14]

    for lib in ("xla", "torch"):
        g = res["gemm"][f"{lib}_float32"]
        assert "error" not in g and _positive(g["gflops"])

    # both libraries compute the same maps and logits
    for key, diff in res["consistency"].items():
        assert diff < 1e-3, key

    fid = res["bf16_fidelity"]
    assert "error" not in fid, fid
    assert fid["images"] in (1, 2)
    assert -1.0 <= fid["joint_map_pearson_min"] <= 1.0 + 1e-9
    assert isinstance(fid["top5_all_equal"], bool) and "random" in fid["note"].lower()

    (comp,) = res["compile"]
    assert comp["variant"] == "testing" and _positive(comp["compile_s"])

    names = [t["name"] for t in res["targets"]]
    assert len(names) == 9  # 7 from issue #5, 2 rollout targets from issue #3
    for t in res["targets"]:
        assert t["pass"] in (True, False, None)

    table = benchmark.format_table(res)
    assert "vitjax capture" in table and "pytorch practice" in table


def test_child_process_task_and_missing_visualize(tmp_path):
    # one task through the child-process path used for per-row memory
    r = benchmark._run_task_child({"kind": "gemm", "lib": "xla", "n": 32, "dtype": "float32", "reps": 1},
                                  timeout=120)
    assert "error" not in r, r
    assert _positive(r["gflops"])
    st = benchmark.measure_startup("x.npz", "x.jpg", script=tmp_path / "missing.py")
    assert st["status"] == "unavailable"


def test_script_is_thin_and_has_help():
    text = (REPO / "scripts" / "benchmark.py").read_text()
    assert "from vitjax.benchmark import main" in text
    with pytest.raises(SystemExit) as e:
        benchmark.main(["--help"])
    assert e.value.code == 0
