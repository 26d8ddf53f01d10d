"""One YAML file per run: ``model`` (counterfactual or contrastive), ``store``, ``out`` and a
``train`` section whose keys are the fields of that model's training config."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from whatsreal.config import apply_overrides, load_config, merge
from whatsreal.errors import ConfigError


def _kind(kind: str) -> tuple[type, Any]:
    if kind == "counterfactual":
        from whatsreal.train.counterfactual import CounterfactualTrainConfig, fit_counterfactual

        return CounterfactualTrainConfig, fit_counterfactual
    if kind == "contrastive":
        from whatsreal.train.contrastive import ContrastiveTrainConfig, fit_contrastive

        return ContrastiveTrainConfig, fit_contrastive
    raise ConfigError(f"model must be 'counterfactual' or 'contrastive'; got {kind!r}")


def resolve_run_config(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Defaults, then the file, then ``key.sub=value`` overrides; unknown keys are errors
    (except under ``train.model_overrides``, which the model validates)."""
    cfg = load_config(path)
    kind = cfg.get("model", "counterfactual")
    train_cls, _ = _kind(kind)
    full = merge({"model": kind, "store": None, "out": None, "train": asdict(train_cls())}, cfg)
    unknown = sorted(set(full["train"]) - {f.name for f in fields(train_cls)})
    if unknown:
        raise ConfigError(f"{path}: unknown train keys {unknown}")
    free = [o for o in overrides if o.startswith("train.model_overrides.")]
    full = apply_overrides(full, [o for o in overrides if o not in free])
    return apply_overrides(full, free, strict=False)


def run_from_config(full: dict[str, Any]) -> Any:
    """Train what a resolved config describes; returns the trained model."""
    train_cls, fit = _kind(full["model"])
    for key in ("store", "out"):
        if not full.get(key):
            raise ConfigError(f"set '{key}' in the config (or override it with --{key} PATH)")
    return fit(full["store"], full["out"], train_cls(**full["train"]))
