"""The dark stage's compiled per-chunk pass: dark subtraction, hot-pixel flags and neighbour-median repair."""

from __future__ import annotations

import numpy as np
from numba import njit

from ...dq import DO_NOT_USE_MASK, DQ
from ...robust import median_of
from ..pixels import dq_tally, flag_nonfinite_frame, note_bad_input, usable_sum

__all__ = ["dark_frames"]

_DNU = DO_NOT_USE_MASK
_DROPPED, _HOT, _REPAIRED = int(DQ.DROPPED), int(DQ.HOT), int(DQ.REPAIRED)


@njit(cache=True, nogil=True)
def dark_frames(data, var, dq, first, dark, exptime, hot_bits, rep_px, nbr_px, nbr_valid, first_read,
                frame_mean, counts, dq_hist):
    """Dark subtraction, hot-pixel flags and neighbour-median repair of frames ``first`` onwards, in place.

    ``data -= dark * exptime[i]`` (``exptime`` empty: ``data -= dark``);
    ``dq |= hot_bits`` (``HOT`` on flagged hot pixels); each pixel of ``rep_px``
    takes the median of its valid neighbours ``nbr_px`` (``nbr_valid``, not
    flagged DO_NOT_USE in the frame, finite) for data and variance
    (``REPAIRED``), or is flagged ``HOT`` when none is valid (``counts[3]``
    counts those of live frames).  Then ``NONFINITE`` on usable pixels
    (``counts[2]``), the usable mean of first reads (``frame_mean[i]``, NaN
    for other reads) and the dq tally.  Non-finite input on usable pixels is
    counted in ``counts[0]`` (first frame ``counts[1]``).
    """
    n, npx = data.shape
    scale = exptime.shape[0] > 0
    buf = np.empty(nbr_px.shape[1], np.float32)
    vbuf = np.empty(nbr_px.shape[1], np.float32)
    for i in range(n):
        t = exptime[i] if scale else np.float32(1.0)
        n_bad = 0
        for p in range(npx):
            x = data[i, p]
            bits = np.int64(dq[i, p])
            n_bad += ((bits & _DNU) == 0) & ~np.isfinite(x)
            data[i, p] = x - dark[p] * t
            dq[i, p] = bits | hot_bits[p]
        note_bad_input(n_bad, first + i, counts)
        # donors are never repaired pixels (nbr_valid excludes them): the order of repairs does not matter
        for k in range(rep_px.shape[0]):
            nd = nv = 0
            for j in range(nbr_px.shape[1]):
                q = nbr_px[k, j]
                if nbr_valid[k, j] and (dq[i, q] & _DNU) == 0:
                    if np.isfinite(data[i, q]):
                        buf[nd] = data[i, q]
                        nd += 1
                    if np.isfinite(var[i, q]):
                        vbuf[nv] = var[i, q]
                        nv += 1
            p = rep_px[k]
            if nd > 0:
                data[i, p] = median_of(buf, nd)
                var[i, p] = median_of(vbuf, nv) if nv > 0 else np.float32(np.nan)
                dq[i, p] |= _REPAIRED
            else:
                dq[i, p] |= _HOT
                if (dq[i, p] & _DROPPED) == 0:
                    counts[3] += 1
        counts[2] += flag_nonfinite_frame(data[i], dq[i])
        dq_tally(dq[i], dq_hist)
        if first_read[i]:
            total, n_good = usable_sum(data[i], dq[i])
            frame_mean[i] = total / n_good if n_good > 0 else np.nan
        else:
            frame_mean[i] = np.nan
