"""The CDS stage's compiled difference pass: each read pair differenced where it is held, with its variance."""

from __future__ import annotations

import numpy as np
from numba import njit

from ...dq import DO_NOT_USE_MASK, DQ
from ..pixels import is_dropped_frame, not_negative, note_bad_input

__all__ = ["cds_pairs"]

_DNU = DO_NOT_USE_MASK
_NONFINITE, _UNPAIRED = int(DQ.NONFINITE), int(DQ.UNPAIRED)


@njit(cache=True, nogil=True)
def cds_pairs(sig_data, sig_var, sig_dq, sig_rows, first_data, first_var, first_dq, first_rows, has_first, read_var2,
              static_good, width, first_out, data, var, dq, paired, row_flux, counts, gaps):
    """Correlated double sampling of read pairs ``j``: signal read ``sig_*[sig_rows[j]]``, first ``first_*[first_rows[j]]``.

    The reads are taken where they are held (a buffered chunk, a memory map), by
    row, so no gathered copy of the frames is ever made.

    ``data = signal - first``, ``var = max(signal_var - first_var, 0) + read_var2``,
    ``dq = signal | first`` (without a first read, ``has_first[j]`` False: the
    signal's dq).  A pair without a first read or with a dropped read is
    unpaired: NaN, ``UNPAIRED``, ``paired[j]`` False.  Non-finite input on
    usable pixels is counted (``counts[0]``, first output frame ``counts[1]``);
    non-finite output on usable pixels is flagged ``NONFINITE`` (``counts[2]``).
    ``row_flux[j, r]`` sums (float64) the usable values of the ``static_good``
    pixels of row ``r`` of a paired frame; the statically good but unusable
    ones are written to ``gaps`` as ``(frame, pixel)`` rows.  Returns their
    number (when it exceeds ``len(gaps)``, the caller repeats with more room).
    """
    m, npx = data.shape
    n_gap = 0
    nan = np.float32(np.nan)
    for j in range(m):
        js, jf = sig_rows[j], first_rows[j]
        ok = has_first[j] and not is_dropped_frame(sig_dq[js]) and not is_dropped_frame(first_dq[jf])
        paired[j] = ok
        keep_first = np.int64(-1) if has_first[j] else np.int64(0)
        unpaired = 0 if ok else _UNPAIRED
        n_bad = n_nonfinite = n_unusable = 0
        for p in range(npx):
            sb, fb = np.int64(sig_dq[js, p]), np.int64(first_dq[jf, p])
            s, f = sig_data[js, p], first_data[jf, p]
            n_bad += (((sb & _DNU) == 0) & ~np.isfinite(s)) + (((fb & _DNU) == 0) & ~np.isfinite(f))
            x = s - f if ok else nan
            bits = sb | (fb & keep_first) | unpaired
            bad = ((bits & _DNU) == 0) & ~np.isfinite(x)
            bits |= _NONFINITE if bad else 0
            n_nonfinite += bad
            n_unusable += static_good[p] & ((bits & _DNU) != 0)
            data[j, p] = x
            var[j, p] = not_negative(sig_var[js, p] - first_var[jf, p]) + read_var2[p] if ok else nan
            dq[j, p] = bits
        note_bad_input(n_bad, first_out + j, counts)
        counts[2] += n_nonfinite
        if not ok:
            continue
        for r in range(npx // width):
            total = 0.0
            for c in range(r * width, (r + 1) * width):
                total += np.float64(data[j, c]) if static_good[c] & ((dq[j, c] & _DNU) == 0) else 0.0
            row_flux[j, r] = total
        if n_unusable:
            for p in range(npx):
                if static_good[p] and (dq[j, p] & _DNU) != 0:
                    if n_gap < gaps.shape[0]:
                        gaps[n_gap, 0] = first_out + j
                        gaps[n_gap, 1] = p
                    n_gap += 1
    return n_gap
