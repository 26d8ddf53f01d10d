"""Observation store: round trip, laziness, atomicity and boundary validation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from whatsreal import __version__
from whatsreal.errors import StoreFormatError, StoreValidationError
from whatsreal.store import ObservationStore, StoreWriter

BANDS = {"hsc": ["g", "r", "i", "z"], "legacy": ["g", "r", "i", "z"]}


def test_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    n, shape = 37, (4, 6, 5)
    flux = rng.normal(size=(n, *shape)).astype(np.float32)
    ivar = rng.uniform(size=(n, *shape)).astype(np.float32)
    mask = rng.uniform(size=(n, *shape)) > 0.9
    clean = rng.normal(size=(n, *shape)).astype(np.float32)
    sid = rng.integers(0, 10, n)
    inst = np.where(rng.uniform(size=n) > 0.5, "hsc", "legacy")
    ra, dec = rng.uniform(0, 360, n), rng.uniform(-90, 90, n)
    psf = rng.uniform(0.5, 1.5, n)
    nexp = rng.integers(1, 9, n)
    path = tmp_path / "rt.store"
    with StoreWriter(
        path,
        shape,
        BANDS,
        arrays=("ivar", "mask", "clean"),
        positions=True,
        config={"simulator": {"n": n}},
    ) as w:
        for lo, hi in ((0, 10), (10, 11), (11, n)):  # uneven chunks
            sl = slice(lo, hi)
            w.append(
                flux[sl],
                sid[sl],
                inst[sl],
                ra=ra[sl],
                dec=dec[sl],
                ivar=ivar[sl],
                mask=mask[sl],
                clean=clean[sl],
                meta={"psf_fwhm": psf[sl], "n_exp": nexp[sl]},
                truth={"depth": psf[sl] * 2},
            )
        w.add_source_truth(np.arange(10), mag=np.linspace(18, 22, 10))
    s = ObservationStore(path)
    assert len(s) == n and s.shape == shape and s.modality == "image"
    assert s.instruments == ["hsc", "legacy"] and s.bands == BANDS
    rows = np.arange(n)
    got = s.read(rows, ("flux", "ivar", "mask", "clean"))
    np.testing.assert_array_equal(got["flux"], flux)
    np.testing.assert_array_equal(got["ivar"], ivar)
    np.testing.assert_array_equal(got["mask"].astype(bool), mask)
    np.testing.assert_array_equal(got["clean"], clean)
    np.testing.assert_array_equal(s.source_id, sid)
    np.testing.assert_array_equal(np.array(s.instruments)[s.instrument], inst)
    np.testing.assert_array_equal(s.table["ra"], ra)
    np.testing.assert_array_equal(s.table["dec"], dec)
    np.testing.assert_array_equal(s.table["psf_fwhm"], psf.astype(np.float64))
    np.testing.assert_array_equal(s.table["n_exp"], nexp)
    np.testing.assert_array_equal(s.table["obs_id"], rows)
    assert sorted(s.meta_columns()) == ["n_exp", "psf_fwhm"]
    np.testing.assert_allclose(s.truth_obs["depth"], psf * 2)
    np.testing.assert_allclose(s.truth_source["mag"], np.linspace(18, 22, 10))
    assert s.config == {"simulator": {"n": n}}
    assert s.provenance["whatsreal_version"] == __version__
    # any order and repeats
    order = np.array([5, 3, 3, 36, 0])
    np.testing.assert_array_equal(s.read(order)["flux"], flux[order])


def test_series_store_and_pickle(tmp_path):
    import pickle

    x = np.random.default_rng(0).normal(size=(50, 1, 100))
    with StoreWriter(tmp_path / "lc.store", (1, 100), {"s0": ["flux"], "s1": ["flux"]}) as w:
        w.append(x, source_id=np.arange(50) // 2, instrument=np.array(["s0", "s1"] * 25))
    s = ObservationStore(tmp_path / "lc.store")
    assert s.modality == "series" and not s.has_positions
    s.read([1, 2])
    s2 = pickle.loads(pickle.dumps(s))  # as DataLoader workers receive it
    np.testing.assert_allclose(s2.read([7])["flux"][0], x[7], rtol=1e-6)


def _proc_rchar() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar")).split()[1])


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
def test_batch_read_touches_only_the_batch(tmp_path):
    n, shape = 3000, (4, 32, 32)  # 48 MiB of flux
    row_bytes = 4 * int(np.prod(shape))
    rng = np.random.default_rng(0)
    with StoreWriter(tmp_path / "big.store", shape, BANDS) as w:
        for start in range(0, n, 500):
            w.append(
                rng.normal(size=(500, *shape)).astype(np.float32),
                source_id=np.arange(start, start + 500),
                instrument="hsc",
            )
    s = ObservationStore(tmp_path / "big.store")
    s.read([0])  # open the file and load the chunk index once
    total = n * row_bytes
    batch = np.sort(rng.choice(n, size=32, replace=False))
    before = _proc_rchar()
    s.read(batch)
    read = _proc_rchar() - before
    assert read >= 32 * row_bytes  # we really did read the batch through the OS
    assert read < 3 * 32 * row_bytes, f"read {read} bytes for a {32 * row_bytes}-byte batch"
    assert read < total / 20


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "x.store"
    with pytest.raises(RuntimeError), StoreWriter(path, (1, 4), {"a": ["f"]}) as w:
        w.append(np.zeros((3, 1, 4)), source_id=[0, 1, 2], instrument="a")
        raise RuntimeError("killed")
    assert not path.exists()
    assert os.listdir(tmp_path) == []  # no temporary folder left behind


def test_existing_store_is_not_clobbered(tmp_path):
    path = tmp_path / "x.store"
    with StoreWriter(path, (1, 4), {"a": ["f"]}) as w:
        w.append(np.zeros((2, 1, 4)), source_id=[0, 1], instrument="a")
    with pytest.raises(FileExistsError, match="overwrite"):
        StoreWriter(path, (1, 4), {"a": ["f"]})
    with StoreWriter(path, (1, 4), {"a": ["f"]}, overwrite=True) as w:
        w.append(np.ones((5, 1, 4)), source_id=np.arange(5), instrument="a")
    assert len(ObservationStore(path)) == 5
    assert sorted(os.listdir(tmp_path)) == ["x.store"]


# -- every bad input produces its message ------------------------------------------------


def _writer(tmp_path, **kw):
    kw.setdefault("instruments", BANDS)
    return StoreWriter(tmp_path / "bad.store", (4, 3, 3), **kw)


def test_nan_and_inf_rejected_with_rows(tmp_path):
    w = _writer(tmp_path)
    x = np.zeros((6, 4, 3, 3))
    x[2, 0, 0, 0] = np.nan
    x[4, 1, 1, 1] = np.inf
    with pytest.raises(StoreValidationError, match=r"NaN or inf in 2 observation\(s\).*rows 2, 4"):
        w.append(x, source_id=np.arange(6), instrument="hsc")
    w.abort()


def test_wrong_shape_and_dtype(tmp_path):
    w = _writer(tmp_path, arrays=("ivar",))
    with pytest.raises(StoreValidationError, match=r"'flux' has shape \(2, 3, 3, 3\)"):
        w.append(
            np.zeros((2, 3, 3, 3)), source_id=[0, 1], instrument="hsc", ivar=np.zeros((2, 3, 3, 3))
        )
    with pytest.raises(StoreValidationError, match="'flux' has dtype complex128"):
        w.append(
            np.zeros((2, 4, 3, 3), complex),
            source_id=[0, 1],
            instrument="hsc",
            ivar=np.zeros((2, 4, 3, 3)),
        )
    with pytest.raises(StoreValidationError, match=r"'ivar' has shape"):
        w.append(
            np.zeros((2, 4, 3, 3)), source_id=[0, 1], instrument="hsc", ivar=np.zeros((2, 4, 3))
        )
    with pytest.raises(StoreValidationError, match="declared"):
        w.append(np.zeros((2, 4, 3, 3)), source_id=[0, 1], instrument="hsc")
    with pytest.raises(StoreValidationError, match="'source_id' must be 2 integers"):
        w.append(
            np.zeros((2, 4, 3, 3)),
            source_id=["a", "b"],
            instrument="hsc",
            ivar=np.zeros((2, 4, 3, 3)),
        )
    w.abort()


def test_unknown_instrument(tmp_path):
    w = _writer(tmp_path)
    with pytest.raises(
        StoreValidationError, match=r"unknown instrument\(s\) \['hsx'\].*'hsc', 'legacy'"
    ):
        w.append(np.zeros((2, 4, 3, 3)), source_id=[0, 1], instrument=["hsc", "hsx"])
    w.abort()


def test_band_mismatch(tmp_path):
    with pytest.raises(StoreValidationError, match="band mismatch for instrument 'legacy'"):
        _writer(tmp_path, instruments={"hsc": list("griz"), "legacy": list("grz")})
    w = _writer(tmp_path)
    with pytest.raises(
        StoreValidationError,
        match=r"band mismatch for instrument 'hsc': got \['g', 'r', 'i', 'y'\]",
    ):
        w.append(np.zeros((1, 4, 3, 3)), source_id=[0], instrument="hsc", bands=list("griy"))
    w.abort()


def test_duplicate_ids(tmp_path):
    w = _writer(tmp_path)
    w.append(np.zeros((3, 4, 3, 3)), source_id=[0, 1, 2], instrument="hsc", obs_id=[10, 11, 12])
    w.append(np.zeros((2, 4, 3, 3)), source_id=[0, 1], instrument="legacy", obs_id=[12, 13])
    with pytest.raises(StoreValidationError, match=r"duplicate obs_id\(s\): 12"):
        w.close()
    assert not (tmp_path / "bad.store").exists()
    w = _writer(tmp_path)
    w.append(np.zeros((1, 4, 3, 3)), source_id=[0], instrument="hsc")
    w.add_source_truth([0, 1, 1], z=[0.1, 0.2, 0.3])
    with pytest.raises(StoreValidationError, match=r"duplicate source_id\(s\) in source truth: 1"):
        w.close()


def test_meta_columns_must_be_stable(tmp_path):
    w = _writer(tmp_path)
    w.append(np.zeros((1, 4, 3, 3)), source_id=[0], instrument="hsc", meta={"psf": [1.0]})
    with pytest.raises(StoreValidationError, match=r"missing \['psf'\], unexpected \['seeing'\]"):
        w.append(np.zeros((1, 4, 3, 3)), source_id=[1], instrument="hsc", meta={"seeing": [1.0]})
    w.abort()


def test_positions_checked(tmp_path):
    w = _writer(tmp_path, positions=True)
    with pytest.raises(StoreValidationError, match="pass ra= and dec="):
        w.append(np.zeros((1, 4, 3, 3)), source_id=[0], instrument="hsc")
    with pytest.raises(StoreValidationError, match=r"'dec' outside \[-90, 90\]"):
        w.append(np.zeros((1, 4, 3, 3)), source_id=[0], instrument="hsc", ra=[1.0], dec=[91.0])
    w.abort()


def test_not_a_store(tmp_path):
    (tmp_path / "file.h5").write_text("x")
    with pytest.raises(StoreFormatError, match="a store is a folder"):
        ObservationStore(tmp_path / "file.h5")
    with pytest.raises(StoreFormatError, match="not a whatsreal store"):
        ObservationStore(tmp_path)


def test_astropy_angles_accepted(tmp_path):
    import astropy.units as u

    with StoreWriter(tmp_path / "a.store", (1, 2), {"a": ["f"]}, positions=True) as w:
        w.append(
            np.zeros((2, 1, 2)), [0, 1], "a", ra=[1.0, 2.0] * u.hourangle, dec=[30, 60] * u.arcmin
        )
    s = ObservationStore(tmp_path / "a.store")
    np.testing.assert_allclose(s.table["ra"], [15.0, 30.0])
    np.testing.assert_allclose(s.table["dec"], [0.5, 1.0])
