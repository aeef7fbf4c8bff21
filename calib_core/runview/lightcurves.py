"""Per-channel light curves of a run: raw, detrended, phase-folded, with the depths stage's transit model."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..series import as_2d
from ..stages.errors import DataError
from ..store import StoredOutput
from ..transit import Geometry, light_curve, time_bin
from .reading import load_stage_output, read_qc

__all__ = ["FOLD_BINS", "LightCurves", "channel_at", "channel_grid", "light_curves", "lightcurve_plots",
           "nearest_channel"]

#: points of the phase-binned curve shown over the unbinned samples
FOLD_BINS = 120


@dataclass
class LightCurves:
    """Light curves of one channel, or of channels ``first..last`` averaged, of one instrument.

    Time series are (B,) over the visit; ``fold_*`` are the phase-binned curve (M,).
    """

    instrument: str
    first: int                   #: first channel (index into the trace stage's channel grid)
    last: int                    #: last channel (inclusive)
    wavelength_um: tuple[float, float]
    time_h: np.ndarray           #: hours since the visit start
    raw: np.ndarray              #: electrons per sample (photometry flux = detrended * trend)
    trend: np.ndarray            #: electrons: the trace stage's continuum x time trend
    detrended: np.ndarray        #: relative flux (trace_flux_norm)
    err: np.ndarray              #: 1-sigma of ``detrended``
    good: np.ndarray             #: bool: unflagged, finite samples
    phase: np.ndarray            #: phase of each sample (``phase_unit``)
    phase_unit: str              #: "h" (from mid-transit) or "cycles"
    model: np.ndarray            #: transit model x fitted baseline, relative flux
    transit: np.ndarray          #: transit model alone (1 out of transit)
    residual: np.ndarray         #: detrended - model (relative), NaN where not good
    depth: float                 #: (Rp/Rs)^2 of the depths stage (weighted mean over a range)
    depth_err: float
    fold_phase: np.ndarray = field(default_factory=lambda: np.empty(0))
    fold_flux: np.ndarray = field(default_factory=lambda: np.empty(0))
    fold_err: np.ndarray = field(default_factory=lambda: np.empty(0))
    fold_model: np.ndarray = field(default_factory=lambda: np.empty(0))

    @property
    def label(self) -> str:
        lo, hi = self.wavelength_um
        chans = f"channel {self.first}" if self.first == self.last else f"channels {self.first}-{self.last}"
        where = f"{lo:.3f} um" if self.first == self.last else f"{lo:.3f}-{hi:.3f} um"
        return f"{self.instrument} {chans} ({where})"

    @property
    def residual_rms(self) -> float:
        """Standard deviation of the good residuals (relative flux)."""
        r = self.residual[self.good]
        return float(np.std(r)) if r.size > 1 else float("nan")

    @property
    def residual_chi2_red(self) -> float:
        """Mean of (residual / err)^2 over the good samples."""
        z = self.residual[self.good] / self.err[self.good]
        return float(np.mean(z * z)) if z.size else float("nan")


def _depth_rows(depths: StoredOutput, instrument: str, grid: np.ndarray) -> np.ndarray:
    """Row of the depths output for every channel of ``grid`` (matched by wavelength)."""
    f = depths.fields
    insts = list(depths.meta.get("instruments", []))
    if instrument not in insts:
        raise DataError(f"{depths.path}: no depths for {instrument} (instruments {insts})")
    rows = np.flatnonzero(np.asarray(f["instrument"]) == insts.index(instrument))
    wl = np.asarray(f["wavelength_um"], np.float64)[rows]
    order = np.argsort(wl, kind="stable")
    pos = np.clip(np.searchsorted(wl[order], grid), 0, wl.size - 1)
    lower = np.clip(pos - 1, 0, wl.size - 1)
    nearest = np.where(np.abs(wl[order][lower] - grid) < np.abs(wl[order][pos] - grid), lower, pos)
    matched = rows[order][nearest]
    if not np.allclose(np.asarray(f["wavelength_um"], np.float64)[matched], grid, rtol=1e-6, atol=1e-9):
        raise DataError(f"{depths.path}: {instrument} wavelengths do not match the trace stage's channel grid")
    return matched


def _baseline_fit(time_h: np.ndarray, y: np.ndarray, w: np.ndarray, transit: np.ndarray, degree: int) -> np.ndarray:
    """Weighted least-squares baseline (Legendre in time, ``degree``) of ``y ~ baseline(t) * transit``."""
    from ..stages.depths.curves import baseline_design

    design = baseline_design(time_h, degree) * transit[:, None]
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)
    return baseline_design(time_h, degree) @ coef


def light_curves(run_dir: str | Path, instrument: str, first: int, last: int | None = None) -> LightCurves:
    """Raw, detrended and phase-folded light curve of channel ``first`` (or channels ``first..last``) with its model.

    Parameters
    ----------
    run_dir : str or pathlib.Path
        A finished run directory (``qc.json`` and the trace, phase and depths outputs).
    instrument : str
        ``AIRS-CH0`` or ``FGS1``.
    first, last : int
        Channel indices into the trace stage's channel grid (ascending wavelength); a range is averaged
        with inverse-variance weights fixed per channel (median over time), and its model is the mean
        of the channel models with the same weights.

    Returns
    -------
    LightCurves

    Raises
    ------
    DataError
        The run lacks one of the outputs, or the channel range is outside the grid.

    Notes
    -----
    The model is the depths stage's batman transit (shared geometry, the channel's depth and limb
    darkening) times a baseline refitted here by weighted least squares (Legendre polynomial of the
    depths stage's ``fit.baseline_degree`` in time), so the residuals are those of the detrended
    light curve about the fitted transit.
    """
    root = Path(run_dir).expanduser().resolve()
    qc = read_qc(root)
    trace = load_stage_output(root, "trace", instrument, qc)
    phase_out = load_stage_output(root, "phase", instrument, qc)
    depths = load_stage_output(root, "depths", None, qc)
    f = trace.fields
    norm = as_2d(f["trace_flux_norm"]).astype(np.float64)
    err = as_2d(f["trace_flux_err"]).astype(np.float64)
    scale = np.asarray(f["trace_flux_scale"], np.float64)
    scale = np.broadcast_to(scale.reshape(scale.shape[0], -1) if scale.ndim > 1 else scale[None, :], norm.shape)
    flags = as_2d(f["trace_flags"], dtype=np.uint16)
    grid = np.asarray(f["channel_grid"], np.float64).reshape(-1)
    n_chan = grid.size
    last = first if last is None else last
    if not (0 <= int(first) <= int(last) < n_chan):
        raise DataError(f"{instrument}: channels {first}..{last} outside 0..{n_chan - 1}")
    first, last = int(first), int(last)
    sel = slice(first, last + 1)
    time_h = np.asarray(f["time_s"], np.float64) / 3600.0
    good_all = (flags == 0) & np.isfinite(norm) & np.isfinite(err) & (err > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ivar = np.where(good_all, 1.0 / np.where(good_all, err, 1.0) ** 2, np.nan)
        v = np.nan_to_num(np.nanmedian(ivar[:, sel], axis=0))
    if not np.any(v > 0):
        raise DataError(f"{instrument}: channels {first}..{last} have no usable sample")
    v = v / v.sum()
    g = good_all[:, sel]
    vv = np.where(g, v[None, :], 0.0)
    total = vv.sum(axis=1)
    good = total > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        detrended = np.where(good, (vv * np.where(g, norm[:, sel], 0.0)).sum(axis=1) / total, np.nan)
        e = np.where(good, np.sqrt((vv ** 2 * np.where(g, err[:, sel], 0.0) ** 2).sum(axis=1)) / total, np.nan)
        # raw electrons of the channels summed (one channel: exactly the photometry flux); the trend likewise
        raw = np.where(good & g.all(axis=1), (norm[:, sel] * scale[:, sel]).sum(axis=1), np.nan)
        trend = scale[:, sel].sum(axis=1)
    # the depths stage: geometry of the white-light fit, depth and limb darkening per channel
    rows = _depth_rows(depths, instrument, grid)[sel]
    d = depths.fields
    mu, sigma = (np.asarray(d[k], np.float64)[rows] for k in ("mu", "sigma"))
    u1, u2 = (np.asarray(d[k], np.float64)[rows] for k in ("u1", "u2"))
    geo = depths.meta.get("geometry") or {}
    try:
        geometry = Geometry(float(geo["t0_h"]), float(geo["period_d"]), float(geo["a_rs"]), float(geo["inc_deg"]))
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{depths.path}: meta.json has no complete geometry (t0_h, period_d, a_rs, inc_deg)") from None
    usable = np.isfinite(mu) & (mu > 0) & np.isfinite(u1) & np.isfinite(u2)
    if not usable.any():
        raise DataError(f"{instrument}: channels {first}..{last} have no fitted depth")
    weights = np.where(usable, v, 0.0)
    weights = weights / weights.sum()
    curves = light_curve(time_h, geometry, np.where(usable, mu, mu[usable][0]), np.where(usable, u1, 0.0),
                         np.where(usable, u2, 0.0))
    transit = curves @ weights
    degree = _baseline_degree(root)
    w = np.where(good, 1.0 / np.where(good, e, 1.0) ** 2, 0.0)
    baseline = _baseline_fit(time_h, np.where(good, detrended, 0.0), w, transit, degree)
    model = baseline * transit
    residual = np.where(good, detrended - model, np.nan)
    depth = float(weights @ np.where(usable, mu, 0.0))
    depth_err = float(math.sqrt(np.sum((weights * np.where(usable, sigma, 0.0)) ** 2)))
    phase = np.asarray(phase_out.fields["phase_series"], np.float64)
    if phase.size != time_h.size:
        raise DataError(f"{phase_out.path}: phase_series has {phase.size} samples, the trace stage {time_h.size}")
    lc = LightCurves(instrument, first, last, (float(grid[first]), float(grid[last])), time_h, raw, trend,
                     detrended, e, good, phase, str(phase_out.meta.get("phase_unit", "cycles")),
                     model, transit, residual, depth, depth_err)
    _fold(lc, baseline)
    return lc


def _baseline_degree(root: Path) -> int:
    try:
        cfg = yaml.safe_load((root / "config.yaml").read_text())
        return int(cfg["calib"]["depths"]["fit"]["baseline_degree"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return 1


def _fold(lc: LightCurves, baseline: np.ndarray) -> None:
    """Phase-binned flux divided by its baseline, and the transit model in the same bins."""
    order = np.argsort(lc.phase, kind="stable")
    phase = lc.phase[order]
    flat = np.where(lc.good, lc.detrended / baseline, np.nan)[order]
    w = np.where(lc.good, (baseline / np.where(lc.good, lc.err, 1.0)) ** 2, 0.0)[order]
    stacked = np.column_stack([np.nan_to_num(flat), lc.transit[order]])
    ww = np.column_stack([w, np.ones_like(w)])
    t, ys, ws, _ = time_bin(phase, stacked, ww, min(FOLD_BINS, phase.size))
    with np.errstate(divide="ignore"):
        lc.fold_err = np.where(ws[:, 0] > 0, 1.0 / np.sqrt(ws[:, 0]), np.nan)
    lc.fold_phase, lc.fold_flux, lc.fold_model = t, np.where(ws[:, 0] > 0, ys[:, 0], np.nan), ys[:, 1]


def lightcurve_plots(lc: LightCurves) -> list:
    """Typed plot data (:mod:`calib_core.diagnostics`) of :func:`light_curves`: raw, detrended, folded, residuals."""
    from ..diagnostics import Series

    t = lc.time_h
    hours = "time since visit start (h)"
    unit = "h from mid-transit" if lc.phase_unit == "h" else "cycles from mid-transit"
    good = lc.good
    rms_ppm = lc.residual_rms * 1e6
    return [
        Series("Raw flux and trend", t[good], lc.raw[good], xlabel=hours, ylabel="electrons",
               label="raw", style="points",
               overlay=[Series("", t, lc.trend, label="trend")]),
        Series("Detrended flux and transit model",
               t[good], lc.detrended[good], xlabel=hours, ylabel="normalised flux", label="detrended",
               style="points", overlay=[Series("", t, lc.model, label="model")]),
        Series(f"Phase-folded ({lc.fold_phase.size} bins), baseline removed", lc.fold_phase, lc.fold_flux,
               xlabel=f"phase ({unit})", ylabel="normalised flux", yerr=lc.fold_err, label="binned",
               style="points", overlay=[Series("", lc.fold_phase, lc.fold_model, label="model")]),
        Series(f"Residuals (rms {rms_ppm:.0f} ppm, chi2_red {lc.residual_chi2_red:.2f})", t[good],
               lc.residual[good] * 1e6, xlabel=hours, ylabel="data - model (ppm)", label="residual",
               style="points"),
    ]


def channel_grid(run_dir: str | Path, instrument: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(wavelength_um, mu, sigma)`` of ``instrument``'s channels in the trace stage's order (channel index).

    Raises
    ------
    DataError
        The run has no trace or depths output for the instrument.
    """
    root = Path(run_dir).expanduser().resolve()
    qc = read_qc(root)
    trace = load_stage_output(root, "trace", instrument, qc)
    depths = load_stage_output(root, "depths", None, qc)
    grid = np.asarray(trace.fields["channel_grid"], np.float64).reshape(-1)
    rows = _depth_rows(depths, instrument, grid)
    return grid, np.asarray(depths.fields["mu"], np.float64)[rows], np.asarray(depths.fields["sigma"], np.float64)[rows]


def channel_at(run_dir: str | Path, wavelength_um: float) -> tuple[str, int]:
    """``(instrument, channel index)`` of the channel nearest to ``wavelength_um`` over every instrument of the run.

    Raises
    ------
    DataError
        The run has no trace/depths output for any instrument, or the wavelength is not finite.
    """
    root = Path(run_dir).expanduser().resolve()
    qc = read_qc(root)
    best: tuple[float, str, int] | None = None
    for inst in qc["stages"].get("trace", {}):
        try:
            grid, _, _ = channel_grid(root, inst)
        except DataError:
            continue
        c = nearest_channel(grid, wavelength_um)
        distance = abs(float(grid[c]) - float(wavelength_um))
        if best is None or distance < best[0]:
            best = (distance, inst, c)
    if best is None:
        raise DataError(f"{root}: no instrument with trace and depths outputs")
    return best[1], best[2]


def nearest_channel(grid: np.ndarray, wavelength_um: float) -> int:
    """Index of the channel of ``grid`` nearest to ``wavelength_um`` (a click on a spectrum)."""
    grid = np.asarray(grid, np.float64)
    if grid.size == 0 or not np.isfinite(wavelength_um):
        raise DataError(f"no channel near {wavelength_um!r} um (grid of {grid.size} channels)")
    return int(np.nanargmin(np.abs(grid - float(wavelength_um))))
