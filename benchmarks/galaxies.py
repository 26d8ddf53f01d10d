"""Counterfactual, hybrid and contrastive training of the ``cpu`` preset on simulated
HSC x Legacy galaxies, each for the same wall-clock minutes (one change per variant, from
``configs/benchmarks/galaxies.yaml``), then every metric of ``whatsreal evaluate`` per run
(retrieval, probes and leakage, counterfactual MSE over the noise floor, z-scores, spectra,
the PSF-matched anchor), retrieval against training time and issue 5's goals.

    python benchmarks/galaxies.py                         # the config's `run` variants
    python benchmarks/galaxies.py --minutes 20 --variants hybrid
    python benchmarks/galaxies.py --minutes 10 --name galaxies_levers \\
        --variants hybrid,hybrid_logit_normal,hybrid_tokens32,hybrid_lr1e-3,hybrid_w3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from whatsreal.config import load_config
from whatsreal.evaluate.galaxies import benchmark_goals, evaluate_latents, evaluation_pairs
from whatsreal.evaluate.probes import ProbeSettings
from whatsreal.pipelines.galaxies import evaluate_galaxy_run
from whatsreal.pipelines.variants import ensure_galaxy_store, retrieval_curve, train_variant
from whatsreal.report.galaxies import benchmark_figure
from whatsreal.train.counterfactual import CounterfactualTrainConfig
from whatsreal.utils import atomic_write_json, machine_info

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/benchmarks/galaxies.yaml")
    ap.add_argument("--variants", default="", help="comma-separated; default: the config's run")
    ap.add_argument("--minutes", type=float, help="training budget per variant (the config's)")
    ap.add_argument("--name", help="results/<name>.json (the config's name)")
    ap.add_argument("--out", help="runs folder (the config's out)")
    ap.add_argument("--cf-sources", type=int, help="test galaxies per direction (the config's)")
    ap.add_argument("--skip-train", action="store_true", help="evaluate existing runs")
    args = ap.parse_args()

    cfg = load_config(args.config)
    cfg["out"] = args.out or cfg["out"]
    if args.cf_sources is not None:
        cfg["evaluation"]["cf_sources"] = args.cf_sources
    minutes = float(args.minutes or cfg["minutes"])
    name = args.name or cfg["name"]
    variants = cfg["variants"]
    chosen = [v for v in args.variants.split(",") if v] or list(cfg["run"])
    unknown = sorted(set(chosen) - set(variants))
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; the config has {sorted(variants)}")
    store = ensure_galaxy_store(
        cfg["store"],
        cfg["n_sources"],
        morphology=cfg.get("morphology", "sersic"),
        neighbours=bool(cfg.get("neighbours", False)),
    )
    base = CounterfactualTrainConfig(
        **cfg["train"], snapshot_minutes=minutes / float(cfg["snapshots"])
    )
    ev = dict(cfg["evaluation"])
    probe = ProbeSettings(**ev.pop("probe", {}))
    pairs_train, pairs_test = evaluation_pairs(
        store, base.splits, "hsc", "legacy", ev["n_test"], ev["n_probe"]
    )
    result_path = Path(cfg.get("results", HERE / "results")) / f"{name}.json"
    previous = json.loads(result_path.read_text()) if result_path.is_file() else {}
    results: dict = {
        "command": " ".join(["python", "benchmarks/galaxies.py", *sys.argv[1:]]),
        "config": cfg,
        "machine": machine_info(),
        "store": str(store.path),
        "minutes_per_variant": minutes,
        "batch_size": base.batch_size,
        "lr": base.lr,
        "variants": {},
    }
    for v in chosen:
        spec, out = variants[v] or {}, Path(cfg["out"]) / v
        r: dict = {
            "model_overrides": spec.get("model", {}),
            "train_overrides": spec.get("train", {}),
        }
        if args.skip_train:  # keep the training figures measured when it was trained
            old = previous.get("variants", {}).get(v, {})
            r.update({k: old[k] for k in ("max_steps", "train_seconds", "warm_start") if k in old})
        else:
            r.update(train_variant(store, out, base, spec, minutes, v))
        ran = evaluate_galaxy_run(
            out, **ev, probe=probe, progress=False, random_encoder=results.get("random_encoder")
        )
        for key in ("classical_psf_matched", "random_encoder", "n_test_pairs"):
            results[key] = ran.pop(key)  # the same for every variant: kept once
        results["chance_top1"], results["chance_recall@10"] = (
            1 / len(pairs_test),
            10 / len(pairs_test),
        )
        r.update({k: ran[k] for k in ran if k.startswith(("retrieval", "probe_r2", "leakage"))})
        r["counterfactual"] = ran.get("counterfactual") or {}
        r["time_to_quality"] = retrieval_curve(
            out,
            lambda m: evaluate_latents(m, store, pairs_train, pairs_test, False)["retrieval"],
            r.get("warm_start", {}).get("train_seconds", 0.0) / 60,
        )
        print(
            f"[{v}] top1 {r['retrieval']['top1']:.3f} recall@10 {r['retrieval']['recall@10']:.3f}"
        )
        results["variants"][v] = r
        results["goals"] = benchmark_goals(results["variants"])
        atomic_write_json(result_path, results)
    benchmark_figure(results, result_path.with_suffix(".png"))
    print(json.dumps(results["goals"], indent=2))


if __name__ == "__main__":
    main()
