"""Phase stage: time units against astropy, fold and bin against lightkurve, windows and coverage."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.time import Time, TimeDelta

from calib_core.config import ConfigError, compose_config
from calib_core.stages.phase import step as phase
from calib_core.stages.trace import step as trace
from calib_core.stages.trace.config import TraceConfig
from stagectx import Setting
from calib_core.timeutil import TIME_UNITS, hours_to_unit, unit_to_hours
from test_stage_trace import FakePlanet, run_stage, simulate_visit, write_series

EPOCH = "2025-06-30T23:59:30"   # a leap-second-free day; UTC -> TDB offset is ~69.2 s


@pytest.fixture(scope="module")
def visit():
    return simulate_visit(21)


@pytest.fixture(scope="module")
def traced(visit, tmp_path_factory):
    """Trace outputs of both instruments of ``visit``."""
    root = tmp_path_factory.mktemp("phase_trace")
    cfg = TraceConfig()
    out = {}
    for inst in ("FGS1", "AIRS-CH0"):
        ctx = Setting(visit["planet"], inst, {"trace": cfg})
        out[inst], _ = run_stage(trace.STAGE, write_series(visit["series"][inst], root / inst), cfg, ctx,
                                 root / "trace" / inst)
    return out


def _lightkurve():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import lightkurve
    return lightkurve


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------



@pytest.mark.parametrize("overrides, key, fragment", [
    (["calib.phase.ephemeris.source=config"], "calib.phase.ephemeris.period_days", "must be set"),
    (["calib.phase.binning.nbins=0"], "calib.phase.binning.nbins", "must be >= 1"),
    (["calib.phase.binning.aggregator=mode"], "calib.phase.binning.aggregator", "must be one of mean, median"),
    (["calib.phase.time.unit=bjd_tdb"], "calib.phase.time.start_epoch", "must be set"),
    (["calib.phase.time.start_epoch=yesterday"], "calib.phase.time.start_epoch", "ISO 8601"),
    (["calib.phase.ephemeris.t0=2460000.3", "calib.phase.ephemeris.t0_unit=bjd_tdb"],
     "calib.phase.time.start_epoch", "must be set"),
])
def test_bad_values_raise_config_error_naming_the_key(overrides, key, fragment):
    with pytest.raises(ConfigError) as err:
        compose_config("calib/nominal", overrides)
    assert str(err.value).startswith(key + " = ") and fragment in str(err.value)


def test_profile_bin_counts():
    assert [compose_config(f"calib/{p}").calib.phase.binning.nbins for p in ("fast", "nominal", "strict")] == [
        120, 200, 400]


# ---------------------------------------------------------------------------
# time units (oracle: astropy Time arithmetic written out here)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("unit", TIME_UNITS)
def test_time_units_against_astropy(unit):
    hours = np.array([0.0, 0.25, 3.7, 7.5])
    start = Time(EPOCH, scale="utc")
    stamps = start + hours * u.hour
    expected = {"hours_since_start": hours, "bjd_tdb": stamps.tdb.jd, "mjd": stamps.utc.mjd,
                "unix": stamps.unix}[unit]
    got = hours_to_unit(hours, unit, EPOCH)
    np.testing.assert_allclose(got, expected, rtol=0, atol={"unix": 1e-6}.get(unit, 1e-10))
    np.testing.assert_allclose(unit_to_hours(got, unit, EPOCH), hours, rtol=0, atol=2e-8)


def test_bjd_tdb_is_the_utc_to_tdb_scale_change_only():
    bjd = hours_to_unit(0.0, "bjd_tdb", EPOCH)
    mjd = hours_to_unit(0.0, "mjd", EPOCH)
    offset_s = (bjd - 2400000.5 - mjd) * 86400.0      # TDB - UTC at the epoch: 32.184 + 37 leap s + ~1.6 ms
    assert offset_s == pytest.approx(69.184, abs=0.002)
    unix = hours_to_unit(np.array([0.0, 1.0]), "unix", EPOCH)
    assert np.diff(unix)[0] == pytest.approx(3600.0, abs=1e-6)


def test_absolute_unit_without_epoch_is_an_error():
    with pytest.raises(ValueError, match="needs the visit start epoch"):
        hours_to_unit([1.0], "mjd")


# ---------------------------------------------------------------------------
# fold and bin against lightkurve
# ---------------------------------------------------------------------------


def _series(seed: int = 4):
    """Three days of 10-min samples of a 0.9-d planet (three transits), 5 % flagged samples."""
    rng = np.random.default_rng(seed)
    time_h = np.sort(rng.uniform(0, 72, 432))
    period_d, t0_h = 0.9, 5.3
    flux = 1 - 0.01 * (np.abs(phase.fold_phase(time_h, t0_h, period_d)) < 0.04) + rng.normal(0, 1e-3, time_h.size)
    err = np.full(time_h.size, 1e-3) * rng.uniform(0.8, 1.2, time_h.size)
    good = rng.random(time_h.size) > 0.05
    return time_h, flux, err, good, period_d, t0_h


def _lk_curve(time_h, flux, err, good, with_err=True):
    lk = _lightkurve()
    jd = hours_to_unit(time_h, "bjd_tdb", EPOCH)
    kwargs = {"flux_err": np.where(good, err, np.nan)} if with_err else {}
    return lk.LightCurve(time=Time(jd, format="jd", scale="tdb"), flux=np.where(good, flux, np.nan), **kwargs)


@pytest.mark.parametrize("normalize, wrap", [(True, 0.5), (False, 0.5), (True, 0.3)])
def test_fold_matches_lightkurve(normalize, wrap):
    time_h, flux, err, good, period_d, t0_h = _series()
    lc = _lk_curve(time_h, flux, err, good)
    epoch = Time(hours_to_unit(t0_h, "bjd_tdb", EPOCH), format="jd", scale="tdb")
    kw = {"wrap_phase": wrap if normalize else wrap * period_d}
    folded = lc.fold(period=period_d, epoch_time=epoch, normalize_phase=normalize, **kw)
    ours = phase.fold_phase(time_h, t0_h, period_d, wrap, normalize)
    theirs = np.asarray(folded.time.value) if normalize else folded.time.to_value("day") * 24.0
    # tolerance: float64 Julian dates resolve ~40 us (1e-7 h, 3e-9 cycles of 0.9 d)
    np.testing.assert_allclose(np.sort(ours), np.sort(theirs), rtol=0, atol=1e-7)
    assert ours.min() >= wrap - 1 - 1e-12 if normalize else True
    np.testing.assert_allclose(np.asarray(folded.flux.value)[np.argsort(theirs)],
                               np.where(good, flux, np.nan)[np.argsort(ours)], equal_nan=True)


def _lk_binned(time_h, flux, err, good, period_d, t0_h, nbins, with_err=True, aggregate=None):
    """lightkurve fold (phase in days) + bin on our edges.

    Returns the folded series as lightkurve holds it (phase in hours, flux and
    error with NaN for flagged samples, in its order), our edges over those
    phases, and lightkurve's bin centres (h), flux and flux_err.  Both binnings
    get the same phases, so a sample sitting on the first edge cannot fall on
    different sides of it through last-digit differences of the fold (tested
    separately).
    """
    lc = _lk_curve(time_h, flux, err, good, with_err)
    epoch = Time(hours_to_unit(t0_h, "bjd_tdb", EPOCH), format="jd", scale="tdb")
    folded = lc.fold(period=period_d, epoch_time=epoch)
    ph = folded.time.to_value("day") * 24.0
    series = (ph, np.asarray(folded.flux.value), np.asarray(folded.flux_err.value))
    edges = phase.bin_edges(ph, nbins)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        binned = folded.bin(time_bin_size=(edges[1] - edges[0]) / 24.0,
                            time_bin_start=TimeDelta(edges[0] / 24.0, format="jd"), aggregate_func=aggregate)
    return series, edges, (binned.time.to_value("day") * 24.0)[:nbins], np.asarray(binned.flux.value)[:nbins], \
        np.asarray(binned.flux_err.value)[:nbins]


def test_binning_matches_lightkurve_mean_and_rms_error():
    """Same edges and means; lightkurve's flux_err is the rms error sqrt(sum err^2 / n) = ours * sqrt(n)."""
    time_h, flux, err, good, period_d, t0_h = _series()
    (ph, f, e), edges, lk_centres, lk_flux, lk_err = _lk_binned(time_h, flux, err, good, period_d, t0_h, 40)
    b = phase.bin_series(ph, f[:, None], e[:, None], np.isfinite(f)[:, None], edges, "mean", "propagated")
    n = b.count[:, 0]
    # the last bin is closed here (numpy histogram); lightkurve opens one more bin when rounding puts the
    # largest phase on the closing edge, so bins 0 .. nbins-2 are compared
    filled = (n > 0) & (np.arange(n.size) < n.size - 1)
    np.testing.assert_allclose(b.centres, lk_centres, atol=1e-9)
    np.testing.assert_allclose(b.flux[filled, 0], lk_flux[filled], rtol=1e-12)
    np.testing.assert_allclose(b.err[filled, 0] * np.sqrt(n[filled]), lk_err[filled], rtol=1e-12)
    assert n.sum() == good.sum()                  # every finite, unflagged sample counted once


def test_binning_matches_lightkurve_median_and_scatter():
    """Median aggregator; without flux_err lightkurve reports nanstd (ddof=0) = ours * sqrt(n(n-1)/n) / sqrt(pi/2)."""
    time_h, flux, err, good, period_d, t0_h = _series(7)
    (ph, f, e), edges, _, lk_flux, _ = _lk_binned(time_h, flux, err, good, period_d, t0_h, 25,
                                                  aggregate=np.nanmedian)
    *_, lk_std = _lk_binned(time_h, flux, err, good, period_d, t0_h, 25, with_err=False, aggregate=np.nanmedian)
    b = phase.bin_series(ph, f[:, None], e[:, None], np.isfinite(f)[:, None], edges, "median", "scatter")
    n = b.count[:, 0]
    ok = (n >= 2) & (np.arange(n.size) < n.size - 1)      # last bin: see the test above
    np.testing.assert_allclose(b.flux[ok, 0], lk_flux[ok], rtol=1e-12)
    scatter = b.err[ok, 0] / math.sqrt(math.pi / 2) * np.sqrt(n[ok]) * np.sqrt((n[ok] - 1) / n[ok])
    np.testing.assert_allclose(scatter, lk_std[ok], rtol=1e-10)


def test_counts_exclude_nan_and_flagged_samples_and_flags_mark_sparse_bins():
    ph = np.array([0.0, 0.1, 0.2, 0.3, 1.6, 1.9, 2.0])
    flux = np.array([1.0, np.nan, 1.0, 1.0, 1.0, 1.0, 1.0])[:, None]
    err = np.full_like(flux, 0.1)
    good = np.array([True, True, False, True, True, True, True])[:, None]
    b = phase.bin_series(ph, flux, err, good, np.array([0.0, 1.0, 1.5, 2.0]), "mean", "max")
    assert b.count[:, 0].tolist() == [2, 0, 3]     # NaN and flagged samples do not count; last bin closed
    np.testing.assert_allclose(b.err[[0, 2], 0], [0.1 / math.sqrt(2), 0.1 / math.sqrt(3)])
    assert np.isnan(b.flux[1, 0]) and np.isnan(b.err[1, 0])
    flags = phase.bin_flags(b.count, min_count=3)
    assert flags[:, 0].tolist() == [phase.PhaseFlag.LOW_COUNT, phase.PhaseFlag.EMPTY, 0]


# ---------------------------------------------------------------------------
# stage
# ---------------------------------------------------------------------------


def _run_phase(traced, visit, inst, cfg, tmp_path, planet=None):
    ctx = Setting(planet or visit["planet"], inst, {"phase": cfg})
    return run_stage(phase.STAGE, traced[inst], cfg, ctx, tmp_path / inst)


def test_stage_estimates_t0_windows_and_coverage(traced, visit, tmp_path):
    g = visit["geometry"]
    contacts = g.contact_times(math.sqrt(visit["depth"][1]))
    cfg = phase.PhaseConfig()
    for inst in ("FGS1", "AIRS-CH0"):
        out, metrics = _run_phase(traced, visit, inst, cfg, tmp_path)
        assert abs(metrics["t0_h"] - g.t0_h) * 60 < 2.0                      # t0 within 2 minutes
        assert metrics["windows_method"] == "geometry"
        np.testing.assert_allclose(metrics["windows_h"], contacts, atol=0.05)
        f = out.fields
        assert f["binned_flux"].shape == f["binned_flux_err"].shape == f["phase_flags"].shape == (
            200, f["channel_grid"].size)
        np.testing.assert_allclose(f["windows"], (np.asarray(metrics["windows_h"]) - metrics["t0_h"])
                                   / (24 * g.period_d))
        assert metrics["coverage_frac"] == 1.0 and metrics["in_transit_coverage"] == 1.0
        assert all(gate.passed for gate in phase.STAGE.gates(metrics, cfg))
        in_transit = (f["binned_phase"] > f["windows"][1]) & (f["binned_phase"] < f["windows"][2])
        assert np.nanmean(f["binned_flux"][in_transit]) < 1 - 0.8 * visit["depth"][1]
        plots = phase.STAGE.diagnostics(out, metrics, Setting(None, inst, {}).context("phase"))
        assert plots[0].kind == "curve" and len(plots[0].yerr) == 200


def test_sparse_bins_fail_coverage_but_the_white_light_is_still_drawn(traced, visit, tmp_path):
    """Every bin below min_count: flagged, the coverage gate fails, and the plot shows the low-count bins."""
    cfg = phase.PhaseConfig()
    cfg.binning.min_count = 10_000
    out, metrics = _run_phase(traced, visit, "FGS1", cfg, tmp_path)
    assert (np.asarray(out.fields["phase_flags"]) & int(phase.PhaseFlag.LOW_COUNT)).all()
    assert metrics["coverage_frac"] == 0.0
    assert not next(g for g in phase.STAGE.gates(metrics, cfg) if g.name == "coverage_frac").passed
    white = phase.STAGE.diagnostics(out, metrics, Setting(None, "FGS1", {}).context("phase"))[0]
    assert "low-count bins shown" in white.title
    y = np.asarray(white.y, float)
    assert np.isfinite(y).mean() > 0.9 and abs(np.nanmedian(y) - 1.0) < 0.01


def test_config_ephemeris_in_bjd_tdb_and_time_axis(traced, visit, tmp_path):
    g = visit["geometry"]
    cfg = phase.PhaseConfig()
    cfg.ephemeris.source, cfg.ephemeris.period_days = "config", g.period_d
    cfg.ephemeris.t0, cfg.ephemeris.t0_unit = float(hours_to_unit(g.t0_h, "bjd_tdb", EPOCH)), "bjd_tdb"
    cfg.time.unit, cfg.time.start_epoch = "mjd", EPOCH
    cfg.fold.normalize_phase = False
    out, metrics = _run_phase(traced, visit, "AIRS-CH0", cfg, tmp_path, planet=FakePlanet(None, None, None))
    assert metrics["t0_source"] == "config" and metrics["t0_h"] == pytest.approx(g.t0_h, abs=1e-7)
    assert metrics["t0_offset_h"] < 2 / 60 and metrics["windows_method"] == "estimate"
    assert out.meta["phase_unit"] == "h" and out.meta["time_unit"] == "mjd"
    time_s = np.asarray(traced["AIRS-CH0"].fields["time_s"])
    expected = (Time(EPOCH, scale="utc") + time_s * u.s).utc.mjd
    np.testing.assert_allclose(out.fields["time"], expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(out.fields["phase_series"], time_s / 3600 - g.t0_h, atol=1e-6)
    assert out.meta["t0"] == pytest.approx(float(hours_to_unit(g.t0_h, "mjd", EPOCH)), abs=1e-9)


def test_wrong_ephemeris_fails_the_centring_gate(traced, visit, tmp_path):
    cfg = phase.PhaseConfig()
    cfg.ephemeris.t0 = visit["geometry"].t0_h + 0.5
    _, metrics = _run_phase(traced, visit, "AIRS-CH0", cfg, tmp_path)
    gates = {g.name: g for g in phase.STAGE.gates(metrics, cfg)}
    assert not gates["t0_offset_h"].passed and metrics["t0_offset_h"] == pytest.approx(0.5, abs=0.02)


def test_star_info_period_without_star_info_is_a_config_error(traced, visit, tmp_path):
    with pytest.raises(ConfigError, match="calib.phase.ephemeris.source"):
        _run_phase(traced, visit, "FGS1", phase.PhaseConfig(), tmp_path, planet=FakePlanet(None, None, None))
