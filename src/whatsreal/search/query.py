"""Queries of a saved index: by the id of an embedded source, or by a FITS cutout.

A cutout is read as the store holds observations (the survey reader's units and crop, as
``whatsreal counterfactual --fits`` writes them): the first HDU with data, shaped like the
store's arrays ((C, H, W) images, (C, T) series); a ``BANDS`` header keyword, when present,
must list the store's bands. It is then embedded by the model's own ``embed``, which applies
the normalisation the model was trained with, exactly as ``whatsreal embed`` did for the
indexed rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from whatsreal.errors import IndexFormatError, QueryError
from whatsreal.search.index import SearchIndex

__all__ = ["SearchResult", "embed_cutout", "read_cutout", "search_by_file", "search_by_id"]


@dataclass
class SearchResult:
    """A query and its neighbours (nearest first), each a dict of ids, instrument, distance."""

    space: str
    query: dict[str, Any]
    neighbours: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``whatsreal search --json``)."""
        return {"space": self.space, "query": self.query, "neighbours": self.neighbours}


def _neighbours(index: SearchIndex, dist: np.ndarray, ids: np.ndarray) -> list[dict[str, Any]]:
    emb = index.embeddings
    out = []
    for rank, (d, i) in enumerate(zip(dist, ids, strict=True), start=1):
        if i < 0:
            continue
        out.append({"rank": rank, **emb.record(int(i)), "distance": float(d)})
    return out


def search_by_id(
    index: SearchIndex, source_id: int, k: int = 10, instrument: str | None = None
) -> SearchResult:
    """Neighbours of an embedded observation of ``source_id`` (by ``instrument``, else its
    first observation), across all instruments; the query observation itself is left out."""
    index.check_not_empty()
    emb = index.embeddings
    pos = emb.locate(source_id, instrument)
    vec = emb.vectors(index.space)[pos : pos + 1]
    dist, ids = index.search(vec, k, exclude=np.array([pos]))
    return SearchResult(
        index.space, {"kind": "id", **emb.record(pos)}, _neighbours(index, dist[0], ids[0])
    )


def read_cutout(
    path: str | Path, shape: tuple[int, ...], bands: dict[str, list[str]] | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """The array of a FITS cutout, checked against the store's ``shape`` and ``bands``
    (per instrument); also returns what its header says (``bands``, ``instrument``)."""
    from astropy.io import fits

    path = Path(path)
    if not path.is_file():
        raise QueryError(f"cutout {path} does not exist")
    try:
        with fits.open(path, memmap=False) as hdus:
            hdu = next((h for h in hdus if h.data is not None and h.data.size), None)
            if hdu is None:
                raise QueryError(f"{path} has no HDU with data; write the cutout in the first HDU")
            data = np.asarray(hdu.data, dtype=np.float32)
            header = hdu.header
    except OSError as exc:
        raise QueryError(f"cannot read {path} as FITS ({' '.join(str(exc).split())})") from None
    info: dict[str, Any] = {"file": str(path)}
    want = tuple(int(s) for s in shape)
    if data.shape != want:
        hint = ""
        if data.ndim == len(want) and sorted(data.shape) == sorted(want):
            hint = " (the axes look transposed: FITS arrays must be (bands, y, x))"
        elif data.ndim == len(want) - 1:
            hint = f" (a single plane; the model needs all {want[0]} bands stacked)"
        raise QueryError(
            f"cutout {path} has shape {data.shape}, but the model's store holds {want} "
            f"(bands first){hint}; cut it out and preprocess it like the store's observations"
        )
    if "BANDS" in header and bands:
        got = [b.strip() for b in str(header["BANDS"]).split(",") if b.strip()]
        inst = str(header.get("INSTRUME", "")).strip()
        allowed = {inst: bands[inst]} if inst in bands else bands
        if not any(list(b) == got for b in allowed.values()):
            raise QueryError(
                f"cutout {path} has bands {got} (header BANDS), but the model's store has "
                f"{ {k: list(v) for k, v in allowed.items()} }; give the same bands in the same "
                "order"
            )
        info["bands"] = got
    if "INSTRUME" in header:
        info["instrument"] = str(header["INSTRUME"])
    if not np.isfinite(data).all():
        n_bad = int((~np.isfinite(data)).sum())
        raise QueryError(
            f"cutout {path} has {n_bad} NaN or inf pixel(s); fill masked pixels (e.g. with 0) "
            "as the store's preprocessing does"
        )
    return data, info


def embed_cutout(
    model_dir: str | Path, flux: np.ndarray, autocast: str | None = None
) -> dict[str, np.ndarray]:
    """Latents of one observation through the saved model, on the path ``whatsreal embed``
    uses (same memory format, same ``embed``, hence the same normalisation, and the same
    precision: ``autocast`` as recorded in the embeddings, e.g. ``"bfloat16"``)."""
    import torch

    from whatsreal.infer.embed import embed_array, inference_model
    from whatsreal.models.base import load_pretrained

    dtype = getattr(torch, autocast) if autocast else None
    model = inference_model(load_pretrained(model_dir), precision=dtype)
    return {k: v[0] for k, v in embed_array(model, flux[None], autocast=dtype).items()}


def search_by_file(
    index: SearchIndex, path: str | Path, k: int = 10, model_dir: str | Path | None = None
) -> SearchResult:
    """Neighbours of a FITS cutout embedded through the model that wrote the embeddings."""
    index.check_not_empty()
    meta = index.embeddings.meta
    model_dir = Path(model_dir or meta["model"])
    if not model_dir.is_dir():
        raise IndexFormatError(
            f"the model {model_dir} that wrote {index.embeddings_path} is not there any more; "
            "pass the model folder (CLI: --model DIR)"
        )
    flux, info = read_cutout(path, tuple(meta["shape"]), meta.get("bands"))
    z = embed_cutout(model_dir, flux, meta.get("autocast"))[index.space]
    dist, ids = index.search(z[None], k)
    return SearchResult(index.space, {"kind": "file", **info}, _neighbours(index, dist[0], ids[0]))
