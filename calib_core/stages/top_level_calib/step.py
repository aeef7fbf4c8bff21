"""The top-level sigma calibration stage: a thin adapter over :mod:`calib_core.sigma` (see the package doc)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...config.base import ConfigError
from ...diagnostics import Plot, Series, Table
from ...io import DataLayoutError
from ...sigma.metrics import evaluate
from ...sigma.model import SigmaModel, fit_model, load_model, metric_kwargs
from ...sigma.plots import diagnostics as sigma_diagnostics
from ...sigma.predictions import InputError, validate_predictions
from ..base import Gate, Stage, StageContext, gate
from . import INFO
from .config import TopLevelCalibConfig

__all__ = ["STAGE", "TopLevelCalibStage", "typed_plot"]


KEY = "calib.top_level_calib"
IN_SAMPLE = "this planet (in-sample)"


def typed_plot(plot: dict) -> Plot:
    """A plot of :mod:`calib_core.sigma.plots` (JSON form: several named series per plot) as typed plot data."""
    title, xlabel, ylabel = plot.get("title", ""), plot.get("xlabel", ""), plot.get("ylabel", "")
    if plot["kind"] == "table":
        return Table(title, [list(plot.get("columns", []))] + [list(r) for r in plot.get("rows", [])])
    if plot["kind"] == "histogram":
        edges = np.asarray(plot["edges"], np.float64)
        x, named = 0.5 * (edges[1:] + edges[:-1]), plot["counts"]
    else:
        x, named = plot["x"], plot["y"]
    series = [Series(title, x, y, xlabel=xlabel, ylabel=ylabel, label=label) for label, y in named.items()]
    series[0].overlay = series[1:]
    return series[0]


class TopLevelCalibStage(Stage):
    """Post-inference sigma calibration of one planet's spectrum."""

    info = INFO
    Config = TopLevelCalibConfig

    def run(self, inp: Any, cfg: TopLevelCalibConfig, ctx: StageContext, writer: Any) -> dict:
        source = inp
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

    def diagnostics(self, output: Any, metrics: dict, ctx: StageContext) -> list[Plot]:
        return [typed_plot(p) for p in sigma_diagnostics(metrics)]

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
