"""Rectified-flow pieces shared by every counterfactual decoder: t-sampling and ODE solvers.

Convention (seed 000, eq. 2): ``x_t = (1 - t) x_0 + t x_1`` with ``x_0 ~ N(0, I)`` noise and
``x_1`` data; the network predicts the velocity ``x_1 - x_0``. Sampling integrates
``dx/dt = v(x, t)`` from t = 0 to t = 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["SOLVERS", "T_SAMPLINGS", "integrate", "sample_t"]

T_SAMPLINGS = ("uniform", "logit_normal")
SOLVERS = ("euler", "heun", "midpoint", "dopri5")

Velocity = Callable[[Tensor, Tensor], Tensor]


def sample_t(
    n: int,
    scheme: str = "uniform",
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Draw n training times in (0, 1): ``uniform`` (seed 000) or ``logit_normal`` (0, 1)."""
    if scheme == "uniform":
        return torch.rand(n, generator=generator, device=device)
    if scheme == "logit_normal":
        return torch.sigmoid(torch.randn(n, generator=generator, device=device))
    raise ValueError(f"unknown t_sampling {scheme!r}; choose one of {T_SAMPLINGS}")


def _steps_for(solver: str, nfe: int) -> int:
    per_step = {"euler": 1, "heun": 2, "midpoint": 2}[solver]
    if nfe < per_step:
        raise ValueError(f"{solver} needs nfe >= {per_step} (evaluations per step); got {nfe}")
    return nfe // per_step


def integrate(
    velocity: Velocity,
    x0: Tensor,
    solver: str = "heun",
    nfe: int = 20,
    rtol: float = 1e-3,
    atol: float = 1e-3,
) -> tuple[Tensor, int]:
    """Integrate dx/dt = velocity(x, t) from t=0 to 1; return (x(1), evaluations used).

    Fixed-step solvers spend at most ``nfe`` evaluations on a uniform grid: Euler one per
    step, Heun (trapezoidal predictor-corrector) and midpoint two. ``dopri5`` is adaptive
    (torchdiffeq), controlled by ``rtol``/``atol``; ``nfe`` is ignored and the count is
    returned.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}")
    count = 0

    def f(t: Tensor | float, x: Tensor) -> Tensor:
        nonlocal count
        count += 1
        tt = torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)
        return velocity(x, tt)

    if solver == "dopri5":
        from torchdiffeq import odeint

        t_span = torch.tensor([0.0, 1.0], device=x0.device, dtype=x0.dtype)
        out = odeint(f, x0, t_span, method="dopri5", rtol=rtol, atol=atol)
        return out[-1], count

    steps = _steps_for(solver, nfe)
    h = 1.0 / steps
    x = x0
    for i in range(steps):
        t = i * h
        if solver == "euler":
            x = x + h * f(t, x)
        elif solver == "midpoint":
            x = x + h * f(t + h / 2, x + (h / 2) * f(t, x))
        else:  # heun
            k1 = f(t, x)
            k2 = f(t + h, x + h * k1)
            x = x + (h / 2) * (k1 + k2)
    return x, count
