"""Anomaly scores in a latent space: k-NN distance and an isolation forest.

Higher means more anomalous for both. The k-NN score of a vector is its mean Euclidean
distance to its k nearest other vectors (itself excluded), through a FAISS index (exact
below :data:`~whatsreal.search.index.EXACT_MAX`, IVF above, or a saved index); the
isolation-forest score is scikit-learn's ``-score_samples``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from whatsreal.search.index import SearchIndex, VectorIndex, build_vector_index, drop_self

__all__ = [
    "METHODS",
    "anomaly_scores",
    "iforest_scores",
    "knn_scores",
    "top_anomalies",
    "whiten",
]

METHODS = ("knn", "iforest")


def knn_scores(
    vectors: np.ndarray, k: int = 10, index: VectorIndex | None = None, batch: int = 4096
) -> np.ndarray:
    """Mean distance of each vector to its ``k`` nearest others (N,), float32."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"k-NN anomaly scores need at least 2 vectors; got {n}")
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    k = min(k, n - 1)
    index = index or build_vector_index(x)
    if index.count != n:
        raise ValueError(f"the index holds {index.count} vectors but {n} were given")
    out = np.empty(n, np.float32)
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        dist, ids = index.search(x[lo:hi], k + 1)
        dist, ids = drop_self(dist, ids, np.arange(lo, hi), k)
        dist = np.where(ids >= 0, dist, np.nan)
        out[lo:hi] = np.nanmean(dist, axis=1)
    return out


def whiten(vectors: np.ndarray, rel_floor: float = 1e-10) -> np.ndarray:
    """PCA-whitened copy of ``vectors`` (N, D), by scikit-learn's ``PCA(whiten=True)``:
    centred, rotated onto the principal axes and scaled to unit variance on each, so a
    distance weighs every direction the set spans alike (Mahalanobis). Without it a k-NN
    score is led by the widest directions (in a physics latent: brightness), and a source
    odd along a narrow one is not isolated. Axes with variance below ``rel_floor`` times the
    largest are dropped (they carry only rounding)."""
    from sklearn.decomposition import PCA

    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"whitening needs an (N >= 2, D) array; got shape {x.shape}")
    if not x.var(axis=0).sum() > 0:
        raise ValueError("whitening: the vectors do not vary (every direction has zero variance)")
    var = PCA(svd_solver="full").fit(x).explained_variance_
    keep = int((var > rel_floor * var.max()).sum())
    return PCA(keep, whiten=True, svd_solver="full").fit_transform(x).astype(np.float32)


def iforest_scores(vectors: np.ndarray, n_estimators: int = 200, seed: int = 0) -> np.ndarray:
    """Isolation-forest anomaly score of each vector (N,); higher is more isolated."""
    from sklearn.ensemble import IsolationForest

    x = np.asarray(vectors, dtype=np.float32)
    if x.shape[0] < 2:
        raise ValueError(f"an isolation forest needs at least 2 vectors; got {x.shape[0]}")
    forest = IsolationForest(n_estimators=n_estimators, random_state=seed).fit(x)
    return (-forest.score_samples(x)).astype(np.float32)


def anomaly_scores(
    index: SearchIndex, method: str = "knn", k: int = 10, seed: int = 0, whiten_space: bool = False
) -> np.ndarray:
    """Scores of every indexed observation in the index's space, in table order.
    ``whiten_space`` scores the PCA-whitened vectors (:func:`whiten`; the k-NN then builds
    its own exact index instead of the saved one)."""
    if method not in METHODS:
        raise ValueError(f"unknown anomaly method {method!r}; choose one of {METHODS}")
    index.check_not_empty()
    vectors = index.embeddings.vectors(index.space)
    if whiten_space:
        vectors = whiten(vectors)
    if method == "knn":
        return knn_scores(vectors, k=k, index=None if whiten_space else index.vector_index)
    return iforest_scores(vectors, seed=seed)


def top_anomalies(
    index: SearchIndex,
    method: str = "knn",
    top: int = 20,
    k: int = 10,
    seed: int = 0,
    whiten_space: bool = False,
) -> list[dict[str, Any]]:
    """The ``top`` most anomalous observations, most anomalous first, with their scores."""
    scores = anomaly_scores(index, method=method, k=k, seed=seed, whiten_space=whiten_space)
    order = np.argsort(-scores, kind="stable")[:top]
    emb = index.embeddings
    return [
        {"rank": r, **emb.record(int(i)), "score": float(scores[i])}
        for r, i in enumerate(order, start=1)
    ]
