"""Seed 001's structured contrastive dual encoder, its single-latent baseline, and presets.

:class:`ContrastiveDualModel` (seed 001, section 3, Fig. 1) encodes the same observation twice,
with two untied :class:`~whatsreal.models.conformer.ConformerEncoder` s, into a physics latent
``z_phys`` ("star") and an instrument latent ``z_inst``. Training uses

    L = w_recon * MSE(D(g_phys(z_phys) * g_inst(z_inst)), x)        (eqs. 6, 10, 11)
      + w_phys  * InfoNCE(p_phys(z_phys); positives = same source)   (eqs. 7, 8)
      + w_inst  * InfoNCE(p_inst(z_inst); positives = same instrument)  (eqs. 7, 9)

where ``p_*`` are SimCLR-style projection heads used only for the losses and ``g_*`` are
small MLPs whose outputs are fused by an element-wise product before the decoder ``D``.

:class:`SingleLatentModel` is the paper's baseline: the same encoder architecture, one latent,
InfoNCE over same-source positives only. The paper describes it as "identical architecture but
a single shared latent space, trained with contrastive loss over same-star pairs only"; we also
give it the reconstruction decoder (from ``g(z)``) with a configurable weight, default 1.0, so
that it differs from the dual model only in the latent structure. Set ``recon_weight=0`` for a
purely contrastive baseline.

Models are built from named presets (``paper``, ``cpu``, ``tiny``) with
:func:`build_contrastive_model`, record their constructor arguments in ``self.config``, and
round-trip through :meth:`save_pretrained` / :meth:`from_pretrained` (or
:func:`load_pretrained`) without any training code.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from whatsreal.errors import ConfigError
from whatsreal.models.base import (
    PretrainedMixin,
    constructor_args,
    load_pretrained,
    register_model,
)
from whatsreal.models.conformer import ConformerEncoder, masked_periodogram

__all__ = [
    "CONTRASTIVE_PRESETS",
    "INSTRUMENT_ENCODERS",
    "ContrastiveDualModel",
    "SeriesMLP",
    "SingleLatentModel",
    "build_contrastive_model",
    "load_pretrained",
    "masked_mse",
    "multi_positive_info_nce",
    "single_overrides",
]


def multi_positive_info_nce(
    z: Tensor,
    labels: Tensor,
    tau: float,
    groups: Tensor | None = None,
    memory: Tensor | None = None,
    memory_allowed: Tensor | None = None,
) -> Tensor:
    """Multi-positive InfoNCE of seed 001 (eqs. 7-9) over a batch of embeddings z (B, D).

    Embeddings are L2-normalised and compared by cosine similarity / tau. For anchor a, the
    positives are the other items with the same label and the negatives the items with a
    different label; a is never compared with itself. With ``groups`` (B,), the negatives are
    only the items of a's own group (for example its instrument), so a feature shared by a
    whole group (survey identity) cannot separate a from them; positives keep every group.
    The per-anchor loss is ``logsumexp(all others) - logsumexp(positives)``, which is eq. 7
    computed stably.
    Anchors without any positive in the batch carry no signal and are left out of the mean
    (eq. 8 divides by B; we divide by the number of anchors that have a positive, so the loss
    scale does not depend on how many singletons a batch happens to contain). If no anchor has
    a positive the result is a zero that still carries a gradient graph.

    ``memory`` (M, D), embeddings kept from earlier batches (cross-batch memory, XBM), adds
    negatives only, without gradient; ``memory_allowed`` (B, M) says which of them each
    anchor may use (default: all).
    """
    if z.ndim != 2:
        raise ValueError(f"z must have shape (batch, dim), got {tuple(z.shape)}")
    if labels.ndim != 1 or labels.shape[0] != z.shape[0]:
        raise ValueError(
            f"labels must have shape ({z.shape[0]},) to match z, got {tuple(labels.shape)}"
        )
    if not tau > 0:
        raise ValueError(f"temperature tau must be > 0, got {tau}")
    if groups is not None and groups.shape != labels.shape:
        raise ValueError(
            f"groups must have shape {tuple(labels.shape)} to match labels, "
            f"got {tuple(groups.shape)}"
        )
    labels = labels.to(z.device)
    zn = F.normalize(z.float(), dim=1)
    sim = zn @ zn.T / tau
    eye = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    others = ~eye
    if groups is not None:
        groups = groups.to(z.device)
        others = positive | ((groups[:, None] == groups[None, :]) & ~eye)
    if memory is not None and memory.shape[0] > 0:
        mem = F.normalize(memory.detach().float().to(z.device), dim=1)
        allowed = (
            torch.ones(z.shape[0], mem.shape[0], dtype=torch.bool, device=z.device)
            if memory_allowed is None
            else memory_allowed.to(z.device).bool()
        )
        sim = torch.cat([sim, zn @ mem.T / tau], dim=1)
        positive = torch.cat([positive, torch.zeros_like(allowed)], dim=1)
        others = torch.cat([others, allowed], dim=1)
    has_positive = positive.any(dim=1)
    if not bool(has_positive.any()):
        return (z * 0.0).sum()
    sim, positive, others = sim[has_positive], positive[has_positive], others[has_positive]
    neg_inf = torch.tensor(float("-inf"), dtype=sim.dtype, device=sim.device)
    log_all = torch.logsumexp(torch.where(others, sim, neg_inf), dim=1)
    log_pos = torch.logsumexp(torch.where(positive, sim, neg_inf), dim=1)
    return (log_all - log_pos).mean()


def group_agreement_loss(z: Tensor, labels: Tensor) -> Tensor:
    """Invariance within groups (rows with one label: one source by several instruments):
    mean squared distance of each row to its group's mean over the rows' total variance, so
    rescaling the latent cannot lower it. 0 when a group's rows coincide; singletons add 0."""
    labels = labels.to(z.device)
    uniq, inverse = torch.unique(labels, return_inverse=True)
    sums = z.new_zeros(uniq.numel(), z.shape[1]).index_add_(0, inverse, z)
    counts = torch.bincount(inverse, minlength=uniq.numel()).clamp_min(1).to(z.dtype)
    centre = (sums / counts[:, None])[inverse]
    spread = z.var(dim=0, unbiased=False).sum().clamp_min(1e-8)
    return (z - centre).pow(2).sum(dim=1).mean() / spread


def instrument_calibration_nll(
    mu: Tensor,
    sigma: Tensor,
    x: Tensor,
    source: Tensor,
    instrument: Tensor,
    mask: Tensor | None = None,
) -> Tensor:
    """Gaussian NLL of each anchor's instrument model (mu, sigma: (B, C, T)) on the *other
    sources'* observations by the same instrument in the batch (x: (B, C, T)).

    An instrument's observations of many sources, averaged, leave its systematics: the mean
    curve (an additive drift) and the spread about it (a gain drift times the sources'
    variability, plus noise). So the prediction is scored on other sources only: it cannot
    profit from the anchor's own source, and an instrument latent that carries the source is
    penalised rather than rewarded. Computed from per-anchor sums (B x B weights times the
    series), so the cost is that of two matrix products. Anchors with no such partner in the
    batch are left out; if none has one, a zero with a gradient graph is returned."""
    if not (mu.shape == sigma.shape == x.shape):
        raise ValueError(
            f"mu {tuple(mu.shape)}, sigma {tuple(sigma.shape)} and x {tuple(x.shape)} differ"
        )
    b = x.shape[0]
    source, instrument = source.to(x.device), instrument.to(x.device)
    partner = (instrument[:, None] == instrument[None, :]) & (source[:, None] != source[None, :])
    has = partner.any(dim=1)
    if not bool(has.any()):
        return (mu * 0.0).sum() + (sigma * 0.0).sum()
    valid = (
        torch.ones(b, x.shape[-1], device=x.device)
        if mask is None
        else mask.to(device=x.device, dtype=torch.float32)
    )
    xf = torch.where(valid[:, None, :] > 0, x.float(), torch.zeros((), device=x.device))
    w = partner.float()
    flat = (b, -1)
    n = (w @ valid).unsqueeze(1).expand_as(xf).reshape(flat)  # partners valid at (c, t)
    s1 = w @ xf.reshape(flat)
    s2 = w @ xf.pow(2).reshape(flat)
    m, sd = mu.float().reshape(flat), sigma.float().reshape(flat)
    sq = s2 - 2 * m * s1 + n * m.pow(2)  # sum over partners of (x_j - mu_i)^2
    nll = 0.5 * sq / sd.pow(2) + n * torch.log(sd)
    per_anchor = nll.sum(dim=1) / n.sum(dim=1).clamp_min(1.0)
    return per_anchor[has].mean()


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error over valid samples (eq. 11); mask (B, T) applies to all channels."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if mask is None:
        return F.mse_loss(pred.float(), target.float())
    weights = mask.to(device=pred.device, dtype=torch.float32)[:, None, :].expand_as(pred)
    diff = torch.where(
        weights > 0, pred.float() - target.float(), torch.zeros((), device=pred.device)
    )
    return (diff**2).sum() / weights.sum().clamp_min(1.0)


class _GradientReversal(torch.autograd.Function):
    """Identity forward, negated gradient backward (DANN)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return -grad


def reverse_gradient(x: Tensor) -> Tensor:
    """x forward; the negated gradient backward (a DANN adversary's gradient reversal)."""
    return _GradientReversal.apply(x)


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """Two-layer MLP with GELU, used for projection heads and g-projections."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))


class _SpectrumHead(nn.Module):
    """Predicts, from a latent, the log periodogram of the series it was encoded from
    (standardised over the batch, bin by bin). A star's light curve without its phase is its
    power spectrum; asking the star latent for it keeps what a probe of periods needs,
    including weak harmonics, which the InfoNCE term alone can drop once the stars of a batch
    are told apart."""

    def __init__(self, latent_dim: int, hidden: int, in_channels: int, bins: int) -> None:
        super().__init__()
        if bins < 1:
            raise ConfigError(f"spectrum_bins must be >= 1; got {bins}")
        self.net = _mlp(latent_dim, hidden, in_channels * bins)
        self.register_buffer("freqs", torch.arange(1, bins + 1) / (2.0 * bins), persistent=False)

    def loss(self, z: Tensor, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """MSE between the predicted and the batch-standardised log power of x (B, C, T)."""
        with torch.no_grad():
            power = masked_periodogram(x.detach(), self.freqs, mask).flatten(1)
            target = torch.log(power + 1e-4)
            target = (target - target.mean(dim=0)) / target.std(dim=0).clamp_min(1e-3)
        return F.mse_loss(self.net(z).float(), target)


# The InfoNCE projection heads, by name (``projection_head``; builders of (in, hidden, out)):
# SimCLR's MLP (seed 001's), a linear map, or none. With none the InfoNCE terms act on the
# latent itself, so the latent, not only the head's output, becomes invariant to what the
# positives do not share (issue 10, seventh round).
PROJECTION_HEADS = {
    "mlp": _mlp,
    "linear": lambda in_dim, hidden, out_dim: nn.Linear(in_dim, out_dim),
    "none": lambda in_dim, hidden, out_dim: nn.Identity(),
}


class _Decoder(nn.Module):
    """MLP from the fused vector to a (C, T) series; tied to the training length T."""

    def __init__(self, fusion_dim: int, hidden: int, in_channels: int, length: int) -> None:
        super().__init__()
        self.shape = (in_channels, length)
        self.net = nn.Sequential(
            nn.Linear(fusion_dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, in_channels * length),
        )

    def forward(self, h: Tensor) -> Tensor:
        """Map (B, fusion_dim) to (B, C, T)."""
        return self.net(h).view(h.shape[0], *self.shape)


def _instrument_encoder_args(
    enc: dict[str, Any], inst_width: int | None, inst_depth: int | None
) -> dict[str, Any]:
    """The instrument encoder's arguments: the physics encoder's, with its own width and depth
    when given (the feed-forward width scaled with it). Naming the instrument takes less than
    the star's physics, so a smaller encoder buys the star encoder steps in a fixed budget."""
    args = dict(enc)
    if inst_depth is not None:
        if inst_depth < 0:
            raise ConfigError(f"inst_depth must be >= 0; got {inst_depth}")
        args["depth"] = int(inst_depth)
    if inst_width is not None:
        if inst_width < 1 or inst_width % enc["heads"]:
            raise ConfigError(
                f"inst_width must be >= 1 and divisible by heads ({enc['heads']}); got {inst_width}"
            )
        args["width"] = int(inst_width)
        args["ff_dim"] = max(1, round(enc["ff_dim"] * inst_width / enc["width"]))
    return args


class SeriesMLP(nn.Module):
    """An encoder that reads a series sample by sample at fixed times: an MLP over the
    (C, T) values and the validity mask, to a latent. It has no translation invariance, which
    is what an instrument encoder wants when an instrument's drifts are tied to the time of
    the observation (every star seen by one camera in one sector shares its time axis), and
    it costs a fraction of a Conformer. Tied to the training length T."""

    def __init__(self, in_channels: int, length: int, hidden: int, latent_dim: int) -> None:
        super().__init__()
        if min(in_channels, length, hidden, latent_dim) < 1:
            raise ValueError(
                f"in_channels, length, hidden and latent_dim must be >= 1; got {in_channels}, "
                f"{length}, {hidden}, {latent_dim}"
            )
        self.shape = (in_channels, length)
        self.net = nn.Sequential(
            nn.Linear((in_channels + 1) * length, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, latent_dim),
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Latent (B, latent_dim) of x (B, C, T); invalid samples (mask False) are zeroed."""
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(
                f"this instrument encoder reads series of shape (batch, {self.shape[0]}, "
                f"{self.shape[1]}) (its training length); got {tuple(x.shape)}"
            )
        valid = (
            torch.ones(x.shape[0], x.shape[-1], dtype=torch.bool, device=x.device)
            if mask is None
            else mask.to(device=x.device, dtype=torch.bool)
        )
        xz = torch.where(valid[:, None, :], x, torch.zeros((), dtype=x.dtype, device=x.device))
        return self.net(torch.cat([xz.flatten(1), valid.to(x.dtype)], dim=1))


# The instrument encoder's architecture, by name (``inst_encoder``).
INSTRUMENT_ENCODERS = ("conformer", "mlp")


@register_model
class ContrastiveDualModel(PretrainedMixin, nn.Module):
    """Physics and instrument encoders, multiplicative decoder and two InfoNCE losses (seed 001).

    ``forward`` returns ``z_phys``, ``z_inst`` (B, latent_dim) and ``recon`` (B, C, T);
    ``loss`` adds the projection heads and returns the weighted objective of eq. 10.
    The decoder reconstructs series of the training ``length`` only; the encoders accept any T.
    ``inst_width``/``inst_depth`` size the instrument encoder apart from the star encoder.
    ``spectral`` gives the star encoder a periodogram branch (the instrument encoder keeps
    none: an instrument's drifts are tied to the time of the observation, not periodic).
    ``calibration_weight`` > 0 makes the model self-calibrating: the instrument latent
    predicts its instrument's mean curve and spread, and the star encoder reads the series
    with them divided out. ``inst_encoder="mlp"`` makes the instrument encoder a
    :class:`SeriesMLP` (hidden width 4 x ``inst_width`` or ``width``) instead of a Conformer.
    """

    def __init__(
        self,
        in_channels: int,
        length: int,
        width: int = 64,
        depth: int = 4,
        heads: int = 4,
        ff_dim: int = 128,
        latent_dim: int = 20,
        conv_kernel: int = 15,
        dropout: float = 0.1,
        time_encoding: bool = True,
        proj_dim: int = 32,
        proj_hidden: int = 64,
        fusion_dim: int = 64,
        g_hidden: int = 64,
        decoder_hidden: int = 256,
        tau: float = 0.1,
        recon_weight: float = 1.0,
        phys_weight: float = 1.0,
        inst_weight: float = 1.0,
        phys_negatives: str = "all",
        adversary_weight: float = 0.0,
        n_instruments: int = 0,
        agreement_weight: float = 0.0,
        projection_head: str = "mlp",
        inst_width: int | None = None,
        inst_depth: int | None = None,
        calibration_weight: float = 0.0,
        spectral: bool = False,
        spectrum_weight: float = 0.0,
        spectrum_bins: int = 96,
        inst_encoder: str = "conformer",
    ) -> None:
        super().__init__()
        if inst_encoder not in INSTRUMENT_ENCODERS:
            raise ConfigError(
                f"inst_encoder must be one of {INSTRUMENT_ENCODERS}; got {inst_encoder!r}"
            )
        if projection_head not in PROJECTION_HEADS:
            raise ConfigError(
                f"projection_head must be one of {sorted(PROJECTION_HEADS)}; got "
                f"{projection_head!r}"
            )
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if phys_negatives not in ("all", "same_instrument"):
            raise ConfigError(
                f"phys_negatives must be 'all' or 'same_instrument'; got {phys_negatives!r}"
            )
        if adversary_weight < 0 or (adversary_weight > 0 and n_instruments < 2):
            raise ConfigError(
                "adversary_weight must be >= 0, and > 0 needs n_instruments >= 2 (the classes "
                f"it predicts); got adversary_weight={adversary_weight}, "
                f"n_instruments={n_instruments}"
            )
        if agreement_weight < 0:
            raise ConfigError(f"agreement_weight must be >= 0; got {agreement_weight}")
        if calibration_weight < 0:
            raise ConfigError(f"calibration_weight must be >= 0; got {calibration_weight}")
        if spectrum_weight < 0:
            raise ConfigError(f"spectrum_weight must be >= 0; got {spectrum_weight}")
        self.config = constructor_args(type(self), locals())
        self.phys_negatives = phys_negatives
        self.adversary_weight = float(adversary_weight)
        self.agreement_weight = float(agreement_weight)
        enc = {
            "in_channels": in_channels,
            "width": width,
            "depth": depth,
            "heads": heads,
            "ff_dim": ff_dim,
            "latent_dim": latent_dim,
            "conv_kernel": conv_kernel,
            "dropout": dropout,
            "time_encoding": time_encoding,
        }
        self.tau = tau
        self.weights = {"recon": recon_weight, "phys": phys_weight, "inst": inst_weight}
        self.encoder_phys = ConformerEncoder(**enc, spectral=spectral)
        if inst_encoder == "mlp":
            hidden = 4 * (inst_width or width)
            self.encoder_inst = SeriesMLP(in_channels, length, hidden, latent_dim)
        else:
            self.encoder_inst = ConformerEncoder(
                **_instrument_encoder_args(enc, inst_width, inst_depth)
            )
        self.head_phys = PROJECTION_HEADS[projection_head](latent_dim, proj_hidden, proj_dim)
        self.head_inst = PROJECTION_HEADS[projection_head](latent_dim, proj_hidden, proj_dim)
        self.g_phys = _mlp(latent_dim, g_hidden, fusion_dim)
        self.g_inst = _mlp(latent_dim, g_hidden, fusion_dim)
        self.decoder = _Decoder(fusion_dim, decoder_hidden, in_channels, length)
        if self.adversary_weight > 0:
            self.adversary = _mlp(latent_dim, proj_hidden, n_instruments)
        self.calibration_weight = float(calibration_weight)
        if self.calibration_weight > 0:
            # the instrument model: mean curve and spread, (2, C, T), from the instrument latent
            self.calibrator = _Decoder(fusion_dim, decoder_hidden, 2 * in_channels, length)
            self.calibrator_in = _mlp(latent_dim, g_hidden, fusion_dim)
        self.spectrum_weight = float(spectrum_weight)
        if self.spectrum_weight > 0:
            self.spectrum_head = _SpectrumHead(latent_dim, g_hidden, in_channels, spectrum_bins)

    @property
    def self_calibrated(self) -> bool:
        """Whether the physics encoder reads the series with the instrument model divided out."""
        return self.calibration_weight > 0

    def calibration(self, z_inst: Tensor) -> tuple[Tensor, Tensor]:
        """The instrument model of an instrument latent: the mean curve ``mu`` and the spread
        ``sigma`` (each (B, C, T)) of what that instrument records for a random source."""
        if not self.self_calibrated:
            raise ConfigError(
                "this model has no instrument model (calibration_weight = 0); train with "
                "model_overrides {calibration_weight: 1.0} to get one"
            )
        out = self.calibrator(self.calibrator_in(z_inst))
        c = out.shape[1] // 2
        return out[:, :c], F.softplus(out[:, c:].float()).to(out.dtype) + 1e-3

    def _encode(self, x: Tensor, mask: Tensor | None) -> dict[str, Tensor]:
        """Both latents, and for a self-calibrated model the instrument model (``mu``,
        ``sigma``) of the instrument latent: the physics encoder then reads
        (x - mu) / sigma, with the instrument model held fixed (no gradient), so the physics
        objective cannot bend it."""
        z_inst = self.encoder_inst(x, mask)
        if not self.self_calibrated:
            return {"z_phys": self.encoder_phys(x, mask), "z_inst": z_inst, "x_phys": x}
        length = self.decoder.shape[1]
        if x.shape[-1] != length:
            raise ValueError(
                f"a self-calibrated model reads series of its training length {length}; got "
                f"length {x.shape[-1]} (pad or crop to {length} and pass a mask)"
            )
        mu, sigma = self.calibration(z_inst)
        xc = (x - mu.detach()) / sigma.detach()
        if mask is not None:
            xc = torch.where(mask.to(x.device).bool()[:, None, :], xc, torch.zeros_like(xc))
        z_phys = self.encoder_phys(xc, mask)
        return {"z_phys": z_phys, "z_inst": z_inst, "mu": mu, "sigma": sigma, "x_phys": xc}

    def instrument_model(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """What the instrument latent of each series says its instrument records for a random
        source: the mean curve (its systematics) and the spread, each (B, C, T)."""
        return self.calibration(self.encoder_inst(x, mask))

    def embed(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Physics and instrument latents (B, latent_dim) each; no projection heads involved.
        A self-calibrated model encodes the physics from the series with the instrument model
        of its own instrument latent divided out."""
        out = self._encode(x, mask)
        return out["z_phys"], out["z_inst"]

    def decode(self, z_phys: Tensor, z_inst: Tensor) -> Tensor:
        """Series (B, C, T) from a physics latent and an instrument latent (eq. 6)."""
        return self.decoder(self.g_phys(z_phys) * self.g_inst(z_inst))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        """Latents and reconstruction of x (B, C, T), and a self-calibrated model's
        instrument model (``mu``, ``sigma``)."""
        out = self._encode(x, mask)
        return {**out, "recon": self.decode(out["z_phys"], out["z_inst"])}

    def loss(
        self,
        x: Tensor,
        source: Tensor,
        instrument: Tensor,
        mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Weighted objective of eq. 10: masked MSE + InfoNCE by source + InfoNCE by instrument.

        Options: ``phys_negatives="same_instrument"`` takes the star term's negatives from the
        anchor's instrument only, so instrument features cannot tell a star from them; an
        instrument classifier behind gradient reversal on the star latent
        (``adversary_weight``) makes the star encoder hide the instrument; an agreement term
        (``agreement_weight``) pulls each star latent to its star's mean over instruments;
        ``calibration_weight`` trains the instrument model the physics encoder divides out
        (:func:`instrument_calibration_nll`); ``spectrum_weight`` asks the star latent for the
        log periodogram of what the star encoder read."""
        out = self(x, mask)
        recon = masked_mse(out["recon"], x, mask)
        groups = instrument if self.phys_negatives == "same_instrument" else None
        phys = multi_positive_info_nce(self.head_phys(out["z_phys"]), source, self.tau, groups)
        inst = multi_positive_info_nce(self.head_inst(out["z_inst"]), instrument, self.tau)
        w = self.weights
        total = w["recon"] * recon + w["phys"] * phys + w["inst"] * inst
        losses = {"recon": recon, "phys": phys, "inst": inst}
        if self.adversary_weight > 0:
            logits = self.adversary(reverse_gradient(out["z_phys"].float()))
            losses["adv"] = F.cross_entropy(logits, instrument.to(logits.device).long())
            total = total + self.adversary_weight * losses["adv"]
        if self.agreement_weight > 0:
            losses["agree"] = group_agreement_loss(out["z_phys"].float(), source)
            total = total + self.agreement_weight * losses["agree"]
        if self.self_calibrated:
            losses["calib"] = instrument_calibration_nll(
                out["mu"], out["sigma"], x, source, instrument, mask
            )
            total = total + self.calibration_weight * losses["calib"]
        if self.spectrum_weight > 0:
            losses["spectrum"] = self.spectrum_head.loss(out["z_phys"], out["x_phys"], mask)
            total = total + self.spectrum_weight * losses["spectrum"]
        return {"total": total, **losses}


@register_model
class SingleLatentModel(PretrainedMixin, nn.Module):
    """Seed-001 baseline: one encoder, one latent, InfoNCE on same-source positives only.

    Also reconstructs x from ``g(z)`` with weight ``recon_weight`` (default 1.0; see module
    docstring). ``forward`` returns ``z`` and ``recon``; ``embed`` returns ``z``.
    """

    def __init__(
        self,
        in_channels: int,
        length: int,
        width: int = 64,
        depth: int = 4,
        heads: int = 4,
        ff_dim: int = 128,
        latent_dim: int = 20,
        conv_kernel: int = 15,
        dropout: float = 0.1,
        time_encoding: bool = True,
        proj_dim: int = 32,
        proj_hidden: int = 64,
        fusion_dim: int = 64,
        g_hidden: int = 64,
        decoder_hidden: int = 256,
        tau: float = 0.1,
        recon_weight: float = 1.0,
        phys_weight: float = 1.0,
        spectral: bool = False,
        spectrum_weight: float = 0.0,
        spectrum_bins: int = 96,
    ) -> None:
        super().__init__()
        if spectrum_weight < 0:
            raise ConfigError(f"spectrum_weight must be >= 0; got {spectrum_weight}")
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.config = constructor_args(type(self), locals())
        self.tau = tau
        self.weights = {"recon": recon_weight, "phys": phys_weight}
        self.encoder = ConformerEncoder(
            in_channels=in_channels,
            width=width,
            depth=depth,
            heads=heads,
            ff_dim=ff_dim,
            latent_dim=latent_dim,
            conv_kernel=conv_kernel,
            dropout=dropout,
            time_encoding=time_encoding,
            spectral=spectral,
        )
        self.head = _mlp(latent_dim, proj_hidden, proj_dim)
        self.g = _mlp(latent_dim, g_hidden, fusion_dim)
        self.decoder = _Decoder(fusion_dim, decoder_hidden, in_channels, length)
        self.spectrum_weight = float(spectrum_weight)
        if self.spectrum_weight > 0:
            self.spectrum_head = _SpectrumHead(latent_dim, g_hidden, in_channels, spectrum_bins)

    def embed(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """The single latent (B, latent_dim), without the projection head."""
        return self.encoder(x, mask)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        """Latent and reconstruction of x (B, C, T)."""
        z = self.embed(x, mask)
        return {"z": z, "recon": self.decoder(self.g(z))}

    def loss(
        self,
        x: Tensor,
        source: Tensor,
        instrument: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Masked MSE + InfoNCE by source (+ the spectrum term, ``spectrum_weight``);
        ``instrument`` is accepted (common call) and ignored."""
        out = self(x, mask)
        recon = masked_mse(out["recon"], x, mask)
        phys = multi_positive_info_nce(self.head(out["z"]), source, self.tau)
        total = self.weights["recon"] * recon + self.weights["phys"] * phys
        losses = {"recon": recon, "phys": phys}
        if self.spectrum_weight > 0:
            losses["spectrum"] = self.spectrum_head.loss(out["z"], x, mask)
            total = total + self.spectrum_weight * losses["spectrum"]
        return {"total": total, **losses}


# Named presets (timm-style registry). "paper" is seed 001 App. B; tau, dropout, kernel and the
# head/decoder sizes are not given in the paper and are our choices (tau = 0.1 is the usual
# SimCLR-range value for cosine similarities). "cpu" keeps the structure (width 32, 2 blocks,
# 2 heads) at a fraction of the cost;
# "tiny" is for unit tests.
CONTRASTIVE_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "width": 64,
        "depth": 4,
        "heads": 4,
        "ff_dim": 128,
        "latent_dim": 20,
        "conv_kernel": 15,
        "dropout": 0.1,
        "proj_dim": 32,
        "proj_hidden": 64,
        "fusion_dim": 64,
        "g_hidden": 64,
        "decoder_hidden": 256,
        "tau": 0.1,
        "recon_weight": 1.0,
        "phys_weight": 1.0,
        "inst_weight": 1.0,
    },
    "cpu": {
        "width": 32,
        "depth": 2,
        "heads": 2,  # head dim 16: the CPU attention kernels are ~2x faster than with 4 x 8
        "ff_dim": 64,
        "latent_dim": 20,
        "conv_kernel": 15,
        "dropout": 0.0,
        "proj_dim": 32,
        "proj_hidden": 64,
        "fusion_dim": 64,
        "g_hidden": 64,
        "decoder_hidden": 128,
        "tau": 0.1,
        "recon_weight": 1.0,
        "phys_weight": 1.0,
        "inst_weight": 1.0,
    },
    "tiny": {
        "width": 16,
        "depth": 1,
        "heads": 2,
        "ff_dim": 32,
        "latent_dim": 8,
        "conv_kernel": 5,
        "dropout": 0.0,
        "proj_dim": 8,
        "proj_hidden": 16,
        "fusion_dim": 16,
        "g_hidden": 16,
        "decoder_hidden": 32,
        "tau": 0.1,
        "recon_weight": 1.0,
        "phys_weight": 1.0,
        "inst_weight": 1.0,
    },
}


def single_overrides(dual_overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The options of a dual model that its single-latent baseline shares: those
    :class:`SingleLatentModel` accepts (the encoder's architecture, the temperature, ...), so
    that the baseline keeps seed 001's "identical architecture"; the dual's own levers
    (instrument terms, agreement, self-calibration) are left out. The one rule for every place
    that sets a baseline beside a dual model."""
    accepted = set(inspect.signature(SingleLatentModel.__init__).parameters)
    return {k: v for k, v in dual_overrides.items() if k in accepted - {"self"}}


def build_contrastive_model(
    preset: str,
    in_channels: int,
    length: int,
    single_latent: bool = False,
    **overrides: Any,
) -> ContrastiveDualModel | SingleLatentModel:
    """Build the dual model (or the single-latent baseline) from a named preset plus overrides."""
    if preset not in CONTRASTIVE_PRESETS:
        raise ConfigError(
            f"unknown contrastive preset {preset!r}; known presets: {sorted(CONTRASTIVE_PRESETS)}"
        )
    cls: type[ContrastiveDualModel | SingleLatentModel] = (
        SingleLatentModel if single_latent else ContrastiveDualModel
    )
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "in_channels", "length"}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} options {unknown}; accepted options: {sorted(accepted)}"
        )
    kwargs = {k: v for k, v in copy.deepcopy(CONTRASTIVE_PRESETS[preset]).items() if k in accepted}
    kwargs.update(overrides)
    return cls(in_channels=in_channels, length=length, **kwargs)
