"""Time averaging of light curves: inverse-variance time bins and the red-noise factor beta."""

from __future__ import annotations

import math
import warnings

import numpy as np

__all__ = ["time_bin", "red_noise_beta"]


def time_bin(time: np.ndarray, y: np.ndarray, w: np.ndarray, nbins: int) -> tuple[np.ndarray, ...]:
    """Inverse-variance weighted means in equal-width time bins.

    Parameters
    ----------
    time : numpy.ndarray
        (B,) sample times (any unit).
    y : numpy.ndarray
        (B, C) values.
    w : numpy.ndarray
        (B, C) weights ``1/sigma**2``; 0 marks an unusable sample (its value is ignored,
        NaN allowed).
    nbins : int
        Number of equal-width bins over ``[min(time), max(time)]`` (last bin closed).

    Returns
    -------
    tuple of numpy.ndarray
        ``(t_b, y_b, w_b, width)``: mean time of the samples of each occupied bin (K,),
        weighted means (K, C) (NaN where no usable sample), summed weights (K, C)
        (``1/sqrt(w_b)`` is the propagated error) and the bin width (same unit as time).
        Bins holding no sample at all are dropped (K <= nbins).
    """
    time = np.asarray(time, np.float64)
    order = np.argsort(time, kind="stable")
    t = time[order]
    width = (t[-1] - t[0]) / nbins if t[-1] > t[0] else 1.0
    idx = np.clip(((t - t[0]) / width).astype(np.int64), 0, nbins - 1)
    starts = np.flatnonzero(np.diff(np.concatenate(([-1], idx))))
    ws = np.where(w[order] > 0, w[order], 0.0)
    ys = np.where(ws > 0, y[order], 0.0)
    sw = np.add.reduceat(ws, starts, axis=0)
    swy = np.add.reduceat(ws * ys, starts, axis=0)
    counts = np.diff(np.concatenate((starts, [t.size])))
    t_b = np.add.reduceat(t, starts) / counts
    with np.errstate(invalid="ignore", divide="ignore"):
        y_b = np.where(sw > 0, swy / sw, np.nan)
    return t_b, y_b, sw, width


def red_noise_beta(z: np.ndarray, dt_h: float, scales_h: tuple[float, float] = (1 / 6, 0.5),
                   n_scales: int = 6) -> np.ndarray:
    """Time-averaging red-noise factor beta (Pont et al. 2006; Winn et al. 2008) per column.

    For block sizes ``n`` spanning ``scales_h`` (10-30 min by default, the
    ingress time scale), the scatter of block means of the normalised residuals
    is compared with the white-noise expectation ``sigma_1 / sqrt(n) *
    sqrt(K / (K - 1))``; beta is the median ratio over block sizes, floored at 1.

    Parameters
    ----------
    z : numpy.ndarray
        (M, C) residuals divided by their errors, time ordered, NaN where unusable.
    dt_h : float
        Sampling step, hours.
    scales_h : (float, float)
        Shortest and longest block duration, hours.
    n_scales : int
        Number of block sizes tried.

    Returns
    -------
    numpy.ndarray
        (C,) beta >= 1 (1 when the series is too short for blocks of >= 2 samples).
    """
    m, c = z.shape
    sizes = np.unique(np.round(np.geomspace(scales_h[0], scales_h[1], n_scales) / max(dt_h, 1e-12)).astype(int))
    sizes = sizes[(sizes >= 2) & (m // np.maximum(sizes, 1) >= 4)]
    if sizes.size == 0:
        return np.ones(c)
    ratios = np.empty((sizes.size, c))
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        sigma1 = np.nanstd(z, axis=0)
        for r, n in enumerate(sizes):
            blocks = m // n
            means = np.nanmean(z[: blocks * n].reshape(blocks, n, c), axis=1)
            ratios[r] = np.nanstd(means, axis=0) / (sigma1 / math.sqrt(n) * math.sqrt(blocks / (blocks - 1)))
        beta = np.nanmedian(ratios, axis=0)
    return np.where(np.isfinite(beta), np.maximum(beta, 1.0), 1.0)
