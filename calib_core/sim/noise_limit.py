"""Photon + read-noise limit of a demo planet's depths from its ground truth.

:func:`truth_noise_limit` evaluates the Fisher limit of
:func:`calib_core.stages.depths.noise_limit.depth_noise_limit` on the injected
star, flat, dark, read noise and transits (optimal weighting of every live
pixel): the true lower bound of the simulation, which validates the limit the
depths stage computes from the data.
"""

from __future__ import annotations

import os

import numpy as np

from ..io.layout import AIRS_CROP
from ..io.planet import open_planet
from ..stages.depths.noise_limit import depth_noise_limit
from .settings import airs_column_targets
from .truth import load_truth

__all__ = ["truth_noise_limit"]


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
    :func:`~calib_core.stages.depths.noise_limit.depth_noise_limit`.  FGS1 (target 0) uses all its live pixels, each
    AIRS-CH0 target its detector column.  Dropped pairs are left out.

    Parameters
    ----------
    root : str or os.PathLike
        Demo dataset root (:func:`calib_core.sim.make_demo`).
    planet_id : int
        Demo planet id.

    Returns
    -------
    dict
        ``sigma_limit`` (283,) in (Rp/Rs)^2, target order (FGS1 first, AIRS-CH0
        ascending), and ``frame_rel_sigma`` (283,): the relative 1-sigma of one
        out-of-transit CDS sample of the channel.
    """
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
