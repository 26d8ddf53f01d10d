"""Names and small helpers shared by the store writer and reader.

A store is a folder::

    STORE/
      observations.h5   arrays, the observation table, bands, truth, provenance (immutable)
      pairing.h5        the per-instrument neighbour graph (optional, replaceable)

HDF5 is the format because it is what the real survey data (Multimodal Universe) ships as,
h5py reads chunked rows lazily with a bounded cache, and one self-describing file per store
is easy to copy and inspect. ``observations.h5`` is written once, in chunks, inside a hidden
temporary folder that is renamed into place when complete; ``pairing.h5`` can be recomputed
later (different K or radius) and is itself replaced by an atomic rename.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

FORMAT_NAME = "whatsreal-store"
FORMAT_VERSION = 1
OBS_FILE = "observations.h5"
PAIRING_FILE = "pairing.h5"

# Columns of the observation table that every store has (others are free metadata).
CORE_COLUMNS = ("obs_id", "source_id", "instrument")
POSITION_COLUMNS = ("ra", "dec")
PRIMARY_ARRAY = "flux"
# Optional arrays with the same shape as ``flux``; anything else is rejected by name.
KNOWN_ARRAYS = ("ivar", "mask", "clean")
ARRAY_DTYPES = {"flux": "float32", "ivar": "float32", "mask": "uint8", "clean": "float32"}


def temporary_sibling(path: Path) -> Path:
    """A hidden, unique path next to ``path`` on the same filesystem (so rename is atomic)."""
    return path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def replace_path(tmp: Path, final: Path, overwrite: bool) -> None:
    """Move ``tmp`` onto ``final``; refuse to clobber an existing store unless asked."""
    if final.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
            raise FileExistsError(
                f"{final} already exists; pass overwrite=True (CLI: --overwrite) to replace it"
            )
        trash = temporary_sibling(final)
        os.replace(final, trash)
        os.replace(tmp, final)
        if trash.is_dir():
            shutil.rmtree(trash, ignore_errors=True)
        else:
            trash.unlink(missing_ok=True)
    else:
        os.replace(tmp, final)
