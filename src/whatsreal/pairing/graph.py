"""Compute the neighbour graph of a store once and keep it next to the store."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import astropy.units as u
import h5py
import numpy as np

from whatsreal.errors import ConfigError, StoreValidationError
from whatsreal.pairing.sky import angle_arcsec, neighbour_count, neighbour_graph
from whatsreal.store import Neighbours, ObservationStore, layout
from whatsreal.utils import sweep_stale_temps, temp_sibling

log = logging.getLogger(__name__)

# where cross-match and neighbours run: one in-memory k-d tree, or LSDB on HATS catalogues
CATALOGUE_BACKENDS = ("memory", "hats")


def _nearest_hint(store: ObservationStore) -> str:
    """How far apart same-instrument observations of different sources are (for advice)."""
    index, sep = neighbour_graph(
        store.table["ra"], store.table["dec"], store.instrument, store.source_id, 1, 179.0 * 3600
    )
    found = sep[index[:, 0] >= 0, 0]
    if found.size == 0:
        return (
            "no instrument has observations of two different sources, so no radius can give "
            "neighbours"
        )
    median = float(np.median(found))
    return (
        f"the median nearest same-instrument neighbour is {median:.1f} arcsec away: "
        f"give a larger radius, e.g. {min(2 * median, 179 * 3600):.0f}arcsec"
    )


def build_pairing(
    store: ObservationStore | str | Path,
    k: int = 5,
    radius: float | u.Quantity = 3.0 * u.arcmin,
    backend: str = "memory",
    work: str | Path | None = None,
) -> Neighbours:
    """Compute each observation's ``k`` nearest same-instrument neighbours within ``radius``
    and write them to ``pairing.h5`` in the store (atomically, replacing an older graph).

    A bare-number ``radius`` is in arcseconds. Arguments are checked before anything is read
    or written, and a graph in which no observation has a neighbour is refused (the old
    ``pairing.h5`` is kept), since it would silently mask every instrument view.
    """
    radius_as = angle_arcsec(radius, "radius")
    k = neighbour_count(k)
    if backend not in CATALOGUE_BACKENDS:
        raise ConfigError(f"backend must be one of {list(CATALOGUE_BACKENDS)}; got {backend!r}")
    if not isinstance(store, ObservationStore):
        store = ObservationStore(store)
    if not store.has_positions:
        raise StoreValidationError(
            f"{store.path} has no sky positions (ra/dec): a neighbour graph needs them. "
            "Without positions the view sampler draws instrument views from the instrument's pool"
        )
    t0 = time.perf_counter()
    args = (store.table["ra"], store.table["dec"], store.instrument, store.source_id, k, radius_as)
    if backend == "hats":
        from whatsreal.pairing.hats import neighbour_graph_hats

        if work is None:
            raise ConfigError("backend 'hats' needs a work folder for its catalogues (work=...)")
        index, sep = neighbour_graph_hats(*args, work)
    else:
        index, sep = neighbour_graph(*args)
    counts = (index >= 0).sum(axis=1)
    if store.n_obs and not counts.any():
        raise ConfigError(
            f"no observation of {store.path} has a neighbour within {radius_as:g} arcsec; "
            f"refusing to replace pairing.h5 by an empty graph ({_nearest_hint(store)})"
        )
    n_zero = int((counts == 0).sum())
    if n_zero:
        log.info(
            "%d of %d observations have no neighbour within %.1f arcsec; their instrument "
            "views will be masked",
            n_zero,
            store.n_obs,
            radius_as,
        )
    final = store.path / layout.PAIRING_FILE
    sweep_stale_temps(final)
    tmp = temp_sibling(final)
    try:
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("neighbours/index", data=index, **layout.checksum_kwargs(index.shape))
            h5.create_dataset(
                "neighbours/sep_arcsec", data=sep, **layout.checksum_kwargs(sep.shape)
            )
            h5.attrs["k"] = k
            h5.attrs["radius_arcsec"] = radius_as
            h5.attrs["n_obs"] = store.n_obs
            h5.attrs["seconds"] = time.perf_counter() - t0
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    store.reload_pairing()
    assert store.neighbours is not None
    return store.neighbours


__all__ = ["CATALOGUE_BACKENDS", "build_pairing"]
