"""Final depth errors (chi^2, red noise, shared geometry) and channels filled from their neighbours."""

from __future__ import annotations

import numpy as np

from .channels import ChannelFit
from .config import ErrorsConfig

__all__ = ["channel_sigma", "fill_missing"]


def channel_sigma(fit: ChannelFit, errors: ErrorsConfig, geometry_rel_var: float) -> tuple[np.ndarray, np.ndarray]:
    """Final 1-sigma per channel and the beta actually applied (module doc, step 3).

    ``geometry_rel_var`` is the relative variance of the white depth due to the
    shared geometry (:meth:`.white.WhiteFit.geometry_rel_var`); each depth gets
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
