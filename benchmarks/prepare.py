"""``whatsreal prepare`` at full size (issue 12): simulated HSC x Legacy galaxies written in the
Multimodal-Universe layout, prepared into a store, and a short training run on that store.

Times each step (simulation + MMU writing, `prepare`, training), reports the prepare counts
and the sizes on disk, and writes ``benchmarks/results/<name>.json``.

    python benchmarks/prepare.py                  # configs/benchmarks/prepare.yaml
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from whatsreal.config import load_config
from whatsreal.prepare.pipeline import prepare_store
from whatsreal.simulate.galaxies import simulate_galaxies
from whatsreal.store import ObservationStore
from whatsreal.train.counterfactual import (
    CounterfactualTrainConfig,
    fit_counterfactual,
    logged_steps,
)
from whatsreal.utils import atomic_write_json, folder_bytes, machine_info

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(HERE.parent / "configs/benchmarks/prepare.yaml"))
    args = ap.parse_args()
    cfg = load_config(args.config)
    work = Path(cfg["work"])
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    mmu, prepared = work / "mmu", work / "prepared.store"
    timings = {}

    t = time.perf_counter()
    simulate_galaxies(
        work / "simulated.store",
        n=int(cfg["n_sources"]),
        surveys=list(cfg["surveys"]),
        seed=int(cfg["seed"]),
        workers=int(cfg["workers"]),
        progress=False,
        mmu_out=mmu,
        compact=True,  # the simulator's own store is not what is measured here
    )
    timings["simulate_and_write_mmu_s"] = time.perf_counter() - t
    sim_s = timings["simulate_and_write_mmu_s"]
    print(f"simulated {cfg['n_sources']:,} sources in MMU layout: {sim_s:.0f} s")

    t = time.perf_counter()
    report = prepare_store(
        [(s, mmu) for s in cfg["surveys"]],
        prepared,
        progress=False,
        catalogues=str(cfg.get("catalogues", "memory")),
    )
    timings["prepare_s"] = time.perf_counter() - t
    for line in report.lines():
        print(line)
    print(f"prepare: {timings['prepare_s']:.0f} s")

    store = ObservationStore(prepared)
    t = time.perf_counter()
    tcfg = CounterfactualTrainConfig(**cfg["train"])
    fit_counterfactual(store, work / "run", tcfg)
    timings["train_s"] = time.perf_counter() - t
    steps = logged_steps(work / "run")
    print(f"train on the prepared store: {steps} steps in {timings['train_s']:.0f} s")

    results = {
        "command": " ".join(["python", "benchmarks/prepare.py", *sys.argv[1:]]),
        "config": cfg,
        "machine": machine_info(),
        "timings": timings,
        "observations": store.n_obs,
        "observations_per_s_prepare": store.n_obs / timings["prepare_s"],
        "counts": report.to_dict(),
        "bytes": {"mmu_tree": folder_bytes(mmu), "prepared_store": folder_bytes(prepared)},
        "train_steps": steps,
    }
    atomic_write_json(HERE / "results" / f"{cfg['name']}.json", results)


if __name__ == "__main__":
    main()
