"""Seed 000's morphology test (whatsreal.evaluate.morphology) on a tiny simulated store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import simulated_galaxy_store
from whatsreal.errors import ConfigError
from whatsreal.evaluate import morphology as morph
from whatsreal.evaluate.galaxies import evaluation_pairs
from whatsreal.infer.counterfactual import CounterfactualResult
from whatsreal.models.counterfactual import build_counterfactual_model
from whatsreal.sampling import SplitSpec

FAST = morph.MorphologySettings(minutes=0.02, backbone="resnet10t", n_samples=2, nfe=2)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return simulated_galaxy_store(tmp_path_factory, "morph", n=120, seed=5)


SPLITS = SplitSpec(val=0.05, test=0.3, seed=0)


def test_a_perfect_counterfactual_scores_as_the_real_images(store, one_thread, monkeypatch):
    """Counterfactuals equal to the real target images, returned in another source order:
    their R² must equal the real images' exactly (the samples are matched by source)."""
    _, pairs = evaluation_pairs(store, SPLITS, "hsc", "legacy", n_test=12)

    def perfect(model, st, to, n_samples, solver, nfe, seed, sources):
        order = np.arange(len(sources))[::-1]
        real = st.read(pairs[order, 0])["flux"]
        return CounterfactualResult(
            source_id=np.asarray(sources)[order],
            samples=np.repeat(real[:, None], n_samples, axis=1),
            mean=real,
            std=np.zeros_like(real),
            physics_rows=pairs[order, 1:],
            instrument_rows=np.full((len(order), 1), -1),
            target_row=pairs[order, 0],
        )

    monkeypatch.setattr(morph, "counterfactual_views", perfect)
    model = build_counterfactual_model("tiny", "image", 4, 48).eval()
    r = morph.morphology_test(model, store, SPLITS, pairs, "hsc", FAST)
    assert r["n_test"] == len(pairs) and r["params"] == ["e1", "e2"]
    assert r["n_train"] > 10 and r["regressor"]["steps"] >= 5
    for key in ("e1", "e2", "mean"):
        assert r["counterfactual"][key] == pytest.approx(r["real"][key], abs=1e-6)
        assert np.isfinite(r["other_as_is"][key])
    assert r["real"]["mean"] == pytest.approx((r["real"]["e1"] + r["real"]["e2"]) / 2)


def test_morphology_test_runs_on_a_model_and_refuses_bad_input(store, one_thread):
    _, pairs = evaluation_pairs(store, SPLITS, "hsc", "legacy", n_test=6)
    torch.manual_seed(0)
    model = build_counterfactual_model("tiny", "image", 4, 48).eval()
    r = morph.morphology_test(model, store, SPLITS, pairs, "hsc", FAST)
    assert set(r) >= {"real", "counterfactual", "other_as_is", "regressor"}
    assert all(np.isfinite(v) for part in ("real", "counterfactual") for v in r[part].values())
    with pytest.raises(ConfigError, match="must be 'hsc' observations"):
        morph.morphology_test(model, store, SPLITS, pairs[:, ::-1], "hsc", FAST)
    with pytest.raises(ConfigError, match="test_pairs must be"):
        morph.morphology_test(model, store, SPLITS, pairs[:1], "hsc", FAST)
    with pytest.raises(ConfigError, match="minutes must be > 0"):
        morph.MorphologySettings(minutes=0)
