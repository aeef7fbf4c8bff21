"""Cosmic rays: per-pixel temporal spikes against the pixel's neighbours in time and a robust scatter.

A value is a hit when it departs from the median of the ``h`` values before it
*and* from that of the ``h`` values after it, in the same direction, by more
than ``sigma`` robust scatters of the pixel: a transit ingress, however sharp,
departs from one side only and is never flagged.  The per-pixel statistics come
from sampled frames (:class:`PixelStats`); the test itself is the compiled
:func:`cosmic_ray_hits`, run on time chunks with a halo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numba import njit

from ...dq import DO_NOT_USE_MASK
from ...robust import MAD_TO_SIGMA, masked_median, median_of, stack_median, window_medians

__all__ = ["PixelStats", "SCALE_SAMPLES", "cosmic_ray_hits", "neighbour_offsets", "robust_scale", "sample_times",
           "side_medians", "spike_mask", "spike_threshold"]

_DNU = DO_NOT_USE_MASK

#: frames sampled per pixel for the robust (MAD) scale and the fill level
SCALE_SAMPLES = 255
#: elements per cache-sized tile of the running-median network
TILE_ELEMENTS = 1 << 16


@dataclass
class PixelStats:
    """Per-pixel statistics of a CDS series used by the cosmic-ray test."""

    level: np.ndarray       #: (m,) median of the usable values (e-): stands in for unusable ones
    var_level: np.ndarray   #: (m,) median of the usable variances (e-^2)
    scale: np.ndarray       #: (m,) robust sigma of ``x - median(neighbours)`` (e-)


def robust_scale(center: np.ndarray, neighbours: Sequence[np.ndarray], usable: np.ndarray,
                 var_level: np.ndarray) -> np.ndarray:
    """Robust sigma of values about the median of their neighbours in time.

    Parameters
    ----------
    center : ndarray, shape (s, m)
        Sampled values (e-).
    neighbours : sequence of ndarray, each (s, m)
        Their ``window - 1`` neighbours (unusable ones already replaced by the pixel level).
    usable : ndarray of bool, shape (s, m)
        Samples that count.
    var_level : ndarray, shape (m,)
        Typical propagated variance (e-^2); half its square root floors the result.

    Returns
    -------
    ndarray of float64, shape (m,)
        ``max(1.4826 * MAD(center - median(neighbours)), 0.5 * sqrt(var_level))`` (e-).
    """
    mad = masked_median(np.abs(center - stack_median(neighbours)), usable)
    return np.fmax(MAD_TO_SIGMA * mad, 0.5 * np.sqrt(np.maximum(var_level, 0.0)))


def sample_times(n: int) -> np.ndarray:
    """Up to :data:`SCALE_SAMPLES` evenly spaced indices of ``n`` times."""
    return np.unique(np.linspace(0, n - 1, min(n, SCALE_SAMPLES)).astype(np.int64))


def spike_threshold(stats: PixelStats, sigma: float) -> np.ndarray:
    """Per-pixel departure (float32, e-) that makes a cosmic-ray hit: ``sigma`` robust scatters (inf: never)."""
    return np.where(stats.scale > 0, sigma * stats.scale, np.inf).astype(np.float32)


def neighbour_offsets(window: int) -> list[int]:
    """Offsets of the ``window - 1`` neighbours of a value (the value itself excluded)."""
    h = window // 2
    return [*range(-h, 0), *range(1, h + 1)]


def side_medians(x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Medians of the ``window // 2`` values before and after each value along axis 0.

    Parameters
    ----------
    x : ndarray, shape (n, ...)
        Series along axis 0.
    window : int
        Odd window; ``h = window // 2`` neighbours on each side (the value itself excluded).

    Returns
    -------
    left, right : ndarray, same shape as ``x``
        Median of the ``h`` earlier and of the ``h`` later values (edges extended
        with the nearest value).  The first (last) value has no earlier (later)
        neighbour: there the median of the other side is used.
    """
    h = window // 2
    left = window_medians(x, range(-h, 0))
    right = window_medians(x, range(1, h + 1))
    left[0] = right[0]
    right[-1] = left[-1]
    return left, right


def spike_mask(x: np.ndarray, left: np.ndarray, right: np.ndarray, threshold: np.ndarray | float) -> np.ndarray:
    """Values departing from both of their one-sided neighbour medians, in the same direction.

    A spike (cosmic ray, outlier frame) departs from the values before *and*
    after it; a step (sharp ingress) or a ramp departs from at most one side,
    or from both in opposite directions, and is not a spike.

    Parameters
    ----------
    x, left, right : ndarray
        Values and the medians of their earlier and later neighbours
        (see :func:`side_medians`).
    threshold : ndarray or float
        Minimum deviation from both medians (broadcast against ``x``).

    Returns
    -------
    ndarray of bool
        ``x - max(left, right) > threshold`` or ``x - min(left, right) < -threshold``.
    """
    return ((x - np.maximum(left, right)) > threshold) | ((x - np.minimum(left, right)) < -threshold)


@njit
def row_of(t, offset, n):
    """Row ``t + offset`` clipped to ``0..n-1`` (series edges extended with the nearest value)."""
    return min(max(t + offset, 0), n - 1)


@njit(cache=True, nogil=True)
def cosmic_ray_hits(data, var, dq, lo, hi, level, var_level, threshold, half, filled, usable,
                    hit_t, hit_p, hit_data, hit_var, hit_old):
    """Temporal spikes of rows ``lo:hi`` of a CDS series (rows ``0:n``: those and their halo).

    The test of ``detect_cosmic_rays`` (the NumPy statement, ``tests/oracles/detector.py``) given its
    per-pixel statistics: unusable values (DO_NOT_USE, non-finite) stand in as
    the pixel's ``level`` (``filled``, ``usable``: scratch arrays of the series'
    shape); a usable value is a hit when it departs from the median of the
    ``half`` values before it and from that of the ``half`` values after it, in
    the same direction, by more than ``threshold`` (the first row uses its
    later side for both, the last row its earlier side).  Row by row, a cheap
    bound -- a side's median lies within its minimum and maximum, computed in
    vectorised passes over the pixels -- leaves only a few candidates whose
    medians are evaluated.  Each hit's time, pixel, replacement (median of its
    ``2 * half`` neighbours), replacement variance (median of their variances,
    ``var_level`` for unusable ones) and old value go to the ``hit_*`` arrays.
    Returns the number of hits (when it exceeds their length, the caller
    repeats with more room).
    """
    n, npx = data.shape
    for t in range(n):
        for p in range(npx):
            x = data[t, p]
            ok = ((np.int64(dq[t, p]) & _DNU) == 0) & np.isfinite(x)
            usable[t, p] = ok
            filled[t, p] = x if ok else level[p]
    bounds = np.empty((4, npx), np.float32)          # min, max of the earlier side; min, max of the later side
    rows = np.empty(2 * half, np.int64)
    vals = np.empty(2 * half, np.float32)
    n_hit = 0
    for t in range(lo, hi):
        l_side = 1 if t == 0 else -1                 # the first row has no earlier values
        r_side = l_side if t == n - 1 else 1         # the last row has no later ones
        for k in range(half):
            rows[k] = row_of(t, l_side * (k + 1), n)
            rows[half + k] = row_of(t, r_side * (k + 1), n)
        for s in range(2):
            first = filled[rows[s * half]]
            for p in range(npx):
                bounds[2 * s, p] = first[p]
                bounds[2 * s + 1, p] = first[p]
            for k in range(1, half):
                row = filled[rows[s * half + k]]
                for p in range(npx):
                    bounds[2 * s, p] = min(bounds[2 * s, p], row[p])
                    bounds[2 * s + 1, p] = max(bounds[2 * s + 1, p], row[p])
        for p in range(npx):
            x, thr = filled[t, p], threshold[p]
            maybe = usable[t, p] & (((x - bounds[0, p] > thr) & (x - bounds[2, p] > thr))
                                    | ((x - bounds[1, p] < -thr) & (x - bounds[3, p] < -thr)))
            if not maybe:
                continue
            for k in range(2 * half):
                vals[k] = filled[rows[k], p]
            med_l, med_r = median_of(vals[:half], half), median_of(vals[half:], half)
            if not ((x - max(med_l, med_r) > thr) | (x - min(med_l, med_r) < -thr)):
                continue
            if n_hit < hit_t.shape[0]:
                for k in range(2 * half):
                    vals[k] = filled[row_of(t, k - half + (k >= half), n), p]
                hit_data[n_hit] = median_of(vals, 2 * half)
                for k in range(2 * half):
                    u = row_of(t, k - half + (k >= half), n)
                    vals[k] = var[u, p] if usable[u, p] else var_level[p]
                hit_var[n_hit] = median_of(vals, 2 * half)
                hit_t[n_hit], hit_p[n_hit], hit_old[n_hit] = t, p, x
            n_hit += 1
    return n_hit
