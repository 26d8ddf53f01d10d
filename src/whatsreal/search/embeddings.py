"""Read an embeddings Parquet file written by :func:`whatsreal.infer.embed.embed_store`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from whatsreal.errors import IndexFormatError, QueryError
from whatsreal.infer.embed import EMBEDDINGS_META_KEY, LATENT_COLUMNS, latent_column

__all__ = ["Embeddings"]


class Embeddings:
    """The table of an embeddings file (ids, instrument, positions) plus its latents on demand.

    ``meta`` holds what the writer recorded: model and store paths, modality, shape, bands,
    the latent spaces and their widths.
    """

    def __init__(self, path: str | Path) -> None:
        import pyarrow.parquet as pq

        self.path = Path(path)
        if not self.path.is_file():
            raise IndexFormatError(
                f"embeddings file {self.path} does not exist; write it with "
                "`whatsreal embed --model DIR --store S --out FILE.parquet`"
            )
        try:
            self._table = pq.read_table(self.path)
        except Exception as exc:  # pyarrow raises several unrelated types on a damaged file
            raise IndexFormatError(
                f"cannot read {self.path} as Parquet ({' '.join(str(exc).split())}); the file "
                "is damaged: re-run `whatsreal embed`"
            ) from None
        raw = (self._table.schema.metadata or {}).get(EMBEDDINGS_META_KEY)
        if raw is None:
            raise IndexFormatError(
                f"{self.path} is Parquet but not a whatsreal embeddings file (no "
                f"{EMBEDDINGS_META_KEY.decode()} metadata); write it with `whatsreal embed`"
            )
        self.meta: dict[str, Any] = json.loads(raw)
        self.spaces: list[str] = list(self.meta["spaces"])
        col = self._table.column
        self.row = col("row").to_numpy()
        self.obs_id = col("obs_id").to_numpy()
        self.source_id = col("source_id").to_numpy()
        self.instrument = np.asarray(col("instrument").to_pylist(), dtype=object)
        names = self._table.column_names
        self.ra = col("ra").to_numpy() if "ra" in names else None
        self.dec = col("dec").to_numpy() if "dec" in names else None
        self._vectors: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return self._table.num_rows

    def vectors(self, space: str) -> np.ndarray:
        """Latents of one space, (N, D) float32, C-contiguous (what FAISS takes); cached."""
        if space in self._vectors:
            return self._vectors[space]
        if space not in self.spaces:
            raise QueryError(
                f"{self.path} has no {space!r} latent; it has {self.spaces} "
                f"(single-latent models have one space, 'latent')"
                if space in LATENT_COLUMNS
                else f"unknown space {space!r}; {self.path} has {self.spaces}"
            )
        arr = self._table.column(latent_column(space)).combine_chunks()
        dim = int(self.meta["spaces"][space])
        flat = arr.flatten().to_numpy(zero_copy_only=False)
        self._vectors[space] = np.ascontiguousarray(flat.reshape(-1, dim), dtype=np.float32)
        return self._vectors[space]

    def locate(self, source_id: int, instrument: str | None = None) -> int:
        """Position (in this table) of an observation of ``source_id``, by ``instrument`` if
        given, else its first observation; errors name what exists instead."""
        hits = np.flatnonzero(self.source_id == int(source_id))
        if hits.size == 0:
            lo, hi = (
                (int(self.source_id.min()), int(self.source_id.max())) if len(self) else (0, -1)
            )
            raise QueryError(
                f"source_id {source_id} is not in {self.path} ({len(self)} observations, "
                f"source ids {lo}..{hi}); query an id that the embedded store holds"
            )
        if instrument is not None:
            sel = hits[self.instrument[hits] == instrument]
            if sel.size == 0:
                seen = sorted(set(self.instrument[hits]))
                raise QueryError(
                    f"source_id {source_id} has no observation by {instrument!r}; it was "
                    f"observed by {seen}"
                )
            hits = sel
        return int(hits[0])

    def record(self, pos: int) -> dict[str, Any]:
        """One observation's identifying columns as plain Python values."""
        out: dict[str, Any] = {
            "row": int(self.row[pos]),
            "obs_id": int(self.obs_id[pos]),
            "source_id": int(self.source_id[pos]),
            "instrument": str(self.instrument[pos]),
        }
        if self.ra is not None and self.dec is not None:
            out["ra"] = float(self.ra[pos])
            out["dec"] = float(self.dec[pos])
        return out
