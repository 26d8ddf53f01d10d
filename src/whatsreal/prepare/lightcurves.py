"""Readers of real light curves, binned onto the model's grid as :class:`LightCurveBatch` chunks.

A light-curve store holds one channel of ``T`` samples per observation (seed 001: T = 100,
time = sample index). Real light curves have their own cadence, gaps and flags, so every reader
puts each observation on a :class:`LightCurveGrid` with one documented rule:

1. **Drop samples** (counted by reason in ``reader.counts``): a nonzero quality flag
   (``QUALITY & quality_bitmask``; by default any bit; a null flag counts as set) ->
   ``quality``; a NaN/inf time, flux or error -> ``nan``; an error <= 0 -> ``bad_error``; a
   time outside the window -> ``outside``.
2. **Window**: ``[t0, t0 + span]`` with ``t0`` the first kept time (or ``grid.start``) and
   ``span`` from the grid (time units of the input, e.g. days), or, when ``span`` is None, each
   observation's own extent (first to last kept sample).
3. **Normalise** (``grid.normalize="median"``, default): flux and error are divided by the
   median kept flux and 1 is subtracted from the flux, giving relative flux around 0 like the
   simulator's; ``"none"`` keeps input units.
4. **Bin**: ``T`` equal bins over the window (the right edge belongs to the last bin). A bin's
   flux is the inverse-variance weighted mean of its samples and its ivar the sum of their
   ``1 / error^2``. **A bin without samples gets flux 0, ivar 0 and mask True.**
5. **Reject** an observation (counted as ``rejected:<reason>``, not yielded) with no kept
   sample (``no_valid_samples``), a single time when the span comes from the data
   (``single_time``), or a median flux <= 0 under median normalisation
   (``nonpositive_median``).

Two layouts: TESS-style light-curve FITS (:class:`TessReader`: ``TIME``, ``PDCSAP_FLUX``,
``PDCSAP_FLUX_ERR``, ``QUALITY`` in the ``LIGHTCURVE`` table, the target id in ``TICID`` (or
``OBJECT`` = "TIC n"), the instrument from ``SECTOR``/``CAMERA``/``CCD``), and a long table
(:class:`LongTableReader`: Parquet or CSV with one row per sample and columns source,
instrument, time, flux, error, and optionally quality). Batches feed ``StoreWriter(shape=(1, T),
instruments={name: ["flux"]}, arrays=("ivar", "mask"))``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from whatsreal.config import check_fields
from whatsreal.errors import ConfigError, InputLayoutError
from whatsreal.prepare.fitsio import fits_read_errors

__all__ = [
    "LightCurveBatch",
    "LightCurveGrid",
    "LongTableReader",
    "TessReader",
    "bin_lightcurve",
]

_NORMALIZE = ("median", "none")


@dataclass(frozen=True)
class LightCurveGrid:
    """The time grid every observation is binned onto (module docstring: the rule).

    Attributes:
        length: T, bins per observation (seed 001: 100).
        span: window length in the input's time unit (e.g. days); None uses each
            observation's own first-to-last extent.
        start: absolute window start (input time unit); None starts at the first kept sample.
        normalize: ``"median"`` (relative flux, f / median - 1) or ``"none"``.
    """

    length: int = 100
    span: float | None = None
    start: float | None = None
    normalize: str = "median"

    def __post_init__(self) -> None:
        """Validate at the boundary, naming the field."""
        if self.length < 2:
            raise ConfigError(f"LightCurveGrid.length must be >= 2 bins, got {self.length}")
        if self.span is not None and not self.span > 0:
            raise ConfigError(f"LightCurveGrid.span must be > 0 (or None), got {self.span}")
        if self.normalize not in _NORMALIZE:
            raise ConfigError(
                f"LightCurveGrid.normalize must be one of {list(_NORMALIZE)}, got "
                f"{self.normalize!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict, to save with a store."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LightCurveGrid:
        """Inverse of :meth:`to_dict`; unknown keys raise."""
        check_fields(cls, d)
        return cls(**d)


@dataclass
class LightCurveBatch:
    """Observations on the grid, ready for ``StoreWriter.append`` (after ids become ints).

    Attributes:
        source: (n,) source identifiers as the input gives them (TIC ids, names).
        instrument: (n,) instrument names (str).
        flux: (n, 1, T) float32 binned flux (0 in empty bins).
        ivar: (n, 1, T) float32 summed inverse variance (0 in empty bins).
        mask: (n, 1, T) bool, True for bins without data.
        t_start: (n,) window start; ``bin_width`` (n,) bin width (input time unit).
        n_used: (n,) samples that went into bins; ``median_flux`` (n,) the normalisation
            (1 when ``normalize="none"``).
        file: (n,) where each observation came from.
        meta: extra per-observation columns (TESS: sector, camera, ccd).
    """

    source: np.ndarray
    instrument: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    t_start: np.ndarray
    bin_width: np.ndarray
    n_used: np.ndarray
    median_flux: np.ndarray
    file: np.ndarray
    meta: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.flux.shape[0])

    def append_kwargs(self, source_id: np.ndarray | None = None) -> dict[str, Any]:
        """Keyword arguments of ``StoreWriter.append`` (declared ``arrays=("ivar", "mask")``):
        ``source_id`` defaults to ``source`` when those are integers (TIC ids); the window,
        normalisation and sample count go into the metadata."""
        sid = self.source if source_id is None else np.asarray(source_id)
        if not np.issubdtype(np.asarray(sid).dtype, np.integer):
            raise InputLayoutError(
                f"sources {self.source[:3].tolist()}... are not integers; map them to integer "
                "source ids and pass source_id=..."
            )
        meta = {
            "t_start": self.t_start,
            "bin_width": self.bin_width,
            "n_used": self.n_used,
            "median_flux": self.median_flux,
            **self.meta,
        }
        return {
            "flux": self.flux,
            "source_id": np.asarray(sid, dtype=np.int64),
            "instrument": self.instrument,
            "meta": meta,
            "ivar": self.ivar,
            "mask": self.mask,
        }


def bin_lightcurve(
    time: np.ndarray,
    flux: np.ndarray,
    error: np.ndarray,
    grid: LightCurveGrid,
    quality: np.ndarray | None = None,
    quality_bitmask: int | None = None,
    counts: Counter | None = None,
) -> dict[str, Any] | None:
    """Apply the module's rule to one observation; returns ``flux``/``ivar``/``mask`` (T,)
    and ``t_start``/``bin_width``/``n_used``/``median_flux``, or None if it is rejected (the
    reason, and every dropped sample, is added to ``counts``)."""
    counts = Counter() if counts is None else counts
    t = np.asarray(time, dtype=np.float64)
    f = np.asarray(flux, dtype=np.float64)
    e = np.asarray(error, dtype=np.float64)
    if not (t.shape == f.shape == e.shape) or t.ndim != 1:
        raise InputLayoutError(
            f"time, flux and error must be 1-D of one length; got {t.shape}, {f.shape}, {e.shape}"
        )
    keep = np.ones(t.shape, bool)
    if quality is not None:
        qf = np.asarray(quality, dtype=np.float64)
        bitmask = -1 if quality_bitmask is None else int(quality_bitmask)
        # an unknown (null) flag counts as flagged: nothing is kept that may be bad
        unknown = ~np.isfinite(qf)
        flagged = unknown | ((np.where(unknown, 0, qf).astype(np.int64) & bitmask) != 0)
        counts["quality"] += int(flagged.sum())
        keep &= ~flagged
    nan = keep & ~(np.isfinite(t) & np.isfinite(f) & np.isfinite(e))
    counts["nan"] += int(nan.sum())
    keep &= ~nan
    bad_err = keep & (e <= 0)
    counts["bad_error"] += int(bad_err.sum())
    keep &= ~bad_err
    if not keep.any():
        counts["rejected:no_valid_samples"] += 1
        return None
    t0 = float(t[keep].min()) if grid.start is None else float(grid.start)
    if grid.span is None:
        span = float(t[keep].max()) - t0
        if span <= 0:
            counts["rejected:single_time"] += 1
            return None
    else:
        span = float(grid.span)
    outside = keep & ((t < t0) | (t > t0 + span))
    counts["outside"] += int(outside.sum())
    keep &= ~outside
    if not keep.any():
        counts["rejected:no_valid_samples"] += 1
        return None
    t, f, e = t[keep], f[keep], e[keep]
    median = 1.0
    if grid.normalize == "median":
        median = float(np.median(f))
        if not median > 0:
            counts["rejected:nonpositive_median"] += 1
            return None
        f, e = f / median - 1.0, e / median
    width = span / grid.length
    idx = np.minimum(((t - t0) / width).astype(np.int64), grid.length - 1)
    w = 1.0 / e**2
    wsum = np.bincount(idx, weights=w, minlength=grid.length)
    fsum = np.bincount(idx, weights=w * f, minlength=grid.length)
    empty = wsum <= 0
    out = np.where(empty, 0.0, fsum / np.where(empty, 1.0, wsum))
    return {
        "flux": out.astype(np.float32),
        "ivar": np.where(empty, 0.0, wsum).astype(np.float32),
        "mask": empty,
        "t_start": t0,
        "bin_width": width,
        "n_used": int(keep.sum()),
        "median_flux": median,
    }


class _Batcher:
    """Collects binned observations and emits :class:`LightCurveBatch` every ``chunk``."""

    def __init__(self, chunk: int, meta_keys: Sequence[str] = ()) -> None:
        if chunk < 1:
            raise InputLayoutError(f"chunk must be >= 1 observations, got {chunk}")
        self.chunk, self.meta_keys = chunk, tuple(meta_keys)
        self.items: list[tuple[Any, str, str, dict[str, Any], dict[str, Any]]] = []

    def add(self, source: Any, instrument: str, file: str, binned: dict, meta: dict) -> bool:
        """Add one observation; True when a batch is full."""
        self.items.append((source, instrument, file, binned, meta))
        return len(self.items) >= self.chunk

    def flush(self) -> LightCurveBatch | None:
        """The collected observations as one batch (None if there are none)."""
        if not self.items:
            return None
        items, self.items = self.items, []
        b = [it[3] for it in items]
        return LightCurveBatch(
            source=np.array([it[0] for it in items]),
            instrument=np.array([it[1] for it in items], dtype=str),
            flux=np.stack([x["flux"] for x in b])[:, None, :],
            ivar=np.stack([x["ivar"] for x in b])[:, None, :],
            mask=np.stack([x["mask"] for x in b])[:, None, :],
            t_start=np.array([x["t_start"] for x in b]),
            bin_width=np.array([x["bin_width"] for x in b]),
            n_used=np.array([x["n_used"] for x in b], dtype=np.int64),
            median_flux=np.array([x["median_flux"] for x in b]),
            file=np.array([it[2] for it in items], dtype=str),
            meta={k: np.array([it[4].get(k) for it in items]) for k in self.meta_keys},
        )


# --------------------------------------------------------------------------------------------
# TESS-style FITS
# --------------------------------------------------------------------------------------------


def _fits_files(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """A folder (every ``*.fits``/``*.fits.gz`` in it, sorted) or a list of files."""
    if isinstance(paths, (str, Path)):
        p = Path(paths)
        if p.is_dir():
            files = sorted([*p.glob("*.fits"), *p.glob("*.fits.gz")])
            if not files:
                raise InputLayoutError(f"no *.fits files in {p}")
            return files
        paths = [p]
    files = [Path(p) for p in paths]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise InputLayoutError(f"light-curve file(s) {missing} do not exist")
    return files


class TessReader:
    """Reads TESS-style light-curve FITS files into :class:`LightCurveBatch` chunks.

    Example::

        reader = TessReader("lightcurves/", LightCurveGrid(length=100, span=27.0))
        for batch in reader:
            ...  # batch.flux (n, 1, 100), batch.ivar, batch.mask
        print(reader.counts)  # dropped samples and rejected observations, by reason

    ``instrument`` is a format string over the header keywords (primary and table header):
    the default names an instrument configuration by sector, camera and CCD.
    """

    def __init__(
        self,
        paths: str | Path | Sequence[str | Path],
        grid: LightCurveGrid | None = None,
        chunk: int = 256,
        flux_column: str = "PDCSAP_FLUX",
        error_column: str = "PDCSAP_FLUX_ERR",
        time_column: str = "TIME",
        quality_column: str | None = "QUALITY",
        quality_bitmask: int | None = None,
        instrument: str = "tess-s{SECTOR:02d}-cam{CAMERA}-ccd{CCD}",
    ) -> None:
        self.files = _fits_files(paths)
        self.grid = grid or LightCurveGrid()
        self.chunk = int(chunk)
        self.columns = {"time": time_column, "flux": flux_column, "error": error_column}
        self.quality_column, self.quality_bitmask = quality_column, quality_bitmask
        self.instrument = instrument
        self.counts: Counter = Counter()

    def read_file(self, path: str | Path) -> tuple[Any, str, dict[str, Any], dict | None]:
        """(source id, instrument, header meta, binned or None) of one file."""
        from astropy.io import fits

        path = Path(path)
        with fits_read_errors(path):
            with fits.open(path, memmap=False) as hdus:
                table = hdus["LIGHTCURVE"] if "LIGHTCURVE" in hdus else None
                if table is None:
                    table = next((h for h in hdus if isinstance(h, fits.BinTableHDU)), None)
                if table is None:
                    raise InputLayoutError(
                        f"{path}: no LIGHTCURVE (or other binary table) extension"
                    )
                header = {**dict(hdus[0].header), **dict(table.header)}
                names = [c.upper() for c in table.columns.names]
                need = [*self.columns.values()]
                if self.quality_column is not None:
                    need.append(self.quality_column)
                missing = [c for c in need if c.upper() not in names]
                if missing:
                    raise InputLayoutError(
                        f"{path}: light-curve table lacks column(s) {missing} (it has "
                        f"{table.columns.names}); pass flux_column=/error_column=/time_column=/"
                        "quality_column= (None to ignore quality)"
                    )
                data = table.data
                cols = {k: np.asarray(data[c], dtype=np.float64) for k, c in self.columns.items()}
                quality = (
                    None if self.quality_column is None else np.asarray(data[self.quality_column])
                )
        source = self._source(header, path)
        try:
            instrument = self.instrument.format_map(header)
        except (KeyError, ValueError, IndexError) as exc:
            raise InputLayoutError(
                f"{path}: cannot name the instrument with {self.instrument!r} (header keyword "
                f"{exc} missing or of another type); pass instrument='...' with keywords the "
                "file has"
            ) from None
        meta = {k.lower(): header.get(k, -1) for k in ("SECTOR", "CAMERA", "CCD")}
        binned = bin_lightcurve(
            cols["time"],
            cols["flux"],
            cols["error"],
            self.grid,
            quality=quality,
            quality_bitmask=self.quality_bitmask,
            counts=self.counts,
        )
        return source, instrument, meta, binned

    @staticmethod
    def _source(header: Mapping[str, Any], path: Path) -> int:
        """The TIC id from ``TICID`` or ``OBJECT`` = "TIC n"."""
        if "TICID" in header:
            return int(header["TICID"])
        obj = str(header.get("OBJECT", "")).strip()
        if obj.upper().startswith("TIC") and obj[3:].strip().isdigit():
            return int(obj[3:].strip())
        raise InputLayoutError(
            f"{path}: no TICID keyword and OBJECT is {obj!r}, not 'TIC <n>'; add TICID to the "
            "header"
        )

    def __iter__(self) -> Iterator[LightCurveBatch]:
        batcher = _Batcher(self.chunk, ("sector", "camera", "ccd"))
        for path in self.files:
            source, instrument, meta, binned = self.read_file(path)
            if binned is None:
                continue
            if batcher.add(source, instrument, str(path), binned, meta):
                yield batcher.flush()
        last = batcher.flush()
        if last is not None:
            yield last


# --------------------------------------------------------------------------------------------
# Long table (Parquet / CSV)
# --------------------------------------------------------------------------------------------

_LONG_COLUMNS = ("source", "instrument", "time", "flux", "error")


class LongTableReader:
    """Reads a long table (one row per sample) into :class:`LightCurveBatch` chunks.

    Example::

        reader = LongTableReader("photometry.parquet", LightCurveGrid(length=100))
        for batch in reader:
            ...

    ``columns`` maps the roles source, instrument, time, flux, error (and optionally quality)
    to the table's column names. One observation is one (source, instrument) pair. The needed
    columns are read whole (pyarrow), then grouped; a table too large for memory should be
    split into files by source.
    """

    def __init__(
        self,
        path: str | Path,
        grid: LightCurveGrid | None = None,
        chunk: int = 256,
        columns: Mapping[str, str] | None = None,
        quality_bitmask: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.grid = grid or LightCurveGrid()
        self.chunk = int(chunk)
        self.columns = {k: k for k in _LONG_COLUMNS}
        unknown = sorted(set(columns or {}) - {*_LONG_COLUMNS, "quality"})
        if unknown:
            raise InputLayoutError(
                f"unknown column role(s) {unknown}; roles are {[*_LONG_COLUMNS, 'quality']}"
            )
        self.columns.update(columns or {})
        self.quality_bitmask = quality_bitmask
        self.counts: Counter = Counter()
        if not self.path.is_file():
            raise InputLayoutError(f"light-curve table {self.path} does not exist")

    def _table(self) -> Any:
        """The needed columns as a pyarrow Table (Parquet or CSV by suffix)."""
        name = self.path.name.lower()
        try:
            if name.endswith((".parquet", ".pq")):
                import pyarrow.parquet as pq

                schema = pq.read_schema(self.path)
                have = list(schema.names)
                self._check_columns(have)
                return pq.read_table(self.path, columns=list(self.columns.values()))
            if name.endswith((".csv", ".csv.gz")):
                import pyarrow.csv as pacsv

                table = pacsv.read_csv(self.path)
                self._check_columns(list(table.column_names))
                return table.select(list(self.columns.values()))
        except InputLayoutError:
            raise
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... on a bad file
            raise InputLayoutError(
                f"cannot read {self.path} ({' '.join(str(exc).split())}); the file is truncated, "
                "damaged or not the format its suffix says"
            ) from None
        raise InputLayoutError(
            f"{self.path}: unknown table format; use a .parquet/.pq or .csv/.csv.gz file"
        )

    def _check_columns(self, have: Sequence[str]) -> None:
        """Every role's column must exist."""
        missing = {r: c for r, c in self.columns.items() if c not in have}
        if missing:
            raise InputLayoutError(
                f"{self.path}: missing column(s) {missing} (role: name); the table has {list(have)}"
                ". Pass columns={role: name} to map them"
            )

    def __iter__(self) -> Iterator[LightCurveBatch]:
        table = self._table()
        col = {r: table.column(c).to_numpy(zero_copy_only=False) for r, c in self.columns.items()}
        for role in ("time", "flux", "error"):
            try:
                col[role] = np.asarray(col[role], dtype=np.float64)
            except (TypeError, ValueError):
                raise InputLayoutError(
                    f"{self.path}: column {self.columns[role]!r} ({role}) is not numeric"
                ) from None
        # integer source ids stay integers (and sort as numbers); others are names
        source = np.asarray(col["source"])
        source = source.astype(np.int64 if np.issubdtype(source.dtype, np.integer) else str)
        src_out, src_i = np.unique(source, return_inverse=True)
        ins_u, ins_i = np.unique(col["instrument"].astype(str), return_inverse=True)
        group = src_i.astype(np.int64) * len(ins_u) + ins_i
        order = np.lexsort((col["time"], group))
        g_sorted = group[order]
        cuts = np.flatnonzero(np.diff(g_sorted)) + 1
        batcher = _Batcher(self.chunk)
        quality = col.get("quality")
        for rows in np.split(order, cuts):
            if rows.size == 0:
                continue
            gid = int(group[rows[0]])
            binned = bin_lightcurve(
                col["time"][rows],
                col["flux"][rows],
                col["error"][rows],
                self.grid,
                quality=None if quality is None else quality[rows],
                quality_bitmask=self.quality_bitmask,
                counts=self.counts,
            )
            if binned is None:
                continue
            source = src_out[gid // len(ins_u)]
            instrument = str(ins_u[gid % len(ins_u)])
            if batcher.add(source, instrument, str(self.path), binned, {}):
                yield batcher.flush()
        last = batcher.flush()
        if last is not None:
            yield last
