"""The compiled stage kernels against the NumPy functions that state the same steps one array at a time.

Those NumPy functions are themselves checked against the organisers' reference
steps (tests of each stage); here each fused kernel must reproduce their
composition -- values, dq bits, counters and the dq tally -- on frames with
every special case: dropped frames, 0 DN, saturation, out-of-range inputs,
NaN inputs, hot pixels next to dead ones, unpaired reads.
"""

from __future__ import annotations

import numpy as np
import pytest

from calib_core import dq
from calib_core.stages.adc import convert as adc_convert
from calib_core.stages.adc import reference as adc_reference
from calib_core.stages.cds import cosmic_rays as cds_cosmic_rays
from calib_core.stages.cds import difference as cds_difference
from calib_core.stages.dark import repair as dark_repair
from calib_core.stages.dark import subtract as dark_subtract
from calib_core.stages.flat import divide as flat_divide
from calib_core.stages import pixels
from oracles import detector as oracle
from calib_core.dq import DO_NOT_USE_MASK, DQ, DQ_DTYPE

H, W = 6, 9
NPX = H * W


def _tally(dq: np.ndarray) -> np.ndarray:
    return np.bincount(np.asarray(dq, np.int64).ravel(), minlength=1 << 16)


def _raw(rng: np.random.Generator, n: int) -> np.ndarray:
    raw = rng.integers(1, 40000, (n, H, W)).astype(np.uint16)
    raw[1] = 0                       # dropped (telemetry)
    raw[2, 0, 0] = 0                 # ADC floor
    raw[3, 1, 1] = 65535             # ADC ceiling
    raw[4, 2, 2] = 60000             # beyond the linearity range, and the full well once linearised
    return raw


@pytest.mark.parametrize("linearise", [True, False])
@pytest.mark.parametrize("reference", [True, False])
def test_adc_convert_equals_the_numpy_steps(linearise, reference):
    rng = np.random.default_rng(3)
    n, gain, offset = 12, 0.4369, -1000.0
    raw = _raw(rng, n)
    coeffs = np.zeros((6, H, W), np.float32)
    coeffs[0] = rng.normal(0.1, 0.02, (H, W))
    coeffs[1] = rng.normal(1.0, 0.005, (H, W))
    coeffs[2] = -6.2e-9
    coeffs[3] = 1.2e-11
    read_var = rng.uniform(100, 200, (H, W)).astype(np.float32)
    lo, hi, full_well, cmin, cmax = -500.0, 1.0e5, 1.3e5, -1.0e4, 1.2e5
    ref_cols = adc_reference.reference_columns(W, 2) if reference else None

    # the NumPy statement of the stage
    e = oracle.dn_to_electrons(raw, gain=gain, offset=offset)
    dq, dropped = oracle.raw_dq(raw, level_dn=65535)
    live = ~dropped
    n_nonlinear, max_corr = 0, 0.0
    if linearise:
        lin = oracle.linearize(e, coeffs)
        outside = (e < lo) | (e > hi)
        outside[dropped] = False
        dq[outside] |= int(DQ.NONLINEAR)
        n_nonlinear = int(outside.sum())
        usable = (dq & DO_NOT_USE_MASK) == 0
        max_corr = float(np.max(np.abs(lin - e), where=usable, initial=0.0))
        e = lin
    dq[(e >= full_well) & live[:, None, None]] |= int(DQ.SATURATED)
    if reference:
        dq[:, :, ref_cols] |= int(DQ.REFERENCE)
    clipped = ((e < cmin) | (e > cmax)) & live[:, None, None]
    e = np.clip(e, cmin, cmax)
    var = oracle.adc_variance(e, read_var)
    e[dropped] = var[dropped] = np.nan
    n_nonfinite = oracle.flag_nonfinite(e, dq)
    means = oracle.usable_frame_means(e, dq)

    # the kernel
    data_k = np.empty((n, NPX), np.float32)
    var_k, dq_k = np.empty_like(data_k), np.empty((n, NPX), DQ_DTYPE)
    dropped_k, means_k = np.zeros(n, bool), np.empty(n)
    counts, corr_k = np.zeros(len(adc_convert.ADC_COUNTS), np.int64), np.zeros(1)
    dn_hist, dq_hist = np.zeros(1 << 16, np.int64), np.zeros(1 << 16, np.int64)
    coeffs_k = coeffs.reshape(6, -1) if linearise else np.zeros((0, NPX), np.float32)
    ref_px = np.broadcast_to(ref_cols, (H, W)).reshape(-1).copy() if reference else np.zeros(0, bool)
    f32 = np.float32
    n_hist = adc_convert.adc_convert(raw.reshape(n, -1), f32(gain), f32(offset), 65535, True, coeffs_k, f32(lo), f32(hi),
                                 f32(full_well), True, f32(cmin), f32(cmax), read_var.reshape(-1), ref_px, 4,
                                 data_k, var_k, dq_k, dropped_k, means_k, counts, corr_k, dn_hist, dq_hist)

    np.testing.assert_array_equal(dropped_k, dropped)
    np.testing.assert_array_equal(dq_k.reshape(dq.shape), dq)
    np.testing.assert_allclose(data_k.reshape(e.shape), e, rtol=1e-6)
    np.testing.assert_allclose(var_k.reshape(var.shape), var, rtol=1e-6)
    np.testing.assert_allclose(means_k, means, rtol=1e-9)
    got = dict(zip(adc_convert.ADC_COUNTS, counts.tolist()))
    assert got == {"n_raw_pixels": int(live.sum()) * NPX, "n_zero": int((dq & DQ.ADC_FLOOR).astype(bool).sum()),
                   "n_raw_saturated": int((raw[live] >= 65535).sum()), "n_nonlinear": n_nonlinear,
                   "n_clamped": int(clipped.sum()), "n_nonfinite": n_nonfinite}
    assert corr_k[0] == pytest.approx(max_corr, rel=1e-6)
    np.testing.assert_array_equal(dq_hist, _tally(dq))
    # every 4th live frame in the raw-DN histogram
    picked = np.flatnonzero(live)[::4]
    assert n_hist == picked.size
    np.testing.assert_array_equal(dn_hist, np.bincount(raw[picked].ravel(), minlength=1 << 16))
    assert got["n_nonlinear"] >= 1 and got["n_clamped"] >= 1 or not linearise


def test_adc_finish_equals_adc_convert_on_converted_electrons():
    """The reference-pixel path finishes electrons converted earlier: same result as the one-pass kernel."""
    rng = np.random.default_rng(4)
    n = 10
    raw = _raw(rng, n).reshape(n, -1)
    coeffs = np.zeros((6, NPX), np.float32)
    coeffs[1] = 1.0
    coeffs[2] = -6.0e-9
    read_var = np.full(NPX, 150.0, np.float32)
    ref_px = np.zeros(NPX, bool)
    ref_px[::W] = True
    f32 = np.float32
    limits = (coeffs, f32(-500), f32(1e5), f32(1.3e5), True, f32(-1e4), f32(1.2e5), read_var, ref_px)

    def fresh():
        return (np.empty((n, NPX), np.float32), np.empty((n, NPX), np.float32), np.empty((n, NPX), DQ_DTYPE),
                np.zeros(n, bool), np.empty(n), np.zeros(len(adc_convert.ADC_COUNTS), np.int64), np.zeros(1),
                np.zeros(1 << 16, np.int64), np.zeros(1 << 16, np.int64))

    one = fresh()
    adc_convert.adc_convert(raw, f32(0.4369), f32(-1000), 65535, True, *limits, 0, *one)
    two = fresh()
    data, var, dq, dropped, means, counts, corr, dn_hist, dq_hist = two
    adc_convert.adc_convert(raw, f32(0.4369), f32(-1000), 65535, False, *limits, 0, *two)
    adc_convert.adc_finish(data, dq, dropped, *limits, var, means, counts, corr, dq_hist)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def _hot_frames(rng: np.random.Generator, n: int):
    data = rng.normal(1000, 30, (n, H, W)).astype(np.float32)
    var = rng.uniform(900, 1100, (n, H, W)).astype(np.float32)
    dq = np.zeros((n, H, W), DQ_DTYPE)
    dq[:, 0, 3] = DQ.DEAD
    dq[2] = DQ.DROPPED
    data[2] = var[2] = np.nan
    data[3, 4, 4] = np.nan                       # a bad input value on a usable pixel
    data[5, 1, 2] = np.nan                       # a non-finite donor
    return data, var, dq


@pytest.mark.parametrize("scale", [True, False])
def test_dark_frames_equal_the_numpy_steps(scale):
    rng = np.random.default_rng(5)
    n = 7
    data, var, dq = _hot_frames(rng, n)
    rate = rng.uniform(0.5, 1.5, (H, W)).astype(np.float32)
    hot = np.zeros((H, W), bool)
    hot[[0, 1, 5, 3], [2, 8, 0, 4]] = True
    dead = (dq[0] & DQ.DEAD).astype(bool)
    exptime = np.where(np.arange(n) % 2 == 0, 0.1, 4.6)
    first_read = np.arange(n) % 2 == 0
    # a hot pixel whose every neighbour is hot, dead or edge cannot be repaired
    hot_all = hot.copy()
    hot_all[0:2, 0:2] = True
    table = dark_repair.neighbour_table(hot_all, ~hot_all & ~dead)

    # NumPy statement: subtract, flag, repair from the neighbour medians, flag non-finite, first-read means
    d, v, q = data.copy(), var.copy(), dq.copy()
    usable = (q & DO_NOT_USE_MASK) == 0
    n_bad = int((~np.isfinite(d) & usable).sum())
    oracle.subtract_dark(d, rate, exptime if scale else None)
    q[:, hot_all] |= int(DQ.HOT)
    donors = (q[:, table.nbr_rows, table.nbr_cols] & DO_NOT_USE_MASK) == 0
    new_d, count = oracle.neighbour_median(d, table, donors)
    new_v, _ = oracle.neighbour_median(v, table, donors)
    ok = count > 0
    rr, cc = table.rows, table.cols
    live = (q[:, rr, cc] & DQ.DROPPED) == 0
    d[:, rr, cc] = np.where(ok, new_d, d[:, rr, cc])
    v[:, rr, cc] = np.where(ok, new_v, v[:, rr, cc])
    q[:, rr, cc] |= np.where(ok, DQ.REPAIRED, DQ.HOT).astype(DQ_DTYPE)
    n_unrepaired = int((~ok & live).sum())
    n_nonfinite = oracle.flag_nonfinite(d, q)
    means = np.where(first_read, oracle.usable_frame_means(d, q), np.nan)

    k_d, k_v, k_q = (a.copy().reshape(n, -1) for a in (data, var, dq))
    counts, k_means, hist = np.zeros(len(pixels.FRAME_COUNTS), np.int64), np.empty(n), np.zeros(1 << 16, np.int64)
    hot_bits = hot_all.reshape(-1).astype(DQ_DTYPE) * DQ_DTYPE(DQ.HOT)
    dark_subtract.dark_frames(k_d, k_v, k_q, 100, rate.reshape(-1),
                        exptime.astype(np.float32) if scale else np.empty(0, np.float32), hot_bits,
                        (rr * W + cc).astype(np.int64), (table.nbr_rows * W + table.nbr_cols).astype(np.int64),
                        table.valid, first_read, k_means, counts, hist)
    np.testing.assert_array_equal(k_q.reshape(q.shape), q)
    np.testing.assert_array_equal(k_d.reshape(d.shape), d)
    np.testing.assert_array_equal(k_v.reshape(v.shape), v)
    np.testing.assert_allclose(k_means, means, rtol=1e-9)
    got = dict(zip(pixels.FRAME_COUNTS, counts.tolist()))
    assert got == {"n_bad_input": n_bad, "first_bad_frame": 103, "n_nonfinite": n_nonfinite,
                   "n_unrepaired": n_unrepaired}
    assert n_unrepaired > 0 and ok.any()
    np.testing.assert_array_equal(hist, _tally(q))


def test_flat_frames_equal_the_numpy_steps():
    rng = np.random.default_rng(6)
    n = 6
    data, var, dq = _hot_frames(rng, n)
    flat_map = rng.uniform(0.8, 1.2, (H, W)).astype(np.float32)
    flat_map[2, 2] = 1e-30                       # makes a value overflow to inf: NONFINITE
    data[:, 2, 2] = 1e10
    static = np.zeros((H, W), DQ_DTYPE)
    static[1, 1] = DQ.BAD_FLAT
    d, v, q = data.copy(), var.copy(), dq.copy()
    n_bad = int((~np.isfinite(d) & ((q & DO_NOT_USE_MASK) == 0)).sum())
    with np.errstate(over="ignore"):
        oracle.apply_flat(d, v, flat_map)
        inv = (1.0 / flat_map.astype(np.float64)).astype(np.float32).reshape(-1)
        inv2 = inv * inv
    q |= static
    n_nonfinite = oracle.flag_nonfinite(d, q)

    k_d, k_v, k_q = (a.copy().reshape(n, -1) for a in (data, var, dq))
    counts, hist = np.zeros(len(pixels.FRAME_COUNTS), np.int64), np.zeros(1 << 16, np.int64)
    flat_divide.flat_frames(k_d, k_v, k_q, 0, inv, inv2, static.reshape(-1), counts, hist)
    np.testing.assert_array_equal(k_d.reshape(d.shape), d)
    np.testing.assert_array_equal(k_v.reshape(v.shape), v)
    np.testing.assert_array_equal(k_q.reshape(q.shape), q)
    assert counts[0] == n_bad and counts[1] == 3 and counts[2] == n_nonfinite > 0
    np.testing.assert_array_equal(hist, _tally(q))


def test_cds_pairs_equal_the_numpy_steps():
    rng = np.random.default_rng(7)
    m = 8
    sig_d, sig_v, sig_q = _hot_frames(rng, m)
    first_d, first_v, first_q = (a.copy() for a in _hot_frames(rng, m))
    first_d -= 500
    first_q[:] = 0
    sig_q[6, 2, 5] = DQ.SATURATED                # a gap in a paired frame
    has_first = np.ones(m, bool)
    has_first[4] = False
    first_d[4], first_v[4], first_q[4] = sig_d[4], sig_v[4], sig_q[4]   # the runner passes the signal read again
    read_var = rng.uniform(100, 120, (H, W)).astype(np.float32)
    static_good = np.ones((H, W), bool)
    static_good[0, 3] = False

    d, v, q = oracle.cds_difference(sig_d, sig_v, sig_q, first_d, first_v, first_q, read_var)
    ok = has_first & ~dq.dropped_frames(sig_q) & ~dq.dropped_frames(first_q)
    q[~has_first] = sig_q[~has_first]
    d[~ok] = v[~ok] = np.nan
    q[~ok] |= int(DQ.UNPAIRED)
    n_nonfinite = oracle.flag_nonfinite(d, q)
    counted = static_good[None] & ok[:, None, None]
    use = counted & ((q & DO_NOT_USE_MASK) == 0)
    row_flux = np.where(use, d, 0).sum(axis=2, dtype=np.float64)
    gap_t, gap_r, gap_c = np.nonzero(counted & ~use)
    n_bad = sum(int((~np.isfinite(a) & ((b & DO_NOT_USE_MASK) == 0)).sum())
                for a, b in ((sig_d, sig_q), (first_d, first_q)))

    # both reads of every pair taken by row from one block holding them in scrambled order
    order = rng.permutation(2 * m)
    block = [np.concatenate([s, f])[order].reshape(2 * m, -1)
             for s, f in ((sig_d, first_d), (sig_v, first_v), (sig_q, first_q))]
    where = np.argsort(order)
    sig_rows, first_rows = where[:m], where[m:]
    k_d, k_v = np.empty((m, NPX), np.float32), np.empty((m, NPX), np.float32)
    k_q, paired, k_flux = np.empty((m, NPX), DQ_DTYPE), np.zeros(m, bool), np.zeros((m, H))
    counts = np.zeros(len(pixels.FRAME_COUNTS), np.int64)
    for room in (0, 64):                         # too small a gap array first: the count says how many
        gaps = np.empty((room, 2), np.int64)
        n_gap = cds_difference.cds_pairs(*block, sig_rows, *block, first_rows, has_first, 2 * read_var.reshape(-1),
                                  static_good.reshape(-1), W, 10, k_d, k_v, k_q, paired, k_flux, counts, gaps)
        assert n_gap == gap_t.size > 0
    np.testing.assert_array_equal(paired, ok)
    np.testing.assert_array_equal(k_q.reshape(q.shape), q)
    np.testing.assert_array_equal(k_d.reshape(d.shape), d)
    np.testing.assert_array_equal(k_v.reshape(v.shape), v)
    np.testing.assert_allclose(k_flux, row_flux, rtol=1e-12)
    np.testing.assert_array_equal(gaps[:n_gap, 0], gap_t + 10)
    np.testing.assert_array_equal(gaps[:n_gap, 1], gap_r * W + gap_c)
    assert counts[0] == 2 * n_bad and counts[2] == 2 * n_nonfinite    # counted by each of the two calls


def test_dq_tally_counts_every_value():
    """``DqTally.add`` (tested against ``count_bits`` with the ADC tests) runs this kernel."""
    dq = np.random.default_rng(8).choice(np.array([0, 0, 0, 1, 6, 4096, 1032], DQ_DTYPE), size=(5, H, W))
    hist = np.zeros(1 << 16, np.int64)
    pixels.dq_tally(dq.reshape(-1), hist)
    np.testing.assert_array_equal(hist, _tally(dq))


@pytest.mark.parametrize("window", [3, 5, 7, 9])
@pytest.mark.parametrize("core", [slice(0, 60), slice(4, 30), slice(30, 60)])
def test_cosmic_ray_hits_equal_detect_cosmic_rays(window, core):
    """Hits, replacements and old values of the kernel = the NumPy test, edges, halo and odd/even halves included."""
    rng = np.random.default_rng(window)
    n, m = 60, 40
    var = rng.uniform(300.0, 3000.0, (n, m)).astype(np.float32)
    x = (rng.uniform(100.0, 5e4, m)[None] + rng.normal(size=(n, m)) * np.sqrt(var)).astype(np.float32)
    t_cr, p_cr = rng.integers(0, n, 50), rng.integers(0, m, 50)
    x[t_cr, p_cr] += rng.choice([-1.0, 1.0], 50) * rng.uniform(20, 200, 50) * np.sqrt(var[t_cr, p_cr])
    x[[0, n - 1], 5] += 5e3                                          # hits on the first and last row
    dq = np.zeros((n, m), DQ_DTYPE)
    dq[rng.integers(0, n, 80), rng.integers(0, m, 80)] = DQ.SATURATED
    dq[:, 7] = DQ.DEAD                                               # a pixel never usable
    x[3, 9] = np.nan                                                 # non-finite and not flagged
    usable = ((dq & DO_NOT_USE_MASK) == 0) & np.isfinite(x)
    stats = oracle.pixel_stats(x, usable, var, window=window)
    stats.scale[11] = 0.0                                            # a pixel that is never tested
    want = oracle.detect_cosmic_rays(x, usable, var, window=window, sigma=6.0, stats=stats, core=core)
    assert want.times.size > 10

    threshold = cds_cosmic_rays.spike_threshold(stats, 6.0)
    scratch = np.empty((n, m), np.float32), np.empty((n, m), bool)
    for room in (0, want.times.size):                                # too little room first: the count says how many
        hits = [np.empty(room, np.int64), np.empty(room, np.int64), *(np.empty(room, np.float32) for _ in range(3))]
        n_hit = cds_cosmic_rays.cosmic_ray_hits(x, var, dq, core.start, core.stop, stats.level, stats.var_level, threshold,
                                        window // 2, *scratch, *hits)
        assert n_hit == want.times.size
    np.testing.assert_array_equal(scratch[1], usable)
    order = np.lexsort((want.pixels, want.times))                     # the kernel goes time by time, pixel by pixel
    for got, ref in zip(hits, (want.times, want.pixels, want.data, want.var, x[want.times, want.pixels])):
        np.testing.assert_array_equal(got, ref[order])
