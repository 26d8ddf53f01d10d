"""Training samples/s of the counterfactual model at 48x48, 4 bands, 1 physics and 5
instrument views: ``paper`` and ``cpu`` presets, plain eager fp32 against the tuned path
(channels_last + fused AdamW, then torch.compile), plus the cost of the training levers
(hybrid loss, several (t, x0) draws per conditioning set). Ratios within one run.

    python benchmarks/train_throughput.py
    python benchmarks/train_throughput.py --presets cpu --no-compile
    python benchmarks/train_throughput.py --levers-only   # the levers' cost, to *_levers.json
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
# cpu-preset levers, each timed against the tuned cpu step (a ratio within one run)
ENCODERS_ONLY = {"hybrid_weight": 3.0, "fm_weight": 0.0}
PER_BAND = {"instrument_per_band": True, "instrument_width": 0.5}
LEVERS = (
    {"hybrid_weight": 1.0},
    {"n_draws": 4},
    {"type_embedding": True},
    {"hybrid_weight": 3.0, **PER_BAND},
    ENCODERS_ONLY,
    {**ENCODERS_ONLY, **PER_BAND},
)
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
    ap.add_argument(
        "--levers-only",
        action="store_true",
        help="only the cpu tuned step and its levers, to results/train_throughput_levers.json",
    )
    args = ap.parse_args()
    rows: list[dict] = []
    ratios: dict[str, float] = {}
    if args.levers_only:
        args.presets, args.no_compile = "cpu", True
    for preset in args.presets.split(","):
        if args.levers_only:
            rows.append(measure(preset, "tuned"))
            print(rows[-1])
            continue
        modes = ["eager", "tuned"] + ([] if args.no_compile or preset == "paper" else ["compiled"])
        for mode in modes:
            try:
                rows.append(measure(preset, mode))
            except Exception as exc:  # compile can fail on some builds: record, go on
                rows.append({"preset": preset, "mode": mode, "error": repr(exc)[:300]})
            print(rows[-1])
    if "cpu" in args.presets.split(","):
        for lever in LEVERS:
            rows.append({**measure("cpu", "tuned", **lever), "lever": True})
            print(rows[-1])
        base = next(r for r in rows if r["preset"] == "cpu" and r["mode"] == "tuned")
        for r in rows:
            if r.get("lever") and "samples_per_s" in r:
                name = ",".join(f"{k}={v}" for k, v in r["overrides"].items())
                ratios[f"cpu/tuned[{name}]_vs_tuned"] = round(
                    r["samples_per_s"] / base["samples_per_s"], 2
                )
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
    name = "train_throughput_levers" if args.levers_only else "train_throughput"
    atomic_write_json(HERE / "results" / f"{name}.json", result)
    print(ratios)


if __name__ == "__main__":
    main()
