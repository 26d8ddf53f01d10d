"""The light-curve track end to end: simulate, train dual and single-latent contrastive
models, evaluate against baselines and the Lomb–Scargle anchor, write an HTML report.

This is what ``whatsreal demo`` runs and what ``benchmarks/lightcurves.py`` measures. The
stages are the package's ordinary API; this module only sequences them.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from whatsreal.config import build_dataclass, validate_dataclass
from whatsreal.errors import ConfigError
from whatsreal.evaluate.lightcurves import (
    LightCurveEvalSettings,
    evaluate_features,
    instrument_model_recovery,
    lomb_scargle_anchor,
    source_truth_per_row,
    split_rows,
)
from whatsreal.evaluate.probes import ProbeSettings
from whatsreal.infer import embed_rows
from whatsreal.models.contrastive import build_contrastive_model, single_overrides
from whatsreal.pipelines.stages import Stages, start_track
from whatsreal.simulate.lightcurves import lightcurve_sim_config, write_lightcurve_store
from whatsreal.store import ObservationStore
from whatsreal.train.contrastive import ContrastiveTrainConfig, fit_contrastive, trained_steps
from whatsreal.train.guards import read_metrics
from whatsreal.utils import atomic_write_json


@dataclass
class LightCurveTrackConfig:
    """One run of the track; saved as ``config.yaml`` next to its outputs. Values are
    converted to their field's types and checked against ``limits``."""

    preset: str = "demo"
    sim_preset: str = "demo"
    sim_seed: int = 0
    sim_overrides: dict[str, Any] = field(default_factory=dict)
    train: ContrastiveTrainConfig = field(default_factory=ContrastiveTrainConfig)
    # model options for the dual model (issue 10's levers); the baseline shares only its
    # architecture options (single_overrides). Kept: the agreement term (at equal steps:
    # star-latent instrument id 0.331 -> 0.210, R²(θ0) at 100 labels 0.573 -> 0.615),
    # self-calibration (over three seeds on 32 x 8 batches: star-latent instrument id
    # 0.160 -> 0.070, R²(θ0) at 1,000 labels 0.756 -> 0.809) and an MLP instrument encoder
    # (the same figures at equal steps in about 55% of the time, so 1,850 steps fit the
    # benchmark's 10 minutes: R²(θ0) at 1,000 labels 0.809 -> 0.838, instrument latent
    # 0.989 -> 0.992), with the self-calibration term at 3x the weight (over three seeds
    # at 1,850 steps: R²(θ0) at 1,000 labels 0.838 -> 0.848, higher in each seed). Dropping
    # the agreement term beside the other two was neutral at 1,850 steps over three seeds
    # and cost 0.05 of R²(θ0) at 100 labels in the demo's 400 steps, so it stays
    # (docs/separation.md). {} is seed 001's loss. The presets' batches
    # of 32 stars x 8 views (KEPT_BATCH) are the other kept lever.
    dual_overrides: dict[str, Any] = field(
        default_factory=lambda: {
            "agreement_weight": 1.0,
            "calibration_weight": 3.0,
            "inst_encoder": "mlp",
        }
    )
    # the single-latent baseline trains for exactly the dual model's optimizer steps, so a
    # loaded machine slows the run without changing the comparison
    equal_steps: bool = True
    sizes: tuple[int, ...] = (10, 30, 100, 300, 1000, 3000)
    seeds: int = 5
    probe_steps: int = 300
    umap: bool = True
    umap_points: int = 3000

    limits: ClassVar[dict[str, str]] = {
        "sim_seed": ">= 0",
        "sizes": ">= 1",  # each labelled-set size
        "seeds": ">= 1",
        "probe_steps": ">= 1",
        "umap_points": ">= 1",
    }

    def __post_init__(self) -> None:
        validate_dataclass(self)


# Issue 10's kept batch composition for both models: 32 stars x 8 views (256 curves, as
# 64 x 4). Over three training seeds each, at equal steps, the star latent's instrument id
# is a little lower (mean 0.160 against 0.207) and R²(θ0) at 100 labels a little higher
# (0.607 against 0.573), both within the seeds' spread; the single latent does not gain
# from it (docs/separation.md).
KEPT_BATCH: dict[str, int] = {"sources_per_batch": 32, "views_per_source": 8}

# Named demo presets. "demo" fits the demo's budget on 2 cores: a fixed 400 steps (240
# were what 2.5 min gave with a Conformer instrument encoder; the kept MLP one makes a step
# about 0.6 as costly), so a loaded machine slows the demo but does not change its figures;
# "paper" is the full seed-001 data set with the cpu-sized encoder and a longer budget (the
# benchmark); "tiny" exercises every stage in seconds for tests.
TRACK_PRESETS: dict[str, dict[str, Any]] = {
    "demo": {
        "sim_preset": "demo",
        "train": {
            "preset": "cpu",
            "max_steps": 400,
            "max_minutes": None,
            "max_epochs": 60,
            **KEPT_BATCH,
        },
        "sizes": (10, 30, 100, 300, 1000),
        "seeds": 3,
        "probe_steps": 200,
    },
    "paper": {
        "sim_preset": "paper",
        "train": {"preset": "cpu", "max_minutes": 15.0, "max_epochs": 200, **KEPT_BATCH},
    },
    "tiny": {
        "sim_preset": "tiny",
        "train": {
            "preset": "tiny",
            "max_epochs": 2,
            "sources_per_batch": 16,
            "views_per_source": 3,
            "patience": 2,
        },
        "sizes": (10, 30),
        "seeds": 2,
        "probe_steps": 20,
        "umap_points": 200,
    },
}


def track_config(preset: str = "demo", **overrides: Any) -> LightCurveTrackConfig:
    """The config of a named preset; ``overrides`` replace top-level fields (a ``train``
    mapping updates the preset's training keys; a ContrastiveTrainConfig replaces them).
    Unknown keys and values of the wrong type or range are errors that name the key."""
    if preset not in TRACK_PRESETS:
        raise ConfigError(f"unknown demo preset {preset!r}; known: {sorted(TRACK_PRESETS)}")
    p = copy.deepcopy(TRACK_PRESETS[preset])
    if isinstance(overrides.get("train"), Mapping):
        overrides["train"] = {**p.get("train", {}), **overrides["train"]}
    return build_dataclass(LightCurveTrackConfig, {**p, "preset": preset, **overrides})


def _train(
    store: ObservationStore,
    out: Path,
    cfg: LightCurveTrackConfig,
    single: bool,
    stage: Stages,
    steps: int | None = None,
) -> torch.nn.Module:
    """Train the dual model (with ``dual_overrides``) or the baseline; ``steps`` fixes the
    baseline's optimizer steps instead of the time budget."""
    kind = "single-latent baseline" if single else "dual (physics + instrument)"
    tcfg = replace(cfg.train, single_latent=single)
    # the baseline shares the dual model's architecture options (seed 001: "identical
    # architecture"), not its dual-only levers
    extra = single_overrides(cfg.dual_overrides) if single else cfg.dual_overrides
    tcfg = replace(tcfg, model_overrides={**tcfg.model_overrides, **extra})
    if steps is not None:
        tcfg = replace(tcfg, max_steps=steps, max_minutes=None, max_epochs=10_000)
        budget = f", {steps} steps (as many as the dual model's)"
    else:
        budget = f", {cfg.train.max_steps} steps" if cfg.train.max_steps else ""
        if cfg.train.max_minutes:
            budget += f", at most {cfg.train.max_minutes:g} min"
    stage(f"training the {kind} model, preset '{cfg.train.preset}'{budget}")
    return fit_contrastive(store, out / ("single" if single else "dual"), tcfg)


def run_lightcurve_track(
    out_dir: str | Path, cfg: LightCurveTrackConfig | None = None, quiet: bool = False
) -> dict:
    """Run every stage and write ``report.html``, ``results.json`` and ``config.yaml``."""
    cfg = cfg or track_config()
    out, stage = start_track(out_dir, cfg, quiet)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    sim_cfg = lightcurve_sim_config(cfg.sim_preset, **cfg.sim_overrides)
    stage(
        f"simulating {sim_cfg.n_lightcurves:,} light curves of {sim_cfg.n_stars:,} stars "
        f"through {sim_cfg.n_instruments} instruments (seed 001, eqs. 1-4)"
    )
    store_path = write_lightcurve_store(
        out / "lightcurves.store", sim_cfg, cfg.sim_seed, overwrite=True
    )
    store = ObservationStore(store_path)
    timings["simulate_s"] = time.perf_counter() - t

    t = time.perf_counter()
    dual = _train(store, out, cfg, single=False, stage=stage)
    timings["train_dual_s"] = time.perf_counter() - t
    t = time.perf_counter()
    steps = trained_steps(out / "dual") if cfg.equal_steps else None
    single = _train(store, out, cfg, single=True, stage=stage, steps=steps)
    timings["train_single_s"] = time.perf_counter() - t

    stage("embedding every observation with each model")
    t = time.perf_counter()
    torch.manual_seed(cfg.train.seed + 1)
    c, length = store.shape
    random_model = build_contrastive_model(  # the star encoder's architecture, untrained
        cfg.train.preset, c, length, **single_overrides(cfg.dual_overrides)
    ).eval()
    z_dual = embed_rows(dual, store)
    z_single = embed_rows(single, store)
    z_random = embed_rows(random_model, store)
    raw = store.read(np.arange(store.n_obs))["flux"].reshape(store.n_obs, -1)
    features = {
        "star latent (dual)": z_dual["physics"],
        "instrument latent (dual)": z_dual["instrument"],
        "single latent (baseline)": z_single["latent"],
        "random encoder": z_random["physics"],
        "raw series": raw,
    }
    timings["embed_s"] = time.perf_counter() - t

    stage(
        f"few-shot probes: {len(features)} inputs x sizes {list(cfg.sizes)} x "
        f"{cfg.seeds} seeds, plus instrument-id probes"
    )
    t = time.perf_counter()
    settings = LightCurveEvalSettings(
        sizes=cfg.sizes, seeds=cfg.seeds, probe=ProbeSettings(steps=cfg.probe_steps)
    )
    splits = cfg.train.splits
    ev = evaluate_features(features, store, splits, settings)
    timings["probes_s"] = time.perf_counter() - t
    stage("Lomb–Scargle anchor on held-out stars, raw and instrument-ensemble calibrated")
    t = time.perf_counter()
    ls = lomb_scargle_anchor(store, splits)
    ls_calibrated = lomb_scargle_anchor(store, splits, calibrated=True)
    timings["lomb_scargle_s"] = time.perf_counter() - t
    extra = {}
    if getattr(dual, "self_calibrated", False):
        extra["instrument_model"] = instrument_model_recovery(dual, store, splits)

    results = {
        "preset": cfg.preset,
        "n_lightcurves": store.n_obs,
        "n_stars": int(np.unique(store.source_id).size),
        "n_instruments": len(store.instruments),
        "model_preset": cfg.train.preset,
        "epochs": {name: _epochs(out / name) for name in ("dual", "single")},
        "steps": {name: trained_steps(out / name) for name in ("dual", "single")},
        "equal_steps": cfg.equal_steps,
        "dual_overrides": dict(cfg.dual_overrides),
        **ev,
        "lomb_scargle": ls,
        "lomb_scargle_calibrated": ls_calibrated,
        **extra,
        "timings": timings,
    }
    stage("figures and report")
    t = time.perf_counter()
    from whatsreal.report.lightcurves import write_lightcurve_report

    write_lightcurve_report(out, store, results, features, dual, cfg)
    timings["report_s"] = time.perf_counter() - t
    atomic_write_json(out / "results.json", results)
    stage(f"done: open {out / 'report.html'}")
    return results


def _epochs(run_dir: Path) -> int | None:
    """Epochs completed by a training run (from its CSV log)."""
    log = run_dir / "logs" / "metrics.csv"
    if not log.exists():
        return None
    epochs = [int(float(r["epoch"])) for r in read_metrics(log) if r.get("epoch")]
    return max(epochs) + 1 if epochs else 0


__all__ = [
    "TRACK_PRESETS",
    "LightCurveTrackConfig",
    "lightcurve_summary",
    "run_lightcurve_track",
    "source_truth_per_row",
    "split_rows",
    "track_config",
]


def lightcurve_summary(results: Mapping[str, Any]) -> str:
    """The headline figures of a light-curve track run, two lines for the terminal."""
    acc = results["instrument_accuracy"]
    star = results["few_shot"]["star latent (dual)"]
    return (
        "star latent R²(θ0): "
        + ", ".join(f"n={r['n_labels']}: {r['r2_mean']:.3f}" for r in star)
        + f"\ninstrument-id accuracy: instrument latent "
        f"{acc['instrument latent (dual)']:.3f}, star latent "
        f"{acc['star latent (dual)']:.3f} (chance {results['chance_accuracy']:.3f})"
    )
