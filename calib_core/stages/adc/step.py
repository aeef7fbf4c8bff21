"""The ADC stage: a thin adapter over :mod:`.convert` (the compiled pass) and :mod:`.reference` (see the package doc)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...diagnostics import Histogram, Plot, Series, Table, decimate, frame_image
from ...dq import DQ_DTYPE
from ...frames import ChunkBuffers, FrameAxisMeta, Frames, write_frame_meta
from ...store import StoredOutput, StoreWriter, release_pages
from ..base import FrameStream, Gate, RawInput, Stage, StageContext, gate
from ..errors import DataError
from ..maps import map_label, validate_map
from ..pixels import N_DN_VALUES, DqTally
from ..streaming import preview_index, run_stream
from . import INFO
from .config import AdcConfig
from .conversion import resolve_conversion
from .convert import ADC_COUNTS, adc_convert, adc_finish
from .reference import common_mode, reference_columns

__all__ = ["AdcStage", "STAGE"]

#: the raw-DN histogram (a diagnostic) uses every this-many-th live read; pile-up counts use all reads
HIST_FRAME_STRIDE = 8


@dataclass
class _AdcSetup:
    """Everything a chunk needs, resolved once per run (arrays laid out for the kernels)."""

    read_var: np.ndarray          #: (H, W) float32, e-^2 per read (plus the reference-offset estimate, once known)
    coeffs: np.ndarray            #: (K, H*W) float32 linear_corr, (0, H*W) without linearisation
    ref_cols: np.ndarray | None   #: (W,) bool reference columns, or None
    ref_px: np.ndarray            #: (H*W,) bool pixels of the reference columns, (0,) without reference pixels


class _AdcAccumulator:
    """Counters and diagnostic accumulations of one ADC run (arrays the kernels add into)."""

    def __init__(self, n_frames: int, diagnostics: bool):
        self.dq = DqTally()
        self.frame_mean = np.full(n_frames, np.nan) if diagnostics else None
        self.dn_hist = np.zeros(N_DN_VALUES, np.int64)
        self.hist_stride = HIST_FRAME_STRIDE if diagnostics else 0
        self.hist_frames = 0
        self.counts = np.zeros(len(ADC_COUNTS), np.int64)     #: see :data:`.convert.ADC_COUNTS`
        self.max_corr = np.zeros(1)

    def count(self, name: str) -> int:
        return int(self.counts[ADC_COUNTS.index(name)])


class _Limits:
    """The finishing thresholds of a config as float32 kernel arguments."""

    def __init__(self, cfg: "AdcConfig"):
        f32 = np.float32
        self.lo, self.hi = f32(cfg.linearization.valid_min_e), f32(cfg.linearization.valid_max_e)
        self.full_well = f32(cfg.saturation.full_well_e)
        self.clamp, self.cmin, self.cmax = bool(cfg.clamp.enabled), f32(cfg.clamp.min_e), f32(cfg.clamp.max_e)

    def args(self, setup: "_AdcSetup") -> tuple:
        return (setup.coeffs, self.lo, self.hi, self.full_well, self.clamp, self.cmin, self.cmax,
                setup.read_var.reshape(-1), setup.ref_px)


def _frame_axis(axis: Any, n: int, inst: str) -> FrameAxisMeta:
    frame_axis = FrameAxisMeta(np.asarray(axis.time_s, np.float64), np.asarray(axis.exptime_s, np.float64),
                               np.asarray(axis.read_kind, np.int8))
    if len(frame_axis) != n:
        raise DataError(f"adc: {inst} frame axis has {len(frame_axis)} entries but the signal has {n} frames")
    return frame_axis


def _check_chunk_shape(raw: np.ndarray, frame_shape: tuple[int, ...], first: int, inst: str) -> None:
    if raw.shape[1:] != tuple(frame_shape):
        raise DataError(f"adc: {inst} chunk at frame {first} has frame shape {raw.shape[1:]}, "
                         f"expected {tuple(frame_shape)}")


def _convert(raw: np.ndarray, data: np.ndarray, var: np.ndarray, dq: np.ndarray, sl: slice, finish: bool,
             gain: float, offset: float, cfg: "AdcConfig", limits: tuple, dropped: np.ndarray,
             acc: _AdcAccumulator) -> None:
    """:func:`.convert.adc_convert` of one raw chunk (frames ``sl``) into ``data``/``var``/``dq``."""
    n = len(raw)
    frame_mean = acc.frame_mean[sl] if acc.frame_mean is not None else np.empty(0)
    acc.hist_frames += adc_convert(raw.reshape(n, -1), np.float32(gain), np.float32(offset),
                                   int(cfg.saturation.level_dn), finish, *limits, acc.hist_stride,
                                   data.reshape(n, -1), var.reshape(n, -1), dq.reshape(n, -1), dropped[sl],
                                   frame_mean, acc.counts, acc.max_corr, acc.dn_hist, acc.dq.hist)


def _check_usable(n: int, dropped: np.ndarray, acc: "_AdcAccumulator", cfg: AdcConfig, signal: Any) -> None:
    """Refuse an instrument without one usable pixel-read: every frame dropped, at 0 DN or saturated.

    Nothing downstream can be computed from such a signal (photometry would find
    no usable pixel); the stage that sees it says so, naming the file.
    """
    n_dropped = int(np.count_nonzero(dropped))
    if n_dropped == n:
        raise DataError(f"all {n} frames are dropped (every pixel at 0 DN, how telemetry gaps are written) in "
                        f"{signal}; expected detector reads")
    raw_px, zero, sat = (int(acc.count(k)) for k in ("n_raw_pixels", "n_zero", "n_raw_saturated"))
    if raw_px and zero + sat >= raw_px:
        level = f"calib.adc.saturation.level_dn = {cfg.saturation.level_dn} DN"
        what = (f"saturated (every pixel at or above {level})" if sat >= raw_px else
                "at the ADC floor (every pixel at 0 DN)" if zero >= raw_px else
                f"at the ADC floor or saturated (every pixel at 0 DN or at or above {level})")
        live = f"{n - n_dropped} frames that are not dropped ({n_dropped} are)" if n_dropped else f"{n} frames"
        raise DataError(f"all {live} are {what} in {signal}; expected detector reads with usable pixels")


class _AdcStream(FrameStream):
    """Single-pass ADC conversion of raw chunks ``(first, uint16 frames)``.

    ``frame_shape`` and ``read_var`` are known once the first chunk arrived
    (the calibration maps are checked against the frames' shape then).
    """

    def __init__(self, inp: RawInput, cfg: AdcConfig, ctx: StageContext):
        self.cfg, self.planet, self.inst = cfg, ctx.planet, ctx.instrument
        self.n_frames = int(inp.n_frames)
        axis = self.planet.axis(self.inst)
        self.axis = _frame_axis(axis, self.n_frames, self.inst)
        self.wavelength_um = getattr(axis, "wavelength_um", None)
        self.gain, self.offset, self.source = resolve_conversion(cfg.conversion, self.planet, self.inst)
        self.acc = _AdcAccumulator(self.n_frames, cfg.diagnostics.enabled)
        self.dropped = np.zeros(self.n_frames, bool)
        self.setup: _AdcSetup | None = None
        self.buffers = ChunkBuffers()        #: output planes, reused once the chain's reader discards a chunk

    def process(self, chunk: tuple[int, np.ndarray]) -> Frames:
        first, raw = chunk
        raw = np.ascontiguousarray(raw, np.uint16)
        if self.setup is None:
            self.frame_shape = tuple(raw.shape[1:])
            self.setup = AdcStage._setup(self.cfg, self.planet, self.inst, self.frame_shape)
            self.read_var = self.setup.read_var
            self.limits = _Limits(self.cfg)
        else:
            _check_chunk_shape(raw, self.frame_shape, first, self.inst)
        sl = slice(first, first + len(raw))
        data, var, dq = self.buffers.take(len(raw), self.frame_shape, DQ_DTYPE)
        _convert(raw, data, var, dq, sl, True, self.gain, self.offset, self.cfg, self.limits.args(self.setup),
                 self.dropped, self.acc)
        return Frames(data, var, dq, self.axis.take(sl), first)

    def finish(self, writer: StoreWriter) -> dict:
        if self.setup is None:
            raise DataError(f"adc: {self.inst} signal has no frames")
        _check_usable(self.n_frames, self.dropped, self.acc, self.cfg, self.planet.signal_path(self.inst))
        write_frame_meta(writer, self.axis, self.frame_shape, self.wavelength_um)
        writer.put("read_var", self.setup.read_var, "electron2")
        return AdcStage._metrics(self.n_frames, self.dropped, self.gain, self.offset, self.source, None, self.axis,
                                 self.cfg, self.acc)


class AdcStage(Stage):
    """DN -> electrons with variance and data-quality planes (see the module docstring)."""

    info = INFO
    Config = AdcConfig

    def can_stream(self, cfg: Any) -> bool:
        return not cfg.reference_pixel.use

    def stream(self, inp: RawInput, cfg: AdcConfig, ctx: StageContext) -> "_AdcStream | None":
        """The single-pass conversion as a stream; None with reference pixels (their offsets need every frame)."""
        return _AdcStream(inp, cfg, ctx) if self.can_stream(cfg) else None

    def run(self, inp: RawInput, cfg: AdcConfig, ctx: StageContext, writer: StoreWriter) -> dict:
        if not cfg.reference_pixel.use:
            return run_stream(_AdcStream(inp, cfg, ctx), inp.iter_chunks(ctx.chunk_frames), writer, ctx)
        return self._run_two_pass(inp, cfg, ctx, writer)

    def _run_two_pass(self, inp: RawInput, cfg: AdcConfig, ctx: StageContext, writer: StoreWriter) -> dict:
        """Reference-pixel mode: electrons of every frame first, then the common-mode offsets and the rest."""
        planet, inst = ctx.planet, ctx.instrument
        n = int(inp.n_frames)
        axis = planet.axis(inst)
        frame_axis = _frame_axis(axis, n, inst)
        gain, offset, source = resolve_conversion(cfg.conversion, planet, inst)
        acc = _AdcAccumulator(n, cfg.diagnostics.enabled)
        dropped = np.zeros(n, bool)
        planes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        setup: _AdcSetup | None = None
        limits = _Limits(cfg)
        for first, raw in inp.iter_chunks(ctx.chunk_frames):
            raw = np.ascontiguousarray(raw, np.uint16)
            if planes is None:
                frame_shape = raw.shape[1:]
                setup = self._setup(cfg, planet, inst, frame_shape)
                planes = writer.create_frames(n, frame_shape)
            else:
                _check_chunk_shape(raw, planes[0].shape[1:], first, inst)
            sl = slice(first, first + len(raw))
            e, dq = np.empty(raw.shape, np.float32), np.empty(raw.shape, DQ_DTYPE)
            _convert(raw, e, e, dq, sl, False, gain, offset, cfg, limits.args(setup), dropped, acc)
            planes[0][sl], planes[2][sl] = e, dq
            release_pages(*planes, frames=sl)
            ctx.report(sl.stop / n * 0.5, f"{sl.stop}/{n} frames converted")
        if planes is None or setup is None:
            raise DataError(f"adc: {inst} signal has no frames")
        _check_usable(n, dropped, acc, cfg, planet.signal_path(inst))
        offsets, estimate_var = common_mode(planes[0], setup.ref_cols, frame_axis.read_kind, dropped,
                                            cfg.reference_pixel.strategy, ctx.chunk_frames)
        setup.read_var += np.float32(estimate_var)
        for start in range(0, n, ctx.chunk_frames):
            sl = slice(start, min(start + ctx.chunk_frames, n))
            chunk, dq = np.array(planes[0][sl]), np.array(planes[2][sl])
            chunk -= offsets[sl, None, None].astype(np.float32)
            var = np.empty_like(chunk)
            k = len(chunk)
            adc_finish(chunk.reshape(k, -1), dq.reshape(k, -1), dropped[sl], *limits.args(setup), var.reshape(k, -1),
                       acc.frame_mean[sl] if acc.frame_mean is not None else np.empty(0), acc.counts, acc.max_corr,
                       acc.dq.hist)
            planes[0][sl], planes[1][sl], planes[2][sl] = chunk, var, dq
            release_pages(*planes, frames=sl)
            ctx.report(0.5 + 0.5 * sl.stop / n, f"{sl.stop}/{n} frames corrected")
        write_frame_meta(writer, frame_axis, planes[0].shape[1:], getattr(axis, "wavelength_um", None))
        writer.put("read_var", setup.read_var, "electron2")
        writer.put("reference_offset", offsets, "electron")
        return self._metrics(n, dropped, gain, offset, source, offsets, frame_axis, cfg, acc)

    @staticmethod
    def _setup(cfg: AdcConfig, planet: Any, inst: str, frame_shape: tuple[int, int]) -> _AdcSetup:
        cal = planet.calibration(inst)
        val = cfg.validation
        read = validate_map(cal.read, label=map_label(cal, inst, "read"), frame_shape=frame_shape,
                            check_shape=val.check_shape_compatibility, require_finite=val.require_finite_inputs)
        read_var = np.square(read.astype(np.float32))
        n_px = int(np.prod(frame_shape))
        coeffs = np.zeros((0, n_px), np.float32)
        if cfg.linearization.method == "poly":
            coeffs = validate_map(cal.linear_corr, label=map_label(cal, inst, "linear_corr"),
                                  frame_shape=frame_shape, check_shape=val.check_shape_compatibility,
                                  require_finite=val.require_finite_inputs, leading=True)
            coeffs = np.ascontiguousarray(coeffs.reshape(len(coeffs), n_px), np.float32)
        ref_cols, ref_px = None, np.zeros(0, bool)
        if cfg.reference_pixel.use:
            ref_cols = reference_columns(frame_shape[1], cfg.reference_pixel.border_px)
            ref_px = np.broadcast_to(ref_cols, frame_shape).reshape(-1).copy()
        return _AdcSetup(np.ascontiguousarray(read_var), coeffs, ref_cols, ref_px)

    @staticmethod
    def _metrics(n: int, dropped: np.ndarray, gain: float, offset: float, source: str,
                 offsets: np.ndarray | None, axis: FrameAxisMeta, cfg: AdcConfig, acc: _AdcAccumulator) -> dict:
        n_dropped = int(dropped.sum())
        dq_counts = acc.dq.counts()
        c = acc.count
        raw_px = max(c("n_raw_pixels"), 1)
        m: dict[str, Any] = {
            "n_frames_in": n, "n_frames_out": n, "n_nonfinite": c("n_nonfinite"), "dq_counts": dq_counts,
            "gain": gain, "offset": offset, "conversion_source": source,
            "n_dropped_frames": n_dropped, "dropped_frame_frac": n_dropped / max(n, 1),
            "dropped_frames": np.flatnonzero(dropped).tolist(),
            "n_adc_floor": c("n_zero"), "zero_frac": c("n_zero") / raw_px,
            "n_raw_saturated": c("n_raw_saturated"), "saturated_frac": c("n_raw_saturated") / raw_px,
            "n_saturated": dq_counts["SATURATED"],
            "n_nonlinear": c("n_nonlinear"), "nonlinear_frac": c("n_nonlinear") / raw_px,
            "linearization": cfg.linearization.method, "max_linearity_correction_e": float(acc.max_corr[0]),
            "n_clamped": c("n_clamped"),
        }
        if offsets is not None:
            live = offsets[~dropped]
            m["reference_offset_std_e"] = float(np.std(live)) if live.size else 0.0
            m["reference_offset_curve"] = dict(zip(("time_s", "offset_e"),
                                                   decimate(axis.time_s, offsets, cfg.diagnostics.max_curve_points)))
        if acc.frame_mean is not None:
            edges = np.unique(np.round(np.linspace(0, N_DN_VALUES, cfg.diagnostics.hist_bins + 1)).astype(np.int64))
            m["hist_counts"] = np.add.reduceat(acc.dn_hist, edges[:-1]).tolist()
            m["hist_edges"] = edges.tolist()
            m["hist_frames"] = acc.hist_frames
            m.update(_robust_histogram(acc.dn_hist, cfg.diagnostics.hist_bins))
            for kind, label in ((0, "first"), (1, "signal")):
                sel = axis.read_kind == kind
                t, y = decimate(axis.time_s[sel], acc.frame_mean[sel], cfg.diagnostics.max_curve_points)
                m[f"frame_mean_{label}_curve"] = {"time_s": t, "mean_e": y}
        return m

    def gates(self, metrics: dict, cfg: AdcConfig) -> list[Gate]:
        qc = cfg.quality_checks
        return [
            gate("zero_pileup", metrics["zero_frac"], "<=", qc.max_zero_frac,
                 "fraction of raw pixel-reads at 0 DN (ADC floor pile-up)"),
            gate("saturation_pileup", metrics["saturated_frac"], "<=", qc.max_saturated_frac,
                 "fraction of raw pixel-reads at/above the ADC ceiling"),
            gate("dropped_frames", metrics["dropped_frame_frac"], "<=", qc.max_dropped_frame_frac,
                 "fraction of frames missing from telemetry"),
            gate("nonlinear_range", metrics["nonlinear_frac"], "<=", qc.max_nonlinear_frac,
                 "fraction of pixel-reads outside the linearity correction's valid range"),
        ]

    def diagnostics(self, output: StoredOutput, metrics: dict, ctx: StageContext) -> list[Plot]:
        plots: list[Plot] = []
        if "hist_robust_counts" in metrics:
            lo, hi = metrics["hist_robust_range"]
            plots.append(Histogram(f"Raw counts {lo}-{hi} DN, every {HIST_FRAME_STRIDE}th read "
                                   f"({metrics.get('n_adc_floor', 0)} reads at 0 DN, "
                                   f"{metrics.get('n_raw_saturated', 0)} saturated)",
                                   np.asarray(metrics["hist_robust_counts"]),
                                   np.asarray(metrics["hist_robust_edges"]), xlabel="DN"))
        elif "hist_counts" in metrics:
            plots.append(Histogram(f"Raw counts, every {HIST_FRAME_STRIDE}th read (zero / saturation pile-ups)",
                                   np.asarray(metrics["hist_counts"]), np.asarray(metrics["hist_edges"]),
                                   xlabel="DN"))
        kinds = np.asarray(output.fields["frame_read_kind"])
        plots.append(frame_image(output, preview_index(kinds, len(kinds)), title="Electrons after ADC (signal read)"))
        for label in ("first", "signal"):
            curve = metrics.get(f"frame_mean_{label}_curve")
            if curve:
                plots.append(Series(f"Mean electrons per {label} read (usable pixels)",
                                    np.asarray(curve["time_s"]) / 3600.0, curve["mean_e"],
                                    xlabel="time since visit start (h)", ylabel="electrons"))
        if "reference_offset_curve" in metrics:
            curve = metrics["reference_offset_curve"]
            plots.append(Series("Reference-pixel common-mode offset", np.asarray(curve["time_s"]) / 3600.0,
                                curve["offset_e"], xlabel="time since visit start (h)", ylabel="electrons"))
        keys = ("gain", "offset", "conversion_source", "linearization", "n_dropped_frames", "n_adc_floor",
                "n_raw_saturated", "n_saturated", "n_nonlinear", "n_clamped", "max_linearity_correction_e")
        plots.append(Table("ADC summary", [[k, metrics.get(k)] for k in keys]))
        return plots


def _robust_histogram(dn_hist: np.ndarray, bins: int) -> dict:
    """Histogram of the sampled raw values over their central range (0.1-99.9 %, pile-ups excluded).

    The full 0..65535 DN range makes the data one spike; the pile-ups at 0 DN and at the
    ceiling are counted by ``n_adc_floor`` / ``n_raw_saturated`` instead.
    """
    inner = np.asarray(dn_hist, np.int64).copy()
    inner[0] = inner[-1] = 0
    total = int(inner.sum())
    if total == 0:
        return {}
    cum = np.cumsum(inner)
    lo = int(np.searchsorted(cum, 0.001 * total))
    hi = int(np.searchsorted(cum, 0.999 * total)) + 1
    edges = np.unique(np.round(np.linspace(lo, hi, min(bins, hi - lo) + 1)).astype(np.int64))
    counts = np.add.reduceat(inner[: edges[-1]], edges[:-1]) if edges.size > 1 else np.array([inner[lo]])
    return {"hist_robust_counts": counts.tolist(), "hist_robust_edges": edges.tolist(),
            "hist_robust_range": [lo, hi]}


STAGE = AdcStage()
