"""One YAML config per run: load, override from the command line, save next to outputs."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from whatsreal.errors import ConfigError
from whatsreal.utils import atomic_write_text


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a nested dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return data


def set_key(cfg: dict[str, Any], dotted: str, value: Any, strict: bool = True) -> None:
    """Set ``a.b.c`` in a nested dict; with ``strict`` the key must already exist."""
    node = cfg
    parts = dotted.split(".")
    for i, part in enumerate(parts[:-1]):
        if part not in node or not isinstance(node[part], dict):
            if strict:
                raise ConfigError(
                    f"unknown config key '{dotted}' (no section '{'.'.join(parts[: i + 1])}')"
                )
            node[part] = {}
        node = node[part]
    if strict and parts[-1] not in node:
        known = ", ".join(sorted(node)) if isinstance(node, dict) else ""
        raise ConfigError(f"unknown config key '{dotted}'; keys here: {known}")
    node[parts[-1]] = value


def apply_overrides(cfg: Mapping[str, Any], overrides: Sequence[str], strict: bool = True) -> dict:
    """Return a copy of ``cfg`` with ``key.sub=value`` overrides applied (values are YAML)."""
    out = copy.deepcopy(dict(cfg))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        set_key(out, key.strip(), yaml.safe_load(raw), strict=strict)
    return out


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: ``update`` wins; new keys are added."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def save_config(cfg: Mapping[str, Any], path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically."""
    return atomic_write_text(path, yaml.safe_dump(dict(cfg), sort_keys=False))
