"""Calibrated property posteriors on frozen physics latents (issue 13, item 5).

For each track of the config (simulated HSC x Legacy galaxies; seed 001's light curves when
their trained model is there): embed the training-split observations of the labelling
instruments and the test-split observations of each test set with the trained model, fit a
conditional normalizing flow on the physics latents against the store's truth
(:class:`whatsreal.infer.posterior.PropertyPosterior`), and score it on held-out truth
(:func:`whatsreal.evaluate.calibration.evaluate_posterior`): coverage of the central 68% and
95% intervals per property, TARP expected coverage against credibility, SBC ranks, and R² of
the posterior mean beside the seed-000 MLP point probe trained on the same labels. The test
sets are the labelling survey itself (in-survey) and another survey (cross-survey: label in
HSC, predict in Legacy). Writes ``benchmarks/results/<name>.json`` and ``<name>_tarp.png``.

    python benchmarks/posteriors.py              # configs/benchmarks/posteriors.yaml
    python benchmarks/posteriors.py --tracks galaxies
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from whatsreal.config import load_config
from whatsreal.evaluate.calibration import evaluate_posterior, tarp_figure
from whatsreal.evaluate.lightcurves import split_rows
from whatsreal.evaluate.probes import ProbeSettings
from whatsreal.infer.embed import embed_rows, inference_model
from whatsreal.infer.posterior import PosteriorSettings, PropertyPosterior, store_properties
from whatsreal.models.base import load_pretrained
from whatsreal.sampling import SplitSpec
from whatsreal.store import ObservationStore
from whatsreal.utils import atomic_write_json, machine_info, other_tracks, peak_rss_mb

HERE = Path(__file__).parent


def _rows(store: ObservationStore, split: np.ndarray, instruments: list[str]) -> np.ndarray:
    """The rows of ``split`` that the named instruments observed."""
    codes = [store.instrument_code(name) for name in instruments]
    return split[np.isin(store.instrument[split], codes)]


def run_track(name: str, t: dict, cfg: dict, no_calibrate: bool = False) -> dict:
    """Embed, fit and score one track; returns its JSON-ready results."""
    model_dir, store_path = Path(t["model"]), Path(t["store"])
    missing = [str(p) for p in (model_dir / "config.json", store_path) if not p.exists()]
    if missing:
        return {"skipped": f"no trained model or store here ({', '.join(missing)})"}
    seed = int(cfg["seed"])
    rng = np.random.default_rng(seed)
    store = ObservationStore(store_path)
    parts = split_rows(store, SplitSpec(**t["splits"]))
    train = _rows(store, parts["train"], t["train_instruments"])
    if t.get("n_train"):
        train = np.sort(rng.choice(train, min(int(t["n_train"]), train.size), replace=False))
    val = None
    if t.get("validation"):  # early stopping and width calibration on encoder-unseen sources
        val = _rows(store, parts[t["validation"]], t["train_instruments"])
    tests, test_sets = {}, dict(t["test_sets"])
    for test, instruments in test_sets.items():
        rows = _rows(store, parts["test"], instruments)
        tests[test] = np.sort(rng.choice(rows, min(int(t["n_test"]), rows.size), replace=False))
    # widths for the survey a test set predicts in, from the overlap: that survey's images of
    # the labelled validation sources (their labels are the labelling survey's)
    overlap = {}
    for test in t.get("overlap_widths") or []:
        if val is None or test not in tests:
            raise SystemExit(f"overlap_widths: {test!r} needs `validation` and a test set of it")
        rows = _rows(store, parts[t["validation"]], test_sets[test])
        overlap[test] = rows[np.isin(store.source_id[rows], store.source_id[val])]

    t0 = time.perf_counter()
    model = inference_model(load_pretrained(model_dir))
    every = np.unique(
        np.concatenate([train, *([] if val is None else [val]), *tests.values(), *overlap.values()])
    )
    z_all = embed_rows(model, store, every, batch_size=256)["physics"]

    def latents(rows: np.ndarray) -> np.ndarray:
        return z_all[np.searchsorted(every, rows)]

    t_embed = time.perf_counter() - t0
    names = list(t["properties"])
    z_tr, y_tr = latents(train), store_properties(store, train, names)
    print(f"[{name}] embedded {every.size} observations in {t_embed:.0f} s", flush=True)

    post = PropertyPosterior(z_tr.shape[1], names, **t["flow"])
    validation = None if val is None else (latents(val), store_properties(store, val, names))
    post.fit(z_tr, y_tr, PosteriorSettings(**t["fit"], seed=seed), validation=validation)
    calibration = None
    if validation is not None and t.get("calibrate", True) and not no_calibrate:
        before = float(post.log_prob(*validation).mean())
        temperature = post.calibrate(*validation)
        calibration = {
            "split": t["validation"],
            "n": int(val.size),
            "temperature": temperature,
            "val_log_prob_before": before,
            "val_log_prob_after": float(post.log_prob(*validation).mean()),
        }
    print(f"[{name}] posterior: { {k: v for k, v in post.info.items() if k != 'settings'} }")
    post.save(HERE / "_data" / "posteriors" / name, overwrite=True)

    t1 = time.perf_counter()
    scores = evaluate_posterior(
        post,
        (z_tr, y_tr),
        {test: (latents(r), store_properties(store, r, names)) for test, r in tests.items()},
        n_samples=int(cfg["n_samples"]),
        levels=cfg["levels"],
        probe_settings=ProbeSettings(**cfg.get("probe", {})),
        n_bootstrap=int(cfg["n_bootstrap"]),
        seed=seed,
    )
    for test, rows in overlap.items():
        local = post.recalibrated(latents(rows), store_properties(store, rows, names))
        scores.update(
            evaluate_posterior(
                local,
                (z_tr, y_tr),
                {
                    f"{test}_overlap_widths": (
                        latents(tests[test]),
                        store_properties(store, tests[test], names),
                    )
                },
                n_samples=int(cfg["n_samples"]),
                levels=cfg["levels"],
                probe_settings=ProbeSettings(**cfg.get("probe", {})),
                n_bootstrap=int(cfg["n_bootstrap"]),
                seed=seed,
            )
        )
        scores[f"{test}_overlap_widths"]["widths"] = local.info["temperature"]
        scores[f"{test}_overlap_widths"]["n_width_fit"] = int(rows.size)
        tests[f"{test}_overlap_widths"] = tests[test]
        test_sets[f"{test}_overlap_widths"] = test_sets[test]
    tol = float(cfg["goal_tolerance"])
    for test, res in scores.items():
        res["n_rows"] = int(tests[test].size)
        res["instruments"] = list(test_sets[test])
        # coverage within ±tol of each level, per property (issue 13's goal)
        res["coverage_goal"] = {}
        for level in next(iter(res["coverage"].values())):
            off = {p: c[level] - int(level) / 100 for p, c in res["coverage"].items()}
            res["coverage_goal"][level] = {
                "tolerance": tol,
                "within": [p for p, d in off.items() if abs(d) <= tol],
                "outside": [p for p, d in off.items() if abs(d) > tol],
            }
    return {
        "model": str(model_dir),
        "store": str(store_path),
        "train_instruments": list(t["train_instruments"]),
        "n_train": int(train.size),
        "n_validation": 0 if val is None else int(val.size),
        "posterior": post.info,
        "calibration": calibration,
        "posterior_config": {k: v for k, v in post.config.items() if k != "source"},
        "seconds": {
            "embed": round(t_embed, 1),
            "fit": post.info["seconds"],
            "score": round(time.perf_counter() - t1, 1),
        },
        "tests": scores,
    }


def _print_track(name: str, res: dict) -> None:
    if "skipped" in res:
        print(f"[{name}] skipped: {res['skipped']}")
        return
    for test, r in res["tests"].items():
        print(f"\n[{name}] {test} ({', '.join(r['instruments'])}; {r['n_rows']} objects)")
        levels = list(r["coverage_goal"])
        head = "".join(f" {'cov' + lv:>6s}" for lv in levels)
        print(f"  {'property':10s}{head} {'R2 post':>8s} {'R2 MLP':>7s} {'post std':>8s}")
        for p, c in r["coverage"].items():
            cells = "".join(f" {c[lv]:6.3f}" for lv in levels)
            print(
                f"  {p:10s}{cells} {r['r2_posterior_mean'][p]:8.3f} "
                f"{r['r2_mlp_probe'][p]:7.3f} {r['mean_posterior_std'][p]:8.3f}"
            )
        tarp = r["tarp"]
        goal = r["coverage_goal"]
        outside = "; ".join(f"{lv}%: {goal[lv]['outside'] or 'none'}" for lv in levels)
        print(
            f"  TARP: max |ECP - α| {tarp['max_abs']:.3f}, mean {tarp['mean_abs']:.3f}; "
            f"coverage outside ±{100 * goal[levels[0]]['tolerance']:.0f} points: {outside}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(HERE.parent / "configs/benchmarks/posteriors.yaml"))
    ap.add_argument("--tracks", default="", help="comma-separated subset of the config's")
    ap.add_argument("--name", default=None, help="override results/<name>.json")
    ap.add_argument(
        "--no-calibrate", action="store_true", help="keep the widths as trained (no temperature)"
    )
    args = ap.parse_args()
    cfg = load_config(args.config)
    name = args.name or cfg["name"]
    chosen = [v for v in args.tracks.split(",") if v] or list(cfg["tracks"])
    unknown = sorted(set(chosen) - set(cfg["tracks"]))
    if unknown:
        raise SystemExit(f"unknown track(s) {unknown}; the config has {sorted(cfg['tracks'])}")
    t0 = time.perf_counter()
    out = HERE / "results" / f"{name}.json"
    command = " ".join(["python", "benchmarks/posteriors.py", *sys.argv[1:]])
    results = {
        "command": command,
        "config": cfg,
        "machine": machine_info(),
        "tarp_method": "numpy implementation in whatsreal.evaluate.calibration.tarp",
        "tracks": other_tracks(out, chosen),  # a run on some tracks keeps the others
    }
    curves = {
        f"{track}: {test}": r["tarp"]
        for track, res in results["tracks"].items()
        for test, r in res.get("tests", {}).items()
    }
    for track in chosen:
        res = run_track(track, cfg["tracks"][track], cfg, args.no_calibrate)
        res["command"] = command
        results["tracks"][track] = res
        _print_track(track, res)
        for test, r in res.get("tests", {}).items():
            curves[f"{track}: {test}"] = r["tarp"]
    figure = HERE / "results" / f"{name}_tarp.png"
    if curves:
        tarp_figure(curves, figure)
        results["figure"] = str(figure.relative_to(HERE.parent))
    results["seconds"] = round(time.perf_counter() - t0, 1)
    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    atomic_write_json(out, results)
    where = f"results -> {out}" + (f", figure -> {figure}" if curves else "")
    print(f"\n{results['seconds']:.0f} s; {where}")


if __name__ == "__main__":
    main()
