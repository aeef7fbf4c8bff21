"""Trace normalisation: continuum along wavelength, detrending along time, robust masks.

Model of a photometry series ``F(t, lambda)`` (electrons per frame and channel)::

    F = continuum(lambda) * trend(t, lambda) * transit(t, lambda) * noise

* ``continuum`` is a smooth function of wavelength (``along_wavelength``:
  poly | spline | lowess) fitted to the **out-of-transit median spectrum**; it is
  fixed in time, so it never divides the (wavelength-wide) transit out of a
  frame.  A continuum fitted frame by frame would do exactly that (every
  in-transit frame would be re-normalised to 1 and the depth would vanish).
* ``trend`` is per channel: a low-order function of time (``along_time``: poly |
  spline in time, plus optional linear/quadratic terms in the measured pointing
  offsets) fitted by weighted least squares on **out-of-transit frames only** and
  evaluated on every frame.  Its constant term carries the channel's level
  relative to the continuum, so the normalised flux is 1 out of transit in
  every channel.  With ``along_time.enabled: false`` the trend is that constant
  only (one number per channel).
* The transit window comes from ``transit_mask``: ``auto`` finds it in the
  white light (box search + trapezoid fit, :func:`calib_core.transit.estimate_transit`);
  ``ephemeris`` takes the mid-transit time of ``calib.phase.ephemeris`` and the
  duration of the star-info orbit.  Both are padded by ``pad_frac`` of the
  duration on each side.

Outputs (series, per instrument)::

    trace_flux_norm   (B, C)  photometry_flux / trace_flux_scale (1 out of transit)
    trace_flux_err    (B, C)  sqrt(photometry_flux_var) / trace_flux_scale
    trace_flux_scale  (B, C)  continuum[None, :] * trend, electrons: what the flux is divided by
    trace_continuum   (C,)    the continuum alone, electrons
    trace_flags       (B, C)  uint16: photometry flags (its own bits, kept) | DQ.NONFINITE | DQ.OUTLIER
                              (nonzero = do not use)
    channel_grid      (C,)    wavelength, um
    time_s            (B,)    seconds since the visit start
    oot_mask          (B,)    bool, frame used as out-of-transit

Outliers are robust residuals from a running median along time (which follows
the transit shape, so in-transit frames are never clipped for being low),
sigma-clipped per channel with a MAD scale (``robust.sigma``, ``robust.maxiters``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import BSpline
from scipy.ndimage import median_filter

from ...config.base import ConfigError
from ...diagnostics import Image, Plot, Series, histogram
from ...dq import DQ
from ...robust import mad_std, sigma_clip
from ...series import as_2d, block_mean, check_series
from ...timeutil import unit_to_hours
from ...transit import estimate_transit, red_noise_beta, transit_durations, window_mask
from ..base import Gate, Stage, StageContext, gate
from ..coverage import check_baseline, check_visit_span
from . import INFO
from .config import AlongTimeConfig, AlongWavelengthConfig, TraceConfig

__all__ = [
    "TraceResult",
    "usable_mask",
    "flag_outliers",
    "white_light",
    "oot_spectrum",
    "fit_continuum",
    "time_design",
    "fit_trend",
    "normalise_trace",
    "TraceStage",
    "STAGE",
]



def usable_mask(flux: np.ndarray, var: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samples usable for fitting, and the flag bits to add.

    Parameters
    ----------
    flux, var : numpy.ndarray
        (B, C) electrons and electrons**2.
    flags : numpy.ndarray
        (B, C) upstream flags (nonzero = do not use).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``good`` (B, C) bool and the uint16 bits ``DQ.NONFINITE`` where the flux or
        the variance is NaN/Inf or the variance is negative.
    """
    bad_value = ~np.isfinite(flux) | ~np.isfinite(var) | (var < 0)
    bits = np.where(bad_value, np.uint16(DQ.NONFINITE), np.uint16(0)).astype(np.uint16)
    return (flags == 0) & ~bad_value, bits


def _forward_fill(values: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Replace unusable samples by the previous usable one along axis 0 (then the next one)."""
    n = values.shape[0]
    idx = np.where(good, np.arange(n)[:, None], -1)
    np.maximum.accumulate(idx, axis=0, out=idx)
    first = np.argmax(good, axis=0)
    idx = np.where(idx < 0, first[None, :], idx)
    return np.take_along_axis(values, idx, axis=0)


def flag_outliers(flux: np.ndarray, good: np.ndarray, window: int, sigma: float, maxiters: int) -> np.ndarray:
    """Robust temporal outliers per channel.

    The residual from a centred running median of ``window`` frames follows the
    transit (ingress/egress are much longer than the window), so a low
    in-transit frame is not an outlier; residuals beyond ``sigma`` MAD-sigmas
    are clipped iteratively (astropy ``sigma_clip``).

    Parameters
    ----------
    flux : numpy.ndarray
        (B, C) flux.
    good : numpy.ndarray
        (B, C) usable samples (others are ignored and never flagged here).
    window : int
        Odd running-median length, frames.
    sigma : float
        Clipping threshold in robust sigmas.
    maxiters : int
        Clipping iterations.

    Returns
    -------
    numpy.ndarray
        (B, C) bool, True for new outliers.
    """
    n_frames = flux.shape[0]
    filled = _forward_fill(np.where(good, flux, 0.0), good)
    filled[:, ~good.any(axis=0)] = 0.0
    size = max(min(window, n_frames if n_frames % 2 else n_frames - 1), 1)
    smooth = median_filter(filled, size=(size, 1), mode="nearest")
    resid = np.ma.masked_array(flux - smooth, mask=~good)
    clipped = sigma_clip(resid, sigma=sigma, maxiters=maxiters, cenfunc="median", stdfunc="mad_std", axis=0)
    return np.ma.getmaskarray(clipped) & good


def white_light(flux: np.ndarray, var: np.ndarray, good: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-variance weighted mean of the median-normalised channels.

    Parameters
    ----------
    flux, var : numpy.ndarray
        (B, C) electrons and electrons**2.
    good : numpy.ndarray
        (B, C) usable samples.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        White flux (B,) (about 1) and its inverse variance (B,) (0 where no channel is usable).
    """
    level = _nanmedian(np.where(good, flux, np.nan), axis=0)
    level = np.where(np.isfinite(level) & (level > 0), level, np.nan)
    rel = flux / level
    rel_var = var / level ** 2
    typical = _nanmedian(np.where(good, rel_var, np.nan), axis=0)
    weight = np.where(good & np.isfinite(typical)[None, :], 1.0 / np.where(typical > 0, typical, np.inf), 0.0)
    total = weight.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        white = np.where(total > 0, (weight * np.where(weight > 0, rel, 0.0)).sum(axis=1) / total, np.nan)
        wvar = (weight ** 2 * np.where(weight > 0, rel_var, 0.0)).sum(axis=1) / total ** 2
        inv = np.where((total > 0) & (wvar > 0), 1.0 / wvar, 0.0)
    return white, inv


def _nanmedian(a: np.ndarray, axis: int) -> np.ndarray:
    """``numpy.nanmedian`` without the all-NaN-slice warning (such slices give NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(a, axis=axis)


def _mad_std_columns(a: np.ndarray) -> np.ndarray:
    """Robust (MAD) standard deviation of each column ignoring NaN (NaN for an all-NaN column)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return mad_std(a, axis=0, ignore_nan=True)


def oot_spectrum(flux: np.ndarray, good: np.ndarray, oot: np.ndarray) -> np.ndarray:
    """Median out-of-transit flux per channel (C,), NaN for a channel with no usable frame."""
    return _nanmedian(np.where(good & oot[:, None], flux, np.nan), axis=0)


def _scaled(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return 2.0 * (x - lo) / (hi - lo) - 1.0 if hi > lo else np.zeros_like(x)


def _legendre_design(x: np.ndarray, degree: int, lo: float, hi: float) -> np.ndarray:
    return np.polynomial.legendre.legvander(_scaled(x, lo, hi), degree)


def _spline_design(x: np.ndarray, knots_at: np.ndarray, n_knots: int, lo: float, hi: float) -> np.ndarray:
    """Cubic B-spline design at ``x``; interior knots at quantiles of ``knots_at`` (strictly inside)."""
    interior = np.quantile(knots_at, np.linspace(0, 1, n_knots + 2)[1:-1]) if n_knots else np.empty(0)
    interior = np.unique(interior[(interior > lo) & (interior < hi)])
    t = np.concatenate([[lo] * 4, interior, [hi] * 4])
    return BSpline.design_matrix(np.clip(x, lo, hi), t, 3).toarray()


def _lowess(x: np.ndarray, y: np.ndarray, w: np.ndarray, frac: float) -> np.ndarray:
    """Locally weighted linear regression (tricube kernel) evaluated at every ``x``.

    ``w`` are per-point weights (0 = excluded).  With fewer than two usable
    neighbours the local fit is a weighted mean.
    """
    n_use = int(np.count_nonzero(w > 0))
    r = min(max(int(math.ceil(frac * n_use)), 2), n_use)
    dist = np.abs(x[:, None] - x[None, :])
    ranked = np.sort(np.where(w[None, :] > 0, dist, np.inf), axis=1)
    h = np.maximum(ranked[:, r - 1], 1e-12) * 1.000001   # the r-th neighbour keeps a tiny positive weight
    kern = np.clip(1 - (dist / h[:, None]) ** 3, 0, None) ** 3 * w[None, :]
    s0 = kern.sum(axis=1)
    xm = (kern * x[None, :]).sum(axis=1) / s0
    ym = (kern * y[None, :]).sum(axis=1) / s0
    dx = x[None, :] - xm[:, None]
    sxx = (kern * dx * dx).sum(axis=1)
    sxy = (kern * dx * (y[None, :] - ym[:, None])).sum(axis=1)
    slope = np.where(sxx > 1e-12 * np.maximum(s0, 1e-300), sxy / np.where(sxx > 0, sxx, 1.0), 0.0)
    return ym + slope * (x - xm)


def fit_continuum(wavelength_um: np.ndarray, spectrum: np.ndarray, cfg: AlongWavelengthConfig,
                  sigma: float, maxiters: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth continuum of the out-of-transit spectrum, with robust rejection of deviant channels.

    The model complexity is capped by the number of usable channels (a
    polynomial degree below the channel count, a spline with at most ``n - 4``
    interior knots), so a single-channel instrument (FGS1) gets its own level.

    Parameters
    ----------
    wavelength_um : numpy.ndarray
        (C,) channel wavelengths.
    spectrum : numpy.ndarray
        (C,) out-of-transit median flux (NaN = unusable channel).
    cfg : AlongWavelengthConfig
        Method and its parameters.
    sigma, maxiters : float, int
        Robust clipping of channels that deviate from the continuum (they are
        only excluded from the fit; their own level is kept by the time trend).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Continuum (C,) (positive: where the fit is not, the median level is
        used; all ones when disabled or no channel is usable) and the bool mask
        of channels rejected from the fit.
    """
    x = np.asarray(wavelength_um, np.float64)
    usable = np.isfinite(spectrum) & (spectrum > 0)
    if not cfg.enabled or not usable.any():
        return np.ones_like(x), np.zeros(x.shape, bool)
    lo, hi = float(x[usable].min()), float(x[usable].max())
    fit_mask = usable.copy()
    for _ in range(maxiters):
        resid = spectrum / _continuum_model(x, spectrum, fit_mask, cfg, lo, hi) - 1.0
        scale = mad_std(resid[fit_mask]) if fit_mask.sum() > 3 else 0.0
        if not scale > 0:
            break
        new_mask = usable & (np.abs(resid - np.median(resid[fit_mask])) <= sigma * scale)
        if np.array_equal(new_mask, fit_mask) or new_mask.sum() < max(2, fit_mask.sum() // 2):
            break
        fit_mask = new_mask
    continuum = _continuum_model(x, spectrum, fit_mask, cfg, lo, hi)
    level = np.median(spectrum[usable])
    continuum = np.where(np.isfinite(continuum) & (continuum > 1e-6 * level), continuum, level)
    return continuum, usable & ~fit_mask


def _continuum_model(x: np.ndarray, y: np.ndarray, mask: np.ndarray, cfg: AlongWavelengthConfig,
                     lo: float, hi: float) -> np.ndarray:
    """One least-squares continuum fit of ``y[mask]``, evaluated at every ``x``."""
    n = int(mask.sum())
    w = mask.astype(np.float64)
    if cfg.method == "lowess":
        return _lowess(x, np.where(mask, y, 0.0), w, cfg.lowess.frac)
    if cfg.method == "spline" and n >= 5:
        design = _spline_design(x, x[mask], min(cfg.spline.knots, n - 4), lo, hi)
    else:  # poly, or a spline with too few channels for one knot: a cubic at most
        degree = cfg.poly.degree if cfg.method == "poly" else 3
        design = _legendre_design(x, min(degree, n - 1), lo, hi)
    coef, *_ = np.linalg.lstsq(design[mask], y[mask], rcond=None)
    return design @ coef


def time_design(time_h: np.ndarray, oot: np.ndarray, cfg: AlongTimeConfig,
                centroid_x: np.ndarray | None, centroid_y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Regressors of the per-channel trend.

    Parameters
    ----------
    time_h : numpy.ndarray
        (B,) hours.
    oot : numpy.ndarray
        (B,) out-of-transit frames (spline knots are placed at quantiles of
        their times, so no knot falls inside the transit window: across the
        window the trend is one cubic piece tied to both sides).
    cfg : AlongTimeConfig
        Trend model.
    centroid_x, centroid_y : numpy.ndarray or None
        (B,) measured pointing (pixels); standardised on out-of-transit frames.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Design (B, p) whose first column is the constant, and a (B,) bool of
        frames whose regressors are finite.
    """
    n = time_h.size
    if not cfg.enabled:
        return np.ones((n, 1)), np.ones(n, bool)
    lo, hi = float(time_h.min()), float(time_h.max())
    if cfg.method == "poly":
        columns = [_legendre_design(time_h, cfg.poly.degree, lo, hi)]
    else:
        spline = _spline_design(time_h, time_h[oot], cfg.spline.knots, lo, hi)
        columns = [np.ones((n, 1)), spline[:, 1:]]
    finite = np.ones(n, bool)
    if cfg.centroids != "none" and centroid_x is not None and centroid_y is not None:
        cx, cy = np.asarray(centroid_x, np.float64), np.asarray(centroid_y, np.float64)
        finite = np.isfinite(cx) & np.isfinite(cy)
        dx, dy = _standardise(cx, oot & finite), _standardise(cy, oot & finite)
        terms = [dx, dy] if cfg.centroids == "linear" else [dx, dy, dx * dx, dy * dy, dx * dy]
        columns.append(np.column_stack(terms))
    return np.concatenate(columns, axis=1), finite


def _standardise(values: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``(values - median) / mad_std`` over the ``ref`` samples; 0 where non-finite or without spread."""
    sample = values[ref]
    spread = mad_std(sample) if sample.size > 3 else 0.0
    if not spread > 0:
        return np.zeros_like(values)
    return np.where(np.isfinite(values), (values - np.median(sample)) / spread, 0.0)


def fit_trend(y: np.ndarray, w: np.ndarray, design: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares of every channel on a shared design, batched.

    Parameters
    ----------
    y : numpy.ndarray
        (B, C) values (ignored where ``w == 0``).
    w : numpy.ndarray
        (B, C) weights (0 = not in the fit, e.g. in-transit or flagged).
    design : numpy.ndarray
        (B, p) regressors.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The fitted trend on every frame (B, C) (NaN for a channel with fewer
        usable frames than regressors) and the number of fitted frames per channel (C,).
    """
    p = design.shape[1]
    y0 = np.where(w > 0, y, 0.0)
    gram = np.einsum("bp,bc,bq->cpq", design, w, design)
    rhs = np.einsum("bp,bc->cp", design, w * y0)
    ridge = 1e-12 * np.trace(gram, axis1=1, axis2=2)[:, None, None] * np.eye(p)
    n_fit = np.count_nonzero(w > 0, axis=0)
    ok = n_fit >= p
    coef = np.full((y.shape[1], p), np.nan)
    if ok.any():
        coef[ok] = np.linalg.solve(gram[ok] + ridge[ok], rhs[ok][..., None])[..., 0]
    return design @ coef.T, n_fit


@dataclass
class TraceResult:
    """Everything :func:`normalise_trace` computes (arrays (B, C) unless stated)."""

    flux_norm: np.ndarray
    flux_err: np.ndarray
    scale: np.ndarray
    continuum: np.ndarray           #: (C,)
    flags: np.ndarray               #: uint16
    oot: np.ndarray                 #: (B,) bool
    window_h: tuple[float, float]   #: transit window before padding (t1, t4), hours
    metrics: dict = field(default_factory=dict)


def normalise_trace(flux: np.ndarray, var: np.ndarray, flags: np.ndarray, time_s: np.ndarray,
                    wavelength_um: np.ndarray, cfg: TraceConfig, *, centroid_x: np.ndarray | None = None,
                    centroid_y: np.ndarray | None = None,
                    window_h: tuple[float, float] | None = None) -> TraceResult:
    """The trace stage on arrays: masks, transit window, continuum, trend, normalisation, metrics.

    Parameters
    ----------
    flux, var : numpy.ndarray
        (B, C) electrons, electrons**2.
    flags : numpy.ndarray
        (B, C) upstream flags (nonzero = do not use).
    time_s : numpy.ndarray
        (B,) seconds since the visit start.
    wavelength_um : numpy.ndarray
        (C,) channel wavelengths.
    cfg : TraceConfig
        Stage configuration.
    centroid_x, centroid_y : numpy.ndarray, optional
        (B,) measured pointing, pixels.
    window_h : (float, float), optional
        Transit window (t1, t4) in hours; found in the white light when None.

    Returns
    -------
    TraceResult
    """
    time_h = np.asarray(time_s, np.float64) / 3600.0
    good, bits = usable_mask(flux, var, flags)
    n_input_bad = int(np.count_nonzero(~good))
    outliers = flag_outliers(flux, good, cfg.robust.window_frames, cfg.robust.sigma, cfg.robust.maxiters)
    good &= ~outliers
    metrics: dict = {}
    if window_h is None:
        white, white_w = white_light(flux, var, good)
        est = estimate_transit(time_h, np.nan_to_num(white, nan=1.0), white_w, nbins=cfg.transit_mask.nbins)
        window_h = (est.t0_h - est.t14_h / 2, est.t0_h + est.t14_h / 2)
        metrics.update(transit_snr=est.snr, transit_t0_h=est.t0_h)
    oot = ~window_mask(time_h, window_h[0], window_h[1], cfg.transit_mask.pad_frac)
    spectrum = oot_spectrum(flux, good, oot)
    continuum, rejected = fit_continuum(wavelength_um, spectrum, cfg.along_wavelength, cfg.robust.sigma,
                                        cfg.robust.maxiters)
    design, finite_regressors = time_design(time_h, oot, cfg.along_time, centroid_x, centroid_y)
    y = flux / continuum[None, :]
    y_var = var / continuum[None, :] ** 2
    typical_var = _nanmedian(np.where(good, y_var, np.nan), axis=0)
    weight_var = np.where(good & (y_var > 0), y_var, typical_var[None, :])
    fit_w = np.where(good & oot[:, None] & finite_regressors[:, None] & (weight_var > 0),
                     1.0 / np.where(weight_var > 0, weight_var, 1.0), 0.0)
    trend, n_fit = fit_trend(y, fit_w, design)
    scale = continuum[None, :] * trend
    bad_scale = ~np.isfinite(scale) | (scale <= 0)
    bits |= np.where(bad_scale, np.uint16(DQ.NONFINITE), np.uint16(0)).astype(np.uint16)
    bits |= np.where(outliers, np.uint16(DQ.OUTLIER), np.uint16(0)).astype(np.uint16)
    out_flags = (np.asarray(flags).astype(np.uint16) | bits).astype(np.uint16)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(bad_scale, np.nan, flux / scale)
        err = np.where(bad_scale, np.nan, np.sqrt(np.clip(var, 0, None)) / scale)
    metrics.update(_trace_metrics(norm, err, out_flags, oot, time_h, design.shape[1], n_fit, spectrum, continuum,
                                  rejected, n_input_bad, int(outliers.sum())))
    metrics.update(transit_t1_h=float(window_h[0]), transit_t4_h=float(window_h[1]))
    return TraceResult(norm, err, scale, continuum, out_flags, oot, (float(window_h[0]), float(window_h[1])), metrics)


def _trace_metrics(norm: np.ndarray, err: np.ndarray, flags: np.ndarray, oot: np.ndarray, time_h: np.ndarray,
                   n_params: int, n_fit: np.ndarray, spectrum: np.ndarray, continuum: np.ndarray,
                   rejected: np.ndarray, n_input_bad: int, n_outliers: int) -> dict:
    """QC numbers of a normalised trace (see :class:`TraceStage`)."""
    good = flags == 0
    use = good & oot[:, None]
    oot_values = norm[use]
    median = float(np.median(oot_values)) if oot_values.size else float("nan")
    masked = np.where(use, norm, np.nan)
    chan_std = _mad_std_columns(masked)
    chan_err = _nanmedian(np.where(use, err, np.nan), axis=0)
    oot_idx = np.flatnonzero(oot)
    dt_h = float(np.median(np.diff(time_h))) if time_h.size > 1 else 1.0
    z = (masked[oot_idx] - _nanmedian(masked, axis=0)) / np.where(chan_err > 0, chan_err, np.nan)
    beta = red_noise_beta(z, dt_h)
    ratio = chan_std / chan_err
    cont_resid = spectrum / continuum - 1.0
    return {
        "n_frames": int(norm.shape[0]),
        "n_channels": int(norm.shape[1]),
        "oot_frac": float(oot.mean()),
        "n_input_flagged": n_input_bad,
        "n_outliers": n_outliers,
        "invalid_frac": float(np.count_nonzero(~good) / good.size),
        "norm_oot_median": median,
        "norm_median_offset": abs(median - 1.0),
        "oot_std_ppm": float(np.nanmedian(chan_std) * 1e6),
        "oot_err_ppm": float(np.nanmedian(chan_err) * 1e6),
        "detrend_noise_ratio": float(np.nanmedian(ratio)),
        "detrend_red_noise_beta": float(np.median(beta)),
        "detrend_n_params": int(n_params),
        "detrend_dof_fraction": float(n_params / max(int(np.median(n_fit)), 1)),
        "continuum_rms": float(mad_std(cont_resid[np.isfinite(cont_resid)])) if np.isfinite(cont_resid).any()
        else float("nan"),
        "continuum_rejected_channels": int(rejected.sum()),
        "n_nonfinite": int(np.count_nonzero(good & ~np.isfinite(norm))),
    }


# ---------------------------------------------------------------------------
# stage
# ---------------------------------------------------------------------------


def _ephemeris_window(cfg: TraceConfig, ctx: StageContext) -> tuple[float, float]:
    """Transit window (t1, t4) in hours from calib.phase's ephemeris and the star-info orbit."""
    key = "calib.trace.transit_mask.method"
    ephemeris, time_cfg = ctx.config("phase.ephemeris"), ctx.config("phase.time")
    if ephemeris is None or ephemeris.t0 is None:
        raise ConfigError(key, "ephemeris", "needs calib.phase.ephemeris.t0 (the mid-transit time)")
    info = ctx.planet.star_info() if ctx.planet is not None else None
    if not info:
        raise ConfigError(key, "ephemeris", "needs the planet's star info (P, sma, i) for the transit duration")
    t0_h = float(unit_to_hours(ephemeris.t0, ephemeris.t0_unit, time_cfg.start_epoch))
    period = ephemeris.period_days if ephemeris.source == "config" else info["P"]
    t14, _ = transit_durations(float(period), float(info["sma"]), float(info["i"]), cfg.transit_mask.radius_ratio)
    return t0_h - t14 / 2, t0_h + t14 / 2


class TraceStage(Stage):
    """Trace normalisation (``photometry`` -> ``trace_norm``).

    Metrics: ``norm_oot_median`` (~1) and ``norm_median_offset``, ``invalid_frac``,
    ``oot_std_ppm`` (median over channels of the robust out-of-transit scatter),
    ``oot_err_ppm`` (median propagated error), the detrending indicators
    ``detrend_noise_ratio`` (scatter / propagated error), ``detrend_red_noise_beta``
    (time-averaging beta of the out-of-transit residuals: > ~1.3 means correlated
    noise left, i.e. an under-fit trend), ``detrend_n_params`` and
    ``detrend_dof_fraction`` (trend parameters per fitted frame: large means
    over-fitting), the transit window (``transit_t1_h``, ``transit_t4_h``,
    ``oot_frac``), ``continuum_rms`` and counts of flagged samples.
    Gates: ``norm_median_offset < median_tolerance``, ``invalid_frac <
    max_invalid_frac``, ``oot_frac >= min_oot_frac``.
    """

    info = INFO
    Config = TraceConfig

    def run(self, inp, cfg: TraceConfig, ctx: StageContext, writer) -> dict:
        fields = inp.fields
        flux = as_2d(fields["photometry_flux"])
        var = as_2d(fields["photometry_flux_var"])
        flags = as_2d(fields["photometry_flags"], dtype=np.uint16)
        time_s = np.asarray(fields["time_s"], np.float64)
        wavelength = np.asarray(fields["channel_wavelength_um"], np.float64).reshape(-1)
        check_series(self.name, cfg.validation, flux, var, flags, time_s, wavelength,
                     ("photometry_flux", "photometry_flux_var", "photometry_flags"))
        centroids = [np.asarray(fields[k], np.float64) if k in fields else None
                     for k in ("photometry_centroid_x", "photometry_centroid_y")]
        ctx.report(0.1, "masks and transit window")
        check_visit_span(time_s, ctx.planet)          # degenerate visits get a named cause (stages/coverage.py)
        window = _ephemeris_window(cfg, ctx) if cfg.transit_mask.method == "ephemeris" else None
        result = normalise_trace(flux, var, flags, time_s, wavelength, cfg, centroid_x=centroids[0],
                                 centroid_y=centroids[1], window_h=window)
        check_baseline(time_s, result.oot, result.window_h, cfg.transit_mask.method)
        ctx.report(0.9, "writing")
        writer.put("trace_flux_norm", result.flux_norm, "relative")
        writer.put("trace_flux_err", result.flux_err, "relative")
        writer.put("trace_flux_scale", result.scale, "electron")
        writer.put("trace_continuum", result.continuum, "electron")
        writer.put("trace_flags", result.flags, "bitmask (calib_core.dq.DQ)")
        writer.put("channel_grid", wavelength, "um")
        writer.put("time_s", time_s, "s")
        writer.put("oot_mask", result.oot, "bool")
        writer.meta.update(
            wavelength_order="ascending" if np.all(np.diff(wavelength) >= 0) else "as photometry",
            transit_window_h=list(result.window_h), transit_mask_method=cfg.transit_mask.method,
            trace_scale="trace_flux_norm = photometry_flux / trace_flux_scale; "
                        "trace_flux_scale = trace_continuum[None, :] * per-channel trend(t)",
        )
        return {**result.metrics, "transit_mask_method": cfg.transit_mask.method}

    def gates(self, metrics: dict, cfg: TraceConfig) -> list[Gate]:
        qc = cfg.quality_checks
        return [
            gate("norm_median_offset", metrics.get("norm_median_offset"), "<", qc.median_tolerance,
                 "out-of-transit median of the normalised flux should be 1"),
            gate("invalid_frac", metrics.get("invalid_frac"), "<", qc.max_invalid_frac,
                 "fraction of flagged samples (upstream, non-finite, outliers)"),
            gate("oot_frac", metrics.get("oot_frac"), ">=", qc.min_oot_frac,
                 "too few out-of-transit frames to fit the trend"),
        ]

    def diagnostics(self, output, metrics: dict, ctx: StageContext) -> list[Plot]:
        f = output.fields
        norm = np.asarray(f["trace_flux_norm"], np.float64)
        good = np.asarray(f["trace_flags"]) == 0
        time_h = np.asarray(f["time_s"], np.float64) / 3600.0
        wl = np.asarray(f["channel_grid"], np.float64)
        oot = np.asarray(f["oot_mask"], bool)
        masked = np.where(good, norm, np.nan)
        oot_masked = np.where(oot[:, None], masked, np.nan)
        white = block_mean(masked, 400, 1)[:, 0]
        time_b = block_mean(time_h[:, None], 400, 1)[:, 0]
        in_b = block_mean((~oot).astype(np.float64)[:, None], 400, 1)[:, 0] > 0.5
        level = _nanmedian(oot_masked * np.asarray(f["trace_flux_scale"], np.float64), axis=0)
        time_label = "time since visit start (h)"
        return [
            Image("Normalised flux (time x wavelength)", block_mean(masked, 400, 300).T, xlabel=time_label,
                  ylabel="wavelength (um)", clabel="normalised flux", x=(float(time_h.min()), float(time_h.max())),
                  y=(float(wl.min()), float(wl.max()))),
            Series("White light (mean of the normalised channels)", time_b, white, xlabel=time_label,
                   ylabel="normalised flux", label="white light",
                   overlay=[Series("", time_b[in_b], white[in_b], label="transit window")]),
            Series("Out-of-transit spectrum and continuum", wl, level, xlabel="wavelength (um)",
                   ylabel="electrons per frame", label="out-of-transit median",
                   overlay=[Series("", wl, np.asarray(f["trace_continuum"], np.float64), label="continuum")]),
            Series("Out-of-transit robust scatter per channel", wl, _mad_std_columns(oot_masked) * 1e6,
                   xlabel="wavelength (um)", ylabel="ppm", label="robust std"),
            histogram(oot_masked.ravel() - 1.0, bins=100, title="Out-of-transit normalised flux - 1",
                      xlabel="relative flux"),
        ]


STAGE = TraceStage()
