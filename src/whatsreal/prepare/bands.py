"""Band names as surveys spell them (``hsc-g``, ``HSC-G``, ``des-g``, ``legacy-g``, ``g``),
reduced to one canonical letter so that readers and the transform agree on them."""

from __future__ import annotations

from collections.abc import Sequence

from whatsreal.errors import InputLayoutError

__all__ = ["KNOWN_BANDS", "canonical_band", "canonical_bands"]

# Broad-band optical filters the readers understand; anything else is refused by name.
KNOWN_BANDS = ("u", "g", "r", "i", "z", "y")


def _text(value: object) -> str:
    """A band name from HDF5/FITS (bytes or str), stripped."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return str(value).strip()


def canonical_band(name: object, where: str = "") -> str:
    """The filter letter of a survey band name: the text after the last ``-``, lower-cased
    (``HSC-G`` -> ``g``, ``des-z`` -> ``z``, ``r`` -> ``r``); unknown names raise."""
    text = _text(name)
    letter = text.rsplit("-", 1)[-1].strip().lower()
    if letter not in KNOWN_BANDS:
        at = f"{where}: " if where else ""
        raise InputLayoutError(
            f"{at}unknown band name {text!r}; expected names like 'hsc-g', 'des-r' or 'i' "
            f"ending in one of {list(KNOWN_BANDS)}. Rename the band (or pass bands=[...] to "
            "the reader) so each one ends in its filter letter"
        )
    return letter


def canonical_bands(names: Sequence[object], where: str = "") -> tuple[str, ...]:
    """Canonical letters of a list of band names; duplicates (two ``g`` planes) raise."""
    letters = tuple(canonical_band(n, where) for n in names)
    if len(set(letters)) != len(letters):
        at = f"{where}: " if where else ""
        raise InputLayoutError(
            f"{at}band names {[_text(n) for n in names]} give the same filter twice "
            f"({list(letters)}); each plane must be a different filter"
        )
    return letters
