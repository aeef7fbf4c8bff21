r"""Temperature scaling of predicted sigmas: ``sigma' = T sigma``.

For z-scores ``z = (y - mu) / sigma`` the Gaussian NLL of the scaled sigmas is,
up to constants, ``mean(z^2 / T^2 + 2 log T) / 2``.  Without regularisation its
minimiser is closed-form, ``T^2 = mean(z^2)``.  With an L2 pull towards 1 the
objective

.. math:: f(T) = \overline{z^2} / T^2 + 2 \log T + l_2 (T - 1)^2

is minimised by a safeguarded Newton iteration in ``u = log T``: the minimiser
lies between ``1`` and ``sqrt(mean z^2)`` (the two terms' own minima), so a
Newton step that leaves that bracket, or meets non-positive curvature, is
replaced by bisection.  ``T`` is global (one value) or per bin (mean over
planets of each bin), and finally clamped to a configured range.
"""

from __future__ import annotations

import numpy as np

__all__ = ["temperature_objective", "fit_temperature", "solve_regularised"]

_M_FLOOR = 1e-12


def temperature_objective(t: np.ndarray, mean_z2: np.ndarray, l2: float) -> np.ndarray:
    """``mean_z2 / T^2 + 2 log T + l2 (T - 1)^2`` (twice the NLL per value, plus a constant)."""
    t = np.asarray(t, dtype=np.float64)
    return mean_z2 / t**2 + 2.0 * np.log(t) + l2 * (t - 1.0) ** 2


def solve_regularised(mean_z2: np.ndarray, l2: float, iters: int) -> np.ndarray:
    """Minimise :func:`temperature_objective` element-wise by bracketed Newton in ``log T``.

    Parameters
    ----------
    mean_z2 : ndarray
        ``mean(z^2)`` per temperature to fit (any shape).
    l2 : float
        Strength of the pull towards ``T = 1`` (>= 0).
    iters : int
        Newton iterations (each halves the bracket at worst).

    Returns
    -------
    ndarray
        ``T`` with the shape of ``mean_z2``.
    """
    m = np.maximum(np.asarray(mean_z2, dtype=np.float64), _M_FLOOR)
    u_closed = 0.5 * np.log(m)
    lo, hi = np.minimum(u_closed, 0.0), np.maximum(u_closed, 0.0)
    u = u_closed.copy()
    for _ in range(iters):
        e = np.exp(u)
        grad = 2.0 - 2.0 * m / e**2 + 2.0 * l2 * (e - 1.0) * e
        curv = 4.0 * m / e**2 + 2.0 * l2 * (2.0 * e**2 - e)
        lo = np.where(grad < 0, u, lo)
        hi = np.where(grad > 0, u, hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = u - grad / curv
        inside = (curv > 0) & (step > lo) & (step < hi)
        u = np.where(grad == 0, u, np.where(inside, step, 0.5 * (lo + hi)))
    return np.exp(u)


def fit_temperature(
    z: np.ndarray,
    *,
    per_bin: bool = False,
    l2: float = 0.0,
    clamp: tuple[float, float] = (0.1, 10.0),
    newton_iters: int = 20,
) -> np.ndarray:
    """Fit the temperature(s) that make ``z / T`` unit-variance in the NLL sense.

    Parameters
    ----------
    z : ndarray, shape (n_planets, n_bins)
        Standardised residuals ``(y - mu) / sigma`` of the fitting planets.
    per_bin : bool
        One ``T`` per bin (mean over planets) instead of one global ``T``.
    l2 : float
        L2 pull towards ``T = 1``; 0 gives the closed form ``sqrt(mean z^2)``.
    clamp : (float, float)
        Final range of ``T``.
    newton_iters : int
        Newton iterations when ``l2 > 0``.

    Returns
    -------
    ndarray
        Shape ``()`` (global) or ``(n_bins,)`` (per bin).
    """
    z = np.asarray(z, dtype=np.float64)
    z = z[None, :] if z.ndim == 1 else z
    mean_z2 = np.mean(z * z, axis=0) if per_bin else np.mean(z * z)
    t = np.sqrt(mean_z2) if l2 == 0 else solve_regularised(mean_z2, l2, newton_iters)
    return np.clip(np.asarray(t, dtype=np.float64), clamp[0], clamp[1])
