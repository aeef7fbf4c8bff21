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

Two sources of ``v_k`` and ``T``:

* :func:`depth_noise_limit` on a pipeline's own light curves (the depths stage
  passes the per-sample variances carried through the chain and its fitted
  transit model: a limit computed from the data, available for real planets);
* :func:`truth_noise_limit` on a demo planet's ground truth (the injected
  star, flat, dark, read noise and transits, optimal weighting of every live
  pixel): the true lower bound of the simulation, to validate the first.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["depth_noise_limit", "truth_noise_limit"]


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


def _pixel_information(signal: np.ndarray, level: np.ndarray, noise: np.ndarray, live: np.ndarray,
                       chunk: int = 256) -> np.ndarray:
    """``sum_p e_p**2 / (e_p + noise_p)`` over the live pixels of each column, ``e = level_k * signal``.

    ``signal``, ``noise``, ``live``: (H, W); ``level``: (n, W) relative signal per sample and column.
    Returns (n, W); computed in blocks of ``chunk`` samples (bounded memory on full-size planets).
    """
    out = np.empty(level.shape)
    for start in range(0, level.shape[0], chunk):
        e = level[start:start + chunk, None, :] * signal[None]
        var = e + noise[None]
        with np.errstate(invalid="ignore", divide="ignore"):
            info = np.where(live[None] & (var > 0), e * e / np.where(var > 0, var, 1.0), 0.0)
        out[start:start + chunk] = info.sum(axis=1)
    return out


def truth_noise_limit(root: str | os.PathLike, planet_id: int) -> dict[str, np.ndarray]:
    """Photon + read-noise limit of the 283 depths of a demo planet, from its ground truth.

    Per CDS sample ``k`` and live pixel ``p`` the expected signal is
    ``e_pk = sky_p * flat_p * dt_cds * transit_k * drift_k`` (no jitter) with
    the variance ``v_pk = e_pk + dark_p * dt_cds + 2 read_p**2`` (shot noise of
    the increment and read noise of both reads; the kTC offset cancels in the
    difference and the common mode is removed with the background).  An
    optimal (known profile, inverse-variance) extraction of the channel's flux
    ``F_k`` has the variance ``F_k**2 / sum_p e_pk**2 / v_pk``; the flux
    divided by its known out-of-transit level and drift is ``1 - depth T_k``
    with the true shape ``T_k = (1 - transit_k) / depth``, which enters
    :func:`depth_noise_limit`.  FGS1 (target 0) uses all its live pixels, each
    AIRS-CH0 target its detector column.  Dropped pairs are left out.

    Parameters
    ----------
    root : str or os.PathLike
        Demo dataset root (:func:`calib_core.io.demo.make_demo`).
    planet_id : int
        Demo planet id.

    Returns
    -------
    dict
        ``sigma_limit`` (283,) in (Rp/Rs)^2, target order (FGS1 first, AIRS-CH0
        ascending), and ``frame_rel_sigma`` (283,): the relative 1-sigma of one
        out-of-transit CDS sample of the channel.
    """
    from .io.demo import airs_column_targets, load_truth
    from .io.kaggle import AIRS_CROP, open_planet

    truth = load_truth(root, planet_id)
    planet = open_planet(root, planet_id, split=truth.get("split", "train"))
    depth = np.asarray(truth["depth"], np.float64)
    limit = np.full(depth.size, np.nan)
    frame_sigma = np.full(depth.size, np.nan)
    for inst, meta in truth["instruments"].items():
        maps = planet.calibration(inst)
        sky = truth[f"{inst}_sky"] * truth[f"{inst}_flat"] * meta["cds_s"]      # e- per CDS sample, (H, W)
        noise = truth[f"{inst}_dark"] * meta["cds_s"] + 2.0 * maps.read ** 2        # e-^2 besides the shot noise
        live = ~truth[f"{inst}_dead"]
        keep = np.setdiff1d(np.arange(meta["n_pairs"]), np.asarray(meta["dropped_pairs"], int))
        transit = truth[f"{inst}_transit"][keep]
        level = transit * truth[f"{inst}_drift"][keep]                             # (n, W) relative signal
        if inst == "FGS1":   # one channel: every pixel, the level of the single target column
            targets = np.array([0])
            info = _pixel_information(sky, level[:, :1].repeat(sky.shape[1], axis=1), noise, live).sum(
                axis=1, keepdims=True)
            info_oot = _pixel_information(sky, np.ones((1, sky.shape[1])), noise, live).sum(axis=1)
            transit = transit[:, :1]
        else:
            cols = np.arange(*AIRS_CROP)
            targets = airs_column_targets()[cols]
            info = _pixel_information(sky[:, cols], level[:, cols], noise[:, cols], live[:, cols])
            info_oot = _pixel_information(sky[:, cols], np.ones((1, cols.size)), noise[:, cols], live[:, cols])[0]
            transit = transit[:, cols]
        # the flux divided by its known level and drift, 1 - depth T_k, has the variance transit_k**2 / info_k
        shape = (1.0 - transit) / depth[targets][None, :]
        weight = info / transit ** 2
        limit[targets] = depth_noise_limit(shape, weight, depth[targets])
        with np.errstate(divide="ignore"):
            frame_sigma[targets] = 1.0 / np.sqrt(info_oot)
    return {"sigma_limit": limit, "frame_rel_sigma": frame_sigma}
