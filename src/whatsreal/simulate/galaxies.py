"""Multi-survey galaxy simulator: the same galaxies seen by HSC-, Legacy- and LSST-like surveys.

One catalogue of sources (``galaxy_population``) is observed by every survey in the list. Each
survey has its own pixel scale, zero-point, PSF, depth and tiling (``galaxy_presets``), and
its observing conditions are smooth random fields on the sky (``galaxy_conditions``). GalSim
renders every stamp (``galaxy_render``). Per observation the store holds what a model sees,
following seed 000 Sec. 4:

- ``flux``: (4, 48, 48) g, r, i, z on a common grid covering the same ~8" field of view in
  every survey: HSC-like native 48x48 at 0.168", Legacy-like 31x31 at 0.262" and LSST-like
  40x40 at 0.2" upsampled to 48x48 by linear interpolation. Units: calibrated flux on the
  common zero-point 22.5 (nanomaggies) per common-grid pixel, i.e. native counts times
  10^(-0.4 (ZP - 22.5)) times the pixel-area ratio, so a stamp sums to the source's observed
  (Milky-Way-extincted) flux in every survey. The arcsinh stretch is left to the model side.
- ``ivar``: inverse of sky variance + source Poisson variance (from the noise-free model),
  propagated through the same linear maps (marginal per-pixel variance after interpolation).
- ``clean``: the noise-free rendering on the same grid and units.

Noise is Gaussian with that variance on native pixels (the Gaussian limit of Poisson counts),
added before resampling, so upsampled surveys have the correlated noise of real resampled
cutouts. Truth: per source (n, r_half, e1, e2, magnitudes, colours, redshift, SED type, star
and companion flags), per observation (PSF FWHM and ellipticity per band, 5-sigma depth,
exposures, sky noise, E(B-V), extinction, sub-pixel offset), per instrument (pixel scale,
zero-point, medians). Everything is fixed by ``seed``: catalogue, fields and the noise of each
(source, survey) pair, independently of the number of worker processes.

Command line (the figure of ``docs/galaxies.md``)::

    python -m whatsreal.simulate.galaxies --figure docs/images/galaxies.png
    python -m whatsreal.simulate.galaxies --out sim.store --n 20000 --surveys hsc,legacy,lsst
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from whatsreal.errors import ConfigError
from whatsreal.simulate.galaxy_conditions import extinction_field, survey_conditions
from whatsreal.simulate.galaxy_population import (
    PopulationConfig,
    add_population_arguments,
    draw_population,
    population_config,
)
from whatsreal.simulate.galaxy_presets import BANDS, SurveyPreset, survey_preset
from whatsreal.utils import (
    atomic_write_json,
    check_folder_target,
    pid_alive,
    remove_path,
    replace_folder,
    save_figure,
    sweep_stale_temps,
    temp_sibling,
)

__all__ = [
    "GalaxySimConfig",
    "MMUWriter",
    "make_figure",
    "observe_source",
    "prepare",
    "render_observations",
    "simulate_galaxies",
    "write_mmu_layout",
]


@dataclass(frozen=True)
class GalaxySimConfig:
    """Everything a galaxy simulation needs besides the seed.

    Attributes:
        n_sources: sources in the catalogue; each is observed once by every survey.
        surveys: survey preset names (``hsc``, ``legacy``, ``lsst``).
        grid_size: side of the common grid every survey is resampled to (seed 000: 48).
        n_grid: Sersic-index grid points of the interpolation speed-up (<= 100).
        chunk: sources per worker task.
        population: galaxy population knobs.
    """

    n_sources: int = 20_000
    surveys: tuple[str, ...] = ("hsc", "legacy", "lsst")
    grid_size: int = 48
    n_grid: int = 64
    chunk: int = 48
    population: PopulationConfig = field(default_factory=PopulationConfig)

    def __post_init__(self) -> None:
        """Validate at the boundary."""
        if self.n_sources < 1:
            raise ConfigError(f"GalaxySimConfig.n_sources must be >= 1, got {self.n_sources}")
        if not self.surveys or len(set(self.surveys)) != len(self.surveys):
            raise ConfigError(f"GalaxySimConfig.surveys must be distinct names: {self.surveys}")
        for name in self.surveys:
            survey_preset(name)  # raises with the list of known surveys
        if not 2 <= self.n_grid <= 100:
            raise ConfigError("GalaxySimConfig.n_grid must be in [2, 100] (GalSim's Sersic cache)")

    def presets(self) -> list[SurveyPreset]:
        """The survey presets, in order."""
        return [survey_preset(s) for s in self.surveys]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (with the full presets), saved as the store's config."""
        d = dataclasses.asdict(self)
        d["surveys"] = list(self.surveys)
        d["population"]["mag_limits"] = {b: v for b, v in self.population.mag_limits}
        d["presets"] = {p.name: _plain(p.to_dict()) for p in self.presets()}
        return d


def _plain(obj: Any) -> Any:
    """Tuples to lists, recursively, so the config dumps as plain YAML."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return [_plain(v) for v in obj]
    return obj


def prepare(cfg: GalaxySimConfig, seed: int) -> dict[str, Any]:
    """Catalogue, sky fields and per-survey conditions: everything but the pixels (fast)."""
    pop = draw_population(cfg.n_sources, cfg.population, seed)
    ebv = extinction_field(pop["x_deg"], pop["y_deg"], seed)
    conditions = {}
    for code, preset in enumerate(cfg.presets()):
        cond = survey_conditions(preset, pop["x_deg"], pop["y_deg"], ebv, seed, code)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 5, code]))
        # cutouts are centred on the catalogue position: a sub-pixel offset per observation
        cond["offset"] = rng.uniform(-0.5, 0.5, (cfg.n_sources, 2)) * preset.pixel_scale
        conditions[preset.name] = cond
    return {"population": pop, "conditions": conditions, "seed": int(seed), "config": cfg}


_LIBRARY: dict[tuple, Any] = {}


def _library(n_min: float, n_max: float, n_grid: int):
    """The process's Sersic library (built once per worker, ~0.5 s)."""
    from whatsreal.simulate.galaxy_render import SersicLibrary

    key = (n_min, n_max, n_grid)
    if key not in _LIBRARY:
        _LIBRARY[key] = SersicLibrary(n_min, n_max, n_grid)
    return _LIBRARY[key]


def _components(lib, pop: dict[str, np.ndarray], i: int, band_flux, comp_flux):
    """(profile, flux per band) pairs for source i: the galaxy or star, and any companion."""
    import galsim

    if pop["is_star"][i]:
        return [(galsim.DeltaFunction(), band_flux)]
    if "component_frac" in pop:  # bulge + disk + knots, each with its own colours
        comps = _bulge_disk_components(lib, pop, i, band_flux)
    else:
        parts = lib.parts(pop["sersic_n"][i], pop["r_half"][i], pop["e1"][i], pop["e2"][i])
        comps = [(p, band_flux * w) for p, w in parts]
    if pop["has_companion"][i]:
        cparts = lib.parts(
            pop["comp_n"][i], pop["comp_r_half"][i], pop["comp_e1"][i], pop["comp_e2"][i]
        )
        dx, dy = pop["comp_dx"][i], pop["comp_dy"][i]
        comps += [(p.shift(dx, dy), comp_flux * w) for p, w in cparts]
    return comps


def _neighbour_components(lib, pop: dict[str, np.ndarray], i: int, ext, zero_point: float):
    """(profile, flux per band) pairs of source i's sky neighbours (``neighbours`` option):
    stars as points, galaxies as their Sersic profile, placed at their offsets (arcsec) and
    under the source's own extinction."""
    import galsim

    comps = []
    for j in np.flatnonzero(pop["nb_valid"][i]):
        flux = 10 ** (-0.4 * (pop["nb_mag"][i, j] + ext - zero_point))
        dx, dy = float(pop["nb_dx"][i, j]), float(pop["nb_dy"][i, j])
        if pop["nb_is_star"][i, j]:
            comps.append((galsim.DeltaFunction().shift(dx, dy), flux))
            continue
        parts = lib.parts(
            pop["nb_n"][i, j], pop["nb_r_half"][i, j], pop["nb_e1"][i, j], pop["nb_e2"][i, j]
        )
        comps += [(prof.shift(dx, dy), flux * w) for prof, w in parts]
    return comps


def _bulge_disk_components(lib, pop: dict[str, np.ndarray], i: int, band_flux):
    """The ``bulge_disk`` galaxy i: a Sersic bulge (half the disk's ellipticity), an
    exponential disk and ``galsim.RandomKnots`` in the disk's plane (seeded per source, so
    every survey sees the same knots), with each component's share of every band's flux."""
    import galsim

    frac = pop["component_frac"][i]
    e1, e2, r_d = pop["e1"][i], pop["e2"][i], pop["r_half"][i]
    bulge = lib.parts(pop["bulge_n"][i], pop["bulge_r_half"][i], 0.5 * e1, 0.5 * e2)
    comps = [(p, band_flux * frac[0] * w) for p, w in bulge]
    comps += [(p, band_flux * frac[1] * w) for p, w in lib.parts(1.0, r_d, e1, e2)]
    if pop["n_knots"][i] > 0 and frac[2].max() > 0:
        knots = galsim.RandomKnots(
            int(pop["n_knots"][i]),
            half_light_radius=float(r_d),
            flux=1.0,
            rng=galsim.BaseDeviate(int(pop["knot_seed"][i])),
        ).shear(g1=float(e1), g2=float(e2))
        comps.append((knots, band_flux * frac[2]))
    return comps


def _observe_native(
    lib,
    pop: dict[str, Any],
    cond: dict[str, Any],
    p: SurveyPreset,
    i: int,
    code: int,
    seed: int,
    source: Callable[[np.ndarray], list] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise-free image, noisy image and variance of source i in one survey (native counts).

    ``source(band_flux)`` -> [(unit-flux profile, flux per band), ...] replaces the catalogue's
    galaxy (and companion) by other components under the same conditions and noise draw."""
    from whatsreal.simulate.galaxy_render import moffat_psf, render_stamp

    ext = cond["extinction"][i]
    band_flux = 10 ** (-0.4 * (pop["mag"][i] + ext - p.zero_point))
    comp_flux = 10 ** (-0.4 * (pop["comp_mag"][i] + ext - p.zero_point))
    psfs = [
        moffat_psf(cond["psf_fwhm"][i, b], cond["psf_e1"][i, b], cond["psf_e2"][i, b], p.psf_beta)
        for b in range(len(p.bands))
    ]
    if source is None:
        comps = _components(lib, pop, i, band_flux, comp_flux)
    else:
        comps = source(band_flux)
    if "nb_valid" in pop:  # the sky around the source, in every survey the same objects
        comps = comps + _neighbour_components(lib, pop, i, ext, p.zero_point)
    img = render_stamp(comps, psfs, p.pixel_scale, p.native_size, tuple(cond["offset"][i]))
    var = (
        cond["sky_sigma"][i][:, None, None] ** 2
        + np.maximum(img, 0.0) / cond["gain"][i][:, None, None]
    )
    # noise depends only on (seed, survey, source): the same whatever the chunking or workers
    rng = np.random.default_rng(np.random.SeedSequence([seed, 4, code, int(pop["source_id"][i])]))
    noisy = img + np.sqrt(var) * rng.standard_normal(img.shape)
    return img, noisy, var


def _grid_factor(p: SurveyPreset, grid: int) -> float:
    """Native counts -> nanomaggies per common-grid pixel (zero-point and pixel-area ratio)."""
    grid_scale = p.native_size * p.pixel_scale / grid
    return 10 ** (-0.4 * (p.zero_point - 22.5)) * (grid_scale / p.pixel_scale) ** 2


def observe_source(
    prep: dict[str, Any],
    survey: str,
    index: int,
    source: Callable[[np.ndarray], list] | None = None,
) -> dict[str, np.ndarray]:
    """``flux``, ``ivar`` and ``clean`` (B, G, G) float32 of catalogue source ``index`` in one
    survey, exactly as the store holds them; with ``source`` (see ``_observe_native``) another
    source is drawn under that observation's conditions, PSF, offset and noise draw (the hook
    that injected anomalies use, so only the source differs)."""
    from whatsreal.simulate.galaxy_render import to_common_grid

    cfg: GalaxySimConfig = prep["config"]
    if survey not in cfg.surveys:
        raise ConfigError(f"survey {survey!r} is not in this simulation; it has {cfg.surveys}")
    n = len(prep["population"]["source_id"])
    if not 0 <= int(index) < n:
        raise ConfigError(f"source index {index} is outside the catalogue of {n} sources")
    p = survey_preset(survey)
    lib = _library(cfg.population.n_min, cfg.population.n_max, cfg.n_grid)
    img, noisy, var = _observe_native(
        lib,
        prep["population"],
        prep["conditions"][survey],
        p,
        int(index),
        cfg.surveys.index(survey),
        prep["seed"],
        source,
    )
    factor = _grid_factor(p, cfg.grid_size)
    clean, _ = to_common_grid(img, None, cfg.grid_size, factor)
    flux, v = to_common_grid(noisy, var, cfg.grid_size, factor)
    return {
        "flux": flux.astype(np.float32),
        "ivar": (1.0 / v).astype(np.float32),
        "clean": clean.astype(np.float32),
    }


def _render_task(task: dict[str, Any], native: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Render one chunk of sources in every survey (runs in a worker process).

    Returns per survey ``flux``/``ivar``/``clean`` on the common grid, or with ``native`` the
    native-scale ``image``/``ivar`` in the survey's own units; with ``task["with_native"]``
    both (the native ones as ``native_image``/``native_ivar``).
    """
    from whatsreal.simulate.galaxy_render import to_common_grid

    pop, conds, presets = task["population"], task["conditions"], task["presets"]
    pcfg: PopulationConfig = task["pop_cfg"]
    lib = _library(pcfg.n_min, pcfg.n_max, task["n_grid"])
    grid, seed = task["grid_size"], task["seed"]
    n = len(pop["source_id"])
    out = {}
    for code, name in task["codes"].items():
        cond, p = conds[name], presets[name]
        side = p.native_size if native else grid
        flux = np.empty((n, len(p.bands), side, side), np.float32)
        ivar, clean = np.empty_like(flux), np.empty_like(flux)
        factor = _grid_factor(p, grid)
        both = task.get("with_native", False) and not native
        if both:
            shape = (n, len(p.bands), p.native_size, p.native_size)
            nat_img, nat_ivar = np.empty(shape, np.float32), np.empty(shape, np.float32)
        for i in range(n):
            img, noisy, var = _observe_native(lib, pop, cond, p, i, code, seed)
            if native:
                flux[i], clean[i], ivar[i] = noisy, img, 1.0 / var
                continue
            if both:
                nat_img[i], nat_ivar[i] = noisy, 1.0 / var
            c, _ = to_common_grid(img, None, grid, factor)
            f, v = to_common_grid(noisy, var, grid, factor)
            flux[i], clean[i], ivar[i] = f, c, 1.0 / v
        if native:
            out[name] = {"image": flux, "ivar": ivar}
        else:
            out[name] = {"flux": flux, "ivar": ivar, "clean": clean}
            if both:
                out[name].update(native_image=nat_img, native_ivar=nat_ivar)
    return out


def _native_task(task: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """Native-scale noisy images and ivar of a chunk (the same pixels as the store's)."""
    return _render_task(task, native=True)


def _tasks(prep: dict[str, Any], sources: np.ndarray | None = None, with_native: bool = False):
    """Worker tasks (one per chunk of sources), in order."""
    cfg: GalaxySimConfig = prep["config"]
    idx = np.arange(cfg.n_sources) if sources is None else np.asarray(sources)
    presets = {p.name: p for p in cfg.presets()}
    codes = {code: name for code, name in enumerate(cfg.surveys)}
    for lo in range(0, idx.size, cfg.chunk):
        rows = idx[lo : lo + cfg.chunk]
        yield {
            "population": {k: v[rows] for k, v in prep["population"].items()},
            "conditions": {
                s: {k: v[rows] for k, v in c.items()} for s, c in prep["conditions"].items()
            },
            "presets": presets,
            "codes": codes,
            "pop_cfg": cfg.population,
            "n_grid": cfg.n_grid,
            "grid_size": cfg.grid_size,
            "seed": prep["seed"],
            "rows": rows,
            "with_native": with_native,
        }


def _map(tasks, workers: int, fn=None):
    """Run ``fn`` (default: render a chunk) over tasks in order, on ``workers`` processes.

    The pool never outlives the run: on any error, or when the consumer stops early, queued
    tasks are dropped and the workers terminated; and each worker ends itself when the parent
    process dies (a SIGKILLed parent cannot stop its pool).
    """
    fn = fn or _render_task
    if workers <= 1:
        yield from map(fn, tasks)
        return
    pool = ProcessPoolExecutor(
        max_workers=workers, initializer=_worker_init, initargs=(os.getpid(),)
    )
    try:
        # bounded look-ahead, so finished chunks never pile up in memory behind a slow writer
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.submit(fn, task))
            if len(pending) >= 2 * workers + 1:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BaseException:  # includes GeneratorExit and KeyboardInterrupt
        _stop_pool(pool)
        raise
    pool.shutdown(wait=True)


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Drop queued tasks and terminate the workers now (shutdown alone waits for them)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        proc.join(timeout=5)


def _worker_init(parent_pid: int) -> None:
    """Pool worker set-up: default signal handling (the pool stops workers with SIGTERM; Ctrl-C
    is the parent's to handle), one BLAS thread, and a watchdog for the parent's death."""
    import signal
    import threading

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _single_threaded()
    watch = threading.Thread(target=_exit_with_parent, args=(parent_pid, os.getppid()), daemon=True)
    watch.start()


def _exit_with_parent(parent_pid: int, ppid: int, poll_s: float = 0.5) -> None:
    """Poll until the parent is gone (the worker is re-parented, or the pid vanished), then
    end this worker at once: no half-rendered chunk is worth an orphan burning a core."""
    import time

    while os.getppid() == ppid and pid_alive(parent_pid):
        time.sleep(poll_s)
    os._exit(1)


def _single_threaded() -> None:
    """Worker initialiser: one BLAS/OpenMP thread per process (workers already fill the cores;
    nested BLAS threads made the renderer 3x slower on 2 cores, measured)."""
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:
        return
    global _THREAD_LIMIT
    _THREAD_LIMIT = threadpool_limits(1)


_THREAD_LIMIT: Any = None


def render_observations(
    prep: dict[str, Any], sources: Sequence[int] | None = None, workers: int = 1
) -> dict[str, dict[str, np.ndarray]]:
    """Render (in memory) the given sources in every survey: {survey: {flux, ivar, clean}}."""
    parts = [r for r in _map(_tasks(prep, sources), workers)]
    return {
        s: {k: np.concatenate([p[s][k] for p in parts]) for k in ("flux", "ivar", "clean")}
        for s in prep["config"].surveys
    }


def _obs_columns(prep: dict[str, Any], survey: str, rows: np.ndarray):
    """Per-observation metadata (scalar columns) and truth (per-band vectors) of a survey."""
    c = {k: v[rows] for k, v in prep["conditions"][survey].items()}
    preset = survey_preset(survey)
    nanomaggie = 10 ** (-0.4 * (preset.zero_point - 22.5))
    meta: dict[str, np.ndarray] = {
        "psf_fwhm": c["psf_fwhm"].mean(axis=1),
        "depth": c["depth"][:, BANDS.index("i")] if "i" in BANDS else c["depth"].mean(axis=1),
        "ebv": c["ebv"],
    }
    for b, band in enumerate(preset.bands):
        meta[f"psf_fwhm_{band}"] = c["psf_fwhm"][:, b]
        meta[f"depth_{band}"] = c["depth"][:, b]
        meta[f"n_exp_{band}"] = c["n_exp"][:, b]
    truth = {
        "psf_fwhm": c["psf_fwhm"],
        "psf_e1": c["psf_e1"],
        "psf_e2": c["psf_e2"],
        "depth": c["depth"],
        "n_exp": c["n_exp"],
        "sky_sigma": c["sky_sigma"] * nanomaggie,
        "extinction": c["extinction"],
        "ebv": c["ebv"],
        "offset_x": c["offset"][:, 0],
        "offset_y": c["offset"][:, 1],
    }
    return meta, truth


def simulate_galaxies(
    out: str | Path,
    n: int = 20_000,
    surveys: Sequence[str] | str = ("hsc", "legacy", "lsst"),
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    mmu_out: str | Path | None = None,
    config: GalaxySimConfig | None = None,
    compact: bool = False,
) -> Path:
    """Simulate ``n`` sources seen by every survey and write an observation store at ``out``.

    ``surveys`` is a list or a comma-separated string; ``workers`` defaults to the CPU count.
    With ``mmu_out`` the native-scale Multimodal-Universe-like HDF5 layout is written too;
    ``compact`` writes the compact store (``whatsreal.store.compact``, about 4x smaller).
    Returns the store path. The store appears atomically (``StoreWriter``).
    """
    from whatsreal.store import StoreWriter

    if isinstance(surveys, str):
        surveys = [s.strip() for s in surveys.split(",") if s.strip()]
    cfg = config or GalaxySimConfig()
    cfg = dataclasses.replace(cfg, n_sources=int(n), surveys=tuple(surveys))
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1 (processes); got {workers}")
    prep = prepare(cfg, seed)
    pop = prep["population"]
    shape = (len(BANDS), cfg.grid_size, cfg.grid_size)
    mmu = MMUWriter(mmu_out, prep, overwrite=overwrite) if mmu_out is not None else None
    store_cfg = {"simulator": "galaxies", "seed": int(seed), "galaxies": _plain(cfg.to_dict())}
    try:
        with (
            StoreWriter(
                out,
                shape,
                {s: list(BANDS) for s in cfg.surveys},
                arrays=("ivar", "clean"),
                positions=True,
                config=store_cfg,
                overwrite=overwrite,
                compact=compact,
            ) as w,
            _Progress(progress, cfg.n_sources * len(cfg.surveys)) as bar,
            ExitStack() as stack,  # stops the worker pool before the store is aborted
        ):
            tasks = _tasks(prep, with_native=mmu is not None)
            results = stack.enter_context(closing(_map(tasks, workers)))
            for task, result in zip(_tasks(prep), results, strict=True):
                rows = task["rows"]
                for s in cfg.surveys:
                    meta, truth = _obs_columns(prep, s, rows)
                    r = result[s]
                    if mmu is not None:
                        mmu.append(s, rows, r["native_image"], r["native_ivar"])
                    w.append(
                        r["flux"],
                        source_id=pop["source_id"][rows],
                        instrument=s,
                        ra=pop["ra"][rows],
                        dec=pop["dec"][rows],
                        meta=meta,
                        truth=truth,
                        ivar=r["ivar"],
                        clean=r["clean"],
                    )
                    bar(len(rows))
            w.add_source_truth(pop["source_id"], **_source_truth(pop))
            presets = cfg.presets()
            w.add_instrument_truth(
                pixel_scale=np.array([p.pixel_scale for p in presets]),
                zero_point=np.array([p.zero_point for p in presets]),
                native_size=np.array([p.native_size for p in presets]),
                grid_scale=np.array(
                    [p.native_size * p.pixel_scale / cfg.grid_size for p in presets]
                ),
                median_psf_fwhm=np.array([p.psf_fwhm for p in presets]),
                median_depth=np.array([p.depth for p in presets]),
            )
    except BaseException:
        if mmu is not None:
            mmu.abort()
        raise
    if mmu is not None:
        mmu.close()
    return Path(out)


def _source_truth(pop: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-source truth columns for the store."""
    mag = pop["mag"]
    composite = "component_frac" in pop
    cols = {
        k: pop[k]
        for k in (
            "redshift",
            "sed_type",
            *(
                ("bulge_fraction", "bulge_n", "bulge_r_half", "knot_fraction", "n_knots")
                if composite
                else ("sersic_n",)
            ),
            "r_half",
            "e1",
            "e2",
            "is_star",
            "has_companion",
            "ra",
            "dec",
        )
    }
    cols["mag"] = mag
    for b, band in enumerate(BANDS):
        cols[f"mag_{band}"] = mag[:, b]
    for b in range(len(BANDS) - 1):
        cols[f"{BANDS[b]}_{BANDS[b + 1]}"] = mag[:, b] - mag[:, b + 1]
    for k in ("comp_dx", "comp_dy", "comp_mag", "comp_n", "comp_r_half", "comp_e1", "comp_e2"):
        cols[k] = pop[k]
    for k in pop:  # the sky neighbours (``neighbours`` option): the table and its summaries
        if k.startswith("nb_") or k in ("n_neighbours", "neighbour_flux_i"):
            cols[k] = pop[k]
    return cols


class _Progress:
    """A rich progress bar (or nothing), used as ``with _Progress(on, total) as bar: bar(k)``."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total

    def __enter__(self):
        if not self.enabled:
            return lambda k: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._p = Progress(
            TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
        )
        self._p.start()
        task = self._p.add_task("obs", total=self.total)
        return lambda k: self._p.advance(task, k)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._p.stop()


# --------------------------------------------------------------------------------------------
# Multimodal-Universe-like layout (native pixel scale)
# --------------------------------------------------------------------------------------------


def healpix_nest(ra: np.ndarray, dec: np.ndarray, nside: int) -> np.ndarray:
    """HEALPix NESTED pixel index of (ra, dec) in degrees (Gorski et al. 2005 ang2pix_nest)."""
    z = np.sin(np.deg2rad(dec))
    phi = np.mod(np.deg2rad(ra), 2 * np.pi)
    za = np.abs(z)
    tt = phi / (0.5 * np.pi)  # in [0, 4)
    ix = np.empty(z.shape, np.int64)
    iy = np.empty(z.shape, np.int64)
    face = np.empty(z.shape, np.int64)
    eq = za <= 2.0 / 3.0
    # equatorial region
    temp1 = nside * (0.5 + tt[eq])
    temp2 = nside * z[eq] * 0.75
    jp = (temp1 - temp2).astype(np.int64)
    jm = (temp1 + temp2).astype(np.int64)
    ifp, ifm = jp // nside, jm // nside
    face[eq] = np.where(ifp == ifm, ifp | 4, np.where(ifp < ifm, ifp, ifm + 8))
    ix[eq] = jm & (nside - 1)
    iy[eq] = nside - (jp & (nside - 1)) - 1
    # polar caps
    pol = ~eq
    ntt = np.minimum(tt[pol].astype(np.int64), 3)
    tp = tt[pol] - ntt
    tmp = nside * np.sqrt(3 * (1 - za[pol]))
    jp = np.minimum((tp * tmp).astype(np.int64), nside - 1)
    jm = np.minimum(((1.0 - tp) * tmp).astype(np.int64), nside - 1)
    north = z[pol] >= 0
    face[pol] = np.where(north, ntt, ntt + 8)
    ix[pol] = np.where(north, nside - jm - 1, jp)
    iy[pol] = np.where(north, nside - jp - 1, jm)
    # interleave bits of ix (even) and iy (odd)
    ipf = np.zeros(z.shape, np.int64)
    for bit in range(int(np.log2(nside)) + 1):
        ipf |= ((ix >> bit) & 1) << (2 * bit)
        ipf |= ((iy >> bit) & 1) << (2 * bit + 1)
    return face * nside * nside + ipf


MMU_MANIFEST = "whatsreal-mmu.json"


def _is_mmu_layout(root: Path) -> bool:
    """Whether a folder holds only a layout :class:`MMUWriter` wrote (so it may be replaced)."""
    if (root / MMU_MANIFEST).is_file():
        return True
    return all(p.suffix == ".hdf5" for p in root.rglob("*") if not p.is_dir())


class MMUWriter:
    """Streams the Multimodal-Universe-like per-survey HDF5 files (native units and scale).

    Layout ``<root>/<survey>/sim/healpix=<N>/001-of-001.hdf5`` (HEALPix NESTED, nside 16).
    Keys: object_id, ra, dec, image_array (n, 4, S, S) in the survey's native units (counts at
    its zero-point; the same noisy pixels as the store before resampling), image_band,
    image_ivar, image_mask (bool, all False), image_psf_fwhm, image_scale. The whole tree is
    built in a hidden temporary folder beside ``root`` and renamed onto it by :meth:`close`
    (with a ``whatsreal-mmu.json`` manifest), so a killed run leaves no partial layout and a
    rerun never mixes old healpix files with new ones; an existing layout is replaced only
    with ``overwrite``. ``track_times=False`` keeps equal seeds byte-identical.
    """

    def __init__(
        self, root: str | Path, prep: dict[str, Any], nside: int = 16, overwrite: bool = False
    ) -> None:
        self.final, self.prep, self.overwrite = Path(root), prep, overwrite
        self.final.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_temps(self.final)
        check_folder_target(self.final, overwrite, _is_mmu_layout)
        self.root = temp_sibling(self.final)
        self.root.mkdir()
        pop = prep["population"]
        self.pix = healpix_nest(pop["ra"], pop["dec"], nside)
        self.files: dict[tuple[str, int], tuple[Any, Path]] = {}

    @staticmethod
    def _append(f: Any, key: str, value: np.ndarray) -> None:
        """Append rows to a resizable dataset, creating it on first use."""
        if key not in f:
            f.create_dataset(
                key,
                data=value,
                maxshape=(None, *value.shape[1:]),
                chunks=(1, *value.shape[1:]),
                track_times=False,
            )
        else:
            ds = f[key]
            ds.resize(ds.shape[0] + len(value), axis=0)
            ds[-len(value) :] = value

    def append(self, name: str, rows: np.ndarray, image: np.ndarray, ivar: np.ndarray) -> None:
        """Add the native noisy images and ivar of catalogue ``rows`` seen by survey ``name``."""
        import h5py

        pop, cond = self.prep["population"], self.prep["conditions"][name]
        preset = survey_preset(name)
        for hp in np.unique(self.pix[rows]):
            sel = self.pix[rows] == hp
            r = rows[sel]
            key = (name, int(hp))
            if key not in self.files:
                path = self.root / name / "sim" / f"healpix={int(hp)}" / "001-of-001.hdf5"
                path.parent.mkdir(parents=True, exist_ok=True)
                f = h5py.File(path, "w")
                f.attrs["zero_point"] = preset.zero_point
                self.files[key] = (f, path)
            f, m = self.files[key][0], len(r)
            self._append(f, "object_id", pop["source_id"][r])
            self._append(f, "ra", pop["ra"][r])
            self._append(f, "dec", pop["dec"][r])
            self._append(f, "image_array", image[sel])
            self._append(f, "image_band", np.array([[f"{name}-{b}".encode() for b in BANDS]] * m))
            self._append(f, "image_ivar", ivar[sel])
            self._append(f, "image_mask", np.zeros(image[sel].shape, bool))
            self._append(f, "image_psf_fwhm", cond["psf_fwhm"][r].astype(np.float32))
            self._append(f, "image_scale", np.full((m, 4), preset.pixel_scale, np.float32))

    def close(self) -> Path:
        """Close every file, then move the finished layout into place."""
        try:
            for f, _ in self.files.values():
                f.close()
            files = sorted(str(p.relative_to(self.root)) for _, p in self.files.values())
            atomic_write_json(self.root / MMU_MANIFEST, {"complete": True, "files": files})
            replace_folder(self.root, self.final, self.overwrite, _is_mmu_layout)
        except BaseException:
            self.abort()
            raise
        self.files = {}
        return self.final

    def abort(self) -> None:
        """Drop everything written so far; nothing appears at ``root``."""
        for f, _ in self.files.values():
            try:
                f.close()
            except Exception:  # already closed
                pass
        self.files = {}
        remove_path(self.root)


def write_mmu_layout(
    root: str | Path,
    prep: dict[str, Any],
    nside: int = 16,
    workers: int = 1,
    overwrite: bool = False,
) -> Path:
    """Render and write only the Multimodal-Universe-like layout (see :class:`MMUWriter`)."""
    writer = MMUWriter(root, prep, nside, overwrite=overwrite)
    try:
        results = _map(_tasks(prep), workers, _native_task)
        with closing(results):
            for task, result in zip(_tasks(prep), results, strict=True):
                for name in prep["config"].surveys:
                    image, ivar = result[name]["image"], result[name]["ivar"]
                    writer.append(name, task["rows"], image, ivar)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


# --------------------------------------------------------------------------------------------
# Figure
# --------------------------------------------------------------------------------------------


def make_figure(
    path: str | Path,
    n_show: int = 5,
    surveys: Sequence[str] = ("hsc", "legacy", "lsst"),
    seed: int = 1,
    morphology: str | None = None,
    neighbours: bool | None = None,
) -> Path:
    """The same galaxies in every survey, noise-free and noisy (gri composites, arcsinh);
    with ``neighbours``, the last rows are stamps holding sky neighbours. ``None``: the
    population's defaults (:class:`PopulationConfig`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    population = population_config(morphology, neighbours)
    morphology, neighbours = population.morphology, population.neighbours
    cfg = GalaxySimConfig(
        n_sources=400, surveys=tuple(surveys), chunk=n_show, population=population
    )
    prep = prepare(cfg, seed)
    pop = prep["population"]
    # a few bright galaxies spanning Sersic index (or bulge fraction), plus one close pair
    shape_key = "bulge_fraction" if morphology == "bulge_disk" else "sersic_n"
    gal = np.flatnonzero((pop["is_star"] == 0) & (pop["mag"][:, 2] < 20.5))
    order = gal[np.argsort(pop[shape_key][gal])]
    pick = list(order[np.linspace(0, order.size - 1, n_show).astype(int)])
    pairs = np.flatnonzero(pop["has_companion"] == 1)
    if pairs.size:
        pick[-1] = int(pairs[0])
    if neighbours:  # the two brightest neighbours inside a stamp of a bright galaxy
        crowded = gal[np.argsort(-pop["neighbour_flux_i"][gal], kind="stable")]
        crowded = [int(c) for c in crowded if c not in pick][:2]
        pick[-1 - len(crowded) : -1] = crowded
    obs = render_observations(prep, np.array(pick))
    cols = [(s, k) for s in surveys for k in ("clean", "flux")]
    fig, axes = plt.subplots(len(pick), len(cols), figsize=(1.6 * len(cols), 1.7 * len(pick)))
    for r, src in enumerate(pick):
        scale = max(float(np.percentile(obs[surveys[0]]["clean"][r], 99.5)), 1e-3)
        for c, (s, key) in enumerate(cols):
            img = obs[s][key][r]  # (4, H, W): g r i z
            rgb = np.stack([img[2], img[1], img[0]], axis=-1)  # i, r, g
            rgb = np.clip(np.arcsinh(rgb / (0.1 * scale)) / np.arcsinh(10.0), 0, 1)
            ax = axes[r, c]
            ax.imshow(rgb, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{s}\n{'noise-free' if key == 'clean' else 'observed'}", fontsize=8)
            if c == 0:
                ax.set_ylabel(
                    f"{'B/T' if shape_key == 'bulge_fraction' else 'n'}="
                    f'{pop[shape_key][src]:.2f} r={pop["r_half"][src]:.1f}"\n'
                    f"i={pop['mag'][src, 2]:.1f} z={pop['redshift'][src]:.2f}",
                    fontsize=7,
                )
    fig.tight_layout()
    return save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m whatsreal.simulate.galaxies``: write a store, or the docs figure."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="store folder to create")
    ap.add_argument("--n", type=int, default=20_000, help="number of sources")
    ap.add_argument("--surveys", default="hsc,legacy,lsst", help="comma-separated presets")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ap.add_argument("--mmu-out", help="also write the Multimodal-Universe-like layout here")
    ap.add_argument("--overwrite", action="store_true")
    add_population_arguments(ap)
    ap.add_argument("--figure", help="write the docs figure (PNG) to this path and exit")
    args = ap.parse_args(argv)
    if args.figure:
        surveys = tuple(args.surveys.split(","))
        fig = make_figure(
            args.figure, surveys=surveys, morphology=args.morphology, neighbours=args.neighbours
        )
        print(fig)
        return 0
    config = GalaxySimConfig(population=population_config(args.morphology, args.neighbours))
    if not args.out:
        ap.error("give --out STORE (or --figure PNG)")
    path = simulate_galaxies(
        args.out,
        args.n,
        args.surveys,
        args.seed,
        args.workers,
        progress=True,
        overwrite=args.overwrite,
        mmu_out=args.mmu_out,
        config=config,
    )
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
