"""Supervised ceiling for R²(θ0) on seed 001's light curves: the same Conformer encoder
trained directly on θ0 with every training label (32,000 observations), for comparison
with the label-free latents of benchmarks/lightcurves.py.

    python benchmarks/lightcurves_ceiling.py               # 10 minutes of training
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from whatsreal.evaluate.lightcurves import source_truth_per_row, split_rows
from whatsreal.evaluate.probes import r2_score
from whatsreal.models.conformer import ConformerEncoder
from whatsreal.models.contrastive import CONTRASTIVE_PRESETS
from whatsreal.sampling import SplitSpec
from whatsreal.simulate.lightcurves import write_lightcurve_store
from whatsreal.store import ObservationStore
from whatsreal.utils import atomic_write_json

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--preset", default="cpu", help="encoder size (contrastive preset)")
    args = ap.parse_args()
    torch.manual_seed(0)
    path = HERE / "_data" / "lightcurves_ceiling.store"
    if not path.exists():
        write_lightcurve_store(path)  # the paper's default set, seed 0 (same as the track)
    store = ObservationStore(path)
    rows = split_rows(store, SplitSpec(0.1, 0.1, 0))
    y = source_truth_per_row(store, "theta0").astype(np.float32)
    x = store.read(np.arange(store.n_obs))["flux"]
    mu, sd = y[rows["train"]].mean(), y[rows["train"]].std()
    p = CONTRASTIVE_PRESETS[args.preset]
    enc = ConformerEncoder(
        1,
        width=p["width"],
        depth=p["depth"],
        heads=p["heads"],
        ff_dim=p["ff_dim"],
        latent_dim=p["latent_dim"],
        conv_kernel=p["conv_kernel"],
        dropout=p["dropout"],
    )
    model = nn.Sequential(enc, nn.GELU(), nn.Linear(p["latent_dim"], 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy((y - mu) / sd)
    train, val = rows["train"], rows["val"]
    t0, step, best, best_state = time.perf_counter(), 0, -np.inf, None

    def score(r: np.ndarray) -> float:
        model.eval()
        with torch.inference_mode():
            pred = torch.cat([model(xt[r[i : i + 512]]) for i in range(0, r.size, 512)])
        model.train()
        return r2_score(y[r], pred[:, 0].numpy() * sd + mu)

    rng = np.random.default_rng(0)
    while time.perf_counter() - t0 < args.minutes * 60:
        b = rng.choice(train, 256, replace=False)
        loss = nn.functional.mse_loss(model(xt[b])[:, 0], yt[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 200 == 0:
            v = score(val)
            if v > best:
                best, best_state = v, {k: t.clone() for k, t in model.state_dict().items()}
            print(f"step {step}: val R² {v:.3f}")
    model.load_state_dict(best_state or model.state_dict())
    result = {
        "benchmark": "lightcurves_ceiling",
        "command": "python benchmarks/lightcurves_ceiling.py"
        + ("" if args.minutes == 10.0 else f" --minutes {args.minutes:g}"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "encoder_preset": args.preset,
        "labels": int(train.size),
        "steps": step,
        "minutes": args.minutes,
        "val_r2_best": float(best),
        "test_r2": score(rows["test"]),
    }
    print(result)
    atomic_write_json(HERE / "results" / "lightcurves_ceiling.json", result)


if __name__ == "__main__":
    main()
