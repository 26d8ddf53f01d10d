"""Learning-rate multipliers shared by the trainers (one rule for cosine decay)."""

from __future__ import annotations

import math


def cosine_factor(progress: float, min_ratio: float = 0.0) -> float:
    """Cosine decay from 1 at ``progress`` 0 to ``min_ratio`` at 1 (clamped past the end)."""
    p = min(1.0, max(0.0, progress))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def cosine_lambda(step: int, max_steps: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up then cosine decay to ``min_ratio`` at ``max_steps`` (a LR multiplier)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    span = max(1, max_steps - warmup)
    return cosine_factor((step - warmup) / span, min_ratio)
