"""Render BENCHMARKS.md from the JSON files in benchmarks/results/ (no figure typed by hand).

python benchmarks/report.py
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from whatsreal.evaluate.counterfactual import calibrated_z_std, spread_ratio
from whatsreal.evaluate.lightcurves import run_recipe, single_tag
from whatsreal.train.contrastive import ContrastiveTrainConfig
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


def store_compact(r: dict) -> list[str]:
    rows = [
        f"{r['observations_copied']:,} observations ({r['sources_copied']:,} sources) of "
        f"`{Path(r['source_store']).name}` copied into today's float32 store and into compact "
        f"stores (noise-scaled float16, quantum {r['compact_spec']['quantum']:g} sigma, Blosc); "
        "sizes extrapolated to 20,000 sources from the bytes that grow with the store; random "
        f"batches of {r['batch']} rows (flux, ivar, clean) through `ObservationStore.read`, "
        f"variants interleaved, median of {r['repeats']} rounds; warm = file in the page cache, "
        "cold = its pages dropped first.",
        "",
        "| variant | bytes/obs | GB per 20k sources (this store) | GB per 20k (3 surveys) | "
        "size ratio | read warm (obs/s) | ratio | read cold (obs/s) | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in r["variants"].items():
        rows.append(
            f"| {name} | {v['bytes_per_observation']:,} | {v['gb_per_20k_sources']} | "
            f"{v['gb_per_20k_sources_3_surveys']} | {v['size_ratio_vs_float32']}× | "
            f"{v['read_obs_per_s_warm']:,.0f} | {v['read_ratio_vs_float32_warm']} | "
            f"{v['read_obs_per_s_cold']:,.0f} | {v['read_ratio_vs_float32_cold']} |"
        )
    p = r["precision_compact"]
    rows += [
        "",
        f"Compact error in units of each pixel's noise: flux max {p['flux_max_err_sigma']}, rms "
        f"{p['flux_rms_err_sigma']} (fraction over 0.1 sigma "
        f"{p['flux_frac_err_over_0.1_sigma']:.1e}); "
        f"clean max {p['clean_max_err_sigma']}, rms {p['clean_rms_err_sigma']}; ivar max relative "
        f"{p['ivar_max_rel_err']}. Goal ({r['goal']}): {_yes(r['goal_met'])}.",
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
    cal = r.get("lomb_scargle_calibrated")
    rows += [
        f"| Lomb–Scargle peak (no labels) | {ls['r2_theta0']:.3f} |" + " |" * (len(sizes) - 1),
    ]
    if cal:
        rows.append(
            "| Lomb–Scargle peak of the instrument-ensemble-calibrated series (no labels) | "
            f"{cal['r2_theta0']:.3f} |" + " |" * (len(sizes) - 1)
        )
    rows += [
        "",
        f"Lomb–Scargle: period within 5% for {ls['fraction_period_within_5pct']:.1%} of "
        f"held-out curves; the peak sits on the first harmonic (P/2) for "
        f"{ls['fraction_at_half_period']:.1%}."
        + (
            f" On the calibrated series (each instrument's ensemble mean curve and spread over "
            f"its training curves divided out): within 5% for "
            f"{cal['fraction_period_within_5pct']:.1%}, on the first harmonic for "
            f"{cal['fraction_at_half_period']:.1%}."
            if cal
            else ""
        ),
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
    lines = [
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
    ]
    if "render_only_bulge_disk_stamps_per_s" in r:
        lines.append(
            f"| rendering only, bulge + disk + knots population (`morphology: bulge_disk`) | "
            f"{r['render_only_bulge_disk_stamps_per_s']:,.0f} "
            f"({r['bulge_disk_over_sersic_render']:.2f}× the Sersic rate) |"
        )
    if "render_only_sky_neighbours_stamps_per_s" in r:
        lines.append(
            "| rendering only, bulge + disk + knots with sky neighbours (`neighbours: true`; "
            f"{r['neighbours_per_stamp']:.2f} neighbours per stamp, "
            f"{r['stamps_with_a_neighbour']:.0%} of stamps hold one) | "
            f"{r['render_only_sky_neighbours_stamps_per_s']:,.0f} "
            f"({r['sky_neighbours_over_sersic_render']:.2f}× the Sersic rate) |"
        )
    return [*lines, "", f"Goal ({r['goal']}): {_yes(r['goal_met_end_to_end'])}."]


def lightcurves_ceiling(r: dict) -> list[str]:
    return [
        f"The `{r['encoder_preset']}` Conformer encoder trained directly on θ0 with all "
        f"{r['labels']:,} training labels for {r['minutes']:g} min ({r['steps']:,} steps): "
        f"R²(θ0) on held-out stars **{r['test_r2']:.3f}** (best validation "
        f"{r['val_r2_best']:.3f}). This is what the label-free latents above are chasing.",
    ]


def _f(v, digits: int = 3) -> str:
    return "–" if v is None or v != v else f"{v:.{digits}f}"


def _reference_cells(ref: dict) -> str:
    """A counterfactual reference's minutes (steps), MSE / floor and MSE vs noise-free."""
    reg = ref["regressor"]
    return (
        f"{reg['seconds'] / 60:.1f} ({reg['steps']}) | {ref['mse_mean_over_floor']:.2f} | "
        f"{_f(ref.get('mse_mean_vs_clean_over_floor'), 2)}"
    )


def galaxies(r: dict) -> list[str]:
    v = r["variants"]
    lines = [
        f"`cpu` preset on simulated HSC × Legacy (20,000 sources), {r['minutes_per_variant']:g} "
        f"min of training per variant on this machine (batch {r['batch_size']}, AdamW "
        f"{r['lr']:g}, cosine over the steps that fit the budget), evaluated on "
        f"{r['n_test_pairs']} held-out galaxies. Retrieval: physics-space cosine, both "
        f"directions averaged (chance {r['chance_top1']:.3f} / {r['chance_recall@10']:.3f}).",
        "",
        "| model | steps | top-1 | recall@10 |",
        "|---|---|---|---|",
        f"| classical PSF-matched χ² matching | – | "
        f"{_f(r['classical_psf_matched']['top1'])} | "
        f"{_f(r['classical_psf_matched']['recall@10'])} |",
        f"| random encoder (same architecture) | 0 | "
        f"{_f(r['random_encoder']['retrieval']['top1'])} | "
        f"{_f(r['random_encoder']['retrieval']['recall@10'])} |",
    ]
    for name, x in v.items():
        lines.append(
            f"| {name} | {x.get('max_steps', '–')} | {_f(x['retrieval']['top1'])} | "
            f"{_f(x['retrieval']['recall@10'])} |"
        )
    params = list(r["random_encoder"]["probe_r2"]["physics"])
    lines += [
        "",
        "Probe R² (seed-000 MLP on frozen latents; trained on 2,000 train galaxies × 2 "
        "surveys, tested on the held-out ones). Physics parameters first, then the "
        "instrument parameters of the observation itself (i band). *pooled*: HSC and Legacy "
        "observations together, so survey identity alone explains much of PSF and depth; "
        "*HSC only*: within one survey.",
        "",
        "| latent | " + " | ".join(params) + " |",
        "|---|" + "---|" * len(params),
    ]
    sets = [("random encoder", r["random_encoder"]), *v.items()]
    for name, x in sets:
        for latent in ("physics", "instrument", "physics_hsc_only"):
            if latent in x.get("probe_r2", {}):
                row = x["probe_r2"][latent]
                lines.append(
                    f"| {name}: {latent.replace('_', ' ')} | "
                    + " | ".join(_f(row.get(p), 2) for p in params)
                    + " |"
                )
    cf_rows = [(n, to, q) for n, x in v.items() for to, q in x.get("counterfactual", {}).items()]
    if cf_rows:
        lines += [
            "",
            "Counterfactual views of held-out galaxies (8 posterior samples, Heun 20 NFE), in "
            "the model's asinh space; the noise floor is the target's per-pixel noise "
            "variance there. Seed 000 reports z-scores close to N(0,1) with ~15% variance "
            "underestimate.",
            "",
            "| model → target | galaxies | posterior-mean MSE / floor | vs noise-free / floor "
            "| sample MSE / floor | z mean | z std | spread ratio (z std corrected for 8 "
            "samples) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for n, to, q in cf_rows:
            lines.append(
                f"| {n} → {to} | {q.get('n', q.get('n_sources'))} | "
                f"{_f(q['mse_mean_over_floor'], 2)} | "
                f"{_f(q.get('mse_mean_vs_clean_over_floor'), 2)} | "
                f"{_f(q['mse_samples_over_floor'], 2)} | {_f(q['z_mean'], 2)} | "
                f"{_f(q['z_std'], 2)} | {_f(_spread(q), 2)} |"
            )
    lines += ["", "Retrieval against training time (EMA snapshots):", ""]
    for name, x in v.items():
        c = x.get("time_to_quality") or []
        pts = ", ".join(f"{p['minutes']:.1f} min: {p['top1']:.3f}" for p in c)
        lines.append(f"- {name}: {pts}")
    lines += ["", "![retrieval against time and z-scores](results/galaxies.png)", ""]
    lines += [
        "Goals (issue 5; within 20 min on 2 cores):",
        "",
        "| variant | goal | value | |",
        "|---|---|---|---|",
    ]
    for name, g in r.get("goals", {}).items():
        for key, t in g.items():
            lines.append(f"| {name} | {key} {t['goal']} | {_f(t['value'])} | {_yes(t['met'])} |")
    return lines


def sampler(r: dict) -> list[str]:
    lines = [
        f"{r['n_anchors']} held-out anchors × {r['samples_per_anchor']} noise draws, model "
        f"`{r['model']}`. MSE in the model's space; Euler-250 (the paper's sampler): MSE to "
        f"target {r['euler250_mse_to_target']:.4f} in {r['euler250_seconds']:.0f} s.",
        "",
        "| solver | NFE | MSE to target / Euler-250's | MSE to Euler-250 samples | seconds |",
        "|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        tol = f" (tol {x['tolerance']:g})" if x.get("tolerance") else ""
        lines.append(
            f"| {x['solver']}{tol} | {x['nfe']} | {x['ratio_to_euler250_mse']:.3f} | "
            f"{x['mse_to_euler250']:.4f} | {x['seconds']} |"
        )
    w = r["nfe_within_2pct"]
    g = r["goal"]
    ref = r["euler250_mse_to_target"]
    strict = {}
    for x in r["rows"]:
        if x["mse_to_euler250"] <= 0.01 * ref:
            strict[x["solver"]] = min(strict.get(x["solver"], 10**9), x["nfe"])
    lines += [
        "",
        "Fewest NFE within 2% of Euler-250's MSE to the target: "
        + ", ".join(f"{k} {v if v is not None else 'not reached'}" for k, v in w.items())
        + f". Goal ≤ 20 NFE: {_yes(g['met'])} (best {g['value']}, "
        f"{g['saving_vs_euler250']}× fewer evaluations than Euler-250). The MSE to the "
        "target is dominated by the posterior's own spread, so it is a loose test; a "
        "stricter one, samples within 1% of that MSE of the Euler-250 samples from the same "
        "noise: " + ", ".join(f"{k} {v}" for k, v in strict.items()) + " NFE.",
    ]
    return lines


def train_throughput(r: dict) -> list[str]:
    lines = [
        "Training samples/s, 48×48×4, 1 physics + 5 instrument views, synthetic batches; "
        "median of timed steps after warm-up. *tuned* = channels_last + fused AdamW; "
        "*compiled* adds `torch.compile` of the loss.",
        "",
        "| preset | mode | lever | batch | samples/s | params (M) | first step (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        if "error" in x:
            lines.append(f"| {x['preset']} | {x['mode']} | – | – | failed: {x['error'][:80]} | | |")
            continue
        lever = ", ".join(f"{k}={v}" for k, v in x["overrides"].items()) or "–"
        lines.append(
            f"| {x['preset']} | {x['mode']} | {lever} | {x['batch']} | {x['samples_per_s']} | "
            f"{x['parameters_M']} | {x['first_step_seconds']} |"
        )
    lines += [
        "",
        "Ratios: " + ", ".join(f"{k} {v}×" for k, v in r["ratios"].items()),
        "",
        "With `n_draws` the figure is conditioning sets/s; each carries that many (t, x₀) "
        "draws through the decoder, which dominates the cost on CPU, so amortising the "
        "encoders does not pay here.",
    ]
    return lines


def lightcurves_counterfactual(r: dict) -> list[str]:
    fs = r["few_shot"]
    sizes = [p["n_labels"] for p in next(iter(fs.values()))]
    lines = [
        f"`cpu` preset on the light-curve track's store ({r['n_lightcurves']:,} curves), "
        f"{r['minutes_per_variant']:g} min per variant; same splits and probes as the "
        "contrastive track above. Star-latent R²(θ0) against labelled stars:",
        "",
        "| latent | " + " | ".join(str(n) for n in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    rows = [(k, c) for k, c in fs.items() if k.startswith("star")]
    ct = r.get("contrastive_track")
    if ct:
        rows += [
            ("star latent (contrastive track)", ct["few_shot_star"]),
            ("single latent (contrastive track)", ct["few_shot_single"]),
        ]
    for k, c in rows:
        by = {p["n_labels"]: p["r2_mean"] for p in c}
        lines.append(f"| {k} | " + " | ".join(_f(by.get(n)) for n in sizes) + " |")
    acc = dict(r["instrument_accuracy"])
    if ct:
        acc.update({f"{k} (contrastive track)": v for k, v in ct["instrument_accuracy"].items()})
    lines += ["", "Instrument-id accuracy (chance " + f"{r['chance_accuracy']:.3f}):", ""]
    lines += [f"- {k}: {v:.3f}" for k, v in acc.items()]
    lines += ["", "Regenerated held-out curves (8 samples, Heun 20 NFE):", ""]
    for name, x in r["variants"].items():
        q = x["reconstruction"]
        clean = _f(q.get("mse_mean_vs_clean_over_floor"), 2)
        lines.append(
            f"- {name} ({x['max_steps']} steps): posterior-mean MSE / noise floor "
            f"{q['mse_mean_over_floor']:.2f} (vs noise-free {clean}), "
            f"z {q['z_mean']:.2f} ± {q['z_std']:.2f} (spread ratio {_f(_spread(q), 2)})"
        )
    return lines


def galaxy_levers(paths: list[Path]) -> list[str]:
    """One table of issue 5's training levers: each variant is one change against hybrid."""
    if not paths:
        return []
    lines = [
        "## Galaxies: training levers of the hybrid counterfactual model",
        "",
        "Each row is the `cpu` hybrid model trained for the same wall-clock budget with one "
        "change (the variants of `configs/benchmarks/galaxies.yaml`), evaluated as above; "
        "counterfactual columns are posterior-mean MSE / noise floor on 32 held-out sources "
        "per direction. *leak*: the largest probe R² of an instrument parameter from the "
        "physics latent, pooled over both surveys and within HSC only.",
        "",
        "| run | variant | minutes | steps | top-1 | recall@10 | leak pooled | leak HSC only "
        "| → HSC | → Legacy | z std (HSC / Legacy) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    commands = []
    for k, path in enumerate(paths, 1):
        r = json.loads(path.read_text())
        commands.append(f"{k}. `{r['command']}`")
        for name, x in r["variants"].items():
            cf = x.get("counterfactual", {})
            hsc, leg = cf.get("hsc", {}), cf.get("legacy", {})
            leak = max(x["leakage_instrument_into_physics"].values())
            leak_hsc = max(x["leakage_instrument_into_physics_hsc_only"].values())
            steps = x.get("max_steps", "–")
            if "warm_start" in x:
                steps = f"{x['warm_start']['steps']} + {steps}"
            lines.append(
                f"| {k} | {name} | {r['minutes_per_variant']:g} | {steps} | "
                f"{_f(x['retrieval']['top1'])} | {_f(x['retrieval']['recall@10'])} | "
                f"{_f(leak, 2)} | {_f(leak_hsc, 2)} | "
                f"{_f(hsc.get('mse_mean_over_floor'), 2)} | "
                f"{_f(leg.get('mse_mean_over_floor'), 2)} | "
                f"{_f(hsc.get('z_std'), 2)} / {_f(leg.get('z_std'), 2)} |"
            )
    lines += ["", "Runs:", "", *commands]
    lines.append("")
    return lines


def sky_batches(r: dict) -> list[str]:
    return [
        f"Batches of {r['batch_size']} anchors with 5 instrument views each, over "
        f"{r['steps']} steps: the median fraction of instrument-view slots that hold a "
        f"distinct store row (each distinct row is encoded once) is "
        f"{r['random']['median_unique_fraction']:.3f} for random batches and "
        f"{r['sky']['median_unique_fraction']:.3f} for sky-clustered ones.",
    ]


def _cell(v) -> str:
    return "" if v is None else f"{v:.2f}"


def separation_galaxies(r: dict) -> list[str]:
    shared = r["shared"]
    evaluated = {v: e for v, e in r["variants"].items() if e.get("evaluation")}
    lines = [
        f"`cpu` preset on simulated HSC × Legacy galaxies, {r['minutes_per_variant']:g} min of "
        "training per variant on this machine unless the steps column says otherwise "
        "(`staged` starts from `encoders_only`'s encoders: 20 min in all); from `tuned` "
        "(issue 5's kept levers) each variant makes one change, named in "
        "`configs/benchmarks/separation_galaxies.yaml`, against "
        "`tuned`, `random_batches`, `same_survey_negatives` or `agreement`. Probes (seed-000 "
        "MLP) are trained on "
        f"{shared['n_probe_train']:,} training galaxies and scored on {shared['n_test']:,} "
        "held-out ones, **within one survey**: a survey's own observing conditions from its "
        "own observations (seed 000 Fig. 5). *instrument latent (+ context)* is the mean of "
        f"the instrument latents of the observation and its {shared['k_context']} sky "
        "neighbours, which is what the instrument encoder is given in training. References: "
        "the same-survey ResNet sees the observation and the same neighbours (the information "
        "ceiling), the cross-predict ResNet sees the other survey's image of the galaxy; each "
        f"was trained for {r['config']['evaluation'].get('reference_minutes')} min (shorter "
        "than the models: see the notes).",
        "",
        "| variant | overrides | steps trained / planned | top-1 | recall@10 | survey id from "
        "physics (or single) "
        "latent (chance 0.5) | worst transfer gap |",
        "|---|---|---|---|---|---|---|",
    ]
    commands = {e.get("command") for e in evaluated.values() if e.get("command")}
    for v, e in evaluated.items():
        ev = e["evaluation"]
        gap = max(q["gap"] for t in ev["transfer"].values() for q in t.values())
        t = e.get("training", {})
        steps = f"{t.get('steps_trained', '?')} / {t.get('max_steps', '?')}"
        if e.get("minutes") and e["minutes"] != r["minutes_per_variant"]:
            steps += f" ({e['minutes']:g} min)"
        lines.append(
            f"| {v} | `{json.dumps(e['overrides'])}` | {steps} | "
            f"{ev['retrieval']['top1']:.3f} | {ev['retrieval']['recall@10']:.3f} | "
            f"{ev['survey_identity'][ev.get('space', 'physics')]['accuracy']:.3f} | {gap:.3f} |"
        )
    raw = shared.get("raw_pixels")
    if raw:
        lines.append(
            f"| raw pixels (baseline: asinh, PCA to {raw['n_components']}) | | | "
            f"{raw['retrieval']['top1']:.3f} | {raw['retrieval']['recall@10']:.3f} | "
            f"{raw['survey_identity']['accuracy']:.3f} | |"
        )
    labels = {
        "physics": "physics latent",
        "instrument": "instrument latent (own image)",
        "instrument_context": "instrument latent (+ context)",
        "physics_head": "physics InfoNCE head's output",
        "instrument_head": "instrument InfoNCE head's output (own image)",
        "latent": "single latent",
        "latent_head": "single latent's InfoNCE head output",
    }
    ref_labels = {
        "random_physics": "random encoder: physics",
        "random_instrument_context": "random encoder: instrument (+ context)",
        "raw_pixels": "raw pixels (asinh, PCA)",
        "border_noise": "border-noise anchor (MLP)",
        "border_noise_linear": "border-noise anchor (linear)",
        "same_survey_resnet": "same-survey ResNet (ceiling)",
        "cross_predict_resnet": "cross-predict ResNet",
    }
    for survey in shared["surveys"]:
        first = next(
            iter(next(iter(evaluated.values()))["evaluation"]["per_survey"][survey].values())
        )
        cond = [k for k in first if not k.startswith(PHYS_PREFIXES)]
        phys = [k for k in first if k.startswith(PHYS_PREFIXES)]
        for title, cols in (("observing conditions", cond), ("physics", phys)):
            lines += [
                "",
                f"Within {survey}: probe R² of {survey}'s {title}.",
                "",
                "| representation | " + " | ".join(cols) + " |",
                "|---|" + "---|" * len(cols),
            ]
            for key, label in ref_labels.items():
                vals = shared["per_survey"][survey].get(key)
                if vals and any(c in vals for c in cols):
                    lines.append(
                        f"| {label} | " + " | ".join(_cell(vals.get(c)) for c in cols) + " |"
                    )
            for v, e in evaluated.items():
                per = e["evaluation"]["per_survey"][survey]
                for key, label in labels.items():
                    if key not in per:  # head outputs: only where they were probed
                        continue
                    lines.append(
                        f"| {v}: {label} | "
                        + " | ".join(_cell(per[key].get(c)) for c in cols)
                        + " |"
                    )
    lines += [
        "",
        "Cross-survey transfer of the physics (or single) latent (train on one survey's latents, "
        "test on the other's latents of other galaxies), R² in-survey → transferred:",
        "",
    ]
    for v, e in evaluated.items():
        for direction, t in e["evaluation"]["transfer"].items():
            cells = ", ".join(f"{k} {q['in_survey']:.2f}→{q['transfer']:.2f}" for k, q in t.items())
            lines.append(f"- {v}, {direction}: {cells}")
    if len(commands) > 1:
        lines += ["", "Commands, per variant:", ""]
        lines += [f"- {v}: `{e['command']}`" for v, e in evaluated.items() if e.get("command")]
    spread = r.get("condition_spread")
    if spread:
        names = list(next(iter(spread.values())))
        lines += [
            "",
            "How the conditions vary within each survey (`python "
            "benchmarks/separation_galaxies.py --spread-only`): standard deviation in the "
            "probes' units (arcsec, mag, dex), and in brackets the mean correlation between "
            "an observation's value and each of its sky neighbours'.",
            "",
            "| survey | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for survey, per in spread.items():
            cells = [f"{per[n]['std']:.3f} ({per[n]['neighbour_corr']:.2f})" for n in names]
            lines.append(f"| {survey} | " + " | ".join(cells) + " |")
    curve = _overlap_curve(r, evaluated)
    if curve:
        lines += ["", *curve]
    lines += ["", f"![seed 000 Fig. 5 per survey](results/{r['config']['name']}.png)", ""]
    lines += ["Goals (issue 10):", "", "| variant | goal | value | |", "|---|---|---|---|"]
    for v, goals in r.get("goals", {}).items():
        for name, g in goals.items():
            lines.append(f"| {v} | {name} ({g['goal']}) | {g['value']:.3f} | {_yes(g['met'])} |")
    return lines


def _overlap_curve(r: dict, evaluated: dict) -> list[str]:
    """Partial overlap (issue 12, item 5): top-1 of each footprint run beside its
    full-overlap twin, ordered by the fraction of the survey kept."""
    specs = r["config"].get("variants", {})
    points = []
    for v in evaluated:
        spec = specs.get(v) or {}
        full = spec.get("full_overlap")
        if full and full in evaluated:
            frac = float((spec.get("train") or {}).get("footprint_fraction", 1.0))
            points.append((frac, v, full))
    if not points:
        return []
    lines = [
        "Partial overlap (issue 12, item 5): HSC keeps only the rows in a Dec strip holding "
        "the given fraction of them; Legacy keeps every source; the same held-out galaxies.",
        "",
        "| HSC rows kept (overlap) | variant | top-1 | recall@10 | top-1 / full overlap's |",
        "|---|---|---|---|---|",
    ]
    fulls = sorted({f for _, _, f in points})
    for f in fulls:
        ret = evaluated[f]["evaluation"]["retrieval"]
        lines.append(f"| 100% | {f} | {ret['top1']:.3f} | {ret['recall@10']:.3f} | 1 |")
    for frac, v, full in sorted(points, reverse=True):
        ret = evaluated[v]["evaluation"]["retrieval"]
        ratio = ret["top1"] / evaluated[full]["evaluation"]["retrieval"]["top1"]
        lines.append(
            f"| {frac:.0%} | {v} | {ret['top1']:.3f} | {ret['recall@10']:.3f} | {ratio:.2f} |"
        )
    return lines


def prepare(r: dict) -> list[str]:
    t, c, b = r["timings"], r["counts"], r["bytes"]
    cfg = r["config"]
    return [
        f"{cfg['n_sources']:,} simulated sources seen by {' and '.join(cfg['surveys'])}, "
        "written by the simulator in the Multimodal-Universe layout (native units and pixel "
        f"scales, healpix partitions), then `prepare_store` (catalogues: "
        f"{cfg.get('catalogues', 'memory')}) and {r['train_steps']} training steps of the "
        f"`{cfg['train']['preset']}` preset on the prepared store.",
        "",
        "| step | seconds |",
        "|---|---|",
        f"| simulate + write the MMU tree ({b['mmu_tree'] / 1e9:.2f} GB) | "
        f"{t['simulate_and_write_mmu_s']:.0f} |",
        f"| prepare: read, transform, cross-match, pair, write the store "
        f"({b['prepared_store'] / 1e9:.2f} GB) | {t['prepare_s']:.0f} |",
        f"| train {r['train_steps']} steps on the prepared store | {t['train_s']:.0f} |",
        "",
        f"{r['observations']:,} observations, {r['observations_per_s_prepare']:,.0f} obs/s through "
        f"prepare; matched sources {c['matched']:,}, single-survey "
        + ", ".join(f"{k} {v:,}" for k, v in c["single"].items())
        + ", rejected rows "
        + str(sum(sum(v.values()) for v in c["rejected_rows"].values()))
        + ".",
    ]


def separation_bulge_disk(r: dict) -> list[str]:
    """The separation benchmark on the bulge + disk + knots population (issue 11, item 7)."""
    intro = (
        "The separation benchmark on galaxies with a bulge, an exponential disk and "
        "star-forming knots, each with its own colours (`morphology: bulge_disk`, "
        f"`{r['config']['store']}`, {r['config']['n_sources']:,} sources), against the "
        "Sersic store of the section above: the kept encoders and the single-latent "
        "baseline, each for the same fixed steps. `r_half` and (e1, e2) are the disk's; "
        "`bulge_fraction` is B/T in i. Probes and references as above."
    )
    return [intro, *separation_galaxies(r)[1:]]


def separation_sky(r: dict) -> list[str]:
    """The separation benchmark on bulge + disk galaxies with their sky neighbours (issue 11)."""
    intro = (
        "The separation benchmark on bulge + disk + knots galaxies with the sky around them "
        "drawn into every stamp: the catalogue's and the field's neighbouring galaxies and "
        "stars, seen by each survey through its own PSF and noise (`morphology: bulge_disk`, "
        f"`neighbours: true`, `{r['config']['store']}`, {r['config']['n_sources']:,} sources). "
        "The kept encoders and the single-latent baseline, each pair at the same fixed steps: "
        "581 (what fit 10 minutes on an earlier, slower machine) and 950 (what fits issue "
        "10's 20-minute budget on this run's 2 cores; the minutes column is the measured "
        "wall time). Every reference retrained on this store. Set beside the Sersic "
        "store's section."
    )
    return [intro, *separation_galaxies(r)[1:]]


def separation_three(r: dict) -> list[str]:
    """The separation benchmark on three surveys (issue 11, item 8)."""
    intro = (
        "The kept encoders trained on three surveys at once (hsc + legacy + lsst, "
        f"`{r['config']['store']}`, {r['config']['n_sources']:,} sources, 581 steps): "
        "per-survey probes, survey identity (chance 1/3; goal chance + 0.15) and transfer "
        "between every pair of surveys; retrieval is hsc → legacy. No supervised ResNet "
        "references were trained for this store, so the PSF and depth goals use the 0.5 floor."
    )
    return [intro, *separation_galaxies(r)[1:]]


PHYS_PREFIXES = ("mag_", "g_r", "r_i", "i_z", "r_half", "sersic", "bulge_", "e1", "e2", "redshift")


def demo(r: dict) -> list[str]:
    """`whatsreal demo` under /usr/bin/time -v."""
    lines = [
        f"`{r['demo_command']}`, one run: **{r['wall_seconds'] / 60:.1f} min** wall "
        f"(goal ≤ {r['goal_wall_seconds'] / 60:g} min: {_yes(r['goal_met'])}), peak resident "
        f"memory **{r['peak_rss_mib']:,} MiB**.",
        "",
        "| track | stage | seconds |",
        "|---|---|---|",
    ]
    for track, stages in r["track_stage_seconds"].items():
        for stage, sec in stages.items():
            lines.append(f"| {track} | {stage} | {sec:.1f} |")
    return lines


def _spread(q: dict) -> float | None:
    """A scored direction's spread ratio, from its own field or (older results) its z std."""
    if "spread_ratio" in q:
        return q["spread_ratio"]
    return spread_ratio(q["z_std"], q["n_samples"]) if "n_samples" in q else None


def evaluate_kept(r: dict) -> list[str]:
    """`whatsreal evaluate` of the kept galaxy levers: counterfactuals against issue 10's goals."""
    st, ret = r["settings"], r["retrieval"]
    name = Path(r["run"]).name
    lines = [
        f"The `{name}` run of the separation benchmark (the decoder trained on top of the "
        f"encoders-only run's encoders; its log ends at step {r['steps']}), its `results.json` "
        "copied here. Retrieval on "
        f"{r['n_test_pairs']} held-out galaxies (a smaller gallery than the separation "
        f"benchmark's 974, so a higher top-1): top-1 {ret['top1']:.3f}, recall@10 "
        f"{ret['recall@10']:.3f}; PSF-matched χ² anchor top-1 "
        f"{r['classical_psf_matched']['top1']:.3f}. Counterfactuals of {st['cf_sources']} "
        f"held-out galaxies per direction, {st['n_samples']} samples, {st['nfe']} NFE:",
        "",
        "| target | posterior-mean MSE / noise floor | vs the noise-free target / floor | "
        f"sample MSE / floor | pixel z mean | pixel z std ({st['n_samples']} samples; "
        f"calibrated: {_f(calibrated_z_std(st['n_samples']), 3)}) | spread ratio | "
        "MSE ≤ 1.3× floor | spread ratio in [0.95, 1.15] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for to, q in r["counterfactual"].items():
        k = _spread(q)
        lines.append(
            f"| {to} | {q['mse_mean_over_floor']:.2f} | {q['mse_mean_vs_clean_over_floor']:.2f} "
            f"| {q['mse_samples_over_floor']:.2f} | {q['z_mean']:.2f} | {q['z_std']:.2f} | "
            f"{_f(k, 2)} | {_yes(q['mse_mean_over_floor'] <= 1.3)} | "
            f"{'–' if k is None else _yes(0.95 <= k <= 1.15)} |"
        )
    lines += [
        "",
        f"*Spread ratio*: the error's std over the posterior's std, which is the pixel z std "
        f"corrected for drawing only {st['n_samples']} samples "
        "(`whatsreal.evaluate.counterfactual.spread_ratio`). From S samples, "
        "(x − mean) / std is a Student t times √(1 + 1/S), so a perfectly calibrated "
        f"posterior reads z std {_f(calibrated_z_std(st['n_samples']), 3)} here. Seed 000's "
        "~1.07 is read from many samples, so the goal applies to the corrected figure. Runs "
        "scored before the field was written get it from their z std and sample count by the "
        "same function.",
    ]
    ones = {to: q["one_step"] for to, q in r["counterfactual"].items() if q.get("one_step")}
    if ones:
        lines += [
            "",
            "The same posterior's mean in one network call per noise draw "
            "(`CounterfactualModel.posterior_mean`: x0 + v(x0, t = 0), exact for the optimal "
            f"velocity; {st['n_samples']} draws averaged), without the sampling noise of a "
            f"mean over {st['n_samples']} integrated samples:",
            "",
            "| target | one-call posterior mean MSE / floor | vs the noise-free target / floor "
            "| mean of the samples MSE / floor | MSE ≤ 1.3× floor |",
            "|---|---|---|---|---|",
        ]
        for to, one in ones.items():
            lines.append(
                f"| {to} | {one['mse_mean_over_floor']:.2f} | "
                f"{one['mse_mean_vs_clean_over_floor']:.2f} | "
                f"{r['counterfactual'][to]['mse_mean_over_floor']:.2f} | "
                f"{_yes(one['mse_mean_over_floor'] <= 1.3)} |"
            )
    recs = {to: q["recalibrated"] for to, q in r["counterfactual"].items() if q.get("recalibrated")}
    if recs:
        lines += [
            "",
            f"Recalibrated (`--cf-calibrate {st['cf_calibrate']}`): each direction's samples "
            "spread about their mean by one scale, fitted so that the samples of "
            f"{st['cf_calibrate']} validation galaxies read spread ratio 1 (none of them scored; "
            "`whatsreal.evaluate.counterfactual.fit_spread_scale`), then applied to the test "
            "galaxies' samples above. Post-hoc recalibration, as temperature scaling is for a "
            "classifier; the posterior mean and its MSE do not change:",
            "",
            "| target | spread scale | fitted on (galaxies) | raw spread ratio | "
            "recalibrated z std | recalibrated spread ratio | in [0.95, 1.15] |",
            "|---|---|---|---|---|---|---|",
        ]
        for to, c in recs.items():
            k = c["spread_ratio"]
            lines.append(
                f"| {to} | {c['spread_scale']:.3f} | {c['n_sources']} | "
                f"{_f(_spread(r['counterfactual'][to]), 2)} | {c['z_std']:.2f} | {_f(k, 3)} | "
                f"{'–' if k is None else _yes(0.95 <= k <= 1.15)} |"
            )
    refs = {to: q for to, q in r["counterfactual"].items() if q.get("reference")}
    if refs:
        first = next(iter(refs.values()))["reference"]
        lines += [
            "",
            "Information-limited reference (`--cf-reference-minutes "
            f"{st['cf_reference_minutes']:g}`, `whatsreal.evaluate.cf_reference`): a UNet "
            "trained with MSE to predict the target image from the other survey's image of "
            "the galaxy and the target observation's *true* conditions (PSF FWHM and shape, "
            "depth, sky σ, exposures, extinction per band), on "
            f"{first['regressor']['train_examples']:,} training galaxies, scored on the same "
            "held-out galaxies. It knows more than the counterfactual model, which sees only "
            "the target survey's sky neighbours. Issue 10's alternative goal: the model's "
            "posterior-mean MSE within 10% of it.",
            "",
            "| target | reference trained, min (steps) | reference MSE / floor | reference vs "
            "noise-free / floor | model MSE / reference MSE | within 10% |",
            "|---|---|---|---|---|---|",
        ]
        for to, q in refs.items():
            lines.append(
                f"| {to} | {_reference_cells(q['reference'])} | "
                f"{q['mse_mean_over_reference']:.2f} | "
                f"{_yes(q['mse_mean_over_reference'] <= 1.1)} |"
            )
    lrefs = {to: q for to, q in r["counterfactual"].items() if q.get("latent_reference")}
    if lrefs:
        lines += [
            "",
            "Latent reference (`--cf-latent-reference-minutes "
            f"{st['cf_latent_reference_minutes']:g}`, "
            "`whatsreal.evaluate.cf_reference.latent_reference`): a fresh copy of the model's "
            "own decoder trained with MSE to predict the target image from the model's "
            "conditioning of the same views (its frozen encoders' tokens; flow input zero, "
            "t = 0), for as many minutes, scored on the counterfactuals' own views. If it is "
            "as far off as the model, what limits is reading a galaxy out of the latents in "
            "these minutes, whatever the objective; if it is much closer, the flow objective "
            "is.",
            "",
            "| target | reference trained, min (steps) | reference MSE / floor | reference vs "
            "noise-free / floor | model posterior mean MSE / floor | one-call mean / floor |",
            "|---|---|---|---|---|---|",
        ]
        for to, q in lrefs.items():
            lines.append(
                f"| {to} | {_reference_cells(q['latent_reference'])} | "
                f"{q['mse_mean_over_floor']:.2f} | "
                f"{_f((q.get('one_step') or {}).get('mse_mean_over_floor'), 2)} |"
            )
    spectra = {to: q["spectra"] for to, q in r["counterfactual"].items() if q.get("spectra")}
    if spectra:
        lines += [
            "",
            "Spatial structure of the samples against the real target images (seed 000 A.5): "
            "mean log10 of the samples' power over the real power below and above half the "
            "Nyquist frequency (0: a match; > 0 excess power, artefacts; < 0 a deficit, "
            "over-smoothing), and the largest autocorrelation difference at lags 1-8.",
            "",
            "| target | band | log10 power ratio, low f | high f | max \\|ΔACF\\| |",
            "|---|---|---|---|---|",
        ]
        for to, sp in spectra.items():
            for band, b in sp["bands"].items():
                lines.append(
                    f"| {to} | {band} | {b['log_ratio_low']:+.2f} | {b['log_ratio_high']:+.2f} "
                    f"| {b['acf_max_abs_diff']:.2f} |"
                )
    morph = r.get("morphology") or {}
    if morph:
        first = next(iter(morph.values()))
        lines += [
            "",
            "Morphology test (seed 000 Fig. 3 right; `--morphology "
            f"{st.get('morphology')}`): a ResNet-18 ellipticity regressor trained for "
            f"{first['regressor']['seconds'] / 60:.1f} min on {first['n_train']:,} real "
            "target images, applied without retraining to real target images of "
            f"{first['n_test']} held-out galaxies, to {first['n_samples']} counterfactual "
            "target images of each (generated from the other survey's images), and to the "
            "other survey's images as they are. Seed 000: R² 0.82 real, 0.81 generated.",
            "",
            "| target | input | R² e1 | R² e2 | mean R² |",
            "|---|---|---|---|---|",
        ]
        for to, m in morph.items():
            for key, label in (
                ("real", "real target images"),
                ("counterfactual", "counterfactual target images"),
                ("other_as_is", "other survey's images, as they are"),
            ):
                q = m[key]
                lines.append(
                    f"| {to} | {label} | {q['e1']:.3f} | {q['e2']:.3f} | {q['mean']:.3f} |"
                )
    return lines


def separation_lightcurves(r: dict) -> list[str]:
    sizes = r["config"]["evaluation"]["sizes"]
    lines = [
        f"Seed 001's data set (40,000 light curves, 2,000 stars, 17 instruments), `cpu` "
        f"Conformer preset, {r['config']['minutes']} min per dual variant (each one change "
        "against `baseline` or the run it names; *steps* says where a variant ran for a fixed "
        "count instead), the single-latent baseline on the batches of "
        f"`{r['config']['single_beside']}`, trained once for its measured wall-clock and once "
        "for exactly its steps. Probe R²(θ0) on "
        "held-out stars, mean ± std over "
        f"{r['config']['evaluation']['seeds']} draws of the labelled set; instrument-id "
        "accuracy (chance 0.059). The command above is the latest; any dual row reruns alone "
        "with `python benchmarks/separation_lightcurves.py --variants NAME --skip-single` "
        "(training is deterministic for a seed), and the two singles with `--variants "
        f"{r['config']['single_beside']}`.",
        "",
        "| run | overrides | steps | "
        + " | ".join(f"n={n}" for n in sizes)
        + " | instrument id (star or single / instrument latent) |",
        "|---|---|---|" + "---|" * len(sizes) + "---|",
    ]
    for name, run in r["runs"].items():
        key = "latent" if "latent" in run["few_shot"] else "star"
        curve = {x["n_labels"]: x for x in run["few_shot"][key]}
        acc = run["instrument_accuracy"]
        inst = f" / {acc['instrument']:.3f}" if "instrument" in acc else ""
        cells = " | ".join(
            f"{curve[n]['r2_mean']:.3f} ± {curve[n]['r2_std']:.3f}" if n in curve else ""
            for n in sizes
        )
        batch = run.get("batch")  # [stars, views] per batch, where a run set it
        tc = ContrastiveTrainConfig
        default = [tc.sources_per_batch, tc.views_per_source]
        shape = f"; {batch[0]} stars × {batch[1]} views" if batch and batch != default else ""
        recipe = single_tag({}, run_recipe(run))  # training choices not seed 001's
        shape += f"; {recipe.replace('_', ', ')}" if recipe else ""
        took = f" ({run['train_seconds'] / 60:.1f} min)" if "train_seconds" in run else ""
        lines.append(
            f"| {name} ({run['kind']}) | `{json.dumps(run['overrides'])}`{shape} | "
            f"{run['steps']}{took} | {cells} | {acc[key]:.3f}{inst} |"
        )
    recovered = {
        n: run["instrument_model"] for n, run in r["runs"].items() if "instrument_model" in run
    }
    if recovered:
        lines += [
            "",
            "Self-calibrated runs (`calibration_weight`): how well the instrument model that the "
            "instrument latent predicts from each held-out curve alone recovers its instrument. "
            "R², pooled over curves and samples, of the predicted mean curve against the "
            "simulator's true offset O_m(t) and against the instrument's ensemble mean over the "
            "training curves, and of the predicted spread against the ensemble's spread (the "
            "ensemble mean itself recovers O_m(t) with the R² in the last column).",
            "",
            "| run | mean vs true O_m(t) | mean vs ensemble mean | spread vs ensemble spread "
            "| ensemble mean vs true O_m(t) |",
            "|---|---|---|---|---|",
        ]
        for name, m in recovered.items():
            lines.append(
                f"| {name} | {m['r2_mean_vs_true_offset']:.3f} | "
                f"{m['r2_mean_vs_ensemble_mean']:.3f} | "
                f"{m['r2_spread_vs_ensemble_spread']:.3f} | "
                f"{m['r2_ensemble_mean_vs_true_offset']:.3f} |"
            )
    judged = {r.get("goals_for"): r.get("goals", {}), **r.get("goals_also", {})}
    for variant, goals in judged.items():
        if not goals:
            continue
        lines += ["", f"Goals (issue 10), judged for `{variant}`:", ""]
        lines += ["| goal | value | |", "|---|---|---|"]
        for name, g in goals.items():
            vs = f" (against `{g['against']}`)" if g.get("against") else ""
            lines.append(f"| {name}{vs} ({g['goal']}) | {g['value']:.3f} | {_yes(g['met'])} |")
    for group, sg in (r.get("seed_groups") or {}).items():
        lines += [
            "",
            f"Goals over training seeds {', '.join(map(str, sg['seeds']))} of **{group}** "
            f"({', '.join(f'`{v}`' for v in sg['runs'])}), judged on the mean; each margin is "
            "a dual run less the single of its own seed and batches (margins without one for "
            "every seed are left out):",
            "",
            "| goal | per seed | mean ± std | |",
            "|---|---|---|---|",
        ]
        for name, g in sg["goals"].items():
            per = " / ".join(f"{v:.3f}" for v in g["per_seed"])
            lines.append(
                f"| {name} ({g['goal']}) | {per} | {g['value']:.3f} ± {g['std']:.3f} | "
                f"{_yes(g['met'])} |"
            )
    return lines


def embed(r: dict) -> list[str]:
    lines = [
        f"Observations/s through both {r['config']['shape']} ResNet-18 encoders of the "
        f"`{r['config']['preset']}` counterfactual model ({r['parameters_M']} M parameters, "
        f"latents {r['latent_dim']} + {r['latent_dim']}), random weights and inputs, median of "
        f"{r['config']['repeats']} repeats of {r['config']['n_obs']:,} observations. *eager*: "
        "fp32, contiguous, no inference_mode; *tuned*: the `whatsreal embed` path "
        "(batch norms folded into the convolutions, channels_last, inference_mode, threads "
        "set) in each fp32 memory layout; *bf16*: the `whatsreal embed --bf16` path, bf16 "
        "autocast in channels_last; *compiled*: the `whatsreal embed --compile` path, the "
        "tuned model through torch.compile (Inductor, weights frozen), compiled once per batch "
        "size (its seconds in brackets, not in the rate). Errors are relative to the plain "
        "fp32 latents; fp32 without compile stays the default.",
        "",
        "| mode | batch | threads | obs/s | all repeats |",
        "|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        err = x.get("max_rel_error_vs_fp32")
        mode = x["mode"] + (f" (max rel. error {err})" if err is not None else "")
        if "compile_s" in x:
            mode += f" [compile {x['compile_s']} s]"
        lines.append(
            f"| {mode} | {x['batch_size']} | {x['threads']} | {x['obs_per_s']:,.0f} | "
            + ", ".join(f"{v:,.0f}" for v in x["obs_per_s_all"])
            + " |"
        )
    lines += [
        "",
        f"Tuned / eager: {r['ratio_tuned_vs_eager']}× (best tuned batch "
        f"{r['best_tuned']['batch_size']}); that is {r['encoder_passes_per_s_best_tuned']:,.0f} "
        f"single-encoder passes/s. Goal ({r['goal']}): {_yes(r['goal_met'])}"
        + (
            f"; fastest: {r['fastest']['mode']} at batch {r['fastest']['batch_size']} "
            f"({r['fastest']['obs_per_s']:,.0f} obs/s); in fp32: "
            f"{_yes(r['goal_met_fp32'])}"
            + (
                f" ({r['fastest_fp32']['mode']} at batch {r['fastest_fp32']['batch_size']}, "
                f"{r['fastest_fp32']['obs_per_s']:,.0f} obs/s)."
                if "fastest_fp32" in r
                else "."
            )
            if "fastest" in r
            else "."
        ),
    ]
    return lines


def search(r: dict) -> list[str]:
    c = r["config"]
    lines = [
        f"{r['n_vectors']:,} clustered vectors of {r['dim']} dimensions ({c['n_clusters']} "
        f"Gaussian clusters on {c['intrinsic_dim']}-D subspaces), {c['n_queries']} held-out "
        f"queries; the index `whatsreal index` picks at this size: **{r['kind']}** "
        f"{r['default_params']}, built in {r['build_seconds']} s. Latency: median over single "
        f"queries; recall@{c['k']} against exact search. Exact search: "
        f"{r['exact_ms_per_query']} ms per single query.",
        "",
        "| nprobe | ms/query (single) | ms/query (batched) | recall@10 |",
        "|---|---|---|---|",
    ]
    for x in r["rows"]:
        mark = " (default)" if x["default"] else ""
        lines.append(
            f"| {x['nprobe']}{mark} | {x['ms_per_query']} | {x['batched_ms_per_query']} | "
            f"{x['recall_at_10']} |"
        )
    lines += ["", f"Peak RSS {r['peak_rss_mb']:.0f} MB. Goal ({r['goal']}): {_yes(r['goal_met'])}."]
    return lines


def _track_commands(r: dict) -> list[str]:
    """The command of each track, when the tracks were run separately (--only, --tracks)."""
    runs = {t: v.get("command") for t, v in r["tracks"].items()}
    if len({c for c in runs.values() if c}) <= 1:
        return []
    return ["", *(f"- {t}: `{c}`" for t, c in runs.items() if c)]


def anomalies(r: dict) -> list[str]:
    """Precision@k of injected physical objects and artefacts, per space (issue 13)."""
    out = [
        "Injected rare physical objects and instrument artefacts among held-out observations "
        "(`whatsreal.evaluate.anomalies`); precision@k with k = the number injected of each "
        "kind, pooled over surveys or instruments (chance about 0.01).",
        "",
        "| track | space | k-NN P@k physical | k-NN P@k artefacts | iforest P@k physical | "
        "iforest P@k artefacts |",
        "|---|---|---|---|---|---|",
    ]
    for track, t in r["tracks"].items():
        for space, sc in t["spaces"].items():
            cells = []
            for method in ("knn", "iforest"):
                pooled = sc.get(method, {}).get("pooled", {})
                for kind in ("physical", "instrument"):
                    cells.append(_f(pooled.get(kind, {}).get("precision_at_k")))
            out.append(f"| {track} | {space} | " + " | ".join(cells) + " |")
    out += [
        "",
        "What k-NN finds of each kind (precision@k of the kind alone), and the supervised "
        "reference: 5-fold logistic regression on the space, AUC of each class against the "
        "normal observations (is the information there at all?).",
        "",
        "| track | space | k-NN P@k by kind | linear AUC physical | linear AUC artefacts |",
        "|---|---|---|---|---|",
    ]
    for track, t in r["tracks"].items():
        for space, sc in t["spaces"].items():
            pooled = sc.get("knn", {}).get("pooled", {})
            kinds = {
                **pooled.get("physical", {}).get("precision_at_k_by_kind", {}),
                **pooled.get("instrument", {}).get("precision_at_k_by_kind", {}),
            }
            lin = sc.get("linear_auc") or {}
            out.append(
                f"| {track} | {space} | "
                + ", ".join(f"{k} {v:.2f}" for k, v in kinds.items())
                + f" | {_f(lin.get('physical'))} | {_f(lin.get('instrument'))} |"
            )
    return out + _track_commands(r)


def posteriors(r: dict) -> list[str]:
    """Coverage, TARP-checked posteriors and R² against the MLP probe (issue 13)."""
    out = [
        "A conditional flow on frozen physics latents (`whatsreal.infer.posterior`), trained "
        "on one survey's (or instrument group's) labels; coverage of the central 68% and 95% "
        "intervals on held-out objects (goal: within ±0.05), R² of the posterior mean beside "
        "the seed-000 MLP probe's.",
        "",
        "| track | test | property | cov 68% | cov 95% | R² posterior mean | R² MLP probe |",
        "|---|---|---|---|---|---|---|",
    ]
    for track, t in r["tracks"].items():
        for test, ev in t["tests"].items():
            for name, cov in ev["coverage"].items():
                out.append(
                    f"| {track} | {test} | {name} | {_f(cov['68'])} | {_f(cov['95'])} | "
                    f"{_f(ev['r2_posterior_mean'][name])} | {_f(ev['r2_mlp_probe'][name])} |"
                )
    for track, t in r["tracks"].items():
        widths = (t.get("calibration") or {}).get("temperature")
        if isinstance(widths, dict):
            out += [
                "",
                f"{track}: widths fitted on the {t['calibration']['split']} split's "
                f"{t['calibration']['n']:,} objects (one per property): "
                + ", ".join(f"{k} ×{v:.2f}" for k, v in widths.items())
                + ".",
            ]
        elif widths is not None:
            out += ["", f"{track}: one width for every property, ×{widths:.2f}."]
        for test, ev in t.get("tests", {}).items():
            if "widths" in ev:
                out += [
                    "",
                    f"{track} `{test}`: the same flow, with widths refitted on "
                    f"{ev['n_width_fit']:,} images by the predicting survey "
                    f"({', '.join(ev['instruments'])}) of labelled validation sources (the "
                    "overlap; labels from the labelling survey): "
                    + ", ".join(f"{k} ×{v:.2f}" for k, v in ev["widths"].items())
                    + ".",
                ]
    return out + _track_commands(r)


SECTIONS: dict[str, tuple[str, Callable[[dict], list[str]]]] = {
    "pairing": ("Sky pairing", pairing),
    "store_io": ("Observation store I/O", store_io),
    "store_compact": (
        "Compact store: size and read throughput against float32 (issue 12)",
        store_compact,
    ),
    "prepare": ("`whatsreal prepare` at full size: MMU layout to a store (issue 12)", prepare),
    "lightcurves": ("Light curves: contrastive dual model (seed 001)", lightcurves),
    "lightcurves_ceiling": ("Light curves: supervised ceiling", lightcurves_ceiling),
    "simulate_galaxies": ("Galaxy simulator speed", simulate_galaxies),
    "galaxies": ("Galaxies: counterfactual, hybrid and contrastive (seed 000)", galaxies),
    "sky_batches": ("Sky-clustered batches: instrument views encoded", sky_batches),
    "sampler": ("Counterfactual samplers: accuracy against NFE", sampler),
    "train_throughput": ("Counterfactual training throughput", train_throughput),
    "train_throughput_levers": (
        "Counterfactual training: the cost of the levers (cpu preset, tuned step)",
        train_throughput,
    ),
    "lightcurves_counterfactual": (
        "Light curves: counterfactual model beside the contrastive track",
        lightcurves_counterfactual,
    ),
    "separation_galaxies": (
        "Separation on galaxies: per-survey probes as seed 000 Fig. 5 (issue 10)",
        separation_galaxies,
    ),
    "separation_galaxies_bulge_disk": (
        "Separation on bulge + disk + knots galaxies (issues 10 and 11)",
        separation_bulge_disk,
    ),
    "separation_galaxies_sky": (
        "Separation on galaxies with their sky neighbours (issues 10 and 11)",
        separation_sky,
    ),
    "separation_galaxies_three": (
        "Separation on three surveys: hsc + legacy + lsst (issue 11)",
        separation_three,
    ),
    "demo": ("`whatsreal demo`: wall time and peak memory (issue 11)", demo),
    "evaluate_staged_decor": (
        "Galaxy counterfactuals and morphology of the kept levers (`whatsreal evaluate`, "
        "issues 10 and 11)",
        evaluate_kept,
    ),
    "evaluate_dec_joint_950_tau02": (
        "Galaxy counterfactuals of the kept 950-step encoders (τ 0.2, sky store): the "
        "decoder stage with the encoders trained on (`whatsreal evaluate`, issue 10)",
        evaluate_kept,
    ),
    "evaluate_dec_joint_950_tau02_s24": (
        "The same decoder stage scored from 24 samples per galaxy: a check of the spread "
        "ratio's finite-sample correction (the run folder copied, so that the 8-sample "
        "`results.json` above stays; `whatsreal evaluate`, issue 10)",
        evaluate_kept,
    ),
    "evaluate_dec_joint_950_tau02_lref": (
        "The same decoder stage beside its latent reference: a fresh decoder regressed on the "
        "model's own latents for as many minutes (the run folder copied; `whatsreal "
        "evaluate --cf-latent-reference-minutes`, issue 10)",
        evaluate_kept,
    ),
    "evaluate_dec_joint_950_tau02_cal": (
        "The same decoder stage with its samples' spread recalibrated on validation galaxies "
        "(the run folder copied; `whatsreal evaluate --cf-calibrate`, issue 10)",
        evaluate_kept,
    ),
    "evaluate_dec_joint_950_tau02_seed1_cal": (
        "The decoder stage of training seed 1 with its samples' spread recalibrated on "
        "validation galaxies (the run folder copied; `whatsreal evaluate --cf-calibrate`, "
        "issue 10)",
        evaluate_kept,
    ),
    "evaluate_dec_frozen_950_tau02": (
        "Galaxy counterfactuals of the kept 950-step encoders (τ 0.2, sky store): the "
        "decoder alone on frozen encoders, `train.freeze_encoders` (`whatsreal evaluate`, "
        "issue 10)",
        evaluate_kept,
    ),
    "evaluate_dec_frozen_950_tau02_t0": (
        "The decoder alone on the frozen encoders with a quarter of the flow draws at t = 0 "
        "(`model.t_zero_fraction: 0.25`; `whatsreal evaluate`, issue 10)",
        evaluate_kept,
    ),
    "evaluate_dec_joint_950_tau02_t0": (
        "The kept decoder stage (encoders trained on) with a quarter of the flow draws at "
        "t = 0 (`model.t_zero_fraction: 0.25`; `whatsreal evaluate`, issue 10)",
        evaluate_kept,
    ),
    "evaluate_dec_joint_950_tau02_t05": (
        "The kept decoder stage with half of the flow draws at t = 0 "
        "(`model.t_zero_fraction: 0.5`; `whatsreal evaluate`, issue 10)",
        evaluate_kept,
    ),
    "evaluate_dec_joint_950_tau02_seed1": (
        "The kept decoder stage with decoder training seed 1, no draws held at t = 0 "
        "(`whatsreal evaluate`, issue 10)",
        evaluate_kept,
    ),
    "evaluate_dec_joint_950_tau02_t0_seed1": (
        "The kept decoder stage with decoder training seed 1 and a quarter of the flow draws "
        "at t = 0 (`whatsreal evaluate`, issue 10)",
        evaluate_kept,
    ),
    "evaluate_staged_nohead": (
        "Galaxy counterfactuals and morphology of the seventh round's levers, before the "
        "decorrelation term (`whatsreal evaluate`, issue 10)",
        evaluate_kept,
    ),
    "evaluate_staged_heads": (
        "Galaxy counterfactuals and morphology with the MLP projection heads, the control "
        "(`whatsreal evaluate`, issue 10)",
        evaluate_kept,
    ),
    "evaluate_staged_per_band": (
        "Galaxy counterfactuals of the fourth round's levers (`whatsreal evaluate`, issue 10)",
        evaluate_kept,
    ),
    "separation_lightcurves": (
        "Separation on light curves: star latent vs instrument, equal steps (issue 10)",
        separation_lightcurves,
    ),
    "embed": ("Embedding throughput: the two ResNet-18 encoders (issue 13)", embed),
    "search": ("Similarity search: FAISS latency and recall at 10^6 vectors (issue 13)", search),
    "anomalies": ("Anomaly search: injected physical objects and artefacts (issue 13)", anomalies),
    "posteriors": ("Property posteriors: coverage and R² (issue 13)", posteriors),
}

DEFAULT_COMMANDS = {
    "galaxies": "python benchmarks/galaxies.py --minutes 15",
    "evaluate_staged_decor": "whatsreal evaluate --run "
    "benchmarks/_data/separation_runs/staged_decor --n-test 500 --n-probe 1000 "
    "--probe-steps 100 --cf-sources 32 --n-samples 8 --nfe 20 --few-shot '' --morphology 200 "
    "--morphology-minutes 3 --cf-reference-minutes 8",
    "evaluate_dec_joint_950_tau02": "whatsreal evaluate --run "
    "benchmarks/_data/separation_sky_runs/dec_joint_950_tau02 --n-test 500 --n-probe 1000 "
    "--probe-steps 100 --cf-sources 32 --n-samples 8 --nfe 20 --few-shot ''",
    "evaluate_dec_joint_950_tau02_s24": "cp -r benchmarks/_data/separation_sky_runs/"
    "dec_joint_950_tau02 benchmarks/_data/separation_sky_runs/dec_joint_950_tau02_s24 && rm "
    "benchmarks/_data/separation_sky_runs/dec_joint_950_tau02_s24/results.json && whatsreal "
    "evaluate --run benchmarks/_data/separation_sky_runs/dec_joint_950_tau02_s24 --n-test 200 "
    "--n-probe 200 --probe-steps 20 --cf-sources 32 --n-samples 24 --nfe 20 --few-shot ''",
    "evaluate_dec_joint_950_tau02_lref": "cp -r benchmarks/_data/separation_sky_runs/"
    "dec_joint_950_tau02 benchmarks/_data/separation_sky_runs/dec_joint_950_tau02_lref && rm "
    "benchmarks/_data/separation_sky_runs/dec_joint_950_tau02_lref/results.json && whatsreal "
    "evaluate --run benchmarks/_data/separation_sky_runs/dec_joint_950_tau02_lref --n-test 200 "
    "--n-probe 200 --probe-steps 20 --cf-sources 32 --n-samples 8 --nfe 20 --few-shot '' "
    "--cf-latent-reference-minutes 6",
    "evaluate_dec_joint_950_tau02_cal": "cp -r benchmarks/_data/separation_sky_runs/"
    "dec_joint_950_tau02 benchmarks/_data/separation_sky_runs/dec_joint_950_tau02_cal && rm "
    "benchmarks/_data/separation_sky_runs/dec_joint_950_tau02_cal/results.json && whatsreal "
    "evaluate --run benchmarks/_data/separation_sky_runs/dec_joint_950_tau02_cal --n-test 200 "
    "--n-probe 200 --probe-steps 20 --cf-sources 32 --n-samples 8 --nfe 20 --few-shot '' "
    "--cf-calibrate 32",
    "evaluate_dec_joint_950_tau02_seed1_cal": "cp -r benchmarks/_data/separation_sky_runs/"
    "dec_joint_950_tau02_seed1 benchmarks/_data/separation_sky_runs/dec_joint_950_tau02_seed1_cal "
    "&& rm benchmarks/_data/separation_sky_runs/dec_joint_950_tau02_seed1_cal/results.json && "
    "whatsreal evaluate --run benchmarks/_data/separation_sky_runs/dec_joint_950_tau02_seed1_cal "
    "--n-test 200 --n-probe 200 --probe-steps 20 --cf-sources 32 --n-samples 8 --nfe 20 "
    "--few-shot '' --cf-calibrate 32",
    "evaluate_dec_frozen_950_tau02": "whatsreal evaluate --run "
    "benchmarks/_data/separation_sky_runs/dec_frozen_950_tau02 --n-test 500 --n-probe 1000 "
    "--probe-steps 100 --cf-sources 32 --n-samples 8 --nfe 20 --few-shot ''",
    "evaluate_dec_frozen_950_tau02_t0": "whatsreal evaluate --run "
    "benchmarks/_data/separation_sky_runs/dec_frozen_950_tau02_t0 --n-test 500 --n-probe 1000 "
    "--probe-steps 100 --cf-sources 32 --n-samples 8 --nfe 20 --few-shot ''",
    "evaluate_dec_joint_950_tau02_t0": "whatsreal evaluate --run "
    "benchmarks/_data/separation_sky_runs/dec_joint_950_tau02_t0 --n-test 500 --n-probe 1000 "
    "--probe-steps 100 --cf-sources 32 --n-samples 8 --nfe 20 --few-shot ''",
    "evaluate_dec_joint_950_tau02_t05": "whatsreal evaluate --run "
    "benchmarks/_data/separation_sky_runs/dec_joint_950_tau02_t05 --n-test 500 --n-probe 1000 "
    "--probe-steps 100 --cf-sources 32 --n-samples 8 --nfe 20 --few-shot ''",
    "evaluate_dec_joint_950_tau02_seed1": "whatsreal evaluate --run "
    "benchmarks/_data/separation_sky_runs/dec_joint_950_tau02_seed1 --n-test 500 --n-probe 1000 "
    "--probe-steps 100 --cf-sources 32 --n-samples 8 --nfe 20 --few-shot ''",
    "evaluate_dec_joint_950_tau02_t0_seed1": "whatsreal evaluate --run "
    "benchmarks/_data/separation_sky_runs/dec_joint_950_tau02_t0_seed1 --n-test 500 --n-probe 1000 "
    "--probe-steps 100 --cf-sources 32 --n-samples 8 --nfe 20 --few-shot ''",
    "evaluate_staged_nohead": "whatsreal evaluate --run "
    "benchmarks/_data/separation_runs/staged_nohead --n-test 500 --n-probe 1000 "
    "--probe-steps 100 --cf-sources 32 --n-samples 8 --nfe 20 --few-shot '' --morphology 200 "
    "--morphology-minutes 3",
    "evaluate_staged_heads": "whatsreal evaluate --run "
    "benchmarks/_data/separation_runs/staged_heads --n-test 500 --n-probe 1000 "
    "--probe-steps 100 --cf-sources 32 --n-samples 8 --nfe 20 --few-shot '' --morphology 200 "
    "--morphology-minutes 3",
    "evaluate_staged_per_band": "whatsreal evaluate --run "
    "benchmarks/_data/separation_runs/staged_per_band --n-test 500 --n-probe 1000 "
    "--probe-steps 100 --cf-sources 32 --n-samples 8 --nfe 20",
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
        command = r.get("command") or DEFAULT_COMMANDS.get(name, f"python benchmarks/{name}.py")
        if "--skip-train" in command:
            trained = command.replace(" --skip-train", "")
            command += f"`, models trained by `{trained}"
        machine = r.get("machine", "a machine not recorded in the results")
        if isinstance(machine, dict):
            machine = f"{machine.get('cpus')} cores, torch {machine.get('torch')}"
        lines += [f"## {title}", "", f"Command: `{command}` (on {machine})", ""]
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
    lines += galaxy_levers(sorted(RESULTS.glob("galaxies_levers*.json")))
    atomic_write_text(HERE.parent / "BENCHMARKS.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
