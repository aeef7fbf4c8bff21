"""Config schema of the trace stage (``calib.trace``)."""

from __future__ import annotations

from dataclasses import dataclass

from ...config.base import ConfigError, IOConfig, QualityChecks, StageConfig, opt


@dataclass
class PolyConfig:
    degree: int = opt(3, ge=0, le=12, doc="polynomial degree (Legendre basis on the scaled axis)")


@dataclass
class SplineConfig:
    knots: int = opt(12, ge=1, le=200, doc="interior knots of the cubic least-squares spline")


@dataclass
class LowessConfig:
    frac: float = opt(0.15, gt=0.0, le=1.0, doc="fraction of channels in each local linear fit")


@dataclass
class AlongWavelengthConfig:
    enabled: bool = opt(True, doc="divide by a smooth continuum fitted to the out-of-transit spectrum")
    method: str = opt("poly", choices=("poly", "spline", "lowess"), doc="continuum model along wavelength")
    poly: PolyConfig = opt(PolyConfig(degree=3), doc="polynomial continuum")
    spline: SplineConfig = opt(SplineConfig(knots=12), doc="cubic least-squares spline continuum")
    lowess: LowessConfig = opt(LowessConfig, doc="locally weighted linear regression")


@dataclass
class AlongTimeConfig:
    enabled: bool = opt(True, doc="per-channel trend in time fitted on out-of-transit frames (false: constant)")
    method: str = opt("poly", choices=("poly", "spline"), doc="trend model along time")
    poly: PolyConfig = opt(PolyConfig(degree=2), doc="polynomial continuum")
    spline: SplineConfig = opt(SplineConfig(knots=4), doc="cubic least-squares spline continuum")
    centroids: str = opt("linear", choices=("none", "linear", "quadratic"),
                         doc="decorrelate against the measured pointing offsets (centroid x, y)")


@dataclass
class TransitMaskConfig:
    method: str = opt("auto", choices=("auto", "ephemeris"),
                      doc="auto: find the transit in the white light; ephemeris: calib.phase t0 + star-info orbit")
    pad_frac: float = opt(0.05, ge=0.0, le=1.0, doc="padding on each side, fraction of the transit duration")
    radius_ratio: float = opt(0.15, gt=0.0, lt=1.0, doc="Rp/Rs used for the ephemeris duration (generous = wider)")
    nbins: int = opt(300, ge=20, le=5000, doc="time bins of the white light for the auto search")


@dataclass
class RobustConfig:
    sigma: float = opt(5.0, gt=0.0, doc="clip residuals beyond this many robust (MAD) sigmas")
    maxiters: int = opt(3, ge=1, le=20, doc="sigma-clipping iterations")
    window_frames: int = opt(11, ge=3, le=1001, odd=True, doc="running-median window along time for outlier residuals")


@dataclass
class TraceQualityChecks(QualityChecks):
    median_tolerance: float = opt(0.01, gt=0.0, doc="gate: |out-of-transit median of the normalised flux - 1|")
    max_invalid_frac: float = opt(0.01, ge=0.0, le=1.0, doc="gate: fraction of flagged samples")
    min_oot_frac: float = opt(0.15, ge=0.0, le=1.0, doc="gate: fraction of frames out of transit")


@dataclass
class TraceConfig(StageConfig):
    io: IOConfig = opt(IOConfig(input_key="photometry", output_key="trace_norm"), doc="input/output keys")
    along_wavelength: AlongWavelengthConfig = opt(AlongWavelengthConfig, doc="continuum: smooth fit to the out-of-transit median spectrum, fixed in time")
    along_time: AlongTimeConfig = opt(AlongTimeConfig, doc="per-channel trend, fitted on out-of-transit frames only (the transit is never fitted)")
    transit_mask: TransitMaskConfig = opt(TransitMaskConfig, doc="frames excluded from the trend and continuum fits")
    robust: RobustConfig = opt(RobustConfig, doc="outlier flags (DQ.OUTLIER): residuals from a running median along time")
    quality_checks: TraceQualityChecks = opt(TraceQualityChecks, doc="QC gates (seed section 10: post-norm median ~1, invalid fraction < 1 %)")


Config = TraceConfig
