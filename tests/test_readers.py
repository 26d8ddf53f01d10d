"""Readers of real survey layouts and seed 000's transform, on tiny files that the tests write
in exactly the real layouts (MMU HDF5 trees, FITS cutouts + catalogue, TESS light-curve FITS,
long Parquet/CSV tables)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from whatsreal.errors import ConfigError, InputLayoutError
from whatsreal.prepare.galaxies import FitsCutoutReader, MMUReader
from whatsreal.prepare.lightcurves import (
    LightCurveGrid,
    LongTableReader,
    TessReader,
    bin_lightcurve,
)
from whatsreal.prepare.transform import Seed000Transform, sampling_matrix

HSC_BANDS = [b"hsc-g", b"hsc-r", b"hsc-i", b"hsc-z", b"hsc-y"]
DES_BANDS = [b"DES-G", b"DES-R", b"DES-I", b"DES-Z"]


# -- writers of the real layouts ---------------------------------------------------------------


def write_mmu_file(
    path: Path,
    ids,
    bands=HSC_BANDS,
    size: int = 160,
    scale: float = 0.168,
    seed: int = 0,
    scale_shape: str = "per_band",
    mask_key: str = "image_mask",
    catalogue: dict | None = None,
    drop: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """One MMU ``healpix=N/*.hdf5`` file: the keys and shapes of the MMU HSC/Legacy builders."""
    rng = np.random.default_rng(seed)
    n, c = len(ids), len(bands)
    data = {
        "object_id": np.asarray(ids, np.int64),
        "ra": rng.uniform(150, 151, n),
        "dec": rng.uniform(2, 3, n),
        "image_array": rng.normal(0, 0.5, (n, c, size, size)).astype(np.float32),
        "image_band": np.array([bands] * n, dtype="S8"),
        "image_ivar": rng.uniform(1, 4, (n, c, size, size)).astype(np.float32),
        "image_psf_fwhm": rng.uniform(0.5, 1.3, (n, c)).astype(np.float32),
    }
    if mask_key == "image_mask":
        data["image_mask"] = np.zeros((n, c, size, size), bool)
    else:
        data["bit_mask"] = np.zeros((n, size, size), bool)
    data["image_scale"] = {
        "per_band": np.full((n, c), scale, np.float32),
        "scalar": np.float32(scale),
    }[scale_shape]
    data.update(catalogue or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            if key not in drop:
                f.create_dataset(key, data=value)
    return data


def hsc_catalogue(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """HSC catalogue columns as MMU ships them (extinction and SDSS shape moments)."""
    rng = np.random.default_rng(seed)
    cols = {"a_g": rng.uniform(0.01, 0.2, n).astype(np.float32)}
    for m in ("11", "22", "12"):
        cols[f"i_sdssshape_shape{m}"] = rng.normal(0, 1, n).astype(np.float32)
    return cols


def legacy_catalogue(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Legacy catalogue columns (EBV, Tractor shapes, type)."""
    rng = np.random.default_rng(seed)
    return {
        "EBV": rng.uniform(0.01, 0.1, n).astype(np.float32),
        "SHAPE_R": rng.uniform(0.3, 3, n).astype(np.float32),
        "SHAPE_E1": rng.normal(0, 0.2, n).astype(np.float32),
        "SHAPE_E2": rng.normal(0, 0.2, n).astype(np.float32),
        "TYPE": np.array([b"SER", b"EXP", b"DEV"] * n)[:n],
    }


@pytest.fixture
def hsc_tree(tmp_path: Path) -> tuple[Path, dict[int, dict]]:
    """An HSC tree with two healpix partitions (one with two files) and an empty one."""
    root = tmp_path / "mmu"
    written = {}
    for hp, name, ids in (
        (1203, "001-of-002.hdf5", [10, 11, 12, 13]),
        (1203, "002-of-002.hdf5", [14, 15]),
        (1500, "001-of-001.hdf5", [20, 21, 22]),
    ):
        path = root / "hsc" / "pdr3_dud_22.5" / f"healpix={hp}" / name
        written[(hp, name)] = write_mmu_file(
            path, ids, seed=hp + len(ids), catalogue=hsc_catalogue(len(ids))
        )
    (root / "hsc" / "pdr3_dud_22.5" / "healpix=1600").mkdir()
    return root, written


# -- MMU reader -------------------------------------------------------------------------------


def test_mmu_reader_streams_the_tree_in_chunks(hsc_tree):
    root, written = hsc_tree
    reader = MMUReader(root, "hsc", chunk=3)
    batches = list(reader)
    assert reader.config == "pdr3_dud_22.5"
    assert [len(b) for b in batches] == [3, 1, 2, 3]  # chunked per file, files in order
    assert reader.counts["empty_partition"] == 1
    assert [p for p, _ in reader.partitions] == [1203, 1500, 1600]
    ids = np.concatenate([b.object_id for b in batches])
    assert ids.tolist() == [10, 11, 12, 13, 14, 15, 20, 21, 22]
    first = written[(1203, "001-of-002.hdf5")]
    b0 = batches[0]
    np.testing.assert_array_equal(b0.image, first["image_array"][:3])
    np.testing.assert_array_equal(b0.ivar, first["image_ivar"][:3])
    np.testing.assert_array_equal(b0.ra, first["ra"][:3])
    assert b0.bands == ("g", "r", "i", "z", "y")
    assert b0.band_names == ("hsc-g", "hsc-r", "hsc-i", "hsc-z", "hsc-y")
    assert b0.pixel_scale == pytest.approx(0.168)
    assert b0.partition == 1203 and b0.psf_fwhm.shape == (3, 5)
    assert set(b0.catalogue) == {
        "a_g",
        "i_sdssshape_shape11",
        "i_sdssshape_shape22",
        "i_sdssshape_shape12",
    }
    np.testing.assert_array_equal(b0.catalogue["a_g"], first["a_g"][:3])
    assert reader.inspect(reader.files[0])["shape"] == (5, 160, 160)


def test_mmu_legacy_scalar_scale_bit_mask_and_upper_case_bands(tmp_path):
    path = tmp_path / "legacysurvey" / "dr10_south_21" / "healpix=7" / "001-of-001.hdf5"
    data = write_mmu_file(
        path,
        [1, 2],
        bands=DES_BANDS,
        scale=0.262,
        scale_shape="scalar",
        mask_key="bit_mask",
        catalogue=legacy_catalogue(2),
    )
    with h5py.File(path, "a") as f:
        f["bit_mask"][0, 5, 6] = True
    (batch,) = MMUReader(tmp_path, "legacysurvey", columns=["EBV", "SHAPE_R", "TYPE"])
    assert batch.bands == ("g", "r", "i", "z") and batch.pixel_scale == pytest.approx(0.262)
    assert batch.mask.shape == (2, 160, 160) and batch.mask[0, 5, 6] and batch.mask.sum() == 1
    assert batch.catalogue["TYPE"].tolist() == ["SER", "EXP"]
    np.testing.assert_array_equal(batch.catalogue["SHAPE_R"], data["SHAPE_R"])
    grid = Seed000Transform().apply(batch)
    assert grid.flux.shape == (2, 4, 48, 48) and grid.n_bad.tolist() == [
        4,
        0,
    ]  # one pixel, all bands


def _tree(tmp_path: Path, **kw) -> Path:
    write_mmu_file(tmp_path / "hsc" / "c" / "healpix=1" / "a.hdf5", [1, 2, 3], size=16, **kw)
    return tmp_path


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda p: _tree(p, drop=("image_band",)), r"missing key\(s\) \['image_band'\]"),
        (lambda p: _tree(p, bands=[b"hsc-g", b"hsc-q"]), r"unknown band name 'hsc-q'"),
        (lambda p: _tree(p, bands=[b"hsc-g", b"hsc-G"]), r"same filter twice"),
        (lambda p: _tree(p, drop=("image_scale",)), r"no 'image_scale' key"),
    ],
)
def test_mmu_layout_errors_name_file_and_key(tmp_path, setup, match):
    root = setup(tmp_path)
    with pytest.raises(InputLayoutError, match=match) as err:
        list(MMUReader(root, "hsc"))
    assert "a.hdf5" in str(err.value)


def test_mmu_wrong_shapes_scales_and_damaged_files(tmp_path):
    root = _tree(tmp_path)
    path = root / "hsc" / "c" / "healpix=1" / "a.hdf5"
    with h5py.File(path, "a") as f:
        del f["image_ivar"]
        f["image_ivar"] = np.ones((3, 5, 8, 8), np.float32)
    with pytest.raises(InputLayoutError, match=r"'image_ivar' has shape \(3, 5, 8, 8\)"):
        list(MMUReader(root, "hsc"))
    with h5py.File(path, "a") as f:
        del f["image_ivar"], f["image_array"]
        f["image_array"] = np.ones((3, 16, 16), np.float32)
    with pytest.raises(InputLayoutError, match=r"expected \(N, C, H, W\)"):
        list(MMUReader(root, "hsc"))
    # a pixel scale that varies, or is not the survey's
    root2 = _tree(tmp_path / "b")
    with h5py.File(root2 / "hsc" / "c" / "healpix=1" / "a.hdf5", "a") as f:
        f["image_scale"][1, 2] = 0.2
    with pytest.raises(InputLayoutError, match="'image_scale' varies"):
        list(MMUReader(root2, "hsc"))
    root3 = _tree(tmp_path / "c", scale=0.262)
    with pytest.raises(InputLayoutError, match=r"told pixel_scale=0.168"):
        list(MMUReader(root3, "hsc", pixel_scale=0.168))
    (batch,) = MMUReader(root3, "hsc")
    with pytest.raises(InputLayoutError, match=r"0.2620\"/px, but survey 'hsc' has 0.168"):
        Seed000Transform().apply(batch)
    # truncated file
    root4 = _tree(tmp_path / "d")
    p4 = root4 / "hsc" / "c" / "healpix=1" / "a.hdf5"
    p4.write_bytes(p4.read_bytes()[: p4.stat().st_size // 3])
    with pytest.raises(InputLayoutError, match="truncated or damaged") as err:
        list(MMUReader(root4, "hsc"))
    assert "a.hdf5" in str(err.value)


def test_mmu_folder_errors_and_duplicates(tmp_path):
    with pytest.raises(InputLayoutError, match=r"<root>/<survey>/<config>"):
        MMUReader(tmp_path, "hsc")
    (tmp_path / "hsc" / "c" / "healpix=3").mkdir(parents=True)
    with pytest.raises(InputLayoutError, match=r"no healpix=<N>/\*\.hdf5 files"):
        MMUReader(tmp_path, "hsc")
    (tmp_path / "hsc" / "c" / "tract_9").mkdir()
    with pytest.raises(InputLayoutError, match="not 'healpix=<N>'"):
        MMUReader(tmp_path, "hsc")
    (tmp_path / "hsc" / "c" / "tract_9").rmdir()
    base = tmp_path / "hsc" / "c"
    write_mmu_file(base / "healpix=3" / "a.hdf5", [1, 2, 3], size=16)
    write_mmu_file(base / "healpix=4" / "b.hdf5", [3, 4], size=16)
    with pytest.raises(InputLayoutError, match=r"duplicate object_id 3 \(first seen in"):
        list(MMUReader(tmp_path, "hsc"))
    reader = MMUReader(tmp_path, "hsc", on_duplicate="skip")
    ids = np.concatenate([b.object_id for b in reader])
    assert ids.tolist() == [1, 2, 3, 4] and reader.counts["duplicate_object_id"] == 1
    (tmp_path / "hsc" / "d").mkdir()
    with pytest.raises(InputLayoutError, match=r"configs \['c', 'd'\]; pass config="):
        MMUReader(tmp_path, "hsc")


# -- seed-000 transform -----------------------------------------------------------------------


def test_transform_reproduces_the_simulator_store(tmp_path):
    """One code path: the simulator's MMU layout through reader + transform gives its store."""
    pytest.importorskip("galsim")
    from whatsreal.simulate.galaxies import simulate_galaxies
    from whatsreal.store import open_store

    simulate_galaxies(
        tmp_path / "s.store",
        n=3,
        surveys="hsc,legacy",
        seed=2,
        workers=1,
        progress=False,
        mmu_out=tmp_path / "mmu",
    )
    store = open_store(tmp_path / "s.store")
    t = Seed000Transform()
    for survey in ("hsc", "legacy"):
        for batch in MMUReader(tmp_path / "mmu", survey):
            grid = t.apply(batch)
            code = store.instrument_code(survey)
            rows = [
                int(np.flatnonzero((store.instrument == code) & (store.source_id == o))[0])
                for o in batch.object_id
            ]
            ref = store.read(rows, arrays=("flux", "ivar"))
            np.testing.assert_allclose(grid.flux, ref["flux"], rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(grid.ivar, ref["ivar"], rtol=1e-5)
            assert grid.n_clamped.sum() == 0 and not grid.mask.any()


def test_units_zero_point_area_and_stretch_constants():
    t = Seed000Transform()
    hsc = np.full((1, 4, 160, 160), 10**1.8, np.float32)  # 63.0957 counts at ZP 27
    out = t.to_grid(hsc, "hsc", "griz", pixel_scale=0.168)
    np.testing.assert_allclose(out.flux, 1.0, rtol=1e-6)  # 1 nanomaggie at ZP 22.5
    leg = np.ones((1, 4, 160, 160), np.float32)
    out = t.to_grid(leg, "legacy", "griz")
    np.testing.assert_allclose(out.flux, (31 / 48) ** 2, rtol=1e-6)  # pixel-area ratio
    assert t.window("hsc") == 48 and t.window("legacysurvey") == 31
    no_area = Seed000Transform(pixel_area_scaling=False)
    np.testing.assert_allclose(no_area.to_grid(leg, "legacy", "griz").flux, 1.0)
    np.testing.assert_allclose(t.stretch(np.array([0.01])), np.arcsinh(1.0) * 0.1)
    # the clamp: native units, seed constants (DES g 6 nanomaggies, HSC i 200 counts)
    leg[0, 0, 80, 80] = 50.0
    assert t.to_grid(leg, "legacy", "griz").n_clamped.tolist() == [1]
    hsc[0, 2, 80, 80] = 1e4
    out = t.to_grid(hsc, "hsc", "griz")
    assert out.n_clamped.tolist() == [1]
    assert out.flux[0, 2, 24, 24] == pytest.approx(200.0 / 10**1.8, rel=1e-5)


def test_forward_inverse_round_trip_on_unclamped_pixels():
    rng = np.random.default_rng(1)
    t = Seed000Transform()
    hsc = rng.normal(0, 20, (2, 5, 160, 160)).astype(np.float32)  # |x| < 80: unclamped in g
    hsc[:, 0] = np.clip(hsc[:, 0], -79, 79)
    y, mask = t.forward(hsc, "hsc", HSC_BANDS)
    assert y.shape == (2, 4, 48, 48) and not mask.any()
    back = t.inverse(y, "hsc")
    np.testing.assert_allclose(back, hsc[:, :4, 56:104, 56:104], rtol=1e-4, atol=1e-4)
    full = t.inverse(y, "hsc", native_size=160)
    assert np.isnan(full[..., :56, :]).all() and np.isfinite(full[..., 56:104, 56:104]).all()
    # Legacy: 31 native pixels -> 48; the pseudo-inverse recovers them exactly
    leg = rng.uniform(-5, 5, (2, 4, 31, 31)).astype(np.float32)
    np.testing.assert_allclose(
        t.inverse(t.forward(leg, "legacy", "griz")[0], "legacy"), leg, rtol=1e-4, atol=1e-5
    )
    grid = t.to_grid(leg, "legacy", "griz")
    np.testing.assert_allclose(t.to_native(grid.flux, "legacy"), leg, rtol=1e-4, atol=1e-5)
    # in a 160-px cutout: the window's native pixels come back, the rest is NaN
    leg160 = rng.uniform(-5, 5, (1, 4, 160, 160)).astype(np.float32)
    back = t.to_native(t.to_grid(leg160, "legacy", "griz").flux, "legacy", native_size=160)
    cov = np.isfinite(back[0, 0, 80])
    assert cov.sum() == 32  # a 31-px span about 79.5 touches 32 native pixels
    np.testing.assert_allclose(
        back[0][:, cov][:, :, cov], leg160[0][:, cov][:, :, cov], rtol=1e-4, atol=1e-5
    )
    # seed order (stretch, then upsample) vs store order (upsample, then stretch)
    np.testing.assert_allclose(
        t.forward(hsc, "hsc", HSC_BANDS)[0],
        t.stretch(t.to_grid(hsc, "hsc", HSC_BANDS).flux),
        atol=1e-5,
    )
    # clamped pixels are where the inverse is approximate: they come back at the limit
    hot = hsc.copy()
    hot[0, 0, 80, 80] = 1e4
    back = t.inverse(t.forward(hot, "hsc", HSC_BANDS)[0], "hsc")
    assert back[0, 0, 24, 24] == pytest.approx(80.0, rel=1e-4)


def test_band_alignment_drops_y_and_reorders():
    rng = np.random.default_rng(2)
    t = Seed000Transform()
    x = rng.uniform(0, 1, (1, 5, 48, 48)).astype(np.float32)
    order = ["HSC-Y", "HSC-Z", "HSC-I", "HSC-R", "HSC-G"]  # reversed, y first
    out = t.to_grid(x, "hsc", order)
    for j, band in enumerate("griz"):
        src = order.index(f"HSC-{band.upper()}")
        np.testing.assert_allclose(out.flux[0, j], x[0, src] / 10**1.8, rtol=1e-6)
    assert out.bands == ("g", "r", "i", "z")
    with pytest.raises(InputLayoutError, match=r"band\(s\) \['i'\] missing"):
        t.to_grid(x[:, :4], "hsc", ["hsc-g", "hsc-r", "hsc-z", "hsc-y"])
    with pytest.raises(InputLayoutError, match=r"5 planes but 4 band names"):
        t.to_grid(x, "hsc", "griz")


def test_masked_nan_and_zero_ivar_pixels_are_zeroed_and_flagged():
    t = Seed000Transform()
    x = np.ones((1, 4, 160, 160), np.float32)
    ivar = np.ones_like(x)
    mask = np.zeros(x.shape, bool)
    x[0, 0, 70, 70] = np.nan  # NaN flux
    mask[0, 1, 75, 80] = True  # masked
    ivar[0, 2, 90, 60] = 0.0  # no data
    ivar[0, 3, 60, 90] = np.inf
    out = t.to_grid(x, "hsc", "griz", ivar=ivar, mask=mask)
    assert out.n_bad.tolist() == [4]
    for b, r, c in ((0, 70, 70), (1, 75, 80), (2, 90, 60), (3, 60, 90)):
        assert out.flux[0, b, r - 56, c - 56] == 0 and out.ivar[0, b, r - 56, c - 56] == 0
        assert out.mask[0, b, r - 56, c - 56]
    assert out.mask.sum() == 4 and np.isfinite(out.flux).all()  # an exact crop: no spread
    assert (out.ivar[~out.mask] > 0).all()
    # Legacy: one bad native pixel spreads to the output pixels that interpolate from it
    leg = np.ones((1, 4, 160, 160), np.float32)
    leg[0, 0, 80, 80] = np.nan
    out = t.to_grid(leg, "legacy", "griz", ivar=np.ones_like(leg))
    assert 1 < out.mask[0, 0].sum() <= 16 and not out.mask[0, 1:].any()
    assert np.isfinite(out.flux).all() and (out.ivar[out.mask] == 0).all()
    y, ymask = t.forward(leg, "legacy", "griz")
    assert np.isfinite(y).all() and (ymask == out.mask).all()


def _point_source(size: int, scale: float, dx: float, dy: float, sigma: float = 0.4):
    """A Gaussian at (dx, dy) arcsec from the cutout centre ((N - 1) / 2), 4 bands."""
    c = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size]
    img = np.exp(-(((x - c) * scale - dx) ** 2 + ((y - c) * scale - dy) ** 2) / (2 * sigma**2))
    return np.repeat(img[None, None], 4, axis=1).astype(np.float32)


def test_legacy_upsample_keeps_the_hsc_field_of_view_aligned():
    t = Seed000Transform()
    dx, dy = 6.5 * 0.168, -3.5 * 0.168  # HSC grid pixel centres: (x, y) = (30, 20)
    hsc = t.to_grid(_point_source(160, 0.168, dx, dy), "hsc", "griz").flux[0, 2]
    leg = t.to_grid(_point_source(160, 0.262, dx, dy), "legacy", "griz").flux[0, 2]
    peak = np.unravel_index(np.argmax(hsc), hsc.shape)
    assert peak == (20, 30) and np.unravel_index(np.argmax(leg), leg.shape) == peak

    def centroid(img):
        y, x = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
        return np.array([(img * y).sum(), (img * x).sum()]) / img.sum()

    assert np.abs(centroid(hsc) - centroid(leg)).max() < 0.15  # HSC pixels
    # the seed's integer crop (start (160 - 31) // 2) sits half a Legacy pixel off
    seed_crop = Seed000Transform(crop_alignment="integer")
    leg_int = seed_crop.to_grid(_point_source(160, 0.262, dx, dy), "legacy", "griz").flux[0, 2]
    assert np.abs(centroid(hsc) - centroid(leg_int)).min() > 0.6


def test_sampling_matrix_conventions():
    m = sampling_matrix(160, 48, 48)
    assert (m.argmax(axis=1) == np.arange(56, 104)).all() and np.allclose(m.max(axis=1), 1)
    m31 = sampling_matrix(31, 31, 48)
    src = np.clip((np.arange(48) + 0.5) * 31 / 48 - 0.5, 0, 30)  # torch align_corners=False
    np.testing.assert_allclose(m31 @ np.arange(31.0), src)
    with pytest.raises(InputLayoutError, match="needs a 48-px window"):
        sampling_matrix(40, 48, 48)


def test_transform_serialises_and_validates(tmp_path):
    t = Seed000Transform(standardize={"hsc": (0.022, 0.05), "legacy": (0.045, 0.078)})
    assert Seed000Transform.from_json(t.to_json()) == t
    path = t.save(tmp_path / "transform.json")
    assert Seed000Transform.load(path) == t
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (1, 4, 31, 31)).astype(np.float32)
    y, _ = t.forward(x, "legacy", "griz")
    np.testing.assert_allclose(t.inverse(y, "legacy"), x, atol=1e-4)
    d = t.to_dict()
    d["softnening"] = 0.02
    with pytest.raises(ConfigError, match=r"unknown Seed000Transform key\(s\) \['softnening'\]"):
        Seed000Transform.from_dict(d)
    with pytest.raises(ConfigError, match="crop_alignment"):
        Seed000Transform(crop_alignment="left")
    with pytest.raises(InputLayoutError, match=r"unknown survey 'sdss'"):
        t.to_grid(x, "sdss", "griz")


# -- FITS cutouts + catalogue -----------------------------------------------------------------


def write_fits_cutouts(folder: Path, n: int = 3, wcs: bool = False, bands_kw: bool = True):
    """A folder of (4, 64, 64) Legacy-like cutouts with IVAR/MASK HDUs and a CSV catalogue."""
    from astropy.io import fits
    from astropy.table import Table

    rng = np.random.default_rng(4)
    folder.mkdir(parents=True, exist_ok=True)
    images = rng.normal(0, 1, (n, 4, 64, 64)).astype(np.float32)
    names = []
    for i in range(n):
        header = fits.Header()
        if bands_kw:
            header["BANDS"] = "des-g,des-r,des-i,des-z"
        if wcs:
            header.update(
                {
                    "CTYPE1": "RA---TAN",
                    "CTYPE2": "DEC--TAN",
                    "CRPIX1": 32.5,
                    "CRPIX2": 32.5,
                    "CRVAL1": 150.0,
                    "CRVAL2": 2.0,
                    "CDELT1": -0.262 / 3600,
                    "CDELT2": 0.262 / 3600,
                }
            )
        else:
            header["PIXSCALE"] = 0.262
        mask = np.zeros((4, 64, 64), np.uint8)
        mask[1, 3, 3] = 1
        hdus = fits.HDUList(
            [
                fits.PrimaryHDU(images[i], header=header),
                fits.ImageHDU(np.ones((4, 64, 64), np.float32) * 2, name="IVAR"),
                fits.ImageHDU(mask, name="MASK"),
            ]
        )
        names.append(f"cut_{i}.fits")
        hdus.writeto(folder / names[-1])
    table = Table(
        {
            "object_id": np.arange(100, 100 + n),
            "ra": np.linspace(150, 150.1, n),
            "dec": np.linspace(2, 2.1, n),
            "file": names,
            "EBV": np.full(n, 0.03),
        }
    )
    table.write(folder / "catalogue.csv", format="ascii.csv")
    return images


def test_fits_cutout_reader_reads_folder_and_catalogue(tmp_path):
    images = write_fits_cutouts(tmp_path / "cut")
    reader = FitsCutoutReader(
        tmp_path / "cut", tmp_path / "cut" / "catalogue.csv", "legacy", chunk=2
    )
    batches = list(reader)
    assert [len(b) for b in batches] == [2, 1]
    np.testing.assert_array_equal(np.concatenate([b.image for b in batches]), images)
    b = batches[0]
    assert b.bands == ("g", "r", "i", "z") and b.pixel_scale == pytest.approx(0.262)
    assert b.object_id.tolist() == [100, 101] and b.catalogue["EBV"].tolist() == [0.03, 0.03]
    assert b.mask[:, 1, 3, 3].all() and (b.ivar == 2).all()
    grid = Seed000Transform().apply(b)
    assert grid.flux.shape == (2, 4, 48, 48) and grid.n_bad.tolist() == [1, 1]
    # pixel scale from the WCS when there is no PIXSCALE; bands from the reader
    write_fits_cutouts(tmp_path / "w", wcs=True, bands_kw=False)
    with pytest.raises(InputLayoutError, match="no BANDS"):
        list(FitsCutoutReader(tmp_path / "w", tmp_path / "w" / "catalogue.csv", "legacy"))
    (b,) = FitsCutoutReader(
        tmp_path / "w", tmp_path / "w" / "catalogue.csv", "legacy", bands="griz"
    )
    assert b.pixel_scale == pytest.approx(0.262, rel=1e-6)


@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")
def test_fits_cutout_reader_errors(tmp_path):
    write_fits_cutouts(tmp_path / "c")
    cat = tmp_path / "c" / "catalogue.csv"
    with pytest.raises(InputLayoutError, match=r"missing column\(s\) \['objid'\]"):
        FitsCutoutReader(tmp_path / "c", cat, "legacy", id_column="objid")
    (tmp_path / "c" / "cut_1.fits").unlink()
    with pytest.raises(InputLayoutError, match=r"row 1: cutout .*cut_1.fits does not exist"):
        list(FitsCutoutReader(tmp_path / "c", cat, "legacy"))
    (tmp_path / "c" / "cut_1.fits").write_bytes(b"SIMPLE  =    T" + b" " * 100)
    with pytest.raises(InputLayoutError, match=r"cut_1\.fits"):
        list(FitsCutoutReader(tmp_path / "c", cat, "legacy"))
    write_fits_cutouts(tmp_path / "d")
    with pytest.raises(InputLayoutError, match=r"told pixel_scale=0.168"):
        list(
            FitsCutoutReader(
                tmp_path / "d", tmp_path / "d" / "catalogue.csv", "legacy", pixel_scale=0.168
            )
        )


# -- light curves -----------------------------------------------------------------------------


def write_tess_fits(path: Path, time, flux, err, quality, tic=12345, sector=5, with_tic=True):
    """A TESS SPOC-style light-curve file: primary header + LIGHTCURVE binary table."""
    from astropy.io import fits

    primary = fits.PrimaryHDU()
    primary.header.update({"OBJECT": f"TIC {tic}", "SECTOR": sector, "CAMERA": 2, "CCD": 3})
    if with_tic:
        primary.header["TICID"] = tic
    cols = [
        fits.Column(name="TIME", format="D", array=np.asarray(time, float)),
        fits.Column(name="PDCSAP_FLUX", format="E", array=np.asarray(flux, np.float32)),
        fits.Column(name="PDCSAP_FLUX_ERR", format="E", array=np.asarray(err, np.float32)),
        fits.Column(name="QUALITY", format="J", array=np.asarray(quality, np.int32)),
    ]
    table = fits.BinTableHDU.from_columns(cols, name="LIGHTCURVE")
    fits.HDUList([primary, table]).writeto(path)


def test_tess_reader_gaps_quality_and_nans(tmp_path):
    # 10 bins of 1 day over [1000, 1010]; two samples per bin, bins 4-5 a gap (no data)
    t = np.repeat(np.arange(10.0), 2) + np.tile([0.2, 0.7], 10) + 1000.0
    flux = 100.0 * (1 + 0.01 * np.repeat(np.arange(10.0), 2))
    err = np.ones_like(t)
    quality = np.zeros(t.size, int)
    keep = (t < 1004) | (t >= 1006)
    t, flux, err, quality = t[keep], flux[keep], err[keep], quality[keep]
    flux[1] = 1e6
    quality[1] = 128  # a flagged outlier in bin 0: dropped
    flux[2] = np.nan  # bin 1 keeps one sample
    t_nan = t.copy()
    t_nan[5] = np.nan
    write_tess_fits(tmp_path / "a.fits", t_nan, flux, err, quality)
    write_tess_fits(tmp_path / "b.fits", t, flux * 0 + np.nan, err, quality * 0, tic=7)
    grid = LightCurveGrid(length=10, span=10.0, normalize="none")
    reader = TessReader(tmp_path, grid)
    (batch,) = list(reader)
    assert batch.source.tolist() == [12345] and batch.instrument.tolist() == ["tess-s05-cam2-ccd3"]
    assert reader.counts["quality"] == 1 and reader.counts["nan"] == 2 + 16
    assert reader.counts["rejected:no_valid_samples"] == 1  # b.fits: every flux NaN
    f, iv, m = batch.flux[0, 0], batch.ivar[0, 0], batch.mask[0, 0]
    assert m.tolist() == [False] * 4 + [True, True] + [False] * 4
    assert (f[m] == 0).all() and (iv[m] == 0).all()
    np.testing.assert_allclose(f[~m], 100 * (1 + 0.01 * np.flatnonzero(~m)), rtol=1e-6)
    assert iv.tolist()[:4] == [1, 1, 1, 2] and batch.n_used[0] == 16 - 3
    assert batch.t_start[0] == pytest.approx(1000.2) and batch.bin_width[0] == 1.0
    assert batch.meta["sector"].tolist() == [5]


def test_tess_reader_normalises_and_errors(tmp_path):
    t = np.linspace(0, 9, 30)
    write_tess_fits(tmp_path / "a.fits", t, np.full(30, 200.0), np.full(30, 2.0), np.zeros(30))
    (batch,) = TessReader(tmp_path / "a.fits", LightCurveGrid(length=10))
    np.testing.assert_allclose(batch.flux, 0.0, atol=1e-7)  # f / median - 1
    np.testing.assert_allclose(batch.ivar[0, 0].sum(), 30 / 0.01**2, rtol=1e-5)
    assert batch.median_flux[0] == 200.0 and not batch.mask.any()
    write_tess_fits(tmp_path / "n.fits", t, t, t + 1, t * 0, with_tic=False, tic="x")
    with pytest.raises(InputLayoutError, match="no TICID keyword"):
        list(TessReader(tmp_path / "n.fits"))
    with pytest.raises(InputLayoutError, match=r"lacks column\(s\) \['SAP_FLUX'\]"):
        list(TessReader(tmp_path / "a.fits", flux_column="SAP_FLUX"))
    with pytest.raises(InputLayoutError, match=r"header keyword 'ORBIT'"):
        list(TessReader(tmp_path / "a.fits", instrument="tess-o{ORBIT}"))


def test_binning_rule_edges_and_rejections():
    counts = __import__("collections").Counter()
    grid = LightCurveGrid(length=4, normalize="none")  # span from the data: [0, 8]
    out = bin_lightcurve([0, 2, 4, 6, 8], [1, 2, 3, 4, 5], [1, 1, 1, 1, 1], grid, counts=counts)
    assert out["flux"].tolist() == [1, 2, 3, 4.5]  # the right edge belongs to the last bin
    assert out["bin_width"] == 2.0
    assert bin_lightcurve([3, 3], [1, 1], [1, 1], grid, counts=counts) is None
    assert counts["rejected:single_time"] == 1
    fixed = LightCurveGrid(length=4, span=4.0, start=0.0, normalize="median")
    out = bin_lightcurve([-1, 0.5, 1.5, 9], [5, 2, 2, 5], [1, 1, 0, 1], fixed, counts=counts)
    assert counts["outside"] == 2 and counts["bad_error"] == 1
    assert out["flux"].tolist() == [0, 0, 0, 0] and out["mask"].tolist() == [False] + [True] * 3
    assert bin_lightcurve([0, 1], [-1, -2], [1, 1], fixed, counts=counts) is None
    assert counts["rejected:nonpositive_median"] == 1
    assert LightCurveGrid.from_dict(fixed.to_dict()) == fixed
    with pytest.raises(ConfigError, match="normalize"):
        LightCurveGrid(normalize="zscore")


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_long_table_reader(tmp_path, fmt):
    import pyarrow as pa

    rng = np.random.default_rng(5)
    rows = []
    for source in (3, 11):
        for inst in ("ztf-g", "atlas-o"):
            t = np.sort(rng.uniform(0, 50, 40))
            rows += [(source, inst, ti, 10.0 + source, 0.5, 0) for ti in t]
    rows.append((11, "ztf-g", 25.0, 1e5, 0.5, 4))  # flagged outlier
    rows += [(99, "ztf-g", float(i), float("nan"), 0.5, 0) for i in range(3)]  # all NaN
    rng.shuffle(rows)
    cols = list(zip(*rows, strict=True))
    table = pa.table(
        {
            "objid": cols[0],
            "band": cols[1],
            "mjd": cols[2],
            "mag_flux": cols[3],
            "err": cols[4],
            "flag": cols[5],
        }
    )
    path = tmp_path / f"phot.{fmt}"
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    else:
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path)
    columns = {
        "source": "objid",
        "instrument": "band",
        "time": "mjd",
        "flux": "mag_flux",
        "error": "err",
        "quality": "flag",
    }
    reader = LongTableReader(
        path, LightCurveGrid(length=20, span=50.0, start=0.0), chunk=3, columns=columns
    )
    batches = list(reader)
    assert [len(b) for b in batches] == [3, 1]
    src = np.concatenate([b.source for b in batches])
    inst = np.concatenate([b.instrument for b in batches])
    assert list(zip(src.tolist(), inst.tolist(), strict=True)) == [
        (3, "atlas-o"),
        (3, "ztf-g"),
        (11, "atlas-o"),
        (11, "ztf-g"),
    ]
    assert src.dtype.kind == "i"
    assert reader.counts["quality"] == 1 and reader.counts["rejected:no_valid_samples"] == 1
    flux = np.concatenate([b.flux for b in batches])
    mask = np.concatenate([b.mask for b in batches])
    np.testing.assert_allclose(flux[~mask], 0.0, atol=1e-6)  # constant flux, median-normalised
    with pytest.raises(InputLayoutError, match=r"missing column\(s\) \{'time': 'time'\}"):
        list(LongTableReader(path, columns={k: v for k, v in columns.items() if k != "time"}))
    with pytest.raises(InputLayoutError, match=r"unknown column role\(s\) \['band'\]"):
        LongTableReader(path, columns={"band": "band"})
    bad = tmp_path / f"bad.{fmt}"
    bad.write_bytes(path.read_bytes()[:40])
    with pytest.raises(InputLayoutError, match="bad"):
        list(LongTableReader(bad, columns=columns))


# -- reader output -> store writer (the interface a `prepare` command uses) -------------------


def test_batches_feed_the_store_writer(tmp_path, hsc_tree):
    from whatsreal.prepare.galaxies import append_kwargs
    from whatsreal.store import StoreWriter, open_store

    root, _ = hsc_tree
    t = Seed000Transform()
    grids = []
    with StoreWriter(
        tmp_path / "g.store",
        (4, 48, 48),
        {"hsc": list(t.bands)},
        arrays=("ivar", "mask"),
        positions=True,
        config={"transform": t.to_dict()},
    ) as w:
        for batch in MMUReader(root, "hsc", chunk=4):
            grid = t.apply(batch)
            grids.append(grid.flux)
            w.append(**append_kwargs(batch, grid, batch.object_id, "hsc"))
    store = open_store(tmp_path / "g.store")
    assert len(store) == 9 and {"psf_fwhm_g", "a_g", "object_id"} <= set(store.meta_columns())
    np.testing.assert_array_equal(store.read(np.arange(9))["flux"], np.concatenate(grids))
    assert Seed000Transform.from_dict(store.config["transform"]) == t

    lc = tmp_path / "lc"
    lc.mkdir()
    write_tess_fits(lc / "a.fits", np.arange(40.0), np.full(40, 5.0), np.ones(40), np.zeros(40))
    (batch,) = TessReader(lc, LightCurveGrid(length=20))
    with StoreWriter(
        tmp_path / "l.store", (1, 20), {batch.instrument[0]: ["flux"]}, arrays=("ivar", "mask")
    ) as w:
        w.append(**batch.append_kwargs())
    assert open_store(tmp_path / "l.store").source_id.tolist() == [12345]


@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")
@pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyUserWarning")
def test_truncated_light_curve_files_are_clear_errors(tmp_path):
    t = np.arange(200.0)
    write_tess_fits(tmp_path / "a.fits", t, t + 1, t * 0 + 1, t * 0)
    whole = (tmp_path / "a.fits").read_bytes()
    for cut in (len(whole) // 3, len(whole) - 2880):  # headers only; half the table
        (tmp_path / "b.fits").write_bytes(whole[:cut])
        with pytest.raises(InputLayoutError, match=r"b\.fits"):
            list(TessReader(tmp_path / "b.fits"))
