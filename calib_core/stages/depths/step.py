"""The depths stage: a thin adapter over the algorithm modules beside it (see the package doc)."""

from __future__ import annotations

import numpy as np

from ...config.base import ConfigError
from ...diagnostics import DEPTH_LABEL, Plot, Series, break_between, histogram
from ...transit import Geometry, geometry_from_durations, time_bin
from ..base import Gate, Stage, StageContext, gate
from ..errors import DataError
from . import INFO
from .channels import channel_free_degree, fit_channels
from .config import INSTRUMENT_ORDER, DepthsConfig
from .curves import Curves, curves_from_phase, curves_from_trace, white_curve
from .metrics import limit_metrics, truth_metrics
from .uncertainties import channel_sigma, fill_missing
from .white import WhiteFit, fit_white

__all__ = ["DepthsStage", "STAGE"]


def _start_geometry(phase_out, star_info: dict | None, free: list[str]) -> Geometry:
    """t0 and period from the phase stage; a/Rs and i from star info, else from the phase windows."""
    meta = phase_out.meta
    t0_h, period = float(meta["t0_hours"]), float(meta["period_days"])
    if star_info and all(np.isfinite(star_info.get(k, np.nan)) for k in ("sma", "i")):
        return Geometry(t0_h, period, float(star_info["sma"]), float(star_info["i"]))
    if not {"a_rs", "inc"} <= set(free):
        raise ConfigError("calib.depths.geometry.free", free,
                          "a_rs and inc must be fitted when the planet has no star info (sma, i)")
    to_hours = 24.0 * period if meta.get("phase_unit") == "cycles" else 1.0
    w = np.asarray(phase_out.fields["windows"], np.float64) * to_hours
    a_rs, inc = geometry_from_durations(w[3] - w[0], w[2] - w[1], 0.01, period)
    return Geometry(t0_h, period, a_rs, inc)


def _require_transit_in_visit(g: Geometry, curve: Curves, t0_source: str) -> None:
    """Refuse, naming the ephemeris, a geometry that puts no transit on any usable sample of the visit.

    With no in-transit sample the depth is unconstrained (a singular fit); the usual cause is a configured
    ``t0`` in the wrong unit or epoch (the phase stage's ``t0_offset_h`` gate warns about it first).
    """
    t1, _, _, t4 = g.contact_times(0.1)
    period_h = g.period_d * 24.0
    nearest = (curve.time_h - g.t0_h + period_h / 2) % period_h - period_h / 2     # to the nearest mid-transit
    usable = np.any(curve.weight > 0, axis=1)
    if not np.any(usable & (np.abs(nearest) < (t4 - t1) / 2)):
        t = curve.time_h[usable] if usable.any() else curve.time_h
        raise DataError(f"no usable sample falls in a transit: the ephemeris puts mid-transit at {g.t0_h:.6g} h "
                        f"since the visit start (t0 from {t0_source}, period {g.period_d:.6g} d, T14 "
                        f"{t4 - t1:.3g} h) and the visit spans {t.min():.3g}-{t.max():.3g} h; check "
                        "calib.phase.ephemeris.t0, t0_unit and time.start_epoch")


def _refuse_zero_sigma(out: dict, insts: list[str], g: Geometry, t0_source: str) -> None:
    """A fitted depth with a zero uncertainty is a degenerate fit, never a result: say where to look."""
    zero = np.isfinite(out["mu"]) & (out["sigma"] <= 0)
    if zero.any():
        first = int(np.flatnonzero(zero)[0])
        raise DataError(f"{int(zero.sum())} channel(s) got a zero depth uncertainty (first: "
                        f"{insts[int(out['instrument'][first])]} at {out['wavelength_um'][first]:.4g} um): the "
                        f"white-light fit is degenerate (a/Rs {g.a_rs:.3g}, i {g.inc_deg:.3g} deg, t0 {g.t0_h:.6g} h "
                        f"since the visit start, from {t0_source}); check calib.phase.ephemeris (t0, t0_unit) and "
                        "calib.depths.geometry")


def _ordered(inp: dict) -> list[str]:
    return [i for i in INSTRUMENT_ORDER if i in inp]


def _plot_rows(curves: Curves, model: np.ndarray, n_max: int = 400) -> tuple[np.ndarray, ...]:
    """(time, flux, err, model) averaged into at most ``n_max`` points for plotting."""
    w = curves.weight
    stacked = np.column_stack([curves.flux[:, 0], model])
    ww = np.column_stack([w[:, 0], np.where(w[:, 0] > 0, 1.0, 0.0)])
    t, ys, ws, _ = time_bin(curves.time_h, stacked, ww, min(n_max, curves.time_h.size))
    with np.errstate(divide="ignore"):
        err = np.where(ws[:, 0] > 0, 1.0 / np.sqrt(ws[:, 0]), np.nan)
    return t, ys[:, 0], err, ys[:, 1]


class DepthsStage(Stage):
    """Transit depths (``phase_fold`` -> ``depths``, planet scope).

    Metrics: geometry (``t0_h``, ``t0_err_h``, ``a_rs``, ``a_rs_err``, ``inc_deg``,
    ``inc_err_deg``, ``impact_parameter``), ``white_depth`` +- ``white_depth_err``
    (AIRS-CH0 white light when fitted, else FGS1; ``white_instrument``),
    ``fgs1_depth`` +- ``fgs1_depth_err``, ``white_chi2_red``, ``white_beta``,
    ``chi2_red_median``, ``beta_median``, ``residual_rms_ppm`` (median over
    channels), ``fit_converged``, ``n_nonfinite``, the errors against the
    photon + read-noise limit (``sigma_to_limit_median`` / ``_p10`` / ``_p90``,
    ``noise_limit_median_ppm``, ``fgs1_sigma_to_limit``, ``fgs1_noise_limit_ppm``),
    ``baseline_free_degree`` (:func:`.channels.channel_free_degree`); with labels:
    ``white_depth_truth``, ``z_white``, ``fgs1_depth_truth``, ``z_fgs1``,
    ``residual_z_std``, ``residual_z_mean``, ``residual_z_max_abs``.
    Gates: ``fit_converged``, ``chi2_red_median < max_chi2_red``,
    ``beta_median < max_beta``.
    """

    info = INFO
    Config = DepthsConfig

    def run(self, inp: dict, cfg: DepthsConfig, ctx: StageContext, writer) -> dict:
        insts = _ordered(inp)
        curves = {i: self._curves(i, inp[i], cfg, ctx) for i in insts}
        star_info = ctx.planet.star_info() if ctx.planet is not None else None
        reference = inp["AIRS-CH0"] if "AIRS-CH0" in inp else inp[insts[0]]
        start = _start_geometry(reference, star_info, cfg.geometry.free)
        white_insts = [i for i in cfg.geometry.instruments if i in curves]
        if not white_insts:
            raise ConfigError("calib.depths.geometry.instruments", cfg.geometry.instruments,
                              f"none of them is in the input ({', '.join(insts)})")
        whites = {i: white_curve(curves[i]) for i in insts}
        t0_source = reference.meta.get("metrics", {}).get("t0_source", "the phase stage")
        _require_transit_in_visit(start, whites[white_insts[-1]][0], t0_source)
        ld_cfg = cfg.limb_darkening
        ld_fixed = (ld_cfg.u1, ld_cfg.u2) if ld_cfg.method == "fixed" else None
        ctx.report(0.1, "white-light geometry")
        wf = fit_white({i: whites[i][0] for i in white_insts}, start, cfg.geometry.free, cfg.fit.baseline_degree,
                       ld_fixed)
        results, sigmas, betas = {}, {}, {}
        reference_white = white_insts[-1]
        trace_on = ctx.config("trace.enabled")
        free_degree = channel_free_degree(cfg.fit, ctx.config("trace.along_time") if trace_on else None)
        for n, inst in enumerate(insts):
            ctx.report(0.3 + 0.6 * n / len(insts), f"channels of {inst}")
            own = inst if inst in wf.depth else reference_white
            k_ref = wf.k[own]
            u_white = wf.u[own] if inst in wf.u else (ld_cfg.u1, ld_cfg.u2)
            results[inst] = fit_channels(curves[inst], wf.geometry, k_ref, ld_cfg, cfg.fit.baseline_degree, u_white,
                                         free_degree, cfg.fit.baseline_smooth_degree)
            sigmas[inst], betas[inst] = channel_sigma(results[inst], cfg.errors, wf.geometry_rel_var(own))
        out = fill_missing(self._assemble(insts, curves, results, sigmas, betas, whites))
        _refuse_zero_sigma(out, insts, wf.geometry, t0_source)
        self._write(writer, out, wf, insts, whites, results)
        return self._metrics(out, wf, results, insts, ctx)

    @staticmethod
    def _curves(inst: str, phase_out, cfg: DepthsConfig, ctx: StageContext) -> Curves:
        if cfg.fit.data == "phase_binned":
            return curves_from_phase(phase_out, cfg.validation)
        trace_out = ctx.output_of("trace", inst)
        if trace_out is None:
            raise ConfigError("calib.depths.fit.data", "unbinned",
                              f"needs the trace output of {inst}; use phase_binned to fit the phase bins")
        return curves_from_trace(trace_out, cfg.fit.max_points, cfg.validation)

    @staticmethod
    def _assemble(insts: list[str], curves: dict, results: dict, sigmas: dict, betas: dict, whites: dict) -> dict:
        """Concatenate per-instrument results, FGS1 first, each by ascending wavelength."""
        keys = ("mu", "sigma", "wavelength_um", "u1", "u2", "chi2_red", "beta", "instrument", "white_weight",
                "sigma_noise_limit")
        parts = {k: [] for k in keys}
        for n, inst in enumerate(insts):
            order = np.argsort(curves[inst].wavelength_um, kind="stable")
            r = results[inst]
            values = (r.depth, sigmas[inst], curves[inst].wavelength_um, r.u1, r.u2, r.chi2_red, betas[inst],
                      np.full(r.depth.size, n), whites[inst][1], r.sigma_limit)
            for key, value in zip(keys, values):
                parts[key].append(np.asarray(value, np.float64)[order])
        return {k: np.concatenate(v) for k, v in parts.items()}

    @staticmethod
    def _write(writer, out: dict, wf: WhiteFit, insts: list[str], whites: dict, results: dict) -> None:
        units = {"mu": "(Rp/Rs)^2", "sigma": "(Rp/Rs)^2", "wavelength_um": "um", "u1": "", "u2": "",
                 "chi2_red": "", "beta": "", "instrument": "index into meta.instruments",
                 "white_weight": "weight of the channel in its instrument's white light",
                 "filled": "bool: no fit, interpolated from neighbouring channels",
                 "sigma_noise_limit": "(Rp/Rs)^2: photon + read-noise limit of sigma (NaN where filled)"}
        for key, unit in units.items():
            writer.put(key, out[key].astype(np.int16) if key == "instrument" else out[key], unit)
        rows = [_plot_rows(whites[i][0], wf.model[i]) for i in wf.model]
        width = max(r[0].size for r in rows)
        for j, key in enumerate(("white_time_h", "white_flux", "white_err", "white_model")):
            arr = np.full((len(rows), width), np.nan)
            for n, r in enumerate(rows):
                arr[n, : r[j].size] = r[j]
            writer.put(key, arr, "h" if key == "white_time_h" else "relative")
        g = wf.geometry
        writer.meta.update(
            instruments=insts, white_instruments=list(wf.model), order="FGS1 first, then AIRS-CH0 ascending",
            geometry={"t0_h": g.t0_h, "period_d": g.period_d, "a_rs": g.a_rs, "inc_deg": g.inc_deg,
                      "impact_parameter": g.impact_parameter},
            white_depth={i: wf.depth[i] for i in wf.depth}, white_depth_err={i: wf.depth_err[i] for i in wf.depth},
            limb_darkening={i: {"mode": results[i].ld_mode, "law": results[i].ld_coefficients.tolist()}
                            for i in insts},
        )

    @staticmethod
    def _metrics(out: dict, wf: WhiteFit, results: dict, insts: list[str], ctx: StageContext) -> dict:
        g, ge = wf.geometry, wf.geometry_err
        white_inst = "AIRS-CH0" if "AIRS-CH0" in wf.depth else next(iter(wf.depth))
        airs_inst = "AIRS-CH0" if "AIRS-CH0" in results else next(iter(results))
        airs = results[airs_inst]
        metrics = {
            "t0_h": g.t0_h, "t0_err_h": ge["t0_h"], "a_rs": g.a_rs, "a_rs_err": ge["a_rs"],
            "inc_deg": g.inc_deg, "inc_err_deg": ge["inc_deg"], "impact_parameter": g.impact_parameter,
            "period_days": g.period_d,
            "white_instrument": white_inst, "white_depth": wf.depth[white_inst],
            "white_depth_err": wf.depth_err[white_inst], "white_chi2_red": wf.chi2_red[white_inst],
            "white_beta": wf.beta[white_inst],
            "chi2_red_median": float(np.nanmedian(airs.chi2_red)), "beta_median": float(np.nanmedian(airs.beta)),
            "residual_rms_ppm": float(np.nanmedian(airs.residual_rms) * 1e6),
            "fit_converged": bool(wf.converged and np.all(np.isfinite(out["mu"]))),
            "white_nfev": wf.nfev, "n_channels": int(out["mu"].size),
            "n_filled": int(out["filled"].sum()),
            "n_nonfinite": int(np.count_nonzero(~np.isfinite(out["mu"]) | ~np.isfinite(out["sigma"]))),
        }
        if "FGS1" in insts:
            fgs = np.flatnonzero(out["instrument"] == insts.index("FGS1"))[0]
            metrics.update(fgs1_depth=float(out["mu"][fgs]), fgs1_depth_err=float(out["sigma"][fgs]))
        metrics.update(limit_metrics(out, insts), baseline_free_degree=int(results[airs_inst].free_degree))
        labels = ctx.planet.labels() if ctx.planet is not None else None
        if labels is not None and np.size(labels) == out["mu"].size:
            metrics.update(truth_metrics(out, np.asarray(labels, np.float64), wf, insts, white_inst))
        return metrics

    def gates(self, metrics: dict, cfg: DepthsConfig) -> list[Gate]:
        qc = cfg.quality_checks
        return [
            gate("fit_converged", int(bool(metrics.get("fit_converged"))), ">=", 1,
                 "white-light fit converged and every depth is finite"),
            gate("chi2_red_median", metrics.get("chi2_red_median"), "<", qc.max_chi2_red,
                 "median reduced chi^2 of the channel fits"),
            gate("beta_median", metrics.get("beta_median"), "<", qc.max_beta, "red-noise factor of the channels"),
        ]

    def diagnostics(self, output, metrics: dict, ctx: StageContext) -> list[Plot]:
        f = output.fields
        mu, sigma, wl = (np.asarray(f[k], np.float64) for k in ("mu", "sigma", "wavelength_um"))
        labels = ctx.planet.labels() if ctx.planet is not None else None
        truth = np.asarray(labels, np.float64) if labels is not None and np.size(labels) == mu.size else None
        # lines break between instruments (FGS1 | AIRS-CH0): a NaN row at the gap
        gap = break_between(np.asarray(f["instrument"]), wl)
        spectrum = Series("Transmission spectrum", gap(wl, True), gap(mu), xlabel="wavelength (um)",
                          ylabel=DEPTH_LABEL, yerr=gap(sigma), label="fitted")
        plots: list[Plot] = [spectrum]
        if "sigma_noise_limit" in f:
            limit = np.asarray(f["sigma_noise_limit"], np.float64)
            ratio = metrics.get("sigma_to_limit_median", float("nan"))
            plots.append(Series(f"Depth errors vs the photon + read-noise limit (median ratio {ratio:.2f})",
                                gap(wl, True), gap(sigma) * 1e6, xlabel="wavelength (um)", ylabel="1-sigma (ppm)",
                                label="sigma", overlay=[Series("", gap(wl, True), gap(limit) * 1e6,
                                                               label="photon + read-noise limit")]))
        if truth is not None:
            spectrum.overlay.append(Series("", gap(wl, True), gap(truth), label="truth"))
            plots.append(histogram((mu - truth) / sigma, bins=40, range_=(-5.0, 5.0), log=False,
                                   title="Per-channel residuals (mu - truth) / sigma", xlabel="z"))
        for n, inst in enumerate(output.meta.get("white_instruments", [])):
            t, y, e, model = (np.asarray(f[k][n], np.float64) for k in
                              ("white_time_h", "white_flux", "white_err", "white_model"))
            keep = np.isfinite(t)
            t, y, e, model = t[keep], y[keep], e[keep], model[keep]
            plots.append(Series(f"White light {inst} and model", t, y, xlabel="time since visit start (h)",
                                ylabel="normalised flux", yerr=e, label="data",
                                overlay=[Series("", t, model, label="batman model")]))
            plots.append(Series(f"White light {inst} residuals", t, (y - model) * 1e6,
                                xlabel="time since visit start (h)", ylabel="ppm", yerr=e * 1e6,
                                label="data - model", style="points"))
        return plots


STAGE = DepthsStage()
