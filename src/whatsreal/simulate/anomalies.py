"""Injected anomalies: rare physical sources and instrument artefacts, with labels saying which.

What an anomaly search should tell apart (issue 13, item 4):

- **Physical** anomalies are rare *sources*, drawn through the simulators' own observation
  paths so only the source differs from a normal observation:

  - galaxies: *ring* galaxies (a thin ring of radius 1"-2", composed in GalSim of 32
    Gaussian knots of sigma 0.2"-0.35" on a circle, around a de Vaucouleurs bulge holding
    20-40% of the light, inclined by a random shear |g| < 0.5) and *mergers* (two
    overlapping exponential discs 0.5"-1.5" apart plus a faint, strongly sheared tidal tail
    on one side). They keep the host
    catalogue source's magnitudes and colours and are rendered by
    :func:`whatsreal.simulate.galaxies.observe_source` with the host observation's PSF,
    sub-pixel offset, depth, gain, extinction and noise draw;
  - light curves: a transient *dip* (a trapezoidal occultation) or a *flare* (fast rise,
    exponential decay) added to the star's true signal F_true *before* the instrument
    response, so the curve then goes through that observation's S_m(t), O_m(t), clip and
    noise exactly as in the simulator (eq. 1 of seed 001).

- **Instrument** artefacts are applied to normal observations, after the fact:

  - images (store units, on the common grid): a *satellite trail* (a straight line of
    Gaussian cross-section, 5-30 sky sigma at its peak, across one band or all bands), a
    *bad column* (one column of one band stuck high at 10-50 sky sigma, or dead at 0) and a
    *saturated star* (a bright Moffat star of the observation's PSF away from the centre,
    clipped at a saturation level of ``saturation_sigma`` sky sigma, whose excess charge
    bleeds up and down its columns);
  - light curves: a *jump* (a step of +-0.2-0.5 from a random time to the end) and a
    *dropout* (8-25 consecutive samples replaced by ``fill``).

  Artefacts change ``flux`` only: the inverse variance is left as it was (the pipeline did
  not flag them, which is why they reach a catalogue), and an artefact confined to one band
  leaves the others bit-identical.

Every function is seeded: object ``i`` of a call draws from ``default_rng([seed, tag, i])``,
so an injection does not depend on how many others are made with it. Results carry ``kind``
(one name per object) and ``params`` (what was drawn); :data:`LABELS` names the classes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from whatsreal.errors import ConfigError

__all__ = [
    "GALAXY_ARTEFACTS",
    "GALAXY_PHYSICAL",
    "LABELS",
    "LIGHTCURVE_ARTEFACTS",
    "LIGHTCURVE_PHYSICAL",
    "bad_column",
    "galaxy_prep_from_store",
    "galaxy_source",
    "inject_galaxy_artefacts",
    "inject_lightcurve_artefacts",
    "inject_lightcurve_physical",
    "lightcurve_event",
    "lightcurve_parts",
    "physical_galaxy_params",
    "render_physical_galaxies",
    "satellite_trail",
    "saturated_star",
]

LABELS = ("normal", "physical", "instrument")
GALAXY_PHYSICAL = ("ring", "merger")
GALAXY_ARTEFACTS = ("trail", "bad_column", "saturated_star")
LIGHTCURVE_PHYSICAL = ("dip", "flare")
LIGHTCURVE_ARTEFACTS = ("jump", "dropout")

# Stream tags, so the draws of different injection kinds never share a stream.
_TAG_GAL_PHYS, _TAG_GAL_ART, _TAG_LC_PHYS, _TAG_LC_ART = 11, 12, 13, 14


def _rng(seed: int, tag: int, i: int) -> np.random.Generator:
    """The independent stream of object ``i`` of one injection kind."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), tag, int(i)]))


def _check_kinds(kinds: Sequence[str], known: Sequence[str], what: str) -> list[str]:
    """The kinds as a list, with an error naming any unknown one and the known ones."""
    kinds = list(kinds)
    bad = sorted({k for k in kinds if k not in known})
    if bad:
        raise ConfigError(f"unknown {what} kind(s) {bad}; known: {list(known)}")
    return kinds


# --------------------------------------------------------------------------- galaxies: physical
def galaxy_prep_from_store(store: Any) -> dict[str, Any]:
    """The simulator state (catalogue, conditions, seed) that wrote a galaxy store, rebuilt from
    the config the store saved, so new sources can be drawn under its exact conditions.

    Raises if the store was not written by the galaxy simulator, or if the survey presets in
    this checkout differ from those the store recorded (the conditions would not match)."""
    import dataclasses

    from whatsreal.simulate.galaxies import GalaxySimConfig, _plain, prepare
    from whatsreal.simulate.galaxy_population import PopulationConfig

    saved = dict(getattr(store, "config", None) or {})
    if saved.get("simulator") != "galaxies" or "galaxies" not in saved:
        raise ConfigError(
            f"{getattr(store, 'path', store)} was not written by the galaxy simulator (its "
            "config has no 'galaxies' section); physical anomalies need the simulator's "
            "conditions, so use a store from `whatsreal simulate galaxies`"
        )
    g = dict(saved["galaxies"])
    presets = g.pop("presets", None)
    pop = dict(g.pop("population"))
    pop["mag_limits"] = tuple((k, float(v)) for k, v in dict(pop["mag_limits"]).items())
    extra = sorted(set(pop) - {f.name for f in dataclasses.fields(PopulationConfig)})
    extra += sorted(set(g) - {f.name for f in dataclasses.fields(GalaxySimConfig)})
    if extra:
        raise ConfigError(
            f"{getattr(store, 'path', 'the store')} records simulator keys this checkout does "
            f"not know ({extra}); it was written by another version. Re-simulate it"
        )
    cfg = GalaxySimConfig(
        **{k: v for k, v in g.items() if k not in ("surveys", "population")},
        surveys=tuple(g["surveys"]),
        population=PopulationConfig(**pop),
    )

    def strip(d: dict) -> dict:
        return {s: {k: v for k, v in p.items() if k != "sources"} for s, p in _plain(d).items()}

    now = strip(cfg.to_dict()["presets"])
    if presets is not None and strip(presets) != now:
        old = strip(presets)
        changed = sorted(
            f"{s}.{k}" for s in now for k in now[s] if old.get(s, {}).get(k) != now[s][k]
        )
        raise ConfigError(
            f"the survey presets differ from those {getattr(store, 'path', 'the store')} was "
            f"simulated with ({changed}); the store's conditions cannot be rebuilt. "
            "Re-simulate the store with this checkout"
        )
    return prepare(cfg, int(saved["seed"]))


def physical_galaxy_params(kind: str, rng: np.random.Generator) -> dict[str, float]:
    """Draw the geometry of one ring or merger (arcsec, reduced shears, flux fractions)."""
    _check_kinds([kind], GALAXY_PHYSICAL, "physical galaxy")
    angle = float(rng.uniform(0, np.pi))
    e = float(rng.uniform(0.0, 0.5))
    if kind == "ring":
        return {
            "ring_radius": float(rng.uniform(1.0, 2.0)),
            "ring_width": float(rng.uniform(0.2, 0.35)),  # sigma of each knot
            "n_knots": 32,
            "bulge_fraction": float(rng.uniform(0.2, 0.4)),
            "bulge_r_half": float(rng.uniform(0.2, 0.4)),
            "e1": e * math.cos(2 * angle),
            "e2": e * math.sin(2 * angle),
        }
    sep_angle = float(rng.uniform(0, 2 * np.pi))
    return {
        "separation": float(rng.uniform(0.5, 1.5)),
        "sep_angle": sep_angle,
        "flux_ratio": float(rng.uniform(0.3, 1.0)),  # secondary / primary
        "r_half_1": float(rng.uniform(0.4, 1.0)),
        "r_half_2": float(rng.uniform(0.3, 0.8)),
        "tail_fraction": float(rng.uniform(0.15, 0.3)),
        "tail_r_half": float(rng.uniform(1.0, 2.0)),
        "tail_shear": 0.6,
        "tail_side": float(rng.choice([-1.0, 1.0])),
        "e1": e * math.cos(2 * angle),
        "e2": e * math.sin(2 * angle),
    }


def _ring_profile(p: dict[str, float]):
    """Unit-flux ring (a circle of ``n_knots`` Gaussian knots, smooth once seen through the PSF)
    around a de Vaucouleurs bulge, the whole inclined by the shear (e1, e2)."""
    import galsim

    n = int(p["n_knots"])
    fb = p["bulge_fraction"]
    knot = galsim.Gaussian(sigma=p["ring_width"], flux=(1.0 - fb) / n)
    phi = 2 * np.pi * np.arange(n) / n
    radius = p["ring_radius"]
    ring = [knot.shift(radius * math.cos(a), radius * math.sin(a)) for a in phi]
    bulge = galsim.DeVaucouleurs(half_light_radius=p["bulge_r_half"], flux=fb)
    return galsim.Add([*ring, bulge]).shear(g1=p["e1"], g2=p["e2"])


def _merger_profile(p: dict[str, float]):
    """Unit-flux merger: two overlapping exponential discs and a sheared tidal tail."""
    import galsim

    ft, ratio = p["tail_fraction"], p["flux_ratio"]
    f1 = (1.0 - ft) / (1.0 + ratio)
    f2 = f1 * ratio
    ux, uy = math.cos(p["sep_angle"]), math.sin(p["sep_angle"])
    d1, d2 = p["separation"] * ratio / (1 + ratio), p["separation"] / (1 + ratio)
    one = galsim.Exponential(half_light_radius=p["r_half_1"], flux=f1).shear(g1=p["e1"], g2=p["e2"])
    two = galsim.Exponential(half_light_radius=p["r_half_2"], flux=f2)
    # the tail: stretched along the direction perpendicular to the pair's axis, off one side
    perp = p["sep_angle"] + np.pi / 2
    tail = (
        galsim.Exponential(half_light_radius=p["tail_r_half"], flux=ft)
        .shear(g=p["tail_shear"], beta=perp * galsim.radians)
        .shift(
            p["tail_side"] * p["tail_r_half"] * math.cos(perp) + d2 * ux,
            p["tail_side"] * p["tail_r_half"] * math.sin(perp) + d2 * uy,
        )
    )
    return galsim.Add([one.shift(-d1 * ux, -d1 * uy), two.shift(d2 * ux, d2 * uy), tail])


def galaxy_source(kind: str, params: dict[str, float]) -> Callable[[np.ndarray], list]:
    """The ``source`` hook of :func:`~whatsreal.simulate.galaxies.observe_source` for one ring
    or merger: band fluxes -> [(unit-flux profile, flux per band)]."""
    _check_kinds([kind], GALAXY_PHYSICAL, "physical galaxy")
    profile = _ring_profile(params) if kind == "ring" else _merger_profile(params)
    return lambda band_flux: [(profile, np.asarray(band_flux, float))]


def render_physical_galaxies(
    prep: dict[str, Any],
    sources: Sequence[int],
    kinds: Sequence[str],
    seed: int = 0,
    surveys: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Rings and mergers in place of the catalogue sources ``sources``, seen by every survey
    under each host observation's own conditions and noise draw (only the source differs).

    ``kinds[j]`` is the kind drawn for ``sources[j]`` (its magnitudes and colours are kept).
    Returns ``{"kind": (n,), "params": [...], "source_id": (n,), survey: {"flux", "ivar",
    "clean"}}`` with (n, B, G, G) float32 arrays per survey."""
    from whatsreal.simulate.galaxies import observe_source

    kinds = _check_kinds(kinds, GALAXY_PHYSICAL, "physical galaxy")
    sources = np.asarray(sources, dtype=np.int64)
    if sources.size != len(kinds):
        raise ValueError(f"{sources.size} sources but {len(kinds)} kinds; give one kind each")
    is_star = prep["population"]["is_star"][sources].astype(bool)
    if is_star.any():
        raise ValueError(
            f"sources {sources[is_star][:5].tolist()} are stars; choose galaxy hosts (their "
            "magnitudes and colours are reused)"
        )
    surveys = list(prep["config"].surveys if surveys is None else surveys)
    params = [
        physical_galaxy_params(k, _rng(seed, _TAG_GAL_PHYS, s))
        for k, s in zip(kinds, sources, strict=True)
    ]
    out: dict[str, Any] = {
        "kind": np.asarray(kinds),
        "params": params,
        "source_id": prep["population"]["source_id"][sources].copy(),
    }
    for survey in surveys:
        obs = [
            observe_source(prep, survey, int(s), galaxy_source(k, p))
            for s, k, p in zip(sources, kinds, params, strict=True)
        ]
        out[survey] = {key: np.stack([o[key] for o in obs]) for key in ("flux", "ivar", "clean")}
    return out


# --------------------------------------------------------------------------- galaxies: artefacts
def _sky_sigma(flux: np.ndarray, ivar: np.ndarray | None) -> np.ndarray:
    """Per-band sky noise (B,) of one (B, H, W) observation: median 1/sqrt(ivar), or the MAD."""
    if ivar is not None:
        return np.median(1.0 / np.sqrt(np.maximum(ivar, 1e-30)), axis=(1, 2))
    med = np.median(flux, axis=(1, 2), keepdims=True)
    return 1.4826 * np.median(np.abs(flux - med), axis=(1, 2))


def satellite_trail(
    flux: np.ndarray, ivar: np.ndarray | None, rng: np.random.Generator, all_bands: float = 0.5
) -> tuple[np.ndarray, dict[str, Any]]:
    """A straight trail across one (B, H, W) observation: Gaussian cross-section of 0.8-1.5
    pixels, 5-30 sky sigma at its peak, in all bands with probability ``all_bands``, else
    in one band. Returns the new flux and what was drawn."""
    b, h, w = flux.shape
    angle = rng.uniform(0, np.pi)
    dist = rng.uniform(-0.3, 0.3) * min(h, w)  # from the centre
    width = rng.uniform(0.8, 1.5)
    level = rng.uniform(5.0, 30.0)
    bands = list(range(b)) if rng.uniform() < all_bands else [int(rng.integers(b))]
    yy, xx = np.mgrid[0:h, 0:w]
    d = (xx - (w - 1) / 2) * math.sin(angle) - (yy - (h - 1) / 2) * math.cos(angle) - dist
    line = np.exp(-0.5 * (d / width) ** 2)
    sigma = _sky_sigma(flux, ivar)
    out = flux.copy()
    for band in bands:
        out[band] += (level * sigma[band] * line).astype(flux.dtype)
    params = {"angle": angle, "distance_px": dist, "width_px": width, "level_sigma": level}
    return out, {**params, "bands": bands}


def bad_column(
    flux: np.ndarray, ivar: np.ndarray | None, rng: np.random.Generator, dead: float = 0.3
) -> tuple[np.ndarray, dict[str, Any]]:
    """One column of one band stuck high (10-50 sky sigma) or, with probability ``dead``,
    dead at zero. Returns the new flux and what was drawn."""
    b, _, w = flux.shape
    band = int(rng.integers(b))
    col = int(rng.integers(2, w - 2))
    is_dead = bool(rng.uniform() < dead)
    level = 0.0 if is_dead else float(rng.uniform(10.0, 50.0) * _sky_sigma(flux, ivar)[band])
    out = flux.copy()
    out[band, :, col] = level
    return out, {"bands": [band], "column": col, "dead": is_dead, "value": level}


def _bleed(image: np.ndarray, sat: float) -> np.ndarray:
    """Clip a (H, W) image at ``sat`` and move each column's excess charge into the pixels
    above and below its saturated run (alternately), as a CCD's blooming does."""
    out = np.minimum(image, sat)
    excess = np.maximum(image - sat, 0.0).sum(axis=0)
    h = image.shape[0]
    for x in np.flatnonzero(excess > 0):
        left = float(excess[x])
        run = np.flatnonzero(image[:, x] >= sat)
        lo, hi = int(run.min()) - 1, int(run.max()) + 1
        up = True
        while left > 0 and (lo >= 0 or hi < h):
            y = hi if (up and hi < h) or lo < 0 else lo
            room = max(sat - out[y, x], 0.0)
            take = min(room, left)
            out[y, x] += take
            left -= take
            if y == hi:
                hi += 1
            else:
                lo -= 1
            up = not up
    return out


def saturated_star(
    flux: np.ndarray,
    ivar: np.ndarray | None,
    rng: np.random.Generator,
    psf_fwhm_px: Sequence[float] | None = None,
    beta: float = 3.5,
    saturation_sigma: float = 300.0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """A bright star 8-20 pixels from the centre with the observation's Moffat PSF (FWHM per
    band in grid pixels; 3 px if unknown), peaking at 3-30x the saturation level
    ``saturation_sigma`` x sky sigma, clipped there with vertical bleed trails, in all bands."""
    import galsim

    b, h, w = flux.shape
    fwhm = np.full(b, 3.0) if psf_fwhm_px is None else np.asarray(psf_fwhm_px, float)
    if fwhm.shape != (b,):
        raise ValueError(f"psf_fwhm_px needs one FWHM per band ({b}); got {fwhm.shape}")
    r = rng.uniform(8.0, 20.0)
    phi = rng.uniform(0, 2 * np.pi)
    dx, dy = r * math.cos(phi), r * math.sin(phi)
    peak_over_sat = rng.uniform(3.0, 30.0)
    colour = rng.uniform(0.7, 1.3, b)
    sigma = _sky_sigma(flux, ivar)
    out = flux.copy()
    for band in range(b):
        psf = galsim.Moffat(beta=beta, fwhm=float(fwhm[band]))
        star = psf.drawImage(nx=w, ny=h, scale=1.0, offset=(dx, dy), method="auto").array
        sat = saturation_sigma * float(sigma[band])
        star *= peak_over_sat * colour[band] * sat / star.max()
        out[band] = _bleed(flux[band].astype(np.float64) + star, sat).astype(flux.dtype)
    params = {"dx_px": dx, "dy_px": dy, "peak_over_saturation": peak_over_sat}
    return out, {**params, "colour": colour.tolist(), "bands": list(range(b))}


def inject_galaxy_artefacts(
    flux: np.ndarray,
    ivar: np.ndarray | None,
    kinds: Sequence[str],
    seed: int = 0,
    psf_fwhm_px: np.ndarray | None = None,
    beta: float | Sequence[float] = 3.5,
    saturation_sigma: float = 300.0,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Apply artefact ``kinds[i]`` to observation ``i`` of ``flux`` (N, B, H, W) (``ivar`` the
    same shape or None; for saturated stars ``psf_fwhm_px`` (N, B) and the Moffat ``beta``,
    one or one per observation). Returns new fluxes (the inputs are not changed) and each
    draw's parameters."""
    kinds = _check_kinds(kinds, GALAXY_ARTEFACTS, "galaxy artefact")
    flux = np.asarray(flux)
    if flux.ndim != 4 or len(kinds) != flux.shape[0]:
        raise ValueError(
            f"flux must be (N, B, H, W) with one kind per observation; got {flux.shape} and "
            f"{len(kinds)} kinds"
        )
    betas = np.broadcast_to(np.asarray(beta, dtype=np.float64), (flux.shape[0],))
    out = np.empty_like(flux)
    params = []
    for i, kind in enumerate(kinds):
        rng = _rng(seed, _TAG_GAL_ART, i)
        iv = None if ivar is None else ivar[i]
        if kind == "trail":
            out[i], p = satellite_trail(flux[i], iv, rng)
        elif kind == "bad_column":
            out[i], p = bad_column(flux[i], iv, rng)
        else:
            fw = None if psf_fwhm_px is None else psf_fwhm_px[i]
            out[i], p = saturated_star(flux[i], iv, rng, fw, float(betas[i]), saturation_sigma)
        params.append({"kind": kind, **p})
    return out, params


# --------------------------------------------------------------------------- light curves
def lightcurve_parts(store: Any, rows: Sequence[int]) -> dict[str, np.ndarray]:
    """The pieces of eq. 1 of seed 001 for store rows of a simulated light-curve store: the
    true signal F_true, the instrument's S_m(t) and O_m(t), the noise (flux - clean), each
    (N, T), and the clip level; recomputed from the store's truth."""
    from whatsreal.simulate.lightcurves import star_signal

    saved = dict(getattr(store, "config", None) or {})
    if saved.get("simulator") != "lightcurves":
        raise ConfigError(
            f"{getattr(store, 'path', store)} was not written by the light-curve simulator; "
            "physical light-curve anomalies need its truth (theta, phases, S_m, O_m)"
        )
    cfg = saved["lightcurves"]
    rows = np.asarray(rows, dtype=np.int64)
    data = store.read(rows, ("flux", "clean"))
    src = store.truth_source
    pos = np.searchsorted(src["source_id"], store.source_id[rows])
    inst = store.instrument[rows]
    t = int(cfg["length"])
    signal = star_signal(
        src["theta"][pos], store.truth_obs["phases"][rows], cfg["alpha"], cfg["lam"], t
    )
    return {
        "signal": signal,
        "scale": np.asarray(store.truth_instrument["scale"])[inst],
        "offset": np.asarray(store.truth_instrument["offset"])[inst],
        "noise": (data["flux"][:, 0] - data["clean"][:, 0]).astype(np.float64),
        "clip": np.float64(cfg["clip"]),
    }


def lightcurve_event(
    kind: str, length: int, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, float]]:
    """One physical event (T,) to add to F_true: a trapezoidal *dip* of depth 0.3-0.6 lasting
    4-12 samples, or a *flare* of peak 0.4-1.0 rising in 1-2 samples and decaying with an
    e-folding time of 2-6 samples; placed so that it is seen whole."""
    _check_kinds([kind], LIGHTCURVE_PHYSICAL, "physical light-curve")
    t = np.arange(length, dtype=np.float64)
    if kind == "dip":
        depth, dur, ramp = rng.uniform(0.3, 0.6), rng.uniform(4.0, 12.0), rng.uniform(1.0, 2.0)
        t0 = rng.uniform(ramp, length - dur - ramp)
        inside = np.clip(np.minimum(t - (t0 - ramp), (t0 + dur + ramp) - t) / ramp, 0.0, 1.0)
        return -depth * inside, {"depth": depth, "duration": dur, "ramp": ramp, "t0": t0}
    peak, rise, decay = rng.uniform(0.4, 1.0), rng.uniform(1.0, 2.0), rng.uniform(2.0, 6.0)
    t0 = rng.uniform(rise, length - 4 * decay)
    shape = np.where(t < t0, np.clip(1.0 - (t0 - t) / rise, 0.0, 1.0), np.exp(-(t - t0) / decay))
    return peak * shape, {"peak": peak, "rise": rise, "decay": decay, "t0": t0}


def inject_lightcurve_physical(
    parts: dict[str, np.ndarray], kinds: Sequence[str], seed: int = 0
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Observed curves (N, 1, T) float32 with event ``kinds[i]`` in curve ``i``'s source signal,
    then that observation's instrument, clip and noise (:func:`lightcurve_parts`)."""
    kinds = _check_kinds(kinds, LIGHTCURVE_PHYSICAL, "physical light-curve")
    signal = np.asarray(parts["signal"], dtype=np.float64)
    if signal.ndim != 2 or len(kinds) != signal.shape[0]:
        raise ValueError(f"need one kind per curve: {signal.shape[0]} curves, {len(kinds)} kinds")
    events, params = [], []
    for i, kind in enumerate(kinds):
        ev, p = lightcurve_event(kind, signal.shape[1], _rng(seed, _TAG_LC_PHYS, i))
        events.append(ev)
        params.append({"kind": kind, **p})
    clip = float(parts["clip"])
    clean = np.clip(parts["scale"] * (signal + np.stack(events)) + parts["offset"], -clip, clip)
    return (clean + parts["noise"]).astype(np.float32)[:, None, :], params


def inject_lightcurve_artefacts(
    flux: np.ndarray, kinds: Sequence[str], seed: int = 0, fill: float = 0.0
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Curves (N, 1, T) with artefact ``kinds[i]`` in curve ``i``: a *jump* (a step of
    +-0.2-0.5 from a time in the middle 80% to the end) or a *dropout* (8-25 consecutive
    samples set to ``fill``). The input is not changed."""
    kinds = _check_kinds(kinds, LIGHTCURVE_ARTEFACTS, "light-curve artefact")
    flux = np.asarray(flux)
    if flux.ndim != 3 or len(kinds) != flux.shape[0]:
        raise ValueError(
            f"flux must be (N, C, T) with one kind per curve; got {flux.shape}, {len(kinds)} kinds"
        )
    out = flux.copy()
    n_t = flux.shape[-1]
    params = []
    for i, kind in enumerate(kinds):
        rng = _rng(seed, _TAG_LC_ART, i)
        if kind == "jump":
            t0 = int(rng.integers(int(0.1 * n_t), int(0.9 * n_t)))
            step = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.5))
            out[i, :, t0:] += np.float32(step)
            params.append({"kind": kind, "t0": t0, "step": step})
        else:
            length = int(rng.integers(8, 26))
            t0 = int(rng.integers(0, n_t - length + 1))
            out[i, :, t0 : t0 + length] = np.float32(fill)
            params.append({"kind": kind, "t0": t0, "length": length, "fill": float(fill)})
    return out, params
