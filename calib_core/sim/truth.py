"""The ground truth of a demo planet: ``truth/<planet_id>/truth.json`` and its arrays, written and loaded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..io.layout import DataLayoutError
from .settings import (ADC_GAIN, ADC_OFFSET, COMMON_MODE_RMS_E, CR_RATE_PER_PIXEL_READ, DN_MAX, GENERATOR_VERSION,
                       KTC_RMS_E, target_wavelengths)

__all__ = ["write_truth_json", "load_truth"]


def write_truth_json(truth_dir: Path, seed: int, planet_id: int, split: str, system: dict, spectrum: dict,
                      per_instrument: dict, cosmic_rays: list[dict], scales: dict) -> None:
    """Write ``truth.json``: every injected scalar parameter, per-instrument settings and cosmic-ray hits."""
    truth = {
        "generator_version": GENERATOR_VERSION, "seed": seed, "planet_id": planet_id, "split": split,
        **scales,
        "t0_h": system["t0_h"], "t14_h": system["t14_h"], "period_d": system["star"]["P"],
        "a_rs": system["star"]["sma"], "inc_deg": system["star"]["i"], "ecc": 0.0,
        "impact_parameter": system["impact_parameter"], "star": system["star"],
        "base_depth": system["base_depth"], "feature_amplitude": spectrum["feature_amplitude"],
        "feature_bands_um": spectrum["feature_bands_um"], "feature_weights": spectrum["feature_weights"],
        "fgs_offset": spectrum["fgs_offset"],
        "depth": spectrum["depth"].tolist(), "u1": spectrum["u1"].tolist(), "u2": spectrum["u2"].tolist(),
        "wavelength_um": target_wavelengths().tolist(),
        "adc": {"gain": ADC_GAIN, "offset": ADC_OFFSET, "dn_max": DN_MAX},
        "ktc_rms_e": KTC_RMS_E, "common_mode_rms_e": COMMON_MODE_RMS_E,
        "cosmic_ray_rate_per_pixel_read": CR_RATE_PER_PIXEL_READ,
        "transit_time_convention": "batman at the axis0 time of the second (odd) read of each pair",
        "flat_convention": "flat.parquet = true flat on live pixels (no measurement noise); "
                           "dead pixels: true response 0, shipped flat uniform in [-0.05, 0]",
        "instruments": per_instrument,
        "cosmic_rays": cosmic_rays,
    }
    (truth_dir / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")


def load_truth(root: str | os.PathLike, planet_id: int) -> dict:
    """Load the ground truth of a demo planet.

    Returns
    -------
    dict
        The contents of ``truth.json`` plus every ``<instrument>_<name>.npy`` array under the
        key ``"<instrument>_<name>"`` (e.g. ``"AIRS-CH0_flat"``, ``"FGS1_jitter"``).
    """
    truth_dir = Path(root) / "truth" / str(planet_id)
    path = truth_dir / "truth.json"
    if not path.is_file():
        raise DataLayoutError(f"demo truth not found: expected file {path}")
    truth = json.loads(path.read_text())
    for npy in sorted(truth_dir.glob("*.npy")):
        truth[npy.stem] = np.load(npy)
    return truth
