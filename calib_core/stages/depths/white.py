"""White light: the shared geometry (t0, a/Rs, impact parameter) and one radius ratio per instrument.

Non-linear parameters by ``scipy.optimize.least_squares``; the baseline and the
limb darkening of each white curve are linear and profiled out
(:func:`~calib_core.stages.depths.linear.fit_multiplicative`).  The errors of
each curve are inflated by ``max(1, chi2_red) * beta**2`` and the fit repeated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from ...transit import LD_FLUX_WEIGHTS, Geometry, deficit_basis, ld_direction, ld_from_beta, red_noise_beta
from .config import _GEOMETRY_NAMES
from .curves import Curves, baseline_design, step_h
from .linear import LinearFit, fit_multiplicative

__all__ = ["WhiteFit", "fit_white"]


@dataclass
class WhiteFit:
    """Joint white-light fit (one entry per instrument in the dicts)."""

    geometry: Geometry
    geometry_err: dict               #: 1-sigma of t0_h, a_rs, inc_deg, b (NaN when fixed)
    k: dict                          #: radius ratio per instrument
    depth: dict                      #: k**2
    depth_err: dict                  #: marginal 1-sigma (geometry, limb darkening, baseline profiled)
    depth_err_conditional: dict      #: 1-sigma with the geometry fixed
    u: dict                          #: (u1, u2)
    chi2_red: dict                   #: before the error inflation
    beta: dict
    curves: dict                     #: the white Curves
    model: dict                      #: (M,) best model
    converged: bool
    nfev: int

    def geometry_rel_var(self, instrument: str) -> float:
        """Geometry part of the relative white-depth variance: (marginal - conditional) / depth**2."""
        extra = self.depth_err[instrument] ** 2 - self.depth_err_conditional[instrument] ** 2
        return max(extra, 0.0) / self.depth[instrument] ** 2


def _white_geometry(theta: np.ndarray, names: list[str], base: Geometry) -> Geometry:
    """Geometry from the non-linear parameters (``dt0`` h, ``a_rs``, impact parameter ``b``).

    The inclination is fitted through ``b`` (better conditioned); when it is not
    free the inclination of ``base`` is kept.
    """
    values = {n: float(v) for n, v in zip(names, theta)}
    a_rs = values.get("a_rs", base.a_rs)
    inc = math.degrees(math.acos(min(max(values["b"] / a_rs, -1.0), 1.0))) if "b" in values else base.inc_deg
    return Geometry(base.t0_h + values.get("dt0", 0.0), base.period_d, a_rs, inc)


def _white_templates(e: np.ndarray, k: float, ld_fixed: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """Templates (1, nt, M) and offset (1, M) of a white curve with ``depth = k**2`` imposed."""
    if ld_fixed is not None:
        return np.zeros((1, 0, e.shape[1])), (k * k * (ld_direction(*ld_fixed) @ e))[None, :]
    templates = np.stack([e[1] - LD_FLUX_WEIGHTS[1] * e[0], e[2] - LD_FLUX_WEIGHTS[2] * e[0]])
    return templates[None], (k * k * e[0])[None, :]


def fit_white(curves: dict[str, Curves], start: Geometry, free: list[str], baseline_degree: int,
              ld_fixed: tuple[float, float] | None = None) -> WhiteFit:
    """Fit the shared geometry and one radius ratio per white-light curve.

    Parameters
    ----------
    curves : dict
        ``{instrument: Curves}`` with one channel each.
    start : Geometry
        Starting geometry (t0 from the phase stage, a/Rs and i from the star
        info or the durations); the period stays fixed.
    free : list of str
        Subset of ``("t0", "a_rs", "inc")`` to fit.
    baseline_degree : int
        Baseline polynomial degree of each curve.
    ld_fixed : (float, float), optional
        Fixed (u1, u2); by default the limb darkening of each curve is free (linear).

    Returns
    -------
    WhiteFit
    """
    insts = list(curves)
    names = [{"t0": "dt0", "inc": "b"}.get(p, p) for p in _GEOMETRY_NAMES if p in free]
    designs = {i: baseline_design(curves[i].time_h, baseline_degree) for i in insts}
    k0 = {i: _initial_k(curves[i], start, designs[i]) for i in insts}
    x0 = np.array([{"dt0": 0.0, "a_rs": start.a_rs, "b": start.impact_parameter}[n] for n in names]
                  + [k0[i] for i in insts])
    bounds_map = {"dt0": (-1.5, 1.5), "a_rs": (1.5, 80.0), "b": (0.0, 1.3)}
    lower = np.array([bounds_map[n][0] for n in names] + [0.005] * len(insts))
    upper = np.array([bounds_map[n][1] for n in names] + [0.6] * len(insts))
    x0 = np.clip(x0, lower + 1e-6, upper - 1e-6)
    weights = {i: curves[i].weight[:, 0].copy() for i in insts}

    def solve(theta: np.ndarray) -> dict[str, LinearFit]:
        geometry = _white_geometry(theta[: len(names)], names, start)
        fits = {}
        for j, inst in enumerate(insts):
            cv = curves[inst]
            e = deficit_basis(cv.time_h, geometry, theta[len(names) + j], cv.exp_time_h)
            templates, offset = _white_templates(e, theta[len(names) + j], ld_fixed)
            fits[inst] = fit_multiplicative(cv.flux, weights[inst][:, None], designs[inst], templates, offset,
                                            iters=2)
        return fits

    def residual(theta: np.ndarray) -> np.ndarray:
        fits = solve(theta)
        return np.concatenate([np.sqrt(weights[i]) * np.nan_to_num(curves[i].flux[:, 0] - fits[i].model[:, 0])
                               for i in insts])

    fit = least_squares(residual, x0, bounds=(lower, upper), x_scale="jac", diff_step=1e-7)
    fits = solve(fit.x)
    chi2_red, beta = {}, {}
    for inst in insts:
        cv = curves[inst]
        # linear parameters, this curve's k and its share of the geometry parameters
        dof = max(fits[inst].n[0] - fits[inst].cov.shape[1] - 1 - len(names) / len(insts), 1)
        chi2_red[inst] = float(fits[inst].chi2[0] / dof)
        z = (np.sqrt(weights[inst]) * (cv.flux[:, 0] - fits[inst].model[:, 0]))[:, None]
        z[weights[inst] == 0] = np.nan
        beta[inst] = float(red_noise_beta(z, step_h(cv.time_h))[0])
        weights[inst] /= max(chi2_red[inst], 1.0) * beta[inst] ** 2
    fit = least_squares(residual, fit.x, bounds=(lower, upper), x_scale="jac", diff_step=1e-7)
    fits = solve(fit.x)
    jtj = fit.jac.T @ fit.jac
    cov = np.linalg.pinv(jtj)
    geometry = _white_geometry(fit.x[: len(names)], names, start)
    return WhiteFit(
        geometry=geometry,
        geometry_err=_geometry_errors(fit.x, cov, names, geometry),
        k={i: float(fit.x[len(names) + j]) for j, i in enumerate(insts)},
        depth={i: float(fit.x[len(names) + j] ** 2) for j, i in enumerate(insts)},
        depth_err={i: float(2 * fit.x[len(names) + j] * math.sqrt(max(cov[len(names) + j, len(names) + j], 0)))
                   for j, i in enumerate(insts)},
        depth_err_conditional={i: float(2 * fit.x[len(names) + j] / math.sqrt(jtj[len(names) + j, len(names) + j]))
                               for j, i in enumerate(insts)},
        u={i: _white_ld(fits[i], fit.x[len(names) + j], ld_fixed) for j, i in enumerate(insts)},
        chi2_red=chi2_red, beta=beta, curves=curves,
        model={i: fits[i].model[:, 0] for i in insts},
        converged=bool(fit.status > 0 and np.all(np.isfinite(fit.x))), nfev=int(fit.nfev),
    )


def _initial_k(curves: Curves, start: Geometry, design: np.ndarray) -> float:
    """Radius ratio from a linear depth fit at the starting geometry (u1, u2 = 0.3, 0.15)."""
    e = deficit_basis(curves.time_h, start, 0.12, curves.exp_time_h)
    template = (ld_direction(0.3, 0.15) @ e)[None, None, :]
    depth = fit_multiplicative(curves.flux, curves.weight, design, template).gamma[0, 0]
    return math.sqrt(min(max(depth, 1e-4), 0.3))


def _white_ld(lf: LinearFit, k: float, ld_fixed: tuple[float, float] | None) -> tuple[float, float]:
    if ld_fixed is not None:
        return ld_fixed
    bb, bc = lf.gamma[0]
    beta = np.array([k * k - LD_FLUX_WEIGHTS[1] * bb - LD_FLUX_WEIGHTS[2] * bc, bb, bc])
    _, u1, u2 = ld_from_beta(beta)
    return float(u1), float(u2)


def _geometry_errors(x: np.ndarray, cov: np.ndarray, names: list[str], geometry: Geometry) -> dict:
    """1-sigma of t0_h, a_rs, b and inc_deg (delta method for the inclination)."""
    sd = {n: math.sqrt(max(cov[j, j], 0.0)) for j, n in enumerate(names)}
    out = {"t0_h": sd.get("dt0", math.nan), "a_rs": sd.get("a_rs", math.nan), "b": sd.get("b", math.nan)}
    a, b = geometry.a_rs, geometry.impact_parameter
    if "b" not in names:
        out["inc_deg"] = math.nan
        return out
    grad = np.zeros(len(x))
    denom = math.sqrt(max(a * a - b * b, 1e-12))
    grad[names.index("b")] = -1.0 / denom                   # inc = acos(b / a)
    if "a_rs" in names:
        grad[names.index("a_rs")] = b / (a * denom)
    out["inc_deg"] = math.degrees(math.sqrt(max(float(grad @ cov @ grad), 0.0)))
    return out
