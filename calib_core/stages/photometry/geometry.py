"""Pixel-overlap geometry of circular apertures and spectral extraction boxes.

Pixel convention (photutils): pixel ``(row, col)`` has its centre at
``x = col, y = row`` and covers ``[col - 0.5, col + 0.5] x [row - 0.5, row + 0.5]``.
All functions are vectorised over frames: centres are arrays of shape ``(n,)``
and the returned weights have shape ``(n, H, W)`` (or ``(n, H, C)``).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "circle_overlap",
    "circle_subpixel_overlap",
    "circular_weights",
    "annulus_mask",
    "box_row_weights",
]


def _arc_integral(u: np.ndarray, r: float) -> np.ndarray:
    """``int_0^u sqrt(r^2 - t^2) dt`` for ``0 <= u <= r``."""
    root = np.sqrt(np.maximum(r * r - u * u, 0.0))
    return 0.5 * (u * root + r * r * np.arcsin(np.clip(u / r, -1.0, 1.0)))


def _quadrant_area(x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Signed area of the disc ``|p| <= r`` inside the box spanned by the origin and ``(x, y)``.

    For ``x, y >= 0`` this is the area of the disc within ``[0, x] x [0, y]``;
    the sign follows ``sign(x) * sign(y)`` so that a rectangle's overlap is the
    inclusion-exclusion sum over its four corners.
    """
    ax = np.minimum(np.abs(x), r)
    ay = np.minimum(np.abs(y), r)
    x_switch = np.sqrt(np.maximum(r * r - ay * ay, 0.0))  # where the arc crosses height ay
    a = np.minimum(ax, x_switch)
    area = ay * a + _arc_integral(ax, r) - _arc_integral(a, r)
    return np.sign(x) * np.sign(y) * area


def circle_overlap(xc: np.ndarray, yc: np.ndarray, r: float, shape: tuple[int, int]) -> np.ndarray:
    """Exact fractional overlap of circles with every pixel of a frame.

    Parameters
    ----------
    xc, yc : ndarray, shape (n,)
        Circle centres in pixels (column, row).
    r : float
        Radius in pixels (> 0).
    shape : (H, W)
        Frame shape.

    Returns
    -------
    ndarray, shape (n, H, W), float64
        Area of the circle inside each pixel (pixel area = 1), identical to
        photutils' ``method="exact"`` aperture mask.
    """
    xc = np.asarray(xc, np.float64)
    yc = np.asarray(yc, np.float64)
    h, w = shape
    out = np.zeros((len(xc), h, w))
    if len(xc) == 0:
        return out
    # only the bounding box of all circles of the chunk can overlap
    x0 = int(np.clip(np.floor(np.nanmin(xc) - r), 0, w))
    x1 = int(np.clip(np.ceil(np.nanmax(xc) + r) + 1, x0, w))
    y0 = int(np.clip(np.floor(np.nanmin(yc) - r), 0, h))
    y1 = int(np.clip(np.ceil(np.nanmax(yc) + r) + 1, y0, h))
    corner_x = np.arange(x0, x1 + 1, dtype=np.float64)[None, None, :] - 0.5 - xc[:, None, None]
    corner_y = np.arange(y0, y1 + 1, dtype=np.float64)[None, :, None] - 0.5 - yc[:, None, None]
    q = _quadrant_area(corner_x, corner_y, r)          # once per pixel corner
    area = q[:, 1:, 1:] - q[:, :-1, 1:] - q[:, 1:, :-1] + q[:, :-1, :-1]
    out[:, y0:y1, x0:x1] = np.clip(area, 0.0, 1.0)
    return out


def circle_subpixel_overlap(xc: np.ndarray, yc: np.ndarray, r: float, shape: tuple[int, int],
                            subpixels: int) -> np.ndarray:
    """Overlap by sub-pixel sampling (photutils ``method="subpixel"``; 1 = ``"center"``).

    Each pixel is split into ``subpixels x subpixels`` sub-pixels; a sub-pixel
    counts when its centre lies strictly inside the circle.

    Returns
    -------
    ndarray, shape (n, H, W), float64
        Fraction of sub-pixels inside the circle.
    """
    xc = np.asarray(xc, np.float64)[:, None, None]
    yc = np.asarray(yc, np.float64)[:, None, None]
    h, w = shape
    offsets = (np.arange(subpixels) + 0.5) / subpixels - 0.5
    dx = np.arange(w, dtype=np.float64)[None, None, :] - xc
    dy = np.arange(h, dtype=np.float64)[None, :, None] - yc
    inside = np.zeros((len(xc), h, w), np.float64)
    r2 = r * r
    for oy in offsets:
        dy2 = (dy + oy) ** 2
        for ox in offsets:
            inside += (dx + ox) ** 2 + dy2 < r2
    return inside / (subpixels * subpixels)


def circular_weights(xc: np.ndarray, yc: np.ndarray, r: float, shape: tuple[int, int], *,
                     exact: bool = True, subpixels: int = 5) -> np.ndarray:
    """Aperture weights: exact overlap or sub-pixel sampled overlap (see the two kernels)."""
    if exact:
        return circle_overlap(xc, yc, r, shape)
    return circle_subpixel_overlap(xc, yc, r, shape, subpixels)


def annulus_mask(xc: np.ndarray, yc: np.ndarray, r_in: float, r_out: float,
                 shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centres lie in ``r_in <= d < r_out`` (photutils ``"center"`` annulus mask).

    Returns
    -------
    ndarray, shape (n, H, W), bool
    """
    xc = np.asarray(xc, np.float64)[:, None, None]
    yc = np.asarray(yc, np.float64)[:, None, None]
    h, w = shape
    d2 = (np.arange(w)[None, None, :] - xc) ** 2 + (np.arange(h)[None, :, None] - yc) ** 2
    return (d2 < r_out * r_out) & (d2 >= r_in * r_in)


def box_row_weights(centre: np.ndarray, half_width: float, n_rows: int) -> np.ndarray:
    """Fractional row weights of extraction boxes ``[c - h - 0.5, c + h + 0.5]``.

    Parameters
    ----------
    centre : ndarray, shape (..., C)
        Trace centre row per column (any leading shape, e.g. frames).
    half_width : float
        Box half-height in rows; the box is ``2 * half_width + 1`` rows tall.
    n_rows : int
        Detector rows H.

    Returns
    -------
    ndarray, shape (..., H, C), float64
        Overlap length (0..1) of each row pixel with the box.
    """
    c = np.asarray(centre, np.float64)[..., None, :]
    rows = np.arange(n_rows, dtype=np.float64)[:, None]
    lo = np.maximum(rows - 0.5, c - half_width - 0.5)
    hi = np.minimum(rows + 0.5, c + half_width + 0.5)
    return np.clip(hi - lo, 0.0, 1.0)
