"""Injected anomalies: seeded, change only what they should, labelled right; k-NN finds outliers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from whatsreal.errors import ConfigError
from whatsreal.evaluate.anomalies import (
    INSTRUMENT,
    NORMAL,
    PHYSICAL,
    AnomalySet,
    AnomalySettings,
    check_run_split,
    galaxy_anomaly_set,
    lightcurve_anomaly_set,
    precision_at_k,
    score_spaces,
)
from whatsreal.search.anomaly import iforest_scores, knn_scores, whiten
from whatsreal.simulate.anomalies import (
    bad_column,
    galaxy_prep_from_store,
    inject_galaxy_artefacts,
    inject_lightcurve_artefacts,
    inject_lightcurve_physical,
    lightcurve_parts,
    render_physical_galaxies,
    satellite_trail,
    saturated_star,
)
from whatsreal.simulate.galaxies import observe_source, simulate_galaxies
from whatsreal.simulate.lightcurves import lightcurve_sim_config, write_lightcurve_store
from whatsreal.store import ObservationStore


@pytest.fixture(scope="module")
def galaxy_store(tmp_path_factory):
    """Eight sources seen by HSC- and Legacy-like surveys, and the simulator state behind it."""
    path = tmp_path_factory.mktemp("anom") / "gal.store"
    simulate_galaxies(path, n=8, surveys="hsc,legacy", seed=3, workers=1, progress=False)
    store = ObservationStore(path)
    return store, galaxy_prep_from_store(store)


@pytest.fixture(scope="module")
def lc_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("anom") / "lc.store"
    write_lightcurve_store(path, lightcurve_sim_config("tiny"), seed=4)
    return ObservationStore(path)


def _galaxy_hosts(prep) -> list[int]:
    return [int(i) for i in np.flatnonzero(prep["population"]["is_star"] == 0)[:2]]


# -- galaxies: physical -----------------------------------------------------------------------
def test_store_conditions_are_rebuilt_exactly(galaxy_store):
    store, prep = galaxy_store
    for row in (0, store.n_obs - 1):
        survey = store.instruments[store.instrument[row]]
        again = observe_source(prep, survey, int(store.source_id[row]))
        stored = store.read([row], ("flux", "ivar", "clean"))
        for key in ("flux", "ivar", "clean"):
            np.testing.assert_array_equal(again[key], stored[key][0])


def test_physical_galaxies_are_seeded_and_differ_from_the_normal_galaxy(galaxy_store):
    _, prep = galaxy_store
    hosts = _galaxy_hosts(prep)
    a = render_physical_galaxies(prep, hosts, ["ring", "merger"], seed=1)
    b = render_physical_galaxies(prep, hosts, ["ring", "merger"], seed=1)
    c = render_physical_galaxies(prep, hosts, ["ring", "merger"], seed=2)
    np.testing.assert_array_equal(a["hsc"]["flux"], b["hsc"]["flux"])
    assert a["params"] == b["params"] and a["params"] != c["params"]
    assert list(a["kind"]) == ["ring", "merger"]
    for survey in ("hsc", "legacy"):
        for j, host in enumerate(hosts):
            normal = observe_source(prep, survey, host)
            assert a[survey]["flux"][j].shape == normal["flux"].shape
            assert np.abs(a[survey]["clean"][j] - normal["clean"]).max() > 0
            # the same conditions: far from the source the sky noise is the same
            assert np.allclose(a[survey]["ivar"][j][:, 0, 0], normal["ivar"][:, 0, 0], rtol=0.05)


def test_star_hosts_and_unknown_kinds_are_refused(galaxy_store):
    _, prep = galaxy_store
    with pytest.raises(ConfigError, match="known"):
        render_physical_galaxies(prep, _galaxy_hosts(prep)[:1], ["spiral"])
    star = np.flatnonzero(prep["population"]["is_star"] == 1)
    if star.size:
        with pytest.raises(ValueError, match="stars"):
            render_physical_galaxies(prep, star[:1], ["ring"])


def test_changed_presets_are_an_error(galaxy_store):
    store, _ = galaxy_store
    saved = {**store.config, "galaxies": dict(store.config["galaxies"])}
    presets = {k: dict(v) for k, v in saved["galaxies"]["presets"].items()}
    presets["hsc"]["pixel_scale"] = 0.2
    saved["galaxies"]["presets"] = presets
    with pytest.raises(ConfigError, match=r"presets differ.*hsc\.pixel_scale"):
        galaxy_prep_from_store(SimpleNamespace(config=saved, path="x.store"))
    with pytest.raises(ConfigError, match="galaxy simulator"):
        galaxy_prep_from_store(SimpleNamespace(config={"test": True}, path="y.store"))


# -- galaxies: artefacts ----------------------------------------------------------------------
def _obs(seed: int = 0):
    rng = np.random.default_rng(seed)
    flux = rng.normal(0, 0.01, (4, 48, 48)).astype(np.float32)
    return flux, np.full_like(flux, 1e4)


def test_bad_column_changes_one_column_of_one_band():
    flux, ivar = _obs()
    out, p = bad_column(flux, ivar, np.random.default_rng(3))
    changed = np.argwhere(out != flux)
    assert set(changed[:, 0]) == set(p["bands"]) and len(p["bands"]) == 1
    assert set(changed[:, 2]) == {p["column"]}
    assert np.all(out[p["bands"][0], :, p["column"]] == np.float32(p["value"]))


def test_one_band_trail_leaves_other_bands_bit_identical():
    flux, ivar = _obs()
    out, p = satellite_trail(flux, ivar, np.random.default_rng(0), all_bands=0.0)
    (band,) = p["bands"]
    for b in range(4):
        if b == band:
            assert (out[b] - flux[b]).max() > 4 * 0.01
        else:
            np.testing.assert_array_equal(out[b], flux[b])


def test_saturated_star_is_clipped_with_bleed():
    flux, ivar = _obs()
    out, p = saturated_star(flux, ivar, np.random.default_rng(1), saturation_sigma=50.0)
    sat = np.float32(50.0 * 0.01)
    assert np.all(out <= sat * (1 + 1e-6))
    centre = (out.shape[-1] - 1) / 2  # GalSim's offsets are from the true centre
    col, row = round(centre + p["dx_px"]), round(centre + p["dy_px"])
    for b in range(4):
        at_sat = out[b] >= sat * (1 - 1e-6)
        # blooming: the saturated run is longer along the star's column than across its row
        assert at_sat[:, col].sum() > at_sat[row, :].sum() >= 1


def test_artefact_injection_is_seeded_and_leaves_inputs_alone():
    flux = np.stack([_obs(i)[0] for i in range(3)])
    ivar = np.full_like(flux, 1e4)
    before = flux.copy()
    kinds = ["trail", "bad_column", "saturated_star"]
    a, pa = inject_galaxy_artefacts(flux, ivar, kinds, seed=5)
    b, pb = inject_galaxy_artefacts(flux, ivar, kinds, seed=5)
    c, _ = inject_galaxy_artefacts(flux, ivar, kinds, seed=6)
    np.testing.assert_array_equal(a, b)
    assert pa == pb and [p["kind"] for p in pa] == kinds
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(flux, before)
    with pytest.raises(ConfigError, match="galaxy artefact"):
        inject_galaxy_artefacts(flux, ivar, ["cosmic_ray"] * 3)


# -- light curves -----------------------------------------------------------------------------
def test_lightcurve_events_go_through_the_instrument(lc_store):
    rows = np.arange(6)
    parts = lightcurve_parts(lc_store, rows)
    stored = lc_store.read(rows)["flux"][:, 0]
    clip = float(parts["clip"])
    again = np.clip(parts["scale"] * parts["signal"] + parts["offset"], -clip, clip)
    np.testing.assert_allclose(again + parts["noise"], stored, atol=1e-6)
    out, params = inject_lightcurve_physical(parts, ["dip", "flare"] * 3, seed=0)
    same, _ = inject_lightcurve_physical(parts, ["dip", "flare"] * 3, seed=0)
    np.testing.assert_array_equal(out, same)
    diff = out[:, 0] - stored
    for i, p in enumerate(params):
        assert (diff[i].min() < -0.1) if p["kind"] == "dip" else (diff[i].max() > 0.1)
        # the event is scaled by that observation's instrument: S_m(t) times the event
        assert np.abs(diff[i]).max() < 1.5


def test_lightcurve_artefacts_change_only_their_samples():
    flux = np.random.default_rng(0).normal(0, 0.3, (2, 1, 100)).astype(np.float32)
    out, params = inject_lightcurve_artefacts(flux, ["jump", "dropout"], seed=1)
    jump, drop = params
    changed = np.flatnonzero(out[0, 0] != flux[0, 0])
    assert changed.min() == jump["t0"] and changed.max() == 99
    np.testing.assert_allclose(out[0, 0, jump["t0"] :] - flux[0, 0, jump["t0"] :], jump["step"])
    seg = slice(drop["t0"], drop["t0"] + drop["length"])
    assert np.all(out[1, 0, seg] == 0.0)
    keep = np.ones(100, bool)
    keep[seg] = False
    np.testing.assert_array_equal(out[1, 0, keep], flux[1, 0, keep])


# -- the study's bookkeeping ------------------------------------------------------------------
def _check_bookkeeping(data: AnomalySet, store: ObservationStore) -> None:
    assert len(np.unique(data.row)) == len(data.row)  # an observation appears once
    normal = data.label == NORMAL
    np.testing.assert_array_equal(data.flux[normal], store.read(data.row[normal])["flux"])
    for j in np.flatnonzero(~normal):
        assert data.params[j]["kind"] == data.kind[j]
        assert not np.array_equal(data.flux[j], store.read([data.row[j]])["flux"][0])
    assert all(data.params[j] is None for j in np.flatnonzero(normal))
    assert set(data.kind[normal]) == {"normal"}
    np.testing.assert_array_equal(data.source_id, store.source_id[data.row])


def test_galaxy_set_labels_and_shared_path(galaxy_store):
    store, prep = galaxy_store
    s = AnomalySettings(
        splits={"val": 0.0, "test": 0.9, "seed": 0},
        physical_fraction=0.1,
        artefact_fraction=0.1,
        n_controls=1,
    )
    data = galaxy_anomaly_set(store, s, prep)
    _check_bookkeeping(data, store)
    counts = data.counts()
    assert counts["physical"] == 2 and counts["instrument"] >= 1  # one host, both surveys
    host = data.source_id[data.label == PHYSICAL]
    assert host[0] == host[1] and set(data.instrument[data.label == PHYSICAL]) == {"hsc", "legacy"}
    assert data.info["controls"]["max_abs_diff_vs_store"] == 0.0


def test_galaxy_normals_are_rerendered_when_the_store_cannot_be_reproduced(galaxy_store):
    store, _ = galaxy_store
    other = galaxy_prep_from_store(SimpleNamespace(config={**store.config, "seed": 99}))
    s = AnomalySettings(
        splits={"val": 0.0, "test": 0.9, "seed": 0}, physical_fraction=0.1, n_controls=1
    )
    data = galaxy_anomaly_set(store, s, other)
    assert data.info["normals"].startswith("re-rendered")
    assert data.info["controls"]["max_abs_diff_vs_store"] > 0
    j = int(np.flatnonzero(data.label == NORMAL)[0])
    again = observe_source(other, str(data.instrument[j]), int(data.source_id[j]))["flux"]
    np.testing.assert_array_equal(data.flux[j], again)


def test_lightcurve_set_labels(lc_store):
    s = AnomalySettings(
        splits={"val": 0.0, "test": 0.5, "seed": 0},
        physical_fraction=0.05,
        artefact_fraction=0.05,
    )
    data = lightcurve_anomaly_set(lc_store, s)
    _check_bookkeeping(data, lc_store)
    n = len(data.label)
    assert data.counts()["physical"] == round(0.05 * n) == data.counts()["instrument"]
    assert set(data.kind[data.label == PHYSICAL]) <= {"dip", "flare"}
    assert set(data.kind[data.label == INSTRUMENT]) <= {"jump", "dropout"}
    assert data.info["controls"]["max_abs_diff_vs_store"] < 1e-6
    again = lightcurve_anomaly_set(lc_store, s)
    np.testing.assert_array_equal(again.flux, data.flux)


def test_split_must_match_the_training_run(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "config.yaml").write_text("train:\n  val: 0.05\n  test: 0.05\n  split_seed: 0\n")
    check_run_split(tmp_path / "model", AnomalySettings().splits)
    bad = AnomalySettings(splits={"val": 0.1, "test": 0.1, "seed": 0}).splits
    with pytest.raises(ConfigError, match="held-out sources"):
        check_run_split(tmp_path / "model", bad)
    with pytest.raises(ConfigError, match="train"):
        AnomalySettings(use_splits=("train",))


# -- scores -----------------------------------------------------------------------------------
def test_knn_ranks_an_obvious_outlier_first():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 8)).astype(np.float32)
    z[123] += 25.0
    assert int(np.argmax(knn_scores(z, k=5))) == 123
    assert int(np.argmax(iforest_scores(z, n_estimators=50, seed=0))) == 123
    positive = np.zeros(300, bool)
    positive[123] = True
    assert precision_at_k(knn_scores(z, k=5), positive) == 1.0


def _toy_set(label: np.ndarray) -> AnomalySet:
    """An anomaly set of the given labels, in two instruments, for scoring tests."""
    n = len(label)
    return AnomalySet(
        flux=np.zeros((n, 1, 2), np.float32),
        label=label,
        kind=np.where(label == 0, "normal", np.where(label == 1, "ring", "trail")),
        source_id=np.arange(n),
        instrument=np.array(["a", "b"] * (n // 2)),
        row=np.arange(n),
        params=[None] * n,
    )


def test_score_spaces_separates_the_two_classes():
    rng = np.random.default_rng(1)
    n = 400
    label = np.zeros(n, np.int8)
    label[:4], label[4:8] = PHYSICAL, INSTRUMENT
    phys = rng.normal(size=(n, 4)).astype(np.float32)
    phys[:4] += 20.0  # physical objects stand out here only
    inst = rng.normal(size=(n, 4)).astype(np.float32)
    inst[4:8] -= 20.0
    data = _toy_set(label)
    res = score_spaces(
        {"physics": phys, "instrument": inst}, data, AnomalySettings(k=5, iforest_trees=20)
    )
    pooled = res["physics"]["knn"]["pooled"]
    assert pooled["physical"]["precision_at_k"] == 1.0
    assert pooled["instrument"]["precision_at_k"] == 0.0
    assert res["instrument"]["knn"]["pooled"]["instrument"]["precision_at_k"] == 1.0
    assert set(res["physics"]["knn"]["per_instrument"]) == {"a", "b"}


def test_whitening_isolates_an_outlier_along_a_narrow_direction():
    rng = np.random.default_rng(2)
    z = np.stack([100.0 * rng.normal(size=500), 0.1 * rng.normal(size=500)], axis=1)
    z[7] = [0.0, 2.0]  # 20 sigma along the narrow axis, ordinary along the wide one
    w = whiten(z)
    np.testing.assert_allclose(np.cov(w.T), np.eye(2), atol=1e-4)
    np.testing.assert_allclose(w.mean(axis=0), 0.0, atol=1e-5)
    assert np.argsort(-knn_scores(z.astype(np.float32), k=5)).tolist().index(7) > 10
    assert int(np.argmax(knn_scores(w, k=5))) == 7
    # a constant axis carries nothing and is dropped; no variance at all is an error
    assert whiten(np.c_[z, np.ones(500)]).shape == (500, 2)
    with pytest.raises(ValueError, match="do not vary"):
        whiten(np.ones((5, 3)))


def test_score_spaces_adds_the_whitened_copies_it_is_asked_for():
    rng = np.random.default_rng(3)
    n = 300
    label = np.zeros(n, np.int8)
    label[:3], label[3:6] = PHYSICAL, INSTRUMENT
    phys = np.stack([100.0 * rng.normal(size=n), 0.1 * rng.normal(size=n)], axis=1)
    phys[:3, 1] = 3.0  # odd along the narrow axis only
    data = _toy_set(label)
    settings = AnomalySettings(k=5, iforest_trees=20, whiten=["physics"])
    res = score_spaces({"physics": phys.astype(np.float32)}, data, settings)
    assert set(res) == {"physics", "physics (whitened)"}
    assert res["physics (whitened)"]["knn"]["pooled"]["physical"]["precision_at_k"] == 1.0
    assert res["physics"]["knn"]["pooled"]["physical"]["precision_at_k"] < 1.0
    with pytest.raises(ConfigError, match="instrument"):
        score_spaces({"physics": phys}, data, AnomalySettings(whiten=["instrument"]))
