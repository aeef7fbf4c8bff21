"""Photon + read-noise limit of transit depths (Fisher information, known shape, constant baseline).

The smallest 1-sigma a depth can have, given the noise of the samples: for a
light curve ``flux_k = c (1 - depth * T_k)`` with the transit shape ``T``
(unit-depth deficit: geometry and limb darkening known) and a constant
baseline ``c`` (the only nuisance parameter), Gaussian samples of variance
``v_k`` give the Fisher matrix (at ``c = 1``)::

    I = sum_k w_k [[(1 - depth T_k)**2, -(1 - depth T_k) T_k],
                   [-(1 - depth T_k) T_k,          T_k**2      ]],   w_k = 1 / v_k

and ``sigma_limit = sqrt((I^-1)_depth,depth)``.  Any fit that also has to find
a sloped baseline, the limb darkening, the geometry or systematics can only do
worse (the Cramér-Rao bound grows with every nuisance parameter), so the ratio
``sigma / sigma_limit`` measures what the fit (and the extraction upstream)
costs.

:func:`depth_noise_limit` is evaluated on the stage's own light curves
(:func:`channel_noise_limit`: the per-sample variances carried through the
chain and the fitted transit model: a limit computed from the data, available
for real planets); :func:`calib_core.sim.noise_limit.truth_noise_limit` evaluates it
on a demo planet's ground truth to validate it.
"""

from __future__ import annotations

import numpy as np

from ...transit import Geometry, light_curve
from .curves import Curves
from .templates import shape_depth

__all__ = ["depth_noise_limit", "channel_noise_limit"]


def depth_noise_limit(template: np.ndarray, weight: np.ndarray, depth: np.ndarray | float) -> np.ndarray:
    """Fisher 1-sigma of each depth with a known shape and a constant baseline (module doc).

    Parameters
    ----------
    template : numpy.ndarray
        (M, C) unit-depth deficit ``T`` of each channel at each sample (``(M,)`` for one channel).
    weight : numpy.ndarray
        (M, C) inverse variances of the normalised flux (0 = unusable sample).
    depth : numpy.ndarray or float
        (C,) depth at which the information is evaluated (the fitted or true depth).

    Returns
    -------
    numpy.ndarray
        (C,) the limit (NaN where fewer than two samples are usable or the
        template does not vary).
    """
    t = np.asarray(template, np.float64)
    w = np.where(np.asarray(weight, np.float64) > 0, weight, 0.0)
    if t.ndim == 1:
        t, w = t[:, None], w.reshape(-1, 1)
    d = np.broadcast_to(np.asarray(depth, np.float64), (t.shape[1],))
    t = np.where(w > 0, np.nan_to_num(t), 0.0)
    g = 1.0 - d[None, :] * t                         # derivative of the flux with respect to the baseline
    i_cc = (w * g * g).sum(axis=0)
    i_cd = (w * g * t).sum(axis=0)
    i_dd = (w * t * t).sum(axis=0)
    det = i_cc * i_dd - i_cd * i_cd
    ok = (np.count_nonzero(w > 0, axis=0) >= 2) & (det > 1e-12 * i_cc * i_dd)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, np.sqrt(np.where(ok, i_cc / det, 1.0)), np.nan)


def channel_noise_limit(curves: Curves, geometry: Geometry, depth: np.ndarray, u1: np.ndarray, u2: np.ndarray,
                 k_ref: float, u_default: tuple[float, float]) -> np.ndarray:
    """Photon + read-noise limit of every depth from the curves' own variances (Fisher, constant baseline).

    The inverse variances of the curves (the per-sample variances carried
    through the chain, time-binned like the data, not scaled by chi^2 or
    beta) and the fitted transit shape (the shared geometry, the channel's
    limb darkening and its depth kept physical by :func:`shape_depth`) enter
    :func:`depth_noise_limit`.  A channel whose fitted
    limb darkening is unphysical (``fit``/``free`` modes at low S/N) uses
    ``u_default``.
    """
    s0 = shape_depth(depth, k_ref)
    ok = np.isfinite(u1) & np.isfinite(u2) & (u1 >= 0) & (u1 + u2 <= 1) & (u1 + 2 * u2 >= 0)
    u1 = np.where(ok, u1, u_default[0])
    u2 = np.where(ok, u2, u_default[1])
    shape = (1.0 - light_curve(curves.time_h, geometry, s0, u1, u2, curves.exp_time_h)) / s0[None, :]
    limit = depth_noise_limit(shape, curves.weight, s0)
    return np.where(np.isfinite(depth), limit, np.nan)
