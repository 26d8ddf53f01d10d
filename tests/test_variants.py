"""Benchmark variants (`whatsreal.pipelines.variants`): one rule for turning a config's variant
spec into a trained run, its errors, retrieval from snapshots, and issue 5's goals."""

from __future__ import annotations

import pytest

from whatsreal.errors import ConfigError
from whatsreal.evaluate.galaxies import benchmark_goals
from whatsreal.pipelines.variants import (
    ensure_galaxy_store,
    retrieval_curve,
    train_variant,
    variant_config,
)
from whatsreal.train.counterfactual import CounterfactualTrainConfig, logged_steps

BASE = CounterfactualTrainConfig(
    preset="tiny",
    batch_size=8,
    val_every=1000,
    val_batches=1,
    ckpt_every=1000,
    log_every=1,
    progress=False,
    val=0.1,
    test=0.3,
    lr=1e-3,
    model_overrides={"hybrid_weight": 1.0},
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("variants") / "gal.store"
    from whatsreal.pairing import build_pairing
    from whatsreal.simulate.galaxies import GalaxySimConfig, simulate_galaxies
    from whatsreal.simulate.galaxy_population import PopulationConfig
    from whatsreal.store import ObservationStore

    sersic = GalaxySimConfig(population=PopulationConfig(morphology="sersic", neighbours=False))
    simulate_galaxies(
        path, n=80, surveys=("hsc", "legacy"), seed=3, workers=1, progress=False, config=sersic
    )
    build_pairing(ObservationStore(path))
    return ensure_galaxy_store(path, 80)  # there already: opened, not simulated again


def test_a_store_of_another_morphology_is_refused_with_its_path(store):
    from whatsreal.errors import ConfigError

    with pytest.raises(ConfigError, match=r"holds a galaxy population with.*sersic.*bulge_disk"):
        ensure_galaxy_store(store.path, 80, morphology="bulge_disk")


def test_variant_config_replaces_model_overrides_and_sets_training_keys():
    cfg = variant_config(BASE, {"model": {"fm_weight": 0.0}, "train": {"lr": "2e-3"}})
    assert cfg.model_overrides == {"fm_weight": 0.0}  # replaced, not merged into base's
    assert cfg.lr == pytest.approx(2e-3)  # YAML 1.1's string "2e-3" is converted
    assert BASE.model_overrides == {"hybrid_weight": 1.0}


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        ({"modle": {}}, "unknown key"),
        ({"train": {"batchsize": 4}}, "batchsize"),
        ({"warm_start": {"fraction": 1.5}}, "fraction"),
        ({"steps": 3, "warm_start": {"fraction": 0.5}}, "minutes budget"),
    ],
)
def test_bad_variant_specs_name_the_variant_and_the_key(spec, text):
    with pytest.raises(ConfigError, match=text) as err:
        variant_config(BASE, spec, name="lever7")
    if "train" not in spec:
        assert "lever7" in str(err.value)


def test_train_variant_trains_exactly_its_steps_and_replaces_an_old_run(
    store, tmp_path, one_thread
):
    out = tmp_path / "run"
    info = train_variant(store, out, BASE, {"steps": 3}, minutes=10, name="v", log=lambda _: None)
    assert info["max_steps"] == 3 and logged_steps(out) == 3
    (out / "stale.txt").write_text("from an earlier run")
    train_variant(store, out, BASE, {"steps": 2}, minutes=10, name="v", log=lambda _: None)
    assert not (out / "stale.txt").exists() and logged_steps(out) == 2
    other = tmp_path / "notes"
    other.mkdir()
    with pytest.raises(ConfigError, match="not a training run"):
        train_variant(store, other, BASE, {"steps": 1}, minutes=1, log=lambda _: None)


def test_a_warm_start_trains_the_encoders_first_inside_the_same_minutes(
    store, tmp_path, one_thread
):
    spec = {"warm_start": {"fraction": 0.5, "model": {"hybrid_weight": 1.0, "fm_weight": 0.0}}}
    out = tmp_path / "warm_run"
    info = train_variant(store, out, BASE, spec, minutes=0.08, name="w", log=lambda _: None)
    assert (out / "warm" / "model").exists() and (out / "model").exists()
    assert info["warm_start"]["steps"] >= 1 and info["max_steps"] >= 1
    assert info["train_seconds"] >= info["warm_start"]["train_seconds"]
    import yaml

    run_cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert run_cfg["train"]["init_from"] == str(out / "warm" / "model")


def test_retrieval_curve_reads_the_snapshots_with_the_warm_start_offset(store, tmp_path):
    from whatsreal.train.counterfactual import build_for_store

    model = build_for_store(store, BASE)
    model.save_pretrained(tmp_path / "warm" / "snapshots" / "step0000002_001.50min")
    model.save_pretrained(tmp_path / "snapshots" / "step0000005_002.00min")
    seen = []

    def score(m):
        seen.append(type(m).__name__)
        return {"top1": 0.5, "recall@10": 0.9}

    curve = retrieval_curve(tmp_path, score, warm_minutes=1.5)
    assert [(p["step"], p["minutes"]) for p in curve] == [(2, 1.5), (5, 3.5)]
    assert seen == ["CounterfactualModel"] * 2 and curve[0]["top1"] == 0.5


def test_benchmark_goals_known_answers():
    r = {
        "model_overrides": {"hybrid_weight": 1.0},
        "retrieval": {"top1": 0.81, "recall@10": 0.94},
        "leakage_instrument_into_physics": {"psf_fwhm": 0.05, "depth": 0.2},
        "counterfactual": {
            "hsc": {"mse_mean_over_floor": 1.2},
            "legacy": {"mse_mean_over_floor": 1.4},
        },
    }
    contrastive = {**r, "model_overrides": {"fm_weight": 0.0}}
    goals = benchmark_goals({"a": r, "c": contrastive})
    assert set(goals) == {"a"}  # a run without a decoder has no counterfactual goals
    g = goals["a"]
    assert g["top1"]["met"] and not g["recall@10"]["met"]
    assert g["max_leakage_instrument_into_physics"]["value"] == 0.2
    assert g["worst_posterior_mean_mse_over_floor"]["value"] == 1.4
    assert not g["worst_posterior_mean_mse_over_floor"]["met"]


def test_the_progress_bar_names_the_step_budget_not_epoch_minus_two(store, tmp_path, capfd):
    from dataclasses import replace

    from whatsreal.train.counterfactual import fit_counterfactual

    fit_counterfactual(store, tmp_path / "bar", replace(BASE, max_steps=2, progress=True))
    shown = capfd.readouterr()
    text = shown.out + shown.err
    assert "run ends at step 2" in text
    assert "/-2" not in text


def test_save_figure_writes_a_png_atomically_and_closes_the_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from whatsreal.utils import save_figure

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    out = save_figure(fig, tmp_path / "sub" / "chart.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["chart.png"]  # no temp left
