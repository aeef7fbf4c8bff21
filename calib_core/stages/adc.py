"""ADC stage: raw DN -> electrons, reference pixels, linearisation, saturation.

Order of operations for every read (frame) of a visit:

1. ``e = DN / gain + offset`` (electrons; gain/offset from ``adc_info.csv`` or
   the config), the raw-DN flags ``ADC_FLOOR`` (0 DN), ``SATURATED``
   (>= ``saturation.level_dn``) and ``DROPPED`` (an all-zero telemetry frame);
2. optional reference-pixel common-mode correction: for each frame, the
   clipped mean (or median) over the quiet pixels of the left/right border
   columns of (pixel - the pixel's time median for the frame's read kind),
   minus the time median of that level, is subtracted from the whole frame.
   The per-pixel template keeps the static stellar wings out of the estimate;
   their *variation* (e.g. the transit seen in the wings) does leak into the
   offset, at the level of the wing flux times the depth.  The estimate's
   variance is added to every pixel's read variance; the border columns are
   flagged ``REFERENCE``;
3. optional linearisation with the per-pixel polynomial ``linear_corr``
   (``e_lin = sum_k c_k e^k``, the organisers' ``apply_linear_corr``), ``NONLINEAR``
   outside ``[valid_min_e, valid_max_e]``; ``SATURATED`` at/above the full well;
4. optional clamp, and the variance ``read^2 + max(e_lin, 0)`` (read noise plus
   the Poisson variance of the charge accumulated since the reset).

The helpers it shares with the other stages live in :mod:`calib_core.stages.common`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from ..config.base import ConfigError, IOConfig, QualityChecks, StageConfig, opt
from ..dq import DQ, DQ_DTYPE
from ..frames import FrameAxisMeta, Frames, StoredOutput, StoreWriter
from ..kernels import ADC_COUNTS, adc_convert, adc_finish
from .base import FrameStream, Gate, RawInput, Stage, StageContext, gate
from .common import (MAD_TO_SIGMA, N_DN_VALUES, DqTally, decimate, frame_image, map_label,
                     preview_index, release_pages, run_stream, validate_map,
                     write_frame_meta)

__all__ = [
    # config
    "AdcConfig", "AdcQC", "ConversionConfig", "ReferencePixelConfig", "LinearizationConfig",
    "ClampConfig", "SaturationConfig", "AdcDiagnosticsConfig",
    # kernels
    "dn_to_electrons", "raw_dq", "reference_columns", "reference_levels", "common_mode_offsets",
    "linearize", "adc_variance", "resolve_conversion",
    # stage
    "AdcStage", "STAGE",
]

#: asymptotic variance of a sample median relative to ``sigma^2 / n`` (Gaussian)
MEDIAN_VARIANCE_FACTOR = math.pi / 2.0
#: the raw-DN histogram (a diagnostic) uses every this-many-th live read; pile-up counts use all reads
HIST_FRAME_STRIDE = 8
#: frames per read kind used for the reference-pixel template
TEMPLATE_FRAMES = 255
#: reference pixels noisier than this many times the median reference scatter are left out
QUIET_FACTOR = 1.5
#: reference-pixel deviations beyond this many of their scatters are left out of the mean
REF_CLIP_SIGMA = 5.0


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------


@dataclass
class ConversionConfig:
    source: str = opt("adc_info", choices=("adc_info", "value"),
                      doc="gain/offset from the dataset's adc_info.csv, or the values below")
    gain: float = opt(0.4369, gt=0, unit="DN/e-", doc="ADC gain used when source=value (e- = DN / gain + offset)")
    offset: float = opt(-1000.0, unit="e-", doc="ADC offset used when source=value (e- = DN / gain + offset)")


@dataclass
class ReferencePixelConfig:
    use: bool = opt(False, doc="subtract a per-frame common-mode offset measured on border reference columns")
    strategy: str = opt("border_mean", choices=("border_mean", "border_median"),
                        doc="per-frame level of the quiet reference pixels: clipped mean or median")
    border_px: int = opt(4, ge=1, unit="px", doc="columns at each of the left and right edges used as reference")


@dataclass
class LinearizationConfig:
    method: str = opt("poly", choices=("none", "poly"),
                      doc="none, or the per-pixel degree-5 polynomial of the calibration linear_corr map")
    valid_min_e: float = opt(-500.0, unit="e-",
                             doc="inputs below this are outside the polynomial's valid range (NONLINEAR)")
    valid_max_e: float = opt(1.0e5, unit="e-",
                             doc="inputs above this are outside the polynomial's valid range (NONLINEAR)")

    def check(self, prefix: str) -> None:
        if self.valid_max_e <= self.valid_min_e:
            raise ConfigError(f"{prefix}.valid_max_e", self.valid_max_e,
                              f"must be > {prefix}.valid_min_e ({self.valid_min_e:g})")


@dataclass
class ClampConfig:
    enabled: bool = opt(True, doc="clip the output electrons to [min_e, max_e] (clipped values are counted)")
    min_e: float = opt(-1.0e4, unit="e-", doc="lower clamp")
    max_e: float = opt(1.0e7, unit="e-", doc="upper clamp")

    def check(self, prefix: str) -> None:
        if self.max_e <= self.min_e:
            raise ConfigError(f"{prefix}.max_e", self.max_e, f"must be > {prefix}.min_e ({self.min_e:g})")


@dataclass
class SaturationConfig:
    level_dn: int = opt(65535, ge=1, le=65535, unit="DN", doc="raw values at or above this are SATURATED (ADC ceiling)")
    full_well_e: float = opt(1.8e5, gt=0, unit="e-", doc="linearised charge at or above this is SATURATED (full well)")


@dataclass
class AdcDiagnosticsConfig:
    enabled: bool = opt(True, doc="accumulate the raw-DN histogram and per-frame mean curves (off: gate inputs only)")
    hist_bins: int = opt(256, ge=8, le=N_DN_VALUES, doc="bins of the raw-DN histogram over 0..65535 DN")
    max_curve_points: int = opt(2048, ge=16, doc="per-frame curves are block-averaged to at most this many points")


@dataclass
class AdcQC(QualityChecks):
    max_zero_frac: float = opt(0.01, ge=0, le=1,
                               doc="max fraction of raw pixel-reads at 0 DN (dropped frames excluded)")
    max_saturated_frac: float = opt(0.01, ge=0, le=1,
                                    doc="max fraction of raw pixel-reads at/above saturation.level_dn")
    max_dropped_frame_frac: float = opt(0.05, ge=0, le=1, doc="max fraction of frames dropped from telemetry")
    max_nonlinear_frac: float = opt(0.01, ge=0, le=1, doc="max fraction of pixel-reads outside the linearity range")


@dataclass
class AdcConfig(StageConfig):
    io: IOConfig = opt(IOConfig(input_key="raw_frames", output_key="adc_corrected"), doc="input/output keys")
    quality_checks: AdcQC = opt(AdcQC, doc="QC gates: raw zero/saturation pile-ups, dropped frames, linearity range")
    conversion: ConversionConfig = opt(ConversionConfig, doc="DN -> electrons")
    reference_pixel: ReferencePixelConfig = opt(ReferencePixelConfig, doc="common-mode correction from border columns")
    linearization: LinearizationConfig = opt(LinearizationConfig, doc="non-linearity correction")
    clamp: ClampConfig = opt(ClampConfig, doc="output clamp (safety guard)")
    saturation: SaturationConfig = opt(SaturationConfig, doc="SATURATED flags")
    diagnostics: AdcDiagnosticsConfig = opt(AdcDiagnosticsConfig, doc="diagnostic accumulations")


# ---------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------


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


def reference_columns(width: int, border_px: int) -> np.ndarray:
    """Boolean mask of the ``border_px`` leftmost and rightmost detector columns.

    Raises
    ------
    ValueError
        When ``2 * border_px`` does not leave any science column.
    """
    if not 0 < 2 * border_px < width:
        raise ValueError(f"calib.adc.reference_pixel.border_px = {border_px}: needs 0 < 2*border_px < "
                         f"frame width {width}")
    cols = np.zeros(width, bool)
    cols[:border_px] = cols[width - border_px:] = True
    return cols


def reference_levels(border: np.ndarray, template: np.ndarray, scatter: np.ndarray, *,
                     strategy: str = "border_mean") -> np.ndarray:
    """Per-frame common level of reference pixels relative to their static template.

    Subtracting a per-pixel template (each pixel's median over time for the
    frame's read kind) first removes the static spatial pattern of the border
    (stellar wings, bias structure), so the statistic over pixels is taken on a
    unimodal distribution centred on the frame's common-mode offset.

    Parameters
    ----------
    border : ndarray, shape (n, P)
        ``P`` reference pixels of ``n`` frames (e-).
    template : ndarray, shape (P,)
        Static level of each reference pixel (e-).
    scatter : ndarray, shape (P,)
        Temporal scatter of each reference pixel (e-).
    strategy : {"border_mean", "border_median"}
        ``border_mean``: mean after rejecting deviations beyond
        :data:`REF_CLIP_SIGMA` x scatter (cosmic rays, saturation);
        ``border_median``: plain median (robust, but quantised by the ADC step).

    Returns
    -------
    ndarray of float64, shape (n,)
        Reference level of each frame (e-).
    """
    diff = np.asarray(border, np.float32) - np.asarray(template, np.float32)
    if strategy == "border_median":
        return np.median(diff, axis=1).astype(np.float64)
    keep = np.abs(diff) <= REF_CLIP_SIGMA * np.asarray(scatter, np.float32)
    count = keep.sum(axis=1)
    total = np.where(keep, diff, 0).sum(axis=1, dtype=np.float64)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def common_mode_offsets(levels: np.ndarray, read_kind: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Common-mode offset of each frame: its reference level minus the time median of its read kind.

    Parameters
    ----------
    levels : ndarray, shape (n,)
        Per-frame reference levels (e-), see :func:`reference_levels`.
    read_kind : ndarray of int, shape (n,)
        0 first read, 1 signal read (the two kinds see different stellar wings).
    valid : ndarray of bool, shape (n,)
        Frames whose level is usable (False for dropped frames: offset 0).

    Returns
    -------
    ndarray of float64, shape (n,)
        Offsets (e-) to subtract from each frame.
    """
    levels = np.asarray(levels, np.float64)
    out = np.zeros_like(levels)
    for kind in np.unique(read_kind):
        sel = (read_kind == kind) & valid
        if sel.any():
            out[sel] = levels[sel] - np.median(levels[sel])
    return out


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


# ---------------------------------------------------------------------------
# helpers shared by the detector stages
# ---------------------------------------------------------------------------


def resolve_conversion(conversion: ConversionConfig | None, planet: Any, instrument: str) -> tuple[float, float, str]:
    """ADC gain (DN/e-), offset (e-) and their source.

    ``conversion`` None (e.g. the ADC stage is not in the profile) means ``adc_info``.
    """
    if conversion is not None and conversion.source == "value":
        return float(conversion.gain), float(conversion.offset), "value"
    gain, offset = planet.adc(instrument)
    return float(gain), float(offset), "adc_info"


def _histogram_plot(counts: Iterable[float], edges: Iterable[float], *, title: str, xlabel: str) -> dict:
    return {"kind": "histogram", "title": title, "xlabel": xlabel,
            "counts": np.asarray(list(counts)), "edges": np.asarray(list(edges)), "logy": True}


# ---------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------


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
        self.counts = np.zeros(len(ADC_COUNTS), np.int64)     #: see :data:`calib_core.kernels.ADC_COUNTS`
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
        raise ValueError(f"adc: {inst} frame axis has {len(frame_axis)} entries but the signal has {n} frames")
    return frame_axis


def _check_chunk_shape(raw: np.ndarray, frame_shape: tuple[int, ...], first: int, inst: str) -> None:
    if raw.shape[1:] != tuple(frame_shape):
        raise ValueError(f"adc: {inst} chunk at frame {first} has frame shape {raw.shape[1:]}, "
                         f"expected {tuple(frame_shape)}")


def _convert(raw: np.ndarray, data: np.ndarray, var: np.ndarray, dq: np.ndarray, sl: slice, finish: bool,
             gain: float, offset: float, cfg: "AdcConfig", limits: tuple, dropped: np.ndarray,
             acc: _AdcAccumulator) -> None:
    """:func:`calib_core.kernels.adc_convert` of one raw chunk (frames ``sl``) into ``data``/``var``/``dq``."""
    n = len(raw)
    frame_mean = acc.frame_mean[sl] if acc.frame_mean is not None else np.empty(0)
    acc.hist_frames += adc_convert(raw.reshape(n, -1), np.float32(gain), np.float32(offset),
                                   int(cfg.saturation.level_dn), finish, *limits, acc.hist_stride,
                                   data.reshape(n, -1), var.reshape(n, -1), dq.reshape(n, -1), dropped[sl],
                                   frame_mean, acc.counts, acc.max_corr, acc.dn_hist, acc.dq.hist)


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
        data = np.empty(raw.shape, np.float32)
        var = np.empty(raw.shape, np.float32)
        dq = np.empty(raw.shape, DQ_DTYPE)
        _convert(raw, data, var, dq, sl, True, self.gain, self.offset, self.cfg, self.limits.args(self.setup),
                 self.dropped, self.acc)
        return Frames(data, var, dq, self.axis.take(sl), first)

    def finish(self, writer: StoreWriter) -> dict:
        if self.setup is None:
            raise ValueError(f"adc: {self.inst} signal has no frames")
        write_frame_meta(writer, self.axis, self.frame_shape, self.wavelength_um)
        writer.put("read_var", self.setup.read_var, "electron2")
        return AdcStage._metrics(self.n_frames, self.dropped, self.gain, self.offset, self.source, None, self.axis,
                                 self.cfg, self.acc)


class AdcStage(Stage):
    """DN -> electrons with variance and data-quality planes (see the module docstring)."""

    name = "adc"
    title = "ADC conversion"
    Config = AdcConfig
    input_kind = "raw"
    output_kind = "frames"
    default_io = ("raw_frames", "adc_corrected")

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
            raise ValueError(f"adc: {inst} signal has no frames")
        offsets, estimate_var = self._common_mode(planes[0], setup.ref_cols, frame_axis.read_kind, dropped, cfg, ctx)
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
    def _common_mode(data: np.ndarray, ref_cols: np.ndarray, read_kind: np.ndarray, dropped: np.ndarray,
                     cfg: AdcConfig, ctx: StageContext) -> tuple[np.ndarray, float]:
        """Per-frame common-mode offsets from the reference columns of the electrons written by pass 1.

        For each read kind, up to :data:`TEMPLATE_FRAMES` evenly spaced live frames
        give every reference pixel a template (median) and a scatter (MAD); the
        quiet pixels (scatter <= :data:`QUIET_FACTOR` x the median scatter, i.e. no
        high read noise or bright wing) enter the per-frame statistic.

        Returns
        -------
        offsets : ndarray, shape (n,)
            Offsets to subtract (e-).
        estimate_var : float
            Variance of one offset estimate (e-^2), added to every pixel's read variance.
        """
        n = len(dropped)
        kinds = np.clip(read_kind, 0, 1)
        levels = np.zeros(n)
        templates, quiet, estimate_var = [], [], 0.0
        factor = MEDIAN_VARIANCE_FACTOR if cfg.reference_pixel.strategy == "border_median" else 1.0
        for kind in (0, 1):
            live = np.flatnonzero((kinds == kind) & ~dropped)
            pick = live[np.unique(np.linspace(0, max(live.size - 1, 0), min(live.size, TEMPLATE_FRAMES)).astype(int))]
            stack = np.asarray(data[pick])[:, :, ref_cols] if pick.size else np.zeros((1, data.shape[1], 1))
            template = np.median(stack, axis=0)
            scatter = MAD_TO_SIGMA * np.median(np.abs(stack - template), axis=0)
            keep = scatter <= QUIET_FACTOR * np.median(scatter)
            templates.append((template[keep], scatter[keep]))
            quiet.append(keep)
            if pick.size:
                estimate_var = max(estimate_var, factor * float(np.median(scatter[keep])) ** 2 / int(keep.sum()))
        for start in range(0, n, ctx.chunk_frames):
            sl = slice(start, min(start + ctx.chunk_frames, n))
            border = np.asarray(data[sl])[:, :, ref_cols]
            for kind in (0, 1):
                sel = np.flatnonzero(kinds[sl] == kind)
                if sel.size:
                    levels[start + sel] = reference_levels(border[sel][:, quiet[kind]], *templates[kind],
                                                           strategy=cfg.reference_pixel.strategy)
            release_pages(data, frames=sl)
        return common_mode_offsets(levels, read_kind, ~dropped), estimate_var

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

    def diagnostics(self, output: StoredOutput, metrics: dict, ctx: StageContext) -> list[dict]:
        plots: list[dict] = []
        if "hist_counts" in metrics:
            plots.append(_histogram_plot(metrics["hist_counts"], metrics["hist_edges"],
                                         title=f"Raw counts, every {HIST_FRAME_STRIDE}th read "
                                               "(zero / saturation pile-ups)", xlabel="DN"))
        kinds = np.asarray(output.meta.get("frame_read_kind", []))
        index = preview_index(kinds, len(kinds))
        plots.append(frame_image(output, index, title="Electrons after ADC (signal read)"))
        for label in ("first", "signal"):
            curve = metrics.get(f"frame_mean_{label}_curve")
            if curve:
                plots.append({"kind": "curve", "title": f"Mean electrons per {label} read (usable pixels)",
                              "x": curve["time_s"], "y": curve["mean_e"], "xlabel": "time (s)",
                              "ylabel": "electrons"})
        if "reference_offset_curve" in metrics:
            curve = metrics["reference_offset_curve"]
            plots.append({"kind": "curve", "title": "Reference-pixel common-mode offset", "x": curve["time_s"],
                          "y": curve["offset_e"], "xlabel": "time (s)", "ylabel": "electrons"})
        keys = ("gain", "offset", "conversion_source", "linearization", "n_dropped_frames", "n_adc_floor",
                "n_raw_saturated", "n_saturated", "n_nonlinear", "n_clamped", "max_linearity_correction_e")
        plots.append({"kind": "table", "title": "ADC summary", "rows": [[k, metrics.get(k)] for k in keys]})
        return plots


STAGE = AdcStage()
