"""Post-inference sigma calibration of predicted transit spectra, and the 2025 challenge metric.

* :mod:`.metrics`: challenge score, Gaussian NLL, coverage, ECE, z statistics.
* :mod:`.temperature`: ``sigma' = T sigma`` (global or per bin, optional L2 pull to 1).
* :mod:`.corel`: graph-Laplacian-smoothed per-bin scales + split-conformal coverage.
* :mod:`.model`: the fitted per-bin scales (``model.json``), fitting dispatch.
* :mod:`.predictions`: predictions/labels I/O and validation (CSV, batches, npz, pt).
* :mod:`.plots`: plot data for the app and the audit report.
* :mod:`.cli`: ``spectramind sigma-calibrate``.
"""

from .corel import fit_corel, standard_wavelengths
from .metrics import challenge_score, challenge_score_raw, evaluate, gaussian_nll
from .model import SigmaModel, fit_model, load_model, save_model
from .plots import diagnostics
from .predictions import InputError, Predictions, Targets, read_predictions, read_targets, write_predictions
from .temperature import fit_temperature

__all__ = [
    "InputError",
    "Predictions",
    "SigmaModel",
    "Targets",
    "challenge_score",
    "challenge_score_raw",
    "diagnostics",
    "evaluate",
    "fit_corel",
    "fit_model",
    "fit_temperature",
    "gaussian_nll",
    "load_model",
    "read_predictions",
    "read_targets",
    "save_model",
    "standard_wavelengths",
    "write_predictions",
]
