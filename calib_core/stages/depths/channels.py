"""Per-channel depths with the geometry fixed: baseline, depth and limb darkening of every channel.

Every channel gets its own baseline and depth by least squares, batched over
channels: the multiplicative model is solved by Gauss-Newton, including the
dependence of the transit shape on the channel's own radius ratio
(:func:`solve_depths`).  The higher baseline terms can be shared by the
channels, smooth in wavenumber (:mod:`.shared_baseline`).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

from ...transit import LD_FLUX_WEIGHTS, Geometry, deficit_basis, ld_direction, ld_from_beta, red_noise_beta
from .config import FitConfig, LimbDarkeningConfig
from .curves import Curves, baseline_design, step_h
from .limb_darkening import ld_mode, ld_prior, smooth_law, wavenumber_coordinate
from .linear import LinearFit, fit_multiplicative
from .noise_limit import channel_noise_limit
from .shared_baseline import fit_shared_multiplicative
from .templates import channel_templates, own_templates, shape_depth

__all__ = ["ChannelFit", "fit_channels", "solve_depths", "channel_free_degree"]

log = logging.getLogger(__name__)


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
    sigma_limit: np.ndarray | None = None  #: photon + read-noise limit of each depth (:func:`channel_noise_limit`)
    free_degree: int = -1    #: baseline terms up to this degree were free per channel, higher ones shared


def fit_channels(curves: Curves, geometry: Geometry, k_ref: float, ld: LimbDarkeningConfig,
                 baseline_degree: int, u_white: tuple[float, float], free_degree: int | None = None,
                 smooth_degree: int = 2) -> ChannelFit:
    """Depth, limb darkening and statistics of every channel for a fixed geometry.

    Parameters
    ----------
    curves : Curves
        The instrument's channels.
    geometry : Geometry
        Shared geometry from :func:`.white.fit_white`.
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
        :mod:`.shared_baseline`); None (or with no more usable
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
    mode = ld_mode(ld, int(usable.sum()))
    shared = None
    if free_degree is not None and free_degree < baseline_degree and usable.sum() > 2 * (smooth_degree + 1):
        basis = np.polynomial.legendre.legvander(wavenumber_coordinate(curves.wavelength_um), smooth_degree)
        shared = (free_degree + 1, basis)
    e_ref = deficit_basis(curves.time_h, geometry, k_ref, curves.exp_time_h)
    law = np.empty((0, 0))
    u_chan = np.tile([ld.u1, ld.u2], (n_chan, 1))
    if mode == "smooth":
        law = smooth_law(curves, e_ref, design, ld.degree, usable, u_white)
        u_chan = np.polynomial.legendre.legvander(wavenumber_coordinate(curves.wavelength_um), ld.degree) @ law.T
    prior = ld_prior(ld, k_ref, n_chan) if mode == "fit" else None
    lf = solve_depths(curves, design, geometry, e_ref, mode, u_chan, prior, k_ref, shared=shared)
    depth, var = _depth_and_var(lf, mode)
    u1, u2 = ld_from_beta(lf.gamma)[1:] if mode in ("fit", "free") else (u_chan[:, 0], u_chan[:, 1])
    limit = channel_noise_limit(curves, geometry, depth, np.asarray(u1), np.asarray(u2), k_ref, (ld.u1, ld.u2))
    resid = curves.flux - lf.model
    z = np.where(curves.weight > 0, resid * np.sqrt(curves.weight), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rms = np.sqrt(np.nanmean(np.where(curves.weight > 0, resid, np.nan) ** 2, axis=0))
    return ChannelFit(depth, var, np.asarray(u1), np.asarray(u2), lf.chi2 / lf.dof,
                      red_noise_beta(z, step_h(curves.time_h)), rms, mode, law, limit,
                      baseline_degree if shared is None else shared[0] - 1)


def solve_depths(curves: Curves, design: np.ndarray, geometry: Geometry, e_ref: np.ndarray, mode: str,
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
    (:func:`shape_depth`), and ``gamma0`` is moved along the channel's
    limb-darkening direction to that ``s0``.  A noise-dominated channel whose
    estimate is near or below zero would otherwise be linearised at a
    vanishing planet, whose ingress is a step: ``dT/ds`` explodes at the
    contact samples and the depth's variance collapses (errors 10 to 100
    times too small on faint stars).

    ``shared`` = ``(n_free, basis)`` fits the baseline columns from ``n_free``
    on with coefficients shared by the channels (``basis`` (C, q),
    :func:`.shared_baseline.fit_shared_multiplicative`); the
    returned covariance is marginal over them.
    """
    templates, w = channel_templates(e_ref, mode, u_chan)
    lf = _fit_linear(curves, design, templates, None, prior, shared)
    unit = ld_direction(u_chan[:, 0], u_chan[:, 1]) if mode in ("fit", "free") else np.ones((u_chan.shape[0], 1))
    for _ in range(iters):
        gamma0 = np.nan_to_num(lf.gamma)
        s_hat = gamma0 @ w
        s0 = shape_depth(s_hat, k_ref)
        # linearisation point: gamma0 scaled to depth s0 (its own direction while the depth is physical)
        physical = (s_hat == s0)[:, None]
        gamma_lin = np.where(physical, gamma0, s0[:, None] * unit)
        base = own_templates(curves, geometry, np.sqrt(s0), mode, u_chan)
        moved = own_templates(curves, geometry, np.sqrt(s0 * (1 + step)), mode, u_chan)
        slope = np.einsum("ct,ctm->cm", gamma_lin, (moved - base) / (s0 * step)[:, None, None])
        lf = _fit_linear(curves, design, base + w[None, :, None] * slope[:, None, :], -s0[:, None] * slope, prior,
                         shared)
    return lf


def _fit_linear(curves: Curves, design: np.ndarray, templates: np.ndarray, offset: np.ndarray | None,
                prior: tuple[np.ndarray, np.ndarray] | None, shared: tuple[int, np.ndarray] | None) -> LinearFit:
    """:func:`fit_multiplicative`, or the joint fit with shared baseline terms (``shared = (n_free, basis)``)."""
    if shared is None:
        return fit_multiplicative(curves.flux, curves.weight, design, templates, offset, prior=prior)
    n_free, basis = shared
    sf = fit_shared_multiplicative(curves.flux, curves.weight, design[:, :n_free], design[:, n_free:], basis,
                                   templates, offset, prior=prior)
    return LinearFit(sf.baseline, sf.gamma, sf.cov, sf.model, sf.chi2, sf.n)


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
