"""Survey presets for the galaxy simulator: pixel scale, zero-point, PSF, depth, tiling.

Every number is a published survey figure (rounded), or a documented modelling choice where
the literature gives no single value. Presets describe the surveys; they are never tuned to
make a benchmark look better. Sources:

- HSC-SSP Wide (``hsc``): pixel 0.168"/px and coadd zero-point 27.0 (Aihara et al. 2018,
  PASJ 70, S4; Bosch et al. 2018). 5-sigma point-source depths g 26.5, r 26.5, i 26.2, z 25.2
  (the figures of our issue, rounded from Aihara et al. 2018/2019: PDR2 lists g 26.6, r 26.2,
  i 26.2, z 25.3). Median seeing g 0.77", r 0.76", i 0.58", z 0.68" (PDR2, Aihara et al. 2019,
  PASJ 71, 114). Exposures: g, r 4 x 150 s; i, z 6 x 200 s (survey design, Aihara et al.
  2018); field of view 1.5 deg diameter.
- DESI Legacy Imaging Surveys DR10 south (``legacy``): pixel 0.262"/px (DECam), catalogue
  zero-point 22.5 (nanomaggies; Dey et al. 2019, AJ 157, 168). 5-sigma depths for a 0.45"
  exponential galaxy g 24.0, r 23.4, z 22.5 (DR10 documentation); point sources are about
  0.5 mag deeper, which is what we use (g 24.5, r 23.9, z 23.0), and i is taken comparable
  to r (23.8, 0.1 mag shallower than r). Median PSF FWHM g 1.3", r 1.2", i 1.15", z 1.1"
  (DR9/DR10 south medians, rounded). Tiling: three passes of DECam pointings (Dey et al.
  2019), field of view approximated by a circle of 1.0 deg radius (3 deg^2).
- Rubin LSST-like (``lsst``): pixel 0.2"/px; zero-point 31.4 (coadds in nJy, as in Rubin
  data previews). 10-year coadd 5-sigma point-source depths g 27.4, r 27.5, i 26.8, z 26.1 and
  visits g 80, r 184, i 184, z 160 (Ivezic et al. 2019, ApJ 873, 111, Table 1). Delivered
  seeing about 0.8" in r (Ivezic et al. 2019 Sec. 3), scaled as wavelength^-0.2 across bands.
  Field of view 9.6 deg^2 (radius 1.75 deg).

Shared by all presets (modelling choices, documented here once):

- PSF: Moffat, beta = 3.5 (fits to seeing-limited PSFs give beta 2.5-4.8; Trujillo et al.
  2001, MNRAS 328, 977), with a small coadd-PSF ellipticity. (GalSim's Moffat with integer
  beta = 3 is about 15x slower to draw in k-space than half-integer beta; 3.5 is within
  the published range.)
- Dark-sky brightness (mag/arcsec^2): g 22.26, r 21.20, i 20.48, z 19.60 (Ivezic et al. 2019,
  Table 2). Used only to set the effective gain for the source Poisson noise.
- Milky Way extinction coefficients A_b / E(B-V): DECam g 3.214, r 2.165, i 1.592, z 1.211
  (Schlafly & Finkbeiner 2011, as used by the Legacy Surveys). HSC and LSST filters are close
  to DECam's; we use the same coefficients for them (an approximation at the few-% level).
- Filters: GalSim ships only LSST g, r, i, z throughputs, so all three surveys integrate the
  SEDs through those (colour terms between real filters are not modelled).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from whatsreal.errors import ConfigError

__all__ = ["SURVEY_PRESETS", "SurveyPreset", "survey_preset"]

BANDS = ("g", "r", "i", "z")


@dataclass(frozen=True)
class SurveyPreset:
    """One survey's instrument model; per-band tuples follow ``bands``.

    Attributes:
        name: survey name, also the store's instrument name.
        pixel_scale: native pixel scale (arcsec/px).
        zero_point: AB zero-point of the native image units (counts -> mag).
        native_size: side of the native cutout (px) covering the common field of view; it is
            resampled to the common grid (48x48 by default).
        psf_fwhm: median PSF FWHM per band (arcsec).
        psf_fwhm_scatter: log-normal scatter of the FWHM field (natural-log units).
        psf_e_scatter: std of each coadd-PSF ellipticity component field.
        depth: median 5-sigma point-source depth per band (AB mag) at ``n_exp_ref`` exposures.
        depth_scatter: std (mag) of the sky-brightness/transparency depth field.
        n_exp_ref: nominal number of exposures per band (the depth above refers to it).
        fov_radius: field-of-view radius of one pointing (deg), for the tiling pattern.
        tile_spacing: spacing of pointing centres within one pass (deg).
        completeness: probability that a planned pointing was observed (gives holes and
            shallow patches like a real survey in progress).
        extinction: A_b / E(B-V) per band.
        sky_brightness: dark-sky surface brightness per band (mag/arcsec^2).
        psf_beta: Moffat beta.
        sources: where the numbers come from.
    """

    name: str
    pixel_scale: float
    zero_point: float
    native_size: int
    psf_fwhm: tuple[float, ...]
    psf_fwhm_scatter: float
    psf_e_scatter: float
    depth: tuple[float, ...]
    depth_scatter: float
    n_exp_ref: tuple[int, ...]
    fov_radius: float
    tile_spacing: float
    completeness: float
    extinction: tuple[float, ...] = (3.214, 2.165, 1.592, 1.211)
    sky_brightness: tuple[float, ...] = (22.26, 21.20, 20.48, 19.60)
    psf_beta: float = 3.5
    bands: tuple[str, ...] = BANDS
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        """Check per-band tuples have one value per band, so a typo fails at construction."""
        for key in ("psf_fwhm", "depth", "n_exp_ref", "extinction", "sky_brightness"):
            if len(getattr(self, key)) != len(self.bands):
                raise ConfigError(
                    f"survey preset '{self.name}': {key} has {len(getattr(self, key))} values "
                    f"for {len(self.bands)} bands {self.bands}"
                )
        if self.pixel_scale <= 0 or self.native_size < 4:
            raise ConfigError(f"survey preset '{self.name}': bad pixel_scale or native_size")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the store's config attribute."""
        return dataclasses.asdict(self)


SURVEY_PRESETS: dict[str, SurveyPreset] = {
    "hsc": SurveyPreset(
        name="hsc",
        pixel_scale=0.168,
        zero_point=27.0,
        native_size=48,
        psf_fwhm=(0.77, 0.76, 0.58, 0.68),
        psf_fwhm_scatter=0.15,
        psf_e_scatter=0.02,
        depth=(26.5, 26.5, 26.2, 25.2),
        depth_scatter=0.10,
        n_exp_ref=(4, 4, 6, 6),
        fov_radius=0.75,
        tile_spacing=1.33,
        completeness=0.95,
        sources={
            "pixel_scale, zero_point": "Aihara et al. 2018 (PASJ 70, S4); Bosch et al. 2018",
            "depth": "issue figures; cf. HSC-SSP PDR2 (Aihara et al. 2019) g26.6 r26.2 i26.2 z25.3",
            "psf_fwhm": "HSC-SSP PDR2 median seeing (Aihara et al. 2019)",
            "n_exp_ref": "Wide layer design: g,r 4x150 s; i,z 6x200 s (Aihara et al. 2018)",
            "fov_radius": "HSC 1.5 deg diameter field of view",
        },
    ),
    "legacy": SurveyPreset(
        name="legacy",
        pixel_scale=0.262,
        zero_point=22.5,
        native_size=31,
        psf_fwhm=(1.30, 1.20, 1.15, 1.10),
        psf_fwhm_scatter=0.15,
        psf_e_scatter=0.03,
        depth=(24.5, 23.9, 23.8, 23.0),
        depth_scatter=0.15,
        n_exp_ref=(3, 3, 3, 3),
        fov_radius=1.0,
        tile_spacing=1.77,
        completeness=0.9,
        sources={
            "pixel_scale, zero_point": 'DECam 0.262"/px; nanomaggies (Dey et al. 2019)',
            "depth": "DR10 south galaxy depths g24.0 r23.4 z22.5 + 0.5 mag for point sources; "
            "i taken comparable to r",
            "psf_fwhm": "DR9/DR10 south median FWHM, rounded",
            "n_exp_ref": "three-pass tiling (Dey et al. 2019)",
            "fov_radius": "DECam 3 deg^2 field of view",
        },
    ),
    "lsst": SurveyPreset(
        name="lsst",
        pixel_scale=0.2,
        zero_point=31.4,
        native_size=40,
        psf_fwhm=(0.86, 0.81, 0.78, 0.76),
        psf_fwhm_scatter=0.10,
        psf_e_scatter=0.01,
        depth=(27.4, 27.5, 26.8, 26.1),
        depth_scatter=0.05,
        n_exp_ref=(80, 184, 184, 160),
        fov_radius=1.75,
        tile_spacing=3.1,
        completeness=0.98,
        sources={
            "pixel_scale": 'Rubin LSSTCam 0.2"/px',
            "zero_point": "nJy coadds (31.4), as in Rubin data previews",
            "depth, n_exp_ref": "10-year coadds, Ivezic et al. 2019 (ApJ 873, 111) Table 1",
            "psf_fwhm": '~0.8" delivered in r (Ivezic et al. 2019), x (lambda/lambda_r)^-0.2',
            "fov_radius": "9.6 deg^2 field of view",
        },
    ),
}


def survey_preset(name: str, **overrides: Any) -> SurveyPreset:
    """A named survey preset, optionally with fields replaced (for experiments, not benchmarks)."""
    if name not in SURVEY_PRESETS:
        raise ConfigError(f"unknown survey {name!r}; known surveys: {sorted(SURVEY_PRESETS)}")
    return (
        dataclasses.replace(SURVEY_PRESETS[name], **overrides)
        if overrides
        else (SURVEY_PRESETS[name])
    )
