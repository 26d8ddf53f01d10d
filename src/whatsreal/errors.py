"""Exceptions raised at the package boundary; each message names the offending object."""


class WhatsrealError(Exception):
    """Base class for errors raised by whatsreal."""


class StoreValidationError(WhatsrealError, ValueError):
    """Data handed to the observation store is malformed (shape, dtype, NaN, ids, bands)."""


class StoreFormatError(WhatsrealError, OSError):
    """A file or folder is not a readable whatsreal observation store."""


class ConfigError(WhatsrealError, ValueError):
    """A configuration key or value is unknown or malformed."""


class StoreCorruptError(StoreFormatError):
    """A store file fails its checksum, or holds values its writer never wrote (NaN flux)."""


class ModelFileError(WhatsrealError, OSError):
    """Saved model files (config.json, weights) are missing, truncated or corrupt."""


class NonFiniteError(WhatsrealError, ValueError):
    """A training loss or a model's weights hold NaN or inf; training stopped, nothing was saved."""


class QueryError(WhatsrealError, ValueError):
    """A search query is unusable: an unknown id, a cutout of the wrong bands or shape."""


class IndexFormatError(WhatsrealError, OSError):
    """A search index or embeddings file is missing, empty, stale or unreadable."""


class InputLayoutError(WhatsrealError, ValueError):
    """A survey file or folder handed to a reader is not in the layout the reader expects
    (a missing key, a wrong shape, unknown band names, a wrong pixel scale, a damaged file)."""
