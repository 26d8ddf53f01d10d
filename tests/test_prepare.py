"""``whatsreal prepare`` on tiny MMU trees (and a FITS folder) written in the real layouts: counts,
cross-matches, the neighbour graph, store verification, resuming after a kill, input errors."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from whatsreal.cli.main import main as cli
from whatsreal.errors import ConfigError, InputLayoutError
from whatsreal.prepare import pipeline
from whatsreal.prepare.pipeline import detect_survey, parse_survey, prepare_store, work_folder
from whatsreal.prepare.transform import Seed000Transform
from whatsreal.store import ObservationStore, verify_store

from .test_readers import (
    DES_BANDS,
    hsc_catalogue,
    legacy_catalogue,
    write_fits_cutouts,
    write_mmu_file,
)

ARCSEC = 1.0 / 3600.0
# Ten HSC objects on a 1.5' x 1.5' patch, so every one has same-survey neighbours within 3'.
HSC_RA = 150.0 + np.arange(10) * 9 * ARCSEC
HSC_DEC = 2.0 + (np.arange(10) % 3) * 20 * ARCSEC


def _mmu(path: Path, ids, ra, dec, **kw) -> None:
    """An MMU file (test_readers' writer) with the given positions."""
    write_mmu_file(path, ids, **kw)
    with h5py.File(path, "r+") as f:
        f["ra"][...] = ra
        f["dec"][...] = dec


def _hsc(root: Path) -> Path:
    """HSC: ten objects in two partitions (one with two files) plus an empty partition."""
    base = root / "hsc" / "pdr3_dud_22.5"
    for hp, name, sel in (
        (7, "a.hdf5", slice(0, 4)),
        (7, "b.hdf5", slice(4, 7)),
        (9, "a.hdf5", slice(7, 10)),
    ):
        ids = np.arange(10)[sel]
        _mmu(
            base / f"healpix={hp}" / name,
            ids,
            HSC_RA[sel],
            HSC_DEC[sel],
            size=48,
            seed=int(ids[0]),
            catalogue=hsc_catalogue(len(ids)),
        )
    (base / "healpix=11").mkdir()
    # no z band: the transform refuses it, so the file is rejected whole
    _mmu(
        base / "healpix=12" / "a.hdf5",
        [50, 51],
        HSC_RA[:2],
        HSC_DEC[:2],
        size=48,
        bands=[b"hsc-g", b"hsc-r", b"hsc-i", b"hsc-y"],
    )
    return root / "hsc"


def _legacy(root: Path) -> Path:
    """Legacy: HSC 0-5 within 0.3", HSC 6 at 1.5" (no match), three objects of its own, a
    repeated object id and a truncated file."""
    base = root / "legacysurvey" / "dr10_south_21"
    ra = np.r_[
        HSC_RA[:6] + 0.3 * ARCSEC, HSC_RA[6] + 1.5 * ARCSEC, 150.0 + np.arange(3) * 40 * ARCSEC
    ]
    dec = np.r_[HSC_DEC[:7], 2.02, 2.021, 2.022]
    ids = 1000 + np.arange(10)
    kw = {"bands": DES_BANDS, "size": 32, "scale": 0.262, "scale_shape": "scalar"}
    _mmu(
        base / "healpix=7" / "a.hdf5", ids[:5], ra[:5], dec[:5], catalogue=legacy_catalogue(5), **kw
    )
    _mmu(
        base / "healpix=8" / "a.hdf5",
        ids[5:],
        ra[5:],
        dec[5:],
        catalogue=legacy_catalogue(5),
        seed=3,
        **kw,
    )
    # the same object again (id 1000) in another file: kept once, counted as a duplicate
    _mmu(
        base / "healpix=8" / "b.hdf5", [1000], ra[:1], dec[:1], catalogue=legacy_catalogue(1), **kw
    )
    bad = base / "healpix=9" / "a.hdf5"
    _mmu(bad, [2000, 2001], ra[:2], dec[:2], catalogue=legacy_catalogue(2), **kw)
    bad.write_bytes(bad.read_bytes()[:2000])  # truncated
    # HSC's pixel scale in a Legacy folder: rejected whole
    _mmu(base / "healpix=10" / "a.hdf5", [3000], ra[:1], dec[:1], **{**kw, "scale": 0.168})
    # a cutout with no good pixel (all NaN): rejected alone
    nan = base / "healpix=10" / "b.hdf5"
    _mmu(nan, [3001], [151.0], [3.0], catalogue=legacy_catalogue(1), **kw)
    with h5py.File(nan, "r+") as f:
        f["image_array"][...] = np.nan
    return root / "legacysurvey"


@pytest.fixture
def trees(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "mmu"
    return {"hsc": _hsc(root), "legacy": _legacy(root)}


def _run(trees, out, **kw):
    return prepare_store(trees, out, progress=False, **kw)


def test_prepare_counts_matches_and_graph(trees, tmp_path):
    out = tmp_path / "prepared.store"
    report = _run(trees, out)
    assert report.observations == {"hsc": 10, "legacy": 10}
    assert report.matched == 6 and report.matched_by == {"hsc+legacy": 6}
    assert report.single == {"hsc": 4, "legacy": 4}
    assert report.rejected_rows == {
        "hsc": {},
        "legacy": {"duplicate object_id": 1, "too many bad pixels": 1},
    }
    units = {(u["survey"], Path(u["file"]).parent.name): u for u in report.rejected_units}
    assert sorted(units) == [
        ("hsc", "healpix=12"),
        ("legacy", "healpix=10"),
        ("legacy", "healpix=9"),
    ]
    assert "band(s) ['z'] missing" in units["hsc", "healpix=12"]["reason"]
    assert units["hsc", "healpix=12"]["rows"] == 2
    assert "pixel scale 0.1680" in units["legacy", "healpix=10"]["reason"]
    assert "truncated or damaged" in units["legacy", "healpix=9"]["reason"]
    assert units["legacy", "healpix=9"]["rows"] is None
    assert report.empty["hsc"] == {"empty_partition": 1}
    text = "\n".join(report.lines())
    assert "matched (seen by >= 2 surveys): 6 sources" in text and "duplicate object_id" in text

    store = ObservationStore(out)
    assert store.instruments == ["hsc", "legacy"] and store.shape == (4, 48, 48)
    assert set(store.arrays) == {"flux", "ivar", "mask"}
    hsc = store.instrument == 0
    oid = store.table["object_id"]
    sid_hsc = dict(zip(oid[hsc].tolist(), store.source_id[hsc].tolist(), strict=True))
    sid_leg = dict(zip(oid[~hsc].tolist(), store.source_id[~hsc].tolist(), strict=True))
    for i in range(6):  # matched pairs share a source id
        assert sid_leg[1000 + i] == sid_hsc[i]
    assert sid_leg[1006] not in sid_hsc.values()  # 1.5" away: its own source
    assert len(set(store.source_id.tolist())) == 14
    # catalogue columns of both surveys, filled where a survey lacks one
    assert np.isnan(store.table["EBV"][hsc]).all() and np.isfinite(store.table["EBV"][~hsc]).all()
    assert (store.table["TYPE"][hsc] == b"").all()
    nb = store.neighbours
    assert nb is not None and nb.k == 5 and nb.radius_arcsec == pytest.approx(180.0)
    assert (nb.count() > 0).all()
    same = store.instrument[np.maximum(nb.index, 0)] == store.instrument[:, None]
    assert same[nb.index >= 0].all()
    assert store.config["transform"]["name"] == "seed000"
    assert store.config["prepare"]["counts"]["matched"] == 6
    assert verify_store(out).ok
    assert cli(["store", "verify", str(out)]) == 0
    assert not work_folder(out).exists()


def _datasets(path: Path) -> dict[str, np.ndarray]:
    found = {}
    for name in ("observations.h5", "pairing.h5"):
        with h5py.File(path / name, "r") as f:
            f.visititems(
                lambda k, v, name=name: (
                    found.__setitem__(f"{name}:{k}", v[()]) if isinstance(v, h5py.Dataset) else None
                )
            )
    return found


def _assert_same_store(a: Path, b: Path) -> None:
    da, db = _datasets(a), _datasets(b)
    assert sorted(da) == sorted(db)
    for key in da:
        np.testing.assert_array_equal(da[key], db[key], err_msg=key)
    assert ObservationStore(a).config == ObservationStore(b).config


@pytest.mark.parametrize("step", ["ingest", "pairing"])
def test_killed_run_resumes_to_the_same_store(trees, tmp_path, monkeypatch, step):
    clean = tmp_path / "clean.store"
    _run(trees, clean)
    out = tmp_path / "resumed.store"
    calls = {"n": 0}
    if step == "ingest":
        real = pipeline._ingest_unit

        def dying(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 5:  # the first Legacy file: HSC is done
                raise KeyboardInterrupt("killed")
            return real(*args, **kwargs)

        monkeypatch.setattr(pipeline, "_ingest_unit", dying)
    else:

        def dying(*args, **kwargs):
            raise KeyboardInterrupt("killed")

        monkeypatch.setattr(pipeline, "build_pairing", dying)
    with pytest.raises(KeyboardInterrupt):
        _run(trees, out)
    assert not out.exists() and work_folder(out).is_dir()
    monkeypatch.undo()
    with pytest.raises(FileExistsError, match="--resume"):
        _run(trees, out)
    with pytest.raises(ConfigError, match=r"\[.k.\]"):
        _run(trees, out, resume=True, k=3)
    report = _run(trees, out, resume=True)
    assert report.resumed_units == (4 if step == "ingest" else 10)
    assert report.matched == 6
    _assert_same_store(clean, out)
    assert not work_folder(out).exists()


def test_killed_after_placing_the_store_resumes_to_its_report(trees, tmp_path, monkeypatch):
    out = tmp_path / "p.store"
    real = pipeline.remove_path

    def dying(path):
        if Path(path) == work_folder(out):
            raise KeyboardInterrupt("killed")
        return real(path)

    monkeypatch.setattr(pipeline, "remove_path", dying)
    with pytest.raises(KeyboardInterrupt):
        _run(trees, out)
    monkeypatch.undo()
    assert out.is_dir() and work_folder(out).is_dir()
    report = _run(trees, out, resume=True)
    assert report.matched == 6 and report.single == {"hsc": 4, "legacy": 4}
    assert not work_folder(out).exists()


def test_existing_store_and_overwrite(trees, tmp_path):
    out = tmp_path / "p.store"
    _run(trees, out)
    with pytest.raises(FileExistsError, match="overwrite"):
        _run(trees, out)
    report = _run({"hsc": trees["hsc"]}, out, overwrite=True)
    assert report.observations == {"hsc": 10} and report.matched == 0
    assert ObservationStore(out).instruments == ["hsc"]


def test_compact_prepare_reads_back_within_the_noise(trees, tmp_path):
    full, small = tmp_path / "f.store", tmp_path / "c.store"
    _run(trees, full)
    _run(trees, small, compact=True)
    a, b = ObservationStore(full), ObservationStore(small)
    assert a.compact is None and b.compact is not None
    rows = np.arange(a.n_obs)
    ra, rb = a.read(rows, ("flux", "ivar", "mask")), b.read(rows, ("flux", "ivar", "mask"))
    assert rb["flux"].dtype == np.float32
    np.testing.assert_array_equal(ra["mask"], rb["mask"])
    good = ra["ivar"] > 0
    err = np.abs(rb["flux"] - ra["flux"]) * np.sqrt(ra["ivar"])
    assert err[good].max() < 0.05  # 1/32 sigma of the band's median noise, and below
    np.testing.assert_allclose(rb["ivar"], ra["ivar"], rtol=2**-8 + 2**-10)
    assert verify_store(small).ok


def test_one_to_one_nearest_match(tmp_path):
    """Two Legacy objects within 1" of one HSC object: the nearer is matched, the other is a
    single-survey source (no second-best partner)."""
    _mmu(tmp_path / "hsc" / "c" / "healpix=1" / "a.hdf5", [1], [150.0], [2.0], size=48)
    kw = {"bands": DES_BANDS, "size": 32, "scale": 0.262, "scale_shape": "scalar"}
    ra = [150.0 + 0.6 * ARCSEC, 150.0 + 0.3 * ARCSEC]
    _mmu(tmp_path / "ls" / "c" / "healpix=1" / "a.hdf5", [7, 8], ra, [2.0, 2.0], **kw)
    out = tmp_path / "m.store"
    inputs = {"hsc": tmp_path / "hsc", "legacy": tmp_path / "ls"}
    report = prepare_store(inputs, out, progress=False, neighbour_radius=60.0)
    assert report.matched == 1 and report.single == {"hsc": 0, "legacy": 1}
    store = ObservationStore(out)
    sid = dict(zip(store.table["object_id"].tolist(), store.source_id.tolist(), strict=True))
    assert sid[8] == sid[1] and sid[7] != sid[1]
    assert report.neighbours["k"] == 5  # the two Legacy objects are each other's neighbours


def test_fits_folder_input(tmp_path):
    write_fits_cutouts(tmp_path / "cut", n=3)  # objects 100-102 along a 0.1 deg line
    ra, dec = np.linspace(150, 150.1, 3), np.linspace(2, 2.1, 3)
    _mmu(
        tmp_path / "mmu" / "hsc" / "c" / "healpix=1" / "a.hdf5",
        [1, 2],
        ra[:2] + 0.2 * ARCSEC,
        dec[:2],
        size=48,
    )
    inputs = {"hsc": tmp_path / "mmu" / "hsc" / "c", "legacy": tmp_path / "cut"}
    assert detect_survey("legacy", tmp_path / "cut").kind == "fits"
    out = tmp_path / "f.store"
    report = prepare_store(inputs, out, progress=False, neighbour_radius=1.0 * 3600)
    assert report.matched == 2 and report.single == {"hsc": 0, "legacy": 1}
    assert verify_store(out).ok


def test_survey_arguments_and_paths_are_checked(trees, tmp_path, capsys):
    assert parse_survey("hsc=/data/x") == ("hsc", Path("/data/x"))
    for bad in ("hsc", "=x", "hsc=", "h s=x"):
        with pytest.raises(ConfigError, match=r"NAME=PATH|name"):
            parse_survey(bad)
    with pytest.raises(InputLayoutError, match="does not exist"):
        detect_survey("hsc", tmp_path / "nowhere")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(InputLayoutError, match="neither a Multimodal Universe tree"):
        detect_survey("hsc", tmp_path / "junk")
    root = trees["hsc"].parent
    assert detect_survey("hsc", root).folder == "hsc"  # the tree root, by name
    with pytest.raises(InputLayoutError, match="none named 'euclid'"):
        detect_survey("euclid", root)
    euclid = tmp_path / "other" / "euclid" / "c"
    _mmu(euclid / "healpix=1" / "a.hdf5", [1], HSC_RA[:1], HSC_DEC[:1], size=48)
    with pytest.raises(InputLayoutError, match="transform knows"):
        prepare_store({"euclid": euclid}, tmp_path / "x", progress=False)
    # a name the transform does not know is fine when the folder's is known
    assert (
        pipeline._transform_survey(detect_survey("deep", trees["hsc"]), Seed000Transform()) == "hsc"
    )
    with pytest.raises(ConfigError, match="twice"):
        prepare_store([("hsc", trees["hsc"]), ("hsc", trees["hsc"])], tmp_path / "x")
    rc = cli(["prepare", "--survey", "hsc", "--out", str(tmp_path / "x"), "--quiet"])
    assert rc == 2 and "NAME=PATH" in capsys.readouterr().err
    rc = cli(["prepare", "--survey", f"hsc={tmp_path / 'junk'}", "--out", str(tmp_path / "x")])
    assert rc == 2 and "neither" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not work_folder(tmp_path / "x").exists()


def test_cli_prepare_prints_the_counts(trees, tmp_path, capsys):
    out = tmp_path / "cli.store"
    args = ["prepare", "--quiet", "--out", str(out)]
    args += ["--survey", f"hsc={trees['hsc']}", "--survey", f"legacy={trees['legacy']}"]
    assert cli(args) == 0
    text = capsys.readouterr().out
    assert "matched (seen by >= 2 surveys): 6 sources" in text
    assert "single-survey: hsc 4, legacy 4" in text
    assert "rejected: 2 rows and 3 whole file(s)/block(s) (3 rows + 1 unreadable" in text
    assert "neighbour graph: k=5" in text


@pytest.mark.slow
def test_simulated_mmu_tree_prepares_to_a_store_that_trains(tmp_path, capsys):
    """End to end at tiny size: the simulator writes the MMU layout, ``whatsreal prepare``
    turns it into a store, and ``whatsreal train`` trains on that store."""
    pytest.importorskip("galsim")
    from whatsreal.simulate.galaxies import simulate_galaxies

    mmu = tmp_path / "mmu"
    simulate_galaxies(
        tmp_path / "sim.store", n=24, surveys="hsc,legacy", seed=4, workers=1,
        progress=False, mmu_out=mmu,
    )  # fmt: skip
    out = tmp_path / "prepared.store"
    args = ["prepare", "--quiet", "--out", str(out), "--survey", f"hsc={mmu}"]
    assert cli([*args, "--survey", f"legacy={mmu}"]) == 0
    assert "matched (seen by >= 2 surveys): 24 sources" in capsys.readouterr().out
    store = ObservationStore(out)
    assert store.n_obs == 48 and store.neighbours is not None
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        f"model: counterfactual\nstore: {out}\nout: {tmp_path / 'run'}\n"
        "train:\n  preset: tiny\n  batch_size: 4\n  max_steps: 2\n  val_every: 2\n"
        "  progress: false\n  val: 0.2\n  test: 0.2\n"
    )
    assert cli(["train", "--config", str(cfg)]) == 0
    assert (tmp_path / "run" / "model").is_dir()
