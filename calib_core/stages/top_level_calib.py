"""``top_level_calib``: optional last stage, honest sigmas for the predicted spectrum.

Input: the ``depths`` stage output of one planet (fields ``mu``, ``sigma``, one
value per bin; bin 0 = FGS1).  Output: fields ``mu`` (unchanged), ``sigma``
(calibrated) and ``scale`` (``sigma_out / sigma_in`` per bin).

* ``method: none`` (default): pass-through, metrics ``{"skipped": true}``.
* ``method: temperature | corel`` with ``model_path``: apply the model that
  ``spectramind sigma-calibrate`` fitted on many labelled planets (the method
  must match the model's).
* without ``model_path``: fit on this planet's own labels (``fitted_on: "this
  planet (in-sample)"``); a planet without labels is a configuration error.

Metrics before/after (challenge score, NLL, coverage, ECE, z stats) are
computed whenever the planet has labels; the QC gates check the calibrated
68 % coverage and the z-score mean.  Algorithms: :mod:`calib_core.sigma`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config.base import ConfigError, IOConfig, QualityChecks, StageConfig, opt
from ..io import DataLayoutError
from ..sigma.metrics import evaluate
from ..sigma.model import SigmaModel, fit_model, load_model, metric_kwargs
from ..sigma.plots import diagnostics as sigma_diagnostics
from ..sigma.predictions import InputError, validate_predictions
from .base import Gate, Stage, StageContext, gate

__all__ = [
    "TemperatureConfig",
    "CorelConfig",
    "SplitConfig",
    "MetricConfig",
    "TopLevelCalibQualityChecks",
    "TopLevelCalibConfig",
    "TopLevelCalibStage",
    "STAGE",
]

KEY = "calib.top_level_calib"
IN_SAMPLE = "this planet (in-sample)"


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
    io: IOConfig = opt(IOConfig("depths", "depths_calibrated"))
    quality_checks: TopLevelCalibQualityChecks = opt(TopLevelCalibQualityChecks)
    method: str = opt("none", choices=("none", "temperature", "corel"),
                      doc="none = pass-through; temperature = sigma * T; corel = graph-smoothed scales + conformal")
    model_path: str | None = opt(None, nullable=True,
                                 doc="model.json from `spectramind sigma-calibrate`; null = fit on the planet's labels")
    wavelengths_path: str | None = opt(None, nullable=True,
                                       doc="wavelengths.csv for the COREL graph; null = standard grid")
    bins: int = opt(283, ge=2, doc="spectral bins (bin 0 = FGS1)")
    temperature: TemperatureConfig = opt(TemperatureConfig)
    corel: CorelConfig = opt(CorelConfig)
    split: SplitConfig = opt(SplitConfig)
    metric: MetricConfig = opt(MetricConfig)

    def check(self, prefix: str) -> None:
        if not self.validation.require_existing_paths:
            return
        for name in ("model_path", "wavelengths_path"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise ConfigError(f"{prefix}.{name}", value, "file does not exist")


class TopLevelCalibStage(Stage):
    """Post-inference sigma calibration of one planet's spectrum."""

    name = "top_level_calib"
    title = "Top-level sigma calibration"
    Config = TopLevelCalibConfig
    input_kind = "series"
    output_kind = "series"
    scope = "planet"
    default_io = ("depths", "depths_calibrated")

    def run(self, inp: Any, cfg: TopLevelCalibConfig, ctx: StageContext, writer: Any) -> dict:
        source = inp if hasattr(inp, "fields") else ctx.output_of("depths", None)
        if source is None or not {"mu", "sigma"} <= set(source.fields):
            raise InputError(cfg.io.input_key, "top_level_calib needs the depths output (fields mu, sigma)")
        mu = np.asarray(source.fields["mu"], dtype=np.float64)
        sigma = np.asarray(source.fields["sigma"], dtype=np.float64)
        validate_predictions(mu[None], sigma[None], None, str(source.path), cfg.bins)
        planet_id = source.meta.get("planet_id", getattr(ctx.planet, "planet_id", None))
        writer.meta.update({"planet_id": planet_id, "method": cfg.method})
        if cfg.method == "none":
            self._write(writer, source, mu, sigma, np.ones(cfg.bins))
            return {"method": "none", "skipped": True}
        labels = self._labels(ctx, cfg.bins, planet_id)
        model, fitted_on = self._model(cfg, ctx, labels, mu, sigma, planet_id)
        calibrated = model.apply(sigma)
        self._write(writer, source, mu, calibrated, model.scale)
        metrics: dict = {
            "method": cfg.method, "skipped": False, "planet_id": planet_id, "fitted_on": fitted_on,
            "has_labels": labels is not None,
            "model": {"method": model.method, "scale": model.scale.tolist(), "details": model.details},
            "scale_min": float(model.scale.min()), "scale_mean": float(model.scale.mean()),
            "scale_max": float(model.scale.max()), "warnings": self._warnings(cfg, fitted_on),
        }
        if labels is not None:
            kwargs = metric_kwargs(cfg)
            metrics["before"] = evaluate(labels, mu, sigma, **kwargs)
            metrics["after"] = evaluate(labels, mu, calibrated, **kwargs)
        return metrics

    def gates(self, metrics: dict, cfg: TopLevelCalibConfig) -> list[Gate]:
        if metrics.get("skipped") or "after" not in metrics:
            return []
        qc, after = cfg.quality_checks, metrics["after"]
        return [
            gate("coverage_68_min", after["coverage_68"], ">=", qc.min_coverage_68,
                 "calibrated sigmas too small (intervals miss the truth too often)"),
            gate("coverage_68_max", after["coverage_68"], "<=", qc.max_coverage_68,
                 "calibrated sigmas too large (intervals too wide)"),
            gate("abs_z_mean", abs(after["z_mean"]), "<=", qc.max_abs_z_mean,
                 "mu is biased relative to sigma; sigma scaling cannot fix a bias"),
        ]

    def diagnostics(self, output: Any, metrics: dict, ctx: StageContext) -> list[dict]:
        return sigma_diagnostics(metrics)

    @staticmethod
    def _labels(ctx: StageContext, n_bins: int, planet_id: Any) -> np.ndarray | None:
        raw = ctx.planet.labels() if ctx.planet is not None else None
        if raw is None:
            return None
        labels = np.asarray(raw, dtype=np.float64).reshape(-1)
        if labels.shape != (n_bins,) or not np.all(np.isfinite(labels)):
            raise InputError(f"labels of planet {planet_id}", f"expected {n_bins} finite values, "
                                                              f"got shape {np.shape(raw)}")
        return labels

    @staticmethod
    def _model(cfg: TopLevelCalibConfig, ctx: StageContext, labels: np.ndarray | None, mu: np.ndarray,
               sigma: np.ndarray, planet_id: Any) -> tuple[SigmaModel, str]:
        if cfg.model_path is not None:
            model = load_model(cfg.model_path, cfg.bins)
            if model.method != cfg.method:
                raise ConfigError(f"{KEY}.method", cfg.method,
                                  f"the model {cfg.model_path} was fitted with method '{model.method}'; use that")
            return model, f"model {cfg.model_path}"
        if labels is None:
            raise ConfigError(f"{KEY}.model_path", None,
                              f"planet {planet_id} has no labels to fit on: set it to a model.json written by "
                              "`spectramind sigma-calibrate`, or use method=none")
        wavelengths = TopLevelCalibStage._planet_wavelengths(cfg, ctx)
        return fit_model(cfg, labels[None], mu[None], sigma[None], wavelengths), IN_SAMPLE

    @staticmethod
    def _planet_wavelengths(cfg: TopLevelCalibConfig, ctx: StageContext) -> np.ndarray | None:
        """The dataset's wavelengths.csv for an in-sample COREL graph (None: config path or standard grid)."""
        if cfg.method != "corel" or cfg.wavelengths_path is not None:
            return None
        try:
            wavelengths = np.asarray(ctx.planet.wavelengths(), dtype=np.float64)
        except DataLayoutError:
            return None
        return wavelengths if wavelengths.shape == (cfg.bins,) else None

    @staticmethod
    def _warnings(cfg: TopLevelCalibConfig, fitted_on: str) -> list[str]:
        if fitted_on != IN_SAMPLE:
            return []
        notes = ["fitted and evaluated on the same planet: the after-metrics are optimistic"]
        if cfg.method == "temperature" and cfg.temperature.per_bin and cfg.temperature.l2 == 0:
            notes.append("per-bin T from one planet without l2 sets every |z| to 1; use temperature.l2 > 0 "
                         "or a model_path")
        return notes

    @staticmethod
    def _write(writer: Any, source: Any, mu: np.ndarray, sigma: np.ndarray, scale: np.ndarray) -> None:
        units = {name: spec.get("unit", "") for name, spec in source.meta.get("fields", {}).items()}
        writer.put("mu", mu, unit=units.get("mu", ""))
        writer.put("sigma", sigma, unit=units.get("sigma", ""))
        writer.put("scale", scale, unit="")


STAGE = TopLevelCalibStage()
