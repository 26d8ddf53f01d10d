"""One door to every model preset: ``create_model("family.preset", **overrides)``, as in timm.

A name is ``<family>.<preset>``: the family fixes the model class and modality
(``counterfactual_image``, ``counterfactual_series``, ``contrastive_dual``,
``contrastive_single``), the preset its size (``paper``, ``cpu``, ``tiny``). The preset
tables stay where they were (``COUNTERFACTUAL_PRESETS``, ``CONTRASTIVE_PRESETS``) and the
family's ``build_*`` function does the building; this module only names them, so a preset
added to a table is listed here with no second edit. Arguments that depend on the data
(channels, image size or series length) have no default and must be passed.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from whatsreal.errors import ConfigError
from whatsreal.models import contrastive, counterfactual

__all__ = [
    "ModelFamily",
    "create_model",
    "list_models",
    "preset_config",
    "register_family",
]


@dataclass(frozen=True)
class ModelFamily:
    """A model class plus the preset table and build function that size it.

    ``presets()`` returns the live table (preset name -> default keyword arguments);
    ``build(preset, **kwargs)`` builds one; ``required`` maps each data-dependent argument
    to what it means; ``fixed`` are constructor arguments the family itself sets;
    ``aliases`` map other families' argument names to this one's, for error hints.
    """

    name: str
    model_class: type[nn.Module]
    presets: Callable[[], Mapping[str, Mapping[str, Any]]]
    build: Callable[..., nn.Module]
    required: Mapping[str, str]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    note: str = ""

    def accepted(self) -> list[str]:
        """Keyword arguments create_model accepts for this family (the class's, minus fixed)."""
        params = inspect.signature(self.model_class.__init__).parameters
        return [p for p in params if p != "self" and p not in self.fixed]


_FAMILIES: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Make a family's presets creatable by name; a second family of one name replaces it."""
    if not family.name or "." in family.name:
        raise ConfigError(f"a family name must be non-empty without '.'; got {family.name!r}")
    _FAMILIES[family.name] = family
    return family


def _counterfactual_presets(modality: str) -> dict[str, Mapping[str, Any]]:
    """The counterfactual presets of one modality, read from COUNTERFACTUAL_PRESETS."""
    table = counterfactual.COUNTERFACTUAL_PRESETS
    return {p: by_modality[modality] for p, by_modality in table.items() if modality in by_modality}


def _register_builtin_families() -> None:
    """Name the counterfactual (image, series) and contrastive (dual, single) families."""
    for modality, what in (("image", "pixels per side"), ("series", "time samples")):
        register_family(
            ModelFamily(
                name=f"counterfactual_{modality}",
                model_class=counterfactual.CounterfactualModel,
                presets=functools.partial(_counterfactual_presets, modality),
                build=functools.partial(
                    counterfactual.build_counterfactual_model, modality=modality
                ),
                required={"in_channels": "bands per observation", "size": what},
                fixed={"modality": modality},
                aliases={"length": "size"},
                note="also pass scale=robust_scale(flux, ivar), one per band (default 1.0)",
            )
        )
    for kind, cls in (
        ("dual", contrastive.ContrastiveDualModel),
        ("single", contrastive.SingleLatentModel),
    ):
        register_family(
            ModelFamily(
                name=f"contrastive_{kind}",
                model_class=cls,
                presets=lambda: contrastive.CONTRASTIVE_PRESETS,
                build=functools.partial(
                    contrastive.build_contrastive_model, single_latent=kind == "single"
                ),
                required={"in_channels": "bands per light curve", "length": "time samples"},
                aliases={"size": "length"},
            )
        )


_register_builtin_families()


def list_models(pattern: str = "*") -> list[str]:
    """Sorted preset names matching a shell-style pattern, e.g. ``"counterfactual_*.cpu"``."""
    names = [
        f"{family.name}.{preset}" for family in _FAMILIES.values() for preset in family.presets()
    ]
    return sorted(fnmatch.filter(names, pattern))


def _resolve(name: str) -> tuple[ModelFamily, str]:
    """The family and preset a name points to; an unknown name suggests the closest ones."""
    family_name, _, preset = name.rpartition(".")
    family = _FAMILIES.get(family_name)
    if family is not None and preset in family.presets():
        return family, preset
    known = list_models()
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise ConfigError(
        f"unknown model {name!r}; {hint}names are '<family>.<preset>', see "
        f"whatsreal.list_models(): {known}"
    )


def preset_config(name: str) -> dict[str, Any]:
    """A copy of the keyword arguments a preset sets, to read what a name means."""
    family, preset = _resolve(name)
    accepted = set(family.accepted())
    return {k: copy.deepcopy(v) for k, v in family.presets()[preset].items() if k in accepted}


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a model from a ``<family>.<preset>`` name; overrides replace preset values.

    The data-dependent arguments (``in_channels`` and ``size`` or ``length``) must be among
    the overrides; ``encoder``/``decoder`` dicts merge into the preset's (counterfactual).
    """
    family, preset = _resolve(name)
    for key, value in family.fixed.items():
        if key in overrides:
            raise ConfigError(
                f"{key!r} is set by the family {family.name!r} ({value!r}); drop it, or pick "
                f"another family: {list_models(f'*.{preset}')}"
            )
    accepted = family.accepted()
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        tips = []
        for key in unknown:
            close = [family.aliases[key]] if key in family.aliases else []
            close = close or difflib.get_close_matches(key, accepted, n=1)
            tips += [f"{close[0]!r} for {key!r}"] if close else []
        hint = f" (did you mean {', '.join(tips)}?)" if tips else ""
        raise ConfigError(
            f"unknown option(s) {unknown} for {name!r}{hint}; accepted: {sorted(accepted)}"
        )
    missing = [k for k in family.required if k not in overrides]
    if missing:
        needs = ", ".join(f"{k} ({family.required[k]})" for k in missing)
        example = ", ".join(f"{k}=..." for k in family.required)
        note = f"; {family.note}" if family.note else ""
        raise ConfigError(
            f"{name!r} needs the data-dependent argument(s) {needs}: pass them, e.g. "
            f"create_model({name!r}, {example}){note}"
        )
    return family.build(preset, **overrides)
