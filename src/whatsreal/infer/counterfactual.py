"""Counterfactual views of store sources as another instrument would record them.

For each source: physics views are its observations by instruments other than the target;
instrument views are the target instrument's ``k`` nearest observations of *other* sources
on the sky (within ``radius``), or a seeded random draw from the target's pool when the
store has no positions. Results go to HDF5 (and FITS on request), written atomically.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from whatsreal.models.counterfactual import CounterfactualModel, summarize
from whatsreal.pairing.sky import angle_arcsec, neighbour_count, sky_neighbours
from whatsreal.sampling import SplitSpec, assign_split
from whatsreal.sampling.splits import split_code
from whatsreal.store import ObservationStore
from whatsreal.utils import atomic_folder, atomic_write_json, atomic_write_with, check_folder_target

__all__ = [
    "SPREAD_FILE",
    "CounterfactualResult",
    "check_fits_folder",
    "counterfactual_views",
    "load_spread_scales",
    "one_step_means",
    "rescale_spread",
    "save_spread_scales",
    "write_fits",
    "write_hdf5",
]

#: The per-target spread scales fitted on held-out sources (``whatsreal evaluate
#: --cf-calibrate``), kept in the model's folder so that ``whatsreal counterfactual`` finds
#: them with the model.
SPREAD_FILE = "counterfactual_spread.json"


@dataclass
class CounterfactualResult:
    """Samples (N, S, *shape), their mean and std, and the rows each came from."""

    source_id: np.ndarray
    samples: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    physics_rows: np.ndarray  # (N, P), -1 padded
    instrument_rows: np.ndarray  # (N, K), -1 padded
    target_row: np.ndarray  # the real observation by the target instrument, or -1
    attrs: dict[str, Any] = field(default_factory=dict)


def _context_rows(
    store: ObservationStore,
    target: int,
    sources: np.ndarray,
    rows_by_source: dict,
    k: int,
    radius_arcsec: float,
    seed: int,
) -> np.ndarray:
    """(N, k) rows of the target instrument near each source (other sources only), by the
    rule the store's neighbour graph uses (:func:`whatsreal.pairing.sky.sky_neighbours`):
    a source the target saw is queried at that observation's position, so with the graph's
    k and radius it gets exactly the views training gave it; another source at its first
    observation's position. Without positions, a seeded random draw from the target's pool
    (what ``ViewDataset`` does without a graph)."""
    pool = np.flatnonzero(store.instrument == target)
    out = np.full((sources.size, k), -1, dtype=np.int64)
    if k == 0 or pool.size == 0:
        return out
    src_of = store.source_id
    if store.has_positions:
        ra = np.asarray(store.table["ra"], dtype=np.float64)
        dec = np.asarray(store.table["dec"], dtype=np.float64)
        where = np.empty(sources.size, dtype=np.int64)
        for i, s in enumerate(sources):
            r = rows_by_source[int(s)]
            own = r[store.instrument[r] == target]
            where[i] = own[0] if own.size else r[0]
        out, _ = sky_neighbours(
            ra, dec, src_of, pool, ra[where], dec[where], src_of[where], k, radius_arcsec
        )
        return out
    rng = np.random.default_rng(seed)
    for i, s in enumerate(sources):
        cand = pool[rng.choice(pool.size, size=min(pool.size, k + 4), replace=False)]
        cand = cand[src_of[cand] != s][:k]
        out[i, : cand.size] = cand
    return out


@dataclass
class ViewRows:
    """Which store rows condition each source's view by one instrument: the ``physics`` views
    (its observations by other instruments, (N, P), -1 padded), the ``instrument`` context
    (the target's observations of its sky neighbours, (N, K)) and its real ``target`` row
    (-1 if the target never saw it)."""

    source_id: np.ndarray
    physics: np.ndarray
    instrument: np.ndarray
    target: np.ndarray


def view_rows(
    store: ObservationStore,
    to: str,
    sources: np.ndarray | None = None,
    split: str | None = None,
    splits: SplitSpec | None = None,
    limit: int | None = None,
    n_physics: int = 4,
    k: int | None = None,
    radius_arcsec: float | None = None,
    seed: int = 0,
) -> ViewRows:
    """The one rule that picks the views a counterfactual by instrument ``to`` is made from
    (see :func:`counterfactual_views`, which documents the arguments)."""
    graph = store.neighbours
    if radius_arcsec is None:
        radius_arcsec = graph.radius_arcsec if graph is not None else 180.0
    if k is None:
        k = graph.k if graph is not None else 5
    radius_arcsec = angle_arcsec(radius_arcsec, "radius_arcsec")  # finite, > 0, < 180 deg
    k = neighbour_count(k)
    target = store.instrument_code(to)
    sid, inst = store.source_id, store.instrument
    order = np.argsort(sid, kind="stable")
    uniq, starts = np.unique(sid[order], return_index=True)
    rows_by_source = dict(zip(uniq.tolist(), np.split(order, starts[1:]), strict=True))
    eligible = np.array(
        [s for s, r in rows_by_source.items() if (inst[r] != target).any()], dtype=np.int64
    )
    if sources is not None:
        wanted = np.asarray(sources, dtype=np.int64)
        missing = np.setdiff1d(wanted, eligible)
        if missing.size:
            raise KeyError(
                f"source(s) {missing[:5].tolist()} have no observation by an instrument "
                f"other than '{to}' in {store.path}"
            )
        eligible = wanted
    if split is not None:
        splits = splits or SplitSpec()
        codes = assign_split(eligible, splits.val, splits.test, splits.seed)
        eligible = eligible[codes == split_code(split)]
    if limit is not None:
        eligible = eligible[: int(limit)]
    if eligible.size == 0:
        raise ValueError(f"no source to translate to '{to}' in {store.path} (split={split})")
    phys = np.full((eligible.size, n_physics), -1, dtype=np.int64)
    target_row = np.full(eligible.size, -1, dtype=np.int64)
    for i, s in enumerate(eligible):
        r = rows_by_source[int(s)]
        others = r[inst[r] != target][:n_physics]
        phys[i, : others.size] = others
        own = r[inst[r] == target]
        target_row[i] = own[0] if own.size else -1
    ctx = _context_rows(store, target, eligible, rows_by_source, k, radius_arcsec, seed)
    return ViewRows(eligible, phys, ctx, target_row)


def counterfactual_views(
    model: CounterfactualModel,
    store: ObservationStore | str | Path,
    to: str,
    n_samples: int = 8,
    solver: str = "heun",
    nfe: int = 20,
    seed: int = 0,
    sources: np.ndarray | None = None,
    split: str | None = None,
    splits: SplitSpec | None = None,
    limit: int | None = None,
    n_physics: int = 4,
    k: int | None = None,
    radius_arcsec: float | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> CounterfactualResult:
    """Generate ``n_samples`` views by instrument ``to`` of each selected source.

    Sources are all those observed by another instrument (optionally only ``split``, or
    the given ``sources``), at most ``limit`` of them. The noise of batch ``b`` is seeded
    by ``(seed, b)``, so results do not depend on the device. Instrument views are the
    ``k`` nearest target observations of other sources within ``radius_arcsec`` (default:
    the store graph's k and radius, so as in training; see :func:`_context_rows`).
    """
    store = store if isinstance(store, ObservationStore) else ObservationStore(store)
    vr = view_rows(store, to, sources, split, splits, limit, n_physics, k, radius_arcsec, seed)
    eligible, phys, ctx, target_row = vr.source_id, vr.physics, vr.instrument, vr.target

    samples = np.zeros((eligible.size, n_samples, *store.shape), dtype=np.float32)
    batches = range(0, eligible.size, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=f"counterfactual -> {to}", unit="batch")
    for b, lo in enumerate(batches):
        sl = slice(lo, lo + batch_size)
        pv, pm = gather_views(store, phys[sl])
        iv, im = gather_views(store, ctx[sl])
        out = model.counterfactual(
            pv, iv, pm, im, n_samples=n_samples, solver=solver, nfe=nfe, seed=seed * 100_003 + b
        )
        samples[sl] = out.float().cpu().numpy()
    mean, std = summarize(torch.from_numpy(samples))
    return CounterfactualResult(
        source_id=eligible,
        samples=samples,
        mean=mean.numpy(),
        std=std.numpy(),
        physics_rows=phys,
        instrument_rows=ctx,
        target_row=target_row,
        attrs={
            "store": str(store.path),
            "to": to,
            "n_samples": n_samples,
            "solver": solver,
            "nfe": nfe,
            "seed": seed,
            "bands": list(store.bands[to]),
            "units": "flux units of the store (nanomaggies for the galaxy simulator)",
        },
    )


def one_step_means(
    model: CounterfactualModel,
    store: ObservationStore,
    result: CounterfactualResult,
    n_draws: int = 8,
    seed: int = 0,
    batch_size: int = 16,
) -> np.ndarray:
    """(N, *shape) posterior means in flux units from the views ``result`` was sampled from,
    one network call per noise draw (:meth:`CounterfactualModel.posterior_mean`): the mean
    without the sampling noise of ``result.mean``, which averages only its few samples."""
    out = np.zeros((result.source_id.size, *store.shape), dtype=np.float32)
    for b, lo in enumerate(range(0, result.source_id.size, batch_size)):
        sl = slice(lo, lo + batch_size)
        pv, pm = gather_views(store, result.physics_rows[sl])
        iv, im = gather_views(store, result.instrument_rows[sl])
        m = model.posterior_mean(pv, iv, pm, im, n_draws=n_draws, seed=seed * 100_003 + b)
        out[sl] = m.float().cpu().numpy()
    return out


def rescale_spread(
    model: CounterfactualModel, result: CounterfactualResult, scale: float
) -> CounterfactualResult:
    """``result`` with every sample moved ``scale`` times as far from its source's sample
    mean, in the model's working space (where the samples are drawn and scored): the mean
    stays, the spread is multiplied by ``scale``. A post-hoc recalibration, as temperature
    scaling is for a classifier: the scale comes from held-out sources
    (:func:`whatsreal.evaluate.counterfactual.fit_spread_scale`), not from the ones it is
    applied to."""
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"a spread scale must be a positive finite number; got {scale}")
    s = torch.from_numpy(np.ascontiguousarray(result.samples))
    x = model.normalize(s)
    centre = x.mean(dim=1, keepdim=True)
    samples = model.denormalize(centre + float(scale) * (x - centre))
    mean, std = summarize(samples)
    attrs = {**result.attrs, "spread_scale": float(scale)}
    return CounterfactualResult(
        source_id=result.source_id,
        samples=samples.numpy().astype(result.samples.dtype, copy=False),
        mean=mean.numpy(),
        std=std.numpy(),
        physics_rows=result.physics_rows,
        instrument_rows=result.instrument_rows,
        target_row=result.target_row,
        attrs=attrs,
    )


def save_spread_scales(model_dir: str | Path, scales: dict[str, dict[str, Any]]) -> Path:
    """Write ``{target: {"spread_scale": s, ...}}`` to ``model_dir``/:data:`SPREAD_FILE`
    atomically, merged with the targets already there."""
    path = Path(model_dir) / SPREAD_FILE
    merged = {**load_spread_scales(model_dir), **scales}
    atomic_write_json(path, merged)
    return path


def load_spread_scales(model_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The spread scales saved with a model (:func:`save_spread_scales`); {} when none are."""
    path = Path(model_dir) / SPREAD_FILE
    if not path.is_file():
        return {}
    import json

    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path} is not valid JSON ({e}); delete it or refit it with `whatsreal evaluate "
            "--cf-calibrate N`"
        ) from e
    bad = [k for k, v in data.items() if not isinstance(v, dict) or "spread_scale" not in v]
    if bad:
        raise ValueError(
            f"{path}: entries {bad} have no 'spread_scale'; refit them with `whatsreal "
            "evaluate --cf-calibrate N`"
        )
    return data


def gather_views(store: ObservationStore, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Views (B, V, *shape) for a (B, V) row table with -1 padding, and the mask."""
    mask = rows >= 0
    views = np.zeros((*rows.shape, *store.shape), dtype=np.float32)
    if mask.any():
        uniq, inv = np.unique(rows[mask], return_inverse=True)
        views[mask] = store.read(uniq)["flux"][inv]
    return torch.from_numpy(views), torch.from_numpy(mask)


def write_hdf5(result: CounterfactualResult, path: str | Path) -> Path:
    """Write samples, mean, std and provenance rows to one HDF5 file, atomically."""
    path = Path(path)

    def _write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as h5:
            for name in ("source_id", "physics_rows", "instrument_rows", "target_row"):
                h5.create_dataset(name, data=getattr(result, name))
            for name in ("samples", "mean", "std"):
                h5.create_dataset(name, data=getattr(result, name), compression="gzip")
            for key, value in result.attrs.items():
                h5.attrs[key] = value if not isinstance(value, list) else ",".join(value)

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_with(path, _write)
    return path


FITS_MANIFEST = "whatsreal-fits.json"


def _is_fits_export(directory: Path) -> bool:
    """Whether a folder holds only what :func:`write_fits` writes (so it may be replaced)."""
    return all(
        p.is_file() and (p.name == FITS_MANIFEST or re.fullmatch(r"source_-?\d+\.fits", p.name))
        for p in directory.iterdir()
    )


def check_fits_folder(directory: str | Path, overwrite: bool = False) -> None:
    """Refuse, before any sampling, a FITS folder that is not new or empty (unless
    ``overwrite``, and then only an earlier FITS export), so files never mix across runs."""
    check_folder_target(directory, overwrite, _is_fits_export)


def write_fits(
    result: CounterfactualResult, directory: str | Path, overwrite: bool = False
) -> list[Path]:
    """One FITS file per source: primary HDU = posterior mean, then STD and SAMPLES.

    The files are written into a hidden temporary folder that is renamed onto ``directory``
    when all are done, with a manifest (``whatsreal-fits.json``) listing them: a killed export
    leaves nothing at ``directory``, and a rerun never mixes stale files with new ones (an
    existing export is replaced only with ``overwrite``).
    """
    directory = Path(directory)
    names = [f"source_{int(s)}.fits" for s in result.source_id]
    with atomic_folder(directory, overwrite, _is_fits_export) as tmp:
        _write_fits_files(result, tmp, names)
        manifest = {"complete": True, "n_files": len(names), "files": names, **result.attrs}
        atomic_write_json(tmp / FITS_MANIFEST, manifest)
    return [directory / name for name in names]


def _write_fits_files(result: CounterfactualResult, folder: Path, names: list[str]) -> None:
    """Write one FITS file per source into ``folder``."""
    from astropy.io import fits

    for i, s in enumerate(result.source_id):
        header = fits.Header()
        header["SOURCE"] = int(s)
        header["INSTRUME"] = str(result.attrs.get("to", ""))
        header["NSAMPLE"] = int(result.samples.shape[1])
        header["SOLVER"] = str(result.attrs.get("solver", ""))
        header["NFE"] = int(result.attrs.get("nfe", 0))
        header["BANDS"] = ",".join(result.attrs.get("bands", []))
        hdus = fits.HDUList(
            [
                fits.PrimaryHDU(result.mean[i], header=header),
                fits.ImageHDU(result.std[i], name="STD"),
                fits.ImageHDU(result.samples[i], name="SAMPLES"),
            ]
        )
        hdus.writeto(folder / names[i])
