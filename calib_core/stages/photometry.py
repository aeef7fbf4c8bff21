"""Photometry stage: calibrated frames -> per-sample flux series (FGS1) and spectra (AIRS-CH0).

Input: a frame store (``cds_corrected``; or ``adc_corrected`` reads in the
fast profile, in which case each first/signal read pair is measured with the
same weights and differenced at the flux level, removing the reset level).
Output: one sample per CDS frame / read pair (time = the signal read's time),
written through the :class:`~calib_core.frames.StoreWriter` as

=========================  ===========  =================================================
field                      shape        meaning
=========================  ===========  =================================================
photometry_flux            (B, C) f8    flux per sample (e-); FGS1 ``C = 1``; AIRS-CH0
                                        ``C = 282`` channels in ascending wavelength
photometry_flux_var        (B, C) f8    propagated variance (e-^2)
photometry_sky             (B, C) f8    background level per pixel (e-)
photometry_centroid_x      (B,) f8      FGS1 centroid column; AIRS-CH0 spectral shift
                                        (columns, relative to the reference stack)
photometry_centroid_y      (B,) f8      FGS1 centroid row; AIRS-CH0 trace row centre
photometry_flags           (B, C) u2    :class:`~calib_core.photometry.flags.PhotFlag` bits
time_s                     (B,) f8      sample time (s since the visit start)
n_bad_pixels               (B, C) i4    unusable pixels inside the extraction window
channel_wavelength_um      (C,) f8      wavelength of each channel (ascending)
reference_frame            (H, W') f8   sky-subtracted median stack (AIRS: cropped,
                                        ascending wavelength)
=========================  ===========  =================================================

The numerics are the vectorised kernels of :mod:`calib_core.photometry`
(methods: ``aperture``, ``psf``, ``optimal``; see :mod:`~calib_core.photometry.fgs`
and :mod:`~calib_core.photometry.airs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import median_filter

from ..config.base import ConfigError, IOConfig, QualityChecks, StageConfig, check_constraints, opt
from ..frames import FrameSource, StoredOutput, StoreWriter
from ..photometry.airs import AIRS_BACKGROUNDS, airs_reference, measure_airs
from ..photometry.centroid import CENTROID_METHODS
from ..photometry.fgs import FGS_BACKGROUNDS, fgs_reference, measure_fgs
from ..photometry.flags import FLAG_DTYPE, PhotFlag, flag_bits, flag_counts
from ..photometry.pairs import SampleChunk, SampleLayout, load_samples, sample_layout
from ..photometry.psf import PSF_MODELS
from .common import (check_finite_input, decimate, release_pages)
from .base import Gate, Stage, StageContext, gate, hist_data

__all__ = [
    "MethodConfig",
    "ApertureConfig",
    "CentroidConfig",
    "BackgroundConfig",
    "PSFConfig",
    "OptimalConfig",
    "AIRSConfig",
    "FlagConfig",
    "ReferenceConfig",
    "PhotometryQC",
    "PhotometryConfig",
    "resolve_background",
    "robust_relative_scatter",
    "PhotometryStage",
    "STAGE",
]

FGS1, AIRS = "FGS1", "AIRS-CH0"
#: FGS1 broadband wavelength (``wavelengths.csv`` wl_1), um
FGS1_WAVELENGTH_UM = 0.7
#: at most this many pixels (samples x H x W) are processed at once (bounds memory)
PIXEL_BUDGET = 2_000_000
#: reference samples gathered between two releases of the input's memory-mapped pages
REFERENCE_GROUP = 16
#: MAD -> standard deviation for Gaussian noise
MAD_TO_SIGMA = 1.4826
#: points of a diagnostic curve
MAX_CURVE_POINTS = 2000
#: a channel enters the white-light sum when finite in at least this fraction of the samples
WHITE_LIGHT_MIN_FINITE = 0.99


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------


@dataclass
class MethodConfig:
    method: str = opt("aperture", choices=("aperture", "psf", "optimal"),
                      doc="aperture: circular aperture (FGS1) / box rows (AIRS); psf: model fit; optimal: Horne")


@dataclass
class ApertureConfig:
    radius_px: float = opt(8.0, gt=0, le=16, unit="px", doc="FGS1 circular aperture radius")
    exact: bool = opt(True, doc="exact pixel overlap (photutils method='exact'); false: sub-pixel sampling")
    subpixels: int = opt(5, ge=1, le=32, doc="sub-pixels per axis when exact is false (1 = pixel centres)")


@dataclass
class CentroidConfig:
    method: str = opt("com", choices=CENTROID_METHODS,
                      doc="com: centre of mass; quadratic: 3x3 quadratic vertex; gaussian2d: Gaussian fit")
    box_px: int = opt(11, ge=3, le=31, unit="px", odd=True, doc="FGS1 centroid box size (odd)")



@dataclass
class BackgroundConfig:
    method: str = opt("auto", choices=("auto", "annulus", "mesh", "rows", "none"),
                      doc="auto: annulus (FGS1) / rows (AIRS); annulus|mesh: FGS1 only; rows: AIRS only")
    inner_px: float = opt(11.0, gt=0, unit="px", doc="FGS1 annulus inner radius (mesh: source-mask radius)")
    outer_px: float = opt(15.0, gt=0, unit="px", doc="FGS1 annulus outer radius")
    mesh_box_px: int = opt(8, ge=2, le=32, unit="px", doc="FGS1 mesh cell size")
    sigma: float = opt(3.0, gt=0, doc="sigma-clipping threshold of the sky statistics")
    maxiters: int = opt(5, ge=0, le=50, doc="sigma-clipping iterations")

    def check(self, prefix: str) -> None:
        if self.outer_px <= self.inner_px:
            raise ConfigError(f"{prefix}.outer_px", self.outer_px, f"must be > inner_px ({self.inner_px:g})")


@dataclass
class PSFConfig:
    model: str = opt("gaussian_moffat", choices=PSF_MODELS, doc="PSF (FGS1) / row-profile (AIRS) model")
    fit_box_px: int = opt(15, ge=5, le=31, unit="px", odd=True, doc="FGS1 PSF fit box size (odd)")
    oversample: int = opt(4, ge=1, le=10, doc="Gauss-Legendre nodes per pixel axis for pixel integration")
    max_iter: int = opt(3, ge=1, le=20, doc="FGS1 per-sample position iterations (Gauss-Newton)")



@dataclass
class OptimalConfig:
    profile_smooth: int = opt(9, ge=1, le=101, odd=True, doc="AIRS spatial-profile running mean along columns (odd)")
    sigma_clip: float = opt(5.0, gt=0, doc="outlier rejection threshold (sigma) of optimal / psf weights")
    max_iter: int = opt(3, ge=0, le=20, doc="outlier-rejection iterations of the optimal / AIRS psf weights")



@dataclass
class AIRSConfig:
    columns: list[int] = opt([39, 321], ge=0, le=356, doc="detector column range [start, stop) of the 282 channels")
    half_width_rows: float = opt(6.0, gt=0, le=15, unit="px", doc="box half height around the trace centre")
    sky_distance_rows: float = opt(10.0, gt=0, le=31, unit="px",
                                   doc="rows at least this far from the trace are sky (and bound optimal/psf)")
    sky_smooth_cols: int = opt(15, ge=1, le=101, odd=True, doc="running mean of the sky along columns (odd)")
    trace_poly_degree: int = opt(2, ge=0, le=5, doc="polynomial degree of the trace centre along columns")

    def check(self, prefix: str) -> None:
        cols = list(self.columns)
        if len(cols) != 2 or not all(isinstance(c, int) for c in cols) or cols[0] >= cols[1]:
            raise ConfigError(f"{prefix}.columns", cols, "must be two integers [start, stop) with start < stop")
        if self.sky_distance_rows <= self.half_width_rows + 0.5:
            raise ConfigError(f"{prefix}.sky_distance_rows", self.sky_distance_rows,
                              f"must be > half_width_rows + 0.5 ({self.half_width_rows + 0.5:g})")


@dataclass
class FlagConfig:
    max_bad_fraction: float = opt(0.05, ge=0, le=1,
                                  doc="TOO_MANY_BAD above this window flux fraction on pixels bad in this sample only")
    max_static_bad_fraction: float = opt(
        0.5, ge=0, le=1, doc="TOO_MANY_BAD above this window flux fraction on always-bad (dead/hot) pixels")
    max_centroid_offset_px: float = opt(2.0, gt=0, unit="px",
                                        doc="OFF_CENTRE beyond this offset from the reference position")


@dataclass
class ReferenceConfig:
    n_frames: int = opt(256, ge=8, le=8192, doc="samples (spread over the visit) median-stacked for the reference")


@dataclass
class PhotometryQC(QualityChecks):
    max_robust_std_rel: float = opt(0.05, gt=0, doc="max MAD-based relative scatter of the white-light flux")
    trend_window: int = opt(51, ge=3, le=10001, odd=True,
                            doc="running-median window (samples, odd) removed before the scatter")
    max_flagged_fraction: float = opt(0.05, ge=0, le=1, doc="max fraction of flagged sample-channels")
    max_centroid_rms_px: float = opt(0.5, gt=0, unit="px", doc="max rms of centroid x and y")
    min_centroid_margin_px: float = opt(3.0, ge=0, unit="px", doc="min distance of the median centroid to the edge")



@dataclass
class PhotometryConfig(StageConfig):
    io: IOConfig = opt(IOConfig(input_key="cds_corrected", output_key="photometry"))
    quality_checks: PhotometryQC = opt(PhotometryQC)
    photometry: MethodConfig = opt(MethodConfig)
    aperture: ApertureConfig = opt(ApertureConfig)
    centroid: CentroidConfig = opt(CentroidConfig)
    background: BackgroundConfig = opt(BackgroundConfig)
    psf: PSFConfig = opt(PSFConfig)
    optimal: OptimalConfig = opt(OptimalConfig)
    airs: AIRSConfig = opt(AIRSConfig)
    flags: FlagConfig = opt(FlagConfig)
    reference: ReferenceConfig = opt(ReferenceConfig)


def resolve_background(cfg: PhotometryConfig, instrument: str) -> str:
    """The background method for ``instrument`` (``auto`` resolved).

    Raises
    ------
    ConfigError
        When the method does not apply to the instrument (e.g. ``rows`` for FGS1).
    """
    method = cfg.background.method
    allowed = AIRS_BACKGROUNDS if instrument == AIRS else FGS_BACKGROUNDS
    if method == "auto":
        return allowed[0]
    if method not in allowed:
        raise ConfigError("calib.photometry.background.method", method,
                          f"for {instrument} must be one of auto, {', '.join(allowed)}")
    return method


# ---------------------------------------------------------------------------
# metrics helpers
# ---------------------------------------------------------------------------


def robust_relative_scatter(flux: np.ndarray, window: int) -> float:
    """MAD-based relative scatter of a series after dividing by its running median.

    Parameters
    ----------
    flux : ndarray, shape (B,)
        Series (non-finite samples are dropped).
    window : int
        Running-median window (samples, odd), shrunk to at most an eighth of
        the series so that a short series' trend (e.g. a transit) is followed.

    Returns
    -------
    float
        ``1.4826 * MAD(flux / trend - 1)``; NaN with fewer than 3 samples.
    """
    f = np.asarray(flux, np.float64)
    f = f[np.isfinite(f)]
    if len(f) < 3:
        return float("nan")
    size = min(window, max(len(f) // 8, 3))
    trend = median_filter(f, size=size - (1 - size % 2), mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        resid = f / trend - 1.0
    resid = resid[np.isfinite(resid)]
    return float(MAD_TO_SIGMA * np.median(np.abs(resid - np.median(resid)))) if resid.size else float("nan")


def _white_light(flux: np.ndarray, flux_var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum over the channels finite in at least 99 % of the samples (or the most complete ones).

    A channel that is NaN in many samples would otherwise make the sum NaN for all of them.
    """
    complete = np.isfinite(flux).mean(axis=0)
    keep = complete >= min(WHITE_LIGHT_MIN_FINITE, complete.max())
    return flux[:, keep].sum(axis=1), flux_var[:, keep].sum(axis=1)


def _instrument(ctx: StageContext, frame_shape: tuple[int, int]) -> str:
    if ctx.instrument in (FGS1, AIRS):
        return ctx.instrument
    return AIRS if frame_shape[1] > frame_shape[0] else FGS1


def _read_variance(source: FrameSource, ctx: StageContext, instrument: str) -> np.ndarray | None:
    """Read-noise variance per read (e-^2): the upstream ``read_var`` field, else the calibration map."""
    field = source.output.fields.get("read_var")
    if field is not None:
        return np.asarray(field, np.float64)
    if ctx.planet is None:
        return None
    read = np.asarray(ctx.planet.calibration(instrument).read, np.float64)
    return read * read if read.shape == source.frame_shape else None


def _wavelengths(source: FrameSource, ctx: StageContext, instrument: str, c0: int, c1: int) -> np.ndarray:
    """Channel wavelengths in ascending order (um); NaN when unknown."""
    if instrument != AIRS:
        return np.array([FGS1_WAVELENGTH_UM])
    wl = source.output.meta.get("wavelength_um")
    if wl is None and ctx.planet is not None:
        wl = ctx.planet.axis(instrument).wavelength_um
    if wl is None:
        return np.full(c1 - c0, np.nan)
    return np.asarray(wl, np.float64)[c0:c1][::-1].copy()


# ---------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------


@dataclass
class _Outputs:
    """Output memory maps (ascending channel order)."""

    flux: np.ndarray
    flux_var: np.ndarray
    sky: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    flags: np.ndarray
    time_s: np.ndarray
    n_bad: np.ndarray

    @classmethod
    def create(cls, writer: StoreWriter, n: int, c: int) -> "_Outputs":
        return cls(
            writer.create("photometry_flux", (n, c), np.float64, "electron"),
            writer.create("photometry_flux_var", (n, c), np.float64, "electron2"),
            writer.create("photometry_sky", (n, c), np.float64, "electron/pixel"),
            writer.create("photometry_centroid_x", (n,), np.float64, "pixel"),
            writer.create("photometry_centroid_y", (n,), np.float64, "pixel"),
            writer.create("photometry_flags", (n, c), FLAG_DTYPE, "bitmask (calib_core.photometry.flags.PhotFlag)"),
            writer.create("time_s", (n,), np.float64, "s"),
            writer.create("n_bad_pixels", (n, c), np.int32, "pixel"),
        )

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.flux, self.flux_var, self.sky, self.cx, self.cy, self.flags, self.time_s, self.n_bad)


class PhotometryStage(Stage):
    """Aperture / PSF / optimal photometry (FGS1) and spectral extraction (AIRS-CH0)."""

    name = "photometry"
    title = "Photometry"
    Config = PhotometryConfig
    input_kind = "frames"
    output_kind = "series"
    default_io = ("cds_corrected", "photometry")

    def run(self, inp: FrameSource, cfg: PhotometryConfig, ctx: StageContext, writer: StoreWriter) -> dict:
        check_constraints(cfg, "calib.photometry")
        instrument = _instrument(ctx, inp.frame_shape)
        method = cfg.photometry.method
        background = resolve_background(cfg, instrument)
        layout = sample_layout(inp.axis.read_kind)
        read_var = _read_variance(inp, ctx, instrument) if layout.mode == "reads" else None
        h, w = inp.frame_shape
        c0, c1 = (int(cfg.airs.columns[0]), int(cfg.airs.columns[1])) if instrument == AIRS else (0, w)
        if c1 > w:
            raise ConfigError("calib.photometry.airs.columns", list(cfg.airs.columns),
                              f"must lie within the {w} detector columns")
        airs = instrument == AIRS

        def load(samples: np.ndarray):
            chunk = load_samples(inp, layout, samples, read_var)
            return chunk.crop(c0, c1) if airs else chunk

        n_ref = min(cfg.reference.n_frames, layout.n_samples)
        ref_samples = np.unique(np.linspace(0, layout.n_samples - 1, n_ref).round().astype(np.int64))
        parts = []
        for g in range(0, len(ref_samples), REFERENCE_GROUP):   # scattered reads map whole file folios:
            parts.append(load(ref_samples[g:g + REFERENCE_GROUP]))   # release them group by group
            release_pages(inp.data, inp.var, inp.dq)
        ref_chunk = SampleChunk.concatenate(parts)
        if airs:
            ref, measure = airs_reference(ref_chunk, cfg, method, background), measure_airs
        else:
            ref, measure = fgs_reference(ref_chunk, cfg, method, background), measure_fgs
        del ref_chunk
        ctx.report(0.05, "reference built")

        n_chan = c1 - c0 if airs else 1
        out = _Outputs.create(writer, layout.n_samples, n_chan)
        per_sample = (2 if layout.mode == "reads" else 1) * h * w
        block = max(1, min(ctx.chunk_frames, PIXEL_BUDGET // per_sample))
        n_rejected = n_bad_input = 0
        for b0, b1 in layout.blocks(block):
            chunk = load(np.arange(b0, b1))
            n_bad_input += check_finite_input(chunk, stage="photometry", key=cfg.io.input_key,
                                              require=cfg.validation.require_finite_inputs)
            res = measure(chunk, ref, cfg, method, background)
            order = slice(None, None, -1) if airs else slice(None)
            out.flux[b0:b1] = res.flux[:, order]
            out.flux_var[b0:b1] = res.flux_var[:, order]
            out.sky[b0:b1] = res.sky[:, order]
            out.flags[b0:b1] = res.flags[:, order]
            out.n_bad[b0:b1] = res.n_bad[:, order]
            out.cx[b0:b1], out.cy[b0:b1] = res.centroid_x, res.centroid_y
            out.time_s[b0:b1] = inp.axis.time_s[layout.signal[b0:b1]]
            n_rejected += int(res.n_rejected.sum())
            release_pages(inp.data, inp.var, inp.dq, *out.arrays())
            ctx.report(0.05 + 0.95 * b1 / layout.n_samples, f"{b1}/{layout.n_samples} samples")

        wavelengths = _wavelengths(inp, ctx, instrument, c0, c1)
        writer.put("channel_wavelength_um", wavelengths, "um")
        writer.put("reference_frame", ref.image[:, ::-1] if airs else ref.image, "electron")
        writer.meta.update({
            "instrument": instrument, "method": method, "background": background, "sample_mode": layout.mode,
            "n_channels": n_chan, "wavelength_order": "ascending", "wavelength_um": wavelengths.tolist(),
            "units": {"photometry_flux": "electron", "photometry_flux_var": "electron2",
                      "photometry_sky": "electron/pixel", "photometry_centroid_x": "pixel",
                      "photometry_centroid_y": "pixel", "time_s": "s"},
            "centroid_x_meaning": "spectral shift (columns)" if airs else "centroid column",
            "centroid_y_meaning": "trace row centre" if airs else "centroid row",
            "flag_bits": flag_bits(),
            "airs_columns": [c0, c1] if airs else None,
            "aperture_radius_px": None if airs else cfg.aperture.radius_px,
            "box_half_width_rows": cfg.airs.half_width_rows if airs else None,
            "reference": ref.to_meta(),
        })
        counts = {"n_pixels_rejected": n_rejected, "n_nonfinite_input": n_bad_input}
        return _metrics(out, layout, cfg, instrument, method, background, (h, w), counts, ref)

    def gates(self, metrics: dict, cfg: PhotometryConfig) -> list[Gate]:
        qc = cfg.quality_checks
        if not qc.enabled:
            return []
        gates = [
            gate("robust_std_sanity", metrics.get("robust_std_rel"), "<=", qc.max_robust_std_rel,
                 "MAD-based relative scatter of the detrended white-light flux"),
            gate("flagged_fraction", metrics.get("flagged_fraction"), "<=", qc.max_flagged_fraction,
                 "fraction of sample-channels with any photometry flag"),
            gate("centroid_rms", metrics.get("centroid_rms_px"), "<=", qc.max_centroid_rms_px,
                 "rms of the centroid (FGS1) / trace row centre and spectral shift (AIRS)"),
            gate("centroid_in_bounds", metrics.get("centroid_margin_px"), ">=", qc.min_centroid_margin_px,
                 "distance of the median centroid to the frame edge"),
        ]
        for g in gates:
            g.action = qc.action_on_fail
        return gates

    def diagnostics(self, output: StoredOutput, metrics: dict, ctx: StageContext) -> list[dict]:
        f = output.fields
        meta = output.meta
        t = np.asarray(f["time_s"])
        flux = np.asarray(f["photometry_flux"])
        white, white_var = _white_light(flux, np.asarray(f["photometry_flux_var"]))
        plots = []
        for title, y, ylabel in (
            ("White-light flux", white, "electrons per sample"),
            ("Centroid x" + (" (spectral shift)" if meta.get("instrument") == AIRS else ""),
             np.asarray(f["photometry_centroid_x"]), "pixel"),
            ("Centroid y" + (" (trace row)" if meta.get("instrument") == AIRS else ""),
             np.asarray(f["photometry_centroid_y"]), "pixel"),
            ("Sky level (median over channels)", np.nanmedian(np.asarray(f["photometry_sky"]), axis=1),
             "electrons per pixel"),
        ):
            x, yy = decimate(t, y, MAX_CURVE_POINTS)
            plots.append({"kind": "curve", "title": title, "x": x, "y": yy, "xlabel": "time (s)", "ylabel": ylabel})
        if meta.get("instrument") == AIRS:
            plots.append({"kind": "curve", "title": "Median extracted spectrum",
                          "x": np.asarray(f["channel_wavelength_um"]).tolist(),
                          "y": np.nanmedian(flux, axis=0).tolist(), "xlabel": "wavelength (um)",
                          "ylabel": "electrons per sample"})
            overlay = {"shape": "box_rows", "trace_row": meta["reference"]["trace_row"][::-1],
                       "half_width_rows": meta.get("box_half_width_rows")}
            title = "Reference stack (crop, ascending wavelength) with extraction box"
        else:
            overlay = {"shape": "circle", "x": meta["reference"]["x"], "y": meta["reference"]["y"],
                       "r": meta.get("aperture_radius_px")}
            title = "Reference stack with aperture"
        plots.append({"kind": "image", "title": title, "data": np.asarray(f["reference_frame"]),
                      "xlabel": "channel" if meta.get("instrument") == AIRS else "detector column",
                      "ylabel": "detector row", "clabel": "electrons", "overlay": overlay})
        with np.errstate(invalid="ignore", divide="ignore"):
            trend = median_filter(np.nan_to_num(white), size=min(51, max(1, len(white) // 2 * 2 - 1)),
                                  mode="nearest")
            pulls = (white - trend) / np.sqrt(white_var)
        plots.append(hist_data(pulls, bins=64, title="White-light residual / propagated sigma",
                               xlabel="(flux - running median) / sigma", log=False))
        keys = ("method", "background", "sample_mode", "n_frames_in", "n_samples_out", "n_unpaired_reads",
                "robust_std_rel", "predicted_std_rel", "scatter_to_error", "median_flux", "flagged_fraction",
                "bad_pixel_fraction")
        plots.append({"kind": "table", "title": "Photometry summary", "rows": [[k, metrics.get(k)] for k in keys]})
        return plots


def _metrics(out: _Outputs, layout: SampleLayout, cfg: PhotometryConfig, instrument: str, method: str,
             background: str, frame_shape: tuple[int, int], counts: dict[str, int], ref: Any) -> dict:
    """QC metrics of a finished run (from the written outputs and the per-block ``counts``)."""
    flux, flux_var = np.asarray(out.flux), np.asarray(out.flux_var)
    flags = np.asarray(out.flags)
    cx, cy = np.asarray(out.cx), np.asarray(out.cy)
    unpaired = (flags & PhotFlag.UNPAIRED) != 0
    nonfinite = ((flags & PhotFlag.NONFINITE) != 0) & ~unpaired
    white, white_var = _white_light(flux, flux_var)
    robust = robust_relative_scatter(white, cfg.quality_checks.trend_window)
    with np.errstate(invalid="ignore", divide="ignore"):
        predicted = float(np.nanmedian(np.sqrt(white_var) / white))
    h, w = frame_shape
    if instrument == AIRS:
        rms = max(float(np.nanstd(cx)), float(np.nanstd(cy)))
        med_y = float(np.nanmedian(cy))
        margin = min(med_y, h - 1 - med_y)
        window_pixels = (2 * cfg.airs.half_width_rows + 1) * flux.shape[1]
    else:
        rms = max(float(np.nanstd(cx)), float(np.nanstd(cy)))
        med_x, med_y = float(np.nanmedian(cx)), float(np.nanmedian(cy))
        margin = min(med_x, w - 1 - med_x, med_y, h - 1 - med_y)
        window_pixels = np.pi * cfg.aperture.radius_px ** 2
    n_bad = np.asarray(out.n_bad)
    return {
        "instrument": instrument,
        "method": method,
        "background": background,
        "sample_mode": layout.mode,
        "n_frames_in": layout.n_frames,
        "n_samples_out": layout.n_samples,
        "n_unpaired_reads": layout.n_unpaired,
        "n_channels": int(flux.shape[1]),
        "n_nonfinite": int(nonfinite.sum()) + counts["n_nonfinite_input"],
        "n_nonfinite_flux": int(nonfinite.sum()),
        "n_nonfinite_input": counts["n_nonfinite_input"],
        "n_unpaired_samples": int(unpaired.any(axis=1).sum()),
        "n_flagged": flag_counts(flags),
        "flagged_fraction": float(np.count_nonzero(flags) / flags.size),
        "robust_std_rel": robust,
        "predicted_std_rel": predicted,
        "scatter_to_error": robust / predicted if predicted > 0 else float("nan"),
        "median_flux": float(np.nanmedian(white)),
        "median_centroid_x": float(np.nanmedian(cx)),
        "median_centroid_y": float(np.nanmedian(cy)),
        "centroid_rms_x": float(np.nanstd(cx)),
        "centroid_rms_y": float(np.nanstd(cy)),
        "centroid_rms_px": rms,
        "centroid_margin_px": float(margin),
        "sky_median": float(np.nanmedian(np.asarray(out.sky))),
        "bad_pixel_fraction": float(n_bad.sum() / (window_pixels * len(flux))),
        "n_bad_pixels_replaced": int(n_bad.sum()),
        "n_pixels_rejected": counts["n_pixels_rejected"],
        "reference": ref.to_meta() if instrument == FGS1 else {"y": ref.y},
    }


STAGE = PhotometryStage()
