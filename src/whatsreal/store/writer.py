"""Streaming, validating, atomic writer of an observation store."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

from whatsreal import __version__
from whatsreal.errors import StoreValidationError
from whatsreal.store import layout
from whatsreal.store.compact import (
    PACKED_ARRAYS,
    CompactSpec,
    compact_spec,
    filter_kwargs,
    noise_sigma,
    pack,
)
from whatsreal.utils import remove_path, sweep_stale_temps

_preview = layout.preview_rows


def _as_degrees(value: Any, name: str) -> np.ndarray:
    """Accept plain numbers (degrees) or astropy angles/quantities; return float64 degrees."""
    if hasattr(value, "unit"):
        import astropy.units as u

        try:
            value = value.to_value(u.deg)
        except u.UnitConversionError as exc:
            raise StoreValidationError(f"'{name}' has unit {value.unit}, not an angle") from exc
    return np.asarray(value, dtype=np.float64)


class StoreWriter:
    """Write observations to a new store in chunks; the store appears only when complete.

    Example::

        with StoreWriter("sim.store", shape=(1, 100), instruments={"s1": ["flux"]}) as w:
            w.append(x, source_id=sid, instrument="s1")

    ``shape`` is the per-observation shape ``(C, H, W)`` for images or ``(C, T)`` for
    series; every instrument lists one band name per channel. Nothing is visible at ``path``
    until :meth:`close` succeeds; an exception inside the ``with`` block removes the
    temporary folder, so a killed run never leaves a half-written store (and a temporary
    folder that a SIGKILL left behind is swept by the next writer of the same path). Every
    dataset carries per-chunk Fletcher-32 checksums, so later corruption on disk is detected.
    ``compact=True`` (or a :class:`~whatsreal.store.compact.CompactSpec`) stores flux, ivar and
    clean as noise-scaled float16, Blosc-compressed, about 4x smaller; the reader returns float32
    (precision rule in :mod:`whatsreal.store.compact`).
    """

    def __init__(
        self,
        path: str | Path,
        shape: Sequence[int],
        instruments: Mapping[str, Sequence[str]],
        arrays: Sequence[str] = (),
        positions: bool = False,
        config: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        compression: str | None = None,
        compact: bool | CompactSpec | Mapping[str, Any] = False,
    ) -> None:
        self.path = Path(path)
        self.compact = compact_spec(compact)
        if self.compact is not None and compression is not None:
            raise StoreValidationError(
                f"compression={compression!r} and compact=True: a compact store uses its own "
                "Blosc codec; choose it with compact=CompactSpec(codec=...) and drop compression"
            )
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) not in (2, 3) or min(self.shape) < 1:
            raise StoreValidationError(
                f"shape {self.shape} must be (C, T) for series or (C, H, W) for images"
            )
        if not instruments:
            raise StoreValidationError("instruments is empty: register at least one instrument")
        n_chan = self.shape[0]
        for name, bands in instruments.items():
            if len(bands) != n_chan:
                raise StoreValidationError(
                    f"band mismatch for instrument '{name}': {len(bands)} bands {list(bands)} "
                    f"but the store has {n_chan} channels"
                )
        self.instruments = {str(k): [str(b) for b in v] for k, v in instruments.items()}
        self._code = {name: i for i, name in enumerate(self.instruments)}
        unknown = [a for a in arrays if a not in layout.KNOWN_ARRAYS]
        if unknown:
            raise StoreValidationError(
                f"unknown array name(s) {unknown}; allowed: {list(layout.KNOWN_ARRAYS)}"
            )
        self.array_names = (layout.PRIMARY_ARRAY, *arrays)
        self.positions = positions
        self.config = dict(config or {})
        self.overwrite = overwrite
        if self.path.exists() and not overwrite:
            raise FileExistsError(
                f"{self.path} already exists; pass overwrite=True (CLI: --overwrite) to replace"
            )
        # a killed earlier run into the same path left its temporary folder: sweep it
        sweep_stale_temps(self.path)
        self._tmp = layout.temporary_sibling(self.path)
        self._tmp.mkdir(parents=True)
        try:
            self._h5 = h5py.File(self._tmp / layout.OBS_FILE, "w", libver="latest")
        except BaseException:
            remove_path(self._tmp)
            raise
        self._n = 0
        self._meta_columns: dict[str, np.dtype] | None = None
        self._truth_obs_columns: dict[str, np.dtype] | None = None
        self._source_truth: list[dict[str, np.ndarray]] = []
        self._instrument_truth: dict[str, np.ndarray] = {}
        self._closed = False
        # A chunk holds one image, or about 16 KiB of short series, so a random row read
        # touches little more than the row itself.
        # A compact store keeps the same chunks (see whatsreal.store.compact).
        chunk_rows = max(1, (16 * 1024) // (4 * int(np.prod(self.shape))))
        filters: dict[str, Any] = {"compression": compression}
        if self.compact is not None:
            filters = filter_kwargs(self.compact)
        for name in self.array_names:
            packed = self.compact is not None and name in PACKED_ARRAYS
            self._h5.create_dataset(
                f"data/{name}",
                shape=(0, *self.shape),
                maxshape=(None, *self.shape),
                dtype="float16" if packed else layout.ARRAY_DTYPES[name],
                chunks=(chunk_rows, *self.shape),
                fletcher32=True,
                **filters,
            )

    # -- appending -------------------------------------------------------------------
    def _column(self, group: str, name: str, values: np.ndarray) -> None:
        key = f"{group}/{name}"
        tail = values.shape[1:]
        if key not in self._h5:
            rows = max(1, 65536 // max(1, int(np.prod(tail))))
            self._h5.create_dataset(
                key,
                shape=(0, *tail),
                maxshape=(None, *tail),
                dtype=values.dtype,
                chunks=(rows, *tail),
                fletcher32=True,
            )
        ds = self._h5[key]
        ds.resize((self._n + len(values), *tail))
        ds[self._n :] = values

    def _check_array(self, name: str, value: Any, n: int) -> np.ndarray:
        arr = np.asarray(value)
        if arr.shape != (n, *self.shape):
            raise StoreValidationError(
                f"'{name}' has shape {arr.shape}; expected {(n, *self.shape)} "
                f"(rows, {', '.join('C H W' if len(self.shape) == 3 else 'C T')})"
            )
        if name == "mask":
            if arr.dtype != np.bool_ and not np.issubdtype(arr.dtype, np.integer):
                raise StoreValidationError(f"'mask' has dtype {arr.dtype}; expected bool")
            return arr.astype(np.uint8)
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise StoreValidationError(
                f"'{name}' has dtype {arr.dtype}; expected a real floating-point array"
            )
        arr = arr.astype(np.float32, copy=False)
        bad = ~np.isfinite(arr.reshape(n, -1)).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad) + self._n
            raise StoreValidationError(
                f"'{name}' has NaN or inf in {bad.sum()} observation(s) (store rows "
                f"{_preview(rows)}); replace them with 0 and set ivar=0 or mask=True there"
            )
        if name == "ivar" and (arr < 0).any():
            raise StoreValidationError("'ivar' has negative values; inverse variance is >= 0")
        return arr

    def _check_columns(
        self, kind: str, given: Mapping[str, Any], n: int, known: dict[str, np.dtype] | None
    ) -> dict[str, np.ndarray]:
        cols = {}
        for key, value in given.items():
            arr = np.asarray(value)
            if arr.ndim == 0:
                arr = np.full(n, arr)
            # metadata columns are scalars per row; truth may be a vector per row (phases)
            if arr.shape[:1] != (n,) or (kind == "meta" and arr.ndim != 1):
                want = f"({n},)" if kind == "meta" else f"({n}, ...)"
                raise StoreValidationError(
                    f"{kind} column '{key}' has shape {arr.shape}; expected {want}"
                )
            if arr.dtype.kind in "US":
                arr = arr.astype("S")  # HDF5 stores fixed-width bytes
            elif arr.dtype.kind == "O":
                raise StoreValidationError(f"{kind} column '{key}' has object dtype")
            elif arr.dtype.kind == "f":
                arr = arr.astype(np.float64 if arr.dtype == np.float64 else np.float32)
            cols[str(key)] = arr
        if known is not None and set(cols) != set(known):
            missing = sorted(set(known) - set(cols))
            extra = sorted(set(cols) - set(known))
            raise StoreValidationError(
                f"{kind} columns changed between appends: missing {missing}, unexpected {extra}; "
                "every append must give the same columns"
            )
        return cols

    def append(
        self,
        flux: Any,
        source_id: Any,
        instrument: str | Sequence[str] | np.ndarray,
        ra: Any = None,
        dec: Any = None,
        obs_id: Any = None,
        bands: Sequence[str] | None = None,
        meta: Mapping[str, Any] | None = None,
        truth: Mapping[str, Any] | None = None,
        **arrays: Any,
    ) -> None:
        """Validate and append a chunk of observations.

        ``flux`` is ``(n, *shape)``; ``source_id`` and ``instrument`` (names) are per row or
        scalars; ``ra``/``dec`` in degrees (or astropy angles); ``meta`` holds free per-row
        metadata columns (PSF size, depth, ...) and ``truth`` the per-observation truth
        (instrument conditions known to a simulator). Optional arrays (``ivar``, ``mask``,
        ``clean``) must be those declared when the writer was made.
        """
        if self._closed:
            raise RuntimeError(f"writer for {self.path} is closed")
        flux_arr = np.asarray(flux)
        if flux_arr.ndim < 1:
            raise StoreValidationError("'flux' must be an array of observations")
        n = flux_arr.shape[0]
        data = {layout.PRIMARY_ARRAY: self._check_array("flux", flux_arr, n)}
        declared = set(self.array_names[1:])
        if set(arrays) != declared:
            raise StoreValidationError(
                f"arrays given {sorted(arrays)} but the writer declared {sorted(declared)}; "
                "declare optional arrays with StoreWriter(arrays=...)"
            )
        for name, value in arrays.items():
            data[name] = self._check_array(name, value, n)

        names = np.asarray(instrument)
        if names.ndim == 0:
            names = np.full(n, names)
        if names.shape != (n,):
            raise StoreValidationError(f"'instrument' has shape {names.shape}; expected ({n},)")
        names = names.astype(str)
        unknown = sorted(set(names.tolist()) - set(self._code))
        if unknown:
            raise StoreValidationError(
                f"unknown instrument(s) {unknown}; this store knows {list(self._code)}. "
                "Register instruments with StoreWriter(instruments={name: bands})"
            )
        if bands is not None:
            for name in np.unique(names):
                if list(bands) != self.instruments[name]:
                    raise StoreValidationError(
                        f"band mismatch for instrument '{name}': got {list(bands)}, "
                        f"the store expects {self.instruments[name]}"
                    )
        codes = np.vectorize(self._code.__getitem__, otypes=[np.uint16])(names)

        sid = np.asarray(source_id)
        if sid.ndim == 0:
            sid = np.full(n, sid)
        if sid.shape != (n,) or not np.issubdtype(sid.dtype, np.integer):
            raise StoreValidationError(
                f"'source_id' must be {n} integers; got shape {sid.shape} dtype {sid.dtype}"
            )
        if obs_id is None:
            oid = np.arange(self._n, self._n + n, dtype=np.int64)
        else:
            oid = np.asarray(obs_id)
            if oid.shape != (n,) or not np.issubdtype(oid.dtype, np.integer):
                raise StoreValidationError(
                    f"'obs_id' must be {n} integers; got shape {oid.shape} dtype {oid.dtype}"
                )

        if self.positions:
            if ra is None or dec is None:
                raise StoreValidationError(
                    "this store was declared with positions=True: pass ra= and dec= (degrees)"
                )
            ra_deg, dec_deg = _as_degrees(ra, "ra"), _as_degrees(dec, "dec")
            for key, arr in (("ra", ra_deg), ("dec", dec_deg)):
                if arr.shape != (n,) or not np.isfinite(arr).all():
                    raise StoreValidationError(f"'{key}' must be {n} finite values in degrees")
            if ((ra_deg < 0) | (ra_deg >= 360)).any():
                ra_deg = np.mod(ra_deg, 360.0)
            if (np.abs(dec_deg) > 90).any():
                rows = np.flatnonzero(np.abs(dec_deg) > 90) + self._n
                raise StoreValidationError(f"'dec' outside [-90, 90] deg at rows {_preview(rows)}")
        elif ra is not None or dec is not None:
            raise StoreValidationError(
                "ra/dec given but the writer was made with positions=False; pass positions=True"
            )

        meta_cols = self._check_columns("meta", meta or {}, n, self._meta_columns)
        clash = set(meta_cols) & {*layout.CORE_COLUMNS, *layout.POSITION_COLUMNS}
        if clash:
            raise StoreValidationError(f"meta column(s) {sorted(clash)} clash with core columns")
        truth_cols = self._check_columns("truth", truth or {}, n, self._truth_obs_columns)
        if self._meta_columns is None:
            self._meta_columns = {k: v.dtype for k, v in meta_cols.items()}
            self._truth_obs_columns = {k: v.dtype for k, v in truth_cols.items()}

        # All checks passed: write.
        sigma = None
        if self.compact is not None:
            sigma = noise_sigma(data.get("ivar"), n, self.shape[0])
        for name, arr in data.items():
            ds = self._h5[f"data/{name}"]
            ds.resize((self._n + n, *self.shape))
            if sigma is not None and name in PACKED_ARRAYS:
                arr, scale = pack(name, arr, sigma, self.compact)
                self._column("scale", name, scale)
            ds[self._n :] = arr
        self._column("table", "obs_id", oid.astype(np.int64))
        self._column("table", "source_id", sid.astype(np.int64))
        self._column("table", "instrument", codes)
        if self.positions:
            self._column("table", "ra", ra_deg)
            self._column("table", "dec", dec_deg)
        for key, arr in meta_cols.items():
            self._column("table", key, arr)
        for key, arr in truth_cols.items():
            self._column("truth/observation", key, arr)
        self._n += n

    def add_source_truth(self, source_id: Any, **columns: Any) -> None:
        """Record per-source truth (physics parameters), one row per ``source_id``."""
        sid = np.asarray(source_id, dtype=np.int64).ravel()
        cols = {"source_id": sid}
        for key, value in columns.items():
            arr = np.asarray(value)
            if arr.shape[:1] != sid.shape:
                raise StoreValidationError(
                    f"source truth column '{key}' has {arr.shape[:1]} rows; expected {sid.size}"
                )
            cols[key] = arr
        if self._source_truth and set(cols) != set(self._source_truth[0]):
            raise StoreValidationError(
                f"source truth columns changed: {sorted(cols)} vs {sorted(self._source_truth[0])}"
            )
        self._source_truth.append(cols)

    def add_instrument_truth(self, **columns: Any) -> None:
        """Record per-instrument truth (e.g. a simulator's instrument parameters): one row per
        registered instrument, in registration order."""
        n = len(self.instruments)
        for key, value in columns.items():
            arr = np.asarray(value)
            if arr.shape[:1] != (n,):
                raise StoreValidationError(
                    f"instrument truth column '{key}' has {arr.shape[:1]} rows; expected one "
                    f"per instrument ({n}: {list(self.instruments)})"
                )
            self._instrument_truth[key] = arr

    # -- finishing -------------------------------------------------------------------
    def _finalise(self) -> None:
        h5 = self._h5
        if self._n == 0:
            raise StoreValidationError(f"no observations were appended to {self.path}")
        oid = h5["table/obs_id"][:]
        uniq, counts = np.unique(oid, return_counts=True)
        if (counts > 1).any():
            dup = uniq[counts > 1]
            raise StoreValidationError(
                f"duplicate obs_id(s): {_preview(dup)}; every observation needs a unique obs_id"
            )
        if self._source_truth:
            merged = {
                k: np.concatenate([c[k] for c in self._source_truth]) for k in self._source_truth[0]
            }
            uniq, counts = np.unique(merged["source_id"], return_counts=True)
            if (counts > 1).any():
                raise StoreValidationError(
                    f"duplicate source_id(s) in source truth: {_preview(uniq[counts > 1])}"
                )
            for key, arr in merged.items():
                h5.create_dataset(
                    f"truth/source/{key}", data=arr, **layout.checksum_kwargs(arr.shape)
                )
        for key, arr in self._instrument_truth.items():
            h5.create_dataset(
                f"truth/instrument/{key}", data=arr, **layout.checksum_kwargs(arr.shape)
            )
        inst = h5.create_group("instruments")
        inst.attrs["names"] = json.dumps(list(self.instruments))
        for name, bands in self.instruments.items():
            inst.attrs[f"bands/{name}"] = json.dumps(bands)
        h5.attrs["format"] = layout.FORMAT_NAME
        if self.compact is None:
            h5.attrs["format_version"] = layout.FORMAT_VERSION
        else:  # older readers must refuse scaled float16, not return it
            h5.attrs["format_version"] = layout.COMPACT_FORMAT_VERSION
            h5.attrs["compact"] = json.dumps(self.compact.to_dict())
        h5.attrs["checksums"] = "fletcher32"
        h5.attrs["whatsreal_version"] = __version__
        h5.attrs["created_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        h5.attrs["modality"] = "image" if len(self.shape) == 3 else "series"
        h5.attrs["config"] = yaml.safe_dump(self.config, sort_keys=False)

    def close(self) -> Path:
        """Validate what was written, then move the finished store into place."""
        if self._closed:
            return self.path
        try:
            self._finalise()
            self._h5.close()
            layout.replace_path(self._tmp, self.path, self.overwrite)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; nothing appears at the store path."""
        self._closed = True
        try:
            self._h5.close()
        except Exception:  # already closed or never opened
            pass
        remove_path(self._tmp)

    def __len__(self) -> int:
        return self._n

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
