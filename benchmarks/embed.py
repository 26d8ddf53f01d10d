"""Observations/s of the counterfactual model's two 48x48 ResNet-18 encoders (issue 13).

Plain eager (fp32, contiguous tensors, no inference_mode, the training batch) against the
tuned path that ``whatsreal embed`` takes (``inference_model``: batch norms folded into the
convolutions, channels_last; ``embed_array``: inference_mode; a larger batch; torch threads
set) and its compiled path (``whatsreal embed --compile``: Inductor with frozen weights),
medians of several repeats, as a ratio in one run. One observation = both latents (physics
and instrument encoder). Random weights and random 4x48x48 inputs: the speed does not
depend on either.

    python benchmarks/embed.py            # configs/benchmarks/embed.yaml
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from whatsreal.config import load_config
from whatsreal.infer.embed import embed_array, inference_model
from whatsreal.models.counterfactual import build_counterfactual_model
from whatsreal.utils import atomic_write_json

HERE = Path(__file__).parent


def _timed(run, n_obs: int, repeats: int, warmup: int) -> dict:
    """Median obs/s of ``run()`` (which embeds n_obs observations) over timed repeats."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    sec = float(np.median(times))
    return {
        "seconds_median": round(sec, 3),
        "obs_per_s": round(n_obs / sec, 1),
        "obs_per_s_all": [round(n_obs / t, 1) for t in times],
    }


def _max_rel_error(got: dict, reference: dict) -> float:
    """Largest absolute difference of any latent from the fp32 reference, relative to the
    reference's largest magnitude, over every latent space."""
    return max(
        float(np.abs(got[k] - reference[k]).max() / np.abs(reference[k]).max()) for k in reference
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(HERE.parent / "configs/benchmarks/embed.yaml"))
    args = ap.parse_args()
    cfg = load_config(args.config)
    shape = tuple(cfg["shape"])
    n, reps, warm = int(cfg["n_obs"]), int(cfg["repeats"]), int(cfg["warmup"])
    x = np.random.default_rng(0).standard_normal((n, *shape), dtype=np.float32)
    torch.manual_seed(0)
    rows = []

    # plain eager: the model as built, fp32 contiguous, autograd bookkeeping on
    model = build_counterfactual_model(cfg["preset"], "image", shape[0], shape[1]).eval()
    eager_bs = int(cfg["eager"]["batch_size"])
    xt = torch.from_numpy(x)

    def eager() -> None:
        for lo in range(0, n, eager_bs):
            model.embed(xt[lo : lo + eager_bs])

    threads_default = torch.get_num_threads()
    rows.append(
        {
            "mode": "eager",
            "batch_size": eager_bs,
            "threads": threads_default,
            **_timed(eager, n, reps, warm),
        }
    )
    print(rows[-1])

    tuned_cfg = cfg["tuned"]
    threads = int(tuned_cfg.get("threads") or os.cpu_count() or 1)
    torch.set_num_threads(threads)
    reference = embed_array(model, x[:64])  # the plain model's latents, before the fold
    models = {}
    for layout in tuned_cfg["layouts"]:  # BN folded; the memory format as given
        cl = layout == "channels_last"
        models[layout] = inference_model(copy.deepcopy(model), channels_last=cl)
        for bs in tuned_cfg["batch_sizes"]:

            def tuned(bs: int = int(bs), m: torch.nn.Module = models[layout]) -> None:
                for lo in range(0, n, bs):
                    embed_array(m, x[lo : lo + bs])

            rows.append(
                {
                    "mode": f"tuned {layout}",
                    "batch_size": int(bs),
                    "threads": threads,
                    **_timed(tuned, n, reps, warm),
                }
            )
            print(rows[-1])
    best = max((r for r in rows if r["mode"].startswith("tuned ")), key=lambda r: r["obs_per_s"])
    if tuned_cfg.get("bf16"):  # the `whatsreal embed --bf16` path: autocast, channels_last
        low_model = inference_model(copy.deepcopy(model), precision=torch.bfloat16)
        low = embed_array(low_model, x[:64], autocast=torch.bfloat16)
        err = _max_rel_error(low, reference)
        for bs in tuned_cfg["batch_sizes"]:

            def bf16(bs: int = int(bs)) -> None:
                for lo in range(0, n, bs):
                    embed_array(low_model, x[lo : lo + bs], autocast=torch.bfloat16)

            rows.append(
                {
                    "mode": "tuned+bf16 channels_last",
                    "batch_size": int(bs),
                    "threads": threads,
                    "max_rel_error_vs_fp32": round(err, 4),
                    **_timed(bf16, n, reps, warm),
                }
            )
            print(rows[-1])
    if tuned_cfg.get("compile"):  # the `whatsreal embed --compile [--bf16]` paths
        settings = [(layout, None) for layout in tuned_cfg["layouts"]]
        if tuned_cfg.get("bf16"):
            settings.append(("channels_last", torch.bfloat16))
        for layout, dtype in settings:
            for bs in tuned_cfg["batch_sizes"]:
                torch._dynamo.reset()  # a fresh compilation each (Dynamo caps recompiles)
                m = inference_model(
                    copy.deepcopy(model),
                    channels_last=layout == "channels_last",
                    precision=dtype,
                    compile=True,
                    batch_size=int(bs),
                )
                t0 = time.perf_counter()
                got = embed_array(m, x[:64], autocast=dtype)  # the one compilation
                compile_s = time.perf_counter() - t0
                err = _max_rel_error(got, reference)

                def compiled(bs: int = int(bs), m=m, dtype=dtype) -> None:
                    for lo in range(0, n, bs):
                        embed_array(m, x[lo : lo + bs], autocast=dtype)

                label = "+bf16" if dtype is not None else ""
                rows.append(
                    {
                        "mode": f"compiled{label} {layout}",
                        "batch_size": int(bs),
                        "threads": threads,
                        "max_rel_error_vs_fp32": round(err, 4),
                        "compile_s": round(compile_s, 1),
                        **_timed(compiled, n, reps, warm),
                    }
                )
                print(rows[-1])
    eager_rate = rows[0]["obs_per_s"]
    goal = float(cfg["goal_obs_per_s"])
    fastest = max(rows[1:], key=lambda r: r["obs_per_s"])  # any path `whatsreal embed` offers
    fp32 = [r for r in rows[1:] if "bf16" not in r["mode"]]
    fastest_fp32 = max(fp32, key=lambda r: r["obs_per_s"])
    result = {
        "command": " ".join(["python", "benchmarks/embed.py", *sys.argv[1:]]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": threads,
        },
        "config": cfg,
        "latent_dim": int(model.latent_dim),
        "parameters_M": round(
            sum(
                p.numel()
                for m in (model.physics_encoder, model.instrument_encoder)
                for p in m.parameters()
            )
            / 1e6,
            2,
        ),
        "rows": rows,
        "best_tuned": {k: best[k] for k in ("mode", "batch_size", "obs_per_s")},
        "ratio_tuned_vs_eager": round(best["obs_per_s"] / eager_rate, 2),
        "encoder_passes_per_s_best_tuned": round(2 * best["obs_per_s"], 1),
        "fastest": {k: fastest[k] for k in ("mode", "batch_size", "obs_per_s")},
        "goal": f">= {goal:,.0f} obs/s, both latents, on a path `whatsreal embed` offers",
        "goal_met": bool(fastest["obs_per_s"] >= goal),
        "fastest_fp32": {k: fastest_fp32[k] for k in ("mode", "batch_size", "obs_per_s")},
        "goal_met_fp32": bool(fastest_fp32["obs_per_s"] >= goal),
    }
    out = HERE / "results" / f"{cfg['name']}.json"
    atomic_write_json(out, result)
    print(
        f"tuned/eager = {result['ratio_tuned_vs_eager']}x; best tuned fp32 {best['obs_per_s']} "
        f"obs/s, fastest {fastest['mode']} {fastest['obs_per_s']} obs/s "
        f"(goal {goal:g}: {'met' if result['goal_met'] else 'not met'}) -> {out}"
    )


if __name__ == "__main__":
    main()
