"""The engine's batman wrapper: light curves and the exact linear basis of quadratic limb darkening.

Exact linear form of the quadratic limb-darkening light curve
-------------------------------------------------------------
For a fixed planet size ``k = Rp/Rs`` and geometry, the flux deficit of a star
with intensity ``I(mu) = 1 - u1 (1 - mu) - u2 (1 - mu)**2`` is *linear* in the
three coefficients ``beta = k**2 (1 - u1 - u2, u1, u2) / Omega`` with
``Omega = 1 - u1/3 - u2/6``::

    deficit(t) = beta_a E_a(t) + beta_b E_b(t) + beta_c E_c(t)
    E_a = D(t; u=(0,0)) / k**2,  E_b = 2/3 D(t; u=(1,0)) / k**2,  E_c = 5/6 D(t; u=(0,1)) / k**2

where ``D(t; u)`` is batman's deficit ``1 - flux`` (the three intensity laws
``1``, ``mu`` and ``1 - (1 - mu)**2`` span every quadratic law; 1, 2/3 and 5/6
are their disc-integrated fluxes over pi).  The depth and the limb darkening
follow linearly / as ratios::

    k**2 = beta_a + 2/3 beta_b + 5/6 beta_c,   u1 = beta_b / sum(beta),   u2 = beta_c / sum(beta)

:func:`deficit_basis` returns ``(E_a, E_b, E_c)``; the depths stage fits
``beta`` (or one amplitude along a known limb-darkening direction) by linear
least squares, and refines ``k`` in the basis.  The identity is exact to
rounding (tested against batman).

This is the engine's one batman wrapper: the stages compute transits only through it.  The demo
simulator (:mod:`calib_core.sim.transit`) calls batman on its own on purpose: it is the truth the
stages are tested against, so it must not share their code.
"""

from __future__ import annotations

import math

import numpy as np

from .geometry import Geometry

__all__ = ["LD_FLUX_WEIGHTS", "supersample_factor", "deficit_basis", "ld_direction", "ld_from_beta", "light_curve"]

#: disc-integrated flux / pi of the intensity laws 1, mu, 1-(1-mu)^2: depth = LD_FLUX_WEIGHTS @ beta
LD_FLUX_WEIGHTS = np.array([1.0, 2.0 / 3.0, 5.0 / 6.0])


def supersample_factor(exp_time_h: float, max_step_s: float = 60.0) -> int:
    """Batman supersampling so that each sub-exposure is at most ``max_step_s`` seconds (1 to 15)."""
    return int(min(max(math.ceil(exp_time_h * 3600.0 / max_step_s), 1), 15))


def _batman_params(geometry: Geometry, k: float, u: tuple[float, float]):
    import batman

    params = batman.TransitParams()
    params.t0 = 0.0
    params.per = geometry.period_d
    params.rp = k
    params.a = geometry.a_rs
    params.inc = geometry.inc_deg
    params.ecc = 0.0
    params.w = 90.0
    params.limb_dark = "quadratic"
    params.u = list(u)
    return params


def _batman_model(params, time_h: np.ndarray, geometry: Geometry, exp_time_h: float):
    import batman

    t_days = (np.asarray(time_h, np.float64) - geometry.t0_h) / 24.0
    factor = supersample_factor(exp_time_h)
    if factor > 1:
        return batman.TransitModel(params, t_days, supersample_factor=factor, exp_time=exp_time_h / 24.0)
    return batman.TransitModel(params, t_days)


def deficit_basis(time_h: np.ndarray, geometry: Geometry, k: float | np.ndarray,
                  exp_time_h: float = 0.0) -> np.ndarray:
    """Per-unit-depth deficit basis ``(E_a, E_b, E_c)`` of the quadratic limb-darkening law (module doc).

    Parameters
    ----------
    time_h : numpy.ndarray
        (M,) times, hours since the visit start.
    geometry : Geometry
        Orbit (``t0_h``, period, a/Rs, inclination).
    k : float or numpy.ndarray
        Radius ratio, scalar or (C,) per channel.
    exp_time_h : float
        Integration time of each sample in hours; the model is averaged over it
        (batman supersampling, one sub-step per minute at most).

    Returns
    -------
    numpy.ndarray
        (3, M) for a scalar ``k``, (C, 3, M) for an array.
    """
    ks = np.atleast_1d(np.asarray(k, np.float64))
    params = _batman_params(geometry, float(ks[0]), (0.0, 0.0))
    model = _batman_model(params, time_h, geometry, exp_time_h)
    out = np.empty((ks.size, 3, np.size(time_h)))
    for c, kc in enumerate(ks):
        params.rp = float(kc)
        for x, u in enumerate(((0.0, 0.0), (1.0, 0.0), (0.0, 1.0))):
            params.u = list(u)
            out[c, x] = (1.0 - model.light_curve(params)) * (LD_FLUX_WEIGHTS[x] / (kc * kc))
    return out[0] if np.ndim(k) == 0 else out


def ld_direction(u1: np.ndarray | float, u2: np.ndarray | float) -> np.ndarray:
    """Unit-depth coefficient vector ``beta / depth = (1 - u1 - u2, u1, u2) / Omega``, shape (..., 3)."""
    u1, u2 = np.asarray(u1, np.float64), np.asarray(u2, np.float64)
    omega = 1.0 - u1 / 3.0 - u2 / 6.0
    return np.stack([1.0 - u1 - u2, u1, u2], axis=-1) / omega[..., None]


def ld_from_beta(beta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(depth, u1, u2)`` from basis coefficients ``beta`` (..., 3) (module doc)."""
    beta = np.asarray(beta, np.float64)
    total = beta.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return beta @ LD_FLUX_WEIGHTS, beta[..., 1] / total, beta[..., 2] / total


def light_curve(time_h: np.ndarray, geometry: Geometry, depth: np.ndarray, u1: np.ndarray,
                u2: np.ndarray, exp_time_h: float = 0.0) -> np.ndarray:
    """Relative flux of one or several channels (batman, quadratic limb darkening).

    Parameters
    ----------
    time_h : numpy.ndarray
        (B,) hours since the visit start.
    geometry : Geometry
        Orbit.
    depth, u1, u2 : numpy.ndarray
        (C,) ``(Rp/Rs)**2`` and limb-darkening coefficients per channel.
    exp_time_h : float
        Integration time per sample, hours (supersampled when longer than a minute).

    Returns
    -------
    numpy.ndarray
        (B, C) flux, 1 out of transit.
    """
    depth, u1, u2 = (np.atleast_1d(np.asarray(a, np.float64)) for a in (depth, u1, u2))
    params = _batman_params(geometry, math.sqrt(depth[0]), (u1[0], u2[0]))
    model = _batman_model(params, time_h, geometry, exp_time_h)
    out = np.empty((np.size(time_h), depth.size))
    for c in range(depth.size):
        params.rp = math.sqrt(depth[c])
        params.u = [u1[c], u2[c]]
        out[:, c] = model.light_curve(params)
    return out
