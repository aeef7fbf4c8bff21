"""The trace stage: a thin adapter over :mod:`.normalise` (masks, continuum, trend; see the package doc)."""

from __future__ import annotations

import numpy as np

from ...config.base import ConfigError
from ...diagnostics import Image, Plot, Series, histogram
from ...series import as_2d, block_mean, check_series
from ...timeutil import unit_to_hours
from ...transit import transit_durations
from ..base import Gate, Stage, StageContext, gate
from ..coverage import check_baseline, check_visit_span
from . import INFO
from .config import TraceConfig
from .masks import mad_std_columns, nanmedian
from .normalise import normalise_trace

__all__ = ["TraceStage", "STAGE"]


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
        level = nanmedian(oot_masked * np.asarray(f["trace_flux_scale"], np.float64), axis=0)
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
            Series("Out-of-transit robust scatter per channel", wl, mad_std_columns(oot_masked) * 1e6,
                   xlabel="wavelength (um)", ylabel="ppm", label="robust std"),
            histogram(oot_masked.ravel() - 1.0, bins=100, title="Out-of-transit normalised flux - 1",
                      xlabel="relative flux"),
        ]


STAGE = TraceStage()
