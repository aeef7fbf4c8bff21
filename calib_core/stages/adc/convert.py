"""The ADC's compiled per-chunk pass: DN -> electrons, raw flags, linearisation, saturation, clamp, variance.

One pass over the pixels of each frame fuses the stage's elementwise steps with
its dq flags, counters and dq tally (the NumPy statement of the same steps is
the tests' oracle, ``tests/oracles/detector.py``).  Frames are passed flattened,
``(n, H*W)``, C-contiguous; outputs are written in place.  Compiled on first
use, cached on disk, and the GIL is released.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ...dq import DO_NOT_USE_MASK, DQ
from ..pixels import dq_tally, max_of, not_negative, usable_sum

__all__ = ["ADC_COUNTS", "adc_convert", "adc_finish"]

_DNU = DO_NOT_USE_MASK
_FLOOR, _SAT, _DROPPED, _NONLIN = int(DQ.ADC_FLOOR), int(DQ.SATURATED), int(DQ.DROPPED), int(DQ.NONLINEAR)
_NONFINITE, _REFERENCE = int(DQ.NONFINITE), int(DQ.REFERENCE)

#: slots of the ADC counters array
ADC_COUNTS = ("n_raw_pixels", "n_zero", "n_raw_saturated", "n_nonlinear", "n_clamped", "n_nonfinite")


@njit(nogil=True)
def finish_frame(data, dq, coeffs, lin, aux, lo, hi, full_well, do_clamp, cmin, cmax, read_var, ref_px, var, counts,
                  max_corr, dq_hist):
    """Linearise, flag, clamp one live frame in place (``data`` electrons, ``dq`` raw bits); its usable mean.

    Loops without branches or floating-point reductions, so that they
    vectorise; ``lin`` and ``aux`` are float32 scratch rows.
    """
    npx = data.shape[0]
    k_max = coeffs.shape[0] - 1
    if k_max >= 0:
        for p in range(npx):
            lin[p] = data[p] * coeffs[k_max, p]
        for k in range(k_max - 1, 0, -1):
            for p in range(npx):
                lin[p] = (lin[p] + coeffs[k, p]) * data[p]
        for p in range(npx):
            lin[p] += coeffs[0, p]
    n_nonlin = n_clip = n_bad = 0
    has_ref = ref_px.shape[0] > 0
    inf = np.float32(np.inf)
    for p in range(npx):
        e = data[p]
        bits = np.int64(dq[p])
        if k_max >= 0:
            outside = (e < lo) | (e > hi)
            bits |= _NONLIN if outside else 0
            n_nonlin += outside
            corr = abs(lin[p] - e)
            aux[p] = corr if ((bits & _DNU) == 0) & (corr < inf) else np.float32(0.0)
            e = lin[p]
        bits |= _SAT if e >= full_well else 0
        if has_ref:
            bits |= _REFERENCE if ref_px[p] else 0
        if do_clamp:
            low, high = e < cmin, e > cmax
            n_clip += low | high
            e = cmin if low else (cmax if high else e)
        bad = ((bits & _DNU) == 0) & ~np.isfinite(e)
        bits |= _NONFINITE if bad else 0
        n_bad += bad
        data[p] = e
        var[p] = not_negative(e) + read_var[p]
        dq[p] = bits
    if k_max >= 0:
        max_corr[0] = max(max_corr[0], max_of(aux))
    dq_tally(dq, dq_hist)
    counts[3] += n_nonlin
    counts[4] += n_clip
    counts[5] += n_bad
    total, n_good = usable_sum(data, dq)
    return total / n_good if n_good > 0 else np.nan


@njit(nogil=True)
def drop_frame(data, var, dq, ref_px, dq_hist):
    """A telemetry-dropped frame: NaN data and variance, ``DROPPED`` (and ``REFERENCE``) on every pixel."""
    nan = np.float32(np.nan)
    for p in range(data.shape[0]):
        bits = _DROPPED
        if ref_px.shape[0] > 0 and ref_px[p]:
            bits |= _REFERENCE
        dq[p] = bits
        dq_hist[bits] += 1
        data[p] = nan
        var[p] = nan


@njit(cache=True, nogil=True)
def adc_convert(raw, gain, offset, level_dn, finish, coeffs, lo, hi, full_well, do_clamp, cmin, cmax, read_var,
                ref_px, hist_stride, data, var, dq, dropped, frame_mean, counts, max_corr, dn_hist, dq_hist):
    """Raw DN -> electrons with raw flags; with ``finish`` also linearised, flagged, clamped, with variance.

    ``e = float32(DN) / gain + offset``; ``ADC_FLOOR`` at 0 DN, ``SATURATED`` at
    ``level_dn`` or more; an all-zero frame is ``dropped`` (only ``DROPPED``,
    NaN data and variance).  Every ``hist_stride``-th live frame of the call
    (0: none) is added to ``dn_hist``; returns how many were.  Without
    ``finish`` only ``data`` (electrons) and ``dq`` (raw bits) are written, and
    ``dq_hist`` / ``frame_mean`` are left alone (see :func:`adc_finish`).
    """
    n, npx = raw.shape
    nan = np.float32(np.nan)
    lin, aux = np.empty(npx, np.float32), np.empty(npx, np.float32)
    n_live = n_hist = 0
    for i in range(n):
        top = 0
        for p in range(npx):
            top = max(top, raw[i, p])
        dropped[i] = top == 0
        if top == 0:
            if finish:
                drop_frame(data[i], var[i], dq[i], ref_px, dq_hist)
                if frame_mean.shape[0] > 0:
                    frame_mean[i] = np.nan
            else:
                for p in range(npx):
                    dq[i, p] = _DROPPED
                    data[i, p] = nan
            continue
        if hist_stride > 0 and n_live % hist_stride == 0:
            n_hist += 1
            for p in range(npx):
                dn_hist[raw[i, p]] += 1
        n_live += 1
        n_zero = n_sat = 0
        for p in range(npx):
            r = raw[i, p]
            zero, sat = r == 0, r >= level_dn
            n_zero += zero
            n_sat += sat
            dq[i, p] = (_FLOOR if zero else 0) | (_SAT if sat else 0)
            data[i, p] = np.float32(r) / gain + offset
        counts[0] += npx
        counts[1] += n_zero
        counts[2] += n_sat
        if finish:
            mean = finish_frame(data[i], dq[i], coeffs, lin, aux, lo, hi, full_well, do_clamp, cmin, cmax, read_var,
                                 ref_px, var[i], counts, max_corr, dq_hist)
            if frame_mean.shape[0] > 0:
                frame_mean[i] = mean
    return n_hist


@njit(cache=True, nogil=True)
def adc_finish(data, dq, dropped, coeffs, lo, hi, full_well, do_clamp, cmin, cmax, read_var, ref_px,
               var, frame_mean, counts, max_corr, dq_hist):
    """The ``finish`` half of :func:`adc_convert` on electrons already converted (reference-pixel mode)."""
    lin, aux = np.empty(data.shape[1], np.float32), np.empty(data.shape[1], np.float32)
    for i in range(data.shape[0]):
        if dropped[i]:
            drop_frame(data[i], var[i], dq[i], ref_px, dq_hist)
            mean = np.nan
        else:
            mean = finish_frame(data[i], dq[i], coeffs, lin, aux, lo, hi, full_well, do_clamp, cmin, cmax, read_var,
                                 ref_px, var[i], counts, max_corr, dq_hist)
        if frame_mean.shape[0] > 0:
            frame_mean[i] = mean
