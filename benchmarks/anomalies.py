"""Anomaly search on injected anomalies (issue 13, item 4): precision@k of rare physical
objects and of instrument artefacts, in the physics and instrument spaces and for baselines.

Galaxies: held-out galaxies of the HSC x Legacy store, ~1% replaced by rings and mergers
drawn under the same observations' conditions, ~1% with satellite trails, bad columns or
saturated stars; the staged counterfactual model beside the single-latent contrastive
baseline, a random-init copy and pixel PCA. Light curves: held-out stars of seed 001's set
with dips and flares in the source signal and jumps and dropouts after the instrument; the
dual contrastive model beside the single-latent baseline. See docs/search.md.

    python benchmarks/anomalies.py        # configs/benchmarks/anomalies.yaml
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from whatsreal.config import check_keys, load_config
from whatsreal.evaluate.anomalies import anomaly_table, run_anomaly_study
from whatsreal.utils import atomic_write_json, machine_info, other_tracks, peak_rss_mb

HERE = Path(__file__).parent
TRACKS = {"galaxies": "image", "lightcurves": "series"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(HERE.parent / "configs/benchmarks/anomalies.yaml"))
    ap.add_argument("--only", choices=sorted(TRACKS), help="run one track only")
    args = ap.parse_args()
    cfg = load_config(args.config)
    check_keys(cfg, ["name", *TRACKS], args.config)
    t0 = time.perf_counter()
    out = HERE / "results" / f"{cfg.get('name', 'anomalies')}.json"
    results = {
        "command": " ".join(["python", *sys.argv]),
        "config": cfg,
        "machine": machine_info(),
        "tracks": other_tracks(out, [args.only]) if args.only else {},
    }
    for track, modality in TRACKS.items():
        if track not in cfg or (args.only and args.only != track):
            continue
        res = run_anomaly_study(cfg[track], modality, where=track)
        res["command"] = results["command"]
        results["tracks"][track] = res
        print(f"\n== {track}: {', '.join(f'{k}={v}' for k, v in res['models'].items())}")
        print(anomaly_table(res))
        print("checks (k-NN precision@k):", res["checks"])
    results["seconds"] = round(time.perf_counter() - t0, 1)
    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    atomic_write_json(out, results)
    print(f"\nwrote {out} ({results['seconds']} s)")


if __name__ == "__main__":
    main()
