"""Galaxy (and star) population for the multi-survey simulator: one catalogue, all surveys.

Choices (each a field of :class:`PopulationConfig`; numbers are approximate literature values
or documented choices, never tuned to a benchmark):

- Magnitudes: i-band number counts dN/dm ~ 10^(0.4 m) between 16 and the faint limit (the
  slope of i-band galaxy counts at 18 < i < 23 is about 0.35-0.45 in deep-field counts, e.g.
  HSC-SSP and SDSS), then cut like the Multimodal Universe cross-match: i < 22.5 (HSC sample)
  and z < 21.0 (Legacy sample), on intrinsic (dereddened) magnitudes.
- Redshift-like parameter: p(z | i) ~ z^2 exp(-z / z0), z0 = 0.0417 i - 0.744 (LSST Science
  Book 2009, eq. 3.8), with z0 floored at 0.03 for bright galaxies; clipped to [0.005, 2.5].
- SED type t in [0, 3] interpolates the four CWW templates shipped with GalSim (E, Sbc, Scd,
  Im) in flux at fixed i-band flux; 30% early types (t < 0.7). Colours are integrated by GalSim
  through the LSST g, r, i, z throughputs at the galaxy's redshift.
- Sersic index: log-normal around 4 for early types falling to 1 for t >= 1.5 (scatter 0.3 in
  ln n), clipped to [0.5, 6] (GalSim supports 0.3-6.2).
- Half-light radius: log10 r = log10(0.9") - 0.15 (i - 20) - 0.1 [early], scatter 0.2 dex,
  clipped to [0.1", 4"] (a size-magnitude relation of the kind measured in COSMOS/HST).
- Ellipticity |e| = (1 - q) / (1 + q) (GalSim's reduced shear g), Gaussian components with
  sigma 0.25 (0.15 for early types) truncated at 0.7; position angle uniform.
- Stars (``star_fraction``): point sources with black-body colours (3,500-10,000 K); their
  n, r_half, e are stored as 0 and ``is_star`` = 1.
- Close pairs (``pair_fraction``): a companion galaxy 1.5"-4" away, 0.5-2.5 mag fainter, at
  the same redshift; drawn into the same stamps, recorded in the truth.
- Morphology (``morphology``): ``bulge_disk`` (the default) draws three components with
  their own colours, the same redshift and the catalogue's i-band flux in total:
  - a bulge: Sersic n ~ log-normal around 3.5 (scatter 0.25 in ln n, clipped to [1.5, 6]),
    half-light radius 0.15-0.5 of the disk's, half the disk's ellipticity, the CWW E SED;
  - an exponential disk with the catalogue's r_half and (e1, e2), the galaxy's own SED;
  - star-forming knots (``galsim.RandomKnots``, 5-50 points with the disk's half-light
    radius and shear) holding 0-30% of the disk's light in late types (t >= 1.5), 0-10% in
    0.7 <= t < 1.5 and none in early types, with the CWW Im SED.
  The bulge-to-total ratio in i follows the SED type: mean 0.8 at t = 0 (E), 0.5 at 0.7,
  0.2 at 1.5 (Sbc), 0.05 at 2.5 and 0 at 3 (Im), scatter 0.1, clipped to [0, 0.95]
  (rough averages of bulge-disk decompositions by Hubble type, e.g. Graham & Worley 2008).
  The magnitude limits apply to the composite colours. The truth holds each component
  (``bulge_fraction``, ``bulge_n``, ``bulge_r_half``, ``knot_fraction``, ``n_knots``);
  ``r_half`` and (e1, e2) are the disk's and ``sersic_n`` is not written. The component
  draws use their own random stream, so the ``sersic`` catalogue of a seed is unchanged.
  ``sersic`` draws one Sersic profile per galaxy, as above (the benchmarks' historical
  yardstick: their stores name it).
- Neighbours on the sky (``neighbours``, on by default): every stamp also holds the light of
  whatever lies near its source on the same sky, so all surveys see the same neighbours
  through their own PSF and noise. Two kinds:
  - the catalogue's own sources that fall near each other (drawn as their Sersic profile;
    a bulge + disk galaxy's knots are left out when it is someone else's neighbour);
  - a field population below or outside the catalogue's cuts: galaxies to i = 25
    (``field_density``, 35 per arcmin^2, of the order of deep i-band counts, e.g. HSC-SSP
    Aihara et al. 2018; dN/dm ~ 10^(0.3 m), the flatter faint-end slope), with the
    catalogue's redshift, SED and size relations, minus those the catalogue's magnitude
    cuts would have kept (the catalogue holds them); and stars (``field_star_density``,
    1 per arcmin^2 to i = 25, dN/dm ~ 10^(0.15 m), roughly the high-latitude star counts).
  Each source keeps up to ``max_neighbours`` (the brightest in i) whose centres lie within
  the stamp's half-width (4.1") plus ``neighbour_margin`` of it; the truth holds each
  neighbour (offset, magnitudes, shape, star flag), their number inside the stamp and
  their summed i flux there. Drawn from their own random stream, so the catalogue of a
  seed is unchanged.
- Sky positions: uniform on a square patch (tangent plane) of side ``patch_deg`` or, by
  default, of the area that gives ``density`` sources per arcmin^2 (0.7, about 2,500/deg^2,
  close to the surface density of z < 21 galaxies).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from whatsreal.errors import ConfigError

__all__ = [
    "PopulationConfig",
    "add_population_arguments",
    "band_colours",
    "draw_population",
    "patch_side_deg",
    "population_config",
]

TEMPLATES = ("CWW_E_ext.sed", "CWW_Sbc_ext.sed", "CWW_Scd_ext.sed", "CWW_Im_ext.sed")
MORPHOLOGIES = ("sersic", "bulge_disk")
# bulge-to-total in i against SED type (module docstring)
_BT_T = np.array([0.0, 0.7, 1.5, 2.5, 3.0])
_BT_MEAN = np.array([0.8, 0.5, 0.2, 0.05, 0.0])
Z_GRID = np.round(np.arange(0.0, 2.5001, 0.01), 4)
T_GRID = np.linspace(3500.0, 10000.0, 27)


@dataclass(frozen=True)
class PopulationConfig:
    """Knobs of the galaxy population; see the module docstring for the sources of defaults."""

    mag_bright: float = 16.0
    count_slope: float = 0.4
    mag_limits: tuple[tuple[str, float], ...] = (("i", 22.5), ("z", 21.0))
    early_fraction: float = 0.3
    n_min: float = 0.5
    n_max: float = 6.0
    n_scatter: float = 0.3
    size_pivot: float = 0.9
    size_slope: float = -0.15
    size_scatter: float = 0.2
    size_min: float = 0.1
    size_max: float = 4.0
    e_sigma_late: float = 0.25
    e_sigma_early: float = 0.15
    e_max: float = 0.7
    star_fraction: float = 0.02
    pair_fraction: float = 0.03
    density: float = 0.7
    patch_deg: float | None = None
    ra_center: float = 150.0
    dec_center: float = 2.0
    morphology: str = "bulge_disk"  # the default since the sky-store separation run (issue 11)
    neighbours: bool = True
    field_density: float = 35.0
    field_star_density: float = 1.0
    field_mag_faint: float = 25.0
    neighbour_margin: float = 2.0
    max_neighbours: int = 8

    def __post_init__(self) -> None:
        """Reject out-of-range values with a message naming the field."""
        if self.morphology not in MORPHOLOGIES:
            raise ConfigError(
                f"PopulationConfig.morphology must be one of {MORPHOLOGIES}; "
                f"got {self.morphology!r}"
            )
        if not 0.3 <= self.n_min < self.n_max <= 6.2:
            raise ConfigError("PopulationConfig: need 0.3 <= n_min < n_max <= 6.2 (GalSim)")
        for key in ("star_fraction", "pair_fraction", "early_fraction"):
            if not 0 <= getattr(self, key) < 1:
                raise ConfigError(f"PopulationConfig.{key} must be in [0, 1)")
        if self.density <= 0:
            raise ConfigError("PopulationConfig.density must be > 0 (sources per arcmin^2)")
        if self.field_density < 0 or self.field_star_density < 0:
            raise ConfigError(
                "PopulationConfig.field_density and field_star_density must be >= 0 (per arcmin^2)"
            )
        if self.neighbour_margin < 0 or self.max_neighbours < 1:
            raise ConfigError(
                "PopulationConfig: need neighbour_margin >= 0 (arcsec) and max_neighbours >= 1"
            )
        if self.field_mag_faint <= self.mag_bright:
            raise ConfigError("PopulationConfig.field_mag_faint must be fainter than mag_bright")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, for the store config."""
        return dataclasses.asdict(self)


def patch_side_deg(n_sources: int, density: float) -> float:
    """Side (deg) of the square patch that holds ``n_sources`` at ``density`` per arcmin^2."""
    return float(np.sqrt(n_sources / density) / 60.0)


@functools.lru_cache(maxsize=1)
def _colour_tables() -> tuple[np.ndarray, np.ndarray]:
    """AB magnitudes m_b - m_i of the CWW templates (4, z, 4) and black bodies (T, 4).

    Computed once per process with GalSim's SED and Bandpass integrals (about 0.1 s).
    """
    import galsim

    bands = {
        b: galsim.Bandpass(f"LSST_{b}.dat", wave_type="nm").withZeropoint("AB") for b in "griz"
    }
    gal = np.zeros((len(TEMPLATES), Z_GRID.size, 4))
    for t, name in enumerate(TEMPLATES):
        sed = galsim.SED(name, wave_type="Ang", flux_type="flambda")
        for j, z in enumerate(Z_GRID):
            s = sed.atRedshift(float(z))
            m = [s.calculateMagnitude(bands[b]) for b in "griz"]
            gal[t, j] = np.array(m) - m[2]
    star = np.zeros((T_GRID.size, 4))
    h_c_over_k = 1.438777e7  # nm K
    for j, temp in enumerate(T_GRID):
        sed = galsim.SED(
            galsim.LookupTable(
                np.linspace(300, 1200, 901),
                np.linspace(300, 1200, 901) ** -5
                / np.expm1(h_c_over_k / (np.linspace(300, 1200, 901) * temp)),
            ),
            wave_type="nm",
            flux_type="flambda",
        )
        m = [sed.calculateMagnitude(bands[b]) for b in "griz"]
        star[j] = np.array(m) - m[2]
    return gal, star


def band_colours(sed_type: np.ndarray, redshift: np.ndarray) -> np.ndarray:
    """m_b - m_i for g, r, i, z of mixed CWW templates: (N, 4).

    Template j and j+1 are mixed in flux at fixed i-band flux with weight frac(t); redshifts
    are linearly interpolated on a 0.01 grid (colour error < 0.01 mag).
    """
    gal, _ = _colour_tables()
    t = np.clip(np.asarray(sed_type, float), 0, len(TEMPLATES) - 1)
    lo = np.minimum(np.floor(t).astype(int), len(TEMPLATES) - 2)
    w = (t - lo)[:, None]
    zi = np.clip(np.asarray(redshift, float), Z_GRID[0], Z_GRID[-1]) / 0.01
    z0 = np.minimum(np.floor(zi).astype(int), Z_GRID.size - 2)
    wz = (zi - z0)[:, None]

    def flux(tt: np.ndarray) -> np.ndarray:
        m = gal[tt, z0] * (1 - wz) + gal[tt, z0 + 1] * wz
        return 10 ** (-0.4 * m)

    return -2.5 * np.log10((1 - w) * flux(lo) + w * flux(lo + 1))


def _star_colours(temp: np.ndarray) -> np.ndarray:
    """m_b - m_i of black bodies at temperature ``temp`` (K): (N, 4)."""
    _, star = _colour_tables()
    return np.stack([np.interp(temp, T_GRID, star[:, b]) for b in range(4)], axis=1)


def _truncated_power_law(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float):
    """Magnitudes with dN/dm ~ 10^(slope m) on [lo, hi] by inverse CDF."""
    a = slope * np.log(10)
    u = rng.uniform(size=n)
    return np.log(np.exp(a * lo) + u * (np.exp(a * hi) - np.exp(a * lo))) / a


def _galaxy_shapes(rng: np.random.Generator, cfg: PopulationConfig, mag_i, sed_type):
    """Sersic n, half-light radius (arcsec), e1, e2 for galaxies of given i mag and SED type."""
    n_gal = mag_i.size
    early = sed_type < 0.7
    ln_n_mean = np.log(4.0) + (np.log(1.0) - np.log(4.0)) * np.clip(sed_type / 1.5, 0, 1)
    n = np.exp(ln_n_mean + cfg.n_scatter * rng.normal(size=n_gal))
    n = np.clip(n, cfg.n_min, cfg.n_max)
    log_r = (
        np.log10(cfg.size_pivot)
        + cfg.size_slope * (mag_i - 20.0)
        - 0.1 * early
        + cfg.size_scatter * rng.normal(size=n_gal)
    )
    r_half = np.clip(10**log_r, cfg.size_min, cfg.size_max)
    sigma = np.where(early, cfg.e_sigma_early, cfg.e_sigma_late)
    e = np.empty(n_gal)
    todo = np.arange(n_gal)
    while todo.size:  # |e| from a truncated 2-D Gaussian
        e1, e2 = rng.normal(size=(2, todo.size)) * sigma[todo]
        mod = np.hypot(e1, e2)
        ok = mod < cfg.e_max
        e[todo[ok]] = mod[ok]
        todo = todo[~ok]
    angle = rng.uniform(0, np.pi, size=n_gal)
    return n, r_half, e * np.cos(2 * angle), e * np.sin(2 * angle)


def population_config(morphology: str | None = None, neighbours: bool | None = None):
    """A :class:`PopulationConfig` with these choices, the defaults where ``None``."""
    over: dict[str, Any] = {}
    if morphology is not None:
        over["morphology"] = morphology
    if neighbours is not None:
        over["neighbours"] = bool(neighbours)
    return PopulationConfig(**over)


def add_population_arguments(parser) -> None:
    """``--morphology`` and ``--neighbours/--no-neighbours`` on an argparse parser (None when
    not given: :func:`population_config` then keeps the defaults)."""
    import argparse

    base = PopulationConfig()
    parser.add_argument(
        "--morphology",
        choices=MORPHOLOGIES,
        default=None,
        help=f"bulge + disk + star-forming knots (bulge_disk) or one Sersic per galaxy "
        f"(sersic); default {base.morphology}",
    )
    parser.add_argument(
        "--neighbours",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw the sky around each source into its stamps (field galaxies and stars); "
        f"default {'on' if base.neighbours else 'off'}",
    )


def draw_population(n_sources: int, cfg: PopulationConfig, seed: int) -> dict[str, np.ndarray]:
    """Draw ``n_sources`` sources (galaxies, a few stars) with every physical parameter.

    Returns a dict of (N,) arrays (``mag`` is (N, 4) for g, r, i, z, intrinsic AB) with
    ``source_id`` = 0..N-1. Fully determined by ``seed``.
    """
    if n_sources < 1:
        raise ConfigError(f"n_sources must be >= 1, got {n_sources}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
    rng_m = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))  # components
    composite = cfg.morphology == "bulge_disk"
    limits = dict(cfg.mag_limits)
    i_faint = limits.get("i", 22.5)
    # Draw galaxies in batches until enough pass every magnitude limit.
    keys = ("mag_i", "t", "z", "col", *(("bt", "fk", "frac") if composite else ()))
    kept: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    count = 0
    while count < n_sources:
        m = 2 * (n_sources - count) + 64
        mag_i = _truncated_power_law(rng, m, cfg.mag_bright, i_faint, cfg.count_slope)
        early = rng.uniform(size=m) < cfg.early_fraction
        t = np.where(early, rng.uniform(0, 0.7, m), rng.uniform(0.7, 3.0, m))
        z0 = np.maximum(0.0417 * mag_i - 0.744, 0.03)
        z = np.clip(rng.gamma(3.0, z0), 0.005, 2.5)  # z^2 exp(-z/z0) is Gamma(3, z0)
        col = band_colours(t, z)
        extra: tuple[np.ndarray, ...] = ()
        if composite:
            bt, fk, frac, col = _component_light(rng_m, t, z, col)
            extra = (bt, fk, frac)
        mags = mag_i[:, None] + col
        ok = np.ones(m, bool)
        for band, lim in limits.items():
            ok &= mags[:, "griz".index(band)] < lim
        for key, val in zip(kept, (mag_i, t, z, col, *extra), strict=True):
            kept[key].append(val[ok])
        count += int(ok.sum())
    mag_i, sed_type, redshift, col = (np.concatenate(kept[k])[:n_sources] for k in keys[:4])
    n, r_half, e1, e2 = _galaxy_shapes(rng, cfg, mag_i, sed_type)
    mag = mag_i[:, None] + col
    parts: dict[str, np.ndarray] = {}
    if composite:
        bt, fk, frac = (np.concatenate(kept[k])[:n_sources] for k in keys[4:])
        parts = {
            "bulge_fraction": bt,
            "knot_fraction": fk,
            "component_frac": frac,  # (N, 3 components, 4 bands): share of each band's flux
            "bulge_n": np.clip(np.exp(np.log(3.5) + 0.25 * rng_m.normal(size=n_sources)), 1.5, 6),
            "bulge_r_half": r_half * rng_m.uniform(0.15, 0.5, n_sources),
            "n_knots": rng_m.integers(5, 51, n_sources) * (fk > 0),
            "knot_seed": rng_m.integers(1, 2**31 - 1, n_sources),
        }

    # Stars replace a random subset of the catalogue.
    is_star = rng.uniform(size=n_sources) < cfg.star_fraction
    n_star = int(is_star.sum())
    if n_star:
        star_mag = np.empty((n_star, 4))
        todo = np.arange(n_star)
        while todo.size:  # the same magnitude limits as the galaxies
            temp = rng.uniform(T_GRID[0], T_GRID[-1], todo.size)
            s_i = _truncated_power_law(rng, todo.size, cfg.mag_bright, i_faint, 0.15)
            trial = s_i[:, None] + _star_colours(temp)
            ok = np.ones(todo.size, bool)
            for band, lim in limits.items():
                ok &= trial[:, "griz".index(band)] < lim
            star_mag[todo[ok]] = trial[ok]
            todo = todo[~ok]
        mag[is_star] = star_mag
        for arr in (n, r_half, e1, e2, redshift):
            arr[is_star] = 0.0
        sed_type[is_star] = -1.0
        for key in ("bulge_fraction", "knot_fraction", "bulge_n", "bulge_r_half", "n_knots"):
            if key in parts:
                parts[key][is_star] = 0

    # Close pairs: a companion galaxy at the same redshift, drawn into the same stamps.
    pair = (rng.uniform(size=n_sources) < cfg.pair_fraction) & ~is_star
    c_sep = rng.uniform(1.5, 4.0, n_sources) * pair
    c_angle = rng.uniform(0, 2 * np.pi, n_sources)
    c_dmag = rng.uniform(0.5, 2.5, n_sources)
    c_t = rng.uniform(0.0, 3.0, n_sources)
    c_mag = mag[:, 2] + c_dmag
    c_n, c_r, c_e1, c_e2 = _galaxy_shapes(rng, cfg, c_mag, c_t)
    c_magb = c_mag[:, None] + band_colours(c_t, np.maximum(redshift, 0.005))

    side = cfg.patch_deg if cfg.patch_deg else patch_side_deg(n_sources, cfg.density)
    x = rng.uniform(-side / 2, side / 2, n_sources)  # tangent-plane degrees
    y = rng.uniform(-side / 2, side / 2, n_sources)
    dec = cfg.dec_center + y
    ra = np.mod(cfg.ra_center + x / np.cos(np.deg2rad(dec)), 360.0)

    zero = np.zeros(n_sources)
    pop = {
        "source_id": np.arange(n_sources, dtype=np.int64),
        "ra": ra,
        "dec": dec,
        "x_deg": x,
        "y_deg": y,
        "is_star": is_star.astype(np.uint8),
        "mag": mag,
        "redshift": redshift,
        "sed_type": sed_type,
        "sersic_n": n,
        "r_half": r_half,
        "e1": e1,
        "e2": e2,
        "has_companion": pair.astype(np.uint8),
        "comp_dx": np.where(pair, c_sep * np.cos(c_angle), zero),
        "comp_dy": np.where(pair, c_sep * np.sin(c_angle), zero),
        "comp_mag": np.where(pair[:, None], c_magb, 0.0),
        "comp_n": np.where(pair, c_n, zero),
        "comp_r_half": np.where(pair, c_r, zero),
        "comp_e1": np.where(pair, c_e1, zero),
        "comp_e2": np.where(pair, c_e2, zero),
        **parts,
    }
    if cfg.neighbours:
        pop.update(_sky_neighbours(cfg, seed, pop, side, limits))
    return pop


STAMP_HALF_ARCSEC = 4.1  # half the common field of view (48 x 0.168" = 8.06")


def _field_population(cfg: PopulationConfig, seed: int, side: float, limits: dict[str, float]):
    """Galaxies and stars of the same sky that the catalogue does not hold (module docstring):
    tangent-plane x, y (deg), i-band-based magnitudes (M, 4), shapes and a star flag."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 8]))
    area = (side * 60.0) ** 2  # arcmin^2
    n_gal = rng.poisson(cfg.field_density * area)
    mag_i = _truncated_power_law(rng, n_gal, cfg.mag_bright, cfg.field_mag_faint, 0.3)
    t = np.where(
        rng.uniform(size=n_gal) < cfg.early_fraction,
        rng.uniform(0, 0.7, n_gal),
        rng.uniform(0.7, 3.0, n_gal),
    )
    z = np.clip(rng.gamma(3.0, np.maximum(0.0417 * mag_i - 0.744, 0.03)), 0.005, 2.5)
    mag = mag_i[:, None] + band_colours(t, z)
    outside = np.zeros(n_gal, bool)  # galaxies the catalogue's cuts keep are the catalogue's
    for band, lim in limits.items():
        outside |= mag[:, "griz".index(band)] >= lim
    mag, mag_i, t = mag[outside], mag_i[outside], t[outside]
    n, r_half, e1, e2 = _galaxy_shapes(rng, cfg, mag_i, t)
    n_star = rng.poisson(cfg.field_star_density * area)
    s_i = _truncated_power_law(rng, n_star, cfg.mag_bright, cfg.field_mag_faint, 0.15)
    s_mag = s_i[:, None] + _star_colours(rng.uniform(T_GRID[0], T_GRID[-1], n_star))
    zs = np.zeros(n_star)
    total = mag_i.size + n_star
    return {
        "x": rng.uniform(-side / 2, side / 2, total),
        "y": rng.uniform(-side / 2, side / 2, total),
        "mag": np.concatenate([mag, s_mag]),
        "n": np.concatenate([n, zs]),
        "r_half": np.concatenate([r_half, zs]),
        "e1": np.concatenate([e1, zs]),
        "e2": np.concatenate([e2, zs]),
        "is_star": np.concatenate([np.zeros(mag_i.size, np.uint8), np.ones(n_star, np.uint8)]),
    }


def _sky_neighbours(cfg: PopulationConfig, seed: int, pop: dict, side: float, limits: dict):
    """Per-source neighbour table (N, K): every object of the catalogue or the field whose
    centre lies within the stamp half-width + margin of the source, brightest in i first."""
    from scipy.spatial import cKDTree

    field = _field_population(cfg, seed, side, limits)
    n_cat = pop["ra"].size
    xy = np.concatenate(
        [np.stack([pop["x_deg"], pop["y_deg"]], 1), np.stack([field["x"], field["y"]], 1)]
    )
    mag = np.concatenate([pop["mag"], field["mag"]])
    shape = {
        k: np.concatenate([pop[c], field[k]])
        for k, c in (("n", "sersic_n"), ("r_half", "r_half"), ("e1", "e1"), ("e2", "e2"))
    }
    star = np.concatenate([pop["is_star"], field["is_star"]])
    reach = (STAMP_HALF_ARCSEC + cfg.neighbour_margin) / 3600.0
    tree = cKDTree(xy)
    found = tree.query_ball_point(xy[:n_cat], r=reach, p=np.inf)
    k = cfg.max_neighbours
    idx = np.full((n_cat, k), -1, np.int64)
    for i, hits in enumerate(found):
        hits = np.asarray([h for h in hits if h != i], np.int64)
        if hits.size:
            hits = hits[np.argsort(mag[hits, 2], kind="stable")[:k]]
            idx[i, : hits.size] = hits
    ok = idx >= 0
    safe = np.where(ok, idx, 0)
    dx = np.where(ok, (xy[safe, 0] - pop["x_deg"][:, None]) * 3600.0, 0.0)
    dy = np.where(ok, (xy[safe, 1] - pop["y_deg"][:, None]) * 3600.0, 0.0)
    inside = ok & (np.abs(dx) < STAMP_HALF_ARCSEC) & (np.abs(dy) < STAMP_HALF_ARCSEC)
    nb_mag = np.where(ok[..., None], mag[safe], 0.0)
    flux_i = np.where(inside, 10 ** (-0.4 * (nb_mag[..., 2] - 22.5)), 0.0)
    out = {
        "nb_valid": ok.astype(np.uint8),
        "nb_dx": dx,
        "nb_dy": dy,
        "nb_mag": nb_mag,
        "nb_is_star": np.where(ok, star[safe], 0).astype(np.uint8),
        "nb_catalogue": (ok & (idx < n_cat)).astype(np.uint8),
        "n_neighbours": inside.sum(1).astype(np.int64),
        "neighbour_flux_i": flux_i.sum(1),  # nanomaggies, intrinsic i, centres in the stamp
    }
    for key, arr in shape.items():
        out[f"nb_{key}"] = np.where(ok, arr[safe], 0.0)
    return out


def _component_light(rng: np.random.Generator, t: np.ndarray, z: np.ndarray, col: np.ndarray):
    """Bulge-to-total and knot fraction (i band) of ``bulge_disk`` galaxies of SED type t at
    redshift z, each component's share of every band's flux (N, 3, 4: bulge, disk, knots)
    and the composite colours m_b - m_i (the disk keeps the galaxy's SED ``col``)."""
    m = t.size
    bt = np.clip(np.interp(t, _BT_T, _BT_MEAN) + 0.1 * rng.normal(size=m), 0.0, 0.95)
    f_max = np.where(t >= 1.5, 0.3, np.where(t >= 0.7, 0.1, 0.0))
    fk = rng.uniform(size=m) * f_max
    weights = np.stack([bt, (1 - bt) * (1 - fk), (1 - bt) * fk], axis=1)  # i-band shares
    colours = np.stack(
        [band_colours(np.zeros(m), z), col, band_colours(np.full(m, 3.0), z)], axis=1
    )  # (N, 3, 4), each relative to its own i band
    flux = weights[:, :, None] * 10 ** (-0.4 * colours)
    total = flux.sum(axis=1)
    return bt, fk, flux / total[:, None, :], -2.5 * np.log10(total)
