"""One padded batcher and the data-parallel sharding helpers, shared by the CLI, the notebook and the dataset runner.

Batching. :func:`padded_batches` cuts a sequence of items (paths, records...) into
consecutive chunks of ``batch_size`` and yields one :class:`Batch` per chunk: an
array ``[B, H, W, 3]`` float32 of FIXED size ``B = batch_size`` (so a jitted model
compiles once), a mask of the rows that hold an image, and the items that could not
be loaded, with their reasons. Row ``i`` of a batch always holds item ``i`` of its
chunk; rows of failed items and the rows past the end of a short last chunk are
zeros and marked invalid. Loading (decoding, resizing) runs in a background pool
(threads by default: Pillow releases the GIL while it decodes and resizes), a few
batches ahead of the consumer, so the accelerator computes batch k while the host
prepares batch k + 1.

Sharding. :func:`local_mesh` is a 1-D :class:`jax.sharding.Mesh` over this
process's devices; :func:`shard_batch` places a batch (or a pytree of batches)
split along axis 0 over it (``NamedSharding(mesh, P("batch"))``: data parallel) and
:func:`replicate` places parameters on every device of it. A jitted function of
such arrays runs on all local devices and its outputs stay sharded. The batch size
must be a multiple of the device count: :func:`round_batch_size`.

Several hosts. After ``jax.distributed.initialize()`` each process takes its own
share of the items with :func:`process_items` (``items[process_index::process_count]``)
and runs the same code on its own local devices. The mesh deliberately spans the
local devices only: inference needs no communication, so processes never wait on
each other and need not run the same number of batches (a resumed run skips
different numbers of finished images on each host). There is no other cluster code.

Example::

    mesh = local_mesh()
    params = replicate(params, mesh)
    size = round_batch_size(32, mesh)
    load = lambda path: preprocess(path, model.config.image_size)
    for batch in padded_batches(process_items(paths), load, size, shape=(224, 224, 3)):
        out = jitted(params, shard_batch(batch.images, mesh))
        keep = np.asarray(out)[batch.valid]
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import operator
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from vitjax.data.datasets import positive_int
from vitjax.errors import one_line

__all__ = [
    "Batch",
    "padded_batches",
    "local_mesh",
    "round_batch_size",
    "shard_batch",
    "replicate",
    "process_items",
    "BATCH_AXIS",
]

#: Name of the mesh axis the batch is split over.
BATCH_AXIS = "batch"


@dataclass(frozen=True)
class Batch:
    """One fixed-size batch of :func:`padded_batches`.

    Attributes:
      index: 0-based number of the batch in this iteration.
      start: position of the batch's first item in the input sequence.
      images: ``[B, H, W, C]`` float32; rows that are not ``valid`` are zeros.
      valid: ``[B]`` bool, True where the row holds a loaded image.
      items: the chunk's items (length ``<= B``); row ``i`` belongs to ``items[i]``.
      extras: per row of ``items``, the extra value returned by the load
        function (see :func:`padded_batches`), ``None`` for failed rows.
      failed: ``((item, reason), ...)`` for the items whose load raised
        ``ValueError``; ``reason`` is the first line of the message.
    """

    index: int
    start: int
    images: np.ndarray
    valid: np.ndarray
    items: Tuple[Any, ...]
    extras: Tuple[Any, ...]
    failed: Tuple[Tuple[Any, str], ...]

    @property
    def rows(self) -> np.ndarray:
        """Indices (int64 ``[n]``) of the valid rows, ascending."""
        return np.flatnonzero(self.valid)

    @property
    def count(self) -> int:
        """Number of valid rows."""
        return int(self.valid.sum())

    def loaded(self) -> List[Tuple[int, Any, Any]]:
        """``[(row, item, extra), ...]`` for the valid rows, in row order."""
        return [(int(r), self.items[r], self.extras[r]) for r in self.rows]


def padded_batches(
    items: Sequence[Any],
    load: Callable[[Any], Union[np.ndarray, Tuple[np.ndarray, Any]]],
    batch_size: int,
    *,
    shape: Sequence[int],
    workers: Optional[int] = None,
    prefetch: int = 2,
    executor: Optional[cf.Executor] = None,
) -> Iterator[Batch]:
    """Yields fixed-size padded batches of loaded items, loading in a background pool.

    Args:
      items: the items, in order (paths, :class:`vitjax.data.datasets.ImageRecord`...).
      load: ``load(item)`` -> ``x`` or ``(x, extra)``, with ``x`` an array of
        ``shape`` (e.g. a preprocessed ``[H, W, 3]`` float32 image, see
        :func:`vitjax.preprocess`); ``extra`` is passed through in
        :attr:`Batch.extras` (e.g. the photo's size, an object mask). A
        ``ValueError`` marks the item as failed (an unreadable image); any other
        exception is a bug and propagates.
      batch_size: rows per batch ``B`` (every batch has exactly ``B`` rows).
      shape: the shape of one loaded array, e.g. ``(224, 224, 3)``.
      workers: threads of the pool (default: ``os.cpu_count()``); ignored with
        ``executor``.
      prefetch: how many batches beyond the one being consumed are loaded ahead.
      executor: a :class:`concurrent.futures.Executor` to load with instead of an
        own thread pool (e.g. a ``ProcessPoolExecutor`` for loads that hold the
        GIL; ``load`` and the items must then pickle). Not shut down here.

    Yields:
      :class:`Batch`, one per chunk ``items[k*B:(k+1)*B]``, also when every item
      of the chunk failed (then no row is valid).

    Raises:
      ValueError: ``batch_size``/``prefetch``/``workers`` not positive
        (``prefetch`` may be 0), or ``load`` returned an array of another shape
        (message names the item).
    """
    batch_size = positive_int("batch_size", batch_size)
    shape = tuple(operator.index(s) for s in shape)
    if isinstance(prefetch, bool) or operator.index(prefetch) < 0:
        raise ValueError(f"prefetch must be a non-negative integer, got {prefetch!r}")
    items = list(items)
    own = executor is None
    if own:
        n = (os.cpu_count() or 1) if workers is None else positive_int("workers", workers)
        executor = cf.ThreadPoolExecutor(max_workers=n, thread_name_prefix="vitjax-load")
    pending: collections.deque = collections.deque()  # futures, in item order
    submitted = 0
    ahead = (int(prefetch) + 1) * batch_size
    try:
        for index, start in enumerate(range(0, len(items), batch_size)):
            stop = min(start + batch_size, len(items))
            while submitted < min(len(items), stop + ahead - batch_size):
                pending.append(executor.submit(load, items[submitted]))
                submitted += 1
            images = np.zeros((batch_size,) + shape, np.float32)
            valid = np.zeros(batch_size, bool)
            extras: List[Any] = [None] * (stop - start)
            failed = []
            for row in range(stop - start):
                item = items[start + row]
                try:
                    out = pending.popleft().result()
                except ValueError as e:
                    failed.append((item, one_line(e) or type(e).__name__))
                    continue
                x, extra = out if isinstance(out, tuple) else (out, None)
                x = np.asarray(x)
                if x.shape != shape:
                    raise ValueError(f"{item}: load returned shape {x.shape}, expected {shape}")
                images[row] = x
                valid[row] = True
                extras[row] = extra
            yield Batch(index, start, images, valid, tuple(items[start:stop]), tuple(extras), tuple(failed))
    finally:
        for f in pending:
            f.cancel()
        if own:
            executor.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------- devices


def local_mesh(devices: Optional[Sequence[Any]] = None):
    """A 1-D mesh (axis :data:`BATCH_AXIS`) over ``devices`` (default: ``jax.local_devices()``).

    Returns:
      :class:`jax.sharding.Mesh`.

    Raises:
      ValueError: ``devices`` is empty.
    """
    import jax
    from jax.sharding import Mesh

    devices = list(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must not be empty")
    return Mesh(np.array(devices, dtype=object), (BATCH_AXIS,))


def _device_count(mesh_or_count) -> int:
    if hasattr(mesh_or_count, "devices"):
        return int(np.asarray(mesh_or_count.devices).size)
    return positive_int("devices", mesh_or_count)


def round_batch_size(batch_size: int, mesh_or_count=None) -> int:
    """``batch_size`` rounded up to a multiple of the device count of a mesh (or of an int).

    Default: the number of local devices. Raises ValueError for a non-positive size.
    """
    import jax

    b = positive_int("batch_size", batch_size)
    n = len(jax.local_devices()) if mesh_or_count is None else _device_count(mesh_or_count)
    return -(-b // n) * n


def shard_batch(tree, mesh=None):
    """Places arrays split along axis 0 over a 1-D mesh: ``NamedSharding(mesh, P("batch"))``.

    Args:
      tree: an array ``[B, ...]`` or a pytree of them (NumPy or JAX).
      mesh: from :func:`local_mesh` (default: a new one over the local devices).

    Returns:
      the same pytree of :class:`jax.Array`, each device holding ``B / devices`` rows.

    Raises:
      ValueError: a leaf has no axis 0 or ``B`` is not a multiple of the device
        count (pad with :func:`round_batch_size`).
    """
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = local_mesh() if mesh is None else mesh
    n = _device_count(mesh)
    for leaf in jax.tree_util.tree_leaves(tree):
        shape = np.shape(leaf)
        if not shape or shape[0] % n:
            raise ValueError(f"batch axis of shape {shape} does not split over {n} devices; "
                             "use round_batch_size")
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(BATCH_AXIS)))


def replicate(tree, mesh=None):
    """Places a pytree (e.g. parameters) whole on every device of ``mesh`` (``NamedSharding(mesh, P())``)."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = local_mesh() if mesh is None else mesh
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def process_items(items: Sequence[Any], index: Optional[int] = None, count: Optional[int] = None) -> list:
    """This process's share of ``items``: ``items[index::count]``.

    Defaults: ``jax.process_index()`` and ``jax.process_count()`` (0 and 1 on a
    single host; set by ``jax.distributed.initialize()``). Every item goes to
    exactly one process; the shares differ in length by at most one.

    Raises:
      ValueError: ``count < 1`` or ``index`` outside ``[0, count)``.
    """
    import jax

    count = jax.process_count() if count is None else positive_int("count", count)
    index = jax.process_index() if index is None else operator.index(index)
    if not 0 <= index < count:
        raise ValueError(f"index must be in [0, {count}), got {index}")
    return list(items)[index::count]
