"""Measure one training lever of the light-curve dual model: train with config overrides for
a fixed budget on seed 001's data set, then probe the star latent (R²(θ0) at 100, 1000 and
3000 labels, 3 draws) and both latents' instrument-id accuracy.

    python benchmarks/lightcurve_levers.py --name tau03 --model '{"tau": 0.3}'
    python benchmarks/lightcurve_levers.py --name norecon --model '{"recon_weight": 0}'
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from whatsreal.evaluate.lightcurves import LightCurveEvalSettings, evaluate_features
from whatsreal.infer import embed_rows
from whatsreal.simulate.lightcurves import write_lightcurve_store
from whatsreal.store import ObservationStore
from whatsreal.train.contrastive import ContrastiveTrainConfig, fit_contrastive
from whatsreal.utils import atomic_write_json

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True, help="label of this lever (names the JSON)")
    ap.add_argument("--model", default="{}", help="JSON model overrides, e.g. '{\"tau\": 0.3}'")
    ap.add_argument("--train", default="{}", help="JSON training-config overrides")
    ap.add_argument("--minutes", type=float, default=10.0)
    args = ap.parse_args()
    path = HERE / "_data" / "lightcurves_ceiling.store"  # seed 001 default set, seed 0
    if not path.exists():
        write_lightcurve_store(path)
    store = ObservationStore(path)
    cfg = ContrastiveTrainConfig(
        preset="cpu",
        max_minutes=args.minutes,
        progress=False,
        model_overrides=json.loads(args.model),
        **json.loads(args.train),
    )
    model = fit_contrastive(store, HERE / "_data" / f"lever_{args.name}", cfg)
    z = embed_rows(model, store, batch_size=256)
    r = evaluate_features(
        {"star": z["physics"], "instrument": z["instrument"]},
        store,
        cfg.splits,
        LightCurveEvalSettings(sizes=(100, 1000, 3000), seeds=3),
    )
    result = {
        "benchmark": "lightcurve_levers",
        "command": f"python benchmarks/lightcurve_levers.py --name {args.name} "
        f"--model '{args.model}' --train '{args.train}' --minutes {args.minutes:g}",
        "few_shot": r["few_shot"],
        "instrument_accuracy": r["instrument_accuracy"],
    }
    atomic_write_json(HERE / "results" / f"lightcurve_levers_{args.name}.json", result)
    for name, curve in r["few_shot"].items():
        print(name, [(x["n_labels"], round(x["r2_mean"], 3)) for x in curve])
    print(r["instrument_accuracy"])


if __name__ == "__main__":
    main()
