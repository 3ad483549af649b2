"""The visualize run: gather images -> padded batches -> maps -> figures, predictions.tsv and the maps file.

:func:`run` is what ``scripts/visualize.py`` (:mod:`vitjax.cli.visualize`) calls once the
arguments are parsed; it is also usable from Python::

    items = gather_images(["photos/"])
    result = run(model, params, items, make_run_dir("out"), RunSettings(checkpoint="ViT-B_16-224.npz"))

Batches come from :func:`vitjax.data.batching.padded_batches` (fixed size, so the
jitted maps compile once; loading runs ahead in threads). Every file goes
through :func:`vitjax.io.write_atomic`. Output honesty: images are numbered by
the order in which they were *processed* (unreadable ones are skipped and
listed, and leave no gap), each figure's first panel gives the photo's real
size, every figure carries :func:`vitjax.viz.figures.provenance` (checkpoint,
rollout options, matmul precision), a model whose head cannot predict
(headless, or all-zero as in Google's ImageNet-21k files) shows
:data:`vitjax.data.labels.NO_HEAD` instead of predictions and its last layer's
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

import jax.numpy as jnp
import numpy as np

from vitjax.attribution import methods
from vitjax.attribution.class_maps import class_maps
from vitjax.attribution.diagnostics import OUTLIER_RATIO, SINK_SHARE, sink_layers
from vitjax.attribution.maps import MAP_KEYS, compute_maps
from vitjax.attribution.options import RolloutOptions
from vitjax.checkpoints.hub import checkpoint_label
from vitjax.checkpoints.load import checkpoint_sha256, head_is_zero
from vitjax.data.batching import padded_batches
from vitjax.data.datasets import ImageItem
from vitjax.data.images import load_image, preprocess
from vitjax.data.labels import NO_HEAD, class_label, topk
from vitjax.errors import NonFiniteError, one_line, printable
from vitjax.io import save_maps, write_atomic
from vitjax.model.forward import non_finite_reason
from vitjax.version import __version__
from vitjax.viz import drawing, explorer, figures, interpret, notes

__all__ = ["RunResult", "RunSettings", "make_run_dir", "run", "safe_name"]


def safe_name(text: str, limit: int = 60) -> str:
    """A file-name stem from a display name: extension dropped, other characters than ``A-Za-z0-9._-`` -> ``_``."""
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", text)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"
    return stem[:limit]


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


# what the --method lens / head-importance figures show, for their footers (no rollout option applies);
# keyed by (method, the model has a trained head)
_ANALYSIS = {("lens", True): "logit lens: each depth's tokens read through the final LayerNorm and the head",
             ("lens", False): "feature lens: each depth's class token through the final LayerNorm, its cosine to "
                              "the final features",
             ("head-importance", True): "head importance: each head's output (hook_z) zeroed alone, all "
                                        "L\u00d7H ablations; the target logit's change from the clean run",
             ("head-importance", False): "head importance: each head's output (hook_z) zeroed alone, all "
                                         "L\u00d7H ablations; the features' cosine to the clean run's, minus 1"}


@dataclass(frozen=True)
class RunSettings:
    """Everything a run needs besides the model, the images and the folder (the CLI's options).

    Attributes:
      checkpoint: the checkpoint as the user named it (for metadata); checkpoint_path: its file
        (for its name and SHA-256 in the figures and metadata).
      method: what the grid shows: a name of :mod:`vitjax.attribution.methods`.
      layer: the layer of ``method="heads"``, 0-based (negative from the end).
      options: the one :class:`vitjax.RolloutOptions` of the run.
      precision: the model's matmul precision, recorded in figures and metadata.
      target: class explained by a class-specific method (None: each image's top-1).
      resize: the preprocessing resize (see :func:`vitjax.preprocess`).
      mode, cmap, alpha, dpi: figure style (see :func:`vitjax.viz.figures.overlay`).
      html: write ``explorer.html`` (:mod:`vitjax.viz.explorer`) with these page options; None: no page.
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
    html: Optional[explorer.PageOptions] = None
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
      NonFiniteError (a ValueError): the model's output is not finite (NaN/inf) for every image that
        could be loaded (one line naming the checkpoint; nothing drawn). An image where only some
        are so is skipped with that reason, as an unreadable one.
      OSError: an output that cannot be written.
    """
    from tqdm import tqdm

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


# --------------------------------------------------------------------------- the loop

# random_weights: "true" for a checkpoint of random weights (ViTConfig.random_weights), whose predictions mean nothing
_TSV_HEADER = "image\ttrue_class\trank\tclass_index\tclass_name\tprobability\trandom_weights"


def _reason(item: ImageItem, why: str) -> str:
    """The skip reason without the path (the message's prefix, or quoted inside it): the list names it once."""
    why = one_line(why)
    for prefix in (str(item.path), item.path.name):
        if why.startswith(prefix + ": "):
            why = why[len(prefix) + 2:]
            break
    for quoted in (f" '{item.path}'", f' "{item.path}"', f" {item.path}"):  # e.g. PIL's own message
        why = why.replace(quoted, "")
    return why


def _sink_peak(by_layer: Optional[np.ndarray], rollout: np.ndarray, start_layer: int) -> Optional[int]:
    """The last layer (1-based) of the rollout whose attention sink is the rollout's peak patch, or None.

    ``by_layer`` ``[L, gh, gw]`` bool (:func:`vitjax.attribution.diagnostics.sink_layers`), ``rollout``
    ``[gh, gw]``; only the layers the rollout multiplies (from ``start_layer``, 0-based) count.
    """
    if by_layer is None:
        return None
    i, j = np.unravel_index(int(np.argmax(np.nan_to_num(rollout, nan=-np.inf))), rollout.shape)
    kept = [int(k) for k in np.nonzero(by_layer[:, i, j])[0] if k >= start_layer]
    return kept[-1] + 1 if kept else None


class Runner:
    """One run's state; :meth:`run` does the work (see :func:`vitjax.viz.run.run`)."""

    def __init__(self, model, params, items: Sequence[ImageItem], run_dir: Path, settings: RunSettings,
                 out: Callable[[str], None], err: Callable[[str], None]):
        s = self.s = settings
        cfg = self.cfg = model.config
        self.model, self.params, self.items, self.run_dir, self.out, self.err = model, params, items, run_dir, out, err
        method = methods.get(s.method)
        self.head = "none" if cfg.num_classes is None else ("zero" if head_is_zero(params) else "trained")
        self.explains = method.needs_head
        self.analysis = None if method.gives_maps else method.kind  # "lens" / "importance": their own figures
        if self.explains and self.head != "trained":
            raise ValueError(f"method {s.method!r} explains a class, but the model has "
                             f"{'no classification head' if self.head == 'none' else NO_HEAD}; use "
                             f"{', '.join(methods.names('attention'))}")
        if not -cfg.num_layers <= s.layer < cfg.num_layers:
            raise ValueError(f"layer must be in [{-cfg.num_layers}, {cfg.num_layers - 1}] (0-based), got {s.layer}")
        self.layer0 = s.layer % cfg.num_layers
        self.sha256 = checkpoint_sha256(s.checkpoint_path) if s.checkpoint_path else None  # sharded: index + shards
        name = self.ckpt_name = checkpoint_label(s.checkpoint_path, s.checkpoint)  # hf-hub:org/name@commit in a cache

        def footer(*maps: Tuple[str, str]) -> str:  # (panel, method): each panel names the options its map uses
            return notes.provenance(name, s.options, s.precision, sha256=self.sha256, input_size=cfg.image_size,
                                    grid=cfg.grid, maps=[(panel, methods.get(m).options) for panel, m in maps],
                                    random_weights=self.random)

        self.random = bool(getattr(cfg, "random_weights", False))  # a vitjax-synthetic file: every output says so

        start = s.options.start_layer
        self.span = drawing.layer_span(start + 1, cfg.num_layers)  # the layers the rollout multiplies
        self.left_out = f"{drawing.layer_span(1, start)} left out: --start-layer {start}" if start else ""
        joint = ("joint map", "rollout") if not self.explains else (f"{s.method} map", s.method)
        heads = [("head maps", "heads")] if self.head != "trained" else []
        self.footers = {"summary": footer(joint, *heads),
                        "grid": footer(*{"cumulative": [("rollout", "rollout")],
                                         "layer": [("each layer's map", "layer")],
                                         "heads": [("head maps", "heads")],
                                         "rollout": [("rollout", "rollout")]}.get(
                                             s.method, [("rollout", "rollout"), (s.method, s.method)])),
                        "analysis": " \u00b7 ".join([footer(), _ANALYSIS.get((s.method, self.head == "trained"),
                                                                               s.method)])}
        self.importance: List[np.ndarray] = []  # --method head-importance: each image's [L, H], for the run's figure
        self.style = dict(mode=s.mode, cmap=s.cmap, alpha=s.alpha, dpi=s.dpi,
                          banner=notes.RANDOM_BANNER if self.random else None)
        self.width = max(3, len(str(len(items))))
        self.result = RunResult()
        self.tsv = [_TSV_HEADER]
        self.kept: Dict[str, list] = {}
        self.meta: Dict[str, list] = {"sizes": [], "outliers": [], "sinks": [], "sink_layers": [], "targets": []}
        self.page: List[Tuple[np.ndarray, np.ndarray, str, Optional[np.ndarray], Optional[np.ndarray],
                              Tuple[int, int]]] = []  # (photo, maps, label, outliers, sinks per tile, real size)
        self.pages = 0
        self.non_finite: List[Tuple[ImageItem, Tuple[str, ...]]] = []  # (item, what was NaN/inf): no figure
        self.said_no_head = False  # "no classification head" is said once per run, not once per image
        self.page_peaks: List[Optional[int]] = []  # per grid row: the layer-k sink its rollout peaks on (k), or None
        self.explorer = None if s.html is None else explorer.for_run(cfg, s, head=self.head, sha256=self.sha256,
                                                                     checkpoint_name=self.ckpt_name)

    # ------------------------------------------------------------------ loading and maps

    def _load(self, item: ImageItem):
        x = preprocess(item.path, self.cfg, resize=self.s.resize)
        image = load_image(item.path)
        summary = drawing.photo_array(image, max(1024, int(9 * self.s.dpi))) if self.s.summary else None
        thumb = drawing.photo_array(image, max(256, int(3 * self.s.dpi))) if self.s.grid else None
        return x, (summary, thumb, (image.height, image.width))

    def _maps(self, images: np.ndarray, valid: np.ndarray) -> Tuple[Dict[str, np.ndarray], Dict[int, tuple]]:
        """The batch's maps and ``{row: what was not finite}`` for its valid rows (NaN/inf: no figure)."""
        x, bad = jnp.asarray(images), {}
        try:
            out = compute_maps(self.model, self.params, x, self.s.options, lean=self.s.lean, valid=valid,
                               keep_attention=self.explorer is not None)
        except NonFiniteError as e:
            out, bad = e.result, dict(e.what)
        maps = {k: np.asarray(v) for k, v in out.items() if k != "attention"}
        if self.explains:
            try:
                cm, _ = class_maps(self.model, self.params, x, method=self.s.method, target=self.s.target,
                                   options=self.s.options, valid=valid)
            except NonFiniteError as e:
                cm = e.result[0]
                bad = {r: bad.get(r, ()) + tuple(k for k in e.what.get(r, ()) if k not in bad.get(r, ()))
                       for r in set(bad) | set(e.what)}
            maps["class"] = np.asarray(cm)
        if self.analysis is not None:
            try:
                maps.update(interpret.analysis_arrays(self.model, self.params, x, kind=self.analysis,
                                                      trained_head=self.head == "trained", target=self.s.target,
                                                      valid=valid))
            except NonFiniteError as e:  # NaN/inf in the lens: those rows get no figure, the others do
                if not isinstance(e.result, dict):
                    raise
                maps.update(e.result)
                bad = {r: bad.get(r, ()) + tuple(k for k in e.what.get(r, ()) if k not in bad.get(r, ()))
                       for r in set(bad) | set(e.what)}
        if self.explorer is not None:  # the page's rows, quantised per batch on the device
            maps.update(self.explorer.pack_batch(out, class_map=maps.get("class"), images=x, model=self.model,
                                                 params=self.params))
        return maps, bad

    # ------------------------------------------------------------------ the loop

    def run(self, advance: Callable[[int], object]) -> RunResult:
        s, items = self.s, self.items
        batch = max(1, min(s.batch_size, len(items)))
        shape = tuple(self.cfg.image_size) + (3,)
        for b in padded_batches(items, self._load, batch, shape=shape):
            for item, why in b.failed:
                reason = _reason(item, why)
                self.result.skipped.append((item, reason))
                self.err(f"warning: skipped {printable(item.path)}: {printable(reason)}")
            if b.count:
                maps, bad = self._maps(b.images, b.valid)
                idx, prob = (topk(maps["logits"], s.topk) if self.head == "trained"
                             else (np.zeros((batch, 0), np.int32), np.zeros((batch, 0), np.float32)))
                for row, item, extra in b.loaded():
                    if row in bad:  # NaN/inf: never drawn nor listed as a prediction
                        self._non_finite(item, bad[row])
                    else:
                        self._image(item, extra, {k: v[row] for k, v in maps.items()}, idx[row], prob[row])
            advance(len(b.items))
        self._flush_grid()
        if self.importance:  # the run's head importance: mean and spread over its images
            self._importance_figure()
        if self.non_finite and not self.result.processed:  # the model gives no usable number: one line
            raise NonFiniteError(non_finite_reason([k for _, w in self.non_finite for k in w], self.ckpt_name,
                                                   images=len(self.non_finite)))
        if self.result.processed:
            self.result.written.append(write_atomic(self.run_dir / "predictions.tsv",
                                                    ("\n".join(self.tsv) + "\n").encode("utf-8"),
                                                    overwrite=s.overwrite))
            if s.save_maps:
                self.result.maps_file = self._save_maps()
                self.result.written.append(self.result.maps_file)
            if self.explorer is not None:
                self.result.written.append(self.explorer.write(self.run_dir / "explorer.html", overwrite=s.overwrite))
        return self.result

    def _non_finite(self, item: ImageItem, what: Tuple[str, ...]) -> None:
        """Skips an image whose outputs are not finite; warns once an image has worked (else the run's one line)."""
        self.non_finite.append((item, what))
        reason = non_finite_reason(what, self.ckpt_name)
        self.result.skipped.append((item, reason))
        if self.result.processed:
            self.err(f"warning: skipped {printable(item.path)}: {printable(reason)}")

    def _image(self, item: ImageItem, extra, maps: Dict[str, np.ndarray], idx, prob) -> None:
        s = self.s
        summary_photo, thumb, size = extra
        number = len(self.result.processed) + 1  # numbered as processed: skipped images leave no gap
        labels = [class_label(c, s.names) for c in idx]
        lines = [printable(item.display) + (f"  (true class: {printable(item.true_class)})" if item.true_class else "")
                 + (f"  [{notes.RANDOM_CONSOLE}]" if self.random else "")]
        random = "true" if self.random else "false"
        if self.head != "trained":
            if not self.said_no_head:
                lines.insert(0, f"{notes.NO_PREDICTIONS[self.head]}: no predictions for any image")
                self.said_no_head = True
            self.tsv.append("\t".join([str(item.path), item.true_class or "", "", "", notes.NO_PREDICTIONS[self.head],
                                       "", random]))
        for r, (c, p, name) in enumerate(zip(idx, prob, labels, strict=True), 1):
            lines.append(f"  {r:2d}. {p:.4f}  {name if s.names is None else f'{name} ({c})'}")
            self.tsv.append("\t".join([str(item.path), item.true_class or "", str(r), str(int(c)),
                                       name.replace("\t", " "), f"{p:.6f}", random]))
        self.out("\n".join(lines))

        # each mark and note sits on the map it is about: the summary shows the rollout, or the class map
        shown = maps["class"] if self.explains else maps["rollout"]
        mask, note = notes.outlier_note(maps["token_norms"], shown, map_name=f"{s.method} map" if self.explains
                                        else "rollout") if "token_norms" in maps else (None, None)
        sinks, sink_text, by_layer, head_sinks = None, None, None, None
        if "received_heads" in maps:  # sinks of the layers the rollout multiplies, and the sentence for each ring
            sinks, sink_text = notes.sink_note(maps["received_heads"], maps["rollout"],
                                               start_layer=s.options.start_layer)
            by_layer = sink_layers(maps["received_heads"])  # [L, gh, gw]
            head_sinks = sink_layers(maps["received_heads"][:, :, None])  # [L, H, gh, gw]: each head's own
        # a class map is not the rollout: no rollout rings or sink note on it (the grid's rollout column has them)
        note = "\n".join(t for t in (note, None if self.explains else sink_text) if t) or None
        target = None
        if self.explains:
            target = int(idx[0]) if s.target is None else int(s.target)
            self.meta["targets"].append(target)
        top1 = f"{labels[0]} ({prob[0]:.3f})" if labels else ""
        if self.analysis is not None:
            self._analysis_figure(item, summary_photo, maps, labels, prob, number)
        if s.summary and self.analysis is None:
            no_top1 = notes.NO_PREDICTIONS.get(self.head, "").split(" (")[0]
            title = f"{item.display}   " + (f"top-1: {top1}" if top1 else no_top1)
            if item.true_class:
                title += f"   true class: {item.true_class}"
            joint, map_title = maps["rollout"], "joint attention (rollout)"
            if s.options.start_layer:
                map_title = f"joint attention (rollout of {self.span}; {self.left_out})"
            if self.explains:
                joint, map_title = maps["class"], f"{s.method} map of class {class_label(target, s.names)}"
            fig = figures.summary_figure(
                summary_photo, joint, labels=labels or None, probs=prob if labels else None,
                head_maps=maps["heads"][-1] if self.head != "trained" else None,
                heads_title=f"layer {self.cfg.num_layers} of {self.cfg.num_layers}: each head's class-token "
                            "attention",
                no_predictions=notes.NO_PREDICTIONS.get(self.head, ""), outliers=mask,
                sinks=None if self.explains else sinks, head_sinks=None if head_sinks is None else head_sinks[-1],
                note=note,
                original_size=size, title=title, footer=self.footers["summary"], map_title=map_title,
                quantity=methods.get(s.method).quantity, **self.style)
            name = f"{number:0{self.width}d}-{safe_name(item.display)}.png"
            self.result.written.append(drawing.save_figure(fig, self.run_dir / name, overwrite=s.overwrite))
        if s.grid and self.analysis is None:
            grid_maps = {"layer": lambda: maps["layer"], "cumulative": lambda: maps["cumulative"],
                         "heads": lambda: maps["heads"][self.layer0], "rollout": lambda: maps["rollout"][None]}
            gm = grid_maps[s.method]() if not self.explains else np.stack([maps["rollout"], maps["class"]])
            label = item.display + (f"\ntop-1 {prob[0]:.3f}: {labels[0]}" if labels else f"\n{NO_HEAD}"
                                    if self.head == "zero" else "")
            tiles = sinks  # per row: [gh, gw] for every tile, or one mask per tile ringing the sinks its map includes
            if by_layer is None:
                tiles = None
            elif s.method in ("layer", "cumulative"):
                tiles = figures.tile_sinks(by_layer, s.method, s.options.start_layer)
            elif s.method == "heads":
                tiles = head_sinks[self.layer0]
            elif self.explains and sinks is not None:  # the rollout column only
                tiles = np.stack([sinks, np.zeros_like(sinks)])
            self.page.append((thumb, gm, label, mask, tiles, size))
            self.page_peaks.append(_sink_peak(by_layer, maps["rollout"], s.options.start_layer))
            if len(self.page) >= s.grid_rows:
                self._flush_grid()
        self.result.processed.append(item)
        if self.explorer is not None:
            self.explorer.add(maps, summary_photo if summary_photo is not None else item.path, name=item.display,
                              true_class=item.true_class, topk=(idx, prob), original_size=size, target=target)
        self.meta["sizes"].append(list(size))
        self.meta["outliers"].append(int(mask.sum()) if mask is not None else 0)
        self.meta["sinks"].append(int(by_layer.any(axis=0).sum()) if by_layer is not None else 0)  # of every layer
        if by_layer is not None:
            self.meta["sink_layers"].append([int(k) + 1 for k in np.nonzero(by_layer.any(axis=(1, 2)))[0]])
        if s.save_maps:
            names = tuple(k for k in MAP_KEYS if k != "heads") + ("class",)  # heads: only the chosen layer, below
            keep = {k: maps[k] for k in names if k in maps}
            keep.update(heads=maps["heads"][self.layer0], topk_indices=np.asarray(idx, np.int32),
                        topk_probs=np.asarray(prob, np.float32))
            for k, v in keep.items():
                self.kept.setdefault(k, []).append(v)

    def _analysis_figure(self, item: ImageItem, photo, maps: Dict[str, np.ndarray], labels, prob, number: int) -> None:
        """--method lens / head-importance: the per-image figure (:mod:`vitjax.viz.interpret`) instead of the maps."""
        s = self.s
        title = f"{item.display}   " + (f"top-1: {labels[0]} ({prob[0]:.3f})" if labels else
                                       notes.NO_PREDICTIONS.get(self.head, "").split(" (")[0])
        style = dict(dpi=s.dpi, banner=self.style.get("banner"), footer=self.footers["analysis"], title=title)
        if "importance" in maps:
            self.importance.append(maps["importance"])
            if not s.summary:
                return
            fig = interpret.importance_figure(maps["importance"], quantity=self._importance_quantity(),
                                              photo=photo, **style)
        elif not s.summary:
            return
        elif "lens_logits" in maps:
            names = [class_label(c, s.names) for c in range(maps["lens_logits"].shape[-1])]
            fig = interpret.lens_figure(photo, maps["lens_logits"], maps["lens_maps"], labels=names, k=s.topk,
                                        map_label=f"logit of {names[int(maps['lens_target'])]}", mode=s.mode,
                                        cmap=s.cmap, alpha=s.alpha, **style)
        else:
            fig = interpret.feature_lens_figure(photo, maps["feature_lens"], **style)
        name = f"{number:0{self.width}d}-{safe_name(item.display)}-{s.method}.png"
        self.result.written.append(drawing.save_figure(fig, self.run_dir / name, overwrite=s.overwrite))

    def _importance_quantity(self) -> str:
        if self.head == "trained":
            return ("logit of " + ("the top-1 class" if self.s.target is None else f"class {self.s.target}")
                    + ": ablated − clean")
        return "cosine(ablated, clean features) − 1"

    def _importance_figure(self) -> None:
        table = np.stack(self.importance)  # [n, L, H]
        n = table.shape[0]
        fig = interpret.importance_figure(
            table.mean(axis=0), spread=table.std(axis=0) if n > 1 else None, quantity=self._importance_quantity(),
            title=f"head importance, mean over {n} image{'s' if n != 1 else ''}" + (" (± std)" if n > 1 else ""),
            footer=self.footers["analysis"], dpi=self.s.dpi, banner=self.style.get("banner"))
        self.result.written.append(drawing.save_figure(fig, self.run_dir / "head-importance-run.png",
                                                       overwrite=self.s.overwrite))

    def _flush_grid(self) -> None:
        if not self.page:
            return
        s, cfg = self.s, self.cfg
        self.pages += 1
        photos, maps, labels, masks, sinks, sizes = (list(t) for t in zip(*self.page, strict=True))
        self.page.clear()
        style = dict(self.style)
        collapse = self._collapse_note(len(photos))
        if collapse:  # most rows' rollout is one sink patch and flat blue elsewhere: the title area and console say so
            style["banner"] = " \u00b7 ".join(t for t in (style.get("banner"), collapse) if t)
            self.err(f"warning: grid page {self.pages}: {collapse}")
        kw = dict(row_labels=labels, footer=self.footers["grid"], outliers=masks, sinks=sinks, original_sizes=sizes,
                  **style)
        start = s.options.start_layer
        if s.method in ("layer", "cumulative"):
            fig = figures.layer_grid(photos, maps, method=s.method, start_layer=start,
                                      start_flag=f"--start-layer {start}", **kw)
            name = f"grid-{s.method}-{self.pages:02d}.png"
        elif s.method == "heads":
            fig = figures.head_grid(photos, maps, layer=self.layer0, num_layers=cfg.num_layers, **kw)
            name = f"grid-heads-layer{self.layer0 + 1}-{self.pages:02d}.png"
        elif s.method == "rollout":
            title = f"Joint attention (rollout of {self.span}; {self.left_out})" if start else None
            fig = figures.rollout_grid(photos, [m[0] for m in maps], title=title, **kw)
            name = f"grid-rollout-{self.pages:02d}.png"
        else:
            quantity = methods.get(s.method).quantity
            fig = figures.map_grid(photos, maps, column_titles=["original", f"rollout ({self.span})" if start
                                                                 else "rollout", s.method],
                                    title=f"Joint attention and the class-specific {s.method} map",
                                    quantity="attention" if quantity == "attention" else
                                    f"rollout attention, {quantity}", **kw)
            name = f"grid-{s.method}-{self.pages:02d}.png"
        self.result.written.append(drawing.save_figure(fig, self.run_dir / name, overwrite=s.overwrite))

    def _collapse_note(self, rows: int) -> Optional[str]:
        """When the rollout of most of a page's rows peaks on an attention sink: the sentence naming the layer and
        the ``--start-layer`` that leaves it out (grids that show the rollout only); else None."""
        peaks, self.page_peaks = self.page_peaks[:rows], self.page_peaks[rows:]
        shows_rollout = self.s.method in ("cumulative", "rollout") or self.explains
        hit = [k for k in peaks if k is not None]
        if not shows_rollout or not rows or 2 * len(hit) <= rows:
            return None
        layer = max(set(hit), key=hit.count)  # the sink most rows peak on
        remedy = (f"; --start-layer {layer} leaves {drawing.layer_span(1, layer)} out" if layer < self.cfg.num_layers
                  else "")
        return (f"the rollout of {len(hit)} of {rows} images peaks on an attention sink of layer {layer} and is flat "
                f"elsewhere{remedy}")

    # ------------------------------------------------------------------ the maps file

    def _save_maps(self) -> Path:
        s, cfg, done = self.s, self.cfg, self.result.processed
        arrays = {k: np.stack(v) for k, v in self.kept.items()}
        arrays["topk_indices"] = arrays["topk_indices"].astype(np.int32).reshape(len(done), -1)
        arrays["topk_probs"] = arrays["topk_probs"].astype(np.float32).reshape(len(done), -1)
        metadata = {
            "vitjax_version": __version__,
            "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "images": [os.path.abspath(item.path) for item in done],
            "display_names": [item.display for item in done],
            "true_classes": [item.true_class for item in done],
            "original_sizes": self.meta["sizes"],
            "grid": list(cfg.grid),
            "image_size": list(cfg.image_size),
            "num_layers": cfg.num_layers,
            "num_heads": cfg.num_heads,
            "num_classes": cfg.num_classes,
            "head": {"trained": "trained", "zero": NO_HEAD, "none": "none"}[self.head],
            "method": s.method,
            "heads_layer": self.layer0 + 1,
            "options": s.options.to_dict(),
            "precision": s.precision,
            "dtype": s.dtype,
            "lean": s.lean,
            "resize": s.resize,
            "run": {"topk": s.topk, "labels": s.labels, "overlay": s.mode},
            "outlier_ratio": OUTLIER_RATIO,
            "outlier_counts": self.meta["outliers"],
            "sink_share": SINK_SHARE,
            "sink_counts": self.meta["sinks"],
            "sink_layers": self.meta["sink_layers"],
            "topk_labels": [[class_label(c, s.names) for c in row] for row in arrays["topk_indices"]],
            "checkpoint": s.checkpoint,
            "checkpoint_path": os.path.abspath(s.checkpoint_path) if s.checkpoint_path else None,
            "checkpoint_sha256": self.sha256,
            "layer_numbering": "arrays index layers from 0; heads_layer, sink_layers and figure titles count from 1",
        }
        if self.explains:
            metadata["class_targets"] = self.meta["targets"]
            arrays["class_maps"] = arrays.pop("class")
        return save_maps(self.run_dir / "maps.msgpack", arrays, metadata, overwrite=s.overwrite)
