"""Seed-001 light-curve simulator: stars seen through instruments, eqs. 1-4 of the paper.

Every observation ``n`` is one star ``s`` seen by one instrument ``m``::

    F_obs^(n)(t) = clip_[-1,1]( S_m(t) * F_true^(s)(t) + O_m(t) ) + eps,   eps ~ N(0, sigma^2)  (1)
    F_true^(s)(t) = Re[ sum_{k=1}^{K-1} theta_{s,k} e^{i phi_{n,k-1}} / k^alpha
                        * e^{i 2 pi k t / L_s} ],   L_s = T * exp(theta_{s,0}) * lambda    (2)
    S_m(t) = 1 + a * Re[ sum_{j=0}^{M-1} beta_{m,j}  e^{i pi j t / T} ]                      (3)
    O_m(t) =     a * Re[ sum_{j=0}^{M-1} gamma_{m,j} e^{i pi j t / T} ]                      (4)

with ``a = 0.05`` and time ``t = 0, 1, ..., T-1`` (integer sample index, so periods are in
samples). The clip is applied to the noise-free signal only, before the noise is added, exactly
as in eq. 1; observed fluxes can therefore exceed [-1, 1] by a few noise sigma.

The paper leaves several choices open. Ours are fields of :class:`LightCurveSimConfig`, each
documented there; the short version:

- ``theta_{s,0} ~ U(0, ln 5)`` and ``lambda = 0.1`` give periods ``L_s`` log-uniform in
  [10, 50] samples: 2-10 full cycles in the T=100 window, and harmonics k <= 4 (which carry
  ~98% of the expected power for alpha = 1.5) stay below the Nyquist frequency for every star.
- ``theta_{s,k} = |N(0, 0.3^2)|`` for k >= 1 (half-normal). Phases are uniform per
  observation, so a sign flip of ``theta_{s,k}`` is indistinguishable from a phase shift of pi;
  only ``|theta_{s,k}|`` is observable, and drawing it non-negative keeps the stored truth
  identifiable for probes. ``alpha = 1.5`` (global) damps higher harmonics.
- ``beta, gamma`` are complex with independent N(0, 1) real and imaginary parts (the Re[.] in
  eqs. 3-4 is then meaningful: instruments get both cosine and sine drifts).
- Each star gets ``n_lightcurves / n_stars`` observations (20 by default, remainder spread over
  random stars); their instruments are drawn uniformly with replacement, after forcing at least
  ``min_instruments_per_star`` distinct ones. A repeated instrument is the same configuration
  revisiting the star (new phases and noise, same ``beta``/``gamma``).
- No amplitude normalisation: eq. 2 is used as written; the theta scale is chosen so that only
  about 0.4% of noise-free samples hit the clip (measured on the default set).

Randomness is split with :class:`numpy.random.SeedSequence` into independent streams for stars,
instruments, assignment and per-observation draws, so for a fixed seed the star parameters do
not change when, say, the number of light curves does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from whatsreal.config import check_fields
from whatsreal.errors import ConfigError

__all__ = [
    "LightCurveSet",
    "LightCurveSimConfig",
    "evaluate_lightcurve",
    "instrument_offset",
    "instrument_scale",
    "simulate_lightcurves",
    "star_signal",
]

_ASSIGNMENTS = ("random", "balanced")


@dataclass
class LightCurveSimConfig:
    """Every knob of the seed-001 simulator; defaults are the paper's values or documented choices.

    Attributes:
        n_lightcurves: number of observations N (paper: 40,000).
        n_stars: number of distinct stars (paper: 2,000).
        n_instruments: number of instrument configurations (paper: 17).
        n_params: K, stellar parameters per star; theta_{s,0} sets the period and
            theta_{s,1..K-1} the harmonic amplitudes (paper: 13).
        length: T, samples per light curve (paper: 100). Time is t = 0..T-1.
        n_fourier: M, Fourier terms j = 0..M-1 of the instrument scale/offset (paper reuses 17).
        noise_sigma: std of the additive Gaussian noise eps (paper: 0.03).
        clip: the noise-free signal is clipped to [-clip, clip] (paper: 1.0).
        instrument_amplitude: the factor 0.05 in front of the sums in eqs. 3-4 (paper: 0.05).
        alpha: power-law decay of harmonic amplitudes, 1/k^alpha; global, as in the paper.
            1.5 (our choice) keeps the aliased high harmonics small.
        lam: period reduction factor lambda in L_s = T exp(theta_{s,0}) lambda (our choice 0.1).
        theta0_low, theta0_high: theta_{s,0} ~ U(low, high). With lam = 0.1 and T = 100 the
            defaults (0, ln 5) give periods log-uniform in [10, 50] samples: at least two full
            cycles per window and at least 2.5 samples per cycle for harmonics k <= 4.
        theta_scale: theta_{s,k} (k >= 1) ~ |N(0, theta_scale^2)| (our choice 0.3: median
            half-range of a clean curve ~0.6, ~0.4% of clean samples clipped).
        theta_signed: draw theta_{s,k} ~ N(0, theta_scale^2) instead of half-normal. Off by
            default because uniform phases make the sign unobservable (see module docstring).
        complex_instrument: beta, gamma complex with N(0,1) real and imaginary parts (default);
            if False they are real N(0,1), giving cosine-only drifts.
        assignment: how observations are spread over instruments, per star:
            "random": uniformly with replacement after forcing ``min_instruments_per_star``
            distinct instruments (~12 distinct of 17 per star for the defaults);
            "balanced": cycle through a random permutation of all instruments, so each star
            sees min(n_obs, n_instruments) distinct ones.
        min_instruments_per_star: distinct instruments forced per star in "random" mode (>= 2 so
            every star has a cross-instrument pair).
    """

    n_lightcurves: int = 40_000
    n_stars: int = 2_000
    n_instruments: int = 17
    n_params: int = 13
    length: int = 100
    n_fourier: int = 17
    noise_sigma: float = 0.03
    clip: float = 1.0
    instrument_amplitude: float = 0.05
    alpha: float = 1.5
    lam: float = 0.1
    theta0_low: float = 0.0
    theta0_high: float = float(np.log(5.0))
    theta_scale: float = 0.3
    theta_signed: bool = False
    complex_instrument: bool = True
    assignment: str = "random"
    min_instruments_per_star: int = 2

    def __post_init__(self) -> None:
        """Validate at the boundary so a bad config fails with a message naming the field."""
        positive_ints = ("n_lightcurves", "n_stars", "n_instruments", "length", "n_fourier")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(
                    f"LightCurveSimConfig.{name} must be a positive int, got {value!r}"
                )
        if not isinstance(self.n_params, (int, np.integer)) or self.n_params < 2:
            raise ConfigError(
                f"LightCurveSimConfig.n_params (K) must be an int >= 2 (theta_0 is the period, "
                f"theta_1.. the amplitudes), got {self.n_params!r}"
            )
        for name in ("noise_sigma", "instrument_amplitude", "theta_scale"):
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"LightCurveSimConfig.{name} must be >= 0, got {getattr(self, name)}"
                )
        for name in ("clip", "lam"):
            if not getattr(self, name) > 0:
                raise ConfigError(
                    f"LightCurveSimConfig.{name} must be > 0, got {getattr(self, name)}"
                )
        if not self.theta0_low <= self.theta0_high:
            raise ConfigError(
                f"LightCurveSimConfig.theta0_low ({self.theta0_low}) must be <= theta0_high "
                f"({self.theta0_high})"
            )
        if self.assignment not in _ASSIGNMENTS:
            raise ConfigError(
                f"LightCurveSimConfig.assignment must be one of {_ASSIGNMENTS}, "
                f"got {self.assignment!r}"
            )
        min_inst = self.min_instruments_per_star
        if not 1 <= min_inst <= self.n_instruments:
            raise ConfigError(
                f"LightCurveSimConfig.min_instruments_per_star must be in [1, n_instruments="
                f"{self.n_instruments}], got {min_inst}"
            )
        if self.n_lightcurves < self.n_stars * min_inst:
            raise ConfigError(
                f"n_lightcurves={self.n_lightcurves} is too small to give each of the "
                f"{self.n_stars} stars {min_inst} observations; raise n_lightcurves or lower "
                "n_stars / min_instruments_per_star"
            )

    @property
    def time(self) -> np.ndarray:
        """Sample times t = 0..T-1 (float64) used in eqs. 2-4."""
        return np.arange(self.length, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields, for saving next to a run's outputs (YAML/JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LightCurveSimConfig:
        """Build from a dict, rejecting unknown keys so config-file typos do not pass silently."""
        check_fields(cls, values)
        return cls(**values)


@dataclass
class LightCurveSet:
    """Simulated observations plus every true parameter needed to recompute each clean curve.

    ``clean[n, 0]`` equals ``evaluate_lightcurve(theta[star_id[n]], alpha, lam, phases[n],
    beta[instrument_id[n]], gamma[instrument_id[n]], T)`` (up to float32 rounding), and
    ``flux - clean`` is the Gaussian noise. Observations are ordered by star.
    """

    flux: np.ndarray  # (N, 1, T) float32, observed (eq. 1, with noise)
    clean: np.ndarray  # (N, 1, T) float32, noise-free clipped signal
    star_id: np.ndarray  # (N,) int64
    instrument_id: np.ndarray  # (N,) int64
    theta: np.ndarray  # (n_stars, K) float64
    beta: np.ndarray  # (n_instruments, M) complex128 (float64 if complex_instrument=False)
    gamma: np.ndarray  # (n_instruments, M) same dtype as beta
    phases: np.ndarray  # (N, K-1) float64 in [0, 2 pi)
    alpha: float
    lam: float
    period: np.ndarray  # (n_stars,) float64, L_s in samples
    time: np.ndarray  # (T,) float64, t = 0..T-1
    instrument_scale: np.ndarray  # (n_instruments, T) float64, S_m(t)
    instrument_offset: np.ndarray  # (n_instruments, T) float64, O_m(t)
    config: LightCurveSimConfig = field(default_factory=LightCurveSimConfig)
    seed: int = 0

    def __len__(self) -> int:
        """Number of observations N."""
        return int(self.flux.shape[0])

    @property
    def clipped_fraction(self) -> float:
        """Fraction of noise-free samples sitting on the clip boundary (a data-quality figure)."""
        return float(np.mean(np.abs(self.clean) >= np.float32(self.config.clip)))


def star_signal(
    theta: np.ndarray, phases: np.ndarray, alpha: float, lam: float, length: int
) -> np.ndarray:
    """Eq. 2: the true stellar signal F_true, broadcast over leading axes of theta and phases.

    ``theta`` is (..., K) with theta[..., 0] the log-period parameter; ``phases`` is (..., K-1).
    Returns (..., T) float64 on t = 0..T-1. Loops over the K-1 harmonics, not over curves, so
    memory stays at one (..., T) complex array.
    """
    theta = np.asarray(theta)
    phases = np.asarray(phases, dtype=np.float64)
    n_harm = theta.shape[-1] - 1
    if phases.shape[-1] != n_harm:
        raise ValueError(
            f"phases last axis must be K-1={n_harm} to match theta (..., K={n_harm + 1}), "
            f"got {phases.shape[-1]}"
        )
    t = np.arange(length, dtype=np.float64)
    period = length * np.exp(np.real(theta[..., 0])) * lam  # L_s
    batch = np.broadcast_shapes(theta.shape[:-1], phases.shape[:-1])
    out = np.zeros((*batch, length), dtype=np.float64)
    for k in range(1, n_harm + 1):
        coef = theta[..., k] * np.exp(1j * phases[..., k - 1]) / k**alpha
        wave = np.exp(1j * 2.0 * np.pi * k * t / period[..., None])
        out += np.real(coef[..., None] * wave)
    return out


def _instrument_series(coeffs: np.ndarray, length: int) -> np.ndarray:
    """Re[sum_j c_j exp(i pi j t / T)] for coefficient arrays (..., M); returns (..., T)."""
    coeffs = np.asarray(coeffs)
    t = np.arange(length, dtype=np.float64)
    j = np.arange(coeffs.shape[-1], dtype=np.float64)
    basis = np.exp(1j * np.pi * np.outer(j, t) / length)  # (M, T)
    return np.real(coeffs @ basis)


def instrument_scale(beta: np.ndarray, length: int, amplitude: float = 0.05) -> np.ndarray:
    """Eq. 3: multiplicative instrument scale S_m(t) = 1 + a Re[sum_j beta_j e^{i pi j t/T}]."""
    return 1.0 + amplitude * _instrument_series(beta, length)


def instrument_offset(gamma: np.ndarray, length: int, amplitude: float = 0.05) -> np.ndarray:
    """Eq. 4: additive instrument offset O_m(t) = a Re[sum_j gamma_j e^{i pi j t/T}]."""
    return amplitude * _instrument_series(gamma, length)


def _apply_instrument(
    signal: np.ndarray, scale: np.ndarray, offset: np.ndarray, clip: float | None
) -> np.ndarray:
    """Eq. 1 without noise: clip(S * F + O); shared by the simulator and evaluate_lightcurve."""
    out = scale * signal + offset
    if clip is not None:
        out = np.clip(out, -clip, clip)
    return out


def evaluate_lightcurve(
    theta: np.ndarray,
    alpha: float,
    lam: float,
    phases: np.ndarray,
    beta: np.ndarray,
    gamma: np.ndarray,
    length: int,
    *,
    instrument_amplitude: float = 0.05,
    clip: float | None = 1.0,
) -> np.ndarray:
    """Noise-free observed curve clip(S_m F_true + O_m) from true parameters (eqs. 1-4).

    All arrays broadcast over leading axes: theta (..., K), phases (..., K-1), beta and gamma
    (..., M). ``clip=None`` returns the unclipped signal. Returns (..., T) float64. Used by the
    simulator, and by evaluation code that wants the truth for any (star, instrument, phases).
    """
    signal = star_signal(theta, phases, alpha, lam, length)
    scale = instrument_scale(beta, length, instrument_amplitude)
    offset = instrument_offset(gamma, length, instrument_amplitude)
    return _apply_instrument(signal, scale, offset, clip)


def _assign_observations(
    cfg: LightCurveSimConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Star and instrument index of every observation, star-major (see ``assignment``)."""
    n_obs, n_stars, n_inst = cfg.n_lightcurves, cfg.n_stars, cfg.n_instruments
    counts = np.full(n_stars, n_obs // n_stars, dtype=np.int64)
    counts[rng.permutation(n_stars)[: n_obs % n_stars]] += 1
    star_id = np.repeat(np.arange(n_stars, dtype=np.int64), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(n_obs, dtype=np.int64) - starts[star_id]  # index within the star
    perms = rng.permuted(np.tile(np.arange(n_inst, dtype=np.int64), (n_stars, 1)), axis=1)
    if cfg.assignment == "balanced":
        instrument_id = perms[star_id, pos % n_inst]
    else:
        forced = pos < cfg.min_instruments_per_star
        free = rng.integers(0, n_inst, size=n_obs, dtype=np.int64)
        instrument_id = np.where(forced, perms[star_id, np.minimum(pos, n_inst - 1)], free)
        # shuffle within each star so the forced-distinct draws are not always listed first
        order = np.lexsort((rng.random(n_obs), star_id))
        instrument_id = instrument_id[order]
    return star_id, instrument_id


def simulate_lightcurves(cfg: LightCurveSimConfig | None = None, seed: int = 0) -> LightCurveSet:
    """Draw a full seed-001 data set (eqs. 1-4) with its ground truth; fully determined by seed.

    The default config (40,000 curves of 100 samples) builds in 2-3 s on 2 CPU cores.
    """
    cfg = LightCurveSimConfig() if cfg is None else cfg
    T, K, M = cfg.length, cfg.n_params, cfg.n_fourier
    star_ss, inst_ss, assign_ss, obs_ss = np.random.SeedSequence(seed).spawn(4)

    star_rng = np.random.default_rng(star_ss)
    theta = np.empty((cfg.n_stars, K), dtype=np.float64)
    theta[:, 0] = star_rng.uniform(cfg.theta0_low, cfg.theta0_high, size=cfg.n_stars)
    amps = star_rng.normal(0.0, cfg.theta_scale, size=(cfg.n_stars, K - 1))
    theta[:, 1:] = amps if cfg.theta_signed else np.abs(amps)

    inst_rng = np.random.default_rng(inst_ss)
    shape = (cfg.n_instruments, M)
    if cfg.complex_instrument:
        beta = inst_rng.normal(size=shape) + 1j * inst_rng.normal(size=shape)
        gamma = inst_rng.normal(size=shape) + 1j * inst_rng.normal(size=shape)
    else:
        beta = inst_rng.normal(size=shape)
        gamma = inst_rng.normal(size=shape)

    star_id, instrument_id = _assign_observations(cfg, np.random.default_rng(assign_ss))

    obs_rng = np.random.default_rng(obs_ss)
    phases = obs_rng.uniform(0.0, 2.0 * np.pi, size=(cfg.n_lightcurves, K - 1))
    noise = obs_rng.normal(0.0, cfg.noise_sigma, size=(cfg.n_lightcurves, T))

    scale = instrument_scale(beta, T, cfg.instrument_amplitude)  # (n_instruments, T)
    offset = instrument_offset(gamma, T, cfg.instrument_amplitude)
    signal = star_signal(theta[star_id], phases, cfg.alpha, cfg.lam, T)  # (N, T)
    clean = _apply_instrument(signal, scale[instrument_id], offset[instrument_id], cfg.clip)
    flux = clean + noise  # eq. 1: noise is added after the clip

    return LightCurveSet(
        flux=flux.astype(np.float32)[:, None, :],
        clean=clean.astype(np.float32)[:, None, :],
        star_id=star_id,
        instrument_id=instrument_id,
        theta=theta,
        beta=beta,
        gamma=gamma,
        phases=phases,
        alpha=float(cfg.alpha),
        lam=float(cfg.lam),
        period=T * np.exp(theta[:, 0]) * cfg.lam,
        time=cfg.time,
        instrument_scale=scale,
        instrument_offset=offset,
        config=cfg,
        seed=int(seed),
    )


# Named data-set sizes. "paper" is seed 001's data set; "demo" keeps its structure (17
# instruments, T=100, 20 observations per star) with fewer stars so the demo trains in
# minutes; "tiny" is for tests.
LIGHTCURVE_SIM_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "demo": {"n_lightcurves": 16_000, "n_stars": 800},
    "tiny": {"n_lightcurves": 600, "n_stars": 60, "n_instruments": 5},
}


def lightcurve_sim_config(preset: str = "paper", **overrides: Any) -> LightCurveSimConfig:
    """Config of a named preset, with field overrides."""
    if preset not in LIGHTCURVE_SIM_PRESETS:
        raise ConfigError(
            f"unknown light-curve preset {preset!r}; known: {sorted(LIGHTCURVE_SIM_PRESETS)}"
        )
    return LightCurveSimConfig.from_dict({**LIGHTCURVE_SIM_PRESETS[preset], **overrides})


def write_lightcurve_store(
    path: str | Path,
    cfg: LightCurveSimConfig | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Simulate and write an observation store, with all truth needed to recompute it.

    Truth kept: per star ``theta`` (K values), ``period`` (samples), ``alpha``, ``lam``;
    per instrument ``beta``, ``gamma``, ``scale`` S_m(t), ``offset`` O_m(t); per observation
    ``phases`` and the noise-free ``clean`` curve (as an array).
    """
    from whatsreal.store import StoreWriter

    cfg = cfg or LightCurveSimConfig()
    data = simulate_lightcurves(cfg, seed)
    names = [f"inst{m:02d}" for m in range(cfg.n_instruments)]
    store_cfg = {"simulator": "lightcurves", "seed": int(seed), "lightcurves": cfg.to_dict()}
    with StoreWriter(
        path,
        (1, cfg.length),
        {n: ["flux"] for n in names},
        arrays=("clean",),
        config=store_cfg,
        overwrite=overwrite,
    ) as w:
        chunk = 50_000
        for lo in range(0, len(data), chunk):
            sl = slice(lo, lo + chunk)
            w.append(
                data.flux[sl],
                data.star_id[sl],
                np.array(names)[data.instrument_id[sl]],
                clean=data.clean[sl],
                truth={"phases": data.phases[sl]},
            )
        n_stars = data.theta.shape[0]
        w.add_source_truth(
            np.arange(n_stars),
            theta=data.theta,
            theta0=data.theta[:, 0],
            period=data.period,
            alpha=np.full(n_stars, data.alpha),
            lam=np.full(n_stars, data.lam),
        )
        w.add_instrument_truth(
            beta=data.beta,
            gamma=data.gamma,
            scale=data.instrument_scale,
            offset=data.instrument_offset,
        )
    return Path(path)
