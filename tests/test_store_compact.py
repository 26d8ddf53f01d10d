"""The compact store: scaled float16 + Blosc, read back as float32 within the stated precision."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from whatsreal.errors import ConfigError, StoreCorruptError, StoreFormatError, StoreValidationError
from whatsreal.store import ObservationStore, StoreWriter, verify_store
from whatsreal.store.compact import CompactSpec, noise_sigma, pack, unpack

SHAPE = (4, 24, 24)


def _galaxies(n: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    """Noisy images of bright and faint profiles: sky noise per band, Poisson-like ivar."""
    rng = np.random.default_rng(seed)
    sky = rng.uniform(4e-4, 8e-3, (n, SHAPE[0], 1, 1)).astype(np.float32)
    y, x = np.mgrid[: SHAPE[1], : SHAPE[2]] - (SHAPE[1] - 1) / 2
    profile = np.exp(-np.hypot(x, y) / 2.0)
    peak = sky * rng.choice([3.0, 300.0, 20000.0], (n, 1, 1, 1))  # up to 20,000 sigma
    clean = (peak * profile).astype(np.float32)
    var = sky**2 * (1 + clean / sky)  # sky plus photon noise: ~sky/sigma^2 photons per sigma
    ivar = (1 / var).astype(np.float32)
    ivar[0, 1, :3] = 0.0  # masked pixels
    flux = (clean + rng.normal(0, 1, clean.shape) * np.sqrt(var)).astype(np.float32)
    flux[0, 1, :3] = 0.0
    mask = ivar == 0
    return {"flux": flux, "ivar": ivar, "clean": clean, "mask": mask}


def _write(path: Path, data: dict, compact, arrays=("ivar", "clean", "mask"), shape=SHAPE):
    n = len(data["flux"])
    with StoreWriter(
        path, shape, {"a": list("griz")[: shape[0]]}, arrays=arrays, compact=compact
    ) as w:
        w.append(
            data["flux"],
            source_id=np.arange(n),
            instrument="a",
            **{k: data[k] for k in arrays},
        )
    return ObservationStore(path)


def test_round_trip_error_is_far_below_the_noise():
    d = _galaxies()
    spec = CompactSpec()
    sigma = noise_sigma(d["ivar"], *d["flux"].shape[:2])
    out = {}
    for name in ("flux", "clean", "ivar"):
        packed, scale = pack(name, d[name], sigma, spec)
        assert packed.dtype == np.float16 and scale.shape == (12, 4)
        out[name] = unpack(packed, scale)
        assert out[name].dtype == np.float32
    noise = 1 / np.sqrt(np.where(d["ivar"] > 0, d["ivar"], np.nan))
    s = sigma[:, :, None, None]
    for name in ("flux", "clean"):
        err = np.abs(out[name] - d[name])
        faint = np.abs(d[name]) < 100 * s
        # faint: at most half a quantum of the band's median noise (plus float32 rounding)
        assert (
            err[faint] <= (spec.quantum / 2 + 1e-4) * np.broadcast_to(s, err.shape)[faint]
        ).all()
        # bright: float16's relative precision
        assert (err[~faint] <= 2**-11 * np.abs(d[name][~faint]) * 1.001).all()
        in_noise = err / noise
        # the stated bound, per pixel: half a quantum of the median noise, or 2^-11 of |x|
        bound = (spec.quantum / 2 + 1e-4) * s / noise + 2**-11 * np.abs(d[name]) / noise
        assert (np.nan_to_num(in_noise) <= np.nan_to_num(bound) * 1.001).all()
        assert np.nanmax(in_noise) < 0.25  # with photon noise: below a quarter sigma everywhere
        rms = np.sqrt(np.nanmean(in_noise[faint] ** 2))
        assert rms < 0.025  # quantum / sqrt(12) = 0.018 sigma
    good = d["ivar"] > 0
    rel = np.abs(out["ivar"][good] / d["ivar"][good] - 1)
    assert rel.max() <= 2**-8 + 2**-11
    assert (out["ivar"][~good] == 0).all()


def test_unpack_is_exact_for_every_finite_float16():
    every = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    every = every[np.isfinite(every)].reshape(1, 1, -1)
    for s in (1.0, 3.7e-3, 2.0**20):  # the last takes the two-step path
        scale = np.array([[s]], np.float32)
        expected = every.astype(np.float32) * np.float32(s)
        np.testing.assert_array_equal(unpack(every, scale), expected)
    assert np.signbit(unpack(np.array([[[-0.0]]], np.float16), np.ones((1, 1)))).all()


def test_range_guard_and_plain_float16_without_ivar():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (3, 1, 50)).astype(np.float32)
    x[0] *= 1e9  # far beyond float16's 65504
    x[1] *= 1e-7  # subnormal territory
    x[2] = 0.0
    packed, scale = pack("flux", x, noise_sigma(None, 3, 1), CompactSpec())
    assert np.isfinite(packed).all()
    back = unpack(packed, scale)
    np.testing.assert_allclose(back[:2], x[:2], rtol=2**-11, atol=0)
    assert (back[2] == 0).all()
    # an observation 1e6 sigma bright: the scale is raised, nothing overflows
    ivar = np.ones((1, 1, 50), np.float32)
    y = np.full((1, 1, 50), 1e6, np.float32)
    p, sc = pack("flux", y, noise_sigma(ivar, 1, 1), CompactSpec())
    assert np.isfinite(p).all() and sc[0, 0] >= 1e6 / 32768
    np.testing.assert_allclose(unpack(p, sc), y, rtol=2**-10)


def test_reader_returns_float32_like_the_full_store(tmp_path):
    d = _galaxies()
    full = _write(tmp_path / "full.store", d, False)
    small = _write(tmp_path / "small.store", d, True)
    assert full.compact is None and small.compact == CompactSpec()
    rows = np.array([5, 0, 5, 11, 3])  # any order, with repeats
    a = full.read(rows, ("flux", "ivar", "clean", "mask"))
    b = small.read(rows, ("flux", "ivar", "clean", "mask"))
    for name in a:
        assert b[name].dtype == a[name].dtype
    np.testing.assert_array_equal(a["mask"], b["mask"])
    noise = 1 / np.sqrt(np.where(a["ivar"] > 0, a["ivar"], np.nan))
    assert np.nanmax(np.abs(b["flux"] - a["flux"]) / noise) < 0.25
    assert np.nanmax(np.abs(b["clean"] - a["clean"]) / noise) < 0.25
    np.testing.assert_allclose(b["ivar"], a["ivar"], rtol=2**-8 + 2**-11)
    with h5py.File(small.path / "observations.h5", "r") as f:
        assert f["data/flux"].dtype == np.float16 and f["data/mask"].dtype == np.uint8
        assert f["scale/flux"].shape == (12, 4) and f.attrs["format_version"] == 2
        assert f["data/flux"].chunks == f["data/flux"].chunks  # one image per chunk
    assert verify_store(small.path).ok


def test_series_store_without_ivar(tmp_path):
    rng = np.random.default_rng(2)
    data = {"flux": np.clip(rng.normal(0, 0.3, (50, 1, 100)), -1, 1).astype(np.float32)}
    store = _write(tmp_path / "lc.store", data, True, arrays=(), shape=(1, 100))
    back = store.read(np.arange(50))["flux"]
    np.testing.assert_allclose(back, data["flux"], rtol=2**-11, atol=1e-7)
    assert verify_store(store.path).ok


def test_verify_and_reader_catch_a_damaged_compact_chunk(tmp_path):
    store = _write(tmp_path / "s.store", _galaxies(), True)
    path = store.path / "observations.h5"
    with h5py.File(path, "r") as f:
        info = f["data/flux"].id.get_chunk_info(3)
    raw = bytearray(path.read_bytes())
    raw[info.byte_offset + info.size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    report = verify_store(store.path)
    assert not report.ok and [d.name for d in report.damaged] == ["data/flux"]
    with pytest.raises(StoreCorruptError, match="data/flux"):
        ObservationStore(store.path).read([3])
    ObservationStore(store.path).read([2])  # other rows still read


def test_compact_options_are_checked(tmp_path):
    for bad in ({"quantum": 0}, {"ivar_bits": 11}, {"codec": "snappy"}, {"level": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            CompactSpec(**bad)
    with pytest.raises(ConfigError, match="unknown CompactSpec"):
        CompactSpec.from_dict({"quantum": 0.1, "bits": 3})
    with pytest.raises(StoreValidationError, match="compression"):
        StoreWriter(
            tmp_path / "x.store", SHAPE, {"a": list("griz")}, compression="gzip", compact=True
        )
    store = _write(tmp_path / "s.store", _galaxies(), {"quantum": 0.25, "codec": "zstd"})
    assert store.compact == CompactSpec(quantum=0.25, codec="zstd")
    with h5py.File(store.path / "observations.h5", "r+") as f:
        del f["scale/flux"]
    with pytest.raises(StoreFormatError, match="scale"):
        ObservationStore(store.path)


def test_simulate_galaxies_compact(tmp_path):
    pytest.importorskip("galsim")
    from whatsreal.simulate.galaxies import simulate_galaxies

    out = simulate_galaxies(
        tmp_path / "g.store",
        n=4,
        surveys="hsc,legacy",
        seed=0,
        workers=1,
        progress=False,
        compact=True,
    )
    store = ObservationStore(out)
    assert (
        store.compact is not None
        and store.read([0, 7], ("flux", "ivar", "clean"))["flux"].dtype == np.float32
    )
    assert verify_store(out).ok
