"""Seed 000's counterfactual flow-matching model, for images and for light curves.

The physics encoder sees the anchor's source through *other* instruments (physics views);
the instrument encoder sees *other* sources through the anchor's instrument (instrument
views). Each view becomes a few tokens; the tokens of all real views (padded slots are
masked) plus one learned null token form the conditioning sequence of a velocity network
that regenerates the anchor by rectified flow (``models.flow``). The anchor is never an
argument of :meth:`CounterfactualModel.condition`, so in the flow-matching loss it cannot
reach an encoder.

Optional *hybrid* terms (off in ``paper``) add seed 001's multi-positive InfoNCE: physics
latents of the anchor and its physics views attract (same source), instrument latents of the
anchor and its instrument views attract (same instrument and sky patch). They encode the
anchor for those terms only; the conditioning is still built from views alone.

Image decoders are ``diffusers.UNet2DConditionModel``; light curves use
:class:`SeriesFlowDecoder`, a small 1-D residual network with cross-attention (diffusers'
``UNet1DModel`` has none). Presets: ``paper`` (DESIGN.md §5), ``cpu`` (sized for 2 cores),
``tiny`` (tests).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from whatsreal.errors import ConfigError
from whatsreal.models.base import PretrainedMixin, constructor_args, register_model
from whatsreal.models.conformer import ConformerEncoder, sinusoidal_time_encoding
from whatsreal.models.contrastive import (
    PROJECTION_HEADS,
    multi_positive_info_nce,
    reverse_gradient,
)
from whatsreal.models.flow import Solver, integrate, sample_t

__all__ = [
    "COUNTERFACTUAL_PRESETS",
    "CounterfactualModel",
    "ImageTokenEncoder",
    "SeriesFlowDecoder",
    "SeriesTokenEncoder",
    "build_counterfactual_model",
]


# --------------------------------------------------------------------------- encoders
class ImageTokenEncoder(nn.Module):
    """timm backbone (not pretrained) whose pooling/projection is replaced by a 1x1 conv.

    The deepest feature stage whose grid is at least ``min_grid`` x ``min_grid`` is used, so
    a 48x48 ResNet-18 gives a 2x2 map of ``token_dim`` channels = 4 tokens (seed 000 A.1).
    With ``highpass`` the backbone also sees each band minus its 3x3 local mean, the part of
    the image where pixel noise and the PSF core live (an option for instrument encoders).
    With ``per_band`` one single-band backbone is applied to every band, and the bands'
    feature maps are concatenated before the projection: whatever a band's noise or PSF
    detector learns, it applies to every band (observing conditions are per band).
    ``width`` scales the backbone's channels (timm ResNets): 0.5 costs about a quarter.
    ``core_radius`` > 0 blanks the disc of that radius (pixels) about the stamp's centre,
    where the target galaxy's light is, before the backbone sees it (an instrument-encoder
    option: the latent then cannot read the galaxy's core, only its outskirts and the sky).
    """

    def __init__(
        self,
        in_channels: int,
        size: int,
        token_dim: int = 16,
        backbone: str = "resnet18",
        min_grid: int = 2,
        highpass: bool = False,
        per_band: bool = False,
        width: float = 1.0,
        core_radius: float = 0.0,
    ) -> None:
        super().__init__()
        import timm

        if not 0 <= core_radius < size / 2:
            raise ConfigError(
                f"core_radius must be in [0, {size / 2}) pixels for {size}x{size} stamps; "
                f"got {core_radius}"
            )
        self.core_radius = float(core_radius)
        if self.core_radius > 0:
            yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
            r2 = (yy - (size - 1) / 2) ** 2 + (xx - (size - 1) / 2) ** 2
            keep = (r2 > self.core_radius**2).float().view(1, 1, size, size)
            self.register_buffer("core_keep", keep, persistent=False)
        self.highpass = bool(highpass)
        self.per_band = bool(per_band)
        n_bands = in_channels if self.per_band else 1
        in_channels = (1 if self.per_band else in_channels) * (2 if self.highpass else 1)
        kwargs: dict[str, Any] = {}
        if width != 1.0:
            if not (0 < width <= 4) or not backbone.startswith("resnet"):
                raise ConfigError(
                    f"width {width} needs a timm 'resnet*' backbone and 0 < width <= 4; "
                    f"got backbone {backbone!r}"
                )
            kwargs = {
                "channels": tuple(max(8, round(c * width)) for c in (64, 128, 256, 512)),
                "stem_width": max(8, round(64 * width)),
            }

        probe = timm.create_model(
            backbone, pretrained=False, in_chans=in_channels, features_only=True, **kwargs
        )
        with torch.no_grad():
            probe.eval()
            grids = [f.shape[-1] for f in probe(torch.zeros(1, in_channels, size, size))]
        ok = [i for i, g in enumerate(grids) if g >= min_grid]
        if not ok:
            raise ConfigError(
                f"{backbone} on {size}x{size} inputs never keeps a {min_grid}x{min_grid} grid "
                f"(stage grids {grids}); use larger images or a smaller min_grid"
            )
        stage = ok[-1]
        self.backbone = timm.create_model(
            backbone,
            pretrained=False,
            in_chans=in_channels,
            features_only=True,
            out_indices=(stage,),
            **kwargs,
        )
        self.proj = nn.Conv2d(n_bands * self.backbone.feature_info.channels()[-1], token_dim, 1)
        self.n_tokens = grids[stage] ** 2

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> tokens (N, n_tokens, token_dim)."""
        n, c = x.shape[:2]
        if self.core_radius > 0:
            x = x * self.core_keep.to(x.dtype)
        if self.per_band:
            x = x.reshape(n * c, 1, *x.shape[2:])
        if self.highpass:
            local = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
            x = torch.cat([x, x - local], dim=1)
        h = self.backbone(x)[-1]
        if self.per_band:  # (N*C, F, g, g) -> (N, C*F, g, g), band-major
            h = h.reshape(n, c * h.shape[1], *h.shape[2:])
        h = self.proj(h)
        return h.flatten(2).transpose(1, 2)


class SeriesTokenEncoder(nn.Module):
    """The seed-001 Conformer, its per-step tokens pooled to ``n_tokens`` segments."""

    def __init__(
        self,
        in_channels: int,
        token_dim: int = 16,
        n_tokens: int = 4,
        width: int = 32,
        depth: int = 2,
        heads: int = 2,
        ff_dim: int = 64,
        conv_kernel: int = 15,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.conformer = ConformerEncoder(
            in_channels,
            width=width,
            depth=depth,
            heads=heads,
            ff_dim=ff_dim,
            latent_dim=token_dim,
            conv_kernel=conv_kernel,
            dropout=dropout,
        )
        self.proj = nn.Linear(width, token_dim)
        self.n_tokens = n_tokens

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, T) -> tokens (N, n_tokens, token_dim)."""
        h = self.conformer.tokens(x)  # (N, T, width)
        h = F.adaptive_avg_pool1d(h.transpose(1, 2), self.n_tokens).transpose(1, 2)
        return self.proj(h)


# --------------------------------------------------------------------------- decoders
class _ResBlock1d(nn.Module):
    def __init__(self, width: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, width), width)
        self.conv1 = nn.Conv1d(width, width, 5, padding=2)
        self.emb = nn.Linear(emb_dim, 2 * width)
        self.norm2 = nn.GroupNorm(min(8, width), width)
        self.conv2 = nn.Conv1d(width, width, 5, padding=2)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.emb(emb)[..., None].chunk(2, dim=1)
        y = self.conv1(F.silu(self.norm1(h)))
        y = self.norm2(y) * (1 + scale) + shift
        return h + self.conv2(F.silu(y))


class _CrossAttention1d(nn.Module):
    def __init__(self, width: int, cond_dim: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(
            width, heads, kdim=cond_dim, vdim=cond_dim, batch_first=True
        )

    def forward(self, h: Tensor, cond: Tensor, cond_mask: Tensor) -> Tensor:
        q = self.norm(h.transpose(1, 2))
        out, _ = self.attn(q, cond, cond, key_padding_mask=~cond_mask, need_weights=False)
        return h + out.transpose(1, 2)


class SeriesFlowDecoder(nn.Module):
    """Velocity network for (B, C, T) series: residual conv blocks with FiLM time embedding,
    each followed by cross-attention to the conditioning tokens (masked slots ignored)."""

    def __init__(
        self, in_channels: int, cond_dim: int, width: int = 64, depth: int = 4, heads: int = 4
    ) -> None:
        super().__init__()
        self.width = width
        self.time_mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.SiLU(), nn.Linear(4 * width, 4 * width)
        )
        self.inp = nn.Conv1d(in_channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(_ResBlock1d(width, 4 * width) for _ in range(depth))
        self.cross = nn.ModuleList(_CrossAttention1d(width, cond_dim, heads) for _ in range(depth))
        self.out = nn.Sequential(
            nn.GroupNorm(min(8, width), width),
            nn.SiLU(),
            nn.Conv1d(width, in_channels, 3, padding=1),
        )
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor, cond_mask: Tensor) -> Tensor:
        emb = self.time_mlp(sinusoidal_time_encoding(t[:, None] * 1000.0, self.width)[:, 0])
        h = self.inp(x)
        for block, cross in zip(self.blocks, self.cross, strict=True):
            h = cross(block(h, emb), cond, cond_mask)
        return self.out(h)


class ImageFlowDecoder(nn.Module):
    """``diffusers.UNet2DConditionModel`` conditioned on the token sequence by cross-attention."""

    def __init__(self, in_channels: int, size: int, cond_dim: int, **unet: Any) -> None:
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.unet = UNet2DConditionModel(
            sample_size=size,
            in_channels=in_channels,
            out_channels=in_channels,
            cross_attention_dim=cond_dim,
            **unet,
        )

    def forward(self, x: Tensor, t: Tensor, cond: Tensor, cond_mask: Tensor) -> Tensor:
        # t in [0, 1] is scaled to the 0..1000 range the sinusoidal embedding is tuned for.
        return self.unet(
            x,
            t * 1000.0,
            encoder_hidden_states=cond,
            encoder_attention_mask=cond_mask,
            return_dict=False,
        )[0]


# --------------------------------------------------------------------------- model
@register_model
class CounterfactualModel(PretrainedMixin, nn.Module):
    """Dual encoders + conditional flow-matching decoder (seed 000), images or light curves.

    ``modality``: ``"image"`` (arrays (C, size, size)) or ``"series"`` (arrays (C, size)).
    ``stretch``/``scale``: the model works on ``asinh(flux / scale_c)`` (``"asinh"``) or
    ``flux / scale_c`` (``"linear"``), with one scale per channel shared by all instruments;
    samples are returned in flux units. Latents (:meth:`embed`) are an observation's tokens,
    flattened: ``n_tokens * token_dim`` numbers per encoder.
    """

    def __init__(
        self,
        modality: str,
        in_channels: int,
        size: int,
        token_dim: int = 16,
        encoder: dict[str, Any] | None = None,
        decoder: dict[str, Any] | None = None,
        stretch: str = "asinh",
        scale: list[float] | None = None,
        type_embedding: bool = False,
        t_sampling: str = "uniform",
        n_draws: int = 1,
        t_zero_fraction: float = 0.0,
        hybrid_weight: float = 0.0,
        fm_weight: float = 1.0,
        tau: float = 0.1,
        proj_dim: int = 32,
        projection_head: str = "mlp",
        adversary_weight: float = 0.0,
        n_instruments: int = 0,
        physics_negatives: str = "all",
        instrument_negatives: str = "all",
        agreement_weight: float = 0.0,
        instrument_agreement_weight: float = 0.0,
        instrument_agreement_per_dim: bool = False,
        instrument_highpass: bool = False,
        instrument_per_band: bool = False,
        instrument_width: float = 1.0,
        instrument_core_radius: float = 0.0,
        instrument_positives: str = "views",
        disentangle_weight: float = 0.0,
        decorrelate_weight: float = 0.0,
        decorrelate_degree: int = 1,
        instrument_memory: int = 0,
        memory_exclusion_deg: float = 0.1,
        physics_memory: int = 0,
        instrument_band_drop: float = 0.0,
        stats_weight: float = 0.0,
        single_latent: bool = False,
        single_objective: str = "contrastive",
        mask_ratio: float = 0.75,
        mask_patch: int = 8,
    ) -> None:
        super().__init__()
        self.config = copy.deepcopy(constructor_args(CounterfactualModel, locals()))
        self.single_latent = bool(single_latent)
        if self.single_latent:
            _check_single_latent(locals())
        if modality not in ("image", "series"):
            raise ConfigError(f"modality must be 'image' or 'series'; got {modality!r}")
        if stretch not in ("asinh", "linear"):
            raise ConfigError(f"stretch must be 'asinh' or 'linear'; got {stretch!r}")
        if n_draws < 1:
            raise ConfigError(f"n_draws must be >= 1; got {n_draws}")
        if not 0.0 <= t_zero_fraction < 1.0:
            raise ConfigError(f"t_zero_fraction must be in [0, 1); got {t_zero_fraction}")
        for key, value in (
            ("physics_negatives", physics_negatives),
            ("instrument_negatives", instrument_negatives),
        ):
            if value not in ("all", "same_instrument"):
                raise ConfigError(f"{key} must be 'all' or 'same_instrument'; got {value!r}")
        if instrument_positives not in ("views", "set_halves"):
            raise ConfigError(
                f"instrument_positives must be 'views' or 'set_halves'; got "
                f"{instrument_positives!r}"
            )
        self.instrument_positives = instrument_positives
        if projection_head not in PROJECTION_HEADS:
            raise ConfigError(
                f"projection_head must be one of {sorted(PROJECTION_HEADS)}; got "
                f"{projection_head!r}"
            )
        if instrument_memory < 0 or physics_memory < 0 or not memory_exclusion_deg >= 0:
            raise ConfigError(
                f"instrument_memory, physics_memory and memory_exclusion_deg must be >= 0; got "
                f"{instrument_memory}, {physics_memory} and {memory_exclusion_deg}"
            )
        if not 0.0 <= instrument_band_drop < 1.0:
            raise ConfigError(f"instrument_band_drop must be in [0, 1); got {instrument_band_drop}")
        self.memory_size = {"instrument": int(instrument_memory), "physics": int(physics_memory)}
        self.memory_exclusion_deg = float(memory_exclusion_deg)
        self.instrument_band_drop = float(instrument_band_drop)
        if stats_weight < 0:
            raise ConfigError(f"stats_weight must be >= 0; got {stats_weight}")
        if stats_weight > 0 and modality != "image":
            raise ConfigError("stats_weight applies to images only (modality 'image')")
        self.stats_weight = float(stats_weight)
        # cross-batch memory of anchors' embeddings, by encoder (not saved: training state)
        self._memory: dict[str, dict[str, Tensor]] = {}
        if disentangle_weight < 0:
            raise ConfigError(f"disentangle_weight must be >= 0; got {disentangle_weight}")
        self.disentangle_weight = float(disentangle_weight)
        if decorrelate_weight < 0:
            raise ConfigError(f"decorrelate_weight must be >= 0; got {decorrelate_weight}")
        if decorrelate_weight > 0 and modality != "image":
            raise ConfigError("decorrelate_weight applies to images only (modality 'image')")
        if decorrelate_degree not in (1, 2):
            raise ConfigError(f"decorrelate_degree must be 1 or 2; got {decorrelate_degree}")
        self.decorrelate_weight = float(decorrelate_weight)
        self.decorrelate_degree = int(decorrelate_degree)
        for key, on in (
            ("instrument_highpass", instrument_highpass),
            ("instrument_per_band", instrument_per_band),
            ("instrument_core_radius", instrument_core_radius),
        ):
            if on and modality != "image":
                raise ConfigError(f"{key} applies to images only (modality 'image')")
        for key, value in (
            ("agreement_weight", agreement_weight),
            ("instrument_agreement_weight", instrument_agreement_weight),
        ):
            if value < 0:
                raise ConfigError(f"{key} must be >= 0; got {value}")
        self.physics_negatives, self.instrument_negatives = physics_negatives, instrument_negatives
        self.agreement_weight = float(agreement_weight)
        self.instrument_agreement_weight = float(instrument_agreement_weight)
        self.instrument_agreement_per_dim = bool(instrument_agreement_per_dim)
        scale = [1.0] * in_channels if scale is None else [float(s) for s in scale]
        if len(scale) != in_channels or min(scale) <= 0:
            raise ConfigError(
                f"scale needs {in_channels} positive values (one per channel); got {scale}"
            )
        self.config["scale"] = scale
        self.modality, self.in_channels, self.size = modality, in_channels, size
        self.token_dim, self.stretch = token_dim, stretch
        self.t_sampling, self.n_draws = t_sampling, n_draws
        # Draws held at t = 0, where the velocity target trains the posterior mean itself
        # (x0 + v(x0, 0) = E[x1 | views]; see posterior_mean); 0 is seed 000's uniform t.
        self.t_zero_fraction = float(t_zero_fraction)
        self.hybrid_weight, self.tau = float(hybrid_weight), float(tau)
        self.fm_weight = float(fm_weight)
        masked = self.single_latent and single_objective == "masked"
        if self.fm_weight <= 0 and self.hybrid_weight <= 0 and not masked:
            raise ConfigError("fm_weight and hybrid_weight are both 0: nothing to train")
        self.adversary_weight = float(adversary_weight)
        if self.adversary_weight > 0 and n_instruments < 2:
            raise ConfigError(
                f"adversary_weight > 0 needs n_instruments >= 2 (the classes the adversary "
                f"predicts); got n_instruments={n_instruments}"
            )
        self.register_buffer(
            "scale",
            torch.tensor(scale).view(1, in_channels, *([1] * (2 if modality == "image" else 1))),
            persistent=False,
        )
        enc = dict(encoder or {})
        dec = dict(decoder or {})
        self.instrument_encoder: nn.Module | None
        if modality == "image":
            self.physics_encoder = ImageTokenEncoder(in_channels, size, token_dim, **enc)
            self.instrument_encoder = ImageTokenEncoder(
                in_channels,
                size,
                token_dim,
                highpass=instrument_highpass,
                per_band=instrument_per_band,
                **({"width": instrument_width} if instrument_width != 1.0 else {}),
                **({"core_radius": instrument_core_radius} if instrument_core_radius else {}),
                **enc,
            )
            self.decoder: nn.Module = ImageFlowDecoder(in_channels, size, token_dim, **dec)
        else:
            self.physics_encoder = SeriesTokenEncoder(in_channels, token_dim, **enc)
            self.instrument_encoder = SeriesTokenEncoder(in_channels, token_dim, **enc)
            self.decoder = SeriesFlowDecoder(in_channels, token_dim, **dec)
        self.single_objective = single_objective
        self.mask_ratio, self.mask_patch = float(mask_ratio), int(mask_patch)
        if self.single_latent:  # the physics encoder alone: no instrument side, no flow decoder
            self.instrument_encoder = None
            grid = math.isqrt(self.physics_encoder.n_tokens)  # the token map's side
            self.decoder = (
                MaskedImageDecoder(token_dim, in_channels, size, grid)
                if single_objective == "masked"
                else nn.Identity()
            )
        self.n_tokens = self.physics_encoder.n_tokens
        self.latent_dim = self.n_tokens * token_dim
        self.null_token = nn.Parameter(torch.zeros(1, 1, token_dim))
        self.type_embedding = nn.Parameter(torch.zeros(2, token_dim)) if type_embedding else None
        if hybrid_weight > 0:
            head = PROJECTION_HEADS[projection_head]  # seed 001's MLP by default
            self.physics_head = head(self.latent_dim, 2 * proj_dim, proj_dim)
            if not self.single_latent:
                self.instrument_head = head(self.latent_dim, 2 * proj_dim, proj_dim)
        if self.adversary_weight > 0:
            self.adversary = _head(self.latent_dim, n_instruments)
        if self.disentangle_weight > 0:
            self.disentangler = _head(self.latent_dim, self.latent_dim)
        if self.stats_weight > 0:
            self.stats_head = _head(self.latent_dim, 3 * in_channels)

    # -- data space <-> model space ------------------------------------------------------
    def normalize(self, flux: Tensor) -> Tensor:
        """Flux units -> the model's working space."""
        y = flux / self.scale.to(flux.dtype)
        return torch.asinh(y) if self.stretch == "asinh" else y

    def denormalize(self, x: Tensor) -> Tensor:
        """The model's working space -> flux units."""
        y = torch.sinh(x) if self.stretch == "asinh" else x
        return y * self.scale.to(x.dtype)

    # -- encoders --------------------------------------------------------------------------
    def _encode_views(
        self, encoder: nn.Module, views: Tensor, mask: Tensor, rows: Tensor | None = None
    ) -> Tensor:
        """Encode only the real slots of views (B, V, ...) -> tokens (B, V, n_tok, D), zeros
        in padded slots (so padding costs nothing and never touches BatchNorm statistics).

        With ``rows`` (B, V), the store rows of the views, each distinct row is encoded once
        and its tokens shared by every slot that holds it (sky-clustered batches repeat
        instrument views across neighbouring anchors).
        """
        b, v = views.shape[:2]
        out = views.new_zeros(b, v, self.n_tokens, self.token_dim)
        mask = mask.bool()
        if not mask.any():
            return out
        real = views[mask]
        if rows is not None:
            uniq, inverse = torch.unique(rows.to(mask.device)[mask], return_inverse=True)
            if uniq.numel() < inverse.numel():
                first = torch.empty_like(uniq).scatter_(
                    0, inverse, torch.arange(inverse.numel(), device=inverse.device)
                )
                tokens = encoder(self.normalize(real[first]))[inverse]
                return out.index_put((mask,), tokens.to(out.dtype))
        return out.index_put((mask,), encoder(self.normalize(real)).to(out.dtype))

    def condition(
        self,
        physics_views: Tensor,
        physics_mask: Tensor,
        instrument_views: Tensor,
        instrument_mask: Tensor,
        physics_rows: Tensor | None = None,
        instrument_rows: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Build the decoder's conditioning from views only (the anchor is not an argument).

        Returns tokens (B, 1 + (Vp + Vi) * n_tok, D), their mask (True = attend) and the
        per-view tokens, reused by the hybrid terms. Optional ``*_rows`` (store rows of the
        views) let repeated views be encoded once.
        """
        tp = self._encode_views(self.physics_encoder, physics_views, physics_mask, physics_rows)
        if self.instrument_encoder is None:  # single latent: no instrument tokens
            instrument_mask = torch.zeros_like(instrument_mask, dtype=torch.bool)
        ti = self._encode_views(
            self.instrument_encoder, instrument_views, instrument_mask, instrument_rows
        )
        if self.type_embedding is not None:
            tp = tp + self.type_embedding[0]
            ti = ti + self.type_embedding[1]
        b = tp.shape[0]
        cond = torch.cat(
            [self.null_token.expand(b, 1, -1).to(tp.dtype), tp.flatten(1, 2), ti.flatten(1, 2)],
            dim=1,
        )
        mask = torch.cat(
            [
                torch.ones(b, 1, dtype=torch.bool, device=tp.device),
                physics_mask.bool().repeat_interleave(self.n_tokens, dim=1),
                instrument_mask.bool().repeat_interleave(self.n_tokens, dim=1),
            ],
            dim=1,
        )
        return cond, mask, {"physics": tp, "instrument": ti}

    def velocity(self, x_t: Tensor, t: Tensor, cond: Tensor, cond_mask: Tensor) -> Tensor:
        """Predicted velocity at (x_t, t) given the conditioning sequence."""
        return self.decoder(x_t, t, cond, cond_mask)

    @torch.no_grad()
    def embed(self, observations: Tensor) -> tuple[Tensor, Tensor] | Tensor:
        """Physics and instrument latents (N, n_tokens * token_dim) of observations in flux;
        a ``single_latent`` model returns its one latent."""
        x = self.normalize(observations)
        if self.instrument_encoder is None:
            return self.physics_encoder(x).flatten(1)
        return (
            self.physics_encoder(x).flatten(1),
            self.instrument_encoder(x).flatten(1),
        )

    # -- training objective ----------------------------------------------------------------
    def loss(
        self,
        batch: dict[str, Tensor],
        generator: torch.Generator | None = None,
        decoder_only: bool = False,
    ) -> dict[str, Tensor]:
        """Velocity MSE (seed 000 eq. 2), averaged over ``n_draws`` (t, x_0) draws per
        conditioning set; plus the hybrid InfoNCE terms when ``hybrid_weight`` > 0 and the
        instrument adversary on the physics latent when ``adversary_weight`` > 0.

        ``decoder_only`` is the loss of a decoder trained on frozen encoders: the latents are
        computed without gradients and only the velocity term is returned, since every other
        term trains the encoders."""
        if self.single_latent and self.single_objective == "masked":
            loss = self._masked_reconstruction(batch["anchor"], generator)
            return {"mae": loss, "total": loss}
        if self.training and self.instrument_band_drop > 0:
            batch = self._drop_bands(batch, generator)
        if decoder_only and (self.single_latent or self.fm_weight <= 0):
            raise ConfigError(
                "decoder_only needs a flow decoder to train: this model is single-latent "
                "or has fm_weight 0"
            )
        with torch.no_grad() if decoder_only else contextlib.nullcontext():
            cond, cmask, per_view = self.condition(
                batch["physics"],
                batch["physics_mask"],
                batch["instrument_views"],
                batch["instrument_mask"],
                batch.get("physics_rows"),
                batch.get("instrument_rows"),
            )
        if decoder_only:
            fm = self._flow_matching(batch["anchor"], cond, cmask, generator)
            return {"fm": fm, "total": self.fm_weight * fm}
        out: dict[str, Tensor] = {}
        total = cond.new_zeros((), dtype=torch.float32)
        if self.fm_weight > 0:
            out["fm"] = self._flow_matching(batch["anchor"], cond, cmask, generator)
            total = total + self.fm_weight * out["fm"]
        anchors: dict[str, Tensor] = {}
        if self.hybrid_weight > 0 or self.agreement_weight > 0 or self.instrument_agreement_weight:
            phys, inst, agree, anchors = self._hybrid_terms(batch, per_view)
            if self.hybrid_weight > 0:
                out["phys"], out["inst"] = phys, inst
                total = total + self.hybrid_weight * (phys + inst)
            if self.agreement_weight > 0:
                out["agree"] = agree["physics"]
                total = total + self.agreement_weight * agree["physics"]
            if self.instrument_agreement_weight > 0:
                out["inst_agree"] = agree["instrument"]
                total = total + self.instrument_agreement_weight * agree["instrument"]
        if self.adversary_weight > 0:
            out["adv"] = self._adversary(batch, per_view, anchors.get("physics"))
            total = total + self.adversary_weight * out["adv"]
        if self.disentangle_weight > 0:
            out["disent"] = self._disentangle(batch, anchors)
            total = total + self.disentangle_weight * out["disent"]
        if self.decorrelate_weight > 0:
            out["decor"] = self._decorrelate(batch, per_view, anchors)
            total = total + self.decorrelate_weight * out["decor"]
        if self.stats_weight > 0:
            out["stats"] = self._statistics(batch, per_view["instrument"])
            total = total + self.stats_weight * out["stats"]
        out["total"] = total
        return out

    def patch_mask(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, 1, size, size) 1 where a pixel is hidden: ``mask_ratio`` of the
        ``mask_patch``-pixel patches, drawn independently per image (MAE's random masking)."""
        g = math.ceil(self.size / self.mask_patch)
        k = max(1, round(self.mask_ratio * g * g))
        order = torch.rand(n, g * g, generator=generator, device="cpu").argsort(dim=1)
        hidden = torch.zeros(n, g * g).scatter_(1, order[:, :k], 1.0).view(n, 1, g, g)
        up = hidden.repeat_interleave(self.mask_patch, 2).repeat_interleave(self.mask_patch, 3)
        return up[..., : self.size, : self.size]

    def _masked_reconstruction(self, anchor: Tensor, generator: torch.Generator | None) -> Tensor:
        """MAE's objective on the single latent: encode the image with most patches hidden,
        decode the whole image from the latent, score the hidden pixels (working space)."""
        x = self.normalize(anchor)
        hidden = self.patch_mask(x.shape[0], generator).to(x.device, x.dtype)
        tokens = self.physics_encoder(x * (1 - hidden))
        recon = self.decoder(tokens)
        err = (recon.float() - x.float()).pow(2) * hidden
        return err.sum() / (hidden.sum() * x.shape[1]).clamp_min(1)

    def _drop_bands(
        self, batch: dict[str, Tensor], generator: torch.Generator | None
    ) -> dict[str, Tensor]:
        """Blank each band with probability ``instrument_band_drop`` (at least one kept) in
        the instrument encoder's inputs, the same bands for the whole batch (so the pattern
        is no shortcut between positives): the instrument InfoNCE can then not be solved
        from the one band whose conditions vary most, and must read every band's."""
        c = self.in_channels
        keep = torch.rand(c, generator=generator, device="cpu") >= self.instrument_band_drop
        if not bool(keep.any()):
            keep[int(torch.randint(c, (1,), generator=generator))] = True
        out = dict(batch)
        for key, dst in (("instrument_views", "instrument_views"), ("anchor", "instrument_anchor")):
            x = batch[key]
            shape = [1] * x.ndim
            shape[x.ndim - (3 if self.modality == "image" else 2)] = c
            out[dst] = x * keep.to(x.device, x.dtype).view(shape)
        return out

    def _adversary(
        self, batch: dict[str, Tensor], per_view: dict[str, Tensor], anchor_phys: Tensor | None
    ) -> Tensor:
        """Instrument classifier on physics latents behind a gradient reversal (DANN): the
        head learns to name the instrument, the physics encoder learns to make it fail."""
        mask = batch["physics_mask"].bool()
        z = [per_view["physics"][mask].flatten(1)]
        labels = [batch["physics_instrument"][mask]]
        if anchor_phys is not None:
            z.append(anchor_phys)
            labels.append(batch["instrument"])
        logits = self.adversary(reverse_gradient(torch.cat(z).float()))
        return F.cross_entropy(logits, torch.cat(labels).long())

    def _disentangle(self, batch: dict[str, Tensor], anchors: dict[str, Tensor]) -> Tensor:
        """A head predicts the anchor's physics latent (centred within its instrument, and
        detached) from its instrument latent behind a gradient reversal: the head learns to
        read the galaxy from the instrument latent, the instrument encoder learns to hide it.
        Centring per instrument leaves the survey's own signature out of the target, so the
        instrument latent may keep it. Scale-free: 1 when the head predicts nothing."""
        x = self.normalize(batch["anchor"])
        zp = anchors["physics"] if "physics" in anchors else self.physics_encoder(x).flatten(1)
        zi = (
            anchors["instrument"]
            if "instrument" in anchors
            else self.instrument_encoder(x).flatten(1)
        )
        target = zp.detach().float()
        inst = batch["instrument"].to(target.device).long()
        onehot = F.one_hot(inst, int(inst.max()) + 1).to(target.dtype)
        means = (onehot.T @ target) / onehot.sum(0).clamp_min(1)[:, None]
        target = target - means[inst]
        pred = self.disentangler(reverse_gradient(zi.float()))
        return F.mse_loss(pred, target) / target.pow(2).mean().clamp_min(1e-8)

    def _decorrelate(
        self,
        batch: dict[str, Tensor],
        per_view: dict[str, Tensor],
        anchors: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """The fraction of each instrument-latent dimension's variance, within one instrument
        of the batch, that the image's own light explains linearly (:func:`aperture_flux`:
        the background-subtracted flux per band, asinh-scaled); averaged over dimensions and
        instruments. Computed on every image the instrument encoder saw (the anchors and
        their sky neighbours, ~6x the anchors), so that a batch of 32 still estimates it
        (about ``C / n`` for an unrelated latent). The galaxy's brightness is what a probe
        reads from the instrument latent of its own image; the sky's conditions are not in
        the flux (depth changes the noise, not the light), so this asks for the one and not
        the other. Label-free: the target is computed from the pixels. With
        ``decorrelate_degree`` 2 the light's products (``f_i f_j``, squares included) are
        explained too, so a latent that keeps the brightness in a non-linear code counts."""
        x = batch.get("instrument_anchor", batch["anchor"])
        if anchors and "instrument" in anchors:  # computed by the InfoNCE terms already
            zi = anchors["instrument"]
        else:
            zi = self.instrument_encoder(self.normalize(x)).flatten(1)
        flux = [aperture_flux(x.float())]
        lat = [zi.float()]
        inst = [batch["instrument"].to(zi.device).long()]
        mask = batch["instrument_mask"].bool()
        if mask.any():
            views = batch["instrument_views"][mask]
            tokens = per_view["instrument"][mask].flatten(1)
            if self.type_embedding is not None:  # compare raw encoder outputs
                tokens = tokens - self.type_embedding[1].repeat(self.n_tokens)
            owner = inst[0][:, None].expand_as(mask)[mask]
            flux.append(aperture_flux(views.float()))
            lat.append(tokens.float())
            inst.append(owner)
        f, z, g_all = torch.cat(flux), torch.cat(lat), torch.cat(inst)
        terms = []
        for g in torch.unique(g_all):
            rows = g_all == g
            n = int(rows.sum())
            if n <= 2 * f.shape[1]:  # too few images to estimate it
                continue
            fc = f[rows] - f[rows].mean(0)
            fc = fc[:, fc.std(0) > 1e-6]  # a blanked band (band drop) has no light to explain
            if fc.shape[1] == 0:
                continue
            if self.decorrelate_degree == 2:
                fc = _with_products(fc / fc.std(0))
                if n <= 2 * fc.shape[1]:
                    continue
            q = torch.linalg.qr(fc)[0]  # (n, C) orthonormal
            v = z[rows] - z[rows].mean(0)
            v = v / v.pow(2).mean(0).add(1e-6).sqrt()  # unit variance per dimension
            terms.append((q.T @ v).pow(2).sum() / (n * v.shape[1]))
        if not terms:
            return zi.new_zeros((), dtype=torch.float32)
        return torch.stack(terms).mean()

    def _statistics(self, batch: dict[str, Tensor], inst_tokens: Tensor) -> Tensor:
        """A summary-statistics decoder: from the mean instrument latent of the anchor's
        instrument views (other galaxies, as the flow decoder sees them) predict three
        statistics per band of the anchor itself (:func:`image_statistics`: noise, size,
        concentration), standardised within each instrument of the batch. A galaxy's own
        size and concentration cannot be predicted from other galaxies; what can is the
        part the sky patch sets (sky noise, PSF). A direct per-band target for the
        instrument encoder, which otherwise learns only the band where noise dominates
        (the flow decoder asks the same, far more slowly). 1 when it predicts the mean."""
        mask = batch["instrument_mask"].bool()
        keep = mask.any(dim=1)
        if not bool(keep.any()):
            return inst_tokens.new_zeros((), dtype=torch.float32)
        w = mask.to(inst_tokens.dtype)[..., None]
        tokens = inst_tokens.flatten(2)
        if self.type_embedding is not None:  # compare raw encoder outputs
            tokens = tokens - self.type_embedding[1].repeat(self.n_tokens)
        pooled = (tokens * w).sum(1) / w.sum(1).clamp_min(1)
        target = image_statistics(self.normalize(batch["anchor"]).float())[keep]
        # standardised within each instrument of the batch: the survey's own offset is
        # not what the target asks for (it is learnt from survey identity alone)
        inst = batch["instrument"].to(target.device).long()[keep]
        onehot = F.one_hot(inst, int(inst.max()) + 1).to(target.dtype)
        count = onehot.sum(0).clamp_min(1)[:, None]
        mean = (onehot.T @ target) / count
        var = (onehot.T @ target.pow(2)) / count - mean.pow(2)
        target = (target - mean[inst]) / var.clamp_min(1e-8).sqrt()[inst]
        pred = self.stats_head(pooled[keep].float())
        return F.mse_loss(pred, target.detach())

    def _flow_matching(
        self, anchor: Tensor, cond: Tensor, cmask: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        x1 = self.normalize(anchor)
        k = self.n_draws
        if k > 1:
            x1 = x1.repeat_interleave(k, dim=0)
            cond = cond.repeat_interleave(k, dim=0)
            cmask = cmask.repeat_interleave(k, dim=0)
        t = sample_t(x1.shape[0], self.t_sampling, generator, x1.device).to(x1.dtype)
        if self.t_zero_fraction > 0:
            u = torch.rand(t.shape, generator=generator, device=t.device)
            t = torch.where(u < self.t_zero_fraction, torch.zeros_like(t), t)
        x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        tt = t.view(-1, *([1] * (x1.ndim - 1)))
        x_t = (1 - tt) * x0 + tt * x1
        v = self.velocity(x_t, t, cond, cmask)
        return F.mse_loss(v.float(), (x1 - x0).float())

    def _hybrid_terms(
        self, batch: dict[str, Tensor], per_view: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """InfoNCE on (anchor, physics views) by source and (anchor, instrument views) by item,
        with negatives from every instrument or only the anchor's (``*_negatives``); the
        agreement terms, by encoder: between a source's physics latents across instruments,
        and between an observation's instrument latent and its sky neighbours' (which share
        its conditions, so what differs is the galaxy); the anchors' latents computed on the
        way, by encoder (reused by the adversary and the disentangler)."""
        anchor = self.normalize(batch["anchor"])
        inst_anchor = (
            self.normalize(batch["instrument_anchor"]) if "instrument_anchor" in batch else anchor
        )
        b = anchor.shape[0]
        items = torch.arange(b, device=anchor.device)
        zero = anchor.new_zeros((), dtype=torch.float32)
        terms: list[Tensor] = []
        agree = {"physics": zero, "instrument": zero}
        weights = {"physics": self.agreement_weight, "instrument": self.instrument_agreement_weight}
        anchors: dict[str, Tensor] = {}
        for key in ("physics", "instrument"):
            mask = batch[f"{key}_mask"].bool()
            want_nce = self.hybrid_weight > 0
            single = key == "instrument" and self.instrument_encoder is None
            if single or not mask.any() or not (want_nce or weights[key] > 0):
                terms.append(zero)
                continue
            enc = self.physics_encoder if key == "physics" else self.instrument_encoder
            za = enc(anchor if key == "physics" else inst_anchor).flatten(1)
            anchors[key] = za
            zv = per_view[key][mask].flatten(1)
            if self.type_embedding is not None:  # compare raw encoder outputs
                zv = zv - self.type_embedding[0 if key == "physics" else 1].repeat(self.n_tokens)
            owner = items[:, None].expand_as(mask)[mask]
            if weights[key] > 0:
                per_dim = key == "instrument" and self.instrument_agreement_per_dim
                agree[key] = agreement_loss(za[owner].float(), zv.float(), per_dim)
            if not want_nce:
                terms.append(zero)
                continue
            negatives = self.physics_negatives if key == "physics" else self.instrument_negatives
            groups = None
            if negatives != "all":
                if "instrument" not in batch or "physics_instrument" not in batch:
                    raise KeyError(
                        f"{key}_negatives={negatives!r} needs the batch keys 'instrument' and "
                        "'physics_instrument' (ViewDataset provides them)"
                    )
                anchor_inst = batch["instrument"].to(anchor.device).long()
                if key == "physics":
                    view_inst = batch["physics_instrument"].to(anchor.device).long()[mask]
                else:  # instrument views are, by construction, the anchor's instrument
                    view_inst = anchor_inst[owner]
                groups = torch.cat([anchor_inst, view_inst])
            head = self.physics_head if key == "physics" else self.instrument_head
            if key == "instrument" and self.instrument_positives == "set_halves":
                za, zv, labels, groups = _set_halves(za, per_view[key], mask, groups)
                z = head(torch.cat([za, zv]).float())
                terms.append(multi_positive_info_nce(z, labels, self.tau, groups))
                continue
            z = head(torch.cat([za, zv]).float())
            memory = allowed = None
            if self.memory_size[key] > 0:
                memory, allowed = self._memory_negatives(key, batch, owner, groups)
            terms.append(
                multi_positive_info_nce(
                    z, torch.cat([items, owner]), self.tau, groups, memory, allowed
                )
            )
            if self.memory_size[key] > 0 and self.training:
                self._remember(key, batch, z[:b], groups)
        return terms[0], terms[1], agree, anchors

    def _memory_negatives(
        self, key: str, batch: dict[str, Tensor], owner: Tensor, groups: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None]:
        """Earlier anchors' embeddings (``key``: ``"physics"`` or ``"instrument"``) as extra
        negatives for this batch's anchors and views: only those of the same instrument when
        negatives are ``same_instrument``. An instrument entry within ``memory_exclusion_deg``
        of the item's anchor on the sky shares its conditions, so it is no negative; a physics
        entry of the item's own source is its positive, so it is left out too."""
        mem = self._memory.get(key)
        if mem is None:
            return None, None
        need = "anchor_xyz" if key == "instrument" else "source"
        if need not in batch:
            raise KeyError(
                f"{key}_memory > 0 needs the batch key {need!r} (ViewDataset provides it)"
            )
        if key == "instrument":
            xyz = batch["anchor_xyz"].to(mem["xyz"].device, torch.float32)
            xyz = torch.cat([xyz, xyz[owner]])
            allowed = xyz @ mem["xyz"].T < math.cos(math.radians(self.memory_exclusion_deg))
        else:
            src = batch["source"].to(mem["source"].device).long()
            src = torch.cat([src, src[owner.to(src.device)]])
            allowed = src[:, None] != mem["source"][None, :]
        if groups is not None:
            allowed &= groups.to(allowed.device)[:, None] == mem["group"][None, :]
        return mem["z"], allowed

    @torch.no_grad()
    def _remember(
        self, key: str, batch: dict[str, Tensor], z: Tensor, groups: Tensor | None
    ) -> None:
        """Push this batch's anchor embeddings into ``key``'s ring buffer (``*_memory`` long)."""
        b = z.shape[0]
        inst = batch["instrument"].to(z.device).long() if groups is None else groups[:b]
        new = {"z": F.normalize(z.detach().float(), dim=1), "group": inst.to(z.device)}
        if key == "instrument":
            new["xyz"] = batch["anchor_xyz"].to(z.device, torch.float32)
        else:
            new["source"] = batch["source"].to(z.device).long()
        old = self._memory.get(key)
        if old is not None:
            new = {k: torch.cat([new[k], old[k].to(z.device)]) for k in new}
        size = self.memory_size[key]  # newest first; a batch larger than the ring is cut too
        self._memory[key] = {k: v[:size] for k, v in new.items()}

    def _sampling_condition(
        self,
        physics_views: Tensor,
        instrument_views: Tensor | None,
        physics_mask: Tensor | None,
        instrument_mask: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """The decoder's conditioning sequence and mask for (B, V, *shape) views in flux
        units on any device, with absent instrument views and masks filled in (all real)."""
        if self.single_latent:
            raise ConfigError(
                "this is a single_latent model (an encoder and its InfoNCE, no decoder): it "
                "makes no counterfactuals; use a model trained with the flow-matching decoder"
            )
        dev = next(self.parameters()).device
        physics_views = physics_views.to(dev, torch.float32)
        b, shape = physics_views.shape[0], tuple(physics_views.shape[2:])
        if instrument_views is None:
            instrument_views = physics_views.new_zeros(b, 0, *shape)
        instrument_views = instrument_views.to(dev, torch.float32)
        if physics_mask is None:
            physics_mask = torch.ones(physics_views.shape[:2], dtype=torch.bool)
        if instrument_mask is None:
            instrument_mask = torch.ones(instrument_views.shape[:2], dtype=torch.bool)
        cond, cmask, _ = self.condition(
            physics_views, physics_mask.to(dev), instrument_views, instrument_mask.to(dev)
        )
        return cond, cmask

    # -- sampling --------------------------------------------------------------------------
    @torch.inference_mode()
    def counterfactual(
        self,
        physics_views: Tensor,
        instrument_views: Tensor | None = None,
        physics_mask: Tensor | None = None,
        instrument_mask: Tensor | None = None,
        n_samples: int = 8,
        solver: str | Solver = "heun",
        nfe: int = 20,
        seed: int = 0,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Posterior samples (B, n_samples, *shape) in flux units of the observation the
        instrument of ``instrument_views`` would make of the source of ``physics_views``.

        Views are (B, V, *shape) in flux units; masks (B, V) mark real slots (default: all).
        Noise comes from a CPU generator seeded with ``seed`` (same samples on any device),
        or pass ``noise`` (B, n_samples, *shape) to share it between calls.
        """
        cond, cmask = self._sampling_condition(
            physics_views, instrument_views, physics_mask, instrument_mask
        )
        dev, b, shape = cond.device, physics_views.shape[0], tuple(physics_views.shape[2:])
        if noise is None:
            gen = torch.Generator().manual_seed(int(seed))
            noise = torch.randn((b, n_samples, *shape), generator=gen)
        x0 = noise.to(dev, torch.float32).flatten(0, 1)
        cond = cond.repeat_interleave(n_samples, dim=0)
        cmask = cmask.repeat_interleave(n_samples, dim=0)
        x1, _ = integrate(lambda x, t: self.velocity(x, t, cond, cmask), x0, solver, nfe)
        return self.denormalize(x1).view(b, n_samples, *shape)

    @torch.inference_mode()
    def posterior_mean(
        self,
        physics_views: Tensor,
        instrument_views: Tensor | None = None,
        physics_mask: Tensor | None = None,
        instrument_mask: Tensor | None = None,
        n_draws: int = 8,
        seed: int = 0,
    ) -> Tensor:
        """The posterior mean (B, *shape), in flux units, in one network call per noise draw.

        With x_t = (1 - t) x0 + t x1 and x0 independent of the target x1, the exact velocity
        at t = 0 is E[x1 | condition] - x0, so x0 + v(x0, 0) is the posterior mean itself,
        with none of the sampling noise of a mean over a few integrated samples. A trained
        network is only near that optimum, so the estimate is averaged over ``n_draws``
        noise draws (in the model's space, where it is trained). Arguments as in
        :meth:`counterfactual`.
        """
        if n_draws < 1:
            raise ConfigError(f"n_draws must be >= 1; got {n_draws}")
        cond, cmask = self._sampling_condition(
            physics_views, instrument_views, physics_mask, instrument_mask
        )
        dev, b, shape = cond.device, physics_views.shape[0], tuple(physics_views.shape[2:])
        gen = torch.Generator().manual_seed(int(seed))
        x0 = torch.randn((b * n_draws, *shape), generator=gen).to(dev, torch.float32)
        cond = cond.repeat_interleave(n_draws, dim=0)
        cmask = cmask.repeat_interleave(n_draws, dim=0)
        t0 = x0.new_zeros(x0.shape[0])
        x1 = (x0 + self.velocity(x0, t0, cond, cmask).float()).view(b, n_draws, *shape)
        return self.denormalize(x1.mean(1))


def _with_products(f: Tensor) -> Tensor:
    """(n, C) centred features -> (n, C + C(C+1)/2): the features and their centred pairwise
    products, squares included (a quadratic basis for :meth:`CounterfactualModel._decorrelate`)."""
    i, j = torch.triu_indices(f.shape[1], f.shape[1])
    prod = f[:, i] * f[:, j]
    return torch.cat([f, prod - prod.mean(0)], dim=1)


_SINGLE_LATENT_OFF = (
    "fm_weight",
    "instrument_agreement_weight",
    "disentangle_weight",
    "decorrelate_weight",
    "stats_weight",
    "instrument_memory",
    "instrument_band_drop",
)


def _check_single_latent(args: dict[str, Any]) -> None:
    """A ``single_latent`` model is one encoder and one objective: ``single_objective``
    ``contrastive`` is the physics InfoNCE alone (seed 001's single-latent baseline; on
    images AstroCLIP's cross-survey objective), ``masked`` is masked-image reconstruction
    (MAE; the AstroPT / AION family's self-supervision). Every term that needs the
    instrument encoder or the flow decoder must be off."""
    objective = args["single_objective"]
    if objective not in ("contrastive", "masked"):
        raise ConfigError(f"single_objective must be 'contrastive' or 'masked'; got {objective!r}")
    if objective == "masked":
        if args["modality"] != "image":
            raise ConfigError("single_objective 'masked' is for images (modality 'image')")
        if not 0 < args["mask_ratio"] < 1 or not 1 <= args["mask_patch"] <= args["size"]:
            raise ConfigError(
                f"mask_ratio must be in (0, 1) and mask_patch in [1, {args['size']}]; got "
                f"{args['mask_ratio']} and {args['mask_patch']}"
            )
        on = [k for k in (*_SINGLE_LATENT_OFF, "hybrid_weight", "agreement_weight") if args[k]]
        if on:
            raise ConfigError(
                f"single_objective 'masked' trains by masked reconstruction alone; set to 0: {on}"
            )
        return
    on = [k for k in _SINGLE_LATENT_OFF if args[k]]
    if on or args["hybrid_weight"] <= 0:
        raise ConfigError(
            "single_latent=True trains the physics encoder by the physics InfoNCE alone: it "
            f"needs hybrid_weight > 0 (got {args['hybrid_weight']}) and {list(_SINGLE_LATENT_OFF)} "
            f"all 0; set to non-zero: {on}"
        )


def _set_halves(
    anchor: Tensor, views: Tensor, mask: Tensor, groups: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Split each item's {anchor, instrument views} into two disjoint halves (even and odd
    slots, the anchor in the first) and return the halves' mean latents as a positive pair.

    A mean over several galaxies under one set of conditions keeps the conditions and
    averages the galaxies out, so the InfoNCE positives share little but the instrument.
    ``views`` (B, V, n_tok, D), ``mask`` (B, V). Items without any view are dropped. Returns
    (first halves, second halves, labels for both, groups for both or None)."""
    b = anchor.shape[0]
    lat = torch.cat([anchor.view(b, 1, -1), views.flatten(2).to(anchor.dtype)], dim=1)
    real = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1).to(anchor.dtype)
    even = torch.zeros_like(real)
    even[:, 0::2] = 1.0
    halves = []
    for part in (real * even, real * (1 - even)):
        halves.append((lat * part[..., None]).sum(1) / part.sum(1, keepdim=True).clamp_min(1))
    keep = mask.any(dim=1)
    items = torch.arange(b, device=anchor.device)[keep]
    out_groups = None
    if groups is not None:
        out_groups = groups[:b][keep].repeat(2)
    return halves[0][keep], halves[1][keep], items.repeat(2), out_groups


def _frame(x: Tensor, border: int) -> Tensor:
    """(H, W) True on the ``border``-pixel frame of images x (..., H, W): the sky's pixels."""
    h, wd = x.shape[-2:]
    frame = torch.ones(h, wd, dtype=torch.bool, device=x.device)
    frame[border : h - border, border : wd - border] = False
    return frame


def aperture_flux(x: Tensor, border: int = 4) -> Tensor:
    """The light of images (N, C, H, W) in flux units, (N, C): per band, the sum inside the
    ``border``-pixel frame after subtracting the frame's median (the sky), asinh-scaled by
    the batch's median absolute value so bright and faint galaxies both count."""
    h, wd = x.shape[-2:]
    sky = x[..., _frame(x, border)].median(dim=-1).values
    inner = x[..., border : h - border, border : wd - border] - sky[..., None, None]
    total = inner.sum(dim=(-2, -1))
    scale = total.abs().median(dim=0).values.clamp_min(1e-8)
    return torch.asinh(total / scale)


def image_statistics(x: Tensor, border: int = 4) -> Tensor:
    """Three statistics per band of images (N, C, H, W) in the model's space, (N, 3C): the
    log robust noise (MAD) of the ``border``-pixel frame, the log flux-weighted radius and
    the log peak-to-total ratio of the positive light inside the frame. Sky noise sets the
    first; the PSF (with the galaxy) the other two."""
    h, wd = x.shape[-2:]
    edge = x[..., _frame(x, border)]
    mad = (edge - edge.median(dim=-1, keepdim=True).values).abs().median(dim=-1).values
    inner = x[..., border : h - border, border : wd - border].clamp_min(0)
    total = inner.sum(dim=(-2, -1)).clamp_min(1e-6)
    yy, xx = torch.meshgrid(
        torch.arange(inner.shape[-2], device=x.device, dtype=x.dtype),
        torch.arange(inner.shape[-1], device=x.device, dtype=x.dtype),
        indexing="ij",
    )
    cy = (inner * yy).sum(dim=(-2, -1)) / total
    cx = (inner * xx).sum(dim=(-2, -1)) / total
    r2 = (yy - cy[..., None, None]) ** 2 + (xx - cx[..., None, None]) ** 2
    radius = ((inner * r2).sum(dim=(-2, -1)) / total).clamp_min(1e-6).sqrt()
    peak = inner.flatten(-2).max(dim=-1).values.clamp_min(1e-6)
    stats = [mad.clamp_min(1e-6).log(), radius.log(), (peak / total).log()]
    return torch.cat(stats, dim=1)


def agreement_loss(a: Tensor, b: Tensor, per_dim: bool = False) -> Tensor:
    """Invariance between paired latents (rows of a and b: one source by two instruments):
    mean squared difference over the pairs' total variance, so rescaling the latent cannot
    lower it. 0 when paired latents coincide; about 1 for unrelated ones.

    ``per_dim``: each dimension's squared difference over that dimension's own variance,
    averaged over dimensions, so a direction of little variance (which a standardising probe
    still reads) weighs as much as the dominant ones."""
    var = torch.cat([a, b]).var(dim=0, unbiased=False)
    if per_dim:
        var = var.clamp_min(1e-6 * var.mean().clamp_min(1e-8))
        return ((a - b).pow(2) / (2.0 * var)).mean()
    return (a - b).pow(2).sum(dim=1).mean() / (2.0 * var.sum().clamp_min(1e-8))


class MaskedImageDecoder(nn.Module):
    """The masked autoencoder's decoder: an encoder's token map (grid x grid x token_dim)
    upsampled by nearest-neighbour x2 + 3x3 convolutions to the stamp (a light decoder, as
    MAE's: the encoder must hold the information)."""

    def __init__(self, token_dim: int, channels: int, size: int, grid: int, width: int = 128):
        super().__init__()
        self.grid, self.size = grid, size
        layers: list[nn.Module] = [nn.Conv2d(token_dim, width, 1)]
        g, w = grid, width
        while g < size:
            nxt = max(32, w // 2)
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(w, nxt, 3, padding=1),
                nn.GroupNorm(8, nxt),
                nn.GELU(),
            ]
            g, w = g * 2, nxt
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(w, channels, 3, padding=1)

    def forward(self, tokens: Tensor) -> Tensor:
        """(N, grid * grid, D) -> (N, C, size, size)."""
        n, _, d = tokens.shape
        h = tokens.transpose(1, 2).reshape(n, d, self.grid, self.grid)
        h = self.body(h)
        h = F.interpolate(h, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.out(h)


def _head(dim: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, 2 * out), nn.GELU(), nn.Linear(2 * out, out))


# --------------------------------------------------------------------------- presets
_PAPER_UNET = {
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "down_block_types": ["CrossAttnDownBlock2D"] * 4,
    "up_block_types": ["CrossAttnUpBlock2D"] * 4,
}

# "paper" is seed 000 Table 1 (images) and, for light curves, the seed-001 Conformer size
# with our 1-D decoder. "cpu" keeps ResNet-18 encoders and shrinks the UNet: four levels
# (48, 24, 12, 6 px), channels 32/64/128/128, one layer per block, attention (self and cross)
# only at 12 and 6 px: attention over the 576 tokens of the 24 px level halved the speed.
# "tiny" is for tests.
COUNTERFACTUAL_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {
        "image": {
            "token_dim": 16,
            "encoder": {"backbone": "resnet18"},
            "decoder": _PAPER_UNET,
        },
        "series": {
            "token_dim": 16,
            "encoder": {"width": 64, "depth": 4, "heads": 4, "ff_dim": 128, "n_tokens": 4},
            "decoder": {"width": 128, "depth": 6, "heads": 4},
        },
    },
    "cpu": {
        "image": {
            "token_dim": 16,
            "encoder": {"backbone": "resnet18"},
            "decoder": {
                "block_out_channels": [32, 64, 128, 128],
                "layers_per_block": 1,
                "attention_head_dim": 4,
                "down_block_types": [
                    "DownBlock2D",
                    "DownBlock2D",
                    "CrossAttnDownBlock2D",
                    "CrossAttnDownBlock2D",
                ],
                "up_block_types": [
                    "CrossAttnUpBlock2D",
                    "CrossAttnUpBlock2D",
                    "UpBlock2D",
                    "UpBlock2D",
                ],
                "norm_num_groups": 8,
            },
        },
        "series": {
            "token_dim": 16,
            "encoder": {"width": 32, "depth": 2, "heads": 2, "ff_dim": 64, "n_tokens": 4},
            "decoder": {"width": 64, "depth": 4, "heads": 4},
        },
    },
    "tiny": {
        "image": {
            "token_dim": 8,
            "encoder": {"backbone": "resnet10t"},
            "decoder": {
                "block_out_channels": [8, 16],
                "layers_per_block": 1,
                "attention_head_dim": 2,
                "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
                "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
                "norm_num_groups": 4,
            },
        },
        "series": {
            "token_dim": 8,
            "encoder": {
                "width": 16,
                "depth": 1,
                "heads": 2,
                "ff_dim": 32,
                "n_tokens": 2,
                "conv_kernel": 5,
            },
            "decoder": {"width": 16, "depth": 2, "heads": 2},
        },
    },
}


def build_counterfactual_model(
    preset: str, modality: str, in_channels: int, size: int, **overrides: Any
) -> CounterfactualModel:
    """Build from a named preset; ``encoder``/``decoder`` overrides merge into the preset's."""
    if preset not in COUNTERFACTUAL_PRESETS:
        raise ConfigError(
            f"unknown counterfactual preset {preset!r}; known: {sorted(COUNTERFACTUAL_PRESETS)}"
        )
    if modality not in COUNTERFACTUAL_PRESETS[preset]:
        raise ConfigError(f"modality must be 'image' or 'series'; got {modality!r}")
    accepted = set(inspect.signature(CounterfactualModel.__init__).parameters) - {
        "self",
        "modality",
        "in_channels",
        "size",
    }
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ConfigError(
            f"unknown CounterfactualModel options {unknown}; accepted: {sorted(accepted)}"
        )
    kwargs = copy.deepcopy(COUNTERFACTUAL_PRESETS[preset][modality])
    for key, value in overrides.items():
        if key in ("encoder", "decoder") and isinstance(value, dict):
            kwargs[key] = {**kwargs.get(key, {}), **value}
        else:
            kwargs[key] = value
    return CounterfactualModel(modality, in_channels, size, **kwargs)


def summarize(samples: Tensor) -> tuple[Tensor, Tensor]:
    """Posterior mean and standard deviation over the sample axis (dim 1)."""
    return samples.mean(dim=1), samples.std(dim=1, unbiased=samples.shape[1] > 1)


def robust_scale(flux: np.ndarray, ivar: np.ndarray | None = None) -> list[float]:
    """Per-channel asinh softening: the median per-pixel noise sigma (from ivar), else a
    robust (MAD) spread of the flux. Works on (N, C, ...) arrays."""
    c = flux.shape[1]
    out = []
    for ch in range(c):
        if ivar is not None:
            iv = ivar[:, ch][ivar[:, ch] > 0]
            s = float(np.median(1.0 / np.sqrt(iv))) if iv.size else math.nan
        else:
            f = flux[:, ch].ravel()
            s = float(1.4826 * np.median(np.abs(f - np.median(f))))
        out.append(s if np.isfinite(s) and s > 0 else 1.0)
    return out
