"""The HATS backend (``scale`` extra) against the in-memory rules, on HATS catalogues the
tests build: the same source ids and the same neighbours, across HEALPix pixel borders."""

from __future__ import annotations

import os

import numpy as np
import pytest

from whatsreal.errors import ConfigError
from whatsreal.pairing import assign_source_ids
from whatsreal.pairing.sky import neighbour_graph

# CI installs the scale extra (the README's test command): there a missing LSDB is a failure
lsdb = pytest.importorskip("lsdb") if not os.environ.get("CI") else __import__("lsdb")

from whatsreal.pairing.hats import (  # noqa: E402
    hats_neighbours,
    hats_source_ids,
    write_hats_catalogue,
)


@pytest.fixture(scope="module")
def sky():
    """Three surveys over 4 x 4 deg (several HEALPix pixels of 500 rows): 60% of sources seen
    by each, positions scattered by 0.2 arcsec per survey, one repeat visit in the first."""
    rng = np.random.default_rng(3)
    n = 2500
    ra, dec = rng.uniform(30, 34, n), rng.uniform(-2, 2, n)
    surveys = {}
    start = 0
    for name in ("hsc", "legacy", "lsst"):
        seen = np.flatnonzero(rng.random(n) < 0.6)
        r = ra[seen] + rng.normal(0, 0.2 / 3600, seen.size) / np.cos(np.radians(dec[seen]))
        d = dec[seen] + rng.normal(0, 0.2 / 3600, seen.size)
        surveys[name] = (r, d, start + np.arange(seen.size))
        start += seen.size
    return surveys


def test_source_ids_match_the_in_memory_rule(sky, tmp_path):
    paths = {
        name: write_hats_catalogue(tmp_path / name, r, d, key, partition_rows=500)
        for name, (r, d, key) in sky.items()
    }
    assert len(lsdb.open_catalog(paths["hsc"]).get_healpix_pixels()) > 1  # borders exist
    got = hats_source_ids(paths, radius=1.0)
    want = assign_source_ids({n: (r, d) for n, (r, d, _) in sky.items()}, 1.0)
    for name in sky:
        np.testing.assert_array_equal(got[name], want[name])
    shared = np.intersect1d(got["hsc"], got["legacy"]).size
    assert shared > 500  # the surveys do overlap: this is not a test of empty matches


def test_neighbours_match_the_in_memory_rule(sky, tmp_path):
    r, d, key = sky["hsc"]
    source = np.arange(r.size)
    source[1] = source[0]  # a repeat visit: never its own neighbour
    path = write_hats_catalogue(tmp_path / "hsc", r, d, key, source, partition_rows=500)
    keys, index, seps = hats_neighbours(path, k=5, radius=180.0)
    np.testing.assert_array_equal(keys, key)
    want_index, want_seps = neighbour_graph(r, d, np.zeros(r.size), source, 5, 180.0)
    want_keys = np.where(want_index >= 0, key[np.maximum(want_index, 0)], -1)
    np.testing.assert_array_equal(index, want_keys)
    np.testing.assert_allclose(seps, want_seps, atol=1e-3, equal_nan=True)
    assert (index >= 0).sum() > 800  # real neighbours, not an empty graph
    # some of them lie in another HEALPix partition: found through the margin cache
    part = _partition(path, r, d)
    q, j = np.nonzero(index >= 0)
    other = part[np.searchsorted(key, index[q, j])]
    assert (other != part[q]).sum() >= 5
    assert key[1] not in index[0] and key[0] not in index[1]


def _partition(path, ra, dec):
    """Index of the catalogue partition (HEALPix pixel) that holds each position."""
    import astropy.units as u
    from cdshealpix.nested import lonlat_to_healpix

    pixels = lsdb.open_catalog(path).get_healpix_pixels()
    out = np.full(ra.size, -1)
    for i, px in enumerate(pixels):
        at = lonlat_to_healpix(ra * u.deg, dec * u.deg, px.order)
        out[np.asarray(at) == px.pixel] = i
    assert (out >= 0).all()
    return out


def test_a_margin_smaller_than_the_radius_is_refused(sky, tmp_path):
    r, d, key = sky["legacy"]
    path = write_hats_catalogue(tmp_path / "thin", r, d, key, key, margin_arcsec=10.0)
    with pytest.raises(ConfigError, match="margin cache of 10"):
        hats_neighbours(path, k=5, radius=180.0)
    with pytest.raises(ConfigError, match="source_id"):
        hats_neighbours(write_hats_catalogue(tmp_path / "nosrc", r, d, key), radius=5.0)
    with pytest.raises(FileNotFoundError, match="no HATS catalogue"):
        hats_neighbours(tmp_path / "absent")


def test_prepare_through_hats_writes_the_same_store(tmp_path):
    """``whatsreal prepare --catalogues hats`` on the layout-exact MMU trees of test_prepare:
    every dataset of the store and its neighbour graph equals the in-memory run's."""
    from whatsreal.cli.main import main as cli
    from whatsreal.store import ObservationStore

    from .test_prepare import _datasets, _hsc, _legacy

    root = tmp_path / "mmu"
    trees = {"hsc": str(_hsc(root)), "legacy": str(_legacy(root))}
    args = [x for name, p in trees.items() for x in ("--survey", f"{name}={p}")]
    assert cli(["prepare", *args, "--out", str(tmp_path / "mem.store"), "--quiet"]) == 0
    hats_out = tmp_path / "hats.store"
    assert cli(["prepare", *args, "--out", str(hats_out), "--catalogues", "hats", "--quiet"]) == 0
    mem, via = _datasets(tmp_path / "mem.store"), _datasets(hats_out)
    assert sorted(mem) == sorted(via)
    for key in mem:
        np.testing.assert_array_equal(mem[key], via[key], err_msg=key)
    store = ObservationStore(hats_out)
    assert store.config["prepare"]["catalogues"] == "hats"
    assert (store.neighbours.count() > 0).all()
