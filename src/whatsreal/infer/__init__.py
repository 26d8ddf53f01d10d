"""Inference: embeddings (and, later, counterfactual samples) from trained models."""

from whatsreal.infer.embed import embed_rows

__all__ = ["embed_rows"]
