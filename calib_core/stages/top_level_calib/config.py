"""Config schema of the top-level sigma calibration (``calib.top_level_calib``)."""

from __future__ import annotations

from dataclasses import dataclass

from ...config.base import ConfigError, IOConfig, QualityChecks, StageConfig, opt

__all__ = ["Config", "CorelConfig", "MetricConfig", "SplitConfig", "TemperatureConfig", "TopLevelCalibConfig",
           "TopLevelCalibQualityChecks"]


def _check_range(key: str, pair: list) -> None:
    if len(pair) != 2 or not pair[0] < pair[1]:
        raise ConfigError(key, list(pair), "must be [min, max] with min < max")


@dataclass
class TemperatureConfig:
    per_bin: bool = opt(False, doc="one T per bin (over planets) instead of one global T")
    l2: float = opt(0.0, ge=0, doc="L2 pull of T towards 1; 0 = closed form T^2 = mean(z^2), > 0 = Newton solve")
    clamp: list[float] = opt([0.1, 10.0], gt=0, doc="allowed range [min, max] of T")
    newton_iters: int = opt(20, ge=1, doc="Newton iterations of the l2 > 0 solve")

    def check(self, prefix: str) -> None:
        _check_range(f"{prefix}.clamp", self.clamp)


@dataclass
class CorelConfig:
    k_neighbors: int = opt(4, ge=1, doc="graph edges: nearest bins in wavelength joined to each bin")
    use_regions: bool = opt(True, doc="no k-NN edges between FGS1 and AIRS; extra edges inside AIRS sub-regions")
    airs_regions: int = opt(4, ge=1, doc="AIRS sub-regions (contiguous wavelength blocks); also the conformal groups")
    region_weight: float = opt(0.5, ge=0, doc="total weight of one bin's edges to its AIRS sub-region (use_regions)")
    smoothness: float = opt(10.0, ge=0, doc="Laplacian penalty lambda on the log-scales, in planets (0 = per-bin T)")
    max_iter: int = opt(500, ge=1, doc="L-BFGS-B iteration limit of the scale fit")
    clamp: list[float] = opt([0.1, 10.0], gt=0, doc="allowed range [min, max] of the final per-bin scale")
    coverage_target: float = opt(0.68, gt=0, lt=1, doc="coverage of mu +- q(target) sigma after the conformal step")
    conformal: str = opt("group", choices=("per_bin", "group", "global", "none"),
                         doc="conformal grouping: per bin, per detector region, one global factor, or off")
    conformal_fraction: float = opt(0.5, gt=0, lt=1,
                                    doc="fraction of the fitting planets held out for the conformal step")

    def check(self, prefix: str) -> None:
        _check_range(f"{prefix}.clamp", self.clamp)


@dataclass
class SplitConfig:
    calib_fraction: float = opt(0.5, gt=0, lt=1, doc="sigma-calibrate: fraction of labelled planets used to fit")
    seed: int = opt(0, ge=0, doc="seed of the planet splits (fit/evaluation and COREL's conformal hold-out)")


@dataclass
class MetricConfig:
    fgs_weight: float = opt(57.846, gt=0, doc="challenge-score weight of the FGS1 bin (each AIRS bin: 1)")
    fgs_sigma_true: float = opt(1e-6, gt=0, doc="ideal-model sigma of FGS1")
    airs_sigma_true: float = opt(1e-5, gt=0, doc="ideal-model sigma of AIRS bins")
    naive_mean: float | None = opt(None, nullable=True, doc="naive-model mean; null = mean of the evaluated labels")
    naive_sigma: float | None = opt(None, nullable=True, gt=0,
                                    doc="naive-model sigma; null = std of the evaluated labels")


@dataclass
class TopLevelCalibQualityChecks(QualityChecks):
    min_coverage_68: float = opt(0.58, ge=0, le=1, doc="gate: calibrated 68 % coverage at least this")
    max_coverage_68: float = opt(0.78, ge=0, le=1, doc="gate: calibrated 68 % coverage at most this")
    max_abs_z_mean: float = opt(0.5, ge=0, doc="gate: |mean z-score| after calibration at most this")

    def check(self, prefix: str) -> None:
        if self.min_coverage_68 > self.max_coverage_68:
            raise ConfigError(f"{prefix}.min_coverage_68", self.min_coverage_68,
                              f"must be <= max_coverage_68 ({self.max_coverage_68})")


@dataclass
class TopLevelCalibConfig(StageConfig):
    io: IOConfig = opt(IOConfig("depths", "depths_calibrated"), doc="input/output keys")
    quality_checks: TopLevelCalibQualityChecks = opt(TopLevelCalibQualityChecks,
                                                        doc="QC gates: calibrated coverage and z-score mean")
    method: str = opt("none", choices=("none", "temperature", "corel"),
                      doc="none = pass-through; temperature = sigma * T; corel = graph-smoothed scales + conformal")
    model_path: str | None = opt(None, nullable=True,
                                 doc="model.json from `spectramind sigma-calibrate`; null = fit on the planet's labels")
    wavelengths_path: str | None = opt(None, nullable=True,
                                       doc="wavelengths.csv for the COREL graph; null = standard grid")
    bins: int = opt(283, ge=2, doc="spectral bins (bin 0 = FGS1)")
    temperature: TemperatureConfig = opt(TemperatureConfig, doc="method temperature")
    corel: CorelConfig = opt(CorelConfig, doc="method corel: graph-smoothed per-bin scales + conformal step")
    split: SplitConfig = opt(SplitConfig, doc="planet splits of sigma-calibrate")
    metric: MetricConfig = opt(MetricConfig, doc="2025 challenge score settings")

    # The files are checked where they are read (calib_core.paths, before any stage runs): confined to the
    # data root, the run dir or configs/, with one message whether they exist or not.  Checking existence
    # here, before confinement, would tell which files exist anywhere on the machine.


Config = TopLevelCalibConfig
