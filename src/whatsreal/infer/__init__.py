"""Inference: embeddings (in memory or to Parquet), counterfactual samples, and property
posteriors from trained models."""

from whatsreal.infer.embed import embed_rows, embed_store
from whatsreal.infer.posterior import PropertyPosterior, predict_properties

__all__ = ["PropertyPosterior", "embed_rows", "embed_store", "predict_properties"]
