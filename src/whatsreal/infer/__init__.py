"""Inference: embeddings (in memory or to Parquet) and counterfactual samples from trained
models."""

from whatsreal.infer.embed import embed_rows, embed_store

__all__ = ["embed_rows", "embed_store"]
