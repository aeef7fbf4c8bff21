"""Transit depths: batman fit of the white light (shared geometry) and of every channel.

Input: ``{"FGS1": phase output, "AIRS-CH0": phase output}`` (planet scope); with
``fit.data: unbinned`` (default) the normalised series of the trace stage are
read through ``ctx.output_of("trace", instrument)`` and averaged into at most
``fit.max_points`` equal time bins (inverse-variance weighted, propagated
errors, the model integrated over the bin width); ``phase_binned`` fits the
phase stage's bins instead.

Model (every light curve, quadratic limb darkening, circular orbit)::

    flux(t) = baseline(t) * (1 - deficit(t)),   baseline = Legendre polynomial in time (fit.baseline_degree)

with the deficit written exactly as linear in ``beta`` (:mod:`calib_core.transit`).

1. **White light, shared geometry.**  One white curve per instrument in
   ``geometry.instruments`` (FGS1 itself; AIRS-CH0 = fixed-weight mean of its
   channels).  Non-linear parameters: the shift of t0, a/Rs and the impact
   parameter (those listed in ``geometry.free``; the period is fixed) and one
   radius ratio per curve; baseline and limb darkening are linear and
   profiled out (variable projection, ``scipy.optimize.least_squares``).  The
   errors of each curve are inflated by ``max(1, chi2_red) * beta**2`` and the
   fit repeated, so the covariance is honest.
2. **Channels.**  With the geometry fixed, every channel gets its own baseline
   and depth by least squares, batched over channels: the multiplicative model
   is solved by Gauss-Newton, including the dependence of the transit shape on
   the channel's own radius ratio (:func:`_solve_depths`), so the estimate is
   the least-squares optimum and its covariance includes that dependence.
   Baseline: the terms up to ``fit.baseline_free_degree`` (constant, slope)
   are free per channel; the higher ones (the quadratic of a slow drift) are
   shared by the channels with coefficients smooth in wavenumber (Legendre
   degree ``fit.baseline_smooth_degree``), fitted jointly with every channel
   (:mod:`calib_core.shared_baseline`; the depth covariance is marginal over
   them).  A free quadratic per channel is nearly degenerate with the transit
   and costs a factor ~1.5 in every depth's error; the free degree is raised
   to the trace stage's ``along_time`` degree (:func:`channel_free_degree`),
   whose per-channel coefficients must stay free to be accounted for.
   Limb darkening (``limb_darkening.method``):

   * ``smooth`` (default): u1, u2 are Legendre polynomials of degree
     ``limb_darkening.degree`` in wavenumber (1/lambda) across the instrument's
     channels, fitted jointly to all channels (the total chi^2 with every
     channel's baseline and depth profiled out, minimised over the
     2 (degree + 1) coefficients); each channel then has one linear depth.
     Limb darkening varies smoothly and roughly linearly in 1/lambda, so this
     removes the depth / limb-darkening degeneracy of single channels without
     the bias of a fixed guess.  With no more usable channels than law
     coefficients (FGS1: one channel) every channel fits its own u1, u2
     freely (mode ``free``: the three ``beta``, no prior).
   * ``fit``: the three ``beta`` of each channel are free, with Gaussian priors
     ``N(u1, prior_sigma)``, ``N(u2, prior_sigma)`` (linearised on the ratios); the
     depth error includes the limb-darkening degeneracy.
   * ``fixed``: u1, u2 from the config for every channel (biased when the
     true limb darkening differs; for tests and comparisons).
3. **Errors.**  Per channel the statistical variance is scaled by
   ``max(1, chi2_red)`` (``errors.scale_by_chi2``) and by ``beta**2``, the
   time-averaging red-noise factor (``errors.red_noise``: per channel, or the
   median of the instrument's channels, which is far less noisy); with
   ``errors.include_geometry`` the geometry part of the white-light depth
   variance (marginal minus conditional, relative) is added as
   ``depth**2 * relative variance``, so every depth carries the common-mode
   error of the shared geometry.  A channel without usable data (e.g. flagged
   for the whole visit) is interpolated from its neighbours with a
   conservative error (:func:`fill_missing`, output ``filled``).
4. **Noise limit.**  ``sigma_noise_limit``: the photon + read-noise limit of
   each depth computed from the data, i.e. the Fisher information of the
   curve's own inverse variances (the per-sample variances carried through
   the chain) for the fitted transit shape with a constant baseline
   (:func:`calib_core.noise_limit.depth_noise_limit`); the metrics give
   ``sigma / sigma_noise_limit``.

Output (planet scope, 283 rows = FGS1 then AIRS-CH0 by ascending wavelength, as
``wavelengths.csv``): ``mu``, ``sigma`` ((Rp/Rs)^2 and 1-sigma), ``wavelength_um``,
``u1``, ``u2``, ``chi2_red``, ``beta``, ``instrument`` (index into ``meta["instruments"]``),
``white_weight``, ``filled``, ``sigma_noise_limit``, and small white-light arrays for plots
(``white_time_h``, ``white_flux``, ``white_err``, ``white_model``: one row per
instrument of ``meta["white_instruments"]``).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares, minimize

from ...config.base import ConfigError
from ...diagnostics import Plot, Series, histogram
from ...noise_limit import depth_noise_limit
from ...shared_baseline import fit_shared_multiplicative
from ...transit import (
    LD_FLUX_WEIGHTS,
    Geometry,
    deficit_basis,
    geometry_from_durations,
    ld_direction,
    ld_from_beta,
    light_curve,
    red_noise_beta,
    time_bin,
)
from ...series import as_2d, check_series
from ..base import Gate, Stage, StageContext, gate
from . import INFO
from .config import _GEOMETRY_NAMES, INSTRUMENT_ORDER, DepthsConfig, ErrorsConfig, FitConfig, LimbDarkeningConfig

__all__ = [
    "Curves",
    "LinearFit",
    "WhiteFit",
    "ChannelFit",
    "curves_from_trace",
    "curves_from_phase",
    "white_curve",
    "baseline_design",
    "fit_multiplicative",
    "fit_white",
    "fit_channels",
    "ProfiledStatistics",
    "profiled_statistics",
    "profiled_chi2",
    "channel_free_degree",
    "channel_sigma",
    "fill_missing",
    "DepthsStage",
    "STAGE",
    "break_between",
]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# light curves
# ---------------------------------------------------------------------------


@dataclass
class Curves:
    """Light curves of one instrument ready for fitting."""

    time_h: np.ndarray       #: (M,) hours since the visit start
    flux: np.ndarray         #: (M, C) normalised flux
    weight: np.ndarray       #: (M, C) inverse variance, 0 = unusable
    exp_time_h: float        #: integration time of a point (model averaged over it)
    wavelength_um: np.ndarray  #: (C,)


def curves_from_trace(trace_out, max_points: int, validation=None) -> Curves:
    """Curves from a trace output, averaged into at most ``max_points`` equal time bins.

    ``validation`` (the stage's ``ValidationConfig``) runs :func:`check_series` on the fields.
    """
    f = trace_out.fields
    flux, err = as_2d(f["trace_flux_norm"]), as_2d(f["trace_flux_err"])
    flags = as_2d(f["trace_flags"], dtype=np.uint16)
    time_s = np.asarray(f["time_s"], np.float64)
    wavelength = np.asarray(f["channel_grid"], np.float64).reshape(-1)
    if validation is not None:
        check_series("depths", validation, flux, err, flags, time_s, wavelength,
                     ("trace_flux_norm", "trace_flux_err", "trace_flags"))
    good = (flags == 0) & np.isfinite(flux) & np.isfinite(err) & (err > 0)
    weight = np.where(good, 1.0 / np.where(good, err, 1.0) ** 2, 0.0)
    time_h = time_s / 3600.0
    if time_h.size <= max_points:
        return Curves(time_h, np.where(good, flux, np.nan), weight, 0.0, wavelength)
    t_b, y_b, w_b, width = time_bin(time_h, flux, weight, max_points)
    return Curves(t_b, y_b, w_b, float(width), wavelength)


def curves_from_phase(phase_out, validation=None) -> Curves:
    """Curves from the phase stage's bins (bin centres converted back to hours since the start).

    ``validation`` (the stage's ``ValidationConfig``) runs :func:`check_series` on the bins.
    """
    f, meta = phase_out.fields, phase_out.meta
    to_hours = 24.0 * meta["period_days"] if meta.get("phase_unit") == "cycles" else 1.0
    centres = np.asarray(f["binned_phase"], np.float64)
    flux, err = as_2d(f["binned_flux"]), as_2d(f["binned_flux_err"])
    flags = as_2d(f["phase_flags"], dtype=np.uint16)
    grid = np.asarray(f["channel_grid"], np.float64).reshape(-1)
    time_h = meta["t0_hours"] + centres * to_hours
    if validation is not None:
        check_series("depths", validation, flux, err, flags, time_h, grid,
                     ("binned_flux", "binned_flux_err", "phase_flags"))
    good = (flags == 0) & np.isfinite(flux) & np.isfinite(err) & (err > 0)
    weight = np.where(good, 1.0 / np.where(good, err, 1.0) ** 2, 0.0)
    edges = np.asarray(f["binned_edges"], np.float64)
    return Curves(time_h, flux, weight, float(np.diff(edges).mean() * to_hours), grid)


def white_curve(curves: Curves) -> tuple[Curves, np.ndarray]:
    """Fixed-weight mean of the channels (weights = median inverse variance per channel).

    Fixed weights keep the white deficit an exact weighted mean of the channel
    deficits, so the white-light depth equals ``sum(v * depth) / sum(v)`` with
    the returned normalised weights ``v`` (C,).
    """
    w = curves.weight
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        v = np.nan_to_num(np.nanmedian(np.where(w > 0, w, np.nan), axis=0))
    v = v / v.sum()
    use = (w > 0) & (v[None, :] > 0)
    vv = np.where(use, v[None, :], 0.0)
    total = vv.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        flux = np.where(total > 0, (vv * np.where(use, curves.flux, 0.0)).sum(axis=1) / total, np.nan)
        var = (vv ** 2 / np.where(use, w, 1.0)).sum(axis=1) / total ** 2
    weight = np.where((total > 0) & (var > 0), 1.0 / np.where(var > 0, var, 1.0), 0.0)
    return Curves(curves.time_h, flux[:, None], weight[:, None], curves.exp_time_h, curves.wavelength_um[:1]), v


def baseline_design(time_h: np.ndarray, degree: int) -> np.ndarray:
    """Legendre polynomials of the time scaled to [-1, 1], (M, degree + 1); column 0 is the constant."""
    lo, hi = float(time_h.min()), float(time_h.max())
    s = 2 * (time_h - lo) / (hi - lo) - 1 if hi > lo else np.zeros_like(time_h)
    return np.polynomial.legendre.legvander(s, degree)


# ---------------------------------------------------------------------------
# linear multiplicative fit, batched over channels
# ---------------------------------------------------------------------------


@dataclass
class LinearFit:
    """Result of :func:`fit_multiplicative` (C channels, p = baseline + template coefficients)."""

    baseline: np.ndarray   #: (C, nb)
    gamma: np.ndarray      #: (C, nt) template amplitudes
    cov: np.ndarray        #: (C, p, p), baseline first
    model: np.ndarray      #: (M, C)
    chi2: np.ndarray       #: (C,)
    n: np.ndarray          #: (C,) usable points

    @property
    def dof(self) -> np.ndarray:
        return np.maximum(self.n - self.cov.shape[1], 1)


def fit_multiplicative(y: np.ndarray, w: np.ndarray, design: np.ndarray, templates: np.ndarray,
                       offset: np.ndarray | None = None, prior: tuple[np.ndarray, np.ndarray] | None = None,
                       iters: int = 3) -> LinearFit:
    """Fit ``y = (design @ b) * (1 - offset - templates^T gamma)`` per channel (Gauss-Newton, batched).

    The model is bilinear; starting from a constant baseline equal to the
    weighted mean and ``gamma = 0``, the first step is the additive linear fit
    and the next steps converge to the multiplicative solution.

    Parameters
    ----------
    y, w : numpy.ndarray
        (M, C) data and inverse variances (0 = unusable; ``y`` is then ignored).
    design : numpy.ndarray
        (M, nb) baseline regressors, column 0 constant 1.
    templates : numpy.ndarray
        (C, nt, M) deficit templates (``nt`` may be 0).
    offset : numpy.ndarray, optional
        (C, M) fixed deficit part.
    prior : (numpy.ndarray, numpy.ndarray), optional
        Gaussian priors ``R @ gamma ~ N(0, 1/ivar)``: rows ``R`` (nr, nt) and
        inverse variances ``ivar`` (C, nr).
    iters : int
        Gauss-Newton steps.

    Returns
    -------
    LinearFit
        Coefficients, covariance ``(J^T W J + prior)^-1`` at the solution, model,
        chi^2 and the usable-point count; NaN for a channel with fewer usable
        points than coefficients.
    """
    m, c = y.shape
    nb, nt = design.shape[1], templates.shape[1]
    p = nb + nt
    # channel-major (C, M) arrays; the Gram matrix is assembled block by block from batched
    # matrix products (J = [design * (1 - deficit), -base * templates] is never formed)
    w = np.where(w > 0, w, 0.0).T
    y0 = np.where(w > 0, y.T, 0.0)
    templates = np.asarray(templates, np.float64)
    off = np.zeros((c, m)) if offset is None else np.asarray(offset, np.float64)
    design_outer = (design[:, :, None] * design[:, None, :]).reshape(m, nb * nb)
    n = np.count_nonzero(w > 0, axis=1)
    ok = n >= p
    base_coef = np.zeros((c, nb))
    with np.errstate(invalid="ignore", divide="ignore"):
        base_coef[:, 0] = np.where(ok, (w * y0).sum(axis=1) / w.sum(axis=1), 0.0)
    gamma = np.zeros((c, nt))
    gram = np.empty((c, p, p))
    grad = np.empty((c, p))
    for step in range(iters + 1):
        base = base_coef @ design.T
        scale = 1.0 - off - np.einsum("ctm,ct->cm", templates, gamma)       # 1 - deficit
        model = base * scale
        resid = y0 - model
        wt = w * scale
        gram[:, :nb, :nb] = ((wt * scale) @ design_outer).reshape(c, nb, nb)
        grad[:, :nb] = (wt * resid) @ design
        if nt:
            tw = templates * (w * base)[:, None, :]                          # (C, nt, M)
            gram[:, nb:, :nb] = -(templates * (wt * base)[:, None, :]) @ design
            gram[:, :nb, nb:] = np.swapaxes(gram[:, nb:, :nb], 1, 2)
            gram[:, nb:, nb:] = (tw * base[:, None, :]) @ np.swapaxes(templates, 1, 2)
            grad[:, nb:] = -(tw @ resid[:, :, None])[..., 0]
        if prior is not None and nt:
            rows, ivar = prior
            gram[:, nb:, nb:] += np.einsum("rt,cr,rs->cts", rows, ivar, rows)
            grad[:, nb:] -= np.einsum("rt,cr->ct", rows, ivar * (gamma @ rows.T))
        if step == iters:
            break
        delta = np.zeros((c, p))
        delta[ok] = _solve(gram[ok], grad[ok][..., None])[..., 0]
        base_coef += delta[:, :nb]
        gamma += delta[:, nb:]
    cov = np.full((c, p, p), np.nan)
    cov[ok] = _inverse(gram[ok])
    chi2 = (w * resid ** 2).sum(axis=1)
    bad = ~ok
    base_coef[bad], gamma[bad], chi2[bad] = np.nan, np.nan, np.nan
    model[bad] = np.nan
    model = model.T
    return LinearFit(base_coef, gamma, cov, model, chi2, n)


def _solve(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Batched ``gram^-1 rhs``; with the pseudo-inverse when a Gram matrix is singular.

    A template can vanish on every sample (the white-light fit tries a geometry
    without a transit in the data, e.g. an impact parameter above ``1 + k``, on
    a faint star): its amplitude is then undetermined and gets no step instead
    of stopping the run.
    """
    try:
        return np.linalg.solve(gram, rhs)
    except np.linalg.LinAlgError:
        return np.linalg.pinv(gram) @ rhs


def _inverse(gram: np.ndarray) -> np.ndarray:
    """Batched inverse of Gram matrices; the pseudo-inverse when one is singular (see :func:`_solve`)."""
    try:
        return np.linalg.inv(gram)
    except np.linalg.LinAlgError:
        return np.linalg.pinv(gram)


# ---------------------------------------------------------------------------
# white light: shared geometry
# ---------------------------------------------------------------------------


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
        beta[inst] = float(red_noise_beta(z, _step_h(cv.time_h))[0])
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


def _step_h(time_h: np.ndarray) -> float:
    return float(np.median(np.diff(time_h))) if time_h.size > 1 else 1.0


# ---------------------------------------------------------------------------
# channels
# ---------------------------------------------------------------------------


@dataclass
class ChannelFit:
    """Per-channel depths of one instrument (arrays (C,))."""

    depth: np.ndarray
    var_stat: np.ndarray     #: variance from the linear fit (before chi2 / beta / geometry)
    u1: np.ndarray
    u2: np.ndarray
    chi2_red: np.ndarray
    beta: np.ndarray         #: per-channel time-averaging beta
    residual_rms: np.ndarray
    ld_mode: str             #: limb-darkening treatment used: smooth | fit | fixed | free
    ld_coefficients: np.ndarray  #: smooth law (2, degree + 1) in wavenumber; empty otherwise
    sigma_limit: np.ndarray | None = None  #: photon + read-noise limit of each depth (:func:`_noise_limit`)
    free_degree: int = -1    #: baseline terms up to this degree were free per channel, higher ones shared


def _wavenumber_coordinate(wavelength_um: np.ndarray) -> np.ndarray:
    nu = 1.0 / wavelength_um
    lo, hi = nu.min(), nu.max()
    return 2 * (nu - lo) / (hi - lo) - 1 if hi > lo else np.zeros_like(nu)


def _direction_templates(e: np.ndarray, u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """(C, 1, M) unit-depth templates along each channel's limb-darkening direction; ``e`` (3, M) or (C, 3, M)."""
    d = ld_direction(u1, u2)
    return (np.einsum("cx,xm->cm", d, e) if e.ndim == 2 else np.einsum("cx,cxm->cm", d, e))[:, None, :]


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


def _smooth_law(curves: Curves, e: np.ndarray, design: np.ndarray, degree: int, usable: np.ndarray,
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
    leg = np.polynomial.legendre.legvander(_wavenumber_coordinate(curves.wavelength_um), degree)[usable]
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


def _ld_mode(ld: LimbDarkeningConfig, n_usable: int) -> str:
    """Effective treatment: ``smooth`` needs more usable channels than law coefficients, else ``free``.

    ``free`` = the three ``beta`` of every channel fitted without prior (what a
    smooth law with as many coefficients as channels amounts to, e.g. FGS1).
    """
    if ld.method == "smooth" and n_usable <= 2 * (ld.degree + 1):
        return "free"
    return ld.method


def fit_channels(curves: Curves, geometry: Geometry, k_ref: float, ld: LimbDarkeningConfig,
                 baseline_degree: int, u_white: tuple[float, float], free_degree: int | None = None,
                 smooth_degree: int = 2) -> ChannelFit:
    """Depth, limb darkening and statistics of every channel for a fixed geometry.

    Parameters
    ----------
    curves : Curves
        The instrument's channels.
    geometry : Geometry
        Shared geometry from :func:`fit_white`.
    k_ref : float
        Radius ratio of the basis in the first pass (the white-light value);
        the second pass uses each channel's own ``k``.
    ld : LimbDarkeningConfig
        Limb-darkening treatment (module doc); ``smooth`` with no more usable
        channels than law coefficients (e.g. FGS1) fits every channel's own
        u1, u2 freely (:attr:`ChannelFit.ld_mode` ``free``).
    baseline_degree : int
        Baseline polynomial degree.
    u_white : (float, float)
        White-light limb darkening: starting point of the smooth law.
    free_degree : int, optional
        Baseline terms of degree <= ``free_degree`` are free per channel, the
        higher ones (up to ``baseline_degree``) are shared by the channels with
        coefficients smooth in wavenumber (Legendre degree ``smooth_degree``,
        :mod:`calib_core.shared_baseline`); None (or with no more usable
        channels than ``2 (smooth_degree + 1)``): every term free.
    smooth_degree : int
        Legendre degree in wavenumber of the shared baseline coefficients.

    Returns
    -------
    ChannelFit
    """
    design = baseline_design(curves.time_h, baseline_degree)
    n_chan = curves.flux.shape[1]
    usable = np.count_nonzero(curves.weight > 0, axis=0) > design.shape[1] + 3
    mode = _ld_mode(ld, int(usable.sum()))
    shared = None
    if free_degree is not None and free_degree < baseline_degree and usable.sum() > 2 * (smooth_degree + 1):
        basis = np.polynomial.legendre.legvander(_wavenumber_coordinate(curves.wavelength_um), smooth_degree)
        shared = (free_degree + 1, basis)
    e_ref = deficit_basis(curves.time_h, geometry, k_ref, curves.exp_time_h)
    law = np.empty((0, 0))
    u_chan = np.tile([ld.u1, ld.u2], (n_chan, 1))
    if mode == "smooth":
        law = _smooth_law(curves, e_ref, design, ld.degree, usable, u_white)
        u_chan = np.polynomial.legendre.legvander(_wavenumber_coordinate(curves.wavelength_um), ld.degree) @ law.T
    prior = _ld_prior(ld, k_ref, n_chan) if mode == "fit" else None
    lf = _solve_depths(curves, design, geometry, e_ref, mode, u_chan, prior, k_ref, shared=shared)
    depth, var = _depth_and_var(lf, mode)
    u1, u2 = ld_from_beta(lf.gamma)[1:] if mode in ("fit", "free") else (u_chan[:, 0], u_chan[:, 1])
    limit = _noise_limit(curves, geometry, depth, np.asarray(u1), np.asarray(u2), k_ref, (ld.u1, ld.u2))
    resid = curves.flux - lf.model
    z = np.where(curves.weight > 0, resid * np.sqrt(curves.weight), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rms = np.sqrt(np.nanmean(np.where(curves.weight > 0, resid, np.nan) ** 2, axis=0))
    return ChannelFit(depth, var, np.asarray(u1), np.asarray(u2), lf.chi2 / lf.dof,
                      red_noise_beta(z, _step_h(curves.time_h)), rms, mode, law, limit,
                      baseline_degree if shared is None else shared[0] - 1)


def _ld_prior(ld: LimbDarkeningConfig, k_ref: float, n_chan: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian priors on u1, u2 as linear constraints on ``beta`` (linearised at the white depth).

    ``u1 = beta_b / sum(beta)``, so ``beta_b - u1_0 sum(beta) ~ N(0, (prior_sigma * sum(beta)_ref)**2)``
    (likewise for u2) with ``sum(beta)_ref = k_ref**2 / Omega(u_0)``.
    """
    u1, u2 = ld.u1, ld.u2
    rows = np.array([[-u1, 1 - u1, -u1], [-u2, -u2, 1 - u2]])
    total_ref = k_ref ** 2 / (1 - u1 / 3 - u2 / 6)
    return rows, np.full((n_chan, 2), 1.0 / (ld.prior_sigma * total_ref) ** 2)


def _channel_templates(e: np.ndarray, mode: str, u_chan: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Templates (C, nt, M) of the channel model and the weights ``w`` with ``depth = w @ gamma``.

    ``smooth``/``fixed``: one unit-depth template along each channel's limb-darkening
    direction (``w = [1]``); ``fit``/``free``: the three basis curves (``w = LD_FLUX_WEIGHTS``).
    ``e`` is (3, M) (shared) or (C, 3, M) (per channel).
    """
    if mode in ("smooth", "fixed"):
        return _direction_templates(e, u_chan[:, 0], u_chan[:, 1]), np.ones(1)
    return (np.broadcast_to(e, (u_chan.shape[0], 3, e.shape[-1])) if e.ndim == 2 else e), LD_FLUX_WEIGHTS


def _solve_depths(curves: Curves, design: np.ndarray, geometry: Geometry, e_ref: np.ndarray, mode: str,
                  u_chan: np.ndarray, prior: tuple[np.ndarray, np.ndarray] | None, k_ref: float,
                  iters: int = 2, step: float = 1e-3,
                  shared: tuple[int, np.ndarray] | None = None) -> LinearFit:
    """Least-squares depths with the transit shape following each channel's own radius ratio.

    The model ``deficit = sum_j gamma_j T_j(s)`` depends on the depth
    ``s = w @ gamma`` also through the shape (ingress duration ~ k).  Starting
    from the white-light ``k_ref`` for every channel, each Gauss-Newton step
    linearises the shape at the current ``s0``::

        deficit ~ sum_j gamma_j (T_j(s0) + w_j G) - s0 G,   G = sum_j gamma0_j dT_j/ds

    (``dT/ds`` by a forward difference of relative ``step``), which is linear in
    ``gamma``; the covariance of the last step therefore includes the shape
    derivative.  (Re-using ``T(s0)`` without ``G`` would be a fixed-point
    iteration that amplifies the noise by ``1 / (1 - dlog T / dlog s)``.)

    The shape is linearised at a physical radius ratio: ``s0`` is the
    channel's depth kept within a factor 4 of the white-light depth
    (:func:`_shape_depth`), and ``gamma0`` is moved along the channel's
    limb-darkening direction to that ``s0``.  A noise-dominated channel whose
    estimate is near or below zero would otherwise be linearised at a
    vanishing planet, whose ingress is a step: ``dT/ds`` explodes at the
    contact samples and the depth's variance collapses (errors 10 to 100
    times too small on faint stars).

    ``shared`` = ``(n_free, basis)`` fits the baseline columns from ``n_free``
    on with coefficients shared by the channels (``basis`` (C, q),
    :func:`calib_core.shared_baseline.fit_shared_multiplicative`); the
    returned covariance is marginal over them.
    """
    templates, w = _channel_templates(e_ref, mode, u_chan)
    lf = _fit_linear(curves, design, templates, None, prior, shared)
    unit = ld_direction(u_chan[:, 0], u_chan[:, 1]) if mode in ("fit", "free") else np.ones((u_chan.shape[0], 1))
    for _ in range(iters):
        gamma0 = np.nan_to_num(lf.gamma)
        s_hat = gamma0 @ w
        s0 = _shape_depth(s_hat, k_ref)
        # linearisation point: gamma0 scaled to depth s0 (its own direction while the depth is physical)
        physical = (s_hat == s0)[:, None]
        gamma_lin = np.where(physical, gamma0, s0[:, None] * unit)
        base = _own_templates(curves, geometry, np.sqrt(s0), mode, u_chan)
        moved = _own_templates(curves, geometry, np.sqrt(s0 * (1 + step)), mode, u_chan)
        slope = np.einsum("ct,ctm->cm", gamma_lin, (moved - base) / (s0 * step)[:, None, None])
        lf = _fit_linear(curves, design, base + w[None, :, None] * slope[:, None, :], -s0[:, None] * slope, prior,
                         shared)
    return lf


def _shape_depth(depth: np.ndarray, k_ref: float) -> np.ndarray:
    """Depth at which a channel's transit shape is evaluated: its own, within a factor 4 of ``k_ref**2``.

    The shape depends on the radius ratio only through the ingress duration;
    a channel's radius ratio differs from the white-light one by a few per
    cent (atmospheric features), so a factor 2 in ``k`` bounds every physical
    channel while keeping noise-dominated estimates (near or below zero)
    away from the singular shape of a vanishing planet.
    """
    ref = k_ref ** 2
    return np.clip(np.nan_to_num(np.asarray(depth, np.float64), nan=ref), ref / 4.0, 4.0 * ref)


def _fit_linear(curves: Curves, design: np.ndarray, templates: np.ndarray, offset: np.ndarray | None,
                prior: tuple[np.ndarray, np.ndarray] | None, shared: tuple[int, np.ndarray] | None) -> LinearFit:
    """:func:`fit_multiplicative`, or the joint fit with shared baseline terms (``shared = (n_free, basis)``)."""
    if shared is None:
        return fit_multiplicative(curves.flux, curves.weight, design, templates, offset, prior=prior)
    n_free, basis = shared
    sf = fit_shared_multiplicative(curves.flux, curves.weight, design[:, :n_free], design[:, n_free:], basis,
                                   templates, offset, prior=prior)
    return LinearFit(sf.baseline, sf.gamma, sf.cov, sf.model, sf.chi2, sf.n)


def _noise_limit(curves: Curves, geometry: Geometry, depth: np.ndarray, u1: np.ndarray, u2: np.ndarray,
                 k_ref: float, u_default: tuple[float, float]) -> np.ndarray:
    """Photon + read-noise limit of every depth from the curves' own variances (Fisher, constant baseline).

    The inverse variances of the curves (the per-sample variances carried
    through the chain, time-binned like the data, not scaled by chi^2 or
    beta) and the fitted transit shape (the shared geometry, the channel's
    limb darkening and its depth kept physical by :func:`_shape_depth`) enter
    :func:`calib_core.noise_limit.depth_noise_limit`.  A channel whose fitted
    limb darkening is unphysical (``fit``/``free`` modes at low S/N) uses
    ``u_default``.
    """
    s0 = _shape_depth(depth, k_ref)
    ok = np.isfinite(u1) & np.isfinite(u2) & (u1 >= 0) & (u1 + u2 <= 1) & (u1 + 2 * u2 >= 0)
    u1 = np.where(ok, u1, u_default[0])
    u2 = np.where(ok, u2, u_default[1])
    shape = (1.0 - light_curve(curves.time_h, geometry, s0, u1, u2, curves.exp_time_h)) / s0[None, :]
    limit = depth_noise_limit(shape, curves.weight, s0)
    return np.where(np.isfinite(depth), limit, np.nan)


def _own_templates(curves: Curves, geometry: Geometry, k: np.ndarray, mode: str, u_chan: np.ndarray) -> np.ndarray:
    """Templates (C, nt, M) of :func:`_channel_templates` with each channel's own radius ratio ``k`` (C,).

    Along a fixed limb-darkening direction the unit-depth template is
    ``d(u) . E(k) = (1 - flux(k, u)) / k**2`` exactly (:mod:`calib_core.transit`),
    so ``smooth``/``fixed`` need one light curve per channel instead of the three basis curves.
    """
    if mode in ("smooth", "fixed"):
        flux = light_curve(curves.time_h, geometry, k * k, u_chan[:, 0], u_chan[:, 1], curves.exp_time_h)
        return ((1.0 - flux.T) / (k * k)[:, None])[:, None, :]
    return _channel_templates(deficit_basis(curves.time_h, geometry, k, curves.exp_time_h), mode, u_chan)[0]


def _depth_and_var(lf: LinearFit, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Depth and its variance: the single amplitude, or ``LD_FLUX_WEIGHTS @ beta`` (fit / free)."""
    nb = lf.baseline.shape[1]
    if mode in ("fit", "free"):
        c = LD_FLUX_WEIGHTS
        return lf.gamma @ c, np.einsum("i,cij,j->c", c, lf.cov[:, nb:, nb:], c)
    return lf.gamma[:, 0], lf.cov[:, nb, nb]


def channel_free_degree(fit: "FitConfig", along_time=None) -> int:
    """Degree up to which every channel's baseline is free (higher terms are shared, smooth in wavenumber).

    ``fit.baseline_free_degree``, raised to cover the per-channel trend the
    trace stage divided out: that trend was fitted on out-of-transit frames
    channel by channel, so the noise of its coefficients is in the normalised
    flux, and only the same terms fitted freely per channel here carry it
    into the depth's error.  A spline trend (pieces no polynomial absorbs)
    keeps every baseline term free.

    Parameters
    ----------
    fit : FitConfig
        The depths stage's fit section.
    along_time : AlongTimeConfig, optional
        The trace stage's ``along_time`` section; None when the profile runs no trace stage.
    """
    free = min(fit.baseline_free_degree, fit.baseline_degree)
    if along_time is not None and along_time.enabled:
        upstream = along_time.poly.degree if along_time.method == "poly" else fit.baseline_degree
        if upstream > free:
            log.info("depths: channel baselines free up to degree %d (trace along_time %s fitted per channel)",
                     min(upstream, fit.baseline_degree), along_time.method)
            free = max(free, min(upstream, fit.baseline_degree))
    return free


def channel_sigma(fit: ChannelFit, errors: ErrorsConfig, geometry_rel_var: float) -> tuple[np.ndarray, np.ndarray]:
    """Final 1-sigma per channel and the beta actually applied (module doc, step 3).

    ``geometry_rel_var`` is the relative variance of the white depth due to the
    shared geometry (:meth:`WhiteFit.geometry_rel_var`); each depth gets
    ``depth**2 * geometry_rel_var`` added when ``errors.include_geometry``.
    """
    var = fit.var_stat.copy()
    if errors.scale_by_chi2:
        var *= np.maximum(fit.chi2_red, 1.0)
    if errors.red_noise == "per_channel":
        beta = fit.beta
    elif errors.red_noise == "instrument_median":
        beta = np.full_like(fit.beta, float(np.nanmedian(fit.beta)))
    else:
        beta = np.ones_like(fit.beta)
    var *= beta ** 2
    if errors.include_geometry:
        var += fit.depth ** 2 * geometry_rel_var
    return np.sqrt(var), beta


def fill_missing(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Interpolate channels without a depth (e.g. flagged for the whole visit) within each instrument.

    ``mu`` is interpolated linearly in wavelength from the instrument's fitted
    channels and ``sigma**2 = interp(sigma**2) + var(first differences of mu)``:
    the neighbours' error plus the channel-to-channel variation (noise and
    spectral structure), a conservative error for a value that was not
    measured.  Adds ``filled`` (bool per row).  An instrument without any fitted
    channel keeps NaN (the finite gate then fails).
    """
    out = {**{k: v.copy() for k, v in out.items()}, "filled": np.zeros(out["mu"].size, bool)}
    for inst in np.unique(out["instrument"]):
        rows = np.flatnonzero(out["instrument"] == inst)
        ok = np.isfinite(out["mu"][rows]) & np.isfinite(out["sigma"][rows])
        if ok.all() or not ok.any():
            continue
        wl, mu, sigma = out["wavelength_um"][rows], out["mu"][rows], out["sigma"][rows]
        spread = float(np.var(np.diff(mu[ok]))) if ok.sum() > 2 else float(np.max(sigma[ok]) ** 2)
        missing = rows[~ok]
        out["mu"][missing] = np.interp(wl[~ok], wl[ok], mu[ok])
        out["sigma"][missing] = np.sqrt(np.interp(wl[~ok], wl[ok], sigma[ok] ** 2) + spread)
        out["filled"][missing] = True
    return out


# ---------------------------------------------------------------------------
# stage
# ---------------------------------------------------------------------------


def _start_geometry(phase_out, star_info: dict | None, free: list[str]) -> Geometry:
    """t0 and period from the phase stage; a/Rs and i from star info, else from the phase windows."""
    meta = phase_out.meta
    t0_h, period = float(meta["t0_hours"]), float(meta["period_days"])
    if star_info and all(np.isfinite(star_info.get(k, np.nan)) for k in ("sma", "i")):
        return Geometry(t0_h, period, float(star_info["sma"]), float(star_info["i"]))
    if not {"a_rs", "inc"} <= set(free):
        raise ConfigError("calib.depths.geometry.free", free,
                          "a_rs and inc must be fitted when the planet has no star info (sma, i)")
    to_hours = 24.0 * period if meta.get("phase_unit") == "cycles" else 1.0
    w = np.asarray(phase_out.fields["windows"], np.float64) * to_hours
    a_rs, inc = geometry_from_durations(w[3] - w[0], w[2] - w[1], 0.01, period)
    return Geometry(t0_h, period, a_rs, inc)


def _ordered(inp: dict) -> list[str]:
    return [i for i in INSTRUMENT_ORDER if i in inp]


def _plot_rows(curves: Curves, model: np.ndarray, n_max: int = 400) -> tuple[np.ndarray, ...]:
    """(time, flux, err, model) averaged into at most ``n_max`` points for plotting."""
    w = curves.weight
    stacked = np.column_stack([curves.flux[:, 0], model])
    ww = np.column_stack([w[:, 0], np.where(w[:, 0] > 0, 1.0, 0.0)])
    t, ys, ws, _ = time_bin(curves.time_h, stacked, ww, min(n_max, curves.time_h.size))
    with np.errstate(divide="ignore"):
        err = np.where(ws[:, 0] > 0, 1.0 / np.sqrt(ws[:, 0]), np.nan)
    return t, ys[:, 0], err, ys[:, 1]


class DepthsStage(Stage):
    """Transit depths (``phase_fold`` -> ``depths``, planet scope).

    Metrics: geometry (``t0_h``, ``t0_err_h``, ``a_rs``, ``a_rs_err``, ``inc_deg``,
    ``inc_err_deg``, ``impact_parameter``), ``white_depth`` +- ``white_depth_err``
    (AIRS-CH0 white light when fitted, else FGS1; ``white_instrument``),
    ``fgs1_depth`` +- ``fgs1_depth_err``, ``white_chi2_red``, ``white_beta``,
    ``chi2_red_median``, ``beta_median``, ``residual_rms_ppm`` (median over
    channels), ``fit_converged``, ``n_nonfinite``, the errors against the
    photon + read-noise limit (``sigma_to_limit_median`` / ``_p10`` / ``_p90``,
    ``noise_limit_median_ppm``, ``fgs1_sigma_to_limit``, ``fgs1_noise_limit_ppm``),
    ``baseline_free_degree`` (:func:`channel_free_degree`); with labels:
    ``white_depth_truth``, ``z_white``, ``fgs1_depth_truth``, ``z_fgs1``,
    ``residual_z_std``, ``residual_z_mean``, ``residual_z_max_abs``.
    Gates: ``fit_converged``, ``chi2_red_median < max_chi2_red``,
    ``beta_median < max_beta``.
    """

    info = INFO
    Config = DepthsConfig

    def run(self, inp: dict, cfg: DepthsConfig, ctx: StageContext, writer) -> dict:
        insts = _ordered(inp)
        curves = {i: self._curves(i, inp[i], cfg, ctx) for i in insts}
        star_info = ctx.planet.star_info() if ctx.planet is not None else None
        reference = inp["AIRS-CH0"] if "AIRS-CH0" in inp else inp[insts[0]]
        start = _start_geometry(reference, star_info, cfg.geometry.free)
        white_insts = [i for i in cfg.geometry.instruments if i in curves]
        if not white_insts:
            raise ConfigError("calib.depths.geometry.instruments", cfg.geometry.instruments,
                              f"none of them is in the input ({', '.join(insts)})")
        whites = {i: white_curve(curves[i]) for i in insts}
        ld_cfg = cfg.limb_darkening
        ld_fixed = (ld_cfg.u1, ld_cfg.u2) if ld_cfg.method == "fixed" else None
        ctx.report(0.1, "white-light geometry")
        wf = fit_white({i: whites[i][0] for i in white_insts}, start, cfg.geometry.free, cfg.fit.baseline_degree,
                       ld_fixed)
        results, sigmas, betas = {}, {}, {}
        reference_white = white_insts[-1]
        trace_on = ctx.config("trace.enabled")
        free_degree = channel_free_degree(cfg.fit, ctx.config("trace.along_time") if trace_on else None)
        for n, inst in enumerate(insts):
            ctx.report(0.3 + 0.6 * n / len(insts), f"channels of {inst}")
            own = inst if inst in wf.depth else reference_white
            k_ref = wf.k[own]
            u_white = wf.u[own] if inst in wf.u else (ld_cfg.u1, ld_cfg.u2)
            results[inst] = fit_channels(curves[inst], wf.geometry, k_ref, ld_cfg, cfg.fit.baseline_degree, u_white,
                                         free_degree, cfg.fit.baseline_smooth_degree)
            sigmas[inst], betas[inst] = channel_sigma(results[inst], cfg.errors, wf.geometry_rel_var(own))
        out = fill_missing(self._assemble(insts, curves, results, sigmas, betas, whites))
        self._write(writer, out, wf, insts, whites, results)
        return self._metrics(out, wf, results, insts, ctx)

    @staticmethod
    def _curves(inst: str, phase_out, cfg: DepthsConfig, ctx: StageContext) -> Curves:
        if cfg.fit.data == "phase_binned":
            return curves_from_phase(phase_out, cfg.validation)
        trace_out = ctx.output_of("trace", inst)
        if trace_out is None:
            raise ConfigError("calib.depths.fit.data", "unbinned",
                              f"needs the trace output of {inst}; use phase_binned to fit the phase bins")
        return curves_from_trace(trace_out, cfg.fit.max_points, cfg.validation)

    @staticmethod
    def _assemble(insts: list[str], curves: dict, results: dict, sigmas: dict, betas: dict, whites: dict) -> dict:
        """Concatenate per-instrument results, FGS1 first, each by ascending wavelength."""
        keys = ("mu", "sigma", "wavelength_um", "u1", "u2", "chi2_red", "beta", "instrument", "white_weight",
                "sigma_noise_limit")
        parts = {k: [] for k in keys}
        for n, inst in enumerate(insts):
            order = np.argsort(curves[inst].wavelength_um, kind="stable")
            r = results[inst]
            values = (r.depth, sigmas[inst], curves[inst].wavelength_um, r.u1, r.u2, r.chi2_red, betas[inst],
                      np.full(r.depth.size, n), whites[inst][1], r.sigma_limit)
            for key, value in zip(keys, values):
                parts[key].append(np.asarray(value, np.float64)[order])
        return {k: np.concatenate(v) for k, v in parts.items()}

    @staticmethod
    def _write(writer, out: dict, wf: WhiteFit, insts: list[str], whites: dict, results: dict) -> None:
        units = {"mu": "(Rp/Rs)^2", "sigma": "(Rp/Rs)^2", "wavelength_um": "um", "u1": "", "u2": "",
                 "chi2_red": "", "beta": "", "instrument": "index into meta.instruments",
                 "white_weight": "weight of the channel in its instrument's white light",
                 "filled": "bool: no fit, interpolated from neighbouring channels",
                 "sigma_noise_limit": "(Rp/Rs)^2: photon + read-noise limit of sigma (NaN where filled)"}
        for key, unit in units.items():
            writer.put(key, out[key].astype(np.int16) if key == "instrument" else out[key], unit)
        rows = [_plot_rows(whites[i][0], wf.model[i]) for i in wf.model]
        width = max(r[0].size for r in rows)
        for j, key in enumerate(("white_time_h", "white_flux", "white_err", "white_model")):
            arr = np.full((len(rows), width), np.nan)
            for n, r in enumerate(rows):
                arr[n, : r[j].size] = r[j]
            writer.put(key, arr, "h" if key == "white_time_h" else "relative")
        g = wf.geometry
        writer.meta.update(
            instruments=insts, white_instruments=list(wf.model), order="FGS1 first, then AIRS-CH0 ascending",
            geometry={"t0_h": g.t0_h, "period_d": g.period_d, "a_rs": g.a_rs, "inc_deg": g.inc_deg,
                      "impact_parameter": g.impact_parameter},
            white_depth={i: wf.depth[i] for i in wf.depth}, white_depth_err={i: wf.depth_err[i] for i in wf.depth},
            limb_darkening={i: {"mode": results[i].ld_mode, "law": results[i].ld_coefficients.tolist()}
                            for i in insts},
        )

    @staticmethod
    def _metrics(out: dict, wf: WhiteFit, results: dict, insts: list[str], ctx: StageContext) -> dict:
        g, ge = wf.geometry, wf.geometry_err
        white_inst = "AIRS-CH0" if "AIRS-CH0" in wf.depth else next(iter(wf.depth))
        airs_inst = "AIRS-CH0" if "AIRS-CH0" in results else next(iter(results))
        airs = results[airs_inst]
        metrics = {
            "t0_h": g.t0_h, "t0_err_h": ge["t0_h"], "a_rs": g.a_rs, "a_rs_err": ge["a_rs"],
            "inc_deg": g.inc_deg, "inc_err_deg": ge["inc_deg"], "impact_parameter": g.impact_parameter,
            "period_days": g.period_d,
            "white_instrument": white_inst, "white_depth": wf.depth[white_inst],
            "white_depth_err": wf.depth_err[white_inst], "white_chi2_red": wf.chi2_red[white_inst],
            "white_beta": wf.beta[white_inst],
            "chi2_red_median": float(np.nanmedian(airs.chi2_red)), "beta_median": float(np.nanmedian(airs.beta)),
            "residual_rms_ppm": float(np.nanmedian(airs.residual_rms) * 1e6),
            "fit_converged": bool(wf.converged and np.all(np.isfinite(out["mu"]))),
            "white_nfev": wf.nfev, "n_channels": int(out["mu"].size),
            "n_filled": int(out["filled"].sum()),
            "n_nonfinite": int(np.count_nonzero(~np.isfinite(out["mu"]) | ~np.isfinite(out["sigma"]))),
        }
        if "FGS1" in insts:
            fgs = np.flatnonzero(out["instrument"] == insts.index("FGS1"))[0]
            metrics.update(fgs1_depth=float(out["mu"][fgs]), fgs1_depth_err=float(out["sigma"][fgs]))
        metrics.update(_limit_metrics(out, insts), baseline_free_degree=int(results[airs_inst].free_degree))
        labels = ctx.planet.labels() if ctx.planet is not None else None
        if labels is not None and np.size(labels) == out["mu"].size:
            metrics.update(_truth_metrics(out, np.asarray(labels, np.float64), wf, insts, white_inst))
        return metrics

    def gates(self, metrics: dict, cfg: DepthsConfig) -> list[Gate]:
        qc = cfg.quality_checks
        return [
            gate("fit_converged", int(bool(metrics.get("fit_converged"))), ">=", 1,
                 "white-light fit converged and every depth is finite"),
            gate("chi2_red_median", metrics.get("chi2_red_median"), "<", qc.max_chi2_red,
                 "median reduced chi^2 of the channel fits"),
            gate("beta_median", metrics.get("beta_median"), "<", qc.max_beta, "red-noise factor of the channels"),
        ]

    def diagnostics(self, output, metrics: dict, ctx: StageContext) -> list[Plot]:
        f = output.fields
        mu, sigma, wl = (np.asarray(f[k], np.float64) for k in ("mu", "sigma", "wavelength_um"))
        labels = ctx.planet.labels() if ctx.planet is not None else None
        truth = np.asarray(labels, np.float64) if labels is not None and np.size(labels) == mu.size else None
        # lines break between instruments (FGS1 | AIRS-CH0): a NaN row at the gap
        gap = break_between(np.asarray(f["instrument"]), wl)
        spectrum = Series("Transmission spectrum", gap(wl, True), gap(mu), xlabel="wavelength (um)", ylabel="(Rp/Rs)^2",
                          yerr=gap(sigma), label="fitted")
        plots: list[Plot] = [spectrum]
        if "sigma_noise_limit" in f:
            limit = np.asarray(f["sigma_noise_limit"], np.float64)
            ratio = metrics.get("sigma_to_limit_median", float("nan"))
            plots.append(Series(f"Depth errors vs the photon + read-noise limit (median ratio {ratio:.2f})",
                                gap(wl, True), gap(sigma) * 1e6, xlabel="wavelength (um)", ylabel="1-sigma (ppm)",
                                label="sigma", overlay=[Series("", gap(wl, True), gap(limit) * 1e6,
                                                               label="photon + read-noise limit")]))
        if truth is not None:
            spectrum.overlay.append(Series("", gap(wl, True), gap(truth), label="truth"))
            plots.append(histogram((mu - truth) / sigma, bins=40, range_=(-5.0, 5.0), log=False,
                                   title="Per-channel residuals (mu - truth) / sigma", xlabel="z"))
        for n, inst in enumerate(output.meta.get("white_instruments", [])):
            t, y, e, model = (np.asarray(f[k][n], np.float64) for k in
                              ("white_time_h", "white_flux", "white_err", "white_model"))
            keep = np.isfinite(t)
            t, y, e, model = t[keep], y[keep], e[keep], model[keep]
            plots.append(Series(f"White light {inst} and model", t, y, xlabel="time since visit start (h)",
                                ylabel="normalised flux", yerr=e, label="data",
                                overlay=[Series("", t, model, label="batman model")]))
            plots.append(Series(f"White light {inst} residuals", t, (y - model) * 1e6,
                                xlabel="time since visit start (h)", ylabel="ppm", yerr=e * 1e6,
                                label="data - model", style="points"))
        return plots


def break_between(instrument: np.ndarray, x: np.ndarray):
    """``gap(values, is_x=False)``: ``values`` with a NaN inserted where ``instrument`` changes (x: the midpoint).

    Drawn as a line, a spectrum then does not join the last FGS1 channel to the first AIRS-CH0 one.
    """
    instrument = np.asarray(instrument)
    cuts = np.flatnonzero(np.diff(instrument) != 0) + 1
    x = np.asarray(x, np.float64)

    def gap(values: np.ndarray, is_x: bool = False) -> np.ndarray:
        fill = 0.5 * (x[cuts - 1] + x[cuts]) if is_x else np.nan
        return np.insert(np.asarray(values, np.float64), cuts, fill)

    return gap


def _limit_metrics(out: dict, insts: list[str]) -> dict:
    """Achieved errors against the photon + read-noise limit (``sigma_noise_limit``), fitted channels only.

    ``sigma_to_limit_median`` / ``_p10`` / ``_p90`` and ``noise_limit_median_ppm`` over the
    AIRS-CH0 channels (else the first instrument), ``fgs1_sigma_to_limit`` and
    ``fgs1_noise_limit_ppm``.
    """
    main = "AIRS-CH0" if "AIRS-CH0" in insts else insts[0]
    rows = (out["instrument"] == insts.index(main)) & ~out["filled"]
    limit, sigma = out["sigma_noise_limit"][rows], out["sigma"][rows]
    ok = np.isfinite(limit) & (limit > 0) & np.isfinite(sigma)
    ratio = sigma[ok] / limit[ok]
    nan = float("nan")
    metrics = {
        "sigma_to_limit_median": float(np.median(ratio)) if ratio.size else nan,
        "sigma_to_limit_p10": float(np.percentile(ratio, 10)) if ratio.size else nan,
        "sigma_to_limit_p90": float(np.percentile(ratio, 90)) if ratio.size else nan,
        "noise_limit_median_ppm": float(np.median(limit[ok]) * 1e6) if ratio.size else nan,
    }
    if "FGS1" in insts:
        fgs = int(np.flatnonzero(out["instrument"] == insts.index("FGS1"))[0])
        metrics.update(fgs1_noise_limit_ppm=float(out["sigma_noise_limit"][fgs] * 1e6),
                       fgs1_sigma_to_limit=float(out["sigma"][fgs] / out["sigma_noise_limit"][fgs]))
    return metrics


def _truth_metrics(out: dict, truth: np.ndarray, wf: WhiteFit, insts: list[str], white_inst: str) -> dict:
    """Comparison with the labels: white depth z-scores and per-channel residual z statistics.

    The white-light truth is the white-light-weighted mean of the instrument's
    labels (the white deficit is exactly that mean of the channel deficits).
    """
    z = (out["mu"] - truth) / out["sigma"]
    idx = out["instrument"] == insts.index(white_inst)
    white_truth = float(out["white_weight"][idx] @ truth[idx])
    metrics = {
        "white_depth_truth": white_truth,
        "z_white": (wf.depth[white_inst] - white_truth) / wf.depth_err[white_inst],
        "residual_z_std": float(np.std(z)), "residual_z_mean": float(np.mean(z)),
        "residual_z_max_abs": float(np.max(np.abs(z))),
    }
    if "FGS1" in insts:
        fgs = int(np.flatnonzero(out["instrument"] == insts.index("FGS1"))[0])
        metrics.update(fgs1_depth_truth=float(truth[fgs]), z_fgs1=float(z[fgs]))
    return metrics


STAGE = DepthsStage()
