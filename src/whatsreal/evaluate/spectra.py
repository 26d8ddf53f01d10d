"""Spatial structure of counterfactual images against real ones (seed 000, appendix A.5).

Per band, the azimuthally averaged power spectrum as a function of spatial frequency and
the autocorrelation as a function of pixel separation. A model that paints pixel-level
artefacts shows excess power at high frequency; one that over-smooths shows a deficit
there and too long a correlation length. Both are read against the real observations of
the same galaxies by the target survey.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _radial_bins(h: int, w: int) -> tuple[np.ndarray, int]:
    """Integer radius (in frequency or lag pixels) of each cell of an fftshifted grid."""
    yy, xx = np.indices((h, w))
    r = np.hypot(yy - h // 2, xx - w // 2)
    return np.rint(r).astype(np.int64), min(h, w) // 2


def _radial_mean(values: np.ndarray) -> np.ndarray:
    """(..., H, W) fftshifted -> (..., R) mean over rings of radius 0..R-1 (R = min/2 + 1)."""
    h, w = values.shape[-2:]
    r, r_max = _radial_bins(h, w)
    keep = r <= r_max
    idx = r[keep]
    counts = np.bincount(idx, minlength=r_max + 1)
    flat = values[..., keep]
    out = np.zeros((*values.shape[:-2], r_max + 1))
    for k in range(r_max + 1):  # a few dozen rings: clear and fast enough
        out[..., k] = flat[..., idx == k].sum(-1) / counts[k]
    return out


def power_spectrum(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthally averaged power spectrum of each image (mean removed): (..., H, W) ->
    (frequencies in cycles per pixel, (..., R)). The zero frequency is the first bin."""
    x = np.asarray(images, dtype=np.float64)
    x = x - x.mean(axis=(-2, -1), keepdims=True)
    h, w = x.shape[-2:]
    p = np.abs(np.fft.fftshift(np.fft.fft2(x), axes=(-2, -1))) ** 2 / (h * w)
    power = _radial_mean(p)
    return np.arange(power.shape[-1]) / min(h, w), power


def autocorrelation(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthally averaged autocorrelation of each image (mean removed, 1 at lag 0), from
    the power spectrum (Wiener–Khinchin, periodic boundary): (..., H, W) -> (lags in
    pixels, (..., R))."""
    x = np.asarray(images, dtype=np.float64)
    x = x - x.mean(axis=(-2, -1), keepdims=True)
    f = np.fft.fft2(x)
    acf = np.fft.fftshift(np.fft.ifft2(np.abs(f) ** 2).real, axes=(-2, -1))
    h, w = x.shape[-2:]
    zero = acf[..., h // 2, w // 2][..., None, None]
    acf = np.divide(acf, zero, out=np.zeros_like(acf), where=zero > 0)
    radial = _radial_mean(acf)
    return np.arange(radial.shape[-1], dtype=np.float64), radial


def spectral_comparison(
    samples: np.ndarray, real: np.ndarray, bands: list[str] | None = None, max_lag: int = 8
) -> dict[str, Any]:
    """Counterfactual samples (N, S, C, H, W) against the real images (N, C, H, W) of the
    same galaxies, per band:

    - ``psd_real``, ``psd_samples`` (mean over galaxies and samples) and ``psd_samples_std``
      (the spread over samples, averaged over galaxies), and the same for ``acf_*``;
    - ``log_ratio_low`` / ``log_ratio_high``: mean log10(P_samples / P_real) over the
      frequencies below / above half the Nyquist frequency (0 is a match; > 0 excess
      power, artefacts; < 0 a deficit, over-smoothing);
    - ``acf_max_abs_diff``: the largest |ACF_samples − ACF_real| at lags 1..``max_lag``.
    """
    s = np.asarray(samples, dtype=np.float64)
    r = np.asarray(real, dtype=np.float64)
    if s.ndim != 5 or r.ndim != 4 or s.shape[0] != r.shape[0] or s.shape[2:] != r.shape[1:]:
        raise ValueError(
            f"samples must be (N, S, C, H, W) and real (N, C, H, W) of the same N, C, H, W; "
            f"got {s.shape} and {r.shape}"
        )
    c = r.shape[1]
    bands = bands or [f"band{i}" for i in range(c)]
    if len(bands) != c:
        raise ValueError(f"{len(bands)} band names for {c} bands")
    freq, p_real = power_spectrum(r)  # (N, C, R)
    _, p_gen = power_spectrum(s)  # (N, S, C, R)
    lags, a_real = autocorrelation(r)
    _, a_gen = autocorrelation(s)
    nyquist = 0.5
    low = (freq > 0) & (freq <= nyquist / 2)
    high = freq > nyquist / 2
    lag_sel = (lags >= 1) & (lags <= max_lag)
    out: dict[str, Any] = {
        "frequency": freq.tolist(),
        "lag": lags.tolist(),
        "n_galaxies": int(r.shape[0]),
        "n_samples": int(s.shape[1]),
        "bands": {},
    }
    for i, name in enumerate(bands):
        pr = p_real[:, i].mean(0)
        pg = p_gen[:, :, i].mean((0, 1))
        ar = a_real[:, i].mean(0)
        ag = a_gen[:, :, i].mean((0, 1))
        tiny = np.finfo(np.float64).tiny
        ratio = np.log10(np.maximum(pg, tiny) / np.maximum(pr, tiny))
        out["bands"][name] = {
            "psd_real": pr.tolist(),
            "psd_samples": pg.tolist(),
            "psd_samples_std": p_gen[:, :, i].std(1).mean(0).tolist(),
            "acf_real": ar.tolist(),
            "acf_samples": ag.tolist(),
            "acf_samples_std": a_gen[:, :, i].std(1).mean(0).tolist(),
            "log_ratio_low": float(ratio[low].mean()),
            "log_ratio_high": float(ratio[high].mean()),
            "acf_max_abs_diff": float(np.abs(ag - ar)[lag_sel].max()),
        }
    return out
