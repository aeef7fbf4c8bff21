"""Robust statistics, one dialect: astropy's semantics everywhere.

* :data:`MAD_TO_SIGMA`, :func:`mad_std`, :func:`sigma_clip` are astropy's
  (``astropy.stats``); every stage's MAD-based scatter uses them.
* :func:`sigma_clip_stats` is the **fast path** of
  ``astropy.stats.sigma_clipped_stats(cenfunc="median", stdfunc="std")`` applied to
  every row of an array at once: a clipped set is always a contiguous run of the
  sorted values, so each iteration moves two indices per row after one sort
  (tested against astropy row by row).
* One median: :func:`median_of` (compiled, the median of a small buffer,
  mean of the two middle values for an even count -- numpy's convention) serves
  the compiled detector kernels and the running medians :func:`window_medians`
  and :func:`stack_median`; :func:`masked_median` is its masked, vectorised form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.stats import mad_std, sigma_clip
from numba import njit

__all__ = [
    "MAD_TO_SIGMA",
    "ClippedStats",
    "mad_std",
    "masked_median",
    "median_of",
    "sigma_clip",
    "sigma_clip_stats",
    "stack_median",
    "window_medians",
]

#: ``MAD_TO_SIGMA * MAD`` estimates a Gaussian standard deviation (astropy's ``mad_std`` factor, 1 / Phi^-1(3/4))
MAD_TO_SIGMA = 1.482602218505602


@dataclass
class ClippedStats:
    """Sigma-clipped statistics along the last axis (NaN where nothing is left)."""

    median: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray       #: number of values kept
    kept: np.ndarray        #: bool, same shape as the input: value survived the clipping


def sigma_clip_stats(values: np.ndarray, *, sigma: float = 3.0, maxiters: int = 10) -> ClippedStats:
    """Sigma-clipped median, mean, std and count along the last axis (a compiled kernel, row by row).

    Computes, with the same floating-point operations in the same order, what
    ``tests/oracles/robust.py:sigma_clip_stats_numpy`` states for all rows at once (tested equal,
    bit for bit): each row is sorted once, its centred prefix sums give the
    mean and std of any contiguous run, and the clipping moves two indices.
    A row that stopped changing stops iterating (the NumPy form iterates until
    every row stopped: one more iteration of a converged row changes nothing).

    Parameters
    ----------
    values : ndarray, shape (..., m)
        Samples; NaN marks unusable entries.
    sigma : float
        Clipping threshold in units of the standard deviation (both sides).
    maxiters : int
        Maximum number of clipping iterations (>= 0).

    Returns
    -------
    ClippedStats
        Same semantics as ``astropy.stats.sigma_clipped_stats`` with
        ``cenfunc="median", stdfunc="std"`` applied independently to every row.
    """
    values = np.asarray(values, np.float64)
    lead, m = values.shape[:-1], values.shape[-1]
    k = int(np.prod(lead, dtype=np.int64))
    rows = np.ascontiguousarray(values.reshape(k, m))
    med, mean, std = np.empty(k), np.empty(k), np.empty(k)
    cnt = np.empty(k, np.int64)
    kept = np.zeros((k, m), bool)
    if m == 0:
        med[:], mean[:], std[:], cnt[:] = np.nan, np.nan, np.nan, 0
    else:
        _clip_rows(rows, float(sigma), int(maxiters), med, mean, std, cnt, kept)
    return ClippedStats(med.reshape(lead), mean.reshape(lead), std.reshape(lead), cnt.reshape(lead),
                        kept.reshape(values.shape))


@njit(cache=True, nogil=True)
def _count_below(srt, x, inclusive):
    """Number of leading values of the sorted ``srt`` (NaNs last) that are ``< x`` (``<= x`` if inclusive)."""
    a, b = 0, srt.shape[0]
    while a < b:
        mid = (a + b) // 2
        v = srt[mid]
        if (v <= x) if inclusive else (v < x):
            a = mid + 1
        else:
            b = mid
    return a


@njit(cache=True, nogil=True)
def _clip_rows(rows, sigma, maxiters, med_out, mean_out, std_out, cnt_out, kept_out):  # pragma: no cover - compiled
    k, m = rows.shape
    csum = np.empty(m + 1)
    csq = np.empty(m + 1)
    for r in range(k):
        row = rows[r]
        srt = np.sort(row)                         # NaNs sort last, as numpy's
        n_valid = 0
        n_nan = 0
        for j in range(m):
            if np.isfinite(srt[j]):
                n_valid += 1
            elif np.isnan(srt[j]):
                n_nan += 1
        shift = srt[min(max(n_valid - 1, 0) // 2, m - 1)]
        csum[0] = 0.0
        csq[0] = 0.0
        for j in range(m):
            c = srt[j] - shift if np.isfinite(srt[j]) else 0.0
            csum[j + 1] = csum[j] + c
            csq[j + 1] = csq[j] + c * c
        lo, hi = 0, n_valid
        med = mean_c = std = 0.0
        for it in range(maxiters + 1):
            cnt = hi - lo
            safe = max(cnt, 1)
            med = 0.5 * (srt[min(max(lo + (safe - 1) // 2, 0), m - 1)] + srt[min(max(lo + safe // 2, 0), m - 1)])
            s1 = csum[min(max(hi, 0), m)] - csum[min(max(lo, 0), m)]
            s2 = csq[min(max(hi, 0), m)] - csq[min(max(lo, 0), m)]
            mean_c = s1 / safe
            std = np.sqrt(max(s2 / safe - mean_c * mean_c, 0.0))
            if it == maxiters:
                break
            new_lo = max(lo, _count_below(srt, med - sigma * std, False))
            new_hi = max(min(hi, _count_below(srt, med + sigma * std, True)), new_lo)
            if new_lo == lo and new_hi == hi:
                break
            lo, hi = new_lo, new_hi
        cnt = hi - lo
        if cnt == 0:
            med_out[r] = np.nan
            mean_out[r] = np.nan
            std_out[r] = np.nan
        else:
            med_out[r] = med
            mean_out[r] = mean_c + shift
            std_out[r] = std
        cnt_out[r] = cnt
        if cnt == 0:
            continue
        if n_valid + n_nan == m:
            # no infinity: a clipped run never splits equal values (its ends are counts of < and <=),
            # so the kept values are those between its first and last
            first, last = srt[lo], srt[hi - 1]
            for j in range(m):
                kept_out[r, j] = first <= row[j] <= last
        else:                                      # infinities: the first run may split ties, use the order
            order = np.argsort(row)
            for j in range(lo, hi):
                kept_out[r, order[j]] = True


@njit(cache=True, nogil=True)
def median_of(values, count):
    """Median of ``values[:count]``, sorted in place (mean of the two middle values for an even count).

    Insertion sort for the short buffers of the detector kernels, a full sort beyond 32 values.
    """
    if count > 32:
        values[:count].sort()
    else:
        for a in range(1, count):
            x = values[a]
            b = a - 1
            while b >= 0 and values[b] > x:
                values[b + 1] = values[b]
                b -= 1
            values[b + 1] = x
    return np.float32(0.5) * (values[(count - 1) // 2] + values[count // 2])


@njit(cache=True, nogil=True)
def _window_medians(x, offsets, out):
    n, m = x.shape
    k = offsets.shape[0]
    buf = np.empty(k, x.dtype)
    for t in range(n):
        for p in range(m):
            for j in range(k):
                buf[j] = x[min(max(t + offsets[j], 0), n - 1), p]
            out[t, p] = median_of(buf, k)


def window_medians(x: np.ndarray, offsets) -> np.ndarray:
    """Median along axis 0 of ``x[t + o]`` over the given offsets ``o`` (edges extended with the nearest value).

    With ``offsets = range(-h, h + 1)`` it equals
    ``scipy.ndimage.median_filter(x, size=(2h + 1, 1, ...), mode="nearest")`` for an odd count;
    an even count gives the mean of the two middle values.

    Parameters
    ----------
    x : ndarray, shape (n, ...)
        Series along axis 0 (e.g. time x pixels); float32 or float64.
    offsets : sequence of int
        Relative positions taken into each median.

    Returns
    -------
    ndarray, same shape and dtype as ``x``
    """
    x = np.asarray(x)
    flat = np.ascontiguousarray(x.reshape(x.shape[0], -1))
    out = np.empty_like(flat)
    _window_medians(flat, np.asarray(list(offsets), np.int64), out)
    return out.reshape(x.shape)


@njit(cache=True, nogil=True)
def _stack_median(stack, out):
    k, n = stack.shape
    buf = np.empty(k, stack.dtype)
    for p in range(n):
        for j in range(k):
            buf[j] = stack[j, p]
        out[p] = median_of(buf, k)


def stack_median(values) -> np.ndarray:
    """Elementwise median of equally shaped arrays (mean of the two middle values for an even count)."""
    stack = np.stack([np.asarray(v) for v in values])
    flat = np.ascontiguousarray(stack.reshape(stack.shape[0], -1))
    out = np.empty(flat.shape[1], flat.dtype)
    _stack_median(flat, out)
    return out.reshape(stack.shape[1:])


def masked_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Median along axis 0 of the entries where ``mask`` is True (NaN where none).

    Parameters
    ----------
    values : ndarray, shape (n, m)
    mask : ndarray of bool, shape (n, m)

    Returns
    -------
    ndarray of float64, shape (m,)
    """
    ordered = np.sort(np.where(mask, values, np.inf), axis=0)
    count = mask.sum(axis=0)
    lo = np.take_along_axis(ordered, (np.maximum(count - 1, 0) // 2)[None], axis=0)[0]
    hi = np.take_along_axis(ordered, np.minimum(count // 2, len(values) - 1)[None], axis=0)[0]
    return np.where(count > 0, 0.5 * (lo.astype(np.float64) + hi), np.nan)
