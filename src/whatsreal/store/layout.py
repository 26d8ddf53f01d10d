"""Names and small helpers shared by the store writer and reader.

A store is a folder::

    STORE/
      observations.h5   arrays, the observation table, bands, truth, provenance (immutable)
      pairing.h5        the per-instrument neighbour graph (optional, replaceable)

A compact store (``whatsreal.store.compact``) also has ``scale/<array>`` (N, C) float32, the
per-observation, per-band scales of its float16 arrays.

HDF5 is the format because it is what the real survey data (Multimodal Universe) ships as,
h5py reads chunked rows lazily with a bounded cache, and one self-describing file per store
is easy to copy and inspect. ``observations.h5`` is written once, in chunks, inside a hidden
temporary folder that is renamed into place when complete; ``pairing.h5`` can be recomputed
later (different K or radius) and is itself replaced by an atomic rename.

Every dataset carries an HDF5 Fletcher-32 checksum per chunk, so a flipped byte on disk is
an error when the chunk is read (and ``whatsreal store verify`` reads them all), never a
silently wrong value. Stores written before checksums existed still open.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from whatsreal.errors import StoreCorruptError, StoreFormatError
from whatsreal.utils import remove_path, temp_sibling

FORMAT_NAME = "whatsreal-store"
FORMAT_VERSION = 1
# Compact stores (scaled float16, Blosc; whatsreal.store.compact) are version 2, so that a
# reader that predates them refuses them rather than returning scaled values.
COMPACT_FORMAT_VERSION = 2
READABLE_FORMAT_VERSION = COMPACT_FORMAT_VERSION
OBS_FILE = "observations.h5"
PAIRING_FILE = "pairing.h5"

# Columns of the observation table that every store has (others are free metadata).
CORE_COLUMNS = ("obs_id", "source_id", "instrument")
POSITION_COLUMNS = ("ra", "dec")
PRIMARY_ARRAY = "flux"
# Optional arrays with the same shape as ``flux``; anything else is rejected by name.
KNOWN_ARRAYS = ("ivar", "mask", "clean")
ARRAY_DTYPES = {"flux": "float32", "ivar": "float32", "mask": "uint8", "clean": "float32"}
# Datasets the writer only accepts finite: a NaN or inf read back from them is corruption.
FINITE_DATASETS = (
    "data/flux",
    "data/ivar",
    "data/clean",
    "table/ra",
    "table/dec",
    "scale/flux",
    "scale/ivar",
    "scale/clean",
)


def temporary_sibling(path: Path) -> Path:
    """A hidden, unique path next to ``path`` on the same filesystem (so rename is atomic)."""
    return temp_sibling(path)


def replace_path(tmp: Path, final: Path, overwrite: bool) -> None:
    """Move ``tmp`` onto ``final``; refuse to clobber an existing store unless asked."""
    if final.exists():
        if not overwrite:
            remove_path(tmp)
            raise FileExistsError(
                f"{final} already exists; pass overwrite=True (CLI: --overwrite) to replace it"
            )
        trash = temporary_sibling(final)
        os.replace(final, trash)
        os.replace(tmp, final)
        remove_path(trash)
    else:
        os.replace(tmp, final)


def checksum_kwargs(shape: tuple[int, ...]) -> dict[str, Any]:
    """``create_dataset`` options that give a dataset per-chunk Fletcher-32 checksums (HDF5
    cannot chunk, hence checksum, scalars or empty fixed-size arrays)."""
    if len(shape) == 0 or 0 in shape:
        return {}
    return {"fletcher32": True}


def _reason(exc: BaseException) -> str:
    """h5py's error text on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def open_h5(path: Path, fix: str, **kwargs: Any) -> h5py.File:
    """Open an HDF5 file for reading; a truncated or damaged file raises StoreFormatError that
    names it and says what to do (``fix``) instead of h5py's traceback."""
    try:
        return h5py.File(path, "r", **kwargs)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StoreFormatError(
            f"cannot open {path}: {_reason(exc)}; the file is truncated or damaged "
            f"(an interrupted copy?): {fix}"
        ) from None


def corrupt(path: Path, dataset: str, exc: BaseException | str, fix: str) -> StoreCorruptError:
    """The error for a dataset that fails its checksum or cannot be decoded."""
    why = exc if isinstance(exc, str) else _reason(exc)
    return StoreCorruptError(f"{path}: dataset '{dataset}' is corrupted ({why}): {fix}")


def read_all(ds: h5py.Dataset, path: Path, fix: str) -> np.ndarray:
    """Read a whole dataset, turning a checksum or decode failure into StoreCorruptError."""
    try:
        return ds[()]
    except OSError as exc:
        raise corrupt(path, ds.name.lstrip("/"), exc, fix) from None


def store_fix(store: Path) -> str:
    """What to tell a user whose observations.h5 is damaged."""
    return (
        f"run `whatsreal store verify {store}` to list the damaged datasets, then re-create "
        "the store (or copy it again from a good copy)"
    )


def pairing_fix(store: Path) -> str:
    """What to tell a user whose pairing.h5 is damaged (it can simply be recomputed)."""
    return f"recompute it with `whatsreal pair {store}`"


def preview_rows(rows: np.ndarray, limit: int = 5) -> str:
    """Show at most ``limit`` offending row numbers, plus how many there are in all."""
    rows = np.asarray(rows).ravel()
    head = ", ".join(str(int(r)) for r in rows[:limit])
    more = f" and {rows.size - limit} more" if rows.size > limit else ""
    return f"{head}{more}"
