"""The flat stage's compiled per-chunk pass: divide by the flat, flag dead and bad-flat pixels."""

from __future__ import annotations

import numpy as np
from numba import njit

from ...dq import DO_NOT_USE_MASK, DQ
from ..pixels import dq_tally, note_bad_input

__all__ = ["flat_frames", "inverse"]

_DNU = DO_NOT_USE_MASK
_NONFINITE = int(DQ.NONFINITE)


def inverse(flat: np.ndarray) -> np.ndarray:
    """``1 / flat`` computed in float64, as float32 (the factor every frame is multiplied by)."""
    return (1.0 / np.asarray(flat, np.float64)).astype(np.float32)


@njit(cache=True, nogil=True)
def flat_frames(data, var, dq, first, inv, inv2, static, counts, dq_hist):
    """Flat division in place: ``data *= inv``, ``var *= inv2`` (``inv**2``), ``dq |= static``; NONFINITE; tally.

    ``counts`` as in :func:`dark_frames` (slots 0-2).
    """
    n, npx = data.shape
    for i in range(n):
        n_bad = n_nonfinite = 0
        for p in range(npx):
            bits = np.int64(dq[i, p])
            x = data[i, p]
            n_bad += ((bits & _DNU) == 0) & ~np.isfinite(x)
            x *= inv[p]
            bits |= static[p]
            bad = ((bits & _DNU) == 0) & ~np.isfinite(x)
            n_nonfinite += bad
            data[i, p] = x
            var[i, p] *= inv2[p]
            dq[i, p] = bits | (_NONFINITE if bad else 0)
        note_bad_input(n_bad, first + i, counts)
        counts[2] += n_nonfinite
        dq_tally(dq[i], dq_hist)
