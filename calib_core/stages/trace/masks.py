"""Usable samples, robust temporal outliers, the white light and the out-of-transit spectrum of a series."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.ndimage import median_filter

from ...dq import DQ
from ...robust import mad_std, sigma_clip

__all__ = ["usable_mask", "flag_outliers", "white_light", "oot_spectrum", "nanmedian", "mad_std_columns"]


def usable_mask(flux: np.ndarray, var: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samples usable for fitting, and the flag bits to add.

    Parameters
    ----------
    flux, var : numpy.ndarray
        (B, C) electrons and electrons**2.
    flags : numpy.ndarray
        (B, C) upstream flags (nonzero = do not use).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``good`` (B, C) bool and the uint16 bits ``DQ.NONFINITE`` where the flux or
        the variance is NaN/Inf or the variance is negative.
    """
    bad_value = ~np.isfinite(flux) | ~np.isfinite(var) | (var < 0)
    bits = np.where(bad_value, np.uint16(DQ.NONFINITE), np.uint16(0)).astype(np.uint16)
    return (flags == 0) & ~bad_value, bits


def _forward_fill(values: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Replace unusable samples by the previous usable one along axis 0 (then the next one)."""
    n = values.shape[0]
    idx = np.where(good, np.arange(n)[:, None], -1)
    np.maximum.accumulate(idx, axis=0, out=idx)
    first = np.argmax(good, axis=0)
    idx = np.where(idx < 0, first[None, :], idx)
    return np.take_along_axis(values, idx, axis=0)


def flag_outliers(flux: np.ndarray, good: np.ndarray, window: int, sigma: float, maxiters: int) -> np.ndarray:
    """Robust temporal outliers per channel.

    The residual from a centred running median of ``window`` frames follows the
    transit (ingress/egress are much longer than the window), so a low
    in-transit frame is not an outlier; residuals beyond ``sigma`` MAD-sigmas
    are clipped iteratively (astropy ``sigma_clip``).

    Parameters
    ----------
    flux : numpy.ndarray
        (B, C) flux.
    good : numpy.ndarray
        (B, C) usable samples (others are ignored and never flagged here).
    window : int
        Odd running-median length, frames.
    sigma : float
        Clipping threshold in robust sigmas.
    maxiters : int
        Clipping iterations.

    Returns
    -------
    numpy.ndarray
        (B, C) bool, True for new outliers.
    """
    n_frames = flux.shape[0]
    filled = _forward_fill(np.where(good, flux, 0.0), good)
    filled[:, ~good.any(axis=0)] = 0.0
    size = max(min(window, n_frames if n_frames % 2 else n_frames - 1), 1)
    smooth = median_filter(filled, size=(size, 1), mode="nearest")
    resid = np.ma.masked_array(flux - smooth, mask=~good)
    clipped = sigma_clip(resid, sigma=sigma, maxiters=maxiters, cenfunc="median", stdfunc="mad_std", axis=0)
    return np.ma.getmaskarray(clipped) & good


def white_light(flux: np.ndarray, var: np.ndarray, good: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-variance weighted mean of the median-normalised channels.

    Parameters
    ----------
    flux, var : numpy.ndarray
        (B, C) electrons and electrons**2.
    good : numpy.ndarray
        (B, C) usable samples.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        White flux (B,) (about 1) and its inverse variance (B,) (0 where no channel is usable).
    """
    level = nanmedian(np.where(good, flux, np.nan), axis=0)
    level = np.where(np.isfinite(level) & (level > 0), level, np.nan)
    rel = flux / level
    rel_var = var / level ** 2
    typical = nanmedian(np.where(good, rel_var, np.nan), axis=0)
    weight = np.where(good & np.isfinite(typical)[None, :], 1.0 / np.where(typical > 0, typical, np.inf), 0.0)
    total = weight.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        white = np.where(total > 0, (weight * np.where(weight > 0, rel, 0.0)).sum(axis=1) / total, np.nan)
        wvar = (weight ** 2 * np.where(weight > 0, rel_var, 0.0)).sum(axis=1) / total ** 2
        inv = np.where((total > 0) & (wvar > 0), 1.0 / wvar, 0.0)
    return white, inv


def nanmedian(a: np.ndarray, axis: int) -> np.ndarray:
    """``numpy.nanmedian`` without the all-NaN-slice warning (such slices give NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(a, axis=axis)


def mad_std_columns(a: np.ndarray) -> np.ndarray:
    """Robust (MAD) standard deviation of each column ignoring NaN (NaN for an all-NaN column)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return mad_std(a, axis=0, ignore_nan=True)


def oot_spectrum(flux: np.ndarray, good: np.ndarray, oot: np.ndarray) -> np.ndarray:
    """Median out-of-transit flux per channel (C,), NaN for a channel with no usable frame."""
    return nanmedian(np.where(good & oot[:, None], flux, np.nan), axis=0)
