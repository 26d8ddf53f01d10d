"""Classical anchors set beside the learned figures (DESIGN.md §6)."""

from __future__ import annotations

import numpy as np
from astropy.timeseries import LombScargle


def lomb_scargle_periods(
    flux: np.ndarray,
    time: np.ndarray | None = None,
    min_period: float = 4.0,
    max_period: float | None = None,
    n_freq: int = 2000,
) -> np.ndarray:
    """Peak period of each series (N, T) from astropy's Lomb–Scargle periodogram.

    The frequency grid is uniform between 1/max_period (default the series length) and
    1/min_period, in the units of ``time`` (default sample index).
    """
    flux = np.asarray(flux, dtype=np.float64)
    t = np.arange(flux.shape[-1], dtype=np.float64) if time is None else np.asarray(time)
    max_period = max_period or float(t[-1] - t[0])
    freq = np.linspace(1.0 / max_period, 1.0 / min_period, n_freq)
    periods = np.empty(flux.shape[0])
    for i, y in enumerate(flux):
        power = LombScargle(t, y).power(freq, assume_regular_frequency=True)
        periods[i] = 1.0 / freq[np.argmax(power)]
    return periods
