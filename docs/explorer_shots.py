"""The README's screenshots of the explorer page (docs/explorer-heads.png, docs/explorer-query.png).

    python docs/explorer_shots.py out/dinov2/explorer.html --image chair/image_0001.jpg --layer 12 \
        --head 6 --patch 20,18 --out docs/explorer

Opens the page in Debian's Chromium (Playwright with the system browser), selects the image, the heads view of
``--layer`` and ``--head`` (1-based, as the page counts), takes the head view, then hovers ``--patch``
(row,col, 1-based) for the query view, and writes two PNGs of at most 300 kB (downscaled to ``--width`` px and
reduced to a 256-colour palette with PIL).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
from pathlib import Path

from PIL import Image

LIMIT = 300_000


def optimise(png: bytes, path: Path, width: int) -> int:
    """Downscale to ``width`` px (if wider), 256-colour palette, optimised PNG; returns the bytes written."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    for w in (width, int(width * 0.9), int(width * 0.8), int(width * 0.7)):
        im = image
        if im.width > w:
            im = im.resize((w, round(im.height * w / im.width)), Image.LANCZOS)
        buf = io.BytesIO()
        im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(
            buf, format="PNG", optimize=True)
        if buf.tell() <= LIMIT:
            break
    path.write_bytes(buf.getvalue())
    return buf.tell()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("page", type=Path)
    p.add_argument("--image", required=True, help="the image's name in the page (e.g. chair/image_0001.jpg)")
    p.add_argument("--layer", type=int, default=12)
    p.add_argument("--head", default="1", help="1-based head, or mean / max")
    p.add_argument("--patch", default="8,8", help="row,col of the query patch, 1-based")
    p.add_argument("--out", default="docs/explorer", help="prefix of the two PNGs")
    p.add_argument("--width", type=int, default=1100)
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    flags = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=flags)
        page = b.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(args.page.resolve().as_uri())
        page.wait_for_function("() => window.vitjax && window.vitjax.idle")
        names = [im["name"] for im in page.evaluate("() => vitjax.meta.images")]
        page.locator("#vx-strip button").nth(names.index(args.image)).click()
        page.select_option("#vx-method", "heads")
        page.locator("#vx-layer").fill(str(args.layer))
        head = str(int(args.head) - 1) if args.head.isdigit() else args.head
        page.select_option("#vx-head", head)
        page.wait_for_function("() => vitjax.idle")

        def clip():  # the header, the strip and the three columns (their height changes with the query view)
            main = page.locator("main").bounding_box()
            return {"x": 0, "y": 0, "width": 1280, "height": main["y"] + main["height"] + 8}

        size = optimise(page.screenshot(clip=clip(), full_page=True), Path(f"{args.out}-heads.png"), args.width)
        print(f"{args.out}-heads.png: {size} bytes")
        row, col = (int(v) for v in args.patch.split(","))
        gh, gw = page.evaluate("() => vitjax.meta.grid")
        box = page.locator("#vx-main-marks").bounding_box()
        page.mouse.move(box["x"] + (col - 0.5) * box["width"] / gw, box["y"] + (row - 0.5) * box["height"] / gh)
        page.mouse.down()
        page.mouse.up()  # a click pins the query patch
        page.wait_for_function("() => vitjax.idle")
        page.mouse.move(2, 2)
        page.wait_for_function("() => vitjax.idle")
        size = optimise(page.screenshot(clip=clip(), full_page=True), Path(f"{args.out}-query.png"), args.width)
        print(f"{args.out}-query.png: {size} bytes")
        b.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
