"""Every error type of vitjax, and the helpers that keep their messages to one line.

The lowest layer of the package: it imports nothing from vitjax, so every
other module can raise these without importing upward. Each error is a
``ValueError`` whose message is one line naming the file, key, field or
argument at fault; the commands print it on stderr and exit with status 2.
"""

from __future__ import annotations

import os
import stat
from typing import Union

__all__ = [
    "CheckpointError",
    "DatasetError",
    "DownloadError",
    "MapsFileError",
    "MemoryBudgetError",
    "NonFiniteError",
    "TORCH_PICKLES",
    "VitjaxWarning",
    "one_line",
    "pickle_refusal",
    "printable",
    "require_file",
]

PathLike = Union[str, os.PathLike]

#: File suffixes of PyTorch pickles, which vitjax never loads (unpickling runs code).
TORCH_PICKLES = (".pth", ".pt", ".bin", ".ckpt", ".pkl")


class CheckpointError(ValueError):
    """A file is not a usable ViT checkpoint; the message is one line naming it."""


class DownloadError(ValueError):
    """A checkpoint name that is unknown, or a download that failed; the message is one line."""


class DatasetError(ValueError):
    """An image folder or dataset tree that cannot be used; the message is one line naming the path."""


class MemoryBudgetError(ValueError):
    """A batch that cannot fit the memory budget even at one image; the message names the image size, the
    estimate and the budget (:mod:`vitjax.model.memory`)."""


class MapsFileError(ValueError):
    """A maps file that cannot be read back; the message is one line naming it."""


class NonFiniteError(ValueError):
    """A model's output is not finite (NaN or inf) for some images of a batch; the message is one line.

    Finite weights can still give NaN or inf (a negative ``layer_norm_eps``, huge weights, an
    input far outside the preprocessed range); such outputs are never numbers to draw or score.

    Attributes:
      what: ``{row: (kind, ...)}``: each failing row of the batch (0-based) and what was not
        finite there ("logits" or "features", "attention", "gradients", "maps").
      rows: the failing rows, ascending (``sorted(what)``).
      result: what the function would have returned (the finite rows are usable as they are),
        or None; as :class:`subprocess.CalledProcessError` carries ``output``.
    """

    def __init__(self, message: str, *, what=None, result=None):
        super().__init__(message)
        self.what = {int(r): tuple(k) for r, k in dict(what or {}).items()}
        self.rows = tuple(sorted(self.what))
        self.result = result


class VitjaxWarning(UserWarning):
    """Something a user should know that does not stop the work (e.g. an all-zero classifier head).

    The library warns through :mod:`warnings`; the commands print each as one
    ``warning: ...`` line on stderr.
    """


def one_line(text: object) -> str:
    """``text`` as one line: every run of whitespace (newlines included) becomes one space.

    Error messages and skip reasons are printed and stored one per line.
    """
    return " ".join(str(text).split())


#: Characters that end or break a printed line besides the ASCII controls (Python's str.splitlines splits at them).
_LINE_BREAKS = {0x85: "\\x85", 0x2028: "\\u2028", 0x2029: "\\u2029"}
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: object) -> str:
    """``text`` with every control character escaped, so that it prints on one line and says what is there.

    A file name may hold a newline (``"cl\\nass/bad.jpg"``): printed as it is, it would break a command's
    one-line messages (and a collapsed space would name another file). Newline, carriage return and tab
    become ``\\n``, ``\\r``, ``\\t``; other controls (C0, DEL, C1) ``\\xNN``; the Unicode line and
    paragraph separators ``\\u2028``, ``\\u2029``. Everything else, spaces included, is kept.
    """
    out = []
    for ch in str(text):
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif code in _LINE_BREAKS:
            out.append(_LINE_BREAKS[code])
        elif code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    return "".join(out)


def pickle_refusal(path: PathLike) -> str:
    """The one line refusing a PyTorch pickle (``.pth``/``.bin``/``.pt``...), saying how to make a ``.safetensors``."""
    return (
        f"{os.fspath(path)}: a PyTorch pickle, which vitjax never unpickles (unpickling runs code); save the weights "
        "as "
        'safetensors where you trust the file: safetensors.torch.save_file(model.state_dict(), "model.safetensors")'
        " (timm and Hugging Face models: model.save_pretrained(folder) writes model.safetensors)"
    )


def require_file(path: PathLike, what: str, error: type = CheckpointError) -> str:
    """``path`` as a string if it is a non-empty regular file; else a one-line ``error`` (:class:`CheckpointError`).

    ``what`` names the expected kind in the message ("an .npz checkpoint"). A FIFO, a device (``/dev/zero``)
    or a socket is refused by its kind, never opened (reading it could block forever or never end).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise error(f"{path}: no such file")
    if os.path.isdir(path):
        raise error(f"{path}: is a directory, not {what}")
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else \
            "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
        raise error(f"{path}: is {kind}, not {what}" if kind != "not a regular file" else f"{path}: {kind}")
    if os.path.getsize(path) == 0:
        raise error(f"{path}: the file is empty")
    return path
