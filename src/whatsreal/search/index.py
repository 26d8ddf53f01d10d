"""FAISS indexes over one latent space, saved beside the embeddings they index.

Metric: Euclidean (L2) distance on the raw latents, the geometry the decoders and probes
see; distances returned are Euclidean, not FAISS's squared L2. Kinds:

- ``flat``: exact ``IndexFlatL2``; chosen automatically up to ``exact_max`` vectors (1e5);
- ``ivf``: ``IndexIVFFlat`` with ``nlist = 4 sqrt(N)`` k-means cells (trained on at most
  64 points per cell) and ``nprobe = nlist / 100`` (at least 8) cells read per query;
  chosen automatically above ``exact_max``, because it builds in seconds at 10^6 vectors on
  2 cores where HNSW takes minutes;
- ``hnsw``: ``IndexHNSWFlat`` (M=32, efConstruction 40, efSearch 64), on request.

An index folder holds, per space, ``<space>.faiss`` and ``<space>.json`` (space, metric,
kind, count, dim, parameters, and the embeddings file, relative to the folder).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from whatsreal.errors import IndexFormatError, QueryError
from whatsreal.search.embeddings import Embeddings
from whatsreal.utils import atomic_write_json, atomic_write_with

__all__ = [
    "EXACT_MAX",
    "KINDS",
    "SearchIndex",
    "VectorIndex",
    "build_index",
    "build_vector_index",
    "default_index_dir",
]

EXACT_MAX = 100_000
KINDS = ("auto", "flat", "ivf", "hnsw")
INDEX_FORMAT = 1


def _faiss():
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - faiss-cpu is a dependency
        raise ImportError("similarity search needs faiss: pip install faiss-cpu") from err
    return faiss


@dataclass
class VectorIndex:
    """A FAISS index with the kind and parameters it was built with."""

    index: Any
    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        """Number of vectors indexed."""
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        """Width of the vectors."""
        return int(self.index.d)

    def apply_params(self, **params: Any) -> None:
        """Set search-time parameters (``nprobe`` for IVF, ``ef_search`` for HNSW)."""
        for key, value in params.items():
            if value is None:
                continue
            if key == "nprobe" and self.kind == "ivf":
                self.index.nprobe = int(value)
            elif key == "ef_search" and self.kind == "hnsw":
                self.index.hnsw.efSearch = int(value)
            else:
                continue
            self.params[key] = int(value)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Euclidean distances and positions (N, k) of the k nearest vectors; -1 past the end."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise QueryError(
                f"query vectors have {queries.shape[1]} dimensions; the index has {self.dim}"
            )
        d2, ids = self.index.search(queries, int(k))
        dist = np.sqrt(np.maximum(d2, 0.0)).astype(np.float32)
        dist[ids < 0] = np.inf
        return dist, ids


def build_vector_index(
    vectors: np.ndarray,
    kind: str = "auto",
    exact_max: int = EXACT_MAX,
    nlist: int | None = None,
    nprobe: int | None = None,
    hnsw_m: int = 32,
    ef_search: int = 64,
    seed: int = 0,
) -> VectorIndex:
    """Index (N, D) vectors; ``kind="auto"`` is exact up to ``exact_max`` vectors, IVF above."""
    faiss = _faiss()
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {KINDS}")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"vectors must be (N, D); got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("vectors hold NaN or inf; embed again from a finite store and model")
    n, d = x.shape
    if kind == "auto":
        kind = "flat" if n <= exact_max else "ivf"
    if kind != "flat" and n == 0:
        raise ValueError(f"a {kind} index needs vectors to train on; got none")
    params: dict[str, Any] = {}
    if kind == "flat":
        index = faiss.IndexFlatL2(d)
    elif kind == "ivf":
        nlist = int(nlist or max(1, min(round(4 * math.sqrt(n)), n // 39)))
        nprobe = int(nprobe or min(nlist, max(8, nlist // 100)))
        quantizer = faiss.IndexFlatL2(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_L2)
        index.cp.niter = 10
        index.cp.seed = seed
        rng = np.random.default_rng(seed)
        sample = min(n, 64 * nlist)
        train = x if sample == n else x[np.sort(rng.choice(n, sample, replace=False))]
        index.train(train)
        index.nprobe = nprobe
        params = {"nlist": nlist, "nprobe": nprobe}
    else:
        index = faiss.IndexHNSWFlat(d, int(hnsw_m))
        index.hnsw.efConstruction = 40
        index.hnsw.efSearch = int(ef_search)
        params = {"m": int(hnsw_m), "ef_construction": 40, "ef_search": int(ef_search)}
    if n:
        index.add(x)
    return VectorIndex(index=index, kind=kind, params=params)


def default_index_dir(embeddings: str | Path) -> Path:
    """``embeddings.parquet`` -> ``embeddings.index/`` beside it."""
    embeddings = Path(embeddings)
    return embeddings.parent / f"{embeddings.stem}.index"


def build_index(
    embeddings: str | Path,
    out: str | Path | None = None,
    spaces: list[str] | None = None,
    kind: str = "auto",
    exact_max: int = EXACT_MAX,
    **params: Any,
) -> Path:
    """Build and save one index per latent space of an embeddings file (all by default)."""
    from whatsreal import __version__

    faiss = _faiss()
    emb = Embeddings(embeddings)
    out = default_index_dir(emb.path) if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for space in spaces or emb.spaces:
        vi = build_vector_index(emb.vectors(space), kind=kind, exact_max=exact_max, **params)
        atomic_write_with(
            out / f"{space}.faiss", lambda p, i=vi: faiss.write_index(i.index, str(p))
        )
        rel = os.path.relpath(emb.path.resolve(), out.resolve())
        atomic_write_json(
            out / f"{space}.json",
            {
                "format_version": INDEX_FORMAT,
                "space": space,
                "metric": "l2",
                "kind": vi.kind,
                "count": vi.count,
                "dim": vi.dim,
                "params": vi.params,
                "exact_max": exact_max,
                "embeddings": rel,
                "embeddings_created_utc": emb.meta.get("created_utc"),
                "whatsreal_version": __version__,
                "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )
    return out


class SearchIndex:
    """A saved index of one space, with the embeddings table it indexes."""

    def __init__(self, directory: str | Path, space: str | None = None) -> None:
        faiss = _faiss()
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise IndexFormatError(
                f"index folder {self.directory} does not exist; build it with "
                "`whatsreal index EMBEDDINGS.parquet`"
            )
        available = sorted(p.stem for p in self.directory.glob("*.json"))
        if space is None:
            space = next((s for s in ("physics", "latent") if s in available), None)
            space = space or (available[0] if available else "physics")
        meta_path = self.directory / f"{space}.json"
        if not meta_path.is_file():
            raise QueryError(
                f"{self.directory} has no index of the {space!r} space; it has "
                f"{available or 'none'} (build it with `whatsreal index EMBEDDINGS.parquet`)"
            )
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        self.space = space
        path = self.directory / f"{space}.faiss"
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise IndexFormatError(
                f"cannot read {path} ({' '.join(str(exc).split())[:200]}); rebuild it with "
                "`whatsreal index`"
            ) from None
        if int(index.ntotal) != int(self.meta["count"]):
            raise IndexFormatError(
                f"{path} holds {index.ntotal} vectors but {meta_path} says {self.meta['count']} "
                "(an interrupted rebuild?); rebuild it with `whatsreal index`"
            )
        self.vector_index = VectorIndex(index, self.meta["kind"], dict(self.meta["params"]))
        self.vector_index.apply_params(**self.meta["params"])
        self._embeddings: Embeddings | None = None

    @property
    def embeddings_path(self) -> Path:
        """The embeddings file this index was built from."""
        return (self.directory / self.meta["embeddings"]).resolve()

    @property
    def embeddings(self) -> Embeddings:
        """The embeddings table (read on first use); its row count must match the index."""
        if self._embeddings is None:
            emb = Embeddings(self.embeddings_path)
            stamp = self.meta.get("embeddings_created_utc")
            if len(emb) != self.count or (stamp and emb.meta.get("created_utc") != stamp):
                raise IndexFormatError(
                    f"{self.embeddings_path} ({len(emb)} rows, written "
                    f"{emb.meta.get('created_utc')}) is not the file the index in "
                    f"{self.directory} was built from ({self.count} rows, written {stamp}); "
                    "rebuild it with `whatsreal index`"
                )
            self._embeddings = emb
        return self._embeddings

    @property
    def count(self) -> int:
        """Number of vectors indexed."""
        return self.vector_index.count

    def check_not_empty(self) -> None:
        """Raise a clear error if the index holds no vectors."""
        if self.count == 0:
            raise IndexFormatError(
                f"the {self.space!r} index in {self.directory} is empty (0 vectors): its "
                f"embeddings {self.meta['embeddings']} have no rows; embed a non-empty store"
            )

    def search(
        self, vectors: np.ndarray, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Distances and table positions (N, k) of each query's k nearest, leaving out
        ``exclude[i]`` (a query's own position) from row i's answer."""
        self.check_not_empty()
        if k < 1:
            raise ValueError(f"k must be >= 1; got {k}")
        extra = 0 if exclude is None else 1
        dist, ids = self.vector_index.search(vectors, min(k + extra, self.count))
        if exclude is None:
            return dist[:, :k], ids[:, :k]
        return drop_self(dist, ids, np.asarray(exclude), k)


def drop_self(
    dist: np.ndarray, ids: np.ndarray, self_ids: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own id from a (N, k+1) answer, keeping the first k others."""
    keep = ids != self_ids[:, None]
    dist, ids = np.where(keep, dist, np.inf), np.where(keep, ids, -1)
    # rows where self was not returned (approximate search, duplicates) lose their last hit;
    # with fewer than k others, the tail is -1 at infinite distance
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, 1), np.take_along_axis(ids, order, 1)
