"""Sampler accuracy against cost on a trained model and held-out anchors: sample MSE to the
real target and to Euler-250 samples drawn from the same noise, for each solver and NFE, and
the NFE at which each solver comes within 2% of Euler-250's MSE to the target.

    python benchmarks/sampler.py                          # the galaxy benchmark's hybrid model
    python benchmarks/sampler.py --model runs/x/model --store path.store
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from whatsreal.models.base import load_pretrained
from whatsreal.models.flow import integrate
from whatsreal.sampling import SplitSpec, ViewDataset, collate_views
from whatsreal.store import ObservationStore
from whatsreal.utils import atomic_write_json, machine_info

HERE = Path(__file__).parent
DATA = HERE / "_data"
FIXED = {
    "euler": [4, 8, 12, 16, 20, 32, 50, 100],
    "heun": [4, 8, 12, 16, 20, 32, 50],
    "midpoint": [4, 8, 12, 16, 20, 32, 50],
}
DOPRI_TOLERANCES = [1e-1, 3e-2, 1e-2, 1e-3]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DATA / "galaxies_runs" / "hybrid" / "model"))
    ap.add_argument("--store", default=str(DATA / "galaxies_hsc_legacy.store"))
    ap.add_argument("--items", type=int, default=16, help="held-out anchors")
    ap.add_argument("--samples", type=int, default=4, help="noise draws per anchor")
    ap.add_argument("--name", default="sampler")
    args = ap.parse_args()

    model = load_pretrained(args.model)
    store = ObservationStore(args.store)
    views = ViewDataset(store, "test", n_instrument=5, splits=SplitSpec())
    items = np.linspace(0, len(views) - 1, args.items).astype(int).tolist()
    batch = collate_views(views.__getitems__(items))
    s = args.samples
    with torch.inference_mode():
        cond, cmask, _ = model.condition(
            batch["physics"],
            batch["physics_mask"],
            batch["instrument_views"],
            batch["instrument_mask"],
        )
        cond, cmask = cond.repeat_interleave(s, 0), cmask.repeat_interleave(s, 0)
        target = model.normalize(batch["anchor"]).repeat_interleave(s, 0)
        x0 = torch.randn(target.shape, generator=torch.Generator().manual_seed(0))

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return model.velocity(x, t, cond, cmask)

        def run(solver: str, nfe: int, **kw) -> tuple[torch.Tensor, int, float]:
            t0 = time.perf_counter()
            x, used = integrate(velocity, x0, solver, nfe, **kw)
            return x, used, time.perf_counter() - t0

        ref, _, ref_s = run("euler", 250)
        ref_mse = float(((ref - target) ** 2).mean())
        print(f"Euler-250: MSE to target {ref_mse:.4f} ({ref_s:.1f} s)")
        rows = []
        for solver, grid in FIXED.items():
            for nfe in grid:
                x, used, sec = run(solver, nfe)
                rows.append(_row(solver, used, sec, x, target, ref, ref_mse))
                print(rows[-1])
        for tol in DOPRI_TOLERANCES:
            x, used, sec = run("dopri5", 0, rtol=tol, atol=tol)
            rows.append(_row("dopri5", used, sec, x, target, ref, ref_mse, tol=tol))
            print(rows[-1])
    within = {}
    for solver in [*FIXED, "dopri5"]:
        ok = [r["nfe"] for r in rows if r["solver"] == solver and r["within_2pct"]]
        within[solver] = min(ok) if ok else None
    best = min((v for v in within.values() if v is not None), default=None)
    result = {
        "command": " ".join(["python", "benchmarks/sampler.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "model": args.model,
        "store": args.store,
        "n_anchors": len(items),
        "samples_per_anchor": s,
        "euler250_mse_to_target": ref_mse,
        "euler250_seconds": ref_s,
        "rows": rows,
        "nfe_within_2pct": within,
        "goal": {
            "value": best,
            "goal": "<= 20 NFE",
            "met": best is not None and best <= 20,
            "saving_vs_euler250": None if best is None else round(250 / best, 1),
        },
    }
    atomic_write_json(HERE / "results" / f"{args.name}.json", result)
    print("NFE within 2% of Euler-250:", within)


def _row(solver, used, sec, x, target, ref, ref_mse, tol=None) -> dict:
    mse = float(((x - target) ** 2).mean())
    return {
        "solver": solver,
        "nfe": int(used),
        "tolerance": tol,
        "seconds": round(sec, 2),
        "mse_to_target": mse,
        "mse_to_euler250": float(((x - ref) ** 2).mean()),
        "ratio_to_euler250_mse": mse / ref_mse,
        "within_2pct": bool(abs(mse / ref_mse - 1) <= 0.02),
    }


if __name__ == "__main__":
    main()
