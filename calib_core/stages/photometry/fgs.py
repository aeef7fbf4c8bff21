"""FGS1 photometry: centroid, background, aperture / PSF-fit / optimal extraction.

The chain for a block of samples (all vectorised over samples):

1. sky of each plane (CDS frame, or signal and first read) around the
   reference position (annulus: sigma-clipped median; mesh: background map;
   none) - the sky statistics do not depend on the sub-pixel jitter;
2. centroid in the box around the reference on the sky-subtracted sample
   image, bad pixels filled from the profile moved to the previous estimate;
3. flux weights ``L`` of the chosen method (see :mod:`.extract`):
   ``aperture`` - exact circular overlap with bad-pixel replacement;
   ``psf`` - per-sample fit of flux and position with the shape fitted on the
   reference stack (flux = model integral); ``optimal`` - Horne weights in
   the PSF fit box from the reference profile (the stack in units of the
   model flux) moved to the sample's PSF-fit position, so the flux is again
   the star's total flux;
4. flux ``sum(L (plane - sky))`` (reads: signal minus first read), variance
   ``sum(L^2 var) + sum(L)^2 var_sky`` and flags.

``cfg`` is the stage's :class:`.config.PhotometryConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.ndimage import uniform_filter

from ...dq import DQ
from .background import annulus_background, mesh_background
from .centroid import box_slices, centroid_2d
from .extract import (Extraction, fill_bad, horne_weights, replaced_fraction, replacement_weights, weighted_flux,
                      weighted_variance)
from .flags import build_flags
from .geometry import circular_weights
from .pairs import SampleChunk
from .psf import PSFShape, PSFTable, fit_psf_2d, pixel_psf_2d, psf_fit_weights_2d
from .stack import fill_nan_2d, median_stack, variance_map

if TYPE_CHECKING:  # pragma: no cover
    from .config import PhotometryConfig

__all__ = ["FGSReference", "fgs_reference", "measure_fgs", "FGS_BACKGROUNDS"]

FGS_BACKGROUNDS = ("annulus", "mesh", "none")
#: centroid passes: bad pixels are re-filled with the profile moved to the previous centroid
_CENTROID_PASSES = 2
#: the PSF table reaches this far (px) beyond the fit box, so the star may move that much
_TABLE_MARGIN_PX = 3


@dataclass
class FGSReference:
    """What every sample is measured against (from a median stack of samples)."""

    image: np.ndarray        #: (H, W) sky-subtracted median sample image (e-)
    var: np.ndarray          #: (H, W) median pixel variance (e-^2)
    profile: np.ndarray      #: (H, W) fraction of the star's total flux per pixel: the stack / model
                             #: flux in the PSF fit box (empirical core), the fitted model outside
    dprofile_dx: np.ndarray  #: (H, W) derivative of the profile with respect to the star's column (model)
    dprofile_dy: np.ndarray  #: (H, W) derivative of the profile with respect to the star's row (model)
    x: float                 #: reference centroid column (px)
    y: float                 #: reference centroid row (px)
    shape: PSFShape          #: PSF shape fitted on the stack (``psf.model``)
    psf_flux: float          #: model flux of the stack (e-)
    x_fit: float             #: PSF-fit centre of the stack, column (px)
    y_fit: float             #: PSF-fit centre of the stack, row (px)
    static_bad: np.ndarray   #: (H, W) bool, pixels unusable in every reference sample
    table: PSFTable | None   #: tabulated shape for per-sample fits (psf / optimal methods)

    @property
    def box_centre(self) -> tuple[int, int]:
        return int(round(self.x)), int(round(self.y))

    def to_meta(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y, "stack_flux": float(self.image.sum()), "psf_model": self.shape.model,
                "psf_shape": self.shape.as_dict(), "psf_flux": self.psf_flux, "psf_x": self.x_fit,
                "psf_y": self.y_fit}

    def shifted_profile(self, x: np.ndarray, y: np.ndarray,
                        box: tuple[slice, slice] = (slice(None), slice(None))) -> np.ndarray:
        """Profile moved to centres ``(x, y)`` to first order (model gradients).

        Parameters
        ----------
        x, y : ndarray, shape (n,)
            Star positions (pixels).
        box : (slice, slice), optional
            Restrict the result to these rows and columns.

        Returns
        -------
        ndarray, shape (n, h, w)
        """
        dx = (np.asarray(x) - self.x)[:, None, None]
        dy = (np.asarray(y) - self.y)[:, None, None]
        return self.profile[box][None] + dx * self.dprofile_dx[box][None] + dy * self.dprofile_dy[box][None]


def _sky(plane: np.ndarray, var: np.ndarray, good: np.ndarray, x: np.ndarray, y: np.ndarray,
         cfg: "PhotometryConfig", method: str) -> tuple[np.ndarray, np.ndarray]:
    """Sky per pixel ``(n, H, W)`` (broadcastable) and its variance ``(n,)``."""
    bg = cfg.background
    n = len(plane)
    if method == "annulus":
        sky, sky_var, _ = annulus_background(plane, var, good, x, y, r_in=bg.inner_px, r_out=bg.outer_px,
                                             sigma=bg.sigma, maxiters=bg.maxiters)
        return sky[:, None, None], sky_var
    if method == "mesh":
        return mesh_background(plane, var, good, x, y, mask_radius=bg.inner_px, box=bg.mesh_box_px,
                               sigma=bg.sigma, maxiters=bg.maxiters)
    return np.zeros((n, 1, 1)), np.zeros(n)


def _sample_sky(chunk: SampleChunk, good: np.ndarray, x: np.ndarray, y: np.ndarray,
                cfg: "PhotometryConfig", method: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Sky of each plane of the samples, and the variance of the sample's sky.

    The variance comes from the sample variance (``chunk.var``: the CDS or
    pair variance), i.e. it describes the sky of the difference, whose
    reset level and shared charge cancel; it is the same for every plane.
    """
    skies, sky_var = [], np.zeros(len(chunk))
    for _, plane in chunk.planes():
        sky, sky_var = _sky(plane, chunk.var, good, x, y, cfg, method)
        skies.append(sky)
    return skies, sky_var


def _flat(a: np.ndarray) -> np.ndarray:
    """(n, H, W) -> (n, H*W, 1) extraction layout."""
    return a.reshape(len(a), -1, 1)


def fgs_reference(chunk: SampleChunk, cfg: "PhotometryConfig", method: str, background: str) -> FGSReference:
    """Build the reference (stack, profile, centroid, PSF shape) from a subset of samples.

    Parameters
    ----------
    chunk : SampleChunk
        Samples spread over the visit (typically ``reference.n_frames``).
    cfg : PhotometryConfig
    method : {"aperture", "psf", "optimal"}
        ``psf`` and ``optimal`` also tabulate the PSF shape for per-sample use.
    background : {"annulus", "mesh", "none"}
    """
    good = chunk.good
    n, h, w = chunk.data.shape
    raw = fill_nan_2d(median_stack(chunk.data, good))
    raw = raw - np.median(raw)
    peak = np.unravel_index(np.argmax(uniform_filter(raw, 3, mode="nearest")), raw.shape)
    x0, y0, _ = centroid_2d(raw[None], int(peak[1]), int(peak[0]), cfg.centroid.box_px, "com")
    skies, _ = _sample_sky(chunk, good, np.repeat(x0, n), np.repeat(y0, n), cfg, background)
    stack = median_stack(chunk.net(skies), good)             # NaN where no sample is usable
    stack_good = np.isfinite(stack)
    var = variance_map(chunk.var, good)
    xs0, ys0, _ = centroid_2d(fill_nan_2d(stack)[None], int(round(x0[0])), int(round(y0[0])), cfg.centroid.box_px,
                              cfg.centroid.method)
    weight = np.where(stack_good, 1.0 / var, 0.0)
    shape, x_fit, y_fit, psf_flux = fit_psf_2d(np.where(stack_good, stack, 0.0), weight, cfg.psf.model,
                                               float(xs0[0]), float(ys0[0]), box_px=cfg.psf.fit_box_px,
                                               order=cfg.psf.oversample)
    model, tx, ty = pixel_psf_2d(shape.model, shape.params, np.array([x_fit]), np.array([y_fit]),
                                 np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64), cfg.psf.oversample)
    image = np.where(stack_good, stack, psf_flux * model[0])    # never-usable pixels from the model
    xr, yr, _ = centroid_2d(image[None], int(round(xs0[0])), int(round(ys0[0])), cfg.centroid.box_px,
                            cfg.centroid.method)
    core = box_slices(int(round(x_fit)), int(round(y_fit)), cfg.psf.fit_box_px, (h, w))
    profile = model[0].copy()
    profile[core] = image[core] / psf_flux
    table = None
    if method in ("psf", "optimal"):
        table = PSFTable(shape, cfg.psf.fit_box_px // 2 + _TABLE_MARGIN_PX, cfg.psf.oversample)
    return FGSReference(image, var, profile, tx[0], ty[0], float(xr[0]), float(yr[0]), shape, psf_flux, x_fit, y_fit,
                        ~stack_good, table)


def _moved_profile(ref: FGSReference, x: np.ndarray, y: np.ndarray, box: tuple[slice, slice]) -> np.ndarray:
    """Reference profile moved to PSF-fit positions: ``P_ref + M(x, y) - M(x_fit, y_fit)`` in the PSF box.

    ``M`` is the fitted PSF model (tabulated), so the empirical core keeps its
    structure while its position follows the star exactly.  The box is the
    optimal-extraction window; the profile stays in units of the star's total
    flux, so the extracted flux is the total flux.

    Returns
    -------
    ndarray, shape (n, box rows, box columns)
    """
    rs, cs = box
    xs = np.arange(cs.start, cs.stop, dtype=np.float64)
    ys = np.arange(rs.start, rs.stop, dtype=np.float64)
    moved = ref.table.evaluate(x, y, xs, ys)[0]
    at_ref = ref.table.evaluate(np.array([ref.x_fit]), np.array([ref.y_fit]), xs, ys)[0]
    return ref.profile[box][None] + moved - at_ref


def _centroids(net: np.ndarray, good: np.ndarray, ref: FGSReference,
               cfg: "PhotometryConfig") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroids in the box around the reference; bad pixels filled from the profile moved to
    the previous estimate (:data:`_CENTROID_PASSES` passes)."""
    n = len(net)
    xb, yb = ref.box_centre
    box = box_slices(xb, yb, cfg.centroid.box_px, net.shape[1:])
    cut, cut_good = net[(slice(None), *box)], good[(slice(None), *box)]
    x, y = np.full(n, ref.x), np.full(n, ref.y)
    for _ in range(_CENTROID_PASSES):
        filled = fill_bad(_flat(cut), _flat(cut_good), _flat(ref.shifted_profile(x, y, box))).reshape(cut.shape)
        xc, yc, failed = centroid_2d(filled, xb - box[1].start, yb - box[0].start, cfg.centroid.box_px,
                                     cfg.centroid.method)
        x = np.where(np.isfinite(xc), xc + box[1].start, ref.x)
        y = np.where(np.isfinite(yc), yc + box[0].start, ref.y)
    return x, y, failed


def measure_fgs(chunk: SampleChunk, ref: FGSReference, cfg: "PhotometryConfig", method: str,
                background: str) -> Extraction:
    """Photometry of a block of FGS1 samples (see the module docstring).

    Returns
    -------
    Extraction
        One channel (``C = 1``).
    """
    good = chunk.good
    n, h, w = chunk.data.shape
    xb, yb = ref.box_centre
    skies, sky_var = _sample_sky(chunk, good, np.full(n, ref.x), np.full(n, ref.y), cfg, background)
    net = chunk.net(skies)
    x, y, failed = _centroids(net, good, ref, cfg)
    window = circular_weights(x, y, cfg.aperture.radius_px, (h, w), exact=cfg.aperture.exact,
                              subpixels=cfg.aperture.subpixels)
    prof = ref.shifted_profile(x, y)
    weights = replacement_weights(_flat(window), _flat(prof), _flat(good))
    transient = replaced_fraction(_flat(window), _flat(prof), _flat(~good & ~ref.static_bad))
    static = replaced_fraction(_flat(window), _flat(prof), _flat((~good & ref.static_bad)))
    n_rejected = np.zeros((n, 1), np.int64)
    if method in ("psf", "optimal"):
        box = box_slices(xb, yb, cfg.psf.fit_box_px, (h, w))
        fit_w = np.where(good, 1.0 / ref.var, 0.0)
        lw, xp, yp = psf_fit_weights_2d(net, fit_w, ref.table, x, y, box, n_iter=cfg.psf.max_iter)
        fitted = np.isfinite(xp) & np.isfinite(yp) & np.isfinite(lw).all(axis=(1, 2))
        failed = failed | ~fitted
        weights = _flat(lw)
    if method == "optimal":
        # the profile follows the PSF-fit position: a noisy centroid would bias a faint star's flux
        moved = _moved_profile(ref, np.where(fitted, xp, x), np.where(fitted, yp, y), box)
        cut = (slice(None), *box)
        box_w, n_rejected = horne_weights(_flat(net[cut]), _flat(moved), _flat(ref.var[box][None]), _flat(good[cut]),
                                          sigma_clip=cfg.optimal.sigma_clip, max_iter=cfg.optimal.max_iter)
        full = np.zeros((n, h, w))
        full[cut] = box_w.reshape(moved.shape)
        weights = _flat(full)
    flux = sum(sign * weighted_flux(weights, _flat(plane), _flat(sky))
               for (sign, plane), sky in zip(chunk.planes(), skies))
    flux_var = weighted_variance(weights, _flat(chunk.var), sky_var[:, None])
    sample_sky = np.broadcast_to(sum(sign * sky for (sign, _), sky in zip(chunk.planes(), skies)), (n, h, w))
    sky_level = (window * sample_sky).sum(axis=(1, 2)) / window.sum(axis=(1, 2))
    in_window = window > 0
    off = np.hypot(x - ref.x, y - ref.y) > cfg.flags.max_centroid_offset_px
    flags = build_flags(
        flux, flux_var, transient_bad=transient, static_bad=static, max_bad_fraction=cfg.flags.max_bad_fraction,
        max_static_bad_fraction=cfg.flags.max_static_bad_fraction,
        saturated=(((chunk.dq & DQ.SATURATED) != 0) & in_window).any(axis=(1, 2))[:, None],
        missing=(chunk.missing | ~in_window).all(axis=(1, 2))[:, None],
        off_centre=off, fit_failed=failed,
    )
    n_bad = (~good & in_window).sum(axis=(1, 2))[:, None]
    return Extraction(flux, flux_var, sky_level[:, None], x, y, flags, n_bad, n_rejected)
