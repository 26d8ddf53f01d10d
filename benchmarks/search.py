"""Query latency and recall@10 of the FAISS index that ``whatsreal index`` builds, against
exact search, at 10^6 clustered vectors of the latent width (issue 13).

The vectors are random but clustered: Gaussian clusters of random size and width, each on a
random low-dimensional subspace plus isotropic noise, so neighbours are mostly within a
cluster, as for latents of similar sources. Queries are held out from the same
distribution. Latency is the median over single queries (one ``search`` call each, as
``whatsreal search`` makes); recall@10 is the overlap with the exact top 10.

    python benchmarks/search.py           # configs/benchmarks/search.yaml
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from whatsreal.config import load_config
from whatsreal.search import build_vector_index
from whatsreal.utils import atomic_write_json, peak_rss_mb

HERE = Path(__file__).parent


def clustered(cfg: dict, dim: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` vectors from the configured cluster mixture (same mixture for every call)."""
    mix = np.random.default_rng(int(cfg["seed"]))
    c, r = int(cfg["n_clusters"]), int(cfg["intrinsic_dim"])
    centres = mix.normal(size=(c, dim)) * 4.0
    widths = mix.lognormal(0.0, 0.5, c)
    bases = mix.normal(size=(c, r, dim)) / np.sqrt(r)
    weights = mix.dirichlet(np.full(c, 2.0))
    labels = rng.choice(c, n, p=weights)
    out = np.empty((n, dim), np.float32)
    for j in range(c):
        sel = np.flatnonzero(labels == j)
        if sel.size:
            low = rng.normal(size=(sel.size, r)) @ bases[j]
            noise = float(cfg["noise"]) * rng.normal(size=(sel.size, dim))
            out[sel] = centres[j] + widths[j] * (low + noise)
    return out


def _recall(got: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, truth, strict=True)]))


def _single_query_ms(index, queries: np.ndarray, k: int) -> float:
    times = []
    for q in queries:
        t0 = time.perf_counter()
        index.search(q[None], k)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(HERE.parent / "configs/benchmarks/search.yaml"))
    args = ap.parse_args()
    cfg = load_config(args.config)
    dim = cfg.get("dim")
    if dim is None:
        from whatsreal.models.counterfactual import build_counterfactual_model

        dim = build_counterfactual_model("cpu", "image", 4, 48).latent_dim
    dim, n, k = int(dim), int(cfg["n_vectors"]), int(cfg["k"])
    rng = np.random.default_rng(int(cfg["seed"]) + 1)
    t0 = time.perf_counter()
    x = clustered(cfg, dim, n, rng)
    queries = clustered(cfg, dim, int(cfg["n_queries"]), rng)
    print(f"{n:,} x {dim} vectors in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    exact = build_vector_index(x, kind="flat")
    _, truth = exact.search(queries, k)
    exact_batch_s = time.perf_counter() - t0
    exact_ms = _single_query_ms(exact, queries[: int(cfg["exact_latency_queries"])], k)
    print(f"exact: {exact_ms:.2f} ms/query single, all queries batched {exact_batch_s:.1f} s")

    t0 = time.perf_counter()
    approx = build_vector_index(x, kind=cfg["kind"])
    build_s = time.perf_counter() - t0
    default = dict(approx.params)
    print(f"{approx.kind} built in {build_s:.1f} s with {default}")
    rows = []
    sweep = (
        sorted({*cfg["nprobe"], default.get("nprobe", 0)} - {0}) if approx.kind == "ivf" else [0]
    )
    for nprobe in sweep:
        if nprobe:
            approx.apply_params(nprobe=nprobe)
        _, got = approx.search(queries, k)
        t0 = time.perf_counter()
        approx.search(queries, k)
        batch_ms = (time.perf_counter() - t0) * 1e3 / len(queries)
        row = {
            "nprobe": nprobe or None,
            "default": nprobe == default.get("nprobe", 0),
            "ms_per_query": round(_single_query_ms(approx, queries, k), 3),
            "batched_ms_per_query": round(batch_ms, 3),
            f"recall_at_{k}": round(_recall(got, truth), 4),
        }
        rows.append(row)
        print(row)
    goal = cfg["goal"]
    chosen = next(r for r in rows if r["default"])
    met = (
        chosen["ms_per_query"] <= goal["ms_per_query"]
        and chosen[f"recall_at_{k}"] >= goal["recall_at_10"]
    )
    result = {
        "command": " ".join(["python", "benchmarks/search.py", *sys.argv[1:]]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "faiss": faiss.__version__,
        },
        "config": cfg,
        "n_vectors": n,
        "dim": dim,
        "kind": approx.kind,
        "default_params": default,
        "build_seconds": round(build_s, 1),
        "exact_ms_per_query": round(exact_ms, 2),
        "rows": rows,
        "default_row": chosen,
        "peak_rss_mb": round(peak_rss_mb(), 0),
        "goal": f"<= {goal['ms_per_query']:g} ms/query with recall@10 >= {goal['recall_at_10']:g}",
        "goal_met": bool(met),
    }
    out = HERE / "results" / f"{cfg['name']}.json"
    atomic_write_json(out, result)
    print(f"default {chosen}; goal {'met' if met else 'not met'} -> {out}")


if __name__ == "__main__":
    main()
