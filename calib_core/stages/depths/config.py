"""Config schema of the depths stage (``calib.depths``)."""

from __future__ import annotations

from dataclasses import dataclass

from ...config.base import ConfigError, IOConfig, QualityChecks, StageConfig, opt


#: order of the instruments in the 283-long output (FGS1 = wl_1, then AIRS-CH0 ascending)
INSTRUMENT_ORDER = ("FGS1", "AIRS-CH0")


_GEOMETRY_NAMES = ("t0", "a_rs", "inc")


@dataclass
class FitConfig:
    data: str = opt("unbinned", choices=("unbinned", "phase_binned"),
                    doc="fit the trace series (time-binned to max_points) or the phase stage's bins")
    max_points: int = opt(500, ge=20, le=100000, doc="time bins the unbinned series is averaged into")
    baseline_degree: int = opt(2, ge=0, le=6,
                               doc="per-curve baseline polynomial in time (keep >= trace along_time degree)")
    baseline_free_degree: int = opt(1, ge=0, le=6,
                                    doc="channels: baseline terms up to this degree are free per channel, higher "
                                        "ones shared (smooth in wavenumber); raised to the trace along_time degree")
    baseline_smooth_degree: int = opt(2, ge=0, le=6,
                                      doc="Legendre degree in wavenumber of the shared baseline terms")


@dataclass
class GeometryConfig:
    free: list = opt(["t0", "a_rs", "inc"], choices=_GEOMETRY_NAMES,
                     doc="shared parameters fitted on the white light (others: ephemeris / star info)")
    instruments: list = opt(["FGS1", "AIRS-CH0"], choices=INSTRUMENT_ORDER,
                            doc="white-light curves the geometry is fitted on")


@dataclass
class LimbDarkeningConfig:
    method: str = opt("smooth", choices=("smooth", "fit", "fixed"),
                      doc="smooth law in wavenumber | per-channel fit with priors | fixed u1, u2")
    u1: float = opt(0.3, ge=-1.0, le=2.0, doc="fixed value / prior centre of the linear coefficient")
    u2: float = opt(0.15, ge=-1.0, le=2.0, doc="fixed value / prior centre of the quadratic coefficient")
    prior_sigma: float = opt(0.2, gt=0.0, doc="fit: Gaussian prior width of u1 and u2")
    degree: int = opt(2, ge=0, le=6, doc="smooth: Legendre degree of u1(1/lambda), u2(1/lambda)")


@dataclass
class ErrorsConfig:
    scale_by_chi2: bool = opt(True, doc="inflate variances by the reduced chi^2 when it exceeds 1")
    red_noise: str = opt("instrument_median", choices=("none", "per_channel", "instrument_median"),
                         doc="time-averaging beta factor: off, per channel, or the median of the instrument")
    include_geometry: bool = opt(True, doc="add the white-light geometry uncertainty to every depth")


@dataclass
class DepthsQualityChecks(QualityChecks):
    max_chi2_red: float = opt(3.0, gt=0.0, doc="gate: median per-channel reduced chi^2")
    max_beta: float = opt(2.0, ge=1.0, doc="gate: red-noise beta of the channels (median)")


@dataclass
class DepthsConfig(StageConfig):
    io: IOConfig = opt(IOConfig(input_key="phase_fold", output_key="depths"), doc="input/output keys")
    fit: FitConfig = opt(FitConfig, doc="data and baseline")
    geometry: GeometryConfig = opt(GeometryConfig, doc="shared transit geometry from the white light (period fixed)")
    limb_darkening: LimbDarkeningConfig = opt(LimbDarkeningConfig, doc="quadratic limb darkening")
    errors: ErrorsConfig = opt(ErrorsConfig, doc="honest uncertainties")
    quality_checks: DepthsQualityChecks = opt(DepthsQualityChecks, doc="QC gates of the batman fits")

    def check(self, prefix: str) -> None:
        """At least one white-light instrument."""
        if not self.geometry.instruments:
            raise ConfigError(f"{prefix}.geometry.instruments", [], "list at least one of FGS1, AIRS-CH0")


Config = DepthsConfig
