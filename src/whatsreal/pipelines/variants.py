"""Benchmark variants: one change each against a base training config, trained by one rule.

A lever benchmark (``benchmarks/galaxies.py``, ``benchmarks/separation_galaxies.py``) names
its variants in a YAML config; each is ``{model: overrides, train: overrides}`` plus an
optional budget (``steps: N`` for equal steps whatever the machine's load, otherwise the
benchmark's minutes) and an optional contrastive warm start (``warm_start: {fraction, model}``,
a share of the same minutes). This module turns such a spec into a trained run, so every
benchmark sizes, stages and logs its runs the same way.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from whatsreal.config import check_keys
from whatsreal.errors import ConfigError
from whatsreal.models.base import load_pretrained
from whatsreal.store import ObservationStore
from whatsreal.train.counterfactual import (
    CounterfactualTrainConfig,
    fit_for_steps,
    fit_within_minutes,
)

__all__ = [
    "SPEC_KEYS",
    "ensure_galaxy_store",
    "retrieval_curve",
    "train_variant",
    "variant_config",
]

#: The keys a variant spec may hold; anything else is a typo and is refused.
SPEC_KEYS = ("model", "train", "steps", "warm_start", "full_overlap")


def ensure_galaxy_store(
    path: str | Path,
    n_sources: int,
    surveys: tuple[str, ...] = ("hsc", "legacy"),
    seed: int = 1,
    morphology: str = "sersic",
    neighbours: bool = False,
) -> ObservationStore:
    """The benchmark's simulated galaxy store: simulated (``seed``, the population's
    ``morphology`` and sky ``neighbours``) and paired if ``path`` holds none yet, opened as
    it is otherwise (so every variant reads the same galaxies); a store whose population
    differs is refused."""
    path = Path(path)
    if not (path / "observations.h5").is_file():
        from whatsreal.pairing import build_pairing
        from whatsreal.simulate.galaxies import GalaxySimConfig, simulate_galaxies
        from whatsreal.simulate.galaxy_population import PopulationConfig

        population = PopulationConfig(morphology=morphology, neighbours=bool(neighbours))
        config = GalaxySimConfig(population=population)
        simulate_galaxies(path, n=int(n_sources), surveys=tuple(surveys), seed=seed, config=config)
        build_pairing(ObservationStore(path))
    store = ObservationStore(path)
    population = (store.config.get("galaxies") or {}).get("population") or {}
    have = population.get("morphology", "sersic"), bool(population.get("neighbours", False))
    want = morphology, bool(neighbours)
    if have != want:
        raise ConfigError(
            f"{path} holds a galaxy population with (morphology, neighbours) = {have}, the "
            f"config asks for {want}: point `store` at another path, or remove the store to "
            "simulate it again"
        )
    return store


def _check_spec(name: str, spec: Mapping[str, Any] | None) -> dict[str, Any]:
    spec = dict(spec or {})
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(
            f"variant {name!r}: unknown key(s) {unknown}; a variant may set {list(SPEC_KEYS)}"
        )
    warm = spec.get("warm_start")
    if warm is not None and not 0 < float(warm.get("fraction", 0)) < 1:
        raise ConfigError(
            f"variant {name!r}: warm_start.fraction must be in (0, 1); got {warm.get('fraction')}"
        )
    if warm is not None and spec.get("steps"):
        raise ConfigError(f"variant {name!r}: warm_start needs a minutes budget, not steps")
    return spec


def variant_config(
    base: CounterfactualTrainConfig, spec: Mapping[str, Any] | None, name: str = "variant"
) -> CounterfactualTrainConfig:
    """``base`` with the variant's ``model`` overrides (replacing base's) and ``train`` keys."""
    spec = _check_spec(name, spec)
    train = dict(spec.get("train") or {})
    check_keys(train, [f.name for f in fields(CounterfactualTrainConfig)], f"{name}.train")
    return replace(base, model_overrides=dict(spec.get("model") or {}), **train)


def train_variant(
    store: ObservationStore,
    out: str | Path,
    base: CounterfactualTrainConfig,
    spec: Mapping[str, Any] | None,
    minutes: float,
    name: str = "variant",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train one variant into ``out`` (a fresh run: an earlier run there is removed, so no
    stale snapshot or checkpoint mixes in). With ``steps`` in the spec it trains exactly that
    many steps; otherwise as many as fit ``minutes``. A ``warm_start`` first trains the
    encoders alone with its ``model`` overrides for ``fraction`` of the minutes, then the
    variant from them for the rest (each share sized before it starts, so start-up costs
    add a few seconds to the total rather than shrinking the second stage). Returns the
    training figures."""
    spec = _check_spec(name, spec)
    cfg = variant_config(base, spec, name)
    out = Path(out)
    if out.exists():
        if not (out / "model").exists() and not (out / "config.yaml").exists():
            raise ConfigError(f"{out} exists and is not a training run; choose another --out")
        shutil.rmtree(out)
    if spec.get("steps"):
        log(f"[{name}] training for {spec['steps']} steps -> {out}")
        _, info = fit_for_steps(store, out, cfg, int(spec["steps"]))
        return {**info, "minutes": round(info["train_seconds"] / 60, 1)}
    info: dict[str, Any] = {}
    warm = spec.get("warm_start")
    if warm:
        w_minutes = minutes * float(warm["fraction"])
        w_cfg = replace(cfg, model_overrides=dict(warm.get("model") or {}))
        log(f"[{name}] warm start: encoders for {w_minutes:.1f} min -> {out / 'warm'}")
        _, w_info = fit_within_minutes(store, out / "warm", w_cfg, w_minutes)
        info["warm_start"] = {**w_info, "steps": w_info["max_steps"]}
        cfg = replace(cfg, init_from=str(out / "warm" / "model"))
        minutes -= w_minutes  # the shares of the budget, whatever the start-up overheads
    log(f"[{name}] training for {minutes:.1f} min -> {out}")
    _, main = fit_within_minutes(store, out, cfg, minutes)
    info.update(main)
    info["train_seconds"] = round(
        main["train_seconds"] + info.get("warm_start", {}).get("train_seconds", 0.0), 1
    )
    info["minutes"] = round(info["train_seconds"] / 60, 1)
    return info


def retrieval_curve(
    run_dir: str | Path,
    score: Callable[[Any], Mapping[str, float]],
    warm_minutes: float = 0.0,
) -> list[dict[str, float]]:
    """Retrieval against training time from a run's EMA snapshots (``snapshots/step<N>_<M>min``;
    a warm start's first, the run's then offset by ``warm_minutes``): ``score(model)`` gives
    {"top1", "recall@10"} for each snapshot."""
    run_dir = Path(run_dir)
    snaps = [(s, 0.0) for s in sorted((run_dir / "warm" / "snapshots").glob("step*"))]
    snaps += [(s, warm_minutes) for s in sorted((run_dir / "snapshots").glob("step*"))]
    curve = []
    for snap, start in snaps:
        step, minutes = snap.name[4:].split("_")
        ret = score(load_pretrained(snap))
        curve.append(
            {
                "minutes": round(start + float(minutes[:-3]), 2),
                "step": int(step),
                "top1": ret["top1"],
                "recall@10": ret["recall@10"],
            }
        )
    return curve
