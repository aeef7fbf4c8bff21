"""CDS stage: pair each signal read with its first read, difference, reject cosmic rays.

Pairing (``pairing``): frames are ordered by index or by timestamp; with
``n_minus_1`` a signal read (``read_kind`` 1) pairs with the frame just before
it when that is a first read (``read_kind`` 0); with ``nearest`` it pairs with
the latest earlier first read within ``window_s`` seconds (each first read is
used once).  Every signal read gives one output frame; a frame whose partner is
missing, out of the window or ``DROPPED`` (or which is dropped itself) is
``UNPAIRED`` (NaN data and variance, exptime 0) and counted, so the CDS time
grid is never shortened silently.  First reads left without a signal read are
counted as orphans.  The pair table ``pair_index`` ([first, signal], -1 when
unpaired), the gaps ``pair_dt_s`` and the orphans are stored with the output.

Difference of a pair (``s`` signal, ``f`` first read, flat-corrected):
``data = s - f``, ``exptime = t_s - t_f`` (the increment), ``read_kind = 2``,
``dq = dq_s | dq_f`` and

    var = 2 r + max(var_s - var_f, 0)

where ``r`` is the read-noise variance of one read (``read_var``).  With
``var_x = r + Q_x / F`` (Poisson of the charge accumulated since the reset,
scaled by the flat) the two reads share the charge ``Q_f``, which cancels in
the difference; only the increment ``Q_s - Q_f`` contributes Poisson variance
(``var_s - var_f``), not ``Q_s + Q_f``.

Robust differencing (``robust``): a second pass over the written frames (a
sample of frames first, for each pixel's level and robust scatter, then time
chunks with a halo of ``window // 2`` frames, so memory stays bounded by the
chunk size) compares each value with the medians of its ``window // 2``
neighbours before and after it in time; a value departing from both, in the
same direction, by more than ``sigma`` robust (MAD) sigmas of the pixel's
residuals is ``COSMIC_RAY`` and replaced by the median of its neighbours
(``REPAIRED``).  Replacements are applied after the pass, so the result does
not depend on the chunk size.  A transit (slow, or a step as
sharp as one frame) departs from one side only and is never flagged.

Temporal filter (``temporal_filter``): frames whose total flux (or any row's
flux) spikes away from the neighbouring frames by more than ``sigma`` robust
sigmas (same two-sided test) are flagged ``OUTLIER`` as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

from ..config.base import IOConfig, QualityChecks, StageConfig, opt
from ..dq import DO_NOT_USE_MASK, DQ, DQ_DTYPE, dropped_frames
from ..frames import FrameAxisMeta, FramePlane, FrameSource, StoredOutput, StoreWriter
from ..kernels import FRAME_COUNTS, cds_pairs, cosmic_ray_hits
from .common import (MAD_TO_SIGMA, DqTally, copy_frame_meta, decimate, frame_image, input_read_var, report_bad_input,
                     release_pages)
from .base import Gate, Stage, StageContext, gate

__all__ = [
    "CdsConfig", "CdsQC", "PairingConfig", "RobustConfig", "TemporalFilterConfig", "PairingIntegrityQC",
    "pair_reads", "dropped_frames", "cds_difference", "median_network", "network_median", "window_median",
    "side_medians", "neighbour_offsets", "spike_mask", "masked_median", "CosmicRays", "PixelStats", "robust_scale",
    "pixel_stats", "sample_times", "detect_cosmic_rays", "spike_threshold", "temporal_outliers",
    "CdsStage", "STAGE",
]

#: dq bits that are the same in every frame of a pixel (set from calibration maps)
STATIC_BITS = int(DQ.DEAD | DQ.HOT | DQ.BAD_FLAT | DQ.REFERENCE)
#: frames sampled per pixel for the robust (MAD) scale and the fill level
SCALE_SAMPLES = 255
#: elements per cache-sized tile of the running-median network
TILE_ELEMENTS = 1 << 16


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------


@dataclass
class PairingConfig:
    order_by: str = opt("index", choices=("index", "timestamp"), doc="order frames by index or by timestamp")
    policy: str = opt("n_minus_1", choices=("n_minus_1", "nearest"),
                      doc="n_minus_1: the previous frame if a first read; nearest: latest earlier first read in window")
    window_s: float = opt(5.0, gt=0, unit="s", doc="max time from first read to signal read (policy nearest)")


@dataclass
class RobustConfig:
    enabled: bool = opt(True, doc="flag and replace per-pixel temporal outliers (cosmic rays)")
    window: int = opt(7, ge=3, le=101, odd=True, doc="running-median window (frames, odd)")
    sigma: float = opt(8.0, gt=0, doc="threshold in robust (MAD) sigmas of the pixel's residuals")


@dataclass
class TemporalFilterConfig:
    enabled: bool = opt(False, doc="flag whole frames whose flux departs from a running median (OUTLIER)")
    statistic: str = opt("total", choices=("total", "per_row"),
                         doc="total: frame flux; per_row: each detector row's flux (any row flags the frame)")
    window: int = opt(31, ge=3, le=1001, odd=True, doc="running-median window (frames, odd)")
    sigma: float = opt(5.0, gt=0, doc="threshold in robust (MAD) sigmas of the flux residuals")


@dataclass
class PairingIntegrityQC:
    max_unpaired_fraction: float = opt(0.10, ge=0, le=1, doc="max fraction of CDS frames without a valid pair")


@dataclass
class CdsQC(QualityChecks):
    pairing_integrity: PairingIntegrityQC = opt(PairingIntegrityQC, doc="unpaired-frame guard")
    max_cosmic_ray_frac: float = opt(1.0e-3, ge=0, le=1, doc="max fraction of pixel-frames flagged COSMIC_RAY")
    max_outlier_frame_frac: float = opt(0.05, ge=0, le=1, doc="max fraction of frames flagged OUTLIER")


@dataclass
class CdsConfig(StageConfig):
    io: IOConfig = opt(IOConfig(input_key="flat_corrected", output_key="cds_corrected"), doc="input/output keys")
    quality_checks: CdsQC = opt(CdsQC, doc="QC gates: pairing integrity, cosmic-ray and outlier-frame fractions")
    pairing: PairingConfig = opt(PairingConfig, doc="how signal reads find their first read")
    robust: RobustConfig = opt(RobustConfig, doc="per-pixel cosmic-ray rejection")
    temporal_filter: TemporalFilterConfig = opt(TemporalFilterConfig, doc="frame-level outlier filter")


# ---------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------


def pair_reads(time_s: np.ndarray, read_kind: np.ndarray, *, order_by: str = "index", policy: str = "n_minus_1",
               window_s: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Find the first read of every signal read.

    Parameters
    ----------
    time_s : ndarray, shape (n,)
        Read times (s).
    read_kind : ndarray of int, shape (n,)
        0 first read after a reset, 1 signal read.
    order_by : {"index", "timestamp"}
        Order in which "previous"/"earlier" is meant.
    policy : {"n_minus_1", "nearest"}
        ``n_minus_1``: the read just before, if it is a first read; ``nearest``:
        the latest earlier first read with ``0 <= t_signal - t_first <= window_s``,
        each first read used by at most one signal read (the closest).
    window_s : float
        Time window of ``nearest`` (s).

    Returns
    -------
    signal_idx : ndarray of int64, shape (m,)
        Frame index of every signal read, in the chosen order.
    first_idx : ndarray of int64, shape (m,)
        Frame index of its first read, or -1 when it has none.
    """
    time_s = np.asarray(time_s, np.float64)
    kinds = np.asarray(read_kind)
    n = len(kinds)
    order = np.arange(n) if order_by == "index" else np.argsort(time_s, kind="stable")
    k, t = kinds[order], time_s[order]
    pos_sig = np.flatnonzero(k == 1)
    if policy == "n_minus_1":
        prev = pos_sig - 1
        ok = (prev >= 0) & (k[np.maximum(prev, 0)] == 0)
        partner = np.where(ok, prev, 0)
    else:
        pos_first = np.flatnonzero(k == 0)
        j = np.searchsorted(pos_first, pos_sig) - 1
        ok = j >= 0
        partner = pos_first[np.maximum(j, 0)] if pos_first.size else np.zeros_like(pos_sig)
        gap = t[pos_sig] - t[partner]
        ok &= (gap >= 0) & (gap <= window_s)
        claimed = np.flatnonzero(ok)
        _, first_claim = np.unique(partner[claimed], return_index=True)
        ok[:] = False
        ok[claimed[first_claim]] = True
    signal_idx = order[pos_sig].astype(np.int64)
    first_idx = np.where(ok, order[partner], -1).astype(np.int64)
    return signal_idx, first_idx


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


def _batcher_pairs(n: int) -> list[tuple[int, int]]:
    """Compare-exchange pairs of Batcher's odd-even merge sort, restricted to ``n`` inputs."""
    size = 1
    while size < n:
        size *= 2
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    a, b = i + j, i + j + k
                    if a // (2 * p) == b // (2 * p) and b < n:
                        pairs.append((a, b))
            k //= 2
        p *= 2
    return pairs


@lru_cache(maxsize=None)
def median_network(n: int) -> tuple[tuple[int, int, bool, bool], ...]:
    """Comparators ``(a, b, need_min, need_max)`` that put the middle of ``n`` sorted values in place.

    Batcher's sorting network pruned to the comparators that the middle output(s)
    (``(n - 1) // 2`` and ``n // 2``) depend on.
    """
    need = {(n - 1) // 2, n // 2}
    ops = []
    for a, b in reversed(_batcher_pairs(n)):
        need_min, need_max = a in need, b in need
        if need_min or need_max:
            ops.append((a, b, need_min, need_max))
            need |= {a, b}
    return tuple(reversed(ops))


def window_median(x: np.ndarray, offsets: Sequence[int]) -> np.ndarray:
    """Median along axis 0 of ``x[t + o]`` over the given offsets ``o`` (edges extended with the nearest value).

    With ``offsets = range(-h, h + 1)`` it equals
    ``scipy.ndimage.median_filter(x, size=(2h + 1, 1, ...), mode="nearest")``; an even
    number of offsets gives the mean of the two middle values.  Evaluated with a
    sorting network on cache-sized tiles of pixels.

    Parameters
    ----------
    x : ndarray, shape (n, ...)
        Series along axis 0 (e.g. time x pixels).
    offsets : sequence of int
        Relative positions taken into each median.

    Returns
    -------
    ndarray, same shape and dtype as ``x``
    """
    n = x.shape[0]
    flat = x.reshape(n, -1)
    out = np.empty_like(flat)
    offsets = list(offsets)
    pad_lo, pad_hi = max(0, -min(offsets)), max(0, max(offsets))
    step = max(1, TILE_ELEMENTS // (n + pad_lo + pad_hi))
    for c in range(0, flat.shape[1], step):
        tile = flat[:, c:c + step]
        padded = np.concatenate([np.repeat(tile[:1], pad_lo, axis=0), tile, np.repeat(tile[-1:], pad_hi, axis=0)])
        out[:, c:c + step] = network_median([padded[pad_lo + o:pad_lo + o + n] for o in offsets])
    return out.reshape(x.shape)


def network_median(values: Sequence[np.ndarray]) -> np.ndarray:
    """Elementwise median of equally shaped arrays (mean of the two middle values for an even count).

    Evaluated with the pruned sorting network of :func:`median_network`: only
    ``minimum``/``maximum`` ufuncs, no sort.
    """
    reg = list(values)
    for a, b, need_min, need_max in median_network(len(reg)):
        lo = np.minimum(reg[a], reg[b]) if need_min else None
        if need_max:
            reg[b] = np.maximum(reg[a], reg[b])
        if need_min:
            reg[a] = lo
    lo_i, hi_i = (len(reg) - 1) // 2, len(reg) // 2
    return reg[lo_i] if lo_i == hi_i else (reg[lo_i] + reg[hi_i]) * np.asarray(0.5, reg[lo_i].dtype)


def side_medians(x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Medians of the ``window // 2`` values before and after each value along axis 0.

    Parameters
    ----------
    x : ndarray, shape (n, ...)
        Series along axis 0.
    window : int
        Odd window; ``h = window // 2`` neighbours on each side (the value itself excluded).

    Returns
    -------
    left, right : ndarray, same shape as ``x``
        Median of the ``h`` earlier and of the ``h`` later values (edges extended
        with the nearest value).  The first (last) value has no earlier (later)
        neighbour: there the median of the other side is used.
    """
    h = window // 2
    left = window_median(x, range(-h, 0))
    right = window_median(x, range(1, h + 1))
    left[0] = right[0]
    right[-1] = left[-1]
    return left, right


def neighbour_offsets(window: int) -> list[int]:
    """Offsets of the ``window - 1`` neighbours of a value (the value itself excluded)."""
    h = window // 2
    return [*range(-h, 0), *range(1, h + 1)]


def spike_mask(x: np.ndarray, left: np.ndarray, right: np.ndarray, threshold: np.ndarray | float) -> np.ndarray:
    """Values departing from both of their one-sided neighbour medians, in the same direction.

    A spike (cosmic ray, outlier frame) departs from the values before *and*
    after it; a step (sharp ingress) or a ramp departs from at most one side,
    or from both in opposite directions, and is not a spike.

    Parameters
    ----------
    x, left, right : ndarray
        Values and the medians of their earlier and later neighbours
        (see :func:`side_medians`).
    threshold : ndarray or float
        Minimum deviation from both medians (broadcast against ``x``).

    Returns
    -------
    ndarray of bool
        ``x - max(left, right) > threshold`` or ``x - min(left, right) < -threshold``.
    """
    return ((x - np.maximum(left, right)) > threshold) | ((x - np.minimum(left, right)) < -threshold)


def masked_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Median along axis 0 of the entries where ``mask`` is True (NaN where none).

    Parameters
    ----------
    values : ndarray, shape (n, m)
    mask : ndarray of bool, shape (n, m)

    Returns
    -------
    ndarray of float64, shape (m,)
    """
    ordered = np.sort(np.where(mask, values, np.inf), axis=0)
    count = mask.sum(axis=0)
    lo = np.take_along_axis(ordered, (np.maximum(count - 1, 0) // 2)[None], axis=0)[0]
    hi = np.take_along_axis(ordered, np.minimum(count // 2, len(values) - 1)[None], axis=0)[0]
    return np.where(count > 0, 0.5 * (lo.astype(np.float64) + hi), np.nan)


@dataclass
class CosmicRays:
    """Hits found by :func:`detect_cosmic_rays` and their replacement values."""

    times: np.ndarray       #: (k,) time index of each hit (into the array given)
    pixels: np.ndarray      #: (k,) pixel index of each hit
    data: np.ndarray        #: (k,) median of the hit's neighbours in time (e-)
    var: np.ndarray         #: (k,) median variance of those neighbours (e-^2)


@dataclass
class PixelStats:
    """Per-pixel statistics of a CDS series used by the cosmic-ray test."""

    level: np.ndarray       #: (m,) median of the usable values (e-): stands in for unusable ones
    var_level: np.ndarray   #: (m,) median of the usable variances (e-^2)
    scale: np.ndarray       #: (m,) robust sigma of ``x - median(neighbours)`` (e-)


def robust_scale(center: np.ndarray, neighbours: Sequence[np.ndarray], usable: np.ndarray,
                 var_level: np.ndarray) -> np.ndarray:
    """Robust sigma of values about the median of their neighbours in time.

    Parameters
    ----------
    center : ndarray, shape (s, m)
        Sampled values (e-).
    neighbours : sequence of ndarray, each (s, m)
        Their ``window - 1`` neighbours (unusable ones already replaced by the pixel level).
    usable : ndarray of bool, shape (s, m)
        Samples that count.
    var_level : ndarray, shape (m,)
        Typical propagated variance (e-^2); half its square root floors the result.

    Returns
    -------
    ndarray of float64, shape (m,)
        ``max(1.4826 * MAD(center - median(neighbours)), 0.5 * sqrt(var_level))`` (e-).
    """
    mad = masked_median(np.abs(center - network_median(neighbours)), usable)
    return np.fmax(MAD_TO_SIGMA * mad, 0.5 * np.sqrt(np.maximum(var_level, 0.0)))


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


def sample_times(n: int) -> np.ndarray:
    """Up to :data:`SCALE_SAMPLES` evenly spaced indices of ``n`` times."""
    return np.unique(np.linspace(0, n - 1, min(n, SCALE_SAMPLES)).astype(np.int64))


def spike_threshold(stats: PixelStats, sigma: float) -> np.ndarray:
    """Per-pixel departure (float32, e-) that makes a cosmic-ray hit: ``sigma`` robust scatters (inf: never)."""
    return np.where(stats.scale > 0, sigma * stats.scale, np.inf).astype(np.float32)


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


def temporal_outliers(series: np.ndarray, valid: np.ndarray, *, window: int = 31, sigma: float = 5.0) -> np.ndarray:
    """Frames whose flux spikes away from its neighbours by more than ``sigma`` robust sigmas.

    Same test as :func:`detect_cosmic_rays`, on per-frame fluxes: a frame is an
    outlier when it departs from the medians of the frames before and after it
    (same direction), so the transit is never flagged.

    Parameters
    ----------
    series : ndarray, shape (n,) or (n, r)
        Per-frame flux (one or several statistics per frame, e.g. per row).
    valid : ndarray of bool, shape (n,)
        Frames to consider (the others are skipped, not bridged by zeros).
    window : int
        Odd window, ``window // 2`` frames on each side.
    sigma : float
        Threshold in robust sigmas of the residuals (per column).

    Returns
    -------
    ndarray of bool, shape (n,)
        True for outlier frames (any column beyond the threshold).
    """
    s = np.asarray(series, np.float64).reshape(len(series), -1)
    out = np.zeros(len(s), bool)
    live = np.flatnonzero(valid)
    if live.size < 3:
        return out
    values = s[live]
    left, right = side_medians(values, window)
    both = window_median(values, neighbour_offsets(window))
    scale = MAD_TO_SIGMA * np.median(np.abs(values - both), axis=0)
    threshold = np.where(scale > 0, sigma * scale, np.inf)
    out[live] = spike_mask(values, left, right, threshold[None]).any(axis=1)
    return out


# ---------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------


@dataclass
class _CdsPlan:
    """Pairing of the whole visit."""

    signal_idx: np.ndarray      #: (m,) signal-read index of each output frame
    first_idx: np.ndarray       #: (m,) first-read index, -1 when unpaired
    orphans: np.ndarray         #: first reads used by no pair


def _plan(axis: FrameAxisMeta, cfg: PairingConfig) -> _CdsPlan:
    signal_idx, first_idx = pair_reads(axis.time_s, axis.read_kind, order_by=cfg.order_by, policy=cfg.policy,
                                       window_s=cfg.window_s)
    firsts = np.flatnonzero(np.asarray(axis.read_kind) == 0)
    orphans = np.setdiff1d(firsts, first_idx[first_idx >= 0])
    return _CdsPlan(signal_idx, first_idx, orphans)


class CdsStage(Stage):
    """Correlated double sampling with pairing checks and cosmic-ray rejection (see the module docstring)."""

    name = "cds"
    title = "Correlated double sampling"
    Config = CdsConfig
    input_kind = "frames"
    output_kind = "frames"
    accepts_stream = True
    default_io = ("flat_corrected", "cds_corrected")

    def run(self, inp: FrameSource, cfg: CdsConfig, ctx: StageContext, writer: StoreWriter) -> dict:
        inst = ctx.instrument
        shape = inp.frame_shape
        plan = _plan(inp.axis, cfg.pairing)
        m = len(plan.signal_idx)
        if m == 0:
            raise ValueError(f"cds: input '{cfg.io.input_key}' ({inst}) has no signal reads (frame_read_kind 1)")
        read_var, read_var_source = input_read_var(inp, ctx.planet.calibration(inst), inst)
        static_good = (inp.read(0, 1).dq[0] & STATIC_BITS) == 0
        planes = writer.create_frames(m, shape)
        paired = np.zeros(m, bool)
        row_flux = np.zeros((m, shape[0]))
        n_nonfinite, n_bad_input, gaps = self._difference_pass(inp, cfg, ctx, plan, read_var, static_good, planes,
                                                               paired, row_flux)
        n_dropped_in = int(np.count_nonzero(inp.dropped_mask(ctx.chunk_frames)))
        first_idx = np.where(paired, plan.first_idx, -1)
        t_sig = inp.axis.time_s[plan.signal_idx]
        dt = np.where(paired, t_sig - inp.axis.time_s[np.maximum(plan.first_idx, 0)], np.nan)
        exptime = np.where(paired, inp.axis.exptime_s[plan.signal_idx]
                           - inp.axis.exptime_s[np.maximum(plan.first_idx, 0)], 0.0)
        out_axis = FrameAxisMeta(t_sig, exptime, np.full(m, 2, np.int8))

        stats = self._sampled_stats(planes, cfg.robust.window)
        cr_map = np.zeros(shape, np.int64)
        if cfg.robust.enabled:
            self._robust_pass(cfg.robust, ctx, planes, stats, static_good, row_flux, cr_map)
        t_gap, r_gap, c_gap = gaps
        np.add.at(row_flux, (t_gap, r_gap), stats.level.reshape(shape)[r_gap, c_gap])
        scale = stats.scale.reshape(shape)
        flux = row_flux.sum(axis=1)
        flux[~paired] = np.nan
        outliers = np.zeros(m, bool)
        if cfg.temporal_filter.enabled:
            tf = cfg.temporal_filter
            stat = row_flux if tf.statistic == "per_row" else flux
            outliers = temporal_outliers(stat, paired, window=tf.window, sigma=tf.sigma)
            idx = np.flatnonzero(outliers)
            if idx.size:
                planes[2][idx] = planes[2][idx] | DQ_DTYPE(DQ.OUTLIER)
        tally = DqTally()
        for start in range(0, m, ctx.chunk_frames):
            tally.add(planes[2][start:start + ctx.chunk_frames])
            release_pages(planes[2], frames=slice(start, start + ctx.chunk_frames))

        copy_frame_meta(inp, writer, out_axis)
        writer.put("pair_index", np.stack([first_idx, plan.signal_idx], axis=1), "frame index [first, signal]")
        writer.put("pair_dt_s", dt, "s")
        writer.put("orphan_index", plan.orphans, "frame index")
        writer.put("frame_flux", flux, "electron")
        writer.put("read_var", 2.0 * read_var, "electron2")
        if cfg.robust.enabled:
            writer.put("cosmic_ray_count", cr_map, "frames")
            writer.put("robust_scale", scale.astype(np.float32), "electron")
        metrics = self._metrics(inp, cfg, plan, paired, dt, flux, t_sig, outliers, cr_map, scale, tally,
                                n_nonfinite, n_bad_input, n_dropped_in, read_var_source)
        metrics["n_flux_filled"] = int(t_gap.size)
        return metrics

    @staticmethod
    def _difference_pass(inp: FrameSource, cfg: CdsConfig, ctx: StageContext, plan: _CdsPlan, read_var: np.ndarray,
                         static_good: np.ndarray, planes: tuple[np.ndarray, np.ndarray, np.ndarray],
                         paired: np.ndarray, row_flux: np.ndarray
                         ) -> tuple[int, int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """First pass: difference the pairs chunk by chunk; fill ``paired`` and ``row_flux``.

        ``row_flux`` sums the usable values of the statically good pixels of each
        paired frame; the returned ``(time, row, column)`` positions of statically
        good pixels unusable in a paired frame (saturated, ...) are filled with
        the pixel's level afterwards, so every frame's flux covers the same pixels.
        """
        m = len(plan.signal_idx)
        data_p, var_p, dq_p = planes
        # lowest input frame any later pair reads: a streamed input drops what is below it
        lowest = np.minimum(plan.signal_idx, np.where(plan.first_idx >= 0, plan.first_idx, plan.signal_idx))
        needed_from = np.append(np.minimum.accumulate(lowest[::-1])[::-1], inp.n_frames)
        n_nonfinite = n_bad_input = 0
        gaps: list[tuple[np.ndarray, ...]] = []
        shape = inp.frame_shape
        read_var2 = np.ascontiguousarray((np.float32(2.0) * np.asarray(read_var, np.float32)).reshape(-1))
        good_px = np.ascontiguousarray(static_good.reshape(-1))
        gap_buf = np.empty((1 << 16, 2), np.int64)
        rows = min(ctx.chunk_frames, m)      # output buffers reused by every chunk
        out_d, out_v = np.empty((rows, good_px.size), np.float32), np.empty((rows, good_px.size), np.float32)
        out_q = np.empty((rows, good_px.size), DQ_DTYPE)
        for start in range(0, m, ctx.chunk_frames):
            sl = slice(start, min(start + ctx.chunk_frames, m))
            k = sl.stop - sl.start
            has_first = plan.first_idx[sl] >= 0
            sig_idx = plan.signal_idx[sl]
            blocks, block, row = inp.frame_blocks(np.concatenate([sig_idx, np.where(has_first, plan.first_idx[sl],
                                                                                   sig_idx)]))
            # runs of pairs whose two reads sit in the same two blocks: one kernel call each, no gathered copy
            sb, fb, sr, fr = block[:k], block[k:], row[:k], row[k:]
            cuts = [0, *(np.flatnonzero((sb[1:] != sb[:-1]) | (fb[1:] != fb[:-1])) + 1).tolist(), k]
            data, var, dq = out_d[:k], out_v[:k], out_q[:k]
            while True:
                counts = np.zeros(len(FRAME_COUNTS), np.int64)
                n_gap = 0
                for a, b in zip(cuts[:-1], cuts[1:]):
                    n_gap += cds_pairs(*blocks[sb[a]], sr[a:b], *blocks[fb[a]], fr[a:b], has_first[a:b], read_var2,
                                       good_px, shape[1], start + a, data[a:b], var[a:b], dq[a:b],
                                       paired[start + a:start + b], row_flux[start + a:start + b], counts,
                                       gap_buf[min(n_gap, len(gap_buf)):])
                if n_gap <= len(gap_buf):
                    break
                gap_buf = np.empty((n_gap, 2), np.int64)
            n_bad_input += report_bad_input(*counts[:2], stage="cds", key=cfg.io.input_key,
                                           require=cfg.validation.require_finite_inputs)
            n_nonfinite += int(counts[FRAME_COUNTS.index("n_nonfinite")])
            t_gap, px_gap = gap_buf[:n_gap].T
            gaps.append((t_gap.copy(), *np.divmod(px_gap, shape[1])))
            data_p[sl], var_p[sl], dq_p[sl] = (a.reshape(k, *shape) for a in (data, var, dq))
            release_pages(data_p, var_p, dq_p, frames=sl)
            used = np.concatenate([plan.signal_idx[sl], plan.first_idx[sl][has_first]])
            release_pages(inp.data, inp.var, inp.dq, frames=slice(int(used.min()), int(used.max()) + 1))
            inp.discard_before(int(needed_from[sl.stop]))
            ctx.report(0.6 * sl.stop / m, f"{sl.stop}/{m} CDS frames")
        t_gap, r_gap, c_gap = (np.concatenate(parts) for parts in zip(*gaps))
        return n_nonfinite, n_bad_input, (t_gap, r_gap, c_gap)

    @staticmethod
    def _robust_pass(rcfg: RobustConfig, ctx: StageContext, planes: tuple[FramePlane, FramePlane, FramePlane],
                     stats: PixelStats, static_good: np.ndarray, row_flux: np.ndarray, cr_map: np.ndarray) -> None:
        """Second pass over the written frames in time chunks with a halo (``stats`` from sampled frames).

        Each chunk is read back into reused buffers and tested by the
        :func:`calib_core.kernels.cosmic_ray_hits` kernel (the compiled
        :func:`detect_cosmic_rays`).  Replacements are applied after the whole
        pass, so every chunk is tested on the original values and the result
        does not depend on the chunk size.
        """
        data_p, var_p, dq_p = planes
        m, w = len(data_p), data_p.shape[2]
        halo = rcfg.window // 2
        threshold = spike_threshold(stats, rcfg.sigma)
        rows = min(m, ctx.chunk_frames + 2 * halo)
        buf = [np.empty((rows, *data_p.shape[1:]), p.dtype) for p in planes]
        filled, usable = np.empty((rows, stats.level.size), np.float32), np.empty((rows, stats.level.size), bool)
        room = 1 << 12
        hits = [np.empty(room, np.int64), np.empty(room, np.int64), *(np.empty(room, np.float32) for _ in range(3))]
        found: list[tuple[np.ndarray, ...]] = []
        for a in range(0, m, ctx.chunk_frames):
            b = min(m, a + ctx.chunk_frames)
            ext = slice(max(0, a - halo), min(m, b + halo))
            n = ext.stop - ext.start
            x, v, q = (p.read_into(ext.start, out[:n]).reshape(n, -1) for p, out in zip(planes, buf))
            while True:
                n_hit = cosmic_ray_hits(x, v, q, a - ext.start, b - ext.start, stats.level, stats.var_level,
                                        threshold, halo, filled[:n], usable[:n], *hits)
                if n_hit <= room:
                    break
                room = n_hit
                hits = [np.empty(room, h.dtype) for h in hits]
            if n_hit:
                t_hit, p_hit, new, new_var, old = (h[:n_hit].copy() for h in hits)
                found.append((t_hit + ext.start, p_hit, new, new_var, old))
            ctx.report(0.6 + 0.4 * b / m, f"cosmic rays: {b}/{m} frames")
        if found:
            t_idx, p_idx, new, new_var, old = (np.concatenate(parts) for parts in zip(*found))
            rr, cc = np.divmod(p_idx, w)
            good_px = static_good[rr, cc]
            np.add.at(row_flux, (t_idx[good_px], rr[good_px]), (new.astype(np.float64) - old)[good_px])
            np.add.at(cr_map, (rr, cc), 1)
            # written through the planes' memory maps a chunk of frames at a time (hits come in time order),
            # whose pages are let go after each chunk: the resident memory stays a chunk's worth
            bounds = np.searchsorted(t_idx, np.arange(0, m + ctx.chunk_frames, ctx.chunk_frames))
            for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
                if hi > lo:
                    at = (t_idx[lo:hi], rr[lo:hi], cc[lo:hi])
                    data_p[at], var_p[at] = new[lo:hi], new_var[lo:hi]
                    dq_p[at] = dq_p[at] | DQ_DTYPE(DQ.COSMIC_RAY | DQ.REPAIRED)
                    release_pages(data_p, var_p, dq_p, frames=slice(k * ctx.chunk_frames,
                                                                      (k + 1) * ctx.chunk_frames))

    @staticmethod
    def _sampled_stats(planes: tuple[FramePlane, FramePlane, FramePlane], window: int) -> PixelStats:
        """:class:`PixelStats` from evenly spaced frames and their neighbours read from the output.

        Each sampled frame and its neighbours are one short ``pread`` per plane
        into a reused buffer (as :func:`pixel_stats` takes them from an array).
        """
        data_p = planes[0]
        m, npx = len(data_p), int(np.prod(data_p.shape[1:]))
        rows = sample_times(m)
        offsets = neighbour_offsets(window)
        h = window // 2
        x, v = np.empty((rows.size, npx), np.float32), np.empty((rows.size, npx), np.float32)
        ok = np.empty((rows.size, npx), bool)
        near_x = np.empty((len(offsets), rows.size, npx), np.float32)
        near_ok = np.empty((len(offsets), rows.size, npx), bool)
        blocks = [np.empty((2 * h + 1, *data_p.shape[1:]), p.dtype) for p in planes]
        for i, t in enumerate(rows):
            lo, hi = max(0, t - h), min(m, t + h + 1)
            d, var, q = (p.read_into(lo, b[:hi - lo]).reshape(hi - lo, -1) for p, b in zip(planes, blocks))
            good = ((q & DO_NOT_USE_MASK) == 0) & np.isfinite(d)
            x[i], v[i], ok[i] = d[t - lo], var[t - lo], good[t - lo]
            for k, o in enumerate(offsets):
                j = min(max(t + o, 0), m - 1) - lo
                near_x[k, i], near_ok[k, i] = d[j], good[j]
        level = np.nan_to_num(masked_median(x, ok)).astype(np.float32)
        var_level = np.nan_to_num(masked_median(v, ok)).astype(np.float32)
        neighbours = [np.where(near_ok[k], near_x[k], level[None]) for k in range(len(offsets))]
        return PixelStats(level, var_level, robust_scale(x, neighbours, ok, var_level))

    @staticmethod
    def _metrics(inp: FrameSource, cfg: CdsConfig, plan: _CdsPlan, paired: np.ndarray, dt: np.ndarray,
                 flux: np.ndarray, t_sig: np.ndarray, outliers: np.ndarray, cr_map: np.ndarray, scale: np.ndarray,
                 tally: DqTally, n_nonfinite: int, n_bad_input: int, n_dropped_in: int, read_var_source: str) -> dict:
        m = len(paired)
        n_unpaired = int(m - paired.sum())
        n_cr = int(cr_map.sum())
        n_px = m * cr_map.size
        live_dt = dt[np.isfinite(dt)]
        t, y = decimate(t_sig, flux, 2048)
        return {
            "n_frames_in": inp.n_frames, "n_frames_out": m, "n_nonfinite": n_nonfinite, "dq_counts": tally.counts(),
            "n_nonfinite_input": n_bad_input,
            "pairing_order_by": cfg.pairing.order_by, "pairing_policy": cfg.pairing.policy,
            "pairing_window_s": cfg.pairing.window_s,
            "n_pairs": int(paired.sum()), "n_unpaired": n_unpaired, "unpaired_fraction": n_unpaired / m,
            "unpaired_frames": np.flatnonzero(~paired).tolist(),
            "n_orphan_reads": int(plan.orphans.size), "n_dropped_frames": n_dropped_in,
            "pair_dt_min_s": float(live_dt.min()) if live_dt.size else float("nan"),
            "pair_dt_median_s": float(np.median(live_dt)) if live_dt.size else float("nan"),
            "pair_dt_max_s": float(live_dt.max()) if live_dt.size else float("nan"),
            "n_cosmic_rays": n_cr, "cosmic_ray_frac": n_cr / n_px,
            "robust_scale_median_e": float(np.nanmedian(scale)) if np.isfinite(scale).any() else float("nan"),
            "n_outlier_frames": int(outliers.sum()), "outlier_frame_frac": float(outliers.sum()) / m,
            "outlier_frames": np.flatnonzero(outliers).tolist(),
            "flux_curve": {"time_s": t, "flux_e": y},
            "read_var_source": read_var_source,
        }

    def gates(self, metrics: dict, cfg: CdsConfig) -> list[Gate]:
        qc = cfg.quality_checks
        return [
            gate("pairing_integrity", metrics["unpaired_fraction"], "<=",
                 qc.pairing_integrity.max_unpaired_fraction, "fraction of CDS frames without a valid pair"),
            gate("cosmic_ray_fraction", metrics["cosmic_ray_frac"], "<=", qc.max_cosmic_ray_frac,
                 "fraction of pixel-frames flagged COSMIC_RAY"),
            gate("outlier_frames", metrics["outlier_frame_frac"], "<=", qc.max_outlier_frame_frac,
                 "fraction of frames flagged OUTLIER by the temporal filter"),
        ]

    def diagnostics(self, output: StoredOutput, metrics: dict, ctx: StageContext) -> list[dict]:
        curve = metrics.get("flux_curve", {})
        dt = np.asarray(output.fields["pair_dt_s"])
        time = np.asarray(output.meta["frame_time_s"])
        live = np.isfinite(dt)
        plots = [
            {"kind": "curve", "title": "CDS frame flux (usable static pixels)", "x": curve.get("time_s", []),
             "y": curve.get("flux_e", []), "xlabel": "time (s)", "ylabel": "electrons"},
            {"kind": "curve", "title": "Pair time gap (signal - first read)", "x": time[live], "y": dt[live],
             "xlabel": "time (s)", "ylabel": "gap (s)"},
        ]
        if "cosmic_ray_count" in output.fields:
            plots.append({"kind": "image", "title": f"Cosmic-ray hits per pixel ({metrics.get('n_cosmic_rays')})",
                          "data": np.asarray(output.fields["cosmic_ray_count"]), "xlabel": "detector column",
                          "ylabel": "detector row", "clabel": "frames flagged"})
        paired = np.flatnonzero(live)
        index = int(paired[len(paired) // 2]) if paired.size else 0
        plots.append(frame_image(output, index, title="CDS electrons"))
        keys = ("pairing_order_by", "pairing_policy", "pairing_window_s", "n_pairs", "n_unpaired",
                "unpaired_fraction", "n_orphan_reads", "n_dropped_frames", "pair_dt_median_s", "n_cosmic_rays",
                "n_outlier_frames")
        plots.append({"kind": "table", "title": "CDS summary", "rows": [[k, metrics.get(k)] for k in keys]})
        return plots


STAGE = CdsStage()
