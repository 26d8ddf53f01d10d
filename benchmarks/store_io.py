"""Random-batch read throughput and peak RSS when iterating a large observation store.

Writes (once, then reuses) stores of 4x48x48 float32 observations from two instruments
with sky positions and a neighbour graph, then, for each store size, in a fresh child
process so the RSS is the reader's alone:

* raw reads: ``ObservationStore.read`` of random batches of 64 rows;
* view batches: a ``DataLoader`` over ``ViewDataset`` (anchor + 1 physics + 5 instrument
  views = 7 observations per item), batch 64, 2 workers, one full pass or ``--seconds``.

Peak RSS is the maximum over the child and its workers. Measuring two sizes shows that
memory does not grow with the store.

    python benchmarks/store_io.py                      # 200,000 observations (7.4 GB)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).parent / "_data"
SHAPE = (4, 48, 48)


def make_store(path: Path, n_obs: int, seed: int = 0) -> None:
    """Two instruments observing n_obs/2 sources on a 50 deg^2 patch, in streamed chunks."""
    from whatsreal.pairing import build_pairing
    from whatsreal.store import StoreWriter

    rng = np.random.default_rng(seed)
    n_src = n_obs // 2
    ra = rng.uniform(0, 7, n_src)
    dec = rng.uniform(-3.5, 3.5, n_src)
    chunk = 5000
    t0 = time.perf_counter()
    with StoreWriter(
        path,
        SHAPE,
        {"hsc": list("griz"), "legacy": list("griz")},
        positions=True,
        config={"benchmark": "store_io", "n_obs": n_obs},
    ) as w:
        for inst in ("hsc", "legacy"):
            for lo in range(0, n_src, chunk):
                hi = min(n_src, lo + chunk)
                w.append(
                    rng.standard_normal((hi - lo, *SHAPE), dtype=np.float32),
                    source_id=np.arange(lo, hi),
                    instrument=inst,
                    ra=ra[lo:hi],
                    dec=dec[lo:hi],
                    meta={"psf_fwhm": rng.uniform(0.5, 1.5, hi - lo)},
                )
    build_pairing(path)
    print(f"wrote {path} ({n_obs} observations) in {time.perf_counter() - t0:.1f} s")


def child(path: str, seconds: float, workers: int) -> None:
    """Measure in this process; print one JSON line."""
    import torch
    from torch.utils.data import DataLoader

    from whatsreal.sampling import SplitSpec, ViewDataset, collate_views
    from whatsreal.store import ObservationStore

    torch.set_num_threads(1)
    store = ObservationStore(path)
    rng = np.random.default_rng(0)
    n_read, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        store.read(rng.integers(0, store.n_obs, 64))
        n_read += 64
    raw_rate = n_read / (time.perf_counter() - t0)

    ds = ViewDataset(store, "train", n_physics=1, n_instrument=5, splits=SplitSpec(0.0, 0.0))
    loader = DataLoader(
        ds,
        batch_size=64,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate_views,
        persistent_workers=False,
    )
    n_items, n_obs_read, t0 = 0, 0, time.perf_counter()
    for batch in loader:
        n_items += batch["anchor"].shape[0]
        n_obs_read += int(
            batch["anchor"].shape[0] + batch["physics_mask"].sum() + batch["instrument_mask"].sum()
        )
        if time.perf_counter() - t0 > seconds:
            break
    dt = time.perf_counter() - t0
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        json.dumps(
            {
                "raw_read_obs_per_s": raw_rate,
                "view_items_per_s": n_items / dt,
                "view_obs_per_s": n_obs_read / dt,
                "peak_rss_mb_main": self_kb / 1024,
                "peak_rss_mb_worker": kids_kb / 1024,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="observations in the large store")
    ap.add_argument("--small", type=int, default=20_000, help="the smaller store, to compare")
    ap.add_argument("--seconds", type=float, default=30.0, help="time per measurement")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.seconds, args.workers)
        return

    DATA.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in (args.small, args.n):
        path = DATA / f"store_io_{n}.store"
        if not path.exists():
            make_store(path, n)
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(path),
                "--seconds",
                str(args.seconds),
                "--workers",
                str(args.workers),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        m = json.loads(out.stdout.strip().splitlines()[-1])
        size_gb = sum(f.stat().st_size for f in path.iterdir()) / 1e9
        row = {"n_obs": n, "store_gb": round(size_gb, 2), **{k: round(v, 1) for k, v in m.items()}}
        row["peak_rss_mb"] = max(row["peak_rss_mb_main"], row["peak_rss_mb_worker"])
        print(row)
        rows.append(row)
    big = rows[-1]
    result = {
        "benchmark": "store_io",
        "command": "python benchmarks/store_io.py"
        + ("" if args.n == 200_000 else f" --n {args.n}"),
        "observation_shape": list(SHAPE),
        "batch_size": 64,
        "workers": args.workers,
        "seconds_per_measurement": args.seconds,
        "sizes": rows,
        "raw_read_obs_per_s": big["raw_read_obs_per_s"],
        "view_obs_per_s": big["view_obs_per_s"],
        "peak_rss_mb": big["peak_rss_mb"],
        "rss_ratio_large_vs_small": round(big["peak_rss_mb"] / rows[0]["peak_rss_mb"], 3),
        "goal": "peak RSS under 1.5 GB whatever the store's size",
        "goal_met": bool(max(r["peak_rss_mb"] for r in rows) < 1536),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    for key, val in result.items():
        if key != "sizes":
            print(f"{key:>28}: {val}")
    from whatsreal.utils import atomic_write_json

    atomic_write_json(RESULTS / "store_io.json", result)


if __name__ == "__main__":
    main()
