"""Separation benchmark on simulated HSC x Legacy galaxies (issue 10).

Trains every variant of the config for the same wall-clock budget, then evaluates each as
seed 000 Fig. 5 does (:func:`whatsreal.evaluate.separation.evaluate_separation`): per-survey
probes of the observing conditions and the physics from the physics latent, the instrument
latent (own image, and pooled over the sky context), a random encoder, the border-noise
classical anchor and two supervised ResNet references; survey identity from the physics
latent; cross-survey transfer. Writes ``benchmarks/results/<name>.json`` and a chart.

    python benchmarks/separation_galaxies.py --config configs/benchmarks/separation_galaxies.yaml
    python benchmarks/separation_galaxies.py --config configs/benchmarks/separation_galaxies.yaml \\
        --variants tuned,agreement --skip-train      # evaluate existing runs
    python benchmarks/separation_galaxies.py --variants NEW --reuse-shared  # one new lever
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from whatsreal.config import load_config
from whatsreal.models.base import load_pretrained
from whatsreal.pipelines.variants import ensure_galaxy_store, train_variant
from whatsreal.train.counterfactual import CounterfactualTrainConfig, build_for_store, logged_steps
from whatsreal.utils import atomic_write_json, machine_info

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--config", default=str(HERE.parent / "configs/benchmarks/separation_galaxies.yaml")
    )
    ap.add_argument("--variants", default="", help="comma-separated subset of the config's")
    ap.add_argument("--minutes", type=float, default=None, help="override the budget")
    ap.add_argument("--name", default=None, help="override results/<name>.json")
    ap.add_argument("--skip-train", action="store_true", help="evaluate existing runs")
    ap.add_argument("--train-only", action="store_true", help="train, do not evaluate")
    ap.add_argument(
        "--spread-only",
        action="store_true",
        help="only measure how the conditions vary within each survey, and refresh the goals "
        "(seconds)",
    )
    ap.add_argument(
        "--reuse-shared",
        action="store_true",
        help="keep the references of the previous results instead of retraining them",
    )
    args = ap.parse_args()

    cfg = load_config(args.config)
    minutes = float(args.minutes or cfg["minutes"])
    name = args.name or cfg["name"]
    store = ensure_galaxy_store(
        cfg["store"],
        cfg["n_sources"],
        tuple(cfg.get("surveys", ("hsc", "legacy"))),
        morphology=cfg.get("morphology", "sersic"),
        neighbours=bool(cfg.get("neighbours", False)),
    )
    variants = cfg["variants"]
    chosen = [v for v in args.variants.split(",") if v] or list(variants)
    unknown = sorted(set(chosen) - set(variants))
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; the config has {sorted(variants)}")
    base = CounterfactualTrainConfig(**cfg["train"])

    result_path = HERE / "results" / f"{name}.json"
    previous = json.loads(result_path.read_text()) if result_path.is_file() else {}
    results = {
        "command": " ".join(["python", "benchmarks/separation_galaxies.py", *sys.argv[1:]]),
        "config": cfg,
        "machine": machine_info(),
        "minutes_per_variant": float(cfg["minutes"]),
        "variants": dict(previous.get("variants", {})),
    }
    if args.spread_only:  # no model is trained or evaluated
        chosen = []
        results["command"] = previous.get("command", results["command"])
    for key in ("shared", "goals", "condition_spread"):  # kept until this run redoes them
        if key in previous:
            results[key] = previous[key]
    models = {}
    for v in chosen:
        over = variants[v] or {}
        out = Path(cfg["out"]) / v
        entry = dict(results["variants"].get(v, {})) if args.skip_train else {}
        entry["overrides"] = over
        entry["command"] = results["command"]
        if not args.skip_train:
            results.get("goals", {}).pop(v, None)  # a retrained model's old goals are stale
            entry["training"] = train_variant(store, out, base, over, minutes, v)
            entry["minutes"] = entry["training"]["minutes"] if over.get("steps") else minutes
        if args.skip_train and "training" not in entry:  # trained by a --train-only run
            entry["training"] = {"max_steps": over.get("steps"), "steps_trained": logged_steps(out)}
        results["variants"][v] = entry
        models[v] = load_pretrained(out / "model")
        atomic_write_json(result_path, results)
    if args.train_only:
        return
    from whatsreal.evaluate.separation import (
        SeparationSettings,
        condition_spread,
        evaluate_separation,
        separation_figure,
        separation_goals,
    )

    settings = SeparationSettings(**cfg.get("evaluation", {}))
    results["condition_spread"] = {
        name: condition_spread(store, name, k=settings.k_context) for name in settings.surveys
    }
    if args.spread_only:  # and the goals, from the evaluations on file and this config
        results["goals"] = separation_goals(results)
        atomic_write_json(result_path, results)
        print(json.dumps(results["condition_spread"], indent=1))
        return
    torch.manual_seed(0)
    random_model = build_for_store(store, base).eval()
    shared = previous.get("shared") if args.reuse_shared else None
    if args.reuse_shared and not shared:
        raise SystemExit(f"--reuse-shared: {result_path} holds no shared references yet")
    evaluation = evaluate_separation(store, models, random_model, settings, shared=shared)
    for v in chosen:
        results["variants"][v]["evaluation"] = evaluation["models"][v]
    results["shared"] = evaluation["shared"]
    results["goals"] = separation_goals(results)
    atomic_write_json(result_path, results)
    separation_figure(results, result_path.with_suffix(".png"), cfg.get("figure_variant"))
    from whatsreal.report.separation import write_separation_report

    write_separation_report(results, Path(cfg["out"]) / "report.html")
    print(f"report: {Path(cfg['out']) / 'report.html'}")
    print(json.dumps(results["goals"], indent=1))


if __name__ == "__main__":
    main()
