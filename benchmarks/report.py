"""Render BENCHMARKS.md from the JSON files in benchmarks/results/ (no figure typed by hand).

python benchmarks/report.py
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from whatsreal.utils import atomic_write_text

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def _yes(flag: bool) -> str:
    return "met" if flag else "**not met**"


def pairing(r: dict) -> list[str]:
    return [
        f"Cross-match (1″, one-to-one) plus the per-instrument neighbour graph (K={r['k']}, "
        f"{r['radius_arcsec'] / 60:g}′) on two catalogues of {r['n_per_catalogue']:,} positions "
        f"each ({r['n_positions_total']:,} in all) over {r['area_deg2']:g} deg², median of "
        f"{r['repeats']} repeats, against astropy `search_around_sky` doing both steps in the "
        "same run.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| whatsreal total (s) | {r['whatsreal_seconds_median']} |",
        f"| of which cross-match / graph (s) | {r['whatsreal_match_seconds_median']} / "
        f"{r['whatsreal_graph_seconds_median']} |",
        f"| astropy search_around_sky (s) | {r['astropy_seconds_median']} |",
        f"| speed-up vs astropy | {r['speedup_vs_astropy']}× |",
        f"| matches identical to astropy's | {r['matches_identical_to_astropy']} |",
        f"| graph rows identical to astropy's | {r['graph_rows_identical_to_astropy']:.4f} |",
        f"| mean neighbours / with none | {r['mean_neighbours']} / "
        f"{r['fraction_with_zero_neighbours']} |",
        f"| peak RSS (MB) | {r['peak_rss_mb']} |",
        "",
        f"Goal ({r['goal']}): {_yes(r['goal_met'])}.",
    ]


def store_io(r: dict) -> list[str]:
    rows = [
        f"Random batches of {r['batch_size']} from stores of {r['observation_shape']} float32 "
        "observations, each store measured in a fresh process; view batches go through a "
        f"`DataLoader` with {r['workers']} workers over `ViewDataset` (anchor + 1 physics + 5 "
        "instrument views per item).",
        "",
        "| observations | store size (GB) | raw reads (obs/s) | view batches (obs/s) | "
        "peak RSS (MB) |",
        "|---|---|---|---|---|",
    ]
    for s in r["sizes"]:
        rows.append(
            f"| {s['n_obs']:,} | {s['store_gb']} | {s['raw_read_obs_per_s']:,.0f} | "
            f"{s['view_obs_per_s']:,.0f} | {s['peak_rss_mb']} |"
        )
    rows += [
        "",
        f"Peak RSS ratio, large/small store: {r['rss_ratio_large_vs_small']}. "
        f"Goal ({r['goal']}): {_yes(r['goal_met'])}.",
    ]
    return rows


def lightcurves(r: dict) -> list[str]:
    fs = r["few_shot"]
    sizes = [x["n_labels"] for x in next(iter(fs.values()))]
    rows = [
        f"Seed 001's data set ({r['n_lightcurves']:,} light curves, {r['n_stars']:,} stars, "
        f"{r['n_instruments']} instruments), `{r['model_preset']}` Conformer preset, at most "
        f"{r['minutes_per_model']:g} min of training per model on 2 cores (epochs: dual "
        f"{r['epochs']['dual']}, single {r['epochs']['single']}; early stopping on the "
        f"validation loss). Probe R²(θ0) on {r['n_test_rows']:,} observations of held-out "
        "stars, mean ± std over 5 draws of the labelled set.",
        "",
        "| input | " + " | ".join(f"n={n}" for n in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for name, curve in fs.items():
        cells = " | ".join(f"{x['r2_mean']:.3f} ± {x['r2_std']:.3f}" for x in curve)
        rows.append(f"| {name} | {cells} |")
    ls = r["lomb_scargle"]
    rows += [
        f"| Lomb–Scargle peak (no labels) | {ls['r2_theta0']:.3f} |" + " |" * (len(sizes) - 1),
        "",
        f"Lomb–Scargle: period within 5% for {ls['fraction_period_within_5pct']:.1%} of "
        f"held-out curves; the peak sits on the first harmonic (P/2) for "
        f"{ls['fraction_at_half_period']:.1%}.",
        "",
        f"Instrument-id accuracy (chance {r['chance_accuracy']:.3f}):",
        "",
        "| input | accuracy |",
        "|---|---|",
    ]
    rows += [f"| {k} | {v:.3f} |" for k, v in r["instrument_accuracy"].items()]
    rows += ["", "| target | measured | goal | |", "|---|---|---|---|"]
    for key, t in r["targets"].items():
        rows.append(f"| {key} | {t['value']:.4f} | {t['goal']} | {_yes(t['met'])} |")
    return rows


def simulate_galaxies(r: dict) -> list[str]:
    return [
        f"{r['n_sources']:,} GalSim galaxies (continuous Sersic index) seen by "
        f"{', '.join(r['surveys'])} = {r['stamps']:,} stamps ({r['stamp']}), "
        f"{r['workers']} worker processes; the naive loop (a new `galsim.Sersic` per galaxy, "
        "one `drawImage` per band) renders a subset of the same catalogue in the same run.",
        "",
        "| figure | stamps/s |",
        "|---|---|",
        f"| end to end, store written ({r['store_mb']:,.0f} MB) | "
        f"{r['end_to_end_stamps_per_s']:,.0f} |",
        f"| rendering only | {r['render_only_stamps_per_s']:,.0f} |",
        f"| naive GalSim loop ({r['naive_stamps_per_s_per_process']:,.0f} per process) | "
        f"{r['naive_stamps_per_s']:,.0f} |",
        f"| speed-up, end to end vs naive | {r['speedup_end_to_end_vs_naive']}× |",
        "",
        f"Goal ({r['goal']}): {_yes(r['goal_met_end_to_end'])}.",
    ]


def lightcurves_ceiling(r: dict) -> list[str]:
    return [
        f"The `{r['encoder_preset']}` Conformer encoder trained directly on θ0 with all "
        f"{r['labels']:,} training labels for {r['minutes']:g} min ({r['steps']:,} steps): "
        f"R²(θ0) on held-out stars **{r['test_r2']:.3f}** (best validation "
        f"{r['val_r2_best']:.3f}). This is what the label-free latents above are chasing.",
    ]


SECTIONS: dict[str, tuple[str, Callable[[dict], list[str]]]] = {
    "pairing": ("Sky pairing", pairing),
    "store_io": ("Observation store I/O", store_io),
    "lightcurves": ("Light curves: contrastive dual model (seed 001)", lightcurves),
    "lightcurves_ceiling": ("Light curves: supervised ceiling", lightcurves_ceiling),
    "simulate_galaxies": ("Galaxy simulator speed", simulate_galaxies),
}


def main() -> None:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python benchmarks/report.py` from `benchmarks/results/*.json`; each "
        "section names the command that produced its figures. Machine: 2 CPU cores, no GPU. "
        "Machines are noisy: compare ratios measured within one run.",
        "",
    ]
    levers = sorted(RESULTS.glob("lightcurve_levers_*.json"))
    for name, (title, render) in SECTIONS.items():
        path = RESULTS / f"{name}.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        lines += [f"## {title}", "", f"Command: `{r['command']}` (on {r['machine']})", ""]
        lines += render(r)
        lines.append("")
    if levers:
        lines += [
            "## Light curves: training levers of the dual model",
            "",
            "Each row: the `cpu` dual model trained 10 min with one change, then probed "
            "(star latent R²(θ0), mean of 3 draws; instrument-id accuracy).",
            "",
            "| command | R² n=100 | n=1000 | n=3000 | inst. acc. (instrument / star latent) |",
            "|---|---|---|---|---|",
        ]
        for path in levers:
            r = json.loads(path.read_text())
            star = {x["n_labels"]: x["r2_mean"] for x in r["few_shot"]["star"]}
            acc = r["instrument_accuracy"]
            lines.append(
                f"| `{r['command']}` | {star.get(100, float('nan')):.3f} | "
                f"{star.get(1000, float('nan')):.3f} | {star.get(3000, float('nan')):.3f} | "
                f"{acc['instrument']:.3f} / {acc['star']:.3f} |"
            )
        lines.append("")
    atomic_write_text(HERE.parent / "BENCHMARKS.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
