"""The counterfactual's information-limited reference (whatsreal.evaluate.cf_reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import simulated_galaxy_store
from whatsreal.errors import ConfigError
from whatsreal.evaluate import cf_reference as ref
from whatsreal.evaluate.counterfactual import model_space, prediction_errors
from whatsreal.evaluate.galaxies import evaluation_pairs
from whatsreal.models.counterfactual import build_counterfactual_model
from whatsreal.sampling import SplitSpec

SPLITS = SplitSpec(val=0.05, test=0.3, seed=0)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return simulated_galaxy_store(tmp_path_factory, "cfref", n=80, seed=3)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_counterfactual_model("tiny", "image", 4, 48).eval()


def test_prediction_errors_known_answers(store, model):
    """The noise-free image scores 0 against itself and ~1 floor against the noisy one; the
    observed image scores 0 against itself."""
    rows = np.flatnonzero(store.instrument == store.instrument_code("hsc"))[:30]
    data = store.read(rows, ("flux", "clean", "ivar"))
    target = (data["flux"], data["clean"], data["ivar"])
    clean = prediction_errors(model, model_space(model, data["clean"]), *target)
    assert clean["mse_mean_vs_clean_over_floor"] == pytest.approx(0.0, abs=1e-9)
    assert clean["mse_mean_over_floor"] == pytest.approx(1.0, abs=0.1)
    observed = prediction_errors(model, model_space(model, data["flux"]), *target)
    assert observed["mse_mean_over_floor"] == pytest.approx(0.0, abs=1e-9)
    assert observed["noise_floor"] > 0


def test_reference_trains_and_scores_and_refuses_bad_input(store, model, one_thread):
    train, test = evaluation_pairs(store, SPLITS, "hsc", "legacy", n_test=8, n_probe=40)
    fast = ref.ReferenceSettings(minutes=0.02, width=8, batch_size=4)
    r = ref.counterfactual_reference(model, store, train, test, fast)
    assert r["n"] == len(test) and r["regressor"]["steps"] >= 5
    assert r["regressor"]["train_examples"] == len(train)
    assert np.isfinite(r["mse_mean_over_floor"]) and r["mse_mean_over_floor"] > 0
    assert r["conditions"] == list(ref.CONDITION_COLUMNS)
    cond = ref.observing_conditions(store, test[:, 0])
    assert cond.shape == (len(test), 7 * 4)  # seven per-band columns, four bands
    with pytest.raises(ConfigError, match="one survey's rows"):
        ref.counterfactual_reference(model, store, train, test[:, ::-1], fast)
    with pytest.raises(ConfigError, match="test_pairs must be"):
        ref.counterfactual_reference(model, store, train, test[:1], fast)
    with pytest.raises(ConfigError, match="multiple of 8"):
        ref.ReferenceSettings(width=12)


def test_a_diverged_reference_raises_instead_of_scoring():
    """fit_for_budget stops on a non-finite loss: a NaN reference must not become a figure."""
    from whatsreal.evaluate.separation import fit_for_budget

    net = torch.nn.Linear(2, 1)
    x = torch.randn(8, 2)

    def loss_of_batch() -> torch.Tensor:
        return net(x).sum() * float("nan")

    with pytest.raises(RuntimeError, match="diverged"):
        fit_for_budget(net, loss_of_batch, minutes=0.001, lr=1e-3)


def test_latent_reference_trains_a_copy_on_the_counterfactuals_views(store, one_thread):
    """The latent reference trains a fresh copy of the model's decoder on the model's own
    conditioning and scores it on the given views; the model itself is left untouched."""
    from whatsreal.evaluate.galaxies import split_sources
    from whatsreal.infer.counterfactual import view_rows
    from whatsreal.models.counterfactual import robust_scale

    fit = store.read(np.arange(60), ("flux", "ivar"))  # a stretch matched to the store
    torch.manual_seed(0)
    scale = robust_scale(fit["flux"], fit["ivar"])
    model = build_counterfactual_model("tiny", "image", 4, 48, scale=scale).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    src = split_sources(store, SPLITS)
    test = view_rows(store, "hsc", sources=src["test"][:6], n_physics=1, k=3)
    fast = ref.ReferenceSettings(minutes=0.05, batch_size=4)
    r = ref.latent_reference(model, store, "hsc", src["train"], test, fast)
    assert r["n"] == int((test.target >= 0).sum()) and r["regressor"]["steps"] >= 5
    assert np.isfinite(r["mse_mean_over_floor"]) and r["mse_mean_over_floor"] > 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # It learns: better than an all-zero image in the model's space on the same targets.
    tgt = store.read(test.target[test.target >= 0], ("flux", "clean", "ivar"))
    zeros = np.zeros_like(model_space(model, tgt["flux"]))
    blank = prediction_errors(model, zeros, tgt["flux"], tgt["clean"], tgt["ivar"])
    assert r["mse_mean_over_floor"] < blank["mse_mean_over_floor"]
    empty = view_rows(store, "hsc", sources=src["test"][:1], n_physics=1, k=3)
    with pytest.raises(ConfigError, match="fewer than 2 test views"):
        ref.latent_reference(model, store, "hsc", src["train"], empty, fast)
