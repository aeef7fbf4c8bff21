"""Hot and cold pixels: the outliers of a dark map under astropy sigma clipping (both tails)."""

from __future__ import annotations

import numpy as np

from ...robust import sigma_clip

__all__ = ["hot_pixel_mask"]


def hot_pixel_mask(dark: np.ndarray, *, sigma: float = 5.0, maxiters: int = 5) -> np.ndarray:
    """Outliers of a dark map under iterative sigma clipping (both tails; non-finite values included).

    Parameters
    ----------
    dark : ndarray, shape (H, W)
        Dark-current map (e-/s).
    sigma : float
        Clip threshold in standard deviations about the median.
    maxiters : int
        Clipping iterations.

    Returns
    -------
    ndarray of bool, shape (H, W)
        True for hot/cold pixels (astropy ``sigma_clip(...).mask``).
    """
    clipped = sigma_clip(np.asarray(dark, np.float64), sigma=sigma, maxiters=maxiters, masked=True)
    return np.ma.getmaskarray(clipped).copy()
