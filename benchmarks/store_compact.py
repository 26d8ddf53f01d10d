"""Compact store vs today's float32 store: size per 20,000 sources and random-batch read speed.

Copies the observations of ``--sources`` random sources of an existing simulated galaxy store
(default ``benchmarks/_data/galaxies_hsc_legacy.store``, read only) into two new stores, one
float32 as ``StoreWriter`` writes today and one compact (``whatsreal.store.compact``; plus
Blosc-zstd and h5py-lzf variants for comparison), then in one run:

* **size**: bytes per observation that grow with the store (the image arrays as stored, plus
  the per-row table, scales and truth; :func:`bytes_per_obs`), extrapolated to 20,000 sources
  with the source store's surveys per source, and with three surveys (hsc, legacy, lsst: the
  6.6 GB per 20,000 sources of issue 12); the subset's file size is reported too;
* **read throughput**: ``ObservationStore.read`` of random batches (flux, ivar and clean), the
  variants interleaved over ``--repeats`` rounds, median per variant; warm (file in the page
  cache: CPU-bound, the strict case for decompression) and cold (the file's cached pages
  dropped with ``posix_fadvise`` before each round; only this benchmark's files);
* **precision**: the compact store's error in units of each pixel's noise.

Writes ``benchmarks/results/store_compact.json`` atomically.

    python benchmarks/store_compact.py                 # 1,000 sources (2,000 observations)
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).parent / "_data"
ARRAYS = ("flux", "ivar", "clean")


def copy_subset(src, rows: np.ndarray, out: Path, compact) -> float:
    """Write ``rows`` of ``src`` to a new store at ``out``; returns the seconds it took."""
    from whatsreal.store import StoreWriter

    arrays = tuple(a for a in ARRAYS if a in src.arrays)
    t0 = time.perf_counter()
    with StoreWriter(
        out,
        src.shape,
        {n: src.bands[n] for n in src.instruments},
        arrays=arrays[1:],
        positions=src.has_positions,
        config={"benchmark": "store_compact"},
        compact=compact,
    ) as w:
        for lo in range(0, rows.size, 256):
            r = rows[lo : lo + 256]
            data = src.read(r, arrays)
            w.append(
                source_id=src.source_id[r],
                instrument=np.asarray(src.instruments)[src.instrument[r]],
                ra=src.table["ra"][r] if src.has_positions else None,
                dec=src.table["dec"][r] if src.has_positions else None,
                meta={k: src.table[k][r] for k in src.meta_columns()},
                truth={k: v[r] for k, v in src.truth_obs.items()},
                **data,
            )
        if src.truth_source:
            keep = np.isin(src.truth_source["source_id"], src.source_id[rows])
            w.add_source_truth(**{k: v[keep] for k, v in src.truth_source.items()})
    return time.perf_counter() - t0


def bytes_per_obs(path: Path, n: int) -> dict[str, float]:
    """Bytes per observation that grow with the store: the image arrays as stored (measured,
    compressed), plus per-row bytes of every other per-observation dataset (table, scales,
    truth). A small store's file also holds fixed costs (a table chunk holds 65,536 rows),
    which a 20,000-source store amortises, so they are left out of the extrapolation."""
    import h5py

    out = {"arrays": 0.0, "rows": 0.0}
    with h5py.File(path / "observations.h5", "r") as f:

        def visit(name: str, obj: object) -> None:
            if not isinstance(obj, h5py.Dataset) or not obj.shape or obj.shape[0] != n:
                return
            if name.startswith("data/"):
                out["arrays"] += obj.id.get_storage_size() / n
            else:
                out["rows"] += obj.dtype.itemsize * int(np.prod(obj.shape[1:]))

        f.visititems(visit)
    out["total"] = out["arrays"] + out["rows"]
    return out


def drop_cache(path: Path) -> None:
    """Evict one file's pages from the page cache (no effect on any other file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_rate(path: Path, batches: np.ndarray, cold: bool) -> float:
    """Observations per second reading the given random batches (fresh reader each time)."""
    from whatsreal.store import ObservationStore

    if cold:
        drop_cache(path / "observations.h5")
    store = ObservationStore(path)
    t0 = time.perf_counter()
    for rows in batches:
        store.read(rows, ARRAYS)
    dt = time.perf_counter() - t0
    store.close()
    return batches.size / dt


def precision(full_path: Path, small_path: Path) -> dict:
    """The compact store's error in units of each pixel's noise (flux, clean), and ivar's."""
    from whatsreal.store import ObservationStore

    a, b = ObservationStore(full_path), ObservationStore(small_path)
    worst = {"flux": 0.0, "clean": 0.0}
    sq = {"flux": 0.0, "clean": 0.0}
    over = {"flux": 0, "clean": 0}
    n_px, ivar_rel = 0, 0.0
    for lo in range(0, a.n_obs, 256):
        rows = np.arange(lo, min(a.n_obs, lo + 256))
        ra, rb = a.read(rows, ARRAYS), b.read(rows, ARRAYS)
        good = ra["ivar"] > 0
        sigma = 1 / np.sqrt(ra["ivar"][good])
        for name in worst:
            err = np.abs(rb[name][good] - ra[name][good]) / sigma
            worst[name] = max(worst[name], float(err.max()))
            sq[name] += float((err.astype(np.float64) ** 2).sum())
            over[name] += int((err > 0.1).sum())
        ivar_rel = max(ivar_rel, float(np.abs(rb["ivar"][good] / ra["ivar"][good] - 1).max()))
        n_px += int(good.sum())
    out = {}
    for name in worst:
        out[f"{name}_max_err_sigma"] = round(worst[name], 4)
        out[f"{name}_rms_err_sigma"] = round(float(np.sqrt(sq[name] / n_px)), 5)
        out[f"{name}_frac_err_over_0.1_sigma"] = over[name] / n_px
    out["ivar_max_rel_err"] = round(ivar_rel, 5)
    out["pixels_compared"] = n_px
    return out


def main() -> None:
    from whatsreal.store import ObservationStore
    from whatsreal.store.compact import CompactSpec
    from whatsreal.utils import atomic_write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=str(DATA / "galaxies_hsc_legacy.store"))
    ap.add_argument("--sources", type=int, default=1000, help="sources copied from --source")
    ap.add_argument("--batch", type=int, default=256, help="rows per random batch")
    ap.add_argument("--batches", type=int, default=20, help="batches per measurement")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds per variant")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=str(DATA), help="where the copies are written (removed)")
    ap.add_argument("--out", default=str(RESULTS / "store_compact.json"), help="result JSON")
    args = ap.parse_args()

    src = ObservationStore(args.source)
    rng = np.random.default_rng(args.seed)
    ids = np.unique(src.source_id)
    pick = rng.choice(ids, size=min(args.sources, ids.size), replace=False)
    rows = np.flatnonzero(np.isin(src.source_id, pick))
    obs_per_source = src.n_obs / ids.size
    variants = {
        "float32": False,
        "compact": CompactSpec(),
        "compact_zstd": CompactSpec(codec="zstd", level=1),
        "compact_lzf": CompactSpec(codec="lzf"),  # h5py's own filter, no hdf5plugin
    }
    work = Path(tempfile.mkdtemp(prefix=".store_compact-", dir=args.workdir))
    try:
        sizes, write_s = {}, {}
        for name, spec in variants.items():
            path = work / f"{name}.store"
            write_s[name] = copy_subset(src, rows, path, spec)
            sizes[name] = bytes_per_obs(path, rows.size)
            sizes[name]["file_mb"] = (path / "observations.h5").stat().st_size / 1e6
            print(f"wrote {name}: {sizes[name]} in {write_s[name]:.1f} s")
        n = rows.size
        batches = rng.integers(0, n, (args.repeats, args.batches, args.batch))
        rates: dict[str, dict[str, list[float]]] = {"warm": {}, "cold": {}}
        for mode in ("warm", "cold"):
            order = list(variants)
            for name in order:  # warm-up: page cache, imports, HDF5 metadata
                read_rate(work / f"{name}.store", batches[0, :2], cold=False)
            for r in range(args.repeats):
                for name in order if r % 2 == 0 else order[::-1]:
                    rate = read_rate(work / f"{name}.store", batches[r], cold=mode == "cold")
                    rates[mode].setdefault(name, []).append(rate)
            print(mode, {k: round(float(np.median(v))) for k, v in rates[mode].items()})
        prec = precision(work / "float32.store", work / "compact.store")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    per_obs = {k: v["total"] for k, v in sizes.items()}
    table = {}
    for name in variants:
        table[name] = {
            "bytes_per_observation": round(per_obs[name]),
            "array_bytes_per_observation": round(sizes[name]["arrays"]),
            "other_bytes_per_observation": round(sizes[name]["rows"]),
            "subset_file_mb": round(sizes[name]["file_mb"], 1),
            "gb_per_20k_sources": round(per_obs[name] * 20_000 * obs_per_source / 1e9, 3),
            "gb_per_20k_sources_3_surveys": round(per_obs[name] * 60_000 / 1e9, 3),
            "size_ratio_vs_float32": round(per_obs["float32"] / per_obs[name], 2),
            "write_s": round(write_s[name], 2),
        }
        for mode in ("warm", "cold"):
            med = float(np.median(rates[mode][name]))
            base = float(np.median(rates[mode]["float32"]))
            table[name][f"read_obs_per_s_{mode}"] = round(med, 1)
            table[name][f"read_ratio_vs_float32_{mode}"] = round(med / base, 3)
    c = table["compact"]
    result = {
        "benchmark": "store_compact",
        "command": "python benchmarks/store_compact.py",
        "source_store": str(args.source),
        "sources_copied": int(pick.size),
        "observations_copied": int(n),
        "observations_per_source": round(obs_per_source, 3),
        "shape": list(src.shape),
        "arrays": list(ARRAYS),
        "batch": args.batch,
        "batches_per_measurement": args.batches,
        "repeats": args.repeats,
        "compact_spec": CompactSpec().to_dict(),
        "variants": table,
        "precision_compact": prec,
        "goal": "<= 2 GB per 20,000 sources (3 surveys) at >= 90% of float32 read throughput",
        "goal_met": bool(
            c["gb_per_20k_sources_3_surveys"] <= 2.0 and c["read_ratio_vs_float32_warm"] >= 0.9
        ),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    for name, row in table.items():
        print(name, row)
    print("precision", prec)
    print("goal_met", result["goal_met"])
    atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
