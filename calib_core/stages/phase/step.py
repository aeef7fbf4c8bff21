"""The phase stage: ephemeris, fold, contact-point windows and binning (the method is in the package doc)."""

from __future__ import annotations

import enum
import math
import warnings
from dataclasses import dataclass

import numpy as np

from ...config.base import ConfigError
from ...diagnostics import Image, Plot, Series, histogram
from ...series import as_2d, block_mean, check_series
from ...timeutil import hours_to_unit, unit_label, unit_to_hours
from ...transit import Geometry, TransitEstimate, estimate_transit, time_bin
from ..base import Gate, Stage, StageContext, gate
from . import INFO
from .config import EphemerisConfig, PhaseConfig

__all__ = ["MAX_PLOT_POINTS", "PhaseFlag", "Binned", "fold_phase", "bin_edges", "bin_series", "bin_flags", "coverage",
           "white_from_series", "resolve_period", "PhaseStage", "STAGE"]


#: plot arrays are averaged down to at most this many phase points
MAX_PLOT_POINTS = 400


class PhaseFlag(enum.IntFlag):
    """Bits of ``phase_flags`` (nonzero = do not use the bin)."""

    EMPTY = 1 << 0        #: no finite, unflagged sample in the bin
    LOW_COUNT = 1 << 1    #: fewer than ``binning.min_count`` samples


# ---------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------


def fold_phase(time_h: np.ndarray, t0_h: float, period_d: float, wrap_phase: float = 0.5,
               normalize: bool = True) -> np.ndarray:
    """Fold times on an ephemeris (astropy ``TimeSeries.fold`` semantics).

    Parameters
    ----------
    time_h : numpy.ndarray
        Times, hours since the visit start.
    t0_h : float
        Epoch (mid-transit), same time axis.
    period_d : float
        Period, days.
    wrap_phase : float
        Phases wrap into ``[wrap_phase - 1, wrap_phase)`` cycles.
    normalize : bool
        Return cycles (True) or hours from mid-transit (False).

    Returns
    -------
    numpy.ndarray
        Phase of every time stamp.
    """
    period_h = 24.0 * period_d
    wrap_h = wrap_phase * period_h
    rel = np.mod(np.asarray(time_h, np.float64) - t0_h + (period_h - wrap_h), period_h) - (period_h - wrap_h)
    return rel / period_h if normalize else rel


def bin_edges(phase: np.ndarray, nbins: int) -> np.ndarray:
    """``nbins + 1`` equal-width edges over ``[min(phase), max(phase)]`` (finite phases)."""
    finite = phase[np.isfinite(phase)]
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        hi = lo + 1e-9
    return lo + (hi - lo) * np.arange(nbins + 1) / nbins


@dataclass
class Binned:
    """Binned light curves (arrays (M, C) unless stated)."""

    centres: np.ndarray     #: (M,)
    edges: np.ndarray       #: (M + 1,)
    flux: np.ndarray
    err: np.ndarray
    count: np.ndarray       #: int32, usable samples per bin


def _padded(values: np.ndarray, usable: np.ndarray, bins: np.ndarray, nbins: int) -> np.ndarray:
    """Scatter samples into an (nbins, max_per_bin, C) array, NaN where absent or unusable."""
    order = np.argsort(bins, kind="stable")
    sorted_bins = bins[order]
    counts = np.bincount(sorted_bins, minlength=nbins)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    slot = np.arange(sorted_bins.size) - starts[sorted_bins]
    out = np.full((nbins, max(int(counts.max()), 1), values.shape[1]), np.nan)
    out[sorted_bins, slot] = np.where(usable[order], values[order], np.nan)
    return out


def bin_series(phase: np.ndarray, flux: np.ndarray, err: np.ndarray, good: np.ndarray, edges: np.ndarray,
               aggregator: str = "mean", error: str = "max") -> Binned:
    """Bin light curves in phase (vectorised over bins and channels).

    Parameters
    ----------
    phase : numpy.ndarray
        (B,) phases.
    flux, err : numpy.ndarray
        (B, C) normalised flux and its 1-sigma error.
    good : numpy.ndarray
        (B, C) unflagged samples; only those with finite flux and error count.
    edges : numpy.ndarray
        (M + 1,) increasing bin edges; samples outside are ignored; the last bin is closed.
    aggregator : {"mean", "median"}
        Per-bin flux statistic.
    error : {"propagated", "scatter", "max"}
        Per-bin error (module doc).

    Returns
    -------
    Binned
    """
    nbins = edges.size - 1
    inside = np.isfinite(phase) & (phase >= edges[0]) & (phase <= edges[-1])
    bins = np.clip(np.searchsorted(edges, phase[inside], side="right") - 1, 0, nbins - 1)
    usable = (good & np.isfinite(flux) & np.isfinite(err))[inside]
    f = _padded(flux[inside], usable, bins, nbins)
    e = _padded(err[inside], usable, bins, nbins)
    count = np.isfinite(f).sum(axis=1).astype(np.int32)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        value = np.nanmean(f, axis=1) if aggregator == "mean" else np.nanmedian(f, axis=1)
        propagated = np.sqrt(np.nansum(e * e, axis=1)) / count
        scatter = np.where(count >= 2, np.nanstd(f, axis=1, ddof=1) / np.sqrt(count), np.nan)
    chosen = {"propagated": propagated, "scatter": scatter, "max": np.fmax(propagated, scatter)}[error]
    if aggregator == "median":
        chosen = chosen * math.sqrt(math.pi / 2)
    chosen = np.where(count > 0, chosen, np.nan)
    return Binned(0.5 * (edges[:-1] + edges[1:]), edges, np.where(count > 0, value, np.nan), chosen, count)


def bin_flags(count: np.ndarray, min_count: int) -> np.ndarray:
    """:class:`PhaseFlag` bits (uint16) from per-bin sample counts."""
    flags = np.where(count == 0, int(PhaseFlag.EMPTY), 0)
    flags |= np.where((count > 0) & (count < min_count), int(PhaseFlag.LOW_COUNT), 0)
    return flags.astype(np.uint16)


def coverage(count: np.ndarray, centres: np.ndarray, window: tuple[float, float], min_count: int) -> tuple[float, float]:
    """Fraction of bins with at least ``min_count`` samples (channel median), overall and inside ``window``.

    Returns NaN for the in-window fraction when no bin centre falls in the window.
    """
    covered = np.median(count, axis=1) >= min_count
    inside = (centres >= window[0]) & (centres <= window[1])
    return float(covered.mean()), float(covered[inside].mean()) if inside.any() else float("nan")


def white_from_series(flux: np.ndarray, err: np.ndarray, good: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-variance weighted mean over channels: white flux (B,) and its inverse variance (B,)."""
    use = good & np.isfinite(flux) & np.isfinite(err) & (err > 0)
    w = np.where(use, 1.0 / np.where(use, err, 1.0) ** 2, 0.0)
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        white = np.where(total > 0, (w * np.where(use, flux, 0.0)).sum(axis=1) / total, np.nan)
    return white, total


def resolve_period(cfg: EphemerisConfig, star_info: dict | None) -> float:
    """Orbital period in days from the configured source.

    Raises
    ------
    ConfigError
        ``source: star_info`` without star info for the planet.
    """
    if cfg.source == "config":
        return float(cfg.period_days)
    if not star_info or not np.isfinite(star_info.get("P", np.nan)):
        raise ConfigError("calib.phase.ephemeris.source", "star_info",
                          "the planet has no star info period; use source: config with "
                          "calib.phase.ephemeris.period_days")
    return float(star_info["P"])


def _windows_h(cfg: PhaseConfig, t0_h: float, period_d: float, star_info: dict | None,
               estimate: TransitEstimate) -> tuple[np.ndarray, str]:
    """Contact times t1..t4 (hours) and the method used."""
    known_orbit = bool(star_info) and all(np.isfinite(star_info.get(k, np.nan)) for k in ("sma", "i"))
    method = cfg.windows.method
    if method == "auto":
        method = "geometry" if known_orbit else "estimate"
    if method == "geometry":
        if not known_orbit:
            raise ConfigError("calib.phase.windows.method", "geometry", "needs star info (sma, i) for the planet")
        geometry = Geometry(t0_h, period_d, float(star_info["sma"]), float(star_info["i"]))
        return geometry.contact_times(math.sqrt(max(estimate.depth, 1e-8))), method
    return estimate.contact_times - estimate.t0_h + t0_h, method


# ---------------------------------------------------------------------------
# stage
# ---------------------------------------------------------------------------


class PhaseStage(Stage):
    """Phase alignment (``trace_norm`` -> ``phase_fold``).

    Outputs: ``phase_series`` (B,), ``time`` (B,) in ``time.unit``, ``binned_phase``
    (M,) bin centres, ``binned_edges`` (M+1,), ``binned_flux``, ``binned_flux_err``,
    ``binned_count`` (M, C), ``phase_flags`` (M, C), ``windows`` (4,) phases of
    t1..t4, ``channel_grid`` (C,) um; meta ``t0_hours``, ``t0`` (in ``time.unit``), ``period_days``,
    ``phase_unit``, ``time_unit``.
    Metrics: the ephemeris (``t0_h``, ``t0_source``, ``t0_estimate_h`` and its
    error, ``t0_offset_h``, ``period_days``), ``windows_h``, ``coverage_frac``,
    ``in_transit_coverage``, ``empty_bins``, ``median_count``.
    Gates: ``coverage_frac >= min_coverage``, ``in_transit_coverage >=
    min_in_transit_coverage``, ``t0_offset_h < max_t0_offset_h``.
    """

    info = INFO
    Config = PhaseConfig

    def run(self, inp, cfg: PhaseConfig, ctx: StageContext, writer) -> dict:
        f = inp.fields
        flux, err = as_2d(f["trace_flux_norm"]), as_2d(f["trace_flux_err"])
        flags = as_2d(f["trace_flags"], dtype=np.uint16)
        grid = np.asarray(f["channel_grid"], np.float64).reshape(-1)
        time_s = np.asarray(f["time_s"], np.float64)
        check_series(self.name, cfg.validation, flux, err, flags, time_s, grid,
                     ("trace_flux_norm", "trace_flux_err", "trace_flags"))
        good = flags == 0
        time_h = time_s / 3600.0
        star_info = ctx.planet.star_info() if ctx.planet is not None else None
        period_d = resolve_period(cfg.ephemeris, star_info)
        white, white_w = white_from_series(flux, err, good)
        estimate = estimate_transit(time_h, np.nan_to_num(white, nan=1.0), white_w)
        if cfg.ephemeris.t0 is None:
            t0_h, t0_source = estimate.t0_h, "white-light fit"
        else:
            t0_h = float(unit_to_hours(cfg.ephemeris.t0, cfg.ephemeris.t0_unit, cfg.time.start_epoch))
            t0_source = "config"
        ctx.report(0.3, "folding")
        contacts_h, windows_method = _windows_h(cfg, t0_h, period_d, star_info, estimate)
        norm = cfg.fold.normalize_phase
        phase = fold_phase(time_h, t0_h, period_d, cfg.fold.wrap_phase, norm)
        windows = fold_phase(contacts_h, t0_h, period_d, cfg.fold.wrap_phase, norm)
        edges = bin_edges(phase, cfg.binning.nbins)
        binned = bin_series(phase, flux, err, good, edges, cfg.binning.aggregator, cfg.binning.error)
        flags = bin_flags(binned.count, cfg.binning.min_count)
        cov_all, cov_in = coverage(binned.count, binned.centres, (windows[0], windows[3]), cfg.binning.min_count)
        ctx.report(0.8, "writing")
        phase_unit = "cycles" if norm else "h"
        writer.put("phase_series", phase, phase_unit)
        writer.put("time", hours_to_unit(time_h, cfg.time.unit, cfg.time.start_epoch), cfg.time.unit)
        writer.put("binned_phase", binned.centres, phase_unit)
        writer.put("binned_edges", binned.edges, phase_unit)
        writer.put("binned_flux", binned.flux, "relative")
        writer.put("binned_flux_err", binned.err, "relative")
        writer.put("binned_count", binned.count, "samples")
        writer.put("phase_flags", flags, "bitmask (calib_core.stages.phase.PhaseFlag)")
        writer.put("windows", windows, phase_unit)
        writer.put("channel_grid", grid, "um")
        writer.meta.update(
            t0_hours=t0_h, t0=float(hours_to_unit(t0_h, cfg.time.unit, cfg.time.start_epoch)),
            time_unit=cfg.time.unit, time_label=unit_label(cfg.time.unit), start_epoch=cfg.time.start_epoch, period_days=period_d,
            phase_unit=phase_unit, wrap_phase=cfg.fold.wrap_phase, binning_error=cfg.binning.error,
            aggregator=cfg.binning.aggregator,
        )
        return {
            "t0_h": t0_h,
            "t0_source": t0_source,
            "t0_estimate_h": estimate.t0_h,
            "t0_estimate_err_h": estimate.t0_err_h,
            "t0_offset_h": abs(t0_h - estimate.t0_h),
            "period_days": period_d,
            "period_source": cfg.ephemeris.source,
            "windows_h": [float(v) for v in contacts_h],
            "windows_method": windows_method,
            "transit_snr": estimate.snr,
            "nbins": int(cfg.binning.nbins),
            "coverage_frac": cov_all,
            "in_transit_coverage": cov_in,
            "empty_bins": int(np.count_nonzero(np.all(binned.count == 0, axis=1))),
            "median_count": float(np.median(binned.count)),
            "phase_unit": phase_unit,
        }

    def gates(self, metrics: dict, cfg: PhaseConfig) -> list[Gate]:
        qc = cfg.quality_checks
        return [
            gate("coverage_frac", metrics.get("coverage_frac"), ">=", qc.min_coverage,
                 f"bins with >= {cfg.binning.min_count} usable samples"),
            gate("in_transit_coverage", metrics.get("in_transit_coverage"), ">=", qc.min_in_transit_coverage,
                 "in-transit bins with enough samples"),
            gate("t0_offset_h", metrics.get("t0_offset_h"), "<", qc.max_t0_offset_h,
                 "t0 used vs the white-light transit centre: check the ephemeris and time units"),
        ]

    def diagnostics(self, output, metrics: dict, ctx: StageContext) -> list[Plot]:
        f = output.fields
        unit = output.meta.get("phase_unit", "cycles")
        centres = np.asarray(f["binned_phase"], np.float64)
        flux = np.asarray(f["binned_flux"], np.float64)
        err = np.asarray(f["binned_flux_err"], np.float64)
        wl = np.asarray(f["channel_grid"], np.float64)
        flags = np.asarray(f["phase_flags"])
        good = flags == 0
        note = ""
        if not good.any():
            # sparse data (every bin below binning.min_count): show the low-count bins rather than nothing
            good = (flags & int(PhaseFlag.EMPTY)) == 0
            note = " - no bin reaches binning.min_count; low-count bins shown"
        white, white_w = white_from_series(flux, err, good)
        x, y, w, _ = time_bin(centres, white[:, None], white_w[:, None], min(centres.size, MAX_PLOT_POINTS))
        with np.errstate(divide="ignore"):
            yerr = np.where(w[:, 0] > 0, 1.0 / np.sqrt(w[:, 0]), np.nan)
        windows = np.asarray(f["windows"], np.float64)
        lo, hi = float(np.nanmin(white)), float(np.nanmax(white))
        lines = [Series("", [v, v], [lo, hi], label=f"t{i + 1}") for i, v in enumerate(windows)]
        xlabel = f"phase ({unit} from mid-transit)"
        count = np.median(np.asarray(f["binned_count"]), axis=1)
        return [
            Series("Binned white light (weighted mean of channels)" + note, x, y[:, 0], xlabel=xlabel,
                   ylabel="normalised flux", yerr=yerr, label="binned", overlay=lines),
            Image("Binned flux (phase x wavelength)", block_mean(np.where(good, flux, np.nan), MAX_PLOT_POINTS, 300).T,
                  xlabel=xlabel, ylabel="wavelength (um)", clabel="normalised flux",
                  x=(float(centres[0]), float(centres[-1])), y=(float(wl.min()), float(wl.max()))),
            Series("Usable samples per bin (channel median)", block_mean(centres[:, None], MAX_PLOT_POINTS, 1)[:, 0],
                   block_mean(count[:, None], MAX_PLOT_POINTS, 1)[:, 0], xlabel=xlabel, ylabel="samples",
                   label="count"),
            histogram(count, bins=50, title="Samples per bin", xlabel="samples", log=False),
        ]


STAGE = PhaseStage()
