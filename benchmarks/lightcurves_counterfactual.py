"""The counterfactual model (pure and hybrid) on seed 001's light curves, evaluated as the
light-curve track evaluates its contrastive model, on the same store and the same splits:
few-shot R²(θ0) from the star latent, instrument-id accuracy from both latents, and the
quality of regenerated held-out curves (MSE over the noise floor, z-scores).

    python benchmarks/lightcurves_counterfactual.py               # 10 min per variant
    python benchmarks/lightcurves_counterfactual.py --minutes 5 --variants hybrid
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

from whatsreal.evaluate.counterfactual import reconstruct_anchors
from whatsreal.evaluate.lightcurves import LightCurveEvalSettings, evaluate_features
from whatsreal.evaluate.probes import ProbeSettings
from whatsreal.infer.embed import embed_rows
from whatsreal.models.base import load_pretrained
from whatsreal.simulate.lightcurves import lightcurve_sim_config, write_lightcurve_store
from whatsreal.store import ObservationStore
from whatsreal.train.counterfactual import CounterfactualTrainConfig, fit_counterfactual
from whatsreal.utils import atomic_write_json, machine_info

HERE = Path(__file__).parent
DATA = HERE / "_data"
VARIANTS = {"counterfactual": {"hybrid_weight": 0.0}, "hybrid": {"hybrid_weight": 1.0}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=str(DATA / "lightcurves_run" / "lightcurves.store"))
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--variants", default="counterfactual,hybrid")
    ap.add_argument("--out", default=str(DATA / "lightcurves_cf_runs"))
    ap.add_argument("--name", default="lightcurves_counterfactual")
    args = ap.parse_args()

    path = Path(args.store)
    if not (path / "observations.h5").is_file():  # the light-curve track's store, seed 0
        write_lightcurve_store(path, lightcurve_sim_config("paper"), 0)
    store = ObservationStore(path)
    # Same splits as the contrastive track (ContrastiveTrainConfig: val 0.1, test 0.1).
    base = CounterfactualTrainConfig(
        preset="cpu",
        batch_size=64,
        lr=1e-3,
        warmup_steps=50,
        min_lr_ratio=0.05,
        n_physics=4,
        n_instrument=5,
        val=0.1,
        test=0.1,
        val_every=500,
        val_batches=4,
        ckpt_every=500,
        progress=False,
        max_minutes=args.minutes,
    )
    results: dict = {
        "command": " ".join(["python", "benchmarks/lightcurves_counterfactual.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "store": str(store.path),
        "n_lightcurves": store.n_obs,
        "minutes_per_variant": args.minutes,
        "variants": {},
    }
    features = {}
    for name in [v for v in args.variants.split(",") if v]:
        out = Path(args.out) / name
        shutil.rmtree(out, ignore_errors=True)
        # Steps for the budget: measured by a 30-step probe run of the same config.
        probe = replace(
            base,
            model_overrides=dict(VARIANTS[name]),
            max_steps=30,
            val_every=10_000,
            ckpt_every=0,
            max_minutes=None,
        )
        t0 = time.perf_counter()
        fit_counterfactual(store, out / "_probe", probe, resume=False)
        step_s = (time.perf_counter() - t0) / 30
        shutil.rmtree(out / "_probe")
        cfg = replace(
            base,
            model_overrides=dict(VARIANTS[name]),
            max_steps=int(args.minutes * 60 * 0.95 / step_s),
        )
        print(f"[{name}] ~{step_s:.2f} s/step -> {cfg.max_steps} steps")
        t0 = time.perf_counter()
        fit_counterfactual(store, out, cfg, resume=False)
        model = load_pretrained(out / "model")
        r = {
            "model_overrides": VARIANTS[name],
            "max_steps": cfg.max_steps,
            "train_seconds": round(time.perf_counter() - t0, 1),
        }
        z = embed_rows(model, store)
        features[f"star latent ({name})"] = z["physics"]
        features[f"instrument latent ({name})"] = z["instrument"]
        r["reconstruction"] = reconstruct_anchors(
            model,
            store,
            "test",
            base.splits,
            n_items=512,
            n_samples=8,
            nfe=20,
            n_physics=base.n_physics,
            n_instrument=base.n_instrument,
        )
        q = r["reconstruction"]
        print(
            f"[{name}] posterior-mean MSE / floor {q['mse_mean_over_floor']:.2f}, "
            f"z {q['z_mean']:.2f} ± {q['z_std']:.2f}"
        )
        results["variants"][name] = r
    settings = LightCurveEvalSettings(probe=ProbeSettings(steps=300))
    ev = evaluate_features(features, store, base.splits, settings)
    results.update(ev)
    contrastive = HERE / "results" / "lightcurves.json"
    if contrastive.is_file():
        c = json.loads(contrastive.read_text())
        results["contrastive_track"] = {
            "few_shot_star": c["few_shot"]["star latent (dual)"],
            "few_shot_single": c["few_shot"]["single latent (baseline)"],
            "instrument_accuracy": c["instrument_accuracy"],
            "minutes_per_model": c.get("minutes_per_model"),
        }
    atomic_write_json(HERE / "results" / f"{args.name}.json", results)
    for name, curve in results["few_shot"].items():
        if name.startswith("star"):
            print(name, [(p["n_labels"], round(p["r2_mean"], 3)) for p in curve])
    print("instrument accuracy", {k: round(v, 3) for k, v in ev["instrument_accuracy"].items()})


if __name__ == "__main__":
    main()
