"""The CDS stage: a thin adapter over :mod:`.pairing`, :mod:`.difference`, :mod:`.cosmic_rays` and :mod:`.outliers`."""

from __future__ import annotations

import numpy as np

from ...diagnostics import Image, Plot, Series, Table, decimate, frame_image
from ...dq import DO_NOT_USE_MASK, DQ, DQ_DTYPE
from ...frames import FrameAxisMeta, FrameSource, copy_frame_meta
from ...robust import masked_median
from ...store import FramePlane, StoredOutput, StoreWriter, release_pages
from ..base import Gate, Stage, StageContext, gate
from ..errors import DataError
from ..maps import input_read_var
from ..pixels import FRAME_COUNTS, DqTally, report_bad_input
from . import INFO
from .config import CdsConfig, RobustConfig
from .cosmic_rays import (PixelStats, cosmic_ray_hits, neighbour_offsets, robust_scale, sample_times,
                          spike_threshold)
from .difference import cds_pairs
from .outliers import temporal_outliers
from .pairing import PairPlan, plan_pairs

__all__ = ["CdsStage", "STAGE"]

#: dq bits that are the same in every frame of a pixel (set from calibration maps)
STATIC_BITS = int(DQ.DEAD | DQ.HOT | DQ.BAD_FLAT | DQ.REFERENCE)



class CdsStage(Stage):
    """Correlated double sampling with pairing checks and cosmic-ray rejection (see the module docstring)."""

    info = INFO
    Config = CdsConfig
    accepts_stream = True

    def run(self, inp: FrameSource, cfg: CdsConfig, ctx: StageContext, writer: StoreWriter) -> dict:
        inst = ctx.instrument
        shape = inp.frame_shape
        plan = plan_pairs(inp.axis, cfg.pairing)
        m = len(plan.signal_idx)
        if m == 0:
            raise DataError(f"cds: input '{cfg.io.input_key}' ({inst}) has no signal reads (frame_read_kind 1)")
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
        cr_map, cr_frames = np.zeros(shape, np.int64), np.zeros(m, np.int64)
        if cfg.robust.enabled:
            self._robust_pass(cfg.robust, ctx, planes, stats, static_good, row_flux, cr_map, cr_frames)
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
            writer.put("frame_cosmic_rays", cr_frames, "pixels")
            writer.put("robust_scale", scale.astype(np.float32), "electron")
        metrics = self._metrics(inp, cfg, plan, paired, dt, flux, t_sig, outliers, cr_map, scale, tally,
                                n_nonfinite, n_bad_input, n_dropped_in, read_var_source)
        metrics["n_flux_filled"] = int(t_gap.size)
        return metrics

    @staticmethod
    def _difference_pass(inp: FrameSource, cfg: CdsConfig, ctx: StageContext, plan: PairPlan, read_var: np.ndarray,
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
                     stats: PixelStats, static_good: np.ndarray, row_flux: np.ndarray, cr_map: np.ndarray,
                     cr_frames: np.ndarray) -> None:
        """Second pass over the written frames in time chunks with a halo (``stats`` from sampled frames).

        Each chunk is read back into reused buffers and tested by the
        :func:`.cosmic_rays.cosmic_ray_hits` kernel.  Replacements are applied after the whole
        pass, so every chunk is tested on the original values and the result
        does not depend on the chunk size.  ``cr_map`` counts the hits per pixel, ``cr_frames`` per frame.
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
            cr_frames += np.bincount(t_idx, minlength=m)
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
    def _metrics(inp: FrameSource, cfg: CdsConfig, plan: PairPlan, paired: np.ndarray, dt: np.ndarray,
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

    def diagnostics(self, output: StoredOutput, metrics: dict, ctx: StageContext) -> list[Plot]:
        curve = metrics.get("flux_curve", {})
        dt = np.asarray(output.fields["pair_dt_s"])
        time = np.asarray(output.fields["frame_time_s"])
        live = np.isfinite(dt)
        hours = "time since visit start (h)"
        # the gap itself is constant to float precision: show its deviation from the nominal gap at 1 us resolution
        nominal = float(np.median(dt[live])) if live.any() else float("nan")
        deviation_ms = np.round((dt[live] - nominal) * 1e3, 3)
        worst = float(np.max(np.abs(deviation_ms))) if deviation_ms.size else float("nan")
        flux_plot = Series("CDS frame flux (usable static pixels)",
                           np.asarray(curve.get("time_s", []), np.float64) / 3600.0, curve.get("flux_e", []),
                           xlabel=hours, ylabel="electrons", label="frame flux",
                           overlay=_frame_marks(output, metrics, curve))
        plots: list[Plot] = [
            flux_plot,
            Series(f"Pair time gap minus nominal {nominal:.6g} s (max |deviation| {worst:.3g} ms)",
                   time[live] / 3600.0, deviation_ms, xlabel=hours, ylabel="deviation (ms, 1 us resolution)",
                   style="points"),
        ]
        if "cosmic_ray_count" in output.fields:
            plots.append(Image(f"Cosmic-ray hits per pixel ({metrics.get('n_cosmic_rays')})",
                               np.asarray(output.fields["cosmic_ray_count"]), clabel="frames flagged"))
        paired = np.flatnonzero(live)
        plots.append(frame_image(output, int(paired[len(paired) // 2]) if paired.size else 0, title="CDS electrons"))
        keys = ("pairing_order_by", "pairing_policy", "pairing_window_s", "n_pairs", "n_unpaired",
                "unpaired_fraction", "n_orphan_reads", "n_dropped_frames", "pair_dt_median_s", "n_cosmic_rays",
                "n_outlier_frames")
        plots.append(Table("CDS summary", [[k, metrics.get(k)] for k in keys]))
        return plots


def _frame_marks(output: StoredOutput, metrics: dict, curve: dict) -> list[Series]:
    """Markers on the flux plot's time axis: unpaired or dropped pairs (no flux: on the curve's lower edge),
    temporal-outlier frames and frames with cosmic-ray hits (at their flux), each labelled with its count."""
    time_h = np.asarray(output.fields["frame_time_s"], np.float64) / 3600.0
    flux = np.asarray(output.fields["frame_flux"], np.float64) if "frame_flux" in output.fields else None
    shown = np.asarray(curve.get("flux_e", []), np.float64)
    rail = float(np.nanmin(shown)) if np.isfinite(shown).any() else 0.0
    hits = np.asarray(output.fields["frame_cosmic_rays"]) if "frame_cosmic_rays" in output.fields else None
    groups = []
    for key, label in (("unpaired_frames", "unpaired or dropped"), ("outlier_frames", "outlier frame")):
        idx = np.asarray([i for i in metrics.get(key, []) if 0 <= i < time_h.size], int)
        groups.append((idx, f"{label} ({idx.size})"))
    if hits is not None and hits.size == time_h.size:
        idx = np.flatnonzero(hits)
        groups.append((idx, f"cosmic-ray hits ({idx.size} frames, {int(hits.sum())} pixels)"))
    marks = []
    for idx, label in groups:
        if not idx.size:
            continue
        y = flux[idx] if flux is not None else np.full(idx.size, np.nan)
        marks.append(Series("", time_h[idx], np.where(np.isfinite(y), y, rail), label=label, style="points"))
    return marks


STAGE = CdsStage()
