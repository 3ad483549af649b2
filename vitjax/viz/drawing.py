"""Drawing primitives under :mod:`vitjax.viz.figures`: maps over photos, inch-based layout, text that fits.

Arrays: :func:`upsample_map` (a ``[gh, gw]`` map to a photo's own size),
:func:`overlay` (a map laid over a photo), :func:`as_photo`,
:func:`photo_array`. Layout, all in inches from the bottom-left corner of a
``matplotlib.figure.Figure`` (never pyplot's global state): :func:`new_figure`,
:func:`axes_at`, :func:`image_axes`, :func:`fit_box`, :func:`display_aspect`, :func:`at_display_aspect`,
:func:`stretch_note`,
:func:`colorbar`, :func:`left_out_tile`, :func:`mark_patches`, :func:`mark_tokens`; text: :func:`shorten`,
:func:`wrap`, :func:`note_title`, :func:`layer_span`,
:func:`probability_axis`, :func:`probability_text`. Output:
:func:`figure_png`, :func:`save_figure` (atomic, through :func:`vitjax.io.write_atomic`).
"""

from __future__ import annotations

import io
import math
import os
import re
import textwrap
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse, Rectangle

from vitjax.data.images import bilinear_taps, load_image
from vitjax.io import write_atomic

__all__ = [
    "DPI",
    "MAX_ASPECT",
    "MODES",
    "as_photo",
    "at_display_aspect",
    "axes_at",
    "check_mode",
    "colorbar",
    "colour_map",
    "display_aspect",
    "figure_png",
    "fit_box",
    "image_axes",
    "layer_span",
    "left_out_tile",
    "mark_patches",
    "mark_tokens",
    "new_figure",
    "note_title",
    "overlay",
    "photo_array",
    "probability_axis",
    "probability_text",
    "save_figure",
    "shorten",
    "stretch_note",
    "upsample_map",
    "wrap",
]

#: Default resolution of every figure (pixels per inch).
DPI = 100
#: Renderings of a map over a photo.
MODES = ("heatmap", "mask")
#: The most elongated a panel is drawn (height / width in [1 / MAX_ASPECT, MAX_ASPECT]). A photo beyond it is
#: drawn stretched to it, and its figure says so (:func:`stretch_note`): at its own aspect a 20000x20 px photo
#: gave panels 0 px high. Why 4: a 1:4 panel in a 1.5-inch grid cell is still 0.375 in (37 px at 100 dpi) across,
#: and the usual photo shapes (4:3, 3:2, 16:9, phone portraits 9:19.5) stay undistorted.
MAX_ASPECT = 4.0

ArrayLike = Union[np.ndarray, Sequence]
Box = Tuple[float, float, float, float]  # (x, y, width, height) in inches from the bottom-left corner


# --------------------------------------------------------------------------- arrays


def _bilinear_weights(n_out: int, n_in: int) -> np.ndarray:
    """``[n_out, n_in]`` weights of a half-pixel-centre linear resize (edges clamped), from
    :func:`vitjax.data.images.bilinear_taps`, the same taps as the input resize."""
    lo, hi, frac = bilinear_taps(n_in, n_out)
    w = np.zeros((n_out, n_in), np.float64)
    rows = np.arange(n_out)
    np.add.at(w, (rows, lo), 1.0 - frac)
    np.add.at(w, (rows, hi), frac)
    return w


def upsample_map(maps: ArrayLike, size: Sequence[int]) -> np.ndarray:
    """Bilinear resize of the last two axes ``[..., gh, gw]`` -> ``[..., height, width]`` float32 (NumPy).

    Half-pixel centres and clamped edges: the numbers of
    :func:`vitjax.attribution.rollout.upsample` (``jax.image.resize``, bilinear, no
    antialiasing) without compiling one XLA program per photo size.

    Raises:
      ValueError: ``maps`` of rank < 2 or a size that is not two integers >= 1.
    """
    height, width = (int(s) for s in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be (height, width) in pixels >= 1, got {tuple(size)}")
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim < 2:
        raise ValueError(f"maps must be [..., gh, gw], got shape {maps.shape}")
    gh, gw = maps.shape[-2:]
    wy = _bilinear_weights(height, gh).astype(np.float32)
    wx = _bilinear_weights(width, gw).astype(np.float32)
    out = np.einsum("hi,...ij,wj->...hw", wy, maps, wx, optimize=True)
    return out.astype(np.float32)


def as_photo(photo: ArrayLike) -> np.ndarray:
    """uint8 ``[h, w, 3]`` from a uint8 array ``[h, w]``/``[h, w, 3|4]``, a float array in [0, 1], or a PIL image.

    Raises:
      ValueError: any other shape.
    """
    a = np.asarray(photo)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"photo must be [h, w, 3] (RGB), got shape {a.shape}")
    a = a[..., :3]
    if a.dtype != np.uint8:
        a = np.clip(np.rint(np.asarray(a, np.float64) * 255.0), 0, 255).astype(np.uint8)
    return a


def check_mode(mode: str) -> None:
    """Raises ValueError unless ``mode`` is one of :data:`MODES`."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def colour_map(name: str):
    """The matplotlib colour map ``name``; ValueError (one line, with examples) if there is none."""
    try:
        return colormaps[name]
    except KeyError:
        raise ValueError(f"unknown matplotlib colour map {name!r} (e.g. jet, inferno, viridis)") from None


def overlay(
    photo: ArrayLike,
    attention_map: ArrayLike,
    *,
    mode: str = "heatmap",
    cmap: str = "jet",
    alpha: float = 0.5,
) -> np.ndarray:
    """A map laid over a photo at the photo's own size: uint8 ``[h, w, 3]``.

    Args:
      photo: uint8 ``[h, w, 3]`` (or float in [0, 1], or a PIL image).
      attention_map: ``[gh, gw]`` (resized bilinearly to ``(h, w)``) or
        already ``[h, w]``; values in [0, 1] (clipped; NaN counts as 0).
      mode: ``"heatmap"`` (``cmap`` blended over the photo:
        ``(1 - alpha) * photo + alpha * cmap(map)``) or ``"mask"`` (the
        original study's ``photo * map[..., None]``).
      cmap: a matplotlib colour map name (heatmap only).
      alpha: weight of the colour map in [0, 1] (heatmap only).

    Raises:
      ValueError: bad shapes, mode, colour map or alpha.
    """
    check_mode(mode)
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    img = as_photo(photo)
    h, w = img.shape[:2]
    m = np.asarray(attention_map, np.float32)
    if m.ndim != 2:
        raise ValueError(f"attention_map must be [gh, gw], got shape {m.shape}")
    if m.shape != (h, w):
        m = upsample_map(m, (h, w))
    m = np.clip(np.nan_to_num(m), 0.0, 1.0)
    base = img.astype(np.float32) / 255.0
    if mode == "mask":
        out = base * m[..., None]
    else:
        colours = colour_map(cmap)(m)[..., :3].astype(np.float32)
        out = (1.0 - alpha) * base + alpha * colours
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def photo_array(image, max_side: Optional[int] = None) -> np.ndarray:
    """uint8 ``[h, w, 3]`` of a PIL image (or anything :func:`vitjax.load_image` reads).

    With ``max_side``, a photo whose long side is larger is shrunk (Lanczos,
    aspect ratio kept) so figures of huge photos stay light; smaller photos
    keep their own size.

    Raises:
      ValueError: an unreadable image file.
    """
    from PIL import Image

    image = load_image(image)
    if max_side is not None and max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
        image = image.resize(size, Image.LANCZOS)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


# --------------------------------------------------------------------------- layout


def new_figure(figsize: Tuple[float, float], dpi: float = DPI) -> Figure:
    """A white ``Figure`` of ``figsize`` inches on its own Agg canvas (no pyplot)."""
    fig = Figure(figsize=figsize, dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def display_aspect(height: float, width: float) -> float:
    """The aspect ``h / w`` a ``height x width`` photo is drawn at: its own, clipped to
    ``[1 / MAX_ASPECT, MAX_ASPECT]`` (:data:`MAX_ASPECT`), so no panel is a sliver."""
    a = float(height) / max(float(width), 1e-12)
    return min(max(a, 1.0 / MAX_ASPECT), MAX_ASPECT)


def stretch_note(height: float, width: float) -> str:
    """What a figure says of a photo drawn stretched (:func:`display_aspect`): ``"drawn 250\u00d7 taller"``,
    ``"drawn 6.2\u00d7 wider"``, or ``""`` for a photo drawn at its own aspect."""
    a = float(height) / max(float(width), 1e-12)
    k = display_aspect(height, width) / a
    if max(k, 1.0 / k) < 1.05:  # less than 5 % (the rounding of a shrunk display copy): not worth a word
        return ""
    k, how = (k, "taller") if k > 1 else (1.0 / k, "wider")
    return f"drawn {k:.0f}\u00d7 {how}" if k >= 10 else f"drawn {k:.1f}\u00d7 {how}"


def at_display_aspect(photo: ArrayLike) -> np.ndarray:
    """uint8 ``[h', w', 3]``: the photo resampled (bilinear) to its :func:`display_aspect`, or unchanged
    when that is its own.

    A stretched panel then holds enough pixels along its short side to show a
    ``[gh, gw]`` map: a 20000x20 photo's 1024x1 display copy would show one row
    of the map; at 1:4 it shows them all. The long side keeps its length.
    """
    from PIL import Image

    img = as_photo(photo)
    h, w = img.shape[:2]
    a = display_aspect(h, w)
    if abs(a * w / h - 1.0) < 1e-9:
        return img
    size = (w, max(1, round(w * a))) if a > h / w else (max(1, round(h / a)), h)  # PIL: (width, height)
    return np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR), dtype=np.uint8)


def fit_box(aspect_hw: float, box: Box) -> Box:
    """Largest ``(x, y, w, h)`` of aspect ``h / w = aspect_hw`` centred in ``box`` (inches)."""
    x, y, bw, bh = box
    w = min(bw, bh / aspect_hw)
    h = w * aspect_hw
    return (x + (bw - w) / 2, y + (bh - h) / 2, w, h)


def axes_at(fig: Figure, box: Box):
    """Axes at ``(x, y, w, h)`` inches from the figure's bottom-left corner."""
    fw, fh = fig.get_size_inches()
    x, y, w, h = box
    return fig.add_axes((x / fw, y / fh, w / fw, h / fh))


def image_axes(fig: Figure, box: Box, image: np.ndarray, *, stretch: bool = False):
    """Axes at ``box`` (inches) showing ``image`` with no ticks or frame.

    With ``stretch``, the image fills ``box`` whatever its own aspect (the figures pass boxes of
    :func:`display_aspect`); otherwise it keeps square pixels and the axes shrink to fit it.
    """
    ax = axes_at(fig, box)
    ax.imshow(image, interpolation="antialiased", aspect="auto" if stretch else "equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    return ax


def colorbar(fig: Figure, box: Box, mode: str, cmap: str, *, label: str, fontsize: float = 8) -> None:
    """A vertical colour bar of [0, 1] at ``box`` (the ``"gray"`` ramp in ``"mask"`` mode).

    ``label`` runs along the bar, wrapped to the bar's height (a short bar of
    a one-row grid gets two or three lines instead of a label that runs off
    the figure's edge).
    """
    cax = axes_at(fig, box)
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap=colour_map("gray" if mode == "mask" else cmap)),
                       cax=cax)
    bar.set_ticks([0.0, 0.25, 0.5, 0.75, 1.0])
    bar.ax.tick_params(labelsize=fontsize)
    per_line = max(8, int(box[3] * 72 / (0.6 * fontsize)))  # ~0.6 em per character, wide letters included
    bar.set_label(wrap(label, per_line), fontsize=fontsize, linespacing=1.05)


def left_out_tile(fig: Figure, box: Box, photo: ArrayLike, text: str = "left out", *, fontsize: float = 8):
    """A tile that holds no result (e.g. a layer the rollout's start layer leaves out), never a blank map.

    The photo in faded grey, so the row stays recognisable, with ``text`` in
    a white box in its middle; no colour map, so it cannot be read as a map
    that is zero everywhere. Returns the axes.
    """
    grey = as_photo(photo).astype(np.float32).mean(axis=-1, keepdims=True)
    faded = np.repeat(np.rint(0.25 * grey + 0.75 * 205.0), 3, axis=-1).astype(np.uint8)
    ax = image_axes(fig, box, faded, stretch=True)
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=fontsize, color="#333333", transform=ax.transAxes,
            bbox=dict(boxstyle="round,pad=0.3", facecolor="white", edgecolor="#999999", linewidth=0.5))
    return ax


def mark_patches(ax, mask: ArrayLike, size_hw: Tuple[int, int], marker: str = "square") -> int:
    """Marks the patches where ``mask [gh, gw]`` is True on an image of ``size_hw`` pixels.

    ``marker="square"`` outlines each patch (high-norm tokens, ``\u25a1``);
    ``"circle"`` draws a ring around it, a circle on the page (whatever the
    photo's aspect, the patch's shape or a stretched panel) 1.5 times the
    patch's longer side across, so the map under the patch stays visible
    (attention sinks, ``\u25cb``).
    Either is white with a thin black edge, visible on dark and light photos
    alike. Two patches (black, then white) per marked patch. Returns the number
    of patches marked.

    Raises:
      ValueError: an unknown ``marker``, or ``mask`` not ``[gh, gw]``.
    """
    if marker not in ("square", "circle"):
        raise ValueError(f"marker must be 'square' or 'circle', got {marker!r}")
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be [gh, gw], got shape {mask.shape}")
    h, w = size_hw
    gh, gw = mask.shape
    ph, pw = h / gh, w / gw
    # data units (photo pixels) per inch on the page along x and y: equal for square pixels, not on a stretched
    # panel; the ring is an Ellipse in data units that is a circle on the page
    ux, uy = _data_per_inch(ax)
    d_in = 1.5 * max(pw / ux, ph / uy)
    for i, j in zip(*np.nonzero(mask), strict=True):
        x, y = j * pw - 0.5, i * ph - 0.5  # imshow puts pixel centres on integers
        for colour, width in (("black", 2.4), ("white", 1.2)):
            if marker == "square":
                ax.add_patch(Rectangle((x, y), pw, ph, fill=False, edgecolor=colour, linewidth=width))
            else:
                ax.add_patch(Ellipse((x + pw / 2, y + ph / 2), d_in * ux, d_in * uy, fill=False, edgecolor=colour,
                                     linewidth=width))
    return int(mask.sum())


def _data_per_inch(ax) -> Tuple[float, float]:
    """Data units per inch of ``ax`` on its figure along x and y, where it is drawn (its aspect applied)."""
    ax.apply_aspect()
    fw, fh = ax.figure.get_size_inches()
    pos = ax.get_position()
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    return abs(x1 - x0) / max(pos.width * fw, 1e-12), abs(y1 - y0) / max(pos.height * fh, 1e-12)


def mark_tokens(ax, outliers: Optional[ArrayLike], sinks: Optional[ArrayLike], size_hw: Tuple[int, int]) -> None:
    """High-norm patches outlined (``outliers``, squares) and attention sinks ringed (``sinks``, circles) on one map.

    Either mask ``[gh, gw]`` bool may be None (see :func:`mark_patches`).
    """
    if outliers is not None:
        mark_patches(ax, outliers, size_hw)
    if sinks is not None:
        mark_patches(ax, sinks, size_hw, marker="circle")


# --------------------------------------------------------------------------- text


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the last one "…" where cut."""
    text = str(text)
    return text if len(text) <= limit else text[: max(1, limit - 1)] + "\u2026"


def wrap(text: str, width: int, lines: Optional[int] = None) -> str:
    """``text`` wrapped at ``width`` characters; with ``lines``, at most that many, "…" where cut.

    Breaks at spaces and after a ``/`` (paths), never at a hyphen
    (``all-terrain_bike`` stays whole), inside a word only when it is longer
    than a line. No line is left holding a lone short token (``"1)"``, ``"out"``):
    a short number stays with the word before it (``"layer 1)"``, ``"head 6's"``),
    and the lines are balanced: the narrowest width that needs no more lines than
    ``width`` does, so the last line is as full as the others.
    """
    width = max(1, int(width))
    glued = _GLUE_SIGN.sub("\\1\u00a0", _GLUE_NEXT.sub("\\1\u00a0", _GLUE.sub("\u00a0", str(text))))
    # a joined unit longer than a line would be cut inside a word: it is not joined
    glued = " ".join(w if len(w) <= width else w.replace("\u00a0", " ") for w in glued.split(" "))
    glued = glued.replace("/", "/ ")  # textwrap breaks at ASCII whitespace only: a no-break space joins

    def greedy(w: int) -> List[str]:
        return textwrap.wrap(glued, width=w, break_long_words=True, break_on_hyphens=False) or [""]

    parts = greedy(width)
    if len(parts) > 1 and (lines is None or len(parts) <= lines):
        # the greedy line count only grows as the width shrinks: bisect the narrowest width, never narrower than
        # the longest word (balancing must not break a word that fits a line)
        lo, hi = min(width, max(len(word) for word in glued.split(" "))), width  # " ": a no-break space joins
        while lo < hi:
            mid = (lo + hi) // 2
            if len(greedy(mid)) <= len(parts):
                hi = mid
            else:
                lo = mid + 1
        parts = greedy(lo)
    parts = [p.replace("/ ", "/").replace("\u00a0", " ") for p in parts]
    if lines is not None and len(parts) > lines:
        parts = parts[:lines]
        parts[-1] = parts[-1][: max(1, width - 1)].rstrip() + "\u2026"
    return "\n".join(parts)


# a space between a word and a short token that starts with a digit ("layer 1)", "12;", "head 6's"), and after a
# count that opens a clause ("; 1 more") or a lone sign and what it applies to ("> 25%"): never a line break
_GLUE = re.compile(r"(?<=[^\W_]) (?=\d\S{0,3}(?:\s|$))")
_GLUE_NEXT = re.compile(r"((?:^|[;:,(]\s)\d{1,4}) (?=\S)")
_GLUE_SIGN = re.compile(r"((?:^|\s)[<>=~\u2248\u2264\u2265]) (?=\S)")


def layer_span(first: int, last: int) -> str:
    """Layers ``first..last`` (1-based) as text: ``"layer 3"``, ``"layers 2\u20135"``."""
    return f"layer {int(first)}" if int(first) == int(last) else f"layers {int(first)}\u2013{int(last)}"


def note_title(title: str, note: Optional[str], width_in: float) -> Tuple[str, dict]:
    """``(text, keywords)`` for ``ax.set_title``: ``title``, then each line of ``note``, wrapped to ``width_in``
    inches (at 8 pt; ``title`` alone at 10 pt); 10 pt without a note, 9 pt up to three lines, 8 pt beyond."""
    if not note:
        return wrap(title, int(width_in * 72 / (0.55 * 10))), {"fontsize": 10}
    lines = [wrap(line, int(width_in * 72 / (0.55 * 8))) for line in [title] + str(note).split("\n")]
    text = "\n".join(lines)
    return text, {"fontsize": 9 if text.count("\n") < 3 else 8, "linespacing": 1.1}


# --------------------------------------------------------------------------- provenance and axes


#: The :class:`vitjax.RolloutOptions` fields a footer can name, in the order it names them.
def probability_axis(pmax: float) -> float:
    """Upper end of a probability axis that fits ``pmax`` with room for its value.

    The smallest of 1, 2, 2.5, 5 x 10^n at or above ``1.25 * pmax``, at most 1:
    a top-1 of 0.003 gets an axis to 0.005, not a bar hidden on a 0-1 axis.
    """
    target = max(float(pmax), 1e-12) * 1.25
    if target >= 1.0:
        return 1.0
    e = math.floor(math.log10(target))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * 10.0**e >= target * (1 - 1e-9):
            return min(1.0, m * 10.0**e)
    return 1.0


def probability_text(p: float) -> str:
    """A probability as text: 3 decimals, or 2 significant digits in scientific form below 0.001."""
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


# --------------------------------------------------------------------------- output


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes, at its own size and dpi (``IPython.display.Image(data=...)``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, facecolor="white")
    return buf.getvalue()


def save_figure(fig: Figure, path: Union[str, os.PathLike], *, overwrite: bool = False) -> Path:
    """Writes ``fig`` as a PNG at ``path``, atomically (:func:`vitjax.io.write_atomic`), at its own size and dpi.

    Args:
      overwrite: replace an existing file; otherwise refuse it.

    Returns:
      ``path`` as a :class:`pathlib.Path`.

    Raises:
      FileExistsError: ``path`` exists and ``overwrite`` is False.
      OSError: the folder is missing or not writable.
    """
    return write_atomic(Path(path), figure_png(fig), overwrite=overwrite)
