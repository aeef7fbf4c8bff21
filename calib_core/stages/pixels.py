"""Per-pixel operations shared by the detector stages (ADC, dark, flat, CDS) and photometry.

Compiled helpers (numba) the stage kernels call inside their one pass over a
chunk -- usable sums, non-finite flags, dropped-frame tests, the dq tally --
and their Python side: :class:`DqTally` and the bad-input report.

Frames are passed flattened, ``(n, H*W)`` or one frame ``(H*W,)``,
C-contiguous; outputs are written in place.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from ..dq import DO_NOT_USE_MASK, DQ, DQ_DTYPE
from .errors import DataError

__all__ = [
    "FRAME_COUNTS",
    "N_DN_VALUES",
    "DqTally",
    "check_finite_input",
    "dq_tally",
    "flag_nonfinite_frame",
    "is_dropped_frame",
    "max_of",
    "not_negative",
    "note_bad_input",
    "report_bad_input",
    "usable_sum",
]

#: number of values a uint16 can take (raw DN histogram and dq tally length)
N_DN_VALUES = 1 << 16
#: slots of the counters array of the dark, flat and CDS kernels (``n_unrepaired``: dark only)
FRAME_COUNTS = ("n_bad_input", "first_bad_frame", "n_nonfinite", "n_unrepaired")

_DNU = DO_NOT_USE_MASK
_DROPPED, _NONFINITE = int(DQ.DROPPED), int(DQ.NONFINITE)


@njit
def not_negative(x):
    """``np.maximum(x, 0)`` for one float32 (NaN stays NaN)."""
    return np.float32(0.0) if x < 0 else x


@njit(fastmath={"reassoc", "nnan", "ninf", "nsz"})
def max_of(values):
    """Largest of finite non-negative float32 values (0 for none): a vectorised reduction."""
    top = np.float32(0.0)
    for x in values:
        top = max(top, x)
    return top


@njit(fastmath={"reassoc", "nsz"})
def usable_sum(data, dq):
    """Sum (float64, any order) of the values of one frame not flagged DO_NOT_USE, and their count."""
    total = 0.0
    count = 0
    for p in range(data.shape[0]):
        good = (dq[p] & _DNU) == 0
        total += np.float64(data[p]) if good else 0.0
        count += good
    return total, count


@njit(cache=True, nogil=True)
def dq_tally(dq, dq_hist):
    """Add 1-D dq values to a value histogram (zeros counted apart: most pixels are clean)."""
    n_clean = 0
    for p in range(dq.shape[0]):
        if dq[p] == 0:
            n_clean += 1
        else:
            dq_hist[dq[p]] += 1
    dq_hist[0] += n_clean


@njit
def note_bad_input(n_bad, frame, counts):
    """Add a frame's count of non-finite input on usable pixels; remember the first such frame."""
    if n_bad > 0 and counts[0] == 0:
        counts[1] = frame
    counts[0] += n_bad


@njit(nogil=True)
def flag_nonfinite_frame(data, dq):
    """``NONFINITE`` on the usable non-finite values of one frame (in place); their count."""
    n_bad = 0
    for p in range(data.shape[0]):
        bits = np.int64(dq[p])
        bad = ((bits & _DNU) == 0) & ~np.isfinite(data[p])
        dq[p] = bits | (_NONFINITE if bad else 0)
        n_bad += bad
    return n_bad


@njit
def is_dropped_frame(dq):
    """A frame lost in telemetry: ``DROPPED`` on every pixel (the first pixel screens)."""
    if (dq[0] & _DROPPED) == 0:
        return False
    for p in range(dq.shape[0]):
        if (dq[p] & _DROPPED) == 0:
            return False
    return True


class DqTally:
    """Per-bit pixel counts accumulated chunk by chunk.

    ``counts()`` equals :func:`calib_core.dq.count_bits` of the concatenated
    chunks, at the cost of one pass over each chunk; the detector-stage kernels
    add into ``hist`` directly.
    """

    def __init__(self) -> None:
        self.hist = np.zeros(N_DN_VALUES, np.int64)

    def add(self, dq: np.ndarray) -> None:
        """Add the dq bits of one chunk."""
        dq_tally(np.ascontiguousarray(dq, DQ_DTYPE).reshape(-1), self.hist)

    def counts(self) -> dict[str, int]:
        """Pixel-frames with each bit set, by bit name (zeros included)."""
        values = np.arange(N_DN_VALUES)
        return {flag.name: int(self.hist[(values & flag.value) != 0].sum()) for flag in DQ}


def report_bad_input(count: int, first_frame: int, *, stage: str, key: str, require: bool) -> int:
    """Return a count of non-finite input values on usable pixels; raise when there are some and ``require``.

    Raises
    ------
    ValueError
        Naming the stage, the input key, the count and the first frame concerned.
    """
    count = int(count)
    if count and require:
        raise DataError(f"{stage}: input '{key}' has {count} non-finite value(s) on usable pixels "
                         f"(first in frame {int(first_frame)}); validation.require_finite_inputs is true")
    return count


def check_finite_input(frames: Any, *, stage: str, key: str, require: bool) -> int:
    """Count non-finite input values on usable pixels of a chunk of frames; raise when ``require``.

    Raises
    ------
    ValueError
        Naming the stage, the input key, the count and the first frame concerned.
    """
    data, dq = frames.data, frames.dq
    finite = np.isfinite(data)
    if finite.all():
        return 0
    bad = ~finite & ((dq & DO_NOT_USE_MASK) == 0)
    first = int(frames.start + np.argmax(bad.reshape(len(data), -1).any(axis=1)))
    return report_bad_input(int(np.count_nonzero(bad)), first, stage=stage, key=key, require=require)
