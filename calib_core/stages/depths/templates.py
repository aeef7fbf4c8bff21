"""Unit-depth transit templates of the channel model and the depth at which their shape is evaluated."""

from __future__ import annotations

import numpy as np

from ...transit import LD_FLUX_WEIGHTS, Geometry, deficit_basis, ld_direction, light_curve
from .curves import Curves

__all__ = ["direction_templates", "channel_templates", "own_templates", "shape_depth"]


def direction_templates(e: np.ndarray, u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """(C, 1, M) unit-depth templates along each channel's limb-darkening direction; ``e`` (3, M) or (C, 3, M)."""
    d = ld_direction(u1, u2)
    return (np.einsum("cx,xm->cm", d, e) if e.ndim == 2 else np.einsum("cx,cxm->cm", d, e))[:, None, :]


def channel_templates(e: np.ndarray, mode: str, u_chan: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Templates (C, nt, M) of the channel model and the weights ``w`` with ``depth = w @ gamma``.

    ``smooth``/``fixed``: one unit-depth template along each channel's limb-darkening
    direction (``w = [1]``); ``fit``/``free``: the three basis curves (``w = LD_FLUX_WEIGHTS``).
    ``e`` is (3, M) (shared) or (C, 3, M) (per channel).
    """
    if mode in ("smooth", "fixed"):
        return direction_templates(e, u_chan[:, 0], u_chan[:, 1]), np.ones(1)
    return (np.broadcast_to(e, (u_chan.shape[0], 3, e.shape[-1])) if e.ndim == 2 else e), LD_FLUX_WEIGHTS


def own_templates(curves: Curves, geometry: Geometry, k: np.ndarray, mode: str, u_chan: np.ndarray) -> np.ndarray:
    """Templates (C, nt, M) of :func:`channel_templates` with each channel's own radius ratio ``k`` (C,).

    Along a fixed limb-darkening direction the unit-depth template is
    ``d(u) . E(k) = (1 - flux(k, u)) / k**2`` exactly (:mod:`calib_core.transit`),
    so ``smooth``/``fixed`` need one light curve per channel instead of the three basis curves.
    """
    if mode in ("smooth", "fixed"):
        flux = light_curve(curves.time_h, geometry, k * k, u_chan[:, 0], u_chan[:, 1], curves.exp_time_h)
        return ((1.0 - flux.T) / (k * k)[:, None])[:, None, :]
    return channel_templates(deficit_basis(curves.time_h, geometry, k, curves.exp_time_h), mode, u_chan)[0]


def shape_depth(depth: np.ndarray, k_ref: float) -> np.ndarray:
    """Depth at which a channel's transit shape is evaluated: its own, within a factor 4 of ``k_ref**2``.

    The shape depends on the radius ratio only through the ingress duration;
    a channel's radius ratio differs from the white-light one by a few per
    cent (atmospheric features), so a factor 2 in ``k`` bounds every physical
    channel while keeping noise-dominated estimates (near or below zero)
    away from the singular shape of a vanishing planet.
    """
    ref = k_ref ** 2
    return np.clip(np.nan_to_num(np.asarray(depth, np.float64), nan=ref), ref / 4.0, 4.0 * ref)
