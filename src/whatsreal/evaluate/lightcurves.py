"""Evaluation protocol of the light-curve track (seed 001 §4, DESIGN.md §6).

Inputs are per-row feature matrices (latents, raw series, ...) over the whole store. Labels
come from training stars only; every score is measured on held-out (test-split) stars.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from whatsreal.evaluate.classical import InstrumentEnsemble, lomb_scargle_periods
from whatsreal.evaluate.probes import (
    ProbeSettings,
    classification_accuracy,
    few_shot_curve,
    r2_score,
)
from whatsreal.models.contrastive import single_overrides
from whatsreal.sampling import SplitSpec, assign_split
from whatsreal.store import ObservationStore


@dataclass
class LightCurveEvalSettings:
    """Few-shot sizes and repeats (seed 001 Fig. 3), probe settings, instrument-probe size."""

    sizes: Sequence[int] = (10, 30, 100, 300, 1000, 3000)
    seeds: int = 5
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    instrument_train: int = 5000


def source_truth_per_row(store: ObservationStore, column: str) -> np.ndarray:
    """A per-source truth column broadcast to the store's rows."""
    truth = store.truth_source
    if column not in truth:
        raise KeyError(f"store {store.path} has no source truth '{column}'; it has {list(truth)}")
    order = np.argsort(truth["source_id"])
    pos = np.searchsorted(truth["source_id"], store.source_id, sorter=order)
    return np.asarray(truth[column])[order][pos]


def split_rows(store: ObservationStore, splits: SplitSpec) -> dict[str, np.ndarray]:
    """Rows of each split (by source)."""
    code = assign_split(store.source_id, splits.val, splits.test, splits.seed)
    return {name: np.flatnonzero(code == i) for i, name in enumerate(("train", "val", "test"))}


def evaluate_features(
    features: Mapping[str, np.ndarray],
    store: ObservationStore,
    splits: SplitSpec,
    settings: LightCurveEvalSettings | None = None,
    instrument_inputs: Sequence[str] | None = None,
) -> dict:
    """Few-shot R²(θ0) for every input and instrument-id accuracy for ``instrument_inputs``."""
    s = settings or LightCurveEvalSettings()
    rows = split_rows(store, splits)
    theta0 = source_truth_per_row(store, "theta0")
    inst = store.instrument
    n_inst = len(store.instruments)
    rng = np.random.default_rng(0)
    inst_train = rng.choice(
        rows["train"], size=min(s.instrument_train, rows["train"].size), replace=False
    )
    result: dict = {
        "few_shot": {},
        "instrument_accuracy": {},
        "chance_accuracy": 1 / n_inst,
        "n_test_rows": int(rows["test"].size),
        "n_train_pool": int(rows["train"].size),
    }
    for name, x in features.items():
        result["few_shot"][name] = few_shot_curve(
            x, theta0, rows["train"], rows["test"], s.sizes, s.seeds, s.probe
        )
        if instrument_inputs is None or name in instrument_inputs:
            result["instrument_accuracy"][name] = classification_accuracy(
                x, inst, inst_train, rows["test"], n_inst, s.probe
            )
    return result


def lomb_scargle_anchor(
    store: ObservationStore, splits: SplitSpec, calibrated: bool = False
) -> dict:
    """θ0 = ln(P / (T λ)) from the Lomb–Scargle peak period on held-out stars, and its R².

    ``calibrated``: the periodogram of the series with their instrument's ensemble mean and
    spread divided out (:class:`~whatsreal.evaluate.classical.InstrumentEnsemble`, fitted on
    the training rows), the classical anchor of self-calibration."""
    rows = split_rows(store, splits)
    test = rows["test"]
    flux = store.read(test)["flux"]
    if calibrated:
        train = rows["train"]
        ensemble = InstrumentEnsemble().fit(store.read(train)["flux"], store.instrument[train])
        flux = ensemble.transform(flux, store.instrument[test])
    periods = lomb_scargle_periods(flux[:, 0])
    length = store.shape[-1]
    lam = source_truth_per_row(store, "lam")[test]
    theta0_hat = np.log(periods / (length * lam))
    truth = source_truth_per_row(store, "theta0")[test]
    true_period = source_truth_per_row(store, "period")[test]
    method = "astropy LombScargle, 1 term, 2000 frequencies between 1/99 and 1/4 per sample"
    return {
        "r2_theta0": r2_score(truth, theta0_hat),
        "fraction_period_within_5pct": float(np.mean(np.abs(periods / true_period - 1) < 0.05)),
        "fraction_at_half_period": float(np.mean(np.abs(2 * periods / true_period - 1) < 0.05)),
        "n_test_rows": int(test.size),
        "method": method + (", on the instrument-ensemble-calibrated series" if calibrated else ""),
    }


def instrument_model_recovery(
    model: torch.nn.Module,
    store: ObservationStore,
    splits: SplitSpec,
    batch_size: int = 1024,
) -> dict:
    """How well a self-calibrated model's instrument model, read from each held-out series
    alone, recovers its instrument: R² of the predicted mean curve against the true offset
    O_m(t) and against the instrument's ensemble mean over the training rows, and R² of the
    predicted spread against the ensemble spread (all pooled over rows and samples)."""
    if not getattr(model, "self_calibrated", False):
        raise ValueError(
            f"{type(model).__name__} has no instrument model; train a ContrastiveDualModel "
            "with calibration_weight > 0"
        )
    rows = split_rows(store, splits)
    test, train = rows["test"], rows["train"]
    inst = store.instrument
    model = model.eval()
    mus, sigmas = [], []
    with torch.no_grad():
        for lo in range(0, test.size, batch_size):
            x = torch.as_tensor(store.read(test[lo : lo + batch_size])["flux"])
            mu, sigma = model.instrument_model(x)
            mus.append(mu.float().numpy())
            sigmas.append(sigma.float().numpy())
    mu, sigma = np.concatenate(mus), np.concatenate(sigmas)
    ensemble = InstrumentEnsemble().fit(store.read(train)["flux"], inst[train])
    out = {
        "r2_mean_vs_ensemble_mean": r2_score(ensemble.mean_[inst[test]].ravel(), mu.ravel()),
        "r2_spread_vs_ensemble_spread": r2_score(ensemble.std_[inst[test]].ravel(), sigma.ravel()),
        "n_test_rows": int(test.size),
    }
    if "offset" in store.truth_instrument:
        offset = np.asarray(store.truth_instrument["offset"], dtype=np.float64)[inst[test]]
        out["r2_mean_vs_true_offset"] = r2_score(offset.ravel(), mu[:, 0].ravel())
        out["r2_ensemble_mean_vs_true_offset"] = r2_score(
            offset.ravel(), ensemble.mean_[inst[test], 0].ravel()
        )
    return out


SINGLE_KINDS = (("single_equal_steps", "equal steps"), ("single_equal_time", "equal time"))


# The training choices besides the model's options that a single latent shares with the
# dual run it is set beside, and the value a run record without one trained at (seed 001's
# constant Adam 1e-3 and raw weights; older records lack the later keys).
RECIPE_DEFAULTS: dict[str, Any] = {"lr": 1e-3, "lr_schedule": "constant", "ema_decay": 0.0}


def run_recipe(run: Mapping[str, Any]) -> dict[str, Any]:
    """A run record's (or a training config's, as a dict) :data:`RECIPE_DEFAULTS` keys, each
    defaulted where the record predates it."""
    return {k: v if run.get(k) is None else run[k] for k, v in RECIPE_DEFAULTS.items()}


def single_tag(overrides: Mapping[str, Any], recipe: Mapping[str, Any] | None = None) -> str:
    """The name part for a single-latent baseline's model options: "" for seed 001's, else
    each option (``spectral``, ``tau0.05``) joined by underscores, then each training choice
    of ``recipe`` that is not seed 001's (``lr0.002``, ``cosine``, ``ema0.995``)."""
    parts = [k if v is True else f"{k}{v}" for k, v in sorted(overrides.items())]
    r = run_recipe(recipe or {})
    shown = {
        "lr": f"lr{r['lr']:g}",
        "lr_schedule": r["lr_schedule"],
        "ema_decay": f"ema{r['ema_decay']:g}",
    }
    parts += [shown[k] for k, v in RECIPE_DEFAULTS.items() if r[k] != v]
    return "_".join(parts)


def single_name(kind: str, seed: int = 0, tag: str = "") -> str:
    """The run name of a single-latent baseline (``kind`` of :data:`SINGLE_KINDS`) trained
    with training seed ``seed`` and the options named by ``tag`` (:func:`single_tag`): seed
    0 and no options keep the plain name."""
    name = f"{kind}_{tag}" if tag else kind
    return name if seed == 0 else f"{name}_seed{seed}"


def single_fits(
    run: Mapping[str, Any],
    *,
    seed: int,
    overrides: Mapping[str, Any],
    batch: Sequence[int] | None = None,
    recipe: Mapping[str, Any] | None = None,
    steps: int | None = None,
    seconds: float | None = None,
    tolerance: float = 0.05,
) -> bool:
    """Whether the run record ``run`` is a single-latent baseline trained with training seed
    ``seed``, the single-latent options ``overrides``, the batches ``batch`` (unchecked
    where either side lacks them) and the training choices ``recipe`` (:func:`run_recipe`;
    seed 001's where absent, on either side), for the budget asked: exactly ``steps``
    optimizer steps when ``steps`` is given, else a wall-clock budget within ``tolerance``
    of ``seconds``. The one rule for setting a single beside a dual model and for reusing
    a trained one."""
    if not str(run.get("kind", "")).startswith("single") or (run.get("seed") or 0) != seed:
        return False
    if (run.get("overrides") or {}) != dict(overrides):
        return False
    if batch and run.get("batch") and list(run["batch"]) != list(batch):
        return False
    if run_recipe(run) != run_recipe(recipe or {}):
        return False
    if steps is not None:
        return run.get("max_steps") is not None and run["max_steps"] == steps
    minutes = run.get("max_minutes")
    return bool(seconds and minutes) and abs(minutes * 60 - seconds) <= tolerance * seconds


def paired_single(
    runs: Mapping[str, dict],
    dual: str,
    kind: str,
    seed: int = 0,
    reference_seconds: float | None = None,
    tolerance: float = 0.05,
) -> str | None:
    """The single-latent run to set beside the dual run ``dual`` for ``kind`` (of
    :data:`SINGLE_KINDS`): trained with training seed ``seed``, the dual's batches and its
    architecture options (:func:`~whatsreal.models.contrastive.single_overrides`), and the
    dual's budget: exactly its optimizer steps (equal steps), or a wall-clock budget within
    ``tolerance`` of ``reference_seconds`` (default: the dual's own measured training
    seconds; equal wall-clock). The plain name (:func:`single_name`) is preferred when it
    qualifies; None when no run does."""
    d = runs[dual]
    want = single_overrides(d.get("overrides") or {})
    recipe = run_recipe(d)
    budget: dict[str, Any] = (
        {"steps": d.get("steps"), "seconds": None}
        if kind == "single_equal_steps"
        else {"steps": None, "seconds": reference_seconds or d.get("train_seconds")}
    )
    if kind == "single_equal_steps" and budget["steps"] is None:
        return None

    def qualifies(r: Mapping[str, Any]) -> bool:
        return single_fits(
            r,
            seed=seed,
            overrides=want,
            batch=d.get("batch"),
            recipe=recipe,
            tolerance=tolerance,
            **budget,
        )

    plain = single_name(kind, seed, single_tag(want, recipe))
    names = [plain] + [n for n in runs if n != plain]
    return next((n for n in names if n in runs and qualifies(runs[n])), None)


def lightcurve_separation_goals(
    runs: Mapping[str, dict],
    dual: str,
    seed: int = 0,
    fallback: bool = True,
    reference_seconds: float | None = None,
) -> dict[str, dict]:
    """Issue 10's light-curve goals for the dual run ``dual``: {goal: {value, goal, met,
    ...}}. The margins over the single latent are taken against :func:`paired_single`'s
    run of the dual's seed, batches, architecture and budget (its steps; its wall-clock, or
    ``reference_seconds``), and name it. With ``fallback``, a margin without such a run is
    taken against the plain-named single of the dual's architecture (seed ``seed``, else 0)
    where there is one; without it, the margin is left out. Each run holds
    ``instrument_accuracy``, ``r2_at_100``/``r2_at_1000``, its ``overrides``, its training
    choices (:data:`RECIPE_DEFAULTS` where absent) and, for the singles, their ``seed``,
    ``batch``, ``max_steps`` and ``max_minutes``."""
    d = runs[dual]
    tag = single_tag(single_overrides(d.get("overrides") or {}), run_recipe(d))
    acc = d["instrument_accuracy"]
    goals = {
        "star-latent instrument id <= 0.10": (acc["star"], "<= 0.10", acc["star"] <= 0.10),
        "instrument-latent instrument id >= 0.99": (
            acc["instrument"],
            ">= 0.99",
            acc["instrument"] >= 0.99,
        ),
        "star R²(θ0) at 1,000 labels >= 0.85": (
            d["r2_at_1000"],
            ">= 0.85",
            d["r2_at_1000"] >= 0.85,
        ),
    }
    against = {}
    for kind, label in SINGLE_KINDS:
        key = paired_single(runs, dual, kind, seed, reference_seconds)
        if key is None and fallback:
            key = single_name(kind, seed, tag)
            if key not in runs:
                key = single_name(kind, 0, tag)
        if key in runs:
            diff = d["r2_at_100"] - runs[key]["r2_at_100"]
            name = f"dual - single at 100 labels, {label}, >= 0.05"
            goals[name] = (diff, ">= 0.05", diff >= 0.05)
            against[name] = key
    out = {k: {"value": float(v), "goal": g, "met": bool(m)} for k, (v, g, m) in goals.items()}
    for name, key in against.items():
        out[name]["against"] = key
    return out


def seed_group_goals(runs: Mapping[str, dict], members: Mapping[str, int]) -> dict:
    """The goals over several training seeds of one config: ``members`` maps each dual run
    to its seed. Each goal's value is judged on the mean over the seeds (the margins: the
    duals' mean R² less the mean of their seed-matched singles, as
    :func:`lightcurve_separation_goals` pairs them, the equal-time singles against the first
    member's measured wall-clock, for which every seed's single trains), beside every seed's
    own value, since one seed spans as much as most levers. {"seeds", "runs", "goals":
    {goal: {value, std, per_seed, goal, met}}}."""
    present = {v: s for v, s in members.items() if v in runs}
    if not present:
        raise KeyError(f"none of the runs {sorted(members)} has been run")
    # the singles of every seed train for the first member's measured wall-clock
    reference = (
        runs[next(iter(members))].get("train_seconds") if next(iter(members)) in runs else None
    )
    per = {
        v: lightcurve_separation_goals(runs, v, s, fallback=False, reference_seconds=reference)
        for v, s in present.items()
    }
    goals: dict[str, dict] = {}
    for name, first in next(iter(per.values())).items():
        vals = [per[v][name]["value"] for v in present if name in per[v]]
        if len(vals) < len(present):
            continue  # a margin without its own seed's single for every seed is left out
        mean = float(np.mean(vals))
        op, bound = first["goal"].split()
        met = mean <= float(bound) if op == "<=" else mean >= float(bound)
        goals[name] = {
            "value": mean,
            "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
            "per_seed": [float(x) for x in vals],
            "goal": first["goal"],
            "met": bool(met),
        }
    return {"runs": list(present), "seeds": list(present.values()), "goals": goals}
