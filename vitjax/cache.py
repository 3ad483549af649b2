"""JAX's persistent compilation cache, so a second run skips XLA compilation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

__all__ = ["cache_home", "default_cache_dir", "enable_compilation_cache"]

ENV = "VITJAX_CACHE_DIR"


def cache_home() -> Path:
    """vitjax's folder for cached files: ``$XDG_CACHE_HOME/vitjax``, else ``~/.cache/vitjax``.

    Compiled programs go to ``<it>/jax`` (:func:`default_cache_dir`), checkpoints to
    ``<it>/checkpoints`` (:func:`vitjax.checkpoints.download.default_checkpoint_dir`); each has its own
    environment variable to move it.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base).expanduser() / "vitjax"


def default_cache_dir() -> Path:
    """``$VITJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/vitjax/jax``, else ``~/.cache/vitjax/jax``."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    return cache_home() / "jax"


def enable_compilation_cache(path: Optional[os.PathLike] = None) -> Optional[Path]:
    """Turns on JAX's persistent compilation cache in ``path`` (default :func:`default_cache_dir`).

    Every compiled program is cached (no minimum compile time or size), so the
    second run of the same command reuses them. Returns the directory, or None
    if it cannot be created (the run then simply compiles as usual).
    """
    import jax

    path = Path(path).expanduser() if path is not None else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
