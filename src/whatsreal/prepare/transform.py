"""Seed 000's image preprocessing (§4, "Data Preprocessing") as one serialisable object.

:class:`Seed000Transform` turns a survey cutout (native pixels, native flux units) into what
the models see, and back. It is a plain value: :meth:`~Seed000Transform.to_dict` /
:meth:`~Seed000Transform.from_dict` (and JSON) round-trip it, so it can be saved with every
store and model and inference applies exactly the same steps. Steps, per observation:

1. **Bands.** The planes named g, r, i, z are picked by name, in that order; HSC's y (and any
   other extra band) is dropped; a missing band is an :class:`InputLayoutError`.
2. **Bad pixels** (explicit rule, never silent): a native pixel whose flux is NaN/inf, whose
   inverse variance is NaN/inf or <= 0, or whose mask is nonzero is *bad*. It is set to flux 0
   with ivar 0 before anything else, and every output pixel that takes a nonzero
   interpolation weight from a bad pixel gets ivar 0 and ``mask`` True. Counts per
   observation are returned (``n_bad``).
3. **Clamp** each band to ``[-c, c]`` in the survey's native units, with the constants of
   seed 000's code (``pablomerc/galaxy-counter``, taken from AION-1): HSC g 80, r 110, i 200,
   z 330, y 500 (counts at ZP 27); Legacy g 6, r 15, i 20, z 25 (nanomaggies). The seed's code
   clamps before the zero-point change, so the constants are native units. Clamped pixels keep
   their ivar; they are counted (``n_clamped``) and are where the inverse is only approximate.
4. **Zero-point** to 22.5 (nanomaggies): multiply by ``10^(-0.4 (ZP - 22.5))``, i.e. divide
   HSC (ZP 27.0) by ``10^((27.0 - 22.5) / 2.5) = 63.0957``; Legacy (22.5) is unchanged.
5. **Pixel-scale ratio.** Multiply by the ratio of output to native pixel *area*,
   ``(w / G)^2`` (w: native window side, G: grid side), so each output pixel holds the flux
   that falls on it and a stamp sums to the source's flux in every survey: HSC 1, Legacy
   ``(31/48)^2 = 0.417``. The paper says "scale by the pixel-scale ratio" without the power and
   the seed's public code has no such step; area is our reading, the one that makes HSC and
   Legacy pixel values comparable, and it is the simulator's convention. Set
   ``pixel_area_scaling=False`` for the seed's code as published.
6. **Geometry.** The output is a G x G grid (G = 48) with pixels of ``grid_scale`` (0.168")
   centred on the cutout centre. Survey s covers it with a native window of
   ``w = round(G * grid_scale / pixel_scale)`` pixels: HSC (0.168") w = 48, the central 48x48
   crop, no interpolation; Legacy (0.262") w = 31, the inner 31x31 upsampled to 48x48 by linear
   interpolation (``align_corners=False`` weights, as the seed's ``F.interpolate``). Output
   pixel i samples native coordinate ``c + (i + 0.5 - G/2) w / G``, with ``c = (N - 1) / 2``
   the centre of an N-pixel cutout (``crop_alignment="centred"``). An odd window in an even
   cutout (31 in 160) cannot be an integer crop about the centre; the seed's integer crop
   (start ``(N - w) // 2``) sits half a Legacy pixel (0.13", 0.78 HSC px) off HSC's centre.
   ``crop_alignment="integer"`` reproduces it; the default keeps both surveys on one centre.
7. **Stretch**: ``arcsinh(x / a) * a * m`` with a = 0.01, m = 10 (seed code's RangeCompress),
   then optionally ``(x - mean_s) / std_s`` per survey (``standardize``; the seed measured
   these on its own data, so no default is imposed here).

Two orders. :meth:`~Seed000Transform.to_grid` does steps 1-6 on linear flux: that is what an
observation store holds (the simulator writes exactly this; models apply their own stretch),
and ivar propagates exactly (variances through squared weights). :meth:`forward` is the whole
seed recipe in the seed's order: pointwise steps and the stretch on native pixels, then the
crop/upsample of stretched values. For HSC (no interpolation) the two orders agree exactly;
for Legacy they differ only where the stretch bends within one native pixel.

Inverses. :meth:`inverse` undoes :meth:`forward` and :meth:`to_native` undoes :meth:`to_grid`,
returning the native window in native units (for counterfactuals exported in flux units). They
are exact up to float rounding for unclamped pixels when the grid is at least as fine as the
native window (HSC, Legacy): the upsampling matrix has full column rank and its pseudo-inverse
recovers the window. They are approximate (1) at clamped pixels, which stay at the clamp value;
(2) for images not in the range of the upsampling (a model's counterfactual on the 48 grid has
more freedom than 31x31 native pixels): the least-squares native image is returned; (3) where
the native window is finer than the grid (a survey with pixels smaller than 0.168"), which loses
resolution. Native pixels outside the window are not recoverable and come back as NaN.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from whatsreal.config import check_fields
from whatsreal.errors import ConfigError, InputLayoutError
from whatsreal.prepare.bands import canonical_bands
from whatsreal.utils import atomic_write_json

__all__ = [
    "DEFAULT_SURVEYS",
    "GridResult",
    "Seed000Transform",
    "SurveySpec",
    "sampling_matrix",
]

TRANSFORM_NAME = "seed000"
TRANSFORM_VERSION = 1
_ALIGNMENTS = ("centred", "integer")


@dataclass(frozen=True)
class SurveySpec:
    """What the transform must know about one survey's cutouts.

    Attributes:
        pixel_scale: native pixel scale (arcsec/px); a cutout with another scale is refused.
        zero_point: AB zero-point of the native units (HSC 27.0, Legacy nanomaggies 22.5).
        clamp: per-band clamp limit in native units (band letter -> c), or None for no clamp.
        aliases: other names of the survey (MMU folder names such as ``legacysurvey``).
        window: native window side; None derives it as ``round(G * grid_scale / pixel_scale)``.
    """

    pixel_scale: float
    zero_point: float
    clamp: dict[str, float] | None = None
    aliases: tuple[str, ...] = ()
    window: int | None = None

    def __post_init__(self) -> None:
        """Validate at the boundary."""
        if not self.pixel_scale > 0:
            raise ConfigError(f"SurveySpec.pixel_scale must be > 0 arcsec, got {self.pixel_scale}")
        if self.clamp is not None and any(not v > 0 for v in self.clamp.values()):
            raise ConfigError(f"SurveySpec.clamp limits must be > 0, got {self.clamp}")
        if self.window is not None and self.window < 2:
            raise ConfigError(f"SurveySpec.window must be >= 2 pixels, got {self.window}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return {
            "pixel_scale": float(self.pixel_scale),
            "zero_point": float(self.zero_point),
            "clamp": None if self.clamp is None else {k: float(v) for k, v in self.clamp.items()},
            "aliases": list(self.aliases),
            "window": self.window,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SurveySpec:
        """Inverse of :meth:`to_dict`; unknown keys raise."""
        check_fields(cls, d)
        d = dict(d)
        if d.get("clamp") is not None:
            d["clamp"] = {str(k): float(v) for k, v in d["clamp"].items()}
        d["aliases"] = tuple(d.get("aliases", ()))
        return cls(**d)


# Seed 000 §4 and its code (pablomerc/galaxy-counter, image_preprocessing.py: BAND_CENTER_MAX,
# RescaleToLegacySurvey). ``lsst`` is not in seed 000: it is our simulator's third survey
# (Rubin-like, nJy coadds), without a clamp.
DEFAULT_SURVEYS: dict[str, SurveySpec] = {
    "hsc": SurveySpec(
        pixel_scale=0.168,
        zero_point=27.0,
        clamp={"g": 80.0, "r": 110.0, "i": 200.0, "z": 330.0, "y": 500.0},
        aliases=("hsc_pdr3", "hsc-ssp"),
    ),
    "legacy": SurveySpec(
        pixel_scale=0.262,
        zero_point=22.5,
        clamp={"g": 6.0, "r": 15.0, "i": 20.0, "z": 25.0},
        aliases=("legacysurvey", "legacy_survey", "decals", "des", "ls"),
    ),
    "lsst": SurveySpec(pixel_scale=0.2, zero_point=31.4, clamp=None, aliases=("rubin",)),
}


def sampling_matrix(
    n_native: int, window: int, n_out: int, alignment: str = "centred"
) -> np.ndarray:
    """(n_out, n_native) linear-interpolation weights that sample a ``window``-pixel span
    about the cutout centre onto ``n_out`` pixels (``align_corners=False`` convention)."""
    if alignment not in _ALIGNMENTS:
        raise ConfigError(f"crop_alignment must be one of {list(_ALIGNMENTS)}, got {alignment!r}")
    if n_native < 2 or window < 2 or n_out < 1:
        raise InputLayoutError(
            f"cutout side {n_native} px, window {window} px, grid {n_out} px: all must be >= 2"
        )
    if window > n_native:
        raise InputLayoutError(
            f"the cutout is {n_native} px across but the transform needs a {window}-px window "
            "about its centre; use larger cutouts (MMU ships 160x160)"
        )
    if alignment == "centred":
        centre = (n_native - 1) / 2.0
    else:  # the seed's integer crop, then the crop's own centre
        centre = (n_native - window) // 2 + (window - 1) / 2.0
    src = centre + (np.arange(n_out) + 0.5 - n_out / 2.0) * (window / n_out)
    src = np.clip(src, 0.0, n_native - 1.0)
    lo = np.minimum(np.floor(src).astype(np.int64), n_native - 2)
    w = src - lo
    mat = np.zeros((n_out, n_native))
    rows = np.arange(n_out)
    mat[rows, lo] = 1.0 - w
    mat[rows, lo + 1] += w
    return mat


def _apply(mat_y: np.ndarray, x: np.ndarray, mat_x: np.ndarray) -> np.ndarray:
    """``mat_y @ x @ mat_x.T`` over the last two axes of any batch of planes."""
    return np.matmul(np.matmul(mat_y, x), mat_x.T)


@dataclass
class GridResult:
    """Observations on the common grid (steps 1-6), ready for ``StoreWriter.append``.

    Attributes:
        flux: (n, 4, G, G) float32 linear flux at ZP 22.5 per output pixel.
        ivar: (n, 4, G, G) float32 inverse variance (0 where unknown or bad), or None when the
            input had no ivar.
        mask: (n, 4, G, G) bool, True where an output pixel touches a bad native pixel.
        n_bad: (n,) bad native pixels (NaN, inf, ivar <= 0, masked) inside the used bands.
        n_clamped: (n,) native pixels changed by the clamp.
        bands: the output band letters.
    """

    flux: np.ndarray
    ivar: np.ndarray | None
    mask: np.ndarray
    n_bad: np.ndarray
    n_clamped: np.ndarray
    bands: tuple[str, ...]


@dataclass(frozen=True)
class Seed000Transform:
    """Seed 000's preprocessing (module docstring: steps 1-7) with its inverse; a value object
    that serialises with :meth:`to_dict` so stores and models carry the exact transform.

    Attributes:
        bands: output bands, in order (seed 000: g, r, i, z; HSC y dropped).
        grid_size: output side G (seed 000: 48).
        grid_scale: output pixel scale (arcsec; seed 000: HSC's 0.168").
        target_zero_point: common zero-point (seed 000: Legacy's 22.5).
        softening: ``a`` of the stretch ``arcsinh(x / a) * a * m`` (seed code: 0.01).
        multiplier: ``m`` of the stretch (seed code: 10).
        pixel_area_scaling: step 5 on (our reading of the paper) or off (the seed's code).
        crop_alignment: ``"centred"`` (both surveys about the cutout centre) or ``"integer"``
            (the seed's integer crop, half a Legacy pixel off in a 160-px cutout).
        standardize: optional per-survey (mean, std) applied after the stretch.
        surveys: survey name -> :class:`SurveySpec` (defaults: hsc, legacy, lsst).
    """

    bands: tuple[str, ...] = ("g", "r", "i", "z")
    grid_size: int = 48
    grid_scale: float = 0.168
    target_zero_point: float = 22.5
    softening: float = 0.01
    multiplier: float = 10.0
    pixel_area_scaling: bool = True
    crop_alignment: str = "centred"
    standardize: dict[str, tuple[float, float]] | None = None
    surveys: dict[str, SurveySpec] = field(default_factory=lambda: dict(DEFAULT_SURVEYS))

    def __post_init__(self) -> None:
        """Validate at the boundary, naming the field."""
        object.__setattr__(self, "bands", canonical_bands(self.bands, "Seed000Transform.bands"))
        if self.grid_size < 2 or not self.grid_scale > 0:
            raise ConfigError("Seed000Transform.grid_size must be >= 2 and grid_scale > 0")
        if not self.softening > 0 or not self.multiplier > 0:
            raise ConfigError("Seed000Transform.softening and multiplier must be > 0")
        if self.crop_alignment not in _ALIGNMENTS:
            raise ConfigError(
                f"Seed000Transform.crop_alignment must be one of {list(_ALIGNMENTS)}, "
                f"got {self.crop_alignment!r}"
            )
        if not self.surveys:
            raise ConfigError("Seed000Transform.surveys is empty: give at least one SurveySpec")
        for name, (_, std) in (self.standardize or {}).items():
            if not std > 0:
                raise ConfigError(f"Seed000Transform.standardize[{name!r}] std must be > 0")

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict, with a name and version, to store beside data and models."""
        return {
            "name": TRANSFORM_NAME,
            "version": TRANSFORM_VERSION,
            "bands": list(self.bands),
            "grid_size": int(self.grid_size),
            "grid_scale": float(self.grid_scale),
            "target_zero_point": float(self.target_zero_point),
            "softening": float(self.softening),
            "multiplier": float(self.multiplier),
            "pixel_area_scaling": bool(self.pixel_area_scaling),
            "crop_alignment": self.crop_alignment,
            "standardize": None
            if self.standardize is None
            else {k: [float(m), float(s)] for k, (m, s) in self.standardize.items()},
            "surveys": {k: v.to_dict() for k, v in self.surveys.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Seed000Transform:
        """Rebuild from :meth:`to_dict` output; a wrong name, version or key raises."""
        d = dict(d)
        name, version = d.pop("name", TRANSFORM_NAME), d.pop("version", TRANSFORM_VERSION)
        if name != TRANSFORM_NAME or int(version) > TRANSFORM_VERSION:
            raise ConfigError(
                f"transform {name!r} version {version} is not {TRANSFORM_NAME!r} <= "
                f"{TRANSFORM_VERSION}; it was written by another (newer?) whatsreal"
            )
        check_fields(cls, d)
        if "bands" in d:
            d["bands"] = tuple(d["bands"])
        if d.get("standardize") is not None:
            d["standardize"] = {k: (float(v[0]), float(v[1])) for k, v in d["standardize"].items()}
        if "surveys" in d:
            d["surveys"] = {k: SurveySpec.from_dict(v) for k, v in d["surveys"].items()}
        return cls(**d)

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Seed000Transform:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> Path:
        """Write the JSON atomically (a killed run never leaves half a file)."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Seed000Transform:
        """Read a file written by :meth:`save`."""
        path = Path(path)
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not a transform JSON file ({exc})") from None

    # -- survey geometry and units ------------------------------------------------------
    def survey(self, name: str) -> tuple[str, SurveySpec]:
        """Canonical name and spec of a survey, by name or alias (case-insensitive)."""
        key = str(name).strip().lower()
        for canon, spec in self.surveys.items():
            if key == canon.lower() or key in (a.lower() for a in spec.aliases):
                return canon, spec
        raise InputLayoutError(
            f"unknown survey {name!r}; the transform knows {sorted(self.surveys)} "
            "(add a SurveySpec to Seed000Transform(surveys=...) for another survey)"
        )

    def window(self, survey: str) -> int:
        """Native window side (px) that covers the output grid for ``survey``."""
        _, spec = self.survey(survey)
        if spec.window is not None:
            return int(spec.window)
        return max(2, round(self.grid_size * self.grid_scale / spec.pixel_scale))

    def unit_factor(self, survey: str) -> float:
        """Native units -> grid units: zero-point change times the pixel-area ratio (4-5)."""
        _, spec = self.survey(survey)
        zp = 10.0 ** (-0.4 * (spec.zero_point - self.target_zero_point))
        area = (self.window(survey) / self.grid_size) ** 2 if self.pixel_area_scaling else 1.0
        return float(zp * area)

    def _matrices(self, survey: str, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Row and column sampling matrices for an (height, width) cutout."""
        w = self.window(survey)
        g = self.grid_size
        return (
            sampling_matrix(height, w, g, self.crop_alignment),
            sampling_matrix(width, w, g, self.crop_alignment),
        )

    def band_indices(self, bands: Sequence[object], where: str = "") -> np.ndarray:
        """Positions of the output bands among a cutout's ``bands`` (others are dropped)."""
        have = canonical_bands(bands, where)
        missing = [b for b in self.bands if b not in have]
        if missing:
            at = f"{where}: " if where else ""
            raise InputLayoutError(
                f"{at}band(s) {missing} missing: the cutout has {list(have)}, the transform "
                f"needs {list(self.bands)}; give cutouts with all of them (or build the "
                "transform with bands=... for fewer)"
            )
        return np.array([have.index(b) for b in self.bands], dtype=np.int64)

    def check_pixel_scale(self, survey: str, pixel_scale: float | None, where: str = "") -> None:
        """Refuse a cutout whose pixel scale is not the survey's (within 0.1%)."""
        if pixel_scale is None:
            return
        canon, spec = self.survey(survey)
        if not np.isclose(float(pixel_scale), spec.pixel_scale, rtol=1e-3, atol=0.0):
            at = f"{where}: " if where else ""
            raise InputLayoutError(
                f'{at}pixel scale {float(pixel_scale):.4f}"/px, but survey {canon!r} has '
                f'{spec.pixel_scale}"/px; wrong survey name, or resampled cutouts? Give '
                "native cutouts, or a SurveySpec with the right pixel_scale"
            )

    # -- forward ------------------------------------------------------------------------
    def _pointwise(
        self,
        image: np.ndarray,
        survey: str,
        bands: Sequence[object],
        ivar: np.ndarray | None,
        mask: np.ndarray | None,
        pixel_scale: float | None,
        where: str,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]:
        """Steps 1-5 on native pixels: (flux, variance or None, bad, n_bad, n_clamped)."""
        canon, spec = self.survey(survey)
        self.check_pixel_scale(canon, pixel_scale, where)
        x = np.asarray(image)
        if x.ndim != 4:
            raise InputLayoutError(
                f"{where or 'image'}: shape {x.shape}; expected (n, bands, height, width)"
            )
        idx = self.band_indices(bands, where)
        if len(bands) != x.shape[1]:
            raise InputLayoutError(
                f"{where or 'image'}: {x.shape[1]} planes but {len(bands)} band names {list(bands)}"
            )
        x = x[:, idx].astype(np.float64)
        bad = ~np.isfinite(x)
        if mask is not None:
            m = np.asarray(mask)
            m = m[:, None] if m.ndim == 3 else m[:, idx]
            bad |= np.broadcast_to(m != 0, x.shape)
        var = None
        if ivar is not None:
            iv = np.asarray(ivar)[:, idx].astype(np.float64)
            if iv.shape != x.shape:
                raise InputLayoutError(f"{where or 'ivar'}: ivar shape {iv.shape} != {x.shape}")
            bad |= ~np.isfinite(iv) | (iv <= 0)
            with np.errstate(divide="ignore"):
                var = np.where(bad, 0.0, 1.0 / np.where(bad, 1.0, iv))
        x = np.where(bad, 0.0, x)
        n_clamped = np.zeros(len(x), np.int64)
        if spec.clamp is not None:
            for j, b in enumerate(self.bands):
                c = spec.clamp.get(b)
                if c is None:
                    continue
                over = np.abs(x[:, j]) > c
                n_clamped += over.reshape(len(x), -1).sum(axis=1)
                x[:, j] = np.clip(x[:, j], -c, c)
        factor = self.unit_factor(canon)
        x = x * factor
        if var is not None:
            var = var * factor**2
        n_bad = bad.reshape(len(x), -1).sum(axis=1)
        return x, var, bad, n_bad, n_clamped

    def _bad_out(self, bad: np.ndarray, my: np.ndarray, mx: np.ndarray) -> np.ndarray:
        """Output pixels taking a nonzero weight from a bad native pixel."""
        return _apply((my > 0).astype(np.float64), bad.astype(np.float64), (mx > 0) * 1.0) > 0

    def to_grid(
        self,
        image: np.ndarray,
        survey: str,
        bands: Sequence[object],
        ivar: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        pixel_scale: float | None = None,
        where: str = "",
    ) -> GridResult:
        """Steps 1-6 on linear flux: what an observation store holds (module docstring).

        ``image``/``ivar`` are (n, C, H, W) native; ``mask`` (n, C, H, W) or (n, H, W),
        nonzero = bad; ``bands`` names the C planes; ``pixel_scale`` (arcsec) is checked
        against the survey's; ``where`` (a file name) prefixes error messages.
        """
        x, var, bad, n_bad, n_clamped = self._pointwise(
            image, survey, bands, ivar, mask, pixel_scale, where
        )
        my, mx = self._matrices(survey, x.shape[-2], x.shape[-1])
        flux = _apply(my, x, mx)
        bad_out = self._bad_out(bad, my, mx)
        out_ivar = None
        if var is not None:
            v = _apply(my**2, var, mx**2)
            with np.errstate(divide="ignore"):
                out_ivar = np.where(bad_out | (v <= 0), 0.0, 1.0 / np.where(v > 0, v, 1.0))
            out_ivar = out_ivar.astype(np.float32)
        return GridResult(
            flux=flux.astype(np.float32),
            ivar=out_ivar,
            mask=bad_out,
            n_bad=n_bad,
            n_clamped=n_clamped,
            bands=self.bands,
        )

    def apply(self, batch: Any) -> GridResult:
        """:meth:`to_grid` of a reader's :class:`~whatsreal.prepare.galaxies.GalaxyBatch`
        (its zero-point, when the file states one, must be the survey's)."""
        canon, spec = self.survey(batch.survey)
        zp = getattr(batch, "zero_point", None)
        if zp is not None and not np.isclose(float(zp), spec.zero_point, atol=1e-6):
            raise InputLayoutError(
                f"{batch.file}: zero-point {float(zp)} but survey {canon!r} has "
                f"{spec.zero_point}; give a SurveySpec with the right zero_point"
            )
        return self.to_grid(
            batch.image,
            batch.survey,
            batch.bands,
            ivar=batch.ivar,
            mask=batch.mask,
            pixel_scale=batch.pixel_scale,
            where=str(batch.file),
        )

    def stretch(self, flux: np.ndarray, survey: str | None = None) -> np.ndarray:
        """Step 7 on linear grid flux: ``arcsinh(x / a) a m``, then the survey's standardisation."""
        a, m = self.softening, self.multiplier
        y = np.arcsinh(np.asarray(flux, dtype=np.float64) / a) * a * m
        return self._standardize(y, survey, +1)

    def unstretch(self, y: np.ndarray, survey: str | None = None) -> np.ndarray:
        """Inverse of :meth:`stretch`: model values back to linear flux at ZP 22.5."""
        a, m = self.softening, self.multiplier
        y = self._standardize(np.asarray(y, dtype=np.float64), survey, -1)
        return np.sinh(y / (a * m)) * a

    def _standardize(self, y: np.ndarray, survey: str | None, sign: int) -> np.ndarray:
        """(y - mean) / std forwards, y std + mean backwards, for surveys that have one."""
        if not self.standardize:
            return y
        if survey is None:
            raise InputLayoutError("this transform standardises per survey: pass survey=...")
        canon, _ = self.survey(survey)
        if canon not in self.standardize:
            return y
        mean, std = self.standardize[canon]
        return (y - mean) / std if sign > 0 else y * std + mean

    def forward(
        self,
        image: np.ndarray,
        survey: str,
        bands: Sequence[object],
        ivar: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        pixel_scale: float | None = None,
        where: str = "",
    ) -> tuple[np.ndarray, np.ndarray]:
        """The whole seed recipe in the seed's order (stretch, then crop/upsample): returns
        (n, 4, G, G) float32 model values and the bad-pixel mask."""
        x, _, bad, _, _ = self._pointwise(image, survey, bands, ivar, mask, pixel_scale, where)
        a, m = self.softening, self.multiplier
        s = np.arcsinh(x / a) * a * m
        my, mx = self._matrices(survey, x.shape[-2], x.shape[-1])
        y = self._standardize(_apply(my, s, mx), survey, +1)
        return y.astype(np.float32), self._bad_out(bad, my, mx)

    # -- inverse ------------------------------------------------------------------------
    def _pinv(self, survey: str, native_size: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Pseudo-inverse of the sampling matrix and which native pixels it recovers."""
        n = self.window(survey) if native_size is None else int(native_size)
        mat = sampling_matrix(n, self.window(survey), self.grid_size, self.crop_alignment)
        covered = (mat > 0).any(axis=0)
        pinv = np.zeros((n, self.grid_size))
        pinv[covered] = np.linalg.pinv(mat[:, covered])
        return pinv, covered

    def _ungrid(self, x: np.ndarray, survey: str, native_size: int | None) -> np.ndarray:
        """Grid planes -> native planes (least squares; NaN outside the window)."""
        pinv, covered = self._pinv(survey, native_size)
        out = _apply(pinv, np.asarray(x, dtype=np.float64), pinv)
        out[..., ~covered, :] = np.nan
        out[..., :, ~covered] = np.nan
        return out

    def to_native(
        self, flux: np.ndarray, survey: str, native_size: int | None = None
    ) -> np.ndarray:
        """Inverse of :meth:`to_grid` (without the clamp): grid flux at ZP 22.5 back to the
        survey's native pixels and units. ``native_size`` None returns the w x w window; a
        larger N returns an N x N cutout with NaN outside the window."""
        canon, _ = self.survey(survey)
        return self._ungrid(flux, canon, native_size) / self.unit_factor(canon)

    def inverse(self, y: np.ndarray, survey: str, native_size: int | None = None) -> np.ndarray:
        """Inverse of :meth:`forward`: model values back to native pixels and units (exact
        for unclamped pixels of images in the upsampling's range; see the module docstring)."""
        canon, _ = self.survey(survey)
        a, m = self.softening, self.multiplier
        s = self._standardize(np.asarray(y, np.float64), canon, -1)
        s = self._ungrid(s, canon, native_size)
        return np.sinh(s / (a * m)) * a / self.unit_factor(canon)
