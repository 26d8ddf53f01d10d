"""Embeddings of store rows with any model that has ``embed``, in memory or to Parquet.

:func:`embed_store` (``whatsreal embed``) writes one Parquet file: the store row, obs/source
id, instrument name, ra/dec when the store has positions, and each latent as a fixed-size
list of float32 (``physics_latent`` and ``instrument_latent`` for dual models, ``latent``
for single-latent ones). The run is resumable: every ``part_rows`` rows are written to a
part file in the hidden folder ``.<out>.parts`` beside the output; a rerun keeps the parts
that a run with the same model, store and part size finished, and computes only the rest.
The parts are then streamed into the output, which is renamed into place (atomic).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from whatsreal.store import ObservationStore
from whatsreal.utils import atomic_write_json, atomic_write_with

__all__ = [
    "EMBEDDINGS_META_KEY",
    "LATENT_COLUMNS",
    "CompiledEmbed",
    "embed_array",
    "embed_rows",
    "embed_store",
    "fold_batchnorm",
    "inference_model",
    "latent_column",
]

_log = logging.getLogger(__name__)

# Space name -> Parquet column holding that latent.
LATENT_COLUMNS = {
    "physics": "physics_latent",
    "instrument": "instrument_latent",
    "latent": "latent",
}
EMBEDDINGS_META_KEY = b"whatsreal.embeddings"
EMBEDDINGS_FORMAT = 1


def latent_column(space: str) -> str:
    """The Parquet column of a latent space, with an error that lists the known spaces."""
    try:
        return LATENT_COLUMNS[space]
    except KeyError:
        raise KeyError(f"unknown latent space {space!r}; known: {sorted(LATENT_COLUMNS)}") from None


# Modules whose registration order is their execution order for (convN, bnN) pairs: timm's
# ResNet blocks and stem, and the features_only wrapper around them.
_FOLDABLE = ("BasicBlock", "Bottleneck", "ResNet", "FeatureListNet")


def fold_batchnorm(model: torch.nn.Module) -> int:
    """Fold each eval-mode BatchNorm2d into the Conv2d just before it, in place (same outputs
    to float rounding, one memory pass fewer per layer); returns how many were folded.

    Only pairs whose order is certain are folded: adjacent items of an ``nn.Sequential`` and
    ``convN``/``bnN`` children registered one after the other in timm's ResNet modules.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    n = 0
    for module in list(model.modules()):
        names = list(module._modules)
        for a, b in itertools.pairwise(names):
            conv, bn = module._modules[a], module._modules[b]
            if not (isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d)):
                continue
            paired = a.startswith("conv") and b == "bn" + a[len("conv") :]
            if isinstance(module, torch.nn.Sequential) or (
                paired and type(module).__name__ in _FOLDABLE
            ):
                setattr(module, a, fuse_conv_bn_eval(conv.eval(), bn.eval()))
                setattr(module, b, torch.nn.Identity())
                n += 1
    return n


def inference_model(
    model: torch.nn.Module,
    device: str | torch.device = "cpu",
    channels_last: bool | None = None,
    precision: torch.dtype | None = None,
    compile: bool = False,
    batch_size: int = 256,
) -> torch.nn.Module:
    """The model on ``device`` in eval mode, for inference only (changed in place): batch norms
    folded into their convolutions, which runs the ResNet encoders faster on CPU
    (benchmarks/embed.py measures it). ``channels_last`` defaults to on for image models in
    bf16 only: oneDNN's bf16 kernels run faster in it, while in fp32 it was measured slower
    on one CPU and faster on another, so fp32 keeps the contiguous layout.

    ``precision`` is the dtype :func:`embed_array` will be given as ``autocast`` (e.g.
    ``torch.bfloat16``); it only picks that default layout. Casting the weights to bf16 once
    instead of autocasting was measured no faster in the same layout (benchmarks/embed.py).
    ``compile`` wraps ``embed`` in :class:`CompiledEmbed` (Inductor, weights frozen), built
    for ``batch_size`` rows per call.
    """
    model = model.to(device).eval()
    fold_batchnorm(model)
    low = precision is not None and precision != torch.float32
    if channels_last is None:
        channels_last = low and getattr(model, "modality", None) == "image"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        return CompiledEmbed(model, batch_size)
    return model


class _EmbedForward(torch.nn.Module):
    """``model.embed`` as a ``forward``, the one method torch.compile traces."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model.embed(x)


class CompiledEmbed(torch.nn.Module):
    """``model.embed`` compiled by Inductor with the weights frozen into the graph (oneDNN
    then prepacks them once instead of on every call), for inference only.

    It compiles for one batch size: shorter batches are zero-padded and longer ones split, so
    a store is embedded with one compilation (2-20 s on 2 cores, then 1.1-1.2x faster in
    fp32 and in bf16; benchmarks/embed.py). Rows never interact (batch norms are folded, the
    model is in eval mode), so the padding does not change any row's latents. The first call
    compiles; it needs a C++ compiler, as Inductor's CPU backend does.
    """

    def __init__(self, model: torch.nn.Module, batch_size: int = 256) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.model = model
        self.batch_size = int(batch_size)
        self.config = getattr(model, "config", {})
        self.modality = getattr(model, "modality", None)
        self.compiled = torch.compile(
            _EmbedForward(model), dynamic=False, options={"freezing": True}
        )

    def embed(self, x: torch.Tensor):
        """The wrapped model's ``embed`` of ``x``, through the compiled graph."""
        bs = self.batch_size
        if x.shape[0] == 0:
            return self.model.embed(x)
        layout = torch.contiguous_format
        if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last):
            layout = torch.channels_last
        parts = []
        for lo in range(0, x.shape[0], bs):
            chunk = x[lo : lo + bs]
            n = chunk.shape[0]
            # every call gets a fresh full batch, so the compiled graph's guards (shape,
            # layout, inference-mode tensor or not) hold for all batches: one compilation
            batch = torch.zeros((bs, *x.shape[1:]), dtype=x.dtype, device=x.device)
            batch = batch.contiguous(memory_format=layout)
            batch[:n].copy_(chunk)
            out = self.compiled(batch)
            parts.append(tuple(o[:n] for o in out) if isinstance(out, tuple) else out[:n])
        if isinstance(parts[0], tuple):
            return tuple(torch.cat(p) for p in zip(*parts, strict=True))
        return torch.cat(parts)


def _channels_last(model: torch.nn.Module) -> bool:
    """Whether the model's first 4-D weight (an image stem) is stored channels_last."""
    for p in model.parameters():
        if p.ndim == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


def embed_array(
    model: torch.nn.Module,
    flux: np.ndarray | torch.Tensor,
    autocast: torch.dtype | None = None,
) -> dict[str, np.ndarray]:
    """Latents of one batch of observations in store units (the model normalises them itself).

    Dual models give ``{"physics": ..., "instrument": ...}``; single-latent models give
    ``{"latent": ...}``; each (N, D) float32. Image batches follow the model's memory format
    (see :func:`inference_model`). ``autocast`` (e.g. ``torch.bfloat16``) runs the encoders
    in lower precision under ``torch.autocast``, faster where the CPU has bf16 units (with the
    model prepared by ``inference_model(precision=...)``) but no longer bit-identical.
    """
    device = next(model.parameters()).device
    x = flux if torch.is_tensor(flux) else torch.from_numpy(np.asarray(flux, dtype=np.float32))
    x = x.to(device=device, dtype=torch.float32)
    if x.ndim == 4 and _channels_last(model):
        x = x.contiguous(memory_format=torch.channels_last)
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None),
    ):
        out = model.embed(x)
    named = {"physics": out[0], "instrument": out[1]} if isinstance(out, tuple) else {"latent": out}
    return {k: v.float().cpu().numpy() for k, v in named.items()}


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
        flux = store.read(rows[lo : lo + batch_size])["flux"]
        for key, value in embed_array(model, flux).items():
            parts.setdefault(key, []).append(value)
    return {k: np.concatenate(v) for k, v in parts.items()}


# -- to Parquet, resumable --------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _model_fingerprint(model_dir: Path) -> str:
    """Hash of the saved model's files, so parts of another model are never reused."""
    from whatsreal.models.base import CONFIG_NAME, SAFETENSORS_NAME, TORCH_NAME

    files = [model_dir / n for n in (CONFIG_NAME, SAFETENSORS_NAME, TORCH_NAME)]
    return hashlib.sha256("".join(_sha256(p) for p in files if p.is_file()).encode()).hexdigest()


def parts_folder(out: str | Path) -> Path:
    """The hidden folder beside ``out`` that holds the finished parts of an interrupted run."""
    out = Path(out)
    return out.parent / f".{out.name}.parts"


def _schema(store: ObservationStore, dims: dict[str, int], meta: dict[str, Any]):
    import pyarrow as pa

    fields = [
        pa.field("row", pa.int64()),
        pa.field("obs_id", pa.int64()),
        pa.field("source_id", pa.int64()),
        pa.field("instrument", pa.string()),
    ]
    if store.has_positions:
        fields += [pa.field("ra", pa.float64()), pa.field("dec", pa.float64())]
    fields += [pa.field(latent_column(s), pa.list_(pa.float32(), d)) for s, d in dims.items()]
    return pa.schema(fields, metadata={EMBEDDINGS_META_KEY: json.dumps(meta).encode()})


def _table(store: ObservationStore, rows: np.ndarray, latents: dict[str, np.ndarray], schema):
    """One Arrow table of store rows and their latents."""
    import pyarrow as pa

    names = np.asarray(store.instruments, dtype=object)
    cols: dict[str, Any] = {
        "row": rows,
        "obs_id": store.table["obs_id"][rows].astype(np.int64),
        "source_id": store.source_id[rows].astype(np.int64),
        "instrument": names[store.instrument[rows]],
    }
    if store.has_positions:
        cols["ra"] = store.table["ra"][rows].astype(np.float64)
        cols["dec"] = store.table["dec"][rows].astype(np.float64)
    for space, z in latents.items():
        z = np.ascontiguousarray(z, dtype=np.float32)
        cols[latent_column(space)] = pa.FixedSizeListArray.from_arrays(
            pa.array(z.reshape(-1)), z.shape[1]
        )
    return pa.table(cols, schema=schema)


def _write_part(path: Path, table) -> None:
    """Write one finished part atomically (a killed run leaves whole parts only)."""
    import pyarrow.parquet as pq

    atomic_write_with(path, lambda p: pq.write_table(table, p))


def embed_store(
    model_dir: str | Path,
    store: str | Path | ObservationStore,
    out: str | Path,
    batch_size: int = 256,
    part_rows: int = 8192,
    device: str | torch.device = "cpu",
    progress: bool = False,
    overwrite: bool = False,
    bf16: bool = False,
    compile: bool = False,
) -> Path:
    """Embed every store row with the saved model in ``model_dir`` into the Parquet file ``out``.

    Resumable (see the module docstring) and atomic: ``out`` appears only when complete.
    ``bf16`` runs the encoders under bf16 autocast, image models in channels_last (see
    :func:`inference_model`). It is faster on CPUs with bf16 units,
    the latents differ from fp32 by about 1% (benchmarks/embed.py measures it), and it is
    recorded, so queries by file reuse it. ``compile`` runs the encoders through
    :class:`CompiledEmbed` (one compilation first, then faster; needs a C++ compiler).
    """
    import pyarrow.parquet as pq

    from whatsreal import __version__
    from whatsreal.models.base import load_pretrained

    out, model_dir = Path(out), Path(model_dir)
    if batch_size < 1 or part_rows < 1:
        raise ValueError(f"batch_size and part_rows must be >= 1; got {batch_size}, {part_rows}")
    if out.exists() and not overwrite:
        raise FileExistsError(
            f"{out} already exists; pass overwrite=True (CLI: --overwrite) to replace it"
        )
    if out.suffix != ".parquet":
        raise ValueError(f"embeddings are written as Parquet; give a path ending .parquet: {out}")
    store = store if isinstance(store, ObservationStore) else ObservationStore(store)
    autocast = torch.bfloat16 if bf16 else None
    loaded = load_pretrained(model_dir, map_location=device)
    model_class = type(loaded).__name__
    model = inference_model(
        loaded, device, precision=autocast, compile=compile, batch_size=batch_size
    )
    cfg = getattr(model, "config", {})
    want = cfg.get("in_channels")
    size = cfg.get("size") if cfg.get("modality") == "image" else None
    if (want is not None and store.shape[0] != want) or (size and store.shape[1:] != (size,) * 2):
        raise ValueError(
            f"model {model_dir} takes {want} channels{f' of {size}x{size}' if size else ''} but "
            f"store {store.path} holds {store.shape}; embed a store of the data the model was "
            "trained on"
        )
    try:
        probe = embed_array(model, np.zeros((1, *store.shape), np.float32), autocast=autocast)
    except Exception as err:
        if not compile:
            raise
        raise RuntimeError(
            f"compiling the encoders failed ({type(err).__name__}: {err}); torch.compile's CPU "
            "backend needs a working C++ compiler. Embed without compile (CLI: drop --compile)"
        ) from err
    dims = {space: int(z.shape[1]) for space, z in probe.items()}
    plan = {
        "model_sha256": _model_fingerprint(model_dir),
        "store": str(store.path.resolve()),
        "store_created_utc": store.provenance["created_utc"],
        "n_obs": store.n_obs,
        "part_rows": part_rows,
        "dims": dims,
        "bf16": bool(bf16),
    }
    meta = {
        "format_version": EMBEDDINGS_FORMAT,
        "model": str(model_dir.resolve()),
        "model_class": model_class,
        "store": str(store.path.resolve()),
        "store_created_utc": store.provenance["created_utc"],
        "modality": store.modality,
        "shape": list(store.shape),
        "bands": store.bands,
        "spaces": dims,
        "autocast": "bfloat16" if bf16 else None,
        "compiled": bool(compile),
        "n_rows": store.n_obs,
        "whatsreal_version": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    schema = _schema(store, dims, meta)
    parts = parts_folder(out)
    plan_file = parts / "plan.json"
    if parts.is_dir():
        old = json.loads(plan_file.read_text()) if plan_file.is_file() else None
        if old != plan:
            _log.warning("discarding the parts in %s: they came from another model/store", parts)
            shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    atomic_write_json(plan_file, plan)

    starts = list(range(0, store.n_obs, part_rows))
    names = [parts / f"part-{i:06d}.parquet" for i in range(len(starts))]
    todo = [i for i, p in enumerate(names) if not p.is_file()]
    done_rows = store.n_obs - sum(min(part_rows, store.n_obs - starts[i]) for i in todo)
    if done_rows:
        _log.info("resuming: %d of %d rows already embedded in %s", done_rows, store.n_obs, parts)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=store.n_obs, initial=done_rows, desc="embed", unit="obs")
    try:
        for i in todo:
            rows = np.arange(starts[i], min(store.n_obs, starts[i] + part_rows), dtype=np.int64)
            chunks: dict[str, list[np.ndarray]] = {}
            for lo in range(0, rows.size, batch_size):
                batch = rows[lo : lo + batch_size]
                flux = store.read(batch)["flux"]
                for key, z in embed_array(model, flux, autocast=autocast).items():
                    chunks.setdefault(key, []).append(z)
                if bar is not None:
                    bar.update(batch.size)
            latents = {k: np.concatenate(v) for k, v in chunks.items()}
            _write_part(names[i], _table(store, rows, latents, schema))
    finally:
        if bar is not None:
            bar.close()

    def _assemble(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema) as writer:
            if not names:
                writer.write_table(schema.empty_table())
            for name in names:
                writer.write_table(pq.read_table(name).replace_schema_metadata(schema.metadata))

    atomic_write_with(out, _assemble)
    shutil.rmtree(parts, ignore_errors=True)
    return out
