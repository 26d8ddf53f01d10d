"""The compact store: float16 arrays scaled per observation and band, Blosc-compressed.

A store written with ``StoreWriter(..., compact=True)`` (CLI ``--compact``) holds ``flux``,
``ivar`` and ``clean`` as float16 and every array (``mask`` too) through the Blosc filter of
``hdf5plugin``; :class:`~whatsreal.store.reader.ObservationStore` reads it back as float32, so
nothing downstream changes. The rule, per observation and band:

- **Noise scale.** ``sigma = 1 / sqrt(median of the band's positive ivar)`` when the store has
  ivar; ``flux`` and ``clean`` are stored as ``x / sigma`` (the noise is then ~1), ``ivar`` as
  ``ivar / median(positive ivar)`` (~1). The scales are kept, float32, in ``scale/<array>``
  ``(N, C)``; the reader multiplies them back.
- **Quantisation.** With a noise scale, ``x / sigma`` is rounded to a multiple of ``quantum``
  (default 1/16 of the noise sigma) before the float16 cast, so the low mantissa bits of pure
  noise become zeros that compress; this is the noise-relative quantisation of fpack, at a step
  4x finer than fpack's default sigma/4. Without ivar (no noise known), values are plain float16
  (no quantisation).
- **Precision** (tested): the absolute error of ``flux``/``clean`` is at most ``quantum / 2``
  of the band's median noise sigma where ``|x| < 2048 quantum sigma`` (128 sigma by default),
  and at most ``|x| 2^-11`` above (float16's relative precision; no quantisation there, so the
  two roundings never add). In units of a pixel's own noise that is 1/32 for faint pixels
  (times the band's median sigma over the pixel's: 0.05 for a pixel at 0.63x the median, as in
  upsampled Legacy stamps; rms ``quantum / sqrt(12)`` = 0.018, adding 0.03% to the noise
  variance) and below
  ``SNR 2^-11`` for bright ones: under 0.25 sigma wherever the pixel's S/N is below 512, which
  photon noise guarantees below ~260,000 detected electrons per pixel. A pixel measured at
  S/N 1000 keeps 0.05% relative precision, i.e. half its sigma; that is the one place float16
  costs something, and 0.05% is far below any photometric calibration. ``ivar`` keeps
  ``ivar_bits`` of float16's 10 mantissa bits (default 7): relative error at most
  ``2^-(ivar_bits + 1)`` (0.4%), i.e. 0.2% on the noise sigma; 0 stays 0.
- **Range.** A scale is raised where needed so that ``|x / scale| <= 32768`` (float16 overflows
  at 65504); this only coarsens the step of an observation brighter than 32768 sigma.
- **Compression.** Blosc with byte shuffle (``codec`` lz4hc by default: it decompresses as fast
  as LZ4, so random-batch reads keep float32's speed; zstd packs ~23% smaller but reads ~30%
  slower, h5py's lzf is larger and slower still; ``benchmarks/store_compact.py``), one
  observation per chunk as in the float32 store, so a random read decompresses only the rows
  it asks for; Fletcher-32 checksums as everywhere.

A compact store has ``format_version`` 2, so an older whatsreal refuses it instead of returning
scaled float16 values. ``benchmarks/store_compact.py`` measures size and read throughput
against the float32 store.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from whatsreal.config import check_fields
from whatsreal.errors import ConfigError, StoreFormatError

__all__ = ["CompactSpec", "compact_spec", "filter_kwargs", "pack", "register_filters", "unpack"]

# Arrays stored as scaled float16 in a compact store; ``mask`` stays uint8 (compressed).
PACKED_ARRAYS = ("flux", "ivar", "clean")
# Largest |value / scale| stored; float16 overflows at 65504.
_RANGE = 32768.0
_CODECS = ("lz4", "lz4hc", "zstd", "blosclz", "zlib")
_H5PY_CODECS = ("lzf", "gzip")  # h5py's own filters (byte shuffle too), for comparison


@dataclass(frozen=True)
class CompactSpec:
    """How a compact store packs its arrays (module docstring).

    Attributes:
        quantum: rounding step of ``flux``/``clean`` in units of the band's noise sigma.
        ivar_bits: float16 mantissa bits kept for ``ivar`` (1-10; 10 keeps all).
        codec: Blosc compressor (lz4, lz4hc, zstd, blosclz, zlib), or h5py's own lzf or gzip.
        level: compression level (1-9; lzf has none).
    """

    quantum: float = 1.0 / 16.0
    ivar_bits: int = 7
    codec: str = "lz4hc"
    level: int = 5

    def __post_init__(self) -> None:
        """Validate at the boundary, naming the field."""
        if not (np.isfinite(self.quantum) and 0 < self.quantum <= 0.5):
            raise ConfigError(
                f"CompactSpec.quantum must be in (0, 0.5] noise sigmas; got {self.quantum} "
                "(1/16 keeps the rms error at 0.018 sigma)"
            )
        if not (isinstance(self.ivar_bits, int) and 1 <= self.ivar_bits <= 10):
            raise ConfigError(
                f"CompactSpec.ivar_bits must be an integer 1-10; got {self.ivar_bits}"
            )
        if self.codec not in (*_CODECS, *_H5PY_CODECS):
            raise ConfigError(
                f"CompactSpec.codec must be one of {[*_CODECS, *_H5PY_CODECS]}; got {self.codec!r}"
            )
        if not (isinstance(self.level, int) and 1 <= self.level <= 9):
            raise ConfigError(f"CompactSpec.level must be an integer 1-9; got {self.level}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, stored in the store's ``compact`` attribute."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CompactSpec:
        """Inverse of :meth:`to_dict`; unknown keys raise."""
        check_fields(cls, d)
        return cls(**dict(d))


def compact_spec(value: bool | CompactSpec | Mapping[str, Any] | None) -> CompactSpec | None:
    """``compact=`` argument of the writer: False/None (float32), True (defaults), a spec or
    a dict of its fields."""
    if value is None or value is False:
        return None
    if value is True:
        return CompactSpec()
    if isinstance(value, CompactSpec):
        return value
    if isinstance(value, Mapping):
        return CompactSpec.from_dict(value)
    raise ConfigError(f"compact must be True/False, a CompactSpec or a dict; got {value!r}")


def register_filters() -> None:
    """Import hdf5plugin, which registers the Blosc filter with HDF5 (needed to read or write
    a compact store); a clear error if it is missing."""
    try:
        import hdf5plugin  # noqa: F401  (import registers the filters)
    except ImportError:
        raise StoreFormatError(
            "this store is compact (Blosc-compressed float16) and reading it needs the "
            "hdf5plugin package: pip install hdf5plugin"
        ) from None


def filter_kwargs(spec: CompactSpec) -> dict[str, Any]:
    """``create_dataset`` keyword arguments of the compression filter, with byte shuffle."""
    if spec.codec == "lzf":
        return {"compression": "lzf", "shuffle": True}
    if spec.codec == "gzip":
        return {"compression": "gzip", "compression_opts": spec.level, "shuffle": True}
    register_filters()
    import hdf5plugin

    return dict(hdf5plugin.Blosc(cname=spec.codec, clevel=spec.level, shuffle=1))


def _per_band(values: np.ndarray, fn) -> np.ndarray:
    """Apply ``fn`` over all but the first two axes: (n, C, ...) -> (n, C)."""
    n, c = values.shape[:2]
    return fn(values.reshape(n, c, -1), axis=2)


def _expand(scale: np.ndarray, ndim: int) -> np.ndarray:
    """(n, C) -> (n, C, 1, ...) for broadcasting against (n, C, ...)."""
    return scale.reshape(scale.shape + (1,) * (ndim - 2))


def _median_positive(values: np.ndarray) -> np.ndarray:
    """(n, C) median of each band's positive values, NaN where a band has none."""
    pos = np.where(values > 0, values.astype(np.float64), np.nan)
    if pos.size == 0:
        return np.full(values.shape[:2], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN band gives NaN: wanted
        return _per_band(pos, np.nanmedian)


def noise_sigma(ivar: np.ndarray | None, n: int, c: int) -> np.ndarray:
    """(n, C) noise sigma per observation and band from ivar, NaN where unknown."""
    if ivar is None:
        return np.full((n, c), np.nan, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = 1.0 / np.sqrt(_median_positive(ivar))
    return np.where(np.isfinite(sigma) & (sigma > 0), sigma, np.nan)


def _range_scale(values: np.ndarray, base: np.ndarray) -> np.ndarray:
    """``base`` (NaN where unknown) raised so that |values / scale| <= _RANGE; a positive scale
    of the values' own size where base is unknown, 1 for an all-zero band."""
    peak = _per_band(np.abs(values.astype(np.float64)), np.max)
    own = np.where(peak > 0, peak / 1024.0, 1.0)  # plain float16: headroom x64 above the peak
    scale = np.where(np.isfinite(base), base, own)
    return np.maximum(scale, peak / _RANGE).astype(np.float32)


def _round_mantissa(half: np.ndarray, bits: int) -> np.ndarray:
    """Round float16 values (>= 0) to ``bits`` mantissa bits, to nearest."""
    drop = 10 - bits
    if drop <= 0:
        return half
    raw = half.view(np.uint16).astype(np.uint32)
    raw = (raw + (1 << (drop - 1))) & (0xFFFF ^ ((1 << drop) - 1))
    return raw.astype(np.uint16).view(np.float16)


def pack(
    name: str, values: np.ndarray, sigma: np.ndarray, spec: CompactSpec
) -> tuple[np.ndarray, np.ndarray]:
    """(float16 values, (n, C) float32 scale) of one array of an append; ``sigma`` is
    :func:`noise_sigma` of the append's ivar (quantises ``flux``/``clean`` where known)."""
    x = np.asarray(values, dtype=np.float32)
    if name == "ivar":
        scale = _range_scale(x, _median_positive(x))
        v = (x / _expand(scale, x.ndim)).astype(np.float16)
        return _round_mantissa(v, spec.ivar_bits), scale
    scale = _range_scale(x, sigma)
    v = x / _expand(scale, x.ndim)
    step = np.where(np.isfinite(sigma), spec.quantum * sigma / scale, 0.0)
    step = _expand(step.astype(np.float32), x.ndim)
    # quantise only where float16 is finer than the step (|v| < 2048 steps); above, its own
    # rounding (2^-11 relative) is the only one, so the two never add up
    fine = (step > 0) & (np.abs(v) < 2048 * step)
    v = np.where(fine, np.round(v / np.where(step > 0, step, 1.0)) * step, v)
    return v.astype(np.float16), scale


def unpack(values: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """float32 values of a packed array (rows of :func:`pack` output and their scales).

    numpy converts float16 one element at a time (~2 ns each, as long as the whole read), so
    the conversion is done on the bits instead, exactly: a float16's exponent and mantissa
    shifted left by 13 are a float32 of the same value times 2^-112 (subnormals included), and
    the sign goes to bit 31. Stored values are always finite (no inf/NaN patterns to map).
    Under a flush-denormals CPU mode, values below 2^-14 (6e-5 noise sigmas) would read as 0.
    """
    bits = np.asarray(values, dtype=np.float16).view(np.int16).astype(np.int32)
    bits <<= 13  # sign-extended: bits 31-28 hold the sign, 27-13 exponent and mantissa
    bits &= np.int32(-0x70000001)  # 0x8FFFFFFF: keep the sign in bit 31 only
    out = bits.view(np.float32)
    scale = _expand(np.asarray(scale, np.float32), out.ndim)
    if scale.size and float(np.max(scale)) < 2.0**15:
        out *= scale * np.float32(2.0**112)  # one pass; no overflow below 2^15 * 2^112
    else:
        out *= np.float32(2.0**112)
        out *= scale
    return out
