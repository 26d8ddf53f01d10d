"""``whatsreal prepare``: survey cutouts -> cross-matched, transformed, paired observation store.

:func:`prepare_store` takes one input per survey (``NAME=PATH``, the name becoming the store's
instrument) and:

1. **Reads** each input: a Multimodal Universe tree (:class:`~whatsreal.prepare.galaxies.
   MMUReader`; PATH is the tree root holding ``NAME/``, a survey folder, or one config folder)
   or a folder of FITS cutouts with a ``catalogue.{csv,ecsv,fits,parquet}`` (or that table
   itself; :class:`~whatsreal.prepare.galaxies.FitsCutoutReader`). The kind is detected from
   the path; anything else is an error that says what was expected.
2. **Transforms** every batch with seed 000's :class:`~whatsreal.prepare.transform.
   Seed000Transform` and writes it, one *unit* at a time (an MMU file, or ``fits_block``
   catalogue rows), to a shard store in a work folder ``.<STORE>.prepare`` beside the output.
   After each unit ``state.json`` is rewritten atomically, so a killed run resumes
   (``resume=True``, CLI ``--resume``) at the first unfinished unit. A unit that cannot be read
   (damaged file, wrong layout, missing band, wrong pixel scale, ...) is *rejected* with its
   error as the reason; the run goes on (an OSError, such as a full disk, stops it instead:
   resume once it is fixed).
3. **Rejects rows**, counted by reason: a repeated ``object_id`` within a survey (the first is
   kept) and a cutout with a bad-pixel fraction of at least ``max_bad_fraction`` on the grid
   (default 1: only cutouts with no good pixel).
4. **Cross-matches** the surveys at ``match_radius`` (1 arcsec) with
   :func:`~whatsreal.pairing.assign_source_ids`: surveys in the order given are matched
   against a growing master list (the first survey's positions, then every unmatched
   object's). Matches are one-to-one *mutual nearest neighbours*: a pair is kept when each
   object is the other's nearest within the radius; an object whose nearest partner is closer
   to another object stays unmatched (no second-best partner is sought), and a match to the
   master list is never broken by a later survey. An exact distance tie is broken by
   astropy's k-d tree: the same inputs always give the same pick, but not by input order. A
   matched object takes its master entry's ``source_id``; every other object starts a new
   source.
5. **Writes the store** (flux, ivar, mask on the 4 x 48 x 48 grid, positions, the readers'
   metadata and catalogue columns, and the transform and these settings in the store config),
   then the per-survey **neighbour graph** (``k`` = 5 within ``neighbour_radius`` = 3 arcmin,
   :func:`~whatsreal.pairing.build_pairing`), and renames the finished store into place.
   Metadata columns that only some surveys have are filled: NaN (floats), -1 (integers),
   False (booleans), empty (strings); a column that is text in one survey and numeric in
   another becomes text.
6. **Reports** (:class:`PrepareReport`): sources matched across surveys, single-survey sources
   per survey, rejected rows and units with their reasons, empty partitions and files.

Light-curve inputs (TESS folders, long tables) are not handled here: write them with
:mod:`whatsreal.prepare.lightcurves` and ``StoreWriter`` directly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np

from whatsreal.errors import ConfigError, InputLayoutError, WhatsrealError
from whatsreal.pairing import CATALOGUE_BACKENDS, assign_source_ids, build_pairing
from whatsreal.pairing.sky import angle_arcsec, neighbour_count
from whatsreal.prepare.galaxies import FitsCutoutReader, MMUReader, append_kwargs
from whatsreal.prepare.transform import Seed000Transform
from whatsreal.store import ObservationStore, StoreWriter, layout
from whatsreal.store.compact import CompactSpec, compact_spec
from whatsreal.utils import atomic_write_json, pid_alive, remove_path

__all__ = [
    "PrepareReport",
    "SurveyInput",
    "detect_survey",
    "parse_survey",
    "prepare_store",
    "work_folder",
]

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
STATE_VERSION = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_HEALPIX_RE = re.compile(r"^healpix=\d+$")
_TABLE_NAMES = ("catalogue", "catalog")
_TABLE_SUFFIXES = (".csv", ".ecsv", ".fits", ".fit", ".parquet")
_REASON_DUPLICATE = "duplicate object_id"
_REASON_BAD = "too many bad pixels"
# What reading one unit may raise that rejects the unit rather than stopping the run: the
# readers turn damaged files into InputLayoutError, the writer bad values into
# StoreValidationError (both ValueErrors); TypeError/KeyError cover files odd in ways the
# readers do not name. An OSError (a full disk, a permission) stops the run: resume it.
_UNIT_ERRORS = (ValueError, TypeError, KeyError)


# -- inputs ------------------------------------------------------------------------------------


def parse_survey(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` (the CLI's ``--survey``) -> (name, path), with an error that shows the form."""
    name, sep, path = str(text).partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
        raise ConfigError(
            f"--survey {text!r}: give NAME=PATH, e.g. --survey hsc=/data/mmu/hsc "
            "(NAME becomes the store's instrument name)"
        )
    if not _NAME_RE.match(name):
        raise ConfigError(
            f"--survey {text!r}: the name {name!r} must start with a letter or digit and hold "
            "only letters, digits, '_', '.' or '-'"
        )
    return name, Path(path).expanduser()


def _has_healpix(folder: Path) -> bool:
    """Whether a folder holds ``healpix=<N>`` partitions (an MMU config folder)."""
    return folder.is_dir() and any(
        p.is_dir() and _HEALPIX_RE.match(p.name) for p in folder.iterdir()
    )


def _configs(folder: Path) -> list[str]:
    """The config folders of an MMU survey folder."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if _has_healpix(p))


@dataclass(frozen=True)
class SurveyInput:
    """One survey input: its store name and where and how it is read.

    Attributes:
        name: instrument name in the store (the NAME of ``NAME=PATH``).
        path: the path as given, made absolute.
        kind: ``"mmu"`` or ``"fits"``.
        root, folder, config: MMU tree root, survey folder name and config folder name.
        catalogue: the FITS catalogue table (its folder holds the cutouts).
    """

    name: str
    path: Path
    kind: str
    root: Path | None = None
    folder: str | None = None
    config: str | None = None
    catalogue: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (stored in the store config and the resume state)."""
        return {k: None if v is None else str(v) for k, v in dataclasses.asdict(self).items()}


def detect_survey(name: str, path: str | Path) -> SurveyInput:
    """Tell an MMU tree from a FITS cutout folder by its layout (module docstring, step 1)."""
    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise InputLayoutError(f"--survey {name}={path}: {path} does not exist")
    if path.is_file():
        if path.suffix.lower() in _TABLE_SUFFIXES:
            return SurveyInput(name, path, "fits", catalogue=path)
        raise InputLayoutError(
            f"--survey {name}={path}: a file, but not a catalogue table "
            f"({', '.join(_TABLE_SUFFIXES)}); give an MMU folder or a FITS cutout folder"
        )
    if _has_healpix(path):  # a config folder
        return SurveyInput(
            name, path, "mmu", root=path.parent.parent, folder=path.parent.name, config=path.name
        )
    configs = _configs(path)
    if configs:  # a survey folder
        if len(configs) > 1:
            raise InputLayoutError(
                f"--survey {name}={path}: {path} holds the configs {configs}; name one, "
                f"e.g. {name}={path / configs[0]}"
            )
        return SurveyInput(name, path, "mmu", root=path.parent, folder=path.name, config=configs[0])
    surveys = sorted(p.name for p in path.iterdir() if _configs(p))
    if surveys:  # a tree root
        match = [s for s in surveys if s.lower() == name.lower()]
        if not match:
            raise InputLayoutError(
                f"--survey {name}={path}: {path} is an MMU tree with the surveys {surveys} but "
                f"none named {name!r}; give the survey folder, e.g. {name}={path / surveys[0]}"
            )
        return detect_survey(name, path / match[0])
    tables = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and p.stem.lower() in _TABLE_NAMES and p.suffix.lower() in _TABLE_SUFFIXES
    )
    if len(tables) == 1:
        return SurveyInput(name, path, "fits", catalogue=tables[0])
    if len(tables) > 1:
        raise InputLayoutError(
            f"--survey {name}={path}: several catalogues {[t.name for t in tables]}; give the "
            f"one to use, e.g. {name}={tables[0]}"
        )
    raise InputLayoutError(
        f"--survey {name}={path}: neither a Multimodal Universe tree "
        "(<root>/<survey>/<config>/healpix=<N>/*.hdf5) nor a FITS cutout folder (with a "
        "catalogue.csv, .ecsv, .fits or .parquet listing object_id, ra, dec, file)"
    )


# -- units of work -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unit:
    """One resumable piece of an input: an MMU file, or a block of FITS catalogue rows."""

    survey: str
    index: int
    file: Path
    partition: int | None = None
    rows: tuple[int, int] | None = None

    @property
    def key(self) -> str:
        return f"{self.survey}/{self.index:06d}"

    def stamp(self) -> list[int]:
        """Size and modification time of the unit's file, to notice a changed input."""
        st = self.file.stat()
        return [int(st.st_size), int(st.st_mtime_ns)]


class _Source:
    """A survey input opened for reading: its transform survey name, units, and readers.

    Each unit is read by a fresh reader, so what a reader remembers (ids seen, the first
    cutout's layout) never depends on which units an interrupted run had already done: a
    resumed run rejects and keeps exactly what an uninterrupted one does. Repeats across units
    are caught by the pipeline (``seen`` in :func:`_ingest_unit`).
    """

    def __init__(
        self, spec: SurveyInput, transform: Seed000Transform, chunk: int, fits_block: int
    ) -> None:
        self.spec, self.chunk = spec, chunk
        self.canon = _transform_survey(spec, transform)
        self.pixel_scale = transform.survey(self.canon)[1].pixel_scale
        self.reader = self._reader()
        if isinstance(self.reader, MMUReader):
            files = [(hp, f) for hp, fs in self.reader.partitions for f in fs]
            self.units = [_Unit(spec.name, i, f, partition=hp) for i, (hp, f) in enumerate(files)]
            self.empty = {"empty_partition": int(self.reader.counts["empty_partition"])}
        else:
            assert spec.catalogue is not None
            n = len(self.reader.table)
            self.units = [
                _Unit(spec.name, i, spec.catalogue, rows=(lo, min(n, lo + fits_block)))
                for i, lo in enumerate(range(0, n, fits_block))
            ]
            self.empty = {}
            if not self.units:
                raise InputLayoutError(
                    f"--survey {spec.name}: catalogue {spec.catalogue} has no rows"
                )

    def _reader(self) -> MMUReader | FitsCutoutReader:
        """A new reader of this input (duplicates within one unit are skipped and counted)."""
        spec = self.spec
        if spec.kind == "mmu":
            assert spec.root is not None and spec.folder is not None
            return MMUReader(
                spec.root, spec.folder, config=spec.config, chunk=self.chunk, on_duplicate="skip"
            )
        assert spec.catalogue is not None
        return FitsCutoutReader(
            spec.catalogue.parent,
            spec.catalogue,
            survey=self.canon,
            pixel_scale=self.pixel_scale,
            chunk=self.chunk,
            on_duplicate="skip",
        )

    def batches(self, unit: _Unit, counts: Counter) -> Iterator[Any]:
        """The batches of one unit, with the transform's survey name; the reader's skip counts
        (duplicates within the unit, empty file) accumulate in ``counts``."""
        reader = self._reader()
        try:
            if isinstance(reader, MMUReader):
                it = reader.read_file(unit.file, partition=unit.partition)
            else:
                assert unit.rows is not None
                reader.table = reader.table[unit.rows[0] : unit.rows[1]]
                it = iter(reader)
            for batch in it:
                yield dataclasses.replace(batch, survey=self.canon)
        finally:
            counts.update(reader.counts)

    def unit_rows(self, unit: _Unit) -> int | None:
        """How many objects a unit holds, when that can be told without reading pixels."""
        if unit.rows is not None:
            return unit.rows[1] - unit.rows[0]
        try:
            return int(self.reader.inspect(unit.file)["n"])  # type: ignore[union-attr]
        except _UNIT_ERRORS:
            return None


def _transform_survey(spec: SurveyInput, transform: Seed000Transform) -> str:
    """The transform's name of a survey input: its NAME, else its folder's name."""
    tried = [spec.name]
    if spec.folder:
        tried.append(spec.folder)
    if spec.catalogue is not None:
        tried.append(spec.catalogue.parent.name)
    for cand in tried:
        try:
            return transform.survey(cand)[0]
        except InputLayoutError:
            continue
    raise InputLayoutError(
        f"--survey {spec.name}={spec.path}: the transform knows the surveys "
        f"{sorted(transform.surveys)} (and their aliases), not {tried}; name the input after "
        f"its survey, e.g. --survey hsc={spec.path}"
    )


def _id_key(value: Any) -> Any:
    """A hashable, type-stable object id (bytes and numpy scalars normalised)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _take(kwargs: dict[str, Any], sel: np.ndarray) -> dict[str, Any]:
    """The rows ``sel`` of ``StoreWriter.append`` keyword arguments."""
    out = dict(kwargs)
    for key in ("flux", "ivar", "mask", "ra", "dec", "source_id"):
        if key in out and out[key] is not None:
            out[key] = np.asarray(out[key])[sel]
    out["meta"] = {k: np.asarray(v)[sel] for k, v in kwargs["meta"].items()}
    return out


# -- the state of a run ------------------------------------------------------------------------


def work_folder(out: str | Path) -> Path:
    """Where a prepare run keeps its shards and ``state.json``: ``.<STORE>.prepare`` beside it."""
    out = Path(out)
    return out.parent / f".{out.name}.prepare"


def _load_state(work: Path) -> dict[str, Any]:
    """The state file of an interrupted run, with a clear error if it is unreadable."""
    path = work / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"{path} is missing or unreadable ({exc}); the interrupted run cannot be resumed: "
            "rerun with --overwrite to start again"
        ) from None
    if state.get("version") != STATE_VERSION:
        raise ConfigError(
            f"{path} was written by another whatsreal (state version {state.get('version')}); "
            "rerun with --overwrite to start again"
        )
    return state


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Keys whose values differ between two settings dicts."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


# -- the report -------------------------------------------------------------------------------


@dataclass
class PrepareReport:
    """What a prepare run wrote and left out.

    Attributes:
        out: the store.
        surveys: survey names, in input order.
        observations: observations written per survey.
        matched: sources seen by at least two surveys; ``matched_by`` splits them by the set
            of surveys (``"hsc+legacy"``).
        single: sources seen by one survey only, per survey.
        rejected_rows: per survey, rows left out by reason.
        rejected_units: units (files, catalogue blocks) rejected whole, with the reason.
        empty: per survey, empty partitions and files (skipped, not errors).
        neighbours: the graph's k, radius and mean neighbour count, or why there is none.
        resumed_units: units that an earlier, interrupted run had already done.
    """

    out: Path
    surveys: list[str]
    observations: dict[str, int]
    matched: int
    matched_by: dict[str, int]
    single: dict[str, int]
    rejected_rows: dict[str, dict[str, int]] = field(default_factory=dict)
    rejected_units: list[dict[str, Any]] = field(default_factory=list)
    empty: dict[str, dict[str, int]] = field(default_factory=dict)
    neighbours: dict[str, Any] = field(default_factory=dict)
    resumed_units: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (also stored in the store config under ``prepare.counts``)."""
        d = dataclasses.asdict(self)
        d["out"] = str(self.out)
        return d

    def lines(self) -> list[str]:
        """Human-readable counts, one fact per line."""
        total = sum(self.observations.values())
        out = [f"wrote {self.out}: {total:,} observations ({self._per_survey(self.observations)})"]
        by = ", ".join(f"{k} {v:,}" for k, v in self.matched_by.items())
        out.append(
            f"matched (seen by >= 2 surveys): {self.matched:,} sources" + (f" ({by})" if by else "")
        )
        out.append(f"single-survey: {self._per_survey(self.single)}")
        n_rows = sum(sum(r.values()) for r in self.rejected_rows.values())
        sizes = [r["rows"] for r in self.rejected_units]
        held = f"{sum(x for x in sizes if x is not None):,} rows"
        if None in sizes:
            held += f" + {sizes.count(None)} unreadable of unknown size"
        units = f" ({held})" if sizes else ""
        out.append(f"rejected: {n_rows:,} rows and {len(sizes)} whole file(s)/block(s){units}")
        for survey, reasons in self.rejected_rows.items():
            for reason, n in reasons.items():
                out.append(f"  {survey}: {n:,} x {reason}")
        for r in self.rejected_units:
            rows = "?" if r["rows"] is None else f"{r['rows']:,}"
            where = r["file"] + (f" rows {r['block'][0]}:{r['block'][1]}" if r.get("block") else "")
            reason = r["reason"]
            if reason.startswith(r["file"]):  # the readers' messages start with the file
                reason = reason[len(r["file"]) :].lstrip(": ")
            out.append(f"  {r['survey']}: {where} ({rows} rows): {reason}")
        skipped = {s: {k: v for k, v in e.items() if v} for s, e in self.empty.items()}
        skipped = {s: e for s, e in skipped.items() if e}
        if skipped:
            out.append(
                "skipped (empty): "
                + "; ".join(
                    f"{s} " + ", ".join(f"{v} {k.replace('_', ' ')}(s)" for k, v in e.items())
                    for s, e in skipped.items()
                )
            )
        nb = self.neighbours
        if nb.get("k"):
            out.append(
                f"neighbour graph: k={nb['k']} within {nb['radius_arcsec']:g} arcsec, mean "
                f"{nb['mean']:.2f} neighbours, {nb['without']:,} observations with none"
            )
        else:
            out.append(f"neighbour graph: none ({nb.get('note', 'not built')})")
        if self.resumed_units:
            out.append(f"resumed: {self.resumed_units} unit(s) were done by the interrupted run")
        return out

    def _per_survey(self, counts: Mapping[str, int]) -> str:
        return ", ".join(f"{s} {counts.get(s, 0):,}" for s in self.surveys)


# -- progress ---------------------------------------------------------------------------------


@contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    """A rich progress display (or a stand-in that does nothing)."""
    if not enabled:

        class _Quiet:
            def add_task(self, *a: Any, **k: Any) -> int:
                return 0

            def advance(self, *a: Any, **k: Any) -> None:
                pass

            def update(self, *a: Any, **k: Any) -> None:
                pass

        yield _Quiet()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ) as bar:
        yield bar


# -- the pipeline -----------------------------------------------------------------------------


def prepare_store(
    surveys: Mapping[str, str | Path] | Sequence[tuple[str, str | Path]],
    out: str | Path,
    match_radius: float | u.Quantity = 1.0 * u.arcsec,
    neighbour_radius: float | u.Quantity = 3.0 * u.arcmin,
    k: int = 5,
    transform: Seed000Transform | None = None,
    chunk: int = 64,
    fits_block: int = 1024,
    max_bad_fraction: float = 1.0,
    compact: bool | CompactSpec = False,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    catalogues: str = "memory",
) -> PrepareReport:
    """Read, transform, cross-match and pair several surveys into one store (module docstring).

    ``surveys`` maps each store name to its input path (in the order that the cross-match
    uses); bare-number radii are arcsec. A run killed midway leaves its work folder
    (:func:`work_folder`); ``resume=True`` continues it, ``overwrite=True`` starts again (and
    replaces an existing store). ``catalogues`` ``"hats"`` runs the cross-match and the
    neighbour graph through LSDB on HATS catalogues in the work folder (the ``scale`` extra,
    :mod:`whatsreal.pairing.hats`), with the same rules and the same store. Returns the
    :class:`PrepareReport`.
    """
    items = list(surveys.items()) if isinstance(surveys, Mapping) else list(surveys)
    if not items:
        raise ConfigError("no survey given: pass at least one --survey NAME=PATH")
    names = [str(n) for n, _ in items]
    dup = sorted(n for n, c in Counter(names).items() if c > 1)
    if dup:
        raise ConfigError(f"survey name(s) {dup} given twice; each --survey needs its own NAME")
    if catalogues not in CATALOGUE_BACKENDS:
        raise ConfigError(
            f"catalogues must be one of {list(CATALOGUE_BACKENDS)}; got {catalogues!r}"
        )
    match_as = angle_arcsec(match_radius, "match radius")
    neighbour_as = angle_arcsec(neighbour_radius, "neighbour radius")
    k = neighbour_count(k)
    if not 0 < float(max_bad_fraction) <= 1:
        raise ConfigError(f"max_bad_fraction must be in (0, 1]; got {max_bad_fraction}")
    if int(chunk) < 1 or int(fits_block) < 1:
        raise ConfigError(f"chunk and fits_block must be >= 1 rows; got {chunk}, {fits_block}")
    spec_compact = compact_spec(compact)
    transform = transform or Seed000Transform()
    inputs = [detect_survey(str(n), p) for n, p in items]
    out = Path(out).expanduser().absolute()
    if out.exists() and not overwrite:
        if resume and _placed(work_folder(out)):  # killed after the store was moved into place
            remove_path(work_folder(out))
            return _finished_report(out)
        raise FileExistsError(
            f"{out} already exists; pass overwrite=True (CLI: --overwrite) to replace it"
        )
    settings = {
        "surveys": [s.to_dict() for s in inputs],
        "match_radius_arcsec": match_as,
        "neighbour_radius_arcsec": neighbour_as,
        "k": k,
        "fits_block": int(fits_block),
        "max_bad_fraction": float(max_bad_fraction),
        "compact": None if spec_compact is None else spec_compact.to_dict(),
        "transform": transform.to_dict(),
        "catalogues": catalogues,
    }
    # open every input first: a wrong path, layout or survey name fails before any work
    sources = {s.name: _Source(s, transform, int(chunk), int(fits_block)) for s in inputs}
    work = work_folder(out)
    state = _start(work, settings, resume, overwrite)
    resumed = sum(1 for r in state["units"].values() if r["status"] != "pending")
    with _progress(progress) as bar:
        for src in sources.values():
            _ingest_survey(src, transform, work, state, float(max_bad_fraction), bar)
        report = _assemble(
            sources, work, state, out, settings, spec_compact, match_as, neighbour_as, k, bar
        )
    report.resumed_units = resumed
    remove_path(work)
    return report


def _start(work: Path, settings: dict[str, Any], resume: bool, overwrite: bool) -> dict:
    """A fresh state, or the interrupted run's when resuming (refusing a mismatch)."""
    if work.exists():
        if resume:
            state = _load_state(work)
            diff = _differences(state["settings"], settings)
            if diff:
                raise ConfigError(
                    f"cannot resume {work}: the interrupted run had other settings for {diff}; "
                    "rerun with the same surveys and options, or with --overwrite (no "
                    "--resume) to start again"
                )
            pid = int(state.get("pid", 0))
            if pid != os.getpid() and pid_alive(pid):
                raise ConfigError(
                    f"{work} is in use by a running prepare (pid {pid}); wait for it, or stop it"
                )
            state["pid"] = os.getpid()
            _save_state(work, state)
            return state
        if not overwrite:
            done, total = _progress_of(work)
            raise FileExistsError(
                f"{work} holds an interrupted prepare run ({done} of {total} input units "
                "done): rerun with --resume to continue it, or with --overwrite to start again"
            )
        remove_path(work)
    work.mkdir(parents=True)
    state = {
        "version": STATE_VERSION,
        "pid": os.getpid(),
        "settings": settings,
        "units": {},
        "phase": "ingest",
    }
    _save_state(work, state)
    return state


def _progress_of(work: Path) -> tuple[int | str, int | str]:
    """(done, total) units of an interrupted run, '?' when its state is unreadable."""
    try:
        units = _load_state(work)["units"]
    except ConfigError:
        return "?", "?"
    return sum(1 for r in units.values() if r["status"] != "pending"), len(units)


def _save_state(work: Path, state: dict[str, Any]) -> None:
    """Rewrite ``state.json`` atomically (a kill leaves the old or the new one)."""
    atomic_write_json(work / STATE_FILE, state)


def _shard_path(work: Path, unit: _Unit) -> Path:
    return work / "shards" / unit.survey / f"{unit.index:06d}.store"


def _ingest_survey(
    src: _Source,
    transform: Seed000Transform,
    work: Path,
    state: dict[str, Any],
    max_bad: float,
    bar: Any,
) -> None:
    """Transform every pending unit of one survey into its shard, recording each in the state."""
    units = state["units"]
    for unit in src.units:
        units.setdefault(unit.key, {"status": "pending"})
    _save_state(work, state)
    task = bar.add_task(f"{src.spec.name}: reading", total=len(src.units))
    seen: set[Any] = set()
    for unit in src.units:
        record = units[unit.key]
        if record["status"] != "pending":
            if record.get("stamp") and record["stamp"] != unit.stamp():
                raise ConfigError(
                    f"{unit.file} changed since the interrupted run read it; its shard is "
                    "stale: rerun with --overwrite (no --resume) to start again"
                )
            if record["status"] == "done" and record["rows"]:
                shard = ObservationStore(_shard_path(work, unit))
                seen.update(_id_key(v) for v in shard.table["object_id"].tolist())
            bar.advance(task)
            continue
        units[unit.key] = _ingest_unit(src, unit, transform, work, seen, max_bad)
        _save_state(work, state)
        bar.advance(task)


def _ingest_unit(
    src: _Source,
    unit: _Unit,
    transform: Seed000Transform,
    work: Path,
    seen: set[Any],
    max_bad: float,
) -> dict[str, Any]:
    """Read, transform and write one unit to its shard; its state record (done, empty or
    rejected, with row counts and reasons). ``seen`` gains the unit's object ids."""
    path = _shard_path(work, unit)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():  # written by a run killed before it could record the unit
        remove_path(path)
    counts: Counter = Counter()
    rejected: Counter = Counter()
    added: list[Any] = []
    writer: StoreWriter | None = None
    n_rows = 0
    try:
        for batch in src.batches(unit, counts):
            ids = [_id_key(v) for v in np.asarray(batch.object_id).tolist()]
            keep = np.array([i not in seen for i in ids], bool)
            rejected[_REASON_DUPLICATE] += int((~keep).sum())
            grid = transform.apply(batch)
            bad = grid.mask.reshape(len(batch), -1).mean(axis=1) >= max_bad
            rejected[_REASON_BAD] += int((bad & keep).sum())
            keep &= ~bad
            if not keep.any():
                continue
            kwargs = append_kwargs(batch, grid, np.zeros(len(batch), np.int64), unit.survey)
            kwargs = _take(kwargs, np.flatnonzero(keep))
            kwargs["source_id"] = np.arange(n_rows, n_rows + int(keep.sum()))
            if writer is None:
                arrays = ("ivar", "mask") if grid.ivar is not None else ("mask",)
                writer = StoreWriter(
                    path,
                    grid.flux.shape[1:],
                    {unit.survey: list(grid.bands)},
                    arrays=arrays,
                    positions=True,
                    config={"prepare_unit": unit.key},
                )
            writer.append(**kwargs)
            n_rows += int(keep.sum())
            added.extend(i for i, k in zip(ids, keep, strict=True) if k)
            seen.update(i for i, k in zip(ids, keep, strict=True) if k)
        if writer is not None:
            writer.close()
    except _UNIT_ERRORS as exc:
        if writer is not None:
            writer.abort()
        seen.difference_update(added)
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if not isinstance(exc, WhatsrealError):
            reason = f"{type(exc).__name__}: {reason} (unexpected; please report it)"
        log.warning("rejected %s: %s", unit.file, reason)
        return {
            "status": "rejected",
            "rows": src.unit_rows(unit),
            "reason": reason,
            "stamp": unit.stamp(),
        }
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    rejected[_REASON_DUPLICATE] += int(counts["duplicate_object_id"])
    empty = bool(counts["empty_file"])
    return {
        "status": "empty" if empty else "done",
        "rows": n_rows,
        "rejected": {k: v for k, v in rejected.items() if v},
        "stamp": unit.stamp(),
    }


def _meta_plan(shards: Sequence[ObservationStore]) -> dict[str, tuple[np.dtype, Any]]:
    """Union of the shards' metadata columns: (dtype, fill value) per column (module docstring)."""
    kinds: dict[str, list[np.dtype]] = {}
    for s in shards:
        for col in s.meta_columns():
            kinds.setdefault(col, []).append(s.table[col].dtype)
    plan: dict[str, tuple[np.dtype, Any]] = {}
    for col, dtypes in kinds.items():
        if any(d.kind in "SUO" for d in dtypes):
            width = max(d.itemsize if d.kind == "S" else 32 for d in dtypes)
            plan[col] = (np.dtype(f"S{width}"), b"")
        elif all(d.kind == "b" for d in dtypes):
            plan[col] = (np.dtype(bool), False)
        elif any(d.kind == "f" for d in dtypes):
            plan[col] = (np.result_type(*dtypes, np.float32), np.nan)
        else:
            plan[col] = (np.dtype(np.int64), -1)
    return plan


def _meta_rows(shard: ObservationStore, rows: slice, plan: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata columns of shard rows in the union's dtypes, filled where the shard lacks one."""
    n = rows.stop - rows.start
    out = {}
    for col, (dtype, fill) in plan.items():
        if col in shard.table:
            values = shard.table[col][rows]
            if dtype.kind == "S" and values.dtype.kind != "S":
                values = np.array([str(v) for v in values.tolist()], dtype=dtype)
            out[col] = values.astype(dtype)
        else:
            out[col] = np.full(n, fill, dtype=dtype)
    return out


def _assemble(
    sources: Mapping[str, _Source],
    work: Path,
    state: dict[str, Any],
    out: Path,
    settings: dict[str, Any],
    compact: CompactSpec | None,
    match_as: float,
    neighbour_as: float,
    k: int,
    bar: Any,
) -> PrepareReport:
    """Cross-match the shards, write and pair the store, and move it into place."""
    units = state["units"]
    shards: dict[str, list[ObservationStore]] = {name: [] for name in sources}
    for name, src in sources.items():
        for unit in src.units:
            rec = units[unit.key]
            if rec["status"] == "done" and rec["rows"]:
                shards[name].append(ObservationStore(_shard_path(work, unit)))
    everything = [s for group in shards.values() for s in group]
    if not everything:
        raise InputLayoutError(
            "no observation was accepted from any survey (every unit was empty or rejected); "
            "see the reasons above"
        )
    with_ivar = {name: all("ivar" in s.arrays for s in group) for name, group in shards.items()}
    lacking = sorted(n for n, group in shards.items() if group and not with_ivar[n])
    if lacking and len(lacking) < sum(1 for g in shards.values() if g):
        raise InputLayoutError(
            f"survey(s) {lacking} have no inverse variance (image_ivar / IVAR) but the others "
            "do; one store holds one set of arrays: give ivar for every survey"
        )
    arrays = ("mask",) if lacking else ("ivar", "mask")
    catalogues = {
        name: (
            np.concatenate([s.table["ra"] for s in group]) if group else np.zeros(0),
            np.concatenate([s.table["dec"] for s in group]) if group else np.zeros(0),
        )
        for name, group in shards.items()
    }
    if settings.get("catalogues") == "hats":
        from whatsreal.pairing.hats import assign_source_ids_hats

        ids = assign_source_ids_hats(catalogues, match_as, work / "hats")
    else:
        ids = assign_source_ids(catalogues, match_as * u.arcsec)
    report = _counts(out, list(sources), ids, units, sources)
    config = {
        "prepare": {**settings, "counts": {**report.to_dict(), "out": None}},
        "transform": settings["transform"],
    }
    config["prepare"].pop("transform")
    staged = work / "store"
    remove_path(staged)
    shape = everything[0].shape
    bands = {name: group[0].bands[name] for name, group in shards.items() if group}
    plan = _meta_plan(everything)
    task = bar.add_task("writing the store", total=sum(s.n_obs for s in everything))
    with StoreWriter(
        staged, shape, bands, arrays=arrays, positions=True, config=config, compact=compact
    ) as w:
        for name, group in shards.items():
            offset = 0
            for shard in group:
                for lo in range(0, shard.n_obs, 256):
                    hi = min(shard.n_obs, lo + 256)
                    data = shard.read(np.arange(lo, hi), ("flux", *arrays))
                    w.append(
                        source_id=ids[name][offset + lo : offset + hi],
                        instrument=name,
                        ra=shard.table["ra"][lo:hi],
                        dec=shard.table["dec"][lo:hi],
                        meta=_meta_rows(shard, slice(lo, hi), plan),
                        **data,
                    )
                    bar.advance(task, hi - lo)
                offset += shard.n_obs
                shard.close()  # thousands of shards must not hold thousands of open files
    try:
        nb = build_pairing(
            staged,
            k=k,
            radius=neighbour_as * u.arcsec,
            backend=settings.get("catalogues", "memory"),
            work=work / "hats",
        )
        report.neighbours = {
            "k": nb.k,
            "radius_arcsec": nb.radius_arcsec,
            "mean": float(nb.count().mean()),
            "without": int((nb.count() == 0).sum()),
        }
    except ConfigError as exc:  # no observation has a same-survey neighbour within the radius
        report.neighbours = {"note": " ".join(str(exc).split())}
        log.warning("no neighbour graph: %s", exc)
    state["phase"] = "placing"
    _save_state(work, state)
    layout.replace_path(staged, out, overwrite=True)
    report.out = out
    return report


def _placed(work: Path) -> bool:
    """Whether an interrupted run had already moved its finished store into place."""
    if not (work / STATE_FILE).is_file() or (work / "store").exists():
        return False
    try:
        return _load_state(work).get("phase") == "placing"
    except ConfigError:
        return False


def _finished_report(out: Path) -> PrepareReport:
    """The report a finished store carries in its config (``prepare.counts``)."""
    counts = dict(ObservationStore(out).config["prepare"]["counts"])
    counts["out"] = out
    return PrepareReport(**counts)


def _counts(
    out: Path,
    names: list[str],
    ids: Mapping[str, np.ndarray],
    units: Mapping[str, Any],
    sources: Mapping[str, _Source],
) -> PrepareReport:
    """Matched, single-survey and rejected counts of the assembled run."""
    pairs = np.concatenate(
        [np.stack([ids[n], np.full(ids[n].size, i)], axis=1) for i, n in enumerate(names)]
    )
    pairs = np.unique(pairs, axis=0)  # (source, survey), sorted by source
    _, n_surveys = np.unique(pairs[:, 0], return_counts=True)
    single = {n: 0 for n in names}
    matched_by: Counter = Counter()
    for members in np.split(pairs[:, 1], np.cumsum(n_surveys)[:-1]):
        if len(members) == 1:
            single[names[int(members[0])]] += 1
        else:
            matched_by["+".join(names[int(m)] for m in sorted(members))] += 1
    rejected_rows: dict[str, dict[str, int]] = {}
    rejected_units: list[dict[str, Any]] = []
    empty: dict[str, dict[str, int]] = {}
    for name, src in sources.items():
        reasons: Counter = Counter()
        e = Counter(src.empty)
        for unit in src.units:
            rec = units[unit.key]
            reasons.update(rec.get("rejected", {}))
            if rec["status"] == "empty":
                e["empty_file"] += 1
            elif rec["status"] == "rejected":
                rejected_units.append(
                    {
                        "survey": name,
                        "file": str(unit.file),
                        "block": list(unit.rows) if unit.rows else None,
                        "rows": rec["rows"],
                        "reason": rec["reason"],
                    }
                )
        rejected_rows[name] = dict(reasons)
        empty[name] = dict(e)
    return PrepareReport(
        out=out,
        surveys=names,
        observations={n: int(ids[n].size) for n in names},
        matched=int(sum(matched_by.values())),
        matched_by=dict(sorted(matched_by.items())),
        single=single,
        rejected_rows=rejected_rows,
        rejected_units=rejected_units,
        empty=empty,
    )
