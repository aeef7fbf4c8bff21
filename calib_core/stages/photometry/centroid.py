"""Vectorised centroid estimators (all frames of a chunk at once).

2-D estimators work in a fixed ``box_px x box_px`` cut-out around an integer
box centre (the reference position of the star), 1-D estimators on a row
profile in a window around a reference row.  Coordinates are absolute pixel
coordinates with pixel centres at integers (photutils convention).

Methods
-------
``com``
    Intensity-weighted centre of mass (``photutils.centroids.centroid_com``).
``quadratic``
    Vertex of a least-squares quadratic through the 3x3 (1-D: 3) pixels
    around the brightest pixel (Vakili & Hogg 2016).
``gaussian2d``
    Least-squares Gaussian + constant fit (2-D: Gauss-Newton with a small
    Levenberg damping, 1-D: three-point log-parabola).

A method that cannot produce a finite position inside its window falls back
to ``com`` and reports the frame in the returned ``failed`` mask.
"""

from __future__ import annotations

import numpy as np

from .config import CENTROID_METHODS

__all__ = ["CENTROID_METHODS", "centroid_2d", "centroid_1d", "box_slices"]

_GN_ITERATIONS = 10
_GN_DAMPING = 1e-3


def box_slices(xb: int, yb: int, box_px: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Row and column slices of a ``box_px`` box centred on pixel ``(xb, yb)``, clipped to the frame."""
    half = box_px // 2
    h, w = shape
    return (slice(max(yb - half, 0), min(yb + half + 1, h)),
            slice(max(xb - half, 0), min(xb + half + 1, w)))


def _com(cut: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tot = cut.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        x = (cut.sum(axis=1) * xs).sum(axis=1) / tot
        y = (cut.sum(axis=2) * ys).sum(axis=1) / tot
    return x, y


def _quadratic_design() -> np.ndarray:
    dy, dx = np.mgrid[-1:2, -1:2]
    dx, dy = dx.ravel().astype(float), dy.ravel().astype(float)
    design = np.stack([np.ones(9), dx, dy, dx * dx, dx * dy, dy * dy], axis=1)
    return np.linalg.pinv(design)


def _quadratic(cut: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, bh, bw = cut.shape
    peak = np.argmax(cut.reshape(n, -1), axis=1)
    py = np.clip(peak // bw, 1, bh - 2)
    px = np.clip(peak % bw, 1, bw - 2)
    oy, ox = np.mgrid[-1:2, -1:2]
    z = cut[np.arange(n)[:, None], (py[:, None] + oy.ravel()), (px[:, None] + ox.ravel())]
    a, b, c, d, e, f = (z @ _quadratic_design().T).T
    det = 4.0 * d * f - e * e
    with np.errstate(invalid="ignore", divide="ignore"):
        dxv = (e * c - 2.0 * f * b) / det
        dyv = (e * b - 2.0 * d * c) / det
    ok = (det > 0) & (d < 0) & (np.abs(dxv) <= 1.0) & (np.abs(dyv) <= 1.0)
    return xs[px] + dxv, ys[py] + dyv, ok


def _damped_solve(jtj: np.ndarray, jtr: np.ndarray) -> np.ndarray:
    """Levenberg-damped normal-equation steps for a batch ``(n, k, k)``; never singular."""
    diag = np.einsum("nii->ni", jtj)
    floor = 1e-12 * np.maximum(diag.max(axis=1, keepdims=True), 1e-300)
    damped = jtj + (_GN_DAMPING * diag + floor)[:, :, None] * np.eye(jtj.shape[-1])
    with np.errstate(invalid="ignore"):
        return np.linalg.solve(damped, jtr[..., None])[..., 0]


def _gaussian2d(cut: np.ndarray, xs: np.ndarray, ys: np.ndarray, x0: np.ndarray,
                y0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(cut)
    gx = xs[None, None, :]
    gy = ys[None, :, None]
    z = cut.reshape(n, -1)
    bkg = np.min(z, axis=1)
    amp = np.max(z, axis=1) - bkg
    p = np.stack([amp, x0, y0, np.full(n, 1.5), np.full(n, 1.5), bkg], axis=1)
    for _ in range(_GN_ITERATIONS):
        a, xc, yc, sx, sy, b = (p[:, k, None, None] for k in range(6))
        ux, uy = (gx - xc) / sx, (gy - yc) / sy
        g = np.exp(-0.5 * (ux * ux + uy * uy))
        model = a * g + b
        jac = np.stack(np.broadcast_arrays(
            g, a * g * ux / sx, a * g * uy / sy, a * g * ux * ux / sx, a * g * uy * uy / sy,
            np.ones_like(g)), axis=-1).reshape(n, -1, 6)
        res = (cut - model).reshape(n, -1)
        jtj = np.einsum("npi,npj->nij", jac, jac)
        step = _damped_solve(jtj, np.einsum("npi,np->ni", jac, res))
        p = p + step
        p[:, 3:5] = np.clip(np.abs(p[:, 3:5]), 0.3, 0.5 * len(xs))
    ok = (np.isfinite(p).all(axis=1) & (p[:, 0] > 0)
          & (p[:, 1] >= xs[0]) & (p[:, 1] <= xs[-1]) & (p[:, 2] >= ys[0]) & (p[:, 2] <= ys[-1]))
    return p[:, 1], p[:, 2], ok


def centroid_2d(images: np.ndarray, xb: int, yb: int, box_px: int,
                method: str = "com") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroids of a stack of images.

    Parameters
    ----------
    images : ndarray, shape (n, H, W)
        Background-subtracted images (e-), bad pixels already filled.
    xb, yb : int
        Box centre pixel (column, row).
    box_px : int
        Box size (pixels, odd).
    method : {"com", "quadratic", "gaussian2d"}

    Returns
    -------
    x, y : ndarray, shape (n,)
        Centroid column and row (pixels).
    failed : ndarray of bool, shape (n,)
        The method failed and ``com`` was used instead.
    """
    if method not in CENTROID_METHODS:
        raise ValueError(f"unknown centroid method {method!r}")
    rs, cs = box_slices(xb, yb, box_px, images.shape[1:])
    cut = np.asarray(images[:, rs, cs], np.float64)
    xs = np.arange(cs.start, cs.stop, dtype=np.float64)
    ys = np.arange(rs.start, rs.stop, dtype=np.float64)
    x, y = _com(cut, xs, ys)
    if method == "com":
        failed = ~(np.isfinite(x) & np.isfinite(y))
        return x, y, failed
    if method == "quadratic":
        xq, yq, ok = _quadratic(cut, xs, ys)
    else:
        start_x = np.where(np.isfinite(x), x, xb)
        start_y = np.where(np.isfinite(y), y, yb)
        xq, yq, ok = _gaussian2d(cut, xs, ys, start_x, start_y)
    return np.where(ok, xq, x), np.where(ok, yq, y), ~ok


def centroid_1d(profiles: np.ndarray, centre: float, half_window: float,
                method: str = "com") -> tuple[np.ndarray, np.ndarray]:
    """Centre of 1-D profiles (e.g. the trace's row profile) near ``centre``.

    Parameters
    ----------
    profiles : ndarray, shape (n, H)
        Background-subtracted profiles (e-).
    centre : float
        Reference position (pixels); the window is ``centre +- half_window``.
    half_window : float
        Half width of the window (pixels, >= 1).
    method : {"com", "quadratic", "gaussian2d"}
        ``gaussian2d`` fits a Gaussian to the three pixels around the peak.

    Returns
    -------
    pos : ndarray, shape (n,)
        Centre (pixels).
    failed : ndarray of bool, shape (n,)
        The method failed and ``com`` was used instead.
    """
    if method not in CENTROID_METHODS:
        raise ValueError(f"unknown centroid method {method!r}")
    n, h = profiles.shape
    lo = max(int(np.floor(centre - half_window)), 0)
    hi = min(int(np.ceil(centre + half_window)) + 1, h)
    cut = np.asarray(profiles[:, lo:hi], np.float64)
    pos_axis = np.arange(lo, hi, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        com = (cut * pos_axis).sum(axis=1) / cut.sum(axis=1)
    if method == "com":
        return com, ~np.isfinite(com)
    peak = np.clip(np.argmax(cut, axis=1), 1, cut.shape[1] - 2)
    rows = np.arange(n)
    zm, z0, zp = cut[rows, peak - 1], cut[rows, peak], cut[rows, peak + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "gaussian2d":
            zm, z0, zp = np.log(zm), np.log(z0), np.log(zp)
        curv = zm - 2.0 * z0 + zp
        offset = 0.5 * (zm - zp) / curv
    ok = np.isfinite(offset) & (curv < 0) & (np.abs(offset) <= 1.0)
    return np.where(ok, pos_axis[peak] + offset, com), ~ok
