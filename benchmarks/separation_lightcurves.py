"""Separation on seed 001's light curves (issue 10): star-latent instrument identity and
few-shot R²(θ0) of dual-model levers, and the single-latent baseline at equal steps and at
equal wall-clock beside the chosen variant. Writes ``benchmarks/results/<name>.json``.

    python benchmarks/separation_lightcurves.py  # configs/benchmarks/separation_lightcurves.yaml
    python benchmarks/separation_lightcurves.py --variants adversary --skip-single
    python benchmarks/separation_lightcurves.py --single-seeds 1,2  # singles of other seeds
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

from whatsreal.config import load_config
from whatsreal.evaluate.lightcurves import (
    LightCurveEvalSettings,
    evaluate_features,
    instrument_model_recovery,
    lightcurve_separation_goals,
    lomb_scargle_anchor,
    run_recipe,
    seed_group_goals,
    single_fits,
    single_name,
    single_tag,
)
from whatsreal.infer import embed_rows
from whatsreal.models.contrastive import load_pretrained, single_overrides
from whatsreal.simulate.lightcurves import write_lightcurve_store
from whatsreal.store import ObservationStore
from whatsreal.train.contrastive import ContrastiveTrainConfig, fit_contrastive, trained_steps
from whatsreal.utils import atomic_write_json, machine_info

HERE = Path(__file__).parent
SINGLES = ("single_equal_time", "single_equal_steps")


def _at(curve: list[dict], n: int) -> float:
    return next((r["r2_mean"] for r in curve if r["n_labels"] == n), float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--config", default=str(HERE.parent / "configs/benchmarks/separation_lightcurves.yaml")
    )
    ap.add_argument("--variants", default="", help="comma-separated subset of the config's")
    ap.add_argument("--skip-single", action="store_true", help="do not train the baselines")
    ap.add_argument(
        "--singles-only", action="store_true", help="train only the baselines (beside a run)"
    )
    ap.add_argument("--goals-only", action="store_true", help="recompute the goals, train nothing")
    ap.add_argument(
        "--anchors",
        action="store_true",
        help="only the Lomb-Scargle anchors, on the raw and the instrument-calibrated series",
    )
    ap.add_argument(
        "--instrument-model-only",
        action="store_true",
        help="score the saved self-calibrated runs' instrument models, train nothing",
    )
    ap.add_argument(
        "--single-seeds",
        default="",
        help="comma-separated training seeds: train only the two singles beside single_beside "
        "with each (seed 0 keeps the plain names), for the seed groups' margins",
    )
    args = ap.parse_args()
    cfg = load_config(args.config)
    store_path = Path(cfg["store"])
    if not (store_path / "observations.h5").is_file():
        write_lightcurve_store(store_path)
    store = ObservationStore(store_path)
    minutes = float(cfg["minutes"])
    base = ContrastiveTrainConfig(**cfg["train"], max_minutes=minutes)
    settings = LightCurveEvalSettings(**cfg.get("evaluation", {}))
    chosen = [v for v in args.variants.split(",") if v] or list(cfg["variants"])
    unknown = sorted(set(chosen) - set(cfg["variants"]))
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; the config has {sorted(cfg['variants'])}")
    result_path = HERE / "results" / f"{cfg['name']}.json"
    results = json.loads(result_path.read_text()) if result_path.is_file() else {}
    command = " ".join(["python", "benchmarks/separation_lightcurves.py", *sys.argv[1:]])
    if not (
        args.goals_only or args.instrument_model_only or args.anchors
    ):  # the training command is quoted
        results["command"] = command
    results.update(
        {
            "config": cfg,
            "machine": machine_info(),
        }
    )
    results.setdefault("runs", {})

    def run(name: str, tcfg: ContrastiveTrainConfig, kind: str) -> None:
        out = Path(cfg["out"]) / name
        print(f"[{name}] training ({kind})", flush=True)
        t0 = time.perf_counter()
        model = fit_contrastive(store, out, tcfg)
        seconds = time.perf_counter() - t0
        z = embed_rows(model, store, batch_size=256)
        feats = {"latent": z["latent"]} if "latent" in z else {"star": z["physics"]}
        if "instrument" in z:
            feats["instrument"] = z["instrument"]
        ev = evaluate_features(feats, store, tcfg.splits, settings)
        if getattr(model, "self_calibrated", False):
            ev["instrument_model"] = instrument_model_recovery(model, store, tcfg.splits)
        main_key = "latent" if "latent" in feats else "star"
        results["runs"][name] = {
            "kind": kind,
            "overrides": tcfg.model_overrides,
            "batch": [tcfg.sources_per_batch, tcfg.views_per_source],
            **run_recipe(asdict(tcfg)),
            "steps": trained_steps(out),
            "max_minutes": tcfg.max_minutes,
            "max_steps": tcfg.max_steps,
            "seed": tcfg.seed,
            "train_seconds": round(seconds, 1),
            **ev,
            "r2_at_100": _at(ev["few_shot"][main_key], 100),
            "r2_at_1000": _at(ev["few_shot"][main_key], 1000),
        }
        atomic_write_json(result_path, results)
        r = results["runs"][name]
        print(
            f"[{name}] {r['steps']} steps: R²(θ0) {r['r2_at_100']:.3f} @100, "
            f"{r['r2_at_1000']:.3f} @1000; instrument-id {ev['instrument_accuracy']}",
            flush=True,
        )

    def variant_config(v: str) -> tuple[ContrastiveTrainConfig, int | None]:
        over = dict(cfg["variants"][v] or {})
        steps = over.pop("steps", None)  # a fixed step count instead of the minutes
        train = dict(over.pop("train", None) or {})  # ContrastiveTrainConfig keys (the batch)
        bad = sorted(set(train) - {f.name for f in fields(ContrastiveTrainConfig)})
        if bad:
            raise SystemExit(f"variant {v!r}: train keys {bad} are not ContrastiveTrainConfig's")
        tcfg = replace(base, model_overrides=over, **train)
        if steps:
            tcfg = replace(tcfg, max_steps=int(steps), max_minutes=None)
        return tcfg, steps

    def train_singles(seed: int | None = None) -> None:
        """The two singles beside ``single_beside``: on its batches, with the options of its
        model that a single latent has (``single_overrides``: the same architecture), for
        its steps and for its measured training seconds (the config's minutes if the run
        predates that record), with its training seed or ``seed``."""
        beside = cfg["single_beside"]
        if beside not in results["runs"] or beside not in cfg["variants"]:
            raise SystemExit(
                f"single_beside: {beside!r} must be a variant of {args.config} that has been "
                "run; run it first (--variants NAME) or name another"
            )
        done = results["runs"][beside]
        dual_cfg, _ = variant_config(beside)
        single = replace(
            dual_cfg,
            single_latent=True,
            model_overrides=single_overrides(dual_cfg.model_overrides),
            max_steps=None,
            max_epochs=10_000,
        )
        if seed is not None:
            single = replace(single, seed=seed)
        wall = done.get("train_seconds", minutes * 60) / 60
        batch = [single.sources_per_batch, single.views_per_source]
        tag = single_tag(single.model_overrides, run_recipe(asdict(single)))
        names = {kind: single_name(kind, single.seed, tag) for kind in SINGLES}
        seed_note = f", seed {single.seed}" if single.seed else ""
        budgets = {
            "single_equal_time": (
                replace(single, max_minutes=wall),
                f"single, equal wall-clock ({wall:.1f} min) as {beside}{seed_note}",
            ),
            "single_equal_steps": (
                replace(single, max_steps=done["steps"], max_minutes=None),
                f"single, {done['steps']} steps as {beside}{seed_note}",
            ),
        }
        for kind, (tcfg, label) in budgets.items():
            name = names[kind]
            old = results["runs"].get(name)
            if old:
                b = old.get("batch") or [base.sources_per_batch, base.views_per_source]
                same = single_fits(
                    {**old, "batch": b},
                    seed=tcfg.seed,
                    overrides=tcfg.model_overrides,
                    batch=batch,
                    recipe=run_recipe(asdict(tcfg)),
                    steps=tcfg.max_steps,
                    seconds=None if tcfg.max_steps else tcfg.max_minutes * 60,
                    tolerance=0.01,
                )
                if same:
                    print(f"[{name}] reused: the same seed, batches and budget", flush=True)
                    continue  # training is deterministic for a seed: the same run again
                # a single of other batches or another budget is kept beside the new one
                suffix = (
                    f"{b[0]}x{b[1]}"
                    if b != batch
                    else f"{old['max_steps']}steps"
                    if old.get("max_steps")
                    else f"{old.get('max_minutes', 0):.1f}min"
                )
                results["runs"][f"{name}_{suffix}"] = old
            run(name, tcfg, label)

    try:
        seeds = [int(x) for x in args.single_seeds.split(",") if x]
    except ValueError:
        raise SystemExit(
            f"--single-seeds {args.single_seeds!r}: give comma-separated integers, e.g. 1,2"
        ) from None
    if args.anchors:
        splits = base.splits
        results["anchors"] = {
            "lomb_scargle": lomb_scargle_anchor(store, splits),
            "lomb_scargle_calibrated": lomb_scargle_anchor(store, splits, calibrated=True),
        }
        for name, a in results["anchors"].items():
            print(
                f"{name}: R²(θ0) {a['r2_theta0']:.3f}, "
                f"within 5% {a['fraction_period_within_5pct']:.3f}"
            )
        atomic_write_json(result_path, results)
        return
    if args.instrument_model_only:
        for v in chosen:
            model_dir = Path(cfg["out"]) / v / "model"
            if v not in results["runs"] or not model_dir.is_dir():
                raise SystemExit(f"{v}: no finished run in {model_dir.parent}; train it first")
            model = load_pretrained(model_dir)
            if getattr(model, "self_calibrated", False):
                splits = variant_config(v)[0].splits
                results["runs"][v]["instrument_model"] = instrument_model_recovery(
                    model, store, splits
                )
                print(f"[{v}] instrument model: {results['runs'][v]['instrument_model']}")
            else:
                print(f"[{v}] skipped: not self-calibrated (calibration_weight 0), no model")
        atomic_write_json(result_path, results)
        return
    training = not (args.singles_only or args.goals_only or seeds)
    for v in chosen if training else []:
        tcfg, steps = variant_config(v)
        run(v, tcfg, "dual" if not steps else f"dual, {int(steps)} steps")
    for seed in seeds:
        train_singles(seed)
    if not (args.skip_single or args.goals_only or seeds):
        train_singles()
    judged = cfg.get("goals_for", cfg["single_beside"])
    if judged in results["runs"]:
        results["goals_for"] = judged
        results["goals"] = lightcurve_separation_goals(
            results["runs"], judged, variant_config(judged)[0].seed
        )
        for name, g in results["goals"].items():
            print(f"{name}: {g['value']:.3f} ({'met' if g['met'] else 'NOT met'})")
    # other variants judged against the same goals (trades shown beside the default)
    results["goals_also"] = {
        v: lightcurve_separation_goals(results["runs"], v, variant_config(v)[0].seed)
        for v in cfg.get("goals_also", [])
        if v in results["runs"]
    }
    # one config over its training seeds: the goals judged on the seeds' mean
    results["seed_groups"] = {
        group: seed_group_goals(results["runs"], {v: variant_config(v)[0].seed for v in members})
        for group, members in (cfg.get("seed_groups") or {}).items()
        if any(v in results["runs"] for v in members)
    }
    atomic_write_json(result_path, results)


if __name__ == "__main__":
    main()
