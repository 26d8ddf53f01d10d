"""Galaxy simulator speed: observations (4 bands x 48 x 48, continuous Sersic index) per second
on all cores, three surveys, against a naive one-drawImage-per-band GalSim loop.

    python benchmarks/simulate_galaxies.py                 # 4,000 sources x 3 surveys
    python benchmarks/simulate_galaxies.py --n 20000       # the default store size

A "stamp" is one observation: one source seen by one survey, 4 bands on the common 48x48 grid.
Three figures, all measured in this run on the same catalogue and conditions:

- end-to-end: ``simulate_galaxies`` writing a store (render, noise, resampling, HDF5 writes);
- render-only: the same rendering in worker processes, no store;
- naive: per band ``galsim.Convolve(galsim.Sersic(n), galsim.Moffat).drawImage`` with the
  exact, continuous n (GalSim sets up each new n from scratch), on the same number of
  processes, for a subset of the sources (it is slow);
- render-only for the ``bulge_disk`` population (bulge + disk + knots, issue 11) of the same
  seed and size, as a ratio to the Sersic render-only rate of this run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from whatsreal.simulate.galaxies import GalaxySimConfig, prepare, render_observations
from whatsreal.simulate.galaxies import simulate_galaxies as simulate
from whatsreal.simulate.galaxy_population import PopulationConfig
from whatsreal.utils import atomic_write_json, folder_bytes

HERE = Path(__file__).parent


def _naive_chunk(args: tuple) -> int:
    """Render a chunk the naive way: one exact GalSim drawImage per (source, survey, band)."""
    import galsim

    from whatsreal.simulate.galaxy_presets import survey_preset
    from whatsreal.simulate.galaxy_render import TRUNC_FACTOR, TRUNC_MIN_N

    pop, conds, surveys = args
    count = 0
    for name in surveys:
        p, c = survey_preset(name), conds[name]
        for i in range(len(pop["sersic_n"])):
            n = float(pop["sersic_n"][i])
            for b in range(4):
                flux = 10 ** (-0.4 * (pop["mag"][i, b] + c["extinction"][i, b] - p.zero_point))
                if pop["is_star"][i]:
                    gal = galsim.DeltaFunction(flux=flux)
                else:
                    r = float(pop["r_half"][i])
                    trunc = TRUNC_FACTOR * r if n >= TRUNC_MIN_N else 0.0
                    gal = galsim.Sersic(n, half_light_radius=r, flux=flux, trunc=trunc).shear(
                        g1=pop["e1"][i], g2=pop["e2"][i]
                    )
                psf = galsim.Moffat(beta=p.psf_beta, fwhm=c["psf_fwhm"][i, b]).shear(
                    g1=c["psf_e1"][i, b], g2=c["psf_e2"][i, b]
                )
                galsim.Convolve(gal, psf).drawImage(
                    nx=p.native_size,
                    ny=p.native_size,
                    scale=p.pixel_scale,
                    offset=tuple(c["offset"][i] / p.pixel_scale),
                )
            count += 1
    return count


def naive_rate(prep: dict, n_sources: int, workers: int) -> tuple[float, int]:
    """Naive stamps per second over the first ``n_sources`` sources on ``workers`` processes."""
    pop, conds = prep["population"], prep["conditions"]
    surveys = prep["config"].surveys
    chunks = np.array_split(np.arange(n_sources), workers * 4)
    args = [
        (
            {k: v[rows] for k, v in pop.items()},
            {s: {k: v[rows] for k, v in c.items()} for s, c in conds.items()},
            surveys,
        )
        for rows in chunks
    ]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        done = sum(pool.map(_naive_chunk, args))
    return done / (time.perf_counter() - t0), done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000, help="sources (each seen by every survey)")
    ap.add_argument("--naive-n", type=int, default=120, help="sources for the naive loop")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    surveys = ("hsc", "legacy", "lsst")
    cfg = GalaxySimConfig(n_sources=args.n, surveys=surveys)

    t0 = time.perf_counter()
    prep = prepare(cfg, args.seed)
    t_prep = time.perf_counter() - t0
    n_stamps = args.n * len(surveys)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        simulate(Path(tmp) / "bench.store", args.n, surveys, args.seed, args.workers, False)
        t_e2e = time.perf_counter() - t0
        size_mb = folder_bytes(tmp) / 2**20

    t0 = time.perf_counter()
    render_observations(prep, workers=args.workers)
    t_render = time.perf_counter() - t0

    naive, naive_done = naive_rate(prep, min(args.naive_n, args.n), args.workers)

    bd_cfg = dataclasses.replace(cfg, population=PopulationConfig(morphology="bulge_disk"))
    prep_bd = prepare(bd_cfg, args.seed)
    t0 = time.perf_counter()
    render_observations(prep_bd, workers=args.workers)
    render_bd = n_stamps / (time.perf_counter() - t0)

    sky_pop = PopulationConfig(morphology="bulge_disk", neighbours=True)
    prep_sky = prepare(dataclasses.replace(cfg, population=sky_pop), args.seed)
    t0 = time.perf_counter()
    render_observations(prep_sky, workers=args.workers)
    render_sky = n_stamps / (time.perf_counter() - t0)
    n_nb = prep_sky["population"]["n_neighbours"]

    e2e, render = n_stamps / t_e2e, n_stamps / t_render
    result = {
        "benchmark": "simulate_galaxies",
        "command": "python benchmarks/simulate_galaxies.py"
        + ("" if args.n == 4000 else f" --n {args.n}"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "workers": args.workers,
        "surveys": list(surveys),
        "n_sources": args.n,
        "stamps": n_stamps,
        "stamp": "one observation: 4 bands x 48 x 48 on the common grid",
        "prepare_seconds": round(t_prep, 2),
        "end_to_end_seconds": round(t_e2e, 2),
        "end_to_end_stamps_per_s": round(e2e, 1),
        "render_only_stamps_per_s": round(render, 1),
        "naive_stamps": naive_done,
        "naive_stamps_per_s": round(naive, 1),
        "naive_stamps_per_s_per_process": round(naive / args.workers, 1),
        "speedup_end_to_end_vs_naive": round(e2e / naive, 1),
        "speedup_render_vs_naive": round(render / naive, 1),
        "render_only_bulge_disk_stamps_per_s": round(render_bd, 1),
        "bulge_disk_over_sersic_render": round(render_bd / render, 3),
        "render_only_sky_neighbours_stamps_per_s": round(render_sky, 1),
        "sky_neighbours_over_sersic_render": round(render_sky / render, 3),
        "neighbours_per_stamp": round(float(n_nb.mean()), 3),
        "stamps_with_a_neighbour": round(float((n_nb > 0).mean()), 3),
        "store_mb": round(size_mb, 1),
        "goal": ">= 1000 stamps/s on 2 cores",
        "goal_met_end_to_end": bool(e2e >= 1000),
    }
    print(
        f"{n_stamps:,} stamps ({args.n:,} sources x {len(surveys)} surveys) on {args.workers} "
        f"processes\n"
        f"  end-to-end (store written): {e2e:8.1f} stamps/s  ({t_e2e:.1f} s, {size_mb:.0f} MB)\n"
        f"  render only:                {render:8.1f} stamps/s\n"
        f"  naive GalSim loop:          {naive:8.1f} stamps/s ({naive / args.workers:.1f} per "
        f"process, {naive_done} stamps)\n"
        f"  speed-up: {e2e / naive:.1f}x end-to-end, {render / naive:.1f}x render-only\n"
        f"  bulge + disk + knots, render only: {render_bd:8.1f} stamps/s "
        f"({render_bd / render:.2f}x the Sersic rate)\n"
        f"  + sky neighbours, render only:     {render_sky:8.1f} stamps/s "
        f"({render_sky / render:.2f}x the Sersic rate; {n_nb.mean():.2f} neighbours per stamp)"
    )
    out = atomic_write_json(HERE / "results" / "simulate_galaxies.json", result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
