"""Lazy reader of an observation store: the table lives in memory, arrays stay on disk."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

from whatsreal.errors import StoreFormatError
from whatsreal.store import layout
from whatsreal.store.compact import PACKED_ARRAYS, CompactSpec, register_filters, unpack


@dataclass(frozen=True)
class Neighbours:
    """Per-observation neighbour graph: rows of the store, -1 where there is none."""

    index: np.ndarray  # (N, k) int64
    sep_arcsec: np.ndarray  # (N, k) float32, NaN where index == -1
    k: int
    radius_arcsec: float

    def count(self) -> np.ndarray:
        """Number of real neighbours of each observation."""
        return (self.index >= 0).sum(axis=1)


def _runs(sorted_rows: np.ndarray) -> list[tuple[int, int, int]]:
    """Split sorted unique rows into (start, stop, offset) runs of consecutive rows."""
    if sorted_rows.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [sorted_rows.size]])
    return [
        (int(sorted_rows[a]), int(sorted_rows[b - 1]) + 1, int(a))
        for a, b in zip(starts, stops, strict=True)
    ]


class ObservationStore:
    """Read-only view of a store folder.

    The observation table (ids, instrument codes, positions, metadata) is loaded at open:
    it is small (tens of bytes per row). Arrays are read on demand with :meth:`read`, which
    touches only the requested rows, so memory stays flat however large the store. The
    HDF5 handle is reopened lazily in each process, so the object can be handed to
    DataLoader workers.
    """

    def __init__(self, path: str | Path, rdcc_nbytes: int = 4 * 1024**2) -> None:
        self.path = Path(path)
        obs = self.path / layout.OBS_FILE
        if not obs.is_file():
            hint = " (it is a file; a store is a folder)" if self.path.is_file() else ""
            raise StoreFormatError(
                f"{self.path} is not a whatsreal store: no {layout.OBS_FILE} inside{hint}. "
                "Create one with a simulator (`whatsreal simulate ...`) or StoreWriter"
            )
        self._rdcc = rdcc_nbytes
        self._h5: h5py.File | None = None
        self._pid: int | None = None
        self._fix = layout.store_fix(self.path)
        with layout.open_h5(obs, self._fix) as h5:
            try:
                self._read_header(h5, obs)
            except StoreFormatError:
                raise
            except (KeyError, OSError) as exc:
                raise StoreFormatError(
                    f"{obs} is incomplete or damaged ({' '.join(str(exc).split())}): {self._fix}"
                ) from None
        for key in layout.FINITE_DATASETS:
            group, name = key.split("/")
            if group == "table" and name in self.table:
                self._check_finite(self.table[name], np.arange(self.n_obs), key)
            if group == "scale" and name in self._scales:
                self._check_finite(self._scales[name], np.arange(self.n_obs), key)
        self.neighbours: Neighbours | None = self._load_pairing()

    def _read_header(self, h5: h5py.File, obs: Path) -> None:
        """Format, provenance, instruments and the in-memory table from an open file."""
        if h5.attrs.get("format") != layout.FORMAT_NAME:
            raise StoreFormatError(f"{obs} is HDF5 but not a whatsreal store")
        version = int(h5.attrs["format_version"])
        self.checksummed = "checksums" in h5.attrs
        if version > layout.READABLE_FORMAT_VERSION:
            raise StoreFormatError(
                f"{obs} has store format {version}; this whatsreal reads up to "
                f"{layout.READABLE_FORMAT_VERSION}: upgrade whatsreal"
            )
        self.compact: CompactSpec | None = None
        if "compact" in h5.attrs:
            self.compact = CompactSpec.from_dict(json.loads(str(h5.attrs["compact"])))
        self.provenance: dict[str, Any] = {
            "whatsreal_version": str(h5.attrs["whatsreal_version"]),
            "created_utc": str(h5.attrs["created_utc"]),
            "format_version": version,
        }
        self.config: dict[str, Any] = yaml.safe_load(str(h5.attrs["config"])) or {}
        self.modality = str(h5.attrs["modality"])
        names = json.loads(h5["instruments"].attrs["names"])
        self.instruments: list[str] = list(names)
        self.bands: dict[str, list[str]] = {
            n: json.loads(h5["instruments"].attrs[f"bands/{n}"]) for n in names
        }
        flux = h5[f"data/{layout.PRIMARY_ARRAY}"]
        self.shape: tuple[int, ...] = tuple(flux.shape[1:])
        self.n_obs = int(flux.shape[0])
        self.arrays: tuple[str, ...] = tuple(h5["data"].keys())
        self.table: dict[str, np.ndarray] = self._load_group(h5, "table", obs)
        self.truth_source = self._load_group(h5, "truth/source", obs)
        self.truth_instrument = self._load_group(h5, "truth/instrument", obs)
        self.truth_obs = self._load_group(h5, "truth/observation", obs)
        # per-observation, per-band scales of a compact store's float16 arrays (small: N x C)
        self._scales = self._load_group(h5, "scale", obs)
        if self.compact is not None:
            missing = [a for a in self.arrays if a in PACKED_ARRAYS and a not in self._scales]
            if missing:
                raise StoreFormatError(
                    f"{obs} is a compact store but has no scale/ dataset for {missing}: {self._fix}"
                )

    def _load_group(self, h5: h5py.File, group: str, file: Path) -> dict[str, np.ndarray]:
        """Every dataset of an HDF5 group, read in full (checksums verified by HDF5)."""
        if group not in h5:
            return {}
        return {k: layout.read_all(v, file, self._fix) for k, v in h5[group].items()}

    def _check_finite(self, values: np.ndarray, rows: np.ndarray, dataset: str) -> None:
        """Raise if values the writer only accepted finite are NaN or inf: the file changed
        after it was written (a store without checksums, or damage inside one chunk)."""
        finite = np.isfinite(values)
        if finite.all():
            return
        bad = ~finite.reshape(len(values), -1).all(axis=1)
        raise layout.corrupt(
            self.path / layout.OBS_FILE,
            dataset,
            f"NaN or inf in store rows {layout.preview_rows(rows[bad])}, but the writer "
            "stores only finite values",
            self._fix,
        )

    # -- table conveniences ----------------------------------------------------------
    @property
    def source_id(self) -> np.ndarray:
        """Source of each observation (int64)."""
        return self.table["source_id"]

    @property
    def instrument(self) -> np.ndarray:
        """Instrument code of each observation; names are ``self.instruments[code]``."""
        return self.table["instrument"].astype(np.int64)

    @property
    def has_positions(self) -> bool:
        """Whether observations carry sky positions (ra/dec in degrees)."""
        return "ra" in self.table

    def instrument_code(self, name: str) -> int:
        """Code of an instrument name, with an error that lists the known ones."""
        try:
            return self.instruments.index(name)
        except ValueError:
            raise KeyError(
                f"unknown instrument '{name}'; this store has {self.instruments}"
            ) from None

    def meta_columns(self) -> list[str]:
        """Free metadata columns (everything in the table beyond ids and positions)."""
        core = {*layout.CORE_COLUMNS, *layout.POSITION_COLUMNS}
        return [k for k in self.table if k not in core]

    def __len__(self) -> int:
        return self.n_obs

    def __repr__(self) -> str:
        return (
            f"ObservationStore('{self.path}', n_obs={self.n_obs}, shape={self.shape}, "
            f"instruments={self.instruments}, sources={np.unique(self.source_id).size})"
        )

    # -- lazy array access -----------------------------------------------------------
    def _file(self) -> h5py.File:
        import os

        if self._h5 is None or self._pid != os.getpid():
            if self.compact is not None:
                register_filters()  # the Blosc filter, in this process (DataLoader workers too)
            self._h5 = layout.open_h5(
                self.path / layout.OBS_FILE, self._fix, rdcc_nbytes=self._rdcc
            )
            self._pid = os.getpid()
        return self._h5

    def read(self, rows: Iterable[int] | np.ndarray, arrays: Sequence[str] = ("flux",)) -> dict:
        """Read the given rows (any order, repeats allowed) of the named arrays.

        Only the requested rows are read: they are sorted, de-duplicated and fetched as
        runs of consecutive rows, then returned in the order asked (float32 for a compact
        store's float16 arrays, rescaled; :mod:`whatsreal.store.compact`). A chunk that fails its
        checksum, or NaN/inf in an array the writer only stores finite, raises
        :class:`~whatsreal.errors.StoreCorruptError` naming the file, dataset and rows.
        """
        rows = np.asarray(rows, dtype=np.int64).ravel()
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_obs):
            raise IndexError(f"rows outside [0, {self.n_obs}) requested from {self.path}")
        missing = [a for a in arrays if a not in self.arrays]
        if missing:
            raise KeyError(f"array(s) {missing} not in store {self.path}; it has {self.arrays}")
        uniq, inverse = np.unique(rows, return_inverse=True)
        h5 = self._file()
        out = {}
        for name in arrays:
            ds = h5[f"data/{name}"]
            buf = np.empty((uniq.size, *self.shape), dtype=ds.dtype)
            for start, stop, offset in _runs(uniq):
                try:
                    ds.read_direct(buf, np.s_[start:stop], np.s_[offset : offset + stop - start])
                except OSError as exc:
                    span = f"row {start}" if stop - start == 1 else f"rows {start}-{stop - 1}"
                    why = " ".join(str(exc).split())
                    where = f"{span} failed the checksum or could not be decoded; h5py: {why}"
                    raise layout.corrupt(
                        self.path / layout.OBS_FILE, f"data/{name}", where, self._fix
                    ) from None
            if name in self._scales:  # a compact store: scaled float16 -> float32
                buf = unpack(buf, self._scales[name][uniq])
            if f"data/{name}" in layout.FINITE_DATASETS:
                self._check_finite(buf, uniq, f"data/{name}")
            in_order = uniq.size == rows.size and np.array_equal(uniq, rows)
            out[name] = buf if in_order else buf[inverse]
        return out

    def close(self) -> None:
        """Close the HDF5 handle (it reopens on the next read)."""
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_h5"] = None  # h5py handles do not cross process boundaries
        state["_pid"] = None
        return state

    # -- pairing ---------------------------------------------------------------------
    def _load_pairing(self) -> Neighbours | None:
        path = self.path / layout.PAIRING_FILE
        if not path.is_file():
            return None
        fix = layout.pairing_fix(self.path)
        with layout.open_h5(path, fix) as h5:
            try:
                n_obs, k = int(h5.attrs["n_obs"]), int(h5.attrs["k"])
                radius = float(h5.attrs["radius_arcsec"])
                index_ds, sep_ds = h5["neighbours/index"], h5["neighbours/sep_arcsec"]
            except KeyError as exc:
                raise StoreFormatError(f"{path} is incomplete ({exc.args[0]}): {fix}") from None
            if n_obs != self.n_obs:
                raise StoreFormatError(
                    f"{path} was computed for {n_obs} observations, the store "
                    f"has {self.n_obs}: recompute it with `whatsreal pair {self.path}`"
                )
            index = layout.read_all(index_ds, path, fix)
            out_of_range = index.min(initial=0) < -1 or index.max(initial=-1) >= self.n_obs
            if index.shape != (self.n_obs, k) or out_of_range:
                raise layout.corrupt(path, "neighbours/index", "rows outside the store", fix)
            return Neighbours(
                index=index,
                sep_arcsec=layout.read_all(sep_ds, path, fix),
                k=k,
                radius_arcsec=radius,
            )

    def reload_pairing(self) -> None:
        """Re-read ``pairing.h5`` after it was (re)computed."""
        self.neighbours = self._load_pairing()


def open_store(path: str | Path) -> ObservationStore:
    """Open a store folder for reading."""
    return ObservationStore(path)
