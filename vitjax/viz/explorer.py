"""The attention explorer: one self-contained HTML page that holds a run (image x method x layer x head x query).

Researchers look at attention interactively: DINO's "attention of this query patch", bertviz's head view,
ViT-Prisma's per-head page. This module writes ONE file, ``explorer.html``, that answers those questions for
every image of a run by hovering and sliding, offline: its JavaScript and CSS are inline (plain JS and
``<canvas>``, no library), photos and maps are embedded, and a Content-Security-Policy forbids every network
request, so it opens from disk (``file://``) in any current browser and never fetches anything.

What the page shows: the run's images as a strip; the selected photo large at its own aspect ratio with a map
over it (opacity, colour map); a method selector (rollout, the cumulative rollout through each layer, each
layer's own map, every head's class-token attention with the fused mean/max, and, with ``classes=True`` on a
model with a trained head, the attention-GradCAM map of ANY class: top-k buttons and a class typed by name or
index; the run's own class-specific map when its method is one); a layer slider and a head selector; the
query view (hover or click a patch: its attention row, query -> keys, at the chosen layer and head, and its
rollout row, over the photo; the patch outlined and its value printed); attention sinks (ringed) and
high-norm tokens (squares) on the maps they concern only; the top-k predictions; the per-layer predictions
when :mod:`vitjax.attribution.lens` exists; a footer with the provenance of every number.

Data budget. Every map is stored in 8 bits with one float32 scale per map (per row): ``q = round(255 v / s)``,
``s = max(v)``, so a value read back is within ``s / 510`` of the computed one. Per image, by default: every
head's class-token row of every layer ``[L, H, P]``, every layer's head-fused query rows ``[L, N, N]`` (fused
as the run's rollout fuses heads), the rollout's joint matrix ``[N, N]`` (each patch's rollout row), the
rollout, cumulative and per-layer maps; with ``heads=True`` also every head's full query rows
``[L, H, N, N]``; with ``classes=True`` the per-class head weights ``[C, H]`` (int16). Base64 adds a third.
Per image (a photo budget of 0.16 MB included): ViT-B/16 at 224 px (N = 197): 0.89 MB by default, 8.5 MB with
``heads``, 0.93 MB with ``classes``; DINOv2-S/14 at 518 px (N = 1370): 33 MB by default, 214 MB with ``heads``
(at 224 px, N = 257: 1.4 MB). :func:`page_bytes`
computes it from the shapes; :func:`check_request` refuses, before anything is computed, a page over
:data:`PAGE_LIMIT`.

Entry points: :func:`write` (arrays in: photos and ``attention [B, L, H, N, N]`` from :func:`vitjax.forward`),
:func:`explore` (model and photos in, an :class:`Explorer` out: shown inline in a notebook through its
``_repr_html_``, saved with :meth:`Explorer.write`), :func:`inline` (a written page, e.g. a run's, inline in a
notebook), and :class:`Explorer` itself, which the visualize run (:mod:`vitjax.viz.run`) fills batch by batch
(:meth:`Explorer.pack_batch`, :meth:`Explorer.add`).
"""

from __future__ import annotations

import base64
import functools
import html as html_lib
import io
import json
import re
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from vitjax.attribution import methods
from vitjax.attribution.diagnostics import OUTLIER_RATIO, SINK_SHARE, outlier_tokens, sink_layers
from vitjax.attribution.maps import compute_maps
from vitjax.attribution.options import RolloutOptions, as_options
from vitjax.attribution.rollout import (
    HIGHEST,
    cumulative_maps,
    dynamic_options,
    fuse_heads,
    layer_maps,
    reader,
    rollout,
    rollout_map,
)
from vitjax.checkpoints.load import head_is_zero
from vitjax.data.images import load_image, preprocess
from vitjax.data.labels import class_label
from vitjax.errors import NonFiniteError, VitjaxWarning
from vitjax.io import write_atomic
from vitjax.model.vit import ATTENTION
from vitjax.version import __version__
from vitjax.viz import notes

try:  # the logit lens is optional: the page shows per-layer predictions only where vitjax has it
    from vitjax.attribution import lens as _lens
except ImportError:  # pragma: no cover - depends on the vitjax version
    _lens = None

__all__ = [
    "PAGE_LIMIT",
    "PREFIX",
    "Explorer",
    "PageOptions",
    "check_request",
    "explore",
    "for_run",
    "inline",
    "page_bytes",
    "requested",
    "write",
]

#: The largest page written (bytes): browsers parse a 200 MB file in seconds, not minutes, and a page that big
#: already holds 240 ViT-B/16 images at 224 px, or 6 DINOv2-S/14 images at 518 px.
PAGE_LIMIT = 200 * 10**6
#: Long side of the embedded photo (pixels): the page draws it at most this large, at its own aspect ratio.
PHOTO_SIDE = 640
#: Height of the strip's thumbnails (pixels).
THUMB_HEIGHT = 72
#: JPEG quality of the embedded photos.
JPEG_QUALITY = 85
#: Bytes budgeted per image for its photo and thumbnail in :func:`page_bytes` (a 640 px JPEG at quality 85 is
#: 30-90 kB, a third more in base64; a noisy photo more).
PHOTO_BYTES = 160_000
#: The most elongated photo drawn undistorted (as :mod:`vitjax.viz.drawing`): beyond it, drawn stretched.
MAX_ASPECT = 4.0
#: Colour maps offered in the page (matplotlib's, as the figures use), besides "mask" (photo x map).
CMAPS = ("jet", "viridis", "inferno", "magma", "turbo", "gray")
#: Keys of :meth:`Explorer.pack_batch`'s arrays start with this (they travel in the run's per-image maps).
PREFIX = "explorer/"
#: How many classes a page's typed-class list offers as suggestions (all can be typed by index or name).
_SUGGEST = 2000
_TOPK_LENS = 5
_I16 = 32767


@dataclass(frozen=True)
class PageOptions:
    """What the page holds besides the default (see the module docstring for sizes).

    Attributes:
      heads: every head's full query rows ``[L, H, N, N]`` (the query view of each head, not only of the fused
        heads); about ``H`` times the default size.
      classes: the attention-GradCAM map of every class (Chefer, Gur & Wolf, CVPR 2021 baseline
        ``generate_cam_attn``; :mod:`vitjax.attribution.class_maps`): per image the weights ``w [C, H]``, found
        by H forward-mode derivatives of the logits through the last block (one more forward pass per batch),
        and, where vitjax has the logit lens, each layer's predictions. Only for a model with a trained head.
      limit: the largest page in bytes (:data:`PAGE_LIMIT`).
    """

    heads: bool = False
    classes: bool = False
    limit: int = PAGE_LIMIT


# --------------------------------------------------------------------------- sizes


def _shapes(config, page: PageOptions) -> Dict[str, Tuple[Tuple[int, ...], str]]:
    """``{name: (shape, dtype)}`` of one image's arrays in the page (the one place the format's sizes live)."""
    L, H, N = config.num_layers, config.num_heads, config.num_tokens
    P = int(np.prod(config.grid))
    out = {
        "cls_q": ((L, H, P), "u8"), "cls_s": ((L, H), "f32"),
        "query_q": ((L, N, N), "u8"), "query_s": ((L, N), "f32"),
        "joint_q": ((N, N), "u8"), "joint_s": ((N,), "f32"),
        "rollout_q": ((1, P), "u8"), "rollout_s": ((1,), "f32"),
        "layer_q": ((L, P), "u8"), "layer_s": ((L,), "f32"),
        "cumulative_q": ((L, P), "u8"), "cumulative_s": ((L,), "f32"),
    }
    if page.heads:
        out.update(hquery_q=((L, H, N, N), "u8"), hquery_s=((L, H, N), "f32"))
    if page.classes and config.num_classes:
        out.update(cw=((int(config.num_classes), H), "i16"))
    return out


_ITEMSIZE = {"u8": 1, "i16": 2, "f32": 4}


def _b64_len(nbytes: int) -> int:
    return 4 * ((int(nbytes) + 2) // 3)


def page_bytes(config, num_images: int, page: PageOptions = PageOptions(), *, photo: int = PHOTO_BYTES) -> int:
    """The size of an explorer page in bytes, from the shapes (an estimate only in the photos' share).

    Args:
      config: the model's :class:`vitjax.ViTConfig` (layers L, heads H, tokens N, grid, classes).
      num_images: images in the page.
      page: :class:`PageOptions`.
      photo: bytes per image for its JPEG photo and thumbnail (base64), default :data:`PHOTO_BYTES`.

    Returns:
      bytes: per image, the base64 of every array of the format (8-bit maps with float32 scales) plus
      ``photo``; once, the page's code and the class names. ViT-B/16 at 224 px: about 0.89 MB per image,
      8.5 MB with ``heads``; DINOv2-S/14 at 518 px: about 33 MB, 214 MB with ``heads``.
    """
    per = sum(_b64_len(int(np.prod(shape)) * _ITEMSIZE[dt]) + 40 for shape, dt in _shapes(config, page).values())
    per += photo + 2_000  # the photo, the thumbnail, names, predictions, marks
    fixed = 80_000 + (40 * int(config.num_classes) if config.num_classes else 0)
    return int(fixed + int(num_images) * per)


def _mb(n: float) -> str:
    return f"{n / 1e6:.3g} MB"


def check_request(config, num_images: int, page: PageOptions = PageOptions(), *, lean: bool = False) -> int:
    """Refuses, before anything is computed, a page that cannot be made or would be too big.

    Args:
      config: the model's :class:`vitjax.ViTConfig`; num_images: images requested (an upper bound: unreadable
        ones are skipped later); page: :class:`PageOptions`; lean: the run folds attention into the rollout
        inside the forward pass (``--lean``), so no attention row is kept.

    Returns:
      the page's size in bytes (:func:`page_bytes`).

    Raises:
      ValueError: one line: ``lean`` (the page needs every layer's attention), or a page over
        ``page.limit``, naming its size per image and the options that shrink it.
    """
    if lean:
        raise ValueError("--html needs every layer's attention rows, which --lean does not keep; drop --lean")
    size = page_bytes(config, num_images, page)
    if size > page.limit:
        per = page_bytes(config, 1, page) - page_bytes(config, 0, page)
        what = f"{config.num_tokens} tokens x {config.num_layers} layers of query rows" + (
            f" x {config.num_heads} heads" if page.heads else "")
        shrink = "use fewer images (--sample N, --per-class K), a smaller --image-size" + (
            ", or drop --html-heads" if page.heads else "")
        raise ValueError(f"the explorer page for {num_images} image(s) would be about {_mb(size)} ({_mb(per)} per "
                         f"image: {what}), over its {_mb(page.limit)} limit; {shrink}")
    return size


def requested(config, num_images: int, *, html: bool, heads: bool = False, classes: bool = False,
              lean: bool = False) -> Optional[PageOptions]:
    """The page a command asked for (``--html``; ``--html-heads`` and ``--html-classes`` imply it), checked.

    Returns:
      :class:`PageOptions`, or None when no page is asked for.

    Raises:
      ValueError: as :func:`check_request` (one line), before anything is computed.
    """
    if not (html or heads or classes):
        return None
    page = PageOptions(heads=bool(heads), classes=bool(classes))
    check_request(config, num_images, page, lean=lean)
    return page


# --------------------------------------------------------------------------- quantisation (on the device)


def _quantise(x):
    """``[..., K]`` float >= 0 -> ``(uint8 [..., K], float32 scale [...])``: ``q = round(255 x / max)``."""
    x = jnp.maximum(jnp.nan_to_num(x.astype(jnp.float32), nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    s = jnp.max(x, axis=-1)
    q = jnp.round(x / jnp.where(s > 0, s, 1.0)[..., None] * 255.0)
    return jnp.clip(q, 0, 255).astype(jnp.uint8), s


@functools.partial(jax.jit, static_argnames=("static", "heads"))
def _pack(attention, rollout_maps, layer, cumulative, dyn, *, static: RolloutOptions, heads: bool):
    """One batch's page arrays; images one after another (``lax.map``), so the peak is one image's."""
    n = attention.shape[-1]
    p = static.num_prefix_tokens
    v = reader(n, static)

    def one(args):
        att, roll, lay, cum = args  # [L, H, N, N], [gh, gw], [L, gh, gw], [L, gh, gw]
        att = jnp.nan_to_num(att.astype(jnp.float32))
        cls = jnp.einsum("n,lhnm->lhm", v, att, precision=HIGHEST)[..., p:]  # [L, H, P]
        fused = jax.vmap(lambda a: fuse_heads(a, static.head_fusion))(att)  # [L, N, N]
        joint = rollout(att, static, dyn)  # [N, N]: each row is that token's rollout row
        out = {}
        for name, x in (("cls", cls), ("query", fused), ("joint", joint), ("rollout", roll.reshape(1, -1)),
                        ("layer", lay.reshape(lay.shape[0], -1)), ("cumulative", cum.reshape(cum.shape[0], -1))):
            out[name + "_q"], out[name + "_s"] = _quantise(x)
        if heads:
            out["hquery_q"], out["hquery_s"] = _quantise(att)
        return out

    return jax.lax.map(one, (attention, rollout_maps, layer, cumulative))


@functools.partial(jax.jit, static_argnames=("model", "static"))
def _class_weights(model, params, images, *, static: RolloutOptions):
    """``[B, C, H]``: attention-GradCAM's head weights of every class, ``w[c, h] = mean_j (v G_L[h])_j``.

    ``G_L = d logit_c / d A_L`` (the last layer's attention), ``v`` the reading row
    (:func:`vitjax.attribution.rollout.reader`), ``j`` over the patch columns: the directional derivative of the
    logits along ``A_L[h] += eps_h * v (x) 1_patches``, divided by the patch count. One forward pass and H
    tangents through the last block give every class at once (:func:`jax.jacfwd`), where the gradient of one
    class costs a backward pass each.
    """
    cfg = model.config
    n, p = cfg.num_tokens, static.num_prefix_tokens
    v = reader(n, static)
    direction = v[:, None] * (jnp.arange(n) >= p).astype(jnp.float32)[None, :]  # [N, N]
    last = f"encoderblock_{cfg.num_layers - 1}"

    def one(x):
        x = x[None]
        shapes = jax.eval_shape(lambda q, y: model.apply({"params": q}, y, mutable=["perturbations"])[1],
                                params, x)["perturbations"]
        zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def logits(eps):  # eps [H]
            tree = jax.tree_util.tree_map(lambda a: a, zeros)
            site = tree["Transformer"][last]["MultiHeadDotProductAttention_1"]
            bump = (eps[:, None, None] * direction[None])[None]  # [1, H, N, N]
            site[ATTENTION] = site[ATTENTION] + bump.astype(site[ATTENTION].dtype)
            return model.apply({"params": params, "perturbations": tree}, x)[0].astype(jnp.float32)

        return jax.jacfwd(logits)(jnp.zeros((cfg.num_heads,), jnp.float32)) / (n - p)  # [C, H]

    return jax.lax.map(one, images)


def _weights_i16(w: np.ndarray) -> np.ndarray:
    """``[..., C, H]`` -> int16, each class's row divided by its largest magnitude (the map ignores its scale)."""
    w = np.nan_to_num(np.asarray(w, np.float64))
    m = np.max(np.abs(w), axis=-1, keepdims=True)
    return np.rint(np.where(m > 0, w / np.where(m > 0, m, 1.0), 0.0) * _I16).astype(np.int16)


# --------------------------------------------------------------------------- photos


def _jpeg(image, quality: int) -> str:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _photo(photo, side: int = PHOTO_SIDE) -> Dict[str, Any]:
    """The photo (path, PIL image or array) as a JPEG data URL, long side at most ``side`` px, and its thumbnail.

    The photo keeps its aspect ratio unless it is more elongated than :data:`MAX_ASPECT` (then it is drawn
    stretched to that, and the page says so); a small photo is enlarged to at least 320 px so the map over it
    is drawn smoothly.
    """
    from PIL import Image

    image = load_image(photo)
    w0, h0 = image.size
    aspect = h0 / w0
    shown = min(max(aspect, 1.0 / MAX_ASPECT), MAX_ASPECT)
    long = min(side, max(w0, h0, 320))
    w, h = (max(1, round(long / shown)), long) if shown >= 1 else (long, max(1, round(long * shown)))
    big = image.resize((w, h), Image.LANCZOS) if (w, h) != (w0, h0) else image
    thumb = image.resize((max(1, round(THUMB_HEIGHT / shown)), THUMB_HEIGHT), Image.LANCZOS)
    return {"photo": _jpeg(big.convert("RGB"), JPEG_QUALITY), "w": w, "h": h,
            "thumb": _jpeg(thumb.convert("RGB"), 80), "original": [h0, w0], "stretched": shown != aspect}


# --------------------------------------------------------------------------- the page


def _encode(a: np.ndarray, dtype: str) -> Dict[str, str]:
    np_dtype = {"u8": "u1", "i16": "<i2", "f32": "<f4"}[dtype]
    raw = np.ascontiguousarray(np.asarray(a).astype(np_dtype, copy=False)).tobytes()
    return {"t": dtype, "b": base64.b64encode(raw).decode("ascii")}


def _json(value) -> str:
    """JSON safe inside ``<script>``: ``<`` only occurs in strings, where ``\\u003c`` means the same."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def _asset(name: str) -> str:
    return resources.files("vitjax.viz").joinpath(name).read_text(encoding="utf-8")


def _lut(name: str) -> str:
    from matplotlib import colormaps

    rgb = np.rint(colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.uint8)
    return base64.b64encode(rgb.tobytes()).decode("ascii")


class Explorer:
    """One explorer page, filled image by image; :meth:`html` / :meth:`write` make the file.

    Args:
      config: the model's :class:`vitjax.ViTConfig`.
      options: the run's :class:`vitjax.RolloutOptions` (its head fusion fuses the query rows; its
        options make the rollout rows); default ``RolloutOptions()``.
      page: :class:`PageOptions`.
      names: class names (index -> name) or None (``"class N"``).
      head: ``"trained"``, ``"zero"`` (an all-zero head: no predictions) or ``"none"`` (headless).
      provenance: the footer's line (:func:`vitjax.viz.notes.provenance`); default from ``config`` and ``options``.
      title: the page's title.
      run_method: the run's class-specific method when its maps are passed to :meth:`pack_batch`.
      method, layer: the view the page opens with (a method of :mod:`vitjax.attribution.methods`; a class
        method opens the run's class map), the layer 0-based (negative from the end).
      cmap, alpha: the colour map and opacity the page opens with.

    Raises:
      ValueError: a ``head``, ``cmap`` or method that is not known.
    """

    def __init__(self, config, options: Optional[RolloutOptions] = None, page: PageOptions = PageOptions(), *,
                 names: Optional[Sequence[str]] = None, head: Optional[str] = None,
                 provenance: Optional[str] = None, title: str = "vitjax attention explorer",
                 run_method: Optional[str] = None, method: str = "rollout", layer: int = -1, cmap: str = "jet",
                 alpha: float = 0.5):
        from matplotlib import colormaps

        self.config = config
        self.options = as_options(options).for_config(config)
        self.head = head or ("none" if config.num_classes is None else "trained")
        if self.head not in ("trained", "zero", "none"):
            raise ValueError(f"head must be 'trained', 'zero' or 'none', got {self.head!r}")
        if page.classes and self.head != "trained":  # class maps explain a trained head's classes only
            page = PageOptions(heads=page.heads, classes=False, limit=page.limit)
        self.page = page
        self.names = None if names is None else [str(n) for n in names]
        self.title = title
        self.run_method = run_method
        if run_method is not None:
            methods.get(run_method, "class")
        kind = methods.get(method).kind  # the view the page opens with: the run's own method
        self.initial = {"method": method if kind == "attention" else ("runclass" if run_method else "rollout"),
                        "layer": int(layer) % config.num_layers}
        if cmap not in colormaps:
            raise ValueError(f"unknown matplotlib colour map {cmap!r} (e.g. jet, inferno, viridis)")
        self.cmap, self.alpha = cmap, float(alpha)
        opts = self.options
        self.provenance = provenance if provenance is not None else notes.provenance(
            "checkpoint", opts, str(config.matmul_precision), input_size=config.image_size, grid=config.grid)
        self.shapes = _shapes(config, self.page)
        self.images: List[Dict[str, Any]] = []
        self.blobs: List[str] = []

    # ------------------------------------------------------------------ per batch (on the device)

    def pack_batch(self, maps: Mapping[str, Any], *, class_map=None, images=None, model=None,
                   params=None) -> Dict[str, np.ndarray]:
        """One batch's page arrays, quantised on the device: ``{PREFIX + name: [B, ...]}`` NumPy arrays.

        Args:
          maps: :func:`vitjax.compute_maps` of the batch with ``keep_attention=True``: ``attention
            [B, L, H, N, N]``, ``rollout [B, gh, gw]``, ``layer``/``cumulative [B, L, gh, gw]`` and, when present,
            ``token_norms [B, gh, gw]`` and ``received_heads [B, L, H, gh, gw]`` (sinks, high-norm tokens).
          class_map: ``[B, gh, gw]``, the run's class-specific map (``run_method``), or None.
          images, model, params: the batch ``[B, H, W, 3]`` (preprocessed) and the model, for
            ``page.classes`` (one more forward pass) and the logit lens; unused otherwise.

        Returns:
          per-image arrays with the batch first, to be sliced by row and given to :meth:`add`.

        Raises:
          ValueError: ``maps`` without ``attention`` or with shapes that do not fit the config.
        """
        cfg = self.config
        if "attention" not in maps:
            raise ValueError("the explorer needs the attention: compute_maps(..., keep_attention=True)")
        att = maps["attention"]
        want = (cfg.num_layers, cfg.num_heads, cfg.num_tokens, cfg.num_tokens)
        if tuple(att.shape[1:]) != want:
            raise ValueError(f"attention must be [B, {', '.join(map(str, want))}], got shape {tuple(att.shape)}")
        opts = self.options
        dyn = dynamic_options(opts, cfg.num_tokens)
        packed = _pack(jnp.asarray(att), jnp.asarray(maps["rollout"]), jnp.asarray(maps["layer"]),
                       jnp.asarray(maps["cumulative"]), dyn, static=opts.static, heads=self.page.heads)
        out = {PREFIX + k: np.asarray(v) for k, v in packed.items()}
        b = att.shape[0]
        if class_map is not None:
            q, s = _quantise(jnp.asarray(class_map).reshape(b, 1, -1))
            out[PREFIX + "class_q"], out[PREFIX + "class_s"] = np.asarray(q), np.asarray(s)
        if "received_heads" in maps:
            r = np.asarray(maps["received_heads"])  # [B, L, H, gh, gw]
            out[PREFIX + "sinks"] = sink_layers(r[:, :, :, None])  # [B, L, H, gh, gw]: per head
        if "token_norms" in maps:
            out[PREFIX + "outliers"] = outlier_tokens(np.asarray(maps["token_norms"]))
        if self.page.classes and model is not None and images is not None:
            out[PREFIX + "cw"] = _weights_i16(np.asarray(_class_weights(model, params, jnp.asarray(images),
                                                                        static=opts.static)))
            lens = _logit_lens(model, params, images)
            if lens is not None:
                out[PREFIX + "lens_idx"], out[PREFIX + "lens_prob"] = lens
        return out

    # ------------------------------------------------------------------ per image

    def add(self, packed: Mapping[str, np.ndarray], photo, *, name: str, true_class: Optional[str] = None,
            topk: Optional[Tuple[Sequence[int], Sequence[float]]] = None, original_size=None,
            target: Optional[int] = None) -> None:
        """Adds one image: its row of :meth:`pack_batch`'s arrays (other keys are ignored) and its photo.

        Args:
          packed: ``{PREFIX + name: array}`` of this image (no batch axis).
          photo: a path, PIL image or array (:func:`vitjax.load_image`): embedded as a JPEG of at most
            :data:`PHOTO_SIDE` px.
          name: the image's name in the page; true_class: its label, if known.
          topk: ``(class indices [k], probabilities [k])`` of the predictions, or None.
          original_size: the photo's ``(height, width)`` before any shrinking (default: ``photo``'s).
          target: the class the run's class-specific map explains.

        Raises:
          ValueError: a missing array or one whose shape is not the format's (one line naming it); an
            unreadable photo.
        """
        arrays = {}
        for key, (shape, dtype) in self.shapes.items():
            a = packed.get(PREFIX + key)
            if a is None:
                raise ValueError(f"explorer: image {name!r} lacks {PREFIX + key}")
            a = np.asarray(a)
            if a.shape != shape:
                raise ValueError(f"explorer: {PREFIX + key} of image {name!r} has shape {a.shape}, expected {shape}")
            arrays[key] = _encode(a, dtype)
        P = int(np.prod(self.config.grid))
        if PREFIX + "class_q" in packed:
            arrays["class_q"] = _encode(np.asarray(packed[PREFIX + "class_q"]).reshape(1, P), "u8")
            arrays["class_s"] = _encode(np.asarray(packed[PREFIX + "class_s"]).reshape(1), "f32")
        marks = {"sinks": [], "outliers": []}
        if PREFIX + "sinks" in packed:
            s = np.asarray(packed[PREFIX + "sinks"], bool).reshape(self.config.num_layers, self.config.num_heads, P)
            marks["sinks"] = [[int(a), int(b), int(c)] for a, b, c in np.argwhere(s)]
        if PREFIX + "outliers" in packed:
            marks["outliers"] = [int(i) for i in np.flatnonzero(np.asarray(packed[PREFIX + "outliers"], bool))]
        shown = _photo(photo)
        if original_size is not None:
            shown["original"] = [int(original_size[0]), int(original_size[1])]
        entry: Dict[str, Any] = {"name": str(name), "true_class": true_class, "thumb": shown.pop("thumb"),
                                 "original": shown.pop("original"), "stretched": shown.pop("stretched"),
                                 "topk": [], "target": None if target is None else int(target), **marks}
        if topk is not None and self.head == "trained":
            entry["topk"] = [[int(c), float(p), class_label(int(c), self.names)] for c, p in zip(*topk, strict=True)]
        if PREFIX + "lens_idx" in packed:
            idx, prob = np.asarray(packed[PREFIX + "lens_idx"]), np.asarray(packed[PREFIX + "lens_prob"])
            entry["lens"] = [[[int(c), float(p)] for c, p in zip(i, q, strict=True)] for i, q in zip(idx, prob,
                                                                                                    strict=True)]
        self.images.append(entry)
        self.blobs.append(_json({**shown, "arrays": arrays}))

    # ------------------------------------------------------------------ the file

    def meta(self) -> Dict[str, Any]:
        """The page's description of the data (what its JavaScript reads first)."""
        cfg, o = self.config, self.options
        classes = self.page.classes and bool(cfg.num_classes)
        cmaps = list(dict.fromkeys((self.cmap,) + CMAPS))
        return {
            "version": __version__, "title": self.title, "layers": cfg.num_layers, "heads": cfg.num_heads,
            "tokens": cfg.num_tokens, "prefix": o.num_prefix_tokens, "class_token": bool(o.class_token),
            "registers": int(getattr(cfg, "num_registers", 0)), "grid": list(cfg.grid),
            "image_size": list(cfg.image_size), "patch": list(cfg.patch_size), "fusion": o.head_fusion,
            "start_layer": int(o.start_layer), "options": o.to_dict(), "heads_full": bool(self.page.heads),
            "classes": classes, "num_classes": cfg.num_classes, "head": self.head,
            "names": self.names if classes else None,
            "suggest": _SUGGEST, "run_method": self.run_method,
            "run_quantity": methods.get(self.run_method).quantity if self.run_method else None,
            "cmap": self.cmap, "alpha": self.alpha, "cmaps": {c: _lut(c) for c in cmaps},
            "provenance": self.provenance, "random_weights": bool(getattr(cfg, "random_weights", False)),
            "sink_share": SINK_SHARE, "outlier_ratio": OUTLIER_RATIO, "initial": self.initial, "images": self.images,
        }

    def html(self) -> str:
        """The page: one HTML document, everything inline (no request of any kind leaves it).

        Raises:
          ValueError: no image added.
        """
        if not self.images:
            raise ValueError("explorer: no image to show")
        data = f'<script type="application/json" id="vx-meta">{_json(self.meta())}</script>\n' + "".join(
            f'<script type="application/json" id="vx-img-{i}">{b}</script>\n' for i, b in enumerate(self.blobs))
        parts = {"TITLE": html_lib.escape(self.title), "CSS": _asset("explorer.css"), "DATA": data,
                 "JS": _asset("explorer.js")}
        return re.sub(r"\{\{(TITLE|CSS|DATA|JS)\}\}", lambda m: parts[m.group(1)], _asset("explorer.html"))

    def write(self, path: Union[str, Path], *, overwrite: bool = False) -> Path:
        """Writes :meth:`html` to ``path`` atomically (:func:`vitjax.io.write_atomic`).

        Raises:
          ValueError: no image, or a page over ``page.limit`` (one line with its size).
          FileExistsError: ``path`` exists and not ``overwrite``. OSError: cannot be written.
        """
        data = self.html().encode("utf-8")
        if len(data) > self.page.limit:
            raise ValueError(f"{path}: the explorer page would be {_mb(len(data))}, over its {_mb(self.page.limit)} "
                             "limit; fewer images, a smaller image size, or no per-head query rows")
        return write_atomic(Path(path), data, overwrite=overwrite)

    def _repr_html_(self) -> str:
        """The page inline in a notebook (an ``<iframe srcdoc>``; scripts run sandboxed, nothing is fetched)."""
        return _iframe(self.html())


def _iframe(page: str) -> str:
    return (f'<iframe sandbox="allow-scripts" style="width:100%;height:960px;border:1px solid #ccc" '
            f'srcdoc="{html_lib.escape(page, quote=True)}"></iframe>')


class Inline:
    """A written explorer page shown inline in a notebook: ``explorer.inline("out/run/explorer.html")``."""

    def __init__(self, page: str):
        self.page = page

    def _repr_html_(self) -> str:
        return _iframe(self.page)


def inline(path: Union[str, Path]) -> Inline:
    """Shows an ``explorer.html`` (e.g. a run's) inline in a Jupyter notebook: the value of a cell's last line.

    Raises:
      ValueError: the file cannot be read or is not an explorer page (one line naming it).
    """
    try:
        page = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the explorer page ({getattr(e, 'strerror', None) or e})") from None
    if 'id="vx-meta"' not in page:
        raise ValueError(f"{path}: not a vitjax explorer page")
    return Inline(page)


def _logit_lens(model, params, images) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Each layer's top-k classes and probabilities ``([L + 1, k], [L + 1, k])`` per image, where vitjax has the lens.

    Uses ``vitjax.attribution.lens.logit_lens(model, params, images)["logits"] [B, L + 1, C]`` (row 0: block 0's
    input, row l: block l's output, read by the model's own head) when that module exists; anything else is
    reported with a :class:`VitjaxWarning` and left out of the page.
    """
    fn = getattr(_lens, "logit_lens", None)
    if fn is None:
        return None
    bad: Tuple[int, ...] = ()
    try:
        out = fn(model, params, jnp.asarray(images))
    except NonFiniteError as e:  # NaN/inf rows: images the run skips (no page row); the other rows are usable
        out, bad = e.result, e.rows
    except (TypeError, ValueError) as e:
        warnings.warn(f"explorer: logit lens left out ({e})", VitjaxWarning, stacklevel=3)
        return None
    out = out.get("logits") if isinstance(out, Mapping) else (out[0] if isinstance(out, tuple) else out)
    a = np.array(out if out is not None else np.zeros((0,)), np.float64)
    if bad and a.ndim == 3:
        a[list(bad)] = 0.0  # never shown; zeros keep NumPy from warning about inf - inf below
    cfg = model.config
    if a.ndim != 3 or a.shape[1] != cfg.num_layers + 1 or a.shape[2] != cfg.num_classes:
        warnings.warn(f"explorer: logit lens left out (shape {a.shape}, expected [B, {cfg.num_layers + 1}, "
                      f"{cfg.num_classes}])", VitjaxWarning, stacklevel=3)
        return None
    a = a - a.max(axis=-1, keepdims=True)
    p = np.exp(a)
    p /= p.sum(axis=-1, keepdims=True)
    idx = np.argsort(-p, axis=-1, kind="stable")[..., :_TOPK_LENS]
    return idx.astype(np.int32), np.take_along_axis(p, idx, axis=-1).astype(np.float32)


def for_run(config, settings, *, head: str, sha256: Optional[str] = None,
            checkpoint_name: str = "checkpoint") -> Explorer:
    """The explorer of a visualize run (:class:`vitjax.viz.run.RunSettings` with ``html`` set).

    Args:
      config: the model's :class:`vitjax.ViTConfig`.
      settings: the run's settings: ``html`` (:class:`PageOptions`), ``options``, ``precision``, ``names``,
        ``method``, ``layer``, ``cmap``, ``alpha`` (what the page opens with), ``lean``.
      head: ``"trained"``, ``"zero"`` or ``"none"``; sha256: the checkpoint file's; checkpoint_name: its name.

    Raises:
      ValueError: ``settings.lean`` (no attention row is kept), an unknown method.
    """
    if settings.lean:
        check_request(config, 0, settings.html, lean=True)
    m = methods.get(settings.method)
    fields = [("rollout, cumulative", methods.get("rollout").options), ("layer maps", methods.get("layer").options),
              ("head maps", methods.get("heads").options), ("query rows", ("head_fusion",)),
              ("rollout rows", methods.get("rollout").options)]
    if m.needs_head:
        fields.append((f"{m.name} map", m.options))
    line = notes.provenance(checkpoint_name, settings.options, settings.precision, sha256=sha256,
                            input_size=config.image_size, grid=config.grid, maps=fields)
    return Explorer(config, settings.options, settings.html, names=settings.names, head=head, provenance=line,
                    run_method=m.name if m.needs_head else None, method=m.name, layer=settings.layer,
                    cmap=settings.cmap, alpha=settings.alpha)


# --------------------------------------------------------------------------- from arrays, from a model


def _topk(logits: np.ndarray, k: int):
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    idx = np.argsort(-p, axis=-1, kind="stable")[..., :k]
    return idx, np.take_along_axis(p, idx, axis=-1)


def write(path: Union[str, Path], photos: Sequence[Any], attention, *, config, options: Optional[RolloutOptions]
          = None, logits=None, maps: Optional[Mapping[str, Any]] = None, names: Optional[Sequence[str]] = None,
          titles: Optional[Sequence[str]] = None, page: PageOptions = PageOptions(), topk: int = 5,
          provenance: Optional[str] = None, overwrite: bool = False) -> Path:
    """Writes an explorer page from arrays: photos and their attention, e.g. from :func:`vitjax.forward`.

    Example::

        logits, attention = vitjax.forward(model, params, x)   # [B, C], [B, L, H, N, N]
        explorer.write("explorer.html", ["cat.jpg", "dog.jpg"], attention, config=model.config, logits=logits)

    Args:
      path: the file to write (``.html``).
      photos: B photos (paths, PIL images or arrays), shown as they are (the maps are laid over them).
      attention: ``[B, L, H, N, N]`` softmax probabilities (queries x keys; class token, registers, patches).
      config: the model's :class:`vitjax.ViTConfig` (grid, token layout, head).
      options: :class:`vitjax.RolloutOptions` for the rollout and the fused rows (default ``RolloutOptions()``).
      logits: ``[B, C]`` for the top-k predictions (a model with a head), or None.
      maps: :func:`vitjax.compute_maps`'s output for the same images (its ``token_norms`` mark high-norm tokens);
        by default the maps are computed from ``attention`` (rollout, per-layer and cumulative maps; sinks from
        the attention each patch receives) and no high-norm token is marked.
      names: class names; titles: B names for the images (default ``image 1``...).
      page: :class:`PageOptions` (``classes`` needs a model: see :func:`explore`).
      topk: predictions listed per image.
      provenance: the footer's line.
      overwrite: replace an existing file.

    Returns:
      ``path``.

    Raises:
      ValueError: shapes that do not fit ``config`` or each other, an unreadable photo, a page over the limit.
      FileExistsError, OSError: as :func:`vitjax.io.write_atomic`.
    """
    att = np.asarray(attention)
    if att.ndim != 5 or len(photos) != att.shape[0]:
        raise ValueError(f"attention must be [B, L, H, N, N] for the {len(photos)} photo(s), got shape {att.shape}")
    options = as_options(options).for_config(config)
    page = PageOptions(heads=page.heads, classes=False, limit=page.limit)
    check_request(config, att.shape[0], page)
    ex = Explorer(config, options, page, names=names, provenance=provenance,
                  head="none" if (logits is None or not config.num_classes) else "trained")
    maps = dict(maps or {})
    grid = config.grid
    if "rollout" not in maps:
        maps.update(rollout=rollout_map(att, grid, options), layer=layer_maps(att, grid, options),
                    cumulative=cumulative_maps(att, grid, options))
    if "received_heads" not in maps:
        p = options.num_prefix_tokens
        recv = att[..., :, p:].astype(np.float64).mean(axis=-2)  # [B, L, H, P]: mean over queries
        maps["received_heads"] = recv.reshape(recv.shape[:-1] + tuple(grid))
    maps["attention"] = att
    packed = ex.pack_batch(maps)
    top = _topk(logits, topk) if logits is not None and config.num_classes else None
    for i, photo in enumerate(photos):
        ex.add({k: v[i] for k, v in packed.items()}, photo,
               name=titles[i] if titles is not None else f"image {i + 1}",
               topk=None if top is None else (top[0][i], top[1][i]))
    return ex.write(path, overwrite=overwrite)


def explore(model, params, photos: Sequence[Any], *, options: Optional[RolloutOptions] = None,
            page: PageOptions = PageOptions(), names: Optional[Sequence[str]] = None,
            titles: Optional[Sequence[str]] = None, topk: int = 5, batch_size: int = 4,
            resize: str = "google", provenance: Optional[str] = None) -> Explorer:
    """An explorer of ``photos`` through ``model``: shown inline in a notebook, saved with ``.write(path)``.

    Example::

        model, params = vitjax.load_checkpoint("ViT-B_16-224")
        page = explorer.explore(model, params, ["cat.jpg", "dog.jpg"])
        page                       # in Jupyter: the explorer inline
        page.write("explorer.html")

    Args:
      model, params: from :func:`vitjax.load_checkpoint`.
      photos: paths, PIL images or arrays; each preprocessed for the model (:func:`vitjax.preprocess`).
      options: :class:`vitjax.RolloutOptions`; page: :class:`PageOptions`; names: class names;
      titles: names of the images (default: the file names, or ``image 1``...); topk: predictions listed;
      batch_size: images per forward pass; resize: see :func:`vitjax.preprocess`; provenance: the footer.

    Returns:
      an :class:`Explorer` holding every image.

    Raises:
      ValueError: an unreadable photo, bad options, a page over the limit.
    """
    cfg = model.config
    check_request(cfg, len(photos), page)
    options = as_options(options).for_config(cfg)
    head = "none" if not cfg.num_classes else ("zero" if head_is_zero(params) else "trained")
    ex = Explorer(cfg, options, page, names=names, head=head, provenance=provenance)
    if titles is None:
        titles = [Path(p).name if isinstance(p, (str, Path)) else f"image {i + 1}" for i, p in enumerate(photos)]
    for start in range(0, len(photos), max(1, int(batch_size))):
        chunk = list(photos[start:start + max(1, int(batch_size))])
        x = np.stack([preprocess(p, cfg, resize=resize) for p in chunk])
        out = compute_maps(model, params, x, options, keep_attention=True)
        packed = ex.pack_batch(out, images=x, model=model, params=params)
        top = _topk(np.asarray(out["logits"]), topk) if head == "trained" else None
        for i, photo in enumerate(chunk):
            ex.add({k: v[i] for k, v in packed.items()}, photo, name=titles[start + i],
                   topk=None if top is None else (top[0][i], top[1][i]))
    return ex

