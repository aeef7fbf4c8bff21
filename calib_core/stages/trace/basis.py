"""Regression bases of the trace stage: Legendre polynomials and cubic B-splines on an interval."""

from __future__ import annotations

import numpy as np
from scipy.interpolate import BSpline

__all__ = ["legendre_design", "spline_design"]


def _scaled(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return 2.0 * (x - lo) / (hi - lo) - 1.0 if hi > lo else np.zeros_like(x)


def legendre_design(x: np.ndarray, degree: int, lo: float, hi: float) -> np.ndarray:
    return np.polynomial.legendre.legvander(_scaled(x, lo, hi), degree)


def spline_design(x: np.ndarray, knots_at: np.ndarray, n_knots: int, lo: float, hi: float) -> np.ndarray:
    """Cubic B-spline design at ``x``; interior knots at quantiles of ``knots_at`` (strictly inside)."""
    interior = np.quantile(knots_at, np.linspace(0, 1, n_knots + 2)[1:-1]) if n_knots else np.empty(0)
    interior = np.unique(interior[(interior > lo) & (interior < hi)])
    t = np.concatenate([[lo] * 4, interior, [hi] * 4])
    return BSpline.design_matrix(np.clip(x, lo, hi), t, 3).toarray()
