"""Pairing: sky cross-match between instruments and per-instrument neighbour graphs."""

from whatsreal.pairing.graph import CATALOGUE_BACKENDS, build_pairing
from whatsreal.pairing.sky import (
    CrossMatch,
    assign_source_ids,
    crossmatch,
    neighbour_graph,
    separation_arcsec,
    unit_vectors,
)

__all__ = [
    "CATALOGUE_BACKENDS",
    "CrossMatch",
    "assign_source_ids",
    "build_pairing",
    "crossmatch",
    "neighbour_graph",
    "separation_arcsec",
    "unit_vectors",
]
