"""Compute the neighbour graph of a store once and keep it next to the store."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import astropy.units as u
import h5py

from whatsreal.errors import StoreValidationError
from whatsreal.pairing.sky import angle_arcsec, neighbour_graph
from whatsreal.store import Neighbours, ObservationStore, layout

log = logging.getLogger(__name__)


def build_pairing(
    store: ObservationStore | str | Path,
    k: int = 5,
    radius: float | u.Quantity = 3.0 * u.arcmin,
) -> Neighbours:
    """Compute each observation's ``k`` nearest same-instrument neighbours within ``radius``
    and write them to ``pairing.h5`` in the store (atomically, replacing an older graph).

    A bare-number ``radius`` is in arcseconds.
    """
    if not isinstance(store, ObservationStore):
        store = ObservationStore(store)
    if not store.has_positions:
        raise StoreValidationError(
            f"{store.path} has no sky positions (ra/dec): a neighbour graph needs them. "
            "Without positions the view sampler draws instrument views from the instrument's pool"
        )
    radius_as = angle_arcsec(radius, "radius")
    t0 = time.perf_counter()
    index, sep = neighbour_graph(
        store.table["ra"], store.table["dec"], store.instrument, store.source_id, k, radius_as
    )
    n_zero = int(((index >= 0).sum(axis=1) == 0).sum())
    if n_zero:
        log.info(
            "%d of %d observations have no neighbour within %.1f arcsec; their instrument "
            "views will be masked",
            n_zero,
            store.n_obs,
            radius_as,
        )
    final = store.path / layout.PAIRING_FILE
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    with h5py.File(tmp, "w") as h5:
        h5.create_dataset("neighbours/index", data=index)
        h5.create_dataset("neighbours/sep_arcsec", data=sep)
        h5.attrs["k"] = k
        h5.attrs["radius_arcsec"] = radius_as
        h5.attrs["n_obs"] = store.n_obs
        h5.attrs["seconds"] = time.perf_counter() - t0
    os.replace(tmp, final)
    store.reload_pairing()
    assert store.neighbours is not None
    return store.neighbours


__all__ = ["build_pairing"]
