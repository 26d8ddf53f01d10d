"""The light-curve track's HTML report (what `whatsreal demo` writes)."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from whatsreal.evaluate import figures
from whatsreal.evaluate.lightcurves import source_truth_per_row, split_rows
from whatsreal.report.html import HtmlReport
from whatsreal.store import ObservationStore

SECTIONS = (
    "Data",
    "Few-shot inference of the period parameter",
    "Instrument identification",
    "Classical anchor: Lomb–Scargle",
    "Latent maps",
    "Counterfactual light curves",
    "Run details",
)


def _triplet(store: ObservationStore, rng: np.random.Generator):
    sid, inst = store.source_id, store.instrument
    a = int(rng.integers(store.n_obs))
    same_src = np.flatnonzero((sid == sid[a]) & (inst != inst[a]))
    same_inst = np.flatnonzero((inst == inst[a]) & (sid != sid[a]))
    b, c = int(rng.choice(same_src)), int(rng.choice(same_inst))
    x = store.read([a, b, c])["flux"]
    names = store.instruments
    labels = (
        f"anchor: star {sid[a]} by {names[inst[a]]}",
        f"same star {sid[b]}, other instrument {names[inst[b]]}",
        f"other star {sid[c]}, same instrument {names[inst[c]]}",
    )
    return figures.triplet_figure(x[0], x[1], x[2], labels)


def write_lightcurve_report(
    out: Path,
    store: ObservationStore,
    results: dict,
    features: dict[str, np.ndarray],
    dual: torch.nn.Module,
    cfg: Any,
) -> Path:
    """Write ``out/report.html`` (and the figures as PNG under ``out/figures``)."""
    cfg_dict = asdict(cfg) if is_dataclass(cfg) else dict(cfg)
    figdir = out / "figures"
    rep = HtmlReport("whatsreal: physics and instrument, separated (light curves)")
    rng = np.random.default_rng(0)
    n_stars, n_inst = results["n_stars"], results["n_instruments"]
    rep.text(
        f"Preset '{results['preset']}': {results['n_lightcurves']:,} simulated light curves of "
        f"{n_stars:,} stars seen by {n_inst} instruments (seed 001, eqs. 1-4). Two contrastive "
        f"models with the '{results['model_preset']}' Conformer encoder were trained without "
        "labels: the dual model (star latent + instrument latent, multiplicative decoder) and "
        "the single-latent baseline. Every score below is measured on held-out stars.",
        note=True,
    )

    rep.heading(SECTIONS[0])
    rep.text(
        "Each observation is clip(S_m(t) F_s(t) + O_m(t)) + noise: the star's Fourier "
        "series, scaled and offset by the instrument's slow drifts. Below: an anchor, the "
        "same star through another instrument, another star through the same instrument."
    )
    rep.figure(_triplet(store, rng), "A training triplet", figdir / "triplet.png")

    rep.heading(SECTIONS[1])
    fs = results["few_shot"]
    sizes = [r["n_labels"] for r in next(iter(fs.values()))]
    rows = []
    for name, curve in fs.items():
        rows.append([name] + [f"{r['r2_mean']:.3f} ± {r['r2_std']:.3f}" for r in curve])
    rep.text(
        "R² of θ0 (which sets the period) predicted by the MLP probe (512-256-128, "
        "LayerNorm, GELU, dropout 0.2, Smooth-L1) from frozen inputs, against the number of "
        "labelled observations drawn from training stars; mean ± std over "
        f"{len(next(iter(fs.values()))[0]['r2_all'])} draws."
    )
    rep.table(rows, ["input"] + [f"n={n}" for n in sizes])
    rep.figure(
        figures.few_shot_figure(fs, results["lomb_scargle"]["r2_theta0"]),
        "Few-shot R²(θ0)",
        figdir / "few_shot.png",
    )

    rep.heading(SECTIONS[2])
    acc = results["instrument_accuracy"]
    rep.text(
        f"Accuracy of an MLP probe predicting which of the {n_inst} instruments took an "
        f"observation of a held-out star (chance {results['chance_accuracy']:.3f}). The "
        "instrument latent should know; the star latent should not."
    )
    rep.table([[k, v] for k, v in acc.items()], ["input", "instrument-id accuracy"])

    rep.heading(SECTIONS[3])
    ls = results["lomb_scargle"]
    cal = results.get("lomb_scargle_calibrated")
    rep.text(
        "θ0 = ln(P / (T λ)) from the Lomb–Scargle peak period P of each held-out "
        f"observation ({ls['method']}). No training and no labels. The calibrated column "
        "first divides out each instrument's ensemble mean curve and spread over its "
        "training observations (it needs every observation's instrument)."
    )
    keys = (
        ("R²(θ0)", "r2_theta0"),
        ("period within 5%", "fraction_period_within_5pct"),
        ("peak at half the period (harmonic)", "fraction_at_half_period"),
    )
    rep.table(
        [[label, ls[k], *([cal[k]] if cal else [])] for label, k in keys],
        ["figure", "raw series", *(["calibrated by instrument ensemble"] if cal else [])],
    )
    model = results.get("instrument_model")
    if model:
        rep.text(
            "Self-calibration: the dual model's instrument latent predicts its instrument's "
            "mean curve and spread, and the star encoder reads the series with them divided "
            "out. How well that instrument model, read from each held-out series alone, "
            "recovers the instrument (R², pooled over observations and samples):"
        )
        rows = [
            ["predicted mean curve vs the true offset O_m(t)", "r2_mean_vs_true_offset"],
            ["instrument ensemble's mean vs the true offset", "r2_ensemble_mean_vs_true_offset"],
            ["predicted mean curve vs the ensemble's mean", "r2_mean_vs_ensemble_mean"],
            ["predicted spread vs the ensemble's spread", "r2_spread_vs_ensemble_spread"],
        ]
        rep.table([[label, model[k]] for label, k in rows if k in model], ["figure", "R²"])

    rep.heading(SECTIONS[4])
    test = split_rows(store, _splits(cfg_dict))["test"]
    take = rng.choice(test, size=min(cfg_dict.get("umap_points", 3000), test.size), replace=False)
    if cfg_dict.get("umap", True):
        maps = {
            name: figures.umap_2d(features[name][take])
            for name in ("star latent (dual)", "instrument latent (dual)")
        }
        theta0 = source_truth_per_row(store, "theta0")[take]
        rep.text(
            "UMAP of each latent for held-out stars (seed 001 Fig. 2): coloured by "
            "instrument (top) and by θ0 (bottom)."
        )
        rep.figure(
            figures.latent_map_figure(maps, store.instrument[take], theta0),
            "Latent maps",
            figdir / "latent_maps.png",
        )
    else:
        rep.text("UMAP disabled for this run (umap: false).")

    rep.heading(SECTIONS[5])
    pick = rng.choice(test, size=3, replace=False)
    x = torch.from_numpy(store.read(pick)["flux"])
    with torch.inference_mode():
        zp, zi = dual.embed(x)
        recon = dual.decode(zp, zi).numpy()
        swapped = dual.decode(zp, zi.roll(1, dims=0)).numpy()
    names = store.instruments
    titles = [
        f"star {store.source_id[r]} by {names[store.instrument[r]]}; counterfactual: "
        f"instrument latent of {names[store.instrument[np.roll(pick, 1)[i]]]}"
        for i, r in enumerate(pick)
    ]
    rep.text(
        "The multiplicative decoder D(g_star ⊙ g_inst) recombines latents: decoding a "
        "star's latent with another observation's instrument latent gives that star as "
        "the other instrument would have recorded it."
    )
    rep.figure(
        figures.reconstruction_figure(x.numpy(), recon, swapped, titles),
        "Reconstructions and instrument swaps",
        figdir / "counterfactuals.png",
    )

    rep.heading(SECTIONS[6])
    rep.table([[k, round(v, 1)] for k, v in results["timings"].items()], ["stage", "seconds"])
    rep.table([[k, v] for k, v in results["epochs"].items()], ["model", "epochs trained"])
    rep.text("Resolved configuration (also in config.yaml):")
    rep.parts.append(f"<pre>{yaml.safe_dump(cfg_dict, sort_keys=False)}</pre>")
    return rep.write(out / "report.html")


def _splits(cfg: dict):
    from whatsreal.sampling import SplitSpec

    t = cfg["train"]
    return SplitSpec(t["val"], t["test"], t["split_seed"])
