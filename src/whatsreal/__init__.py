"""whatsreal: separate physics from instrument in overlapping astronomical observations.

The observation store (:mod:`whatsreal.store`) is the one contract between data and models;
pairing (:mod:`whatsreal.pairing`) and the view sampler (:mod:`whatsreal.sampling`) read it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("whatsreal")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "load"]


def load(path, map_location="cpu"):
    """Load a saved whatsreal model (a run's ``<out>/model`` folder) in eval mode.

    Counterfactual models give ``.embed(observations) -> (physics, instrument)`` latents and
    ``.counterfactual(physics_views, instrument_views, ...)`` posterior samples.
    """
    from whatsreal.models.base import load_pretrained

    return load_pretrained(path, map_location=map_location)
