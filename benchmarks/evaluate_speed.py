"""The dataset runner's end-to-end images/s against the bare forward pass at the same batch size.

    python benchmarks/evaluate_speed.py [--variant ViT-B_16] [--batch-size 16] [--images 64] [--rounds 2]

End to end = :func:`vitjax.evaluation.runner.run` + :func:`vitjax.evaluation.report.write_report` over a
Caltech101-layout folder of JPEGs with annotations (decode + resize in the background pool,
mask rasterisation, the jitted maps program on all local devices, scoring, atomic shard writes,
the final CSV/JSON/figures), from a fresh results folder, compilation excluded. Bare forward =
the jitted :func:`vitjax.predict` (logits only) on one fixed preprocessed batch, timed per batch.
The two alternate for ``--rounds`` rounds; the medians are compared, by wall clock (the target) and
by this process's CPU time per image (the work done, which other users of a shared machine do not
move). Photos are the sample Caltech101 photos (cycled) when this checkout has them, else synthetic
300x200 JPEGs; weights are random (throughput does not depend on them). The CPU share used by
other processes during each timing is reported, since a shared machine moves the wall-clock numbers.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import PHOTOS, CpuWatch, cpu_model, median, num_cores, write_json  # noqa: E402


def make_dataset(root: Path, n: int) -> None:
    """``n`` photos in ``root/101_ObjectCategories/<class>/`` with elliptic annotations in ``root/Annotations``."""
    from PIL import Image
    from scipy.io import savemat

    photos = sorted(PHOTOS.rglob("*.jpg")) if PHOTOS.is_dir() else []
    rng = np.random.default_rng(0)
    for i in range(n):
        cls = f"class{i % 5}"
        path = root / "101_ObjectCategories" / cls / f"image_{i // 5 + 1:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        if photos:
            shutil.copy(photos[i % len(photos)], path)
        else:
            smooth = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
            Image.fromarray(smooth).resize((300, 200), Image.BICUBIC).save(path, quality=90)
        with Image.open(path) as im:
            w, h = im.size
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        left, top = w / 6, h / 6
        contour = np.stack([w / 2 + w / 3 * np.cos(t) - left, h / 2 + h / 3 * np.sin(t) - top])
        ann = root / "Annotations" / cls / f"annotation_{i // 5 + 1:04d}.mat"
        ann.parent.mkdir(parents=True, exist_ok=True)
        savemat(ann, {"box_coord": np.array([[top, h - top, left, w - left]]), "obj_contour": contour})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="ViT-B_16")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--images", type=int, default=64, help="images per runner round (a multiple of the batch)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)

    import jax

    import vitjax
    from vitjax.checkpoints.synthetic import random_checkpoint, save_npz
    from vitjax.data.batching import local_mesh, round_batch_size
    from vitjax.data.datasets import caltech101
    from vitjax.data.images import preprocess
    from vitjax.evaluation.localisation import load_target, map_metrics_step, map_names
    from vitjax.evaluation.report import write_report
    from vitjax.evaluation.runner import run
    from vitjax.model.config import get_config

    work = Path(tempfile.mkdtemp(prefix="vitjax-evalspeed-"))
    try:
        config = get_config(args.variant)
        ckpt = save_npz(random_checkpoint(config, seed=0), work / "model.npz")
        model, params = vitjax.load_checkpoint(ckpt)
        cfg = model.config
        mesh = local_mesh()
        batch = round_batch_size(args.batch_size, mesh)
        n = max(batch, math.ceil(args.images / batch) * batch)
        make_dataset(work / "data", n)
        records = caltech101(work / "data")
        assert len(records) == n
        step, grid = map_metrics_step(model, params, mesh=mesh)
        names = map_names(cfg.num_layers)

        def load(record):
            return preprocess(record.path, cfg), load_target(record, grid)

        report_s = []

        def runner(tag: str) -> float:
            out = work / f"out-{tag}"
            t = time.perf_counter()
            results = run(records, step, out, root=work / "data", load=load, batch_size=batch,
                          shape=tuple(cfg.image_size) + (3,), progress=False)
            t_report = time.perf_counter()
            write_report(out, results, names=names, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
                         grid_size=grid, run={"checkpoint": "benchmark"})
            report_s.append(time.perf_counter() - t_report)  # once per run, whatever its size
            return time.perf_counter() - t

        x = np.stack([preprocess(r.path, cfg) for r in records[:batch]])

        def forward_round() -> list:
            times = []
            for _ in range(n // batch):
                t = time.perf_counter()
                jax.block_until_ready(vitjax.predict(model, params, x))
                times.append(time.perf_counter() - t)
            return times

        print(f"{args.variant}, batch {batch}, {n} images/round, {len(jax.local_devices())} device(s), "
              f"{num_cores()} cores ({cpu_model()})", flush=True)
        t = time.perf_counter()
        jax.block_until_ready(vitjax.predict(model, params, x))
        print(f"  compile forward {time.perf_counter() - t:.1f} s", flush=True)
        t = time.perf_counter()
        warm = run(records[:batch], step, work / "out-warmup", root=work / "data", load=load, batch_size=batch,
                   shape=tuple(cfg.image_size) + (3,), progress=False)
        assert len(warm) == batch
        print(f"  compile runner {time.perf_counter() - t:.1f} s", flush=True)
        rows = []
        for r in range(args.rounds):
            with CpuWatch() as wf:
                times = forward_round()
            fwd = batch / median(times)
            with CpuWatch() as wr:
                wall = runner(str(r))
            end = n / wall
            # this process's CPU time per image: the work done, whatever the other users of the machine take
            cpu_f = wf.own_util * sum(times) * num_cores() / n * 1e3
            cpu_r = wr.own_util * wall * num_cores() / n * 1e3
            rows.append({"forward_images_per_s": fwd, "forward_batch_s": times, "forward_foreign_cpu": wf.foreign,
                         "forward_cpu_ms_per_image": cpu_f, "runner_images_per_s": end, "runner_wall_s": wall,
                         "runner_foreign_cpu": wr.foreign, "runner_cpu_ms_per_image": cpu_r,
                         "report_s": report_s[-1], "share": end / fwd,
                         "cpu_share": cpu_f / cpu_r})
            print(f"  round {r + 1}: forward {fwd:.2f} img/s, {cpu_f:.0f} CPU-ms/img (others used "
                  f"{_pct(wf.foreign)} of the CPUs); runner {end:.2f} img/s, {cpu_r:.0f} CPU-ms/img "
                  f"({_pct(wr.foreign)}); share {100 * end / fwd:.1f} % by wall clock, "
                  f"{100 * cpu_f / cpu_r:.1f} % by CPU time (final files {report_s[-1]:.1f} s of it)", flush=True)
        fwd = median([r["forward_images_per_s"] for r in rows])
        end = median([r["runner_images_per_s"] for r in rows])
        cpu_share = median([r["cpu_share"] for r in rows])
        print(f"median: forward {fwd:.2f} img/s, runner {end:.2f} img/s, share {100 * end / fwd:.1f} % by wall "
              f"clock, {100 * cpu_share:.1f} % by CPU time")
        result = {"variant": args.variant, "batch_size": batch, "images_per_round": n, "devices":
                  [str(d) for d in jax.local_devices()], "cores": num_cores(), "cpu": cpu_model(),
                  "photos": "caltech101-samples" if PHOTOS.is_dir() else "synthetic", "rounds": rows,
                  "forward_images_per_s": fwd, "runner_images_per_s": end, "share": end / fwd,
                  "cpu_share": cpu_share}
        if args.json:
            write_json(result, args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _pct(x) -> str:
    return "?" if x is None else f"{100 * x:.0f}%"


if __name__ == "__main__":
    sys.exit(main())
