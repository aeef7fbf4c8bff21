"""Linear multiplicative transit fit, batched over channels (Gauss-Newton on ``baseline * (1 - deficit)``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LinearFit", "fit_multiplicative"]


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
