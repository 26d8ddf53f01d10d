"""The galaxy report (what `whatsreal evaluate --run DIR` writes): retrieval, the
counterfactual grid of seed 000 Fig. 2, calibration, per-survey probes and leakage, as one
self-contained HTML page. Every number shown is read from the evaluation's results dict."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from whatsreal.evaluate.galaxies import PHYSICS_PARAMS
from whatsreal.report.html import HtmlReport
from whatsreal.store import ObservationStore
from whatsreal.utils import save_figure

SECTIONS = (
    "Cross-survey retrieval",
    "Counterfactual views",
    "Calibration",
    "Probes within each survey",
    "Few-shot learning",
    "Morphology test",
    "Leakage",
    "Run details",
)


def write_galaxy_report(
    path: str | Path,
    results: Mapping[str, Any],
    store: ObservationStore,
    model: torch.nn.Module,
    examples: Any = None,
) -> Path:
    """Write the page for an :func:`whatsreal.pipelines.galaxies.evaluate_galaxy_run` results
    dict; ``examples`` (GalaxyExamples) holds the scored counterfactual views for the grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, b = results["surveys"]
    m = results["model"]
    rep = HtmlReport(f"whatsreal: galaxy run {Path(results['run']).name}")
    rep.text(
        f"Run {results['run']}: {m['class']} (preset {m['preset']}, fm_weight "
        f"{m['fm_weight']:g}, hybrid_weight {m['hybrid_weight']:g}), "
        f"{results['steps'] if results['steps'] is not None else 'unknown'} optimizer steps, "
        f"on {results['store']}. Scored on {results['n_test_pairs']} held-out galaxies seen by "
        f"both {a} and {b}; probes trained on {results['n_probe_pairs']} training galaxies.",
        note=True,
    )

    rep.heading(SECTIONS[0])
    rep.text(
        f"Each held-out galaxy's {a} observation queries all {b} observations (and the "
        "reverse) by cosine similarity; a hit is its own observation. Chance top-1 is "
        f"{results['chance_top1']:.4f}. The PSF-matched anchor blurs each {a} image to "
        f"{b}'s PSF and matches by χ² with the inverse variance: a learned space should beat it."
    )
    rows = [
        _ret_row("physics latent", results["retrieval"]),
        _ret_row("instrument latent", results["retrieval_instrument_space"]),
        _ret_row("random encoder, physics latent", results["random_encoder"]["retrieval"]),
    ]
    anchor = results["classical_psf_matched"]
    if "skipped" in anchor:
        rep.text(f"PSF-matched anchor not run: {anchor['skipped']}.")
    else:
        rows.append(_ret_row("PSF-matched χ² (classical)", anchor))
    rows.append(["chance", results["chance_top1"], results["chance_recall@10"], "", ""])
    rep.table(rows, ["space", "top-1", "recall@10", f"{a}→{b} top-1", f"{b}→{a} top-1"])
    pairs = getattr(examples, "pairs_test", None)
    if pairs is not None and len(pairs) >= 10:
        fig = retrieval_examples_figure(store, model, np.asarray(pairs)[:1000])
        rep.figure(
            fig,
            f"Retrieval examples: {a} queries (left) and their nearest {b} observations in "
            f"the physics latent, among {min(len(pairs), 1000)} held-out galaxies; the "
            "query's own galaxy is framed in green",
        )
        plt.close(fig)

    rep.heading(SECTIONS[1])
    cf = results.get("counterfactual")
    if not cf:
        rep.text(f"No counterfactuals: {results.get('counterfactual_skipped', 'not run')}.")
    else:
        rep.text(
            "Posterior samples of a held-out galaxy as the target survey would record it, "
            "generated from the other survey's observation (physics view) and the target "
            "survey's sky neighbours (instrument views, other galaxies): MSE in the model's "
            "working space, over the noise floor (the target's own per-pixel noise variance). "
            "A ratio near 1 means the posterior mean is as close as a re-observation could be."
        )
        rep.table(
            [
                [
                    f"→ {to}",
                    q["n"],
                    q["n_samples"],
                    q["mse_mean_over_floor"],
                    q["mse_samples_over_floor"],
                    q.get("mse_mean_vs_clean_over_floor", ""),
                    q.get("one_step", {}).get("mse_mean_over_floor", ""),
                ]
                for to, q in cf.items()
            ],
            [
                "target",
                "galaxies",
                "samples",
                "mean MSE / floor",
                "sample MSE / floor",
                "mean vs noise-free / floor",
                "one-call mean MSE / floor",
            ],
        )
        rep.text(
            "The one-call mean is x0 + v(x0, t = 0) averaged over noise draws: the posterior "
            "mean itself for the optimal velocity, without the sampling noise of a mean over "
            "a few samples (CounterfactualModel.posterior_mean)."
        )
        refs = {to: q for to, q in cf.items() if q.get("reference")}
        if refs:
            rep.text(
                "Information-limited reference: a UNet trained with MSE to predict the target "
                "image from the other survey's image and the target observation's true "
                "conditions (it knows more than the model, which sees only sky neighbours). "
                "A model MSE within 10% of the reference's is at the information limit."
            )
            rep.table(
                [
                    [
                        f"→ {to}",
                        q["reference"]["mse_mean_over_floor"],
                        q["reference"].get("mse_mean_vs_clean_over_floor", ""),
                        q["mse_mean_over_reference"],
                    ]
                    for to, q in refs.items()
                ],
                [
                    "target",
                    "reference MSE / floor",
                    "reference vs noise-free / floor",
                    "model MSE / reference MSE",
                ],
            )
        for to, res in (examples.views if examples is not None else {}).items():
            if len(res.source_id) == 0:
                continue
            frm = b if to == a else a
            fig = counterfactual_grid(store, model, res)
            rep.figure(
                fig,
                f"{frm} → {to}: physics view ({frm}) | instrument views ({to} neighbours) | "
                f"truth ({to}) | posterior samples | posterior mean, for {len(res.source_id)} "
                f"of the {cf[to]['n']} scored galaxies (mean MSE / floor over all of them: "
                f"{cf[to]['mse_mean_over_floor']:.2f})",
            )
            plt.close(fig)

        rep.heading(SECTIONS[2])
        rep.text(
            "Pixel z-scores (x - mean(x̂)) / std(x̂) of the real target against the posterior "
            "samples. From S samples a calibrated posterior's z std is above 1 (the "
            "'calibrated' column; 1.255 for 8 samples); the spread ratio is the z std "
            "corrected for S, the error's std over the posterior's: 1 is calibrated, above 1 "
            "over-confident. It needs 6 samples or more."
        )
        rep.table(
            [
                [
                    f"→ {to}",
                    q["z_mean"],
                    q["z_std"],
                    q.get("z_std_calibrated"),
                    q.get("spread_ratio"),
                ]
                for to, q in cf.items()
            ],
            ["target", "z mean", "z std", "calibrated z std", "spread ratio"],
        )
        rec = {to: q["recalibrated"] for to, q in cf.items() if q.get("recalibrated")}
        if rec:
            rep.text(
                "Recalibrated: each direction's samples spread about their mean by one scale, "
                "fitted on other (validation) galaxies to bring their spread ratio to 1; the "
                "posterior mean does not change. The grid above shows the rescaled samples."
            )
            rep.table(
                [
                    [f"→ {to}", r["spread_scale"], r["n_sources"], r["z_std"], r["spread_ratio"]]
                    for to, r in rec.items()
                ],
                ["target", "spread scale", "fitted on (galaxies)", "z std", "spread ratio"],
            )
        fig = calibration_figure(cf)
        rep.figure(fig, "Pixel z-score histograms against N(0, 1)")
        plt.close(fig)
        spectra = {to: q["spectra"] for to, q in cf.items() if q.get("spectra")}
        if spectra:
            rep.text(
                "Spatial structure (seed 000 A.5): per band, the power spectrum and the "
                "autocorrelation of the samples against the real target images of the same "
                "galaxies. log10 of the samples' power over the real power, averaged below and "
                "above half the Nyquist frequency: 0 is a match, > 0 excess high-frequency "
                "power (artefacts), < 0 a deficit (over-smoothing)."
            )
            rep.table(
                [
                    [f"→ {to}", band]
                    + [b[k] for k in ("log_ratio_low", "log_ratio_high", "acf_max_abs_diff")]
                    for to, sp in spectra.items()
                    for band, b in sp["bands"].items()
                ],
                ["target", "band", "log ratio, low f", "log ratio, high f", "max |ΔACF|, lag 1-8"],
            )
            for to, sp in spectra.items():
                fig = spectra_figure(sp)
                rep.figure(
                    fig,
                    f"→ {to}: real (blue) against the samples' mean (orange, dashed) ± their "
                    f"spread, {sp['n_galaxies']} galaxies × {sp['n_samples']} samples",
                )
                plt.close(fig)

    rep.heading(SECTIONS[3])
    probes = results["probe_r2"]
    rep.text(
        "R² of each truth parameter from a frozen latent (seed-000 MLP probe, one per "
        "parameter), trained and scored within one survey, so survey identity explains "
        "nothing (seed 000 Fig. 5). Physics parameters should come from the physics latent, "
        "the survey's conditions (PSF, depth, sky, extinction) from the instrument latent."
    )
    fig = probe_bar_figure(probes, (a, b))
    rep.figure(fig, "Probe R² within each survey, physics latent against instrument latent")
    plt.close(fig)
    rand = results["random_encoder"]["probe_r2"]
    names = list(probes["physics"])
    rep.table(
        [
            [n]
            + [
                probes[f"{lat}_{s}_only"].get(n, "")
                for s in (a, b)
                for lat in ("physics", "instrument")
            ]
            + [probes["physics"].get(n, ""), rand["physics"].get(n, "")]
            for n in names
        ],
        ["parameter"]
        + [f"{s} {lat}" for s in (a, b) for lat in ("physics", "instrument")]
        + ["pooled physics", "random encoder (pooled physics)"],
    )

    pairs = getattr(examples, "pairs_test", None)
    if pairs is not None and len(pairs) >= 20:
        from whatsreal.evaluate.figures import latent_map_figure, umap_2d
        from whatsreal.evaluate.galaxies import truth_table
        from whatsreal.infer import embed_rows

        rows = np.asarray(pairs[:1000]).T.ravel()  # both surveys' views of the same galaxies
        z = embed_rows(model, store, rows, batch_size=256)
        mag = truth_table(store, rows).get("mag_i")
        if mag is not None:
            maps = {f"{k} latent": umap_2d(z[k]) for k in ("physics", "instrument")}
            rep.text(
                f"UMAP of each latent for {len(rows) // 2} held-out galaxies, each seen by "
                f"{a} and {b} (seed 001 Fig. 2): coloured by survey (top, {a} = 0) and by "
                "mag_i (bottom). The physics latent should mix the surveys and order the "
                "galaxies; the instrument latent should split the surveys."
            )
            survey = (store.instrument[rows] == store.instrument_code(b)).astype(int)
            fig = latent_map_figure(maps, survey, mag, "mag_i")
            rep.figure(fig, "Latent maps")
            plt.close(fig)

    few = results.get("few_shot") or {}
    if few:
        from whatsreal.evaluate.figures import few_shot_figure

        rep.heading(SECTIONS[4])
        rep.text(
            "Probe R² against the number of labelled observations (both surveys' views of "
            "the probe-training galaxies), mean ± std over draws, scored on every held-out "
            "observation (seed 001 Fig. 3). A physics latent that holds the galaxy needs "
            "few labels; the instrument latent and the random encoder set the floor."
        )
        rand_few = (results.get("random_encoder") or {}).get("few_shot") or {}
        for param, curves in few.items():
            lines = {f"{k} latent": v for k, v in curves.items()}
            if param in rand_few:
                lines["random encoder (physics)"] = rand_few[param]["physics"]
            fig = few_shot_figure(lines, ylabel=f"R² ({param}) on held-out galaxies")
            rep.figure(fig, f"Few-shot: {param}")
            plt.close(fig)
            rep.table(
                [[name, *[c["r2_mean"] for c in rows]] for name, rows in lines.items()],
                ["input", *[f"{c['n_labels']} labels" for c in next(iter(lines.values()))]],
            )

    morph = results.get("morphology") or {}
    if morph:
        rep.heading(SECTIONS[5])
        rep.text(
            "Seed 000 Fig. 3 (right): a ResNet ellipticity regressor trained on real images "
            "of the target survey, applied without retraining to real target images of "
            "held-out galaxies, to counterfactual target images generated from the other "
            "survey's images of the same galaxies (every sample scored), and to the other "
            "survey's images as they are. The seed reports R² 0.82 (real) and 0.81 "
            "(generated)."
        )
        rows = []
        for to, m in morph.items():
            for key, label in (
                ("real", "real target images"),
                ("counterfactual", "counterfactual target images"),
                ("other_as_is", "the other survey's images, as they are"),
            ):
                rows.append([to, label, *[m[key][p] for p in (*m["params"], "mean")]])
        first = next(iter(morph.values()))
        rep.table(rows, ["target", "input", *[f"R² {p}" for p in first["params"]], "mean R²"])

    rep.heading(SECTIONS[6])
    rep.text(
        "Instrument parameters predicted from the physics latent (want ≈ 0), pooled over "
        "both surveys and within each; physics parameters from the instrument latent."
    )
    keys = [
        ("instrument → physics latent, pooled", "leakage_instrument_into_physics"),
        *[
            (f"instrument → physics latent, {s} only", f"leakage_instrument_into_physics_{s}_only")
            for s in (a, b)
        ],
        ("physics → instrument latent, pooled", "leakage_physics_into_instrument"),
    ]
    rep.table(
        [[label, k, v] for label, key in keys for k, v in results[key].items()],
        ["leakage", "parameter", "R²"],
    )

    rep.heading(SECTIONS[7])
    rep.table([[k, v] for k, v in results["timings"].items()], ["stage", "seconds"])
    rep.parts.append(f"<pre>{yaml.safe_dump(results['settings'], sort_keys=False)}</pre>")
    return rep.write(path)


def _ret_row(name: str, r: Mapping[str, float]) -> list:
    return [name, r["top1"], r["recall@10"], r["a_to_b_recall@1"], r["b_to_a_recall@1"]]


def _model_space(model: torch.nn.Module, a: np.ndarray) -> np.ndarray:
    """Flux-unit arrays through the model's own stretch (what the figures show)."""
    return model.normalize(torch.from_numpy(np.ascontiguousarray(a, np.float32))).numpy()


def _rgb(x: np.ndarray, top: np.ndarray) -> np.ndarray:
    """(C, H, W) in model space -> (H, W, 3) in [0, 1]: i, r, g as RGB (or one band as grey),
    each band scaled by ``top`` (that row's truth percentile) so a row shares one scale."""
    c = x.shape[0]
    idx = [min(2, c - 1), min(1, c - 1), 0] if c >= 3 else [0, 0, 0]
    img = np.stack([x[i] / top[i] for i in idx], axis=-1)
    return np.clip(img, 0.0, 1.0)


def counterfactual_grid(
    store: ObservationStore,
    model: torch.nn.Module,
    res: Any,
    n_instrument: int = 3,
    n_samples: int = 3,
):
    """Seed 000 Fig. 2: one row per galaxy, physics view | instrument views | truth |
    samples | posterior mean, all through the model's stretch on one scale per row."""
    import matplotlib.pyplot as plt

    n = len(res.source_id)
    ni = min(n_instrument, res.instrument_rows.shape[1])
    ns = min(n_samples, res.samples.shape[1])
    titles = (
        ["physics view"]
        + [f"instrument view {j + 1}" for j in range(ni)]
        + ["truth"]
        + [f"sample {j + 1}" for j in range(ns)]
        + ["posterior mean"]
    )
    fig, axes = plt.subplots(n, len(titles), figsize=(1.3 * len(titles), 1.4 * n), squeeze=False)

    norm = functools.partial(_model_space, model)

    names = store.instruments
    for i in range(n):
        rows = [res.physics_rows[i, 0], *res.instrument_rows[i, :ni], res.target_row[i]]
        have = [r for r in rows if r >= 0]
        read = dict(zip(have, norm(store.read(np.array(have))["flux"]), strict=True))
        truth = read[res.target_row[i]]
        top = np.maximum(np.percentile(truth.reshape(truth.shape[0], -1), 99.5, axis=1), 1e-6)
        panels = [read.get(r) for r in rows]
        panels += [*norm(res.samples[i, :ns]), norm(res.mean[i : i + 1])[0]]
        for j, (ax, img) in enumerate(zip(axes[i], panels, strict=True)):
            ax.set_xticks([]), ax.set_yticks([])
            if img is not None:
                ax.imshow(_rgb(img, top), origin="lower", interpolation="nearest")
            if i == 0:
                ax.set_title(titles[j], fontsize=7)
        r0 = res.physics_rows[i, 0]
        axes[i, 0].set_ylabel(
            f"{res.source_id[i]}\n{names[store.instrument[r0]]} → {res.attrs.get('to', '')}",
            fontsize=7,
        )
    fig.tight_layout(pad=0.3)
    return fig


def retrieval_examples_figure(
    store: ObservationStore,
    model: torch.nn.Module,
    pairs: np.ndarray,
    n_queries: int = 5,
    k: int = 6,
):
    """Cross-survey search as a user sees it: each row is a first-survey observation of a
    held-out galaxy, then the ``k`` second-survey observations nearest in the physics latent
    (cosine), ranked; the query's own galaxy is framed in green. Queries are evenly spaced
    through ``pairs`` (N, 2) store rows, so they are not chosen for looking good."""
    import matplotlib.pyplot as plt

    from whatsreal.infer import embed_rows

    pairs = np.asarray(pairs, dtype=np.int64)
    za = embed_rows(model, store, pairs[:, 0], batch_size=256)
    zb = embed_rows(model, store, pairs[:, 1], batch_size=256)
    key = "physics" if "physics" in za else "latent"
    qa = za[key] / np.linalg.norm(za[key], axis=1, keepdims=True).clip(1e-12)
    qb = zb[key] / np.linalg.norm(zb[key], axis=1, keepdims=True).clip(1e-12)
    k = min(k, len(pairs))
    queries = np.linspace(0, len(pairs) - 1, min(n_queries, len(pairs))).astype(int)
    fig, axes = plt.subplots(
        len(queries), k + 1, figsize=(1.3 * (k + 1), 1.4 * len(queries)), squeeze=False
    )

    norm = functools.partial(_model_space, model)

    names = store.instruments
    for i, q in enumerate(queries):
        sim = qb @ qa[q]
        order = np.argsort(-sim)[:k]
        rows = [pairs[q, 0], *pairs[order, 1]]
        imgs = norm(store.read(np.asarray(rows))["flux"])
        for j, (ax, img) in enumerate(zip(axes[i], imgs, strict=True)):
            top = np.maximum(np.percentile(img.reshape(img.shape[0], -1), 99.5, axis=1), 1e-6)
            ax.imshow(_rgb(img, top), origin="lower", interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"{store.source_id[rows[0]]}\n{names[store.instrument[rows[0]]]}")
                ax.yaxis.label.set_fontsize(7)
                continue
            hit = order[j - 1] == q
            ax.set_title(f"#{j}  cos {sim[order[j - 1]]:.2f}", fontsize=6)
            for spine in ax.spines.values():
                spine.set_edgecolor("tab:green" if hit else "0.7")
                spine.set_linewidth(3 if hit else 0.5)
    axes[0, 0].set_title("query", fontsize=7)
    fig.tight_layout(pad=0.3)
    return fig


def calibration_figure(cf: Mapping[str, Mapping[str, Any]]):
    """Pixel z-score histograms per target survey against N(0, 1)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    zscore_axes(ax, [(f"→ {to}", q) for to, q in cf.items()])
    ax.set(ylabel="density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def zscore_axes(ax: Any, curves: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Draw each (label, counterfactual metrics) pixel z-score histogram on ``ax`` with the
    N(0, 1) it should follow if the posterior is calibrated."""
    for label, q in curves:
        e = np.asarray(q["z_edges"])
        ax.step(0.5 * (e[1:] + e[:-1]), q["z_hist"], where="mid", label=label)
    x = np.linspace(-5, 5, 200)
    ax.plot(x, np.exp(-(x**2) / 2) / np.sqrt(2 * np.pi), "k--", label="N(0,1)")
    ax.set(xlabel="pixel z-score")


def spectra_figure(sp: Mapping[str, Any]):
    """Seed 000 Fig. 7: power spectrum (top) and autocorrelation (bottom) per band, real
    against the samples' mean with its 1σ spread over samples."""
    import matplotlib.pyplot as plt

    bands = list(sp["bands"])
    fig, axes = plt.subplots(2, len(bands), figsize=(3.2 * len(bands), 5.6), squeeze=False)
    f, lag = np.asarray(sp["frequency"]), np.asarray(sp["lag"])
    for j, band in enumerate(bands):
        b = sp["bands"][band]
        for row, (x, key, xlabel) in enumerate(
            ((f, "psd", "frequency (cycles / pixel)"), (lag, "acf", "lag (pixels)"))
        ):
            ax = axes[row, j]
            sel = slice(1, None) if key == "psd" else slice(None)
            real = np.asarray(b[f"{key}_real"])[sel]
            mean = np.asarray(b[f"{key}_samples"])[sel]
            std = np.asarray(b[f"{key}_samples_std"])[sel]
            ax.plot(x[sel], real, color="tab:blue", label="real")
            ax.plot(x[sel], mean, "--", color="tab:orange", label="samples")
            ax.fill_between(x[sel], mean - std, mean + std, color="tab:orange", alpha=0.25)
            if key == "psd":
                ax.set_yscale("log")
                ax.set_title(band)
            ax.set_xlabel(xlabel)
    axes[0, 0].legend(fontsize=7)
    axes[0, 0].set_ylabel("power")
    axes[1, 0].set_ylabel("autocorrelation")
    fig.tight_layout()
    return fig


def probe_bar_figure(probes: Mapping[str, Mapping[str, float]], surveys: Sequence[str]):
    """One panel per survey: R² of each parameter from the physics and instrument latents."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(surveys), figsize=(6 * len(surveys), 3.4), squeeze=False)
    for ax, s in zip(axes[0], surveys, strict=True):
        phys, inst = probes[f"physics_{s}_only"], probes[f"instrument_{s}_only"]
        names = list(phys)
        x = np.arange(len(names))
        ax.bar(x - 0.2, [phys[n] for n in names], 0.4, label="physics latent", color="#778")
        ax.bar(x + 0.2, [inst.get(n, np.nan) for n in names], 0.4, label="instrument latent")
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
        ax.axhline(0, color="k", lw=0.6)
        n_phys = sum(n in PHYSICS_PARAMS for n in names)
        if 0 < n_phys < len(names):  # physics parameters left, the survey's conditions right
            ax.axvline(n_phys - 0.5, color="k", ls=":", lw=0.8)
        ax.set(ylim=(-0.2, 1.0), ylabel="probe R² (held out)", title=f"within {s}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


__all__ = ["calibration_figure", "counterfactual_grid", "probe_bar_figure", "write_galaxy_report"]


def benchmark_figure(results: Mapping[str, Any], path: str | Path) -> Path:
    """The galaxy benchmark's chart: cross-survey top-1 against training minutes for every
    variant (with the PSF-matched and random-encoder anchors), and the pixel z-score
    histograms of every variant's counterfactuals. Saved as PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ax = axes[0]
    for name, r in results["variants"].items():
        c = r.get("time_to_quality") or []
        if c:
            ax.plot([p["minutes"] for p in c], [p["top1"] for p in c], "o-", label=name)
    ax.axhline(results["classical_psf_matched"]["top1"], color="k", ls="--", label="PSF-matched χ²")
    ax.axhline(
        results["random_encoder"]["retrieval"]["top1"], color="grey", ls=":", label="random encoder"
    )
    ax.set(
        xlabel="training minutes (2 CPU cores)",
        ylabel="cross-survey top-1",
        title="retrieval against training time",
    )
    ax.legend(fontsize=8)
    curves = [
        (f"{name} → {to}", q)
        for name, r in results["variants"].items()
        for to, q in (r.get("counterfactual") or {}).items()
    ]
    zscore_axes(axes[1], curves)
    axes[1].set(title="calibration")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
