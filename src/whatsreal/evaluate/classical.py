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


class InstrumentEnsemble:
    """Ensemble calibration of light curves by instrument, the classical anchor of
    self-calibration: each instrument's mean curve and spread over the many sources it saw
    (zeroth-order cotrending, as flat-fielding an instrument by its own ensemble).

    ``fit`` takes series (N, C, T) and their instrument codes; ``transform`` returns
    ``(x - mean_m) / std_m`` for each row's instrument m, scaled back to the ensemble's
    overall spread so the values stay in the input's units. It needs the instrument of every
    row, which the learned self-calibration reads from the series itself.
    """

    def __init__(self, min_rows: int = 2) -> None:
        if min_rows < 2:
            raise ValueError(f"min_rows must be >= 2 (a spread needs two rows); got {min_rows}")
        self.min_rows = min_rows
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None

    def fit(self, x: np.ndarray, instrument: np.ndarray) -> InstrumentEnsemble:
        """Per-instrument mean and standard deviation over rows, at each (channel, time)."""
        x = np.asarray(x, dtype=np.float64)
        instrument = np.asarray(instrument)
        if x.ndim != 3 or instrument.shape != (x.shape[0],):
            raise ValueError(
                f"expected x (N, C, T) and instrument (N,); got {x.shape} and {instrument.shape}"
            )
        codes = np.unique(instrument)
        if codes.size == 0 or codes.min() < 0:
            raise ValueError("instrument codes must be non-negative integers, and some given")
        counts = np.bincount(instrument, minlength=codes.max() + 1)
        thin = [int(c) for c in codes if counts[c] < self.min_rows]
        if thin:
            raise ValueError(
                f"instrument code(s) {thin} have fewer than {self.min_rows} rows to fit their "
                "ensemble from; give more rows or leave those instruments out"
            )
        n = codes.max() + 1
        self.mean_ = np.full((n, *x.shape[1:]), np.nan)
        self.std_ = np.full((n, *x.shape[1:]), np.nan)
        for c in codes:
            rows = x[instrument == c]
            self.mean_[c], self.std_[c] = rows.mean(axis=0), rows.std(axis=0)
        self.scale_ = float(np.nanmean(self.std_))
        return self

    def transform(self, x: np.ndarray, instrument: np.ndarray) -> np.ndarray:
        """The series with their instrument's ensemble mean and spread divided out (float32)."""
        if self.mean_ is None or self.std_ is None:
            raise RuntimeError("InstrumentEnsemble is not fitted; call fit(x, instrument) first")
        instrument = np.asarray(instrument)
        known = (instrument >= 0) & (instrument < self.mean_.shape[0])
        known[known] = np.isfinite(self.mean_[instrument[known], 0, 0])
        if not known.all():
            bad = sorted(set(np.asarray(instrument)[~known].tolist()))
            raise ValueError(f"instrument code(s) {bad} were not in the rows fitted")
        out = (np.asarray(x, dtype=np.float64) - self.mean_[instrument]) / np.maximum(
            self.std_[instrument], 1e-12
        )
        return (out * self.scale_).astype(np.float32)
