"""The star on the detectors: AIRS-CH0 trace and FGS1 PSF rates in e-/s, shifted by the pointing jitter.

Every component is integrated over the pixels analytically, so a shifted scene is exact.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.special import ndtr

from ..io.layout import FRAME_SHAPE

__all__ = ["sky_rate", "scaled_scene"]

# Scene parameters.  AIRS-CH0: column sums in e- per 4.5 s CDS (ariel_data.md 4.1), interpolated with a
# PCHIP in log10; spatial row profile fitted here to the measured row fractions (rows 13..18: 0.042, 0.112,
# 0.265, 0.295, 0.131, 0.039; 92.6 % in rows 12-19; 96.3 % in 10-21; ~9e-4 per row in the outer rows).
# FGS1: PSF fitted to 85.6 % in the central 6x6, 94.9 % in 12x12, peak pixel 0.098, corners ~1 e- per CDS;
# Moffat-like wings are represented by two broad Gaussians so every component is separable.
_AIRS_SCENE = {
    "column_sum_anchors_e_per_cds": [[0, 87.0], [39, 5.5e3], [100, 2.4e4], [200, 4.9e4], [300, 1.49e5],
                                     [320, 1.04e5], [355, 1.7e3]],
    "anchor_cds_s": 4.5,
    "row_centre": 15.58,
    "row_components": [[0.774, 1.0], [0.226, 3.43]],  # [weight, sigma in rows]
    "row_floor": 9.2e-4,  # per-row fraction added before normalisation
}
_FGS_SCENE = {
    "centre_row_col": [15.4, 15.3],
    "components": [[0.7999, 1.0603], [0.1818, 3.924], [0.0183, 15.21]],  # [weight, sigma in px]
    "total_e_per_cds": 2.21e5,
    "cds_s": 0.1,
}


def _pixel_integrals(centre: np.ndarray, sigma: float, n: int) -> np.ndarray:
    """Fraction of a unit 1-D Gaussian falling in each of ``n`` pixels (pixel ``i`` spans i-0.5..i+0.5).

    ``centre`` has shape (m,); returns (m, n).
    """
    edges = np.arange(n + 1) - 0.5
    cdf = ndtr((edges[None, :] - centre[:, None]) / sigma)
    return np.diff(cdf, axis=1)


def _airs_row_profile(scene: dict, dy: np.ndarray) -> np.ndarray:
    """Spatial (row) profile of the AIRS-CH0 trace shifted by ``dy`` rows, (m, 32), unnormalised."""
    height = FRAME_SHAPE["AIRS-CH0"][0]
    centre = scene["row_centre"] + dy
    prof = sum(w * _pixel_integrals(centre, s, height) for w, s in scene["row_components"])
    return prof + scene["row_floor"]


def _airs_sky_rate(scene: dict, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """AIRS-CH0 star rate in e-/s per pixel, (m, 32, 356), for jitter shifts ``dx`` (columns), ``dy`` (rows)."""
    width = FRAME_SHAPE["AIRS-CH0"][1]
    anchors = np.array(scene["column_sum_anchors_e_per_cds"], dtype=np.float64)
    log_sum = PchipInterpolator(anchors[:, 0], np.log10(anchors[:, 1]), extrapolate=True)
    column_rate = 10.0 ** log_sum(np.arange(width)[None, :] - dx[:, None]) / scene["anchor_cds_s"]
    norm = _airs_row_profile(scene, np.zeros(1)).sum()
    rows = _airs_row_profile(scene, dy) / norm
    return rows[:, :, None] * column_rate[:, None, :]


def _fgs_sky_rate(scene: dict, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """FGS1 star rate in e-/s per pixel, (m, 32, 32), for jitter shifts ``dx`` (columns), ``dy`` (rows)."""
    height, width = FRAME_SHAPE["FGS1"]
    row0, col0 = scene["centre_row_col"]

    def image(ddx: np.ndarray, ddy: np.ndarray) -> np.ndarray:
        return sum(w * _pixel_integrals(row0 + ddy, s, height)[:, :, None]
                   * _pixel_integrals(col0 + ddx, s, width)[:, None, :] for w, s in scene["components"])

    norm = image(np.zeros(1), np.zeros(1)).sum()
    return image(dx, dy) * (scene["total_e_per_cds"] / scene["cds_s"] / norm)


def sky_rate(instrument: str, scene: dict, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Star rate map(s) in e-/s, (m, H, W), for per-pair jitter arrays ``dx``, ``dy`` (pixels)."""
    dx, dy = np.atleast_1d(np.asarray(dx, np.float64)), np.atleast_1d(np.asarray(dy, np.float64))
    if instrument == "AIRS-CH0":
        return _airs_sky_rate(scene, dx, dy)
    return _fgs_sky_rate(scene, dx, dy)


def scaled_scene(instrument: str, flux_scale: float) -> dict:
    """The instrument's scene with the star's electron rates multiplied by ``flux_scale``.

    ``flux_scale == 1`` returns the module's scene itself (the default output stays byte-identical).
    """
    scene = _AIRS_SCENE if instrument == "AIRS-CH0" else _FGS_SCENE
    if flux_scale == 1.0:
        return scene
    if instrument == "AIRS-CH0":
        anchors = [[col, value * flux_scale] for col, value in scene["column_sum_anchors_e_per_cds"]]
        return {**scene, "column_sum_anchors_e_per_cds": anchors}
    return {**scene, "total_e_per_cds": scene["total_e_per_cds"] * flux_scale}
