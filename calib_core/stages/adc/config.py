"""Config schema of the ADC stage (``calib.adc``)."""

from __future__ import annotations

from dataclasses import dataclass

from ...config.base import ConfigError, IOConfig, QualityChecks, StageConfig, opt

__all__ = ["AdcConfig", "AdcDiagnosticsConfig", "AdcQC", "ClampConfig", "Config", "ConversionConfig",
           "LinearizationConfig", "ReferencePixelConfig", "SaturationConfig"]


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
    hist_bins: int = opt(256, ge=8, le=65536, doc="bins of the raw-DN histogram over 0..65535 DN")
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


Config = AdcConfig
