"""Oracle of the compiled robust statistics: the NumPy statement that ``calib_core.robust.sigma_clip_stats``
must reproduce bit for bit (only the tests call it)."""

from __future__ import annotations

import numpy as np

from calib_core.robust import ClippedStats


def _take(sorted_vals: np.ndarray, idx: np.ndarray) -> np.ndarray:
    idx = np.clip(idx, 0, sorted_vals.shape[-1] - 1)
    return np.take_along_axis(sorted_vals, idx[..., None], axis=-1)[..., 0]


def sigma_clip_stats_numpy(values: np.ndarray, *, sigma: float = 3.0, maxiters: int = 10) -> ClippedStats:
    """Sigma-clipped median, mean, std and count along the last axis, every row at once in NumPy.

    The statement :func:`calib_core.robust.sigma_clip_stats` (compiled) must reproduce bit for bit; same
    parameters and result.
    """
    values = np.asarray(values, np.float64)
    order = np.argsort(values, axis=-1)            # NaNs sort last
    srt = np.take_along_axis(values, order, axis=-1)
    n_valid = np.count_nonzero(np.isfinite(srt), axis=-1)
    shift = _take(srt, np.maximum(n_valid - 1, 0) // 2)   # centring for stable sums
    centred = np.where(np.isfinite(srt), srt - shift[..., None], 0.0)
    zeros = np.zeros(srt.shape[:-1] + (1,))
    csum = np.concatenate([zeros, np.cumsum(centred, axis=-1)], axis=-1)
    csq = np.concatenate([zeros, np.cumsum(centred * centred, axis=-1)], axis=-1)
    lo = np.zeros_like(n_valid)
    hi = n_valid.copy()

    def stats(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, ...]:
        cnt = hi - lo
        safe = np.maximum(cnt, 1)
        med = 0.5 * (_take(srt, lo + (safe - 1) // 2) + _take(srt, lo + safe // 2))
        s1 = _take(csum, hi) - _take(csum, lo)
        s2 = _take(csq, hi) - _take(csq, lo)
        mean_c = s1 / safe
        std = np.sqrt(np.maximum(s2 / safe - mean_c * mean_c, 0.0))
        return med, mean_c + shift, std, cnt

    for _ in range(maxiters):
        med, _mean, std, cnt = stats(lo, hi)
        lower = (med - sigma * std)[..., None]
        upper = (med + sigma * std)[..., None]
        new_lo = np.maximum(lo, np.count_nonzero(srt < lower, axis=-1))
        new_hi = np.minimum(hi, np.count_nonzero(srt <= upper, axis=-1))
        new_hi = np.maximum(new_hi, new_lo)
        if np.array_equal(new_lo, lo) and np.array_equal(new_hi, hi):
            break
        lo, hi = new_lo, new_hi
    med, mean, std, cnt = stats(lo, hi)
    empty = cnt == 0
    rank = np.arange(srt.shape[-1])
    kept_sorted = (rank >= lo[..., None]) & (rank < hi[..., None])
    kept = np.zeros_like(kept_sorted)
    np.put_along_axis(kept, order, kept_sorted, axis=-1)
    nan = np.where(empty, np.nan, 1.0)
    return ClippedStats(med * nan, mean * nan, std * nan, cnt, kept)
