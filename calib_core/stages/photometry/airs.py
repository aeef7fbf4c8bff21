"""AIRS-CH0 spectral extraction per wavelength column (vectorised over samples).

The chain for a block of samples (frames cropped to ``airs.columns``, detector
column order; the stage flips the result to ascending wavelength):

1. sky per column of each plane from the rows at least
   ``airs.sky_distance_rows`` from the reference trace (sigma-clipped mean,
   smoothed along columns);
2. trace row centre per sample from the white-light row profile (centroid
   method within ``+- (half_width_rows + 1)`` rows of the reference), and the
   spectral shift (columns) from a linearised fit of the sample's spectrum to
   the reference spectrum;
3. flux weights per column: ``aperture`` - box rows ``c +- half_width_rows``
   (fractional edge rows) with bad-pixel replacement; ``optimal`` - Horne
   weights with the spatial profile fitted on the reference stack (smoothed
   along columns, normalised per column) moved by the sample's row offset;
   ``psf`` - the amplitude of a 1-D model profile (shape and centre fitted
   per column on the stack, moved by the row offset; flux = model integral)
   with the same weighting; optimal and psf reject outliers against the
   unsmoothed stack profile;
4. flux ``sum(L (plane - sky))``, variance and flags per column.

``cfg`` is the stage's :class:`.config.PhotometryConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.ndimage import uniform_filter1d

from ...dq import DQ
from .background import row_background
from .centroid import centroid_1d
from .extract import (Extraction, fill_bad, horne_weights, replaced_fraction, replacement_weights, weighted_flux,
                      weighted_variance)
from .flags import build_flags
from .geometry import box_row_weights
from .pairs import SampleChunk
from .psf import PSFShape, fit_profile_1d, pixel_profile_1d
from .stack import fill_nan_2d, fill_nan_along_rows, median_stack, variance_map

if TYPE_CHECKING:  # pragma: no cover
    from .config import PhotometryConfig

__all__ = ["AIRSReference", "airs_reference", "measure_airs", "spectral_shift", "AIRS_BACKGROUNDS"]

AIRS_BACKGROUNDS = ("rows", "none")


@dataclass
class AIRSReference:
    """Reference of the cropped AIRS frames (``H`` rows x ``C`` columns, detector order)."""

    image: np.ndarray        #: (H, C) sky-subtracted median sample image (e-)
    var: np.ndarray          #: (H, C) median pixel variance (e-^2)
    trace: np.ndarray        #: (C,) trace centre row per column (polynomial fit)
    y: float                 #: white-light trace row centroid (px)
    sky_rows: np.ndarray     #: (H, C) bool, rows used for the sky
    profile: np.ndarray      #: (H, C) spatial profile, unit sum over the non-sky rows (0 on sky rows)
    cumulative: PchipInterpolator  #: cumulative ``profile`` along rows at pixel edges (sub-pixel shifts)
    cumulative_raw: PchipInterpolator  #: same for the unsmoothed stack profile (outlier tests)
    spectrum: np.ndarray     #: (C,) box spectrum of the stack (e-)
    dspectrum: np.ndarray    #: (C,) derivative of ``spectrum`` along columns
    shape: PSFShape | None   #: per-column 1-D profile shape (psf method)
    psf_centre: np.ndarray | None  #: (C,) centre row of the fitted 1-D profile per column (psf method)
    static_bad: np.ndarray   #: (H, C) bool, pixels unusable in every reference sample

    def to_meta(self) -> dict[str, Any]:
        meta = {"y": self.y, "trace_row": self.trace.tolist(), "stack_flux": float(self.image.sum())}
        if self.shape is not None:
            meta.update(psf_model=self.shape.model, psf_shape=self.shape.as_dict())
        return meta


def _sample_sky(chunk: SampleChunk, good: np.ndarray, sky_rows: np.ndarray, cfg: "PhotometryConfig",
                background: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Sky ``(n, 1, C)`` of each plane and the variance ``(n, C)`` of the sample's sky.

    As for FGS1, the variance describes the sky of the sample (computed from
    the CDS / pair variance), the same for every plane.
    """
    n, _, c = chunk.data.shape
    if background == "none":
        return [np.zeros((n, 1, c)) for _ in chunk.planes()], np.zeros((n, c))
    skies, sky_var = [], np.zeros((n, c))
    for _, plane in chunk.planes():
        sky, sky_var = row_background(plane, chunk.var, good, sky_rows, sigma=cfg.background.sigma,
                                      maxiters=cfg.background.maxiters, smooth_cols=cfg.airs.sky_smooth_cols)
        skies.append(np.where(np.isfinite(sky), sky, 0.0)[:, None, :])
    return skies, np.where(np.isfinite(sky_var), sky_var, 0.0)


def _sky_rows(trace: np.ndarray, n_rows: int, distance: float) -> np.ndarray:
    """(H, C) rows at least ``distance`` from the trace centre of their column."""
    return np.abs(np.arange(n_rows)[:, None] - trace[None, :]) >= distance


def spectral_shift(spectra: np.ndarray, ref: np.ndarray, dref: np.ndarray) -> np.ndarray:
    """Shift (columns) of each spectrum relative to the reference, linearised.

    Fits ``s = a * ref + b * dref`` by least squares; since
    ``ref(x - dx) ~ ref - dx * dref``, the shift is ``dx = -b / a``.

    Parameters
    ----------
    spectra : ndarray, shape (n, C)
    ref, dref : ndarray, shape (C,)
        Reference spectrum and its derivative along columns.

    Returns
    -------
    ndarray, shape (n,)
        Shift in columns (positive: features moved to higher column index).
    """
    basis = np.stack([ref, dref], axis=1)
    ok = np.isfinite(spectra)
    s = np.where(ok, spectra, 0.0)
    normal = np.einsum("nc,ci,cj->nij", ok.astype(np.float64), basis, basis)
    rhs = np.einsum("nc,ci->ni", s, basis)
    with np.errstate(invalid="ignore", divide="ignore"):
        coef = np.linalg.solve(normal + 1e-12 * np.eye(2) * np.abs(normal).max(), rhs[..., None])[..., 0]
        return -coef[:, 1] / coef[:, 0]


def _smooth_columns(values: np.ndarray, width: int) -> np.ndarray:
    """Running mean along the last axis (columns), edges by nearest value."""
    return uniform_filter1d(values, width, axis=-1, mode="nearest") if width > 1 else values


def airs_reference(chunk: SampleChunk, cfg: "PhotometryConfig", method: str, background: str) -> AIRSReference:
    """Reference stack, trace, sky rows, spatial profile and (psf) profile shapes.

    Parameters
    ----------
    chunk : SampleChunk
        Cropped samples spread over the visit (typically ``reference.n_frames``).
    cfg : PhotometryConfig
    method : {"aperture", "optimal", "psf"}
        ``psf`` also fits the 1-D profile model of every column.
    background : {"rows", "none"}
    """
    air = cfg.airs
    good = chunk.good
    n, h, c = chunk.data.shape
    raw = fill_nan_2d(median_stack(chunk.data, good))
    raw = raw - np.median(raw, axis=0, keepdims=True)
    y0 = float(np.argmax(raw.sum(axis=1)))
    sky_rows = _sky_rows(np.full(c, y0), h, air.sky_distance_rows)
    skies, _ = _sample_sky(chunk, good, sky_rows, cfg, background)
    stack = median_stack(chunk.net(skies), good)           # NaN where no sample is usable
    image = fill_nan_along_rows(stack)
    var = variance_map(chunk.var, good)
    rows = np.arange(h, dtype=np.float64)[:, None]
    near = np.abs(rows - y0) <= air.half_width_rows + 1
    col_w = np.where(near, np.clip(image, 0.0, None), 0.0)
    col_flux = col_w.sum(axis=0)
    col_centre = (col_w * rows).sum(axis=0) / np.maximum(col_flux, 1e-300)
    cols = np.arange(c, dtype=np.float64)
    usable = col_flux > 0
    coef = np.polyfit(cols[usable], col_centre[usable], air.trace_poly_degree, w=np.sqrt(col_flux[usable]))
    trace = np.polyval(coef, cols)
    yr, _ = centroid_1d(image.sum(axis=1)[None], y0, air.half_width_rows + 1, cfg.centroid.method)
    sky_rows = _sky_rows(trace, h, air.sky_distance_rows)
    inside = ~sky_rows
    raw_prof = np.where(inside, image, 0.0)                 # not clipped: that would bias the normalisation
    raw_prof = raw_prof / raw_prof.sum(axis=0, keepdims=True)
    prof = _smooth_columns(raw_prof, cfg.optimal.profile_smooth) * inside
    prof = prof / prof.sum(axis=0, keepdims=True)
    box = box_row_weights(trace, air.half_width_rows, h)
    spectrum = (box * image).sum(axis=0)
    shape, psf_centre = None, None
    if method == "psf":
        weight = np.where(inside, 1.0 / var, 0.0)
        shape, psf_centre = fit_profile_1d(image, weight, cfg.psf.model, trace, order=cfg.psf.oversample)
    return AIRSReference(
        image=image, var=var, trace=trace,
        y=float(yr[0]), sky_rows=sky_rows, profile=prof, cumulative=_cumulative(prof),
        cumulative_raw=_cumulative(raw_prof),
        spectrum=spectrum, dspectrum=np.gradient(spectrum), shape=shape, psf_centre=psf_centre,
        static_bad=~np.isfinite(stack),
    )


def _cumulative(profile: np.ndarray) -> PchipInterpolator:
    """Shape-preserving interpolant of the cumulative profile along rows, at pixel edges ``-0.5 .. H - 0.5``."""
    h, c = profile.shape
    cum = np.vstack([np.zeros((1, c)), np.cumsum(profile, axis=0)])
    return PchipInterpolator(np.arange(h + 1) - 0.5, cum, axis=0)


def _moved_profile(cumulative: PchipInterpolator, sky_rows: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Profile moved by ``dy`` rows per sample; unit sum per column over the non-sky rows.

    The shift is flux-conserving and exact for a smooth profile: each pixel
    gets the difference of the (PCHIP-interpolated) cumulative profile at its
    shifted edges.

    Returns
    -------
    ndarray, shape (n, H, C)
    """
    edges = np.arange(sky_rows.shape[0] + 1) - 0.5
    cum = cumulative(edges[None, :] - np.asarray(dy, np.float64)[:, None])
    prof = np.diff(cum, axis=1) * ~sky_rows
    return prof / prof.sum(axis=1, keepdims=True)


def measure_airs(chunk: SampleChunk, ref: AIRSReference, cfg: "PhotometryConfig", method: str,
                 background: str) -> Extraction:
    """Spectral extraction of a block of cropped AIRS samples (see the module docstring).

    Returns
    -------
    Extraction
        ``C`` channels in detector column order; ``centroid_y`` is the trace
        row centre, ``centroid_x`` the spectral shift in columns.
    """
    air = cfg.airs
    good = chunk.good
    n, h, c = chunk.data.shape
    skies, sky_var = _sample_sky(chunk, good, ref.sky_rows, cfg, background)
    net = chunk.net(skies)
    filled = fill_bad(net, good, ref.profile)
    y, failed = centroid_1d(filled.sum(axis=2), ref.y, air.half_width_rows + 1, cfg.centroid.method)
    y = np.where(np.isfinite(y), y, ref.y)
    dy = y - ref.y
    box_ref = box_row_weights(ref.trace, air.half_width_rows, h)
    dx = spectral_shift((box_ref[None] * filled).sum(axis=1), ref.spectrum, ref.dspectrum)
    centre = ref.trace[None, :] + dy[:, None]
    window = box_row_weights(centre, air.half_width_rows, h)
    prof = _moved_profile(ref.cumulative, ref.sky_rows, dy)
    weights = replacement_weights(window, prof, good)
    transient = replaced_fraction(window, prof, ~good & ~ref.static_bad)
    static = replaced_fraction(window, prof, ~good & ref.static_bad)
    n_rejected = np.zeros((n, c), np.int64)
    if method in ("optimal", "psf"):
        if method == "psf":
            extraction = pixel_profile_1d(ref.shape.model, ref.shape.params, ref.psf_centre[None, :] + dy[:, None],
                                          h, cfg.psf.oversample) * ~ref.sky_rows
        else:
            extraction = prof
        weights, n_rejected = horne_weights(net, extraction, ref.var, good, sigma_clip=cfg.optimal.sigma_clip,
                                            max_iter=cfg.optimal.max_iter,
                                            reject_profile=_moved_profile(ref.cumulative_raw, ref.sky_rows, dy))
    flux = sum(sign * weighted_flux(weights, plane, sky) for (sign, plane), sky in zip(chunk.planes(), skies))
    flux_var = weighted_variance(weights, chunk.var, sky_var)
    sample_sky = sum(sign * sky for (sign, _), sky in zip(chunk.planes(), skies))[:, 0, :]
    in_window = window > 0
    failed = failed | ~np.isfinite(dx)
    off = (np.abs(dy) > cfg.flags.max_centroid_offset_px) | (np.abs(dx) > cfg.flags.max_centroid_offset_px)
    flags = build_flags(
        flux, flux_var, transient_bad=transient, static_bad=static, max_bad_fraction=cfg.flags.max_bad_fraction,
        max_static_bad_fraction=cfg.flags.max_static_bad_fraction,
        saturated=(((chunk.dq & DQ.SATURATED) != 0) & in_window).any(axis=1),
        missing=(chunk.missing | ~in_window).all(axis=1),
        off_centre=off, fit_failed=failed,
    )
    n_bad = (~good & in_window).sum(axis=1)
    return Extraction(flux, flux_var, np.broadcast_to(sample_sky, (n, c)).copy(), dx, y, flags, n_bad, n_rejected)
