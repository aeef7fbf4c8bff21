"""Limb darkening of the channel fits: the smooth law in wavenumber, priors and the effective treatment.

The profiled chi^2 of every channel as a function of (u1, u2) is closed-form
(:func:`profiled_chi2`), so the smooth law (u1, u2 Legendre polynomials in
wavenumber across the channels) is fitted with exact gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from .config import LimbDarkeningConfig
from .curves import Curves

__all__ = ["ProfiledStatistics", "profiled_statistics", "profiled_chi2", "smooth_law", "wavenumber_coordinate",
           "ld_mode", "ld_prior"]


def wavenumber_coordinate(wavelength_um: np.ndarray) -> np.ndarray:
    nu = 1.0 / wavelength_um
    lo, hi = nu.min(), nu.max()
    return 2 * (nu - lo) / (hi - lo) - 1 if hi > lo else np.zeros_like(nu)


def _normal_statistics(curves: Curves, design: np.ndarray, e: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel weighted cross products of baseline regressors, basis ``e`` (3, M) and data."""
    w = curves.weight
    wy = w * np.nan_to_num(np.where(w > 0, curves.flux, 0.0))
    return {
        "A": np.einsum("mi,mc,mj->cij", design, w, design),
        "B": np.einsum("mi,mc,xm->cix", design, w, e),
        "Q": np.einsum("xm,mc,zm->cxz", e, w, e),
        "py": (design.T @ wy).T,
        "ey": (e @ wy).T,
        "yy": (wy * np.nan_to_num(np.where(w > 0, curves.flux, 0.0))).sum(axis=0),
    }


@dataclass
class ProfiledStatistics:
    """Per-channel cross products with the baseline projected out (C channels, basis of 3 curves).

    For the additive model ``y = design @ b - s * (d . E)`` with the baseline
    ``b`` profiled out, only these enter the fit of the basis part: ``Q`` (C, 3, 3)
    the projected Gram matrix of the basis curves, ``g`` (C, 3) their projected
    cross products with the data and ``yy`` (C,) the projected data norm.
    """

    Q: np.ndarray
    g: np.ndarray
    yy: np.ndarray


def profiled_statistics(curves: Curves, design: np.ndarray, e: np.ndarray,
                        channels: np.ndarray | None = None) -> ProfiledStatistics:
    """:class:`ProfiledStatistics` for baseline ``design`` and basis ``e`` (3, M).

    ``channels`` (boolean (C,), default all) selects the channels; each needs
    more usable points than baseline coefficients.
    """
    s = _normal_statistics(curves, design, e)
    if channels is not None:
        s = {k: v[channels] for k, v in s.items()}
    rhs = np.concatenate([s["B"], s["py"][..., None]], axis=2)          # (C, nb, 4)
    sol = np.linalg.solve(s["A"], rhs)                                  # A^-1 [B | py]
    bt = np.swapaxes(s["B"], 1, 2)
    q = s["Q"] - bt @ sol[..., :3]
    return ProfiledStatistics(Q=0.5 * (q + np.swapaxes(q, 1, 2)),
                              g=s["ey"] - (bt @ sol[..., 3:])[..., 0],
                              yy=s["yy"] - np.einsum("ci,ci->c", s["py"], sol[..., 3]))


#: ``(1 - u1 - u2, u1, u2) = _LD_ORIGIN + _LD_AXES @ (u1, u2)``: the direction of the law, up to its norm
_LD_ORIGIN = np.array([1.0, 0.0, 0.0])
_LD_AXES = np.array([[-1.0, -1.0], [1.0, 0.0], [0.0, 1.0]])


def profiled_chi2(stats: ProfiledStatistics, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chi^2 per channel at the linear optimum of baseline and depth, and its gradient in (u1, u2).

    The deficit of a channel is ``depth * (d . E)`` with ``d`` proportional to
    ``v = (1 - u1 - u2, u1, u2)``; the depth absorbs the norm, so with the
    baseline and the depth profiled out

        chi2(u) = yy - (v . g)**2 / (v^T Q v)

    exactly (a Rayleigh quotient), and
    ``d chi2 / d v = -2 a g / q + 2 a**2 Q v / q**2`` with ``a = v . g``, ``q = v^T Q v``.

    Parameters
    ----------
    stats : ProfiledStatistics
        From :func:`profiled_statistics`.
    u : numpy.ndarray
        (C, 2) limb-darkening coefficients u1, u2 of every channel.

    Returns
    -------
    chi2 : numpy.ndarray
        (C,)
    grad : numpy.ndarray
        (C, 2) derivatives with respect to u1 and u2.
    """
    v = _LD_ORIGIN + u @ _LD_AXES.T
    qv = np.einsum("cxz,cz->cx", stats.Q, v)
    a = np.einsum("cx,cx->c", v, stats.g)
    q = np.einsum("cx,cx->c", v, qv)
    r = a / q
    grad_v = 2.0 * r[:, None] * (r[:, None] * qv - stats.g)
    return stats.yy - a * r, grad_v @ _LD_AXES


def smooth_law(curves: Curves, e: np.ndarray, design: np.ndarray, degree: int, usable: np.ndarray,
                u_start: tuple[float, float]) -> np.ndarray:
    """Fit u1, u2 as Legendre polynomials in wavenumber across channels; returns (2, degree + 1).

    Minimises the total chi^2 of the ``usable`` channels with each channel's
    baseline and depth profiled out (additive model: the limb-darkening law is
    insensitive to the second-order multiplicative correction, which the final
    per-channel fits include).  The profiled chi^2 and its gradient are
    closed-form (:func:`profiled_chi2`), so BFGS gets the exact gradient.

    When that law is unphysical at some channel (it happens at low S/N, where
    the chi^2 barely constrains it), it is re-fitted under the linear
    constraints of a physical quadratic law at every usable channel
    (:func:`_physical_ld_constraints`, SLSQP): far outside them the unit-depth
    template divides by ``1 - u1/3 - u2/6`` near zero and the depth errors
    collapse.
    """
    leg = np.polynomial.legendre.legvander(wavenumber_coordinate(curves.wavelength_um), degree)[usable]
    stats = profiled_statistics(curves, design, e, usable)

    def total_chi2(eta: np.ndarray) -> tuple[float, np.ndarray]:
        chi2, grad_u = profiled_chi2(stats, leg @ eta.reshape(2, -1).T)
        return float(chi2.sum()), (grad_u.T @ leg).ravel()

    eta0 = np.zeros((2, degree + 1))
    eta0[:, 0] = u_start
    fit = minimize(total_chi2, eta0.ravel(), jac=True, method="BFGS", options={"gtol": 1e-3})
    rows, bound = _physical_ld_constraints(leg)
    if np.all(rows @ fit.x + bound >= -1e-9):
        return fit.x.reshape(2, -1)
    eta0[:, 0] = _physical_point(u_start)
    scale = max(abs(total_chi2(eta0.ravel())[0]), 1.0)

    def scaled(eta: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = total_chi2(eta)
        return value / scale, grad / scale

    constraint = {"type": "ineq", "fun": lambda eta: rows @ eta + bound, "jac": lambda eta: rows}
    fit = minimize(scaled, eta0.ravel(), jac=True, method="SLSQP", constraints=[constraint],
                   options={"ftol": 1e-10, "maxiter": 200})
    return fit.x.reshape(2, -1)


def _physical_ld_constraints(leg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``rows @ eta + bound >= 0`` for a physical quadratic law at every channel (``leg`` (C, d)).

    With ``u = leg @ eta`` per coefficient: ``u1 >= 0``, ``u1 + u2 <= 1`` and
    ``u1 + 2 u2 >= 0`` (positive intensity that decreases from the centre to
    the limb; Kipping 2013, MNRAS 435, 2152).
    """
    zero = np.zeros_like(leg)
    rows = np.concatenate([np.hstack([leg, zero]), np.hstack([-leg, -leg]), np.hstack([leg, 2 * leg])])
    bound = np.concatenate([np.zeros(len(leg)), np.ones(len(leg)), np.zeros(len(leg))])
    return rows, bound


def _physical_point(u: tuple[float, float]) -> tuple[float, float]:
    """``u`` if it is a physical quadratic law (:func:`_physical_ld_constraints`), else a mild one (0.3, 0.15)."""
    u1, u2 = float(u[0]), float(u[1])
    return (u1, u2) if u1 >= 0 and u1 + u2 <= 1 and u1 + 2 * u2 >= 0 else (0.3, 0.15)


def ld_mode(ld: LimbDarkeningConfig, n_usable: int) -> str:
    """Effective treatment: ``smooth`` needs more usable channels than law coefficients, else ``free``.

    ``free`` = the three ``beta`` of every channel fitted without prior (what a
    smooth law with as many coefficients as channels amounts to, e.g. FGS1).
    """
    if ld.method == "smooth" and n_usable <= 2 * (ld.degree + 1):
        return "free"
    return ld.method


def ld_prior(ld: LimbDarkeningConfig, k_ref: float, n_chan: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian priors on u1, u2 as linear constraints on ``beta`` (linearised at the white depth).

    ``u1 = beta_b / sum(beta)``, so ``beta_b - u1_0 sum(beta) ~ N(0, (prior_sigma * sum(beta)_ref)**2)``
    (likewise for u2) with ``sum(beta)_ref = k_ref**2 / Omega(u_0)``.
    """
    u1, u2 = ld.u1, ld.u2
    rows = np.array([[-u1, 1 - u1, -u1], [-u2, -u2, 1 - u2]])
    total_ref = k_ref ** 2 / (1 - u1 / 3 - u2 / 6)
    return rows, np.full((n_chan, 2), 1.0 / (ld.prior_sigma * total_ref) ** 2)
