"""Cross-match + neighbour graph on 10^6 sky positions per instrument, against astropy.

Two catalogues ("hsc" and "legacy") of N objects each on a patch straddling RA = 0: the
second is the first jittered by 0.05-0.5 arcsec, with 10% of objects dropped and replaced
by unrelated ones. whatsreal's path is ``crossmatch`` (1 arcsec, mutual best) plus
``neighbour_graph`` (K=5 within 3 arcmin, per instrument). The reference path, timed in the
same run, is astropy's ``search_around_sky`` for both steps (pairs within the radius, then
best / K-nearest per object). Both paths' answers are compared for equality.

    python benchmarks/pairing.py            # N = 10^6, 1000 deg^2 (about 1000 per deg^2)
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord, search_around_sky

from whatsreal.pairing import crossmatch, neighbour_graph
from whatsreal.utils import atomic_write_json, peak_rss_mb

RESULTS = Path(__file__).parent / "results"


def catalogues(n: int, area_deg2: float, seed: int):
    """Two overlapping catalogues on a square-ish patch centred on RA=0, Dec=0."""
    rng = np.random.default_rng(seed)
    half = np.sqrt(area_deg2) / 2
    ra1 = rng.uniform(-half, half, n) % 360
    # uniform in sin(dec) so density is uniform on the sphere
    s = np.sin(np.radians(half))
    dec1 = np.degrees(np.arcsin(rng.uniform(-s, s, n)))
    jitter = rng.uniform(0.05, 0.5, n) / 3600
    pa = rng.uniform(0, 2 * np.pi, n)
    ra2 = (ra1 + jitter * np.sin(pa) / np.cos(np.radians(dec1))) % 360
    dec2 = dec1 + jitter * np.cos(pa)
    swap = rng.uniform(size=n) < 0.1
    ra2[swap] = rng.uniform(-half, half, swap.sum()) % 360
    dec2[swap] = np.degrees(np.arcsin(rng.uniform(-s, s, swap.sum())))
    return ra1, dec1, ra2, dec2


def ours(ra1, dec1, ra2, dec2, k, radius_as):
    t0 = time.perf_counter()
    m = crossmatch(ra1, dec1, ra2, dec2, radius=1.0 * u.arcsec)
    t_match = time.perf_counter() - t0
    sid2 = np.full(ra2.size, -1, dtype=np.int64)
    sid2[m.idx2] = m.idx1
    sid2[sid2 < 0] = ra1.size + np.arange((sid2 < 0).sum())
    ra = np.concatenate([ra1, ra2])
    dec = np.concatenate([dec1, dec2])
    group = np.repeat([0, 1], [ra1.size, ra2.size])
    sid = np.concatenate([np.arange(ra1.size), sid2])
    t1 = time.perf_counter()
    index, _ = neighbour_graph(ra, dec, group, sid, k=k, radius=radius_as)
    t_graph = time.perf_counter() - t1
    return m, index, sid, t_match, t_graph


def astropy_reference(ra1, dec1, ra2, dec2, sid, k, radius_as):
    """The same answers from astropy search_around_sky pairs."""
    c1 = SkyCoord(ra1 * u.deg, dec1 * u.deg)
    c2 = SkyCoord(ra2 * u.deg, dec2 * u.deg)
    t0 = time.perf_counter()
    i1, i2, sep, _ = search_around_sky(c1, c2, 1.0 * u.arcsec)
    sep = sep.to_value(u.arcsec)
    # mutual best within the radius
    best1 = np.full(ra1.size, -1)
    best2 = np.full(ra2.size, -1)
    o = np.lexsort((sep, i1))
    first = np.r_[True, i1[o][1:] != i1[o][:-1]]
    best1[i1[o][first]] = i2[o][first]
    o = np.lexsort((sep, i2))
    first = np.r_[True, i2[o][1:] != i2[o][:-1]]
    best2[i2[o][first]] = i1[o][first]
    has = best1 >= 0
    mutual = np.flatnonzero(has)[best2[best1[has]] == np.flatnonzero(has)]
    t_match = time.perf_counter() - t0

    t1 = time.perf_counter()
    index = np.full((ra1.size + ra2.size, k), -1, dtype=np.int64)
    offset = 0
    for coords in (c1, c2):
        a, b, sep, _ = search_around_sky(coords, coords, radius_as * u.arcsec)
        a, b = a + offset, b + offset
        ok = sid[a] != sid[b]
        a, b, sep = a[ok], b[ok], sep.to_value(u.arcsec)[ok]
        o = np.lexsort((sep, a))
        a, b = a[o], b[o]
        start = np.searchsorted(a, a)  # first position of each a
        rank = np.arange(a.size) - start
        keep = rank < k
        index[a[keep], rank[keep]] = b[keep]
        offset += len(coords)
    t_graph = time.perf_counter() - t1
    return mutual, best1, index, t_match, t_graph


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="objects per catalogue")
    ap.add_argument("--area", type=float, default=1000.0, help="patch area in deg^2")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--radius", type=float, default=180.0, help="neighbour radius, arcsec")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (median quoted)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    ra1, dec1, ra2, dec2 = catalogues(args.n, args.area, args.seed)
    runs_ours, runs_ref = [], []
    for r in range(args.repeats):
        m, index, sid, tm, tg = ours(ra1, dec1, ra2, dec2, args.k, args.radius)
        runs_ours.append((tm, tg))
        mutual, best1, ref_index, rm, rg = astropy_reference(
            ra1, dec1, ra2, dec2, sid, args.k, args.radius
        )
        runs_ref.append((rm, rg))
        print(
            f"repeat {r}: whatsreal {tm + tg:.2f} s (match {tm:.2f}, graph {tg:.2f}); "
            f"astropy search_around_sky {rm + rg:.2f} s (match {rm:.2f}, graph {rg:.2f})"
        )

    # Correctness on the full set: same matches, same neighbour sets.
    same_match = np.array_equal(np.sort(m.idx1), np.sort(mutual)) and np.array_equal(
        m.idx2, best1[m.idx1]
    )
    same_graph = float((np.sort(index, axis=1) == np.sort(ref_index, axis=1)).all(axis=1).mean())
    ours_tot = np.median([a + b for a, b in runs_ours])
    ref_tot = np.median([a + b for a, b in runs_ref])
    n_nb = (index >= 0).sum(axis=1)
    result = {
        "benchmark": "pairing",
        "command": "python benchmarks/pairing.py"
        + ("" if args.n == 1_000_000 else f" --n {args.n}")
        + ("" if args.area == 1000.0 else f" --area {args.area}"),
        "n_per_catalogue": args.n,
        "n_positions_total": 2 * args.n,
        "area_deg2": args.area,
        "k": args.k,
        "radius_arcsec": args.radius,
        "match_radius_arcsec": 1.0,
        "repeats": args.repeats,
        "whatsreal_seconds_median": round(float(ours_tot), 3),
        "whatsreal_match_seconds_median": round(float(np.median([a for a, _ in runs_ours])), 3),
        "whatsreal_graph_seconds_median": round(float(np.median([b for _, b in runs_ours])), 3),
        "astropy_seconds_median": round(float(ref_tot), 3),
        "speedup_vs_astropy": round(float(ref_tot / ours_tot), 2),
        "matches": int(m.idx1.size),
        "matches_identical_to_astropy": bool(same_match),
        "graph_rows_identical_to_astropy": same_graph,
        "mean_neighbours": round(float(n_nb.mean()), 3),
        "fraction_with_zero_neighbours": round(float((n_nb == 0).mean()), 5),
        "goal": "<= 60 s and not slower than astropy",
        "goal_met": bool(ours_tot <= 60 and ours_tot <= ref_tot),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
    }
    for key, val in result.items():
        print(f"{key:>34}: {val}")
    atomic_write_json(RESULTS / "pairing.json", result)


if __name__ == "__main__":
    main()
