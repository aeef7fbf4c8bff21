"""Median stacks of sample images (reference frame, variance map)."""

from __future__ import annotations

import numpy as np

from ...robust import sigma_clip_stats

__all__ = ["median_stack", "variance_map", "fill_nan_2d", "fill_nan_along_rows", "VAR_FLOOR_REL"]

#: floor of a variance map relative to its median (guards weights against zero variances)
VAR_FLOOR_REL = 1e-3


def median_stack(values: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Per-pixel median over the first axis of the usable values (NaN where none).

    Parameters
    ----------
    values : ndarray, shape (n, H, W)
    good : ndarray of bool, shape (n, H, W)

    Returns
    -------
    ndarray, shape (H, W)
    """
    vals = np.where(good, values, np.nan)
    return sigma_clip_stats(np.moveaxis(vals, 0, -1), maxiters=0).median


def variance_map(var: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Median pixel variance over samples (e-^2), used as the variance model of weighted fits.

    Pixels never usable take the largest value; all values are floored at
    :data:`VAR_FLOOR_REL` times the median.
    """
    vmap = median_stack(var, good)
    vmap = np.where(np.isfinite(vmap), vmap, np.nanmax(vmap))
    return np.maximum(vmap, VAR_FLOOR_REL * float(np.median(vmap)))


def fill_nan_2d(image: np.ndarray, fallback: float = 0.0, passes: int = 4) -> np.ndarray:
    """Fill NaN pixels with the mean of their finite 8-neighbours (repeated ``passes`` times).

    Pixels still NaN afterwards (large holes) take ``fallback``.
    """
    img = np.array(image, np.float64)
    h, w = img.shape
    for _ in range(passes):
        holes = ~np.isfinite(img)
        if not holes.any():
            break
        pad = np.pad(img, 1, constant_values=np.nan)
        neigh = np.stack([pad[i:i + h, j:j + w] for i in range(3) for j in range(3) if (i, j) != (1, 1)])
        finite = np.isfinite(neigh)
        cnt = finite.sum(axis=0)
        mean = np.where(finite, neigh, 0.0).sum(axis=0) / np.maximum(cnt, 1)
        img = np.where(holes & (cnt > 0), mean, img)
    return np.where(np.isfinite(img), img, fallback)


def fill_nan_along_rows(image: np.ndarray, fallback: float = 0.0) -> np.ndarray:
    """Fill NaN pixels by linear interpolation along each row (i.e. from the neighbouring columns).

    For a spectral trace the profile changes slowly from column to column but
    steeply from row to row, so holes are filled from the same row.  Rows
    without any finite value take ``fallback``.
    """
    img = np.array(image, np.float64)
    cols = np.arange(img.shape[1])
    for row in img:                      # one pass per detector row (H ~ 32), not per frame
        finite = np.isfinite(row)
        if finite.all():
            continue
        row[~finite] = np.interp(cols[~finite], cols[finite], row[finite]) if finite.any() else fallback
    return img
