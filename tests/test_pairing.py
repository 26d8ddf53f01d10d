"""Cross-match and neighbour graph agree with a brute-force haversine search."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whatsreal.errors import StoreValidationError
from whatsreal.pairing import assign_source_ids, build_pairing, crossmatch, neighbour_graph
from whatsreal.pairing.sky import separation_arcsec
from whatsreal.store import ObservationStore

from .conftest import write_image_store


def haversine_arcsec(ra1, dec1, ra2, dec2):
    """Independent great-circle distance (degrees in, arcsec out)."""
    ra1, dec1, ra2, dec2 = map(np.radians, (ra1, dec1, ra2, dec2))
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))) * 3600


def offset(ra, dec, sep_arcsec, angle):
    """Point at an exact separation and position angle from (ra, dec) (spherical)."""
    ra, dec, d, pa = np.radians(ra), np.radians(dec), np.radians(sep_arcsec / 3600), angle
    dec2 = np.arcsin(np.sin(dec) * np.cos(d) + np.cos(dec) * np.sin(d) * np.cos(pa))
    ra2 = ra + np.arctan2(
        np.sin(pa) * np.sin(d) * np.cos(dec), np.cos(d) - np.sin(dec) * np.sin(dec2)
    )
    return np.degrees(ra2) % 360, np.degrees(dec2)


def hard_catalogue(rng, radius_as, n_centres=12):
    """Clusters at RA~0/360, near both poles and at ordinary places, with members placed
    just inside and just outside the radius."""
    centres = [
        (0.0, 0.0),
        (359.9999, 10.0),
        (0.0001, -20.0),
        (45.0, 86.0),
        (200.0, -88.5),
        (10.0, 89.99),
        (123.0, -89.99),
        (180.0, 45.0),
    ]
    centres += [
        (rng.uniform(0, 360), rng.uniform(-60, 60)) for _ in range(n_centres - len(centres))
    ]
    ra, dec = [], []
    for c_ra, c_dec in centres:
        ra.append(c_ra)
        dec.append(c_dec)
        for frac in (0.3, 0.7, 1 - 1e-6, 1 + 1e-6, 1.5, 2.5):
            r2, d2 = offset(c_ra, c_dec, frac * radius_as, rng.uniform(0, 2 * np.pi))
            ra.append(r2)
            dec.append(d2)
        for _ in range(6):
            r2, d2 = offset(c_ra, c_dec, rng.uniform(0, 3) * radius_as, rng.uniform(0, 2 * np.pi))
            ra.append(r2)
            dec.append(d2)
    return np.array(ra) % 360, np.array(dec)


def brute_neighbours(ra, dec, group, sid, k, radius_as):
    out = []
    for i in range(ra.size):
        sep = haversine_arcsec(ra[i], dec[i], ra, dec)
        ok = (group == group[i]) & (sid != sid[i]) & (sep <= radius_as)
        cand = np.flatnonzero(ok)
        out.append(list(cand[np.argsort(sep[cand], kind="stable")][:k]))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_neighbour_graph_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    radius = 180.0
    ra, dec = hard_catalogue(rng, radius)
    n = ra.size
    group = rng.integers(0, 2, n)
    sid = np.arange(n)
    sid[5] = sid[6]  # a repeat observation of one source must not be its own neighbour
    group[6] = group[5]
    k = 5
    index, sep = neighbour_graph(ra, dec, group, sid, k=k, radius=radius)
    expected = brute_neighbours(ra, dec, group, sid, k, radius)
    for i in range(n):
        got = [j for j in index[i] if j >= 0]
        assert got == expected[i], f"row {i} at ({ra[i]:.5f}, {dec[i]:.5f})"
        real = index[i] >= 0
        np.testing.assert_allclose(
            sep[i][real],
            haversine_arcsec(ra[i], dec[i], ra[index[i][real]], dec[index[i][real]]),
            rtol=1e-5,
        )
        assert np.isnan(sep[i][~real]).all()
    # the boundary cases really are exercised: some pairs at 1-1e-6 kept, 1+1e-6 dropped
    assert (sep[np.isfinite(sep)] > radius * (1 - 2e-6)).any()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), k=st.integers(1, 6), radius=st.floats(5.0, 600.0))
def test_neighbour_graph_random_catalogues(seed, k, radius):
    rng = np.random.default_rng(seed)
    n = 150
    # a patch straddling RA=0 so wrap-around is always in play
    ra = (rng.uniform(-0.2, 0.2, n)) % 360
    dec = rng.uniform(-0.1, 0.1, n) + rng.choice([0.0, 87.0], n)
    group = rng.integers(0, 3, n)
    sid = rng.integers(0, 120, n)
    index, _ = neighbour_graph(ra, dec, group, sid, k=k, radius=radius)
    expected = brute_neighbours(ra, dec, group, sid, k, radius)
    for i in range(n):
        assert [j for j in index[i] if j >= 0] == expected[i]


def brute_crossmatch(ra1, dec1, ra2, dec2, radius_as):
    d = haversine_arcsec(ra1[:, None], dec1[:, None], ra2[None, :], dec2[None, :])
    best12, best21 = d.argmin(1), d.argmin(0)
    pairs = {
        (i, int(best12[i]))
        for i in range(ra1.size)
        if best21[best12[i]] == i and d[i, best12[i]] <= radius_as
    }
    return pairs


@pytest.mark.parametrize("seed", [0, 1])
def test_crossmatch_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    ra1, dec1 = hard_catalogue(rng, 1.0)
    keep = rng.uniform(size=ra1.size) < 0.8
    # the second catalogue: jittered copies (some just inside / outside 1"), plus strangers
    jit = rng.choice([0.2, 0.9, 1 - 1e-6, 1 + 1e-6, 1.8], size=keep.sum())
    ra2, dec2 = offset(ra1[keep], dec1[keep], jit, rng.uniform(0, 2 * np.pi, keep.sum()))
    ra2 = np.concatenate([ra2, rng.uniform(0, 360, 20)])
    dec2 = np.concatenate([dec2, rng.uniform(-90, 90, 20)])
    m = crossmatch(ra1, dec1, ra2, dec2, radius=1.0)
    got = set(zip(m.idx1.tolist(), m.idx2.tolist(), strict=True))
    assert got == brute_crossmatch(ra1, dec1, ra2, dec2, 1.0)
    assert len(set(m.idx1.tolist())) == m.idx1.size and len(set(m.idx2.tolist())) == m.idx2.size
    assert (m.sep_arcsec <= 1.0).all()


def test_assign_source_ids_three_instruments():
    rng = np.random.default_rng(3)
    ra, dec = rng.uniform(30, 31, 300), rng.uniform(0, 1, 300)
    cats = {
        "hsc": (ra[:200], dec[:200]),
        "legacy": offset(ra[100:300], dec[100:300], 0.3, 1.0),
        "lsst": offset(ra[::2], dec[::2], 0.2, 2.0),
    }
    ids = assign_source_ids(cats)
    truth = {"hsc": np.arange(200), "legacy": np.arange(100, 300), "lsst": np.arange(0, 300, 2)}
    # the same true object always gets the same id, different objects different ids
    mapping = {}
    for name, got in ids.items():
        for t, g in zip(truth[name], got, strict=True):
            assert mapping.setdefault(int(t), int(g)) == int(g)
    assert len(set(mapping.values())) == 300


def test_build_pairing_stored_and_zero_neighbours_masked(tmp_path):
    path = write_image_store(tmp_path / "s.store", n_sources=80)
    s = ObservationStore(path)
    nb = build_pairing(s, k=4, radius=60.0)
    again = ObservationStore(path).neighbours
    np.testing.assert_array_equal(nb.index, again.index)
    assert again.k == 4 and again.radius_arcsec == 60.0
    assert (nb.count() == 0).any(), "a 60 arcsec radius should leave some sources alone"
    inst = s.instrument
    real = nb.index >= 0
    rows = np.nonzero(real)[0]
    assert (inst[nb.index[real]] == inst[rows]).all()
    assert (s.source_id[nb.index[real]] != s.source_id[rows]).all()


def test_pairing_needs_positions(tmp_path):
    path = write_image_store(tmp_path / "s.store", n_sources=10, positions=False)
    with pytest.raises(StoreValidationError, match="no sky positions"):
        build_pairing(path)


def test_bad_positions_named():
    with pytest.raises(StoreValidationError, match="catalogue 2: ra/dec contain NaN"):
        crossmatch([1.0], [1.0], [np.nan], [1.0])
    with pytest.raises(ValueError, match="radius must be a positive angle"):
        neighbour_graph([1.0], [1.0], [0], [0], radius=-1.0)


def test_inference_takes_the_instrument_views_training_takes(tmp_path):
    """One view rule: a source the target survey saw gets, at inference, exactly the views
    the store's graph (training) gives its observation; a source it never saw gets the
    nearest target observations of other sources around its own position."""
    from whatsreal.infer.counterfactual import _context_rows
    from whatsreal.sampling.views import sky_context_rows

    path = write_image_store(tmp_path / "s.store", n_sources=300, shape=(1, 4, 4), drop=0.3)
    build_pairing(ObservationStore(path), k=4, radius=400.0)
    store = ObservationStore(path)
    target = store.instrument_code("legacy")
    sid, inst = store.source_id, store.instrument
    rows_by_source = {int(s): np.flatnonzero(sid == s) for s in np.unique(sid)}
    seen = np.unique(sid[inst == target])
    unseen = np.setdiff1d(np.unique(sid), seen)
    assert unseen.size > 0
    ctx = _context_rows(store, target, seen, rows_by_source, 4, 400.0, 0)
    own = np.array(
        [rows_by_source[int(s)][inst[rows_by_source[int(s)]] == target][0] for s in seen]
    )
    np.testing.assert_array_equal(ctx, sky_context_rows(store, own, 4))
    far = _context_rows(store, target, unseen, rows_by_source, 4, 400.0, 0)
    ra, dec = store.table["ra"], store.table["dec"]
    for s, row in zip(unseen, far, strict=True):
        real = row[row >= 0]
        assert real.size and (inst[real] == target).all() and (sid[real] != s).all()
        q = rows_by_source[int(s)][0]
        d = separation_arcsec(ra[q], dec[q], ra[real], dec[real])
        assert (np.diff(d) >= 0).all() and d.max() <= 400.0  # nearest first, in the radius
        others = np.flatnonzero((inst == target) & (sid != s))
        closest = np.sort(separation_arcsec(ra[q], dec[q], ra[others], dec[others]))
        np.testing.assert_allclose(d, closest[: real.size], rtol=1e-6)
