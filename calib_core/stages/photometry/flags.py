"""Per-sample, per-channel photometry flag bits (``photometry_flags``, uint16).

A bit means the same thing for FGS1 (one channel) and AIRS-CH0 (one flag per
spectral channel) and in the stored ``photometry_flags.npy``.  A non-zero word
means "do not use" downstream; flagged samples keep their flux (NaN only when
it cannot be computed).  Unusable pixels are always excluded and replaced from
the spatial profile; a static bad pixel (dead, hot) is replaced the same way in
every sample, so it keeps the light curve consistent and flags a channel only
when it carries most of the flux.

=============  =====  ==========================================================
bit            value  meaning
=============  =====  ==========================================================
SATURATED      1      a saturated pixel (``DQ.SATURATED``) lies in the extraction
                      window (it was excluded and replaced)
OFF_CENTRE     2      centroid (FGS1) or trace row / spectral shift (AIRS) more
                      than ``flags.max_centroid_offset_px`` from the reference
TOO_MANY_BAD   4      pixels unusable in this sample only (cosmic rays, saturation,
                      dropped data) carry more than ``flags.max_bad_fraction`` of
                      the expected window flux, or pixels unusable in every
                      reference sample (dead, hot) more than
                      ``flags.max_static_bad_fraction``
NONFINITE      8      flux or flux variance is NaN/Inf
UNPAIRED       16     the sample's frame is missing: every window pixel is
                      ``UNPAIRED``/``DROPPED`` in dq
FIT_FAILED     32     centroid or PSF fit did not converge (a fallback was used)
=============  =====  ==========================================================
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["PhotFlag", "FLAG_DTYPE", "flag_counts", "flag_bits", "build_flags"]

FLAG_DTYPE = np.uint16


class PhotFlag(enum.IntFlag):
    """Named photometry flag bits."""

    SATURATED = 1 << 0
    OFF_CENTRE = 1 << 1
    TOO_MANY_BAD = 1 << 2
    NONFINITE = 1 << 3
    UNPAIRED = 1 << 4
    FIT_FAILED = 1 << 5


def flag_bits() -> dict[str, int]:
    """``{name: value}`` of every bit (for meta.json and the app)."""
    return {flag.name: int(flag.value) for flag in PhotFlag}


def flag_counts(flags: np.ndarray) -> dict[str, int]:
    """Number of entries with each bit set."""
    flags = np.asarray(flags)
    return {flag.name: int(np.count_nonzero(flags & flag.value)) for flag in PhotFlag}


def build_flags(flux: np.ndarray, flux_var: np.ndarray, *, transient_bad: np.ndarray, static_bad: np.ndarray,
                max_bad_fraction: float, max_static_bad_fraction: float, saturated: np.ndarray,
                missing: np.ndarray, off_centre: np.ndarray, fit_failed: np.ndarray) -> np.ndarray:
    """Combine the per-sample conditions into flag words.

    Parameters
    ----------
    flux, flux_var : ndarray, shape (n, C)
        Extracted flux and variance.
    transient_bad, static_bad : ndarray, shape (n, C)
        Fractions of the expected window flux on pixels unusable in this
        sample only / in every reference sample.
    max_bad_fraction, max_static_bad_fraction : float
        Thresholds of :attr:`PhotFlag.TOO_MANY_BAD`.
    saturated, missing : ndarray of bool, shape (n, C)
        A saturated pixel in the window; every window pixel missing.
    off_centre, fit_failed : ndarray of bool, shape (n,)
        Per-sample conditions (applied to every channel).

    Returns
    -------
    ndarray of uint16, shape (n, C)
    """
    flags = np.zeros(flux.shape, FLAG_DTYPE)
    too_many = ~(transient_bad <= max_bad_fraction) | ~(static_bad <= max_static_bad_fraction)
    conditions = (
        (PhotFlag.SATURATED, saturated),
        (PhotFlag.OFF_CENTRE, np.broadcast_to(np.asarray(off_centre)[:, None], flux.shape)),
        (PhotFlag.TOO_MANY_BAD, too_many),
        (PhotFlag.NONFINITE, ~(np.isfinite(flux) & np.isfinite(flux_var))),
        (PhotFlag.UNPAIRED, missing),
        (PhotFlag.FIT_FAILED, np.broadcast_to(np.asarray(fit_failed)[:, None], flux.shape)),
    )
    for bit, condition in conditions:
        flags |= np.where(condition, FLAG_DTYPE(bit.value), FLAG_DTYPE(0))
    return flags
