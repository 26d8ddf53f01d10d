"""Property posteriors from an embeddings file: fit on labelled rows, predict to Parquet.

The file-level side of :mod:`whatsreal.infer.posterior` behind ``whatsreal predict``:
:func:`fit_posterior_from_embeddings` takes the rows of an embeddings file that one
instrument and one split hold, their truth from the store, and fits and saves a
:class:`~whatsreal.infer.posterior.PropertyPosterior`; :func:`predict_embeddings` writes
mean, std, median and central intervals of every property per row to Parquet (atomically).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from whatsreal.errors import ConfigError, IndexFormatError
from whatsreal.infer.posterior import (
    PosteriorSettings,
    PropertyPosterior,
    PropertyPrediction,
    default_properties,
    store_properties,
)
from whatsreal.sampling import SPLITS, SplitSpec, assign_split
from whatsreal.search.embeddings import Embeddings
from whatsreal.store import ObservationStore
from whatsreal.utils import atomic_write_with, check_folder_target

__all__ = [
    "PREDICTIONS_META_KEY",
    "check_embeddings_store",
    "fit_posterior_from_embeddings",
    "predict_embeddings",
    "score_predictions",
    "select_rows",
]

_log = logging.getLogger(__name__)
PREDICTIONS_META_KEY = b"whatsreal.predictions"


def _embeddings(emb: Embeddings | str | os.PathLike[str]) -> Embeddings:
    return emb if isinstance(emb, Embeddings) else Embeddings(emb)


def select_rows(
    emb: Embeddings,
    instrument: str | None = None,
    split: str | None = None,
    splits: SplitSpec | None = None,
) -> np.ndarray:
    """Positions in the embeddings table of one instrument's rows (all when None) in one
    split of sources (all when None or ``"all"``), by the same hash the sampler uses."""
    keep = np.ones(len(emb), dtype=bool)
    if instrument is not None:
        names = sorted(set(emb.instrument.tolist()))
        if instrument not in names:
            raise ConfigError(f"instrument {instrument!r} is not in {emb.path}; it holds {names}")
        keep &= emb.instrument == instrument
    if split not in (None, "all"):
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; choose one of {[*SPLITS, 'all']}")
        s = splits or SplitSpec()
        keep &= assign_split(emb.source_id, s.val, s.test, s.seed) == SPLITS.index(split)
    pos = np.flatnonzero(keep)
    if pos.size == 0:
        raise ConfigError(
            f"no rows of {emb.path} are in split {split!r} of instrument {instrument!r}; "
            "choose another split or instrument"
        )
    return pos


def check_embeddings_store(emb: Embeddings, store: ObservationStore) -> None:
    """The store must be the one the embeddings were written from (its rows index it)."""
    made, have = emb.meta.get("store_created_utc"), store.provenance.get("created_utc")
    if made != have or int(emb.meta.get("n_rows", -1)) != store.n_obs:
        raise IndexFormatError(
            f"{emb.path} was embedded from the store {emb.meta.get('store')} (created {made}, "
            f"{emb.meta.get('n_rows')} rows), not {store.path} (created {have}, "
            f"{store.n_obs} rows); give the store it was embedded from, or re-run "
            "`whatsreal embed` on this one"
        )


def fit_posterior_from_embeddings(
    embeddings: Embeddings | str | os.PathLike[str],
    store: ObservationStore | str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    properties: Sequence[str] | None = None,
    instrument: str | None = None,
    split: str | None = "train",
    splits: SplitSpec | None = None,
    space: str = "physics",
    flow: str = "nsf",
    transforms: int = 4,
    hidden: Sequence[int] = (128, 128),
    bins: int = 8,
    passes: int | None = 2,
    bound: float = 5.0,
    settings: PosteriorSettings | Mapping[str, Any] | None = None,
    validation_split: str | None = None,
    calibrate: bool = True,
    overwrite: bool = False,
    progress: bool = False,
) -> PropertyPosterior:
    """Fit a posterior on one space's latents of the selected rows against the store's truth,
    and save it to ``out`` when given (the rows and files it came from are recorded).

    With ``validation_split`` (e.g. ``"val"``: sources the encoder never trained on), that
    split's rows of the same instrument stop the training early and, with ``calibrate``, set
    the posterior's width (:meth:`PropertyPosterior.calibrate`); else a random part of the
    fitting rows stops it and the width is left as trained.
    """
    emb = _embeddings(embeddings)
    store = store if isinstance(store, ObservationStore) else ObservationStore(store)
    check_embeddings_store(emb, store)
    if out is not None:  # refuse before training, not after
        check_folder_target(out, overwrite)
    pos = select_rows(emb, instrument, split, splits)
    z = emb.vectors(space)[pos]
    names = list(properties or default_properties(store.modality))
    y = store_properties(store, emb.row[pos], names)
    s = splits or SplitSpec()
    source = {
        "model": emb.meta.get("model"),
        "embeddings": str(emb.path.resolve()),
        "store": str(store.path.resolve()),
        "store_created_utc": store.provenance.get("created_utc"),
        "instrument": instrument,
        "split": split,
        "splits": {"val": s.val, "test": s.test, "seed": s.seed},
    }
    post = PropertyPosterior(
        z.shape[1],
        names,
        flow,
        transforms,
        hidden,
        bins,
        passes,
        bound,
        space=space,
        source=source,
    )
    validation = None
    if validation_split is not None:
        if validation_split == split or split in (None, "all"):
            raise ConfigError(
                f"validation split {validation_split!r} overlaps the fitting split {split!r}; "
                "fit on one split (e.g. train) and validate on another (e.g. val)"
            )
        vpos = select_rows(emb, instrument, validation_split, splits)
        validation = (emb.vectors(space)[vpos], store_properties(store, emb.row[vpos], names))
        source["validation_split"] = validation_split
    post.fit(z, y, settings, progress=progress, validation=validation)
    if validation is not None and calibrate:
        post.calibrate(*validation)
    if out is not None:
        post.save(out, overwrite=overwrite)
    return post


def predict_embeddings(
    posterior: PropertyPosterior | str | os.PathLike[str],
    embeddings: Embeddings | str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    instrument: str | None = None,
    split: str | None = None,
    splits: SplitSpec | None = None,
    n_samples: int = 1000,
    levels: Sequence[float] = (0.68, 0.95),
    seed: int = 0,
    overwrite: bool = False,
) -> tuple[np.ndarray, PropertyPrediction]:
    """Posterior summaries of the selected rows; with ``out``, written as Parquet (ids, then
    ``<property>_mean``, ``_std``, ``_median``, ``_lo68``, ``_hi68``, ...). Returns the
    positions in the embeddings table and the prediction."""
    post = (
        posterior if isinstance(posterior, PropertyPosterior) else PropertyPosterior.load(posterior)
    )
    emb = _embeddings(embeddings)
    if out is not None:
        out = Path(out)
        if out.suffix != ".parquet":
            raise ConfigError(f"predictions are written as Parquet; give a .parquet path: {out}")
        if out.exists() and not overwrite:
            raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    space = post.config["space"]
    model = post.config.get("source", {}).get("model")
    if model and emb.meta.get("model") and model != emb.meta["model"]:
        _log.warning(
            "the posterior was fitted on embeddings of %s but %s holds embeddings of %s",
            model,
            emb.path,
            emb.meta["model"],
        )
    pos = select_rows(emb, instrument, split, splits)
    z = emb.vectors(space)[pos]
    try:
        pred = post.summarize(z, n_samples, levels, seed)
    except ValueError as exc:
        raise ValueError(f"{emb.path}: {exc}") from None
    if out is not None:
        _write_predictions(out, emb, pos, pred, post, n_samples, seed)
    return pos, pred


def _write_predictions(
    out: Path,
    emb: Embeddings,
    pos: np.ndarray,
    pred: PropertyPrediction,
    post: PropertyPosterior,
    n_samples: int,
    seed: int,
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from whatsreal import __version__

    cols: dict[str, Any] = {
        "row": emb.row[pos],
        "obs_id": emb.obs_id[pos],
        "source_id": emb.source_id[pos],
        "instrument": emb.instrument[pos].tolist(),
    }
    if emb.ra is not None and emb.dec is not None:
        cols["ra"], cols["dec"] = emb.ra[pos], emb.dec[pos]
    cols.update({k: np.asarray(v, dtype=np.float32) for k, v in pred.columns().items()})
    meta = {
        "properties": pred.names,
        "levels": sorted(pred.intervals),
        "n_samples": int(n_samples),
        "seed": int(seed),
        "space": post.config["space"],
        "posterior_source": post.config.get("source", {}),
        "embeddings": str(emb.path.resolve()),
        "whatsreal_version": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    table = pa.table(cols).replace_schema_metadata({PREDICTIONS_META_KEY: json.dumps(meta)})
    atomic_write_with(out, lambda p: pq.write_table(table, p))


def score_predictions(pred: PropertyPrediction, truth: np.ndarray) -> dict[str, dict[str, float]]:
    """Per property: R² of the posterior mean and the coverage of each central interval
    ({name: {"r2", "coverage_68", ...}}), against truth (N, P) in the same order."""
    t = np.asarray(truth, dtype=np.float64)
    if t.shape != pred.mean.shape:
        raise ValueError(f"truth must be {pred.mean.shape} (N, P); got {t.shape}")
    out = {}
    for j, name in enumerate(pred.names):
        ss_tot = max(float(((t[:, j] - t[:, j].mean()) ** 2).sum()), 1e-300)
        row = {"r2": 1.0 - float(((t[:, j] - pred.mean[:, j]) ** 2).sum()) / ss_tot}
        for lv, (lo, hi) in pred.intervals.items():
            row[f"coverage_{round(100 * lv)}"] = float(
                ((t[:, j] >= lo[:, j]) & (t[:, j] <= hi[:, j])).mean()
            )
        out[name] = row
    return out
