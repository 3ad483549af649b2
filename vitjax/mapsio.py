"""Former home of the maps file and the atomic writer; both live in :mod:`vitjax.io` now.

Kept so ``from vitjax.mapsio import load_maps, save_maps`` keeps working.
"""

from vitjax.io import FORMAT, VERSION, file_sha256, load_maps, save_maps, write_atomic

__all__ = ["FORMAT", "VERSION", "file_sha256", "load_maps", "save_maps", "write_atomic"]
