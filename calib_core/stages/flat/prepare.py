"""The flat applied to the frames: unusable values replaced, illumination divided out, renormalised."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError
from .illumination import fit_illumination_poly2d, fit_illumination_row_spline

if TYPE_CHECKING:  # pragma: no cover
    from .config import IlluminationConfig

__all__ = ["PreparedFlat", "prepare_flat"]


@dataclass
class PreparedFlat:
    """The flat applied to the frames and how it was built."""

    applied: np.ndarray              #: (H, W) float32, 1 on BAD_FLAT pixels
    bad: np.ndarray                  #: (H, W) bool, BAD_FLAT
    good: np.ndarray                 #: (H, W) bool, used for statistics (not dead, not bad)
    illumination: np.ndarray | None  #: (H, W) float32 field divided out, or None
    norm: float                      #: mean divided out by the renormalisation (1 when off)


def prepare_flat(flat: np.ndarray, dead: np.ndarray, *, min_flat: float, renormalize: bool,
                 illumination: "IlluminationConfig | None" = None) -> PreparedFlat:
    """Build the flat to apply (see the module docstring).

    Parameters
    ----------
    flat : ndarray, shape (H, W)
        Calibration flat (dimensionless).
    dead : ndarray of bool, shape (H, W)
        Dead pixels (excluded from fits and the mean).
    min_flat : float
        Values ``<= min_flat`` (or non-finite) are unusable.
    renormalize : bool
        Divide by the mean over good pixels.
    illumination : IlluminationConfig, optional
        When given and enabled, fit and divide out the large-scale field.
    """
    values = np.asarray(flat, np.float64)
    bad = ~np.isfinite(values) | (values <= min_flat)
    good = ~bad & ~np.asarray(dead, bool)
    if not good.any():
        raise DataError(f"flat: no usable pixel (all flat values <= min_flat = {min_flat:g} or dead)")
    work = np.where(bad, 1.0, values)
    field = None
    if illumination is not None and illumination.enabled:
        if illumination.method == "poly2d":
            field = fit_illumination_poly2d(work, good, degree_x=illumination.degree_x,
                                            degree_y=illumination.degree_y, sigma=illumination.sigma,
                                            maxiters=illumination.maxiters)
        else:
            field = fit_illumination_row_spline(work, good, knots=illumination.knots, sigma=illumination.sigma,
                                                maxiters=illumination.maxiters)
        work = np.where(bad, 1.0, work / field)
    norm = float(work[good].mean()) if renormalize else 1.0
    applied = np.where(bad, 1.0, work / norm).astype(np.float32)
    return PreparedFlat(applied, bad, good, None if field is None else field.astype(np.float32), norm)
