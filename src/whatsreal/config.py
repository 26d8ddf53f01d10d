"""One YAML config per run: load, override from the command line, save next to outputs.

Config dataclasses are built with :func:`build_dataclass`, which converts every value to
its field's type (YAML 1.1 reads ``1e-3`` as a string), checks the ranges a class declares
in ``limits`` and refuses unknown keys with a suggestion of the closest valid one.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
import numbers
import operator
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from whatsreal.errors import ConfigError
from whatsreal.utils import atomic_write_text

T = TypeVar("T")


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
                if part not in node:
                    raise unknown_key_error(part, node, ".".join(parts[:i]))
                raise ConfigError(f"config key '{'.'.join(parts[: i + 1])}' is not a section")
            node[part] = {}
        node = node[part]
    if strict and parts[-1] not in node:
        raise unknown_key_error(parts[-1], node, ".".join(parts[:-1]))
    node[parts[-1]] = value


def apply_overrides(cfg: Mapping[str, Any], overrides: Sequence[str], strict: bool = True) -> dict:
    """Return a copy of ``cfg`` with ``key.sub=value`` overrides applied (values are YAML)."""
    out = copy.deepcopy(dict(cfg))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: {raw!r} is not a YAML value") from None
        set_key(out, key.strip(), value, strict=strict)
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


def unknown_key_error(key: str, valid: Iterable[str], where: str = "") -> ConfigError:
    """A ConfigError naming an unknown key and the closest valid one, so typos fix themselves."""
    valid = sorted(str(v) for v in valid)
    close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
    hint = (
        f"; did you mean '{_dotted(where, close[0])}'?"
        if close
        else f"; valid keys{f' under {where!r}' if where else ''}: {', '.join(valid)}"
    )
    return ConfigError(f"unknown config key '{_dotted(where, str(key))}'{hint}")


def check_keys(mapping: Mapping[str, Any], valid: Iterable[str], where: str = "") -> None:
    """Raise :func:`unknown_key_error` for the first key of ``mapping`` not in ``valid``."""
    valid = set(valid)
    for key in mapping:
        if key not in valid:
            raise unknown_key_error(key, valid, where)


def check_fields(cls: type, mapping: Mapping[str, Any]) -> None:
    """Raise a ConfigError listing the keys of ``mapping`` that are not fields of dataclass
    ``cls`` (the ``from_dict`` of a saved spec: a typo must not pass silently)."""
    known = {f.name for f in fields(cls)}
    extra = sorted(set(mapping) - known)
    if extra:
        raise ConfigError(f"unknown {cls.__name__} key(s) {extra}; known: {sorted(known)}")


def build_dataclass(cls: type[T], mapping: Mapping[str, Any] | T, where: str = "") -> T:
    """Build config dataclass ``cls`` from a (YAML or CLI) mapping: unknown keys are errors
    that suggest the closest field, and each value is converted to its field's type and
    checked against the class's ``limits``; errors name the key as ``where.field``."""
    if isinstance(mapping, cls):
        return mapping  # its __post_init__ has converted and checked it
    if not isinstance(mapping, Mapping):
        raise ConfigError(
            f"'{where or cls.__name__}' must be a mapping of keys to values; got {mapping!r}"
        )
    check_keys(mapping, [f.name for f in fields(cls) if f.init], where)  # type: ignore[arg-type]
    return cls(**_convert_fields(cls, dict(mapping), where))


def validate_dataclass(obj: Any, where: str = "") -> None:
    """Convert every field of a config dataclass in place to its declared type and check
    its ``limits``; call it from ``__post_init__`` so that direct construction is checked too."""
    values = {f.name: getattr(obj, f.name) for f in fields(obj) if f.init}
    for name, value in _convert_fields(type(obj), values, where).items():
        object.__setattr__(obj, name, value)


def _dotted(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert_fields(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    hints = _hints(cls)
    limits: Mapping[str, str] = getattr(cls, "limits", {})
    out = {}
    for name, value in values.items():
        key = _dotted(where, name)
        value = convert_value(value, hints[name], key)
        if name in limits:
            check_limit(value, limits[name], key)
        out[name] = value
    return out


_TRUE, _FALSE = {"true", "yes", "on", "y", "1"}, {"false", "no", "off", "n", "0"}


def convert_value(value: Any, tp: Any, key: str) -> Any:
    """``value`` as type ``tp`` (bool, int, float, str, Literal, unions, dict, tuple, list or
    a config dataclass), reading numbers and booleans from strings as YAML 1.1 leaves them
    (``1e-3`` is a string there); raises a ConfigError naming ``key`` otherwise."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert_value(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key} must be {_describe(tp)}; got {value!r}")
    if origin is typing.Literal:
        for choice in args:
            if type(value) is type(choice) and value == choice:
                return choice
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{key} must be {_describe(tp)}; got {value!r}{hint}")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return build_dataclass(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, numbers.Integral) and value in (0, 1):
            return bool(value)
    elif tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        number = _as_float(value)
        if number is not None and math.isfinite(number) and number.is_integer():
            return int(number)
    elif tp is float:
        number = _as_float(value)
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(f"{key} must be a finite number; got {value!r}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return str(value)  # e.g. `precision: 32`
    elif origin is dict or tp is dict:
        if isinstance(value, Mapping):
            kt, vt = args or (Any, Any)
            return {
                convert_value(k, kt, f"{key} key"): convert_value(v, vt, _dotted(key, str(k)))
                for k, v in value.items()
            }
    elif origin in (tuple, list) or tp in (tuple, list):
        if isinstance(value, Sequence) and not isinstance(value, str | bytes):
            if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
                item_types: Sequence[Any] = [args[0]] * len(value)
            elif origin is tuple and args:
                if len(args) != len(value):
                    raise ConfigError(f"{key} must hold {len(args)} values; got {value!r}")
                item_types = args
            else:
                item_types = [args[0] if args else Any] * len(value)
            items = [
                convert_value(v, t, f"{key}[{i}]")
                for i, (v, t) in enumerate(zip(value, item_types, strict=True))
            ]
            return tuple(items) if (origin or tp) is tuple else items
    else:
        raise TypeError(f"no conversion for {key}'s type {tp!r}")
    raise ConfigError(f"{key} must be {_describe(tp)}; got {value!r}")


def _as_float(value: Any) -> float | None:
    """A real number from a number or a numeric string ('1e-3', '75_000'); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        parts = [_describe(a) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return f"{text} or null" if type(None) in args else text
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    names = {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        dict: "a mapping",
    }
    if tp in names or origin in names:
        return names.get(tp) or names[origin]
    if origin in (tuple, list) or tp in (tuple, list):
        return "a list" + (f" (each item {_describe(args[0])})" if args else "")
    return getattr(tp, "__name__", str(tp))


def check_limit(value: Any, spec: str, key: str) -> None:
    """Check ``value`` (or each item of a tuple/list) against a range such as ``>= 1`` or
    ``>= 0 and < 1``; None passes (it means 'not set')."""
    if value is None:
        return
    for item in value if isinstance(value, tuple | list) else (value,):
        for part in spec.split(" and "):
            op, bound = part.split()
            if not _OPS[op](item, float(bound)):
                raise ConfigError(f"{key} must be {spec}; got {value!r}")


_OPS: dict[str, Callable[[Any, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
