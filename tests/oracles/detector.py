"""NumPy statements of the detector stages' per-pixel steps: the oracle of their compiled kernels.

The stages run one compiled pass per chunk (``calib_core/stages/<stage>/``); each function here
spells one of those steps out with whole-array NumPy operations, in the same float32
operations and order, and is itself checked against the organisers' reference steps,
ccdproc or astropy in ``tests/``.  Nothing in the engine calls them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calib_core.dq import DO_NOT_USE_MASK, DQ, DQ_DTYPE
from calib_core.robust import stack_median
from calib_core.stages.cds.cosmic_rays import (PixelStats, TILE_ELEMENTS, neighbour_offsets, robust_scale,
                                               sample_times, side_medians, spike_mask, spike_threshold)
from calib_core.robust import masked_median
from calib_core.stages.dark.repair import NeighbourTable
from calib_core.stages.flat.divide import inverse

def dn_to_electrons(raw: np.ndarray, *, gain: float, offset: float) -> np.ndarray:
    """Convert raw counts to electrons, ``e = DN / gain + offset``.

    Parameters
    ----------
    raw : ndarray of uint16, shape (n, H, W)
        Raw reads (DN).
    gain : float
        ADC gain (DN per electron).
    offset : float
        ADC offset (electrons).

    Returns
    -------
    ndarray of float32, shape (n, H, W)
        Electrons (e-).
    """
    out = np.divide(raw, np.float32(gain), dtype=np.float32)
    out += np.float32(offset)
    return out


def raw_dq(raw: np.ndarray, *, level_dn: int) -> tuple[np.ndarray, np.ndarray]:
    """Data-quality bits that only depend on the raw counts.

    Parameters
    ----------
    raw : ndarray of uint16, shape (n, H, W)
        Raw reads (DN).
    level_dn : int
        Saturation level (DN); values at or above it are ``SATURATED``.

    Returns
    -------
    dq : ndarray of uint16, shape (n, H, W)
        ``ADC_FLOOR`` where 0 DN, ``SATURATED`` where >= ``level_dn``; a frame
        whose every pixel is 0 DN (telemetry drop) carries only ``DROPPED``.
    dropped : ndarray of bool, shape (n,)
        True for dropped frames.
    """
    flat = raw.reshape(len(raw), -1)
    frame_min, frame_max = flat.min(axis=1), flat.max(axis=1)
    dropped = frame_max == 0
    dq = np.zeros(raw.shape, DQ_DTYPE)
    for frames, bit, hit in ((np.flatnonzero((frame_min == 0) & ~dropped), DQ.ADC_FLOOR, lambda r: r == 0),
                             (np.flatnonzero(frame_max >= level_dn), DQ.SATURATED, lambda r: r >= level_dn)):
        if frames.size:
            dq[frames] |= hit(raw[frames]).astype(DQ_DTYPE) * DQ_DTYPE(bit)
    dq[dropped] = DQ.DROPPED
    return dq, dropped


def linearize(e: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """Per-pixel polynomial linearity correction ``sum_k c_k e^k`` (Horner, float32).

    Equivalent to the organisers' ``apply_linear_corr(linear_corr, signal)``
    (``np.poly1d(np.flip(c))`` per pixel) to float32 precision.

    Parameters
    ----------
    e : ndarray of float32, shape (n, H, W)
        Electrons before correction.
    coeffs : ndarray, shape (K, H, W)
        ``coeffs[k]`` multiplies ``e**k``.

    Returns
    -------
    ndarray of float32, shape (n, H, W)
        Linearised electrons.
    """
    c = np.asarray(coeffs, np.float32)
    acc = e * c[-1]
    for k in range(c.shape[0] - 2, 0, -1):
        acc += c[k]
        acc *= e
    acc += c[0]
    return acc


def adc_variance(e: np.ndarray, read_var: np.ndarray) -> np.ndarray:
    """Variance of a read: read-noise variance plus the Poisson variance of its charge.

    Parameters
    ----------
    e : ndarray of float32, shape (n, H, W)
        Charge accumulated since the reset (e-); negative values count as 0.
    read_var : ndarray, shape (H, W)
        Read-noise variance per read (e-^2).

    Returns
    -------
    ndarray of float32, shape (n, H, W)
        Variance (e-^2).
    """
    var = np.maximum(e, np.float32(0.0))
    var += read_var.astype(np.float32)
    return var

def subtract_dark(data: np.ndarray, dark: np.ndarray, exptime_s: np.ndarray | None) -> np.ndarray:
    """Subtract the dark charge of each read, in place.

    Parameters
    ----------
    data : ndarray of float32, shape (n, H, W)
        Reads (e-); modified in place and returned.
    dark : ndarray, shape (H, W)
        Dark rate (e-/s) when ``exptime_s`` is given, else dark charge per read (e-).
    exptime_s : ndarray, shape (n,), or None
        Integration time of each read since the reset (s).

    Returns
    -------
    ndarray of float32, shape (n, H, W)
        ``data - dark * exptime_s`` (or ``data - dark``).
    """
    d = np.asarray(dark, np.float32)
    if exptime_s is None:
        data -= d
    else:
        data -= d * np.asarray(exptime_s, np.float32)[:, None, None]
    return data


def neighbour_median(values: np.ndarray, table: NeighbourTable,
                     donors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Median of the valid neighbours of each table pixel in each frame.

    Parameters
    ----------
    values : ndarray, shape (n, H, W)
        Frames.
    table : NeighbourTable
        From :func:`neighbour_table`.
    donors : ndarray of bool, shape (n, k, 8), optional
        Per-frame usability of each neighbour (e.g. not flagged DO_NOT_USE in
        that frame), combined with ``table.valid``.

    Returns
    -------
    median : ndarray of float32, shape (n, k)
        Median of the valid neighbours (NaN where none is valid).
    count : ndarray of int, shape (n, k)
        Number of valid neighbours.
    """
    nbr = values[:, table.nbr_rows, table.nbr_cols].astype(np.float32)          # (n, k, 8)
    valid = np.broadcast_to(table.valid, nbr.shape)
    if donors is not None:
        valid = valid & donors
    valid = valid & np.isfinite(nbr)
    count = valid.sum(axis=-1)
    ordered = np.sort(np.where(valid, nbr, np.inf), axis=-1)
    lo = np.take_along_axis(ordered, np.maximum(count - 1, 0)[..., None] // 2, axis=-1)[..., 0]
    hi = np.take_along_axis(ordered, (count // 2)[..., None], axis=-1)[..., 0]
    median = np.where(count > 0, 0.5 * (lo + hi), np.nan).astype(np.float32)
    return median, count

def apply_flat(data: np.ndarray, var: np.ndarray, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Divide frames by the flat and variances by its square, in place.

    Parameters
    ----------
    data, var : ndarray of float32, shape (n, H, W)
        Electrons and variance (e-^2); modified in place.
    flat : ndarray of float32, shape (H, W)
        Flat to apply (no zeros: see :func:`prepare_flat`).

    Returns
    -------
    tuple of ndarray
        ``(data / flat, var / flat**2)``.
    """
    inv = inverse(flat)
    data *= inv
    var *= inv * inv
    return data, var

def cds_difference(signal: np.ndarray, signal_var: np.ndarray, signal_dq: np.ndarray, first: np.ndarray,
                   first_var: np.ndarray, first_dq: np.ndarray, read_var: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correlated double sampling of paired reads with the correct variance.

    Parameters
    ----------
    signal, signal_var, signal_dq : ndarray, shape (n, H, W)
        Signal reads: electrons, variance (e-^2), dq bits.
    first, first_var, first_dq : ndarray, shape (n, H, W)
        Their first reads.
    read_var : ndarray, shape (H, W)
        Read-noise variance of one read (e-^2).

    Returns
    -------
    data : ndarray of float32
        ``signal - first`` (e-).
    var : ndarray of float32
        ``2 read_var + max(signal_var - first_var, 0)`` (e-^2): both reads' read
        noise plus the Poisson variance of the increment only.
    dq : ndarray of uint16
        ``signal_dq | first_dq``.
    """
    data = np.subtract(signal, first, dtype=np.float32)
    var = np.subtract(signal_var, first_var, dtype=np.float32)
    np.maximum(var, np.float32(0.0), out=var)
    var += np.float32(2.0) * np.asarray(read_var, np.float32)
    return data, var, np.bitwise_or(signal_dq, first_dq).astype(DQ_DTYPE)


@dataclass
class CosmicRays:
    """Hits found by :func:`detect_cosmic_rays` and their replacement values."""

    times: np.ndarray       #: (k,) time index of each hit (into the array given)
    pixels: np.ndarray      #: (k,) pixel index of each hit
    data: np.ndarray        #: (k,) median of the hit's neighbours in time (e-)
    var: np.ndarray         #: (k,) median variance of those neighbours (e-^2)


def pixel_stats(x: np.ndarray, usable: np.ndarray, var: np.ndarray, *, window: int = 7) -> PixelStats:
    """Levels and robust scatters of in-memory series, from up to :data:`SCALE_SAMPLES` evenly spaced times.

    Parameters
    ----------
    x, usable, var : ndarray, shape (n, m)
        Values (e-), usability and variance (e-^2) of ``m`` pixels over ``n`` times.
    window : int
        Odd window of the neighbour median.
    """
    n = x.shape[0]
    rows = sample_times(n)
    ok = usable[rows]
    level = np.nan_to_num(masked_median(x[rows], ok)).astype(np.float32)
    var_level = np.nan_to_num(masked_median(var[rows], ok)).astype(np.float32)
    neighbours = []
    for o in neighbour_offsets(window):
        t = np.clip(rows + o, 0, n - 1)
        neighbours.append(np.where(usable[t], x[t], level[None]))
    return PixelStats(level, var_level, robust_scale(x[rows], neighbours, ok, var_level))


def detect_cosmic_rays(x: np.ndarray, usable: np.ndarray, var: np.ndarray, *, window: int = 7, sigma: float = 8.0,
                       stats: PixelStats | None = None, core: slice = slice(None)) -> CosmicRays:
    """Per-pixel temporal spikes against the neighbours in time and a robust scatter.

    The scatter of a pixel (:func:`robust_scale`) is ``1.4826 * MAD`` of
    ``x - median(neighbours)`` (the value itself excluded, so the residual has
    no point mass at 0), floored at half the propagated noise.  A value is a hit
    when it departs from the median of the ``h`` values before it *and* from
    that of the ``h`` values after it, in the same direction, by more than
    ``sigma`` scatters (:func:`spike_mask`): a transit ingress, however sharp,
    departs from one side only and is never flagged.  The side medians and the
    test run on cache-sized tiles of pixels.

    Parameters
    ----------
    x : ndarray of float32, shape (n, m)
        CDS values of ``m`` pixels over ``n`` times (e-).
    usable : ndarray of bool, shape (n, m)
        Values that may be tested and used (not flagged DO_NOT_USE, finite);
        the others stand in as the pixel's level and typical variance.
    var : ndarray, shape (n, m)
        Propagated variance (e-^2).
    window : int
        Odd window, ``window // 2`` neighbours on each side.
    sigma : float
        Threshold in robust sigmas.
    stats : PixelStats, optional
        Precomputed per-pixel statistics (streaming over time chunks); default
        :func:`pixel_stats` of ``x``.
    core : slice
        Rows of ``x`` to test (the others are halo context for a time chunk).

    Returns
    -------
    CosmicRays
        Hit positions (rows of ``x``), replacement data and variance.
    """
    n, m = x.shape
    h = window // 2
    stats = pixel_stats(x, usable, var, window=window) if stats is None else stats
    filled = np.where(usable, x, stats.level[None])
    threshold = spike_threshold(stats, sigma)
    lo, hi, _ = core.indices(n)
    hits = np.zeros((hi - lo, m), bool)
    step = max(1, TILE_ELEMENTS // (n + 2 * h))
    for c in range(0, m, step):
        cols = slice(c, c + step)
        tile = np.ascontiguousarray(filled[:, cols])
        left, right = side_medians(tile, window)
        hits[:, cols] = usable[lo:hi, cols] & spike_mask(tile[lo:hi], left[lo:hi], right[lo:hi],
                                                         threshold[None, cols])
    times, pixels = np.nonzero(hits)
    times += lo
    around = np.clip(times[:, None] + np.array(neighbour_offsets(window))[None], 0, n - 1)
    data = np.median(filled[around, pixels[:, None]], axis=1).astype(x.dtype)
    near_var = np.where(usable[around, pixels[:, None]], var[around, pixels[:, None]], stats.var_level[pixels][:, None])
    return CosmicRays(times, pixels, data, np.median(near_var, axis=1).astype(np.float32))

def flag_nonfinite(data: np.ndarray, dq: np.ndarray) -> int:
    """Flag non-finite values on usable pixels ``NONFINITE`` (in place); return their count."""
    finite = np.isfinite(data)
    if finite.all():
        return 0
    bad = ~finite & ((dq & DO_NOT_USE_MASK) == 0)
    dq[bad] |= int(DQ.NONFINITE)
    return int(np.count_nonzero(bad))


def usable_frame_means(data: np.ndarray, dq: np.ndarray) -> np.ndarray:
    """Mean of each frame over its pixels not flagged ``DO_NOT_USE`` (NaN for a frame without any)."""
    good = (dq & DO_NOT_USE_MASK) == 0
    n = len(data)
    count = good.reshape(n, -1).sum(axis=1)
    total = np.where(good, data, 0).reshape(n, -1).sum(axis=1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)
