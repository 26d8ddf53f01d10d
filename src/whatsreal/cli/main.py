"""`whatsreal` console script: one sub-command per stage, each a thin shell over the API."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from whatsreal import __version__
from whatsreal.errors import ConfigError, WhatsrealError

Handler = Callable[[argparse.Namespace], int]


def _angle(text: str):
    """Parse '3arcmin', '180 arcsec' or '0.05deg'; a bare number is arcseconds."""
    import astropy.units as u

    try:
        q = u.Quantity(text)
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read angle {text!r}: {exc}") from None
    if q.unit == u.dimensionless_unscaled:
        q = q.value * u.arcsec
    if q.unit.physical_type != "angle":
        raise argparse.ArgumentTypeError(f"{text!r} is not an angle (try '3arcmin')")
    return q


def _store_info(args: argparse.Namespace) -> int:
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from whatsreal.store import ObservationStore

    s = ObservationStore(args.store)
    console = Console()
    console.print(f"[bold]{s.path}[/bold]  ({s.modality}, shape {s.shape}, {s.n_obs} observations)")
    table = Table("instrument", "bands", "observations", "sources")
    for code, name in enumerate(s.instruments):
        sel = s.instrument == code
        n_src = np.unique(s.source_id[sel]).size
        table.add_row(name, ",".join(s.bands[name]), str(int(sel.sum())), str(n_src))
    console.print(table)
    console.print(f"sources: {np.unique(s.source_id).size}   arrays: {', '.join(s.arrays)}")
    console.print(f"metadata columns: {', '.join(s.meta_columns()) or '-'}")
    truth = {
        "source": [k for k in s.truth_source if k != "source_id"],
        "instrument": list(s.truth_instrument),
        "observation": list(s.truth_obs),
    }
    console.print(
        "truth: " + "; ".join(f"{kind} ({', '.join(cols) or '-'})" for kind, cols in truth.items()),
        markup=False,
    )
    if s.neighbours is not None:
        nb = s.neighbours
        console.print(
            f"neighbour graph: k={nb.k}, radius {nb.radius_arcsec:.1f} arcsec, "
            f"mean {nb.count().mean():.2f} neighbours, {(nb.count() == 0).sum()} with none"
        )
    else:
        console.print(
            "neighbour graph: none" + (" (run `whatsreal pair`)" if s.has_positions else "")
        )
    console.print(
        f"written by whatsreal {s.provenance['whatsreal_version']} at {s.provenance['created_utc']}"
    )
    return 0


def _pair(args: argparse.Namespace) -> int:
    import time

    from whatsreal.pairing import build_pairing

    t0 = time.perf_counter()
    nb = build_pairing(args.store, k=args.k, radius=args.radius)
    print(
        f"neighbour graph for {args.store}: k={nb.k}, radius {nb.radius_arcsec:.1f} arcsec, "
        f"mean {nb.count().mean():.2f} neighbours, {(nb.count() == 0).sum()} observations with "
        f"none ({time.perf_counter() - t0:.1f} s)"
    )
    return 0


def _simulate_lightcurves(args: argparse.Namespace) -> int:
    import time

    from whatsreal.simulate.lightcurves import lightcurve_sim_config, write_lightcurve_store

    overrides = {}
    if args.n is not None:
        overrides["n_lightcurves"] = args.n
    if args.stars is not None:
        overrides["n_stars"] = args.stars
    cfg = lightcurve_sim_config(args.preset, **overrides)
    t0 = time.perf_counter()
    path = write_lightcurve_store(args.out, cfg, seed=args.seed, overwrite=args.overwrite)
    print(
        f"wrote {path}: {cfg.n_lightcurves:,} light curves of {cfg.n_stars:,} stars, "
        f"{cfg.n_instruments} instruments, T={cfg.length} ({time.perf_counter() - t0:.1f} s)"
    )
    return 0


def _simulate_galaxies(args: argparse.Namespace) -> int:
    import time

    from whatsreal.errors import ConfigError
    from whatsreal.simulate.galaxies import make_figure, simulate_galaxies

    surveys = [s.strip() for s in args.surveys.split(",") if s.strip()]
    if args.figure:
        print(f"wrote {make_figure(args.figure, surveys=tuple(surveys))}")
        return 0
    if not args.out:
        raise ConfigError("give --out STORE to write a store (or --figure PNG for the figure)")
    t0 = time.perf_counter()
    path = simulate_galaxies(
        args.out,
        n=args.n,
        surveys=surveys,
        seed=args.seed,
        workers=args.workers,
        progress=not args.quiet,
        overwrite=args.overwrite,
        mmu_out=args.mmu_out,
    )
    print(
        f"wrote {path}: {args.n:,} sources x {len(surveys)} surveys "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from whatsreal.pipelines.lightcurves import run_lightcurve_track, track_config

    cfg = track_config(args.preset)
    if args.minutes is not None:
        from dataclasses import replace

        cfg = replace(cfg, train=replace(cfg.train, max_minutes=args.minutes))
    results = run_lightcurve_track(args.out, cfg)
    acc = results["instrument_accuracy"]
    star = results["few_shot"]["star latent (dual)"]
    print(
        "star latent R²(θ0): "
        + ", ".join(f"n={r['n_labels']}: {r['r2_mean']:.3f}" for r in star)
        + f"\ninstrument-id accuracy: instrument latent {acc['instrument latent (dual)']:.3f}, "
        f"star latent {acc['star latent (dual)']:.3f} (chance {results['chance_accuracy']:.3f})"
    )
    return 0


def _extra_overrides(extra: Sequence[str]) -> list[str]:
    """Turn ``--a.b value``, ``--a.b=value`` and ``a.b=value`` into ``a.b=value`` items."""
    out, i = [], 0
    extra = list(extra)
    while i < len(extra):
        item = extra[i]
        if item.startswith("--"):
            key = item[2:]
            if "=" in key:
                out.append(key)
            elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
                out.append(f"{key}={extra[i + 1]}")
                i += 1
            else:
                out.append(f"{key}=true")
        elif "=" in item:
            out.append(item)
        else:
            raise ConfigError(f"cannot read override {item!r}; use --key value or key=value")
        i += 1
    return out


def _train(args: argparse.Namespace) -> int:
    from whatsreal.train.runs import resolve_run_config, run_from_config

    full = resolve_run_config(args.config, _extra_overrides(args.overrides))
    model = run_from_config(full)
    print(f"model saved to {Path(full['out']) / 'model'} ({type(model).__name__})")
    return 0


def _counterfactual(args: argparse.Namespace) -> int:
    import whatsreal
    from whatsreal.infer.counterfactual import counterfactual_views, write_fits, write_hdf5

    model = whatsreal.load(args.model)
    result = counterfactual_views(
        model,
        args.store,
        args.to,
        n_samples=args.n_samples,
        solver=args.solver,
        nfe=args.nfe,
        seed=args.seed,
        split=args.split,
        limit=args.limit,
        progress=not args.quiet,
    )
    out = write_hdf5(result, args.out)
    print(f"wrote {len(result.source_id)} sources x {args.n_samples} samples -> {out}")
    if args.fits:
        paths = write_fits(result, args.fits)
        print(f"wrote {len(paths)} FITS files -> {args.fits}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; sub-commands register themselves here."""
    parser = argparse.ArgumentParser(
        prog="whatsreal",
        description="Separate physics from instrument in overlapping observations.",
    )
    parser.add_argument("--version", action="version", version=f"whatsreal {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    store = sub.add_parser("store", help="inspect an observation store")
    store_sub = store.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    info = store_sub.add_parser("info", help="summarise a store: instruments, sources, truth")
    info.add_argument("store", help="store folder")
    info.set_defaults(handler=_store_info)

    pair = sub.add_parser("pair", help="compute the per-instrument sky neighbour graph of a store")
    pair.add_argument("store", help="store folder (with ra/dec)")
    pair.add_argument("--k", type=int, default=5, help="neighbours per observation (default 5)")
    pair.add_argument(
        "--radius", type=_angle, default="3arcmin", help="search radius (default 3arcmin)"
    )
    pair.set_defaults(handler=_pair)

    sim = sub.add_parser("simulate", help="write a simulated observation store with truth")
    sim_sub = sim.add_subparsers(dest="sim_command", metavar="DATA", required=True)
    lc = sim_sub.add_parser("lightcurves", help="seed-001 light curves (stars x instruments)")
    lc.add_argument("--out", required=True, help="store folder to create")
    lc.add_argument("--preset", default="paper", help="paper (40,000 curves), demo or tiny")
    lc.add_argument("--n", type=int, help="number of light curves (overrides the preset)")
    lc.add_argument("--stars", type=int, help="number of stars (overrides the preset)")
    lc.add_argument("--seed", type=int, default=0)
    lc.add_argument("--overwrite", action="store_true", help="replace an existing store")
    lc.set_defaults(handler=_simulate_lightcurves)
    gal = sim_sub.add_parser(
        "galaxies", help="GalSim galaxies seen by HSC-, Legacy- and LSST-like surveys"
    )
    gal.add_argument("--out", help="store folder to create")
    gal.add_argument("--n", type=int, default=20_000, help="sources, each seen by every survey")
    gal.add_argument("--surveys", default="hsc,legacy,lsst", help="comma-separated presets")
    gal.add_argument("--seed", type=int, default=0)
    gal.add_argument("--workers", type=int, help="processes (default: all cores)")
    gal.add_argument("--mmu-out", help="also write the Multimodal-Universe-like HDF5 layout here")
    gal.add_argument("--figure", help="write the docs figure (PNG) here instead of a store")
    gal.add_argument("--overwrite", action="store_true", help="replace an existing store")
    gal.add_argument("--quiet", action="store_true", help="no progress bar")
    gal.set_defaults(handler=_simulate_galaxies)

    train = sub.add_parser(
        "train",
        help="train a model from one YAML config (saved, resolved, with the run)",
        description="Extra --key value pairs override config keys, e.g. --train.max_steps 500",
    )
    train.add_argument("--config", required=True, help="YAML file: model, store, out, train")
    train.set_defaults(handler=_train, accepts_overrides=True)

    cf = sub.add_parser(
        "counterfactual", help="generate views of store sources as another instrument sees them"
    )
    cf.add_argument("--model", required=True, help="model folder (a run's <out>/model)")
    cf.add_argument("--store", required=True, help="store folder")
    cf.add_argument("--to", required=True, help="target instrument name")
    cf.add_argument("--n-samples", type=int, default=8, help="posterior samples (default 8)")
    cf.add_argument("--solver", default="heun", help="euler, heun, midpoint or dopri5")
    cf.add_argument("--nfe", type=int, default=20, help="network evaluations (default 20)")
    cf.add_argument("--split", help="only sources of this split (train, val, test)")
    cf.add_argument("--limit", type=int, help="at most this many sources")
    cf.add_argument("--seed", type=int, default=0)
    cf.add_argument("--out", default="counterfactuals.h5", help="HDF5 output file")
    cf.add_argument("--fits", help="also write one FITS file per source into this folder")
    cf.add_argument("--quiet", action="store_true", help="no progress bar")
    cf.set_defaults(handler=_counterfactual)

    demo = sub.add_parser(
        "demo",
        help="simulate light curves, train dual and single-latent models, evaluate, report",
    )
    demo.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    demo.add_argument(
        "--preset", default="demo", help="demo (about 10 min on 2 cores), paper, or tiny"
    )
    demo.add_argument("--minutes", type=float, help="training budget per model, in minutes")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, dispatch, and turn boundary errors into one-line messages."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    try:
        return handler(args)
    except (WhatsrealError, FileExistsError, FileNotFoundError, KeyError, ValueError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"whatsreal {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
