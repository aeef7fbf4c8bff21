"""Trace normalisation: continuum, out-of-transit detrending that keeps the transit, robust masks.

The helpers at the top simulate photometry series with a known truth (batman
transits with wavelength-dependent limb darkening and depth, drift, pointing
jitter, shot and read noise) and run the series stages like the chain runner;
``test_stage_phase`` and ``test_stage_depths`` import them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from calib_core.config import ConfigError, compose_config, validate_config
from calib_core.config.base import check_constraints
from calib_core.dq import DQ
from calib_core.store import StoreWriter
from calib_core.stages.depths import step as depths
from calib_core.stages.phase import step as phase
from calib_core.stages.trace import step as trace
from calib_core.stages.trace.config import AlongWavelengthConfig, TraceConfig
from calib_core.stages.trace.continuum import fit_continuum
from calib_core.stages.trace.masks import flag_outliers
from calib_core.stages.trace.normalise import TraceResult, normalise_trace
from stagectx import Setting
from calib_core.transit import Geometry, light_curve
from oracles.series import simulate_series

INSTRUMENTS = ("FGS1", "AIRS-CH0")


# ---------------------------------------------------------------------------
# simulation helpers (shared with test_stage_phase / test_stage_depths)
# ---------------------------------------------------------------------------


class FakePlanet:
    """The part of :class:`calib_core.io.planet.Planet` the series stages use."""

    def __init__(self, star_info: dict | None, labels: np.ndarray | None, wavelengths: np.ndarray):
        self._info, self._labels, self._wl = star_info, labels, wavelengths

    def star_info(self):
        return self._info

    def labels(self):
        return self._labels

    def wavelengths(self):
        return self._wl


def simulate_visit(seed: int, *, n_airs: int = 1125, n_fgs: int = 2250, drift: bool = True,
                   jitter: bool = True) -> dict:
    """FGS1 + AIRS-CH0 photometry series of one 7.5 h visit with truth (demo-like magnitudes).

    Depth = base + a Gaussian band at 2.7 um (FGS1 offset by 100 ppm); u1, u2 linear in
    1/lambda as in the demo generator; drift ``1 + (d1 tau + d2 tau^2)(1 + g (lambda - 2.9))``;
    the same seed gives the same standard-normal noise draws with or without drift.
    """
    rng = np.random.default_rng(seed)
    geometry = Geometry(rng.uniform(2.8, 4.6), rng.uniform(3.5, 7.0), rng.uniform(8.0, 13.0),
                        rng.uniform(87.5, 89.5))
    wl = np.concatenate([[0.7], np.linspace(1.951761, 3.895036, 282)])
    x = (1 / wl - 1 / wl.max()) / (1 / wl.min() - 1 / wl.max())
    u1, u2 = 0.15 + 0.30 * x, 0.08 + 0.17 * x
    base = rng.uniform(0.008, 0.025)
    depth = base + 2.5e-4 * np.exp(-0.5 * ((wl - 2.7) / 0.15) ** 2)
    depth[0] = base + 1e-4
    coeffs = rng.uniform(-4e-4, 4e-4, 2)
    series = {}
    setups = {"FGS1": (n_fgs, slice(0, 1), np.array([2.6e6]), 0.1),
              "AIRS-CH0": (n_airs, slice(1, None), None, 0.02)}
    for inst, (n, sl, electrons, jitter_px) in setups.items():
        w = wl[sl]
        if electrons is None:
            electrons = 2.0e5 * (w / 2) ** -2 * np.exp(-(((w - 2.5) / 1.5) ** 2))
        time_s = (np.arange(n) + 0.5) * 27000.0 / n
        tau = 2 * time_s / 27000.0 - 1
        drift_bc = 1 + (coeffs[0] * tau + coeffs[1] * tau ** 2)[:, None] * (1 + 0.3 * (w - 2.9))[None, :]
        gain = np.column_stack([np.full(w.size, 3e-3), np.full(w.size, -2e-3)]) if jitter else None
        series[inst] = simulate_series(np.random.default_rng([seed, sl.start]), time_s, w, geometry, depth[sl],
                                       u1[sl], u2[sl], electrons, drift=drift_bc if drift else None,
                                       jitter_px=jitter_px, jitter_gain=gain, read_noise_e=20.0)
    return {"series": series, "geometry": geometry, "depth": depth, "u1": u1, "u2": u2, "wavelength": wl,
            "planet": FakePlanet({"P": geometry.period_d, "sma": geometry.a_rs, "i": geometry.inc_deg}, depth, wl)}


def write_series(fields: dict, path: Path):
    """Commit photometry-like fields (everything but the noiseless ``transit``) as a stage output."""
    with StoreWriter(path) as writer:
        for name, value in fields.items():
            if name != "transit":
                writer.put(name, value)
        return writer.commit({"stage": "photometry"})


def run_stage(stage, inp, cfg, ctx: Setting, path: Path):
    """Run one stage like the chain runner (StoreWriter committed); returns (output, metrics)."""
    with StoreWriter(path) as writer:
        metrics = stage.run(inp, cfg, ctx.context(stage.name), writer)
        return writer.commit({"stage": stage.name, "metrics": metrics}), metrics


def run_series_chain(visit: dict, root: Path, cfgs: dict | None = None, planet=None) -> dict:
    """photometry series -> trace -> phase (both instruments) -> depths; outputs and metrics by stage."""
    cfgs = {"trace": TraceConfig(), "phase": phase.PhaseConfig(), "depths": depths.DepthsConfig(),
            **(cfgs or {})}
    planet = visit["planet"] if planet is None else planet
    upstream, metrics = {}, {}
    for inst in INSTRUMENTS:
        inp = write_series(visit["series"][inst], root / "photometry" / inst)
        ctx = Setting(planet, inst, cfgs, upstream)
        for module in (trace, phase):
            name = module.STAGE.name
            inp, metrics[(name, inst)] = run_stage(module.STAGE, inp, cfgs[name], ctx, root / name / inst)
            upstream[(name, inst)] = inp
    ctx = Setting(planet, None, cfgs, upstream)
    out, metrics["depths"] = run_stage(depths.STAGE, {i: upstream[("phase", i)] for i in INSTRUMENTS},
                                       cfgs["depths"], ctx, root / "depths" / "planet")
    upstream[("depths", None)] = out
    return {"outputs": upstream, "metrics": metrics, "ctx": ctx}


def normalise(visit: dict, inst: str, cfg: TraceConfig | None = None, **kw) -> TraceResult:
    s = visit["series"][inst]
    return normalise_trace(s["photometry_flux"], s["photometry_flux_var"], s["photometry_flags"],
                           s["time_s"], s["channel_wavelength_um"], cfg or TraceConfig(),
                           centroid_x=s["photometry_centroid_x"], centroid_y=s["photometry_centroid_y"], **kw)


@pytest.fixture(scope="module")
def visit():
    return simulate_visit(11)


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------



def test_seed_override_paths_compose():
    cfg = validate_config(compose_config("calib/nominal", ["calib.trace.along_wavelength.method=spline",
                                                           "calib.trace.along_wavelength.spline.knots=12",
                                                           "calib.trace.along_time.enabled=false"]))
    t = cfg.stages["trace"]
    assert (t.along_wavelength.method, t.along_wavelength.spline.knots, t.along_time.enabled) == ("spline", 12, False)


@pytest.mark.parametrize("path, value, fragment", [
    ("along_wavelength.spline.knots", 0, "must be >= 1"),
    ("along_wavelength.method", "cubic", "must be one of poly, spline, lowess"),
    ("along_time.method", "highpass", "must be one of poly, spline"),
    ("robust.window_frames", 10, "must be odd"),
    ("transit_mask.pad_frac", -0.1, "must be >= 0"),
])
def test_bad_values_raise_config_error_naming_the_key(path, value, fragment):
    cfg = TraceConfig()
    *parents, leaf = path.split(".")
    node = cfg
    for name in parents:
        node = getattr(node, name)
    setattr(node, leaf, value)
    with pytest.raises(ConfigError) as err:
        check_constraints(cfg, "calib.trace")
    assert str(err.value).startswith(f"calib.trace.{path} = ") and fragment in str(err.value)


# ---------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["poly", "spline", "lowess"])
def test_continuum_follows_a_smooth_spectrum_and_rejects_deviant_channels(method):
    rng = np.random.default_rng(0)
    wl = np.linspace(1.95, 3.9, 282)
    smooth = 1e5 * (wl / 2.0) ** -2.5 + 2e4
    spectrum = smooth * (1 + rng.normal(0, 2e-3, wl.size))
    spectrum[[40, 150]] *= [0.7, 1.4]
    cfg = AlongWavelengthConfig(method=method)
    continuum, rejected = fit_continuum(wl, spectrum, cfg, sigma=5.0, maxiters=3)
    assert np.flatnonzero(rejected).tolist() == [40, 150]
    tolerance = {"poly": 0.03, "spline": 0.005, "lowess": 0.01}[method]
    assert np.max(np.abs(continuum / smooth - 1)) < tolerance


def test_single_channel_continuum_is_its_own_level():
    continuum, rejected = fit_continuum(np.array([0.7]), np.array([2.5e6]), AlongWavelengthConfig(),
                                              5.0, 3)
    assert continuum.tolist() == [2.5e6] and not rejected.any()


def test_outliers_are_flagged_but_in_transit_frames_are_not(visit):
    s = visit["series"]["AIRS-CH0"]
    flux = s["photometry_flux"].copy()
    rng = np.random.default_rng(3)
    hits = [(int(b), int(c)) for b, c in zip(rng.integers(0, flux.shape[0], 40), rng.integers(0, 282, 40))]
    for k, (b, c) in enumerate(hits):
        flux[b, c] *= 1.05 if k % 2 else 0.95
    hit_mask = np.zeros(flux.shape, bool)
    hit_mask[tuple(np.array(hits).T)] = True
    outliers = flag_outliers(flux, np.ones(flux.shape, bool), window=11, sigma=5.0, maxiters=3)
    assert outliers[hit_mask].all()
    false = outliers & ~hit_mask
    assert false.sum() <= 2e-4 * flux.size                     # a handful of 5-sigma noise events in 317k
    in_transit = s["transit"] < 1 - 0.5 * visit["depth"][None, 1:]
    assert false[in_transit].mean() <= 2e-4                     # low in-transit frames are not outliers


def test_auto_window_contains_the_transit(visit):
    g = visit["geometry"]
    for inst in INSTRUMENTS:
        result = normalise(visit, inst)
        contacts = g.contact_times(math.sqrt(visit["depth"][1]))
        time_h = visit["series"][inst]["time_s"] / 3600
        in_transit = (time_h > contacts[0]) & (time_h < contacts[3])
        assert not result.oot[in_transit].any()
        assert abs(result.window_h[0] - contacts[0]) < 0.1 and abs(result.window_h[1] - contacts[3]) < 0.1


# ---------------------------------------------------------------------------
# the transit survives the normalisation
# ---------------------------------------------------------------------------


def _box_depth(flux: np.ndarray, good: np.ndarray, time_h: np.ndarray, contacts: np.ndarray) -> np.ndarray:
    """1 - mean(full transit) / mean(out of transit) per channel (a model-free depth proxy)."""
    full = (time_h > contacts[1]) & (time_h < contacts[2])
    out = (time_h < contacts[0] - 0.2) | (time_h > contacts[3] + 0.2)
    f = np.where(good, flux, np.nan)
    return 1 - np.nanmean(f[full], axis=0) / np.nanmean(f[out], axis=0)


def _naive_frame_continuum(flux: np.ndarray, wl: np.ndarray, degree: int = 3) -> np.ndarray:
    """The approach that must NOT be used: divide every frame by its own polynomial continuum."""
    design = np.polynomial.legendre.legvander(2 * (wl - wl.min()) / (wl.max() - wl.min()) - 1, degree)
    coef, *_ = np.linalg.lstsq(design, flux.T, rcond=None)
    return flux / (design @ coef).T


def test_frame_by_frame_continuum_kills_the_depth_ours_keeps_it(visit):
    s, g = visit["series"]["AIRS-CH0"], visit["geometry"]
    contacts = g.contact_times(math.sqrt(visit["depth"][1]))
    time_h = s["time_s"] / 3600
    truth = _box_depth(s["transit"], np.ones(s["transit"].shape, bool), time_h, contacts).mean()
    result = normalise(visit, "AIRS-CH0")
    ours = _box_depth(result.flux_norm, result.flags == 0, time_h, contacts).mean()
    naive = _box_depth(_naive_frame_continuum(s["photometry_flux"], s["channel_wavelength_um"]),
                       np.ones(s["transit"].shape, bool), time_h, contacts).mean()
    assert abs(ours - truth) < 0.01 * truth          # white box depth kept to 1 %
    assert abs(naive) < 0.05 * truth                  # the naive continuum divides the transit out


def test_detrending_keeps_the_depths(tmp_path):
    """Inject a polynomial, wavelength-dependent drift: depths move by much less than their sigma."""
    drifting = simulate_visit(5, drift=True)
    with_drift = run_series_chain(drifting, tmp_path / "drift")
    no_drift = run_series_chain(simulate_visit(5, drift=False), tmp_path / "flat")
    a, b = with_drift["outputs"][("depths", None)].fields, no_drift["outputs"][("depths", None)].fields
    change = np.abs(a["mu"] - b["mu"]) / b["sigma"]
    assert change.max() < 1.0 and np.median(change) < 0.3
    # trace level: in-transit normalised flux / true transit stays 1 in both cases
    transit = drifting["series"]["AIRS-CH0"]["transit"]
    for run in (with_drift, no_drift):
        out = run["outputs"][("trace", "AIRS-CH0")].fields
        ratio = np.where(out["trace_flags"] == 0, out["trace_flux_norm"] / transit, np.nan)
        in_transit = ~np.asarray(out["oot_mask"])
        assert abs(np.nanmean(ratio[in_transit]) - 1) < 1e-4


# ---------------------------------------------------------------------------
# stage
# ---------------------------------------------------------------------------


def test_stage_outputs_metrics_gates_and_diagnostics(visit, tmp_path):
    fields = dict(visit["series"]["AIRS-CH0"])
    fields["photometry_flags"] = fields["photometry_flags"].copy()
    fields["photometry_flags"][10:14, 5] = 4
    cfg = TraceConfig()
    ctx = Setting(visit["planet"], "AIRS-CH0", {"trace": cfg})
    out, metrics = run_stage(trace.STAGE, write_series(fields, tmp_path / "phot"), cfg, ctx, tmp_path / "trace")
    f = out.fields
    b, c = fields["photometry_flux"].shape
    assert f["trace_flux_norm"].shape == f["trace_flux_scale"].shape == f["trace_flags"].shape == (b, c)
    assert f["trace_flags"].dtype == np.uint16 and f["oot_mask"].dtype == bool
    assert np.all(f["trace_flags"][10:14, 5] & 4)
    np.testing.assert_allclose(f["trace_flux_norm"] * f["trace_flux_scale"], fields["photometry_flux"], rtol=1e-12)
    np.testing.assert_allclose(f["trace_flux_err"], np.sqrt(fields["photometry_flux_var"]) / f["trace_flux_scale"])
    oot = np.where(np.asarray(f["oot_mask"])[:, None] & (f["trace_flags"] == 0), f["trace_flux_norm"], np.nan)
    assert np.all(np.abs(np.nanmedian(oot, axis=0) - 1) < 1e-3)       # 1 out of transit in every channel
    assert metrics["norm_median_offset"] < 1e-4 and metrics["invalid_frac"] < 1e-3
    assert 0.8 < metrics["detrend_noise_ratio"] < 1.3 and metrics["detrend_red_noise_beta"] < 1.3
    assert metrics["n_nonfinite"] == 0
    gates = trace.STAGE.gates(metrics, cfg)
    assert {g.name for g in gates} == {"norm_median_offset", "invalid_frac", "oot_frac"}
    assert all(g.passed for g in gates)
    plots = trace.STAGE.diagnostics(out, metrics, ctx.context("trace"))
    image = next(p for p in plots if p.kind == "image")
    rows, cols = image.data.shape                  # rows = wavelength (y axis), columns = time blocks (x axis)
    assert rows == 282 and cols <= 400
    assert {p.kind for p in plots} == {"image", "curve", "histogram"}


@pytest.mark.parametrize("time_method, centroids, continuum, n_params", [
    ("poly", "none", "poly", 3), ("spline", "linear", "spline", 10), ("spline", "quadratic", "lowess", 13),
    (None, "linear", "poly", 1),
])
def test_every_trend_and_continuum_variant_keeps_the_transit(visit, time_method, centroids, continuum, n_params):
    """1 out of transit in every channel, white box depth within 1 % of the truth (None: along_time off)."""
    cfg = TraceConfig()
    cfg.along_time.enabled = time_method is not None
    cfg.along_time.method = time_method or "poly"
    cfg.along_time.centroids, cfg.along_wavelength.method = centroids, continuum
    result = normalise(visit, "AIRS-CH0", cfg)
    assert result.metrics["detrend_n_params"] == n_params
    oot = np.where(result.oot[:, None] & (result.flags == 0), result.flux_norm, np.nan)
    assert np.all(np.abs(np.nanmean(oot, axis=0) - 1) < 2e-3)
    s = visit["series"]["AIRS-CH0"]
    contacts = visit["geometry"].contact_times(math.sqrt(visit["depth"][1]))
    time_h = s["time_s"] / 3600
    truth = _box_depth(s["transit"], np.ones(s["transit"].shape, bool), time_h, contacts).mean()
    assert abs(_box_depth(result.flux_norm, result.flags == 0, time_h, contacts).mean() / truth - 1) < 0.01


def test_ephemeris_mask_uses_the_phase_t0_and_the_star_info_orbit(visit, tmp_path):
    g = visit["geometry"]
    cfgs = {"trace": TraceConfig(), "phase": phase.PhaseConfig()}
    cfgs["trace"].transit_mask.method = "ephemeris"
    cfgs["phase"].ephemeris.t0 = g.t0_h
    ctx = Setting(visit["planet"], "FGS1", cfgs)
    inp = write_series(visit["series"]["FGS1"], tmp_path / "phot")
    out, metrics = run_stage(trace.STAGE, inp, cfgs["trace"], ctx, tmp_path / "trace")
    t1, _, _, t4 = g.contact_times(cfgs["trace"].transit_mask.radius_ratio)
    assert metrics["transit_t1_h"] == pytest.approx(t1) and metrics["transit_t4_h"] == pytest.approx(t4)
    cfgs["phase"].ephemeris.t0 = None
    with pytest.raises(ConfigError, match="calib.trace.transit_mask.method.*calib.phase.ephemeris.t0"):
        run_stage(trace.STAGE, inp, cfgs["trace"], ctx, tmp_path / "again")


def test_unflagged_nan_input_is_rejected_flagged_nan_is_masked(visit, tmp_path):
    fields = dict(visit["series"]["FGS1"])
    fields["photometry_flux"] = fields["photometry_flux"].copy()
    fields["photometry_flux"][7, 0] = np.nan
    cfg = TraceConfig()
    ctx = Setting(visit["planet"], "FGS1", {"trace": cfg})
    with pytest.raises(ValueError, match="require_finite_inputs"):
        run_stage(trace.STAGE, write_series(fields, tmp_path / "a"), cfg, ctx, tmp_path / "ta")
    cfg.validation.require_finite_inputs = False
    out, _ = run_stage(trace.STAGE, write_series(fields, tmp_path / "b"), cfg, ctx, tmp_path / "tb")
    assert out.fields["trace_flags"][7, 0] & DQ.NONFINITE


def test_light_curve_helper_matches_the_simulated_transit(visit):
    s, g = visit["series"]["FGS1"], visit["geometry"]
    model = light_curve(s["time_s"] / 3600, g, visit["depth"][:1], visit["u1"][:1], visit["u2"][:1])
    np.testing.assert_allclose(model, s["transit"])


def test_a_white_light_without_a_locatable_transit_is_a_named_data_error():
    """Too few usable samples, samples bunched in time or no positive level: DataError, not numpy/scipy errors."""
    from calib_core.stages.errors import DataError, StageError
    from calib_core.transit import estimate_transit

    time_h = np.linspace(0.0, 7.5, 500)
    flux, weight = np.ones(500), np.zeros(500)
    weight[:5] = 1.0
    with pytest.raises(DataError, match="has 5 usable samples of 500; at least 12"):
        estimate_transit(time_h, flux, weight)
    weight[:] = 0.0
    weight[100:110] = weight[400:410] = 1.0
    with pytest.raises(DataError, match=r"20 usable samples fall in 2 occupied time bins; at least 5"):
        estimate_transit(time_h, flux, weight)
    with pytest.raises(DataError, match=r"median level 0\.0 of its usable samples; expected a positive") as err:
        estimate_transit(time_h, np.zeros(500), np.ones(500))
    assert str(StageError.wrap("trace", "FGS1", err.value)).startswith("trace/FGS1: white-light curve: median level")
