"""Read every chunk of every dataset of a store and report what is damaged.

HDF5 checks each chunk's Fletcher-32 checksum as it is read, so reading everything once finds
any flipped byte; arrays the writer only stores finite are also checked for NaN and inf
(which is all that can be checked in a store written before checksums existed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from whatsreal.errors import StoreFormatError
from whatsreal.store import layout
from whatsreal.store.compact import register_filters


@dataclass
class DatasetReport:
    """What verification found in one dataset."""

    file: str
    name: str
    checksummed: bool
    rows: int
    bad_rows: list[tuple[int, int]] = field(default_factory=list)  # [start, stop) that fail
    non_finite_rows: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        """No unreadable chunk and no NaN/inf where the writer guarantees finite values."""
        return not self.bad_rows and not self.non_finite_rows and not self.error


@dataclass
class VerifyReport:
    """Verification of a whole store: per-dataset results plus files that would not open."""

    path: Path
    datasets: list[DatasetReport] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)  # file name -> reason

    @property
    def ok(self) -> bool:
        """Every file opened and every dataset read back cleanly."""
        return not self.unreadable and all(d.ok for d in self.datasets)

    @property
    def damaged(self) -> list[DatasetReport]:
        """Datasets with unreadable chunks or impossible values."""
        return [d for d in self.datasets if not d.ok]

    def unchecked_files(self) -> list[str]:
        """Files none of whose datasets carry checksums (written by an older whatsreal)."""
        files = sorted({d.file for d in self.datasets})
        return [f for f in files if not any(d.checksummed for d in self.datasets if d.file == f)]

    def lines(self) -> list[str]:
        """A human-readable summary, one finding per line, the verdict last."""
        out = []
        for file, reason in self.unreadable.items():
            out.append(f"{file}: cannot be opened ({reason})")
        for file in sorted({d.file for d in self.datasets}):
            mine = [d for d in self.datasets if d.file == file]
            checked = sum(d.checksummed for d in mine)
            if checked == 0:
                note = "no checksums (written by an older whatsreal); re-write to add them"
            elif checked < len(mine):
                plain = ", ".join(d.name for d in mine if not d.checksummed)
                note = f"checksums on {checked} of {len(mine)} datasets (none on {plain})"
            else:
                note = "every chunk passed its checksum" if all(d.ok for d in mine) else ""
            summary = f"{file}: {len(mine)} datasets read"
            out.append(f"{summary}, {note}" if note else summary)
            for d in mine:
                if d.error:
                    out.append(f"  {d.name}: {d.error}")
                if d.bad_rows:
                    spans = ", ".join(f"{a}-{b - 1}" for a, b in d.bad_rows[:5])
                    more = f" and {len(d.bad_rows) - 5} more" if len(d.bad_rows) > 5 else ""
                    out.append(f"  {d.name}: rows {spans}{more} fail their checksum (corrupted)")
                if d.non_finite_rows:
                    out.append(
                        f"  {d.name}: NaN or inf in {d.non_finite_rows} rows, which the writer "
                        "never stores (corrupted)"
                    )
        if self.ok:
            out.append(f"{self.path}: OK")
        else:
            pairing_only = all(
                f == layout.PAIRING_FILE
                for f in [*self.unreadable, *(d.file for d in self.damaged)]
            )
            fix = (
                f"recompute it with `whatsreal pair {self.path}`"
                if pairing_only
                else "re-create the store (or copy it again from a good copy)"
            )
            out.append(f"{self.path}: CORRUPTED: {fix}")
        return out


def _check_dataset(ds: h5py.Dataset, file: str, block_bytes: int) -> DatasetReport:
    """Read ``ds`` block by block; in a block that fails, find the failing chunks."""
    name = ds.name.lstrip("/")
    rows = int(ds.shape[0]) if ds.shape else 1
    report = DatasetReport(file, name, bool(ds.fletcher32), rows)
    finite = file == layout.OBS_FILE and name in layout.FINITE_DATASETS
    if ds.shape == () or ds.size == 0:
        try:
            ds[()]
        except OSError as exc:
            report.error = " ".join(str(exc).split())
        return report
    step = ds.chunks[0] if ds.chunks else rows
    row_bytes = max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:])))
    block = max(step, (block_bytes // row_bytes) // step * step)
    for start in range(0, rows, block):
        stop = min(rows, start + block)
        try:
            values = ds[start:stop]
        except OSError:
            for a in range(start, stop, step):
                b = min(stop, a + step)
                try:
                    values = ds[a:b]
                except OSError:
                    report.bad_rows.append((a, b))
                    continue
                if finite:
                    report.non_finite_rows += _non_finite(values)
            continue
        if finite:
            report.non_finite_rows += _non_finite(values)
    return report


def _non_finite(values: np.ndarray) -> int:
    """Rows with any NaN or inf."""
    if values.dtype.kind != "f":
        return 0
    return int((~np.isfinite(values.reshape(len(values), -1)).all(axis=1)).sum())


def _check_file(path: Path, report: VerifyReport, block_bytes: int) -> None:
    """Verify every dataset of one HDF5 file into ``report``."""
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        report.unreadable[path.name] = " ".join(str(exc).split())
        return
    with h5:
        if "compact" in h5.attrs:
            register_filters()  # Blosc, to decode (and so check) a compact store's chunks
        found: list[h5py.Dataset] = []

        def collect(_: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset):
                found.append(obj)

        try:
            h5.visititems(collect)
        except (OSError, KeyError) as exc:  # a damaged object header
            report.unreadable[path.name] = " ".join(str(exc).split())
        lengths: dict[str, int] = {}
        for ds in found:
            d = _check_dataset(ds, path.name, block_bytes)
            report.datasets.append(d)
            group = d.name.split("/")[0]
            if path.name == layout.OBS_FILE and group in ("data", "table", "scale"):
                lengths[d.name] = d.rows
        if len(set(lengths.values())) > 1:  # every array and column has one row per observation
            want = lengths.get(f"data/{layout.PRIMARY_ARRAY}", max(lengths.values()))
            for d in report.datasets:
                if d.name in lengths and d.rows != want:
                    d.error = f"{d.rows} rows but the store has {want} observations (corrupted)"


def verify_store(path: str | Path, block_bytes: int = 64 * 1024**2) -> VerifyReport:
    """Read every chunk of ``observations.h5`` (and ``pairing.h5``) of a store; see
    :class:`VerifyReport` (``report.ok``, ``report.lines()``)."""
    path = Path(path)
    obs = path / layout.OBS_FILE
    if not obs.is_file():
        raise StoreFormatError(
            f"{path} is not a whatsreal store: no {layout.OBS_FILE} inside. "
            "Create one with a simulator (`whatsreal simulate ...`) or StoreWriter"
        )
    report = VerifyReport(path)
    _check_file(obs, report, block_bytes)
    if (path / layout.PAIRING_FILE).is_file():
        _check_file(path / layout.PAIRING_FILE, report, block_bytes)
    return report


__all__ = ["DatasetReport", "VerifyReport", "verify_store"]
