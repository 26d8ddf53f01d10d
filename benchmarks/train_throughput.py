"""Training samples/s of the counterfactual model at 48x48, 4 bands, 1 physics and 5
instrument views: ``paper`` and ``cpu`` presets, plain eager fp32 against the tuned path
(channels_last + fused AdamW, then torch.compile), plus the cost of the training levers
(hybrid loss, several (t, x0) draws per conditioning set). Ratios within one run.

    python benchmarks/train_throughput.py
    python benchmarks/train_throughput.py --presets cpu --no-compile
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from whatsreal.models.counterfactual import build_counterfactual_model
from whatsreal.utils import atomic_write_json, machine_info

HERE = Path(__file__).parent
SETTINGS = {
    "paper": {"batch": 8, "warmup": 1, "steps": 3},
    "cpu": {"batch": 32, "warmup": 2, "steps": 6},
}


def batch_of(n: int, views: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    # Flux-like values: sky noise around 0 with a few bright pixels (scale 1 per band).
    return {
        "anchor": torch.randn(n, 4, 48, 48, generator=g),
        "physics": torch.randn(n, 1, 4, 48, 48, generator=g),
        "physics_mask": torch.ones(n, 1, dtype=torch.bool),
        "instrument_views": torch.randn(n, views, 4, 48, 48, generator=g),
        "instrument_mask": torch.ones(n, views, dtype=torch.bool),
    }


def measure(preset: str, mode: str, **overrides) -> dict:
    """Median samples/s over timed steps after warm-up; mode: eager, tuned or compiled."""
    s = SETTINGS[preset]
    torch.manual_seed(0)
    model = build_counterfactual_model(preset, "image", 4, 48, **overrides).train()
    batch = batch_of(s["batch"])
    tuned = mode in ("tuned", "compiled")
    if tuned:
        model = model.to(memory_format=torch.channels_last)
        batch["anchor"] = batch["anchor"].contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if tuned else {}))
    loss_fn = torch.compile(model.loss) if mode == "compiled" else model.loss
    times = []
    t_first = None
    for i in range(s["warmup"] + s["steps"]):
        t0 = time.perf_counter()
        loss = loss_fn(batch)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if i == 0:
            t_first = dt
        if i >= s["warmup"]:
            times.append(dt)
    sec = float(np.median(times))
    return {
        "preset": preset,
        "mode": mode,
        "overrides": overrides,
        "batch": s["batch"],
        "seconds_per_step": round(sec, 3),
        "samples_per_s": round(s["batch"] / sec, 2),
        "first_step_seconds": round(t_first, 1),
        "parameters_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="cpu,paper")
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    rows = []
    for preset in args.presets.split(","):
        modes = ["eager", "tuned"] + ([] if args.no_compile or preset == "paper" else ["compiled"])
        for mode in modes:
            try:
                rows.append(measure(preset, mode))
            except Exception as exc:  # compile can fail on some builds: record, go on
                rows.append({"preset": preset, "mode": mode, "error": repr(exc)[:300]})
            print(rows[-1])
    if "cpu" in args.presets.split(","):
        for lever in ({"hybrid_weight": 1.0}, {"n_draws": 4}, {"type_embedding": True}):
            rows.append({**measure("cpu", "tuned", **lever), "lever": True})
            print(rows[-1])
    ratios = {}
    for preset in args.presets.split(","):
        by = {r["mode"]: r for r in rows if r["preset"] == preset and not r.get("lever")}
        base = by.get("eager", {}).get("samples_per_s")
        for mode, r in by.items():
            if base and "samples_per_s" in r:
                ratios[f"{preset}/{mode}_vs_eager"] = round(r["samples_per_s"] / base, 2)
    cpu = {r["mode"]: r for r in rows if r["preset"] == "cpu" and not r.get("lever")}
    paper = {r["mode"]: r for r in rows if r["preset"] == "paper"}
    if "tuned" in cpu and "tuned" in paper:
        ratios["cpu_vs_paper_tuned"] = round(
            cpu["tuned"]["samples_per_s"] / paper["tuned"]["samples_per_s"], 1
        )
    result = {
        "command": " ".join(["python", "benchmarks/train_throughput.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "shape": [4, 48, 48],
        "instrument_views": 5,
        "physics_views": 1,
        "rows": rows,
        "ratios": ratios,
    }
    atomic_write_json(HERE / "results" / "train_throughput.json", result)
    print(ratios)


if __name__ == "__main__":
    main()
