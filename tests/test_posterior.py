"""Property posteriors (issue 13, item 5): the flow head is calibrated on a toy problem with a
known Gaussian posterior, TARP and coverage detect miscalibration, save/load round-trips, and
`whatsreal predict` gives clear errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from whatsreal.cli.main import main
from whatsreal.errors import ModelFileError
from whatsreal.evaluate.calibration import (
    calibration_summary,
    interval_coverage,
    rank_histogram,
    rank_statistics,
    tarp,
    tarp_distance,
)
from whatsreal.infer.posterior import (
    POSTERIOR_CONFIG,
    PropertyPosterior,
    predict_properties,
    store_properties,
)
from whatsreal.models.base import load_pretrained
from whatsreal.store import ObservationStore, StoreWriter

D, SIGMA = 4, np.array([0.3, 0.6])


def _toy(n: int, seed: int):
    """y = x A + N(0, diag(SIGMA^2)): the posterior of y given x is exactly Gaussian."""
    a = np.random.default_rng(123).normal(size=(D, 2))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D))
    return x, x @ a, x @ a + rng.normal(size=(n, 2)) * SIGMA


@pytest.fixture(scope="module")
def toy_posterior():
    import torch

    torch.set_num_threads(1)
    x, _, y = _toy(3000, seed=0)
    post = PropertyPosterior(D, ["a", "b"], flow="maf", transforms=2, hidden=(64, 64))
    return post.fit(x, y, {"lr": 3e-3, "max_epochs": 100, "patience": 10, "seed": 0})


# -- the flow head -------------------------------------------------------------------------
def test_flow_head_is_calibrated_on_a_known_gaussian_posterior(toy_posterior):
    x, mean, y = _toy(1000, seed=1)
    draws = toy_posterior.sample(x, 400, seed=0)
    assert draws.shape == (1000, 400, 2)
    cov = interval_coverage(draws, y, (0.68, 0.95))
    np.testing.assert_allclose(cov[0.68], 0.68, atol=0.05)
    np.testing.assert_allclose(cov[0.95], 0.95, atol=0.04)
    np.testing.assert_allclose(draws.std(1).mean(0), SIGMA, rtol=0.15)  # the true width
    assert (np.abs(toy_posterior.mean(x, 400) - mean).mean(0) < 0.3 * SIGMA).all()
    assert tarp_distance(tarp(draws, y))["max_abs"] < 0.08
    pred = toy_posterior.summarize(x[:5], 200, levels=(0.5, 0.9))
    lo, hi = pred.intervals[0.9]
    assert (lo < pred.median).all() and (pred.median < hi).all()
    assert set(pred.columns()) >= {"a_mean", "a_std", "b_lo90", "b_hi50"}
    info = toy_posterior.info
    assert info["n_train"] + info["n_val"] == 3000 and info["best_epoch"] >= 1


def test_fit_is_seeded_and_validates_its_inputs():
    x, _, y = _toy(200, seed=2)
    kw = {"max_epochs": 2, "seed": 3}
    a = PropertyPosterior(D, ["a", "b"], flow="maf", transforms=1, hidden=(8,)).fit(x, y, kw)
    b = PropertyPosterior(D, ["a", "b"], flow="maf", transforms=1, hidden=(8,)).fit(x, y, kw)
    np.testing.assert_array_equal(a.sample(x[:3], 5, seed=1), b.sample(x[:3], 5, seed=1))
    post = PropertyPosterior(D, ["a", "b"], hidden=(8,))
    with pytest.raises(ValueError, match="latents have 3 dimensions"):
        post.fit(x[:, :3], y)
    with pytest.raises(ValueError, match="targets have 1 columns"):
        post.fit(x, y[:, 0])
    with pytest.raises(KeyError, match=r"targets lack \['b'\]"):
        post.fit(x, {"a": y[:, 0]})
    bad = y.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="target 'b' holds NaN"):
        post.fit(x, bad)
    with pytest.raises(RuntimeError, match="not fitted"):
        post.sample(x, 2)


def test_calibrate_widens_a_posterior_that_held_out_data_find_too_narrow(toy_posterior, tmp_path):
    post = PropertyPosterior.load(toy_posterior.save(tmp_path / "p"))
    x, mean, _ = _toy(2000, seed=7)
    noisier = mean + np.random.default_rng(8).normal(size=mean.shape) * SIGMA * 1.5
    before = interval_coverage(post.sample(x[1000:], 300), noisier[1000:])[0.68]
    t = post.calibrate(x[:1000], noisier[:1000])
    assert set(t) == {"a", "b"} and all(1.3 < v < 1.7 for v in t.values())
    assert post.info["temperature"] == t
    after = interval_coverage(post.sample(x[1000:], 300), noisier[1000:])[0.68]
    assert before.max() < 0.55
    np.testing.assert_allclose(after, 0.68, atol=0.05)
    back = PropertyPosterior.load(post.save(tmp_path / "q"))
    np.testing.assert_allclose(back.temperature, list(t.values()), rtol=1e-6)  # saved
    # one property too narrow, the other right: one width per property mends the first and
    # leaves the second; one width for both (per_property=False) would widen the second too
    mixed = noisier.copy()
    mixed[:, 1] = mean[:, 1] + np.random.default_rng(9).normal(size=len(mean)) * SIGMA[1]
    post.calibrate(x[:1000], mixed[:1000])
    w = post.info["temperature"]
    assert 1.3 < w["a"] < 1.7 and 0.85 < w["b"] < 1.15
    np.testing.assert_allclose(
        interval_coverage(post.sample(x[1000:], 300), mixed[1000:])[0.68], 0.68, atol=0.05
    )
    shared = post.calibrate(x[:1000], mixed[:1000], per_property=False)
    assert shared["a"] == shared["b"] and 1.1 < shared["b"]
    # a file written when one width served every property still loads
    from safetensors.torch import load_file, save_file

    old = tmp_path / "old"
    post.save(old)
    state = load_file(str(old / "posterior.safetensors"))
    state["temperature"] = torch.tensor(1.25)
    save_file(state, str(old / "posterior.safetensors"))
    np.testing.assert_allclose(PropertyPosterior.load(old).temperature, [1.25, 1.25])
    # an explicit validation set replaces the random hold-out
    xv, _, yv = _toy(100, seed=9)
    small = PropertyPosterior(D, ["a", "b"], flow="maf", transforms=1, hidden=(8,))
    small.fit(x[:200], noisier[:200], {"max_epochs": 2}, validation=(xv, yv))
    assert small.info["validation"] == "given" and small.info["n_val"] == 100


# -- calibration checks --------------------------------------------------------------------
def _gaussian_draws(scale: float, n: int = 1000, s: int = 400, seed: int = 0):
    """Truth ~ N(mu, SIGMA) and draws from N(mu, scale * SIGMA): scale 1 is exact."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(n, 2)) * 2
    truth = mu + rng.normal(size=(n, 2)) * SIGMA
    draws = mu[:, None, :] + rng.normal(size=(n, s, 2)) * SIGMA * scale
    return draws, truth


def test_tarp_is_diagonal_for_exact_samples_and_departs_for_overconfident_ones():
    exact = tarp(*_gaussian_draws(1.0), n_bootstrap=20)
    assert tarp_distance(exact)["max_abs"] < 0.06
    assert (exact["ecp_lo"] <= exact["ecp_hi"]).all()
    narrow = tarp(*_gaussian_draws(0.4))
    wide = tarp(*_gaussian_draws(2.5))
    i90 = int(np.argmin(np.abs(narrow["alpha"] - 0.9)))
    assert tarp_distance(narrow)["max_abs"] > 0.2
    assert narrow["ecp"][i90] < 0.75  # a claimed 90% region holds the truth far less often
    assert wide["ecp"][i90] > exact["ecp"][i90] + 0.05
    draws, truth = _gaussian_draws(1.0)
    cov = interval_coverage(draws, truth)
    np.testing.assert_allclose(cov[0.68], 0.68, atol=0.04)
    np.testing.assert_allclose(cov[0.95], 0.95, atol=0.03)
    assert interval_coverage(*_gaussian_draws(0.4))[0.95].max() < 0.7


def test_sbc_ranks_are_flat_when_calibrated_and_u_shaped_when_overconfident():
    exact = rank_histogram(rank_statistics(*_gaussian_draws(1.0)), 400, bins=10)
    narrow = rank_histogram(rank_statistics(*_gaussian_draws(0.4)), 400, bins=10)
    assert (exact["p_value"] > 1e-3).all()
    assert (narrow["p_value"] < 1e-6).all()
    counts = narrow["counts"][:, 0]
    assert counts[0] + counts[-1] > 4 * counts[4:6].sum()
    summary = calibration_summary(*_gaussian_draws(1.0), ["a", "b"], n_bootstrap=0)
    assert set(summary["coverage"]["a"]) == {"68", "95"}
    json.dumps(summary)  # JSON-ready
    with pytest.raises(ValueError, match="disagree on N or P"):
        tarp(np.zeros((5, 10, 2)), np.zeros((4, 2)))


# -- save / load ---------------------------------------------------------------------------
def test_save_load_round_trip(toy_posterior, tmp_path):
    x, _, y = _toy(20, seed=4)
    out = toy_posterior.save(tmp_path / "post")
    back = PropertyPosterior.load(out)
    assert back.config == toy_posterior.config and back.info == toy_posterior.info
    np.testing.assert_array_equal(back.sample(x, 8, seed=5), toy_posterior.sample(x, 8, seed=5))
    np.testing.assert_allclose(back.log_prob(x, y), toy_posterior.log_prob(x, y), rtol=1e-6)
    assert sorted(p.name for p in out.iterdir()) == ["posterior.json", "posterior.safetensors"]
    with pytest.raises(FileExistsError, match="overwrite"):
        toy_posterior.save(out)
    toy_posterior.save(out, overwrite=True)
    (out / "posterior.safetensors").write_bytes(b"not weights")
    with pytest.raises(ModelFileError, match=r"posterior\.safetensors"):
        PropertyPosterior.load(out)
    with pytest.raises(FileNotFoundError, match=re.escape(POSTERIOR_CONFIG)):
        PropertyPosterior.load(tmp_path / "nowhere")


# -- whatsreal predict ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def lc_run(tmp_path_factory):
    """A tiny two-instrument light-curve store with θ0 truth, a tiny model, its embeddings."""
    import torch

    from whatsreal.infer.embed import embed_store
    from whatsreal.models.contrastive import build_contrastive_model

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(0)
    n, length = 60, 32
    theta0 = rng.uniform(-1, 1, n)
    t = np.arange(length)
    with StoreWriter(
        root / "lc.store", shape=(1, length), instruments={"a": ["v"], "b": ["v"]}
    ) as w:
        for inst in ("a", "b"):
            flux = np.sin(t[None] * np.exp(theta0[:, None]) / 3)[:, None, :]
            flux = flux + 0.1 * rng.normal(size=flux.shape)
            w.append(flux.astype(np.float32), source_id=np.arange(n), instrument=inst)
        w.add_source_truth(np.arange(n), theta0=theta0)
    torch.manual_seed(0)
    build_contrastive_model("tiny", 1, length).eval().save_pretrained(root / "model")
    emb = embed_store(root / "model", root / "lc.store", root / "emb.parquet", batch_size=32)
    return {"root": root, "store": root / "lc.store", "emb": emb}


def test_predict_fit_then_apply_writes_intervals(lc_run, capsys):
    root = lc_run["root"]
    fit = ["predict", "fit", "--embeddings", str(lc_run["emb"]), "--store", str(lc_run["store"])]
    rc = main(
        [
            *fit,
            "--out",
            str(root / "post"),
            "--split",
            "all",
            "--instrument",
            "a",
            "--max-epochs",
            "3",
            "--hidden",
            "16",
            "--quiet",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert "posterior over theta0" in capsys.readouterr().out
    rc = main(
        [
            *fit,
            "--out",
            str(root / "post_val"),
            "--split-fractions",
            "0.3,0.3",
            "--val-split",
            "val",
            "--max-epochs",
            "2",
            "--hidden",
            "16",
            "--quiet",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert "widths from split val: theta0 x" in capsys.readouterr().out
    info = PropertyPosterior.load(root / "post_val").info
    assert info["validation"] == "given" and info["temperature"]["theta0"] > 0
    out = root / "pred.parquet"
    rc = main(
        [
            "predict",
            "apply",
            "--posterior",
            str(root / "post"),
            "--embeddings",
            str(lc_run["emb"]),
            "--out",
            str(out),
            "--n-samples",
            "50",
            "--store",
            str(lc_run["store"]),
            "--json",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    scores = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert set(scores["theta0"]) == {"r2", "coverage_68", "coverage_95"}
    table = pq.read_table(out)
    assert table.num_rows == 120
    for col in (
        "source_id",
        "instrument",
        "theta0_mean",
        "theta0_std",
        "theta0_lo68",
        "theta0_hi95",
    ):
        assert col in table.column_names
    lo, hi = table.column("theta0_lo95").to_numpy(), table.column("theta0_hi95").to_numpy()
    assert (lo <= hi).all()
    store = ObservationStore(lc_run["store"])
    truth = store_properties(store, table.column("row").to_numpy())
    assert truth.shape == (120, 1)
    # the same posterior from a loaded model and raw observations in store units
    from whatsreal.search import Embeddings

    model = load_pretrained(root / "model")
    pred = predict_properties(model, store.read(np.arange(5))["flux"], root / "post", 50)
    z = Embeddings(lc_run["emb"]).vectors("physics")[:5]
    ref = PropertyPosterior.load(root / "post").summarize(z, 50)
    np.testing.assert_allclose(pred.mean, ref.mean, atol=1e-4)
    np.testing.assert_allclose(pred.intervals[0.95][1], ref.intervals[0.95][1], atol=1e-4)


def test_predict_errors_name_the_file_or_key(lc_run, tmp_path, capsys):
    emb, store = str(lc_run["emb"]), str(lc_run["store"])

    def err(argv) -> str:
        assert main(argv) == 2
        return capsys.readouterr().err

    missing = str(tmp_path / "missing.parquet")
    assert "missing.parquet does not exist" in err(
        ["predict", "fit", "--embeddings", missing, "--store", store, "--out", str(tmp_path)]
    )
    fit = ["predict", "fit", "--embeddings", emb, "--store", store, "--quiet"]
    assert "no source truth ['redshift']" in err(
        [*fit, "--out", str(tmp_path / "p"), "--properties", "redshift"]
    )
    assert "overlaps the fitting split 'all'" in err(
        [*fit, "--out", str(tmp_path / "p"), "--split", "all", "--val-split", "val"]
    )
    assert "instrument 'lsst' is not in" in err(
        [*fit, "--out", str(tmp_path / "p"), "--instrument", "lsst"]
    )
    assert "posterior.json" in err(
        [
            "predict",
            "apply",
            "--posterior",
            str(tmp_path / "none"),
            "--embeddings",
            emb,
            "--out",
            str(tmp_path / "x.parquet"),
        ]
    )
    # a posterior fitted on latents of another width than the embeddings hold
    x, _, y = _toy(50, seed=6)
    PropertyPosterior(D, ["theta0", "b"], flow="maf", transforms=1, hidden=(8,)).fit(
        x, y, {"max_epochs": 1}
    ).save(tmp_path / "wrong")
    msg = err(
        [
            "predict",
            "apply",
            "--posterior",
            str(tmp_path / "wrong"),
            "--embeddings",
            emb,
            "--out",
            str(tmp_path / "x.parquet"),
        ]
    )
    assert "emb.parquet" in msg and f"fitted on {D}-dimensional physics latents" in msg
    assert "give a .parquet path" in err(
        [
            "predict",
            "apply",
            "--posterior",
            str(tmp_path / "wrong"),
            "--embeddings",
            emb,
            "--out",
            str(tmp_path / "x.csv"),
        ]
    )
    other = tmp_path / "other.store"
    with StoreWriter(other, shape=(1, 32), instruments={"a": ["v"]}) as w:
        w.append(np.zeros((3, 1, 32), np.float32), source_id=np.arange(3), instrument="a")
    assert "was embedded from the store" in err(
        ["predict", "fit", "--embeddings", emb, "--store", str(other), "--out", str(tmp_path)]
    )


def test_recalibrated_is_a_copy_with_its_own_widths(toy_posterior):
    x, mean, _ = _toy(1000, seed=11)
    wider = mean + np.random.default_rng(12).normal(size=mean.shape) * SIGMA * 2.0
    before = toy_posterior.temperature.clone()
    local = toy_posterior.recalibrated(x, wider)
    assert torch.equal(toy_posterior.temperature, before)  # the original is untouched
    assert all(1.7 < v < 2.3 for v in local.info["temperature"].values())
    with pytest.raises(ValueError, match="got 0 rows"):  # no pairs: an error, not NaN widths
        toy_posterior.recalibrated(x[:0], wider[:0])
    np.testing.assert_allclose(
        interval_coverage(local.sample(x[:500], 300), wider[:500])[0.68], 0.68, atol=0.06
    )
