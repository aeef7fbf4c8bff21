"""Config schema of the phase stage (``calib.phase``)."""

from __future__ import annotations

from dataclasses import dataclass

from ...config.base import ConfigError, IOConfig, QualityChecks, StageConfig, opt
from ...timeutil import ABSOLUTE_UNITS, TIME_UNITS, check_epoch

__all__ = ["BinningConfig", "Config", "EphemerisConfig", "FoldConfig", "PhaseConfig", "PhaseQualityChecks",
           "TimeConfig", "WindowsConfig"]


@dataclass
class EphemerisConfig:
    source: str = opt("star_info", choices=("star_info", "config"),
                      doc="period from the planet's star info (P) or from period_days")
    period_days: float | None = opt(None, gt=0.0, nullable=True, unit="d", doc="orbital period (source: config)")
    t0: float | None = opt(None, nullable=True, doc="mid-transit time in t0_unit; null = fit the white light")
    t0_unit: str = opt("hours_since_start", choices=TIME_UNITS, doc="unit of t0")

    def check(self, prefix: str) -> None:
        """A config-sourced ephemeris needs its period."""
        if self.source == "config" and self.period_days is None:
            raise ConfigError(f"{prefix}.period_days", None,
                              f"must be set when {prefix}.source is 'config' (orbital period in days)")


@dataclass
class TimeConfig:
    unit: str = opt("hours_since_start", choices=TIME_UNITS, doc="unit of the output time axis and t0 in meta")
    start_epoch: str | None = opt(None, nullable=True,
                                  doc="visit start, ISO 8601 UTC (needed by bjd_tdb, mjd, unix)")

    def check(self, prefix: str) -> None:
        """Absolute units need a parseable start epoch."""
        if self.start_epoch is not None:
            try:
                check_epoch(self.start_epoch)
            except ValueError as exc:
                raise ConfigError(f"{prefix}.start_epoch", self.start_epoch,
                                  f"must be an ISO 8601 UTC date-time ({exc})") from None
        if self.unit in ABSOLUTE_UNITS and self.start_epoch is None:
            raise ConfigError(f"{prefix}.start_epoch", None, f"must be set for time unit '{self.unit}'")


@dataclass
class FoldConfig:
    wrap_phase: float = opt(0.5, ge=0.0, le=1.0, doc="phases wrap into [wrap - 1, wrap) cycles")
    normalize_phase: bool = opt(True, doc="phase in cycles (true) or hours from mid-transit (false)")


@dataclass
class BinningConfig:
    nbins: int = opt(200, ge=1, le=100000, doc="equal-width bins over the observed phase range")
    aggregator: str = opt("mean", choices=("mean", "median"), doc="per-bin statistic of the flux")
    min_count: int = opt(3, ge=1, doc="bins with fewer usable samples are flagged LOW_COUNT")
    error: str = opt("max", choices=("propagated", "scatter", "max"),
                     doc="per-bin error: propagated sqrt(sum err^2)/n, scatter std/sqrt(n), or the larger")


@dataclass
class WindowsConfig:
    method: str = opt("auto", choices=("auto", "geometry", "estimate"),
                      doc="contact points from the star-info orbit, the white-light fit, or auto (orbit if known)")


@dataclass
class PhaseQualityChecks(QualityChecks):
    min_coverage: float = opt(0.9, ge=0.0, le=1.0, doc="gate: fraction of bins with >= min_count samples")
    min_in_transit_coverage: float = opt(0.9, ge=0.0, le=1.0, doc="gate: same, for bins between t1 and t4")
    max_t0_offset_h: float = opt(0.1, gt=0.0, unit="h", doc="gate: |t0 used - white-light t0|")


@dataclass
class PhaseConfig(StageConfig):
    io: IOConfig = opt(IOConfig(input_key="trace_norm", output_key="phase_fold"), doc="input/output keys")
    ephemeris: EphemerisConfig = opt(EphemerisConfig, doc="period and mid-transit time")
    time: TimeConfig = opt(TimeConfig, doc="absolute time axis (astropy Time; stamps taken as barycentric, only UTC -> TDB is applied)")
    fold: FoldConfig = opt(FoldConfig, doc="astropy/lightkurve fold semantics")
    binning: BinningConfig = opt(BinningConfig, doc="equal bins over the observed phase range (finite, unflagged samples only)")
    windows: WindowsConfig = opt(WindowsConfig, doc="contact points t1..t4")
    quality_checks: PhaseQualityChecks = opt(PhaseQualityChecks, doc="QC gates: bin coverage and phase centring")

    def check(self, prefix: str) -> None:
        """An absolute ``ephemeris.t0`` needs the visit start epoch."""
        if self.ephemeris.t0 is not None and self.ephemeris.t0_unit in ABSOLUTE_UNITS and self.time.start_epoch is None:
            raise ConfigError(f"{prefix}.time.start_epoch", None,
                              f"must be set: ephemeris.t0 is given in '{self.ephemeris.t0_unit}'")


Config = PhaseConfig
