"""The information-limited reference for galaxy counterfactuals (issue 10).

A counterfactual's posterior-mean error has two parts: what the other survey's image cannot
tell about the target image (its noise, its resolution, its depth) and what the model failed
to learn. The noise floor measures only the target's own noise. This reference measures the
rest of the limit. A supervised UNet regresses the target survey's image (in the model's
stretched space) from the other survey's image of the same galaxy and the target
observation's true conditions (PSF FWHM and shape, depth, sky σ, exposures, extinction per
band), trained with MSE, so it estimates the posterior mean.

The counterfactual model only sees the target survey's sky neighbours, not these true
conditions, so the reference knows more than the model. A model within 10% of it is at the
information limit. Neither knows the target's sub-pixel offset, so the offset is left out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from whatsreal.errors import ConfigError
from whatsreal.evaluate.counterfactual import model_space, prediction_errors
from whatsreal.evaluate.separation import fit_for_budget
from whatsreal.store import ObservationStore

# Observation truth columns the reference is given (offsets are not: see the module docstring)
CONDITION_COLUMNS = ("psf_fwhm", "psf_e1", "psf_e2", "depth", "sky_sigma", "n_exp", "extinction")


@dataclass
class ReferenceSettings:
    """What :func:`counterfactual_reference` trains."""

    minutes: float = 5.0  # wall-clock budget of the regressor, per direction
    n_train: int = 16000  # training-split galaxies seen by both surveys
    batch_size: int = 32
    lr: float = 1e-3
    width: int = 32  # channels of the UNet's first level (doubled at each of three levels)
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.minutes > 0:
            raise ConfigError(f"ReferenceSettings.minutes must be > 0; got {self.minutes}")
        for key in ("n_train", "batch_size", "width"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"ReferenceSettings.{key} must be >= 1")
        if self.width % 8:
            raise ConfigError(
                f"ReferenceSettings.width must be a multiple of 8 (GroupNorm); got {self.width}"
            )


def observing_conditions(store: ObservationStore, rows: np.ndarray) -> np.ndarray:
    """(N, D) float32: the :data:`CONDITION_COLUMNS` of observations ``rows`` (per band)."""
    truth = store.truth_obs
    missing = [c for c in CONDITION_COLUMNS if c not in truth]
    if missing:
        raise ConfigError(
            f"{store.path}: observation truth lacks {missing}; the counterfactual reference "
            "needs a simulated store that records the observing conditions"
        )
    cols = [np.asarray(truth[c])[rows].reshape(len(rows), -1) for c in CONDITION_COLUMNS]
    return np.concatenate(cols, axis=1).astype(np.float32)


class ConditionedUNet(nn.Module):
    """``diffusers.UNet2DModel`` mapping an image plus a conditions vector (broadcast as
    constant channels) to an image of the same size; the time input is held at 0."""

    def __init__(self, channels: int, n_conditions: int, size: int, width: int = 32) -> None:
        super().__init__()
        from diffusers import UNet2DModel

        self.unet = UNet2DModel(
            sample_size=size,
            in_channels=channels + n_conditions,
            out_channels=channels,
            block_out_channels=(width, 2 * width, 4 * width),
            down_block_types=("DownBlock2D",) * 3,
            up_block_types=("UpBlock2D",) * 3,
            layers_per_block=1,
            norm_num_groups=8,
        )

    def forward(self, x: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) in model space, conditions (B, D) standardised -> (B, C, H, W)."""
        c = conditions[:, :, None, None].expand(-1, -1, *x.shape[-2:])
        t = torch.zeros(x.shape[0], device=x.device)
        return self.unet(torch.cat([x, c], dim=1), t).sample


def counterfactual_reference(
    model: nn.Module,
    store: ObservationStore,
    train_pairs: np.ndarray,
    test_pairs: np.ndarray,
    settings: ReferenceSettings | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train the reference on ``train_pairs`` and score it on ``test_pairs``, both (N, 2)
    store rows (target survey, other survey) of one galaxy each. Errors are in ``model``'s
    stretched space over the target's noise floor, as the counterfactual's: returns
    ``mse_mean_over_floor``, ``mse_mean_vs_clean_over_floor`` (with a ``clean`` array),
    ``noise_floor``, ``n`` and the regressor's training record."""
    s = settings or ReferenceSettings()
    say = say or (lambda _msg: None)
    train_pairs = np.asarray(train_pairs, dtype=np.int64)
    test_pairs = np.asarray(test_pairs, dtype=np.int64)
    for name, p in (("train_pairs", train_pairs), ("test_pairs", test_pairs)):
        if p.ndim != 2 or p.shape[1] != 2 or len(p) < 2:
            raise ConfigError(f"{name} must be (N >= 2, 2) rows (target, other); got {p.shape}")
    target = store.instrument[test_pairs[0, 0]]
    if (store.instrument[train_pairs[:, 0]] != target).any() or (
        store.instrument[test_pairs[:, 0]] != target
    ).any():
        raise ConfigError("train_pairs[:, 0] and test_pairs[:, 0] must be one survey's rows")
    rng = np.random.default_rng(s.seed)
    if len(train_pairs) > s.n_train:
        train_pairs = train_pairs[np.sort(rng.choice(len(train_pairs), s.n_train, False))]

    def images(rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(model_space(model, store.read(rows, ("flux",))["flux"]))

    say(f"reference regressor on {len(train_pairs):,} image pairs ({s.minutes:g} min)")
    x_train, y_train = images(train_pairs[:, 1]), images(train_pairs[:, 0])
    cond = observing_conditions(store, train_pairs[:, 0])
    c_mu, c_sd = cond.mean(0), cond.std(0) + 1e-6
    c_train = torch.from_numpy((cond - c_mu) / c_sd)
    torch.manual_seed(s.seed)
    net = ConditionedUNet(x_train.shape[1], c_train.shape[1], x_train.shape[-1], s.width)

    def loss_of_batch() -> torch.Tensor:
        idx = torch.from_numpy(rng.integers(0, len(x_train), s.batch_size))
        return torch.mean((net(x_train[idx], c_train[idx]) - y_train[idx]) ** 2)

    info = fit_for_budget(net, loss_of_batch, s.minutes, s.lr)
    info["train_examples"] = len(train_pairs)
    x_test = images(test_pairs[:, 1])
    c_test = torch.from_numpy((observing_conditions(store, test_pairs[:, 0]) - c_mu) / c_sd)
    with torch.inference_mode():
        pred = torch.cat(
            [net(x_test[lo : lo + 64], c_test[lo : lo + 64]) for lo in range(0, len(x_test), 64)]
        ).numpy()
    arrays = [a for a in ("flux", "clean", "ivar") if a in store.arrays]
    tgt = store.read(test_pairs[:, 0], arrays)
    out = {
        "n": len(test_pairs),
        **prediction_errors(model, pred, tgt["flux"], tgt.get("clean"), tgt.get("ivar")),
    }
    out.update(regressor=info, conditions=list(CONDITION_COLUMNS))
    return out


def latent_reference(
    model: nn.Module,
    store: ObservationStore,
    to: str,
    train_sources: np.ndarray,
    test: Any,
    settings: ReferenceSettings | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """What the model's latents hold of the target image, read without the flow objective.

    A fresh copy of the model's own decoder (same architecture, re-initialised) is trained
    with MSE to predict the target image from the model's conditioning of the same views:
    its frozen encoders' tokens, the flow input held at zero and t at 0. In the same minutes
    as the flow decoder it splits the posterior-mean error: as far off as the model, what
    limits is reading the galaxy out of the latents in that time, whatever the objective;
    much closer, the flow objective is.
    ``test`` is a :class:`whatsreal.infer.counterfactual.ViewRows` (or a result with
    ``physics_rows``, ``instrument_rows`` and ``target_row``): it is scored on exactly the
    views the counterfactuals were made from. Training views are picked by the same rule
    for ``train_sources``. Returns errors as :func:`counterfactual_reference`'s."""
    import copy

    from whatsreal.infer.counterfactual import gather_views, view_rows

    s = settings or ReferenceSettings()
    say = say or (lambda _msg: None)
    if getattr(model, "decoder", None) is None or not hasattr(model, "condition"):
        raise ConfigError(
            f"{type(model).__name__} has no flow decoder and conditioning to read: the latent "
            "reference needs a counterfactual model trained with fm_weight > 0"
        )
    phys = np.asarray(getattr(test, "physics_rows", getattr(test, "physics", None)))
    ctx = np.asarray(getattr(test, "instrument_rows", getattr(test, "instrument", None)))
    target = np.asarray(getattr(test, "target_row", getattr(test, "target", None)))
    have = target >= 0
    if have.sum() < 2:
        raise ConfigError(f"latent reference: fewer than 2 test views with a real {to} image")
    train = view_rows(
        store, to, sources=train_sources, n_physics=phys.shape[1], k=ctx.shape[1], seed=s.seed
    )
    keep = np.flatnonzero(train.target >= 0)
    if keep.size < 2:
        raise ConfigError(f"latent reference: fewer than 2 training sources seen by {to}")
    rng = np.random.default_rng(s.seed)
    if keep.size > s.n_train:
        keep = np.sort(rng.choice(keep, s.n_train, replace=False))
    say(f"latent reference on {keep.size:,} training views ({s.minutes:g} min)")
    model.eval()
    torch.manual_seed(s.seed)
    dec = copy.deepcopy(model.decoder)
    for m in dec.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    dec.requires_grad_(True)

    device = next(model.parameters()).device  # the model's own device, CPU or GPU

    def predict(p: np.ndarray, c: np.ndarray) -> torch.Tensor:
        pv, pm = (t.to(device) for t in gather_views(store, p))
        iv, im = (t.to(device) for t in gather_views(store, c))
        with torch.no_grad():
            cond, cmask, _ = model.condition(pv, pm, iv, im)
        x = torch.zeros(len(p), *store.shape, device=device)
        return dec(x, torch.zeros(len(p), device=device), cond, cmask)

    def loss_of_batch() -> torch.Tensor:
        idx = np.sort(rng.choice(keep, min(s.batch_size, keep.size), replace=False))
        flux = store.read(train.target[idx], ("flux",))["flux"]
        y = torch.from_numpy(model_space(model, flux)).to(device)
        return torch.mean((predict(train.physics[idx], train.instrument[idx]) - y) ** 2)

    info = fit_for_budget(dec, loss_of_batch, s.minutes, s.lr)
    info["train_examples"] = int(keep.size)
    rows = np.flatnonzero(have)
    with torch.inference_mode():
        pred = (
            torch.cat(
                [
                    predict(phys[rows[lo : lo + 32]], ctx[rows[lo : lo + 32]])
                    for lo in range(0, rows.size, 32)
                ]
            )
            .float()
            .cpu()
            .numpy()
        )
    arrays = [a for a in ("flux", "clean", "ivar") if a in store.arrays]
    tgt = store.read(target[rows], arrays)
    out = {
        "n": int(rows.size),
        **prediction_errors(model, pred, tgt["flux"], tgt.get("clean"), tgt.get("ivar")),
    }
    out["regressor"] = info
    return out
