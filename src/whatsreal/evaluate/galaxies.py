"""Evaluation on multi-survey galaxy stores (DESIGN.md §6): cross-survey retrieval, probe R²
and leakage, counterfactual MSE against the noise floor, pixel z-scores, and the classical
PSF-matched pixel-matching anchor."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from whatsreal.errors import ConfigError
from whatsreal.evaluate.counterfactual import (
    fit_spread_scale,
    model_space,
    posterior_metrics,
    prediction_errors,
)
from whatsreal.evaluate.probes import ProbeSettings, few_shot_curve, fit_probes, r2_score
from whatsreal.evaluate.spectra import spectral_comparison
from whatsreal.infer.counterfactual import (
    CounterfactualResult,
    counterfactual_views,
    one_step_means,
    rescale_spread,
)
from whatsreal.infer.embed import embed_rows
from whatsreal.models.counterfactual import CounterfactualModel
from whatsreal.sampling import SplitSpec, assign_split
from whatsreal.store import ObservationStore

PHYSICS_PARAMS = (
    "mag_i",
    "g_r",
    "r_i",
    "i_z",
    "r_half",
    "sersic_n",
    "bulge_fraction",
    "e1",
    "e2",
    "redshift",
    "n_neighbours",  # sky neighbours inside the stamp (stores simulated with neighbours)
)
INSTRUMENT_PARAMS = ("psf_fwhm", "depth", "sky_sigma", "ebv", "psf_e1")
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def paired_rows(store: ObservationStore, sources: np.ndarray, a: str, b: str) -> np.ndarray:
    """(N, 2) rows of each source's first observation by instruments a and b (both needed)."""
    ca, cb = store.instrument_code(a), store.instrument_code(b)
    sid, inst = store.source_id, store.instrument
    out = []
    first_a = {int(s): r for r, s in reversed(list(enumerate(sid))) if inst[r] == ca}
    first_b = {int(s): r for r, s in reversed(list(enumerate(sid))) if inst[r] == cb}
    for s in sources:
        s = int(s)
        if s in first_a and s in first_b:
            out.append((first_a[s], first_b[s]))
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def split_sources(store: ObservationStore, splits: SplitSpec) -> dict[str, np.ndarray]:
    """Source ids of each split, by the same hash the sampler uses."""
    src = np.unique(store.source_id)
    codes = assign_split(src, splits.val, splits.test, splits.seed)
    return {name: src[codes == i] for i, name in enumerate(("train", "val", "test"))}


def retrieval(za: np.ndarray, zb: np.ndarray, ks: Sequence[int] = (1, 10)) -> dict[str, float]:
    """Query each row of za among all of zb by cosine similarity; row i's match is zb[i].
    Reports recall@k for a→b and b→a and their mean."""
    za = za / np.linalg.norm(za, axis=1, keepdims=True).clip(1e-12)
    zb = zb / np.linalg.norm(zb, axis=1, keepdims=True).clip(1e-12)
    sim = za @ zb.T
    return _recall_from_scores(sim, ks)


def _recall_from_scores(sim: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """sim[i, j] higher = more alike; the right answer for query i is j = i (both ways)."""
    out: dict[str, float] = {}
    for name, s in (("a_to_b", sim), ("b_to_a", sim.T)):
        diag = np.diag(s)
        rank = (s > diag[:, None]).sum(axis=1)  # 0 = best
        for k in ks:
            out[f"{name}_recall@{k}"] = float((rank < k).mean())
    for k in ks:
        out[f"recall@{k}"] = 0.5 * (out[f"a_to_b_recall@{k}"] + out[f"b_to_a_recall@{k}"])
    out["top1"] = out["recall@1"]
    return out


def psf_matched_retrieval(
    store: ObservationStore,
    pairs: np.ndarray,
    pixel_scale: float,
    ks: Sequence[int] = (1, 10),
    psf_column: str = "psf_fwhm",
) -> dict[str, float]:
    """Classical anchor: blur each sharper image (column 0 of ``pairs``) to the broader PSF
    (the median of column 1's per-band FWHM), then nearest neighbour by χ².

    χ² uses per-image, per-band noise variances (median of 1/ivar; the blurred image's
    variance scaled by the kernel's sum of squares), which keeps the search a matrix product.
    Both images are already on the store's common grid, so no resampling is needed.
    """
    a = store.read(pairs[:, 0], ("flux", "ivar"))
    b = store.read(pairs[:, 1], ("flux", "ivar"))
    fa, fb = a["flux"].astype(np.float64), b["flux"].astype(np.float64)
    n, c = fa.shape[:2]
    truth = store.truth_obs
    fwhm_a = np.asarray(truth[psf_column])[pairs[:, 0]].reshape(n, -1)
    fwhm_b = np.asarray(truth[psf_column])[pairs[:, 1]].reshape(n, -1)
    if fwhm_a.shape[1] == 1:
        fwhm_a, fwhm_b = np.repeat(fwhm_a, c, 1), np.repeat(fwhm_b, c, 1)
    target = np.median(fwhm_b, axis=0)
    va = 1.0 / np.median(np.where(a["ivar"] > 0, a["ivar"], np.nan).reshape(n, c, -1), axis=2)
    vb = 1.0 / np.median(np.where(b["ivar"] > 0, b["ivar"], np.nan).reshape(n, c, -1), axis=2)
    blurred = np.empty_like(fa)
    for i in range(n):
        for ch in range(c):
            extra = max(target[ch] ** 2 - fwhm_a[i, ch] ** 2, 0.0)
            sigma = np.sqrt(extra) * FWHM_TO_SIGMA / pixel_scale
            blurred[i, ch] = gaussian_filter(fa[i, ch], sigma) if sigma > 0.05 else fa[i, ch]
            if sigma > 0.05:  # white noise through a Gaussian kernel: variance x sum(k^2)
                va[i, ch] *= 1.0 / (4 * np.pi * sigma**2)
    chi2 = np.zeros((n, n))
    for ch in range(c):
        x, y = blurred[:, ch].reshape(n, -1), fb[:, ch].reshape(n, -1)
        d2 = (x**2).sum(1)[:, None] + (y**2).sum(1)[None] - 2 * x @ y.T
        chi2 += d2 / (va[:, ch][:, None] + vb[:, ch][None])
    return _recall_from_scores(-chi2, ks)


def psf_matched_anchor(store: ObservationStore, pairs: np.ndarray) -> dict:
    """:func:`psf_matched_retrieval` on the store's common grid, or why it was not run (it
    needs the ``psf_fwhm`` and ``grid_scale`` truth the galaxy simulator writes)."""
    if "psf_fwhm" not in store.truth_obs or "grid_scale" not in store.truth_instrument:
        return {"skipped": "the store has no psf_fwhm / grid_scale truth"}
    grid_scale = float(np.asarray(store.truth_instrument["grid_scale"]).mean())
    return psf_matched_retrieval(store, pairs, grid_scale)


def truth_table(store: ObservationStore, rows: np.ndarray, band: int = 2) -> dict[str, np.ndarray]:
    """Physics (per source) and instrument (per observation) truth of rows; per-band
    quantities are taken in ``band`` (i for griz)."""
    out: dict[str, np.ndarray] = {}
    ts = store.truth_source
    if ts:
        lookup = {int(s): i for i, s in enumerate(ts["source_id"])}
        idx = np.array([lookup[int(s)] for s in store.source_id[rows]])
        for name in PHYSICS_PARAMS:
            if name in ts:
                v = np.asarray(ts[name], dtype=np.float64)[idx]
                # log size; point sources (r_half = 0) sit at the 0.01" floor
                out[name] = np.log10(np.maximum(v, 0.01)) if name == "r_half" else v
    for name in INSTRUMENT_PARAMS:
        if name in store.truth_obs:
            v = np.asarray(store.truth_obs[name], dtype=np.float64)[rows]
            out[name] = v[:, band] if v.ndim == 2 else v
    return out


def probe_r2(
    z_train: np.ndarray,
    y_train: dict[str, np.ndarray],
    z_test: np.ndarray,
    y_test: dict[str, np.ndarray],
    settings: ProbeSettings | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Test R² of the seed-000 MLP probe for every parameter (one probe per parameter)."""
    names = list(y_train)
    if not names:
        return {}
    ens = fit_probes(
        [z_train] * len(names), [y_train[n] for n in names], settings=settings, seed=seed
    )
    pred = ens.predict(z_test)
    return {n: r2_score(y_test[n], pred[i]) for i, n in enumerate(names)}


def counterfactual_quality(
    model: CounterfactualModel,
    store: ObservationStore,
    sources: np.ndarray,
    to: str,
    n_samples: int = 8,
    solver: str = "heun",
    nfe: int = 20,
    seed: int = 0,
) -> dict:
    """Posterior samples of ``to``'s view of each source vs its real (and noise-free) one:
    :func:`whatsreal.evaluate.counterfactual.posterior_metrics` on the sources ``to`` saw."""
    return counterfactual_with_views(model, store, sources, to, n_samples, solver, nfe, seed)[0]


def _score_samples(
    model: CounterfactualModel, store: ObservationStore, res: CounterfactualResult
) -> tuple[dict, dict[str, np.ndarray]]:
    """:func:`posterior_metrics` of ``res``'s samples against the real (and noise-free)
    target observations of the sources that have one, and those targets."""
    have = res.target_row >= 0
    arrays = [a for a in ("flux", "clean", "ivar") if a in store.arrays]
    tgt = store.read(res.target_row[have], arrays)
    metrics = posterior_metrics(
        model, res.samples[have], tgt["flux"], tgt.get("clean"), tgt.get("ivar")
    )
    return metrics, tgt


def counterfactual_with_views(
    model: CounterfactualModel,
    store: ObservationStore,
    sources: np.ndarray,
    to: str,
    n_samples: int = 8,
    solver: str = "heun",
    nfe: int = 20,
    seed: int = 0,
    progress: bool = False,
) -> tuple[dict, CounterfactualResult]:
    """:func:`counterfactual_quality` and the views it scored (for a report's grid), so the
    figure shows exactly the samples the numbers come from; with the samples' power spectra
    and autocorrelation against the real images' (``spectra``, seed 000 A.5)."""
    res = counterfactual_views(
        model,
        store,
        to,
        n_samples=n_samples,
        solver=solver,
        nfe=nfe,
        seed=seed,
        sources=sources,
        progress=progress,
    )
    have = res.target_row >= 0
    metrics, tgt = _score_samples(model, store, res)
    if have.any():  # the same posterior's mean in one call per draw, free of sampling noise
        one = one_step_means(model, store, res, n_draws=n_samples, seed=seed)[have]
        metrics["one_step"] = prediction_errors(
            model, model_space(model, one), tgt["flux"], tgt.get("clean"), tgt.get("ivar")
        )
    if have.any():  # seed 000 A.5: the samples' spatial structure against the real images,
        # in the model's stretched space (in flux, a few bright pixels would weigh all)
        s = res.samples[have]
        flat = model_space(model, s.reshape(-1, *s.shape[2:])).reshape(s.shape)
        metrics["spectra"] = spectral_comparison(
            flat, model_space(model, tgt["flux"]), bands=list(store.bands[to])
        )
    return metrics, res


def recalibrated_quality(
    model: CounterfactualModel,
    store: ObservationStore,
    result: CounterfactualResult,
    calibration_sources: np.ndarray,
    to: str,
    n_samples: int = 8,
    nfe: int = 20,
    seed: int = 0,
) -> dict:
    """Fit the samples' spread scale on ``calibration_sources`` (held-out galaxies that
    ``to`` saw, none of ``result``'s) and score ``result`` rescaled by it
    (:func:`~whatsreal.infer.counterfactual.rescale_spread`): the scale, the galaxies it
    came from, and the rescaled samples' z-scores and spread ratio. The posterior mean, and
    so its MSE, does not change."""
    overlap = np.intersect1d(calibration_sources, result.source_id)
    if overlap.size:
        raise ValueError(
            f"{overlap.size} calibration sources are also scored (e.g. {int(overlap[0])}); "
            "fit the spread on other sources (the validation split)"
        )
    cal = counterfactual_views(
        model, store, to, n_samples=n_samples, nfe=nfe, seed=seed + 1, sources=calibration_sources
    )
    have = cal.target_row >= 0
    if not have.any():
        n = len(calibration_sources)
        raise ValueError(f"none of the {n} calibration sources has a {to} view")
    scale = fit_spread_scale(model, cal.samples[have], store.read(cal.target_row[have])["flux"])
    m = _score_samples(model, store, rescale_spread(model, result, scale))[0]
    out = {"spread_scale": scale, "n_sources": int(have.sum()), "n_samples": int(n_samples)}
    keys = ("mse_samples_over_floor", "z_mean", "z_std", "z_std_calibrated", "spread_ratio")
    return {**out, **{k: m[k] for k in (*keys, "z_hist", "z_edges")}}


def embed_pairs(model: torch.nn.Module, store: ObservationStore, pairs: np.ndarray) -> dict:
    """Latents of both columns of ``pairs``: {"physics": (a, b), "instrument": (a, b)}."""
    ea = embed_rows(model, store, pairs[:, 0], batch_size=256)
    eb = embed_rows(model, store, pairs[:, 1], batch_size=256)
    return {k: (ea[k], eb[k]) for k in ea}


def evaluation_pairs(
    store: ObservationStore,
    splits: SplitSpec,
    a: str = "hsc",
    b: str = "legacy",
    n_test: int = 1000,
    n_probe: int = 2000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(probe-training pairs, test pairs) of rows seen by both ``a`` and ``b``: the first
    ``n_test`` test sources, and ``n_probe`` training sources drawn with ``seed``."""
    parts = split_sources(store, splits)
    pairs_test = paired_rows(store, parts["test"], a, b)[:n_test]
    rng = np.random.default_rng(seed)
    train_src = rng.choice(parts["train"], size=min(n_probe, parts["train"].size), replace=False)
    pairs_train = paired_rows(store, np.sort(train_src), a, b)
    return pairs_train, pairs_test


def evaluate_latents(
    model: torch.nn.Module,
    store: ObservationStore,
    pairs_train: np.ndarray,
    pairs_test: np.ndarray,
    with_probes: bool = True,
    surveys: tuple[str, str] = ("hsc", "legacy"),
    settings: ProbeSettings | None = None,
    log: Callable[[str], None] | None = None,
    probe_latents: Sequence[str] = ("physics", "instrument"),
) -> dict:
    """Cross-survey retrieval in both latent spaces and probe R² of every truth parameter
    from each latent of ``probe_latents``, pooled and within each survey (``surveys`` names
    the pair columns), with the leakage either way (each direction whose latent was probed).
    ``log`` is told before each probe (they take the time)."""
    log = log or (lambda _text: None)
    z = embed_pairs(model, store, pairs_test)
    out: dict = {"retrieval": retrieval(*z["physics"])}
    out["retrieval_instrument_space"] = retrieval(*z["instrument"])
    if not with_probes:
        return out
    zt = embed_pairs(model, store, pairs_train)
    y_tr = truth_table(store, pairs_train.T.ravel())
    y_te = truth_table(store, pairs_test.T.ravel())
    n_tr, n_te = len(pairs_train), len(pairs_test)
    probes = {}
    for latent in [k for k in z if k in probe_latents]:
        log(f"probes from the {latent} latent, pooled over {' and '.join(surveys)}")
        probes[latent] = probe_r2(
            np.concatenate(zt[latent]), y_tr, np.concatenate(z[latent]), y_te, settings
        )
        # Within one survey: leakage that is not just "which survey".
        for col, name in enumerate(surveys):
            log(f"probes from the {latent} latent, within {name}")
            tr, te = slice(col * n_tr, (col + 1) * n_tr), slice(col * n_te, (col + 1) * n_te)
            probes[f"{latent}_{name}_only"] = probe_r2(
                zt[latent][col],
                {k: v[tr] for k, v in y_tr.items()},
                z[latent][col],
                {k: v[te] for k, v in y_te.items()},
                settings,
            )
    out["probe_r2"] = probes
    if "physics" in probes:
        phys = probes["physics"]
        out["leakage_instrument_into_physics"] = {
            k: phys[k] for k in INSTRUMENT_PARAMS if k in phys
        }
        for name in surveys:
            out[f"leakage_instrument_into_physics_{name}_only"] = {
                k: probes[f"physics_{name}_only"][k] for k in INSTRUMENT_PARAMS if k in phys
            }
    if "instrument" in probes:
        inst = probes["instrument"]
        out["leakage_physics_into_instrument"] = {k: inst[k] for k in PHYSICS_PARAMS if k in inst}
    return out


#: Issue 5's goals for a galaxy benchmark variant that trains the decoder: (key, goal text,
#: test). ``worst_posterior_mean_mse_over_floor`` is the worse of the two directions.
BENCHMARK_GOALS = (
    ("top1", ">= 0.8", lambda v: v >= 0.8),
    ("recall@10", ">= 0.95", lambda v: v >= 0.95),
    ("max_leakage_instrument_into_physics", "<= 0.1", lambda v: v <= 0.1),
    ("worst_posterior_mean_mse_over_floor", "<= 1.3", lambda v: bool(v <= 1.3)),
)


def benchmark_goals(variants: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
    """Issue 5's goals (:data:`BENCHMARK_GOALS`) for every variant of a galaxy benchmark that
    trains the flow-matching decoder: {variant: {goal key: {value, goal, met}}}."""
    goals = {}
    for name, r in variants.items():
        if (r.get("model_overrides") or {}).get("fm_weight", 1.0) <= 0:
            continue  # the goals are for the counterfactual and hybrid models
        cf = r.get("counterfactual") or {}
        values = {
            "top1": r["retrieval"]["top1"],
            "recall@10": r["retrieval"]["recall@10"],
            "max_leakage_instrument_into_physics": max(
                r["leakage_instrument_into_physics"].values()
            ),
            "worst_posterior_mean_mse_over_floor": max(
                (q["mse_mean_over_floor"] for q in cf.values()), default=float("nan")
            ),
        }
        goals[name] = {
            key: {"value": values[key], "goal": text, "met": bool(test(values[key]))}
            for key, text, test in BENCHMARK_GOALS
        }
    return goals


#: Galaxy properties of the few-shot curves (seed 001 Fig. 3, on seed 000's modality).
FEW_SHOT_PARAMS = ("redshift", "r_half", "g_r")
FEW_SHOT_SIZES = (10, 30, 100, 300, 1000, 3000)


def few_shot_latents(
    model: torch.nn.Module,
    store: ObservationStore,
    pairs_train: np.ndarray,
    pairs_test: np.ndarray,
    params: Sequence[str] = FEW_SHOT_PARAMS,
    sizes: Sequence[int] = FEW_SHOT_SIZES,
    seeds: int = 3,
    settings: ProbeSettings | None = None,
    latents: Sequence[str] = ("physics", "instrument"),
) -> dict[str, dict[str, list[dict]]]:
    """Probe R² of each property against the number of labelled observations, from each
    latent: {param: {latent: [{n_labels, r2_mean, r2_std, r2_all}]}}. Labels are drawn from
    the probe-training galaxies' observations in both surveys (up to 2 x their number);
    R² is scored on every held-out observation. Sizes above the pool, and params without
    truth in the store, are left out."""
    unknown = sorted(set(params) - set(PHYSICS_PARAMS))
    if unknown:
        raise ConfigError(
            f"few-shot properties {unknown} are not galaxy properties; choose from "
            f"{list(PHYSICS_PARAMS)}"
        )
    zt, z = embed_pairs(model, store, pairs_train), embed_pairs(model, store, pairs_test)
    rows = np.concatenate([pairs_train.T.ravel(), pairs_test.T.ravel()])
    y = truth_table(store, rows)
    n_pool = 2 * len(pairs_train)
    pool, test = np.arange(n_pool), np.arange(n_pool, rows.size)
    out: dict[str, dict[str, list[dict]]] = {}
    for p in params:
        if p not in y:  # no truth for it in this store (real data): nothing to score
            continue
        out[p] = {}
        for lat in latents:
            x = np.concatenate([*zt[lat], *z[lat]])
            out[p][lat] = few_shot_curve(x, y[p], pool, test, sizes, seeds, settings)
    return out
