"""Multiplicative transit fits of many channels whose higher baseline terms vary smoothly with wavelength.

The depths stage fits every channel ``c`` with the model::

    y_c(t) = base_c(t) * (1 - offset_c(t) - sum_k gamma_ck T_ck(t))
    base_c(t) = sum_i b_ci X_i(t) + sum_j a_cj S_j(t),   a_cj = sum_l eta_jl L_l(c)

``X`` are the baseline regressors each channel fits freely (constant, slope),
``S`` the higher ones (e.g. the quadratic term of a slow drift) whose
coefficients are shared by all channels as smooth functions ``L_l`` of the
wavelength (Legendre polynomials in wavenumber).  A quadratic in time is
nearly degenerate with a transit (both are symmetric bowls around mid-transit),
so a free quadratic per channel multiplies the depth variance by about 2.3
(see ``benchmarks/bench_accuracy.py``); instrumental drifts are common to the
channels up to a smooth chromatic factor, so sharing that term costs a few
parameters for the whole instrument instead of one per channel.

:func:`fit_shared_multiplicative` solves the joint Gauss-Newton problem
exactly with the block-arrow structure of its normal equations (per-channel
blocks ``G_c``, the shared block and their couplings ``K_c``): the shared
parameters from the Schur complement ``S = sum_c (H_c - K_c^T G_c^-1 K_c)``,
then every channel's own parameters.  The covariance of a channel's
parameters is the marginal one, ``G_c^-1 + G_c^-1 K_c S^-1 K_c^T G_c^-1``:
the uncertainty of the shared terms is included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SharedFit", "fit_shared_multiplicative"]


@dataclass
class SharedFit:
    """Result of :func:`fit_shared_multiplicative` (C channels, p = nb + nt own parameters)."""

    baseline: np.ndarray   #: (C, nb) free baseline coefficients
    gamma: np.ndarray      #: (C, nt) template amplitudes
    cov: np.ndarray        #: (C, p, p) marginal covariance (shared terms profiled), baseline first
    model: np.ndarray      #: (M, C)
    chi2: np.ndarray       #: (C,)
    n: np.ndarray          #: (C,) usable points
    eta: np.ndarray        #: (ns, q) shared coefficients: a_c = eta @ basis_c
    eta_cov: np.ndarray    #: (ns * q, ns * q)
    n_shared_per_channel: float  #: shared parameters per fitted channel (for degrees of freedom)


def fit_shared_multiplicative(y: np.ndarray, w: np.ndarray, design: np.ndarray, shared: np.ndarray,
                              basis: np.ndarray, templates: np.ndarray, offset: np.ndarray | None = None,
                              prior: tuple[np.ndarray, np.ndarray] | None = None, iters: int = 3) -> SharedFit:
    """Joint fit of all channels with shared, wavelength-smooth higher baseline terms (module doc).

    Parameters
    ----------
    y, w : numpy.ndarray
        (M, C) data and inverse variances (0 = unusable; ``y`` is then ignored).
    design : numpy.ndarray
        (M, nb) free baseline regressors, column 0 constant 1.
    shared : numpy.ndarray
        (M, ns) baseline regressors with shared, smooth coefficients.
    basis : numpy.ndarray
        (C, q) value of each smooth function of wavelength at every channel.
    templates : numpy.ndarray
        (C, nt, M) deficit templates.
    offset : numpy.ndarray, optional
        (C, M) fixed deficit part.
    prior : (numpy.ndarray, numpy.ndarray), optional
        Gaussian priors ``R @ gamma ~ N(0, 1/ivar)`` as in
        :func:`calib_core.stages.depths.fit_multiplicative`.
    iters : int
        Gauss-Newton steps (the model is bilinear; it converges in two or three).

    Returns
    -------
    SharedFit
        NaN for a channel with fewer usable points than own parameters (it
        then takes no part in the shared terms either).
    """
    m, c = y.shape
    nb, nt, ns, q = design.shape[1], templates.shape[1], shared.shape[1], basis.shape[1]
    p, r = nb + nt, ns * q
    w = np.where(w > 0, w, 0.0).T
    y0 = np.where(w > 0, y.T, 0.0)
    templates = np.asarray(templates, np.float64)
    off = np.zeros((c, m)) if offset is None else np.asarray(offset, np.float64)
    n = np.count_nonzero(w > 0, axis=1)
    ok = n >= p
    w = np.where(ok[:, None], w, 0.0)
    base_coef = np.zeros((c, nb))
    with np.errstate(invalid="ignore", divide="ignore"):
        base_coef[:, 0] = np.where(ok, (w * y0).sum(axis=1) / w.sum(axis=1), 0.0)
    gamma = np.zeros((c, nt))
    eta = np.zeros((ns, q))
    regs = np.concatenate([design, shared], axis=1)                      # (M, nb + ns)
    for step in range(iters + 1):
        a = basis @ eta.T                                                # (C, ns) shared coefficients
        base = base_coef @ design.T + a @ shared.T
        scale = 1.0 - off - np.einsum("ctm,ct->cm", templates, gamma)
        resid = y0 - base * scale
        # Jacobian columns: regressors * scale (free and shared baseline), -base * templates
        ws2 = w * scale * scale
        gram_rr = np.einsum("cm,mi,mj->cij", ws2, regs, regs)            # (C, nb + ns, nb + ns)
        grad_r = np.einsum("cm,mi->ci", w * scale * resid, regs)
        gram = np.empty((c, p, p))
        gram[:, :nb, :nb] = gram_rr[:, :nb, :nb]
        k_t = np.empty((c, p, ns))                                       # own parameters x shared regressors
        k_t[:, :nb] = gram_rr[:, :nb, nb:]
        grad = np.empty((c, p))
        grad[:, :nb] = grad_r[:, :nb]
        if nt:
            wbs = w * base * scale
            gram[:, nb:, :nb] = -np.einsum("ctm,cm,mi->cti", templates, wbs, design)
            gram[:, :nb, nb:] = np.swapaxes(gram[:, nb:, :nb], 1, 2)
            gram[:, nb:, nb:] = np.einsum("ctm,cm,csm->cts", templates, w * base * base, templates)
            k_t[:, nb:] = -np.einsum("ctm,cm,mj->ctj", templates, wbs, shared)
            grad[:, nb:] = -np.einsum("ctm,cm->ct", templates, w * base * resid)
        if prior is not None and nt:
            rows, ivar = prior
            gram[:, nb:, nb:] += np.einsum("rt,cr,rs->cts", rows, ivar, rows)
            grad[:, nb:] -= np.einsum("rt,cr->ct", rows, ivar * (gamma @ rows.T))
        # couplings with eta (index j * q + l): K_c = k_t (x) basis_c, H_c = H~_c (x) basis_c basis_c^T
        kk = (k_t[:, :, :, None] * basis[:, None, None, :]).reshape(c, p, r)
        hh = (gram_rr[:, nb:, None, nb:, None] * basis[:, None, :, None, None]
              * basis[:, None, None, None, :]).reshape(c, r, r)
        h = (grad_r[:, nb:, None] * basis[:, None, :]).reshape(c, r)
        ginv = np.zeros((c, p, p))
        ginv[ok] = np.linalg.inv(gram[ok])
        gk = ginv @ kk                                                   # G^-1 K, (C, p, r)
        schur = (hh[ok] - np.swapaxes(kk[ok], 1, 2) @ gk[ok]).sum(axis=0)
        schur_inv = np.linalg.pinv(0.5 * (schur + schur.T))
        if step == iters:
            break
        rhs = (h[ok] - np.einsum("cpr,cp->cr", kk[ok], np.einsum("cpq,cq->cp", ginv[ok], grad[ok]))).sum(axis=0)
        d_eta = schur_inv @ rhs
        d_own = np.einsum("cpq,cq->cp", ginv, grad - kk @ d_eta)
        eta += d_eta.reshape(ns, q)
        base_coef += np.where(ok[:, None], d_own[:, :nb], 0.0)
        gamma += np.where(ok[:, None], d_own[:, nb:], 0.0)
    cov = np.full((c, p, p), np.nan)
    cov[ok] = ginv[ok] + gk[ok] @ schur_inv[None] @ np.swapaxes(gk[ok], 1, 2)
    chi2 = (w * resid ** 2).sum(axis=1)
    model = (base * scale).T
    base_coef[~ok], gamma[~ok], chi2[~ok] = np.nan, np.nan, np.nan
    model[:, ~ok] = np.nan
    return SharedFit(base_coef, gamma, cov, model, chi2, n, eta, schur_inv, r / max(int(ok.sum()), 1))
