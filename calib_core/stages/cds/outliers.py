"""Whole frames whose flux spikes away from their neighbours in time (the temporal filter)."""

from __future__ import annotations

import numpy as np

from ...robust import MAD_TO_SIGMA, window_medians
from .cosmic_rays import neighbour_offsets, side_medians, spike_mask

__all__ = ["temporal_outliers"]


def temporal_outliers(series: np.ndarray, valid: np.ndarray, *, window: int = 31, sigma: float = 5.0) -> np.ndarray:
    """Frames whose flux spikes away from its neighbours by more than ``sigma`` robust sigmas.

    Same test as :func:`detect_cosmic_rays`, on per-frame fluxes: a frame is an
    outlier when it departs from the medians of the frames before and after it
    (same direction), so the transit is never flagged.

    Parameters
    ----------
    series : ndarray, shape (n,) or (n, r)
        Per-frame flux (one or several statistics per frame, e.g. per row).
    valid : ndarray of bool, shape (n,)
        Frames to consider (the others are skipped, not bridged by zeros).
    window : int
        Odd window, ``window // 2`` frames on each side.
    sigma : float
        Threshold in robust sigmas of the residuals (per column).

    Returns
    -------
    ndarray of bool, shape (n,)
        True for outlier frames (any column beyond the threshold).
    """
    s = np.asarray(series, np.float64).reshape(len(series), -1)
    out = np.zeros(len(s), bool)
    live = np.flatnonzero(valid)
    if live.size < 3:
        return out
    values = s[live]
    left, right = side_medians(values, window)
    both = window_medians(values, neighbour_offsets(window))
    scale = MAD_TO_SIGMA * np.median(np.abs(values - both), axis=0)
    threshold = np.where(scale > 0, sigma * scale, np.inf)
    out[live] = spike_mask(values, left, right, threshold[None]).any(axis=1)
    return out
