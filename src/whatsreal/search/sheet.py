"""Contact sheets of a query's neighbours: cutouts (RGB asinh) or light curves (matplotlib)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from whatsreal.errors import IndexFormatError
from whatsreal.search.index import SearchIndex
from whatsreal.search.query import SearchResult
from whatsreal.utils import atomic_write_with

__all__ = ["contact_sheet", "rgb_asinh"]


def rgb_asinh(image: np.ndarray, softening: float | None = None) -> np.ndarray:
    """(C, H, W) -> (H, W, 3) in [0, 1]: the first three bands as blue, green, red (bluest
    band in blue), each asinh-stretched; fewer than three bands give grey."""
    img = np.asarray(image, dtype=np.float64)
    planes = img[:3][::-1] if img.shape[0] >= 3 else np.repeat(img[:1], 3, axis=0)
    if softening is None:
        mad = np.median(np.abs(planes - np.median(planes)))
        softening = float(1.4826 * mad) or 1.0
    y = np.arcsinh(planes / softening)
    lo, hi = np.percentile(y, 1), np.percentile(y, 99.5)
    y = np.clip((y - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
    return np.moveaxis(y, 0, -1)


def contact_sheet(
    index: SearchIndex,
    result: SearchResult,
    out: str | Path,
    query_flux: np.ndarray | None = None,
    columns: int = 6,
) -> Path:
    """Write a PNG with the query (when its array is known) and its neighbours, each titled
    with source id, instrument and distance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from whatsreal.store import ObservationStore

    meta = index.embeddings.meta
    try:
        store = ObservationStore(meta["store"])
    except (OSError, FileNotFoundError) as exc:
        raise IndexFormatError(
            f"the contact sheet needs the embedded store {meta['store']}: {exc}"
        ) from None
    rows = [n["row"] for n in result.neighbours]
    if query_flux is None and result.query.get("kind") == "id":
        query_flux = store.read([result.query["row"]])["flux"][0]
    arrays = list(store.read(rows)["flux"]) if rows else []
    titles = [
        f"#{n['rank']} src {n['source_id']}\n{n['instrument']}  d={n['distance']:.3g}"
        for n in result.neighbours
    ]
    if query_flux is not None:
        q = result.query
        arrays.insert(0, np.asarray(query_flux))
        titles.insert(0, f"query src {q.get('source_id', '')}\n{q.get('instrument', 'file')}")
    n = max(1, len(arrays))
    cols = min(columns, n)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(2.2 * cols, 2.7 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, arr, title in zip(axes.flat, arrays, titles, strict=False):
        ax.set_axis_on()
        if store.modality == "image" or arr.ndim == 3:
            ax.imshow(rgb_asinh(arr), origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            for c, curve in enumerate(np.atleast_2d(arr)):
                ax.plot(curve, lw=0.8, label=str(c))
            ax.tick_params(labelsize=6)
        ax.set_title(title, fontsize=7)
    fig.suptitle(f"{result.space} space neighbours", fontsize=9)
    fig.tight_layout()
    try:
        atomic_write_with(out, lambda p: fig.savefig(p, format="png", dpi=100))
    finally:
        plt.close(fig)
    return Path(out)
