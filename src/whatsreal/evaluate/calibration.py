"""Are posterior error bars honest? Coverage, TARP and rank (SBC) checks on held-out truth.

All functions take posterior draws ``samples`` (N, S, P): S draws for each of N objects and
P parameters, and the truth ``truth`` (N, P).

- :func:`interval_coverage`: how often the central credible interval at each level holds
  the truth, per parameter; a calibrated posterior's 68% interval holds it 68% of the time.
- :func:`tarp`: TARP (Lemos et al. 2023, "Sampling-based accuracy testing of posterior
  estimators"), implemented here in numpy: the expected coverage probability of balls around
  random reference points, against the credibility level. It tests the joint posterior, not
  only the marginals; a calibrated posterior lies on the diagonal. An over-confident (too
  narrow) one flattens the curve: above the diagonal at low credibility and below it at high
  (a 90% region holds the truth less than 90% of the time); an under-confident one steepens
  it, the other way round. A biased one bends it to one side.
- :func:`rank_statistics` / :func:`rank_histogram`: simulation-based-calibration ranks of the
  truth among the draws; flat when calibrated, U-shaped when over-confident.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from whatsreal.utils import atomic_write_with

if TYPE_CHECKING:
    from whatsreal.evaluate.probes import ProbeSettings
    from whatsreal.infer.posterior import PropertyPosterior

__all__ = [
    "calibration_summary",
    "evaluate_posterior",
    "interval_coverage",
    "rank_histogram",
    "rank_statistics",
    "tarp",
    "tarp_distance",
    "tarp_figure",
]


def _check(samples: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, S, P) samples and (N, P) truth as float arrays, with errors naming the mismatch."""
    s = np.asarray(samples, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if s.ndim == 2:  # one parameter given as (N, S)
        s = s[..., None]
    if t.ndim == 1:
        t = t[:, None]
    if s.ndim != 3 or t.ndim != 2:
        raise ValueError(f"samples must be (N, S, P) and truth (N, P); got {s.shape} and {t.shape}")
    if s.shape[0] != t.shape[0] or s.shape[2] != t.shape[1]:
        raise ValueError(
            f"samples {s.shape} (N, S, P) and truth {t.shape} (N, P) disagree on N or P"
        )
    if s.shape[0] < 1 or s.shape[1] < 2:
        raise ValueError(f"need >= 1 object and >= 2 draws per object; got samples {s.shape}")
    return s, t


def interval_coverage(
    samples: np.ndarray, truth: np.ndarray, levels: Sequence[float] = (0.68, 0.95)
) -> dict[float, np.ndarray]:
    """Fraction of objects whose central (equal-tailed) credible interval at each level holds
    the truth, per parameter: {level: (P,)}."""
    s, t = _check(samples, truth)
    out = {}
    for lv in levels:
        if not 0 < lv < 1:
            raise ValueError(f"credibility levels must lie strictly between 0 and 1; got {lv}")
        lo, hi = np.quantile(s, [(1 - lv) / 2, (1 + lv) / 2], axis=1)
        out[float(lv)] = ((t >= lo) & (t <= hi)).mean(0)
    return out


def tarp(
    samples: np.ndarray,
    truth: np.ndarray,
    n_alpha: int = 51,
    references: np.ndarray | None = None,
    normalize: bool = True,
    n_bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Expected coverage probability (ECP) of TARP balls at credibility levels ``alpha``.

    For object i with a reference point r_i (uniform in the box spanned by the truth, or
    ``references`` (N, P)), f_i is the fraction of draws closer to r_i than the truth is;
    ECP(α) is the fraction of objects with f_i < α. Parameters are first scaled to [0, 1] by
    the truth's range when ``normalize``. Returns ``alpha``, ``ecp`` and, with
    ``n_bootstrap`` > 0, ``ecp_lo``/``ecp_hi`` (16th/84th percentiles over bootstrap
    resamples of the objects) and ``f`` (N,).
    """
    s, t = _check(samples, truth)
    if normalize:
        lo, hi = t.min(0), t.max(0)
        span = np.where(hi > lo, hi - lo, 1.0)
        s, t = (s - lo) / span, (t - lo) / span
    rng = np.random.default_rng(seed)
    if references is None:
        ref = (
            rng.uniform(0.0, 1.0, size=t.shape)
            if normalize
            else rng.uniform(t.min(0), t.max(0), size=t.shape)
        )
    else:
        ref = np.asarray(references, dtype=np.float64)
        if ref.shape != t.shape:
            raise ValueError(f"references must match truth's shape {t.shape}; got {ref.shape}")
    d_samples = np.linalg.norm(s - ref[:, None, :], axis=-1)  # (N, S)
    d_truth = np.linalg.norm(t - ref, axis=-1)  # (N,)
    f = (d_samples < d_truth[:, None]).mean(1)
    alpha = np.linspace(0.0, 1.0, int(n_alpha))
    ecp = (f[None, :] < alpha[:, None]).mean(1)
    ecp[-1] = 1.0  # f = 1 exactly (every draw closer) still counts as covered at α = 1
    out = {"alpha": alpha, "ecp": ecp, "f": f}
    if n_bootstrap > 0:
        boot = np.empty((n_bootstrap, alpha.size))
        for b in range(n_bootstrap):
            fb = f[rng.integers(0, f.size, f.size)]
            boot[b] = (fb[None, :] < alpha[:, None]).mean(1)
        boot[:, -1] = 1.0
        out["ecp_lo"], out["ecp_hi"] = np.percentile(boot, [16, 84], axis=0)
    return out


def tarp_distance(result: Mapping[str, np.ndarray]) -> dict[str, float]:
    """How far a TARP curve strays from the diagonal: the largest gap and the mean gap."""
    gap = np.asarray(result["ecp"]) - np.asarray(result["alpha"])
    return {"max_abs": float(np.abs(gap).max()), "mean_abs": float(np.abs(gap).mean())}


def rank_statistics(samples: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """SBC rank of the truth among each object's draws, per parameter: (N, P) in 0..S."""
    s, t = _check(samples, truth)
    return (s < t[:, None, :]).sum(1)


def rank_histogram(
    ranks: np.ndarray, n_samples: int, bins: int = 20
) -> dict[str, np.ndarray | float]:
    """Counts of SBC ranks in ``bins`` equal bins per parameter, and the χ² p-value of each
    against the flat histogram a calibrated posterior gives: {"counts" (bins, P), "edges",
    "p_value" (P,)}."""
    from scipy.stats import chisquare

    r = np.asarray(ranks)
    if r.ndim == 1:
        r = r[:, None]
    edges = np.linspace(0, n_samples + 1, bins + 1)
    counts = np.stack([np.histogram(r[:, j], edges)[0] for j in range(r.shape[1])], 1)
    p = np.array([chisquare(counts[:, j]).pvalue for j in range(r.shape[1])])
    return {"counts": counts, "edges": edges, "p_value": p}


def calibration_summary(
    samples: np.ndarray,
    truth: np.ndarray,
    names: Sequence[str],
    levels: Sequence[float] = (0.68, 0.95),
    n_bootstrap: int = 100,
    seed: int = 0,
) -> dict:
    """Coverage per parameter and level, TARP curve and its distance from the diagonal, and
    the SBC p-value per parameter, as JSON-ready lists and floats."""
    s, t = _check(samples, truth)
    names = list(names)
    if len(names) != t.shape[1]:
        raise ValueError(f"{len(names)} names for {t.shape[1]} parameters: {names}")
    cov = interval_coverage(s, t, levels)
    curve = tarp(s, t, n_bootstrap=n_bootstrap, seed=seed)
    ranks = rank_histogram(rank_statistics(s, t), s.shape[1])
    return {
        "coverage": {
            name: {f"{round(100 * lv)}": float(cov[lv][j]) for lv in cov}
            for j, name in enumerate(names)
        },
        "coverage_mean": {f"{round(100 * lv)}": float(cov[lv].mean()) for lv in cov},
        "tarp": {
            "alpha": curve["alpha"].tolist(),
            "ecp": curve["ecp"].tolist(),
            **(
                {"ecp_lo": curve["ecp_lo"].tolist(), "ecp_hi": curve["ecp_hi"].tolist()}
                if "ecp_lo" in curve
                else {}
            ),
            **tarp_distance(curve),
        },
        "sbc_p_value": {name: float(ranks["p_value"][j]) for j, name in enumerate(names)},
        "n_objects": int(t.shape[0]),
        "n_samples": int(s.shape[1]),
    }


def tarp_figure(curves: Mapping[str, Mapping], path: str | Path | None = None):
    """Expected coverage against credibility level, one line (with its bootstrap band when
    given) per entry of ``curves`` ({label: tarp result or calibration_summary()["tarp"]}),
    beside the diagonal; saved atomically as PNG when ``path`` is given. Returns the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0, 1], [0, 1], color="k", ls=":", lw=1, label="calibrated")
    for label, c in curves.items():
        alpha, ecp = np.asarray(c["alpha"]), np.asarray(c["ecp"])
        (line,) = ax.plot(alpha, ecp, lw=1.6, label=label)
        if "ecp_lo" in c:
            ax.fill_between(alpha, c["ecp_lo"], c["ecp_hi"], color=line.get_color(), alpha=0.2)
    ax.set_xlabel("credibility level α")
    ax.set_ylabel("expected coverage (TARP)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    if path is not None:
        atomic_write_with(Path(path), lambda p: fig.savefig(p, dpi=130, format="png"))
    return fig


def evaluate_posterior(
    posterior: PropertyPosterior,
    train: tuple[np.ndarray, np.ndarray],
    tests: Mapping[str, tuple[np.ndarray, np.ndarray]],
    n_samples: int = 500,
    levels: Sequence[float] = (0.68, 0.95),
    probe_settings: ProbeSettings | None = None,
    n_bootstrap: int = 100,
    seed: int = 0,
) -> dict[str, dict]:
    """Score a fitted :class:`~whatsreal.infer.posterior.PropertyPosterior` on each test set
    ({name: (latents, truth (N, P))}): coverage, TARP and SBC (:func:`calibration_summary`),
    R² of the posterior mean, and beside it the R² of the seed-000 MLP point probe trained on
    the same ``train`` (latents, truth) pairs. Returns {test name: results}."""
    from whatsreal.evaluate.probes import fit_probes, r2_score

    names = posterior.names
    z_tr, y_tr = train
    y_tr = np.asarray(y_tr, dtype=np.float64).reshape(len(z_tr), -1)
    probes = fit_probes(
        [z_tr] * len(names),
        [y_tr[:, j] for j in range(len(names))],
        settings=probe_settings,
        seed=seed,
    )
    out = {}
    for test, (z, y) in tests.items():
        y = np.asarray(y, dtype=np.float64).reshape(len(z), -1)
        draws = posterior.sample(z, n_samples, seed=seed)
        res = calibration_summary(draws, y, names, levels, n_bootstrap, seed)
        mean = draws.mean(1, dtype=np.float64)
        point = probes.predict(z)
        res["r2_posterior_mean"] = {n: r2_score(y[:, j], mean[:, j]) for j, n in enumerate(names)}
        res["r2_mlp_probe"] = {n: r2_score(y[:, j], point[j]) for j, n in enumerate(names)}
        res["mean_posterior_std"] = {
            n: float(draws[..., j].std(1).mean()) for j, n in enumerate(names)
        }
        out[test] = res
    return out
