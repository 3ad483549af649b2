"""vitjax.viz.explorer: the explorer page of a run, driven in a real headless Chromium (Debian's, via Playwright).

The runs are made here: a tiny random model (3 layers, 2 heads, 7 classes) at 64x96 px (a 4x6 grid) on three
sample photos when this checkout has them, else on generated JPEGs. Every number the page shows is compared
with the maps file or with :func:`vitjax.forward` within the 8-bit quantisation step (half a step: the map's
max / 510) plus the 4 decimals the page prints. Screenshots of each view go to the test's folder, and also to
``$VITJAX_EXPLORER_SHOTS`` when that is set.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import sync_playwright
from support.helpers import SAMPLES, rounding_tol

import vitjax
from vitjax.attribution import lens as lens_module
from vitjax.attribution.class_maps import class_gradients, class_maps
from vitjax.attribution.diagnostics import SINK_SHARE
from vitjax.attribution.rollout import reader
from vitjax.cli import visualize as cli
from vitjax.data.datasets import gather_images
from vitjax.io import load_maps
from vitjax.viz import explorer

NAMES = ["red kite", "barn owl", "tabby, tabby cat", "grand piano", "chair", "dolphin", "airliner"]
SIZE = (64, 96)  # 4 x 6 patches of 16 px
PRINTED = 5e-5  # the page prints values >= 0.001 with 4 decimals
SHOTS_ENV = "VITJAX_EXPLORER_SHOTS"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("no Chromium on PATH: apt-get install chromium (.ci/run installs it)")


def photo_paths(root: Path):
    if SAMPLES.is_dir():  # real photos of three shapes (read in place, never copied)
        return [SAMPLES / "chair" / "image_0001.jpg", SAMPLES / "airplanes" / "image_0002.jpg",
                SAMPLES / "dolphin" / "image_0003.jpg"]
    out = []
    for i, (w, h) in enumerate([(300, 200), (200, 300), (640, 160)]):
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.full_like(xx, 60 * i)], -1)
        img = img + np.random.default_rng(i).integers(-25, 25, img.shape)
        path = root / f"photo{i}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
        out.append(path)
    return out


@pytest.fixture(scope="module")
def made(make_checkpoint, tmp_path_factory):
    """Two runs of the command on the same photos: every page option, and the default page."""
    root = tmp_path_factory.mktemp("explorer")
    ckpt = make_checkpoint("testing", num_layers=3, num_classes=len(NAMES))
    labels = root / "labels.txt"
    labels.write_text("\n".join(NAMES) + "\n")
    photos = photo_paths(root)
    common = ["--ckpt", ckpt, "--image-size", "64x96", "--images", *photos, "--out", root / "out", "--labels",
              labels, "--no-compile-cache", "-q", "--topk", "3", "--no-grid"]
    full = cli.main([str(a) for a in common + ["--run-name", "full", "--method", "heads", "--layer", "2",
                                                "--save-maps", "--html-heads", "--html-classes"]])
    plain = cli.main([str(a) for a in common + ["--run-name", "plain", "--html", "--no-summary", "--method",
                                                 "generic"]])
    assert (full, plain) == (0, 0)
    model, params = vitjax.load_checkpoint(ckpt, image_size=SIZE)
    paths = [item.path for item in gather_images([str(p) for p in photos])]
    x = np.stack([vitjax.preprocess(p, model.config) for p in paths])
    logits, attention = vitjax.forward(model, params, x)
    shots = root / "shots"
    shots.mkdir()
    return {"full": root / "out" / "full", "plain": root / "out" / "plain", "model": model, "params": params,
            "x": x, "attention": np.asarray(attention, np.float64), "logits": np.asarray(logits), "paths": paths,
            "shots": shots, "root": root}


@pytest.fixture(scope="module")
def browser():
    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []  # root: no user namespaces
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), args=args)
        yield b
        b.close()


class Opened:
    """One page in the browser with every console message, page error and request recorded."""

    def __init__(self, browser, path: Path):
        self.path = path
        self.page = browser.new_page(viewport={"width": 1280, "height": 1000})
        self.console, self.errors, self.requests = [], [], []
        self.page.on("console", lambda m: self.console.append((m.type, m.text)))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(path.as_uri())
        self.wait()
        self.meta = self.page.evaluate("() => window.vitjax.meta")

    def wait(self):
        self.page.wait_for_function("() => window.vitjax && window.vitjax.idle")

    def set(self, method=None, layer=None, head=None, image=None):
        if image is not None:
            self.page.locator("#vx-strip button").nth(image).click()
        if method is not None:
            self.page.select_option("#vx-method", method)
        if layer is not None:  # 0-based here; the slider counts from 1
            self.page.locator("#vx-layer").fill(str(layer + 1))
        if head is not None:
            self.page.select_option("#vx-head", str(head))
        self.wait()

    def hover(self, patch: int, canvas: str = "#vx-main-marks"):
        gh, gw = self.meta["grid"]
        self.page.locator(canvas).scroll_into_view_if_needed()
        box = self.page.locator(canvas).bounding_box()
        r, c = divmod(patch, gw)
        self.page.mouse.move(box["x"] + (c + 0.5) * box["width"] / gw, box["y"] + (r + 0.5) * box["height"] / gh)
        self.wait()

    def printed(self) -> float:
        value = self.page.locator("#vx-value")
        assert value.get_attribute("data-patch") is not None
        return float(value.inner_text())

    def pixels(self, canvas: str = "vx-main") -> np.ndarray:
        url = self.page.evaluate(f"() => document.getElementById('{canvas}').toDataURL('image/png')")
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))

    def shot(self, made, name: str):
        path = made["shots"] / f"explorer-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        extra = os.environ.get(SHOTS_ENV)
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(extra) / path.name)

    def close(self):
        self.page.close()


def half_step(scale: float) -> float:
    """The 8-bit quantisation's largest error for a map of max ``scale``, plus the quantiser's float32 rounding."""
    return float(scale) / 510.0 + rounding_tol(max(float(scale), 1e-30), 2, fan_in=255)


# --------------------------------------------------------------------------- one offline file


@pytest.mark.parametrize("run, methods", [("full", ["rollout", "cumulative", "layer", "heads", "gradcam"]),
                                          ("plain", ["rollout", "cumulative", "layer", "heads", "runclass"])])
def test_the_page_is_one_offline_file_with_no_console_error_and_no_request(made, browser, run, methods):
    path = made[run] / "explorer.html"
    text = path.read_text(encoding="utf-8")
    assert "default-src 'none'" in text  # the page's own policy forbids every fetch, font, frame...
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:|//|ftp:)""", text, re.I)
    for word in ("fetch(", "XMLHttpRequest", "import(", "@import", "url(", "<link", "<iframe", "WebSocket"):
        assert word not in text, word
    p = Opened(browser, path)
    try:
        p.shot(made, f"{run}-opened")
        shown = p.page.evaluate("() => [...document.querySelectorAll('#vx-method option')].map(o => o.value)")
        assert shown == methods
        for image in range(len(made["paths"])):  # every image, every method, a hover and a click each
            for method in methods:
                p.set(image=image, method=method)
                p.hover(image + 5)
            p.page.locator("#vx-main-marks").click()
            p.wait()
            p.shot(made, f"{run}-image{image + 1}")
        p.page.keyboard.press("ArrowLeft")
        p.wait()
        assert p.errors == []
        assert [m for m in p.console if m[0] in ("error", "warning")] == []
        assert p.requests == [path.as_uri()]  # the page itself, and nothing else, ever
    finally:
        p.close()


def test_layer_head_method_opacity_and_colour_map_change_the_drawing(made, browser):
    p = Opened(browser, made["full"] / "explorer.html")
    try:
        seen = []

        def view(name, **kw):
            p.set(**kw)
            seen.append((name, p.pixels()))
            p.shot(made, name)

        view("cumulative-layer1", method="cumulative", layer=0)
        view("cumulative-layer3", layer=2)
        view("heads-layer2-head1", method="heads", layer=1, head=0)
        view("heads-layer2-head2", head=1)
        view("heads-layer2-max", head="max")
        view("layer-layer2", method="layer")
        view("class-map", method="gradcam")
        p.page.locator("#vx-alpha").fill("90")
        p.wait()
        seen.append(("opacity", p.pixels()))
        p.page.select_option("#vx-cmap", "viridis")
        p.wait()
        seen.append(("viridis", p.pixels()))
        for (a, pa), (b, pb) in zip(seen, seen[1:], strict=False):
            assert pa.shape == pb.shape
            assert (pa != pb).any(), f"{a} -> {b} drew the same pixels"
        # the canvas keeps the photo's own aspect ratio (the model saw a 64x96 squash of it)
        h, w = seen[0][1].shape[:2]
        with Image.open(made["paths"][0]) as im:
            assert abs(w / h - im.width / im.height) < 2 / min(w, h) + 1e-9
        # the query view: hovering draws the patch's rows; changing the layer redraws them
        p.set(method="heads", layer=0, head=0)
        blank = p.pixels("vx-qatt")
        p.hover(7)
        first = p.pixels("vx-qatt")
        p.set(layer=2)
        p.hover(7)
        assert (blank != first).any() and (first != p.pixels("vx-qatt")).any()
        p.shot(made, "query")
    finally:
        p.close()


# --------------------------------------------------------------------------- the numbers it prints


def test_the_hovered_value_equals_the_maps_file(made, browser):
    saved = load_maps(made["full"] / "maps.msgpack")
    arrays, meta = saved["arrays"], saved["metadata"]
    heads_layer = meta["heads_layer"] - 1  # --layer 2: the file keeps that layer's heads
    p = Opened(browser, made["full"] / "explorer.html")
    try:
        assert p.meta["grid"] == [4, 6] and p.meta["layers"] == 3 and p.meta["heads"] == 2
        checked = 0
        for image in range(len(made["paths"])):
            for method, layer, head, key in [("rollout", None, None, "rollout"),
                                             ("cumulative", 0, None, "cumulative"),
                                             ("cumulative", 2, None, "cumulative"),
                                             ("layer", 1, None, "layer"),
                                             ("heads", heads_layer, 0, "heads"),
                                             ("heads", heads_layer, 1, "heads")]:
                p.set(image=image, method=method, layer=layer, head=head)
                m = arrays[key][image]
                m = m[layer] if key in ("cumulative", "layer") else (m[head] if key == "heads" else m)
                for patch in (0, 5, 13, 23):
                    p.hover(patch)
                    want = float(m.reshape(-1)[patch])
                    assert abs(p.printed() - want) <= half_step(m.max()) + PRINTED, (image, method, layer, head)
                    checked += 1
        assert checked == 3 * 6 * 4
    finally:
        p.close()


def test_the_query_view_equals_the_attention_of_vitjax_forward(made, browser):
    att = made["attention"]  # [B, L, H, N, N]
    model = made["model"]
    opts = vitjax.RolloutOptions().for_config(model.config)
    joint = np.asarray(vitjax.attention_rollout(att.astype(np.float32), opts), np.float64)  # [B, N, N]
    pre = model.config.num_prefix_tokens
    tol = rounding_tol(1.0, 8, fan_in=model.config.hidden_size)  # two programs of the same forward pass
    p = Opened(browser, made["full"] / "explorer.html")
    try:
        for image, layer, head, patch in [(0, 0, 0, 3), (0, 2, 1, 17), (1, 1, 0, 22), (2, 2, 1, 0), (2, 0, 1, 9)]:
            p.set(image=image, method="heads", layer=layer, head=head)
            p.hover(patch)
            rows = p.page.evaluate("() => ({att: Array.from(vitjax.rows.att), roll: Array.from(vitjax.rows.roll),"
                                   " query: vitjax.rows.query, layer: vitjax.rows.layer, head: vitjax.rows.head})")
            assert (rows["query"], rows["layer"], rows["head"]) == (patch, layer, head)
            want = att[image, layer, head, patch + pre, :]
            np.testing.assert_allclose(rows["att"], want, rtol=0, atol=half_step(want.max()) + tol)
            want_roll = joint[image, patch + pre]
            np.testing.assert_allclose(rows["roll"], want_roll, rtol=0, atol=half_step(want_roll.max()) + tol)
            # the printed value of a key patch under the pointer in the query view
            key = (patch + 4) % len(want[pre:])
            p.hover(key, "#vx-qatt-marks")
            text = p.page.locator("#vx-qvalue").inner_text()
            printed = float(re.match(r"attention (\S+)", text).group(1))
            assert abs(printed - want[key + pre]) <= half_step(want.max()) + tol + PRINTED
        p.shot(made, "query-head")
    finally:
        p.close()


def test_the_default_page_keeps_fused_query_rows_and_says_so(made, browser):
    att = made["attention"]
    pre = made["model"].config.num_prefix_tokens
    p = Opened(browser, made["plain"] / "explorer.html")
    try:
        assert p.meta["heads_full"] is False and p.meta["classes"] is False and p.meta["fusion"] == "mean"
        p.set(image=1, method="heads", layer=1, head="mean")
        p.hover(11)
        row = np.asarray(p.page.evaluate("() => Array.from(vitjax.rows.att)"))
        want = att[1, 1, :, 11 + pre, :].mean(axis=0)
        np.testing.assert_allclose(row, want, rtol=0, atol=half_step(want.max()) + rounding_tol(1.0, 8, fan_in=10))
        p.set(head=0)
        p.hover(12)
        assert "--html-heads" in p.page.locator("#vx-qinfo").inner_text()
        p.shot(made, "default-page")
    finally:
        p.close()
    # the default page is the smaller one, and its size is what page_bytes says, photos aside
    plain, full = (made[k] / "explorer.html" for k in ("plain", "full"))
    cfg = made["model"].config
    assert plain.stat().st_size < full.stat().st_size
    for path, page in ((plain, explorer.PageOptions()), (full, explorer.PageOptions(heads=True, classes=True))):
        text = path.read_text()
        photos = sum(len(u) for u in re.findall(r'"(?:photo|thumb)":"(data:[^"]+)"', text))
        estimate = explorer.page_bytes(cfg, 3, page, photo=0)
        assert estimate - 100_000 <= len(text) - photos <= estimate  # within the estimate's fixed allowance


def test_the_class_map_of_a_typed_class_is_attention_gradcam(made, browser):
    model, params, x = made["model"], made["params"], made["x"]
    opts = vitjax.RolloutOptions().for_config(model.config)
    cfg = model.config
    n, pre, H = cfg.num_tokens, cfg.num_prefix_tokens, cfg.num_heads
    v = np.asarray(reader(n, opts), np.float64)
    p = Opened(browser, made["full"] / "explorer.html")
    try:
        nonzero = 0
        for image, typed, c in [(0, "3", 3), (1, "Grand Piano", 3), (2, "tabby cat", 2), (2, "owl", 1),
                                (0, "6", 6), (1, "kite", 0)]:
            p.set(image=image)
            p.page.locator("#vx-class").fill(typed)
            p.page.locator("#vx-class").dispatch_event("change")
            p.wait()
            assert p.page.evaluate("() => [vitjax.state.method, vitjax.state.cls]") == ["gradcam", c]
            shown = np.asarray(p.page.evaluate("() => Array.from(vitjax.map.values)"))
            # the reference: the gradient of class c's logit w.r.t. the last layer's attention
            _, att, grad, _ = class_gradients(model, params, x[image:image + 1], target=c)
            a = np.einsum("n,hnm->hm", v, np.asarray(att, np.float64)[0, -1])[:, pre:]  # [H, P]
            g = np.einsum("n,hnm->hm", v, np.asarray(grad, np.float64)[0, -1])[:, pre:]
            w = g.mean(axis=-1)
            raw = np.maximum((w[:, None] * a).mean(axis=0), 0.0)
            ref, _ = class_maps(model, params, x[image:image + 1], method="attention_gradcam", target=c)
            if raw.max() == 0:  # no head's evidence is positive anywhere: an all-zero map, on both sides
                assert not np.asarray(ref).any() and not shown.any()
                continue
            nonzero += 1
            want = raw / raw.max()
            np.testing.assert_allclose(want, np.asarray(ref, np.float64).reshape(-1), rtol=0,
                                       atol=rounding_tol(1.0, 8, fan_in=cfg.hidden_size))
            # the page's error: 8-bit head rows (half a step of each head's max) and int16 weights
            wn = np.abs(w) / np.abs(w).max()
            err = (wn[:, None] * (a.max(axis=-1, keepdims=True) / 510) + a / 65534).sum(axis=0) / H
            e, top = err.max(), raw.max() / np.abs(w).max()  # |x'/y' - x/y| <= 2 e / (y - e) for x <= y
            bound = 2 * e / (top - e) + rounding_tol(1.0, 8, fan_in=cfg.hidden_size)
            np.testing.assert_allclose(shown, want, rtol=0, atol=bound)
        assert nonzero >= 3
        p.page.locator("#vx-class").fill("no such class")
        p.page.locator("#vx-class").dispatch_event("change")
        assert "no class matches" in p.page.locator("#vx-class-msg").inner_text()
        p.shot(made, "class-map")
    finally:
        p.close()


def test_each_layers_predictions_come_from_the_logit_lens(made, browser):
    model, params, x = made["model"], made["params"], made["x"]
    lens = np.asarray(lens_module.logit_lens(model, params, x)["logits"], np.float64)  # [B, L+1, C]
    p = Opened(browser, made["full"] / "explorer.html")
    try:
        for image, entry in enumerate(p.meta["images"]):
            assert len(entry["lens"]) == model.config.num_layers + 1
            assert [row[0][0] for row in entry["lens"]] == list(np.argmax(lens[image], axis=-1))
            assert entry["lens"][-1][0][0] == entry["topk"][0][0]  # the last layer's reading is the prediction
        assert "each layer's prediction" in p.page.locator("#vx-lens").inner_text()
    finally:
        p.close()


def test_sinks_and_high_norm_tokens_are_marked_only_on_the_maps_they_concern(made, browser):
    p = Opened(browser, made["plain"] / "explorer.html")
    try:
        # a sink of head 2 in layer 1 (0-based: layer 0, head 1) at patch 5, a high-norm token at patch 9
        p.page.evaluate("() => { const im = vitjax.meta.images[0]; im.sinks = [[0, 1, 5]]; im.outliers = [9]; }")
        cases = [(dict(method="heads", layer=0, head=1), {5}, set()),
                 (dict(method="heads", layer=0, head=0), set(), set()),
                 (dict(method="heads", layer=0, head="mean"), {5}, set()),
                 (dict(method="heads", layer=1, head=1), set(), set()),
                 (dict(method="heads", layer=2, head=1), set(), {9}),
                 (dict(method="layer", layer=0), {5}, set()),
                 (dict(method="layer", layer=2), set(), {9}),
                 (dict(method="cumulative", layer=0), {5}, set()),
                 (dict(method="cumulative", layer=2), {5}, {9}),
                 (dict(method="rollout"), {5}, {9})]
        for kw, sinks, outliers in cases:
            p.set(**kw)
            got = p.page.evaluate("() => [[...vitjax.map.marks.sinks], [...vitjax.map.marks.outliers]]")
            assert (set(got[0]), set(got[1])) == (sinks, outliers), kw
        p.set(method="heads", layer=0, head=1)
        p.shot(made, "marks")
    finally:
        p.close()
    # the page's sinks are the diagnostics' own threshold, per head
    received = np.zeros((1, 3, 2, 4, 6))
    received[0, 1, 0, 2, 3] = SINK_SHARE * 1.01
    received[0, 2, 1, 0, 0] = SINK_SHARE * 0.99
    ex = explorer.Explorer(made["model"].config)
    att = np.asarray(made["attention"][:1], np.float32)
    maps = {k: np.asarray(v) for k, v in vitjax.compute_maps(made["model"], made["params"], made["x"][:1]).items()}
    packed = ex.pack_batch({**maps, "attention": att, "received_heads": received})
    assert np.argwhere(packed[explorer.PREFIX + "sinks"][0].reshape(3, 2, 24)).tolist() == [[1, 0, 15]]


# --------------------------------------------------------------------------- from Python: arrays in, a notebook


def test_write_from_forward_arrays_and_show_inline(made, browser, tmp_path):
    model, params = made["model"], made["params"]
    att = made["attention"].astype(np.float32)
    path = explorer.write(tmp_path / "arrays.html", made["paths"], att, config=model.config, logits=made["logits"],
                          names=NAMES, titles=["a", "b", "c"])
    p = Opened(browser, path)
    try:
        assert [im["name"] for im in p.meta["images"]] == ["a", "b", "c"]
        assert p.meta["images"][0]["topk"][0][2] == NAMES[int(np.argmax(made["logits"][0]))]
        p.set(image=2, method="heads", layer=1, head="mean")
        p.hover(4)
        row = np.asarray(p.page.evaluate("() => Array.from(vitjax.rows.att)"))
        pre = model.config.num_prefix_tokens
        want = made["attention"][2, 1, :, 4 + pre, :].mean(axis=0)
        np.testing.assert_allclose(row, want, rtol=0, atol=half_step(want.max()) + rounding_tol(1.0, 4, fan_in=2))
        assert p.errors == [] and p.requests == [path.as_uri()]
    finally:
        p.close()
    page = explorer.explore(model, params, made["paths"][:2], page=explorer.PageOptions(classes=True), names=NAMES)
    inline = page._repr_html_()
    assert inline.startswith('<iframe sandbox="allow-scripts"') and "srcdoc=" in inline and "<script>" not in inline
    assert len(page.images) == 2 and page.meta()["classes"] is True
    shown = explorer.inline(made["plain"] / "explorer.html")._repr_html_()
    assert shown.startswith('<iframe sandbox="allow-scripts"') and "vx-meta" in shown
    with pytest.raises(ValueError, match=r"labels.txt: not a vitjax explorer page$"):
        explorer.inline(made["root"] / "labels.txt")
    with pytest.raises(ValueError, match=r"^explorer: explorer/cls_q of image 'x' has shape \(1,\), expected"):
        page.add({explorer.PREFIX + "cls_q": np.zeros(1)}, made["paths"][0], name="x")


# --------------------------------------------------------------------------- refusals, before anything is computed


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_page_over_the_limit_or_without_attention_rows_is_refused_on_one_line(make_checkpoint, tmp_path, capsys):
    ckpt = make_checkpoint("testing", num_layers=12)
    photo = tmp_path / "p.png"
    Image.new("RGB", (20, 20), (9, 9, 9)).save(photo)
    out = tmp_path / "out"
    base = ["--ckpt", ckpt, "--images", photo, "--out", out, "--no-compile-cache", "-q"]
    # 1024 px: 4097 tokens, 12 layers of query rows = 201 MB for one image
    code = cli.main([str(a) for a in base + ["--image-size", "1024", "--html"]])
    line = one_line(capsys.readouterr().err)
    assert code == 2
    assert re.fullmatch(r".*error: the explorer page for 1 image\(s\) would be about 2\d\d MB \(2\d\d MB per image: "
                        r"4097 tokens x 12 layers of query rows\), over its 200 MB limit; use fewer images "
                        r"\(--sample N, --per-class K\), a smaller --image-size", line), line
    code = cli.main([str(a) for a in base + ["--image-size", "1024", "--html-heads"]])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and line.endswith("or drop --html-heads") and "x 2 heads" in line
    code = cli.main([str(a) for a in base + ["--html", "--lean"]])
    assert code == 2
    assert one_line(capsys.readouterr().err).endswith("--html needs every layer's attention rows, which --lean does "
                                                      "not keep; drop --lean")
    assert not out.exists() or not any(out.iterdir())  # refused before a run folder or anything else was made
    # the sizes the help states, from the format
    b16 = vitjax.get_config("ViT-B_16")
    dino = vitjax.get_config("ViT-S_16", patch_size=14, image_size=518, num_classes=None)

    def per_image(cfg, page=None):
        page = page or explorer.PageOptions()
        return explorer.page_bytes(cfg, 11, page) - explorer.page_bytes(cfg, 10, page)

    assert round(per_image(b16) / 1e6, 2) == 0.89 and round(per_image(b16, explorer.PageOptions(heads=True)) / 1e6,
                                                               1) == 8.5
    assert round(per_image(dino) / 1e6) == 33
    assert explorer.check_request(b16, 200) == explorer.page_bytes(b16, 200)


def test_the_page_lens_keeps_the_finite_images_of_a_batch_with_a_nan_one():
    """logit_lens raises NonFiniteError now (it returned NaN before): the page must not lose every image's lens."""
    import warnings

    from support.tiny_models import tiny_model

    model, params, x = tiny_model()
    x = np.asarray(x).copy()
    x[1] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = explorer._logit_lens(model, params, x)
    assert got is not None
    idx, prob = got
    want_idx, want_prob = explorer._logit_lens(model, params, x[:1])
    np.testing.assert_array_equal(idx[0], want_idx[0])
    np.testing.assert_allclose(prob[0], want_prob[0], atol=rounding_tol(1.0, steps=8, fan_in=16))
