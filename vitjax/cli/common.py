"""What the commands share: one-line argument errors, the ``--image-size`` type, the rollout
options from the command line, and warnings printed as one line each.

Only the commands (:mod:`vitjax.cli`) use this module; the library below never
parses arguments or prints.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import warnings
from typing import Iterator, Optional

from vitjax.attribution.diagnostics import SINK_SHARE
from vitjax.attribution.options import HEAD_FUSIONS, RolloutOptions
from vitjax.errors import VitjaxWarning, one_line, printable
from vitjax.model import memory

__all__ = ["OneLineParser", "UsageError", "add_memory_arguments", "add_rollout_arguments", "check_data_path",
           "check_out_folder", "check_out_outside", "checked", "in_a_batch",
           "is_out_of_memory", "memory_size", "out_of_memory_line", "image_size_arg", "nonneg_int", "number",
           "positive_int", "rollout_options", "shown", "terminal_warnings", "unit"]


def shown(text: object) -> str:
    """A message as the commands print it: one line, control characters escaped (:func:`vitjax.errors.printable`:
    a newline in a file name shows as ``\\n``, never breaks the line), runs of spaces made one
    (:func:`vitjax.errors.one_line`)."""
    return one_line(printable(text))


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr, exit status 2 (the usage is in ``--help``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {shown(message)} (see {self.prog} --help)\n")


def image_size_arg(text: str):
    """The ``--image-size`` argument type of the commands: ``"384"`` -> 384, ``"384x512"`` (HEIGHTxWIDTH) -> (384, 512).

    ``x``, ``X`` or ``,`` separate the two numbers. Raises ``argparse.ArgumentTypeError`` otherwise.
    """
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX,]\s*(\d+)\s*)?", text)
    sizes = [int(g) for g in m.groups() if g is not None] if m else []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHTxWIDTH in pixels (e.g. 384, 384x512), got {text!r}")
    return sizes[0] if len(sizes) == 1 else tuple(sizes)


def checked(cast, ok, expected: str):
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


positive_int = checked(int, lambda v: v >= 1, "a positive integer")
nonneg_int = checked(int, lambda v: v >= 0, "an integer >= 0")
number = checked(float, lambda v: True, "a number")
unit = checked(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")


def add_rollout_arguments(group) -> None:
    """``--head-fusion``, ``--discard-ratio``, ``--start-layer`` and ``--no-residual``: the
    :class:`vitjax.RolloutOptions` fields, documented once for every command (read back with
    :func:`rollout_options`)."""
    group.add_argument("--head-fusion", metavar="{" + ",".join(HEAD_FUSIONS) + "}", default="mean",
                       help="how heads are fused in the rollout (default: %(default)s)")
    group.add_argument("--discard-ratio", metavar="R", type=number, default=0.0,
                       help="drop this fraction of the lowest attention entries of each layer, in [0, 1) "
                            "(default: %(default)s)")
    group.add_argument("--start-layer", metavar="S", type=nonneg_int, default=0,
                       help="leave the first S layers out of the rollout: 1 leaves layer 1 out, e.g. when layer 1 "
                            "has an attention sink (a patch one head gives > " + f"{SINK_SHARE * 100:g} %%" +
                            " of its attention) on which the rollout would peak; the figures say when it does. "
                            "Chefer et al. use 1; each layer's own map and head maps do not use it (default: "
                            "%(default)s)")
    group.add_argument("--no-residual", action="store_true",
                       help="do not add the identity for the residual connections (plain product of attentions)")


def memory_size(text: str) -> int:
    """The ``--memory-budget`` type: ``"12G"``, ``"512M"``... -> bytes (:func:`vitjax.model.memory.parse_bytes`)."""
    try:
        return memory.parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_memory_arguments(group, *, batch_size: int, what: str = "images per forward pass", batch_type=None) -> None:
    """``--batch-size`` (an upper bound) and ``--memory-budget``, documented once for every command.

    ``batch_type`` is the argparse type of ``--batch-size`` (default :data:`positive_int`; ``int`` for a
    command that checks the value itself and reports it as one of its own errors)."""
    group.add_argument("--batch-size", metavar="B", type=batch_type or positive_int, default=batch_size,
                       help=f"{what}, at most (default: {batch_size}); smaller when the memory budget asks for it, "
                            "and never more than the images there are")
    group.add_argument("--memory-budget", metavar="SIZE", type=memory_size, default=None,
                       help="memory the run may use, e.g. 12G or 800M (default: half of the memory available "
                            "now: the host's, or the accelerator's own); batches are sized from an estimate of "
                            "peak memory, and a run that cannot fit even one image is refused before it starts")


def is_out_of_memory(error: BaseException) -> bool:
    """An allocation failure of XLA (``RESOURCE_EXHAUSTED``) or Python's ``MemoryError``."""
    return isinstance(error, MemoryError) or "RESOURCE_EXHAUSTED" in str(error) or "Out of memory" in str(error)


#: Where a batch is loaded or computed: (file path ending, function name or None for any function of the file).
_BATCH_FRAMES = ((os.path.join("vitjax", "evaluation", "runner.py"), "run"),
                 (os.path.join("vitjax", "data", "batching.py"), None),
                 (os.path.join("vitjax", "viz", "run.py"), "_maps"))


def in_a_batch(error: BaseException) -> bool:
    """True when ``error`` was raised while a batch was loaded or computed: its traceback passes through the
    dataset runner's loop (:func:`vitjax.evaluation.runner.run`), :mod:`vitjax.data.batching` or the visualize
    run's batch step, rather than, say, while the checkpoint or the dataset listing was read."""
    tb = error.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if any(code.co_filename.endswith(path) and (name is None or code.co_name == name)
               for path, name in _BATCH_FRAMES):
            return True
        tb = tb.tb_next
    return False


def out_of_memory_line(batch_size: int, image_size, budget: Optional[int], *,
                       error: Optional[BaseException] = None, up_to: bool = False, running: bool = False) -> str:
    """What to say when an allocation failed although the estimate fitted.

    The batch size is blamed (which batch and size, what to pass) only when a smaller batch could
    have helped: more than one image per batch, and the failure happened while a batch was loaded
    or computed: ``error`` None, or raised through a batch's code (:func:`in_a_batch`), or an
    accelerator allocation failure (not Python's ``MemoryError``) out of the batch loop itself
    (``running``: the call that failed is the run over the batches). Otherwise a neutral line says
    what ran out and when. ``up_to``: ``batch_size`` is an upper bound (``"batches of up to 32 images"``).
    """
    h, w = image_size if image_size is not None else (None, None)
    size = f", image size {h}x{w}" if h is not None else ""
    spent = f" within the memory budget {memory.format_bytes(budget)}" if budget else ""
    batched = error is None or in_a_batch(error) or (running and not isinstance(error, MemoryError))
    if batched and batch_size > 1:
        smaller = max(1, batch_size // 2)
        at = f"with batches of up to {batch_size} images" if up_to else f"at batch size {batch_size}"
        return (f"out of memory {at}{size}{spent}; pass --batch-size {smaller} "
                "or a smaller --memory-budget (other programs may be using the memory)")
    what = "host memory" if isinstance(error, MemoryError) else "memory"
    when = f"at batch size 1{size}" if batched else ("outside the model's batches" if running else
                                                     "before any batch (reading the checkpoint or the data)")
    return (f"out of {what} {when}{spent}: a smaller batch cannot help; free memory (other programs may be using "
            "it) or use a machine with more")


class UsageError(ValueError):
    """An input problem reported on one line with exit status 2."""


def check_out_folder(path, flag: str = "--out") -> None:
    """Refuses, before anything runs, an output folder that cannot be one: an empty path (it would be the
    current folder), a path that exists and is no folder (a file, a FIFO...), or one below a file.

    Raises:
      UsageError: ``"--out: results.csv is a file, not a folder"`` (one line).
    """
    given = os.fspath(path)
    if not given.strip():
        raise UsageError(f"{flag}: an empty path ({given!r}); name a folder (. for the current one)")
    where = os.path.expanduser(given)
    if os.path.lexists(where) and not os.path.isdir(where):
        kind = "a file" if os.path.isfile(where) else "a broken link" if not os.path.exists(where) else \
            "not a regular file"
        raise UsageError(f"{flag}: {given} is {kind}, not a folder")
    parent = os.path.dirname(os.path.abspath(where))
    while parent and not os.path.lexists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if os.path.lexists(parent) and not os.path.isdir(parent):
        raise UsageError(f"{flag}: {given} cannot be a folder: {parent} is a file, not a folder")


def check_data_path(path, flag: str = "--data") -> None:
    """Refuses an empty input path (``--data ""``), which would silently read the current folder.

    Raises:
      UsageError: ``"--data: an empty path ('')..."`` (one line).
    """
    given = os.fspath(path)
    if not given.strip():
        raise UsageError(f"{flag}: an empty path ({given!r}); name a folder (. for the current one)")


def _real(path) -> str:
    return os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(path))))


def check_out_outside(out, data, out_flag: str = "--out", data_flag: str = "--data") -> None:
    """Refuses an output folder inside (or equal to) an input folder, symlinks resolved: a rerun (or resume)
    would list the run's own files (figures, shards) as images. An input folder inside the output folder is fine.

    Raises:
      UsageError: ``"--out X is inside --data Y: the run's own files would be read as images"`` (one line).
    """
    if data is None or not os.path.isdir(os.path.expanduser(os.fspath(data))):
        return  # a file or a glob is not walked for images below the output folder
    o, d = _real(out), _real(data)
    if o == d or o.startswith(d.rstrip(os.sep) + os.sep):
        raise UsageError(f"{out_flag} {os.fspath(out)} is inside {data_flag} {os.fspath(data)}: the run's own files "
                         "would be read as images")


def rollout_options(args) -> RolloutOptions:
    """The run's one :class:`vitjax.RolloutOptions` from :func:`add_rollout_arguments`' flags.

    Raises:
      UsageError: RolloutOptions' own validation message, prefixed with the flag's name.
    """
    try:
        return RolloutOptions(head_fusion=args.head_fusion, discard_ratio=args.discard_ratio,
                              start_layer=args.start_layer, residual=not args.no_residual)
    except ValueError as e:
        field = re.match(r"\w+", str(e))
        flag = "--" + field.group(0).replace("_", "-") if field else "option"
        raise UsageError(f"{flag}: {e}") from None


@contextlib.contextmanager
def terminal_warnings(stream=None) -> Iterator[None]:
    """Within the block, each warning the library raises is printed as one ``warning: ...`` line on stderr."""

    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, VitjaxWarning):
            print(f"warning: {shown(message)}", file=stream or sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always", VitjaxWarning)
        warnings.showwarning = show
        yield
