"""One YAML file per run: ``model`` (counterfactual or contrastive), ``store``, ``out`` and a
``train`` section whose keys are the fields of that model's training config."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from whatsreal.config import (
    apply_overrides,
    build_dataclass,
    check_keys,
    convert_value,
    load_config,
)
from whatsreal.errors import ConfigError

# ``resolved_model`` is what a run writes into its own config.yaml; it is ignored on input
# (the model is rebuilt from ``train``), so a run's saved config can be trained again.
RUN_KEYS = ("model", "store", "out", "train", "resolved_model")


def _kind(kind: str) -> tuple[type, Any]:
    if kind == "counterfactual":
        from whatsreal.train.counterfactual import CounterfactualTrainConfig, fit_counterfactual

        return CounterfactualTrainConfig, fit_counterfactual
    if kind == "contrastive":
        from whatsreal.train.contrastive import ContrastiveTrainConfig, fit_contrastive

        return ContrastiveTrainConfig, fit_contrastive
    raise ConfigError(f"model must be 'counterfactual' or 'contrastive'; got {kind!r}")


def resolve_run_config(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The file, then ``key.sub=value`` overrides, checked and converted: unknown keys are
    errors that suggest the closest valid one, values take their field's type and range
    (``train.model_overrides`` is left to the model, which validates it when built)."""
    cfg = load_config(path)
    try:
        full = apply_overrides(cfg, overrides, strict=False)
        check_keys(full, RUN_KEYS)
        kind = convert_value(full.get("model", "counterfactual"), str, "model")
        train_cls, _ = _kind(kind)
        train = build_dataclass(train_cls, full.get("train") or {}, where="train")
        places = {key: convert_value(full.get(key), str | None, key) for key in ("store", "out")}
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return {"model": kind, **places, "train": asdict(train)}


def run_from_config(full: dict[str, Any]) -> Any:
    """Train what a resolved config describes; returns the trained model."""
    train_cls, fit = _kind(full["model"])
    for key in ("store", "out"):
        if not full.get(key):
            raise ConfigError(f"set '{key}' in the config (or override it with --{key} PATH)")
    return fit(full["store"], full["out"], train_cls(**full["train"]))
