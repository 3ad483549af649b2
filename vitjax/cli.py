"""``scripts/visualize.py`` / ``vitjax-visualize``: attention-map figures of a ViT checkpoint on photos.

For each image: the photo, its joint attention map (rollout) laid over it at
the photo's own size, and the top-k predictions; then grids with one row per
image and one column per layer (or per head). See ``main(["--help"])``.

Outputs go to a fresh folder per run, ``<out>/<YYYYmmdd-HHMMSS>/`` (``-2``,
``-3``... appended when that name is taken; ``--run-name`` chooses it), so a
run never touches another run's files; every file is written atomically.

Exit status: 0 when at least one image was processed (unreadable images are
skipped with a warning and listed at the end; ``--strict`` makes any skip an
error); 1 when no image could be processed, or a file could not be written;
2 for usage and input errors (bad option, missing checkpoint or image path,
unknown checkpoint name, bad label file), reported on one line of stderr.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["build_parser", "main", "visualize_entry"]

METHODS = ("rollout", "layer", "cumulative", "heads")
DTYPES = ("float32", "bfloat16", "float16")
SAMPLE_PHOTO = "grace_hopper.jpg"

_EXAMPLES = """\
examples:
  # Grace Hopper (matplotlib's bundled photo) with Google's ViT-B/16 fine-tuned at 384 px;
  # downloads checkpoints/imagenet21k+imagenet2012/ViT-B_16.npz (~330 MiB) on first use
  %(prog)s --ckpt ViT-B_16.npz

  # your own photos: files, folders (searched recursively) or quoted globs
  %(prog)s --ckpt ViT-B_16-224 --images cat.jpg holiday/ "shots/*.png"

  # each layer's own map instead of the cumulative rollout; the study's darkening overlay
  %(prog)s --ckpt ViT-B_16-224 --images photos/ --method layer --overlay mask

  # every head of layer 12, and the maps saved for later analysis
  %(prog)s --ckpt ViT-B_16-224 --images photos/ --method heads --layer 12 --save-maps

  # Caltech101: 2 random images per class (seeded), batches of 16, memory-lean maps
  %(prog)s --ckpt ViT-B_16-224 --caltech101 data/caltech101 --per-class 2 --seed 0 \\
      --batch-size 16 --lean

  # a local file with a custom head and its label file; rollout variants from the literature
  %(prog)s --ckpt finetuned.npz --labels classes.txt --start-layer 1 --head-fusion max \\
      --discard-ratio 0.9

outputs (in a fresh folder per run, printed at the end):
  <out>/<YYYYmmdd-HHMMSS>/NNN-<image>.png    photo | joint map | top-k predictions
  <out>/<YYYYmmdd-HHMMSS>/grid-<method>-PP.png  rows = images, columns = layers (or heads)
  <out>/<YYYYmmdd-HHMMSS>/predictions.tsv    top-k classes and probabilities
  <out>/<YYYYmmdd-HHMMSS>/maps.msgpack       with --save-maps (read with vitjax.mapsio.load_maps)

exit status: 0 = at least one image processed (unreadable ones are skipped and listed);
1 = no image processed, or an output could not be written; 2 = usage or input error.
"""


# --------------------------------------------------------------------------- argument parsing


def _checked(cast, ok, expected: str):
    """An argparse ``type``: ``cast(text)``, refused with one line unless ``ok(value)``."""

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
_nonneg_int = _checked(int, lambda v: v >= 0, "an integer >= 0")
_ratio = _checked(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
_unit = _checked(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")


def _image_size(text: str):
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX,]\s*(\d+)\s*)?", text)
    if not m or int(m.group(1)) < 1 or (m.group(2) is not None and int(m.group(2)) < 1):
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHTxWIDTH in pixels (e.g. 384, 384x512), got {text!r}")
    return int(m.group(1)) if m.group(2) is None else (int(m.group(1)), int(m.group(2)))


def _layer(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a layer number (1 = first, -1 = last), got {text!r}") from None
    if value == 0:
        raise argparse.ArgumentTypeError("layers are numbered from 1 (or -1 for the last); got 0")
    return value


_dpi = _checked(float, lambda v: 20 <= v <= 600, "dots per inch between 20 and 600")


def _run_name(text: str) -> str:
    if not text or text in (".", "..") or "/" in text or "\\" in text or text.startswith("."):
        raise argparse.ArgumentTypeError(f"expected a plain folder name (no '/', not hidden), got {text!r}")
    return text


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line (the full usage is one ``--help`` away), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The argument parser of the visualize command (``--help`` lists every option with examples)."""
    p = _Parser(
        prog=prog,
        description=(
            "Attention maps of a Vision Transformer on your photos: for each image the photo, its joint "
            "attention map (attention rollout) over it and the top-k predictions; then a grid with one row "
            "per image and one column per layer (cumulative rollout or each layer's own map) or per head."
        ),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("checkpoint")
    g.add_argument("--ckpt", metavar="PATH_OR_NAME",
                   help="(required) a Google ViT .npz file, or a known checkpoint name such as ViT-B_16.npz, "
                        "ViT-B_16-224, imagenet21k/ViT-B_32 or augreg/<name>; known names are downloaded once "
                        "into --checkpoint-dir (see --list-checkpoints)")
    g.add_argument("--checkpoint-dir", metavar="DIR", default="checkpoints",
                   help="where known checkpoints are kept, as DIR/<set>/<name>.npz (default: %(default)s)")
    g.add_argument("--no-download", action="store_true",
                   help="never download: fail if a named checkpoint is not in --checkpoint-dir yet")
    g.add_argument("--list-checkpoints", action="store_true", help="print the known checkpoint names and exit")
    g.add_argument("--image-size", metavar="SIZE", type=_image_size,
                   help="model input size, SIZE or HEIGHTxWIDTH pixels (default: the checkpoint's); the position "
                        "embedding is resampled, so 384x512 keeps a landscape photo's shape")
    g.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="compute dtype (default: %(default)s; bfloat16 is faster on TPUs and recent GPUs)")

    g = p.add_argument_group("images (default: matplotlib's bundled photo of Grace Hopper)")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--images", metavar="PATH", nargs="+",
                     help="image files, folders (searched recursively) or glob patterns (quote them)")
    src.add_argument("--caltech101", metavar="DIR",
                     help="a Caltech101 root (the folder holding 101_ObjectCategories/); the class is shown as "
                          "the true label")
    g.add_argument("--include-background", action="store_true",
                   help="with --caltech101: also use the BACKGROUND_Google clutter images")
    pick = g.add_mutually_exclusive_group()
    pick.add_argument("--per-class", metavar="K", type=_positive_int,
                      help="K random images per class (Caltech101 class, or parent folder for --images)")
    pick.add_argument("--sample", metavar="N", type=_positive_int, help="N random images in all")
    g.add_argument("--seed", metavar="S", type=_nonneg_int, default=0,
                   help="seed of --per-class / --sample (default: %(default)s); the same seed picks the same images")

    g = p.add_argument_group("attention maps")
    g.add_argument("--method", choices=METHODS, default="cumulative",
                   help="what the grid shows: 'cumulative' = joint map through layers 1..l (the original study's "
                        "per-layer figure), 'layer' = each layer's own map, 'heads' = every head of --layer, "
                        "'rollout' = the joint map only (default: %(default)s)")
    g.add_argument("--layer", metavar="L", type=_layer, default=-1,
                   help="the layer of --method heads, 1-based as in the figure titles; -1 = last (default)")
    g.add_argument("--head-fusion", choices=("mean", "max", "min"), default="mean",
                   help="how heads are fused in the rollout (default: %(default)s)")
    g.add_argument("--discard-ratio", metavar="R", type=_ratio, default=0.0,
                   help="drop this fraction of the lowest attention entries of each layer, in [0, 1) "
                        "(default: %(default)s)")
    g.add_argument("--start-layer", metavar="S", type=_nonneg_int, default=0,
                   help="leave the first S layers out of the rollout (Chefer et al. use 1; default: %(default)s)")
    g.add_argument("--no-residual", action="store_true",
                   help="do not add the identity for the residual connections (plain product of attentions)")
    g.add_argument("--lean", action="store_true",
                   help="fold each layer into the rollout inside the forward pass: same maps, memory per image "
                        "independent of layers x heads (for big models and batches)")
    g.add_argument("--batch-size", metavar="B", type=_positive_int, default=8,
                   help="images per forward pass (default: %(default)s)")

    g = p.add_argument_group("predictions")
    g.add_argument("--topk", metavar="K", type=_positive_int, default=5,
                   help="how many predictions to print and plot (default: %(default)s)")
    g.add_argument("--labels", metavar="auto|imagenet1k|imagenet21k|FILE", default="auto",
                   help="class names: 'auto' uses ImageNet names for 1000- and 21843-class heads and shows "
                        "'class N' otherwise; or a text file with one name per line (default: %(default)s)")

    g = p.add_argument_group("figures")
    g.add_argument("--overlay", choices=("heatmap", "mask"), default="heatmap",
                   help="'heatmap' blends a colour map over the photo; 'mask' darkens the photo by the map "
                        "(photo * map), as the original study did (default: %(default)s)")
    g.add_argument("--cmap", metavar="NAME", default="jet",
                   help="matplotlib colour map of the heatmap, e.g. jet, inferno, viridis (default: %(default)s)")
    g.add_argument("--alpha", metavar="A", type=_unit, default=0.5,
                   help="weight of the heatmap over the photo, in [0, 1] (default: %(default)s)")
    g.add_argument("--dpi", metavar="DPI", type=_dpi, default=100,
                   help="figure resolution (default: %(default)s; per-image figures are 16 x 5.5 inches)")
    g.add_argument("--grid-rows", metavar="N", type=_positive_int, default=8,
                   help="images per grid figure; more images make more pages (default: %(default)s)")
    g.add_argument("--no-summary", action="store_true", help="skip the per-image figures")
    g.add_argument("--no-grid", action="store_true", help="skip the grid figures")

    g = p.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", default="out",
                   help="parent folder of the run folders (default: %(default)s/)")
    g.add_argument("--run-name", metavar="NAME", type=_run_name,
                   help="name of this run's folder inside --out (default: the date and time, YYYYmmdd-HHMMSS); "
                        "an existing one is refused unless --overwrite")
    g.add_argument("--overwrite", action="store_true",
                   help="with --run-name: write into an existing run folder, replacing files of the same name")
    g.add_argument("--save-maps", action="store_true",
                   help="also write every map, the top-k and the run's metadata to maps.msgpack "
                        "(read it with vitjax.mapsio.load_maps)")

    g = p.add_argument_group("run")
    g.add_argument("--no-compile-cache", action="store_true",
                   help="do not use JAX's persistent compilation cache (default: on, in $VITJAX_CACHE_DIR or "
                        "~/.cache/vitjax/jax, so a second run skips compilation)")
    g.add_argument("--strict", action="store_true",
                   help="exit with status 1 if any image had to be skipped (default: 0 if one or more succeeded)")
    g.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar and no information lines; predictions, warnings and the output folder "
                        "are still printed")
    from vitjax import __version__

    p.add_argument("--version", action="version", version=f"vitjax {__version__}")
    return p


# --------------------------------------------------------------------------- helpers


class _UsageError(ValueError):
    """An input problem reported on one line with exit status 2."""


@dataclass(frozen=True)
class _Item:
    path: Path
    display: str  # short unique name shown in figures and printed
    true_class: Optional[str]  # Caltech101 class, if known


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _display_names(paths: Sequence[Path]) -> List[str]:
    """Short unique names: paths relative to their common folder when that is short (at most
    3 parts, e.g. ``airplanes/image_0001.jpg`` for a folder of class folders), otherwise the
    shortest unique trailing parts (``name``, then ``parent/name``...)."""
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


def _safe(text: str, limit: int = 60) -> str:
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", text)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"
    return stem[:limit]


def _gather(args) -> List[_Item]:
    from vitjax.datasets import DatasetError, ImageRecord, caltech101, image_files, sample_records

    if args.caltech101 is not None:
        try:
            records = caltech101(args.caltech101, include_background=args.include_background)
        except DatasetError as e:
            if "101_ObjectCategories" not in str(e):
                raise
            raise DatasetError(f"{e}; for a plain folder of class folders use --images DIR --per-class K") from None
    else:
        if args.include_background:
            raise _UsageError("--include-background needs --caltech101")
        if args.images:
            paths = image_files(args.images)
        else:
            import matplotlib.cbook

            paths = [Path(matplotlib.cbook.get_sample_data(SAMPLE_PHOTO, asfileobj=False))]
        records = [ImageRecord(p, None, p.parent.name, None) for p in paths]
    records = sample_records(records, per_class=args.per_class, sample=args.sample, seed=args.seed)
    if args.caltech101 is not None:
        names = [f"{r.class_name}/{r.path.name}" for r in records]
        return [_Item(r.path, n, r.class_name) for r, n in zip(records, names, strict=True)]
    names = _display_names([r.path for r in records])
    return [_Item(r.path, n, None) for r, n in zip(records, names, strict=True)]


def _make_run_dir(out: str, run_name: Optional[str], overwrite: bool) -> Path:
    root = Path(out).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _UsageError(f"{root}: cannot create the output folder ({e.strerror or e})") from None
    if run_name is not None:
        run = root / run_name
        try:
            run.mkdir()
        except FileExistsError:
            if not overwrite:
                raise _UsageError(f"{run}: run folder exists; choose another --run-name or add --overwrite") from None
            if not run.is_dir():
                raise _UsageError(f"{run}: exists and is not a folder") from None
        except OSError as e:
            raise _UsageError(f"{run}: cannot create the run folder ({e.strerror or e})") from None
        return run
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1, 10000):
        run = root / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            run.mkdir()  # atomic: two runs never get the same folder
            return run
        except FileExistsError:
            continue
        except OSError as e:
            raise _UsageError(f"{run}: cannot create the run folder ({e.strerror or e})") from None
    raise _UsageError(f"{root}: no free run folder name for {stamp}")


def _chunks(items: Sequence, size: int):
    for i in range(0, len(items), size):
        yield i, items[i : i + size]


def _label(index: int, names: Optional[Sequence[str]]) -> str:
    from vitjax.plotting import class_label

    return class_label(index, names)


# --------------------------------------------------------------------------- main


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the visualize command; returns the exit status (0 ok, 1 nothing processed, 2 usage error)."""
    parser = build_parser(prog=_prog())
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        if not args.list_checkpoints and not args.ckpt:
            parser.error("the following arguments are required: --ckpt")
    except SystemExit as e:  # argparse: --help, --version (0) and usage errors (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if args.list_checkpoints:
        from vitjax.download import KNOWN_CHECKPOINTS

        for name, url in KNOWN_CHECKPOINTS.items():
            print(f"{name}\t{url}")
        return 0
    try:
        return _run(args, parser.prog)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


def _prog() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if name == "cli.py":
        return "python -m vitjax.cli"
    usable = name and name not in ("-c", "-m", "__main__.py") and not name.startswith("pytest")
    return name if usable else "visualize.py"


def visualize_entry() -> None:
    """Console-script entry point (``vitjax-visualize``)."""
    sys.exit(main(sys.argv[1:]))


def _run(args, prog: str) -> int:
    def fail(e: BaseException) -> int:
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return 2

    def info(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr)

    # Everything that can be checked before the first image is read: exit 2 on one line.
    try:
        import jax
        import jax.numpy as jnp

        from vitjax.attention import check_options
        from vitjax.checkpoint import load_checkpoint
        from vitjax.download import resolve_checkpoint
        from vitjax.labels import class_names
        from vitjax.plotting import _cmap

        _cmap(args.cmap)
        items = _gather(args)  # before the checkpoint: a typo must not cost a download
        if not args.no_compile_cache:
            enable_compilation_cache()
        ckpt = resolve_checkpoint(args.ckpt, checkpoint_dir=args.checkpoint_dir, download=not args.no_download,
                                  progress=not args.quiet)
        model, params = load_checkpoint(ckpt, image_size=args.image_size, dtype=getattr(jnp, args.dtype))
        cfg = model.config
        check_options(head_fusion=args.head_fusion, discard_ratio=args.discard_ratio, start_layer=args.start_layer,
                      num_layers=cfg.num_layers)
        if not 1 <= abs(args.layer) <= cfg.num_layers:
            raise _UsageError(f"--layer must be in 1..{cfg.num_layers} or -{cfg.num_layers}..-1 "
                              f"(the model has {cfg.num_layers} layers), got {args.layer}")
        layer0 = args.layer - 1 if args.layer > 0 else cfg.num_layers + args.layer
        names = class_names(cfg.num_classes, args.labels)
        run_dir = _make_run_dir(args.out, args.run_name, args.overwrite)
    except (ValueError, FileExistsError) as e:  # CheckpointError, DownloadError, DatasetError, _UsageError
        return fail(e)

    heads_less = cfg.num_classes is None
    gh, gw = cfg.grid
    info(f"checkpoint: {ckpt} ({cfg.num_layers} layers x {cfg.num_heads} heads, "
         f"{cfg.image_size[0]}x{cfg.image_size[1]} px, grid {gh}x{gw}, "
         f"{'no head' if heads_less else f'{cfg.num_classes} classes'}"
         f"{'' if names is not None or heads_less else ', names: class indices'})")
    info(f"devices: {', '.join(str(d) for d in jax.devices())}")
    info(f"images: {len(items)}; output folder: {run_dir}")
    try:
        status = _process(args, items, model, params, names, layer0, run_dir, ckpt)
    except OSError as e:
        print(f"{prog}: error: cannot write outputs ({_one_line(e)})", file=sys.stderr)
        status = 1
    _remove_if_empty(run_dir)
    return status


def enable_compilation_cache():
    """Turns on JAX's persistent compilation cache (a hook tests can replace)."""
    from vitjax.cache import enable_compilation_cache as enable

    return enable()


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()  # only succeeds when nothing was written
    except OSError:
        pass


def _process(args, items: List[_Item], model, params, names, layer0: int, run_dir: Path, ckpt: Path) -> int:
    import jax.numpy as jnp
    from tqdm import tqdm

    from vitjax import plotting
    from vitjax.maps import compute_maps
    from vitjax.preprocess import load_image, preprocess

    cfg = model.config
    heads_less = cfg.num_classes is None
    batch = min(args.batch_size, len(items))
    n_batches = -(-len(items) // batch)
    width = max(3, len(str(len(items))))
    style = dict(mode=args.overlay, cmap=args.cmap, alpha=args.alpha, dpi=args.dpi)
    summary_side = max(1024, int(9 * args.dpi))  # the photo panel is 4.5 inches wide
    thumb_side = max(256, int(3 * args.dpi))  # grid cells are at most 1.5 inches wide
    options = dict(head_fusion=args.head_fusion, discard_ratio=args.discard_ratio, start_layer=args.start_layer,
                   residual=not args.no_residual, lean=args.lean)

    def out(text: str) -> None:
        tqdm.write(text, file=sys.stdout)

    def warn(text: str) -> None:
        tqdm.write(f"warning: {text}", file=sys.stderr)

    done: List[_Item] = []
    sizes: List[Tuple[int, int]] = []
    skipped: List[Tuple[_Item, str]] = []
    kept: Dict[str, List[np.ndarray]] = {k: [] for k in ("rollout", "layer", "cumulative", "heads",
                                                          "topk_indices", "topk_probs")}
    written: List[Path] = []
    tsv = ["image\ttrue_class\trank\tclass_index\tclass_name\tprobability"]
    page: List[Tuple[np.ndarray, np.ndarray, str]] = []  # (thumbnail, maps [C, gh, gw], row label)
    pages = 0

    def flush_grid() -> None:
        nonlocal pages
        if not page or args.no_grid:
            page.clear()
            return
        pages += 1
        photos = [p[0] for p in page]
        maps = [p[1] for p in page]
        labels = [p[2] for p in page]
        if args.method in ("layer", "cumulative"):
            fig = plotting.layer_grid(photos, maps, method=args.method, row_labels=labels, **style)
            name = f"grid-{args.method}-{pages:02d}.png"
        elif args.method == "heads":
            fig = plotting.head_grid(photos, maps, layer=layer0, num_layers=cfg.num_layers, row_labels=labels,
                                     **style)
            name = f"grid-heads-layer{layer0 + 1}-{pages:02d}.png"
        else:
            fig = plotting.rollout_grid(photos, [m[0] for m in maps], row_labels=labels, **style)
            name = f"grid-rollout-{pages:02d}.png"
        written.append(plotting.save_figure(fig, run_dir / name, overwrite=args.overwrite))
        page.clear()

    bar = tqdm(total=len(items), unit="image", file=sys.stderr, disable=args.quiet or n_batches <= 1,
               dynamic_ncols=True)
    try:
        for start, chunk in _chunks(items, batch):
            loaded = []
            for offset, item in enumerate(chunk):
                try:
                    image = load_image(item.path)
                    x = preprocess(image, cfg.image_size)
                except ValueError as e:
                    skipped.append((item, _one_line(e)))
                    warn(f"skipped {_one_line(e)}")
                    continue
                loaded.append((start + offset, item, image, x))
            if not loaded:
                bar.update(len(chunk))
                continue
            xs = np.zeros((batch,) + tuple(cfg.image_size) + (3,), np.float32)  # padded: one compiled shape
            for i, (*_, x) in enumerate(loaded):
                xs[i] = x
            maps = compute_maps(model, params, jnp.asarray(xs), **options)
            maps = {k: np.asarray(v)[: len(loaded)] for k, v in maps.items()}
            if heads_less:
                idx = np.zeros((len(loaded), 0), np.int32)
                prob = np.zeros((len(loaded), 0), np.float32)
            else:
                idx, prob = plotting.topk(maps["logits"], args.topk)
            for i, (position, item, image, _) in enumerate(loaded):
                labels = [_label(c, names) for c in idx[i]]
                lines = [item.display + (f"  (true class: {item.true_class})" if item.true_class else "")]
                if heads_less:
                    lines.append("   (no classification head: no predictions)")
                for r, (c, p, name) in enumerate(zip(idx[i], prob[i], labels, strict=True), 1):
                    shown = name if names is None else f"{name} ({c})"
                    lines.append(f"  {r:2d}. {p:.4f}  {shown}")
                    tsv.append("\t".join([str(item.path), item.true_class or "", str(r), str(int(c)),
                                          name.replace("\t", " "), f"{p:.6f}"]))
                out("\n".join(lines))
                top1 = f"{labels[0]} ({prob[i][0]:.3f})" if labels else ""
                row_label = item.display + (f"\ntop-1 {prob[i][0]:.3f}: {labels[0]}" if labels else "")
                if not args.no_summary:
                    title = item.display + (f"   top-1: {top1}" if top1 else "")
                    if item.true_class:
                        title += f"   true class: {item.true_class}"
                    fig = plotting.summary_figure(plotting.photo_array(image, summary_side), maps["rollout"][i],
                                                  labels=labels or None, probs=prob[i] if labels else None,
                                                  title=title, **style)
                    fname = f"{position + 1:0{width}d}-{_safe(item.display)}.png"
                    written.append(plotting.save_figure(fig, run_dir / fname, overwrite=args.overwrite))
                grid_maps = {"layer": maps["layer"][i], "cumulative": maps["cumulative"][i],
                             "heads": maps["heads"][i, layer0], "rollout": maps["rollout"][i][None]}[args.method]
                page.append((plotting.photo_array(image, thumb_side), grid_maps, row_label))
                if len(page) >= args.grid_rows:
                    flush_grid()
                done.append(item)
                sizes.append((image.height, image.width))
                if args.save_maps:
                    for k in ("rollout", "layer", "cumulative"):
                        kept[k].append(maps[k][i])
                    kept["heads"].append(maps["heads"][i, layer0])
                    kept["topk_indices"].append(idx[i])
                    kept["topk_probs"].append(prob[i])
            bar.update(len(chunk))
        flush_grid()
    finally:
        bar.close()

    if done:
        from vitjax.mapsio import write_atomic

        written.append(write_atomic(run_dir / "predictions.tsv", ("\n".join(tsv) + "\n").encode("utf-8"),
                                    overwrite=args.overwrite))
    if done and args.save_maps:
        written.append(_save_maps(args, run_dir, cfg, ckpt, done, sizes, kept, names, layer0))

    if skipped:
        print(f"warning: {len(skipped)} of {len(items)} image(s) skipped:", file=sys.stderr)
        for item, why in skipped:
            print(f"  {item.path}: {why}", file=sys.stderr)
    if not done:
        print("error: no image could be processed; nothing written", file=sys.stderr)
        return 1
    figures = sum(1 for p in written if p.suffix == ".png")
    print(f"wrote {figures} figure(s) for {len(done)} image(s) to {run_dir}{os.sep}")
    return 1 if (skipped and args.strict) else 0


def _save_maps(args, run_dir: Path, cfg, ckpt: Path, done, sizes, kept, names, layer0: int) -> Path:
    from vitjax import __version__
    from vitjax.mapsio import file_sha256, save_maps

    gh, gw = cfg.grid
    k = kept["topk_indices"][0].shape[0] if kept["topk_indices"] else 0
    arrays = {
        "rollout": np.stack(kept["rollout"]).astype(np.float32),
        "layer": np.stack(kept["layer"]).astype(np.float32),
        "cumulative": np.stack(kept["cumulative"]).astype(np.float32),
        "heads": np.stack(kept["heads"]).astype(np.float32),
        "topk_indices": np.stack(kept["topk_indices"]).astype(np.int32).reshape(len(done), k),
        "topk_probs": np.stack(kept["topk_probs"]).astype(np.float32).reshape(len(done), k),
    }
    metadata = {
        "vitjax_version": __version__,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "images": [os.path.abspath(item.path) for item in done],
        "display_names": [item.display for item in done],
        "true_classes": [item.true_class for item in done],
        "original_sizes": [list(s) for s in sizes],
        "grid": [gh, gw],
        "image_size": list(cfg.image_size),
        "num_layers": cfg.num_layers,
        "num_heads": cfg.num_heads,
        "num_classes": cfg.num_classes,
        "method": args.method,
        "heads_layer": layer0 + 1,
        "options": {
            "head_fusion": args.head_fusion,
            "discard_ratio": args.discard_ratio,
            "start_layer": args.start_layer,
            "residual": not args.no_residual,
            "lean": args.lean,
            "dtype": args.dtype,
            "topk": args.topk,
            "labels": args.labels,
            "overlay": args.overlay,
        },
        "topk_labels": [[_label(c, names) for c in row] for row in arrays["topk_indices"]],
        "checkpoint": args.ckpt,
        "checkpoint_path": os.path.abspath(ckpt),
        "checkpoint_sha256": file_sha256(ckpt),
        "layer_numbering": "arrays index layers from 0; heads_layer and figure titles count from 1",
    }
    return save_maps(run_dir / "maps.msgpack", arrays, metadata, overwrite=args.overwrite)


if __name__ == "__main__":  # python -m vitjax.cli
    sys.exit(main())
