"""Observing conditions as smooth random fields on the sky, per survey and band.

Why fields: the instrument context of seed 000 is the set of sky neighbours within 3', which
only carries instrument information if conditions vary smoothly on the sky. Here:

- PSF FWHM per band: log-normal around the survey median; a field shared by the four bands
  (weight 1/2 in variance, same nights/pointing) plus one per band; correlation length 0.3 deg
  (coadd PSFs change on the scale of dithers and pointings).
- PSF ellipticity (e1, e2) per band: Gaussian fields, correlation length 0.3 deg.
- Number of exposures per band: a tiling pattern. Each pass (exposure layer) places circular
  pointings of the survey's field of view on a square lattice with a random offset; a point
  counts the pointings covering it; each pointing was observed with probability
  ``completeness``. Coverage 0 is raised to 1 (catalogue sources have data in every band).
- Depth: sky noise per pixel set so the point-source 5-sigma depth at median seeing and at
  the tiling's mean exposure count equals the preset; scaled by sqrt(n_mean / n_exp) and a
  sky-brightness field (correlation length 0.5 deg). The realised 5-sigma depth then also
  follows the local PSF.
- Milky Way E(B-V): one field for the sky (shared by every survey), log-normal around 0.03
  with scatter 0.5 in ln, correlation length 1.5 deg (high-latitude dust).

Fields are Gaussian random fields drawn with random Fourier features (a squared-exponential
covariance with the stated correlation length), evaluated at any position, so they do not
depend on which sources are simulated.
"""

from __future__ import annotations

import numpy as np

from whatsreal.simulate.galaxy_presets import SurveyPreset

__all__ = [
    "GaussianField",
    "extinction_field",
    "moffat_neff_pix",
    "survey_conditions",
    "tiling_exposures",
]


class GaussianField:
    """Stationary zero-mean, unit-variance Gaussian random field on the tangent plane (deg).

    Random Fourier features: f(x) = sqrt(2/M) sum_m cos(k_m . x + phi_m) with k_m ~ N(0, 1/l^2);
    its covariance is exp(-d^2 / (2 l^2)) for correlation length ``l`` (deg).
    """

    def __init__(self, length_deg: float, rng: np.random.Generator, n_modes: int = 256) -> None:
        self.k = rng.normal(0.0, 1.0 / length_deg, size=(n_modes, 2))
        self.phase = rng.uniform(0, 2 * np.pi, n_modes)
        self.norm = np.sqrt(2.0 / n_modes)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Field values at tangent-plane positions (deg), in chunks to bound memory."""
        x = np.asarray(x, float)
        y = np.asarray(y, float)
        out = np.empty(x.shape)
        for lo in range(0, x.size, 8192):
            sl = slice(lo, lo + 8192)
            arg = np.outer(x.ravel()[sl], self.k[:, 0]) + np.outer(y.ravel()[sl], self.k[:, 1])
            out.ravel()[sl] = self.norm * np.cos(arg + self.phase).sum(axis=1)
        return out


def moffat_neff_pix(fwhm: np.ndarray, beta: float, pixel_scale: float) -> np.ndarray:
    """Effective number of pixels 1 / sum(p^2) of a Moffat PSF (analytic, pixelisation ignored).

    For p(r) = (beta-1)/(pi a^2) (1 + r^2/a^2)^-beta, sum p^2 = (beta-1)^2 / (pi a^2 (2 beta-1)).
    """
    alpha = np.asarray(fwhm) / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    return np.pi * alpha**2 * (2 * beta - 1) / (beta - 1) ** 2 / pixel_scale**2


def tiling_exposures(
    x: np.ndarray,
    y: np.ndarray,
    n_pass: int,
    fov_radius: float,
    spacing: float,
    completeness: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Number of pointings covering each position over ``n_pass`` offset lattice passes."""
    count = np.zeros(np.shape(x), dtype=np.int32)
    reach = int(np.ceil(fov_radius / spacing))
    for _ in range(n_pass):
        ox, oy = rng.uniform(0, spacing, 2)
        seed = int(rng.integers(2**31))
        ix0 = np.floor((x - ox) / spacing).astype(np.int64)
        iy0 = np.floor((y - oy) / spacing).astype(np.int64)
        for dx in range(-reach, reach + 2):
            for dy in range(-reach, reach + 2):
                ix, iy = ix0 + dx, iy0 + dy
                cx, cy = ox + ix * spacing, oy + iy * spacing
                inside = (x - cx) ** 2 + (y - cy) ** 2 < fov_radius**2
                # whether pointing (ix, iy) of this pass was observed: a hash, so it is the
                # same for every position it covers
                h = (ix * 73856093) ^ (iy * 19349663) ^ seed
                observed = ((h * 2654435761) % 1000003) / 1000003.0 < completeness
                count += inside & observed
    return count


def extinction_field(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Milky Way E(B-V) at tangent-plane positions: one field for the sky, shared by surveys."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
    field = GaussianField(1.5, rng)
    return 0.03 * np.exp(0.5 * field(x, y))


def survey_conditions(
    preset: SurveyPreset, x: np.ndarray, y: np.ndarray, ebv: np.ndarray, seed: int, code: int
) -> dict[str, np.ndarray]:
    """Per-observation, per-band conditions of one survey at positions (x, y) (deg).

    Returns (N, B) arrays: psf_fwhm (arcsec), psf_e1, psf_e2, n_exp, sky_sigma (native
    counts/pixel), gain (effective electrons per native count), depth (realised 5-sigma
    point-source AB mag), extinction (mag); and ebv (N,).
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 3, int(code)]))
    n_band = len(preset.bands)
    shared = GaussianField(0.3, rng)(x, y)
    fwhm = np.empty((x.size, n_band))
    e1 = np.empty_like(fwhm)
    e2 = np.empty_like(fwhm)
    n_exp = np.empty(fwhm.shape, dtype=np.int32)
    sky = np.empty_like(fwhm)
    for b in range(n_band):
        own = GaussianField(0.3, rng)(x, y)
        g = np.sqrt(0.5) * shared + np.sqrt(0.5) * own
        fwhm[:, b] = preset.psf_fwhm[b] * np.exp(preset.psf_fwhm_scatter * g)
        e1[:, b] = preset.psf_e_scatter * GaussianField(0.3, rng)(x, y)
        e2[:, b] = preset.psf_e_scatter * GaussianField(0.3, rng)(x, y)
        n_exp[:, b] = np.maximum(
            tiling_exposures(
                x,
                y,
                preset.n_exp_ref[b],
                preset.fov_radius,
                preset.tile_spacing,
                preset.completeness,
                rng,
            ),
            1,
        )
        sky[:, b] = preset.depth_scatter * GaussianField(0.5, rng)(x, y)
    # Sky noise per pixel from the median depth: F5 = 5 sigma sqrt(N_eff) at median seeing.
    depth_ref = np.asarray(preset.depth)
    neff_ref = moffat_neff_pix(np.asarray(preset.psf_fwhm), preset.psf_beta, preset.pixel_scale)
    f5_ref = 10 ** (-0.4 * (depth_ref - preset.zero_point))
    sigma_ref = f5_ref / (5.0 * np.sqrt(neff_ref))
    # the preset depth holds at the tiling's mean exposure count (passes x completeness x
    # covering fraction), so the median realised depth matches the published median
    cover = np.pi * preset.fov_radius**2 / preset.tile_spacing**2
    n_ref = np.asarray(preset.n_exp_ref, float) * preset.completeness * cover
    sky_sigma = sigma_ref * np.sqrt(n_ref / n_exp) * 10 ** (0.4 * sky)
    neff = moffat_neff_pix(fwhm, preset.psf_beta, preset.pixel_scale)
    depth = preset.zero_point - 2.5 * np.log10(5.0 * sky_sigma * np.sqrt(neff))
    sky_counts = 10 ** (-0.4 * (np.asarray(preset.sky_brightness) - preset.zero_point))
    gain = sky_counts * preset.pixel_scale**2 / sky_sigma**2
    extinction = np.asarray(preset.extinction)[None, :] * ebv[:, None]
    return {
        "psf_fwhm": fwhm,
        "psf_e1": e1,
        "psf_e2": e2,
        "n_exp": n_exp,
        "sky_sigma": sky_sigma,
        "gain": gain,
        "depth": depth,
        "extinction": extinction,
        "ebv": np.asarray(ebv, float),
    }
