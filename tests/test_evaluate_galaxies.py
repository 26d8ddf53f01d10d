"""`whatsreal evaluate --run DIR` on a tiny simulated galaxy store and a tiny trained run:
results.json and report.html, the errors for runs it cannot evaluate, and a run without a
decoder."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import yaml

from whatsreal.cli.main import main
from whatsreal.pairing import build_pairing
from whatsreal.store import ObservationStore

FAST = ["--n-probe", "60", "--cf-sources", "4", "--n-samples", "3", "--nfe", "4"]


@pytest.fixture(scope="module")
def galaxy_run(tmp_path_factory):
    """120 simulated galaxies seen by hsc and legacy, and a 4-step tiny hybrid run on them."""
    import torch

    from whatsreal.simulate.galaxies import simulate_galaxies
    from whatsreal.train.counterfactual import CounterfactualTrainConfig, fit_counterfactual

    root = tmp_path_factory.mktemp("evalgal")
    store = simulate_galaxies(
        root / "gal.store", n=120, surveys=("hsc", "legacy"), seed=3, workers=1, progress=False
    )
    build_pairing(ObservationStore(store))
    cfg = CounterfactualTrainConfig(
        preset="tiny",
        batch_size=8,
        max_steps=4,
        val_every=4,
        val_batches=1,
        ckpt_every=4,
        progress=False,
        val=0.1,
        test=0.3,
        lr=1e-3,
        model_overrides={"hybrid_weight": 1.0},
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit_counterfactual(store, root / "run", cfg, resume=False)
    finally:
        torch.set_num_threads(threads)
    return root / "run", store


def _finite(d, path=""):
    """Every number in a nested dict/list, with its key path."""
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _finite(v, f"{path}.{k}")
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _finite(v, f"{path}[{i}]")
    elif isinstance(d, int | float) and not isinstance(d, bool):
        yield path, d


@pytest.mark.slow
def test_evaluate_writes_results_and_report(galaxy_run, one_thread, capsys):
    run, _ = galaxy_run
    args = ["evaluate", "--run", str(run), *FAST, "--probe-steps", "10", "--few-shot", "r_half"]
    args += ["--morphology", "4", "--morphology-minutes", "0.01", "--cf-reference-minutes", "0.01"]
    args += ["--cf-latent-reference-minutes", "0.01"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "morphology (hsc ellipticity regressor" in out
    assert f"report -> {run / 'report.html'}" in out and "top-1" in out
    assert "few-shot R²(r_half) at 100 labels" in out
    r = json.loads((run / "results.json").read_text())
    for key in (
        "retrieval",
        "retrieval_instrument_space",
        "probe_r2",
        "leakage_instrument_into_physics",
        "leakage_instrument_into_physics_hsc_only",
        "leakage_instrument_into_physics_legacy_only",
        "leakage_physics_into_instrument",
        "classical_psf_matched",
        "random_encoder",
        "counterfactual",
    ):
        assert key in r, key
    assert r["surveys"] == ["hsc", "legacy"] and r["n_test_pairs"] >= 10
    assert r["steps"] == 4
    for name in ("physics", "instrument", "physics_hsc_only", "instrument_legacy_only"):
        assert {"mag_i", "r_half", "psf_fwhm", "depth"} <= set(r["probe_r2"][name])
    assert set(r["random_encoder"]["probe_r2"]) == {
        "physics",
        "physics_hsc_only",
        "physics_legacy_only",
    }
    ranked = [r["retrieval"], r["random_encoder"]["retrieval"], r["classical_psf_matched"]]
    for ret in ranked:
        for k in ("top1", "recall@10", "a_to_b_recall@1", "b_to_a_recall@1"):
            assert 0.0 <= ret[k] <= 1.0
        assert ret["recall@10"] >= ret["top1"]
    assert r["chance_top1"] == pytest.approx(1 / r["n_test_pairs"])
    for name, probes in r["probe_r2"].items():
        assert all(v <= 1.0 for v in probes.values()), name
    assert set(r["counterfactual"]) == {"hsc", "legacy"}
    for q in r["counterfactual"].values():
        assert q["n"] == 4 and q["n_samples"] == 3
        assert q["mse_mean_over_floor"] > 0 and q["noise_floor"] > 0 and q["z_std"] > 0
        assert q["mse_samples_over_floor"] >= q["mse_mean_over_floor"] * 0.5
        one = q["one_step"]  # the one-call posterior mean, on the same galaxies and floor
        assert one["noise_floor"] == pytest.approx(q["noise_floor"])
        assert one["mse_mean_over_floor"] > 0 and "mse_mean_vs_clean_over_floor" in one
        sp = q["spectra"]  # seed 000 A.5, per band of the target survey
        assert list(sp["bands"]) == list("griz") and sp["n_galaxies"] == 4
        assert len(sp["bands"]["g"]["psd_real"]) == len(sp["frequency"])
        ref = q["reference"]  # the information-limited reference, on the same galaxies
        assert ref["n"] == 4 and ref["mse_mean_over_floor"] > 0
        assert q["mse_mean_over_reference"] == pytest.approx(
            q["mse_mean_over_floor"] / ref["mse_mean_over_floor"]
        )
        lref = q["latent_reference"]  # the decoder regressed on the latents, same views
        assert lref["n"] == 4 and lref["mse_mean_over_floor"] > 0
        assert lref["noise_floor"] == pytest.approx(q["noise_floor"])
        assert q["mse_mean_over_latent_reference"] == pytest.approx(
            q["mse_mean_over_floor"] / lref["mse_mean_over_floor"]
        )
        # 3 samples: too few for the z std's finite-sample correction, so no spread ratio
        assert q["spread_ratio"] is None and q["z_std_calibrated"] is None
    bad = [p for p, v in _finite(r) if not math.isfinite(v)]
    assert not bad, bad
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 6  # grids, calibration, spectra, probes
    assert "Spatial structure (seed 000 A.5)" in page
    assert "Information-limited reference" in page
    few = r["few_shot"]["r_half"]  # 60 probe galaxies x 2 surveys: 10, 30 and 100 labels
    assert set(few) == {"physics", "instrument"}
    assert [c["n_labels"] for c in few["physics"]] == [10, 30, 100]
    assert [c["n_labels"] for c in r["random_encoder"]["few_shot"]["r_half"]["physics"]] == [
        10,
        30,
        100,
    ]
    assert "Few-shot learning" in page and "Few-shot: r_half" in page
    assert set(r["morphology"]) == {"hsc", "legacy"} and "Morphology test" in page
    for m in r["morphology"].values():
        assert m["n_test"] == 4 and set(m["counterfactual"]) == {"e1", "e2", "mean"}
    assert ("Latent maps" in page) == (r["n_test_pairs"] >= 20)  # UMAPs from 20 galaxies on
    assert ("Retrieval examples" in page) == (r["n_test_pairs"] >= 10)
    for text in ("physics view", "instrument views", "posterior mean", "Probes within each"):
        assert text in page
    assert f"{r['retrieval']['top1']:.3f}" in page  # the numbers are the JSON's
    assert not list(run.glob(".*.tmp"))  # atomic writes left no temporary file


def test_spread_scale_fitted_by_evaluate_is_applied_by_counterfactual(
    galaxy_run, tmp_path, one_thread, capsys
):
    """`evaluate --cf-calibrate N` fits one spread scale per direction on validation
    galaxies, scores the test samples rescaled (same posterior mean) and saves the scales
    with the model; `counterfactual` applies the saved scale unless --raw-spread."""
    import h5py

    from whatsreal.infer.counterfactual import SPREAD_FILE

    src, _ = galaxy_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    args = ["evaluate", "--run", str(run), "--quiet", "--n-probe", "40", "--probe-steps", "5"]
    args += ["--cf-sources", "3", "--n-samples", "6", "--nfe", "2", "--few-shot", ""]
    assert main([*args, "--cf-calibrate", "4"]) == 0
    assert "spread x" in capsys.readouterr().out
    r = json.loads((run / "results.json").read_text())
    saved = json.loads((run / "model" / SPREAD_FILE).read_text())
    assert set(saved) == {"hsc", "legacy"}
    for to, q in r["counterfactual"].items():
        rec = q["recalibrated"]
        assert rec["n_sources"] >= 1 and rec["n_samples"] == 6
        assert rec["spread_scale"] > 0
        assert saved[to]["spread_scale"] == pytest.approx(rec["spread_scale"])
        # z scales as 1/scale (the spread is multiplied, the mean kept)
        assert rec["z_std"] == pytest.approx(q["z_std"] / rec["spread_scale"], rel=1e-3)
    page = (run / "report.html").read_text()
    hsc_scale = r["counterfactual"]["hsc"]["recalibrated"]["spread_scale"]
    assert "Recalibrated" in page and f"{hsc_scale:.3f}" in page
    out = tmp_path / "cf.h5"
    base = ["counterfactual", "--model", str(run / "model"), "--store", r["store"], "--to"]
    base += ["hsc", "--limit", "2", "--n-samples", "6", "--nfe", "2", "--quiet"]
    assert main([*base, "--out", str(out)]) == 0
    assert "spread x" in capsys.readouterr().out
    raw = tmp_path / "raw.h5"
    assert main([*base, "--out", str(raw), "--raw-spread"]) == 0
    import torch

    import whatsreal

    model = whatsreal.load(run / "model")
    with h5py.File(out) as a, h5py.File(raw) as b:
        assert a.attrs["spread_scale"] == pytest.approx(saved["hsc"]["spread_scale"])
        assert "spread_scale" not in b.attrs
        # in the model's space (where the scale acts) the samples' mean is kept and their
        # deviations from it are multiplied by the scale
        xa, xb = (model.normalize(torch.from_numpy(f["samples"][:])).numpy() for f in (a, b))
    da, db = xa - xa.mean(1, keepdims=True), xb - xb.mean(1, keepdims=True)
    np.testing.assert_allclose(xa.mean(1), xb.mean(1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(da, saved["hsc"]["spread_scale"] * db, rtol=1e-3, atol=1e-4)
    assert main([*args, "--cf-calibrate", "4", "--n-samples", "4"]) == 2
    assert "n_samples >= 6" in capsys.readouterr().err


def test_bad_run_folders_get_errors_that_name_the_problem(galaxy_run, tmp_path, capsys):
    run, store = galaxy_run

    def fails(folder, *text, extra=()):
        assert main(["evaluate", "--run", str(folder), "--quiet", *extra]) == 2
        err = capsys.readouterr().err
        for t in text:
            assert t in err, err

    fails(tmp_path / "nowhere", "does not exist")
    fails(run, "['psf_fwhm']", "not galaxy properties", extra=["--few-shot", "r_half,psf_fwhm"])
    empty = tmp_path / "empty"
    empty.mkdir()
    fails(empty, "config.yaml", "is missing")

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    no_model = tmp_path / "no_model"
    no_model.mkdir()
    (no_model / "config.yaml").write_text(yaml.safe_dump(cfg))
    fails(no_model, "config.json", "model")

    moved = tmp_path / "moved"
    shutil.copytree(run / "model", moved / "model")
    (moved / "config.yaml").write_text(yaml.safe_dump({**cfg, "store": "gone/gal.store"}))
    fails(moved, "'store'", "gone/gal.store", "--store")
    no_key = tmp_path / "no_key"
    shutil.copytree(run / "model", no_key / "model")
    (no_key / "config.yaml").write_text(
        yaml.safe_dump({k: v for k, v in cfg.items() if k != "store"})
    )
    fails(no_key, "no 'store' key")

    lc = tmp_path / "lc"
    lc.mkdir()
    (lc / "config.yaml").write_text(yaml.safe_dump({"model": "contrastive", "store": str(store)}))
    fails(lc, "light-curve", "supports galaxy runs")
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "config.yaml").write_text(yaml.safe_dump({"preset": "tiny", "sim_preset": "tiny"}))
    fails(demo, "whatsreal demo")

    from whatsreal.pipelines.galaxies import load_galaxy_run

    assert load_galaxy_run(moved, store=store).store.n_obs == 240  # --store finds a moved store


def test_a_run_without_a_decoder_gets_no_counterfactuals(galaxy_run, tmp_path, one_thread):
    from whatsreal.evaluate.probes import ProbeSettings
    from whatsreal.models.counterfactual import build_counterfactual_model
    from whatsreal.pipelines.galaxies import evaluate_galaxy_run

    run, _ = galaxy_run
    enc = tmp_path / "encoders_only"
    enc.mkdir()
    shutil.copy(run / "config.yaml", enc / "config.yaml")
    build_counterfactual_model(
        "tiny", "image", 4, 48, fm_weight=0.0, hybrid_weight=1.0
    ).save_pretrained(enc / "model")
    r = evaluate_galaxy_run(
        enc, n_probe=40, n_test=20, probe=ProbeSettings(steps=5), progress=False
    )
    assert r["counterfactual"] is None and "fm_weight 0" in r["counterfactual_skipped"]
    assert r["n_test_pairs"] == 20 and np.isfinite(r["retrieval"]["top1"])
    page = (enc / "report.html").read_text()
    assert "No counterfactuals" in page
    # the retrieval examples, the probe chart, the latent maps and the default few-shot
    # curves (three properties)
    assert page.count("data:image/png;base64,") == 6 and "Retrieval examples" in page
    # a single-latent baseline is refused with a pointer to the benchmark that scores it
    single = tmp_path / "single"
    shutil.copytree(enc, single, ignore=shutil.ignore_patterns("model"))
    build_counterfactual_model(
        "tiny", "image", 4, 48, single_latent=True, hybrid_weight=1.0, fm_weight=0.0
    ).save_pretrained(single / "model")
    from whatsreal.errors import ConfigError

    with pytest.raises(ConfigError, match="single-latent baseline"):
        evaluate_galaxy_run(single, n_probe=40, n_test=20, progress=False)
    assert set(r["few_shot"]) == {"redshift", "r_half", "g_r"}


def test_retrieval_examples_rank_the_nearest_observations_and_frame_the_true_match(tmp_path):
    """With an embedding that is the image itself and each galaxy paired with its own row,
    every query's first neighbour is its own galaxy (cosine 1), framed in green."""
    import torch

    from tests.conftest import write_image_store
    from whatsreal.report.galaxies import retrieval_examples_figure
    from whatsreal.store import ObservationStore

    class Pixels(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def normalize(self, x):
            return x

        def embed(self, x):
            return x.flatten(1), x.flatten(1)

    store = ObservationStore(write_image_store(tmp_path / "s.store", n_sources=30))
    rows = np.arange(30)
    pairs = np.stack([rows, rows], axis=1)
    fig = retrieval_examples_figure(store, Pixels(), pairs, n_queries=3, k=4)
    axes = np.asarray(fig.axes).reshape(3, 5)
    for row in axes:
        assert row[1].get_title().endswith("cos 1.00")
        assert row[1].spines["top"].get_edgecolor()[:3] == pytest.approx(
            (0.173, 0.627, 0.173), abs=0.01
        )
        assert all(ax.spines["top"].get_linewidth() == 0.5 for ax in row[2:])
