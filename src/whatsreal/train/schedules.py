"""Schedules shared by the trainers: one rule for cosine decay and one for weight EMA."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel


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


def ema_update(decay: float):
    """EMA whose decay ramps up as min(decay, (1 + n) / (10 + n)) over the n updates so far,
    so that short CPU runs are not dominated by their random initial weights."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: Any) -> None:
        n = float(n)
        d = min(decay, (1.0 + n) / (10.0 + n))
        floats = [(a, c) for a, c in zip(averaged, current, strict=True) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1.0 - d)
        for a, c in zip(averaged, current, strict=True):
            if not a.is_floating_point():  # integer buffers (BatchNorm counters): copy
                a.copy_(c)

    return update


def weight_ema(model: torch.nn.Module, decay: float) -> AveragedModel:
    """A frozen exponential moving average of ``model``'s weights and buffers (:func:`ema_update`),
    updated by ``.update_parameters(model)`` after each optimiser step."""
    ema = AveragedModel(model, multi_avg_fn=ema_update(decay), use_buffers=True)
    ema.requires_grad_(False)
    return ema
