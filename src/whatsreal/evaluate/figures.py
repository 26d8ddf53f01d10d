"""Figures for reports: few-shot curves, latent maps (UMAP), example observations."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def few_shot_figure(
    few_shot: Mapping[str, list[dict]],
    anchor_r2: float | None = None,
    ylabel: str = r"R$^2$($\theta_0$) on held-out stars",
    anchor_label: str = "Lomb–Scargle peak",
    ax=None,
):
    """R² against the number of labels, mean ± std over seeds, one line per input; on
    ``ax`` if given (the figure is returned either way)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2)) if ax is None else (ax.figure, ax)
    for name, rows in few_shot.items():
        n = [r["n_labels"] for r in rows]
        m = np.array([r["r2_mean"] for r in rows])
        s = np.array([r["r2_std"] for r in rows])
        ax.errorbar(n, m, yerr=s, marker="o", capsize=3, label=name)
    if anchor_r2 is not None:
        ax.axhline(anchor_r2, color="k", ls=":", label=anchor_label)
    ax.set_xscale("log")
    ax.set_xlabel("labelled observations")
    ax.set_ylabel(ylabel)
    ax.set_ylim(max(-0.5, ax.get_ylim()[0]), 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def umap_2d(x: np.ndarray, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """Two-dimensional UMAP of a feature matrix (standardised first)."""
    import umap

    z = (x - x.mean(0)) / (x.std(0) + 1e-8)
    return umap.UMAP(n_neighbors=n_neighbors, random_state=seed, n_jobs=1).fit_transform(z)


def latent_map_figure(
    maps: Mapping[str, np.ndarray],
    instrument: np.ndarray,
    param: np.ndarray,
    param_label: str = r"$\theta_0$",
):
    """Seed 001 Fig. 2: each latent's 2-D map, coloured by instrument (top) and by a physics
    parameter (bottom)."""
    names = list(maps)
    fig, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 7.6), squeeze=False)
    for j, name in enumerate(names):
        xy = maps[name]
        a = axes[0, j].scatter(xy[:, 0], xy[:, 1], c=instrument, cmap="tab20", s=3)
        axes[0, j].set_title(f"{name}: by instrument")
        b = axes[1, j].scatter(xy[:, 0], xy[:, 1], c=param, cmap="viridis", s=3)
        axes[1, j].set_title(f"{name}: by {param_label}")
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(a, ax=axes[0, -1], label="instrument id")
    fig.colorbar(b, ax=axes[1, -1], label=param_label)
    return fig


def triplet_figure(
    anchor: np.ndarray,
    same_source: np.ndarray,
    same_instrument: np.ndarray,
    labels: tuple[str, str, str],
):
    """Seed 001 Fig. 4: an anchor, the same star by another instrument, another star by the
    same instrument."""
    fig, axes = plt.subplots(3, 1, figsize=(7, 5.2), sharex=True)
    for ax, y, lab in zip(axes, (anchor, same_source, same_instrument), labels, strict=True):
        ax.plot(np.ravel(y), lw=1)
        ax.set_ylabel("flux")
        ax.set_title(lab, fontsize=9)
    axes[-1].set_xlabel("time (samples)")
    fig.tight_layout()
    return fig


def reconstruction_figure(x: np.ndarray, recon: np.ndarray, swapped: np.ndarray, titles):
    """Observed series, its reconstruction, and a counterfactual (physics of one observation
    decoded with the instrument latent of another)."""
    n = x.shape[0]
    fig, axes = plt.subplots(n, 1, figsize=(7, 1.9 * n), sharex=True, squeeze=False)
    for i in range(n):
        ax = axes[i, 0]
        ax.plot(np.ravel(x[i]), lw=1, label="observed", color="0.5")
        ax.plot(np.ravel(recon[i]), lw=1.2, label="reconstruction")
        ax.plot(np.ravel(swapped[i]), lw=1.2, ls="--", label="counterfactual")
        ax.set_title(titles[i], fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("time (samples)")
    fig.tight_layout()
    return fig
