"""Smooth robust fits of a flat's large-scale illumination structure (divided out of the flat on request)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.interpolate import BSpline

from ...robust import MAD_TO_SIGMA

__all__ = ["fit_illumination_poly2d", "fit_illumination_row_spline"]


def _robust_keep(residual: np.ndarray, fit_mask: np.ndarray, sigma: float, axis: Any = None) -> np.ndarray:
    """Pixels of ``fit_mask`` whose residual is within ``sigma`` MAD-sigmas (per ``axis`` slice)."""
    r = np.where(fit_mask, np.abs(residual), np.nan)
    scale = MAD_TO_SIGMA * np.nanmedian(r, axis=axis, keepdims=axis is not None)
    return fit_mask & (np.abs(residual) <= sigma * np.maximum(scale, np.finfo(np.float64).tiny))


def fit_illumination_poly2d(flat: np.ndarray, good: np.ndarray, *, degree_x: int = 3, degree_y: int = 2,
                            sigma: float = 3.0, maxiters: int = 5) -> np.ndarray:
    """Robust least-squares 2-D Legendre polynomial of a flat's large-scale structure.

    Parameters
    ----------
    flat : ndarray, shape (H, W)
        Flat field (dimensionless).
    good : ndarray of bool, shape (H, W)
        Pixels allowed in the fit.
    degree_x, degree_y : int
        Degrees along columns and rows (tensor-product terms).
    sigma : float
        Rejection threshold in MAD-sigmas of the residual.
    maxiters : int
        Rejection iterations.

    Returns
    -------
    ndarray of float64, shape (H, W)
        The fitted field, normalised to mean 1 over ``good``.
    """
    h, w = flat.shape
    y, x = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    basis = np.polynomial.legendre.legvander2d(y.ravel(), x.ravel(), [degree_y, degree_x])
    values = np.asarray(flat, np.float64).ravel()
    use = np.asarray(good, bool).ravel() & np.isfinite(values)
    model = np.ones_like(values)
    for _ in range(maxiters):
        coef, *_ = np.linalg.lstsq(basis[use], values[use], rcond=None)
        model = basis @ coef
        keep = _robust_keep(values - model, use, sigma)
        if np.array_equal(keep, use):
            break
        use = keep
    field = model.reshape(h, w)
    return field / field[good].mean()


def fit_illumination_row_spline(flat: np.ndarray, good: np.ndarray, *, knots: int = 6, sigma: float = 3.0,
                                maxiters: int = 5) -> np.ndarray:
    """Robust cubic B-spline along each detector row (all rows solved at once).

    Parameters
    ----------
    flat : ndarray, shape (H, W)
        Flat field (dimensionless).
    good : ndarray of bool, shape (H, W)
        Pixels allowed in the fit.
    knots : int
        Uniform interior knots per row.
    sigma, maxiters
        Robust rejection (per row) as in :func:`fit_illumination_poly2d`.

    Returns
    -------
    ndarray of float64, shape (H, W)
        The fitted field, normalised to mean 1 over ``good``.
    """
    h, w = flat.shape
    k = 3
    x = np.arange(w, dtype=np.float64)
    inner = np.linspace(0, w - 1, knots + 2)[1:-1]
    t = np.concatenate([np.full(k + 1, 0.0), inner, np.full(k + 1, w - 1.0)])
    basis = BSpline.design_matrix(x, t, k).toarray()                         # (W, nb)
    values = np.asarray(flat, np.float64)
    use = np.asarray(good, bool) & np.isfinite(values)
    y = np.where(use, values, 0.0)
    ridge = 1e-9 * np.eye(basis.shape[1])
    model = np.ones_like(values)
    for _ in range(maxiters):
        wts = use.astype(np.float64)
        gram = np.einsum("wi,rw,wj->rij", basis, wts, basis) + ridge
        rhs = np.einsum("wi,rw->ri", basis, wts * y)
        coef = np.linalg.solve(gram, rhs[..., None])[..., 0]                 # (H, nb)
        model = coef @ basis.T
        keep = _robust_keep(values - model, use, sigma, axis=1)
        if np.array_equal(keep, use):
            break
        use = keep
    return model / model[good].mean()
