"""Per-channel trend along time: regressors (time, pointing) and their batched weighted least squares."""

from __future__ import annotations

import numpy as np

from ...robust import mad_std
from .basis import legendre_design, spline_design
from .config import AlongTimeConfig

__all__ = ["time_design", "fit_trend"]


def time_design(time_h: np.ndarray, oot: np.ndarray, cfg: AlongTimeConfig,
                centroid_x: np.ndarray | None, centroid_y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Regressors of the per-channel trend.

    Parameters
    ----------
    time_h : numpy.ndarray
        (B,) hours.
    oot : numpy.ndarray
        (B,) out-of-transit frames (spline knots are placed at quantiles of
        their times, so no knot falls inside the transit window: across the
        window the trend is one cubic piece tied to both sides).
    cfg : AlongTimeConfig
        Trend model.
    centroid_x, centroid_y : numpy.ndarray or None
        (B,) measured pointing (pixels); standardised on out-of-transit frames.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Design (B, p) whose first column is the constant, and a (B,) bool of
        frames whose regressors are finite.
    """
    n = time_h.size
    if not cfg.enabled:
        return np.ones((n, 1)), np.ones(n, bool)
    lo, hi = float(time_h.min()), float(time_h.max())
    if cfg.method == "poly":
        columns = [legendre_design(time_h, cfg.poly.degree, lo, hi)]
    else:
        spline = spline_design(time_h, time_h[oot], cfg.spline.knots, lo, hi)
        columns = [np.ones((n, 1)), spline[:, 1:]]
    finite = np.ones(n, bool)
    if cfg.centroids != "none" and centroid_x is not None and centroid_y is not None:
        cx, cy = np.asarray(centroid_x, np.float64), np.asarray(centroid_y, np.float64)
        finite = np.isfinite(cx) & np.isfinite(cy)
        dx, dy = _standardise(cx, oot & finite), _standardise(cy, oot & finite)
        terms = [dx, dy] if cfg.centroids == "linear" else [dx, dy, dx * dx, dy * dy, dx * dy]
        columns.append(np.column_stack(terms))
    return np.concatenate(columns, axis=1), finite


def _standardise(values: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``(values - median) / mad_std`` over the ``ref`` samples; 0 where non-finite or without spread."""
    sample = values[ref]
    spread = mad_std(sample) if sample.size > 3 else 0.0
    if not spread > 0:
        return np.zeros_like(values)
    return np.where(np.isfinite(values), (values - np.median(sample)) / spread, 0.0)


def fit_trend(y: np.ndarray, w: np.ndarray, design: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares of every channel on a shared design, batched.

    Parameters
    ----------
    y : numpy.ndarray
        (B, C) values (ignored where ``w == 0``).
    w : numpy.ndarray
        (B, C) weights (0 = not in the fit, e.g. in-transit or flagged).
    design : numpy.ndarray
        (B, p) regressors.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The fitted trend on every frame (B, C) (NaN for a channel with fewer
        usable frames than regressors) and the number of fitted frames per channel (C,).
    """
    p = design.shape[1]
    y0 = np.where(w > 0, y, 0.0)
    gram = np.einsum("bp,bc,bq->cpq", design, w, design)
    rhs = np.einsum("bp,bc->cp", design, w * y0)
    ridge = 1e-12 * np.trace(gram, axis1=1, axis2=2)[:, None, None] * np.eye(p)
    n_fit = np.count_nonzero(w > 0, axis=0)
    ok = n_fit >= p
    coef = np.full((y.shape[1], p), np.nan)
    if ok.any():
        coef[ok] = np.linalg.solve(gram[ok] + ridge[ok], rhs[ok][..., None])[..., 0]
    return design @ coef.T, n_fit
