"""Evaluation helpers: the probe ensemble, R², the Lomb–Scargle anchor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score as sk_r2

from whatsreal.evaluate.classical import lomb_scargle_periods
from whatsreal.evaluate.probes import (
    EnsembleMLP,
    ProbeSettings,
    classification_accuracy,
    few_shot_curve,
    fit_probes,
    r2_score,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_r2_matches_sklearn():
    rng = np.random.default_rng(0)
    y, p = rng.normal(size=50), rng.normal(size=50)
    assert r2_score(y, p) == pytest.approx(sk_r2(y, p))
    assert r2_score(y, y) == pytest.approx(1.0)


def test_ensemble_members_are_independent():
    m = EnsembleMLP(3, 4, 1, hidden=(8, 8), dropout=0.0)
    x = torch.randn(1, 5, 4).expand(3, 5, 4)
    out = m(x)
    assert out.shape == (3, 5, 1)
    assert not torch.allclose(out[0], out[1])  # different initial weights
    # a gradient through member 0 only touches member 0's weights
    out[0].sum().backward()
    assert m.weights[0].grad[1:].abs().sum() == 0 and m.weights[0].grad[0].abs().sum() > 0


def test_probe_learns_and_more_labels_help():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 6))
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1] + 0.05 * rng.normal(size=3000)
    curve = few_shot_curve(
        x,
        y,
        np.arange(2000),
        np.arange(2000, 3000),
        sizes=(10, 1000),
        seeds=2,
        settings=ProbeSettings(steps=150),
    )
    assert curve[1]["r2_mean"] > 0.9
    assert curve[1]["r2_mean"] > curve[0]["r2_mean"]
    assert len(curve[0]["r2_all"]) == 2


def test_probe_regression_prediction_shape():
    x = np.random.default_rng(2).normal(size=(40, 3))
    probes = fit_probes([x, x[:20]], [x[:, 0], x[:20, 0]], settings=ProbeSettings(steps=5))
    assert probes.predict(x).shape == (2, 40)


def test_classification_probe_beats_chance():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1200, 4))
    labels = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0)
    acc = classification_accuracy(
        x, labels, np.arange(1000), np.arange(1000, 1200), 4, ProbeSettings(steps=150)
    )
    assert acc > 0.85


def test_lomb_scargle_recovers_sinusoid_periods():
    t = np.arange(100.0)
    true = np.array([12.0, 23.5, 41.0])
    rng = np.random.default_rng(4)
    flux = np.sin(2 * np.pi * t / true[:, None] + 1.0) + 0.05 * rng.normal(size=(3, 100))
    np.testing.assert_allclose(lomb_scargle_periods(flux), true, rtol=0.03)


def test_instrument_ensemble_removes_each_instruments_drift_and_gain():
    """Known answer: sources seen through two instruments, each adding its own drift and
    multiplying by its own gain curve, come out of the ensemble calibration with neither: the
    calibrated rows of the two instruments have equal means and spreads at every time."""
    from whatsreal.evaluate.classical import InstrumentEnsemble

    rng = np.random.default_rng(0)
    n, t = 4000, 50
    time = np.arange(t)
    drift = np.stack([0.3 * np.sin(time / 7.0), -0.2 + 0.01 * time])
    gain = np.stack([1 + 0.2 * np.cos(time / 5.0), np.full(t, 0.7)])
    signal = rng.normal(size=(n, 1, t)) * 0.5
    inst = rng.integers(0, 2, size=n)
    x = gain[inst][:, None] * signal + drift[inst][:, None]
    cal = InstrumentEnsemble().fit(x, inst)
    out = cal.transform(x, inst)
    for m in (0, 1):
        assert np.abs(out[inst == m].mean(axis=0)).max() < 0.05
    ratio = out[inst == 0].std(axis=0) / out[inst == 1].std(axis=0)
    assert np.abs(ratio - 1).max() < 1e-5  # exact up to float32: the same spread
    # the raw rows differ between the instruments by far more than that
    assert np.abs(x[inst == 0].mean(axis=0) - x[inst == 1].mean(axis=0)).max() > 0.3
    with pytest.raises(ValueError, match=r"code\(s\) \[5\] were not in the rows fitted"):
        cal.transform(x[:2], np.array([0, 5]))
    with pytest.raises(ValueError, match="fewer than 2 rows"):
        InstrumentEnsemble().fit(x[:3], np.array([0, 0, 1]))
    with pytest.raises(RuntimeError, match="not fitted"):
        InstrumentEnsemble().transform(x, inst)
