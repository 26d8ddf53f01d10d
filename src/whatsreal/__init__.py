"""whatsreal: separate physics from instrument in overlapping astronomical observations.

The observation store (:mod:`whatsreal.store`) is the one contract between data and models;
pairing (:mod:`whatsreal.pairing`) and the view sampler (:mod:`whatsreal.sampling`) read it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("whatsreal")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
