"""Compiled per-pixel kernels of the detector stages (numba).

Each stage's per-chunk work is one pass over the pixels: the elementwise steps
that the NumPy functions of the stage modules spell out one array at a time
(e.g. :func:`calib_core.stages.adc.linearize`, :func:`~calib_core.stages.dark.subtract_dark`,
:func:`~calib_core.stages.flat.apply_flat`, :func:`~calib_core.stages.cds.cds_difference`)
are fused here with the dq flags, the counters and the dq tally, in the same
float32 operations and order, so a chunk is read and written once.  The tests
check every kernel against those NumPy functions.

Frames are passed flattened, ``(n, H*W)``, C-contiguous; outputs are written
in place.  Counters accumulate into small int64 / float64 arrays given by the
caller, and ``dq_hist`` is a :class:`calib_core.stages.common.DqTally`
histogram (value -> count).  Kernels are compiled on first use and cached on
disk (``cache=True``), and release the GIL.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .dq import DO_NOT_USE_MASK, DQ

__all__ = ["adc_convert", "adc_finish", "dark_frames", "flat_frames", "cds_pairs", "cosmic_ray_hits", "dq_tally",
           "ADC_COUNTS", "FRAME_COUNTS"]

_DNU = DO_NOT_USE_MASK
_FLOOR, _SAT, _DROPPED, _NONLIN = int(DQ.ADC_FLOOR), int(DQ.SATURATED), int(DQ.DROPPED), int(DQ.NONLINEAR)
_NONFINITE, _REFERENCE, _HOT, _REPAIRED = int(DQ.NONFINITE), int(DQ.REFERENCE), int(DQ.HOT), int(DQ.REPAIRED)
_UNPAIRED = int(DQ.UNPAIRED)

#: slots of the ADC counters array
ADC_COUNTS = ("n_raw_pixels", "n_zero", "n_raw_saturated", "n_nonlinear", "n_clamped", "n_nonfinite")
#: slots of the counters array of the dark, flat and CDS kernels (``n_unrepaired``: dark only)
FRAME_COUNTS = ("n_bad_input", "first_bad_frame", "n_nonfinite", "n_unrepaired")


@njit
def _not_negative(x):
    """``np.maximum(x, 0)`` for one float32 (NaN stays NaN)."""
    return np.float32(0.0) if x < 0 else x


@njit(fastmath={"reassoc", "nnan", "ninf", "nsz"})
def _max_of(values):
    """Largest of finite non-negative float32 values (0 for none): a vectorised reduction."""
    top = np.float32(0.0)
    for x in values:
        top = max(top, x)
    return top


@njit(fastmath={"reassoc", "nsz"})
def _usable_sum(data, dq):
    """Sum (float64, any order) of the values not flagged DO_NOT_USE, and their count."""
    total = 0.0
    count = 0
    for p in range(data.shape[0]):
        good = (dq[p] & _DNU) == 0
        total += np.float64(data[p]) if good else 0.0
        count += good
    return total, count


@njit(nogil=True)
def _finish_frame(data, dq, coeffs, lin, aux, lo, hi, full_well, do_clamp, cmin, cmax, read_var, ref_px, var, counts,
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
        var[p] = _not_negative(e) + read_var[p]
        dq[p] = bits
    if k_max >= 0:
        max_corr[0] = max(max_corr[0], _max_of(aux))
    dq_tally(dq, dq_hist)
    counts[3] += n_nonlin
    counts[4] += n_clip
    counts[5] += n_bad
    total, n_good = _usable_sum(data, dq)
    return total / n_good if n_good > 0 else np.nan


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


@njit(nogil=True)
def _drop_frame(data, var, dq, ref_px, dq_hist):
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
                _drop_frame(data[i], var[i], dq[i], ref_px, dq_hist)
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
            mean = _finish_frame(data[i], dq[i], coeffs, lin, aux, lo, hi, full_well, do_clamp, cmin, cmax, read_var,
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
            _drop_frame(data[i], var[i], dq[i], ref_px, dq_hist)
            mean = np.nan
        else:
            mean = _finish_frame(data[i], dq[i], coeffs, lin, aux, lo, hi, full_well, do_clamp, cmin, cmax, read_var,
                                 ref_px, var[i], counts, max_corr, dq_hist)
        if frame_mean.shape[0] > 0:
            frame_mean[i] = mean


@njit
def _note_bad_input(n_bad, frame, counts):
    """Add a frame's count of non-finite input on usable pixels; remember the first such frame."""
    if n_bad > 0 and counts[0] == 0:
        counts[1] = frame
    counts[0] += n_bad


@njit
def _median_of(values, count):
    """Median of ``values[:count]`` (sorted in place; mean of the two middle values for an even count)."""
    for a in range(1, count):
        x = values[a]
        b = a - 1
        while b >= 0 and values[b] > x:
            values[b + 1] = values[b]
            b -= 1
        values[b + 1] = x
    return np.float32(0.5) * (values[(count - 1) // 2] + values[count // 2])


@njit(nogil=True)
def _flag_nonfinite(data, dq):
    """``NONFINITE`` on the usable non-finite values of one frame (in place); their count."""
    n_bad = 0
    for p in range(data.shape[0]):
        bits = np.int64(dq[p])
        bad = ((bits & _DNU) == 0) & ~np.isfinite(data[p])
        dq[p] = bits | (_NONFINITE if bad else 0)
        n_bad += bad
    return n_bad


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
        _note_bad_input(n_bad, first + i, counts)
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
                data[i, p] = _median_of(buf, nd)
                var[i, p] = _median_of(vbuf, nv) if nv > 0 else np.float32(np.nan)
                dq[i, p] |= _REPAIRED
            else:
                dq[i, p] |= _HOT
                if (dq[i, p] & _DROPPED) == 0:
                    counts[3] += 1
        counts[2] += _flag_nonfinite(data[i], dq[i])
        dq_tally(dq[i], dq_hist)
        if first_read[i]:
            total, n_good = _usable_sum(data[i], dq[i])
            frame_mean[i] = total / n_good if n_good > 0 else np.nan
        else:
            frame_mean[i] = np.nan


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
        _note_bad_input(n_bad, first + i, counts)
        counts[2] += n_nonfinite
        dq_tally(dq[i], dq_hist)


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
        ok = has_first[j] and not _is_dropped(sig_dq[js]) and not _is_dropped(first_dq[jf])
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
            var[j, p] = _not_negative(sig_var[js, p] - first_var[jf, p]) + read_var2[p] if ok else nan
            dq[j, p] = bits
        _note_bad_input(n_bad, first_out + j, counts)
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


@njit
def _is_dropped(dq):
    """A frame lost in telemetry: ``DROPPED`` on every pixel (the first pixel screens)."""
    if (dq[0] & _DROPPED) == 0:
        return False
    for p in range(dq.shape[0]):
        if (dq[p] & _DROPPED) == 0:
            return False
    return True


@njit
def _row_of(t, offset, n):
    """Row ``t + offset`` clipped to ``0..n-1`` (series edges extended with the nearest value)."""
    return min(max(t + offset, 0), n - 1)


@njit(cache=True, nogil=True)
def cosmic_ray_hits(data, var, dq, lo, hi, level, var_level, threshold, half, filled, usable,
                    hit_t, hit_p, hit_data, hit_var, hit_old):
    """Temporal spikes of rows ``lo:hi`` of a CDS series (rows ``0:n``: those and their halo).

    The test of :func:`calib_core.stages.cds.detect_cosmic_rays` given its
    per-pixel statistics: unusable values (DO_NOT_USE, non-finite) stand in as
    the pixel's ``level`` (``filled``, ``usable``: scratch arrays of the series'
    shape); a usable value is a hit when it departs from the median of the
    ``half`` values before it and from that of the ``half`` values after it, in
    the same direction, by more than ``threshold`` (the first row uses its
    later side for both, the last row its earlier side).  Row by row, a cheap
    bound -- a side's median lies within its minimum and maximum, computed in
    vectorised passes over the pixels -- leaves only a few candidates whose
    medians are evaluated.  Each hit's time, pixel, replacement (median of its
    ``2 * half`` neighbours), replacement variance (median of their variances,
    ``var_level`` for unusable ones) and old value go to the ``hit_*`` arrays.
    Returns the number of hits (when it exceeds their length, the caller
    repeats with more room).
    """
    n, npx = data.shape
    for t in range(n):
        for p in range(npx):
            x = data[t, p]
            ok = ((np.int64(dq[t, p]) & _DNU) == 0) & np.isfinite(x)
            usable[t, p] = ok
            filled[t, p] = x if ok else level[p]
    bounds = np.empty((4, npx), np.float32)          # min, max of the earlier side; min, max of the later side
    rows = np.empty(2 * half, np.int64)
    vals = np.empty(2 * half, np.float32)
    n_hit = 0
    for t in range(lo, hi):
        l_side = 1 if t == 0 else -1                 # the first row has no earlier values
        r_side = l_side if t == n - 1 else 1         # the last row has no later ones
        for k in range(half):
            rows[k] = _row_of(t, l_side * (k + 1), n)
            rows[half + k] = _row_of(t, r_side * (k + 1), n)
        for s in range(2):
            first = filled[rows[s * half]]
            for p in range(npx):
                bounds[2 * s, p] = first[p]
                bounds[2 * s + 1, p] = first[p]
            for k in range(1, half):
                row = filled[rows[s * half + k]]
                for p in range(npx):
                    bounds[2 * s, p] = min(bounds[2 * s, p], row[p])
                    bounds[2 * s + 1, p] = max(bounds[2 * s + 1, p], row[p])
        for p in range(npx):
            x, thr = filled[t, p], threshold[p]
            maybe = usable[t, p] & (((x - bounds[0, p] > thr) & (x - bounds[2, p] > thr))
                                    | ((x - bounds[1, p] < -thr) & (x - bounds[3, p] < -thr)))
            if not maybe:
                continue
            for k in range(2 * half):
                vals[k] = filled[rows[k], p]
            med_l, med_r = _median_of(vals[:half], half), _median_of(vals[half:], half)
            if not ((x - max(med_l, med_r) > thr) | (x - min(med_l, med_r) < -thr)):
                continue
            if n_hit < hit_t.shape[0]:
                for k in range(2 * half):
                    vals[k] = filled[_row_of(t, k - half + (k >= half), n), p]
                hit_data[n_hit] = _median_of(vals, 2 * half)
                for k in range(2 * half):
                    u = _row_of(t, k - half + (k >= half), n)
                    vals[k] = var[u, p] if usable[u, p] else var_level[p]
                hit_var[n_hit] = _median_of(vals, 2 * half)
                hit_t[n_hit], hit_p[n_hit], hit_old[n_hit] = t, p, x
            n_hit += 1
    return n_hit
