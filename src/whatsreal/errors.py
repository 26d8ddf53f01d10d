"""Exceptions raised at the package boundary; each message names the offending object."""


class WhatsrealError(Exception):
    """Base class for errors raised by whatsreal."""


class StoreValidationError(WhatsrealError, ValueError):
    """Data handed to the observation store is malformed (shape, dtype, NaN, ids, bands)."""


class StoreFormatError(WhatsrealError, OSError):
    """A file or folder is not a readable whatsreal observation store."""


class ConfigError(WhatsrealError, ValueError):
    """A configuration key or value is unknown or malformed."""
