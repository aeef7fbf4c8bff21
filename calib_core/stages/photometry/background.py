"""Vectorised background (sky) estimators for frame chunks.

Every estimator works on a whole chunk at once (frames first) and returns the
sky level per pixel in electrons together with the variance of that estimate
(e-^2), so the extraction can propagate the sky error into the flux variance.

Sigma clipping is :func:`calib_core.robust.sigma_clip_stats` (astropy's
semantics, computed for every row of a chunk at once).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter1d

from ...robust import sigma_clip_stats
from .geometry import annulus_mask

__all__ = [
    "annulus_background",
    "mesh_background",
    "row_background",
    "MESH_MIN_VALID_FRACTION",
    "MEDIAN_VAR_FACTOR",
]

#: a mesh box is used only when at least this fraction of its pixels is usable
MESH_MIN_VALID_FRACTION = 0.5
#: variance of a median relative to a mean for Gaussian noise (pi / 2)
MEDIAN_VAR_FACTOR = np.pi / 2.0


def _compress(mask: np.ndarray) -> np.ndarray:
    """Flat pixel indices used by at least one frame of ``mask`` (n, H, W)."""
    return np.flatnonzero(mask.reshape(len(mask), -1).any(axis=0))


def annulus_background(data: np.ndarray, var: np.ndarray, good: np.ndarray, xc: np.ndarray,
                       yc: np.ndarray, *, r_in: float, r_out: float, sigma: float,
                       maxiters: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sigma-clipped median of the pixels in a circular annulus around each centroid.

    Parameters
    ----------
    data, var : ndarray, shape (n, H, W)
        Frames (e-) and their variance (e-^2).
    good : ndarray of bool, shape (n, H, W)
        Usable pixels.
    xc, yc : ndarray, shape (n,)
        Annulus centres (pixels).
    r_in, r_out : float
        Annulus radii (pixels); pixels with centres at ``r_in <= d < r_out``.
    sigma, maxiters : float, int
        Sigma-clipping parameters.

    Returns
    -------
    sky : ndarray, shape (n,)
        Sky level per pixel (e-); NaN when the annulus holds no usable pixel.
    sky_var : ndarray, shape (n,)
        Variance of ``sky`` (e-^2): ``pi/2 * mean(var) / n_used``.
    n_used : ndarray of int, shape (n,)
        Pixels surviving the clipping.
    """
    n = len(data)
    mask = annulus_mask(xc, yc, r_in, r_out, data.shape[1:]) & good
    cols = _compress(mask)
    sel = mask.reshape(n, -1)[:, cols]
    vals = np.where(sel, data.reshape(n, -1)[:, cols], np.nan)
    st = sigma_clip_stats(vals, sigma=sigma, maxiters=maxiters)
    used_var = np.where(st.kept, var.reshape(n, -1)[:, cols], 0.0).sum(axis=1)
    cnt = np.maximum(st.count, 1)
    sky_var = MEDIAN_VAR_FACTOR * used_var / (cnt * cnt)
    return st.median, np.where(st.count > 0, sky_var, np.nan), st.count


def _interp_matrix(n_out: int, box: int, n_mesh: int) -> np.ndarray:
    """Linear interpolation (clamped at the ends) from mesh centres to pixel centres."""
    centres = (np.arange(n_mesh) + 0.5) * box - 0.5
    eye = np.eye(n_mesh)
    pix = np.arange(n_out, dtype=np.float64)
    return np.stack([np.interp(pix, centres, eye[k]) for k in range(n_mesh)], axis=1)


def _nan_median_filter3(mesh: np.ndarray) -> np.ndarray:
    """3x3 NaN-aware median filter of ``(n, ny, nx)`` meshes (edges use the available neighbours)."""
    n, ny, nx = mesh.shape
    pad = np.pad(mesh, ((0, 0), (1, 1), (1, 1)), constant_values=np.nan)
    stack = np.stack([pad[:, i:i + ny, j:j + nx] for i in range(3) for j in range(3)], axis=-1)
    return sigma_clip_stats(stack, maxiters=0).median


def mesh_background(data: np.ndarray, var: np.ndarray, good: np.ndarray, xc: np.ndarray,
                    yc: np.ndarray, *, mask_radius: float, box: int, sigma: float,
                    maxiters: int) -> tuple[np.ndarray, np.ndarray]:
    """Low-resolution background map (photutils ``Background2D`` style) for each frame.

    The frame is cut into ``box x box`` cells (partial cells at the far edges);
    pixels within ``mask_radius`` of the centroid and unusable pixels are
    masked; each cell with at least :data:`MESH_MIN_VALID_FRACTION` usable
    pixels gets its sigma-clipped median; the mesh is 3x3 median filtered,
    cells still empty take the median of the frame's mesh, and the mesh is
    linearly interpolated (clamped) to full resolution.

    Returns
    -------
    sky : ndarray, shape (n, H, W)
        Background map (e- per pixel).
    sky_var : ndarray, shape (n,)
        Approximate variance of the map level: ``pi/2 * mean(var) / n_used``
        over all used pixels.
    """
    n, h, w = data.shape
    ny, nx = -(-h // box), -(-w // box)
    far = ~annulus_mask(xc, yc, 0.0, mask_radius, (h, w)) & good
    vals = np.full((n, ny * box, nx * box), np.nan)
    vals[:, :h, :w] = np.where(far, data, np.nan)
    cells = vals.reshape(n, ny, box, nx, box).transpose(0, 1, 3, 2, 4).reshape(n, ny, nx, box * box)
    st = sigma_clip_stats(cells, sigma=sigma, maxiters=maxiters)
    n_valid = np.count_nonzero(np.isfinite(cells), axis=-1)
    cell_area = np.minimum(box, h - np.arange(ny) * box)[:, None] * np.minimum(box, w - np.arange(nx) * box)[None, :]
    mesh = np.where(n_valid >= MESH_MIN_VALID_FRACTION * cell_area, st.median, np.nan)
    mesh = _nan_median_filter3(mesh)
    fill = sigma_clip_stats(mesh.reshape(n, -1), maxiters=0).median
    mesh = np.where(np.isfinite(mesh), mesh, fill[:, None, None])
    sky = np.einsum("yi,nij,xj->nyx", _interp_matrix(h, box, ny), mesh, _interp_matrix(w, box, nx))
    vpad = np.zeros((n, ny * box, nx * box))
    vpad[:, :h, :w] = var
    vcells = vpad.reshape(n, ny, box, nx, box).transpose(0, 1, 3, 2, 4).reshape(n, ny, nx, box * box)
    used = np.where(st.kept, vcells, 0.0).sum(axis=(1, 2, 3))
    cnt = np.maximum(st.count.sum(axis=(1, 2)), 1)
    return sky, MEDIAN_VAR_FACTOR * used / (cnt * cnt)


def row_background(data: np.ndarray, var: np.ndarray, good: np.ndarray, sky_rows: np.ndarray, *,
                   sigma: float, maxiters: int, smooth_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Sky per spectral column from rows away from the trace (AIRS).

    For each frame and column the usable sky-row pixels are sigma clipped and
    averaged; the column means are then smoothed with a running mean of
    ``smooth_cols`` columns (NaN-aware), since the sky varies slowly with
    wavelength while its per-column estimate is noisy.

    Parameters
    ----------
    data, var : ndarray, shape (n, H, C)
    good : ndarray of bool, shape (n, H, C)
    sky_rows : ndarray of bool, shape (H, C) or (n, H, C)
        Rows that see only sky (outside the trace).
    sigma, maxiters : float, int
        Sigma-clipping parameters (per column).
    smooth_cols : int
        Running-mean window along columns (1 = no smoothing).

    Returns
    -------
    sky, sky_var : ndarray, shape (n, C)
        Sky per pixel (e-) and the variance of that estimate (e-^2).
    """
    sky_rows = np.broadcast_to(sky_rows, data.shape)
    rows = np.flatnonzero(sky_rows.any(axis=(0, 2)))    # only rows that are sky somewhere
    use = sky_rows[:, rows] & good[:, rows]
    vals = np.where(use, data[:, rows], np.nan).transpose(0, 2, 1)
    st = sigma_clip_stats(vals, sigma=sigma, maxiters=maxiters)
    cnt = np.maximum(st.count, 1)
    col_var = np.where(st.kept, var[:, rows].transpose(0, 2, 1), 0.0).sum(axis=-1) / (cnt * cnt)
    ok = st.count > 0
    num = uniform_filter1d(np.where(ok, st.mean, 0.0), smooth_cols, axis=1, mode="nearest")
    den = uniform_filter1d(ok.astype(np.float64), smooth_cols, axis=1, mode="nearest")
    vnum = uniform_filter1d(np.where(ok, col_var, 0.0), smooth_cols, axis=1, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        sky = num / den
        sky_var = vnum / (den * den * smooth_cols)
    return sky, sky_var
