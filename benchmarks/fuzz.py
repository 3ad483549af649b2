#!/usr/bin/env python3
"""Feeds the commands and library entry points the kinds of bad input of issue #17; classifies every outcome.

``python3 benchmarks/fuzz.py`` generates, in a temporary folder, a few hundred bad inputs (checkpoints,
their JSON files, images and folders, annotations, results folders, maps files, command-line arguments),
runs each with the real command (``scripts/visualize.py``, ``scripts/evaluate.py``,
``scripts/perturbation.py``) or a small library call, each in its own process with a timeout, and sorts
every outcome into one class:

* ``OK-refused``: exit status 1 or 2, exactly one error line on stderr that names the file, key, field or
  argument (``note:``/``warning:`` lines and progress bars are not error lines), no traceback;
* ``OK-handled``: exit status 0 and the outputs are right, as the case's own check says (a skipped image
  listed, an invalid annotation counted, a damaged shard recomputed, a valid file read exactly);
* ``TRACEBACK``: a Python traceback (or a death by signal);
* ``HANG``: still running at the case's timeout (killed);
* ``SILENT-WRONG``: exit status 0 but a wrong result: NaN or garbage reported, a damaged file read as if
  whole, a file claiming results it should not;
* ``MULTILINE``: a refusal over several error lines;
* ``VAGUE``: a one-line refusal that names nothing the case expects, or a non-zero exit with no message;
* ``MISLEADING``: a one-line refusal that says something false of the input (a zip called "a PyTorch
  pickle", a FIFO "empty" or "not an existing file");
* ``REFUSED-VALID``: a valid input (a real safetensors file whose header length ends in 0x80, ...) refused;
* ``N/A``: a case that cannot apply here (file permissions when running as root); not counted.

Each case runs in a child process: by default forked from this one after vitjax is imported (the
JAX backend is never started here, so each child starts its own; this saves ~5 s of imports per
case); ``--spawn`` runs each in a fresh ``python3`` instead (slower, nothing shared). Children run with
``JAX_PLATFORMS=cpu``, ``MPLBACKEND=Agg``, an address-space limit (``--mem-limit``) and
``--no-compile-cache`` where the command has it. Library calls count as refusals when they raise a
``ValueError`` (vitjax's errors are ValueError subclasses), printed as ``error (Type): message``.

Outputs: a table of counts per surface and class, every case that is not OK with its command and the
first lines of its output, and ``benchmarks/results-fuzz.json`` (``--out``). The folder of generated
inputs is kept (and printed) when a case is not OK, so it can be reproduced; ``--keep DIR`` keeps it in DIR.

Options: ``--quick`` (a subset, a few minutes), ``--only SURFACE[,SURFACE]``, ``--jobs N`` (default 1),
``--list`` (the cases, without running them).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
SURFACES = ("npz", "safetensors", "config", "nonfinite", "images", "annotations", "shards", "maps", "cli")
CLASSES = ("OK-refused", "OK-handled", "TRACEBACK", "HANG", "SILENT-WRONG", "MULTILINE", "VAGUE", "MISLEADING",
           "REFUSED-VALID", "CHECK-ERROR")
OK = ("OK-refused", "OK-handled", "N/A")
VIS, EVAL, PERT = "scripts/visualize.py", "scripts/evaluate.py", "scripts/perturbation.py"
HANG_S = 45.0  # the timeout of inputs that could block forever (FIFOs, devices); a case here takes < 10 s
ENV = {"JAX_PLATFORMS": "cpu", "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "1",
       "TQDM_DISABLE": "0"}


# =========================================================================== cases and outcomes


@dataclass
class Outcome:
    """What a child did: exit status (None: killed at the timeout; negative: died by that signal)."""

    rc: Optional[int]
    stdout: str
    stderr: str
    seconds: float
    dir: Path
    payload: Any = None


@dataclass
class Case:
    """One run: a command (``("cmd", script, argv)``) or a library call (``("lib", name, kwargs)``).

    ``names``: strings of which the error line must hold one (a file name, key, field, flag).
    ``expect``: "refuse" (exit 0 is wrong unless ``check`` says it was handled), "handle" (a refusal is
    REFUSED-VALID), "either". ``check(outcome)`` judges an exit 0: None = right, a string = what is wrong,
    or a dict ``{input: None | what is wrong}`` for a run that judges several inputs at once.
    """

    id: str
    surface: str
    kind: str
    run: tuple
    names: Sequence[str] = ()
    expect: str = "either"
    check: Optional[Callable[[Outcome], Any]] = None
    timeout: float = 90.0
    quick: bool = False
    prepare: Optional[Callable[[Path], None]] = None
    na: Optional[str] = None  # why the case cannot apply here (N/A)
    inputs: Sequence[str] = ()  # for a run judging several inputs: their names (each counts as one input)
    forbid: Sequence[str] = ()  # what the error line must not say (it would be false: "pickle" for a zip)
    interrupt: Optional[float] = None  # send SIGINT (Ctrl-C) this many seconds after the start

    def command(self, cdir: Path) -> str:
        run = fill(self.run, cdir)
        if run[0] == "cmd":
            return shlex.join(["python3", run[1], *[str(a) for a in run[2]]])
        return LIB[run[1]][1](**run[2])


def fill(value, cdir: Path):
    """``{case}`` in strings (the case's own folder) replaced, recursively."""
    if isinstance(value, str):
        return value.replace("{case}", str(cdir))
    if isinstance(value, (list, tuple)):
        return type(value)(fill(v, cdir) for v in value)
    if isinstance(value, dict):
        return {k: fill(v, cdir) for k, v in value.items()}
    return value


_TQDM = re.compile(r"(\d+%\|)|(\d+(\.\d+)?\s*(it|img)/s)|(\|\s*\d+/\d+\s*\[)")
_ABSL = re.compile(r"^[WEIF]\d{4} \d\d:\d\d:\d\d")


def error_lines(stderr: str) -> List[str]:
    """stderr without notes, warnings (and the indented lines that continue a warning), progress bars, blanks."""
    out: List[str] = []
    in_warning = False
    for raw in re.split(r"[\r\n]", stderr):
        line = raw.rstrip()
        if not line.strip() or _TQDM.search(line):
            continue
        if line.startswith(("note:", "warning:", "failed:")):  # failed: an image's reason, listed after a run
            in_warning = True
            continue
        if in_warning and line.startswith("  "):
            continue
        in_warning = False
        out.append(line.strip())
    return out


def classify(case: Case, o: Outcome) -> List[Dict[str, Any]]:
    """One verdict per input of ``case``: ``{"input", "class", "detail"}``."""
    inputs = list(case.inputs) or [case.id]

    def every(cls: str, detail: str) -> List[Dict[str, Any]]:
        return [{"input": i, "class": cls, "detail": detail} for i in inputs]

    if case.na:
        return every("N/A", case.na)
    if o.rc is None:
        return every("HANG", f"still running after {case.timeout:g} s (killed)")
    if "Traceback (most recent call last)" in o.stderr or o.rc < 0:
        last = [line for line in o.stderr.strip().splitlines() if line.strip()]
        why = f"killed by signal {-o.rc}" if o.rc < 0 else (last[-1].strip() if last else "traceback")
        frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', o.stderr)
        mine = [f for f in frames if f"{os.sep}vitjax{os.sep}" in f[0]]
        if mine:  # the deepest frame in the package: where the owner looks
            why += f" (raised under {os.path.relpath(mine[-1][0], REPO)}:{mine[-1][1]} in {mine[-1][2]})"
        return every("TRACEBACK", why[:400])
    lines = error_lines(o.stderr)
    if case.interrupt is not None and o.rc != 0:  # Ctrl-C: exit 130 and one line saying what is kept
        if len(lines) > 1:
            return every("MULTILINE", f"{len(lines)} lines after Ctrl-C: " + " | ".join(lines[:4])[:300])
        if o.rc != 130 or not lines or "interrupt" not in lines[0].lower():
            return every("VAGUE", f"after Ctrl-C: exit {o.rc}: {lines[0][:200] if lines else 'no message'}")
        return every("OK-handled", lines[0][:300])
    if o.rc != 0:
        if not lines:
            return every("VAGUE", f"exit status {o.rc} with no error line")
        if len(lines) > 1:
            return every("MULTILINE", f"{len(lines)} error lines: " + " | ".join(lines[:4])[:300])
        line = lines[0]
        if o.rc not in (1, 2):
            return every("VAGUE", f"exit status {o.rc}: {line[:200]}")
        if case.names and not any(n.lower() in line.lower() for n in case.names):
            return every("VAGUE", f"names none of {list(case.names)[:4]}: {line[:240]}")
        false = [f for f in case.forbid if f.lower() in line.lower()]
        if false:
            return every("MISLEADING", f"says {false[0]!r}, which is false here: {line[:240]}")
        if case.expect == "handle":
            return every("REFUSED-VALID", line[:300])
        return every("OK-refused", line[:300])
    # exit status 0
    noise = lines
    try:
        verdict = case.check(o) if case.check else ("accepted a bad input (exit 0)" if case.expect == "refuse"
                                                    else None)
    except Exception as e:  # the fuzz script's own fault: said as such, never counted as OK
        return every("CHECK-ERROR", f"the check itself failed: {type(e).__name__}: {e}")
    stray = ("stray stderr: " + " | ".join(noise[:3])[:200]) if noise else ""
    if isinstance(verdict, dict):
        out = []
        for i in inputs:
            v = verdict.get(i, "no verdict for this input")
            out.append({"input": i, "class": "SILENT-WRONG" if v else "OK-handled", "detail": v or stray})
        return out
    if verdict:
        return every("SILENT-WRONG", str(verdict)[:400])
    return every("OK-handled", stray)


# =========================================================================== the library calls (run in a child)

LIB: Dict[str, tuple] = {}


def lib(repro: Callable[..., str]):
    """Registers a library call with ``repro(**kwargs)``: a shell command that does the same by hand."""

    def register(fn):
        LIB[fn.__name__] = (fn, repro)
        return fn

    return register


def _py(code: str) -> str:
    return "python3 -c " + shlex.quote(code)


def _config_summary(cfg) -> Dict[str, Any]:
    return {"num_heads": cfg.num_heads, "num_layers": cfg.num_layers, "hidden_size": cfg.hidden_size,
            "layer_norm_eps": cfg.layer_norm_eps, "gelu_approximate": cfg.gelu_approximate,
            "pixel_mean": list(cfg.pixel_mean), "pixel_std": list(cfg.pixel_std),
            "image_size": list(cfg.image_size), "patch_size": list(cfg.patch_size), "num_classes": cfg.num_classes,
            "class_names": list(cfg.class_names) if cfg.class_names else None, "input_resize": cfg.input_resize,
            "random_weights": cfg.random_weights, "source": cfg.source, "grid": list(cfg.grid)}


def _probe_images(cfg, n: int = 1):
    import numpy as np

    h, w = cfg.image_size
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    x = np.stack([yy, xx, yy * xx], -1).astype(np.float32)
    return np.stack([x * (1 - 0.3 * i) for i in range(n)])


def _flat_params(params) -> Dict[str, Any]:
    import numpy as np

    from vitjax.checkpoints.load import flatten

    return {k: np.asarray(v) for k, v in flatten(params).items()}


@lib(lambda path, same_as=None, predict=True, image_size=None:
     _py(f"import vitjax; m, p = vitjax.load_checkpoint({path!r}" + (f", image_size={image_size!r}" if image_size
                                                                     else "") + ")"
         + ("; import numpy as np; h, w = m.config.image_size; print(vitjax.predict(m, p, np.zeros((1, h, w, 3), "
            "np.float32)))" if predict else "")))
def load(path, same_as=None, predict=True, image_size=None):
    """load_checkpoint (+ predict on one probe image); with ``same_as``: compared with that file's load."""
    import numpy as np

    import vitjax

    model, params = vitjax.load_checkpoint(path, image_size=image_size)
    out: Dict[str, Any] = {"config": _config_summary(model.config)}
    if same_as:
        ref_model, ref_params = vitjax.load_checkpoint(same_as, image_size=image_size)
        a, b = _flat_params(params), _flat_params(ref_params)
        out["ref_config"] = _config_summary(ref_model.config)
        out["same_keys"] = sorted(a) == sorted(b)
        out["max_diff"] = (max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) if a[k].shape == b[k].shape
                               else float("inf") for k in a) if out["same_keys"] else None)
    if predict:
        logits = np.asarray(vitjax.predict(model, params, _probe_images(model.config)))
        out["finite"] = bool(np.isfinite(logits).all())
        out["logits"] = [float(v) if math.isfinite(v) else str(v) for v in logits.reshape(-1)[:8]]
    return out


@lib(lambda path, fn: _py(f"import vitjax, numpy as np; m, p = vitjax.load_checkpoint({path!r}); "
                          f"h, w = m.config.image_size; x = np.zeros((1, h, w, 3), np.float32); # then {fn}"))
def outputs(path, fn):
    """A library function of the model's outputs on two probe images; returns whether its outputs are finite."""
    import jax
    import numpy as np

    import vitjax

    model, params = vitjax.load_checkpoint(path)
    x = _probe_images(model.config, 2)
    calls = {
        "predict": lambda: vitjax.predict(model, params, x),
        "forward": lambda: vitjax.forward(model, params, x),
        "compute_maps": lambda: vitjax.compute_maps(model, params, x),
        "compute_maps_lean": lambda: vitjax.compute_maps(model, params, x, lean=True),
        "attention_maps_rollout": lambda: vitjax.attention_maps(model, params, x, method="rollout"),
        "attention_maps_heads": lambda: vitjax.attention_maps(model, params, x, method="heads"),
        "class_maps_generic": lambda: vitjax.class_maps(model, params, x, method="generic"),
        "logit_lens": lambda: vitjax.logit_lens(model, params, x),
        "run_with_cache": lambda: vitjax.run_with_cache(model, params, x),
        "head_importance": lambda: vitjax.head_importance(model, params, x),
    }
    result = calls[fn]()
    leaves = [np.asarray(a) for a in jax.tree_util.tree_leaves(result) if hasattr(a, "dtype")]
    floats = [a for a in leaves if a.dtype.kind == "f"]
    return {"leaves": len(leaves), "finite": all(bool(np.isfinite(a).all()) for a in floats)}


@lib(lambda path, same_as=None: _py(f"import vitjax; vitjax.load_maps({path!r})"))
def maps(path, same_as=None):
    """load_maps; with ``same_as``: whether every array and the metadata equal that file's."""
    import numpy as np

    import vitjax

    tree = vitjax.load_maps(path)
    out: Dict[str, Any] = {"arrays": sorted(tree["arrays"])}
    arrays = tree["arrays"]
    out["finite"] = all(bool(np.isfinite(a).all()) for a in arrays.values() if a.dtype.kind == "f")
    out["max"] = max(float(np.max(a)) for a in arrays.values() if a.size and a.dtype.kind == "f")
    if same_as:
        ref = vitjax.load_maps(same_as)
        out["same"] = (sorted(ref["arrays"]) == sorted(arrays)
                       and all(a.dtype == ref["arrays"][k].dtype and np.array_equal(a, ref["arrays"][k])
                               for k, a in arrays.items())
                       and json.dumps(ref["metadata"], sort_keys=True, default=str)
                       == json.dumps(tree["metadata"], sort_keys=True, default=str))
    return out


@lib(lambda image, annotation: _py(
    "from vitjax.data.datasets import ImageRecord; from vitjax.evaluation.localisation import load_target; "
    f"print(load_target(ImageRecord({image!r}, 0, 'c', {annotation!r}), (8, 8)))"))
def target(image, annotation):
    """The evaluate loader's view of one annotated photo (load_target): scored or not, and the note."""
    from pathlib import Path as P

    from vitjax.data.datasets import ImageRecord
    from vitjax.evaluation.localisation import load_target

    t = load_target(ImageRecord(P(image), 0, "c", P(annotation)), (8, 8))
    return {"annotated": t.mask is not None, "note": t.note,
            "object_cells": int(t.mask.sum()) if t.mask is not None else None}


@lib(lambda path: _py(f"import vitjax; print(vitjax.preprocess({path!r}, 32).shape); "
                      f"print(vitjax.load_image({path!r}).size)"))
def decode(path):
    """preprocess (to 32 px, Google's normalisation) and load_image of one file."""
    import numpy as np

    import vitjax

    x = np.asarray(vitjax.preprocess(path, 32))
    im = vitjax.load_image(path)
    return {"shape": list(x.shape), "finite": bool(np.isfinite(x).all()), "min": float(x.min()),
            "max": float(x.max()), "mean": float(x.mean()), "size": list(im.size), "mode": im.mode}


@lib(lambda root: _py(f"from vitjax.data.datasets import dataset_records; print(dataset_records({root!r}))"))
def records(root):
    """dataset_records of a class-folder or Caltech101 tree, as evaluate lists it."""
    from vitjax.data.datasets import dataset_records

    listed = dataset_records(root)
    return {"images": [str(r.path) for r in listed], "labels": [r.label for r in listed],
            "skipped": [[str(p), why] for p, why in getattr(listed, "skipped", ())]}


def _lib_child(name: str, kwargs: Dict[str, Any], payload: Path) -> int:
    """Runs one library call; exit 0 with its JSON payload, 2 after ``error (Type): message`` for a ValueError."""
    import warnings

    from vitjax.errors import VitjaxWarning, one_line

    code = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = LIB[name][0](**kwargs)
            payload.write_text(json.dumps(result, default=str))
        except ValueError as e:
            print(f"error ({type(e).__name__}): {e}", file=sys.stderr)
            code = 2
    for w in caught:
        if issubclass(w.category, VitjaxWarning):
            print(f"warning: {one_line(w.message)}", file=sys.stderr)
        elif issubclass(w.category, (RuntimeWarning, UserWarning)) and "vitjax" in (w.filename or ""):
            print(f"stray {w.category.__name__} at {w.filename}:{w.lineno}: {w.message}", file=sys.stderr)
    return code


# =========================================================================== running a case


def _limit_memory(gib: float) -> None:
    import resource

    if gib > 0:
        n = int(gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (n, n))


def _child_main(case_run: tuple, cdir: Path, mem_gib: float) -> int:
    """The body of a forked child (stdout/stderr already redirected)."""
    import runpy

    _limit_memory(mem_gib)
    os.chdir(REPO)
    try:
        if case_run[0] == "cmd":
            sys.argv = [case_run[1], *[str(a) for a in case_run[2]]]
            runpy.run_path(case_run[1], run_name="__main__")
            return 0
        return _lib_child(case_run[1], case_run[2], cdir / "payload.json")
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except BaseException:  # what python3 itself would print for an uncaught exception
        traceback.print_exc()
        return 1


class Runner:
    def __init__(self, *, spawn: bool, mem_gib: float, jobs: int):
        self.spawn, self.mem_gib, self.jobs = spawn, mem_gib, jobs

    def start(self, case: Case, cdir: Path):
        cdir.mkdir(parents=True, exist_ok=True)
        run = fill(case.run, cdir)
        if case.prepare:
            case.prepare(cdir)
        out, err = open(cdir / "stdout", "wb"), open(cdir / "stderr", "wb")
        if self.spawn:
            import subprocess

            if run[0] == "cmd":
                argv = [sys.executable, run[1], *[str(a) for a in run[2]]]
            else:
                argv = [sys.executable, str(Path(__file__).resolve()), "--lib-child", run[1], json.dumps(run[2]),
                        str(cdir / "payload.json")]
            p = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                 start_new_session=True, preexec_fn=lambda: _limit_memory(self.mem_gib))
            out.close(), err.close()
            return p.pid
        sys.stdout.flush(), sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setpgid(0, 0)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                code = _child_main(run, cdir, self.mem_gib)
            finally:
                try:
                    sys.stdout.flush(), sys.stderr.flush()
                finally:
                    os._exit(code if isinstance(code, int) else 1)
        out.close(), err.close()
        return pid

    def run_all(self, cases: Sequence[Case], root: Path, report: Callable[[Case, Outcome], None]) -> None:
        pending = list(cases)
        running: Dict[int, tuple] = {}
        interrupted: set = set()
        while pending or running:
            while pending and len(running) < self.jobs:
                case = pending.pop(0)
                cdir = root / "cases" / case.id
                if case.na:
                    report(case, Outcome(0, "", "", 0.0, cdir))
                    continue
                running[self.start(case, cdir)] = (case, cdir, time.monotonic())
            time.sleep(0.05)
            for pid, (case, cdir, t0) in list(running.items()):
                if case.interrupt is not None and time.monotonic() - t0 > case.interrupt and pid not in interrupted:
                    interrupted.add(pid)
                    try:
                        os.killpg(pid, signal.SIGINT)
                    except ProcessLookupError:
                        pass
                done, status = os.waitpid(pid, os.WNOHANG)
                rc: Optional[int]
                if done:
                    rc = os.waitstatus_to_exitcode(status)
                elif time.monotonic() - t0 > case.timeout:
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    os.waitpid(pid, 0)
                    rc = None
                else:
                    continue
                del running[pid]
                payload = None
                if (cdir / "payload.json").is_file():
                    try:
                        payload = json.loads((cdir / "payload.json").read_text())
                    except ValueError:
                        payload = None
                out, err = ((cdir / n).read_bytes().decode("utf-8", "replace") for n in ("stdout", "stderr"))
                report(case, Outcome(rc, out, err, time.monotonic() - t0, cdir, payload))


# =========================================================================== file writers (no JAX here)


def npy_bytes(a) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


def npy_raw(descr: str, shape, data: bytes, fortran: bool = False) -> bytes:
    """An .npy member with a header that says anything (``shape`` as written), followed by ``data``."""
    header = f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {shape}, }}"
    header = header.encode("latin1")
    pad = 64 - (10 + len(header) + 1) % 64
    header += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


def write_zip(path: Path, members: Sequence[tuple], *, compress: bool = False, comment: bytes = b"") -> Path:
    import warnings

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": on purpose
        return _write_zip(path, members, compress, comment)


def _write_zip(path: Path, members: Sequence[tuple], compress: bool, comment: bytes) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zf:
        for name, data in members:
            zf.writestr(name, data)
        zf.comment = comment
    return path


def write_npz(path: Path, flat: Dict[str, Any], *, compress: bool = False, comment: bytes = b"",
              replace: Optional[Dict[str, bytes]] = None) -> Path:
    """``flat`` as an .npz; ``replace``: raw member bytes for some keys (crafted headers)."""
    replace = replace or {}
    members = [(f"{k}.npy", replace.get(k) or npy_bytes(v)) for k, v in flat.items()]
    members += [(f"{k}.npy", v) for k, v in replace.items() if k not in flat]
    return write_zip(path, members, compress=compress, comment=comment)


def zero_member(path: Path, name: str, shape) -> None:
    """Appends a deflated .npy member of zeros of ``shape`` (float32) to a zip, streamed (never held in memory)."""
    n = int(math.prod(shape)) * 4
    head = npy_raw("<f4", str(tuple(shape)), b"")
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf, zf.open(name, "w", force_zip64=True) as f:
        f.write(head)
        chunk = bytes(1 << 20)
        for _ in range(n >> 20):
            f.write(chunk)
        f.write(bytes(n & ((1 << 20) - 1)))


def read_safetensors_raw(path: Path):
    """(header dict, data bytes) of a .safetensors file."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def st_tensors(path: Path) -> Dict[str, Any]:
    """{name: float32 ndarray} of an F32 .safetensors file."""
    import numpy as np

    header, data = read_safetensors_raw(path)
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        assert v["dtype"] == "F32", v["dtype"]
        out[k] = np.frombuffer(data[a:b], "<f4").reshape(v["shape"]).copy()
    return out


def st_write(path: Path, tensors: Dict[str, Any], *, metadata=None, dtypes: Optional[Dict[str, str]] = None,
             header_len: Optional[Callable[[int], int]] = None, edit: Optional[Callable[[dict], Any]] = None,
             data_edit: Optional[Callable[[bytes], bytes]] = None, pad: bool = True) -> Path:
    """A .safetensors file written by hand: F32 unless ``dtypes`` says (raw bytes then given as the value);
    ``header_len(n_min) -> n`` pads the JSON header with spaces to n bytes; ``edit(header) -> header`` (dict or
    bytes) changes the header after the offsets are laid out; ``data_edit`` the data."""
    import numpy as np

    header: Dict[str, Any] = {"__metadata__": metadata} if metadata is not None else {}
    blobs, off = [], 0
    for k in sorted(tensors):
        v = tensors[k]
        if isinstance(v, tuple):  # (dtype name, shape, raw bytes)
            dt, shape, blob = v
        else:
            a = np.ascontiguousarray(v, "<f4")
            dt, shape, blob = (dtypes or {}).get(k, "F32"), list(a.shape), a.tobytes()
        header[k] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(blob)]}
        blobs.append(blob)
        off += len(blob)
    h = edit(header) if edit else header
    text = h if isinstance(h, bytes) else json.dumps(h, separators=(",", ":")).encode()
    n = header_len(len(text)) if header_len else len(text)
    data = b"".join(blobs)
    if data_edit:
        data = data_edit(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(n.to_bytes(8, "little") + text + (b" " * max(0, n - len(text)) if pad else b"") + data)
    return path


def with_low_bytes(low: int, mask: int) -> Callable[[int], int]:
    """The smallest n >= n_min with n & mask == low."""
    return lambda n_min: low + max(0, -(-(n_min - low) // (mask + 1))) * (mask + 1)


def json_with_raw(data: dict, dotted: str, raw: str) -> str:
    """``data`` as JSON text with the field at ``dotted`` set to the literal JSON text ``raw``."""
    data = json.loads(json.dumps(data))
    node = data
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = "@@RAW@@"
    return json.dumps(data, indent=1).replace('"@@RAW@@"', raw)


def photo(path: Path, h: int = 40, w: int = 50, seed: int = 0, mode: str = "RGB", fmt: Optional[str] = None,
          **save) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    a = np.stack([yy, xx, 0.5 + 0.5 * np.sin(6 * (xx + yy))], -1) * 200 + rng.uniform(0, 55, (h, w, 3))
    im = Image.fromarray(a.astype(np.uint8))
    if mode != "RGB":
        im = im.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format=fmt, **save)
    return path


def flip_bits(data: bytes, rng: random.Random, n: int, lo: int = 0) -> bytes:
    b = bytearray(data)
    for _ in range(n):
        i = rng.randrange(lo, len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def mkfifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def symlink(path: Path, target) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)
    return path


# =========================================================================== checks of an exit 0


def _json_strict(path: Path):
    def bad(c):
        raise ValueError(f"{c} in {path.name}")

    return json.loads(path.read_text(), parse_constant=bad)


def vis_run_dir(o: Outcome) -> Optional[Path]:
    m = re.search(r"wrote \d+ figure\(s\) for \d+ image\(s\) to (.+?)/?\s*$", o.stdout, re.M)
    return Path(m.group(1)) if m else None


def vis_check(processed: int, skipped: Sequence[str] = (), random_weights: bool = True,
              per_input: Optional[Dict[str, Optional[str]]] = None, maps: bool = False) -> Callable:
    """visualize exit 0: ``processed`` images, each of ``skipped`` listed as skipped, no NaN in the TSV, the
    TSV and console saying "random weights" (synthetic checkpoint), figures that are not degenerate.
    ``per_input``: {input: substring that must be in the skip list (None: must be processed)} for one run
    judging several inputs."""

    def check(o: Outcome):
        m = re.search(r"wrote (\d+) figure\(s\) for (\d+) image\(s\)", o.stdout)
        problems = []
        if not m:
            return "exit 0 without 'wrote N figure(s)'"
        d = vis_run_dir(o)
        skip_text = o.stderr[o.stderr.find("skipped:"):] if "skipped:" in o.stderr else ""
        tsv = d / "predictions.tsv" if d else None
        if tsv and tsv.is_file():
            text = tsv.read_text()
            if re.search(r"\bnan\b|\binf\b", text, re.I):
                problems.append("predictions.tsv holds nan/inf")
            if random_weights and "random" not in text.lower():
                problems.append("predictions.tsv does not say the weights are random")
        if random_weights and "random weights" not in o.stdout + o.stderr:
            problems.append("the console does not say the weights are random")
        if d:
            from PIL import Image

            for png in d.glob("*.png"):
                with Image.open(png) as im:
                    if min(im.size) < 50:
                        problems.append(f"{png.name} is {im.size[0]}x{im.size[1]} px")
        if maps and d:
            mf = d / "maps.msgpack"
            if not mf.is_file():
                problems.append("no maps.msgpack")
        if per_input is not None:
            out = {}
            for name, needle in per_input.items():
                if needle is None:
                    out[name] = (f"{name} listed as skipped" if name in skip_text else None)
                else:
                    out[name] = None if name in skip_text else f"{name} neither processed nor listed as skipped"
            if problems:
                out = {k: (v or "; ".join(problems)) for k, v in out.items()}
            n_expect = sum(1 for v in per_input.values() if v is None)
            if int(m.group(2)) != n_expect:
                out = {k: (v or f"{m.group(2)} images processed, {n_expect} expected") for k, v in out.items()}
            return out
        if int(m.group(2)) != processed:
            problems.append(f"{m.group(2)} images processed, {processed} expected")
        for s in skipped:
            if s not in skip_text:
                problems.append(f"{s} not listed as skipped")
        return "; ".join(problems) or None

    return check


def eval_check(total: int, failed: int = 0, *, invalid: Optional[int] = None, annotated: Optional[int] = None,
               warn: Sequence[str] = (), same_as: Optional[Path] = None, per_input: Optional[Dict[str, str]] = None,
               out: str = "{case}/run") -> Callable:
    """evaluate exit 0: the counts line and summary.json agree with ``total``/``failed``; every evaluated
    image has its distances; images.csv has one row per image; ``warn`` substrings on stderr; ``same_as``:
    the overall means equal that run's summary (a resumed or recomputed run gives the first run's numbers).
    ``per_input``: {input: "invalid" | "annotated" | "failed" | "absent"} judged from summary/images.csv."""

    def check(o: Outcome):
        problems = []
        m = re.search(r"(\d+) new, (\d+) already done \((\d+) in all, (\d+) failed\)", o.stdout)
        if not m:
            return "exit 0 without the counts line"
        run = Path(fill(out, o.dir))
        try:
            summary = _json_strict(run / "summary.json")
        except (OSError, ValueError) as e:
            return f"summary.json unreadable: {e}"
        imgs = summary["images"]
        if int(m.group(3)) != total or imgs["total"] != total:
            problems.append(f"{m.group(3)} images in all (summary {imgs['total']}), {total} expected")
        if int(m.group(4)) != failed or imgs["failed"] != failed:
            problems.append(f"{m.group(4)} failed (summary {imgs['failed']}), {failed} expected")
        if invalid is not None and imgs.get("invalid_annotations") != invalid:
            problems.append(f"invalid_annotations {imgs.get('invalid_annotations')}, {invalid} expected")
        if annotated is not None and imgs.get("annotated") != annotated:
            problems.append(f"annotated {imgs.get('annotated')}, {annotated} expected")
        mad = summary["overall"].get("mean_attention_distance")
        if imgs["evaluated"] and (mad is None or any(v is None for row in mad for v in row)):
            problems.append("evaluated images but a mean attention distance is null")
        import csv

        with open(run / "images.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        names = [r["image"] for r in rows]
        if len(names) != len(set(names)):
            problems.append("images.csv lists an image twice")
        if len(rows) != total:
            problems.append(f"images.csv has {len(rows)} rows, {total} expected")
        for w in warn:
            if w not in o.stderr:
                problems.append(f"stderr does not say {w!r}")
        if same_as is not None:
            ref = json.loads(Path(same_as).read_text())
            diff = _max_diff(ref["overall"], summary["overall"])
            if diff is None or diff > 1e-5:
                problems.append(f"overall means differ from the clean run's (max difference {diff})")
        if per_input is not None:
            by_name = {r["image"]: r for r in rows}
            verdicts = {}
            for name, want in per_input.items():
                row = next((r for n, r in by_name.items() if n.endswith(name)), None)
                if row is None:
                    verdicts[name] = None if want == "absent" else "no row in images.csv"
                elif want == "absent":
                    verdicts[name] = "has a row in images.csv"
                elif want == "failed":
                    verdicts[name] = None if row["status"] == "failed" else f"status {row['status']}, expected failed"
                elif want == "invalid":
                    ok = row["status"] == "ok" and row.get("annotated") == "0" and row.get("note")
                    verdicts[name] = None if ok else (f"scored as annotated={row.get('annotated')!r} note="
                                                      f"{row.get('note')!r}; expected an invalid annotation")
                elif want == "annotated":
                    verdicts[name] = None if row.get("annotated") == "1" else f"not scored ({row.get('note')!r})"
                elif want == "ok":
                    verdicts[name] = None if row["status"] == "ok" else f"status {row['status']}: {row['reason']}"
            if problems:
                verdicts = {k: (v or "; ".join(problems)) for k, v in verdicts.items()}
            return verdicts
        return "; ".join(problems) or None

    return check


def _max_diff(a, b) -> Optional[float]:
    """Largest absolute difference between two JSON trees of numbers (None: different structure)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return None
        ds = [_max_diff(a[k], b[k]) for k in a]
        return None if any(d is None for d in ds) else max(ds, default=0.0)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return None
        ds = [_max_diff(x, y) for x, y in zip(a, b, strict=True)]
        return None if any(d is None for d in ds) else max(ds, default=0.0)
    if a is None or b is None:
        return 0.0 if a is b else None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b)
    return 0.0 if a == b else None


def pert_check(images: int, failed: int = 0) -> Callable:
    """perturbation exit 0: ``images`` scored and ``failed`` failed (its line says "N of T images scored (F failed)",
    formerly "N images (F failed)", N the scored ones); every AUC and accuracy finite; perturbation.json strict
    JSON."""

    def check(o: Outcome):
        m = re.search(r"(\d+) (?:of \d+ )?images (?:scored )?\((\d+) failed\), clean top-1 (\S+) %", o.stdout)
        if not m:
            return "exit 0 without the result line"
        problems = []
        if (int(m.group(1)), int(m.group(2))) != (images, failed):
            problems.append(f"{m.group(1)} images ({m.group(2)} failed), expected {images} ({failed} failed)")
        if not math.isfinite(float(m.group(3))):
            problems.append(f"clean top-1 {m.group(3)}")
        for line in o.stdout.splitlines():
            for v in re.findall(r"(?:negative|positive)\s+(\S+)", line):
                if not math.isfinite(float(v)):
                    problems.append(f"AUC {v}: {line.strip()}")
        try:
            _json_strict(o.dir / "run" / "perturbation.json")
        except (OSError, ValueError) as e:
            problems.append(f"perturbation.json: {e}")
        return "; ".join(problems) or None

    return check


def payload_check(fn: Callable[[Any], Optional[str]]) -> Callable:
    def check(o: Outcome):
        if o.payload is None:
            return "no payload"
        return fn(o.payload)

    return check


def _config_check(want: Callable[[Dict[str, Any]], Optional[str]]) -> Callable:
    """A load that succeeded: ``want(config summary)`` says whether the config holds what the file says."""
    return payload_check(lambda p: want(p["config"]))


def same_load(tol: float = 0.0, config_same: bool = True) -> Callable:
    """A load that succeeded must give exactly (within ``tol``) the reference file's weights and config."""

    def fn(p):
        if not p.get("same_keys"):
            return "loaded with other keys than the intact file"
        if p["max_diff"] is None or p["max_diff"] > tol:
            return f"loaded weights differ from the intact file's (max abs difference {p['max_diff']:.3g})"
        if config_same and p["config"] != p["ref_config"]:
            d = {k: (p["ref_config"][k], v) for k, v in p["config"].items() if p["ref_config"].get(k) != v}
            return f"config differs from the intact file's: {d}"
        if "finite" in p and not p["finite"]:
            return "predict returned non-finite logits"
        return None

    return payload_check(fn)


# =========================================================================== the cases

Build = Callable[[Path, Dict[str, Any]], List[Case]]
BUILDERS: Dict[str, Build] = {}


def surface(name: str):
    def register(fn: Build) -> Build:
        BUILDERS[name] = fn
        return fn

    return register


def _vis(ckpt, *args, images=None, extra=()) -> tuple:
    argv = ["--ckpt", str(ckpt)]
    if images is not None:
        argv += ["--images", *[str(i) for i in images]]
    return ("cmd", VIS, [*argv, *args, "--out", "{case}/out", "--run-name", "r", "--no-compile-cache", "-q",
                         *extra])


def _eval(ckpt, data, *args, out="{case}/run") -> tuple:
    return ("cmd", EVAL, ["--ckpt", str(ckpt), "--data", str(data), "--out", out, "--no-progress", *args])


def _pert(ckpt, data, *args) -> tuple:
    return ("cmd", PERT, ["--ckpt", str(ckpt), "--data", str(data), "--out", "{case}/run", *args])


# --------------------------------------------------------------------------- .npz checkpoints


@surface("npz")
def npz_cases(root: Path, fx: Dict[str, Any]) -> List[Case]:
    import numpy as np

    d = root / "npz"
    d.mkdir(exist_ok=True)
    base = Path(fx["base"])
    flat = dict(np.load(base))
    raw = base.read_bytes()
    comment = zipfile.ZipFile(base).comment
    cases: List[Case] = []
    qk = "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"
    ln = "Transformer/encoderblock_0/LayerNorm_0/scale"

    def add(name, path, kind, *, expect="refuse", same=True, tol=0.0, quick=False, timeout=90.0, names=None,
            config_same=True, forbid=()):
        cases.append(Case(f"npz-{name}", "npz", kind, ("lib", "load", {"path": str(path),
                                                                        "same_as": str(base) if same else None}),
                          names=names or [Path(path).name], expect=expect,
                          check=same_load(tol, config_same) if same else None, quick=quick, timeout=timeout,
                          forbid=forbid))

    # truncated
    for cut in (0, 1, 8, 30, 64, 512, len(raw) // 3, len(raw) // 2, len(raw) - 100, len(raw) - 22, len(raw) - 1):
        p = d / f"cut{cut}.npz"
        p.write_bytes(raw[:cut])
        add(f"truncated-{cut}", p, f"base .npz cut to {cut} of {len(raw)} bytes", quick=cut in (30, len(raw) // 2))
    # bit flips
    rng = random.Random(17)
    for i in range(24):
        p = d / f"flip{i:02d}.npz"
        p.write_bytes(flip_bits(raw, rng, rng.randint(1, 5)))
        add(f"bitflip-{i:02d}", p, "base .npz with 1-5 random bit flips", quick=i < 3)
    # dtypes
    for dt in ("int32", "float16", "float64", ">f4", "complex64", "bool", "U5", "S5", "uint8", "datetime64[s]"):
        f = dict(flat)
        a = f[qk]
        if dt in ("U5", "S5"):
            f[qk] = a.astype(str).astype(dt)
        elif dt == "datetime64[s]":
            f[qk] = a.astype(np.int64).astype(dt)
        else:
            f[qk] = a.astype(dt)
        valid = dt in ("float16", "float64", ">f4")
        tag = {">f4": "bigendian", "datetime64[s]": "datetime64"}.get(dt, dt)
        p = write_npz(d / f"dtype-{tag}.npz", f, comment=comment)
        if valid:  # a float file of another width: must read exactly what it holds
            ref = dict(flat)
            ref[qk] = a.astype(dt).astype(np.float32)
            refp = write_npz(d / f"dtype-{tag}-ref.npz", ref, comment=comment)
            cases.append(Case(f"npz-dtype-{dt}", "npz", f"query kernel stored as {dt} (valid float)",
                              ("lib", "load", {"path": str(p), "same_as": str(refp)}), names=[p.name, qk],
                              expect="handle", check=same_load(), quick=dt == "float16"))
        else:
            add(f"dtype-{dt}", p, f"query kernel stored as {dt}", same=False, names=[p.name, qk, "query"],
                quick=dt == "int32")
    f = dict(flat)
    f[qk] = np.array([object()] * 3, dtype=object)
    p = d / "object.npz"
    with open(p, "wb") as fh:
        np.savez(fh, **f)
    add("object-array", p, "query kernel is a pickled object array (must never be unpickled)", same=False,
        names=[p.name, "pickle", "object", qk], quick=True)
    f = dict(flat)
    f[qk] = np.zeros(3, dtype=[("a", "<f4"), ("b", "<i4")])
    add("dtype-structured", write_npz(d / "structured.npz", f), "query kernel is a structured array", same=False,
        names=["structured.npz", qk])
    # zero-sized dimensions
    for key, shape in (("embedding/kernel", (0, 16, 3, 10)), ("embedding/kernel", (16, 16, 3, 0)),
                       (qk, (10, 0, 5)), (qk, (10, 2, 0)), ("head/kernel", (10, 0)),
                       ("Transformer/posembed_input/pos_embedding", (1, 0, 10)), ("cls", (1, 1, 0))):
        f = dict(flat)
        f[key] = np.zeros(shape, np.float32)
        tag = key.split("/")[-2] if "/" in key else key
        p = write_npz(d / f"zero-{tag}-{'x'.join(map(str, shape))}.npz", f)
        add(f"zero-{tag}-{'x'.join(map(str, shape))}", p, f"{key} of shape {shape} (a zero-sized dimension)",
            same=False, names=[p.name, key], quick=key == "embedding/kernel" and shape[0] == 0)
    # huge / lying declared shapes (crafted member headers)
    for tag, descr, shape, data in (("1e12", "<f4", "(1000000000000,)", b"\0" * 4000),
                                    ("2e62", "<f4", "(4611686018427387904, 4611686018427387904)", b"\0" * 64),
                                    ("neg", "<f4", "(-1,)", b"\0" * 40),
                                    ("short", "<f4", "(10, 2, 5)", b"\0" * 40),
                                    ("long", "<f4", "(10, 2, 5)", b"\0" * 4000),
                                    ("descr-f5", "<f5", "(10, 2, 5)", b"\0" * 400),
                                    ("descr-O", "|O", "(10, 2, 5)", b"\0" * 400),
                                    ("fortran", "<f4", "(10, 2, 5)",
                                     flat[qk].transpose(2, 1, 0).astype("<f4").tobytes())):
        p = write_npz(d / f"header-{tag}.npz", flat, comment=comment, replace={qk: npy_raw(descr, shape, data,
                                                                                           tag == "fortran")})
        if tag == "fortran":
            cases.append(Case("npz-header-fortran", "npz", "query kernel stored in Fortran order (valid)",
                              ("lib", "load", {"path": str(p), "same_as": str(base)}), names=[p.name],
                              expect="handle", check=same_load()))
        else:
            add(f"header-{tag}", p, f"query kernel member declares shape {shape} dtype {descr} over "
                f"{len(data)} data bytes", same=False, names=[p.name, qk, "query"], quick=tag == "1e12")
    # deflate bombs, scaled small
    p = write_npz(d / "bomb.npz", flat, compress=True, comment=comment)
    zero_member(p, "extra/bomb.npy", (64 << 20,))  # 256 MiB of zeros deflate to ~250 KiB
    add("deflate-bomb", p, f"extra member of 256 MiB zeros, deflated ({p.stat().st_size // 1024} KiB file)",
        same=False, names=[p.name, "bomb"], quick=True, timeout=120)
    p = write_npz(d / "bomb-600m.npz", flat, compress=True, comment=comment)
    zero_member(p, "extra/bomb.npy", (150 << 20,))  # 600 MiB of zeros: past the 512 MiB of constant data allowed
    add("deflate-bomb-600m", p, f"extra member of 600 MiB zeros, deflated ({p.stat().st_size // 1024} KiB file)",
        same=False, names=[p.name, "bomb"], timeout=120)
    p = write_npz(d / "bomb-key.npz", {k: v for k, v in flat.items() if k != qk}, compress=True, comment=comment)
    zero_member(p, f"{qk}.npy", (10, 2, 5 << 20))  # the query kernel itself a bomb (400 MiB)
    add("deflate-bomb-key", p, "query kernel of 400 MiB zeros, deflated", same=False, names=[p.name, qk, "query"],
        timeout=120)
    p = write_npz(d / "compressed.npz", flat, compress=True, comment=comment)
    cases.append(Case("npz-compressed", "npz", "the base weights in a deflated .npz (valid)",
                      ("lib", "load", {"path": str(p), "same_as": str(base)}), names=[p.name], expect="handle",
                      check=same_load(), quick=True))
    # non-finite and finite-but-huge weights
    for tag, key, value in (("nan-query", qk, np.nan), ("inf-posemb", "Transformer/posembed_input/pos_embedding",
                                                         np.inf), ("neginf-bias", "head/bias", -np.inf)):
        f = dict(flat)
        f[key] = f[key].copy()
        f[key].reshape(-1)[3] = value
        p = write_npz(d / f"{tag}.npz", f, comment=comment)
        add(tag, p, f"one {value} in {key}", same=False, names=[p.name, key], quick=tag == "nan-query")
    f = dict(flat)
    f[ln] = np.full_like(f[ln], 1e30)
    p = write_npz(d / "huge-ln.npz", f, comment=comment)
    cases.append(Case("npz-huge-ln", "npz", "finite weights, block 0 LayerNorm scale 1e30 (NaN outputs)",
                      ("lib", "load", {"path": str(p)}), names=["huge-ln.npz", "not finite", "nan"], expect="refuse",
                      check=payload_check(lambda q: "predict returned non-finite logits without an error"
                                          if not q.get("finite") else None), quick=True))
    # missing / extra keys, wrappers, duplicates
    for tag, drop in (("no-head", ["head/kernel"]), ("no-cls", ["cls"]),
                      ("no-query-bias", ["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/bias"]),
                      ("no-block0", [k for k in flat if "encoderblock_0/" in k]),
                      ("no-encoder-norm", [k for k in flat if "encoder_norm" in k])):
        f = {k: v for k, v in flat.items() if k not in drop}
        p = write_npz(d / f"{tag}.npz", f, comment=comment)
        add(tag, p, f"keys removed: {', '.join(drop[:2])}{'...' if len(drop) > 2 else ''}", same=False,
            names=[p.name, *drop[:1], "missing"], quick=tag == "no-cls")
    for tag, extra in (("extra-key", {"foo/bar": np.zeros(3, np.float32)}),
                       ("extra-block-key", {"Transformer/encoderblock_0/extra/kernel": np.zeros((10, 10), np.float32)}),
                       ("extra-block5", {"Transformer/encoderblock_5/LayerNorm_0/scale": np.ones(10, np.float32)})):
        p = write_npz(d / f"{tag}.npz", {**flat, **extra}, comment=comment)
        add(tag, p, f"an extra key {next(iter(extra))}", same=False, names=[p.name, next(iter(extra))])
    p = write_npz(d / "wrapped.npz", {f"opt/target/{k}": v for k, v in flat.items()}, comment=comment)
    cases.append(Case("npz-wrapped", "npz", "every key under opt/target/ (a Flax training checkpoint, valid)",
                      ("lib", "load", {"path": str(p), "same_as": str(base)}), names=[p.name], expect="handle",
                      check=same_load()))
    other = dict(flat)
    other["cls"] = other["cls"] + 1.0
    p = write_zip(d / "duplicate.npz", [(f"{k}.npy", npy_bytes(v)) for k, v in flat.items()]
                  + [("cls.npy", npy_bytes(other["cls"]))], comment=comment)
    add("duplicate-member", p, "two members named cls.npy with different values", same=True,
        names=[p.name, "cls", "duplicate"])
    f = dict(flat)
    f["Transformer/posembed_input/pos_embedding"] = np.zeros((1, 6, 10), np.float32)
    add("posemb-5", write_npz(d / "posemb5.npz", f), "position embedding of 1 + 5 tokens (not a square grid)",
        same=False, names=["posemb5.npz", "pos_embedding"])
    # not an .npz at all, or renamed
    (d / "empty.npz").write_bytes(b"")
    add("empty", d / "empty.npz", "an empty file", same=False, quick=True)
    (d / "folder.npz").mkdir(exist_ok=True)
    add("folder", d / "folder.npz", "a folder named .npz", same=False)
    photo(d / "photo.png")
    shutil.copy(d / "photo.png", d / "png.npz")
    add("png", d / "png.npz", "a PNG photo named .npz", same=False)
    (d / "text.npz").write_text("hello\n" * 100)
    add("text", d / "text.npz", "a text file named .npz", same=False)
    import pickle

    (d / "pickle.npz").write_bytes(pickle.dumps({"cls": flat["cls"]}, protocol=2))
    add("pickle", d / "pickle.npz", "a pickle named .npz (must not be unpickled)", same=False, quick=True)
    write_zip(d / "zip-txt.npz", [("readme.txt", b"hello")])
    add("zip-no-npy", d / "zip-txt.npz", "a zip holding only readme.txt", same=False)
    write_zip(d / "zip-empty.npz", [])
    add("zip-empty", d / "zip-empty.npz", "a zip with no members", same=False)
    write_zip(d / "nested.npz", [("inner.npz", raw)])
    add("zip-nested", d / "nested.npz", "a zip holding the .npz", same=False)
    import gzip

    (d / "gz.npz").write_bytes(gzip.compress(raw))
    add("gzip", d / "gz.npz", "the .npz gzipped, still named .npz", same=False)
    for tag, name in (("upper", "BASE.NPZ"), ("bin", "base.bin"), ("noext", "base"), ("st", "npz.safetensors")):
        shutil.copy(base, d / name)
        add(f"renamed-{tag}", d / name, f"the base .npz renamed {name}", expect="either", same=True,
            forbid=["pickle"])
    symlink(d / "dangling.npz", d / "nothere.npz")
    add("dangling-link", d / "dangling.npz", "a dangling symlink", same=False)
    symlink(d / "zero.npz", "/dev/zero")
    add("dev-zero", d / "zero.npz", "a symlink to /dev/zero named .npz", same=False, timeout=HANG_S, quick=True,
        forbid=["empty"])
    mkfifo(d / "fifo.npz")
    add("fifo", d / "fifo.npz", "a FIFO named .npz (nobody writes to it)", same=False, timeout=HANG_S, quick=True,
        forbid=["empty"])
    # the same kinds through the command
    for tag in ("cut30", "object", "zero-embedding-0x16x3x10", "header-1e12", "bomb", "nan-query", "no-cls",
                "fifo"):
        p = d / f"{tag}.npz"
        cases.append(Case(f"npz-visualize-{tag}", "npz", f"visualize.py --ckpt {p.name}",
                          _vis(p, images=[fx["photo"]]), names=[p.name], expect="refuse",
                          quick=tag in ("cut30", "header-1e12"), timeout=120,
                          forbid=["neither an existing file", "empty"] if tag == "fifo" else ()))
    return cases


# --------------------------------------------------------------------------- .safetensors files


@surface("safetensors")
def st_cases(root: Path, fx: Dict[str, Any]) -> List[Case]:
    import ml_dtypes
    import numpy as np

    d = root / "st"
    d.mkdir(exist_ok=True)
    pristine = Path(fx["hf"]) / "model.safetensors"
    header, _ = read_safetensors_raw(pristine)
    meta = header.get("__metadata__")
    t = st_tensors(pristine)
    keys = sorted(t)
    patch = next(k for k in keys if k.endswith("patch_embeddings.projection.weight"))
    query = next(k for k in keys if k.endswith("attention.attention.query.weight"))
    cases: List[Case] = []
    n = [0]

    def place(name: str) -> Path:
        n[0] += 1
        p = d / f"{n[0]:02d}" / name  # each file alone in its folder: no config.json beside it
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    ref = st_write(place("model.safetensors"), t, metadata=meta)

    def add(name, path, kind, *, expect="refuse", same_as=None, tol=0.0, quick=False, names=None, timeout=90.0):
        check = same_load(tol) if same_as else None
        cases.append(Case(f"st-{name}", "safetensors", kind, ("lib", "load", {"path": str(path),
                                                                               "same_as": str(same_as) if same_as
                                                                               else None}),
                          names=names or [str(Path(path).parent.name) + "/" + Path(path).name, Path(path).name],
                          expect=expect, check=check, quick=quick, timeout=timeout,
                          forbid=() if name in ("pickle", "torch-zip") else ["pickle"]))

    # header lengths that look like a pickle (0x80) or a zip (PK): valid files
    for tag, low, mask in (("0x80", 0x80, 0xFF), ("PK", 0x4B50, 0xFFFF), ("0x80-nometa", 0x80, 0xFF)):
        p = st_write(place("model.safetensors"), t, metadata=None if "nometa" in tag else meta,
                     header_len=with_low_bytes(low, mask))
        add(f"header-len-{tag}", p, f"valid file whose 8-byte header length starts with {tag}", expect="handle",
            same_as=ref, quick=tag != "0x80-nometa")
    p = st_write(place("model.bin"), t, metadata=meta, header_len=with_low_bytes(0x80, 0xFF))
    add("header-len-0x80-bin", p, "the same valid file named model.bin", expect="either", same_as=ref)
    # dtypes
    for dt, conv in (("F16", np.float16), ("BF16", ml_dtypes.bfloat16), ("F64", np.float64),
                     ("F8_E4M3", ml_dtypes.float8_e4m3fn), ("F8_E5M2", ml_dtypes.float8_e5m2)):
        q = t[query].astype(conv)
        rounded = dict(t)
        rounded[query] = q.astype(np.float32)
        refp = st_write(place("model.safetensors"), rounded, metadata=meta)
        tensors = dict(t)
        tensors[query] = (dt, list(q.shape), q.tobytes())
        p = st_write(place("model.safetensors"), tensors, metadata=meta)
        add(f"dtype-{dt}", p, f"query weight stored as {dt} (valid)", expect="handle", same_as=refp,
            quick=dt == "F8_E4M3")
    for dt, arr in (("I64", t[query].astype(np.int64)), ("BOOL", t[query] > 0), ("U8", t[query].astype(np.uint8)),
                    ("X9", t[query])):
        tensors = dict(t)
        tensors[query] = (dt, list(arr.shape), np.ascontiguousarray(arr).tobytes())
        p = st_write(place("model.safetensors"), tensors, metadata=meta)
        add(f"dtype-{dt}", p, f"query weight of dtype {dt}", names=[query, dt, p.parent.name])
    # zero-sized dimensions
    for tag, key, shape in (("patch-0", patch, [0, 3, 16, 16]), ("patch-out-0", patch, [128, 3, 0, 16]),
                            ("query-0", query, [0, 128]), ("query-in-0", query, [128, 0])):
        tensors = dict(t)
        tensors[key] = ("F32", shape, b"")
        p = st_write(place("model.safetensors"), tensors, metadata=meta)
        add(f"zero-{tag}", p, f"{key} of shape {shape}", names=[key, p.parent.name], quick=tag == "patch-0")
    # malformed headers
    first = keys[0]

    def edit_first(**kv):
        return lambda h: {**h, first: {**h[first], **kv}}

    for tag, kw, kind in (
            ("not-json", dict(edit=lambda h: json.dumps(h).encode()[:-5]), "header JSON cut short"),
            ("array", dict(edit=lambda h: b"[1, 2, 3]"), "header is a JSON array"),
            ("trailing-comma", dict(edit=lambda h: json.dumps(h).encode()[:-1] + b",}"),
             "header with a trailing comma"),
            ("offsets-beyond", dict(edit=edit_first(data_offsets=[0, 10**9])), "data_offsets beyond the file"),
            ("offsets-negative", dict(edit=edit_first(data_offsets=[-8, 8])), "negative data_offsets"),
            ("offsets-reversed", dict(edit=edit_first(data_offsets=[64, 0])), "data_offsets reversed"),
            ("offsets-overlap", dict(edit=lambda h: {**h, keys[1]: {**h[keys[1]], "data_offsets":
                                                                    h[first]["data_offsets"]}}),
             "two tensors on the same bytes"),
            ("shape-mismatch", dict(edit=edit_first(shape=[1, 1, 1])), "shape does not match its bytes"),
            ("shape-string", dict(edit=edit_first(shape=[2, "3"])), "shape holds a string"),
            ("shape-negative", dict(edit=edit_first(shape=[-1])), "negative shape"),
            ("shape-huge", dict(edit=edit_first(shape=[10**12, 10**12])), "shape 1e12 x 1e12 over few bytes"),
            ("no-offsets", dict(edit=lambda h: {**h, first: {"dtype": "F32", "shape": h[first]["shape"]}}),
             "an entry without data_offsets"),
            ("meta-not-dict", dict(edit=lambda h: {**h, "__metadata__": [1]}), "__metadata__ is a list"),
            ("meta-int", dict(edit=lambda h: {**h, "__metadata__": {"format": 3}}), "__metadata__ value not a string"),
            ("duplicate-key", dict(edit=lambda h: json.dumps(h).encode()[:-1] + b"," + json.dumps(
                {first: h[first]}).encode()[1:]), "the same tensor name twice in the header"),
            ("len-0", dict(header_len=lambda n: 0, pad=False), "header length 0"),
            ("len-huge", dict(header_len=lambda n: 2**63 - 1, pad=False), "header length 2**63 - 1"),
            ("len-beyond", dict(header_len=lambda n: 50_000_000, pad=False), "header length 50 MB, beyond the file"),
            ("padded-1mb", dict(header_len=lambda n: n + (1 << 20)), "header padded with 1 MiB of spaces (valid)"),
    ):
        p = st_write(place("model.safetensors"), t, metadata=meta, **kw)
        if tag == "padded-1mb":
            add(tag, p, kind, expect="handle", same_as=ref)
        else:
            add(tag, p, kind, quick=tag in ("not-json", "len-huge"))
    # data damage
    for tag, fn, kind in (("data-cut", lambda b: b[:-100], "data cut by 100 bytes"),
                          ("data-extra", lambda b: b + b"\0" * 100, "100 bytes after the last tensor"),
                          ("nan", None, "one NaN in the query weight")):
        if fn is None:
            tensors = dict(t)
            tensors[query] = t[query].copy()
            tensors[query][0, 0] = np.nan
            p = st_write(place("model.safetensors"), tensors, metadata=meta)
            add(tag, p, kind, names=[query, p.parent.name])
        else:
            p = st_write(place("model.safetensors"), t, metadata=meta, data_edit=fn)
            add(tag, p, kind, expect="refuse" if tag == "data-cut" else "either",
                same_as=ref if tag == "data-extra" else None)
    raw = ref.read_bytes()
    for cut in (0, 7, 8, 100, len(raw) // 2):
        p = place("model.safetensors")
        p.write_bytes(raw[:cut])
        add(f"truncated-{cut}", p, f"cut to {cut} of {len(raw)} bytes", quick=cut == 7)
    # other files named .safetensors
    import pickle

    p = place("model.safetensors")
    shutil.copy(fx["base"], p)
    add("npz-renamed", p, "a Google .npz renamed .safetensors", expect="either", quick=True)
    p = place("model.safetensors")
    p.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=2))
    add("pickle", p, "a protocol-2 pickle (torch.save's old format) named .safetensors")
    p = place("model.safetensors")
    write_zip(p, [("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2)), ("archive/version", b"3\n")])
    add("torch-zip", p, "a zip like torch.save's named .safetensors")
    p = place("model.safetensors")
    p.write_bytes(os.urandom(4096))
    add("random", p, "4 KiB of random bytes")
    # DeiT distillation files (a second token and head vitjax does not compute): refused by name
    pos = next(k for k in keys if k.endswith("position_embeddings"))
    deit = {k.replace("vit.", "deit.", 1): v for k, v in t.items() if not k.startswith("classifier.")}
    deit["deit.embeddings.distillation_token"] = t[pos][:, :1] * 0.5
    deit[pos.replace("vit.", "deit.", 1)] = np.concatenate([t[pos][:, :1], t[pos]], axis=1)
    for head in ("cls_classifier", "distillation_classifier"):
        deit[f"{head}.weight"], deit[f"{head}.bias"] = t["classifier.weight"], t["classifier.bias"]
    p = st_write(place("model.safetensors"), deit, metadata=meta)
    add("hf-deit-distilled", p, "a Hugging Face DeiTForImageClassificationWithTeacher file (deit. prefix)",
        names=["DeiT", "distillation"], quick=True)
    timm_file = Path(fx["timm"]) / "model.safetensors" if fx.get("timm") else None
    if timm_file and timm_file.is_file():
        tt = st_tensors(timm_file)
        tt["dist_token"] = tt["cls_token"] * 0.5
        tt["pos_embed"] = np.concatenate([tt["pos_embed"][:, :1], tt["pos_embed"]], axis=1)
        tt["head_dist.weight"], tt["head_dist.bias"] = tt["head.weight"], tt["head.bias"]
        p = st_write(place("model.safetensors"), tt, metadata={"format": "pt"})
        add("timm-deit-distilled", p, "a timm distilled DeiT file (dist_token, head_dist)",
            names=["distill", "dist_token", "DeiT"])
    # a sharded index
    for tag, index in (("index-missing-shard", {"weight_map": {k: "model-00001.safetensors" for k in keys}}),
                       ("index-escape", {"weight_map": {k: "../../../../etc/passwd" for k in keys}}),
                       ("index-not-dict", {"weight_map": [1, 2]}),
                       ("index-absolute", {"weight_map": {k: str(ref) for k in keys}})):
        p = place("model.safetensors.index.json")
        p.write_text(json.dumps(index))
        add(tag, p, f"model.safetensors.index.json: {tag}",
            names=[p.name, "index", "weight_map", "shard", "model-00001.safetensors"])
    # through the command
    for tag in ("not-json", "zero-patch-0", "dtype-F8_E4M3", "pickle"):
        c = next(c for c in cases if c.id == f"st-{tag}")
        p = Path(c.run[2]["path"])
        cases.append(Case(f"st-visualize-{tag}", "safetensors", f"visualize.py --ckpt {c.kind}",
                          _vis(p, images=[fx["photo"]]), names=[p.parent.name + "/" + p.name],
                          expect="handle" if tag.startswith("dtype") else "refuse",
                          check=vis_check(1, random_weights=False) if tag.startswith("dtype") else None,
                          quick=tag == "not-json", timeout=120))
    return cases


# --------------------------------------------------------------------------- config.json / preprocessor_config.json

RAWS = ["1e400", "true", "2.9", '["gelu"]', "null", "-1", "NaN", "1e300", "1e-300", '"abc"', "[1, 2]", "0",
        "1000000000000000000000000000000", '"2"', "{}"]


def _num(raw: str):
    try:
        v = json.loads(raw)
    except ValueError:
        return None
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


@surface("config")
def config_cases(root: Path, fx: Dict[str, Any]) -> List[Case]:
    d = root / "config"
    d.mkdir(exist_ok=True)
    cases: List[Case] = []
    hf, timm = Path(fx["hf"]), Path(fx.get("timm", ""))
    hf_cfg = json.loads((hf / "config.json").read_text())
    n = [0]

    def folder(src: Path, edits: Dict[str, str], drop: Sequence[str] = ()) -> Path:
        n[0] += 1
        f = d / f"{n[0]:03d}"
        f.mkdir(parents=True, exist_ok=True)
        for name in ("model.safetensors", "config.json", "preprocessor_config.json"):
            if (src / name).exists() and name not in drop:
                shutil.copy(src / name, f / name)
        for name, text in edits.items():
            (f / name).write_text(text)
        return f

    def add(fid, src, file, dotted, raw, validity, want=None, quick=False, drop=()):
        data = json.loads((src / file).read_text())
        f = folder(src, {file: json_with_raw(data, dotted, raw)}, drop)
        path = f / "model.safetensors"
        expect = {"valid": "handle", "invalid": "refuse", "either": "either"}[validity]
        check = payload_check(lambda p: want(p["config"])) if want else None
        if validity == "invalid":
            check = None  # exit 0 is wrong
        cases.append(Case(f"config-{fid}", "config", f"{file} {dotted} = {raw}",
                          ("lib", "load", {"path": str(path), "predict": False}),
                          names=[dotted.split(".")[-1]], expect=expect, check=check, quick=quick))

    def eq(name, value):
        return lambda c: None if c[name] == value else f"config.{name} is {c[name]!r}, the file says {value!r}"

    # Hugging Face config.json (ViTForImageClassification, width 128, 1 layer, 32 px, patch 16, 5 labels)
    for raw in RAWS + ["4", "2.0", "3"]:
        v = json.loads(raw) if raw not in ("1e400", "NaN") else None
        valid = isinstance(v, int) and not isinstance(v, bool) and v >= 1 and 128 % v == 0
        validity = "valid" if valid else ("either" if raw == "2.0" else "invalid")
        add(f"hf-heads-{raw}", hf, "config.json", "num_attention_heads", raw, validity,
            want=eq("num_heads", 2 if raw == "2.0" else v), quick=raw in ("1e400", "true", "2.9"))
    for raw in RAWS + ["1e-5", "0.5"]:
        v = _num(raw)
        validity = ("valid" if raw == "1e-5" else "either" if raw in ("1e-300", "0.5") else "invalid")
        add(f"hf-eps-{raw}", hf, "config.json", "layer_norm_eps", raw, validity,
            want=eq("layer_norm_eps", v), quick=raw in ("null", "-1", "NaN"))
    for raw in ['["gelu"]', "null", "true", "2.9", '"abc"', '"relu"', '"gelu_new"', '"gelu"', "{}"]:
        validity = "valid" if raw in ('"gelu_new"', '"gelu"') else "invalid"
        add(f"hf-act-{raw}", hf, "config.json", "hidden_act", raw, validity,
            want=eq("gelu_approximate", raw == '"gelu_new"'), quick=raw == '["gelu"]')
    for raw in RAWS + ["32", "[32, 32]", "[16, 64]", "48", "[32, 32, 32]"]:
        validity = ("valid" if raw in ("32", "[32, 32]") else "either" if raw in ("[16, 64]", "48") else "invalid")
        want = eq("image_size", [16, 64] if raw == "[16, 64]" else [48, 48] if raw == "48" else [32, 32])
        # without preprocessor_config.json (whose size would be the input size): the grid is the config's
        add(f"hf-size-{raw}", hf, "config.json", "image_size", raw, validity, want=want,
            drop=["preprocessor_config.json"])
    for raw in ["8", "32", "2.9", "true", "null", "[16, 16]", "16", "-1", "1e400"]:
        validity = "valid" if raw in ("16", "[16, 16]") else "invalid"
        add(f"hf-patch-{raw}", hf, "config.json", "patch_size", raw, validity, want=eq("patch_size", [16, 16]))
    names5 = {str(i): f"c{i}" for i in range(5)}
    for raw in ["true", "2.9", "null", '"abc"', '["a", "b"]', '{"0": "a"}', '{"0": 1, "1": 2, "2": 3, "3": 4, "4": 5}',
                '{"a": "x", "b": "y", "c": "z", "d": "w", "e": "v"}', json.dumps(names5)]:
        validity = "valid" if raw == json.dumps(names5) else "invalid"
        add(f"hf-id2label-{raw[:20]}", hf, "config.json", "id2label", raw, validity,
            want=eq("class_names", list(names5.values())))
    for raw in ["true", "2.9", "null", "1e400", "256"]:
        add(f"hf-hidden-{raw}", hf, "config.json", "hidden_size", raw, "either" if raw == "256" else "invalid",
            want=eq("num_heads", 2))
    # Hugging Face preprocessor_config.json
    third = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    for fld in ("image_mean", "image_std"):
        for raw in RAWS + ["[true, false, true]", "[0.5, 0.5, 0.5, 0.5]", "[0.485, 0.456, 0.406]", "0.25"]:
            v = _num(raw)
            lo, hi = ((-10, 10) if fld == "image_mean" else (1e-3, 10))
            if raw in ("[0.485, 0.456, 0.406]", "0.25"):
                validity = "valid"
            elif v is not None and lo <= v <= hi:
                validity = "either"
            else:
                validity = "invalid"
            value = json.loads(raw) if validity != "invalid" else None
            want = None
            if value is not None:
                triple = value if isinstance(value, list) else [value] * 3
                want = eq("pixel_mean" if fld == "image_mean" else "pixel_std", [float(x) for x in triple])
            add(f"pre-{fld}-{raw[:24]}", hf, "preprocessor_config.json", fld, raw, validity, want=want,
                quick=(fld, raw) in (("image_mean", "[true, false, true]"), ("image_std", "1e-300")))
    for raw in ["0", "-1", "NaN", "1e400", "true", '"abc"', "null", "2.9", "1e300", "1e-300", "0.00392156862745098"]:
        validity = "valid" if raw == "0.00392156862745098" else ("either" if raw == "1e-300" else "invalid")
        add(f"pre-rescale-{raw}", hf, "preprocessor_config.json", "rescale_factor", raw, validity,
            want=eq("pixel_mean", third["image_mean"]))
    for raw in ["1", '"yes"', "null", "2.9", "true"]:
        add(f"pre-normalize-{raw}", hf, "preprocessor_config.json", "do_normalize", raw,
            "valid" if raw == "true" else "invalid", want=eq("pixel_mean", third["image_mean"]))
    for raw in ["-1", "2.9", "true", '"abc"', "null", "1e400", "3", "5"]:
        validity = "valid" if raw == "3" else ("either" if raw == "5" else "invalid")
        add(f"pre-resample-{raw}", hf, "preprocessor_config.json", "resample", raw, validity,
            want=eq("input_resize", "bicubic") if raw == "3" else None)
    for raw in ['{"height": -1, "width": 32}', '{"height": 2.9, "width": 32}', '{"height": true, "width": 32}',
                '{"height": 1e400, "width": 32}', '{"height": null, "width": 32}', '{"height": 32, "width": 32}']:
        validity = "valid" if raw == '{"height": 32, "width": 32}' else "invalid"
        add(f"pre-size-{raw[11:16]}", hf, "preprocessor_config.json", "size", raw, validity,
            want=eq("image_size", [32, 32]))
    # timm config.json (save_for_hf)
    if timm.name and (timm / "config.json").exists():
        tcfg = json.loads((timm / "config.json").read_text())
        for dotted, raws, valid, want in (
                ("model_args.num_heads", ["1e400", "true", "2.9", "null", "-1", '"2"', "3", "4"], ("4",),
                 lambda raw: eq("num_heads", json.loads(raw))),
                ("pretrained_cfg.mean", ["[true, false, true]", "null", "NaN", "1e300", '"abc"', "[0.5, 0.5]",
                                         "[0.5, 0.5, 0.5]"], ("[0.5, 0.5, 0.5]",),
                 lambda raw: eq("pixel_mean", [0.5] * 3)),
                ("pretrained_cfg.std", ["1e-300", "0", "-1", "null", "NaN", "[0.5, 0.5, 0.5]"], ("[0.5, 0.5, 0.5]",),
                 lambda raw: eq("pixel_std", [0.5] * 3)),
                ("model_args.img_size", ["1e400", "true", "2.9", "-1", "48", "[16, 64]", "32"], ("32",),
                 lambda raw: eq("image_size", [16, 64] if raw == "[16, 64]" else [48, 48] if raw == "48"
                                else [32, 32])),
                ("pretrained_cfg.interpolation", ["true", "null", "3", '"bicubic"', '"lanczos"'], ('"bicubic"',),
                 lambda raw: eq("input_resize", "bicubic") if raw == '"bicubic"' else (lambda c: None)),
                ("num_features", ["true", "2.9", "null", "-1", "256"], (),
                 lambda raw: eq("num_heads", 2))):
            for raw in raws:
                validity = ("valid" if raw in valid else "either" if raw in ('"lanczos"', "[16, 64]", "256", "48")
                            else "invalid")
                text = json_with_raw(tcfg, dotted, raw)
                if dotted == "model_args.img_size" and raw == "[16, 64]":  # the input size too (else 32 x 32)
                    text = json_with_raw(json.loads(text), "pretrained_cfg.input_size", "[3, 16, 64]")
                f = folder(timm, {"config.json": text})
                cases.append(Case(f"config-timm-{dotted.split('.')[-1]}-{raw[:16]}", "config",
                                  f"timm config.json {dotted} = {raw}",
                                  ("lib", "load", {"path": str(f / "model.safetensors"), "predict": False}),
                                  names=[dotted.split(".")[-1]],
                                  expect={"valid": "handle", "invalid": "refuse", "either": "either"}[validity],
                                  check=None if validity == "invalid" else _config_check(want(raw)),
                                  quick=(dotted, raw) == ("model_args.num_heads", "2.9")))
    # a JSON file that is not JSON, not an object, huge
    for tag, name, text in (("cfg-notjson", "config.json", "{not json"), ("cfg-array", "config.json", "[1, 2]"),
                            ("cfg-nan-heads", "config.json", None), ("pre-notjson", "preprocessor_config.json", "{"),
                            ("cfg-dupkey", "config.json", None), ("cfg-binary", "config.json", "\udcff")):
        if tag == "cfg-nan-heads":
            text = json_with_raw(hf_cfg, "num_attention_heads", "NaN")
        if tag == "cfg-dupkey":
            text = json.dumps(hf_cfg)[:-1] + ', "num_attention_heads": 4}'
        if tag == "cfg-binary":
            f = folder(hf, {})
            (f / name).write_bytes(b"\xff\xfe\x00garbage")
        else:
            f = folder(hf, {name: text})
        cases.append(Case(f"config-{tag}", "config", f"{name}: {tag}",
                          ("lib", "load", {"path": str(f / "model.safetensors"), "predict": False}),
                          names=[name], expect="refuse", quick=tag == "cfg-notjson"))
    f = folder(hf, {})
    (f / "config.json").write_bytes(b'{"a": "' + b"x" * (5 << 20) + b'"}')
    cases.append(Case("config-cfg-5mb", "config", "config.json of 5 MiB",
                      ("lib", "load", {"path": str(f / "model.safetensors"), "predict": False}),
                      names=["config.json"], expect="either",
                      check=payload_check(lambda p: eq("num_heads", 2)(p["config"]))))
    f = folder(hf, {})
    os.remove(f / "config.json")
    mkfifo(f / "config.json")
    cases.append(Case("config-cfg-fifo", "config", "config.json is a FIFO",
                      ("lib", "load", {"path": str(f / "model.safetensors"), "predict": False}),
                      names=["config.json"], expect="either",
                      check=payload_check(lambda p: eq("num_heads", 2)(p["config"])), timeout=HANG_S))
    # negative eps through the command (the issue's NaN-output example)
    f = folder(hf, {"config.json": json_with_raw(hf_cfg, "layer_norm_eps", "-1")})
    cases.append(Case("config-visualize-eps-1", "config", "visualize.py, config.json layer_norm_eps = -1",
                      _vis(f / "model.safetensors", images=[fx["photo"]]), names=["layer_norm_eps"],
                      expect="refuse", quick=True, timeout=120))
    return cases


# --------------------------------------------------------------------------- non-finite outputs


@surface("nonfinite")
def nonfinite_cases(root: Path, fx: Dict[str, Any]) -> List[Case]:
    cases: List[Case] = []
    nan, bright, good = fx["nan"], fx["bright"], fx["good_data"]
    names = ["nan.npz", "not finite", "NaN"]
    for tag, extra in (("default", []), ("no-summary", ["--no-summary"]), ("heads", ["--method", "heads"]),
                       ("generic", ["--method", "generic"]), ("layer-lean-maps", ["--method", "layer", "--lean",
                                                                                   "--save-maps"]),
                       ("html", ["--html"])):
        cases.append(Case(f"nonfinite-visualize-{tag}", "nonfinite", f"visualize.py {' '.join(extra)} on a model "
                          "whose outputs are NaN (finite weights, LayerNorm scale 1e30)",
                          _vis(nan, *extra, images=[fx["photo"], fx["photo2"]]), names=names, expect="refuse",
                          quick=tag in ("default", "heads"), timeout=150))
    cases.append(Case("nonfinite-evaluate", "nonfinite", "evaluate.py on the NaN-output model", _eval(nan, good),
                      names=names, expect="refuse", quick=True, timeout=150))
    cases.append(Case("nonfinite-perturbation", "nonfinite", "perturbation.py on the NaN-output model",
                      _pert(nan, good, "--methods", "rollout,generic"), names=names, expect="refuse", timeout=150))
    for ck, tag in ((fx["headinf"], "head-1e38"), (fx["posemb"], "posemb-3e38")):
        cases.append(Case(f"nonfinite-visualize-{tag}", "nonfinite", f"visualize.py, finite weights: {tag}",
                          _vis(ck, images=[fx["photo"]]), names=[Path(ck).name, "not finite"], expect="refuse",
                          timeout=150))
        cases.append(Case(f"nonfinite-evaluate-{tag}", "nonfinite", f"evaluate.py, finite weights: {tag}",
                          _eval(ck, good), names=[Path(ck).name, "not finite"], expect="refuse", timeout=150))
    # some images finite, others not: the bright model (patch kernel 1e17) on white/black/grey photos
    bd = fx["bright_data"]
    cases.append(Case("nonfinite-visualize-bright", "nonfinite",
                      "visualize.py, a model whose outputs are NaN for white/black photos only",
                      _vis(bright, images=[Path(bd) / "a" / "grey.png", Path(bd) / "a" / "white.png"]),
                      names=["bright.npz", "not finite"], expect="handle",
                      check=vis_check(1, skipped=["white.png"]), quick=True, timeout=150))
    cases.append(Case("nonfinite-evaluate-bright", "nonfinite", "evaluate.py, NaN for white/black photos only",
                      _eval(bright, bd), names=["bright.npz"], expect="handle",
                      check=eval_check(4, 2, per_input={"white.png": "failed", "black.png": "failed",
                                                        "grey.png": "ok", "grey2.png": "ok"}),
                      inputs=["white.png", "black.png", "grey.png", "grey2.png"], timeout=150))
    cases.append(Case("nonfinite-perturbation-bright", "nonfinite", "perturbation.py, NaN for white/black photos",
                      _pert(bright, bd, "--methods", "rollout"), names=["bright.npz"], expect="handle",
                      check=pert_check(2, 2), timeout=150))
    for fn in ("predict", "forward", "compute_maps", "compute_maps_lean", "attention_maps_rollout",
               "attention_maps_heads", "class_maps_generic", "logit_lens", "run_with_cache", "head_importance"):
        cases.append(Case(f"nonfinite-lib-{fn}", "nonfinite", f"vitjax {fn} on the NaN-output model",
                          ("lib", "outputs", {"path": str(nan), "fn": fn}), names=["not finite", "NaN"],
                          expect="refuse", check=payload_check(lambda p: None if p["finite"] else
                                                               "returned NaN/inf without an error"),
                          quick=fn in ("predict", "compute_maps")))
    return cases


# --------------------------------------------------------------------------- images and folders


def _image_inputs(d: Path) -> Dict[str, tuple]:
    """{file name: (expected, what)}: expected "ok" (must decode) or "bad" (must be refused / skipped)."""
    import numpy as np
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    out: Dict[str, tuple] = {}
    (d / "empty.jpg").write_bytes(b"")
    out["empty.jpg"] = ("bad", "an empty file")
    full = photo(d / "full.jpg", 60, 80).read_bytes()
    (d / "truncated.jpg").write_bytes(full[: len(full) // 2])
    out["truncated.jpg"] = ("either", "a JPEG cut in half (PIL may decode the top)")
    (d / "header-only.jpg").write_bytes(full[:200])
    out["header-only.jpg"] = ("bad", "the first 200 bytes of a JPEG")
    png = photo(d / "full.png", 60, 80).read_bytes()
    (d / "truncated.png").write_bytes(png[: len(png) // 2])
    out["truncated.png"] = ("bad", "a PNG cut in half")
    os.remove(d / "full.png")
    photo(d / "wide.jpg", 20, 20000)
    out["wide.jpg"] = ("ok", "20 x 20000 px photo")
    photo(d / "tall.jpg", 20000, 20)
    out["tall.jpg"] = ("ok", "20000 x 20 px photo")
    photo(d / "gray.jpg", mode="L")
    out["gray.jpg"] = ("ok", "grayscale JPEG")
    photo(d / "cmyk.jpg", mode="CMYK")
    out["cmyk.jpg"] = ("ok", "CMYK JPEG")
    a16 = (np.linspace(0, 65535, 40 * 50).reshape(40, 50)).astype(np.uint16)
    Image.fromarray(a16).save(d / "deep16.png")
    out["deep16.png"] = ("ok", "16-bit grayscale PNG")
    photo(d / "bw.png", mode="1")
    out["bw.png"] = ("ok", "1-bit PNG")
    photo(d / "palette.png", mode="P")
    out["palette.png"] = ("ok", "palette PNG")
    photo(d / "rgba.png", mode="RGBA")
    out["rgba.png"] = ("ok", "RGBA PNG")
    f = np.full((40, 50), np.nan, np.float32)
    Image.fromarray(f).save(d / "nan.tif")
    out["nan.tif"] = ("bad", "float TIFF of NaN pixels")
    photo(d / "gif.gif", fmt="GIF")
    out["gif.gif"] = ("ok", "GIF")
    (d / "text.jpg").write_text("not an image\n" * 10)
    out["text.jpg"] = ("bad", "a text file named .jpg")
    (d / "html.png").write_text("<html><body>404</body></html>")
    out["html.png"] = ("bad", "an HTML page named .png")
    shutil.copy(REPO / "pyproject.toml", d / "toml.jpeg")
    out["toml.jpeg"] = ("bad", "a TOML file named .jpeg")
    Image.new("1", (20000, 20000)).save(d / "bomb.png")
    out["bomb.png"] = ("bad", "a 20000 x 20000 1-bit PNG (400 Mpx, a decompression bomb; a few KiB)")
    exif = Image.Exif()
    exif[0x0112] = 6
    photo(d / "exif6.jpg", 40, 80, exif=exif.tobytes())
    out["exif6.jpg"] = ("ok", "a JPEG with EXIF orientation 6")
    (d / "folder.jpg").mkdir()
    out["folder.jpg"] = ("bad", "a folder named .jpg")
    return out


@surface("images")
def image_cases(root: Path, fx: Dict[str, Any]) -> List[Case]:
    d = root / "images"
    files = _image_inputs(d / "files")
    base = fx["base"]
    cases: List[Case] = []
    for name, (expected, what) in files.items():
        path = d / "files" / name
        check = payload_check(lambda p: None if p["finite"] and p["shape"] == [32, 32, 3] and -1.001 <= p["min"]
                              and p["max"] <= 1.001 else f"decoded to {p}")
        cases.append(Case(f"images-decode-{name}", "images", f"preprocess/load_image of {what}",
                          ("lib", "decode", {"path": str(path)}), names=[name],
                          expect={"ok": "handle", "bad": "refuse", "either": "either"}[expected], check=check,
                          quick=name in ("empty.jpg", "wide.jpg", "bomb.png"), timeout=60))
    # all of them in one visualize run, beside one good photo: each either processed or listed as skipped
    listed = {n: (None if e == "ok" else "") for n, (e, _) in files.items() if e != "either" and n != "folder.jpg"}
    cases.append(Case("images-visualize-all", "images", "visualize.py --images good.jpg + every file above",
                      _vis(base, images=[fx["photo"], *[d / "files" / n for n in listed]]),
                      names=["image"], expect="handle",
                      check=vis_check(0, per_input={**listed, Path(fx["photo"]).name: None}),
                      inputs=[*listed, Path(fx["photo"]).name], quick=True, timeout=240))
    # folder walks: self-symlinks, FIFOs, devices, duplicates
    walk = d / "walk"
    for tag, build, expect_n, kind in (
            ("selflinks", lambda w: (symlink(w / "a" / "l1", "."), symlink(w / "a" / "l2", ".")), 4,
             "two self-symlinks l1 -> . and l2 -> . in a class folder"),
            ("selflink", lambda w: symlink(w / "a" / "l1", "."), 4, "one self-symlink l1 -> . in a class folder"),
            ("loop", lambda w: (symlink(w / "a" / "x", "../b"), symlink(w / "b" / "y", "../a")), 4,
             "a -> b -> a symlink loop"),
            ("fifo", lambda w: mkfifo(w / "a" / "pipe.jpg"), 4, "a FIFO named pipe.jpg in a class folder"),
            ("devzero", lambda w: symlink(w / "a" / "zero.jpg", "/dev/zero"), 4, "a symlink zero.jpg -> /dev/zero"),
            ("dup", lambda w: symlink(w / "b" / "dup.jpg", w / "a" / "a0.jpg"), 4,
             "a second name (symlink) of a photo in another class"),
            ("dangling", lambda w: symlink(w / "a" / "gone.jpg", w / "nothere.jpg"), 4, "a dangling symlink .jpg"),
            ("hidden", lambda w: photo(w / "a" / ".hidden.jpg"), 4, "a hidden photo (.hidden.jpg)"),
    ):
        w = walk / tag
        for cls in ("a", "b"):
            for i in range(2):
                photo(w / cls / f"{cls}{i}.jpg", seed=3 * i + ord(cls))
        build(w)
        cases.append(Case(f"images-walk-{tag}-visualize", "images", f"visualize.py --images DIR: {kind}",
                          _vis(base, "--no-grid", images=[w]), names=[w.name], expect="handle",
                          check=vis_check(expect_n), quick=tag in ("selflinks", "fifo"), timeout=120))
        cases.append(Case(f"images-walk-{tag}-evaluate", "images", f"evaluate.py --data DIR: {kind}",
                          _eval(base, w), names=[w.name], expect="handle", check=eval_check(expect_n),
                          quick=tag == "selflinks", timeout=120))
        cases.append(Case(f"images-walk-{tag}-records", "images", f"dataset_records: {kind}",
                          ("lib", "records", {"root": str(w)}), names=[w.name], expect="handle",
                          check=payload_check(lambda p, n=expect_n: None if len(p["images"]) == n and
                                              len(set(p["images"])) == n else
                                              f"{len(p['images'])} images listed, {n} expected"), timeout=60))
    # an unreadable photo (mode 000): root reads it anyway
    w = walk / "perm"
    photo(w / "a" / "ok.jpg")
    p = photo(w / "a" / "locked.jpg")
    os.chmod(p, 0)
    cases.append(Case("images-unreadable", "images", "a photo with mode 000",
                      _vis(base, images=[w / "a" / "ok.jpg", p]), names=["locked.jpg"], expect="handle",
                      check=vis_check(1, skipped=["locked.jpg"]),
                      na="running as root: a mode-000 file is readable, nothing to test" if os.geteuid() == 0
                      else None))
    # visualize on both extreme photos: figures drawn at a sane size
    cases.append(Case("images-visualize-extreme", "images", "visualize.py on 20 x 20000 and 20000 x 20 photos",
                      _vis(base, images=[d / "files" / "wide.jpg", d / "files" / "tall.jpg"]), names=["wide.jpg"],
                      expect="handle", check=vis_check(2), timeout=150))
    return cases


# --------------------------------------------------------------------------- Caltech101 annotations


def _annotations(d: Path) -> Dict[str, tuple]:
    """{name: (expected, what, writer(path))}: expected "annotated", "invalid" or "absent-ok"."""
    import numpy as np
    from scipy.io import savemat

    def mat(box, contour, **extra):
        def write(p):
            data = {"box_coord": box, "obj_contour": contour, **extra}
            savemat(p, {k: v for k, v in data.items() if v is not None})

        return write

    def raw(b):
        return lambda p: p.write_bytes(b)

    ok_box = np.array([[5.0, 30.0, 5.0, 40.0]])
    ok_contour = np.array([[2.0, 30.0, 30.0, 2.0], [2.0, 2.0, 20.0, 20.0]])
    big = np.stack([10 + 8 * np.cos(np.linspace(0, 2 * np.pi, 100000)), 10 + 8 * np.sin(np.linspace(0, 2 * np.pi,
                                                                                                    100000))])
    good_bytes = io.BytesIO()
    from scipy.io import savemat as sm

    sm(good_bytes, {"box_coord": ok_box, "obj_contour": ok_contour})
    gb = good_bytes.getvalue()
    return {
        "good": ("annotated", "a valid annotation", mat(ok_box, ok_contour)),
        "overshoot": ("annotated", "a box 1 px past the edge (1-based), valid", mat(np.array([[1.0, 41.0, 1.0, 51.0]]),
                                                                                   ok_contour)),
        "int-contour": ("annotated", "an int32 contour, valid", mat(ok_box, ok_contour.astype(np.int32))),
        "many-points": ("annotated", "a contour of 100000 points, valid", mat(ok_box, big)),
        "box-outside": ("invalid", "a box entirely outside the photo", mat(np.array([[100.0, 120.0, 100.0, 140.0]]),
                                                                            ok_contour)),
        "box-negative": ("invalid", "a box entirely above-left of the photo",
                         mat(np.array([[-50.0, -20.0, -60.0, -30.0]]), ok_contour)),
        "inverted": ("invalid", "an inverted box (top > bottom, left > right)",
                     mat(np.array([[30.0, 5.0, 40.0, 5.0]]), ok_contour)),
        "contour-1e20": ("invalid", "a contour with 1e20 coordinates", mat(ok_box, ok_contour * 1e20)),
        "contour-far": ("invalid", "a contour 500 px outside the photo", mat(ok_box, ok_contour + 500)),
        "contour-bool": ("invalid", "a bool contour", mat(ok_box, ok_contour > 5)),
        "box-nan": ("invalid", "a NaN in the box", mat(np.array([[np.nan, 30.0, 5.0, 40.0]]), ok_contour)),
        "contour-nan": ("invalid", "a NaN in the contour", mat(ok_box, ok_contour * np.array([[1, np.nan, 1, 1],
                                                                                             [1, 1, 1, 1]]))),
        "contour-inf": ("invalid", "an inf in the contour", mat(ok_box, ok_contour + np.array([[0, np.inf, 0, 0],
                                                                                              [0, 0, 0, 0]]))),
        "contour-empty": ("invalid", "an empty contour (2 x 0)", mat(ok_box, np.zeros((2, 0)))),
        "contour-2pts": ("invalid", "a contour of 2 points", mat(ok_box, ok_contour[:, :2])),
        "collinear": ("invalid", "a contour whose points lie on a line",
                      mat(ok_box, np.array([[1.0, 5.0, 9.0], [1.0, 5.0, 9.0]]))),
        "contour-3xK": ("invalid", "a contour of shape 3 x K", mat(ok_box, np.ones((3, 4)))),
        "box-5": ("invalid", "a box of 5 values", mat(np.array([[5.0, 30.0, 5.0, 40.0, 1.0]]), ok_contour)),
        "box-3": ("invalid", "a box of 3 values", mat(np.array([[5.0, 30.0, 5.0]]), ok_contour)),
        "complex": ("invalid", "a complex contour", mat(ok_box, ok_contour + 1j)),
        "text-contour": ("invalid", "a contour saved as text", mat(ok_box, "abcd")),
        "struct-box": ("invalid", "a box saved as a struct", mat({"a": 1.0}, ok_contour)),
        "int64-huge": ("invalid", "an int64 contour of 2**62", mat(ok_box, np.full((2, 4), 2**62, np.int64))),
        "no-box": ("invalid", "no box_coord", mat(None, ok_contour)),
        "no-contour": ("invalid", "no obj_contour", mat(ok_box, None)),
        "not-mat": ("invalid", "a text file named .mat", raw(b"hello\n" * 10)),
        "empty-mat": ("invalid", "an empty .mat file", raw(b"")),
        "truncated-mat": ("invalid", "a .mat cut in half", raw(gb[: len(gb) // 2])),
        "bitflip-mat": ("either", "a .mat with 3 flipped bits", raw(flip_bits(gb, random.Random(5), 3, lo=128))),
    }


@surface("annotations")
def annotation_cases(root: Path, fx: Dict[str, Any]) -> List[Case]:
    d = root / "caltech"
    cat, ann = d / "101_ObjectCategories", d / "Annotations"
    specs = _annotations(d)
    cases: List[Case] = []
    per_input: Dict[str, str] = {}
    for i, (name, (expected, what, write)) in enumerate(specs.items(), 1):
        cls = f"c{i:02d}_{name}".replace("-", "_")
        img = photo(cat / cls / "image_0001.jpg", 40, 50, seed=i)
        a = ann / cls / "annotation_0001.mat"
        a.parent.mkdir(parents=True, exist_ok=True)
        write(a)

        def want(p, expected=expected, a=a):
            if expected == "annotated":
                return None if p["annotated"] else f"not scored: {p['note']!r}"
            if expected == "invalid":
                if p["annotated"]:
                    return f"scored as an object ({p['object_cells']} cells of 64)"
                return None if p["note"] and a.name in p["note"] else f"note {p['note']!r} does not name {a.name}"
            return None

        cases.append(Case(f"annotations-{name}", "annotations", f"load_target: {what}",
                          ("lib", "target", {"image": str(img), "annotation": str(a)}), names=[a.name],
                          expect="handle", check=payload_check(want), quick=name in ("box-outside", "contour-bool"),
                          timeout=60))
        per_input[f"{cls}/image_0001.jpg"] = {"annotated": "annotated", "invalid": "invalid"}.get(expected, "ok")
    n_inv = sum(1 for v in per_input.values() if v == "invalid")
    n_ann = sum(1 for v in per_input.values() if v == "annotated")
    either = [k for k, v in per_input.items() if v == "ok"]

    def check_all(o: Outcome):
        verdicts = eval_check(len(per_input), 0, per_input=per_input)(o)
        run = o.dir / "run"
        try:
            s = json.loads((run / "summary.json").read_text())
        except (OSError, ValueError) as e:
            return {k: f"summary.json unreadable: {e}" for k in per_input}
        n_inv_got = s["images"].get("invalid_annotations")
        n_ann_got = s["images"].get("annotated")
        listed = {p["image"] for p in s.get("annotation_problems", [])}
        for k, want in per_input.items():
            if want == "invalid" and not any(i.endswith(k) for i in listed) and not verdicts.get(k):
                verdicts[k] = "not listed in summary.json annotation_problems"
        lo_inv, lo_ann = n_inv, n_ann
        if not (lo_inv <= n_inv_got <= lo_inv + len(either)) or not (lo_ann <= n_ann_got <= lo_ann + len(either)):
            msg = f"summary counts {n_inv_got} invalid / {n_ann_got} annotated, expected {n_inv} / {n_ann} (+ either)"
            verdicts = {k: (v or msg) for k, v in verdicts.items()}
        return verdicts

    cases.append(Case("annotations-evaluate-all", "annotations",
                      "evaluate.py on a Caltech101 tree, one photo per annotation kind above",
                      _eval(fx["base"], d), names=["annotation"], expect="handle", check=check_all,
                      inputs=list(per_input), quick=True, timeout=240))
    # hazards, each in its own run
    haz = root / "caltech-hazards"
    for tag, build in (("fifo", lambda p: mkfifo(p)), ("devzero", lambda p: symlink(p, "/dev/zero")),
                       ("folder", lambda p: p.mkdir(parents=True)), ("selflink", lambda p: symlink(p, p.name))):
        t = haz / tag
        photo(t / "101_ObjectCategories" / "cls" / "image_0001.jpg")
        photo(t / "101_ObjectCategories" / "cls" / "image_0002.jpg", seed=3)
        a = t / "Annotations" / "cls" / "annotation_0001.mat"
        a.parent.mkdir(parents=True, exist_ok=True)
        specs["good"][2](t / "Annotations" / "cls" / "annotation_0002.mat")
        build(a)
        cases.append(Case(f"annotations-{tag}-target", "annotations", f"load_target: the annotation is a {tag}",
                          ("lib", "target", {"image": str(t / "101_ObjectCategories" / "cls" / "image_0001.jpg"),
                                             "annotation": str(a)}),
                          names=[a.name], expect="either",
                          check=payload_check(lambda p: "scored as an object" if p["annotated"] else None),
                          timeout=HANG_S, quick=tag == "fifo"))
        cases.append(Case(f"annotations-{tag}-evaluate", "annotations", f"evaluate.py: the annotation is a {tag}",
                          _eval(fx["base"], t), names=["annotation_0001"], expect="handle",
                          check=eval_check(2, 0, per_input={"image_0001.jpg": "ok", "image_0002.jpg": "annotated"}),
                          inputs=["image_0001.jpg", "image_0002.jpg"], timeout=120))
    return cases


# --------------------------------------------------------------------------- damaged results folders (resume)


def _shards(run: Path) -> List[Path]:
    return sorted((run / "shards").glob("p*.json"))


def _rewrite(path: Path, fn: Callable[[dict], dict], checksum: bool) -> None:
    data = json.loads(path.read_text())
    data = fn(data)
    if checksum and isinstance(data, dict) and "rows" in data:
        text = json.dumps({"failed": list(data["failed"]), "rows": list(data["rows"])}, sort_keys=True,
                          separators=(",", ":"), ensure_ascii=True, allow_nan=False)
        import hashlib

        data["sha256"] = hashlib.sha256(text.encode("ascii")).hexdigest()
    path.write_text(json.dumps(data))


@surface("shards")
def shard_cases(root: Path, fx: Dict[str, Any]) -> List[Case]:
    good_run, good_data, base = Path(fx["good_run"]), fx["good_data"], fx["base"]
    clean = good_run / "summary.json"
    total = int(fx["good_total"])
    cases: List[Case] = []

    def copy_then(fn):
        def prepare(cdir: Path):
            run = cdir / "run"
            if run.exists():
                shutil.rmtree(run)
            shutil.copytree(good_run, run, symlinks=True)
            fn(run)

        return prepare

    def first(run):
        return _shards(run)[0]

    def add(tag, kind, fn, *, warn=("damaged shard",), expect="handle", quick=False, names=("shard", "p000"),
            check=None, args=(), timeout=150.0):
        cases.append(Case(f"shards-{tag}", "shards", kind, _eval(base, good_data, *args), names=list(names),
                          expect=expect, prepare=copy_then(fn),
                          check=check or eval_check(total, 0, warn=warn, same_as=clean), quick=quick,
                          timeout=timeout))

    add("truncated", "a shard cut in half", lambda r: first(r).write_bytes(first(r).read_bytes()[:40]), quick=True)
    add("empty", "an empty shard", lambda r: first(r).write_bytes(b""))
    add("garbage", "a shard of random bytes", lambda r: first(r).write_bytes(os.urandom(300)))
    add("no-rows", "valid JSON without 'rows'", lambda r: _rewrite(first(r), lambda d: {k: v for k, v in d.items()
                                                                                         if k != "rows"}, False))
    add("no-image", "a row without 'image' (checksum recomputed)",
        lambda r: _rewrite(first(r), lambda d: {**d, "rows": [{k: v for k, v in d["rows"][0].items() if k != "image"},
                                                              *d["rows"][1:]]}, True), quick=True)
    add("image-int", "a row whose 'image' is 7 (checksum recomputed)",
        lambda r: _rewrite(first(r), lambda d: {**d, "rows": [{**d["rows"][0], "image": 7}, *d["rows"][1:]]}, True))
    add("label-str", "a row whose 'label' is a string (checksum recomputed)",
        lambda r: _rewrite(first(r), lambda d: {**d, "rows": [{**d["rows"][0], "label": "x"}, *d["rows"][1:]]}, True))
    add("edited", "a metric value edited (checksum not updated)",
        lambda r: _rewrite(first(r), lambda d: {**d, "rows": [{**d["rows"][0], "joint_auc": 0.123}, *d["rows"][1:]]},
                           False), quick=True)
    add("no-checksum", "the 'sha256' key removed",
        lambda r: _rewrite(first(r), lambda d: {k: v for k, v in d.items() if k != "sha256"}, False))
    add("format-v1", "format 'vitjax-evaluate-shard/1'",
        lambda r: _rewrite(first(r), lambda d: {**d, "format": "vitjax-evaluate-shard/1"}, True))
    add("array", "a JSON array", lambda r: first(r).write_text("[1, 2, 3]"))
    add("extra-key", "an extra top-level key", lambda r: _rewrite(first(r), lambda d: {**d, "x": 1}, False))
    add("nan", "a NaN literal in a row (checksum kept)",
        lambda r: first(r).write_text(first(r).read_text().replace('"joint_auc": ', '"joint_auc": NaN, "x": ', 1)))
    add("directory", "a folder named like a shard", lambda r: (r / "shards" / "p000-999999.json").mkdir(),
        warn=())
    add("fifo", "a FIFO named like a shard", lambda r: mkfifo(r / "shards" / "p000-999999.json"), warn=(),
        timeout=HANG_S)
    add("devzero", "a symlink to /dev/zero named like a shard",
        lambda r: symlink(r / "shards" / "p000-999999.json", "/dev/zero"), warn=())
    add("forged-strings", "metric values replaced by strings, checksum recomputed (deliberate forgery)",
        lambda r: _rewrite(first(r), lambda d: {**d, "rows": [{**row, **{k: "abc" for k in row if k.endswith("_auc")}}
                                                              for row in d["rows"]]}, True),
        expect="either", check=eval_check(total, 0))
    add("foreign-row", "a row for an image not in the dataset (checksum recomputed)",
        lambda r: _rewrite(first(r), lambda d: {**d, "rows": [*d["rows"], {**d["rows"][0], "image": "zz/ghost.jpg"}]},
                           True), warn=(), check=eval_check(total, 0, same_as=clean))
    add("run-json-cut", "run.json cut in half, shards present",
        lambda r: (r / "run.json").write_bytes((r / "run.json").read_bytes()[:20]), expect="refuse",
        names=("run.json",), quick=True)
    add("run-json-other", "run.json of other settings (scale 2), no finished shard",
        lambda r: ([p.unlink() for p in _shards(r)],
                   (r / "run.json").write_text((r / "run.json").read_text().replace('"scale": 4', '"scale": 2'))),
        warn=("takes it over",), check=eval_check(total, 0))
    add("per-class-1", "a rerun with --per-class 1 into the full run's folder",
        lambda r: None, expect="refuse", names=("per_class", "selection"), args=("--per-class", "1"), quick=True)
    add("summary-dir", "summary.json replaced by a folder",
        lambda r: ((r / "summary.json").unlink(), (r / "summary.json").mkdir()), expect="either",
        names=("summary.json",), warn=())
    add("shards-file", "shards/ replaced by a file",
        lambda r: (shutil.rmtree(r / "shards"), (r / "shards").write_text("x")), expect="refuse",
        names=("shards",))
    add("csv-edited", "images.csv edited by hand (rewritten from the shards)",
        lambda r: (r / "images.csv").write_text("image\nfake.jpg\n"), warn=(),
        check=eval_check(total, 0, same_as=clean))
    # Ctrl-C at several moments of a run, then the same command again
    for at in (0.3, 1.0, 1.6, 2.0):
        cases.append(Case(f"shards-ctrl-c-{at:g}s", "shards", f"evaluate.py --batch-size 1 interrupted after {at:g} s",
                          _eval(base, good_data, "--batch-size", "1"), expect="handle", interrupt=at,
                          check=eval_check(total), quick=at == 1.0, timeout=150))
    cases.append(Case("shards-ctrl-c-visualize", "shards", "visualize.py interrupted after 1.5 s",
                      _vis(base, images=[fx["photo"], fx["photo2"]]), expect="handle", interrupt=1.5,
                      check=vis_check(2), timeout=150))
    # an image replaced under the same name: its row is stale
    mut_run, mut_data = Path(fx["mutable_run"]), Path(fx["mutable_data"])

    def replace_image(cdir: Path):
        victim = sorted(mut_data.rglob("*.jpg"))[0]
        photo(victim, 50, 40, seed=99)

    cases.append(Case("shards-image-replaced", "shards", "a photo replaced under the same name after a run",
                      _eval(base, mut_data, out=str(mut_run)), names=["changed"], expect="handle",
                      prepare=replace_image, check=eval_check(int(fx["mutable_total"]), 0, warn=("changed",),
                                                              out=str(mut_run)), timeout=150))
    return cases


# --------------------------------------------------------------------------- the maps file


@surface("maps")
def maps_cases(root: Path, fx: Dict[str, Any]) -> List[Case]:
    import numpy as np
    from flax.serialization import msgpack_restore, msgpack_serialize

    from vitjax import io as vio

    d = root / "maps"
    d.mkdir(exist_ok=True)
    good = Path(fx["maps"])
    raw = good.read_bytes()
    cases: List[Case] = []

    def add(tag, path, kind, *, expect="refuse", quick=False, timeout=HANG_S):
        cases.append(Case(f"maps-{tag}", "maps", kind, ("lib", "maps", {"path": str(path), "same_as": str(good)}),
                          names=[Path(path).name], expect=expect,
                          check=payload_check(lambda p: None if p.get("same") else
                                              f"loaded with changed content (max value {p.get('max')})"),
                          quick=quick, timeout=timeout))

    rng = random.Random(11)
    for i in range(30):
        p = d / f"flip{i:02d}.msgpack"
        p.write_bytes(flip_bits(raw, rng, rng.randint(1, 5)))
        add(f"bitflip-{i:02d}", p, "maps.msgpack with 1-5 random bit flips", quick=i < 3)
    for cut in (0, 1, 16, len(raw) // 2, len(raw) - 1):
        p = d / f"cut{cut}.msgpack"
        p.write_bytes(raw[:cut])
        add(f"truncated-{cut}", p, f"cut to {cut} of {len(raw)} bytes", quick=cut == 16)
    p = d / "appended.msgpack"
    p.write_bytes(raw + b"\x00garbage")
    add("appended", p, "8 bytes appended", expect="either")
    tree = msgpack_restore(raw)

    def forged(tag, kind, fn, expect="refuse", quick=False):
        t = json.loads(json.dumps({k: v for k, v in tree.items() if k != "arrays"}))
        arrays = {k: np.array(v) for k, v in tree["arrays"].items()}
        t, arrays = fn(t, arrays)
        t["arrays"] = arrays
        if "sha256" in t:
            t["sha256"] = vio._digest(arrays, t["metadata"])  # a forger who recomputes the checksum
        p = d / f"{tag}.msgpack"
        try:
            p.write_bytes(msgpack_serialize(t))
        except Exception as e:  # msgpack cannot store it: nobody can write such a file
            print(f"fuzz: maps-{tag} not generated ({type(e).__name__}: {e})", file=sys.stderr)
            return
        add(tag, p, kind + " (checksum recomputed)", expect=expect, quick=quick)

    first = next(k for k in ("rollout", "layer", "cumulative") if k in tree["arrays"])

    def set_first(value):
        def fn(t, a):
            a[first] = a[first].copy()
            a[first].reshape(-1)[0] = value
            return t, a

        return fn

    forged("nan", f"a NaN in {first}", set_first(np.nan), quick=True)
    forged("huge", f"1.3e38 in {first}", set_first(1.3e38))
    forged("negative", f"-0.5 in {first}", set_first(-0.5))
    forged("shape", f"{first} with one image too many",
           lambda t, a: (t, {**a, first: np.concatenate([a[first], a[first][:1]])}))
    forged("dtype-str", f"{first} as strings", lambda t, a: (t, {**a, first: a[first].astype(str)}))
    forged("dtype-complex", f"{first} as complex", lambda t, a: (t, {**a, first: a[first].astype(np.complex64)}))
    forged("unknown-array", "an unknown array of strings", lambda t, a: (t, {**a, "zz": np.array(["a", "b"])}))
    forged("images-mismatch", "metadata lists one image fewer",
           lambda t, a: ({**t, "metadata": {**t["metadata"], "images": t["metadata"]["images"][:-1]}}, a))
    forged("grid-mismatch", "metadata grid [3, 3]",
           lambda t, a: ({**t, "metadata": {**t["metadata"], "grid": [3, 3]}}, a))
    forged("version-1", "version 1 (no checksum)", lambda t, a: ({k: v for k, v in {**t, "version": 1}.items()
                                                                 if k != "sha256"}, a))
    forged("version-3", "version 3", lambda t, a: ({**t, "version": 3}, a))
    forged("format", "format 'other'", lambda t, a: ({**t, "format": "other"}, a))
    forged("extra-key", "an extra top-level key", lambda t, a: ({**t, "x": 1}, a))
    forged("topk-negative", "topk_indices of -1",
           lambda t, a: (t, {**a, "topk_indices": -np.ones_like(a["topk_indices"])}) if "topk_indices" in a
           else (t, a))
    for tag, make in (("empty", lambda p: p.write_bytes(b"")), ("folder", lambda p: p.mkdir()),
                      ("fifo", mkfifo), ("devzero", lambda p: symlink(p, "/dev/zero")),
                      ("npz", lambda p: shutil.copy(fx["base"], p)), ("json", lambda p: p.write_text("{}"))):
        p = d / f"{tag}.msgpack"
        make(p)
        add(tag, p, f"a {tag} named maps.msgpack", quick=tag in ("fifo", "devzero"))
    return cases


# --------------------------------------------------------------------------- command-line arguments


@surface("cli")
def cli_cases(root: Path, fx: Dict[str, Any]) -> List[Case]:
    d = root / "cli"
    d.mkdir(exist_ok=True)
    base, ph, good = fx["base"], fx["photo"], fx["good_data"]
    cases: List[Case] = []
    ok_vis = vis_check(1)
    good_total = int(fx["good_total"])

    def v(tag, args, names, expect="refuse", check=None, quick=False, timeout=120.0, **kw):
        cases.append(Case(f"cli-visualize-{tag}", "cli", f"visualize.py {' '.join(map(str, args))}",
                          _vis(kw.get("ckpt", base), *args, images=kw.get("images", [ph])), names=names,
                          expect=expect, check=check, quick=quick, timeout=timeout))

    def e(tag, args, names, expect="refuse", check=None, quick=False, timeout=150.0, data=None):
        cases.append(Case(f"cli-evaluate-{tag}", "cli", f"evaluate.py {' '.join(map(str, args))}",
                          _eval(base, data or good, *args), names=names, expect=expect, check=check, quick=quick,
                          timeout=timeout))

    def p(tag, args, names, expect="refuse", check=None, quick=False, timeout=150.0):
        cases.append(Case(f"cli-perturbation-{tag}", "cli", f"perturbation.py {' '.join(map(str, args))}",
                          _pert(base, good, *args), names=names, expect=expect, check=check, quick=quick,
                          timeout=timeout))

    for val in ("-1", "0", "abc", "1.5"):
        v(f"batch-{val}", ["--batch-size", val], ["--batch-size"], quick=val == "0")
        e(f"batch-{val}", ["--batch-size", val], ["--batch-size", "batch_size", "batch size"], quick=val == "-1")
        p(f"batch-{val}", ["--batch-size", val, "--methods", "rollout"], ["--batch-size", "batch_size", "batch size"])
    v("batch-1e9", ["--batch-size", "1000000000"], ["--batch-size"], expect="handle", check=ok_vis, quick=True)
    e("batch-1e9", ["--batch-size", "1000000000"], ["--batch-size"], expect="handle", check=eval_check(good_total))
    p("batch-1e9", ["--batch-size", "1000000000", "--methods", "rollout"], ["--batch-size"], expect="handle",
      check=pert_check(good_total))
    for val in ("0", "1", "8", "33", "-5", "1e3", "", "16x0", "abc"):
        v(f"size-{val or 'empty'}", ["--image-size", val], ["--image-size", "image_size", "image size"],
          quick=val == "1")
    for val in ("4096", "99984", "32x99984"):
        v(f"size-{val}", ["--image-size", val], ["image size", "--image-size", "memory", val], quick=val == "99984",
          timeout=180)
        e(f"size-{val}", ["--image-size", val], ["image size", "--image-size", "memory", val], timeout=180,
          quick=val == "4096")
    e("size-33", ["--image-size", "33"], ["image_size", "--image-size", "image size"])
    for val in ("0", "-1", "abc"):
        e(f"scale-{val}", ["--scale", val], ["--scale", "scale"], quick=val == "0")
    for val in ("1000", "1000000"):
        e(f"scale-{val}", ["--scale", val], ["--scale", "scale", "memory"], expect="either",
          check=eval_check(good_total), timeout=180, quick=val == "1000")
    for val in ("-1", "0", "1", "abc", "1e400", "nan", "1K", "inf", "-5G"):
        v(f"budget-{val}", ["--memory-budget", val], ["--memory-budget", "memory budget", "budget"],
          quick=val in ("1K", "nan"))
    e("budget-1K", ["--memory-budget", "1K"], ["--memory-budget", "memory budget", "budget"])
    p("budget-1K", ["--memory-budget", "1K", "--methods", "rollout"], ["--memory-budget", "memory budget", "budget"])
    v("budget-10P", ["--memory-budget", "10P"], ["--memory-budget"], expect="either", check=ok_vis)
    for val in ("-1", "2", "99", "abc"):
        v(f"start-layer-{val}", ["--start-layer", val], ["--start-layer", "start_layer", "start layer"],
          expect="either" if val == "2" else "refuse", check=ok_vis if val == "2" else None, quick=val == "99")
        e(f"start-layer-{val}", ["--start-layer", val], ["--start-layer", "start_layer", "start layer"],
          expect="refuse" if val != "2" else "either", check=eval_check(good_total) if val == "2" else None)
    for val in ("-0.1", "1", "1.5", "nan", "inf", "abc"):
        v(f"discard-{val}", ["--discard-ratio", val], ["--discard-ratio", "discard_ratio", "discard ratio"],
          quick=val == "nan")
    e("discard-nan", ["--discard-ratio", "nan"], ["--discard-ratio", "discard_ratio"])
    for val in ("foo", ""):
        v(f"head-fusion-{val or 'empty'}", ["--head-fusion", val], ["--head-fusion", "head_fusion", "head fusion"])
        e(f"head-fusion-{val or 'empty'}", ["--head-fusion", val], ["--head-fusion", "head_fusion", "head fusion"])
    v("method-foo", ["--method", "foo"], ["--method"], quick=True)
    v("cmap-nosuch", ["--cmap", "nosuch"], ["--cmap", "colour map", "nosuch"])
    p("methods-foo", ["--methods", "foo"], ["foo", "--methods", "method"], quick=True)
    p("methods-empty", ["--methods", ""], ["--methods", "method"])
    p("methods-dup", ["--methods", "rollout,rollout"], ["--methods", "method", "rollout"], expect="either",
      check=pert_check(good_total))
    # label files
    (d / "empty.txt").write_text("")
    (d / "short.txt").write_text("a\nb\nc\n")
    (d / "long.txt").write_text("".join(f"n{i}\n" for i in range(6)))
    (d / "blank-lines.txt").write_text("a\n\nc\nd\ne\n")
    (d / "binary.txt").write_bytes(os.urandom(200))
    (d / "dir.txt").mkdir(exist_ok=True)
    mkfifo(d / "fifo.txt")
    symlink(d / "zero.txt", "/dev/zero")
    for tag in ("missing", "empty", "short", "long", "blank-lines", "binary", "dir", "fifo", "zero"):
        path = d / f"{tag}.txt"
        v(f"labels-{tag}", ["--labels", path], ["--labels", path.name, "label"], quick=tag == "short",
          timeout=HANG_S if tag in ("fifo", "zero") else 120.0)
    for tag, text in (("array", "[1, 2]"), ("negative", '{"a": -1}'), ("string", '{"a": "x"}'),
                      ("float", '{"a": 1.5}'), ("bool", '{"a": true}'), ("notjson", "{"),
                      ("beyond", '{"a": 1000000, "b": 1}'), ("unknown-folder", '{"zzz": 0}')):
        path = d / f"labels-{tag}.json"
        path.write_text(text)
        p(f"labels-{tag}", ["--labels", path, "--methods", "rollout"], ["--labels", path.name, "label"],
          expect="refuse" if tag != "unknown-folder" else "either", check=pert_check(good_total),
          quick=tag == "beyond")
    p("labels-missing", ["--labels", d / "nothere.json"], ["--labels", "nothere.json"])
    p("labels-fifo", ["--labels", d / "fifo.txt"], ["--labels", "fifo.txt"], timeout=HANG_S)
    for val in ("-1", "99"):
        p(f"rollout-start-{val}", ["--rollout-start-layer", val, "--methods", "rollout"],
          ["--rollout-start-layer", "start_layer", "start layer"], quick=val == "99")
    for flag, vals in (("--topk", ("0", "1000000")), ("--layer", ("0", "99", "-99")), ("--target", ("-1", "5", "99")),
                       ("--dpi", ("0", "nan", "1000000000")), ("--grid-rows", ("0",)), ("--alpha", ("2", "nan")),
                       ("--run-name", ("../x", ".", "a/b")), ("--seed", ("-1",)),
                       ("--per-class", ("0",)), ("--sample", ("-1",))):
        for val in vals:
            expect, check = "refuse", None
            if (flag, val) == ("--topk", "1000000"):
                expect, check = "either", ok_vis
            argv = list(_vis(base, *([] if flag == "--run-name" else [flag, val]), images=[ph])[2])
            if flag == "--run-name":  # in place of the default run name
                argv[argv.index("--run-name") + 1] = val
            cases.append(Case(f"cli-visualize-{flag[2:]}-{val}", "cli", f"visualize.py {flag} {val}",
                              ("cmd", VIS, argv), names=[flag, flag[2:].replace("-", "_")], expect=expect,
                              check=check, quick=(flag, val) in (("--layer", "99"), ("--run-name", "../x"))))
    for flag, val in (("--workers", "0"), ("--workers", "-1"), ("--per-class", "0"), ("--sample", "0"),
                      ("--seed", "abc")):
        e(f"{flag[2:]}-{val}", [flag, val], [flag, flag[2:].replace("-", "_")])
    for flag, val in (("--workers", "0"), ("--sample", "0"), ("--resize", "foo"), ("--explain", "foo")):
        p(f"{flag[2:]}-{val}", [flag, val], [flag, flag[2:].replace("-", "_")])
    # paths
    (d / "afile").write_text("x")
    (d / "emptydir").mkdir(exist_ok=True)
    argv = list(_vis(base, images=[ph])[2])
    argv[argv.index("--out") + 1] = str(d / "afile")
    cases.append(Case("cli-visualize-out-is-file", "cli", "visualize.py --out FILE", ("cmd", VIS, argv),
                      names=["afile", "--out"], expect="refuse", quick=True))
    v("images-missing", [], ["nothere.jpg"], images=[d / "nothere.jpg"])
    v("images-empty-dir", [], ["emptydir"], images=[d / "emptydir"])
    v("ckpt-missing", [], ["nothere.npz"], ckpt=d / "nothere.npz")
    v("ckpt-empty-name", [], ["--ckpt", "ckpt", "checkpoint"], ckpt="")
    v("ckpt-unknown-name", [], ["ViT-Z_99", "checkpoint"], ckpt="ViT-Z_99")
    e("data-missing", [], ["nothere"], data=d / "nothere")
    e("data-file", [], ["afile"], data=d / "afile")
    e("data-empty", [], ["emptydir"], data=d / "emptydir")
    cases.append(Case("cli-evaluate-out-is-file", "cli", "evaluate.py --out FILE", _eval(base, good, out=str(
        d / "afile")), names=["afile", "--out"], expect="refuse"))
    return cases


# =========================================================================== fixtures that need JAX or torch


def generate(root: Path, surfaces: Sequence[str]) -> Dict[str, Any]:
    """Runs in its own process (JAX, maybe torch): checkpoints, a Hugging Face / timm folder, a maps file and
    a finished evaluate run. Returns the fixture paths."""
    import contextlib

    import numpy as np

    from vitjax.checkpoints.synthetic import random_checkpoint, save_npz
    from vitjax.model.config import get_config

    fx: Dict[str, Any] = {}
    ck = root / "ckpt"
    ck.mkdir(parents=True, exist_ok=True)
    cfg = get_config("testing", num_layers=2, image_size=32, num_classes=5)
    flat = random_checkpoint(cfg, seed=0)
    fx["base"] = save_npz(flat, ck / "base.npz")
    ln = "Transformer/encoderblock_0/LayerNorm_0/scale"
    for name, edit in (("nan", {ln: np.full((10,), 1e30, np.float32)}),
                       ("bright", {"embedding/kernel": np.full(flat["embedding/kernel"].shape, 1e17, np.float32),
                                   "embedding/bias": np.zeros(10, np.float32)}),
                       ("headinf", {"head/kernel": np.full(flat["head/kernel"].shape, 3e38, np.float32)}),
                       ("posemb", {"Transformer/posembed_input/pos_embedding":
                                   np.full(flat["Transformer/posembed_input/pos_embedding"].shape, 3e38,
                                           np.float32)})):
        fx[name] = save_npz({**flat, **edit}, ck / f"{name}.npz")
    data = root / "data"
    fx["photo"] = str(photo(data / "photos" / "good.jpg", 40, 50, seed=1))
    fx["photo2"] = str(photo(data / "photos" / "good2.png", 50, 40, seed=2))
    good = data / "good"
    for cls in ("a", "b"):
        for i in range(3):
            photo(good / cls / f"{cls}{i}.jpg", 40 + 5 * i, 50, seed=10 * i + len(cls))
    fx["good_data"], fx["good_total"] = str(good), 6
    mut = data / "mutable"
    shutil.copytree(good, mut)
    fx["mutable_data"], fx["mutable_total"] = str(mut), 6
    bright = data / "bright"
    from PIL import Image

    for rel, value in (("a/grey.png", 128), ("a/white.png", 255), ("b/black.png", 0), ("b/grey2.png", 127)):
        (bright / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((30, 40, 3), value, np.uint8)).save(bright / rel)
    fx["bright_data"] = str(bright)
    from vitjax.cli import evaluate as cli_evaluate
    from vitjax.cli import visualize as cli_visualize

    sink = io.StringIO()
    if "maps" in surfaces:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            rc = cli_visualize.main(["--ckpt", str(fx["base"]), "--images", fx["photo"], fx["photo2"], "--out",
                                     str(root / "vis"), "--run-name", "maps", "--save-maps", "--no-summary",
                                     "--no-grid", "--no-compile-cache", "-q"])
        assert rc == 0, sink.getvalue()
        fx["maps"] = str(root / "vis" / "maps" / "maps.msgpack")
    if "shards" in surfaces:
        for data_dir, out in ((good, root / "runs" / "good"), (mut, root / "runs" / "mutable")):
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                rc = cli_evaluate.main(["--ckpt", str(fx["base"]), "--data", str(data_dir), "--out", str(out),
                                        "--batch-size", "2", "--no-progress"])
            assert rc == 0, sink.getvalue()
        fx["good_run"], fx["mutable_run"] = str(root / "runs" / "good"), str(root / "runs" / "mutable")
    if {"safetensors", "config"} & set(surfaces):
        import torch
        import transformers

        torch.manual_seed(0)
        hf = root / "hf"
        conf = transformers.ViTConfig(hidden_size=128, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=256, image_size=32, patch_size=16, num_labels=5)
        model = transformers.ViTForImageClassification(conf)
        with torch.no_grad():  # away from round numbers, so a misread weight shows
            for prm in model.parameters():
                prm.add_(0.05 * torch.randn_like(prm))
        model.save_pretrained(hf)
        transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(hf)
        fx["hf"] = str(hf)
        try:
            import timm
            from timm.models._hub import save_for_hf

            tm = timm.create_model("vit_small_patch16_224", pretrained=False, img_size=32, depth=1, embed_dim=128,
                                   num_heads=2, num_classes=5)
            save_for_hf(tm, root / "timm", safe_serialization=True)
            fx["timm"] = str(root / "timm")
        except ImportError:
            pass
    return {k: str(v) for k, v in fx.items()}


# =========================================================================== main


def _machine() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = "?"
    return f"{os.cpu_count()} CPUs ({cpu}), load {os.getloadavg()[0]:.1f}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/fuzz.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a subset of the cases (a few minutes)")
    ap.add_argument("--only", metavar="SURFACE[,SURFACE]", help=f"surfaces: {', '.join(SURFACES)}")
    ap.add_argument("--match", metavar="REGEX", help="only the cases whose id matches")
    ap.add_argument("--jobs", type=int, default=1, help="cases run at once (default: %(default)s)")
    ap.add_argument("--spawn", action="store_true", help="a fresh python3 per case instead of a fork")
    ap.add_argument("--mem-limit", type=float, default=4.0, metavar="GIB",
                    help="address-space limit of each case in GiB (default: %(default)s; 0 = none)")
    ap.add_argument("--keep", metavar="DIR", help="generate into DIR and keep it")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results-fuzz.json"), help="the JSON results")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--generate", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--lib-child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for k, v in ENV.items():
        os.environ[k] = v
    if args.lib_child:  # --spawn: one library call
        name, kwargs, payload = args.lib_child
        return _lib_child(name, json.loads(kwargs), Path(payload))
    surfaces = SURFACES if not args.only else tuple(s.strip() for s in args.only.split(","))
    unknown = [s for s in surfaces if s not in SURFACES]
    if unknown:
        ap.error(f"--only: unknown surface(s) {', '.join(unknown)}; known: {', '.join(SURFACES)}")
    if args.generate:
        fx = generate(Path(args.generate), surfaces)
        (Path(args.generate) / "fixtures.json").write_text(json.dumps(fx, indent=1))
        return 0

    t0 = time.monotonic()
    root = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="vitjax-fuzz-"))
    if args.keep and root.exists() and any(root.iterdir()):
        if not (root / "fixtures.json").is_file():
            ap.error(f"--keep {args.keep}: not empty and not an earlier fuzz folder; give a new or empty folder")
        shutil.rmtree(root)  # an earlier fuzz folder: generated again from scratch
    root.mkdir(parents=True, exist_ok=True)
    print(f"fuzz: generating fixtures in {root} ...", flush=True)
    import subprocess

    gen = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--generate", str(root), "--only",
                          ",".join(surfaces)], cwd=REPO, capture_output=True, text=True)
    if gen.returncode:
        print(gen.stdout + gen.stderr, file=sys.stderr)
        print("fuzz: fixture generation failed", file=sys.stderr)
        return 1
    fx = json.loads((root / "fixtures.json").read_text())
    cases: List[Case] = []
    for s in surfaces:
        cases += BUILDERS[s](root, fx)
    if args.quick:
        cases = [c for c in cases if c.quick]
    if args.match:
        cases = [c for c in cases if re.search(args.match, c.id)]
    ids = [c.id for c in cases]
    dup = {i for i in ids if ids.count(i) > 1}
    assert not dup, f"duplicate case ids: {sorted(dup)}"
    for c in cases:
        c.id = re.sub(r"[^A-Za-z0-9_.+-]", "_", c.id)
    if args.list:
        for c in cases:
            print(f"{c.id:50s} {c.kind}")
        print(f"{len(cases)} cases, {sum(len(c.inputs) or 1 for c in cases)} inputs")
        return 0
    print(f"fuzz: {len(cases)} cases ({sum(len(c.inputs) or 1 for c in cases)} inputs) over {', '.join(surfaces)}; "
          f"generation took {time.monotonic() - t0:.0f} s", flush=True)

    spawn = args.spawn
    if not spawn:  # import what the children use, without starting the JAX backend (a fork after it could hang)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
        import scipy.io  # noqa: F401
        from jax._src import xla_bridge

        import vitjax  # noqa: F401
        import vitjax.cli.evaluate  # noqa: F401
        import vitjax.cli.perturbation  # noqa: F401
        import vitjax.cli.visualize  # noqa: F401
        import vitjax.evaluation.localisation  # noqa: F401

        if getattr(xla_bridge, "_backends", None):
            print("fuzz: the JAX backend started in this process; running each case in a fresh python3", flush=True)
            spawn = True
    runner = Runner(spawn=spawn, mem_gib=args.mem_limit, jobs=max(1, args.jobs))
    results: List[Dict[str, Any]] = []
    width = len(str(len(cases)))

    def report(case: Case, o: Outcome) -> None:
        verdicts = classify(case, o)
        err_head = [line for line in o.stderr.splitlines() if line.strip()][:8]
        out_head = [line for line in o.stdout.splitlines() if line.strip()][:4]
        for v in verdicts:
            results.append({"id": case.id, "surface": case.surface, "kind": case.kind, "input": v["input"],
                            "class": v["class"], "detail": v["detail"], "rc": o.rc, "seconds": round(o.seconds, 2),
                            "command": case.command(root / "cases" / case.id) if not case.na else "",
                            "stderr_head": err_head, "stdout_head": out_head})
        classes = sorted({v["class"] for v in verdicts})
        flag = "" if all(c in OK for c in classes) else "  <--"
        print(f"[{len(set(r['id'] for r in results)):{width}d}/{len(cases)}] {case.id:52s} {'/'.join(classes):14s} "
              f"{o.seconds:5.1f} s{flag}", flush=True)

    runner.run_all(cases, root, report)
    elapsed = time.monotonic() - t0

    # the table
    counts: Dict[str, Dict[str, int]] = {}
    for r in results:
        counts.setdefault(r["surface"], {}).setdefault(r["class"], 0)
        counts[r["surface"]][r["class"]] += 1
    cols = [c for c in (*CLASSES, "N/A") if any(c in v for v in counts.values())]
    print()
    print(f"{'surface':12s} " + " ".join(f"{c:>13s}" for c in cols) + f" {'inputs':>7s}")
    for s in surfaces:
        row = counts.get(s, {})
        print(f"{s:12s} " + " ".join(f"{row.get(c, 0):13d}" for c in cols) + f" {sum(row.values()):7d}")
    tot = {c: sum(v.get(c, 0) for v in counts.values()) for c in cols}
    print(f"{'total':12s} " + " ".join(f"{tot[c]:13d}" for c in cols) + f" {sum(tot.values()):7d}")
    bad = [r for r in results if r["class"] not in OK]
    print(f"\n{len(results)} inputs in {len(cases)} runs, {elapsed / 60:.1f} min ({'spawn' if spawn else 'fork'}, "
          f"{runner.jobs} job(s)); {len(bad)} not OK")
    noisy = sorted({(r["id"], r["detail"]) for r in results
                    if r["class"] == "OK-handled" and r["detail"].startswith("stray stderr")})
    if noisy:
        print(f"\n{len(noisy)} run(s) right but with stray lines on stderr (a user sees them):")
        for i, detail in noisy:
            print(f"  {i}: {detail}")
    for r in bad:
        print(f"\n{r['class']}: {r['id']}" + (f" [{r['input']}]" if r["input"] != r["id"] else ""))
        print(f"  input:   {r['kind']}")
        print(f"  command: {r['command']}")
        print(f"  exit {r['rc']}: {r['detail']}")
        for line in r["stderr_head"][:5]:
            print(f"  | {line[:200]}")
    doc = {"schema": "vitjax-fuzz/1", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": _machine(),
           "mode": "spawn" if spawn else "fork", "quick": args.quick, "surfaces": list(surfaces),
           "runs": len(cases), "inputs": len(results), "seconds": round(elapsed, 1), "counts": counts,
           "totals": tot, "not_ok": bad, "fixtures": str(root),
           "cases": [r if r["class"] not in OK else {k: r[k] for k in ("id", "surface", "kind", "input", "class",
                                                                       "detail", "rc", "seconds")}
                     for r in results]}
    from vitjax.io import write_atomic

    write_atomic(args.out, (json.dumps(doc, indent=1, default=str) + "\n").encode(), overwrite=True)
    print(f"\nwrote {args.out}")
    if bad or args.keep:
        print(f"inputs kept in {root} (commands above refer to them)")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
