"""Hostile use of stores, pairing, exports and simulators: corruption, truncation, bad radii,
kills. Each test damages something the way a disk, a copy or a user would, and checks that
whatsreal says so (one line, naming the file) instead of returning wrong results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import astropy.units as u
import h5py
import numpy as np
import pytest
from torch import nn

from whatsreal.cli.main import main
from whatsreal.errors import ConfigError, ModelFileError, StoreCorruptError, StoreFormatError
from whatsreal.infer.counterfactual import CounterfactualResult, check_fits_folder, write_fits
from whatsreal.models.base import PretrainedMixin, constructor_args, load_pretrained, register_model
from whatsreal.pairing import build_pairing
from whatsreal.store import ObservationStore, StoreWriter, verify_store

from .conftest import write_image_store

# -- helpers ------------------------------------------------------------------------------


def _flip_byte_in_chunk(file: Path, dataset: str, chunk: int) -> int:
    """Invert one byte in the middle of a stored chunk (as bit rot would); return the chunk's
    first row."""
    with h5py.File(file, "r") as h5:
        info = h5[dataset].id.get_chunk_info(chunk)
    with open(file, "r+b") as f:
        f.seek(info.byte_offset + info.size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    return int(info.chunk_offset[0])


def _strip_checksums(src: Path, dst: Path) -> None:
    """Copy observations.h5 the way an older whatsreal wrote it: no fletcher32 anywhere."""
    with h5py.File(src, "r") as a, h5py.File(dst, "w") as b:
        for key, value in a.attrs.items():
            if key != "checksums":
                b.attrs[key] = value

        def copy(name: str, obj) -> None:
            if isinstance(obj, h5py.Group):
                b.require_group(name).attrs.update(dict(obj.attrs))
            else:
                b.create_dataset(name, data=obj[()], chunks=obj.chunks, maxshape=obj.maxshape)

        a.visititems(copy)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and err.count("\n") == 0, f"not one line: {err!r}"
    return err


def _temps(folder: Path, name: str) -> list[Path]:
    """Hidden temporary siblings of ``folder / name``, whatever release wrote them."""
    return sorted(
        p for p in folder.iterdir() if p.name.startswith(f".{name}.") and "tmp-" in p.name
    )


def _dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie lingers where nothing reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def store(tmp_path):
    """A tiny two-instrument image store: 40 observations, flux chunks of 16 rows."""
    return write_image_store(tmp_path / "img.store", n_sources=20)


# -- checksums ----------------------------------------------------------------------------


def test_every_dataset_is_checksummed(store):
    plain = []
    with h5py.File(store / "observations.h5", "r") as h5:
        h5.visititems(
            lambda name, obj: (
                plain.append(name) if isinstance(obj, h5py.Dataset) and not obj.fletcher32 else None
            )
        )
    assert plain == []
    report = verify_store(store)
    assert report.ok and report.unchecked_files() == []
    assert report.lines()[-1].endswith(": OK")


def test_flipped_byte_in_flux_chunk_is_detected(store, capsys):
    obs = store / "observations.h5"
    assert main(["store", "verify", str(store)]) == 0
    capsys.readouterr()
    first = _flip_byte_in_chunk(obs, "data/flux", 1)
    assert first == 16
    # verify names the dataset and the rows, and fails
    report = verify_store(store)
    assert not report.ok
    (bad,) = report.damaged
    assert bad.name == "data/flux" and bad.bad_rows == [(16, 32)]
    assert main(["store", "verify", str(store)]) == 1
    out = capsys.readouterr().out
    assert "data/flux: rows 16-31 fail their checksum" in out and "CORRUPTED" in out
    # reading a row of that chunk fails with a message that says what to do
    s = ObservationStore(store)
    with pytest.raises(
        StoreCorruptError, match=r"data/flux.*row 17 failed the checksum.*store verify"
    ):
        s.read([17])
    s.read([0, 39])  # other chunks are still readable


def test_flipped_byte_in_source_id_is_detected_at_open(store, capsys):
    _flip_byte_in_chunk(store / "observations.h5", "table/source_id", 0)
    with pytest.raises(StoreCorruptError, match="table/source_id"):
        ObservationStore(store)
    assert main(["store", "info", str(store)]) == 2  # not a wrong source count
    err = _one_line_error(capsys)
    assert "observations.h5" in err and "table/source_id" in err


def test_old_store_without_checksums_opens_and_nan_is_caught(store, tmp_path, capsys):
    old = tmp_path / "old.store"
    old.mkdir()
    _strip_checksums(store / "observations.h5", old / "observations.h5")
    s = ObservationStore(old)
    assert not s.checksummed and len(s) == 40
    report = verify_store(old)
    assert report.ok and report.unchecked_files() == ["observations.h5"]
    assert main(["store", "verify", str(old)]) == 0
    assert "no checksums (written by an older whatsreal); re-write to add them" in (
        capsys.readouterr().out
    )
    # without checksums, damage that makes NaN is still caught: on read and by verify
    with h5py.File(old / "observations.h5", "r+") as h5:
        h5["data/flux"][3, 0, 0, 0] = np.nan
    s = ObservationStore(old)
    with pytest.raises(StoreCorruptError, match=r"data/flux.*NaN or inf in store rows 3\b"):
        s.read([5, 3, 3])
    np.testing.assert_array_equal(s.read([4])["flux"].shape, (1, 4, 8, 8))
    (bad,) = verify_store(old).damaged
    assert bad.name == "data/flux" and bad.non_finite_rows == 1


# -- truncated files -----------------------------------------------------------------------


def test_truncated_store_gives_one_line(store, capsys):
    obs = store / "observations.h5"
    data = obs.read_bytes()
    obs.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreFormatError, match="truncated or damaged"):
        ObservationStore(store)
    assert main(["store", "info", str(store)]) == 2
    err = _one_line_error(capsys)
    assert str(obs) in err and "re-create the store" in err
    assert main(["store", "verify", str(store)]) == 1
    assert "observations.h5: cannot be opened" in capsys.readouterr().out


def test_truncated_pairing_gives_one_line(store, capsys):
    build_pairing(store, k=3, radius=600.0)
    pairing = store / "pairing.h5"
    pairing.write_bytes(pairing.read_bytes()[:700])
    with pytest.raises(StoreFormatError, match=r"pairing.h5.*whatsreal pair"):
        ObservationStore(store)
    assert main(["store", "info", str(store)]) == 2
    assert "pairing.h5" in _one_line_error(capsys)
    assert main(["store", "verify", str(store)]) == 1
    assert "recompute it with `whatsreal pair" in capsys.readouterr().out


@register_model
class TinyNet(PretrainedMixin, nn.Module):
    """The smallest registered model, to exercise save/load without a real architecture."""

    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.config = constructor_args(type(self), locals())
        self.lin = nn.Linear(width, 2)


def test_truncated_model_files_give_one_line(tmp_path, store, capsys):
    model_dir = tmp_path / "model"
    TinyNet().save_pretrained(model_dir)
    assert isinstance(load_pretrained(model_dir), TinyNet)
    weights = model_dir / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelFileError, match=r"model.safetensors.*truncated or damaged"):
        load_pretrained(model_dir)
    cli = ["counterfactual", "--model", str(model_dir), "--store", str(store), "--to", "hsc"]
    assert main([*cli, "--quiet"]) == 2
    assert "model.safetensors" in _one_line_error(capsys)
    # a truncated config.json, and weights from another model, are named too
    weights.write_bytes(good)
    config = model_dir / "config.json"
    config.write_text(config.read_text()[:20])
    with pytest.raises(ModelFileError, match=r"config\.json.*not a readable model config"):
        load_pretrained(model_dir)
    TinyNet(width=5).save_pretrained(tmp_path / "other")
    config.write_text((tmp_path / "other" / "config.json").read_text())
    with pytest.raises(ModelFileError, match="do not fit the model"):
        load_pretrained(model_dir)


def test_nan_weights_are_refused_on_load(tmp_path):
    import torch
    from safetensors.torch import save_file

    model_dir = tmp_path / "model"
    TinyNet().save_pretrained(model_dir)
    state = {k: v.clone() for k, v in TinyNet().state_dict().items()}
    state["lin.weight"][0, 0] = torch.nan
    save_file(state, str(model_dir / "model.safetensors"))
    with pytest.raises(ModelFileError, match=r"NaN or inf in 1 tensor\(s\) \(e.g. lin.weight\)"):
        load_pretrained(model_dir)


# -- pairing arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "radius", ["inf", "360deg", "180deg", "0", "--radius=-5arcsec", "nan", "1e9arcsec"]
)
def test_pair_bad_radius_refused_and_old_graph_untouched(store, capsys, radius):
    build_pairing(store, k=3, radius=600.0)
    pairing = store / "pairing.h5"
    before, mtime = pairing.read_bytes(), pairing.stat().st_mtime_ns
    args = [radius] if radius.startswith("--") else ["--radius", radius]
    with pytest.raises(SystemExit) as exit_info:
        main(["pair", str(store), *args])
    assert exit_info.value.code == 2
    assert "below 180 deg" in capsys.readouterr().err
    assert pairing.read_bytes() == before and pairing.stat().st_mtime_ns == mtime
    assert _temps(store, "pairing.h5") == []


@pytest.mark.parametrize(
    "radius", [float("inf"), float("nan"), -1.0, 0.0, 360 * u.deg, 181 * u.deg, 3 * u.kg]
)
def test_build_pairing_bad_radius_refused(store, radius):
    build_pairing(store, k=3, radius=600.0)
    before = (store / "pairing.h5").read_bytes()
    with pytest.raises(ConfigError, match="radius must be"):
        build_pairing(store, k=3, radius=radius)
    assert (store / "pairing.h5").read_bytes() == before


def test_bad_k_refused(store, capsys):
    for k in (0, -2, 2.5, True):
        with pytest.raises(ConfigError, match="k must be a whole number >= 1"):
            build_pairing(store, k=k, radius=600.0)
    assert main(["pair", str(store), "--k", "0"]) == 2
    assert "k must be" in _one_line_error(capsys)
    assert not (store / "pairing.h5").exists()


def test_empty_neighbour_graph_refused(store, capsys):
    good = build_pairing(store, k=3, radius=600.0)
    assert good.count().sum() > 0
    pairing = store / "pairing.h5"
    before, mtime = pairing.read_bytes(), pairing.stat().st_mtime_ns
    with pytest.raises(ConfigError, match=r"no observation .* has a neighbour.*larger radius"):
        build_pairing(store, k=3, radius=1e-3)  # a milliarcsecond: nobody is that close
    assert main(["pair", str(store), "--radius", "0.001arcsec"]) == 2
    assert "refusing to replace pairing.h5" in _one_line_error(capsys)
    assert pairing.read_bytes() == before and pairing.stat().st_mtime_ns == mtime
    assert ObservationStore(store).neighbours.count().sum() == good.count().sum()


# -- kills and leftovers --------------------------------------------------------------------

_HANGING_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from whatsreal.store import StoreWriter

    w = StoreWriter(sys.argv[1], (1, 8), {"a": ["f"]})
    w.append(np.zeros((4, 1, 8)), source_id=np.arange(4), instrument="a")
    print("ready", flush=True)
    time.sleep(120)
    """
)


def _simulate(out: Path, *extra: str) -> int:
    cmd = ["simulate", "lightcurves", "--preset", "tiny", "--n", "40", "--stars", "8"]
    return main([*cmd, "--out", str(out), *extra])


def test_killed_writer_temp_folder_is_swept_by_the_next_run(tmp_path, capsys):
    out = tmp_path / "lc.store"
    proc = subprocess.Popen(
        [sys.executable, "-c", _HANGING_WRITER, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        (live,) = _temps(tmp_path, "lc.store")
        # a run next to a live writer leaves the live writer's folder alone
        assert _simulate(out) == 0
        assert live.is_dir() and ObservationStore(out).n_obs == 40
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _temps(tmp_path, "lc.store") == [live]  # SIGKILL: nothing could clean up
    assert _simulate(out, "--overwrite") == 0
    assert _temps(tmp_path, "lc.store") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lc.store"]


def test_stale_temps_of_dead_runs_swept_recent_live_kept(tmp_path):
    dead = _dead_pid()
    stale = [
        tmp_path / f".x.store.whatsreal-tmp-{dead}-0123abcd",  # this release
        tmp_path / f".x.store.tmp-{dead}-89abcdef",  # older releases
    ]
    for folder in stale:
        folder.mkdir()
        (folder / "observations.h5").write_bytes(b"half a store")
    live = tmp_path / f".x.store.whatsreal-tmp-{os.getppid()}-fedcba98"
    live.mkdir()
    other = tmp_path / f".y.store.whatsreal-tmp-{dead}-00000000"  # another path's: not ours
    other.mkdir()
    with StoreWriter(tmp_path / "x.store", (1, 4), {"a": ["f"]}) as w:
        w.append(np.zeros((2, 1, 4)), source_id=[0, 1], instrument="a")
    assert not any(f.exists() for f in stale)
    assert live.is_dir() and other.is_dir()
    # a live owner that has not touched its folder for hours has gone (its pid was reused)
    old = time.time() - 7200
    os.utime(live, (old, old))
    with StoreWriter(tmp_path / "x.store", (1, 4), {"a": ["f"]}, overwrite=True) as w:
        w.append(np.zeros((2, 1, 4)), source_id=[0, 1], instrument="a")
    assert not live.exists()


_POOL_SCRIPT = textwrap.dedent(
    """
    import os, time
    from whatsreal.simulate.galaxies import _map

    def slow(x):
        time.sleep(0.2)
        return os.getpid()

    if __name__ == "__main__":
        for pid in _map(iter(range(100_000)), 2, slow):
            print(pid, flush=True)
    """
)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_pool_workers_die_with_a_killed_parent():
    proc = subprocess.Popen([sys.executable, "-c", _POOL_SCRIPT], stdout=subprocess.PIPE, text=True)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 and time.monotonic() < deadline:
            workers.add(int(proc.stdout.readline()))
        assert len(workers) == 2 and proc.pid not in workers
        assert all(_running(pid) for pid in workers)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    try:
        deadline = time.monotonic() + 10
        while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_running(pid) for pid in workers), "orphaned pool workers still run"
    finally:
        for pid in workers:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


# -- multi-file exports ----------------------------------------------------------------------


def _result(ids: list[int]) -> CounterfactualResult:
    n = len(ids)
    samples = np.random.default_rng(0).normal(size=(n, 2, 1, 4, 4)).astype(np.float32)
    return CounterfactualResult(
        source_id=np.array(ids),
        samples=samples,
        mean=samples.mean(1),
        std=samples.std(1),
        physics_rows=np.zeros((n, 1), np.int64),
        instrument_rows=np.zeros((n, 1), np.int64),
        target_row=np.zeros(n, np.int64),
        attrs={"to": "hsc", "solver": "heun", "nfe": 4, "bands": ["g"]},
    )


def _fits_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.fits"))


def test_fits_rerun_never_mixes_stale_files(tmp_path):
    out = tmp_path / "fits"
    write_fits(_result([1, 2, 3, 4]), out)
    assert _fits_names(out) == [f"source_{i}.fits" for i in (1, 2, 3, 4)]
    manifest = json.loads((out / "whatsreal-fits.json").read_text())
    assert manifest["complete"] and manifest["n_files"] == 4
    with pytest.raises(FileExistsError, match="overwrite"):
        check_fits_folder(out)  # the CLI asks this before sampling
    with pytest.raises(FileExistsError, match="overwrite"):
        write_fits(_result([7, 8]), out)
    assert len(_fits_names(out)) == 4
    write_fits(_result([7, 8]), out, overwrite=True)
    assert _fits_names(out) == ["source_7.fits", "source_8.fits"]  # nothing stale left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fits"]
    # a folder with someone else's files is never replaced, even with overwrite
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="did not write"):
        write_fits(_result([9]), out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and len(_fits_names(out)) == 2


def test_interrupted_fits_export_leaves_nothing(tmp_path, monkeypatch):
    import whatsreal.infer.counterfactual as cf

    def dies_half_way(result, folder, names):
        (folder / names[0]).write_bytes(b"the first file, then Ctrl-C")
        raise KeyboardInterrupt

    out = tmp_path / "fits"
    stale = tmp_path / f".fits.whatsreal-tmp-{_dead_pid()}-0badf00d"  # a SIGKILLed export
    stale.mkdir()
    (stale / "source_0.fits").write_bytes(b"partial")
    monkeypatch.setattr(cf, "_write_fits_files", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        write_fits(_result([1, 2, 3]), out)
    assert list(tmp_path.iterdir()) == []  # no partial folder, no temp, the stale one swept
    monkeypatch.undo()
    write_fits(_result([1, 2, 3]), out)
    assert len(_fits_names(out)) == 3


def test_mmu_layout_rerun_refused_or_replaced_whole(tmp_path):
    from whatsreal.simulate.galaxies import GalaxySimConfig, MMUWriter, prepare
    from whatsreal.simulate.galaxy_presets import survey_preset

    side = survey_preset("hsc").native_size

    def write(n: int, **kw) -> MMUWriter:
        prep = prepare(GalaxySimConfig(n_sources=n, surveys=("hsc",)), seed=0)
        w = MMUWriter(tmp_path / "mmu", prep, **kw)
        image = np.zeros((n, 4, side, side), np.float32)
        w.append("hsc", np.arange(n), image, image + 1)
        return w

    write(6).close()
    first = sorted(p.relative_to(tmp_path) for p in (tmp_path / "mmu").rglob("*.hdf5"))
    assert first and (tmp_path / "mmu" / "whatsreal-mmu.json").is_file()
    with pytest.raises(FileExistsError, match="overwrite"):
        write(6)
    w = write(3, overwrite=True)
    w.abort()  # an interrupted rerun: the old layout stays, no temp is left
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "mmu").rglob("*.hdf5")) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mmu"]
    write(2, overwrite=True).close()
    rows = 0
    for file in (tmp_path / "mmu").rglob("*.hdf5"):
        with h5py.File(file, "r") as h5:
            rows += h5["object_id"].shape[0]
    assert rows == 2  # only the new layout's sources: no stale healpix file survived
