"""Finding the transit in a white-light curve (box search, trapezoid fit) and its time window."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from ..stages.errors import DataError
from .averaging import time_bin

__all__ = ["TransitEstimate", "box_search", "estimate_transit", "window_mask"]

_BOX_BINS = 120  # time bins of the exhaustive box search (the trapezoid fit then uses the finer bins)


@dataclass(frozen=True)
class TransitEstimate:
    """Transit found in a white-light curve (box search refined by a trapezoid fit).

    All times in hours since the visit start; ``depth`` is the maximum fractional
    flux drop of the trapezoid (not limb-darkening corrected), ``snr`` its
    signal-to-noise ratio.
    """

    t0_h: float
    t0_err_h: float
    t14_h: float
    t23_h: float
    depth: float
    snr: float

    @property
    def contact_times(self) -> np.ndarray:
        """t1..t4 in hours since the visit start."""
        return np.array([self.t0_h - self.t14_h / 2, self.t0_h - self.t23_h / 2,
                         self.t0_h + self.t23_h / 2, self.t0_h + self.t14_h / 2])


def _baseline_design(s: np.ndarray) -> np.ndarray:
    return np.stack([np.ones_like(s), s, s * s], axis=1)


def box_search(time_h: np.ndarray, flux: np.ndarray, weights: np.ndarray,
               min_width: int = 2) -> tuple[int, int, float, float]:
    """Best box-shaped dip over a quadratic baseline (exhaustive, vectorised).

    For every window of consecutive samples ``[i, j)`` the model
    ``a + b s + c s**2 - d * box`` is solved by weighted linear least squares
    (cumulative sums give every window's normal equations at once); the window
    with the largest ``d**2 / var(d)`` among ``d > 0`` wins.

    Parameters
    ----------
    time_h : numpy.ndarray
        (K,) sorted sample times (typically a few hundred time bins).
    flux : numpy.ndarray
        (K,) flux (any normalisation).
    weights : numpy.ndarray
        (K,) inverse variances (0 = unusable).
    min_width : int
        Minimum window length in samples.

    Returns
    -------
    (int, int, float, float)
        ``i``, ``j`` (window ``[i, j)``), depth ``d`` (flux units) and its S/N.
    """
    s = 2 * (time_h - time_h[0]) / max(time_h[-1] - time_h[0], 1e-12) - 1
    w = np.where(weights > 0, weights, 0.0)
    y = np.where(w > 0, flux, 0.0)
    powers = np.stack([s ** p for p in range(5)])
    S = (w * powers).sum(axis=1)
    Y = (w * y * powers[:3]).sum(axis=1)
    cw = np.concatenate([np.zeros((3, 1)), np.cumsum(w * powers[:3], axis=1)], axis=1)
    cy = np.concatenate([[0.0], np.cumsum(w * y)])
    n = s.size
    i, j = np.triu_indices(n + 1, k=min_width)
    keep = j - i <= n - 3
    i, j = i[keep], j[keep]
    W = cw[:, j] - cw[:, i]
    Wy = cy[j] - cy[i]
    N = np.empty((i.size, 4, 4))
    N[:, :3, :3] = np.array([[S[0], S[1], S[2]], [S[1], S[2], S[3]], [S[2], S[3], S[4]]])
    N[:, :3, 3] = N[:, 3, :3] = -W.T
    N[:, 3, 3] = W[0]
    rhs = np.column_stack([np.broadcast_to(Y, (i.size, 3)), -Wy])
    usable = np.concatenate([[0], np.cumsum(w > 0)])
    inside = usable[j] - usable[i]
    ok = (inside > 0) & (usable[-1] - inside >= 3)
    cov = np.zeros_like(N)
    cov[ok] = np.linalg.inv(N[ok])
    d = np.einsum("kj,kj->k", cov[:, 3, :], rhs)
    var_d = cov[:, 3, 3]
    score = np.where(ok & (d > 0) & (var_d > 0), d * d / np.where(var_d > 0, var_d, 1.0), -1.0)
    best = int(np.argmax(score))
    return int(i[best]), int(j[best]), float(d[best]), float(math.sqrt(max(score[best], 0.0)))


def _trapezoid(t: np.ndarray, t0: float, t14: float, tau: float) -> np.ndarray:
    return np.clip((t14 / 2 - np.abs(t - t0)) / max(tau, 1e-9), 0.0, 1.0)


MIN_TRANSIT_SAMPLES = 12   #: usable white-light samples needed to locate a transit
_MIN_TRANSIT_BINS = 5       #: occupied time bins the box search needs (a window of 2 and 3 baseline bins)


def estimate_transit(time_h: np.ndarray, flux: np.ndarray, weights: np.ndarray, nbins: int = 300) -> TransitEstimate:
    """Find the transit in a white-light curve: box search, then a trapezoid fit.

    Parameters
    ----------
    time_h : numpy.ndarray
        (B,) times, hours since the visit start.
    flux : numpy.ndarray
        (B,) white-light flux (any normalisation; slow drifts are absorbed by a
        quadratic baseline).
    weights : numpy.ndarray
        (B,) inverse variances; 0 marks unusable samples.
    nbins : int
        The curve is first averaged into this many equal-width time bins for the
        trapezoid fit (the box search that starts it uses at most 120 bins).

    Returns
    -------
    TransitEstimate
        Mid-transit time (with its 1-sigma error from the fit covariance),
        durations, depth and S/N.  Contact points are those of the trapezoid
        (for a limb-darkened transit they sit within a few percent of T14 of the
        true ones).

    Raises
    ------
    calib_core.stages.errors.DataError
        Too few usable samples or occupied time bins to locate a transit, or a
        median level that is not a positive finite flux.
    """
    n_usable = int(np.count_nonzero(np.asarray(weights) > 0))
    if n_usable < MIN_TRANSIT_SAMPLES:
        raise DataError(f"white-light curve has {n_usable} usable samples of {time_h.size}; at least "
                        f"{MIN_TRANSIT_SAMPLES} are needed to locate the transit (are most frames flagged?)")
    t_b, f_b, w_b, _ = time_bin(time_h, flux[:, None], weights[:, None], min(nbins, time_h.size))
    good = w_b[:, 0] > 0
    t_b, f_b, w_b = t_b[good], f_b[good, 0], w_b[good, 0]
    level = np.median(f_b)
    if not (np.isfinite(level) and level > 0):
        raise DataError(f"white-light curve: median level {float(level)!r} of its usable samples; expected a "
                        f"positive finite flux to locate the transit")
    f_b, w_b = f_b / level, w_b * level ** 2
    t_c, f_c, w_c, _ = time_bin(t_b, f_b[:, None], w_b[:, None], min(_BOX_BINS, t_b.size))
    if t_c.size < _MIN_TRANSIT_BINS:
        raise DataError(f"white-light curve: its {n_usable} usable samples fall in {t_c.size} occupied time bins; "
                        f"at least {_MIN_TRANSIT_BINS} are needed to locate the transit (usable frames bunched "
                        f"in time?)")
    i, j, depth, snr = box_search(t_c, f_c[:, 0], w_c[:, 0])
    t_start, t_end = t_c[i], t_c[j - 1]
    span = t_b[-1] - t_b[0]
    dt = span / max(t_b.size - 1, 1)
    dt_box = span / max(t_c.size - 1, 1)
    s = 2 * (t_b - t_b[0]) / max(span, 1e-12) - 1
    sqrt_w = np.sqrt(w_b)
    basis = _baseline_design(s)

    def residual(p: np.ndarray) -> np.ndarray:
        t0, t14, tau_frac, d = p[:4]
        model = (basis @ p[4:]) * (1 - d * _trapezoid(t_b, t0, t14, tau_frac * t14))
        return sqrt_w * (f_b - model)

    t14_0 = min(max(t_end - t_start + dt_box, 3 * dt), span)
    p0 = np.array([0.5 * (t_start + t_end), t14_0, 0.15, max(depth, 1e-6), 1.0, 0.0, 0.0])
    lower = [t_b[0], 2 * dt, 0.01, 0.0, -np.inf, -np.inf, -np.inf]
    upper = [t_b[-1], max(span, 2.5 * dt), 0.5, 1.0, np.inf, np.inf, np.inf]
    p0 = np.clip(p0, np.array(lower) + 1e-9, np.array(upper) - 1e-9)
    fit = least_squares(residual, p0, bounds=(lower, upper), x_scale="jac")
    t0, t14, tau_frac, d = fit.x[:4]
    chi2 = float(fit.fun @ fit.fun)
    dof = max(t_b.size - p0.size, 1)
    cov = np.linalg.pinv(fit.jac.T @ fit.jac) * max(chi2 / dof, 1.0)
    t0_err = float(math.sqrt(max(cov[0, 0], 0.0)))
    d_err = math.sqrt(max(cov[3, 3], 1e-30))
    return TransitEstimate(float(t0), t0_err, float(t14), float(t14 * (1 - 2 * tau_frac)), float(d),
                           float(d / d_err))


def window_mask(time_h: np.ndarray, t1_h: float, t4_h: float, pad_frac: float) -> np.ndarray:
    """True for samples inside the transit window ``[t1 - pad, t4 + pad]``, ``pad = pad_frac * (t4 - t1)``.

    Parameters
    ----------
    time_h : numpy.ndarray
        Sample times, hours.
    t1_h, t4_h : float
        First and last contact, hours.
    pad_frac : float
        Padding on each side as a fraction of the total duration.
    """
    pad = pad_frac * (t4_h - t1_h)
    return (time_h >= t1_h - pad) & (time_h <= t4_h + pad)
