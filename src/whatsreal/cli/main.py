"""`whatsreal` console script: one sub-command per stage, each a thin shell over the API."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
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
    from whatsreal.pairing.sky import angle_arcsec

    try:
        angle_arcsec(q, "radius")  # finite, > 0 and < 180 deg, before anything is read
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return q


def _whole(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum`` (``what`` names it in the error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be >= {minimum}; got {value}")
        return value

    return parse


_count = _whole(1, "a count")  # a number of things, where 0 makes no sense
_seed = _whole(0, "a seed")


def _positive(text: str) -> float:
    """A finite number > 0 (a size or a duration)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0; got {text}")
    return value


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


def _store_verify(args: argparse.Namespace) -> int:
    from whatsreal.store import verify_store

    report = verify_store(args.store)
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


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
    from whatsreal.simulate.galaxies import GalaxySimConfig, make_figure, simulate_galaxies
    from whatsreal.simulate.galaxy_population import population_config

    surveys = [s.strip() for s in args.surveys.split(",") if s.strip()]
    population = population_config(args.morphology, args.neighbours)
    if args.figure:
        fig = make_figure(
            args.figure,
            surveys=tuple(surveys),
            morphology=population.morphology,
            neighbours=population.neighbours,
        )
        print(f"wrote {fig}")
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
        compact=args.compact,
        config=GalaxySimConfig(population=population),
    )
    print(
        f"wrote {path}: {args.n:,} sources x {len(surveys)} surveys, {population.morphology} "
        f"galaxies{' with their sky neighbours' if population.neighbours else ''} "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    return 0


def _prepare(args: argparse.Namespace) -> int:
    import time

    from whatsreal.prepare.pipeline import parse_survey, prepare_store

    surveys = [parse_survey(text) for text in args.survey]
    t0 = time.perf_counter()
    report = prepare_store(
        surveys,
        args.out,
        match_radius=args.match_radius,
        neighbour_radius=args.neighbour_radius,
        k=args.k,
        max_bad_fraction=args.max_bad_fraction,
        compact=args.compact,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
        catalogues=args.catalogues,
    )
    for line in report.lines():
        print(line)
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from whatsreal.pipelines.demo import run_demo

    done = run_demo(
        args.out, args.preset, args.track, args.minutes, log=lambda t: print(t, flush=True)
    )
    print("\n".join(done["summaries"]))
    print(f"report: {done['report']}")
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


def _evaluate(args: argparse.Namespace) -> int:
    from whatsreal.evaluate.morphology import MorphologySettings
    from whatsreal.evaluate.probes import ProbeSettings
    from whatsreal.pipelines.galaxies import evaluate_galaxy_run, galaxy_summary

    r = evaluate_galaxy_run(
        args.run,
        n_test=args.n_test,
        n_probe=args.n_probe,
        cf_sources=args.cf_sources,
        n_samples=args.n_samples,
        nfe=args.nfe,
        store=args.store,
        probe=ProbeSettings(steps=args.probe_steps),
        progress=not args.quiet,
        few_shot=[p for p in args.few_shot.split(",") if p],
        morphology=args.morphology,
        morphology_settings=MorphologySettings(minutes=args.morphology_minutes),
        cf_reference_minutes=args.cf_reference_minutes,
        cf_latent_reference_minutes=args.cf_latent_reference_minutes,
        cf_calibrate=args.cf_calibrate,
    )
    lines = [galaxy_summary(r)]
    run = Path(args.run)
    lines.append(f"results -> {run / 'results.json'}\nreport -> {run / 'report.html'}")
    print("\n".join(lines))
    return 0


def _counterfactual(args: argparse.Namespace) -> int:
    import whatsreal
    from whatsreal.infer.counterfactual import (
        check_fits_folder,
        counterfactual_views,
        load_spread_scales,
        rescale_spread,
        write_fits,
        write_hdf5,
    )

    if args.fits:
        check_fits_folder(args.fits, overwrite=args.overwrite)  # before any sampling
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
    scale = None if args.raw_spread else load_spread_scales(args.model).get(args.to)
    if scale is not None:
        result = rescale_spread(model, result, scale["spread_scale"])
    out = write_hdf5(result, args.out)
    note = (
        f", spread x {scale['spread_scale']:.3f} (fitted on {scale['n_sources']} held-out "
        "sources; --raw-spread for the flow's own)"
        if scale is not None
        else ""
    )
    print(f"wrote {len(result.source_id)} sources x {args.n_samples} samples -> {out}{note}")
    if args.fits:
        paths = write_fits(result, args.fits, overwrite=args.overwrite)
        print(f"wrote {len(paths)} FITS files -> {args.fits}")
    return 0


def _embed(args: argparse.Namespace) -> int:
    from whatsreal.infer.embed import embed_store

    out = embed_store(
        args.model,
        args.store,
        args.out,
        batch_size=args.batch_size,
        part_rows=args.part_rows,
        device=args.device,
        progress=not args.quiet,
        overwrite=args.overwrite,
        bf16=args.bf16,
        compile=args.compile,
    )
    print(f"wrote embeddings -> {out}")
    return 0


def _index(args: argparse.Namespace) -> int:
    from whatsreal.search import SearchIndex, build_index

    spaces = args.space.split(",") if args.space else None
    out = build_index(
        args.embeddings,
        args.out,
        spaces=spaces,
        kind=args.kind,
        exact_max=args.exact_max,
        nlist=args.nlist,
        nprobe=args.nprobe,
    )
    for space in spaces or sorted(p.stem for p in out.glob("*.json")):
        idx = SearchIndex(out, space)
        print(f"{space}: {idx.meta['kind']} index of {idx.count} vectors ({idx.meta['params']})")
    print(f"index -> {out}")
    return 0


def _print_rows(title: str, rows: list[dict], value: str, as_json: bool, extra: dict) -> None:
    """A rich table of search/anomaly rows, or JSON with ``--json``."""
    import json

    if as_json:
        print(json.dumps({**extra, "results": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    cols = ["rank", "source_id", "instrument", "obs_id", "ra", "dec", value]
    cols = [c for c in cols if not rows or c in rows[0]]
    table = Table(*cols, title=title)
    for r in rows:
        cells = (f"{r[c]:.5f}" if c in ("ra", "dec") else str(r[c]) for c in cols[:-1])
        table.add_row(*cells, f"{r[value]:.4g}")
    Console().print(table)


def _search(args: argparse.Namespace) -> int:
    from whatsreal.search import SearchIndex, contact_sheet, search_by_file, search_by_id

    index = SearchIndex(args.index, args.space)
    index.vector_index.apply_params(nprobe=args.nprobe)
    if args.query_file:
        result = search_by_file(index, args.query_file, k=args.k, model_dir=args.model)
    else:
        result = search_by_id(index, args.query, k=args.k, instrument=args.instrument)
    q = result.query
    title = (
        f"{result.space} neighbours of source {q['source_id']} ({q['instrument']}, "
        f"obs {q['obs_id']})"
        if q["kind"] == "id"
        else f"{result.space} neighbours of {q['file']}"
    )
    _print_rows(
        title, result.neighbours, "distance", args.json, {"space": result.space, "query": q}
    )
    if args.sheet:
        query_flux = None
        if args.query_file:
            from whatsreal.search import read_cutout

            meta = index.embeddings.meta
            query_flux, _ = read_cutout(args.query_file, tuple(meta["shape"]), meta["bands"])
        out = contact_sheet(index, result, args.sheet, query_flux=query_flux)
        print(f"contact sheet -> {out}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _anomalies(args: argparse.Namespace) -> int:
    from whatsreal.search import SearchIndex, top_anomalies

    index = SearchIndex(args.index, args.space)
    rows = top_anomalies(
        index, method=args.method, top=args.top, k=args.k, seed=args.seed, whiten_space=args.whiten
    )
    space = f"{index.space} space{' (whitened)' if args.whiten else ''}"
    title = f"top {len(rows)} {args.method} anomalies in the {space}"
    _print_rows(
        title,
        rows,
        "score",
        args.json,
        {"space": index.space, "method": args.method, "whitened": args.whiten},
    )
    return 0


# -- whatsreal predict: property posteriors (issue 13) ----------------------------------------
def _split_spec(text: str):
    """``VAL,TEST[,SEED]`` fractions of the source split -> SplitSpec, or a ConfigError."""
    from whatsreal.sampling import SplitSpec

    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        val, test = float(parts[0]), float(parts[1])
        seed = int(parts[2]) if len(parts) == 3 else 0
    except ValueError:
        raise ConfigError(
            f"--split-fractions {text!r}: give VAL,TEST[,SEED], e.g. 0.05,0.05,0 (the training "
            "run's split)"
        ) from None
    return SplitSpec(val=val, test=test, seed=seed)


def _predict_fit(args: argparse.Namespace) -> int:
    from whatsreal.infer.posterior import PosteriorSettings, default_posterior_dir
    from whatsreal.search import Embeddings
    from whatsreal.search.properties import fit_posterior_from_embeddings

    emb = Embeddings(args.embeddings)
    out = args.out
    if out is None:
        if not emb.meta.get("model"):
            raise ConfigError(f"{args.embeddings} records no model folder; give --out DIR")
        out = default_posterior_dir(emb.meta["model"])
    try:
        hidden = [int(h) for h in args.hidden.split(",") if h.strip()]
    except ValueError:
        raise ConfigError(f"--hidden {args.hidden!r}: give widths like 128,128") from None
    settings = PosteriorSettings(
        lr=args.lr,
        batch_size=args.batch_size,
        max_epochs=args.max_epochs,
        patience=args.patience,
        max_minutes=args.minutes,
        seed=args.seed,
    )
    props = [p.strip() for p in args.properties.split(",") if p.strip()] or None
    post = fit_posterior_from_embeddings(
        emb,
        args.store,
        out,
        properties=props,
        instrument=args.instrument,
        split=args.split,
        splits=_split_spec(args.split_fractions),
        space=args.space,
        validation_split=args.val_split,
        flow=args.flow,
        transforms=args.transforms,
        hidden=hidden,
        passes=args.passes,
        bound=args.bound,
        settings=settings,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    i = post.info
    print(
        f"posterior over {', '.join(post.names)} from {i['n_fit']} {args.space} latents "
        f"({args.instrument or 'all instruments'}, split {args.split}): {i['epochs']} epochs "
        f"({i['stopped']}), best held-out NLL {i['best_val_nll']:.3f} at epoch "
        f"{i['best_epoch']}, {i['seconds']:.0f} s"
        + (
            f"; widths from split {args.val_split}: "
            + ", ".join(f"{k} x{v:.3f}" for k, v in i["temperature"].items())
            if args.val_split
            else ""
        )
        + f"\nposterior -> {out}"
    )
    return 0


def _predict_apply(args: argparse.Namespace) -> int:
    import json

    from whatsreal.infer.posterior import store_properties
    from whatsreal.search import Embeddings
    from whatsreal.search.properties import predict_embeddings, score_predictions

    try:
        levels = [float(v) for v in args.levels.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--levels {args.levels!r}: give levels like 0.68,0.95") from None
    emb = Embeddings(args.embeddings)
    pos, pred = predict_embeddings(
        args.posterior,
        emb,
        args.out,
        instrument=args.instrument,
        split=args.split,
        splits=_split_spec(args.split_fractions),
        n_samples=args.n_samples,
        levels=levels,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    print(f"{len(pos)} observations x {len(pred.names)} properties -> {args.out}")
    if args.store:
        from whatsreal.search.properties import check_embeddings_store
        from whatsreal.store import ObservationStore

        store = ObservationStore(args.store)
        check_embeddings_store(emb, store)
        scores = score_predictions(pred, store_properties(store, emb.row[pos], pred.names))
        if args.json:
            print(json.dumps(scores, indent=2))
            return 0
        from rich.console import Console
        from rich.table import Table

        keys = list(next(iter(scores.values())))
        table = Table("property", *keys, title=f"against the truth in {args.store}")
        for name, row in scores.items():
            table.add_row(name, *(f"{row[k]:.3f}" for k in keys))
        Console().print(table)
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
    verify = store_sub.add_parser(
        "verify", help="read every chunk of a store, check checksums; exit 1 if damaged"
    )
    verify.add_argument("store", help="store folder")
    verify.set_defaults(handler=_store_verify)

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
    lc.add_argument("--n", type=_count, help="number of light curves (overrides the preset)")
    lc.add_argument("--stars", type=_count, help="number of stars (overrides the preset)")
    lc.add_argument("--seed", type=_seed, default=0)
    lc.add_argument("--overwrite", action="store_true", help="replace an existing store")
    lc.set_defaults(handler=_simulate_lightcurves)
    gal = sim_sub.add_parser(
        "galaxies", help="GalSim galaxies seen by HSC-, Legacy- and LSST-like surveys"
    )
    gal.add_argument("--out", help="store folder to create")
    gal.add_argument("--n", type=_count, default=20_000, help="sources, each seen by every survey")
    gal.add_argument("--surveys", default="hsc,legacy,lsst", help="comma-separated presets")
    gal.add_argument("--seed", type=_seed, default=0)
    gal.add_argument("--workers", type=_count, help="processes (default: all cores)")
    gal.add_argument("--mmu-out", help="also write the Multimodal-Universe-like HDF5 layout here")
    gal.add_argument("--figure", help="write the docs figure (PNG) here instead of a store")
    gal.add_argument("--overwrite", action="store_true", help="replace an existing store")
    gal.add_argument("--quiet", action="store_true", help="no progress bar")
    gal.add_argument(
        "--compact", action="store_true", help="compact store: scaled float16, compressed (~4x)"
    )
    from whatsreal.simulate.galaxy_population import add_population_arguments

    add_population_arguments(gal)
    gal.set_defaults(handler=_simulate_galaxies)

    prep = sub.add_parser(
        "prepare", help="survey cutouts (MMU or FITS) -> cross-matched, paired observation store"
    )
    prep.add_argument(
        "--survey",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="a survey input (repeatable): MMU tree/survey/config folder or FITS cutout folder",
    )
    prep.add_argument("--out", required=True, help="store folder to create")
    prep.add_argument(
        "--match-radius",
        type=_angle,
        default="1arcsec",
        help="cross-match radius between surveys (default 1arcsec)",
    )
    prep.add_argument(
        "--neighbour-radius",
        type=_angle,
        default="3arcmin",
        help="same-survey neighbour radius (default 3arcmin)",
    )
    prep.add_argument("-k", type=_count, default=5, help="neighbours per observation (default 5)")
    prep.add_argument(
        "--max-bad-fraction",
        type=_positive,
        default=1.0,
        help="reject cutouts with at least this fraction of bad grid pixels (default 1: all)",
    )
    prep.add_argument("--compact", action="store_true", help="write a compact store (~4x smaller)")
    prep.add_argument(
        "--catalogues",
        choices=("memory", "hats"),
        default="memory",
        help="cross-match and neighbours in memory (default) or through LSDB on HATS "
        "catalogues, for surveys past one machine (pip install 'whatsreal[scale]')",
    )
    prep.add_argument("--resume", action="store_true", help="continue an interrupted run")
    prep.add_argument(
        "--overwrite", action="store_true", help="replace the store and any interrupted run"
    )
    prep.add_argument("--quiet", action="store_true", help="no progress bars")
    prep.set_defaults(handler=_prepare)

    train = sub.add_parser(
        "train",
        help="train a model from one YAML config (saved, resolved, with the run)",
        description="Extra --key value pairs override config keys, e.g. --train.max_steps 500",
    )
    train.add_argument("--config", required=True, help="YAML file: model, store, out, train")
    train.set_defaults(handler=_train, accepts_overrides=True)

    ev = sub.add_parser(
        "evaluate",
        help="evaluate a galaxy training run: results.json and report.html in the run folder",
    )
    ev.add_argument("--run", required=True, help="run folder (config.yaml, model/)")
    ev.add_argument("--n-test", type=_count, default=1000, help="test galaxies (default 1000)")
    ev.add_argument(
        "--n-probe", type=_count, default=2000, help="probe-training galaxies (default 2000)"
    )
    ev.add_argument(
        "--cf-sources",
        type=_whole(0, "--cf-sources"),
        default=64,
        help="test galaxies per counterfactual direction (default 64; 0 skips)",
    )
    ev.add_argument("--n-samples", type=_whole(2, "--n-samples"), default=8, help="default 8")
    ev.add_argument("--nfe", type=_count, default=20, help="network evaluations (default 20)")
    ev.add_argument(
        "--probe-steps", type=_count, default=300, help="probe training steps (default 300)"
    )
    ev.add_argument(
        "--few-shot",
        default="redshift,r_half,g_r",
        help="comma-separated properties of the few-shot curves, 10 to 3,000 labels "
        "(default redshift,r_half,g_r; '' skips them)",
    )
    ev.add_argument(
        "--morphology",
        type=_whole(0, "--morphology"),
        default=0,
        help="held-out galaxies per direction of seed 000's morphology test: an ellipticity "
        "ResNet trained on real target images, scored on real and counterfactual ones "
        "(default 0 skips it)",
    )
    ev.add_argument(
        "--morphology-minutes",
        type=float,
        default=3.0,
        help="wall-clock minutes of the morphology regressor, per direction (default 3)",
    )
    ev.add_argument(
        "--cf-reference-minutes",
        type=float,
        default=0.0,
        help="train the counterfactuals' information-limited reference (a UNet from the other "
        "survey's image and the target's true conditions) this long per direction and score "
        "it on the same galaxies (default 0 skips it)",
    )
    ev.add_argument(
        "--cf-latent-reference-minutes",
        type=float,
        default=0.0,
        help="train a fresh copy of the model's decoder by regression on the model's own "
        "latents this long per direction and score it on the counterfactuals' views: what "
        "the latents hold, without the flow objective (default 0 skips it)",
    )
    ev.add_argument(
        "--cf-calibrate",
        type=_whole(0, "--cf-calibrate"),
        default=0,
        help="validation galaxies per direction from which to fit the counterfactual "
        "samples' spread scale; the test samples are then scored raw and rescaled, and the "
        "scales saved with the model, where `whatsreal counterfactual` applies them (needs "
        "--n-samples >= 6; default 0 skips it)",
    )
    ev.add_argument("--store", help="the run's store, if it moved since training")
    ev.add_argument("--quiet", action="store_true", help="no progress")
    ev.set_defaults(handler=_evaluate)

    cf = sub.add_parser(
        "counterfactual", help="generate views of store sources as another instrument sees them"
    )
    cf.add_argument("--model", required=True, help="model folder (a run's <out>/model)")
    cf.add_argument("--store", required=True, help="store folder")
    cf.add_argument("--to", required=True, help="target instrument name")
    cf.add_argument("--n-samples", type=_count, default=8, help="posterior samples (default 8)")
    cf.add_argument("--solver", default="heun", help="euler, heun, midpoint or dopri5")
    cf.add_argument("--nfe", type=_count, default=20, help="network evaluations (default 20)")
    cf.add_argument("--split", help="only sources of this split (train, val, test)")
    cf.add_argument("--limit", type=_count, help="at most this many sources")
    cf.add_argument("--seed", type=_seed, default=0)
    cf.add_argument("--out", default="counterfactuals.h5", help="HDF5 output file")
    cf.add_argument("--fits", help="also write one FITS file per source into this folder")
    cf.add_argument("--overwrite", action="store_true", help="replace an existing --fits export")
    cf.add_argument(
        "--raw-spread",
        action="store_true",
        help="ignore the spread scale saved with the model (`whatsreal evaluate "
        "--cf-calibrate`) and write the flow's samples as drawn",
    )
    cf.add_argument("--quiet", action="store_true", help="no progress bar")
    cf.set_defaults(handler=_counterfactual)

    emb = sub.add_parser(
        "embed", help="embed every store observation: both latents, ids, instrument, ra/dec"
    )
    emb.add_argument("--model", required=True, help="model folder (a run's <out>/model)")
    emb.add_argument("--store", required=True, help="store folder")
    emb.add_argument("--out", required=True, help="Parquet file to write (resumable)")
    emb.add_argument("--batch-size", type=_count, default=256, help="rows per forward pass")
    emb.add_argument(
        "--part-rows", type=_count, default=8192, help="rows per resumable part (default 8192)"
    )
    emb.add_argument("--device", default="cpu", help="torch device (default cpu)")
    emb.add_argument(
        "--bf16",
        action="store_true",
        help="bf16 autocast, channels_last (faster on CPUs with bf16 units; ~1%% from fp32)",
    )
    emb.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the encoders, weights frozen (one compile first, then faster; "
        "needs a C++ compiler)",
    )
    emb.add_argument("--overwrite", action="store_true", help="replace an existing output")
    emb.add_argument("--quiet", action="store_true", help="no progress bar")
    emb.set_defaults(handler=_embed)

    ix = sub.add_parser("index", help="build FAISS indexes of an embeddings file, beside it")
    ix.add_argument("embeddings", help="embeddings Parquet file from `whatsreal embed`")
    ix.add_argument("--out", help="index folder (default: <embeddings>.index beside it)")
    ix.add_argument("--space", help="comma-separated spaces (default: all in the file)")
    ix.add_argument(
        "--kind",
        default="auto",
        choices=["auto", "flat", "ivf", "hnsw"],
        help="auto: exact up to --exact-max vectors, IVF above",
    )
    ix.add_argument("--exact-max", type=_count, default=100_000, help="auto's exact limit")
    ix.add_argument("--nlist", type=_count, help="IVF cells (default 4 sqrt(N))")
    ix.add_argument("--nprobe", type=_count, help="IVF cells read per query (default nlist/100)")
    ix.set_defaults(handler=_index)

    se = sub.add_parser("search", help="nearest neighbours of an object or a FITS cutout")
    se.add_argument("--index", required=True, help="index folder from `whatsreal index`")
    what = se.add_mutually_exclusive_group(required=True)
    what.add_argument("--query", type=int, help="source_id of an embedded observation")
    what.add_argument("--query-file", help="FITS cutout, in the store's units and shape")
    se.add_argument("--instrument", help="with --query: which instrument's observation")
    se.add_argument("--space", help="physics, instrument or latent (default physics)")
    se.add_argument("-k", type=_count, default=10, help="neighbours (default 10)")
    se.add_argument("--model", help="with --query-file: model folder, if it moved")
    se.add_argument("--nprobe", type=_count, help="IVF cells read (overrides the index's)")
    se.add_argument("--sheet", help="also write a contact-sheet PNG of the neighbours")
    se.add_argument("--json", action="store_true", help="machine-readable output")
    se.set_defaults(handler=_search)

    an = sub.add_parser("anomalies", help="most anomalous observations in a latent space")
    an.add_argument("--index", required=True, help="index folder from `whatsreal index`")
    an.add_argument("--space", help="physics, instrument or latent (default physics)")
    an.add_argument("--method", default="knn", choices=["knn", "iforest"])
    an.add_argument("--top", type=_count, default=20, help="how many to list (default 20)")
    an.add_argument("-k", type=_count, default=10, help="neighbours of the knn score")
    an.add_argument("--seed", type=_seed, default=0, help="isolation-forest seed")
    an.add_argument(
        "--whiten",
        action="store_true",
        help="score the PCA-whitened space (every direction weighed alike; see docs/search.md)",
    )
    an.add_argument("--json", action="store_true", help="machine-readable output")
    an.set_defaults(handler=_anomalies)

    pr = sub.add_parser(
        "predict", help="property posteriors (a flow on frozen latents): fit, then apply"
    )
    pr_sub = pr.add_subparsers(dest="predict_command", metavar="ACTION", required=True)
    pf = pr_sub.add_parser(
        "fit", help="train a posterior on an embeddings file's latents and the store's truth"
    )
    pf.add_argument("--embeddings", required=True, help="Parquet file from `whatsreal embed`")
    pf.add_argument("--store", required=True, help="the store it was embedded from (truth)")
    pf.add_argument("--out", help="posterior folder (default: <model>/posterior)")
    pf.add_argument(
        "--properties", default="", help="comma-separated truth names (default by modality)"
    )
    pf.add_argument("--instrument", help="fit on this instrument's rows only (e.g. hsc)")
    pf.add_argument(
        "--split", default="train", choices=["train", "val", "test", "all"], help="default train"
    )
    pf.add_argument(
        "--split-fractions", default="0.05,0.05,0", help="VAL,TEST[,SEED] of the source split"
    )
    pf.add_argument(
        "--val-split",
        choices=["train", "val", "test"],
        help="stop early and calibrate the width on this split (e.g. val); default: a random "
        "15%% of the fitting rows, width as trained",
    )
    pf.add_argument("--space", default="physics", help="latent space (default physics)")
    pf.add_argument("--flow", default="nsf", choices=["nsf", "maf"], help="spline or affine")
    pf.add_argument("--transforms", type=_count, default=4, help="flow layers (default 4)")
    pf.add_argument(
        "--passes", type=_count, default=2, help="autoregressive blocks per layer (default 2)"
    )
    pf.add_argument("--hidden", default="128,128", help="hyper-network widths (default 128,128)")
    pf.add_argument("--bound", type=_positive, default=5.0, help="spline domain, in sd (default 5)")
    pf.add_argument("--lr", type=_positive, default=1e-3, help="learning rate (default 1e-3)")
    pf.add_argument("--batch-size", type=_count, default=256, help="default 256")
    pf.add_argument("--max-epochs", type=_count, default=300, help="default 300")
    pf.add_argument("--patience", type=_count, default=15, help="early-stopping epochs")
    pf.add_argument("--minutes", type=_positive, help="wall-clock cap on training")
    pf.add_argument("--seed", type=_seed, default=0)
    pf.add_argument("--overwrite", action="store_true", help="replace an existing posterior")
    pf.add_argument("--quiet", action="store_true", help="no progress bar")
    pf.set_defaults(handler=_predict_fit)
    pa = pr_sub.add_parser(
        "apply", help="posterior mean, std and credible intervals per row -> Parquet"
    )
    pa.add_argument("--posterior", required=True, help="folder from `whatsreal predict fit`")
    pa.add_argument("--embeddings", required=True, help="Parquet file from `whatsreal embed`")
    pa.add_argument("--out", required=True, help="predictions Parquet file to write")
    pa.add_argument("--instrument", help="only this instrument's rows")
    pa.add_argument(
        "--split", default="all", choices=["train", "val", "test", "all"], help="default all"
    )
    pa.add_argument(
        "--split-fractions", default="0.05,0.05,0", help="VAL,TEST[,SEED] of the source split"
    )
    pa.add_argument("--n-samples", type=_count, default=1000, help="draws per row (default 1000)")
    pa.add_argument("--levels", default="0.68,0.95", help="credibility levels (default 0.68,0.95)")
    pa.add_argument("--store", help="also score against this store's truth: R², coverage")
    pa.add_argument("--seed", type=_seed, default=0)
    pa.add_argument("--overwrite", action="store_true", help="replace an existing output")
    pa.add_argument("--json", action="store_true", help="scores as JSON (with --store)")
    pa.set_defaults(handler=_predict_apply)

    demo = sub.add_parser(
        "demo",
        help="simulate, train, evaluate and report: light curves and galaxies",
        description="Light curves: seed 001's simulator, the dual and the single-latent "
        "contrastive models. Galaxies: simulated HSC x Legacy stamps, seed 000's "
        "counterfactual model. One report with both, and one per track.",
    )
    demo.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    demo.add_argument(
        "--track",
        choices=("both", "lightcurves", "galaxies"),
        default="both",
        help="which track to run (default both)",
    )
    demo.add_argument(
        "--preset", default="demo", help="demo (about 12 min on 2 cores for both), paper, tiny"
    )
    demo.add_argument(
        "--minutes",
        type=_positive,
        help="wall-clock cap on the light-curve dual model's training, in minutes (the "
        "presets train fixed steps; a cap makes the figures depend on the machine's load)",
    )
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
    # SIGTERM (kill, a batch system) unwinds like an error, so temp folders are removed
    on_term = args.command in ("simulate", "pair", "counterfactual", "embed", "prepare", "evaluate")
    on_term &= threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if on_term else None
    try:
        return handler(args)
    except (WhatsrealError, OSError, KeyError, ValueError) as exc:  # OSError: damaged files
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"whatsreal {args.command}: error: {msg}", file=sys.stderr)
        return 2
    finally:
        if on_term:
            signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    """Turn SIGTERM into SystemExit, so ``finally`` blocks and writers' aborts run."""
    sys.exit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
