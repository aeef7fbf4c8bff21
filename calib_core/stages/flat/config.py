"""Config schema of the flat stage (``calib.flat``)."""

from __future__ import annotations

from dataclasses import dataclass

from ...config.base import ConfigError, IOConfig, QualityChecks, StageConfig, opt

__all__ = ["Config", "DeadPixelConfig", "FlatConfig", "FlatQC", "IlluminationConfig"]


@dataclass
class DeadPixelConfig:
    flag: bool = opt(True, doc="flag the calibration dead map's pixels DEAD in every frame")


@dataclass
class IlluminationConfig:
    enabled: bool = opt(False, doc="divide a smooth fit of the flat's large-scale structure out of the flat")
    method: str = opt("poly2d", choices=("poly2d", "row_spline"),
                      doc="poly2d: 2-D Legendre polynomial; row_spline: cubic B-spline along each detector row")
    degree_x: int = opt(3, ge=0, le=10, doc="poly2d degree along detector columns")
    degree_y: int = opt(2, ge=0, le=10, doc="poly2d degree along detector rows")
    knots: int = opt(6, ge=1, le=64, doc="row_spline interior knots per row (uniform)")
    sigma: float = opt(3.0, gt=0, doc="robust fit: pixels beyond sigma x MAD-sigma of the residual are rejected")
    maxiters: int = opt(5, ge=1, doc="robust fit: rejection iterations")


@dataclass
class FlatQC(QualityChecks):
    flat_mean_range: list[float] = opt([0.8, 1.2], doc="allowed mean of the calibration flat over good pixels")
    max_zero_frac: float = opt(0.02, le=1,
                               doc="max fraction of pixels whose flat is zero/unusable (<= min_flat); < 0 always fails")
    max_data_zero_frac: float = opt(0.01, ge=0, le=1, doc="max fraction of pixel-frames at the ADC floor")
    max_data_saturated_frac: float = opt(0.01, ge=0, le=1, doc="max fraction of pixel-frames flagged SATURATED")

    def check(self, prefix: str) -> None:
        r = self.flat_mean_range
        if len(r) != 2 or not r[0] < r[1]:
            raise ConfigError(f"{prefix}.flat_mean_range", list(r), "must be [low, high] with low < high")


@dataclass
class FlatConfig(StageConfig):
    io: IOConfig = opt(IOConfig(input_key="dark_corrected", output_key="flat_corrected"), doc="input/output keys")
    quality_checks: FlatQC = opt(FlatQC, doc="QC gates: flat statistics, data zero/saturation pile-ups")
    renormalize_to_mean_one: bool = opt(False, doc="divide the flat by its mean over good pixels (the dataset's flat "
                                                   "is an absolute response, median ~1.01; the reference does not)")
    min_flat: float = opt(0.5, ge=0, doc="flat values <= this (or non-finite) are BAD_FLAT and not applied")
    dead_pixels: DeadPixelConfig = opt(DeadPixelConfig, doc="dead-pixel flags")
    illumination_correction: IlluminationConfig = opt(IlluminationConfig, doc="large-scale illumination removal")


Config = FlatConfig
