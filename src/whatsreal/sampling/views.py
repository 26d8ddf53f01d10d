"""The view sampler: anchors with physics views and instrument views, read from the store.

Vocabulary (DESIGN.md §2): for an *anchor* observation, *physics views* are other
observations of the same source by other instruments, and *instrument views* are
observations of other sources by the anchor's instrument (its sky neighbours when the store
has a neighbour graph, otherwise a random draw from the instrument's pool). Slots are padded
to fixed sizes and come with boolean masks; an anchor may have zero instrument views.

Determinism: every random choice for dataset item ``i`` comes from a generator seeded with
``(seed, epoch, i)``, so views are redrawn each epoch (call :meth:`set_epoch`) and are
identical for the same ``(seed, epoch)`` in any process or worker.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from whatsreal.errors import StoreValidationError
from whatsreal.sampling.splits import assign_split, split_code
from whatsreal.store import ObservationStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitSpec:
    """Fractions of sources held out for validation and test, and the hash seed."""

    val: float = 0.05
    test: float = 0.05
    seed: int = 0


class _SourceIndex:
    """CSR grouping of store rows by source, plus each row's split."""

    def __init__(
        self, store: ObservationStore, split: SplitSpec, visible: np.ndarray | None = None
    ) -> None:
        sid = store.source_id
        self.inst = store.instrument
        order = np.argsort(sid, kind="stable")
        if visible is not None:  # invisible rows: in no source's group, in no split
            order = order[visible[order]]
        self.sources, starts, counts = np.unique(sid[order], return_index=True, return_counts=True)
        self.rows = order
        self.ptr = np.concatenate([starts, [order.size]]).astype(np.int64)
        self.counts = counts
        self.source_split = assign_split(self.sources, split.val, split.test, split.seed)
        # position of each row's source in self.sources (-1: an invisible row)
        self.row_source = np.full(sid.size, -1, dtype=np.int64)
        self.row_source[order] = np.repeat(np.arange(self.sources.size), counts)
        self.row_split = np.full(sid.size, -1, dtype=np.int64)
        self.row_split[order] = self.source_split[self.row_source[order]]
        # Number of distinct instruments per source, vectorised over the CSR layout.
        pairs = np.unique(np.stack([self.row_source[order], self.inst[order]]), axis=1)
        self.n_instruments = np.bincount(pairs[0], minlength=self.sources.size)

    def rows_of(self, pos: int) -> np.ndarray:
        return self.rows[self.ptr[pos] : self.ptr[pos + 1]]


def _dist_info() -> tuple[int, int]:
    """(rank, world size) from torch.distributed if it is initialised, else (0, 1)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _open(store: ObservationStore | str) -> ObservationStore:
    return store if isinstance(store, ObservationStore) else ObservationStore(store)


def sky_context_rows(
    store: ObservationStore,
    rows: Sequence[int] | np.ndarray,
    k: int,
    allowed_row: np.ndarray | None = None,
    row_source: np.ndarray | None = None,
) -> np.ndarray:
    """The instrument context of each row: its first ``k`` neighbours in the store's sky graph
    (same instrument, nearest first) that are another source and allowed (``allowed_row``,
    a boolean per store row; all by default). (N, k) store rows, -1 in empty slots.

    The one rule for instrument views: training (:class:`ViewDataset`), inference and
    evaluation all call it.
    """
    if store.neighbours is None:
        raise StoreValidationError(
            f"{store.path} has no neighbour graph; run `whatsreal pair {store.path}`"
        )
    rows = np.asarray(rows, dtype=np.int64)
    sid = store.source_id if row_source is None else row_source
    out = np.full((rows.size, k), -1, dtype=np.int64)
    graph = store.neighbours.index
    for i, r in enumerate(rows):
        nb = graph[r]
        nb = nb[nb >= 0]
        keep = sid[nb] != sid[r]
        if allowed_row is not None:
            keep &= allowed_row[nb]
        nb = nb[keep][:k]
        out[i, : nb.size] = nb
    return out


def footprint_rows(store: ObservationStore, instrument: str, fraction: float) -> np.ndarray:
    """Rows a partial-overlap run may see (a boolean per store row): every row of the other
    instruments, and the rows of ``instrument`` in the southern declination strip that
    holds ``fraction`` of them.

    It emulates a survey that covers part of another's sky (HSC's ~1,100 deg² inside
    Legacy's ~20,000) on a full-overlap store, so that a partial-overlap run and a full one
    train on the same images and are tested on the same galaxies. A store that really has
    single-survey sources needs none of this: they are skipped as anchors and kept as
    instrument context, as here.
    """
    names = list(store.instruments)
    if instrument not in names:
        raise KeyError(f"footprint instrument {instrument!r} is not in {store.path}: {names}")
    if not 0 < fraction <= 1:
        raise ValueError(f"footprint fraction must be in (0, 1]; got {fraction}")
    if not store.has_positions:
        raise StoreValidationError(
            f"{store.path} has no ra/dec columns: a sky footprint needs positions"
        )
    mine = store.instrument == store.instrument_code(instrument)
    dec = np.asarray(store.table["dec"], dtype=np.float64)
    limit = np.quantile(dec[mine], fraction) if fraction < 1 else np.inf
    return ~mine | (dec <= limit)


class ViewDataset(Dataset):
    """Anchors of one split with up to ``n_physics`` physics and ``n_instrument`` instrument
    views each. One item per source that has a partner (an observation by another
    instrument); sources without one are skipped and counted.

    ``instrument_views``: ``"auto"`` uses the store's neighbour graph if it has one and the
    instrument's pool otherwise; ``"sky"`` requires the graph; ``"pool"`` ignores it.
    Training anchors only ever see training sources in any slot; validation and test
    anchors may take instrument views from training sources too (context known at
    inference), never from the other held-out split.

    ``visible`` (a boolean per store row, e.g. :func:`footprint_rows`) hides the other rows
    from every slot, as if the store did not hold them.
    """

    def __init__(
        self,
        store: ObservationStore | str,
        split: str = "train",
        n_physics: int = 1,
        n_instrument: int = 5,
        instrument_views: str = "auto",
        splits: SplitSpec = SplitSpec(),
        arrays: Sequence[str] = ("flux",),
        seed: int = 0,
        visible: np.ndarray | None = None,
    ) -> None:
        self.store = _open(store)
        if visible is not None:
            visible = np.asarray(visible)
            if visible.dtype != bool or visible.shape != (self.store.n_obs,):
                raise ValueError(
                    f"visible must be a boolean per store row, shape ({self.store.n_obs},); "
                    f"got {visible.dtype} {visible.shape}"
                )
        if n_physics < 1:
            raise ValueError(
                f"n_physics must be >= 1 (the physics encoder needs a view); got {n_physics}"
            )
        if n_instrument < 0:
            raise ValueError(f"n_instrument must be >= 0; got {n_instrument}")
        if instrument_views not in ("auto", "sky", "pool"):
            raise ValueError(
                f"instrument_views must be 'auto', 'sky' or 'pool'; got {instrument_views!r}"
            )
        missing = [a for a in arrays if a not in self.store.arrays]
        if missing:
            raise KeyError(
                f"array(s) {missing} not in {self.store.path}; it has {self.store.arrays}"
            )
        if instrument_views == "sky" and self.store.neighbours is None:
            raise StoreValidationError(
                f"instrument_views='sky' but {self.store.path} has no neighbour graph; run "
                f"`whatsreal pair {self.store.path}` or use instrument_views='pool'"
            )
        self.use_graph = instrument_views != "pool" and self.store.neighbours is not None
        self.split = split
        self.split_index = split_code(split)
        self.n_physics, self.n_instrument = n_physics, n_instrument
        self.arrays = tuple(arrays)
        self.seed, self.epoch = int(seed), 0
        self.index = _SourceIndex(self.store, splits, visible)
        idx = self.index
        in_split = idx.source_split == self.split_index
        has_partner = idx.n_instruments >= 2
        self.n_skipped = int((in_split & ~has_partner).sum())
        if self.n_skipped:
            log.warning(
                "%s split: skipped %d source(s) with no partner observation by another instrument",
                split,
                self.n_skipped,
            )
        self.anchor_sources = np.flatnonzero(in_split & has_partner)
        # Sources allowed as instrument context for this split.
        allowed = {0, self.split_index}
        self.allowed_row = np.isin(idx.row_split, list(allowed))
        self.pools = {
            code: np.flatnonzero((idx.inst == code) & self.allowed_row)
            for code in range(len(self.store.instruments))
        }
        self._xyz = sky_unit_vectors(self.store)

    def set_epoch(self, epoch: int) -> None:
        """Redraw views: items depend on (seed, epoch, index)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.anchor_sources.size)

    def sky_order(self) -> np.ndarray:
        """Items sorted along a Z-order (Morton) curve over the sky, so that a run of
        consecutive items is a compact patch whose anchors share sky neighbours."""
        if not self.store.has_positions:
            raise StoreValidationError(
                f"{self.store.path} has no ra/dec columns: sky-clustered batches need "
                "positions; use batching='random'"
            )
        first_rows = self.index.rows[self.index.ptr[self.anchor_sources]]
        ra = np.asarray(self.store.table["ra"], dtype=np.float64)[first_rows]
        dec = np.asarray(self.store.table["dec"], dtype=np.float64)[first_rows]
        return np.argsort(morton_code(ra, dec), kind="stable")

    # -- drawing view indices (no I/O) ------------------------------------------------
    def draw(self, i: int, epoch: int | None = None) -> dict[str, np.ndarray | int]:
        """Choose the store rows of item ``i``: anchor, physics and instrument views.

        The choice is a fixed function of (seed, epoch, i); ``epoch`` defaults to the one
        set by :meth:`set_epoch`.
        """
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} outside [0, {len(self)}) of the {self.split} split")
        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng((self.seed, epoch, i))
        idx = self.index
        pos = int(self.anchor_sources[i])
        rows = idx.rows_of(pos)
        insts = idx.inst[rows]
        # Anchor instrument drawn uniformly among the source's instruments, then one of its
        # observations by that instrument.
        anchor_inst = rng.choice(np.unique(insts))
        anchor = int(rng.choice(rows[insts == anchor_inst]))
        partners = rows[insts != anchor_inst]
        phys = rng.permutation(partners)[: self.n_physics]
        phys_rows = np.full(self.n_physics, -1, dtype=np.int64)
        phys_rows[: phys.size] = phys

        inst_rows = np.full(self.n_instrument, -1, dtype=np.int64)
        if self.n_instrument:
            src = idx.row_source[anchor]
            if self.use_graph:
                chosen = sky_context_rows(
                    self.store, [anchor], self.n_instrument, self.allowed_row, idx.row_source
                )[0]
                chosen = chosen[chosen >= 0]
            else:
                pool = self.pools[int(anchor_inst)]
                want = min(pool.size, self.n_instrument + 8)
                cand = pool[rng.choice(pool.size, size=want, replace=False)] if want else pool
                chosen = cand[idx.row_source[cand] != src][: self.n_instrument]
            inst_rows[: chosen.size] = chosen
        return {
            "anchor_row": anchor,
            "physics_rows": phys_rows,
            "instrument_rows": inst_rows,
        }

    # -- reading ---------------------------------------------------------------------
    def __getitems__(self, items: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """Draw a batch of items and read all their rows in one pass over the store."""
        return self.read_draws([self.draw(int(i)) for i in items])

    def read_draws(self, draws: Sequence[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
        """Read the rows chosen by :meth:`draw` for a batch, each unique row once."""
        anchors = np.array([d["anchor_row"] for d in draws], dtype=np.int64)
        phys = np.stack([d["physics_rows"] for d in draws])
        inst = (
            np.stack([d["instrument_rows"] for d in draws])
            if self.n_instrument
            else np.zeros((len(draws), 0), dtype=np.int64)
        )
        wanted = np.concatenate([anchors, phys[phys >= 0], inst[inst >= 0]])
        uniq = np.unique(wanted)
        data = self.store.read(uniq, self.arrays)
        lookup = {int(r): j for j, r in enumerate(uniq)}
        codes = self.index.inst
        out = []
        for b, d in enumerate(draws):
            item: dict[str, torch.Tensor] = {}
            a = lookup[int(anchors[b])]
            for name, arr in data.items():
                key = "anchor" if name == "flux" else f"anchor_{name}"
                item[key] = torch.from_numpy(arr[a])
            for slot, rows in (("physics", phys[b]), ("instrument_views", inst[b])):
                real = rows >= 0
                views = np.zeros((rows.size, *self.store.shape), dtype=data["flux"].dtype)
                if real.any():
                    views[real] = data["flux"][[lookup[int(r)] for r in rows[real]]]
                item[slot] = torch.from_numpy(views)
                mask_key = "physics_mask" if slot == "physics" else "instrument_mask"
                item[mask_key] = torch.from_numpy(real)
            item["physics_instrument"] = torch.from_numpy(
                np.where(phys[b] >= 0, codes[np.maximum(phys[b], 0)], -1)
            )
            item["anchor_row"] = torch.tensor(d["anchor_row"])
            item["anchor_xyz"] = torch.from_numpy(self._xyz[d["anchor_row"]])
            item["physics_rows"] = torch.from_numpy(phys[b])
            item["instrument_rows"] = torch.from_numpy(inst[b])
            item["source"] = torch.tensor(int(self.index.row_source[d["anchor_row"]]))
            item["instrument"] = torch.tensor(int(codes[d["anchor_row"]]))
            out.append(item)
        return out

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([i])[0]


class StepIndexedViews(Dataset):
    """A :class:`ViewDataset` addressed by ``epoch * len(views) + item``, so that a batch
    sampler alone decides which epoch's draw each index gets (workers need no ``set_epoch``).
    """

    def __init__(self, views: ViewDataset) -> None:
        self.views = views

    def __len__(self) -> int:
        return len(self.views)

    def __getitems__(self, items: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        n = len(self.views)
        return self.views.read_draws([self.views.draw(int(k) % n, int(k) // n) for k in items])

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([k])[0]


def sky_unit_vectors(store: Any) -> np.ndarray:
    """(N, 3) float32 unit vectors of every store row's (ra, dec); zeros without positions
    (they are then never close to anything)."""
    n = len(store)
    if not store.has_positions:
        return np.zeros((n, 3), dtype=np.float32)
    ra = np.deg2rad(np.asarray(store.table["ra"], dtype=np.float64))
    dec = np.deg2rad(np.asarray(store.table["dec"], dtype=np.float64))
    xyz = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=1)
    return xyz.astype(np.float32)


def morton_code(ra: np.ndarray, dec: np.ndarray, bits: int = 16) -> np.ndarray:
    """Z-order index of sky positions (degrees) on a 2^bits grid of the bounding box in
    (ra cos(dec), dec): nearby codes are nearby on the sky (up to the curve's jumps)."""
    dec_mid = np.deg2rad(np.median(dec)) if dec.size else 0.0
    # unwrap RA around the median so a field straddling RA = 0 stays contiguous
    ra_c = (ra - np.median(ra) + 180.0) % 360.0 - 180.0
    coords = [ra_c * np.cos(dec_mid), dec]
    cells = []
    for c in coords:
        lo, hi = (c.min(), c.max()) if c.size else (0.0, 1.0)
        span = hi - lo if hi > lo else 1.0
        cells.append(np.minimum(((c - lo) / span * (1 << bits)).astype(np.int64), (1 << bits) - 1))
    code = np.zeros(ra.shape, dtype=np.int64)
    for b in range(bits):
        code |= ((cells[0] >> b) & 1) << (2 * b)
        code |= ((cells[1] >> b) & 1) << (2 * b + 1)
    return code


class StepBatchSampler(Sampler[list[int]]):
    """Endless batches where the batch of global step ``g`` is a fixed function of
    (seed, g): a run resumed at step g sees exactly the batches an uninterrupted run would.

    Each epoch is a seeded permutation of ``n_items``, cut into global batches of
    ``batch_size * world_size`` (the tail is dropped); rank r takes the r-th slice.
    Indices are ``epoch * n_items + item`` (see :class:`StepIndexedViews`).

    With ``order`` (a permutation of the items, e.g. :meth:`ViewDataset.sky_order`), global
    batches are instead runs of consecutive items of ``order``, rotated by a seeded offset
    each epoch and visited in a seeded random order: sky-clustered batches.
    """

    def __init__(
        self,
        n_items: int,
        batch_size: int,
        seed: int = 0,
        start_step: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        order: np.ndarray | None = None,
    ) -> None:
        rank_, world_ = _dist_info()
        self.rank = rank_ if rank is None else int(rank)
        self.world_size = world_ if world_size is None else int(world_size)
        self.n_items, self.batch_size = int(n_items), int(batch_size)
        self.seed, self.start_step = int(seed), int(start_step)
        self.steps_per_epoch = self.n_items // (self.batch_size * self.world_size)
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"{self.n_items} items cannot fill one global batch of "
                f"{self.batch_size} x {self.world_size} ranks; lower the batch size"
            )
        self._perm_epoch, self._perm = -1, np.empty(0, dtype=np.int64)
        self.order = None if order is None else np.asarray(order, dtype=np.int64)
        if self.order is not None and not np.array_equal(
            np.sort(self.order), np.arange(self.n_items)
        ):
            raise ValueError(f"order must be a permutation of the {self.n_items} items")

    def _epoch_perm(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, epoch))
        if self.order is None:
            return rng.permutation(self.n_items)
        gb = self.batch_size * self.world_size
        rolled = np.roll(self.order, -int(rng.integers(self.n_items)))
        runs = rolled[: self.steps_per_epoch * gb].reshape(self.steps_per_epoch, gb)
        return runs[rng.permutation(self.steps_per_epoch)].ravel()

    def batch(self, step: int) -> list[int]:
        """Indices of this rank's share of global step ``step``."""
        epoch, j = divmod(int(step), self.steps_per_epoch)
        if epoch != self._perm_epoch:
            self._perm = self._epoch_perm(epoch)
            self._perm_epoch = epoch
        gb = self.batch_size * self.world_size
        chunk = self._perm[j * gb : (j + 1) * gb]
        mine = chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        return (epoch * self.n_items + mine).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


def collate_views(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack per-item dicts into a batch dict (all slots already have fixed sizes)."""
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


class ObservationDataset(Dataset):
    """Single observations of one split, for objectives that encode the anchor itself
    (the structured contrastive model). Items carry the source and instrument labels that
    define positives."""

    def __init__(
        self,
        store: ObservationStore | str,
        split: str = "train",
        splits: SplitSpec = SplitSpec(),
        arrays: Sequence[str] = ("flux",),
    ) -> None:
        self.store = _open(store)
        missing = [a for a in arrays if a not in self.store.arrays]
        if missing:
            raise KeyError(
                f"array(s) {missing} not in {self.store.path}; it has {self.store.arrays}"
            )
        self.split = split
        self.index = _SourceIndex(self.store, splits)
        self.rows = np.flatnonzero(self.index.row_split == split_code(split))
        self.arrays = tuple(arrays)

    def __len__(self) -> int:
        return int(self.rows.size)

    def __getitems__(self, items: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """Read a batch of observations in one sorted pass."""
        rows = self.rows[np.asarray(items, dtype=np.int64)]
        data = self.store.read(rows, self.arrays)
        out = []
        for j, r in enumerate(rows):
            item = {("x" if k == "flux" else k): torch.from_numpy(v[j]) for k, v in data.items()}
            item["source"] = torch.tensor(int(self.index.row_source[r]))
            item["instrument"] = torch.tensor(int(self.index.inst[r]))
            item["row"] = torch.tensor(int(r))
            out.append(item)
        return out

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([i])[0]


class SourceBatchSampler(Sampler[list[int]]):
    """Batches of ``sources_per_batch`` sources with up to ``views_per_source`` observations
    each (distinct instruments first), so every batch holds same-source positives.

    Sources with fewer than ``min_views`` observations (no possible positive) are left
    out. Deterministic given ``(seed, epoch)``. Under DDP each rank takes every
    ``num_replicas``-th batch; pass ``rank``/``num_replicas`` or let them be read from
    ``torch.distributed``.
    """

    def __init__(
        self,
        dataset: ObservationDataset,
        sources_per_batch: int,
        views_per_source: int = 2,
        seed: int = 0,
        drop_last: bool = True,
        min_views: int = 2,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if sources_per_batch < 1 or views_per_source < 1:
            raise ValueError("sources_per_batch and views_per_source must be >= 1")
        self.sources_per_batch, self.views_per_source = sources_per_batch, views_per_source
        self.seed, self.epoch, self.drop_last = seed, 0, drop_last
        if num_replicas is None:
            rank, num_replicas = _dist_info()
        self.num_replicas, self.rank = num_replicas, rank or 0
        # Group dataset positions by source.
        src = dataset.index.row_source[dataset.rows]
        order = np.argsort(src, kind="stable")
        _, starts = np.unique(src[order], return_index=True)
        groups = np.split(order, starts[1:])
        self.groups = [g for g in groups if g.size >= min_views]
        if not self.groups:
            raise ValueError(
                f"no source in the {dataset.split} split has >= {min_views} observations; "
                "contrastive batches need repeated observations of a source"
            )
        self.inst = dataset.index.inst[dataset.rows]

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for a new epoch."""
        self.epoch = int(epoch)

    def _all_batches(self) -> list[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        perm = rng.permutation(len(self.groups))
        batches = []
        for start in range(0, perm.size, self.sources_per_batch):
            chosen = perm[start : start + self.sources_per_batch]
            if self.drop_last and chosen.size < self.sources_per_batch:
                break
            batch: list[int] = []
            for g in chosen:
                members = rng.permutation(self.groups[g])
                # distinct instruments first, then repeats
                _, first = np.unique(self.inst[members], return_index=True)
                first = np.sort(first)
                rest = np.setdiff1d(np.arange(members.size), first, assume_unique=True)
                ordered = members[np.concatenate([first, rest])]
                batch.extend(int(x) for x in ordered[: self.views_per_source])
            batches.append(batch)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        usable = (len(batches) // self.num_replicas) * self.num_replicas
        yield from batches[self.rank : usable : self.num_replicas]

    def __len__(self) -> int:
        n = len(self.groups) / self.sources_per_batch
        n = math.floor(n) if self.drop_last else math.ceil(n)
        return n // self.num_replicas
