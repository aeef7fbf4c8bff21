"""Read a finished run directory back for investigation: per-channel light curves, run snapshots, comparisons.

Everything the app's investigation tabs show is computed here (the app only draws):

* :func:`light_curves`: for one channel or a binned range of channels of one instrument, the raw
  (photometry) flux, the trace stage's trend, the detrended flux, its phase, the transit model of the
  depths stage (its geometry, depth and limb darkening) times a refitted baseline, and the residuals;
* :func:`read_run` / :class:`RunSnapshot`: what a run produced (status, typed config, QC gates,
  spectrum), copied into memory so that it outlives later runs into the same directory;
* :func:`config_diff`, :func:`compare_spectra`, :func:`gates_side_by_side`: two snapshots compared.

A run directory is read through its ``qc.json`` (each stage record names its output directory),
so both the app's session runs and ``spectramind batch`` run directories can be opened.
Every path is resolved and must stay inside the run directory.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .provenance import PLANET_SCOPE_DIR
from .series import as_2d
from .stages.errors import DataError
from .store import StoredOutput, load_output
from .transit import Geometry, light_curve, time_bin

__all__ = ["BATCH_COLUMNS", "LightCurves", "PixelSeries", "RESULT_FILES", "RunSnapshot", "SpectrumDiff",
           "channel_at", "channel_grid", "compare_spectra", "config_diff", "gates_side_by_side", "light_curves",
           "lightcurve_plots", "load_result", "load_stage_output", "nearest_channel", "pixel_at", "pixel_series",
           "read_batch", "read_qc", "read_run", "results_zip", "snapshot_result", "white_light_overlays"]

log = logging.getLogger(__name__)

#: points of the phase-binned curve shown over the unbinned samples
FOLD_BINS = 120


def _confined(root: Path, path: str | Path, source: str = "qc.json", what: str = "output directory") -> Path:
    """``path`` resolved; DataError unless it lies inside ``root`` (``source`` named it)."""
    resolved = Path(path).expanduser().resolve()
    if resolved != root and root not in resolved.parents:
        raise DataError(f"{root / source}: {what} {path} lies outside {root}")
    return resolved


def read_qc(run_dir: str | Path) -> dict:
    """``qc.json`` of a run directory.

    Raises
    ------
    DataError
        No run directory, or its ``qc.json`` is missing or not JSON.
    """
    root = Path(run_dir).expanduser().resolve()
    path = root / "qc.json"
    try:
        qc = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing (not a finished run directory)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None
    if not isinstance(qc, dict) or not isinstance(qc.get("stages"), dict):
        raise DataError(f"{path}: no 'stages' mapping (expected the qc.json that spectramind calibrate writes)")
    return qc


def load_stage_output(run_dir: str | Path, stage: str, instrument: str | None,
                      qc: dict | None = None) -> StoredOutput:
    """The stored output of ``stage`` for ``instrument`` (None: planet scope) of a run directory.

    Raises
    ------
    DataError
        The run has no such output (stage disabled, skipped or failed) or it cannot be read.
    """
    root = Path(run_dir).expanduser().resolve()
    qc = read_qc(root) if qc is None else qc
    where = instrument or PLANET_SCOPE_DIR
    rec = qc["stages"].get(stage, {}).get(where)
    if not rec or not rec.get("output_dir"):
        raise DataError(f"{root}: no {stage} output for {where} (stage disabled, skipped or failed in this run)")
    out = load_output(_confined(root, rec["output_dir"]))
    if out is None:
        raise DataError(f"{rec['output_dir']}: {stage}/{where} output missing or incomplete")
    return out


# ---------------------------------------------------------------------------
# light curves
# ---------------------------------------------------------------------------


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
    from .stages.depths.step import baseline_design

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


# ---------------------------------------------------------------------------
# run snapshots and comparisons
# ---------------------------------------------------------------------------


@dataclass
class RunSnapshot:
    """What one run produced, held in memory (later runs into the same directory do not change it)."""

    label: str
    status: str
    config: dict                 #: typed content of the config (:func:`calib_core.config.typed_content`)
    config_hash: str
    gates: list[dict]            #: stage, instrument, name, value, threshold, op, passed, action
    wavelength_um: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    instrument: np.ndarray       #: index into ``instruments`` per row
    instruments: list[str]
    metrics: dict                #: the depths stage's metrics (white depth, chi2, ...)
    white: dict = field(default_factory=dict)  #: instrument -> (time_h, flux, err, model) of the white-light fit


def _white_of(depths: StoredOutput) -> dict:
    """The depths stage's white-light curves and batman models (its plot rows), copied into memory."""
    f, out = depths.fields, {}
    for n, inst in enumerate(depths.meta.get("white_instruments", [])):
        t, y, e, m = (np.array(f[k][n], np.float64) for k in ("white_time_h", "white_flux", "white_err", "white_model"))
        keep = np.isfinite(t)
        out[inst] = (t[keep], y[keep], e[keep], m[keep])
    return out


def _gates_of(qc: dict) -> list[dict]:
    gates = []
    for stage, per in qc.get("stages", {}).items():
        for where, rec in per.items():
            for g in rec.get("gates", []) or []:
                gates.append({"stage": stage, "instrument": where, **g})
    return gates


def read_run(run_dir: str | Path, label: str | None = None) -> RunSnapshot:
    """Snapshot of a finished run directory (``config.yaml``, ``qc.json``, the depths output).

    Raises
    ------
    DataError
        Missing or unreadable files, or a config that does not validate.
    """
    from .config import ConfigError, compose_config
    from .config.compose import config_hash, typed_content

    root = Path(run_dir).expanduser().resolve()
    qc = read_qc(root)
    path = root / "config.yaml"
    if not path.is_file():
        raise DataError(f"{path}: missing")
    try:
        cfg = compose_config(str(path))
    except ConfigError as exc:
        raise DataError(f"{path}: {exc}") from None
    content = typed_content(cfg)
    if qc.get("status") == "ok":
        depths = load_stage_output(root, "depths", None, qc)
        f = depths.fields
        arrays = [np.array(f[k], np.float64) for k in ("wavelength_um", "mu", "sigma")]
        inst = np.array(f["instrument"], np.int16)
        insts = list(depths.meta.get("instruments", []))
        metrics = (qc["stages"].get("depths", {}).get(PLANET_SCOPE_DIR) or {}).get("metrics", {})
        white = _white_of(depths)
    else:
        arrays, inst, insts, metrics, white = [np.empty(0)] * 3, np.empty(0, np.int16), [], {}, {}
    return RunSnapshot(label or root.name, str(qc.get("status")), content, config_hash(cfg), _gates_of(qc),
                       *arrays, inst, insts, dict(metrics), white)


def snapshot_result(result: Any, cfg: Any, label: str) -> RunSnapshot:
    """Snapshot of a :class:`calib_core.chain.RunResult` just returned by :func:`calib_core.chain.run_chain`."""
    from .config.compose import config_hash, typed_content

    qc = {"stages": {}}
    for r in result.records:
        qc["stages"].setdefault(r.stage, {})[r.instrument or PLANET_SCOPE_DIR] = {
            "gates": [g.to_json() for g in r.gates]}
    depths = result.output("depths") if result.status == "ok" else None
    if depths is not None:
        f = depths.fields
        arrays = [np.array(f[k], np.float64) for k in ("wavelength_um", "mu", "sigma")]
        inst, insts = np.array(f["instrument"], np.int16), list(depths.meta.get("instruments", []))
        rec = result.record("depths", None)
        metrics = {k: v for k, v in (rec.metrics if rec else {}).items() if np.isscalar(v)}
        white = _white_of(depths)
    else:
        arrays, inst, insts, metrics, white = [np.empty(0)] * 3, np.empty(0, np.int16), [], {}, {}
    return RunSnapshot(label, result.status, typed_content(cfg), config_hash(cfg), _gates_of(qc), *arrays, inst,
                       insts, metrics, white)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: node}


def config_diff(a: dict, b: dict) -> list[tuple[str, Any, Any]]:
    """Dotted keys whose values differ between two typed configs, ``(key, value_a, value_b)`` sorted by key.

    A key present on one side only shows ``None`` (written ``-`` by the app) on the other.
    """
    fa, fb = _flatten(a), _flatten(b)
    missing = object()
    rows = []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key, missing), fb.get(key, missing)
        if isinstance(va, tuple):
            va = list(va)
        if isinstance(vb, tuple):
            vb = list(vb)
        if va != vb:
            rows.append((key, None if va is missing else va, None if vb is missing else vb))
    return rows


@dataclass
class SpectrumDiff:
    """Two spectra on one wavelength grid and their difference in units of the combined sigma."""

    wavelength_um: np.ndarray
    mu_a: np.ndarray
    sigma_a: np.ndarray
    mu_b: np.ndarray
    sigma_b: np.ndarray
    z: np.ndarray                #: (mu_b - mu_a) / sqrt(sigma_a^2 + sigma_b^2)
    instrument: np.ndarray

    @property
    def max_abs_z(self) -> float:
        finite = np.isfinite(self.z)
        return float(np.max(np.abs(self.z[finite]))) if finite.any() else float("nan")


def compare_spectra(a: RunSnapshot, b: RunSnapshot) -> SpectrumDiff:
    """Overlay and difference of two runs' spectra (rows matched one to one: same planet and channels).

    Raises
    ------
    DataError
        A run has no spectrum (not ok), or the wavelength grids differ.
    """
    for s in (a, b):
        if s.mu.size == 0:
            raise DataError(f"run {s.label}: no spectrum (status {s.status})")
    if a.wavelength_um.shape != b.wavelength_um.shape or not np.allclose(a.wavelength_um, b.wavelength_um):
        raise DataError(f"runs {a.label} and {b.label}: different wavelength grids "
                        f"({a.wavelength_um.size} vs {b.wavelength_um.size} channels)")
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (b.mu - a.mu) / np.hypot(a.sigma, b.sigma)
    return SpectrumDiff(a.wavelength_um, a.mu, a.sigma, b.mu, b.sigma, z, a.instrument)


def white_light_overlays(a: RunSnapshot, b: RunSnapshot) -> list:
    """Typed plot data: per instrument fitted by both runs, A's and B's white light and batman models overlaid,
    titled with both white depths (ppm)."""
    from .diagnostics import Series

    plots = []
    for inst in [i for i in a.white if i in b.white]:
        (ta, ya, ea, ma), (tb, yb, eb, mb) = a.white[inst], b.white[inst]
        da = float(a.metrics.get("white_depth", float("nan"))) * 1e6 if inst == a.metrics.get("white_instrument") \
            else float("nan")
        db = float(b.metrics.get("white_depth", float("nan"))) * 1e6 if inst == b.metrics.get("white_instrument") \
            else float("nan")
        depths = f" (white depth A {da:.0f} ppm, B {db:.0f} ppm)" if np.isfinite(da) and np.isfinite(db) else ""
        plots.append(Series(f"White light {inst}: fits of A and B{depths}", ta, ya, xlabel="time since visit start (h)",
                            ylabel="normalised flux", yerr=ea, label="A data", style="points",
                            overlay=[Series("", tb, yb, yerr=eb, label="B data", style="points"),
                                     Series("", ta, ma, label="A model"), Series("", tb, mb, label="B model")]))
    return plots


def gates_side_by_side(a: RunSnapshot, b: RunSnapshot) -> list[dict]:
    """One row per QC gate of either run: ``stage``, ``instrument``, ``name``, ``a`` and ``b`` (gate dict or None)."""
    def keyed(s: RunSnapshot) -> dict:
        return {(g["stage"], g["instrument"], g["name"]): g for g in s.gates}

    ka, kb = keyed(a), keyed(b)
    order = list(ka) + [k for k in kb if k not in ka]
    return [{"stage": k[0], "instrument": k[1], "name": k[2], "a": ka.get(k), "b": kb.get(k)} for k in order]


def lightcurve_plots(lc: LightCurves) -> list:
    """Typed plot data (:mod:`calib_core.diagnostics`) of :func:`light_curves`: raw, detrended, folded, residuals."""
    from .diagnostics import Series

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


#: files of a run directory that ``results_zip`` packs when present (depths.csv, qc.json, config.yaml required)
RESULT_FILES = ("depths.csv", "qc.json", "config.yaml", "depths_calibrated.csv", "run_hash_summary.json",
                "run_state.json", "debug_log.md", "audit.html", "audit.json")


def results_zip(run_dir: str | Path) -> bytes:
    """A zip of a finished run's results: ``depths.csv``, ``qc.json``, ``config.yaml`` and, if present, the
    calibrated depths, provenance files and the audit report (``audit.html``/``audit.json``).

    Raises
    ------
    DataError
        A required file is missing (the run did not finish ``ok``).
    """
    import io
    import zipfile

    root = Path(run_dir).expanduser().resolve()
    missing = [n for n in RESULT_FILES[:3] if not (root / n).is_file()]
    if missing:
        raise DataError(f"{root}: no {', '.join(missing)} (results exist after an ok run only)")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in RESULT_FILES:
            path = root / name
            if path.is_file():
                zf.write(path, name)
    return buf.getvalue()


# ---------------------------------------------------------------------------
# batches (``spectramind batch`` output) and reopening a run
# ---------------------------------------------------------------------------


def load_result(run_dir: str | Path) -> Any:
    """A :class:`calib_core.chain.RunResult` rebuilt from a finished run directory, to show its diagnostics.

    A stage output that was pruned (e.g. a batch's ``keep: series`` removes the detector frame planes)
    or fails its checksums is listed without an output directory, its ``reason`` saying so.

    Raises
    ------
    DataError
        No ``qc.json``/``config.yaml``, a config that does not validate, or a planet that cannot be opened.
    """
    from .chain import RunResult, StageRecord, resolve_planet
    from .config import ConfigError, compose_config, validate_config
    from .stages.base import Gate
    from .store import verify_output

    root = Path(run_dir).expanduser().resolve()
    qc = read_qc(root)
    try:
        cfg = compose_config(str(root / "config.yaml"))
        vc = validate_config(cfg)
    except ConfigError as exc:
        raise DataError(f"{root / 'config.yaml'}: {exc}") from None
    records = []
    for stage, per in qc["stages"].items():
        for where, rec in per.items():
            out_dir, reason = rec.get("output_dir"), rec.get("reason", "")
            if out_dir:
                problem = verify_output(_confined(root, out_dir))
                if problem is not None:
                    out_dir, reason = None, f"output not kept in this run directory ({problem})"
            try:
                gates = [Gate(**g) for g in rec.get("gates", []) or []]
            except TypeError:
                raise DataError(f"{root / 'qc.json'}: malformed gates of {stage}/{where}") from None
            records.append(StageRecord(stage, None if where == PLANET_SCOPE_DIR else where, rec.get("status", ""),
                                       rec.get("cache_key", ""), float(rec.get("seconds") or 0.0),
                                       rec.get("metrics") or {}, gates, out_dir, reason))
    try:
        planet = resolve_planet(vc)
    except Exception as exc:  # DataLayoutError & co.: the dataset moved or is not readable here
        raise DataError(f"{root}: cannot open the run's planet ({str(exc).splitlines()[0]})") from None
    chash = json.loads((root / "run_hash_summary.json").read_text()).get("config_hash", "") \
        if (root / "run_hash_summary.json").is_file() else ""
    return RunResult(root, str(qc.get("status", "")), chash, records, str(qc.get("message", "")), planet, vc)


#: columns of :func:`read_batch` rows
BATCH_COLUMNS = ("planet_id", "status", "gates", "chi2_red_median", "white_depth_ppm", "white_depth_err_ppm",
                 "z_white", "seconds", "gates_failed", "message")


def read_batch(batch_dir: str | Path) -> list[dict]:
    """One row per planet of a ``spectramind batch`` output directory (``batch_summary.json`` + each ``qc.json``).

    Row keys: :data:`BATCH_COLUMNS` plus ``run_dir``.  ``gates_failed`` lists the failed QC gates
    (``stage/where:name``), ``gates`` is ``"passed/total"``; ``z_white`` (white depth against the
    truth, in sigma) is NaN without labels.

    Raises
    ------
    DataError
        No or malformed ``batch_summary.json``, or a planet run directory outside the batch directory.
    """
    root = Path(batch_dir).expanduser().resolve()
    path = root / "batch_summary.json"
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing (not a spectramind batch output directory)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None
    planets = summary.get("planets") if isinstance(summary, dict) else None
    if not isinstance(planets, list):
        raise DataError(f"{path}: no 'planets' list")
    rows = []
    for p in planets:
        pid = p.get("planet_id")
        raw = str(p.get("run_dir") or pid)
        run_dir = _confined(root, raw if Path(raw).is_absolute() else root / raw, "batch_summary.json",
                            "planet run directory")
        row = {"planet_id": pid, "status": p.get("status", ""), "message": p.get("message", ""),
               "seconds": p.get("seconds"), "gates_failed": "", "gates": "", "chi2_red_median": float("nan"),
               "white_depth_ppm": float("nan"), "white_depth_err_ppm": float("nan"), "z_white": float("nan"),
               "run_dir": str(run_dir)}
        try:
            qc = read_qc(run_dir)
        except DataError:
            rows.append(row)
            continue
        gates = _gates_of(qc)
        row["gates"] = f"{sum(bool(g.get('passed')) for g in gates)}/{len(gates)}"
        row["gates_failed"] = ", ".join(f"{g['stage']}/{g['instrument']}:{g['name']}" for g in gates
                                        if not g.get("passed"))
        m = (qc["stages"].get("depths", {}).get(PLANET_SCOPE_DIR) or {}).get("metrics") or {}
        for key, src, scale in (("chi2_red_median", "chi2_red_median", 1.0), ("white_depth_ppm", "white_depth", 1e6),
                                ("white_depth_err_ppm", "white_depth_err", 1e6), ("z_white", "z_white", 1.0)):
            if isinstance(m.get(src), (int, float)):
                row[key] = float(m[src]) * scale
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------
# linked views: one pixel's time series
# ---------------------------------------------------------------------------


@dataclass
class PixelSeries:
    """One detector pixel of a frame stage's output over the visit."""

    stage: str
    instrument: str
    row: int
    column: int
    time_h: np.ndarray           #: (N,) hours since the visit start
    value: np.ndarray            #: (N,) electrons (NaN where the stage wrote NaN)
    dq: np.ndarray               #: (N,) uint16 DQ bits (:class:`calib_core.dq.DQ`)
    flags: dict[str, np.ndarray] = field(default_factory=dict)  #: DQ bit name -> frame indices with it set

    def plots(self) -> list:
        """Typed plot data: the series, each DQ bit's frames marked on it."""
        from .diagnostics import Series

        base = Series(f"{self.stage.upper()} pixel (row {self.row}, column {self.column}) over the visit",
                      self.time_h, self.value, xlabel="time since visit start (h)", ylabel="electrons",
                      label="value", style="points")
        finite = np.where(np.isfinite(self.value), self.value, np.nanmedian(self.value) if
                          np.isfinite(self.value).any() else 0.0)
        base.overlay = [Series("", self.time_h[idx], finite[idx], label=name, style="points")
                        for name, idx in self.flags.items()]
        return [base]


def pixel_series(output: StoredOutput, row: int, column: int, stage: str = "", instrument: str = "") -> PixelSeries:
    """Time series of pixel ``(row, column)`` of a frame stage's stored output (``data``, ``dq``, ``frame_time_s``).

    Raises
    ------
    DataError
        The output keeps no frame planes (streamed or pruned) or the pixel is outside the detector.
    """
    from .dq import DQ

    f = output.fields
    if "data" not in f or "frame_time_s" not in f:
        raise DataError(f"{output.path}: no frame planes stored (streamed or pruned): no pixel series")
    n, rows, cols = f["data"].shape
    if not (0 <= int(row) < rows and 0 <= int(column) < cols):
        raise DataError(f"{output.path}: pixel ({row}, {column}) outside the {rows} x {cols} detector")
    row, column = int(row), int(column)
    value = np.asarray(f["data"][:, row, column], np.float64)
    dq = np.asarray(f["dq"][:, row, column], np.uint16) if "dq" in f else np.zeros(n, np.uint16)
    time_h = np.asarray(f["frame_time_s"], np.float64) / 3600.0
    flags = {bit.name: np.flatnonzero(dq & int(bit)) for bit in DQ if np.any(dq & int(bit))}
    return PixelSeries(stage or str(output.meta.get("stage", "")), instrument or str(output.meta.get("instrument", "")),
                       row, column, time_h, value, dq, flags)


def pixel_at(x: float, y: float) -> tuple[int, int]:
    """``(row, column)`` of the detector pixel under a click at image coordinates ``(x, y)``.

    Detector images are drawn with pixel ``(r, c)`` covering ``[c, c + 1) x [r, r + 1)``
    (:class:`calib_core.diagnostics.Image`, detector form).
    """
    return int(math.floor(float(y))), int(math.floor(float(x)))
