"""Cross-match and sky neighbours through LSDB on HATS catalogues (the ``scale`` extra).

The in-memory rules of :mod:`whatsreal.pairing.sky` hold every position in one k-d tree.
Survey catalogues of 10^8-10^9 rows do not fit one machine; LSDB partitions them by HEALPix
pixel (the HATS layout) and runs each step partition by partition under Dask, with a
*margin cache* (the rows just outside a pixel) so that pairs across a pixel border are found.
The rules are the same, and on catalogues that fit one machine the answers are identical
(``tests/test_hats.py``):

- :func:`hats_source_ids`: mutual nearest neighbours within the match radius, surveys in
  the given order against a growing master list (:func:`~whatsreal.pairing.assign_source_ids`);
- :func:`hats_neighbours`: each row's ``k`` nearest rows of another source within the
  radius, nearest first (:func:`~whatsreal.pairing.sky.sky_neighbours`).

Every catalogue has the columns ``ra``, ``dec`` (degrees), ``key`` (a unique int64 per row:
the store row in ``whatsreal prepare``) and, for neighbours, ``source_id``. Build one with
:func:`write_hats_catalogue`. Install with ``pip install 'whatsreal[scale]'``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from whatsreal.errors import ConfigError, WhatsrealError
from whatsreal.pairing.sky import angle_arcsec, neighbour_count

__all__ = [
    "assign_source_ids_hats",
    "hats_neighbours",
    "hats_source_ids",
    "neighbour_graph_hats",
    "write_hats_catalogue",
]

_INSTALL = "install the scale extra: pip install 'whatsreal[scale]'"


def _lsdb():
    try:
        import lsdb
    except ImportError as err:  # an optional extra
        raise WhatsrealError(f"the HATS backend needs LSDB; {_INSTALL}") from err
    return lsdb


def write_hats_catalogue(
    path: str | Path,
    ra: np.ndarray,
    dec: np.ndarray,
    key: np.ndarray,
    source_id: np.ndarray | None = None,
    margin_arcsec: float = 200.0,
    partition_rows: int | None = None,
) -> Path:
    """Write positions as a HATS collection (catalogue + margin cache of ``margin_arcsec``)
    at ``path``, replacing one that is there. ``margin_arcsec`` must be at least the
    largest radius the catalogue will be searched with (3' neighbours: 180)."""
    lsdb = _lsdb()
    frame = pd.DataFrame(
        {
            "key": np.asarray(key, dtype=np.int64),
            "ra": np.asarray(ra, dtype=np.float64),
            "dec": np.asarray(dec, dtype=np.float64),
        }
    )
    if source_id is not None:
        frame["source_id"] = np.asarray(source_id, dtype=np.int64)
    if frame["key"].duplicated().any():
        raise ConfigError(f"{path}: the column 'key' must be unique per row")
    cat = lsdb.from_dataframe(
        frame,
        ra_column="ra",
        dec_column="dec",
        margin_threshold=float(margin_arcsec),
        partition_rows=partition_rows,
    )
    cat.to_hats(Path(path), overwrite=True, progress_bar=False)
    return Path(path)


def _open(path: str | Path, columns: tuple[str, ...], radius_as: float | None = None):
    """Open a HATS catalogue, checking its columns and (for ``radius_as``) its margin."""
    lsdb = _lsdb()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no HATS catalogue at {path}")
    cat = lsdb.open_catalog(path)
    missing = sorted(set(columns) - set(cat.columns))
    if missing:
        raise ConfigError(
            f"HATS catalogue {path} lacks the column(s) {missing}; it needs {list(columns)} "
            "(write it with whatsreal.pairing.hats.write_hats_catalogue)"
        )
    if radius_as is not None:
        margin = None if cat.margin is None else cat.margin.hc_structure.catalog_info
        threshold = None if margin is None else margin.margin_threshold
        if threshold is None or threshold < radius_as:
            raise ConfigError(
                f"HATS catalogue {path} has a margin cache of {threshold} arcsec, less than the "
                f"{radius_as:g} arcsec search radius: neighbours across pixel borders would be "
                f"missed. Rebuild it with margin_threshold >= {radius_as:g}"
            )
    return cat


def _nearest(left, right, radius_as: float, a: str, b: str) -> pd.DataFrame:
    """Each ``left`` row's nearest ``right`` row within the radius: columns key_<a>, key_<b>."""
    out = left.crossmatch(
        right,
        n_neighbors=1,
        radius_arcsec=radius_as,
        suffixes=(f"_{a}", f"_{b}"),
        suffix_method="all_columns",
    )
    return out.to_dask_dataframe()[[f"key_{a}", f"key_{b}"]]


def hats_source_ids(
    catalogues: Mapping[str, str | Path], radius: float = 1.0
) -> dict[str, np.ndarray]:
    """Shared ``source_id`` per row of several surveys' HATS catalogues, by the rule of
    :func:`~whatsreal.pairing.assign_source_ids`: mutual nearest neighbours within
    ``radius`` (arcsec), surveys in order against a growing master list. Returns, per
    survey, the ids in the order of its rows' ``key``; ids are numbered as the in-memory rule
    numbers them (the first survey's rows, then each survey's new sources in key order).

    The joins run partition by partition under Dask. Gathered on one machine: every row's
    key and source (16 bytes a row, what the store needs anyway) and, one survey at a time,
    the matched keys that pick the rows joining the master list."""
    radius_as = angle_arcsec(radius, "radius")
    master = None
    assigned: dict[str, pd.Series] = {}
    for name, path in catalogues.items():
        cat = _open(path, ("key", "ra", "dec"))
        if master is None:
            keys = cat.to_dask_dataframe()["key"].compute().to_numpy()
            assigned[name] = pd.Series(keys, index=keys)  # a source of its own: its key
            master = cat.map_partitions(lambda df: df.assign(source=df["key"]))
            continue
        fwd = _nearest(cat, master, radius_as, "s", "m")
        bwd = _nearest(master, cat, radius_as, "m", "s")
        mutual = fwd.merge(bwd, on=["key_s", "key_m"]).compute()
        # a master row's source: the key of the row that started it
        src = master.to_dask_dataframe()[["key", "source"]].compute().set_index("key")["source"]
        keys = np.sort(cat.to_dask_dataframe()["key"].compute().to_numpy())
        ids = pd.Series(keys, index=keys)
        ids.loc[mutual["key_s"].to_numpy()] = src.loc[mutual["key_m"].to_numpy()].to_numpy()
        assigned[name] = ids
        matched = set(mutual["key_s"].tolist())
        new = cat.map_partitions(
            lambda df, m=matched: df[~df["key"].isin(m)].assign(source=df["key"])
        )
        master = master.concat(new, ignore_empty_margins=True)
    # dense ids in the in-memory order: sources numbered by the key of their first row
    parts = [ids.sort_index().to_numpy() for ids in assigned.values()]
    dense = np.unique(np.concatenate(parts), return_inverse=True)[1].astype(np.int64)
    bounds = np.cumsum([0, *(p.size for p in parts)])
    return {name: dense[bounds[i] : bounds[i + 1]] for i, name in enumerate(assigned)}


def hats_neighbours(
    path: str | Path, k: int = 5, radius: float = 180.0, extra: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest rows of another ``source_id`` within ``radius`` (arcsec) in one
    survey's HATS catalogue, nearest first: ``(keys, neighbour_keys, sep_arcsec)`` with
    ``keys`` sorted and the others (N, k), padded with -1 / NaN. ``extra``: how many rows of
    one source may crowd a row's candidates (default: the most rows any source has)."""
    radius_as = angle_arcsec(radius, "radius")
    k = neighbour_count(k)
    cat = _open(path, ("key", "ra", "dec", "source_id"), radius_as)
    frame = cat.to_dask_dataframe()
    if extra is None:
        extra = int(frame["source_id"].value_counts().max().compute())
    pairs = cat.crossmatch(
        cat,
        n_neighbors=k + int(extra),
        radius_arcsec=radius_as,
        suffixes=("_q", "_n"),
        suffix_method="all_columns",
        require_right_margin=True,
    )

    def keep_k(df: pd.DataFrame) -> pd.DataFrame:
        df = df[df["source_id_q"] != df["source_id_n"]]
        df = df.sort_values(["key_q", "_dist_arcsec", "key_n"], kind="stable")
        return df.groupby("key_q", sort=False).head(k)[["key_q", "key_n", "_dist_arcsec"]]

    near = pairs.to_dask_dataframe().map_partitions(keep_k).compute()
    keys = np.sort(frame["key"].compute().to_numpy())
    index = np.full((keys.size, k), -1, dtype=np.int64)
    seps = np.full((keys.size, k), np.nan, dtype=np.float32)
    if len(near):
        row = np.searchsorted(keys, near["key_q"].to_numpy())
        rank = near.groupby("key_q", sort=False).cumcount().to_numpy()
        index[row, rank] = near["key_n"].to_numpy()
        seps[row, rank] = near["_dist_arcsec"].to_numpy()
    return keys, index, seps


def assign_source_ids_hats(
    catalogues: Mapping[str, tuple[np.ndarray, np.ndarray]], radius: float, work: str | Path
) -> dict[str, np.ndarray]:
    """:func:`~whatsreal.pairing.assign_source_ids` through HATS: each survey's positions
    are written as a catalogue under ``work`` and matched by :func:`hats_source_ids`."""
    work = Path(work)
    paths, start = {}, 0
    for name, (ra, dec) in catalogues.items():
        key = start + np.arange(np.asarray(ra).size)
        start += key.size
        paths[name] = write_hats_catalogue(work / f"match_{name}", ra, dec, key)
    return hats_source_ids(paths, radius)


def neighbour_graph_hats(
    ra: np.ndarray,
    dec: np.ndarray,
    group: np.ndarray,
    source_id: np.ndarray,
    k: int,
    radius: float,
    work: str | Path,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~whatsreal.pairing.sky.neighbour_graph` through HATS: one catalogue per
    ``group`` (instrument) under ``work``, searched by :func:`hats_neighbours`; the same
    ``(index, sep_arcsec)`` rows, padded with -1 / NaN."""
    radius_as = angle_arcsec(radius, "radius")
    k = neighbour_count(k)
    group = np.asarray(group)
    index = np.full((group.size, k), -1, dtype=np.int64)
    seps = np.full((group.size, k), np.nan, dtype=np.float32)
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        if rows.size < 2:
            continue
        path = write_hats_catalogue(
            Path(work) / f"neighbours_{g}",
            np.asarray(ra)[rows],
            np.asarray(dec)[rows],
            rows,
            np.asarray(source_id)[rows],
            margin_arcsec=radius_as * 1.1,
        )
        keys, index[rows], seps[rows] = hats_neighbours(path, k, radius_as)
        assert np.array_equal(keys, rows)  # keys are the sorted rows of this group
    return index, seps
