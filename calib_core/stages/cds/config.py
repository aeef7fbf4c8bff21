"""Config schema of the CDS stage (``calib.cds``)."""

from __future__ import annotations

from dataclasses import dataclass

from ...config.base import IOConfig, QualityChecks, StageConfig, opt

__all__ = ["CdsConfig", "CdsQC", "Config", "PairingConfig", "PairingIntegrityQC", "RobustConfig",
           "TemporalFilterConfig"]


@dataclass
class PairingConfig:
    order_by: str = opt("index", choices=("index", "timestamp"), doc="order frames by index or by timestamp")
    policy: str = opt("n_minus_1", choices=("n_minus_1", "nearest"),
                      doc="n_minus_1: the previous frame if a first read; nearest: latest earlier first read in window")
    window_s: float = opt(5.0, gt=0, unit="s", doc="max time from first read to signal read (policy nearest)")


@dataclass
class RobustConfig:
    enabled: bool = opt(True, doc="flag and replace per-pixel temporal outliers (cosmic rays)")
    window: int = opt(7, ge=3, le=101, odd=True, doc="running-median window (frames, odd)")
    sigma: float = opt(8.0, gt=0, doc="threshold in robust (MAD) sigmas of the pixel's residuals")


@dataclass
class TemporalFilterConfig:
    enabled: bool = opt(False, doc="flag whole frames whose flux departs from a running median (OUTLIER)")
    statistic: str = opt("total", choices=("total", "per_row"),
                         doc="total: frame flux; per_row: each detector row's flux (any row flags the frame)")
    window: int = opt(31, ge=3, le=1001, odd=True, doc="running-median window (frames, odd)")
    sigma: float = opt(5.0, gt=0, doc="threshold in robust (MAD) sigmas of the flux residuals")


@dataclass
class PairingIntegrityQC:
    max_unpaired_fraction: float = opt(0.10, ge=0, le=1, doc="max fraction of CDS frames without a valid pair")


@dataclass
class CdsQC(QualityChecks):
    pairing_integrity: PairingIntegrityQC = opt(PairingIntegrityQC, doc="unpaired-frame guard")
    max_cosmic_ray_frac: float = opt(1.0e-3, ge=0, le=1, doc="max fraction of pixel-frames flagged COSMIC_RAY")
    max_outlier_frame_frac: float = opt(0.05, ge=0, le=1, doc="max fraction of frames flagged OUTLIER")


@dataclass
class CdsConfig(StageConfig):
    io: IOConfig = opt(IOConfig(input_key="flat_corrected", output_key="cds_corrected"), doc="input/output keys")
    quality_checks: CdsQC = opt(CdsQC, doc="QC gates: pairing integrity, cosmic-ray and outlier-frame fractions")
    pairing: PairingConfig = opt(PairingConfig, doc="how signal reads find their first read")
    robust: RobustConfig = opt(RobustConfig, doc="per-pixel cosmic-ray rejection")
    temporal_filter: TemporalFilterConfig = opt(TemporalFilterConfig, doc="frame-level outlier filter")


Config = CdsConfig
