"""Config schema of the photometry stage (``calib.photometry``)."""

from __future__ import annotations

from dataclasses import dataclass

from ...config.base import ConfigError, IOConfig, QualityChecks, StageConfig, opt

__all__ = ["AIRSConfig", "ApertureConfig", "BackgroundConfig", "CENTROID_METHODS", "CentroidConfig", "Config",
           "FlagConfig", "MethodConfig", "OptimalConfig", "PSFConfig", "PSF_MODELS", "PhotometryConfig",
           "PhotometryQC", "ReferenceConfig"]

#: centroid estimators (:mod:`.centroid`)
CENTROID_METHODS = ("com", "quadratic", "gaussian2d")
#: PSF / row-profile models (:mod:`.psf`)
PSF_MODELS = ("gaussian", "moffat", "gaussian_moffat")


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
    io: IOConfig = opt(IOConfig(input_key="cds_corrected", output_key="photometry"), doc="input/output keys")
    quality_checks: PhotometryQC = opt(PhotometryQC, doc="QC gates: white-light scatter, flags, centroid stability")
    photometry: MethodConfig = opt(MethodConfig, doc="extraction method")
    aperture: ApertureConfig = opt(ApertureConfig, doc="FGS1 circular aperture")
    centroid: CentroidConfig = opt(CentroidConfig, doc="FGS1 centroid (AIRS: trace row)")
    background: BackgroundConfig = opt(BackgroundConfig, doc="sky background")
    psf: PSFConfig = opt(PSFConfig, doc="PSF / row-profile fit (method psf)")
    optimal: OptimalConfig = opt(OptimalConfig, doc="Horne optimal extraction (method optimal)")
    airs: AIRSConfig = opt(AIRSConfig, doc="AIRS-CH0 spectral extraction")
    flags: FlagConfig = opt(FlagConfig, doc="per-sample flag thresholds")
    reference: ReferenceConfig = opt(ReferenceConfig, doc="reference (median-stacked) frame")


Config = PhotometryConfig
