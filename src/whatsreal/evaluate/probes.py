"""Downstream probes on frozen embeddings (seed 000 App. A.3, DESIGN.md §5).

The probe is an MLP 512-256-128 with LayerNorm, GELU and 20% dropout, trained with a
Smooth-L1 loss (regression) or cross-entropy (classification). Several probes that differ
only by seed and labelled subset (the few-shot protocol's repeats) are trained together as
one batched ensemble: every weight has a leading member axis and the matrix products are
batched, so five seeds cost about as much wall time as one on a CPU.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class EnsembleMLP(nn.Module):
    """``members`` independent MLPs evaluated in one batched pass: x (E, B, d) -> (E, B, out)."""

    def __init__(
        self,
        members: int,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (512, 256, 128),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        dims = [in_dim, *hidden, out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.norm_w = nn.ParameterList()
        self.norm_b = nn.ParameterList()
        for i, (a, b) in enumerate(itertools.pairwise(dims)):
            w = torch.empty(members, a, b)
            bound = 1 / math.sqrt(a)
            nn.init.uniform_(w, -bound, bound)  # as nn.Linear's default
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.empty(members, 1, b).uniform_(-bound, bound)))
            if i < len(hidden):
                self.norm_w.append(nn.Parameter(torch.ones(members, 1, b)))
                self.norm_b.append(nn.Parameter(torch.zeros(members, 1, b)))
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_hidden = len(self.norm_w)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b, x, w)
            if i < n_hidden:
                x = F.layer_norm(x, x.shape[-1:]) * self.norm_w[i] + self.norm_b[i]
                x = F.gelu(x)
                x = F.dropout(x, self.dropout, self.training)
        return x


@dataclass
class ProbeSettings:
    """Training settings of the probe; the architecture is fixed by the paper."""

    steps: int = 300
    batch_size: int = 128  # capped at the number of labels, so tiny sets train fast
    lr: float = 1e-3
    weight_decay: float = 1e-4
    hidden: tuple[int, ...] = (512, 256, 128)
    dropout: float = 0.2


class ProbeEnsemble:
    """Fitted probes, one per member, with their own input/target standardisation."""

    def __init__(self, model: EnsembleMLP, mu, sd, y_mu, y_sd, task: str) -> None:
        self.model, self.mu, self.sd, self.y_mu, self.y_sd, self.task = (
            model,
            mu,
            sd,
            y_mu,
            y_sd,
            task,
        )

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions of every member for the same inputs: (E, N) or (E, N) class ids."""
        self.model.eval()
        xt = torch.as_tensor(x, dtype=torch.float32)
        xe = (xt[None] - self.mu) / self.sd  # (E, N, d)
        out = self.model(xe)
        if self.task == "classification":
            return out.argmax(-1).numpy()
        return (out[..., 0] * self.y_sd + self.y_mu).numpy()


def fit_probes(
    x_sets: Sequence[np.ndarray],
    y_sets: Sequence[np.ndarray],
    task: str = "regression",
    n_classes: int | None = None,
    settings: ProbeSettings | None = None,
    seed: int = 0,
) -> ProbeEnsemble:
    """Train one probe per (x, y) training set, all at once.

    Each member draws its mini-batches (with replacement when it has fewer labels than the
    batch size) from its own set, so sets may differ in content but not in dimension.
    """
    if task not in ("regression", "classification"):
        raise ValueError(f"task must be 'regression' or 'classification'; got {task!r}")
    s = settings or ProbeSettings()
    g = torch.Generator().manual_seed(seed)
    xs = [torch.as_tensor(x, dtype=torch.float32) for x in x_sets]
    ys = [torch.as_tensor(y) for y in y_sets]
    members, d = len(xs), xs[0].shape[1]
    if any(x.shape[1] != d for x in xs):
        raise ValueError("all probe training sets must have the same feature dimension")
    mu = torch.stack([x.mean(0, keepdim=True) for x in xs])
    sd = torch.stack([x.std(0, keepdim=True).nan_to_num(1.0).clamp_min(1e-6) for x in xs])
    if task == "regression":
        ys = [y.float() for y in ys]
        y_mu = torch.stack([y.mean() for y in ys])[:, None]
        y_sd = torch.stack([y.std().nan_to_num(1.0).clamp_min(1e-6) for y in ys])[:, None]
        out_dim = 1
    else:
        ys = [y.long() for y in ys]
        y_mu = y_sd = torch.zeros(members, 1)
        out_dim = int(n_classes or (max(int(y.max()) for y in ys) + 1))
    torch.manual_seed(seed)
    model = EnsembleMLP(members, d, out_dim, s.hidden, s.dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, s.steps)
    sizes = torch.tensor([x.shape[0] for x in xs])
    batch = int(min(s.batch_size, sizes.min()))
    model.train()
    for _ in range(s.steps):
        idx = (torch.rand(members, batch, generator=g) * sizes[:, None]).long()
        xb = torch.stack([xs[m][idx[m]] for m in range(members)])
        xb = (xb - mu) / sd
        out = model(xb)
        if task == "regression":
            yb = torch.stack([ys[m][idx[m]] for m in range(members)])
            loss = F.smooth_l1_loss(out[..., 0], (yb - y_mu) / y_sd)
        else:
            yb = torch.stack([ys[m][idx[m]] for m in range(members)])
            loss = F.cross_entropy(out.reshape(-1, out_dim), yb.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return ProbeEnsemble(model, mu, sd, y_mu, y_sd, task)


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination (1 - SS_res / SS_tot)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    ss_tot = ((y_true - y_true.mean()) ** 2).sum()
    return float(1.0 - ((y_true - np.asarray(y_pred)) ** 2).sum() / max(ss_tot, 1e-300))


def few_shot_curve(
    features: np.ndarray,
    target: np.ndarray,
    train_pool: np.ndarray,
    test_rows: np.ndarray,
    sizes: Sequence[int] = (10, 30, 100, 300, 1000, 3000),
    seeds: int = 5,
    settings: ProbeSettings | None = None,
) -> list[dict]:
    """Probe R² against the number of labelled examples, mean and std over ``seeds`` draws.

    Labelled examples are drawn from ``train_pool`` (rows of ``features``); R² is measured
    on ``test_rows``. Sizes larger than the pool are skipped.
    """
    out = []
    for n in sizes:
        if n > train_pool.size:
            continue
        subsets = [
            np.random.default_rng((s, n)).choice(train_pool, size=n, replace=False)
            for s in range(seeds)
        ]
        probes = fit_probes(
            [features[r] for r in subsets],
            [target[r] for r in subsets],
            settings=settings,
            seed=n,
        )
        preds = probes.predict(features[test_rows])
        scores = [r2_score(target[test_rows], p) for p in preds]
        out.append(
            {
                "n_labels": int(n),
                "r2_mean": float(np.mean(scores)),
                "r2_std": float(np.std(scores)),
                "r2_all": [float(v) for v in scores],
            }
        )
    return out


def classification_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    n_classes: int,
    settings: ProbeSettings | None = None,
    seed: int = 0,
) -> float:
    """Accuracy of the MLP probe (cross-entropy) trained on ``train_rows``."""
    probe = fit_probes(
        [features[train_rows]],
        [labels[train_rows]],
        task="classification",
        n_classes=n_classes,
        settings=settings,
        seed=seed,
    )
    pred = probe.predict(features[test_rows])[0]
    return float((pred == labels[test_rows]).mean())
