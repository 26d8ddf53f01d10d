"""One rule for damaged FITS inputs, shared by the cutout and light-curve readers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from whatsreal.errors import InputLayoutError

__all__ = ["fits_read_errors"]


@contextmanager
def fits_read_errors(path: str | Path) -> Iterator[None]:
    """Turn astropy's errors on a truncated or damaged file into one InputLayoutError that
    names the file; layout errors raised inside pass through unchanged."""
    try:
        yield
    except InputLayoutError:
        raise
    except (OSError, ValueError, TypeError) as exc:  # astropy: truncated data, bad header
        raise InputLayoutError(
            f"cannot read {path} as FITS ({' '.join(str(exc).split())}); the file is "
            "truncated or damaged"
        ) from None
