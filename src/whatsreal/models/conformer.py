"""Conformer encoder for (C, T) time series, after seed 001 App. B (Gulati et al. 2020 blocks).

Each block is::

    x = x + 1/2 FF(x)          half-step feed-forward (LayerNorm, Linear, SiLU, Linear)
    x = x + MHSA(x)            multi-head self-attention, padded keys masked out
    x = x + LSTM(x)            bidirectional LSTM recurrence (seed 001 lists it beside MHSA/conv)
    x = x + Conv(x)            pointwise conv + GLU, depthwise conv, LayerNorm, SiLU, pointwise
    x = x + 1/2 FF(x)
    x = LayerNorm(x)

The encoder projects C input channels to ``width`` per time step, adds a sinusoidal encoding
of the sample time, runs ``depth`` blocks, masked-mean pools over valid time steps and maps the
pooled vector to ``latent_dim`` with a linear layer.

Masking contract: with a ``(B, T)`` boolean mask of valid samples, values at invalid samples
never influence the output (they are zeroed before any operation that mixes time steps, the
LSTM runs on the valid samples only, attention ignores invalid keys, pooling averages valid
steps only), and right-padding a series leaves its pooled output unchanged. The convolution
module uses LayerNorm rather than the original BatchNorm so that no statistic mixes padded
positions or batch items.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

__all__ = ["ConformerBlock", "ConformerEncoder", "masked_periodogram", "sinusoidal_time_encoding"]


def sinusoidal_time_encoding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sin/cos features of times t (B, T) -> (B, T, dim), so attention knows the order."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    angles = t.to(torch.float32)[..., None] * freqs
    enc = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    if dim % 2:
        enc = torch.nn.functional.pad(enc, (0, 1))
    return enc


def masked_periodogram(x: Tensor, freqs: Tensor, mask: Tensor | None = None) -> Tensor:
    """Power of each channel of x (B, C, T) at frequencies ``freqs`` (F,) in cycles per
    sample, over the valid samples only (a Schuster periodogram, as Lomb–Scargle's for
    uneven sampling, without its per-frequency normalisation): |sum_t w_t (x_t - mean_w)
    e^{-2 pi i f t}|^2 / sum_t w_t, shape (B, C, F). It does not depend on the series' phase,
    and gaps leave it defined."""
    b, _, t = x.shape
    w = (
        torch.ones(b, t, device=x.device, dtype=torch.float32)
        if mask is None
        else mask.to(device=x.device, dtype=torch.float32)
    )
    xf = torch.where(w[:, None, :] > 0, x.float(), torch.zeros((), device=x.device))
    n = w.sum(dim=1).clamp_min(1.0)[:, None, None]
    xf = (xf - xf.sum(dim=2, keepdim=True) / n) * w[:, None, :]
    angle = 2 * math.pi * freqs.float()[:, None] * torch.arange(t, device=x.device)[None, :]
    re = xf @ torch.cos(angle).T  # (B, C, F)
    im = xf @ torch.sin(angle).T
    return (re.pow(2) + im.pow(2)) / n


def _zero_invalid(x: Tensor, mask: Tensor | None) -> Tensor:
    """Set tokens (B, T, D) at invalid steps to 0 (torch.where so NaN padding cannot leak)."""
    if mask is None:
        return x
    return torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))


class _FeedForward(nn.Module):
    """Pre-norm position-wise feed-forward module of the Conformer (Swish activation)."""

    def __init__(self, width: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, ff_dim),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(ff_dim, width),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Apply the feed-forward to every time step independently."""
        return self.net(x)


class _SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention whose keys at invalid steps are ignored."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """Attend over valid time steps only."""
        h = self.norm(x)
        key_padding_mask = None if mask is None else ~mask
        h, _ = self.attn(h, h, h, key_padding_mask=key_padding_mask, need_weights=False)
        return self.drop(h)


class _Recurrence(nn.Module):
    """Pre-norm bidirectional LSTM run on the valid steps only (gaps are skipped, not filled)."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        hidden = max(1, width // 2)
        self.lstm = nn.LSTM(width, hidden, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * hidden, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """Run the LSTM over each series' valid steps in time order and return (B, T, width)."""
        h = self.norm(x)
        if mask is None or bool(mask.all()):
            out, _ = self.lstm(h)
            return self.drop(self.proj(out))
        # Move valid steps to the front (stable, so time order is kept), pack, run, scatter back.
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
        lengths = mask.sum(dim=1)
        gathered = torch.gather(h, 1, order[..., None].expand_as(h))
        packed = pack_padded_sequence(
            gathered, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=h.shape[1])
        restored = torch.empty_like(out).scatter_(1, order[..., None].expand_as(out), out)
        return self.drop(self.proj(restored))


class _ConvModule(nn.Module):
    """Conformer convolution module: pointwise + GLU, depthwise conv, LayerNorm, SiLU, pointwise."""

    def __init__(self, width: int, kernel: int, dropout: float) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be a positive odd int, got {kernel}")
        self.norm = nn.LayerNorm(width)
        self.pointwise_in = nn.Conv1d(width, 2 * width, kernel_size=1)
        self.glu = nn.GLU(dim=1)
        self.depthwise = nn.Conv1d(width, width, kernel, padding=kernel // 2, groups=width)
        self.depth_norm = nn.LayerNorm(width)
        self.act = nn.SiLU()
        self.pointwise_out = nn.Conv1d(width, width, kernel_size=1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """Local temporal mixing; invalid steps are zeroed before the depthwise convolution."""
        h = self.glu(self.pointwise_in(self.norm(x).transpose(1, 2)))  # (B, width, T)
        h = _zero_invalid(h.transpose(1, 2), mask).transpose(1, 2)
        h = self.depthwise(h).transpose(1, 2)  # (B, T, width)
        h = self.act(self.depth_norm(h)).transpose(1, 2)
        return self.drop(self.pointwise_out(h).transpose(1, 2))


class ConformerBlock(nn.Module):
    """One Conformer block (macaron feed-forwards around attention, LSTM and convolution)."""

    def __init__(
        self, width: int, heads: int, ff_dim: int, conv_kernel: int, dropout: float
    ) -> None:
        super().__init__()
        self.ff1 = _FeedForward(width, ff_dim, dropout)
        self.attn = _SelfAttention(width, heads, dropout)
        self.rnn = _Recurrence(width, dropout)
        self.conv = _ConvModule(width, conv_kernel, dropout)
        self.ff2 = _FeedForward(width, ff_dim, dropout)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Map tokens (B, T, width) to tokens (B, T, width); invalid steps come out as zeros."""
        x = x + 0.5 * self.ff1(x)
        x = x + self.attn(x, mask)
        x = x + self.rnn(x, mask)
        x = x + self.conv(x, mask)
        x = x + 0.5 * self.ff2(x)
        return _zero_invalid(self.norm(x), mask)


class ConformerEncoder(nn.Module):
    """Encode a (B, C, T) series into a latent vector (B, latent_dim); seed-001 App. B encoder.

    Paper configuration: 4 blocks, width 64, 4 heads, feed-forward 128, latent 20. The kernel
    size of the depthwise convolution (15) and dropout (0.1) are not given in the paper and are
    our choices (15 samples covers one short period of the seed-001 simulator).

    ``spectral`` (not in seed 001; off by default) adds a periodogram branch: the log power
    of each channel at ``spectral_bins`` frequencies evenly spaced in (0, 1/2] cycles per
    sample (:func:`masked_periodogram`), through a two-layer MLP, concatenated with the
    pooled tokens before the latent layer. A periodic source's light curve has no preferred
    phase, and the branch reads its periods and harmonic amplitudes without having to learn
    phase invariance from contrastive pairs. The constructor
    arguments are kept in ``self.config`` so the encoder can be rebuilt with
    ``ConformerEncoder(**enc.config)``.
    """

    def __init__(
        self,
        in_channels: int,
        width: int = 64,
        depth: int = 4,
        heads: int = 4,
        ff_dim: int = 128,
        latent_dim: int = 20,
        conv_kernel: int = 15,
        dropout: float = 0.1,
        time_encoding: bool = True,
        spectral: bool = False,
        spectral_bins: int = 96,
    ) -> None:
        super().__init__()
        if spectral and spectral_bins < 1:
            raise ValueError(f"spectral_bins must be >= 1, got {spectral_bins}")
        if in_channels < 1 or width < 1 or depth < 0 or latent_dim < 1 or ff_dim < 1:
            raise ValueError(
                "in_channels, width, ff_dim and latent_dim must be >= 1 and depth >= 0; got "
                f"in_channels={in_channels}, width={width}, ff_dim={ff_dim}, "
                f"latent_dim={latent_dim}, depth={depth}"
            )
        if heads < 1 or width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        self.config: dict[str, Any] = {
            "in_channels": in_channels,
            "width": width,
            "depth": depth,
            "heads": heads,
            "ff_dim": ff_dim,
            "latent_dim": latent_dim,
            "conv_kernel": conv_kernel,
            "dropout": dropout,
            "time_encoding": time_encoding,
            "spectral": spectral,
            "spectral_bins": spectral_bins,
        }
        self.in_channels = in_channels
        self.width = width
        self.latent_dim = latent_dim
        self.time_encoding = time_encoding
        self.input_proj = nn.Linear(in_channels, width)
        self.time_proj = nn.Linear(width, width) if time_encoding else None
        self.blocks = nn.ModuleList(
            ConformerBlock(width, heads, ff_dim, conv_kernel, dropout) for _ in range(depth)
        )
        self.spectral = None
        if spectral:
            self.register_buffer(
                "freqs",
                torch.arange(1, spectral_bins + 1) / (2.0 * spectral_bins),
                persistent=False,
            )
            self.spectral = nn.Sequential(
                nn.LayerNorm(in_channels * spectral_bins),
                nn.Linear(in_channels * spectral_bins, width),
                nn.GELU(),
                nn.Linear(width, width),
            )
        self.head = nn.Linear(2 * width if spectral else width, latent_dim)

    def _check(self, x: Tensor, mask: Tensor | None, t: Tensor | None) -> Tensor | None:
        """Validate shapes at the boundary and return the mask as bool (or None)."""
        if x.ndim != 3 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected x of shape (batch, {self.in_channels}, time), got {tuple(x.shape)}"
            )
        batch, _, length = x.shape
        if t is not None and tuple(t.shape) != (batch, length):
            raise ValueError(f"t must have shape {(batch, length)}, got {tuple(t.shape)}")
        if mask is None:
            return None
        if tuple(mask.shape) != (batch, length):
            raise ValueError(f"mask must have shape {(batch, length)}, got {tuple(mask.shape)}")
        mask = mask.to(device=x.device, dtype=torch.bool)
        if not bool(mask.any(dim=1).all()):
            raise ValueError("every series needs at least one valid sample (mask row all False)")
        return mask

    def tokens(self, x: Tensor, mask: Tensor | None = None, t: Tensor | None = None) -> Tensor:
        """Per-step token sequence (B, T, width) before pooling; invalid steps are zeros.

        ``t`` (B, T) are sample times for the time encoding; default 0..T-1.
        """
        mask = self._check(x, mask, t)
        h = x.transpose(1, 2)  # (B, T, C)
        if mask is not None:
            h = torch.where(mask[..., None], h, torch.zeros((), dtype=h.dtype, device=h.device))
        h = self.input_proj(h)
        if self.time_proj is not None:
            if t is None:
                t = torch.arange(x.shape[-1], device=x.device).expand(x.shape[0], -1)
            h = h + self.time_proj(sinusoidal_time_encoding(t, self.width).to(h.dtype))
        h = _zero_invalid(h, mask)
        for block in self.blocks:
            h = block(h, mask)
        return h

    def pool(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        """Masked mean over time of tokens (B, T, width) -> (B, width)."""
        if mask is None:
            return tokens.mean(dim=1)
        weights = mask.to(tokens.dtype)[..., None]
        return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)

    def forward(self, x: Tensor, mask: Tensor | None = None, t: Tensor | None = None) -> Tensor:
        """Latent vector (B, latent_dim) of series x (B, C, T); mask (B, T) marks valid samples."""
        tokens = self.tokens(x, mask, t)
        mask = None if mask is None else mask.to(device=x.device, dtype=torch.bool)
        pooled = self.pool(tokens, mask)
        if self.spectral is not None:
            power = masked_periodogram(x, self.freqs, mask).flatten(1)
            spec = self.spectral(torch.log(power + 1e-6).to(pooled.dtype))
            pooled = torch.cat([pooled, spec], dim=1)
        return self.head(pooled)
