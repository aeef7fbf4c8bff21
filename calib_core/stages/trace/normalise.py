"""The trace stage on arrays: masks, transit window, continuum, trend, normalisation and its QC numbers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...dq import DQ
from ...robust import mad_std
from ...stages.errors import DataError
from ...transit import MIN_TRANSIT_SAMPLES, estimate_transit, red_noise_beta, window_mask
from .config import TraceConfig
from .continuum import fit_continuum
from .masks import flag_outliers, mad_std_columns, nanmedian, oot_spectrum, usable_mask, white_light
from .trend import fit_trend, time_design

__all__ = ["TraceResult", "normalise_trace"]


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
        _check_white_samples(white_w, outliers, n_input_bad, cfg)
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
    typical_var = nanmedian(np.where(good, y_var, np.nan), axis=0)
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
    metrics.update(trace_metrics(norm, err, out_flags, oot, time_h, design.shape[1], n_fit, spectrum, continuum,
                                  rejected, n_input_bad, int(outliers.sum())))
    metrics.update(transit_t1_h=float(window_h[0]), transit_t4_h=float(window_h[1]))
    return TraceResult(norm, err, scale, continuum, out_flags, oot, (float(window_h[0]), float(window_h[1])), metrics)


def trace_metrics(norm: np.ndarray, err: np.ndarray, flags: np.ndarray, oot: np.ndarray, time_h: np.ndarray,
                   n_params: int, n_fit: np.ndarray, spectrum: np.ndarray, continuum: np.ndarray,
                   rejected: np.ndarray, n_input_bad: int, n_outliers: int) -> dict:
    """QC numbers of a normalised trace (see :class:`TraceStage`)."""
    good = flags == 0
    use = good & oot[:, None]
    oot_values = norm[use]
    median = float(np.median(oot_values)) if oot_values.size else float("nan")
    masked = np.where(use, norm, np.nan)
    chan_std = mad_std_columns(masked)
    chan_err = nanmedian(np.where(use, err, np.nan), axis=0)
    oot_idx = np.flatnonzero(oot)
    dt_h = float(np.median(np.diff(time_h))) if time_h.size > 1 else 1.0
    z = (masked[oot_idx] - nanmedian(masked, axis=0)) / np.where(chan_err > 0, chan_err, np.nan)
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


def _check_white_samples(white_w: np.ndarray, outliers: np.ndarray, n_input_bad: int, cfg: TraceConfig) -> None:
    """Name the time-domain outlier filter when it leaves too few white-light samples to locate the transit.

    On a sparse cadence the running median of ``robust.window_frames`` frames
    spans ingress or egress, so in-transit frames can look like outliers.
    """
    n_usable = int(np.count_nonzero(np.asarray(white_w) > 0))
    if n_usable >= MIN_TRANSIT_SAMPLES or not outliers.any():
        return
    raise DataError(f"white-light curve has {n_usable} usable samples of {white_w.size}; at least "
                    f"{MIN_TRANSIT_SAMPLES} are needed to locate the transit: the time-domain outlier filter "
                    f"(calib.trace.robust.window_frames = {cfg.robust.window_frames}, "
                    f"calib.trace.robust.sigma = {cfg.robust.sigma}) rejected {int(np.count_nonzero(outliers))} "
                    f"of {outliers.size} samples and {n_input_bad} were unusable upstream (its running median "
                    f"assumes ingress and egress span many frames, which a sparse cadence breaks): raise "
                    f"calib.trace.robust.sigma")
