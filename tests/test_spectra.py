"""Power spectra and autocorrelation of counterfactuals against real images (seed 000 A.5):
known answers on white and smoothed noise."""

from __future__ import annotations

import numpy as np
import pytest

from whatsreal.evaluate.spectra import autocorrelation, power_spectrum, spectral_comparison


def _smooth(x: np.ndarray) -> np.ndarray:
    """3x3 periodic box filter over the last two axes."""
    return sum(np.roll(np.roll(x, i, -2), j, -1) for i in (-1, 0, 1) for j in (-1, 0, 1)) / 9


def test_white_noise_is_flat_and_uncorrelated():
    x = np.random.default_rng(0).normal(size=(200, 48, 48))
    freq, p = power_spectrum(x)
    assert freq[0] == 0 and freq[-1] == pytest.approx(0.5)  # up to Nyquist
    mean = p.mean(0)[1:]
    assert mean.max() / mean.min() < 1.2  # flat, unit variance per pixel
    assert mean.mean() == pytest.approx(1.0, rel=0.05)
    lags, a = autocorrelation(x)
    assert lags[0] == 0 and np.allclose(a[:, 0], 1)
    assert abs(a.mean(0)[1]) < 0.02


def test_smoothing_removes_high_frequencies_and_correlates_neighbours():
    x = _smooth(np.random.default_rng(1).normal(size=(200, 48, 48)))
    freq, p = power_spectrum(x)
    mean = p.mean(0)
    assert mean[freq > 0.25].mean() < 0.1 * mean[(freq > 0) & (freq <= 0.1)].mean()
    _, a = autocorrelation(x)
    # the lag-1 ring holds the 4 axis neighbours (a 3x3 box shares 6 of 9 pixels with
    # them) and the 4 diagonal ones (|lag| 1.41 rounds to 1; 4 of 9): 5/9 on average
    assert a.mean(0)[1] == pytest.approx(5 / 9, abs=0.03)


def test_comparison_known_answers():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(6, 2, 32, 32))
    same = np.repeat(real[:, None], 3, axis=1)
    g = spectral_comparison(same, real, bands=["g", "r"])
    for band in ("g", "r"):
        q = g["bands"][band]
        assert q["log_ratio_low"] == pytest.approx(0) and q["log_ratio_high"] == pytest.approx(0)
        assert q["acf_max_abs_diff"] == pytest.approx(0)
        assert np.allclose(q["psd_samples_std"], 0)
    smooth = spectral_comparison(_smooth(same), real)["bands"]["band0"]
    assert smooth["log_ratio_high"] < -0.5  # over-smoothed: a deficit at high frequency
    assert smooth["acf_max_abs_diff"] > 0.4
    noisy = spectral_comparison(same + rng.normal(size=same.shape), real)["bands"]["band1"]
    assert noisy["log_ratio_high"] == pytest.approx(np.log10(2), abs=0.05)  # twice the power
    with pytest.raises(ValueError, match=r"\(N, S, C, H, W\)"):
        spectral_comparison(real, real)
    with pytest.raises(ValueError, match="band names"):
        spectral_comparison(same, real, bands=["g"])
