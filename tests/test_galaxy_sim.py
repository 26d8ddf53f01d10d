"""Tests for the multi-survey GalSim galaxy simulator: truth recovery, smooth conditions,
determinism, on-disk layout and the accuracy of the Sersic-grid speed-up."""

from __future__ import annotations

import dataclasses
import hashlib

import h5py
import numpy as np
import pytest

galsim = pytest.importorskip("galsim")

from whatsreal.simulate.galaxies import (  # noqa: E402
    GalaxySimConfig,
    healpix_nest,
    prepare,
    simulate_galaxies,
)
from whatsreal.simulate.galaxy_conditions import moffat_neff_pix  # noqa: E402
from whatsreal.simulate.galaxy_population import PopulationConfig  # noqa: E402
from whatsreal.simulate.galaxy_presets import SURVEY_PRESETS  # noqa: E402
from whatsreal.simulate.galaxy_render import (  # noqa: E402
    SersicLibrary,
    exact_profile,
    moffat_psf,
    render_stamp,
    render_stamp_direct,
    to_common_grid,
)

SURVEYS = ("hsc", "legacy", "lsst")
# the single-Sersic population without sky neighbours, whose renders have exact answers
SERSIC = GalaxySimConfig(population=PopulationConfig(morphology="sersic", neighbours=False))


@pytest.fixture(scope="module")
def library() -> SersicLibrary:
    """The default 64-point Sersic grid, built once for the module."""
    return SersicLibrary()


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """Eight isolated single-Sersic sources in three surveys (the photometry tests need no
    neighbour light), with the Multimodal-Universe-like layout too."""
    root = tmp_path_factory.mktemp("gal")
    return root, _simulate_tiny(root, "a.store", workers=1)


def _simulate_tiny(root, name: str, workers: int, seed: int = 5):
    """The tiny store's eight Sersic sources (seed 5), with its MMU layout under root/mmu."""
    return simulate_galaxies(
        root / name,
        n=8,
        seed=seed,
        workers=workers,
        progress=False,
        mmu_out=root / "mmu",
        config=SERSIC,
    )


def _no_psf() -> list:
    """A negligible PSF (0.01" Gaussian) for the four bands, to test the galaxy itself."""
    return [galsim.Gaussian(fwhm=0.01)] * 4


# -- truth recovery ---------------------------------------------------------------------------
@pytest.mark.parametrize("survey", ["hsc", "legacy"])
def test_hsm_recovers_flux_size_ellipticity(library, survey):
    """Noise-free common-grid stamps (negligible PSF) recover the truth.

    Adaptive moments (HSM) give the true e1, e2 for n <= 1, and for n = 0.5 (a Gaussian, where
    moments are exact) the true flux and half-light radius. For cuspy profiles (n >= 2.5) the
    pixel response biases adaptive moments (a property of HSM, not of the rendering), so there
    the check is that the ellipse of the true r_half and (e1, e2) holds half of the flux.
    """
    p = SURVEY_PRESETS[survey]
    grid_scale = p.native_size * p.pixel_scale / 48
    area = (grid_scale / p.pixel_scale) ** 2
    rng = np.random.default_rng(0)
    flux = np.full(4, 1000.0)
    for n in (0.5, 1.0, 2.5, 4.0):
        r_half = 0.8 if n > 1 else 1.0
        e1, e2 = rng.uniform(-0.3, 0.3, 2)
        comps = [(prof, flux * w) for prof, w in library.parts(n, r_half, e1, e2)]
        native = render_stamp(comps, _no_psf(), p.pixel_scale, p.native_size)
        img, _ = to_common_grid(native, None, 48, area)
        if n <= 1:
            mom = galsim.hsm.FindAdaptiveMom(galsim.Image(img[2], scale=grid_scale))
            tol_e = 0.01 if survey == "hsc" else 0.02  # upsampling smooths a 0.262" grid
            assert abs(mom.observed_shape.g1 - e1) < tol_e, (n, mom.observed_shape, e1)
            assert abs(mom.observed_shape.g2 - e2) < tol_e, (n, mom.observed_shape, e2)
        if n == 0.5:
            # Gaussian: amplitude = flux; sigma (geometric mean of axes, in grid px) relates to
            # r_half = sqrt(2 ln 2) sigma, in arcsec
            assert mom.moments_amp == pytest.approx(1000.0, rel=0.02)
            r_meas = mom.moments_sigma * grid_scale * np.sqrt(2 * np.log(2))
            assert r_meas == pytest.approx(r_half, rel=0.03)
        else:
            # general n: the ellipse of the true r_half holds half of the flux
            yy, xx = np.mgrid[:48, :48] - 23.5
            xx, yy = xx * grid_scale, yy * grid_scale
            shear = galsim.Shear(g1=e1, g2=e2)
            inv = np.linalg.inv(shear.getMatrix())
            u = inv[0, 0] * xx + inv[0, 1] * yy
            v = inv[1, 0] * xx + inv[1, 1] * yy
            inside = img[2][np.hypot(u, v) < r_half].sum()
            assert inside / img[2].sum() == pytest.approx(0.5, abs=0.03), (n, survey)


def test_observed_stamps_carry_the_catalogue_flux(tiny_store):
    """Noise-free stamps sum to the extincted catalogue flux (22.5 zero-point) in every survey,
    for compact isolated galaxies; noise has the stored inverse variance."""
    _, path = tiny_store
    with h5py.File(path / "observations.h5") as f:
        clean = f["data/clean"][:]
        flux = f["data/flux"][:]
        ivar = f["data/ivar"][:]
        sid = f["table/source_id"][:]
        inst = f["table/instrument"][:]
        ext = f["truth/observation/extinction"][:]
        mag = f["truth/source/mag"][:][sid]
        r_half = f["truth/source/r_half"][:][sid]
        comp = f["truth/source/has_companion"][:][sid]
        star = f["truth/source/is_star"][:][sid]
    expected = 10 ** (-0.4 * (mag + ext - 22.5))
    ok = ((r_half < 0.6) | (star == 1)) & (comp == 0)
    assert ok.sum() >= 6
    ratio = clean.sum(axis=(2, 3))[ok] / expected[ok]
    assert np.all(np.abs(ratio - 1) < 0.03), ratio
    # ivar is the marginal variance after resampling, so pulls are unit-normal in every survey
    pull = (flux - clean) * np.sqrt(ivar)
    for code in range(len(SURVEYS)):
        p = pull[inst == code]
        assert 0.97 < p.std() < 1.03, (SURVEYS[code], p.std())
        assert abs(p.mean()) < 0.03


def test_depth_and_gain_are_consistent():
    """Over a wide area (many pointings) the realised depths have the preset medians, and each
    realised depth is the 5-sigma point-source flux of the stored sky noise and PSF."""
    from whatsreal.simulate.galaxy_conditions import survey_conditions

    rng = np.random.default_rng(1)
    x, y = rng.uniform(-6, 6, (2, 4000))

    for code, name in enumerate(SURVEYS):
        p = SURVEY_PRESETS[name]
        cond = survey_conditions(p, x, y, np.full(x.size, 0.02), 0, code)
        assert np.allclose(np.median(cond["depth"], axis=0), p.depth, atol=0.1), name
        neff = moffat_neff_pix(cond["psf_fwhm"], p.psf_beta, p.pixel_scale)
        f5 = 5 * cond["sky_sigma"] * np.sqrt(neff)
        assert np.allclose(p.zero_point - 2.5 * np.log10(f5), cond["depth"])


# -- smooth conditions ------------------------------------------------------------------------
def test_conditions_are_smooth_on_the_sky():
    """Pairs closer than 3' have much closer PSF FWHM and depth than random pairs."""
    pop = PopulationConfig(density=0.25)
    cfg = GalaxySimConfig(n_sources=3000, population=pop)
    prep = prepare(cfg, seed=2)
    x, y = prep["population"]["x_deg"], prep["population"]["y_deg"]
    d2 = (x[:, None] - x[None, :]) ** 2 + (y[:, None] - y[None, :]) ** 2
    i, j = np.nonzero(np.triu(d2 < (3 / 60) ** 2, k=1))
    assert i.size > 500
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, x.size, (2, 20000))
    for name in SURVEYS:
        c = prep["conditions"][name]
        for key in ("psf_fwhm", "depth"):
            near = np.abs(c[key][i] - c[key][j]).mean()
            far = np.abs(c[key][a] - c[key][b]).mean()
            assert near < 0.3 * far, (name, key, near, far)
    ebv = prep["conditions"]["hsc"]["ebv"]
    assert np.abs(ebv[i] - ebv[j]).mean() < 0.1 * np.abs(ebv[a] - ebv[b]).mean()
    assert np.array_equal(ebv, prep["conditions"]["legacy"]["ebv"])  # one sky for all surveys


# -- determinism and layout ---------------------------------------------------------------------
def _contents(path) -> dict[str, np.ndarray]:
    """Every dataset of a store's observations.h5 (attributes hold a timestamp, so skip them)."""
    out = {}

    def grab(key: str, obj) -> None:
        if isinstance(obj, h5py.Dataset):
            out[key] = obj[()]

    with h5py.File(path / "observations.h5") as f:
        f.visititems(grab)
    return out


def test_same_seed_same_files(tiny_store, tmp_path):
    """Same seed -> identical datasets, whatever the worker count; other seed -> different."""
    root, path = tiny_store
    again = _simulate_tiny(tmp_path, "b.store", workers=2)
    a, b = _contents(path), _contents(again)
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    for name in SURVEYS:
        (fa,) = (root / "mmu" / name).rglob("*.hdf5")
        (fb,) = (tmp_path / "mmu" / name).rglob("*.hdf5")
        digest = [hashlib.sha256(f.read_bytes()).hexdigest() for f in (fa, fb)]
        assert digest[0] == digest[1], name
    other = simulate_galaxies(
        tmp_path / "c.store", n=8, seed=6, workers=1, progress=False, config=SERSIC
    )
    assert not np.array_equal(_contents(other)["data/flux"], a["data/flux"])


def test_store_layout(tiny_store):
    """Store keys, dtypes and shapes; shared source ids; positions in degrees."""
    _, path = tiny_store
    c = _contents(path)
    n_obs = 8 * len(SURVEYS)
    for key in ("data/flux", "data/ivar", "data/clean"):
        assert c[key].shape == (n_obs, 4, 48, 48) and c[key].dtype == np.float32
    assert (c["data/ivar"] > 0).all()
    for key in ("psf_fwhm_g", "depth_z", "n_exp_i", "ebv", "ra", "dec", "source_id"):
        assert c[f"table/{key}"].shape == (n_obs,)
    assert c["truth/observation/psf_fwhm"].shape == (n_obs, 4)
    counts = np.bincount(c["table/source_id"])
    assert (counts == len(SURVEYS)).all()  # every source seen once by every survey
    for key in ("sersic_n", "r_half", "e1", "e2", "redshift", "mag_i", "g_r"):
        assert c[f"truth/source/{key}"].shape == (8,)
    assert c["truth/instrument/pixel_scale"].tolist() == [0.168, 0.262, 0.2]


def test_mmu_layout(tiny_store):
    """The Multimodal-Universe-like files: keys, dtypes and native shapes per survey."""
    root, _ = tiny_store
    for name in SURVEYS:
        p = SURVEY_PRESETS[name]
        files = list((root / "mmu" / name / "sim").glob("healpix=*/*.hdf5"))
        assert files, name
        with h5py.File(files[0]) as f:
            m = f["object_id"].shape[0]
            assert f["image_array"].shape == (m, 4, p.native_size, p.native_size)
            assert f["image_array"].dtype == np.float32
            assert f["image_ivar"].shape == f["image_array"].shape
            assert f["image_mask"].dtype == bool
            assert f["image_band"][0].tolist() == [f"{name}-{b}".encode() for b in "griz"]
            assert np.allclose(f["image_scale"][:], p.pixel_scale)
            assert f["image_psf_fwhm"].shape == (m, 4)
            assert f["ra"].dtype == np.float64


def test_healpix_nest_known_values():
    """Our ang2pix_nest: base pixels at nside 1, the nested hierarchy, and equal areas."""
    base = healpix_nest(
        np.array([45.0, 135.0, 0.0, 90.0, 45.0]), np.array([60, 60, 0, 0, -60.0]), 1
    )
    assert base.tolist() == [0, 1, 4, 5, 8]
    rng = np.random.default_rng(0)
    z = rng.uniform(-1, 1, 100_000)
    ra, dec = rng.uniform(0, 360, z.size), np.rad2deg(np.arcsin(z))
    for nside in (1, 2, 4, 8):  # a nested pixel's parent is its index // 4
        assert np.array_equal(healpix_nest(ra, dec, 2 * nside) // 4, healpix_nest(ra, dec, nside))
    counts = np.bincount(healpix_nest(ra, dec, 4), minlength=192)
    assert counts.size == 192 and counts.min() > 0
    assert counts.std() / counts.mean() < 3 / np.sqrt(counts.mean())  # equal areas


# -- the speed trick ----------------------------------------------------------------------------
def test_sersic_grid_error_far_below_noise(library):
    """Interpolating between grid indices (and sharing the galaxy transform over bands) differs
    from exact one-band-at-a-time GalSim renders by < 5% of the sky noise alone (the pixel
    noise is larger still: source Poisson noise adds to it), for the brightest catalogue
    galaxies (i = 16), in the deepest band's median sky noise of every survey."""
    rng = np.random.default_rng(3)
    for name in SURVEYS:
        p = SURVEY_PRESETS[name]
        neff = moffat_neff_pix(np.asarray(p.psf_fwhm), p.psf_beta, p.pixel_scale)
        sky = (10 ** (-0.4 * (np.asarray(p.depth) - p.zero_point)) / (5 * np.sqrt(neff))).min()
        flux = np.full(4, 10 ** (-0.4 * (16.0 - p.zero_point)))
        psfs = [moffat_psf(f, 0.02, -0.01, p.psf_beta) for f in p.psf_fwhm]
        worst = 0.0
        for n in (0.55, 0.9, 1.47, 1.52, 2.7, 4.4, 5.8):
            r_half, e1, e2 = rng.uniform(0.3, 2.0), *rng.uniform(-0.3, 0.3, 2)
            off = tuple(rng.uniform(-0.5, 0.5, 2) * p.pixel_scale)
            fast = render_stamp(
                [(prof, flux * w) for prof, w in library.parts(n, r_half, e1, e2)],
                psfs,
                p.pixel_scale,
                p.native_size,
                off,
            )
            exact = render_stamp_direct(
                [(exact_profile(n, r_half, e1, e2), flux)], psfs, p.pixel_scale, p.native_size, off
            )
            worst = max(worst, np.abs(fast - exact).max() / sky)
        assert worst < 0.05, (name, worst)


def test_config_rejects_unknown_survey():
    """A typo in a survey name fails with the list of known surveys."""
    from whatsreal.errors import ConfigError

    with pytest.raises(ConfigError, match="known surveys"):
        GalaxySimConfig(surveys=("hsc", "sdss"))
    with pytest.raises(ConfigError):
        dataclasses.replace(GalaxySimConfig(), n_grid=500)


def test_pairing_gives_same_survey_sky_neighbours(tiny_store):
    """``build_pairing`` on the simulated store: neighbours share the survey, never the source."""
    from whatsreal.pairing import build_pairing
    from whatsreal.store import ObservationStore

    _, path = tiny_store
    nb = build_pairing(path, k=5)
    store = ObservationStore(path)
    idx = np.asarray(nb.index)
    assert idx.shape == (store.n_obs, 5)
    rows, cols = np.nonzero(idx >= 0)
    assert rows.size > 0
    assert (store.instrument[idx[rows, cols]] == store.instrument[rows]).all()
    assert (store.source_id[idx[rows, cols]] != store.source_id[rows]).all()


# -- bulge + disk + knots (issue 11, item 7) --------------------------------------------------
def test_bulge_disk_population_keeps_the_sersic_catalogue_and_adds_components():
    from whatsreal.errors import ConfigError
    from whatsreal.simulate.galaxy_population import draw_population

    sersic = PopulationConfig(morphology="sersic", neighbours=False)
    plain = draw_population(2000, sersic, 3)
    again = draw_population(2000, sersic, 3)
    assert all(np.array_equal(plain[k], again[k]) for k in plain)
    assert "bulge_fraction" not in plain  # the Sersic catalogue is unchanged
    pop = draw_population(2000, PopulationConfig(morphology="bulge_disk", neighbours=False), 3)
    gal = pop["is_star"] == 0
    frac = pop["component_frac"][gal]
    np.testing.assert_allclose(frac.sum(axis=1), 1.0, atol=1e-12)  # shares of each band
    # the i-band shares are the bulge-to-total and the knots' part of the disk
    bt, fk = pop["bulge_fraction"][gal], pop["knot_fraction"][gal]
    np.testing.assert_allclose(frac[:, 0, 2], bt, atol=1e-12)
    np.testing.assert_allclose(frac[:, 2, 2], (1 - bt) * fk, atol=1e-12)
    t = pop["sed_type"][gal]
    assert bt[t < 0.7].mean() > 0.55 > 0.25 > bt[t >= 1.5].mean()
    assert (fk[t < 0.7] == 0).all() and fk[t >= 1.5].max() > 0.2
    assert (pop["n_knots"][gal] > 0).sum() == (fk > 0).sum()
    # the red bulge reddens the composite: g - r above the disk's own colour where B/T is big
    big = bt > 0.5
    assert (frac[big, 0, 0] < frac[big, 0, 2]).all()  # the bulge holds less of g than of i
    with pytest.raises(ConfigError, match="morphology"):
        PopulationConfig(morphology="irregular")


def test_a_bulge_disk_galaxy_without_bulge_or_knots_is_the_exponential_disk(library):
    """Known answer: B/T = 0 and no knots render exactly the n = 1 Sersic of the same size,
    shear and flux; with knots the flux is conserved and the knots are the same each time."""
    from whatsreal.simulate.galaxies import _components

    band_flux = np.array([100.0, 200.0, 300.0, 350.0])
    base = {
        "is_star": np.array([0]),
        "r_half": np.array([0.5]),
        "e1": np.array([0.2]),
        "e2": np.array([-0.1]),
        "has_companion": np.array([0]),
    }
    disk = {
        **base,
        "component_frac": np.array([[[0.0] * 4, [1.0] * 4, [0.0] * 4]]),
        "bulge_n": np.array([4.0]),
        "bulge_r_half": np.array([0.1]),
        "n_knots": np.array([0]),
        "knot_seed": np.array([7]),
    }
    sersic = {**base, "sersic_n": np.array([1.0])}
    psfs = [moffat_psf(0.7, 0.0, 0.0, 3.5)] * 4
    a = render_stamp(_components(library, disk, 0, band_flux, None), psfs, 0.168, 48)
    b = render_stamp(_components(library, sersic, 0, band_flux, None), psfs, 0.168, 48)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    knotty = {
        **disk,
        "component_frac": np.array([[[0.3] * 4, [0.5] * 4, [0.2] * 4]]),
        "n_knots": np.array([30]),
    }
    c = render_stamp(_components(library, knotty, 0, band_flux, None), psfs, 0.168, 48)
    again = render_stamp(_components(library, knotty, 0, band_flux, None), psfs, 0.168, 48)
    np.testing.assert_array_equal(c, again)  # knots seeded per source: every survey agrees
    np.testing.assert_allclose(c.sum(axis=(1, 2)) / band_flux, 1.0, atol=0.02)
    assert np.abs(c - a).max() > 0.01 * a.max()  # the bulge and knots change the image


def test_bulge_disk_store_holds_each_components_truth(tmp_path):
    cfg = GalaxySimConfig(population=PopulationConfig(morphology="bulge_disk"))
    path = simulate_galaxies(
        tmp_path / "bd.store",
        n=6,
        surveys=("hsc", "legacy"),
        seed=2,
        workers=1,
        progress=False,
        config=cfg,
    )
    from whatsreal.store import ObservationStore

    truth = ObservationStore(path).truth_source
    for key in ("bulge_fraction", "bulge_n", "bulge_r_half", "knot_fraction", "n_knots"):
        assert truth[key].shape == (6,)
    assert "sersic_n" not in truth  # no single index describes a composite galaxy
    assert ObservationStore(path).config["galaxies"]["population"]["morphology"] == "bulge_disk"


def test_sky_neighbours_leave_the_catalogue_and_are_the_same_sky_for_every_source():
    """Known answers: the neighbour option changes no catalogue column; two catalogue
    sources near each other list each other at opposite offsets; offsets lie within the
    stamp half-width + margin; the count inside the stamp and its flux follow the table."""
    from whatsreal.errors import ConfigError
    from whatsreal.simulate.galaxy_population import STAMP_HALF_ARCSEC, draw_population

    cfg = PopulationConfig(neighbours=True, density=30.0)  # crowded: catalogue pairs occur
    plain = draw_population(400, dataclasses.replace(cfg, neighbours=False), 5)
    pop = draw_population(400, cfg, 5)
    assert all(np.array_equal(plain[k], pop[k]) for k in plain)
    valid = pop["nb_valid"].astype(bool)
    assert valid.any(axis=1).mean() > 0.3
    reach = STAMP_HALF_ARCSEC + cfg.neighbour_margin
    assert np.abs(pop["nb_dx"][valid]).max() <= reach + 1e-9
    assert np.abs(pop["nb_dy"][valid]).max() <= reach + 1e-9
    # brightest first
    mag_i = np.where(valid, pop["nb_mag"][..., 2], 99.0)
    assert (np.diff(mag_i, axis=1) >= 0).all()
    inside = valid & (np.abs(pop["nb_dx"]) < STAMP_HALF_ARCSEC)
    inside &= np.abs(pop["nb_dy"]) < STAMP_HALF_ARCSEC
    np.testing.assert_array_equal(pop["n_neighbours"], inside.sum(1))
    flux = np.where(inside, 10 ** (-0.4 * (pop["nb_mag"][..., 2] - 22.5)), 0).sum(1)
    np.testing.assert_allclose(pop["neighbour_flux_i"], flux)
    # catalogue neighbours: i lists j at (dx, dy) exactly when j lists i at (-dx, -dy)
    x, y = pop["x_deg"] * 3600, pop["y_deg"] * 3600
    pairs = 0
    for i in range(400):
        for j in np.flatnonzero(pop["nb_catalogue"][i]):
            dx, dy = pop["nb_dx"][i, j], pop["nb_dy"][i, j]
            k = np.flatnonzero(np.isclose(x - x[i], dx) & np.isclose(y - y[i], dy))
            assert k.size == 1
            back = np.isclose(pop["nb_dx"][k[0]], -dx) & pop["nb_catalogue"][k[0]].astype(bool)
            assert back.any() or pop["nb_valid"][k[0]].all()  # unless its table is full
            np.testing.assert_allclose(pop["nb_mag"][i, j], pop["mag"][k[0]])
            pairs += 1
    assert pairs > 0
    with pytest.raises(ConfigError, match="max_neighbours"):
        PopulationConfig(neighbours=True, max_neighbours=0)


def test_sky_neighbours_add_the_same_light_in_every_survey():
    """The neighbours are one sky: the light they add to a stamp (with minus without) is
    non-negative and, where they lie well inside it, the same flux in every survey."""
    from whatsreal.simulate.galaxies import observe_source
    from whatsreal.simulate.galaxy_population import STAMP_HALF_ARCSEC

    plain = PopulationConfig(neighbours=False)  # the default galaxies, without and with
    base = GalaxySimConfig(n_sources=300, surveys=("hsc", "legacy"), population=plain)
    nb_cfg = dataclasses.replace(base, population=dataclasses.replace(plain, neighbours=True))
    prep, prep_nb = prepare(base, 4), prepare(nb_cfg, 4)
    pop = prep_nb["population"]
    inner = STAMP_HALF_ARCSEC - 2.0
    valid = pop["nb_valid"].astype(bool)
    far = valid & ((np.abs(pop["nb_dx"]) > inner) | (np.abs(pop["nb_dy"]) > inner))
    clean = valid.any(1) & ~far.any(1) & (pop["nb_is_star"] == 0).all(1)
    picks = np.flatnonzero(clean)[:3]
    assert picks.size == 3
    for i in picks:
        added = {}
        for s in ("hsc", "legacy"):
            diff = observe_source(prep_nb, s, i)["clean"] - observe_source(prep, s, i)["clean"]
            assert diff.min() > -1e-4 * observe_source(prep, s, i)["clean"].max()
            added[s] = diff[2].sum()  # i band, nanomaggies
        expected = (10 ** (-0.4 * (pop["nb_mag"][i, valid[i], 2] - 22.5))).sum()
        for s in ("hsc", "legacy"):  # extinction dims it a little; the stamp edge cuts wings
            assert 0.75 * expected < added[s] < 1.0 * expected
        np.testing.assert_allclose(added["hsc"], added["legacy"], rtol=0.1)
