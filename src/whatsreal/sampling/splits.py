"""Deterministic train/val/test split by source.

Each source is assigned by a hash of ``(source_id, seed)``, not by its position in the
store, so the split of a source never changes when the store grows or is reordered, and
one source never lands in two splits.
"""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a fast, well-mixed 64-bit hash (vectorised)."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def source_uniform(source_id: np.ndarray, seed: int = 0) -> np.ndarray:
    """A reproducible number in [0, 1) per source id."""
    sid = np.asarray(source_id).astype(np.int64).view(np.uint64)
    salt = _splitmix64(np.array([seed], dtype=np.uint64))[0]
    return (_splitmix64(sid ^ salt) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def assign_split(
    source_id: np.ndarray, val: float = 0.05, test: float = 0.05, seed: int = 0
) -> np.ndarray:
    """Split name index (0 train, 1 val, 2 test) for each source id, by hash."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"split fractions val={val}, test={test} must be >= 0 and sum below 1")
    u = source_uniform(source_id, seed)
    out = np.zeros(u.shape, dtype=np.int8)
    out[u >= 1.0 - val - test] = 1
    out[u >= 1.0 - test] = 2
    return out


def split_code(name: str) -> int:
    """Index of a split name, with a clear error for anything else."""
    if name not in SPLITS:
        raise ValueError(f"unknown split '{name}'; choose one of {list(SPLITS)}")
    return SPLITS.index(name)
