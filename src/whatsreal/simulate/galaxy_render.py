"""GalSim rendering of one source in one survey, and the resampling to the common grid.

Two speed-ups, both exact uses of GalSim, neither a renderer of our own:

1. Sersic index grid. GalSim precomputes a Hankel-transform table for every new Sersic index
   (and caches at most 100 of them), which dominates the cost when n varies continuously. We
   build the profiles of a fixed geometric grid of n once per process and draw a galaxy of index
   n as the flux-weighted sum of its two neighbouring grid profiles, (1 - w) S(n_lo) + w S(n_hi)
   with w linear in ln n, the same r_half, shear and flux. ``tests/test_galaxy_sim.py`` checks
   that the difference to an exact ``galsim.Sersic(n)`` rendering is far below the pixel noise.
2. One galaxy transform for all bands. A galaxy has one morphology in every band; only the PSF
   and the flux change. Following GalSim's own recipe (``GSObject.drawFFT_makeKImage``: "save
   the k-space image ... to avoid drawing [it] each time"), we draw the galaxy's k-space image
   once per survey, multiply it by each band's PSF x pixel k-space image and let GalSim's
   ``drawFFT_finish`` wrap and inverse-FFT it. The k grid is the one GalSim itself would choose
   for the widest and the sharpest PSF of the four bands (``getGoodImageSize``, ``maxk``), so
   folding and aliasing follow GalSim's default accuracy (``folding_threshold`` 5e-3).

Sersic profiles with n >= 1.5 are truncated at 8 half-light radii (SDSS model magnitudes taper
de Vaucouleurs profiles at 7-8 r_e); ``r_half`` and the flux refer to the truncated profile.
Below n = 1.5 the profile at 8 r_half is < 1e-6 of the centre, so truncation is immaterial.
"""

from __future__ import annotations

import functools

import galsim
import numpy as np

__all__ = [
    "SersicLibrary",
    "exact_profile",
    "moffat_psf",
    "native_bounds",
    "render_stamp",
    "render_stamp_direct",
    "resample_matrix",
    "to_common_grid",
]

TRUNC_FACTOR = 8.0
TRUNC_MIN_N = 1.5


class _CachedSersic(galsim.Sersic):
    """A Sersic that remembers its maxk and stepk (GalSim recomputes them on every access,
    about 1 ms each, and every drawn transformation of the profile asks for them)."""

    @functools.cached_property
    def _maxk(self) -> float:
        return self._sbp.maxK()

    @functools.cached_property
    def _stepk(self) -> float:
        return self._sbp.stepK()


def _base_sersic(n: float) -> galsim.Sersic:
    """Unit-flux, unit-half-light-radius Sersic with our truncation rule."""
    trunc = TRUNC_FACTOR if n >= TRUNC_MIN_N else 0.0
    return _CachedSersic(float(n), half_light_radius=1.0, trunc=trunc)


class SersicLibrary:
    """Sersic profiles on a fixed ln-n grid; any n in range is a small weighted sum of them.

    The grid has two families that are never mixed: untruncated profiles on [n_min, 1.5] and
    truncated ones on [1.5, n_max] (both contain n = 1.5), with nodes spread in proportion to
    their ln-n ranges, ``n_grid`` in all (<= 100, GalSim's Sersic cache).
    """

    def __init__(
        self, n_min: float = 0.5, n_max: float = 6.0, n_grid: int = 64, order: int = 2
    ) -> None:
        if n_grid > 100:
            raise ValueError("n_grid > 100 defeats GalSim's Sersic cache; use at most 100")
        if order not in (1, 2):
            raise ValueError(f"order must be 1 (linear) or 2 (quadratic), got {order}")
        self.order = order
        self.n_min, self.n_max = float(n_min), float(n_max)
        cut = min(max(TRUNC_MIN_N, n_min), n_max)
        span_u, span_t = np.log(cut / n_min), np.log(n_max / cut)
        n_u = max(3, round(n_grid * span_u / max(span_u + span_t, 1e-12))) if span_u > 0 else 0
        n_t = max(3, n_grid - n_u) if span_t > 0 else 0
        self.families = []  # (ln-n nodes, profiles), untruncated first
        for lo, hi, m, trunc in ((n_min, cut, n_u, 0.0), (cut, n_max, n_t, TRUNC_FACTOR)):
            if m:
                nodes = np.exp(np.linspace(np.log(lo), np.log(hi), m))
                profs = [_CachedSersic(float(v), half_light_radius=1.0, trunc=trunc) for v in nodes]
                self.families.append((np.log(nodes), profs))
        self.grid = np.concatenate([np.exp(f[0]) for f in self.families])

    def weights(self, n: float) -> list[tuple[galsim.GSObject, float]]:
        """Unit grid profiles and weights whose weighted sum approximates index n.

        ``order`` 1: the two neighbours, linear in ln n. ``order`` 2: the three nearest nodes
        with quadratic Lagrange weights in ln n (error third order in the node spacing).
        """
        n = float(np.clip(n, self.n_min, self.n_max))
        ln = np.log(n)
        g, profs = self.families[-1] if n >= TRUNC_MIN_N else self.families[0]
        j = int(np.clip(np.searchsorted(g, ln) - 1, 0, g.size - 2))
        if self.order == 1:
            w = (ln - g[j]) / (g[j + 1] - g[j])
            picks = [(j, 1.0 - w), (j + 1, w)]
        else:
            c = j if ln - g[j] < g[j + 1] - ln else j + 1  # stencil centred on the nearest node
            c = int(np.clip(c, 1, g.size - 2))
            idx = (c - 1, c, c + 1)
            picks = []
            for a in idx:
                w = 1.0
                for b in idx:
                    if b != a:
                        w *= (ln - g[b]) / (g[a] - g[b])
                picks.append((a, w))
        return [(profs[i], float(w)) for i, w in picks if abs(w) > 1e-12]

    def parts(self, n: float, r_half: float, e1: float, e2: float):
        """Unit-flux galaxy of index n, half-light radius r_half (arcsec), shear (e1, e2), as
        [(profile, weight), ...] of grid profiles whose weighted sum is the galaxy.

        Weights are applied to the drawn images, not through ``withFlux``: a Sersic with a new
        flux is a new GalSim object that recomputes its maxk (ms each).
        """
        return [(prof.dilate(r_half).shear(g1=e1, g2=e2), w) for prof, w in self.weights(n)]

    def profile(self, n: float, r_half: float, e1: float, e2: float) -> galsim.GSObject:
        """The interpolated galaxy as one GalSim object (slower; for plain drawImage calls)."""
        return galsim.Add([p * wt for p, wt in self.parts(n, r_half, e1, e2)])


@functools.lru_cache(maxsize=8)
def _base_moffat(beta: float) -> galsim.Moffat:
    """Unit-FWHM Moffat; dilating it keeps GalSim's maxk/stepk solves cached (exact)."""
    return galsim.Moffat(beta=float(beta), fwhm=1.0)


def moffat_psf(fwhm: float, e1: float, e2: float, beta: float) -> galsim.GSObject:
    """Moffat PSF of the given FWHM (arcsec) and shear (e1, e2) = reduced shear (g1, g2)."""
    return _base_moffat(beta).dilate(float(fwhm)).shear(g1=float(e1), g2=float(e2))


@functools.lru_cache(maxsize=32)
def _pixel_kimage(bounds: galsim.BoundsI, dk: float, pixel_scale: float) -> np.ndarray:
    """k-space image of the square pixel response on a given k grid (same for every stamp)."""
    k = galsim.ImageCD(bounds, scale=dk)
    galsim.Pixel(pixel_scale)._drawKImage(k)
    return k.array.copy()


def exact_profile(n: float, r_half: float, e1: float, e2: float) -> galsim.GSObject:
    """The same galaxy with GalSim's exact Sersic of index n (slow for new n; the reference)."""
    return _base_sersic(n).dilate(r_half).shear(g1=e1, g2=e2)


def native_bounds(size: int) -> galsim.BoundsI:
    """Bounds with pixel (0, 0) at the centre (odd) or just past the centre (even size)."""
    lo = -(size // 2)
    return galsim.BoundsI(lo, lo + size - 1, lo, lo + size - 1)


def _centre_shift(size: int, pixel_scale: float) -> float:
    """Shift (arcsec) that puts a profile at the geometric centre of a ``size`` stamp."""
    return -0.5 * pixel_scale if size % 2 == 0 else 0.0


def render_stamp(
    components: list[tuple[galsim.GSObject, np.ndarray]],
    psfs: list[galsim.GSObject],
    pixel_scale: float,
    size: int,
    offset: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Noise-free (B, size, size) image in native counts of unit-flux profiles times band fluxes.

    ``components`` are (profile, flux per band) pairs (a galaxy, its companion, a star), each
    already placed relative to the stamp centre; ``offset`` (arcsec) moves them all. Each
    component's k-space image is drawn once and shared by the bands. The FFT box is GalSim's
    choice (capping it folds the wings of large bright galaxies onto the stamp at several
    times the sky noise, measured; so we do not).
    """
    c = _centre_shift(size, pixel_scale)
    shift = (offset[0] + c, offset[1] + c)
    placed = [(prof.shift(*shift), np.asarray(flux, float)) for prof, flux in components]
    pixel = galsim.Pixel(pixel_scale)
    image = galsim.ImageD(native_bounds(size), scale=pixel_scale)
    everything = galsim.Add([p for p, _ in placed]) if len(placed) > 1 else placed[0][0]
    reference = galsim.Convolve(everything, galsim.Add(psfs), pixel)
    kimage, wrap = reference.drawFFT_makeKImage(image)
    kpix = _pixel_kimage(kimage.bounds, float(kimage.scale), float(pixel_scale))
    kgal = np.empty((len(placed), *kimage.array.shape), dtype=kimage.array.dtype)
    for c, (prof, _) in enumerate(placed):
        prof._drawKImage(kimage)
        np.multiply(kimage.array, kpix, out=kgal[c])
    out = np.empty((len(psfs), size, size))
    kpsf = kimage.copy()
    total = np.empty_like(kgal[0])
    for b, psf in enumerate(psfs):
        psf._drawKImage(kpsf)
        # elementwise, not tensordot: BLAS threads would fight the worker processes for cores
        np.multiply(kgal[0], placed[0][1][b], out=total)
        for c in range(1, len(placed)):
            total += placed[c][1][b] * kgal[c]
        np.multiply(total, kpsf.array, out=kimage.array)
        reference.drawFFT_finish(image, kimage, wrap, False)
        out[b] = image.array
    return out


def render_stamp_direct(
    components: list[tuple[galsim.GSObject, np.ndarray]],
    psfs: list[galsim.GSObject],
    pixel_scale: float,
    size: int,
    offset: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """The naive reference: one ``drawImage`` per band of Convolve(sum of components, PSF)."""
    out = np.empty((len(psfs), size, size))
    for b, psf in enumerate(psfs):
        obj = galsim.Add([prof.withScaledFlux(float(flux[b])) for prof, flux in components])
        img = galsim.Convolve(obj, psf).drawImage(
            nx=size,
            ny=size,
            scale=pixel_scale,
            offset=(offset[0] / pixel_scale, offset[1] / pixel_scale),
        )
        out[b] = img.array
    return out


@functools.lru_cache(maxsize=16)
def resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation weights, pixel centres aligned (align_corners=False).

    Output pixel i samples input coordinate (i + 0.5) n_in / n_out - 0.5, clamped to the edge
    pixels, as ``torch.nn.functional.interpolate(mode="bilinear")`` does. Identity if equal.
    """
    if n_in == n_out:
        return np.eye(n_in)
    src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.minimum(np.floor(src).astype(int), n_in - 2)
    w = src - lo
    mat = np.zeros((n_out, n_in))
    mat[np.arange(n_out), lo] = 1 - w
    mat[np.arange(n_out), lo + 1] += w
    return mat


def to_common_grid(
    image: np.ndarray, variance: np.ndarray | None, n_out: int, scale_factor: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """Resample (B, n, n) native images to (B, n_out, n_out) and rescale units.

    ``scale_factor`` multiplies the values (zero-point change times pixel-area ratio, so the
    sum of a stamp stays the total flux). The variance goes through the squared weights: the
    stored value is each output pixel's marginal variance (interpolation correlates pixels).
    """
    if image.shape[-1] == n_out:
        out = scale_factor * image
        var = None if variance is None else scale_factor**2 * variance
        return out, var
    mat = resample_matrix(image.shape[-1], n_out)
    out = scale_factor * (mat @ image @ mat.T)
    var = None
    if variance is not None:
        m2 = mat**2
        var = scale_factor**2 * (m2 @ variance @ m2.T)
    return out, var
