"""Continuum along wavelength: a smooth fit (poly | spline | lowess) of the out-of-transit spectrum."""

from __future__ import annotations

import math

import numpy as np

from ...robust import mad_std
from .basis import legendre_design, spline_design
from .config import AlongWavelengthConfig

__all__ = ["fit_continuum"]


def _lowess(x: np.ndarray, y: np.ndarray, w: np.ndarray, frac: float) -> np.ndarray:
    """Locally weighted linear regression (tricube kernel) evaluated at every ``x``.

    ``w`` are per-point weights (0 = excluded).  With fewer than two usable
    neighbours the local fit is a weighted mean.
    """
    n_use = int(np.count_nonzero(w > 0))
    r = min(max(int(math.ceil(frac * n_use)), 2), n_use)
    dist = np.abs(x[:, None] - x[None, :])
    ranked = np.sort(np.where(w[None, :] > 0, dist, np.inf), axis=1)
    h = np.maximum(ranked[:, r - 1], 1e-12) * 1.000001   # the r-th neighbour keeps a tiny positive weight
    kern = np.clip(1 - (dist / h[:, None]) ** 3, 0, None) ** 3 * w[None, :]
    s0 = kern.sum(axis=1)
    xm = (kern * x[None, :]).sum(axis=1) / s0
    ym = (kern * y[None, :]).sum(axis=1) / s0
    dx = x[None, :] - xm[:, None]
    sxx = (kern * dx * dx).sum(axis=1)
    sxy = (kern * dx * (y[None, :] - ym[:, None])).sum(axis=1)
    slope = np.where(sxx > 1e-12 * np.maximum(s0, 1e-300), sxy / np.where(sxx > 0, sxx, 1.0), 0.0)
    return ym + slope * (x - xm)


def fit_continuum(wavelength_um: np.ndarray, spectrum: np.ndarray, cfg: AlongWavelengthConfig,
                  sigma: float, maxiters: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth continuum of the out-of-transit spectrum, with robust rejection of deviant channels.

    The model complexity is capped by the number of usable channels (a
    polynomial degree below the channel count, a spline with at most ``n - 4``
    interior knots), so a single-channel instrument (FGS1) gets its own level.

    Parameters
    ----------
    wavelength_um : numpy.ndarray
        (C,) channel wavelengths.
    spectrum : numpy.ndarray
        (C,) out-of-transit median flux (NaN = unusable channel).
    cfg : AlongWavelengthConfig
        Method and its parameters.
    sigma, maxiters : float, int
        Robust clipping of channels that deviate from the continuum (they are
        only excluded from the fit; their own level is kept by the time trend).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Continuum (C,) (positive: where the fit is not, the median level is
        used; all ones when disabled or no channel is usable) and the bool mask
        of channels rejected from the fit.
    """
    x = np.asarray(wavelength_um, np.float64)
    usable = np.isfinite(spectrum) & (spectrum > 0)
    if not cfg.enabled or not usable.any():
        return np.ones_like(x), np.zeros(x.shape, bool)
    lo, hi = float(x[usable].min()), float(x[usable].max())
    fit_mask = usable.copy()
    for _ in range(maxiters):
        resid = spectrum / _continuum_model(x, spectrum, fit_mask, cfg, lo, hi) - 1.0
        scale = mad_std(resid[fit_mask]) if fit_mask.sum() > 3 else 0.0
        if not scale > 0:
            break
        new_mask = usable & (np.abs(resid - np.median(resid[fit_mask])) <= sigma * scale)
        if np.array_equal(new_mask, fit_mask) or new_mask.sum() < max(2, fit_mask.sum() // 2):
            break
        fit_mask = new_mask
    continuum = _continuum_model(x, spectrum, fit_mask, cfg, lo, hi)
    level = np.median(spectrum[usable])
    continuum = np.where(np.isfinite(continuum) & (continuum > 1e-6 * level), continuum, level)
    return continuum, usable & ~fit_mask


def _continuum_model(x: np.ndarray, y: np.ndarray, mask: np.ndarray, cfg: AlongWavelengthConfig,
                     lo: float, hi: float) -> np.ndarray:
    """One least-squares continuum fit of ``y[mask]``, evaluated at every ``x``."""
    n = int(mask.sum())
    w = mask.astype(np.float64)
    if cfg.method == "lowess":
        return _lowess(x, np.where(mask, y, 0.0), w, cfg.lowess.frac)
    if cfg.method == "spline" and n >= 5:
        design = spline_design(x, x[mask], min(cfg.spline.knots, n - 4), lo, hi)
    else:  # poly, or a spline with too few channels for one knot: a cubic at most
        degree = cfg.poly.degree if cfg.method == "poly" else 3
        design = legendre_design(x, min(degree, n - 1), lo, hi)
    coef, *_ = np.linalg.lstsq(design[mask], y[mask], rcond=None)
    return design @ coef
