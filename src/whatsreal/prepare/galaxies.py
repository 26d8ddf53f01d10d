"""Readers of galaxy cutouts in real survey layouts, yielding :class:`GalaxyBatch` chunks.

Two layouts:

- **Multimodal Universe** (:class:`MMUReader`): ``<root>/<survey>/<config>/healpix=<N>/*.hdf5``,
  one row per object, keys ``object_id``, ``ra``, ``dec`` (degrees), ``image_array``
  (N, C, H, W; MMU ships 160x160), ``image_band`` (N, C) or (C,) names such as ``hsc-g`` or
  ``DES-G``, and optionally ``image_ivar`` (N, C, H, W), ``image_mask`` (N, C, H, W) or
  ``bit_mask`` (N, H, W) (nonzero = bad pixel), ``image_psf_fwhm`` (N, C) arcsec and
  ``image_scale`` (scalar, (N,), (C,) or (N, C); arcsec/px, one value throughout). Every
  other 1-D dataset of length N is a catalogue column (Legacy ``EBV``, ``SHAPE_R``,
  ``SHAPE_E1``, ``SHAPE_E2``; HSC ``a_g``, ``i_sdssshape_shape11``, ...). Files are opened one
  at a time and read ``chunk`` rows at a time (h5py slices), so a survey larger than memory
  streams. The simulator's ``--mmu-out`` writes this layout too (``sim`` config, native sizes).
- **FITS cutouts with a catalogue** (:class:`FitsCutoutReader`): a table (FITS, CSV, ECSV,
  Parquet; astropy) with columns ``object_id``, ``ra``, ``dec`` and ``file`` (a path relative
  to the cutout folder), other columns being catalogue columns; each file holds the cube
  (C, H, W) (or one plane (H, W)) in its first HDU with data, optional ``IVAR`` and ``MASK``
  image extensions of the same shape, band names in the header (``BANDS`` = "g,r,i,z" or
  ``FILTER`` for one plane) or given to the reader, and the pixel scale in ``PIXSCALE``
  (arcsec), else from the WCS, else given to the reader.

Both yield :class:`GalaxyBatch` in native pixels and units; :class:`~whatsreal.prepare.
transform.Seed000Transform` maps a batch onto the common grid (``transform.apply(batch)``) and
the result feeds ``StoreWriter.append``. A wrong layout (missing key, wrong shape, unknown band,
inconsistent pixel scale, damaged file) raises :class:`InputLayoutError` naming the file and
key and saying how to fix it. What is skipped rather than raised is counted in
``reader.counts`` (empty partitions and files; duplicate ids with ``on_duplicate="skip"``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from whatsreal.errors import InputLayoutError
from whatsreal.prepare.bands import canonical_bands
from whatsreal.prepare.fitsio import fits_read_errors

__all__ = ["FitsCutoutReader", "GalaxyBatch", "MMUReader", "append_kwargs"]

_HEALPIX_RE = re.compile(r"^healpix=(\d+)$")
_MMU_CORE = ("object_id", "ra", "dec", "image_array", "image_band")
_MMU_IMAGE_KEYS = (
    *_MMU_CORE,
    "image_ivar",
    "image_mask",
    "bit_mask",
    "image_psf_fwhm",
    "image_scale",
)
_DUPLICATES = ("raise", "skip")


@dataclass
class GalaxyBatch:
    """A chunk of cutouts of one survey, in native pixels and units.

    Attributes:
        survey: survey name as given to the reader (the transform resolves aliases).
        file: the file the rows come from (for FITS cutouts, the catalogue).
        rows: row numbers within ``file``.
        object_id: (n,) the survey's object ids (integers or strings), not yet source ids.
        ra, dec: (n,) float64 degrees.
        image: (n, C, H, W) float32 native flux.
        bands: (C,) canonical band letters; ``band_names`` as the file spells them.
        ivar: (n, C, H, W) float32 inverse variance, or None when the layout has none.
        mask: (n, C, H, W) or (n, H, W) bool, True = bad pixel, or None.
        psf_fwhm: (n, C) float32 arcsec, or None.
        pixel_scale: arcsec/px (one value for the whole batch), or None when unknown.
        zero_point: AB zero-point of the native units when the file says it, else None.
        catalogue: per-row catalogue columns (name -> (n,) array).
        partition: HEALPix partition number (MMU), or None.
    """

    survey: str
    file: Path
    rows: np.ndarray
    object_id: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    image: np.ndarray
    bands: tuple[str, ...]
    band_names: tuple[str, ...]
    ivar: np.ndarray | None = None
    mask: np.ndarray | None = None
    psf_fwhm: np.ndarray | None = None
    pixel_scale: float | None = None
    zero_point: float | None = None
    catalogue: dict[str, np.ndarray] = field(default_factory=dict)
    partition: int | None = None

    def __len__(self) -> int:
        return int(self.image.shape[0])


def _decode(values: Any) -> np.ndarray:
    """Bytes arrays (HDF5/FITS strings) to str arrays; other arrays unchanged."""
    arr = np.asarray(values)
    if arr.dtype.kind == "S" or arr.dtype.kind == "O":
        return np.array(
            [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arr.ravel()]
        ).reshape(arr.shape)
    return arr


def _one_scale(values: np.ndarray, where: str) -> float:
    """The single pixel scale of a file: all entries must agree within 0.01%."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0 or not np.isfinite(v).all() or (v <= 0).any():
        raise InputLayoutError(
            f"{where}: 'image_scale' holds missing, non-finite or non-positive values; it must "
            "be the pixel scale in arcsec/px"
        )
    if not np.allclose(v, v[0], rtol=1e-4, atol=0.0):
        raise InputLayoutError(
            f"{where}: 'image_scale' varies ({v.min():.4f} to {v.max():.4f} arcsec/px); one file "
            "must hold cutouts of one pixel scale (split it by scale)"
        )
    return float(v[0])


class _Duplicates:
    """Remembers the object ids seen by a reader, to raise on or drop repeats."""

    def __init__(self, mode: str, counts: Counter) -> None:
        if mode not in _DUPLICATES:
            raise InputLayoutError(f"on_duplicate must be one of {list(_DUPLICATES)}, got {mode!r}")
        self.mode, self.counts = mode, counts
        self.seen: dict[Any, str] = {}

    def keep(self, ids: np.ndarray, where: str) -> np.ndarray:
        """Boolean mask of rows to keep; raises on a repeat in ``raise`` mode."""
        keep = np.ones(len(ids), bool)
        for i, oid in enumerate(ids.tolist()):
            first = self.seen.get(oid)
            if first is None:
                self.seen[oid] = where
                continue
            if self.mode == "raise":
                raise InputLayoutError(
                    f"{where}: duplicate object_id {oid!r} (first seen in {first}); every object "
                    "must appear once per survey. Deduplicate the input, or pass "
                    "on_duplicate='skip' to keep the first and count the rest"
                )
            keep[i] = False
            self.counts["duplicate_object_id"] += 1
        return keep


# Columns the store owns; catalogue columns of these names are not copied into its metadata.
_STORE_CORE = ("obs_id", "source_id", "instrument", "ra", "dec")


def append_kwargs(
    batch: GalaxyBatch, grid: Any, source_id: np.ndarray, instrument: str
) -> dict[str, Any]:
    """Keyword arguments of ``StoreWriter.append`` for a batch and its transformed ``grid``
    (:class:`~whatsreal.prepare.transform.GridResult`): flux, ivar (when known), mask,
    positions, and metadata (object_id, per-band and mean PSF FWHM of the kept bands, bad and
    clamped pixel counts, the catalogue columns). ``source_id`` (n,) integers come from the
    caller's cross-match; the writer must declare ``arrays=("ivar", "mask")`` (or ``("mask",)``
    without ivar) and ``positions=True``."""
    meta: dict[str, np.ndarray] = {"object_id": np.asarray(batch.object_id)}
    if batch.psf_fwhm is not None:
        psf = batch.psf_fwhm[:, [batch.bands.index(b) for b in grid.bands]]
        meta["psf_fwhm"] = psf.mean(axis=1)
        for j, band in enumerate(grid.bands):
            meta[f"psf_fwhm_{band}"] = psf[:, j]
    meta["n_bad_pixels"] = np.asarray(grid.n_bad)
    meta["n_clamped"] = np.asarray(grid.n_clamped)
    for key, value in batch.catalogue.items():
        if key not in meta and key not in _STORE_CORE:
            meta[key] = value
    kwargs: dict[str, Any] = {
        "flux": grid.flux,
        "source_id": np.asarray(source_id, dtype=np.int64),
        "instrument": instrument,
        "ra": batch.ra,
        "dec": batch.dec,
        "meta": meta,
        "mask": grid.mask,
    }
    if grid.ivar is not None:
        kwargs["ivar"] = grid.ivar
    return kwargs


# --------------------------------------------------------------------------------------------
# Multimodal Universe HDF5
# --------------------------------------------------------------------------------------------


class MMUReader:
    """Streams one survey of a Multimodal Universe tree as :class:`GalaxyBatch` chunks.

    Example::

        reader = MMUReader("/data/mmu", "hsc", config="pdr3_dud_22.5")
        for batch in reader:              # chunk rows at a time, one file open at a time
            grid = transform.apply(batch)  # -> StoreWriter.append(grid.flux, ...)

    ``config`` may be omitted when the survey folder has exactly one. ``pixel_scale`` (arcsec)
    is required when files lack ``image_scale`` and checked against it otherwise. ``columns``
    picks catalogue columns (default: every 1-D dataset of length N that is not an image key).
    """

    def __init__(
        self,
        root: str | Path,
        survey: str,
        config: str | None = None,
        chunk: int = 64,
        columns: Sequence[str] | None = None,
        pixel_scale: float | None = None,
        on_duplicate: str = "raise",
    ) -> None:
        self.root, self.survey = Path(root), str(survey)
        if chunk < 1:
            raise InputLayoutError(f"chunk must be >= 1 rows, got {chunk}")
        self.chunk, self.columns = int(chunk), None if columns is None else list(columns)
        self.pixel_scale = pixel_scale
        self.counts: Counter = Counter()
        self._duplicates = _Duplicates(on_duplicate, self.counts)
        survey_dir = self.root / self.survey
        if not survey_dir.is_dir():
            have = (
                sorted(p.name for p in self.root.iterdir() if p.is_dir())
                if self.root.is_dir()
                else []
            )
            raise InputLayoutError(
                f"{survey_dir} is not a folder; the MMU layout is <root>/<survey>/<config>/"
                f"healpix=<N>/*.hdf5 and {self.root} holds {have}"
            )
        configs = sorted(p.name for p in survey_dir.iterdir() if p.is_dir())
        if config is None:
            if len(configs) != 1:
                raise InputLayoutError(
                    f"{survey_dir} holds configs {configs}; pass config=... to pick one"
                )
            config = configs[0]
        self.config = str(config)
        self.config_dir = survey_dir / self.config
        if not self.config_dir.is_dir():
            raise InputLayoutError(
                f"{self.config_dir} is not a folder; {survey_dir} holds configs {configs}"
            )
        self.partitions: list[tuple[int, list[Path]]] = []
        self.empty_partitions: list[Path] = []
        for part in sorted(self.config_dir.iterdir()):
            if not part.is_dir():
                continue
            m = _HEALPIX_RE.match(part.name)
            if m is None:
                raise InputLayoutError(
                    f"{part}: folder name is not 'healpix=<N>'; the MMU layout is "
                    "<root>/<survey>/<config>/healpix=<N>/*.hdf5 (move or remove it)"
                )
            files = sorted(part.glob("*.hdf5"))
            if not files:
                self.empty_partitions.append(part)
                self.counts["empty_partition"] += 1
            self.partitions.append((int(m.group(1)), files))
        self.partitions.sort(key=lambda p: p[0])
        if not any(files for _, files in self.partitions):
            raise InputLayoutError(
                f"no healpix=<N>/*.hdf5 files under {self.config_dir}; is this the right config?"
            )

    @property
    def files(self) -> list[Path]:
        """Every HDF5 file, in partition order."""
        return [f for _, files in self.partitions for f in files]

    def _open(self, path: Path):
        """Open one file, turning a truncated or damaged file into a clear error."""
        import h5py

        try:
            return h5py.File(path, "r")
        except OSError as exc:
            raise InputLayoutError(
                f"cannot open {path} as HDF5 ({' '.join(str(exc).split())}): the file is "
                "truncated or damaged; download or copy it again"
            ) from None

    def inspect(self, path: str | Path) -> dict[str, Any]:
        """Check one file's keys and shapes without reading pixels; returns its layout
        (``n``, ``shape`` (C, H, W), ``band_names``, ``bands``, ``pixel_scale``, ``columns``)."""
        path = Path(path)
        with self._open(path) as f:
            return self._layout(f, path)

    def _layout(self, f: Any, path: Path) -> dict[str, Any]:
        """Validate the keys and shapes of an open file (see :meth:`inspect`)."""
        missing = [k for k in _MMU_CORE if k not in f]
        if missing:
            raise InputLayoutError(
                f"{path}: missing key(s) {missing}; an MMU file needs {list(_MMU_CORE)} "
                f"(it has {sorted(f.keys())})"
            )
        img = f["image_array"]
        if img.ndim != 4:
            raise InputLayoutError(
                f"{path}: 'image_array' has shape {img.shape}; expected (N, C, H, W) "
                "(MMU: (N, C, 160, 160))"
            )
        n, c, h, w = img.shape
        for key in ("object_id", "ra", "dec"):
            if f[key].shape != (n,):
                raise InputLayoutError(
                    f"{path}: '{key}' has shape {f[key].shape}; expected ({n},), one per row "
                    "of 'image_array'"
                )
        band_ds = f["image_band"]
        if band_ds.shape not in ((n, c), (c,)):
            raise InputLayoutError(
                f"{path}: 'image_band' has shape {band_ds.shape}; expected ({n}, {c}) or ({c},), "
                "one name per plane of 'image_array'"
            )
        first = band_ds[0] if band_ds.ndim == 2 and n else band_ds[()]
        band_names = tuple(_decode(first).tolist()) if (n or band_ds.ndim == 1) else ()
        bands = canonical_bands(band_names, f"{path} 'image_band'") if band_names else ()
        for key in ("image_ivar", "image_mask"):
            if key in f and f[key].shape != img.shape:
                raise InputLayoutError(
                    f"{path}: '{key}' has shape {f[key].shape}; expected {img.shape} like "
                    "'image_array'"
                )
        if "bit_mask" in f and f["bit_mask"].shape not in ((n, h, w), img.shape):
            raise InputLayoutError(
                f"{path}: 'bit_mask' has shape {f['bit_mask'].shape}; expected ({n}, {h}, {w})"
            )
        if "image_psf_fwhm" in f and f["image_psf_fwhm"].shape not in ((n, c), (n,)):
            raise InputLayoutError(
                f"{path}: 'image_psf_fwhm' has shape {f['image_psf_fwhm'].shape}; expected "
                f"({n}, {c})"
            )
        scale = None
        if "image_scale" in f:
            ds = f["image_scale"]
            if ds.shape not in ((), (n,), (c,), (n, c)):
                raise InputLayoutError(
                    f"{path}: 'image_scale' has shape {ds.shape}; expected a scalar, ({n},), "
                    f"({c},) or ({n}, {c})"
                )
            scale = _one_scale(ds[()], str(path)) if (n or ds.ndim < 2) else None
        if self.pixel_scale is not None:
            if scale is not None and not np.isclose(scale, self.pixel_scale, rtol=1e-3):
                raise InputLayoutError(
                    f"{path}: 'image_scale' is {scale:.4f}\"/px but the reader was told "
                    f"pixel_scale={self.pixel_scale}; is this the right survey folder?"
                )
            scale = float(self.pixel_scale) if scale is None else scale
        elif scale is None and n:
            raise InputLayoutError(
                f"{path}: no 'image_scale' key; pass pixel_scale=... (arcsec/px) to the reader"
            )
        skip = set(_MMU_IMAGE_KEYS)
        available = [
            k for k in f if k not in skip and isinstance(f[k], type(img)) and f[k].shape == (n,)
        ]
        if self.columns is None:
            columns = [k for k in available if f[k].dtype.kind in "biufS"]
        else:
            missing = [k for k in self.columns if k not in available]
            if missing:
                raise InputLayoutError(
                    f"{path}: catalogue column(s) {missing} not found (1-D, length {n}); "
                    f"available: {available}"
                )
            columns = list(self.columns)
        zp = f.attrs.get("zero_point")
        return {
            "n": int(n),
            "shape": (int(c), int(h), int(w)),
            "band_names": band_names,
            "bands": bands,
            "pixel_scale": scale,
            "columns": columns,
            "zero_point": None if zp is None else float(zp),
        }

    def _read(self, ds: Any, lo: int, hi: int, path: Path) -> np.ndarray:
        """Rows lo:hi of a dataset; a read error (truncated file) names the file and key."""
        try:
            return ds[lo:hi]
        except (OSError, ValueError) as exc:
            raise InputLayoutError(
                f"{path}: cannot read rows {lo}:{hi} of '{ds.name.lstrip('/')}' "
                f"({' '.join(str(exc).split())}); the file is truncated or damaged"
            ) from None

    def read_file(self, path: str | Path, partition: int | None = None) -> Iterator[GalaxyBatch]:
        """Batches of one file (validated first), ``chunk`` rows at a time."""
        path = Path(path)
        with self._open(path) as f:
            lay = self._layout(f, path)
            if lay["n"] == 0:
                self.counts["empty_file"] += 1
                return
            n, c = lay["n"], lay["shape"][0]
            band_ds = f["image_band"]
            for lo in range(0, n, self.chunk):
                hi = min(n, lo + self.chunk)
                where = f"{path} rows {lo}:{hi}"
                if band_ds.ndim == 2:
                    names = _decode(self._read(band_ds, lo, hi, path))
                    differs = (names != np.array(lay["band_names"])[None, :]).any(axis=1)
                    if differs.any():
                        row = lo + int(np.flatnonzero(differs)[0])
                        raise InputLayoutError(
                            f"{path}: 'image_band' of row {row} is {names[row - lo].tolist()}, "
                            f"row 0 has {list(lay['band_names'])}; one file must keep one band "
                            "order"
                        )
                ids = _decode(self._read(f["object_id"], lo, hi, path))
                keep = self._duplicates.keep(ids, where)
                if not keep.any():
                    continue
                sel = slice(None) if keep.all() else np.flatnonzero(keep)
                ivar = mask = psf = None
                if "image_ivar" in f:
                    ivar = self._read(f["image_ivar"], lo, hi, path)[sel].astype(np.float32)
                mask_key = "image_mask" if "image_mask" in f else "bit_mask"
                if mask_key in f:
                    mask = self._read(f[mask_key], lo, hi, path)[sel] != 0
                if "image_psf_fwhm" in f:
                    psf = self._read(f["image_psf_fwhm"], lo, hi, path)[sel].astype(np.float32)
                    if psf.ndim == 1:
                        psf = np.repeat(psf[:, None], c, axis=1)
                scale = lay["pixel_scale"]
                scale_ds = f["image_scale"] if "image_scale" in f else None
                if scale_ds is not None and scale_ds.ndim >= 1 and scale_ds.shape[0] == n:
                    scale = _one_scale(self._read(f["image_scale"], lo, hi, path)[sel], where)
                    if not np.isclose(scale, lay["pixel_scale"], rtol=1e-4):
                        raise InputLayoutError(
                            f"{where}: 'image_scale' {scale:.4f} differs from row 0's "
                            f'{lay["pixel_scale"]:.4f}"/px; one file must hold one pixel scale'
                        )
                cat = {k: _decode(self._read(f[k], lo, hi, path)[sel]) for k in lay["columns"]}
                yield GalaxyBatch(
                    survey=self.survey,
                    file=path,
                    rows=np.arange(lo, hi)[sel],
                    object_id=ids[sel],
                    ra=self._read(f["ra"], lo, hi, path)[sel].astype(np.float64),
                    dec=self._read(f["dec"], lo, hi, path)[sel].astype(np.float64),
                    image=self._read(f["image_array"], lo, hi, path)[sel].astype(np.float32),
                    bands=lay["bands"],
                    band_names=lay["band_names"],
                    ivar=ivar,
                    mask=mask,
                    psf_fwhm=psf,
                    pixel_scale=scale,
                    zero_point=lay["zero_point"],
                    catalogue=cat,
                    partition=partition,
                )

    def __iter__(self) -> Iterator[GalaxyBatch]:
        for hp, files in self.partitions:
            for path in files:
                yield from self.read_file(path, partition=hp)


# --------------------------------------------------------------------------------------------
# FITS cutouts + catalogue
# --------------------------------------------------------------------------------------------


def _read_table(path: Path) -> Any:
    """A catalogue table through astropy (FITS, CSV, ECSV, Parquet), with a clear error."""
    from astropy.table import Table

    if not path.is_file():
        raise InputLayoutError(f"catalogue {path} does not exist")
    fmt = {".csv": "ascii.csv", ".parquet": "parquet", ".ecsv": "ascii.ecsv"}.get(
        path.suffix.lower()
    )
    try:
        return Table.read(path, format=fmt) if fmt else Table.read(path)
    except Exception as exc:  # astropy raises many types for an unreadable table
        raise InputLayoutError(
            f"cannot read catalogue {path} ({' '.join(str(exc).split())}); give a FITS, CSV, "
            "ECSV or Parquet table"
        ) from None


class FitsCutoutReader:
    """Streams a folder of FITS cutouts listed in a catalogue as :class:`GalaxyBatch` chunks.

    Example::

        reader = FitsCutoutReader("cutouts/", "cutouts/catalogue.csv", survey="legacy")
        for batch in reader:
            grid = transform.apply(batch)

    ``bands`` and ``pixel_scale`` fill in what headers lack (and are checked against what they
    say); the column names of the catalogue are arguments. All cutouts must share one shape,
    one band order and one pixel scale.
    """

    def __init__(
        self,
        folder: str | Path,
        catalogue: str | Path,
        survey: str,
        bands: Sequence[str] | None = None,
        pixel_scale: float | None = None,
        chunk: int = 64,
        id_column: str = "object_id",
        ra_column: str = "ra",
        dec_column: str = "dec",
        file_column: str = "file",
        on_duplicate: str = "raise",
    ) -> None:
        self.folder, self.catalogue_path = Path(folder), Path(catalogue)
        self.survey, self.chunk = str(survey), int(chunk)
        if self.chunk < 1:
            raise InputLayoutError(f"chunk must be >= 1 rows, got {chunk}")
        if not self.folder.is_dir():
            raise InputLayoutError(f"cutout folder {self.folder} does not exist")
        self.bands_arg = None if bands is None else tuple(str(b) for b in bands)
        self.pixel_scale = pixel_scale
        self.counts: Counter = Counter()
        self._duplicates = _Duplicates(on_duplicate, self.counts)
        table = _read_table(self.catalogue_path)
        self.id_column, self.file_column = id_column, file_column
        cols = {"id": id_column, "ra": ra_column, "dec": dec_column, "file": file_column}
        missing = [c for c in cols.values() if c not in table.colnames]
        if missing:
            raise InputLayoutError(
                f"catalogue {self.catalogue_path}: missing column(s) {missing} (it has "
                f"{table.colnames}); name them, or pass id_column=/ra_column=/dec_column=/"
                "file_column="
            )
        self.table = table
        self._cols = cols
        self._shape: tuple[int, ...] | None = None
        self._names: tuple[str, ...] | None = None
        self._scale: float | None = None

    def __len__(self) -> int:
        return len(self.table)

    def _cutout(self, row: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, dict]:
        """(image, ivar, mask, header facts) of one catalogue row's file."""
        from astropy.io import fits

        name = str(self.table[self._cols["file"]][row]).strip()
        path = self.folder / name
        if not path.is_file():
            raise InputLayoutError(
                f"catalogue {self.catalogue_path} row {row}: cutout {path} does not exist "
                f"(column '{self._cols['file']}' is a path relative to {self.folder})"
            )
        with fits_read_errors(path):
            with fits.open(path, memmap=False) as hdus:
                main = next((h for h in hdus if h.data is not None and h.data.size), None)
                if main is None:
                    raise InputLayoutError(f"{path}: no HDU with data; put the cube in HDU 0")
                image = np.asarray(main.data, dtype=np.float32)
                header = main.header
                ext = {h.name.upper(): h for h in hdus[1:]}
                ivar = np.asarray(ext["IVAR"].data, np.float32) if "IVAR" in ext else None
                mask = np.asarray(ext["MASK"].data) != 0 if "MASK" in ext else None
                facts = self._header_facts(header, path)
        if image.ndim == 2:
            image = image[None]
            ivar = None if ivar is None else ivar.reshape(image.shape)
            mask = None if mask is None else mask.reshape(image.shape)
        if image.ndim != 3:
            raise InputLayoutError(
                f"{path}: data has shape {image.shape}; expected (bands, y, x) or (y, x)"
            )
        for key, arr in (("IVAR", ivar), ("MASK", mask)):
            if arr is not None and arr.shape != image.shape:
                raise InputLayoutError(
                    f"{path}: extension {key} has shape {arr.shape}; expected {image.shape}"
                )
        facts["path"] = path
        return image, ivar, mask, facts

    def _header_facts(self, header: Any, path: Path) -> dict[str, Any]:
        """Band names, pixel scale and zero-point from a header (None where absent)."""
        names = None
        if "BANDS" in header:
            names = tuple(b.strip() for b in str(header["BANDS"]).split(",") if b.strip())
        elif "FILTER" in header:
            names = (str(header["FILTER"]).strip(),)
        scale = None
        if "PIXSCALE" in header:
            scale = float(header["PIXSCALE"])
        else:
            from astropy.wcs import WCS
            from astropy.wcs.utils import proj_plane_pixel_scales

            try:
                wcs = WCS(header).celestial
                if wcs.has_celestial:
                    scale = float(np.mean(proj_plane_pixel_scales(wcs)) * 3600.0)
            except Exception:  # a header without a usable WCS: fall back to the argument
                scale = None
        zp = None
        for key in ("ZP", "MAGZERO", "MAGZP"):
            if key in header:
                zp = float(header[key])
                break
        return {"band_names": names, "pixel_scale": scale, "zero_point": zp}

    def _check(self, image: np.ndarray, facts: dict[str, Any]) -> tuple[tuple[str, ...], float]:
        """Band names and pixel scale of a cutout, consistent with the reader and earlier files."""
        path = facts["path"]
        names = facts["band_names"]
        if names is None:
            if self.bands_arg is None:
                raise InputLayoutError(
                    f"{path}: no BANDS (or FILTER) header keyword; pass bands=[...] to the reader"
                )
            names = self.bands_arg
        elif self.bands_arg is not None and canonical_bands(names, str(path)) != canonical_bands(
            self.bands_arg, "bands="
        ):
            raise InputLayoutError(
                f"{path}: header bands {list(names)} differ from bands={list(self.bands_arg)}"
            )
        if len(names) != image.shape[0]:
            raise InputLayoutError(
                f"{path}: {image.shape[0]} planes but {len(names)} band names {list(names)}"
            )
        scale = facts["pixel_scale"]
        if scale is None:
            if self.pixel_scale is None:
                raise InputLayoutError(
                    f"{path}: no PIXSCALE keyword or celestial WCS; pass pixel_scale=... "
                    "(arcsec/px) to the reader"
                )
            scale = float(self.pixel_scale)
        elif self.pixel_scale is not None and not np.isclose(scale, self.pixel_scale, rtol=1e-3):
            raise InputLayoutError(
                f'{path}: pixel scale {scale:.4f}"/px (header) but the reader was told '
                f"pixel_scale={self.pixel_scale}"
            )
        if self._shape is None:
            self._shape, self._names, self._scale = image.shape, tuple(names), scale
        elif (
            image.shape != self._shape
            or tuple(names) != self._names
            or not np.isclose(scale, self._scale, rtol=1e-4)
        ):
            raise InputLayoutError(
                f"{path}: shape {image.shape}, bands {list(names)}, scale {scale:.4f} differ from "
                f"the first cutout's {self._shape}, {list(self._names)}, {self._scale:.4f}; one "
                "reader takes cutouts of one survey layout"
            )
        return tuple(names), scale

    def __iter__(self) -> Iterator[GalaxyBatch]:
        n = len(self.table)
        other = [c for c in self.table.colnames if c not in self._cols.values()]
        for lo in range(0, n, self.chunk):
            hi = min(n, lo + self.chunk)
            ids = _decode(np.asarray(self.table[self._cols["id"]][lo:hi]))
            keep = self._duplicates.keep(ids, f"catalogue {self.catalogue_path} rows {lo}:{hi}")
            rows = np.arange(lo, hi)[keep]
            if rows.size == 0:
                continue
            images, ivars, masks, zps = [], [], [], set()
            names, scale = (), None
            for r in rows:
                image, ivar, mask, facts = self._cutout(int(r))
                names, scale = self._check(image, facts)
                images.append(image)
                ivars.append(ivar)
                masks.append(mask)
                zps.add(facts["zero_point"])
            has_ivar = [v is not None for v in ivars]
            has_mask = [m is not None for m in masks]
            if len(set(has_ivar)) > 1 or len(set(has_mask)) > 1:
                raise InputLayoutError(
                    f"catalogue {self.catalogue_path} rows {lo}:{hi}: some cutouts have IVAR/MASK "
                    "extensions and some do not; give them to all cutouts or to none"
                )
            if len(zps) > 1:
                raise InputLayoutError(
                    f"catalogue {self.catalogue_path} rows {lo}:{hi}: cutouts give different "
                    f"zero-points {sorted(z for z in zps if z is not None)}"
                )
            cat = {c: _decode(np.asarray(self.table[c][rows])) for c in other}
            cat = {k: v for k, v in cat.items() if v.ndim == 1}
            yield GalaxyBatch(
                survey=self.survey,
                file=self.catalogue_path,
                rows=rows,
                object_id=ids[keep],
                ra=np.asarray(self.table[self._cols["ra"]][rows], dtype=np.float64),
                dec=np.asarray(self.table[self._cols["dec"]][rows], dtype=np.float64),
                image=np.stack(images),
                bands=canonical_bands(names, str(self.catalogue_path)),
                band_names=names,
                ivar=np.stack(ivars) if has_ivar[0] else None,
                mask=np.stack(masks) if has_mask[0] else None,
                pixel_scale=scale,
                zero_point=zps.pop(),
                catalogue=cat,
            )
