"""A fitted sigma-calibration model: per-bin scales, how they were fitted, JSON round trip.

Every method reduces to ``sigma' = scale_b * sigma`` with one ``scale`` per
bin (a global temperature repeats one value), so applying a model never needs
the method's code.  ``model.json`` (written by ``spectramind sigma-calibrate``,
read by the ``top_level_calib`` stage through ``model_path``)::

    {"format": "calib_core.sigma.model", "version": 1, "method": "temperature",
     "n_bins": 283, "scale": [...283...], "details": {"T": 1.93, "per_bin": false, ...}}
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config.base import ConfigError
from ..store import atomic_write_json
from .corel import fit_corel, standard_wavelengths
from .metrics import z_scores
from .predictions import InputError, read_wavelengths
from .temperature import fit_temperature

__all__ = ["MODEL_FORMAT", "FIT_METHODS", "SigmaModel", "fit_model", "load_model", "save_model",
           "metric_kwargs", "wavelengths_for"]

MODEL_FORMAT = "calib_core.sigma.model"
MODEL_VERSION = 1
#: methods that fit a model (``none`` is the stage's pass-through)
FIT_METHODS = ("temperature", "corel")
_KEY = "calib.top_level_calib"


@dataclass
class SigmaModel:
    """Per-bin sigma scales and the record of their fit."""

    method: str                                   #: "temperature" | "corel"
    scale: np.ndarray                             #: float64 (n_bins,), sigma' = scale * sigma
    details: dict = field(default_factory=dict)   #: T or graph/conformal scales, settings, sizes

    def apply(self, sigma: np.ndarray) -> np.ndarray:
        """Calibrated sigmas (``sigma`` of shape ``(..., n_bins)``)."""
        return np.asarray(sigma, dtype=np.float64) * self.scale

    def to_json(self) -> dict:
        return {"format": MODEL_FORMAT, "version": MODEL_VERSION, "method": self.method,
                "n_bins": int(self.scale.size), "scale": self.scale.tolist(), "details": self.details}


def metric_kwargs(cfg: Any) -> dict:
    """Keyword arguments of :func:`calib_core.sigma.metrics.evaluate` from ``cfg.metric``."""
    return dataclasses.asdict(cfg.metric)


def wavelengths_for(cfg: Any) -> tuple[np.ndarray, str]:
    """Bin wavelengths from ``cfg.wavelengths_path``, else the standard grid; and where they came from."""
    if cfg.wavelengths_path:
        return read_wavelengths(cfg.wavelengths_path, cfg.bins), str(cfg.wavelengths_path)
    return standard_wavelengths(cfg.bins), "standard grid"


def fit_model(cfg: Any, y: np.ndarray, mu: np.ndarray, sigma: np.ndarray,
              wavelengths: np.ndarray | None = None) -> SigmaModel:
    """Fit ``cfg.method`` (``temperature`` or ``corel``) on labelled predictions.

    Parameters
    ----------
    cfg : TopLevelCalibConfig
        The ``calib.top_level_calib`` section.
    y, mu, sigma : ndarray, shape (n_planets, n_bins)
        Labels and predictions of the fitting planets.
    wavelengths : ndarray, shape (n_bins,), optional
        Bin wavelengths for the COREL graph (e.g. the planet's dataset
        ``wavelengths.csv``); default :func:`wavelengths_for`.

    Returns
    -------
    SigmaModel

    Raises
    ------
    ConfigError
        When ``cfg.method`` is not a fitting method.
    """
    z = z_scores(y, mu, sigma)
    n_bins = z.shape[1]
    if cfg.method == "temperature":
        t = cfg.temperature
        temp = fit_temperature(z, per_bin=t.per_bin, l2=t.l2, clamp=tuple(t.clamp), newton_iters=t.newton_iters)
        scale = np.broadcast_to(temp, (n_bins,)).astype(np.float64)
        details = {"T": temp.tolist(), "settings": dataclasses.asdict(t)}
    elif cfg.method == "corel":
        settings = dataclasses.asdict(cfg.corel)
        wl, wl_source = (wavelengths, "given") if wavelengths is not None else wavelengths_for(cfg)
        scale, details = fit_corel(z, wl, seed=cfg.split.seed, **settings)
        details.update(settings=settings, wavelengths_source=wl_source)
    else:
        raise ConfigError(f"{_KEY}.method", cfg.method, "must be one of " + ", ".join(FIT_METHODS) + " to fit a model")
    details["n_planets"] = int(z.shape[0])
    return SigmaModel(cfg.method, scale, details)


def save_model(path: str | os.PathLike, model: SigmaModel) -> None:
    """Write ``model`` as JSON atomically."""
    atomic_write_json(path, model.to_json())


def load_model(path: str | os.PathLike, n_bins: int = 283) -> SigmaModel:
    """Read a model written by :func:`save_model`.

    Raises
    ------
    InputError
        Missing or unreadable file, foreign format, wrong bin count or
        non-positive scales.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such model file (write one with `spectramind sigma-calibrate`)")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        # the decoder's message locates the fault; the file's text itself is never quoted
        raise InputError(path, f"not a readable JSON model ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
        raise InputError(path, f"not a sigma-calibration model (expected \"format\": \"{MODEL_FORMAT}\")")
    if data.get("method") not in FIT_METHODS:
        raise InputError(path, f"\"method\" must be one of {', '.join(FIT_METHODS)}")
    scale = np.asarray(data.get("scale", []), dtype=np.float64)
    if scale.shape != (n_bins,):
        raise InputError(path, f"model has {scale.size} scales, expected {n_bins} (one per bin)")
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise InputError(path, "model scales must be finite and > 0")
    return SigmaModel(data["method"], scale, dict(data.get("details", {})))
