"""Similarity and anomaly search in the physics or instrument latent space (FAISS).

Embed a store (``whatsreal embed``, :func:`whatsreal.infer.embed.embed_store`), index each
space (:func:`build_index`), then query by id or by FITS cutout (:func:`search_by_id`,
:func:`search_by_file`) or rank anomalies (:func:`top_anomalies`).
"""

from whatsreal.search.anomaly import (
    anomaly_scores,
    iforest_scores,
    knn_scores,
    top_anomalies,
    whiten,
)
from whatsreal.search.embeddings import Embeddings
from whatsreal.search.index import (
    EXACT_MAX,
    SearchIndex,
    VectorIndex,
    build_index,
    build_vector_index,
    default_index_dir,
)
from whatsreal.search.query import SearchResult, read_cutout, search_by_file, search_by_id
from whatsreal.search.sheet import contact_sheet

__all__ = [
    "EXACT_MAX",
    "Embeddings",
    "SearchIndex",
    "SearchResult",
    "VectorIndex",
    "anomaly_scores",
    "build_index",
    "build_vector_index",
    "contact_sheet",
    "default_index_dir",
    "iforest_scores",
    "knn_scores",
    "read_cutout",
    "search_by_file",
    "search_by_id",
    "top_anomalies",
    "whiten",
]
