"""whatsreal: separate physics from instrument in overlapping astronomical observations.

The observation store (:mod:`whatsreal.store`) is the one contract between data and models;
pairing (:mod:`whatsreal.pairing`) and the view sampler (:mod:`whatsreal.sampling`) read it.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

try:
    __version__ = version("whatsreal")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "create_model", "list_models", "load"]


def load(path, map_location="cpu"):
    """Load a saved whatsreal model (a run's ``<out>/model`` folder) in eval mode.

    Counterfactual models give ``.embed(observations) -> (physics, instrument)`` latents and
    ``.counterfactual(physics_views, instrument_views, ...)`` posterior samples.
    """
    from whatsreal.models.base import load_pretrained

    return load_pretrained(path, map_location=map_location)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a model from a named preset, ``<family>.<preset>``, as ``timm.create_model`` does.

    Data-dependent arguments are overrides: ``create_model("counterfactual_image.cpu",
    in_channels=4, size=48)``; :func:`list_models` gives the names.
    """
    from whatsreal.models.registry import create_model as _create

    return _create(name, **overrides)


def list_models(pattern: str = "*") -> list[str]:
    """Names that :func:`create_model` accepts, filtered by a shell pattern (``"*.tiny"``)."""
    from whatsreal.models.registry import list_models as _list

    return _list(pattern)
