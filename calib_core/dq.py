"""Data-quality bits carried by every detector-stage frame (``dq`` plane, uint16).

A bit means the same thing in every stage, in the stored ``dq.npy`` files and in
the app.  A pixel is *good* when none of the bits in :data:`DO_NOT_USE_MASK` is set.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["DQ", "DO_NOT_USE_MASK", "DQ_DTYPE", "count_bits", "decode", "dropped_frames"]

DQ_DTYPE = np.uint16


class DQ(enum.IntFlag):
    """Named data-quality bits (JWST-style: one bit per reason)."""

    DEAD = 1 << 0            #: dead pixel (calibration ``dead`` map)
    HOT = 1 << 1             #: hot (or cold) pixel from sigma-clipping the dark map
    SATURATED = 1 << 2       #: read at or above the ADC ceiling / full well
    COSMIC_RAY = 1 << 3      #: temporal outlier rejected as a cosmic-ray hit
    UNPAIRED = 1 << 4        #: read without a CDS partner (counted, not used)
    DROPPED = 1 << 5         #: read missing from telemetry (all-zero DN row)
    ADC_FLOOR = 1 << 6       #: raw value at the ADC floor (0 DN)
    NONLINEAR = 1 << 7       #: outside the linearity correction's valid range
    BAD_FLAT = 1 << 8        #: flat value not usable (<= min_flat or non-finite)
    NONFINITE = 1 << 9       #: value became NaN/Inf in a stage
    REPAIRED = 1 << 10       #: value replaced by interpolation (kept usable, flagged)
    OUTLIER = 1 << 11        #: frame-level temporal outlier (temporal filter)
    REFERENCE = 1 << 12      #: reference pixel used for common-mode correction


#: bits that make a pixel unusable for photometry (REPAIRED / REFERENCE are informational)
DO_NOT_USE_MASK = int(
    DQ.DEAD | DQ.HOT | DQ.SATURATED | DQ.COSMIC_RAY | DQ.UNPAIRED | DQ.DROPPED
    | DQ.ADC_FLOOR | DQ.NONLINEAR | DQ.BAD_FLAT | DQ.NONFINITE | DQ.OUTLIER
)


def count_bits(dq: np.ndarray) -> dict[str, int]:
    """Number of pixels with each bit set (all names, zeros included)."""
    dq = np.asarray(dq)
    return {flag.name: int(np.count_nonzero(dq & flag.value)) for flag in DQ}


def decode(value: int) -> list[str]:
    """Names of the bits set in one dq value."""
    return [flag.name for flag in DQ if value & flag.value]


def dropped_frames(dq: np.ndarray) -> np.ndarray:
    """True for frames whose every pixel carries ``DROPPED`` (telemetry drop).

    Only frames whose first pixel is ``DROPPED`` are read whole, so screening a
    chunk (or a memory-mapped plane) costs one pixel per frame.
    """
    first = np.asarray(dq[(slice(None),) + (0,) * (np.ndim(dq) - 1)])
    out = np.zeros(len(first), bool)
    candidates = np.flatnonzero((first & int(DQ.DROPPED)) != 0)
    if candidates.size:
        out[candidates] = ((np.asarray(dq[candidates]) & int(DQ.DROPPED)) != 0).reshape(
            candidates.size, -1).all(axis=1)
    return out
