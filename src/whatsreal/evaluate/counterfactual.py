"""Counterfactual quality on held-out anchors, for any modality: regenerate each anchor
from its views only, then compare with the real anchor (DESIGN.md §6).

Errors are in the model's working space. The noise floor is the mean per-pixel noise
variance of the anchors there: from ``ivar`` (noise realisations around the noise-free image,
through the model's stretch) when the store has it, else from the store's noise-free
``clean`` array as ``(flux - clean)²``.
"""

from __future__ import annotations

import numpy as np
import torch

from whatsreal.models.counterfactual import CounterfactualModel
from whatsreal.sampling import SplitSpec, ViewDataset, collate_views
from whatsreal.store import ObservationStore


def noise_floor(
    model: CounterfactualModel,
    flux: np.ndarray,
    clean: np.ndarray | None,
    ivar: np.ndarray | None,
    draws: int = 16,
    seed: int = 0,
) -> np.ndarray:
    """Per-pixel noise variance in model space (see the module docstring).

    With ``ivar`` it is the variance over ``draws`` Gaussian noise realisations around the
    noise-free image (or the observed one if there is none), pushed through the model's
    stretch: the delta method overstates it where the noise dominates the asinh softening.
    """
    if ivar is not None:
        ref = torch.from_numpy(np.ascontiguousarray(clean if clean is not None else flux))
        sigma = torch.from_numpy(1.0 / np.sqrt(np.where(ivar > 0, ivar, np.inf)))
        gen = torch.Generator().manual_seed(seed)
        xs = torch.stack(
            [
                model.normalize(ref + sigma * torch.randn(ref.shape, generator=gen))
                for _ in range(draws)
            ]
        )
        return xs.var(dim=0, unbiased=True).numpy()
    if clean is None:
        raise ValueError("a noise floor needs an 'ivar' or a 'clean' array in the store")
    x = model.normalize(torch.from_numpy(flux)).numpy()
    xc = model.normalize(torch.from_numpy(clean)).numpy()
    return (x - xc) ** 2


def model_space(model: CounterfactualModel, flux: np.ndarray) -> np.ndarray:
    """Images in flux units -> the model's own stretched space (``model.normalize``), where
    it is trained and scored: there a bright pixel weighs no more than a faint one."""
    return model.normalize(torch.from_numpy(np.ascontiguousarray(flux))).numpy()


#: Fewest posterior samples for :func:`spread_ratio`: below 6 the z-scores' Student-t law
#: (S - 1 degrees of freedom) has no finite fourth moment, so their sample std is too noisy
#: to correct.
MIN_SAMPLES_FOR_SPREAD_RATIO = 6


def calibrated_z_std(n_samples: int) -> float | None:
    """The pixel z std a perfectly calibrated Gaussian posterior gives from ``n_samples`` draws.

    With the mean and std estimated from S draws, ``(x - mean) / std`` is
    ``sqrt(1 + 1/S)`` times a Student t with S - 1 degrees of freedom, so its std is
    ``sqrt((1 + 1/S)(S - 1)/(S - 3))``: 1.255 for 8 draws, 1 only as S grows. None for S < 4,
    where it is infinite.
    """
    s = int(n_samples)
    return None if s < 4 else float(np.sqrt((1 + 1 / s) * (s - 1) / (s - 3)))


def spread_ratio(z_std: float, n_samples: int) -> float | None:
    """The prediction error's std over the posterior's own std, corrected for ``n_samples``.

    Inverts :func:`calibrated_z_std` for a posterior whose error is k times its spread:
    ``z_std² = (k² + 1/S)(S - 1)/(S - 3)``. 1 is calibrated, above 1 over-confident; it is
    the z std seed 000 reads from many samples (~1.07). None below
    :data:`MIN_SAMPLES_FOR_SPREAD_RATIO` draws.
    """
    s = int(n_samples)
    if s < MIN_SAMPLES_FOR_SPREAD_RATIO:
        return None
    return float(np.sqrt(max(z_std**2 * (s - 3) / (s - 1) - 1 / s, 0.0)))


def pixel_z(
    model: CounterfactualModel, samples: np.ndarray, flux: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Targets, samples and the pixel z-scores ``(target - mean) / std`` over the samples,
    all in the model's space: ``samples`` (N, S, ...) and ``flux`` (N, ...) in flux units."""
    x = model_space(model, flux)
    s = model_space(model, samples.reshape(-1, *flux.shape[1:])).reshape(samples.shape)
    z = (x - s.mean(1)) / np.maximum(s.std(1, ddof=1), 1e-6)
    return x, s, z


def posterior_metrics(
    model: CounterfactualModel,
    samples: np.ndarray,
    flux: np.ndarray,
    clean: np.ndarray | None = None,
    ivar: np.ndarray | None = None,
) -> dict:
    """MSE of posterior samples and mean against the real (and noise-free) targets, over the
    noise floor, and pixel z-scores. ``samples`` (N, S, ...) and targets (N, ...) in flux.

    ``z_std`` is seed 000's figure as measured from these S samples; ``z_std_calibrated`` is
    what a calibrated posterior would give from as many, and ``spread_ratio`` the z std
    corrected to many samples (:func:`spread_ratio`), the one to judge calibration by."""

    x, s, z = pixel_z(model, samples, flux)
    out: dict = {
        "n": int(flux.shape[0]),
        "n_samples": int(samples.shape[1]),
        **prediction_errors(model, s.mean(1), flux, clean, ivar),
        "mse_samples": float(((s - x[:, None]) ** 2).mean()),
    }
    out["mse_samples_over_floor"] = out["mse_samples"] / out["noise_floor"]
    out["z_mean"], out["z_std"] = float(z.mean()), float(z.std())
    out["z_std_calibrated"] = calibrated_z_std(samples.shape[1])
    out["spread_ratio"] = spread_ratio(out["z_std"], samples.shape[1])
    hist, edges = np.histogram(np.clip(z, -5, 5), bins=40, range=(-5, 5), density=True)
    out["z_hist"], out["z_edges"] = hist.tolist(), edges.tolist()
    return out


def fit_spread_scale(
    model: CounterfactualModel, samples: np.ndarray, flux: np.ndarray, min_pixels: int = 100
) -> float:
    """The factor by which to multiply the samples' deviations from their mean so that they
    are calibrated on these held-out targets: their pixel z std over a calibrated
    posterior's from as many samples (:func:`calibrated_z_std`). ``samples`` (N, S, ...) and
    ``flux`` (N, ...) in flux units; S >= :data:`MIN_SAMPLES_FOR_SPREAD_RATIO`.

    Not the spread ratio k itself: the rescaled samples keep their mean, and with it the
    1/S of the old spread that the mean of S draws carries, so the scale that brings the
    spread ratio to 1 is sqrt((k² + 1/S) / (1 + 1/S))."""
    n_samples = samples.shape[1]
    if n_samples < MIN_SAMPLES_FOR_SPREAD_RATIO:
        raise ValueError(
            f"fitting a spread scale needs >= {MIN_SAMPLES_FOR_SPREAD_RATIO} samples per "
            f"source (the z std of fewer cannot be corrected); got {n_samples}"
        )
    if flux.size < min_pixels:
        raise ValueError(
            f"fitting a spread scale needs held-out targets (>= {min_pixels} pixels); got "
            f"{flux.shape[0]} targets of {flux.size} pixels: give more validation sources"
        )
    z = pixel_z(model, samples, flux)[2]
    return float(z.std()) / calibrated_z_std(n_samples)


def prediction_errors(
    model: CounterfactualModel,
    pred: np.ndarray,
    flux: np.ndarray,
    clean: np.ndarray | None = None,
    ivar: np.ndarray | None = None,
) -> dict:
    """Errors of one predicted image per target, ``pred`` (N, ...) in the model's space,
    against the real targets (flux units) and their noise-free images, over the noise floor:
    ``noise_floor``, ``mse_mean``, ``mse_mean_over_floor`` and, with ``clean``,
    ``mse_mean_vs_clean_over_floor``. A posterior mean and a supervised regressor's
    prediction are scored alike."""
    floor = float(noise_floor(model, flux, clean, ivar).mean())
    mse = float(((pred - model_space(model, flux)) ** 2).mean())
    out = {"noise_floor": floor, "mse_mean": mse, "mse_mean_over_floor": mse / floor}
    if clean is not None:
        err = float(((pred - model_space(model, clean)) ** 2).mean())
        out["mse_mean_vs_clean_over_floor"] = err / floor
    return out


def reconstruct_anchors(
    model: CounterfactualModel,
    store: ObservationStore,
    split: str = "test",
    splits: SplitSpec | None = None,
    n_items: int = 256,
    n_samples: int = 8,
    solver: str = "heun",
    nfe: int = 20,
    n_physics: int = 1,
    n_instrument: int = 5,
    batch_size: int = 32,
    seed: int = 0,
) -> dict:
    """Sample each of ``n_items`` held-out anchors from its views and score the samples, and
    the one-call posterior mean (``one_step``, :meth:`CounterfactualModel.posterior_mean`)."""
    views = ViewDataset(
        store,
        split,
        n_physics=n_physics,
        n_instrument=n_instrument,
        splits=splits or SplitSpec(),
        seed=seed,
    )
    items = np.linspace(0, len(views) - 1, min(n_items, len(views))).astype(int)
    parts: dict[str, list[np.ndarray]] = {"samples": [], "one_step": [], "anchor_row": []}
    for b, lo in enumerate(range(0, items.size, batch_size)):
        batch = collate_views(views.__getitems__(items[lo : lo + batch_size].tolist()))
        out = model.counterfactual(
            batch["physics"],
            batch["instrument_views"],
            batch["physics_mask"],
            batch["instrument_mask"],
            n_samples=n_samples,
            solver=solver,
            nfe=nfe,
            seed=seed * 100_003 + b,
        )
        parts["samples"].append(out.float().cpu().numpy())
        one = model.posterior_mean(  # the same posterior's mean, free of sampling noise
            batch["physics"],
            batch["instrument_views"],
            batch["physics_mask"],
            batch["instrument_mask"],
            n_draws=n_samples,
            seed=seed * 100_003 + b,
        )
        parts["one_step"].append(one.float().cpu().numpy())
        parts["anchor_row"].append(batch["anchor_row"].numpy())
    rows = np.concatenate(parts["anchor_row"])
    arrays = [a for a in ("flux", "clean", "ivar") if a in store.arrays]
    tgt = store.read(rows, arrays)
    # store.read returns rows in the order asked for.
    out = posterior_metrics(
        model, np.concatenate(parts["samples"]), tgt["flux"], tgt.get("clean"), tgt.get("ivar")
    )
    one = model_space(model, np.concatenate(parts["one_step"]))
    out["one_step"] = prediction_errors(model, one, tgt["flux"], tgt.get("clean"), tgt.get("ivar"))
    return out
