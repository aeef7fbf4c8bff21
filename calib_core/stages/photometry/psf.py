"""Analytic PSF / spatial-profile models, pixel integration and fits.

Models are normalised to unit integral over the infinite plane (2-D) or line
(1-D), so a fitted amplitude *is* the flux in electrons (the model integral).
Pixel values are the model integrated over the pixel with a tensor
Gauss-Legendre rule of ``order`` nodes per axis (exact for polynomials of
degree ``2 * order - 1``; order 4 is accurate to < 1e-5 for widths >= 1 px).

Shape parameters (``shape_names``):

==================  =====================================  ===============================
model               2-D (FGS1)                              1-D (AIRS-CH0 row profile)
==================  =====================================  ===============================
gaussian            sigma_x, sigma_y                        sigma
moffat              alpha, beta                             alpha, beta
gaussian_moffat     sigma, alpha, beta, frac (Gaussian      sigma, alpha, beta, frac
                    fraction of the flux)
==================  =====================================  ===============================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import least_squares
from scipy.special import gammaln

from .config import PSF_MODELS

__all__ = [
    "PSF_MODELS",
    "PSFShape",
    "shape_names",
    "gauss_legendre_unit",
    "profile_2d",
    "profile_1d",
    "pixel_psf_2d",
    "pixel_profile_1d",
    "fit_psf_2d",
    "batched_least_squares",
    "fit_profile_1d",
    "PSFTable",
    "psf_fit_weights_2d",
]


_SHAPES = {
    "gaussian": {2: ("sigma_x", "sigma_y"), 1: ("sigma",)},
    "moffat": {2: ("alpha", "beta"), 1: ("alpha", "beta")},
    "gaussian_moffat": {2: ("sigma", "alpha", "beta", "frac"), 1: ("sigma", "alpha", "beta", "frac")},
}
_INIT = {"sigma_x": 1.5, "sigma_y": 1.5, "sigma": 1.5, "alpha": 2.0, "beta": 3.0, "frac": 0.5}
_BOUNDS = {"sigma_x": (0.3, 15.0), "sigma_y": (0.3, 15.0), "sigma": (0.3, 15.0),
           "alpha": (0.3, 30.0), "beta": (1.05, 15.0), "frac": (0.0, 1.0)}
_MAX_STEP_PX = 1.0


def shape_names(model: str, ndim: int) -> tuple[str, ...]:
    """Names of the shape parameters of ``model`` in ``ndim`` (1 or 2) dimensions."""
    if model not in _SHAPES:
        raise ValueError(f"unknown PSF model {model!r}; expected one of {PSF_MODELS}")
    return _SHAPES[model][ndim]


@dataclass(frozen=True)
class PSFShape:
    """A fitted model shape (no position, no amplitude)."""

    model: str
    params: np.ndarray      #: (k,) for 2-D; (C, k) per column for 1-D

    def as_dict(self) -> dict:
        names = shape_names(self.model, 1 if self.params.ndim == 2 else 2)
        return {name: np.asarray(self.params[..., i]).tolist() for i, name in enumerate(names)}


def gauss_legendre_unit(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes on ``[-0.5, 0.5]`` and weights summing to 1."""
    nodes, weights = np.polynomial.legendre.leggauss(order)
    return 0.5 * nodes, 0.5 * weights


def _moffat_core(r2: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(1 + r2/alpha^2)^-beta`` and its derivative with respect to ``r2``."""
    base = 1.0 + r2 / (alpha * alpha)
    val = base ** (-beta)
    return val, -beta * val / (base * alpha * alpha)


def profile_2d(model: str, params: np.ndarray, dx: np.ndarray, dy: np.ndarray,
               grad: bool = True) -> tuple[np.ndarray, ...]:
    """Unit-integral 2-D model at offsets ``(dx, dy)`` from its centre.

    Returns
    -------
    value, d_value/d_dx, d_value/d_dy : ndarray
        Point values (per pixel^2) and gradients with respect to the offsets (None without ``grad``).
    """
    p = np.asarray(params, np.float64)
    r2 = dx * dx + dy * dy
    if model == "gaussian":
        sx, sy = p
        val = np.exp(-0.5 * (dx * dx / (sx * sx) + dy * dy / (sy * sy))) / (2.0 * np.pi * sx * sy)
        return (val, -val * dx / (sx * sx), -val * dy / (sy * sy)) if grad else (val, None, None)
    if model == "moffat":
        alpha, beta = p
        norm = (beta - 1.0) / (np.pi * alpha * alpha)
        if not grad:
            return norm * (1.0 + r2 / (alpha * alpha)) ** (-beta), None, None
        core, dcore = _moffat_core(r2, alpha, beta)
        return norm * core, norm * dcore * 2.0 * dx, norm * dcore * 2.0 * dy
    sigma, alpha, beta, frac = p
    g, gx, gy = profile_2d("gaussian", (sigma, sigma), dx, dy, grad)
    m, mx, my = profile_2d("moffat", (alpha, beta), dx, dy, grad)
    if not grad:
        return frac * g + (1 - frac) * m, None, None
    return frac * g + (1 - frac) * m, frac * gx + (1 - frac) * mx, frac * gy + (1 - frac) * my


def profile_1d(model: str, params: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit-integral 1-D model at offsets ``d``; ``params`` (k,) or broadcastable ``(..., k)``.

    Returns
    -------
    value, d_value/d_d : ndarray
    """
    p = np.asarray(params, np.float64)
    if model == "gaussian":
        s = p[..., 0]
        val = np.exp(-0.5 * d * d / (s * s)) / (np.sqrt(2.0 * np.pi) * s)
        return val, -val * d / (s * s)
    if model == "moffat":
        alpha, beta = p[..., 0], p[..., 1]
        norm = np.exp(gammaln(beta) - gammaln(beta - 0.5)) / (alpha * np.sqrt(np.pi))
        core, dcore = _moffat_core(d * d, alpha, beta)
        return norm * core, norm * dcore * 2.0 * d
    g, gd = profile_1d("gaussian", p[..., :1], d)
    m, md = profile_1d("moffat", p[..., 1:3], d)
    frac = p[..., 3]
    return frac * g + (1 - frac) * m, frac * gd + (1 - frac) * md


def pixel_psf_2d(model: str, params: np.ndarray, xc: np.ndarray, yc: np.ndarray, xs: np.ndarray,
                 ys: np.ndarray, order: int, grad: bool = True) -> tuple[np.ndarray, ...]:
    """Pixel-integrated 2-D model and its derivatives with respect to the centre.

    Parameters
    ----------
    xc, yc : ndarray, shape (n,)
        Centres (pixels).
    xs, ys : ndarray
        Pixel-centre coordinates of the columns (w,) and rows (h,) to evaluate.
    order : int
        Gauss-Legendre nodes per axis.
    grad : bool
        Also the derivatives (False: ``dT/dxc`` and ``dT/dyc`` are None, at a third of the cost).

    Returns
    -------
    T, dT/dxc, dT/dyc : ndarray, shape (n, h, w)
        Fraction of the flux falling in each pixel, and its derivatives.
    """
    nodes, weights = gauss_legendre_unit(order)
    bx = xs[None, None, :] - np.asarray(xc, np.float64)[:, None, None]
    by = ys[None, :, None] - np.asarray(yc, np.float64)[:, None, None]
    shape = (len(bx), len(ys), len(xs))
    t = np.zeros(shape)
    tx, ty = (np.zeros(shape), np.zeros(shape)) if grad else (None, None)
    for ny, wy in zip(nodes, weights):
        for nx, wx in zip(nodes, weights):
            v, gx, gy = profile_2d(model, params, bx + nx, by + ny, grad)
            wgt = wx * wy
            t += wgt * v
            if grad:
                tx -= wgt * gx
                ty -= wgt * gy
    return t, tx, ty


def pixel_profile_1d(model: str, params: np.ndarray, centre: np.ndarray, n_rows: int,
                     order: int) -> np.ndarray:
    """Pixel-integrated 1-D row profiles for every column.

    Parameters
    ----------
    params : ndarray, shape (C, k)
        Shape parameters per column.
    centre : ndarray, shape (..., C)
        Profile centre row per column.
    n_rows : int
        Detector rows H.

    Returns
    -------
    ndarray, shape (..., H, C)
        Fraction of the column's flux in each row pixel.
    """
    nodes, weights = gauss_legendre_unit(order)
    base = np.arange(n_rows, dtype=np.float64)[:, None] - np.asarray(centre, np.float64)[..., None, :]
    out = np.zeros(base.shape)
    for nd, wt in zip(nodes, weights):
        out += wt * profile_1d(model, params, base + nd)[0]
    return out


def _initial(model: str, ndim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    names = shape_names(model, ndim)
    lo, hi = zip(*(_BOUNDS[n] for n in names))
    return np.array([_INIT[n] for n in names]), np.array(lo), np.array(hi)


def fit_psf_2d(image: np.ndarray, weight: np.ndarray, model: str, x0: float, y0: float, *,
               box_px: int, order: int) -> tuple[PSFShape, float, float, float]:
    """Fit flux, centre and shape of a 2-D model to one (stacked) image.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Background-subtracted image (e-).
    weight : ndarray, shape (H, W)
        Inverse variance (0 for unusable pixels).
    x0, y0 : float
        Initial centre; the fit uses the ``box_px`` box around it.
    box_px : int
        Fit box size (pixels).
    order : int
        Gauss-Legendre nodes per axis for pixel integration.

    Returns
    -------
    shape : PSFShape
    x, y, flux : float
        Fitted centre (pixels) and flux (e-, model integral).
    """
    h, w = image.shape
    half = box_px // 2
    xb, yb = int(round(x0)), int(round(y0))
    rs = slice(max(yb - half, 0), min(yb + half + 1, h))
    cs = slice(max(xb - half, 0), min(xb + half + 1, w))
    cut, sw = image[rs, cs], np.sqrt(weight[rs, cs])
    xs = np.arange(cs.start, cs.stop, dtype=np.float64)
    ys = np.arange(rs.start, rs.stop, dtype=np.float64)
    p_shape, lo, hi = _initial(model, 2)
    flux0 = max(float(image.sum()), 1.0)
    p0 = np.concatenate([[flux0, x0, y0], p_shape])
    lower = np.concatenate([[0.0, xs[0] - 0.5, ys[0] - 0.5], lo])
    upper = np.concatenate([[np.inf, xs[-1] + 0.5, ys[-1] + 0.5], hi])

    def residual(p: np.ndarray) -> np.ndarray:
        t = pixel_psf_2d(model, p[3:], p[1:2], p[2:3], xs, ys, order, grad=False)[0][0]
        return ((cut - p[0] * t) * sw).ravel()

    sol = least_squares(residual, np.clip(p0, lower, upper), bounds=(lower, upper), x_scale="jac")
    return PSFShape(model, sol.x[3:].copy()), float(sol.x[1]), float(sol.x[2]), float(sol.x[0])


def batched_least_squares(residual: Callable[[np.ndarray], np.ndarray], p0: np.ndarray, lower: np.ndarray,
                          upper: np.ndarray, *, n_iter: int = 60) -> np.ndarray:
    """Box-constrained Levenberg-Marquardt for many independent small problems at once.

    Parameters
    ----------
    residual : callable
        ``residual(p)`` with ``p`` of shape (N, k) returns residuals (N, m).
    p0, lower, upper : ndarray, shape (N, k)
        Start values and bounds (steps are clipped into the box).
    n_iter : int
        Iterations (each: one forward-difference Jacobian and one trial step).

    Returns
    -------
    ndarray, shape (N, k)
        Parameters with the lowest sum of squared residuals found.
    """
    p = np.clip(np.asarray(p0, np.float64), lower, upper)
    res = residual(p)
    cost = (res * res).sum(axis=1)
    lam = np.full(len(p), 1e-3)
    eye = np.eye(p.shape[1])
    for _ in range(n_iter):
        h = 1e-6 * np.maximum(np.abs(p), 1e-3)
        h = np.where(p + h > upper, -h, h)
        jac = np.stack([(residual(p + h * eye[j]) - res) / h[:, j:j + 1] for j in range(p.shape[1])], axis=-1)
        jtj = np.einsum("nmi,nmj->nij", jac, jac)
        jtr = np.einsum("nmi,nm->ni", jac, res)
        diag = np.einsum("nii->ni", jtj)
        damped = jtj + (lam[:, None] * diag + 1e-12 * diag.max(axis=1, keepdims=True) + 1e-300)[:, :, None] * eye
        with np.errstate(invalid="ignore"):
            step = np.linalg.solve(damped, -jtr[..., None])[..., 0]
        trial = np.clip(p + np.nan_to_num(step), lower, upper)
        res_trial = residual(trial)
        cost_trial = (res_trial * res_trial).sum(axis=1)
        better = cost_trial < cost
        p = np.where(better[:, None], trial, p)
        res = np.where(better[:, None], res_trial, res)
        cost = np.where(better, cost_trial, cost)
        lam = np.clip(np.where(better, lam * 0.3, lam * 10.0), 1e-9, 1e9)
    return p


def fit_profile_1d(profiles: np.ndarray, weight: np.ndarray, model: str, centre: np.ndarray, *,
                   order: int) -> tuple[PSFShape, np.ndarray]:
    """Fit a 1-D model to the row profile of every column (all columns at once).

    Parameters
    ----------
    profiles : ndarray, shape (H, C)
        Background-subtracted stacked frame (e-).
    weight : ndarray, shape (H, C)
        Inverse variance (0 for pixels not to fit).
    model : str
        One of :data:`PSF_MODELS`.
    centre : ndarray, shape (C,)
        Initial trace centre per column (fitted within +- 3 rows).
    order : int
        Gauss-Legendre nodes per pixel for pixel integration.

    Returns
    -------
    shape : PSFShape
        ``params`` of shape (C, k).
    centre : ndarray, shape (C,)
        Fitted profile centre per column (rows).
    """
    n_rows, n_cols = profiles.shape
    p_shape, lo, hi = _initial(model, 1)
    data, sw = profiles.T, np.sqrt(weight).T

    def residual(p: np.ndarray) -> np.ndarray:
        prof = pixel_profile_1d(model, p[:, 2:], p[:, 1], n_rows, order).T
        return (data - p[:, :1] * prof) * sw

    flux0 = np.maximum(np.where(weight > 0, profiles, 0.0).sum(axis=0), 1.0)
    p0 = np.column_stack([flux0, centre, np.tile(p_shape, (n_cols, 1))])
    lower = np.column_stack([np.zeros(n_cols), centre - 3.0, np.tile(lo, (n_cols, 1))])
    upper = np.column_stack([np.full(n_cols, np.inf), centre + 3.0, np.tile(hi, (n_cols, 1))])
    p = batched_least_squares(residual, p0, lower, upper)
    return PSFShape(model, p[:, 2:].copy()), p[:, 1].copy()


class PSFTable:
    """Pixel-integrated 2-D model tabulated over sub-pixel centre offsets.

    For a centre ``xc = floor(xc) + f`` every pixel sees the same fractional
    offset ``f``, so the pixel values of all integer offsets
    ``-half..half`` are tabulated for ``steps + 1`` values of ``f`` per axis
    and interpolated bilinearly in ``(fx, fy)``.  The centre derivatives are
    the slopes of that interpolant, so Gauss-Newton fits see one consistent
    model.  With 64 steps the interpolation error is ~1e-5 of the pixel value
    for widths >= 1 px.

    Parameters
    ----------
    shape : PSFShape
        2-D model shape.
    half : int
        Largest integer pixel offset tabulated (pixels beyond are 0).
    order : int
        Gauss-Legendre nodes per axis for the pixel integration.
    steps : int
        Sub-pixel offsets per axis.
    """

    def __init__(self, shape: PSFShape, half: int, order: int, steps: int = 64):
        self.half, self.steps = half, steps
        frac = np.arange(steps + 1) / steps
        fx, fy = np.meshgrid(frac, frac)
        grid = np.arange(-half, half + 1, dtype=np.float64)
        t = pixel_psf_2d(shape.model, shape.params, fx.ravel(), fy.ravel(), grid, grid, order, grad=False)[0]
        self.table = t.reshape(steps + 1, steps + 1, 2 * half + 1, 2 * half + 1)   # [ky, kx, my, mx]

    def evaluate(self, xc: np.ndarray, yc: np.ndarray, xs: np.ndarray,
                 ys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Model and centre derivatives at pixel columns ``xs`` / rows ``ys`` (see :func:`pixel_psf_2d`)."""
        xc = np.asarray(xc, np.float64)
        yc = np.asarray(yc, np.float64)
        fx, fy = xc - np.floor(xc), yc - np.floor(yc)
        kx = np.minimum((fx * self.steps).astype(np.int64), self.steps - 1)
        ky = np.minimum((fy * self.steps).astype(np.int64), self.steps - 1)
        wx = (fx * self.steps - kx)[:, None, None]
        wy = (fy * self.steps - ky)[:, None, None]
        mx = np.asarray(xs)[None, :] - np.floor(xc)[:, None] + self.half
        my = np.asarray(ys)[None, :] - np.floor(yc)[:, None] + self.half
        inside = ((my >= 0) & (my <= 2 * self.half))[:, :, None] & ((mx >= 0) & (mx <= 2 * self.half))[:, None, :]
        mx = np.clip(mx, 0, 2 * self.half).astype(np.int64)[:, None, :]
        my = np.clip(my, 0, 2 * self.half).astype(np.int64)[:, :, None]
        flat_idx = (my * (2 * self.half + 1) + mx).reshape(len(xc), -1)
        flat = self.table.reshape(self.steps + 1, self.steps + 1, -1)

        def corner(dy: int, dx: int) -> np.ndarray:
            return np.take_along_axis(flat[ky + dy, kx + dx], flat_idx, axis=1).reshape(inside.shape)

        t00, t01, t10, t11 = corner(0, 0), corner(0, 1), corner(1, 0), corner(1, 1)
        val = (1 - wy) * ((1 - wx) * t00 + wx * t01) + wy * ((1 - wx) * t10 + wx * t11)
        dx = self.steps * ((1 - wy) * (t01 - t00) + wy * (t11 - t10))
        dy = self.steps * ((1 - wx) * (t10 - t00) + wx * (t11 - t01))
        return val * inside, dx * inside, dy * inside


def _normal_equations(basis: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted basis ``B W`` and normal matrices ``B^T W B`` (regularised) of a batch.

    basis (n, p, k), weight (n, p) -> (n, p, k), (n, k, k).
    """
    bw = basis * weight[..., None]
    normal = np.einsum("npi,npj->nij", bw, basis)
    diag = np.einsum("nii->ni", normal)
    normal += 1e-12 * np.maximum(diag.max(axis=1), 1e-300)[:, None, None] * np.eye(basis.shape[-1])
    return bw, normal


def psf_fit_weights_2d(data: np.ndarray, weight: np.ndarray, table: PSFTable, x0: np.ndarray,
                       y0: np.ndarray, box: tuple[slice, slice], *,
                       n_iter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame PSF fit of flux and position with a fixed shape (vectorised Gauss-Newton).

    The model ``A * T(x - xc, y - yc)`` is linearised around the current centre
    as ``A T + u dT/dxc + v dT/dyc`` (linear in ``A, u, v``); the centre moves
    by ``(u, v) / A`` (at most 1 px per iteration) for ``n_iter`` iterations.
    The returned flux weights are the ``A`` row of the final weighted
    least-squares solution operator, so the flux is ``sum(L * data)`` and its
    variance ``sum(L**2 * var)`` for any pixel variance.

    Parameters
    ----------
    data : ndarray, shape (n, H, W)
        Background-subtracted frames (e-).
    weight : ndarray, shape (n, H, W)
        Fit weights (inverse variance; 0 for unusable pixels).
    table : PSFTable
        Tabulated model of the fixed shape.
    x0, y0 : ndarray, shape (n,)
        Starting centres (pixels).
    box : (slice, slice)
        Row and column slices of the fit box.
    n_iter : int
        Gauss-Newton iterations (>= 1).

    Returns
    -------
    L : ndarray, shape (n, H, W)
        Flux weights (zero outside the box and on unusable pixels).
    x, y : ndarray, shape (n,)
        Fitted centres (pixels).
    """
    rs, cs = box
    xs = np.arange(cs.start, cs.stop, dtype=np.float64)
    ys = np.arange(rs.start, rs.stop, dtype=np.float64)
    n = len(data)
    d = np.asarray(data[:, rs, cs], np.float64).reshape(n, -1)
    wgt = np.asarray(weight[:, rs, cs], np.float64).reshape(n, -1)
    x, y = np.asarray(x0, np.float64).copy(), np.asarray(y0, np.float64).copy()
    for it in range(n_iter + 1):
        t, tx, ty = table.evaluate(x, y, xs, ys)
        basis = np.stack([t.reshape(n, -1), tx.reshape(n, -1), ty.reshape(n, -1)], axis=-1)
        bw, normal = _normal_equations(basis, wgt)
        if it == n_iter:
            break
        with np.errstate(invalid="ignore"):
            amp, u, v = np.linalg.solve(normal, np.einsum("npk,np->nk", bw, d)[..., None])[..., 0].T
        with np.errstate(invalid="ignore", divide="ignore"):
            step_x = np.clip(u / amp, -_MAX_STEP_PX, _MAX_STEP_PX)
            step_y = np.clip(v / amp, -_MAX_STEP_PX, _MAX_STEP_PX)
        ok = np.isfinite(step_x) & np.isfinite(step_y) & (amp > 0)
        x = np.where(ok, x + step_x, x)
        y = np.where(ok, y + step_y, y)
    # flux weights: the A row of (B^T W B)^-1 B^T W
    with np.errstate(invalid="ignore"):
        row = np.linalg.solve(normal.transpose(0, 2, 1), np.broadcast_to(np.eye(3)[0], (n, 3))[..., None])[..., 0]
    flux_w = np.zeros(data.shape, np.float64)
    flux_w[:, rs, cs] = np.einsum("nk,npk->np", row, bw).reshape(n, len(ys), len(xs))
    return flux_w, x, y
