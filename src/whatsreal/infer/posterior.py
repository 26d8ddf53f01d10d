"""Property posteriors: a conditional normalizing flow on frozen physics latents (issue 13).

A probe gives one number per galaxy; :class:`PropertyPosterior` gives a distribution over the
physical parameters (magnitude, colours, size, ellipticity, redshift; θ0 for light curves)
given a latent, so each estimate comes with an error bar that can be checked against held-out
truth (:mod:`whatsreal.evaluate.calibration`). The flow is a zuko neural spline flow (or a
masked affine flow) whose hyper-network reads the standardised latent; targets are
standardised too, and training stops early on held-out pairs. Latents of the objects an
encoder trained on can be cleaner than those of new objects, which makes a head fitted on
them over-confident on new ones; :meth:`PropertyPosterior.calibrate` then fits one width
factor (the base Gaussian's scale) on objects the encoder never saw.

A fitted posterior saves as ``posterior.json`` + ``posterior.safetensors`` in a folder of its
own (written as a whole, atomically); :func:`default_posterior_dir` puts it inside the model
folder it was trained for. :func:`predict_properties` runs a trained model and its posterior on
observations in store units::

    model = whatsreal.load("run/model")
    post = PropertyPosterior.load("run/model/posterior")
    pred = predict_properties(model, store.read(rows)["flux"], post)
    pred.mean, pred.std, pred.intervals[0.68]
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from whatsreal.errors import ConfigError, ModelFileError, NonFiniteError
from whatsreal.store import ObservationStore
from whatsreal.utils import atomic_folder, atomic_write_with

__all__ = [
    "POSTERIOR_CONFIG",
    "POSTERIOR_WEIGHTS",
    "PosteriorSettings",
    "PropertyPosterior",
    "PropertyPrediction",
    "default_posterior_dir",
    "default_properties",
    "predict_properties",
    "store_properties",
]

_log = logging.getLogger(__name__)

POSTERIOR_CONFIG = "posterior.json"
POSTERIOR_WEIGHTS = "posterior.safetensors"
POSTERIOR_FORMAT = 1
_FLOWS = ("nsf", "maf")
# What the posterior infers by default: the galaxy truth that whatsreal.evaluate.separation
# probes (less the Sérsic index), and seed 001's light-curve parameter.
GALAXY_PROPERTIES = ("mag_i", "g_r", "r_i", "i_z", "r_half", "e1", "e2", "redshift")
LIGHTCURVE_PROPERTIES = ("theta0",)
# Source truth that enters as log10, as the probes take it (point sources at a 0.01" floor).
_LOG10_FLOOR = {"r_half": 0.01}


def default_properties(modality: str) -> tuple[str, ...]:
    """The properties a posterior infers by default for a store modality (image or series)."""
    if modality == "image":
        return GALAXY_PROPERTIES
    if modality == "series":
        return LIGHTCURVE_PROPERTIES
    raise ValueError(f"no default properties for modality {modality!r}; name them explicitly")


def store_properties(
    store: ObservationStore, rows: np.ndarray, names: Sequence[str] | None = None
) -> np.ndarray:
    """Per-source truth of store rows, (N, P) in ``names`` order (default: the modality's);
    ``r_half`` is log10 arcsec, floored at 0.01", as :mod:`whatsreal.evaluate.galaxies` uses it.
    """
    names = list(names or default_properties(store.modality))
    truth = store.truth_source
    missing = [n for n in names if n not in truth]
    if missing:
        have = sorted(k for k in truth if k != "source_id")
        raise KeyError(
            f"store {store.path} has no source truth {missing}; it has {have or 'none'}. "
            "Name properties that it holds (CLI: --properties a,b,...)"
        )
    rows = np.asarray(rows, dtype=np.int64)
    sid = np.asarray(truth["source_id"])
    order = np.argsort(sid)
    want = store.source_id[rows]
    pos = order[np.minimum(np.searchsorted(sid, want, sorter=order), sid.size - 1)]
    lost = want[sid[pos] != want]
    if lost.size:
        raise KeyError(
            f"store {store.path} has no source truth for {np.unique(lost).size} source(s) of "
            f"the rows asked for (e.g. source_id {int(lost[0])}); select rows with truth"
        )
    cols = []
    for name in names:
        v = np.asarray(truth[name], dtype=np.float64)[pos]
        if name in _LOG10_FLOOR:
            v = np.log10(np.maximum(v, _LOG10_FLOOR[name]))
        cols.append(v)
    return np.stack(cols, 1)


def default_posterior_dir(model_dir: str | os.PathLike[str]) -> Path:
    """Where a posterior for the model in ``model_dir`` lives by default: ``<model>/posterior``."""
    return Path(model_dir) / "posterior"


@dataclass
class PosteriorSettings:
    """How :meth:`PropertyPosterior.fit` trains: optimiser, batches, early stopping, seed."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 300
    patience: int = 15  # epochs without a better validation NLL before stopping
    val_fraction: float = 0.15  # of the fitting rows, held out for early stopping
    max_minutes: float | None = None  # wall-clock cap (None: epochs and patience only)
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("batch_size", "max_epochs", "patience"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"PosteriorSettings.{key} must be >= 1; got {getattr(self, key)}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(
                f"PosteriorSettings.val_fraction must be in (0, 1); got {self.val_fraction}"
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"PosteriorSettings.lr must be a finite number > 0; got {self.lr}")


@dataclass
class PropertyPrediction:
    """Posterior summaries per object and property, all in the targets' units.

    ``mean``/``std``/``median``: (N, P); ``intervals``: {level: (lo, hi)}, each (N, P), the
    central (equal-tailed) credible interval; ``samples``: (N, S, P) when kept.
    """

    names: list[str]
    mean: np.ndarray
    std: np.ndarray
    median: np.ndarray
    intervals: dict[float, tuple[np.ndarray, np.ndarray]]
    samples: np.ndarray | None = None

    def columns(self) -> dict[str, np.ndarray]:
        """Flat columns ``<name>_mean``, ``_std``, ``_median``, ``_lo68``, ``_hi68``, ... ."""
        out: dict[str, np.ndarray] = {}
        for j, name in enumerate(self.names):
            out[f"{name}_mean"] = self.mean[:, j]
            out[f"{name}_std"] = self.std[:, j]
            out[f"{name}_median"] = self.median[:, j]
            for level, (lo, hi) in self.intervals.items():
                tag = f"{round(100 * level):d}"
                out[f"{name}_lo{tag}"] = lo[:, j]
                out[f"{name}_hi{tag}"] = hi[:, j]
        return out


def _as_matrix(x: Any, what: str) -> np.ndarray:
    """A 2-D float array, with an error naming ``what`` otherwise."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None] if what == "targets" else arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (N, D); got shape {arr.shape}")
    return arr


class PropertyPosterior(nn.Module):
    """p(properties | latent) as a conditional normalizing flow, with its standardisation.

    ``context_dim`` is the latent width, ``names`` the properties in output order. ``flow`` is
    ``"nsf"`` (rational-quadratic splines, ``bins`` knots) or ``"maf"`` (affine);
    ``transforms`` autoregressive layers with ``hidden`` hyper-network widths. ``passes`` is
    how many blocks each layer is autoregressive over (zuko flips the order every layer):
    2 makes a coupling flow, sampled in 2 network passes per layer instead of one per
    property (4x faster for 8 galaxy properties); None is fully autoregressive. ``bound``
    is the NSF splines' domain in standardised units (identity beyond it): a property with
    mass further out (a point mass of stars at the size floor, 5.1 sd out) needs it larger.
    ``space`` and ``source`` record which latent of which model it reads (checked by the CLI).
    """

    def __init__(
        self,
        context_dim: int,
        names: Sequence[str],
        flow: str = "nsf",
        transforms: int = 4,
        hidden: Sequence[int] = (128, 128),
        bins: int = 8,
        passes: int | None = 2,
        bound: float = 5.0,
        space: str = "physics",
        source: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        names = [str(n) for n in names]
        if int(context_dim) < 1:
            raise ConfigError(f"context_dim must be >= 1; got {context_dim}")
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"names must be non-empty and distinct; got {names}")
        if flow not in _FLOWS:
            raise ConfigError(f"unknown flow {flow!r}; choose one of {list(_FLOWS)}")
        if passes is not None and int(passes) < 1:
            raise ConfigError(f"passes must be >= 1 or None (fully autoregressive); got {passes}")
        if not (math.isfinite(bound) and bound > 0):
            raise ConfigError(f"bound must be a finite number > 0; got {bound}")
        if int(transforms) < 1 or int(bins) < 2 or not hidden:
            raise ConfigError(
                f"need transforms >= 1, bins >= 2 and hidden widths; got transforms={transforms}"
                f", bins={bins}, hidden={list(hidden)}"
            )
        self.config: dict[str, Any] = {
            "context_dim": int(context_dim),
            "names": names,
            "flow": flow,
            "transforms": int(transforms),
            "hidden": [int(h) for h in hidden],
            "bins": int(bins),
            "passes": None if passes is None else int(passes),
            "bound": float(bound),
            "space": str(space),
            "source": dict(source or {}),
        }
        p = len(names)
        self.flow = self._build_flow()
        self.register_buffer("x_mu", torch.zeros(int(context_dim)))
        self.register_buffer("x_sd", torch.ones(int(context_dim)))
        self.register_buffer("y_mu", torch.zeros(p))
        self.register_buffer("y_sd", torch.ones(p))
        # scale of the base Gaussian, one per property; 1 as trained, set on held-out pairs
        # by calibrate()
        self.register_buffer("temperature", torch.ones(p))
        self.info: dict[str, Any] = {}  # what fit() did: sizes, epochs, NLLs, settings
        self.history: list[dict[str, float]] = []  # per-epoch NLLs of the last fit

    def _build_flow(self) -> nn.Module:
        """A freshly initialised zuko flow for this configuration (global torch RNG)."""
        import zuko

        c, p = self.config, len(self.config["names"])
        kwargs = {
            "transforms": c["transforms"],
            "hidden_features": tuple(c["hidden"]),
            "passes": c["passes"] and min(c["passes"], p),
        }
        if c["flow"] == "nsf":  # zuko's NSF, with the spline's domain [-bound, bound] exposed
            univariate = partial(
                zuko.transforms.MonotonicRQSTransform, bound=c.get("bound", 5.0), slope=1e-3
            )
            shapes = [(c["bins"],), (c["bins"],), (c["bins"] - 1,)]
            return zuko.flows.MAF(
                p, c["context_dim"], univariate=univariate, shapes=shapes, **kwargs
            )
        return zuko.flows.MAF(p, c["context_dim"], **kwargs)

    # ------------------------------------------------------------------ properties
    @property
    def names(self) -> list[str]:
        """The properties, in the order of every output's last axis."""
        return list(self.config["names"])

    @property
    def context_dim(self) -> int:
        """Width of the latent the flow is conditioned on."""
        return int(self.config["context_dim"])

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`load`) has set the weights."""
        return bool(self.info)

    def _check_latents(self, latents: Any) -> torch.Tensor:
        x = _as_matrix(latents, "latents")
        if x.shape[1] != self.context_dim:
            raise ValueError(
                f"latents have {x.shape[1]} dimensions but this posterior was fitted on "
                f"{self.context_dim}-dimensional {self.config['space']} latents; use the "
                "embeddings of the model it was trained for"
            )
        if not np.isfinite(x).all():
            bad = np.flatnonzero(~np.isfinite(x).all(1))
            raise ValueError(f"latents hold NaN or inf in {bad.size} row(s), e.g. row {bad[0]}")
        return (torch.as_tensor(x, dtype=torch.float32) - self.x_mu) / self.x_sd

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError(
                "this PropertyPosterior is not fitted; call fit(latents, targets) or load a "
                "saved one with PropertyPosterior.load(DIR)"
            )

    # ------------------------------------------------------------------ fitting
    def _pairs(
        self, latents: Any, targets: Any, what: str = "latents"
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N, D) latents and (N, P) targets (array, or mapping by name), checked."""
        x = _as_matrix(latents, what)
        if isinstance(targets, Mapping):
            missing = [n for n in self.names if n not in targets]
            if missing:
                raise KeyError(f"targets lack {missing}; they have {sorted(targets)}")
            y = np.stack([np.asarray(targets[n], dtype=np.float64) for n in self.names], 1)
        else:
            y = _as_matrix(targets, "targets")
        if y.shape[1] != len(self.names):
            raise ValueError(
                f"targets have {y.shape[1]} columns but the posterior has {len(self.names)} "
                f"names ({self.names})"
            )
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{what} have {x.shape[0]} rows but targets have {y.shape[0]}")
        if x.shape[1] != self.context_dim:
            raise ValueError(
                f"{what} have {x.shape[1]} dimensions; this posterior was built for "
                f"context_dim={self.context_dim}"
            )
        for j, name in enumerate(self.names):
            if not np.isfinite(y[:, j]).all():
                raise ValueError(f"target {name!r} holds NaN or inf; drop those rows first")
        if not np.isfinite(x).all():
            raise ValueError(f"{what} hold NaN or inf; drop those rows first")
        return x, y

    def fit(
        self,
        latents: np.ndarray,
        targets: np.ndarray | Mapping[str, np.ndarray],
        settings: PosteriorSettings | Mapping[str, Any] | None = None,
        progress: bool = False,
        validation: tuple[np.ndarray, Any] | None = None,
    ) -> PropertyPosterior:
        """Train by maximum likelihood on (latent, target) pairs, stopping early on held-out
        pairs and keeping the best-validation weights; returns ``self``.

        ``targets`` is (N, P) in :attr:`names` order, or a mapping from each name to (N,).
        The held-out pairs are ``validation`` (latents, targets) when given (e.g. objects the
        encoder never trained on), else a seeded ``settings.val_fraction`` of the pairs.
        """
        s = (
            settings
            if isinstance(settings, PosteriorSettings)
            else PosteriorSettings(**(settings or {}))
        )
        x, y = self._pairs(latents, targets)
        n = x.shape[0]
        if validation is not None:
            xv, yv = self._pairs(*validation, what="validation latents")
            x, y = np.concatenate([x, xv]), np.concatenate([y, yv])
            train, val = np.arange(n), np.arange(n, n + len(xv))
            if n < 2 or len(xv) < 1:
                raise ValueError(
                    f"need >= 2 training and >= 1 validation pairs; got {n}, {len(xv)}"
                )
        else:
            n_val = max(1, round(s.val_fraction * n))
            if n - n_val < 2:
                raise ValueError(f"need at least 3 (latent, target) pairs to fit; got {n}")
            perm = np.random.default_rng(s.seed).permutation(n)
            val, train = perm[:n_val], perm[n_val:]
        x_mu, x_sd = x[train].mean(0), x[train].std(0)
        y_mu, y_sd = y[train].mean(0), y[train].std(0)
        self.x_mu.copy_(torch.as_tensor(x_mu, dtype=torch.float32))
        self.x_sd.copy_(torch.as_tensor(np.maximum(x_sd, 1e-6), dtype=torch.float32))
        self.y_mu.copy_(torch.as_tensor(y_mu, dtype=torch.float32))
        self.y_sd.copy_(torch.as_tensor(np.maximum(y_sd, 1e-6), dtype=torch.float32))
        xs = (torch.as_tensor(x, dtype=torch.float32) - self.x_mu) / self.x_sd
        ys = (torch.as_tensor(y, dtype=torch.float32) - self.y_mu) / self.y_sd
        x_tr, y_tr, x_va, y_va = xs[train], ys[train], xs[val], ys[val]
        outside = {}
        if self.config["flow"] == "nsf":
            far = (ys[train].abs() > self.config["bound"]).double().mean(0)
            outside = {n: float(f) for n, f in zip(self.names, far, strict=True) if f > 0}
            if outside:
                _log.warning(
                    "standardised targets lie beyond the splines' bound %.1f for %s (fraction "
                    "of rows); the flow is an identity there: raise bound (CLI: --bound)",
                    self.config["bound"],
                    {n: round(f, 4) for n, f in outside.items()},
                )

        torch.manual_seed(s.seed)  # fresh weights: a refit with the same seed is the same fit
        self.flow = self._build_flow()
        g = torch.Generator().manual_seed(s.seed)
        opt = torch.optim.AdamW(self.flow.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        batch = min(s.batch_size, len(train))
        steps_per_epoch = max(1, len(train) // batch)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=0.5, patience=max(1, s.patience // 3)
        )
        best, best_state, best_epoch, bad_epochs = math.inf, None, 0, 0
        history: list[dict[str, float]] = []
        t0 = time.perf_counter()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=s.max_epochs, desc="posterior", unit="epoch")
        stopped = "max_epochs"
        try:
            for epoch in range(1, s.max_epochs + 1):
                self.flow.train()
                order = torch.randperm(len(train), generator=g)
                total = 0.0
                for k in range(steps_per_epoch):
                    idx = order[k * batch : (k + 1) * batch]
                    loss = -self.flow(x_tr[idx]).log_prob(y_tr[idx]).mean()
                    if not torch.isfinite(loss):
                        raise NonFiniteError(
                            f"the posterior's training loss became {loss.item()} at epoch "
                            f"{epoch}; lower the learning rate (settings.lr={s.lr})"
                        )
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(self.flow.parameters(), 5.0)
                    opt.step()
                    total += float(loss.detach())
                val_nll = self._nll(x_va, y_va)
                sched.step(val_nll)
                history.append(
                    {"epoch": epoch, "train_nll": total / steps_per_epoch, "val_nll": val_nll}
                )
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(val_nll=f"{val_nll:.3f}")
                if val_nll < best - 1e-4:
                    best, best_epoch, bad_epochs = val_nll, epoch, 0
                    best_state = copy.deepcopy(self.flow.state_dict())
                else:
                    bad_epochs += 1
                if bad_epochs >= s.patience:
                    stopped = "early_stopping"
                    break
                if s.max_minutes is not None and time.perf_counter() - t0 > 60 * s.max_minutes:
                    stopped = "max_minutes"
                    break
        finally:
            if bar is not None:
                bar.close()
        if best_state is not None:
            self.flow.load_state_dict(best_state)
        self.flow.eval()
        self.temperature.fill_(1.0)
        self.info = {
            "n_fit": int(len(train) + len(val)),
            "n_train": len(train),
            "n_val": len(val),
            "validation": "given" if validation is not None else "random_holdout",
            "beyond_bound": outside,
            "epochs": len(history),
            "best_epoch": best_epoch,
            "stopped": stopped,
            # NLL per object of the standardised targets (nats); lower is better
            "best_val_nll": float(best),
            "seconds": round(time.perf_counter() - t0, 2),
            "settings": asdict(s),
        }
        self.history = history
        return self

    def _dist(self, xs: torch.Tensor):
        """The flow's conditional distribution of standardised targets, its base widened by
        :attr:`temperature` (the transform is untouched)."""
        d = self.flow(xs)
        if bool((self.temperature == 1.0).all()):
            return d
        from zuko.distributions import DiagNormal, NormalizingFlow

        base = DiagNormal(d.base.mean, d.base.stddev * self.temperature)
        return NormalizingFlow(d.transform, base)

    @torch.no_grad()
    def calibrate(
        self, latents: np.ndarray, targets: Any, per_property: bool = True
    ) -> dict[str, float]:
        """Fit the base Gaussian's scale to held-out pairs by maximum likelihood (the flow is
        kept), so widths that train latents made too narrow are widened and those too wide
        narrowed; returns the width per property. ``per_property``: one scale per base
        dimension, i.e. per property (each autoregressive transform maps a property's
        coordinate to itself), since one scale for all widens the well-calibrated properties
        with the over-confident ones; ``False``: one scale for all. Use objects that neither
        the encoder nor the flow trained on (a validation split)."""
        self._require_fitted()
        x, y = self._pairs(latents, targets)
        if len(x) < 2:  # a width from no pairs would be NaN, and every interval with it
            raise ValueError(
                f"calibrate needs held-out (latent, target) pairs; got {len(x)} rows: give "
                "the validation split's objects"
            )
        xs = (torch.as_tensor(x, dtype=torch.float32) - self.x_mu) / self.x_sd
        ys = (torch.as_tensor(y, dtype=torch.float32) - self.y_mu) / self.y_sd
        self.flow.eval()
        total = torch.zeros(len(self.names), dtype=torch.float64)
        for lo in range(0, len(xs), 4096):
            d = self.flow(xs[lo : lo + 4096])
            u = (d.transform(ys[lo : lo + 4096]) - d.base.mean) / d.base.stddev
            total += (u.double() ** 2).sum(0)
        if not per_property:
            total = total.mean().expand(len(self.names))
        self.temperature.copy_(torch.sqrt(total / len(xs)).float())
        widths = {n: float(t) for n, t in zip(self.names, self.temperature, strict=True)}
        self.info["temperature"] = widths
        self.info["n_calibration"] = len(x)
        return widths

    def recalibrated(
        self, latents: np.ndarray, targets: Any, per_property: bool = True
    ) -> PropertyPosterior:
        """A copy with its widths refitted (:meth:`calibrate`) on other held-out pairs, this
        one untouched: e.g. one posterior per survey it predicts in, each with widths fitted
        on that survey's images of labelled sources in the overlap."""
        other = copy.deepcopy(self)
        other.info = dict(self.info)
        other.calibrate(latents, targets, per_property)
        return other

    @torch.no_grad()
    def _nll(self, xs: torch.Tensor, ys: torch.Tensor, chunk: int = 4096) -> float:
        self.flow.eval()
        total = 0.0
        for lo in range(0, len(xs), chunk):
            total -= float(self.flow(xs[lo : lo + chunk]).log_prob(ys[lo : lo + chunk]).sum())
        return total / max(1, len(xs))

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def log_prob(self, latents: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """log p(targets | latents) per row, in the targets' own units (Jacobian included)."""
        self._require_fitted()
        xs = self._check_latents(latents)
        y = _as_matrix(targets, "targets")
        if y.shape != (len(xs), len(self.names)):
            raise ValueError(
                f"targets must be ({len(xs)}, {len(self.names)}) for {self.names}; got {y.shape}"
            )
        ys = (torch.as_tensor(y, dtype=torch.float32) - self.y_mu) / self.y_sd
        self.flow.eval()
        lp = self._dist(xs).log_prob(ys) - torch.log(self.y_sd).sum()
        return lp.double().numpy()

    @torch.no_grad()
    def sample(
        self, latents: np.ndarray, n: int = 1000, seed: int = 0, chunk: int = 1024
    ) -> np.ndarray:
        """``n`` posterior draws per latent, (N, n, P) in the targets' units; seeded."""
        self._require_fitted()
        if int(n) < 1:
            raise ValueError(f"number of samples must be >= 1; got {n}")
        xs = self._check_latents(latents)
        self.flow.eval()
        out = np.empty((len(xs), int(n), len(self.names)), dtype=np.float32)
        rows = max(1, int(chunk * 256 // max(int(n), 1)))  # about chunk*256 draws at a time
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            for lo in range(0, len(xs), rows):
                draw = self._dist(xs[lo : lo + rows]).sample((int(n),))  # (n, B, P)
                draw = draw * self.y_sd + self.y_mu
                out[lo : lo + rows] = draw.transpose(0, 1).numpy()
        return out

    def summarize(
        self,
        latents: np.ndarray,
        n_samples: int = 1000,
        levels: Sequence[float] = (0.68, 0.95),
        seed: int = 0,
        keep_samples: bool = False,
    ) -> PropertyPrediction:
        """Mean, std, median and central intervals at ``levels`` from one set of draws."""
        levels = _check_levels(levels)
        draws = self.sample(latents, n_samples, seed=seed)
        qs = sorted({q for lv in levels for q in ((1 - lv) / 2, (1 + lv) / 2)} | {0.5})
        quant = dict(zip(qs, np.quantile(draws, qs, axis=1), strict=True))
        return PropertyPrediction(
            names=self.names,
            mean=draws.mean(1, dtype=np.float64),
            std=draws.std(1, dtype=np.float64),
            median=quant[0.5],
            intervals={lv: (quant[(1 - lv) / 2], quant[(1 + lv) / 2]) for lv in levels},
            samples=draws if keep_samples else None,
        )

    def mean(self, latents: np.ndarray, n_samples: int = 1000, seed: int = 0) -> np.ndarray:
        """Posterior mean per latent (a Monte-Carlo estimate from ``n_samples`` draws), (N, P)."""
        return self.sample(latents, n_samples, seed=seed).mean(1, dtype=np.float64)

    def intervals(
        self,
        latents: np.ndarray,
        levels: Sequence[float] = (0.68, 0.95),
        n_samples: int = 1000,
        seed: int = 0,
    ) -> dict[float, tuple[np.ndarray, np.ndarray]]:
        """Central credible intervals {level: (lo, hi)}, each (N, P), from posterior draws."""
        return self.summarize(latents, n_samples, levels, seed).intervals

    # ------------------------------------------------------------------ save / load
    def save(self, directory: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write ``posterior.json`` + ``posterior.safetensors`` into ``directory`` as a whole
        (a temporary folder renamed into place), so a reader never sees half a posterior."""
        from safetensors.torch import save_file

        from whatsreal import __version__
        from whatsreal.models.base import nonfinite_tensors

        self._require_fitted()
        directory = Path(directory)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        bad = nonfinite_tensors(state)
        if bad:
            raise NonFiniteError(
                f"refusing to save the posterior to {directory}: {len(bad)} tensor(s) hold NaN "
                f"or inf (e.g. {', '.join(bad[:3])}); refit it. Nothing was written"
            )
        meta = {
            "class": type(self).__name__,
            "format_version": POSTERIOR_FORMAT,
            "config": self.config,
            "info": self.info,
            "whatsreal_version": __version__,
        }

        def ours(folder: Path) -> bool:
            return {p.name for p in folder.iterdir()} <= {POSTERIOR_CONFIG, POSTERIOR_WEIGHTS}

        with atomic_folder(directory, overwrite=overwrite, replaceable=ours) as tmp:
            atomic_write_with(
                tmp / POSTERIOR_CONFIG, lambda p: p.write_text(json.dumps(meta, indent=2))
            )
            atomic_write_with(tmp / POSTERIOR_WEIGHTS, lambda p: save_file(state, str(p)))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> PropertyPosterior:
        """Rebuild a posterior written by :meth:`save`, with errors naming the bad file."""
        from safetensors.torch import load_file

        directory = Path(directory)
        cfg_path, w_path = directory / POSTERIOR_CONFIG, directory / POSTERIOR_WEIGHTS
        if not cfg_path.is_file():
            raise FileNotFoundError(
                f"no {POSTERIOR_CONFIG} in {directory}; fit one with `whatsreal predict fit` "
                "or PropertyPosterior(...).fit(...).save(DIR)"
            )
        if not w_path.is_file():
            raise FileNotFoundError(f"no {POSTERIOR_WEIGHTS} in {directory}; refit the posterior")
        try:
            meta = json.loads(cfg_path.read_text())
            config, info = meta["config"], meta["info"]
        except (ValueError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise ModelFileError(
                f"{cfg_path} is not a readable posterior config ({' '.join(str(exc).split())}); "
                "refit the posterior"
            ) from None
        if meta.get("class") != cls.__name__:
            raise ModelFileError(f"{cfg_path} holds a {meta.get('class')!r}, not a {cls.__name__}")
        post = cls(**config)
        try:
            state = load_file(str(w_path))
            t = state.get("temperature")
            if t is not None and t.ndim == 0:  # written when one width served every property
                state["temperature"] = t.expand(len(post.names)).clone()
            post.load_state_dict(state)
        except Exception as exc:  # safetensors and shape errors share no base class
            raise ModelFileError(
                f"cannot load the weights in {w_path} ({' '.join(str(exc).split())[:300]}); the "
                "file is damaged or from another posterior: refit it"
            ) from None
        post.info = dict(info) or {"loaded": str(directory)}
        post.eval()
        return post


def _check_levels(levels: Sequence[float]) -> list[float]:
    """Credibility levels as floats strictly between 0 and 1."""
    out = [float(lv) for lv in levels]
    bad = [lv for lv in out if not 0 < lv < 1]
    if bad or not out:
        raise ValueError(f"credibility levels must lie strictly between 0 and 1; got {out}")
    return out


def predict_properties(
    model: nn.Module,
    observations: np.ndarray | torch.Tensor,
    posterior: PropertyPosterior | str | os.PathLike[str],
    n_samples: int = 1000,
    levels: Sequence[float] = (0.68, 0.95),
    seed: int = 0,
    batch_size: int = 256,
    keep_samples: bool = False,
) -> PropertyPrediction:
    """Posterior over physical properties of observations (store units, (N, C, ...)): the
    model embeds them, the posterior (object or folder) reads its latent space."""
    from whatsreal.infer.embed import embed_array

    post = (
        posterior if isinstance(posterior, PropertyPosterior) else PropertyPosterior.load(posterior)
    )
    space = post.config["space"]
    chunks = []
    for lo in range(0, len(observations), batch_size):
        z = embed_array(model, observations[lo : lo + batch_size])
        if space not in z:
            raise ValueError(
                f"the posterior reads the {space!r} latent but {type(model).__name__} gives "
                f"{sorted(z)}; fit the posterior on this model's embeddings"
            )
        chunks.append(z[space])
    if not chunks:
        raise ValueError("no observations given (an empty array)")
    return post.summarize(np.concatenate(chunks), n_samples, levels, seed, keep_samples)
