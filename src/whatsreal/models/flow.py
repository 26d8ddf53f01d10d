"""Rectified-flow pieces shared by every counterfactual decoder: t-sampling and ODE solvers.

Convention (seed 000, eq. 2): ``x_t = (1 - t) x_0 + t x_1`` with ``x_0 ~ N(0, I)`` noise and
``x_1`` data; the network predicts the velocity ``x_1 - x_0``. Sampling integrates
``dx/dt = v(x, t)`` from t = 0 to t = 1.

Solvers are objects with one contract, as diffusers' schedulers are:
``Solver.step(velocity, x, t, h)`` returns x at ``t + h``, calling ``velocity(x, t)`` (t a
float) ``evals_per_step`` times. :func:`integrate` takes a solver's name (``SOLVERS``) or any
:class:`Solver` instance, so a new method is a subclass with a ``step``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import ClassVar, TypeVar

import torch
from torch import Tensor

from whatsreal.errors import ConfigError

__all__ = [
    "SOLVERS",
    "T_SAMPLINGS",
    "Dopri5",
    "Euler",
    "Heun",
    "Midpoint",
    "Solver",
    "get_solver",
    "integrate",
    "register_solver",
    "sample_t",
]

T_SAMPLINGS = ("uniform", "logit_normal")

Velocity = Callable[[Tensor, Tensor], Tensor]
StepVelocity = Callable[[Tensor, float], Tensor]


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


# --------------------------------------------------------------------------- solvers
class Solver:
    """An ODE method for dx/dt = v(x, t): subclasses define ``step``; the grid is uniform.

    ``evals_per_step`` is how many velocity evaluations one step spends, so :meth:`steps_for`
    can fit a step count to an evaluation budget (``nfe``). An ``adaptive`` solver chooses
    its own evaluations: it is called once, over the whole interval, and ``nfe`` is ignored.
    """

    name: ClassVar[str] = ""
    evals_per_step: ClassVar[int] = 1
    adaptive: ClassVar[bool] = False

    def step(self, velocity: StepVelocity, x: Tensor, t: float, h: float) -> Tensor:
        """Advance x from time t to t + h, evaluating ``velocity(x, t)`` at float times."""
        raise NotImplementedError(f"{type(self).__name__} must define step(velocity, x, t, h)")

    def steps_for(self, nfe: int) -> int:
        """The number of uniform steps that spend at most ``nfe`` velocity evaluations."""
        if self.adaptive:
            return 1
        if nfe < self.evals_per_step:
            raise ConfigError(
                f"{self.label} needs nfe >= {self.evals_per_step} (evaluations per step); "
                f"got {nfe}: raise nfe"
            )
        return nfe // self.evals_per_step

    @property
    def label(self) -> str:
        """The registered name, or the class name for an unregistered solver."""
        return self.name or type(self).__name__

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


SOLVERS: dict[str, type[Solver]] = {}

S = TypeVar("S", bound=type[Solver])


def register_solver(cls: S) -> S:
    """Class decorator: make a Solver subclass selectable by its ``name`` in ``integrate``."""
    if not (isinstance(cls, type) and issubclass(cls, Solver)) or not cls.name:
        raise ConfigError(
            f"register_solver needs a Solver subclass with a non-empty 'name'; got {cls!r}"
        )
    SOLVERS[cls.name] = cls
    return cls


@register_solver
class Euler(Solver):
    """Forward Euler: one evaluation per step, first order."""

    name = "euler"
    evals_per_step = 1

    def step(self, velocity: StepVelocity, x: Tensor, t: float, h: float) -> Tensor:
        """x + h v(x, t)."""
        return x + h * velocity(x, t)


@register_solver
class Heun(Solver):
    """Heun's trapezoidal predictor-corrector: two evaluations per step, second order."""

    name = "heun"
    evals_per_step = 2

    def step(self, velocity: StepVelocity, x: Tensor, t: float, h: float) -> Tensor:
        """Average the slopes at t and at the Euler prediction for t + h."""
        k1 = velocity(x, t)
        k2 = velocity(x + h * k1, t + h)
        return x + (h / 2) * (k1 + k2)


@register_solver
class Midpoint(Solver):
    """Explicit midpoint: two evaluations per step, second order."""

    name = "midpoint"
    evals_per_step = 2

    def step(self, velocity: StepVelocity, x: Tensor, t: float, h: float) -> Tensor:
        """Use the slope at the Euler half-step t + h/2."""
        return x + h * velocity(x + (h / 2) * velocity(x, t), t + h / 2)


@register_solver
class Dopri5(Solver):
    """Adaptive Dormand-Prince 5(4) (torchdiffeq), controlled by ``rtol``/``atol``."""

    name = "dopri5"
    adaptive = True

    def __init__(self, rtol: float = 1e-3, atol: float = 1e-3) -> None:
        if not (rtol > 0 and atol > 0):
            raise ConfigError(f"dopri5 needs rtol > 0 and atol > 0; got {rtol}, {atol}")
        self.rtol, self.atol = float(rtol), float(atol)

    def step(self, velocity: StepVelocity, x: Tensor, t: float, h: float) -> Tensor:
        """Integrate adaptively from t to t + h; the solver picks its own evaluations."""
        from torchdiffeq import odeint

        span = torch.tensor([t, t + h], device=x.device, dtype=x.dtype)
        out = odeint(
            lambda s, y: velocity(y, float(s)),
            x,
            span,
            method="dopri5",
            rtol=self.rtol,
            atol=self.atol,
        )
        return out[-1]

    def __repr__(self) -> str:
        return f"Dopri5(rtol={self.rtol:g}, atol={self.atol:g})"


def get_solver(solver: str | Solver | type[Solver], **kwargs: float) -> Solver:
    """A Solver instance from a registered name, a Solver subclass, or an instance as is."""
    if isinstance(solver, Solver):
        if kwargs:
            raise ConfigError(
                f"options {sorted(kwargs)} apply to a solver given by name; set them on the "
                f"object instead, e.g. {type(solver).__name__}(...)"
            )
        return solver
    if isinstance(solver, type) and issubclass(solver, Solver):
        return solver(**kwargs)
    if not isinstance(solver, str):
        raise TypeError(
            f"solver must be a name ({sorted(SOLVERS)}) or a Solver object; got "
            f"{type(solver).__name__}"
        )
    if solver not in SOLVERS:
        close = difflib.get_close_matches(solver, SOLVERS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"unknown solver {solver!r}; {hint}choose one of {sorted(SOLVERS)}, or pass a "
            "Solver object"
        )
    return SOLVERS[solver](**kwargs)


def integrate(
    velocity: Velocity,
    x0: Tensor,
    solver: str | Solver | type[Solver] = "heun",
    nfe: int = 20,
    rtol: float | None = None,
    atol: float | None = None,
) -> tuple[Tensor, int]:
    """Integrate dx/dt = velocity(x, t) from t=0 to 1; return (x(1), evaluations used).

    ``solver`` is a name in ``SOLVERS`` or a :class:`Solver`. Fixed-step solvers spend at
    most ``nfe`` evaluations on a uniform grid: Euler one per step, Heun (trapezoidal
    predictor-corrector) and midpoint two. ``dopri5`` is adaptive (torchdiffeq), controlled
    by ``rtol``/``atol`` (default 1e-3 each); ``nfe`` is ignored and the count is returned.
    ``velocity`` gets t as a (batch,) tensor.
    """
    tolerances = {k: v for k, v in (("rtol", rtol), ("atol", atol)) if v is not None}
    if isinstance(solver, str) and solver in SOLVERS and not SOLVERS[solver].adaptive:
        tolerances = {}  # fixed-step solvers have no tolerances: ignore them, as before
    method = get_solver(solver, **tolerances)
    count = 0

    def f(x: Tensor, t: float) -> Tensor:
        nonlocal count
        count += 1
        tt = torch.full((x.shape[0],), float(t), device=x.device, dtype=x.dtype)
        return velocity(x, tt)

    steps = method.steps_for(nfe)
    h = 1.0 / steps
    x = x0
    for i in range(steps):
        x = method.step(f, x, i * h, h)
    return x, count
