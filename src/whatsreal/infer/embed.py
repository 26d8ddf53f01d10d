"""Batch embedding of store rows with any model that has ``embed``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from whatsreal.store import ObservationStore


@torch.inference_mode()
def embed_rows(
    model: torch.nn.Module,
    store: ObservationStore,
    rows: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> dict[str, np.ndarray]:
    """Latents of the given rows (all rows by default), in row order.

    Dual models give ``{"physics": ..., "instrument": ...}``; single-latent models give
    ``{"latent": ...}``.
    """
    rows = np.arange(store.n_obs) if rows is None else np.asarray(rows, dtype=np.int64)
    model = model.to(device).eval()
    parts: dict[str, list[np.ndarray]] = {}
    for lo in range(0, rows.size, batch_size):
        x = torch.from_numpy(store.read(rows[lo : lo + batch_size])["flux"]).to(device)
        out = model.embed(x)
        named = (
            {"physics": out[0], "instrument": out[1]} if isinstance(out, tuple) else {"latent": out}
        )
        for key, value in named.items():
            parts.setdefault(key, []).append(value.float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}
