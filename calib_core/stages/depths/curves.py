"""Light curves of the depths stage: from the trace series or the phase bins, white light, baseline design."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ...series import as_2d, check_series
from ...transit import time_bin

__all__ = ["Curves", "curves_from_trace", "curves_from_phase", "white_curve", "baseline_design", "step_h"]


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
    total_v = v.sum()
    v = v / total_v if total_v > 0 else v          # no usable channel: all weights stay 0 (the fit then refuses)
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


def step_h(time_h: np.ndarray) -> float:
    return float(np.median(np.diff(time_h))) if time_h.size > 1 else 1.0
