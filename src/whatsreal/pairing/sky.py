"""Sky geometry: cross-match between instruments and per-instrument neighbour graphs.

Positions are converted to unit vectors, so a Euclidean k-d tree over them searches in
chord distance, which is monotonic in angular separation: RA wrap-around and the poles need
no special case. Every candidate is then kept or dropped by its exact angular separation
(Vincenty formula, as astropy uses), so the radius boundary is exact to float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord, angular_separation, match_coordinates_sky
from scipy.spatial import cKDTree

from whatsreal.errors import ConfigError, StoreValidationError

ARCSEC = np.pi / (180.0 * 3600.0)


def angle_arcsec(value: float | u.Quantity, name: str) -> float:
    """Radii are explicit angles (a bare number is arcseconds), finite, > 0 and < 180 deg:
    beyond that a sky radius means nothing, and inf or 360 deg would find no neighbours."""
    try:
        if isinstance(value, u.Quantity):
            arcsec = float(value.to_value(u.arcsec))
        else:
            arcsec = float(value)
    except (TypeError, ValueError) as exc:  # astropy's UnitConversionError is a ValueError
        raise ConfigError(
            f"{name} must be an angle such as 3arcmin, or a number of arcsec; got {value!s} ({exc})"
        ) from None
    if not (np.isfinite(arcsec) and 0 < arcsec < 180.0 * 3600.0):
        raise ConfigError(
            f"{name} must be a positive angle below 180 deg; got {value!s} = {arcsec} arcsec. "
            "Give a finite radius such as 60arcsec or 3arcmin"
        )
    return arcsec


def neighbour_count(k: object) -> int:
    """The number of neighbours per observation: a whole number >= 1."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a whole number >= 1 (neighbours per observation); got {k!r}")
    return int(k)


def unit_vectors(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """(N, 3) unit vectors of positions in degrees."""
    ra = np.deg2rad(np.asarray(ra_deg, dtype=np.float64))
    dec = np.deg2rad(np.asarray(dec_deg, dtype=np.float64))
    cos_dec = np.cos(dec)
    return np.stack([cos_dec * np.cos(ra), cos_dec * np.sin(ra), np.sin(dec)], axis=1)


def separation_arcsec(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Exact angular separation in arcsec (Vincenty), inputs in degrees."""
    return (
        np.rad2deg(
            angular_separation(np.deg2rad(ra1), np.deg2rad(dec1), np.deg2rad(ra2), np.deg2rad(dec2))
        )
        * 3600.0
    )


def _chord(arcsec: float) -> float:
    return 2.0 * np.sin(0.5 * arcsec * ARCSEC)


def _check_positions(ra: np.ndarray, dec: np.ndarray, name: str) -> None:
    if ra.shape != dec.shape or ra.ndim != 1:
        raise StoreValidationError(f"{name}: ra and dec must be 1-D arrays of the same length")
    if not (np.isfinite(ra).all() and np.isfinite(dec).all()):
        raise StoreValidationError(f"{name}: ra/dec contain NaN or inf")
    if (np.abs(dec) > 90).any():
        raise StoreValidationError(f"{name}: dec outside [-90, 90] degrees")


@dataclass(frozen=True)
class CrossMatch:
    """One-to-one matches: ``idx1[i]`` in catalogue 1 is the same source as ``idx2[i]``."""

    idx1: np.ndarray
    idx2: np.ndarray
    sep_arcsec: np.ndarray


def crossmatch(
    ra1: np.ndarray,
    dec1: np.ndarray,
    ra2: np.ndarray,
    dec2: np.ndarray,
    radius: float | u.Quantity = 1.0 * u.arcsec,
) -> CrossMatch:
    """Best one-to-one match within ``radius`` (mutual nearest neighbours, astropy).

    A pair is kept when each object is the other's nearest neighbour and they are within
    the radius, so no object is matched twice.
    """
    radius_as = angle_arcsec(radius, "radius")
    ra1, dec1 = np.asarray(ra1, float), np.asarray(dec1, float)
    ra2, dec2 = np.asarray(ra2, float), np.asarray(dec2, float)
    _check_positions(ra1, dec1, "catalogue 1")
    _check_positions(ra2, dec2, "catalogue 2")
    empty = np.zeros(0, dtype=np.int64)
    if ra1.size == 0 or ra2.size == 0:
        return CrossMatch(empty, empty, np.zeros(0))
    c1 = SkyCoord(ra1 * u.deg, dec1 * u.deg)
    c2 = SkyCoord(ra2 * u.deg, dec2 * u.deg)
    i12, sep12, _ = match_coordinates_sky(c1, c2)
    i21, _, _ = match_coordinates_sky(c2, c1)
    i12 = np.asarray(i12, dtype=np.int64)
    sep = sep12.to_value(u.arcsec)
    mutual = np.asarray(i21, dtype=np.int64)[i12] == np.arange(ra1.size)
    keep = mutual & (sep <= radius_as)
    idx1 = np.flatnonzero(keep)
    return CrossMatch(idx1, i12[idx1], sep[idx1])


def assign_source_ids(
    catalogues: dict[str, tuple[np.ndarray, np.ndarray]],
    radius: float | u.Quantity = 1.0 * u.arcsec,
) -> dict[str, np.ndarray]:
    """Give every object of several instruments' catalogues a shared ``source_id``.

    Catalogues are matched in the order given against a growing master list: matched
    objects inherit the master's id, unmatched ones become new sources.
    """
    master_ra = np.zeros(0)
    master_dec = np.zeros(0)
    out: dict[str, np.ndarray] = {}
    for name, (ra, dec) in catalogues.items():
        ra, dec = np.asarray(ra, float), np.asarray(dec, float)
        ids = np.full(ra.size, -1, dtype=np.int64)
        match = crossmatch(ra, dec, master_ra, master_dec, radius)
        ids[match.idx1] = match.idx2
        new = np.flatnonzero(ids < 0)
        ids[new] = master_ra.size + np.arange(new.size)
        master_ra = np.concatenate([master_ra, ra[new]])
        master_dec = np.concatenate([master_dec, dec[new]])
        out[name] = ids
    return out


def sky_neighbours(
    ra: np.ndarray,
    dec: np.ndarray,
    source_id: np.ndarray,
    pool: np.ndarray,
    query_ra: np.ndarray,
    query_dec: np.ndarray,
    query_source: np.ndarray,
    k: int = 5,
    radius: float | u.Quantity = 180.0 * u.arcsec,
    workers: int = -1,
) -> tuple[np.ndarray, np.ndarray]:
    """The one rule for instrument context: for each query position, the ``k`` nearest rows
    of ``pool`` (one instrument's rows) within ``radius`` whose source is not the query's,
    nearest first. Returns ``(index, sep_arcsec)`` (Nq, k), padded with -1 / NaN.

    ``ra``, ``dec``, ``source_id`` describe every row; the neighbour graph of a store
    (:func:`neighbour_graph`) and inference for sources the instrument never saw both call
    this, so they choose views alike."""
    radius_as = angle_arcsec(radius, "radius")
    k = neighbour_count(k)
    pool = np.asarray(pool, dtype=np.int64)
    query_ra, query_dec = np.asarray(query_ra, float), np.asarray(query_dec, float)
    query_source = np.asarray(query_source)
    nq = query_ra.size
    index = np.full((nq, k), -1, dtype=np.int64)
    seps = np.full((nq, k), np.nan, dtype=np.float32)
    if nq == 0 or pool.size == 0 or k == 0:
        return index, seps
    # Rows of the query's own source inside the pool would crowd out real neighbours: ask
    # for that many extra candidates.
    _, per_source = np.unique(source_id[pool], return_counts=True)
    kq = min(pool.size, k + int(per_source.max()))
    tree = cKDTree(unit_vectors(ra[pool], dec[pool]))
    bound = _chord(radius_as) * (1 + 1e-9)
    dist, nbr = tree.query(
        unit_vectors(query_ra, query_dec), k=kq, distance_upper_bound=bound, workers=workers
    )
    dist, nbr = dist.reshape(nq, kq), nbr.reshape(nq, kq)
    valid = np.isfinite(dist)
    cand = np.where(valid, pool[np.minimum(nbr, pool.size - 1)], -1)
    valid &= source_id[np.maximum(cand, 0)] != query_source[:, None]
    # Exact separation for the survivors; the chord pre-filter was slightly generous.
    sep = np.full(cand.shape, np.inf)
    r_i, c_i = np.nonzero(valid)
    b = cand[r_i, c_i]
    sep[r_i, c_i] = separation_arcsec(query_ra[r_i], query_dec[r_i], ra[b], dec[b])
    valid &= sep <= radius_as
    sep[~valid] = np.inf
    order = np.argsort(sep, axis=1, kind="stable")[:, :k]
    sep_k = np.take_along_axis(sep, order, axis=1)
    cand_k = np.take_along_axis(cand, order, axis=1)
    real = np.isfinite(sep_k)
    width = sep_k.shape[1]
    index[:, :width] = np.where(real, cand_k, -1)
    seps[:, :width] = np.where(real, sep_k, np.nan)
    return index, seps


def neighbour_graph(
    ra: np.ndarray,
    dec: np.ndarray,
    group: np.ndarray,
    source_id: np.ndarray,
    k: int = 5,
    radius: float | u.Quantity = 180.0 * u.arcsec,
    workers: int = -1,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other-source observations in the same ``group`` within ``radius``.

    ``group`` is the instrument code of each row. Returns ``(index, sep_arcsec)`` of shape
    ``(N, k)``, nearest first, padded with -1 / NaN where fewer neighbours exist. Other
    observations of the same source (repeat visits) are never neighbours. Each row is a
    :func:`sky_neighbours` query of its own position against its group.
    """
    angle_arcsec(radius, "radius")
    k = neighbour_count(k)
    ra, dec = np.asarray(ra, float), np.asarray(dec, float)
    _check_positions(ra, dec, "neighbour graph")
    group = np.asarray(group)
    source_id = np.asarray(source_id)
    n = ra.size
    index = np.full((n, k), -1, dtype=np.int64)
    seps = np.full((n, k), np.nan, dtype=np.float32)
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        if rows.size < 2:
            continue
        index[rows], seps[rows] = sky_neighbours(
            ra, dec, source_id, rows, ra[rows], dec[rows], source_id[rows], k, radius, workers
        )
    return index, seps
