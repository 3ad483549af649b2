"""What the commands share: one-line argument errors, the ``--image-size`` type, the rollout
options from the command line, and warnings printed as one line each.

Only the commands (:mod:`vitjax.cli`) use this module; the library below never
parses arguments or prints.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import warnings
from typing import Iterator, Optional

from vitjax.attribution.diagnostics import SINK_SHARE
from vitjax.attribution.options import HEAD_FUSIONS, RolloutOptions
from vitjax.errors import VitjaxWarning, one_line
from vitjax.model import memory

__all__ = ["OneLineParser", "UsageError", "add_memory_arguments", "add_rollout_arguments", "checked",
           "is_out_of_memory", "memory_size", "out_of_memory_line", "image_size_arg", "nonneg_int", "number",
           "positive_int", "rollout_options", "terminal_warnings", "unit"]


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr, exit status 2 (the usage is in ``--help``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


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


def out_of_memory_line(batch_size: int, image_size, budget: Optional[int]) -> str:
    """What to say when an allocation failed although the estimate fitted: which batch and size, what to pass."""
    h, w = image_size
    smaller = max(1, batch_size // 2)
    spent = f" within the memory budget {memory.format_bytes(budget)}" if budget else ""
    return (f"out of memory at batch size {batch_size}, image size {h}x{w}{spent}; pass --batch-size {smaller} "
            "or a smaller --memory-budget (other programs may be using the memory)")


class UsageError(ValueError):
    """An input problem reported on one line with exit status 2."""


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
            print(f"warning: {one_line(message)}", file=stream or sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always", VitjaxWarning)
        warnings.showwarning = show
        yield
