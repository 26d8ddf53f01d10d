"""How many instrument views a batch really needs encoded: sky-clustered batches
(``batching: sky``) against random ones, on the galaxy benchmark's store (no training).

    python benchmarks/sky_batches.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from whatsreal.sampling import StepBatchSampler, ViewDataset
from whatsreal.store import ObservationStore
from whatsreal.utils import atomic_write_json, machine_info

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=str(HERE / "_data" / "galaxies_hsc_legacy.store"))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    store = ObservationStore(args.store)
    views = ViewDataset(store, "train", n_instrument=5)
    n = len(views)
    out = {
        "command": " ".join(["python", "benchmarks/sky_batches.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "store": str(store.path),
        "batch_size": args.batch_size,
        "steps": args.steps,
    }
    for name, order in (("random", None), ("sky", views.sky_order())):
        sampler = StepBatchSampler(n, args.batch_size, seed=0, order=order)
        fractions = []
        for step in range(args.steps):
            rows = np.concatenate(
                [views.draw(i % n, i // n)["instrument_rows"] for i in sampler.batch(step)]
            )
            rows = rows[rows >= 0]
            fractions.append(np.unique(rows).size / rows.size)
        out[name] = {"median_unique_fraction": float(np.median(fractions))}
        print(f"{name}: median fraction of distinct instrument views {np.median(fractions):.3f}")
    atomic_write_json(HERE / "results" / "sky_batches.json", out)


if __name__ == "__main__":
    main()
