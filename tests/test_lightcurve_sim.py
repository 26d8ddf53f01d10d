"""Tests for the seed-001 light-curve simulator (eqs. 1-4) against an independent evaluation."""

from __future__ import annotations

import cmath
import math

import numpy as np
import pytest
from scipy import stats

from whatsreal.errors import ConfigError
from whatsreal.simulate.lightcurves import (
    LightCurveSet,
    LightCurveSimConfig,
    simulate_lightcurves,
)

SMALL = LightCurveSimConfig(n_lightcurves=600, n_stars=30, n_instruments=7)


@pytest.fixture(scope="module")
def small_set() -> LightCurveSet:
    """A small but non-trivial set (20 curves per star, 7 instruments) shared by the tests."""
    return simulate_lightcurves(SMALL, seed=123)


def _loop_clean_curve(
    theta_s: np.ndarray,
    phases_n: np.ndarray,
    beta_m: np.ndarray,
    gamma_m: np.ndarray,
    cfg: LightCurveSimConfig,
) -> list[float]:
    """Eqs. 1-4 written out sample by sample with scalar complex arithmetic (no numpy maths)."""
    T, K, M = cfg.length, cfg.n_params, cfg.n_fourier
    period = T * math.exp(float(theta_s[0])) * cfg.lam
    out = []
    for t in range(T):
        f_true = 0j
        for k in range(1, K):
            f_true += (
                complex(theta_s[k])
                * cmath.exp(1j * float(phases_n[k - 1]))
                / k**cfg.alpha
                * cmath.exp(1j * 2 * math.pi * k * t / period)
            )
        s_sum = 0j
        o_sum = 0j
        for j in range(M):
            s_sum += complex(beta_m[j]) * cmath.exp(1j * math.pi * j * t / T)
            o_sum += complex(gamma_m[j]) * cmath.exp(1j * math.pi * j * t / T)
        scale = 1 + cfg.instrument_amplitude * s_sum.real
        offset = cfg.instrument_amplitude * o_sum.real
        value = scale * f_true.real + offset
        out.append(min(cfg.clip, max(-cfg.clip, value)))
    return out


def test_truth_reproduces_clean_curves(small_set: LightCurveSet) -> None:
    """Stored theta, phases, beta, gamma recompute the clean curves through a plain loop."""
    rng = np.random.default_rng(0)
    picks = rng.choice(len(small_set), size=25, replace=False)
    # always include a curve that hits the clip, if any, so the clip branch is checked
    clipped = np.flatnonzero((np.abs(small_set.clean[:, 0]) >= 1).any(axis=1))
    picks = np.concatenate([picks, clipped[:3]])
    for n in picks:
        s, m = small_set.star_id[n], small_set.instrument_id[n]
        expected = _loop_clean_curve(
            small_set.theta[s],
            small_set.phases[n],
            small_set.beta[m],
            small_set.gamma[m],
            small_set.config,
        )
        np.testing.assert_allclose(small_set.clean[n, 0], expected, atol=1e-5, rtol=0)


def test_period_truth_matches_theta0(small_set: LightCurveSet) -> None:
    """The stored period is L_s = T exp(theta_0) lambda and lies in the documented range."""
    cfg = small_set.config
    np.testing.assert_allclose(
        small_set.period, cfg.length * np.exp(small_set.theta[:, 0]) * cfg.lam, rtol=1e-12
    )
    default = LightCurveSimConfig()
    lo = default.length * np.exp(default.theta0_low) * default.lam
    hi = default.length * np.exp(default.theta0_high) * default.lam
    assert lo >= 10 - 1e-9 and hi <= 50 + 1e-9
    assert np.all((small_set.period >= lo - 1e-9) & (small_set.period <= hi + 1e-9))


def test_clean_curves_respect_clip(small_set: LightCurveSet) -> None:
    """Noise-free curves lie in [-1, 1]; only a small fraction of samples sits on the clip."""
    assert np.abs(small_set.clean).max() <= 1.0
    assert small_set.clipped_fraction < 0.03


def test_noise_is_gaussian_with_sigma(small_set: LightCurveSet) -> None:
    """flux - clean is N(0, 0.03^2): std within 2%, mean within 5 standard errors, KS passes."""
    resid = (small_set.flux - small_set.clean).astype(np.float64).ravel()
    n = resid.size
    assert abs(resid.std() - 0.03) < 0.02 * 0.03
    assert abs(resid.mean()) < 5 * 0.03 / math.sqrt(n)
    assert stats.kstest(resid / 0.03, "norm").pvalue > 1e-3
    assert abs(stats.skew(resid)) < 0.05
    assert abs(stats.kurtosis(resid)) < 0.1


def test_noise_added_after_clip(small_set: LightCurveSet) -> None:
    """Eq. 1 clips before adding noise: on clipped samples the noise is still two-sided."""
    on_clip = np.abs(small_set.clean) >= 1.0
    assert on_clip.sum() >= 50, "fixture should contain clipped samples"
    resid = (small_set.flux - small_set.clean)[on_clip].astype(np.float64)
    assert 0.35 < (resid > 0).mean() < 0.65
    assert abs(resid.std() - 0.03) < 0.2 * 0.03
    assert np.abs(small_set.flux).max() > 1.0


def test_same_seed_same_data_other_seed_differs() -> None:
    """A seed fully determines the data; a different seed gives different data."""
    a = simulate_lightcurves(SMALL, seed=7)
    b = simulate_lightcurves(SMALL, seed=7)
    c = simulate_lightcurves(SMALL, seed=8)
    for name in ("flux", "clean", "star_id", "instrument_id", "theta", "beta", "gamma", "phases"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert not np.allclose(a.flux, c.flux)
    assert not np.allclose(a.theta, c.theta)
    assert not np.array_equal(a.instrument_id, c.instrument_id)


def test_shapes_and_dtypes(small_set: LightCurveSet) -> None:
    """Arrays have the documented shapes and dtypes."""
    cfg = small_set.config
    N, T, K, M = cfg.n_lightcurves, cfg.length, cfg.n_params, cfg.n_fourier
    assert len(small_set) == N
    assert small_set.flux.shape == (N, 1, T) and small_set.flux.dtype == np.float32
    assert small_set.clean.shape == (N, 1, T) and small_set.clean.dtype == np.float32
    assert small_set.star_id.shape == (N,) and small_set.star_id.dtype == np.int64
    assert small_set.instrument_id.shape == (N,) and small_set.instrument_id.dtype == np.int64
    assert small_set.theta.shape == (cfg.n_stars, K) and small_set.theta.dtype == np.float64
    for coeffs in (small_set.beta, small_set.gamma):
        assert coeffs.shape == (cfg.n_instruments, M) and coeffs.dtype == np.complex128
    assert small_set.phases.shape == (N, K - 1) and small_set.phases.dtype == np.float64
    assert np.all((small_set.phases >= 0) & (small_set.phases < 2 * np.pi))
    np.testing.assert_array_equal(small_set.time, np.arange(T))
    real = simulate_lightcurves(
        LightCurveSimConfig(n_lightcurves=40, n_stars=10, complex_instrument=False), seed=0
    )
    assert real.beta.dtype == np.float64 and real.gamma.dtype == np.float64


def test_default_set_coverage() -> None:
    """Default set: 20 curves per star, each star seen by >= 2 instruments, each instrument busy."""
    data = simulate_lightcurves(seed=0)
    cfg = data.config
    assert data.flux.shape == (40_000, 1, 100)
    np.testing.assert_array_equal(np.bincount(data.star_id, minlength=cfg.n_stars), 20)
    pairs = np.unique(data.star_id * cfg.n_instruments + data.instrument_id)
    per_star = np.bincount(pairs // cfg.n_instruments, minlength=cfg.n_stars)
    per_inst = np.bincount(pairs % cfg.n_instruments, minlength=cfg.n_instruments)
    assert per_star.min() >= 2
    assert per_inst.min() >= 500  # each instrument sees hundreds of distinct stars
    assert data.clipped_fraction < 0.02


@pytest.mark.parametrize("assignment", ["random", "balanced"])
def test_assignment_modes_cover_instruments(assignment: str) -> None:
    """Both assignment modes give every star >= 2 distinct instruments; balanced gives all."""
    cfg = LightCurveSimConfig(
        n_lightcurves=205, n_stars=10, n_instruments=17, assignment=assignment
    )
    data = simulate_lightcurves(cfg, seed=3)
    counts = np.bincount(data.star_id, minlength=10)
    assert counts.sum() == 205 and counts.min() == 20 and counts.max() == 21
    distinct = [len(np.unique(data.instrument_id[data.star_id == s])) for s in range(10)]
    assert min(distinct) >= 2
    if assignment == "balanced":
        assert min(distinct) == 17


def test_bad_config_raises() -> None:
    """Invalid configs fail at construction with a ConfigError naming the problem."""
    with pytest.raises(ConfigError, match="assignment"):
        LightCurveSimConfig(assignment="nope")
    with pytest.raises(ConfigError, match="too small"):
        LightCurveSimConfig(n_lightcurves=10, n_stars=10)
    with pytest.raises(ConfigError, match="unknown"):
        LightCurveSimConfig.from_dict({"n_star": 3})
