"""Config schema of the dark stage (``calib.dark``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ...config.base import ConfigError, IOConfig, QualityChecks, StageConfig, opt
from .temperature import temperature_factor

__all__ = ["Config", "ConvertUnitsConfig", "DarkConfig", "DarkQC", "ExposureConfig", "HotPixelConfig",
           "PerPixelMapConfig", "TemperatureConfig"]


@dataclass
class ConvertUnitsConfig:
    enabled: bool = opt(False, doc="convert the per-pixel map from per_pixel_map.units to e-/s with the ADC gain")


@dataclass
class PerPixelMapConfig:
    path: str = opt("", doc="dark-rate map file: .npz with one array per instrument (FGS1, AIRS-CH0), or one .npy / "
                "calibration-layout .parquet map for both; empty = the planet's dark map")
    units: str = opt("e_per_s", choices=("e_per_s", "adu_per_s"), doc="units of the per-pixel map")
    convert_units: ConvertUnitsConfig = opt(ConvertUnitsConfig, doc="unit conversion of the map")

    def check(self, prefix: str) -> None:
        if self.units != "e_per_s" and not self.convert_units.enabled:
            raise ConfigError(f"{prefix}.convert_units.enabled", False,
                              f"must be true when {prefix}.units is '{self.units}' (the frames are in electrons)")


@dataclass
class ExposureConfig:
    scale: bool = opt(True, doc="multiply the dark rate by each read's integration time since reset; "
                                "false: subtract the map as a per-read charge (e-)")


@dataclass
class TemperatureConfig:
    enabled: bool = opt(False, doc="scale the dark map from ref_temp_k to detector_temp_k")
    method: str = opt("linear", choices=("linear", "arrhenius"),
                      doc="linear: 1 + slope_per_k (T - Tref); arrhenius: exp(-Ea/k (1/T - 1/Tref))")
    ref_temp_k: float = opt(293.15, gt=0, unit="K", doc="detector temperature at which the dark map was measured")
    detector_temp_k: Optional[float] = opt(None, nullable=True, gt=0, unit="K",
                                           doc="detector temperature of the visit; null = ref_temp_k (factor 1)")
    slope_per_k: float = opt(0.10, unit="1/K", doc="relative dark change per kelvin (method linear)")
    activation_energy_ev: float = opt(0.60, gt=0, unit="eV", doc="activation energy (method arrhenius)")

    def check(self, prefix: str) -> None:
        if self.enabled and self.method == "linear" and temperature_factor(self) <= 0:
            raise ConfigError(f"{prefix}.slope_per_k", self.slope_per_k,
                              "gives a non-positive dark scale factor at detector_temp_k")


@dataclass
class HotPixelConfig:
    enabled: bool = opt(True, doc="detect hot/cold pixels by sigma-clipping the dark map")
    sigma: float = opt(5.0, gt=0, doc="clip threshold (standard deviations, both tails)")
    maxiters: int = opt(5, ge=1, doc="sigma-clipping iterations")
    action: str = opt("flag_and_repair", choices=("flag", "repair", "flag_and_repair"),
                      doc="flag: HOT bit; repair: median of usable 8-neighbours per frame (REPAIRED); both")


@dataclass
class DarkQC(QualityChecks):
    max_hot_frac: float = opt(0.02, ge=0, le=1, doc="max fraction of hot/cold pixels in the dark map")
    min_residual_level_e: float = opt(-50.0, unit="e-",
                                      doc="min median (over first reads) of the frame-mean dark-corrected level")


@dataclass
class DarkConfig(StageConfig):
    io: IOConfig = opt(IOConfig(input_key="adc_corrected", output_key="dark_corrected"), doc="input/output keys")
    quality_checks: DarkQC = opt(DarkQC, doc="QC gates: hot-pixel fraction, residual level")
    method: str = opt("master", choices=("master", "per_pixel_map"),
                      doc="master: the calibration dark map (e-/s); per_pixel_map: the map under per_pixel_map")
    per_pixel_map: PerPixelMapConfig = opt(PerPixelMapConfig, doc="dark-rate map used by method per_pixel_map")
    exposure: ExposureConfig = opt(ExposureConfig, doc="exposure scaling")
    temperature: TemperatureConfig = opt(TemperatureConfig, doc="temperature scaling of the dark map")
    hot_pixels: HotPixelConfig = opt(HotPixelConfig, doc="hot/cold pixel detection and repair")


Config = DarkConfig
