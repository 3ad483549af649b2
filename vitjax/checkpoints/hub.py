"""Checkpoints by their Hugging Face Hub names: ``hf-hub:org/name[@revision]``.

``load_checkpoint("hf-hub:google/vit-base-patch16-224")`` and ``--ckpt hf-hub:timm/...`` on every
command resolve the name through ``huggingface_hub`` (no HTTP code of vitjax's own), to files in
the Hub's own cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``
(read when the name is resolved, not when Python started), laid out as the Hub does it
(``models--org--name/refs/<branch or tag>`` holds a commit, ``snapshots/<commit>/<file>``). The
Hub's settings apply: ``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``) uses the cache only, the
token of ``hf auth login`` or ``$HF_TOKEN`` opens private and gated repositories,
``HF_HUB_ETAG_TIMEOUT`` bounds each request (seconds, default 10).

What is fetched (:func:`resolve_hub`), in this order, all at one commit (the one the first file
resolves to, so a branch that moves meanwhile cannot mix two versions):

1. ``config.json`` (timm's, with ``pretrained_cfg`` and ``label_names``; or transformers', with
   ``id2label``); a repository without one is read with the family's defaults;
2. the weights: ``model.safetensors``, else ``model.safetensors.index.json`` and every shard it
   names (merged by :func:`vitjax.checkpoints.safetensors.load_sharded`);
3. ``preprocessor_config.json`` when the repository has one (transformers' input size,
   resize and normalisation; not looked for beside a timm ``config.json``, which holds them).

Nothing else, and never a pickle: a repository whose weights are only ``pytorch_model.bin`` or
``.pth`` files is refused in one line that says how to make a ``.safetensors``.

Cache first: a file already in the cache is used as it is when offline; online, the Hub's own
check for a newer commit of a branch runs (one request per file), and when the Hub cannot be
reached a cached file is still used. A file that is not in the cache is looked up with one
request that is not retried, so a machine without network fails at once. Every failure is one
line naming the repository, the file and the cache folder: no network, offline and not cached,
no such repository or revision (or private or gated without a token), no safetensors weights.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

from vitjax.checkpoints.safetensors import read_index
from vitjax.errors import TORCH_PICKLES, CheckpointError, DownloadError, VitjaxWarning, one_line, pickle_refusal

__all__ = [
    "CONFIG",
    "HUB_PREFIX",
    "INDEX",
    "PREPROCESSOR",
    "WEIGHTS",
    "checkpoint_label",
    "hub_cache_dir",
    "hub_offline",
    "is_hub_name",
    "parse_hub_name",
    "resolve_hub",
]

PathLike = Union[str, os.PathLike]

#: The prefix of a Hub name, as timm spells it (``timm.create_model("hf-hub:timm/...")``).
HUB_PREFIX = "hf-hub:"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
PREPROCESSOR = "preprocessor_config.json"
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO = re.compile(rf"(?:{_PART}/)?{_PART}")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_TRUE = {"1", "ON", "YES", "TRUE"}
FORM = "hf-hub:ORG/NAME[@REVISION]"


def is_hub_name(name: object) -> bool:
    """True for a string that starts with ``hf-hub:`` (any case): a Hugging Face Hub name, not a path."""
    return isinstance(name, str) and name.strip().lower().startswith(HUB_PREFIX)


def parse_hub_name(name: str) -> Tuple[str, Optional[str]]:
    """``"hf-hub:org/name@rev"`` -> ``("org/name", "rev")``; no ``@``: revision None (the default branch).

    The repository id follows the Hub's rules (``huggingface_hub.utils.validate_repo_id``): an
    optional owner and a name of letters, digits, ``.``, ``_``, ``-``, not starting or ending with
    ``.`` or ``-``, no ``--`` or ``..``, at most 96 characters each. The revision is a branch, a tag
    or a commit hash (everything after the first ``@``; ``refs/pr/1`` included).

    Raises:
      DownloadError: not of the form ``hf-hub:ORG/NAME[@REVISION]`` (one line, the form shown).
    """
    text = name.strip()
    rest = text[len(HUB_PREFIX):] if is_hub_name(text) else text
    repo, at, revision = rest.partition("@")
    if not _REPO.fullmatch(repo) or "--" in repo or ".." in repo or repo.endswith(".git"):
        raise DownloadError(f"{name!r} is not a Hugging Face Hub name of the form {FORM} (the repository id "
                            "has letters, digits, '.', '_', '-'; e.g. hf-hub:google/vit-base-patch16-224)")
    if at and (not revision or revision != revision.strip() or any(c.isspace() for c in revision)):
        raise DownloadError(f"{name!r}: the revision after '@' is empty or has spaces; expected {FORM} "
                            "(a branch, a tag or a commit hash)")
    return repo, (revision if at else None)


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in _TRUE


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set to 1/ON/YES/TRUE now (read at each call)."""
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def hub_cache_dir() -> Path:
    """The Hub's cache folder as ``huggingface_hub`` computes it, from the environment NOW.

    ``$HF_HUB_CACHE``, else ``$HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub`` (``~`` and ``$VAR``
    expanded). ``huggingface_hub`` reads these when it is imported; vitjax passes the folder at
    each call, so a changed ``HF_HOME`` is honoured in the same process.
    """

    def expand(p: str) -> Path:
        return Path(os.path.expandvars(os.path.expanduser(p)))

    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return expand(os.environ[var])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return expand(home) / "hub"


def _timeout() -> float:
    value = os.environ.get("HF_HUB_ETAG_TIMEOUT", "").strip()
    try:
        return float(value) if value and float(value) > 0 else 10.0
    except ValueError:
        return 10.0


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """``huggingface_hub``'s log lines (retries, "thrown while requesting") kept off the terminal meanwhile:
    a failure is vitjax's one line."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


_ABSENT = "absent"  # the repository (at this commit) has no such file
_NOT_CACHED = "not cached"  # offline, and the cache does not say


class _Repo:
    """One resolution: the repository, its revision (pinned to a commit once one file resolved) and the cache."""

    def __init__(self, name: str, download: bool):
        import huggingface_hub  # heavy: imported only when a Hub name is used

        self.hub = huggingface_hub
        self.name = name.strip()
        self.repo, self.revision = parse_hub_name(self.name)
        self.asked = self.revision  # as the user named it (messages); self.revision is pinned to a commit later
        self.cache = hub_cache_dir()
        self.offline = hub_offline() or not download
        self.why_offline = ("HF_HUB_OFFLINE is set" if hub_offline() else "downloading is off (--no-download)")
        self.why_missing = self.why_offline

    def _where(self, filename: str) -> str:
        at = f"@{self.asked}" if self.asked else ""
        return f"{HUB_PREFIX}{self.repo}{at}: {filename}"

    def fail(self, filename: str, what: str) -> DownloadError:
        return DownloadError(one_line(f"{self._where(filename)}: {what} (Hugging Face cache: {self.cache})"))

    def _pin(self, path: str) -> None:
        commit = Path(path).parent.name
        if _COMMIT.fullmatch(commit):
            self.revision = commit  # every later file from the same snapshot

    def get(self, filename: str, *, optional: bool = False) -> str:
        """The cached path of ``filename`` (downloaded when needed), ``_ABSENT`` or ``_NOT_CACHED``.

        ``optional``: a file the checkpoint loads without (the processor's), so that when the Hub cannot be
        reached and the cache does not hold it, it is ``_NOT_CACHED`` (``self.why_missing`` says why) rather
        than an error."""
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        hub = self.hub
        cached = hub.try_to_load_from_cache(self.repo, filename, cache_dir=str(self.cache), revision=self.revision)
        if self.offline:
            if isinstance(cached, str):
                self._pin(cached)
                return cached
            return _ABSENT if cached is hub._CACHED_NO_EXIST else _NOT_CACHED
        if not isinstance(cached, str):
            try:
                if not self._exists_remotely(filename):
                    return _ABSENT
            except DownloadError:
                if not optional:
                    raise
                self.why_missing = "the Hugging Face Hub cannot be reached"
                return _NOT_CACHED
        try:
            with _quiet_hub():
                path = hub.hf_hub_download(self.repo, filename, revision=self.revision, cache_dir=str(self.cache),
                                           etag_timeout=_timeout())
        except LocalEntryNotFoundError as e:  # a subclass of EntryNotFoundError: the Hub could not be reached
            raise self.fail(filename, f"cannot download it ({_reason(e)})") from None
        except EntryNotFoundError:
            return _ABSENT
        except Exception as e:  # noqa: BLE001  network, HTTP, disk: one line, whatever huggingface_hub raised
            raise self._failure(filename, e) from None
        self._pin(path)
        return path

    def _exists_remotely(self, filename: str) -> bool:
        """One HEAD request, not retried (a machine without network fails at once): does the file exist?"""
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        hub = self.hub
        url = hub.hf_hub_url(self.repo, filename, revision=self.revision)
        try:
            with _quiet_hub():
                hub.get_hf_file_metadata(url, timeout=_timeout())
        except LocalEntryNotFoundError as e:
            raise self._failure(filename, e) from None
        except EntryNotFoundError:
            with contextlib.suppress(Exception), _quiet_hub():  # the Hub records the absence in its cache
                hub.hf_hub_download(self.repo, filename, revision=self.revision, cache_dir=str(self.cache),
                                    etag_timeout=_timeout())
            return False
        except Exception as e:  # noqa: BLE001
            raise self._failure(filename, e) from None
        return True

    def _failure(self, filename: str, e: Exception) -> DownloadError:
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        if isinstance(e, GatedRepoError):
            return self.fail(filename, "the repository is gated: accept its conditions on the Hub, then log in "
                                       "(hf auth login) or set HF_TOKEN")
        if isinstance(e, RepositoryNotFoundError):
            return self.fail(filename, "no such repository on the Hugging Face Hub, or it is private and no token "
                                       "opens it (hf auth login, or HF_TOKEN)")
        if isinstance(e, RevisionNotFoundError):
            return self.fail(filename, f"the repository has no revision {self.asked!r} (a branch, tag or commit)")
        if isinstance(e, OfflineModeIsEnabled):
            return self.fail(filename, "not in the cache, and huggingface_hub is in offline mode (HF_HUB_OFFLINE "
                                       "was set when it was imported)")
        if isinstance(e, HfHubHTTPError) and getattr(e, "response", None) is not None:
            return self.fail(filename, f"the Hub answered HTTP {e.response.status_code} ({_reason(e)})")
        return self.fail(filename, f"cannot reach the Hugging Face Hub ({_reason(e)}) and the cache does not hold "
                                   "it; connect (or set HTTPS_PROXY), or set HF_HOME to a cache that holds it and "
                                   "HF_HUB_OFFLINE=1")

    def not_cached(self, filename: str) -> DownloadError:
        return self.fail(filename, f"not in the cache, and {self.why_offline}; fetch it once where the Hub can be "
                                   "reached (it is kept in that cache), or set HF_HOME to a cache that holds it")

    def pickles(self) -> List[str]:
        """The PyTorch pickles the repository (or, offline, its cached snapshot) holds, by name."""
        names: List[str] = []
        if self.offline:
            commit = self.revision or "main"
            repo_dir = self.cache / ("models--" + self.repo.replace("/", "--"))
            ref = repo_dir / "refs" / commit
            if ref.is_file():
                commit = ref.read_text(encoding="ascii", errors="replace").strip()
            snapshot = repo_dir / "snapshots" / commit
            if snapshot.is_dir():
                names = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
        else:
            with contextlib.suppress(Exception), _quiet_hub():
                names = sorted(self.hub.list_repo_files(self.repo, revision=self.revision))
        return [n for n in names if n.lower().endswith(TORCH_PICKLES)
                or n.lower().endswith(tuple(s + ".index.json" for s in TORCH_PICKLES))]


def _reason(e: BaseException) -> str:
    text = one_line(e)
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _is_timm_config(path: str) -> bool:
    """A timm ``config.json`` (``architecture`` and ``pretrained_cfg``): its repository has no processor file."""
    try:
        if os.path.getsize(path) > (4 << 20):
            return False
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # the loader names what is wrong with it
    return isinstance(data, dict) and "architecture" in data and "pretrained_cfg" in data


def resolve_hub(name: str, *, download: bool = True) -> Path:
    """The local weights file of a Hub name: ``model.safetensors`` or ``model.safetensors.index.json``.

    Fetches (or finds in the Hub's cache) ``config.json``, the ``.safetensors`` weights (every
    shard of a sharded checkpoint) and ``preprocessor_config.json`` when present, all from one
    commit of the repository, into one snapshot folder; see the module docstring. The returned
    path lies in ``<cache>/models--org--name/snapshots/<commit>/`` beside the JSON files, which
    :func:`vitjax.load_checkpoint` reads there.

    Args:
      name: ``"hf-hub:org/name"`` or ``"hf-hub:org/name@revision"`` (branch, tag or commit).
      download: False: use the cache only, as with ``HF_HUB_OFFLINE=1``.

    Returns:
      The path of the weights file (or the index), which exists.

    Raises:
      DownloadError: a name not of the form ``hf-hub:ORG/NAME[@REVISION]``; a file that is not in
        the cache while offline; the Hub unreachable (no network: at once, no retries) with the
        file not cached; no such repository, revision or access; a repository without
        ``.safetensors`` weights. One line naming the repository, the file and the cache folder.
      CheckpointError: the repository's weights are only PyTorch pickles (the line says how to
        convert them); a shard index that is not a valid index.
    """
    r = _Repo(name, download)
    config = r.get(CONFIG)
    if config == _NOT_CACHED:
        raise r.not_cached(CONFIG)
    weights = r.get(WEIGHTS)
    if weights in (_ABSENT, _NOT_CACHED):
        index = r.get(INDEX)
        if index in (_ABSENT, _NOT_CACHED):
            pickles = r.pickles()
            if pickles:
                raise CheckpointError(one_line(
                    pickle_refusal(f"{HUB_PREFIX}{r.repo}: {pickles[0]}") + "; the repository holds no .safetensors "
                    f"weights ({', '.join(pickles[:3])}{', ...' if len(pickles) > 3 else ''} only). Or ask its "
                    "owners for a safetensors conversion (the Hub's convert Space opens a pull request: then "
                    "name it @refs/pr/N)"))
            if weights == _NOT_CACHED:
                raise r.not_cached(WEIGHTS)
            raise r.fail(WEIGHTS, f"the repository has neither {WEIGHTS} nor {INDEX}: no .safetensors weights "
                                  "vitjax can read")
        for shard in sorted(set(read_index(index).values())):
            got = r.get(shard)
            if got == _NOT_CACHED:
                raise r.not_cached(shard)
            if got == _ABSENT:
                raise r.fail(shard, f"named by {INDEX} but not in the repository")
        weights = index
    pre = _ABSENT if config != _ABSENT and _is_timm_config(config) else r.get(PREPROCESSOR, optional=True)
    if pre == _NOT_CACHED:
        warnings.warn(f"{HUB_PREFIX}{r.repo}: {PREPROCESSOR} is not in the Hugging Face cache ({r.cache}) and "
                      f"{r.why_missing}: the input size and normalisation are the family's defaults, which may "
                      "differ from what transformers feeds this model", VitjaxWarning, stacklevel=3)
    return Path(weights)


def checkpoint_label(path: PathLike, given: Optional[str] = None) -> str:
    """A short name for a checkpoint in figures and tables.

    A file inside the Hub's cache (``.../models--org--name/snapshots/<commit>/model.safetensors``)
    is ``"hf-hub:org/name@<commit[:12]>"``; any other file is its own name (``"ViT-B_16.npz"``).
    ``given`` (the name the user typed) is used when there is no path.
    """
    if path is None:
        return given or "checkpoint"
    p = Path(path)
    snapshot, repo_dir = p.parent, p.parent.parent.parent
    if p.parent.parent.name == "snapshots" and repo_dir.name.startswith("models--") and _COMMIT.fullmatch(
            snapshot.name):
        return f"{HUB_PREFIX}{repo_dir.name[len('models--'):].replace('--', '/')}@{snapshot.name[:12]}"
    return p.name
