"""Demo generator tests: physics against the truth with an independent calibration oracle.

The oracle below is written from the data description only (ADC -> common mode ->
numpy polyval linear correction -> dark * exptime -> CDS -> flat) and does not use
any generator internals except the public truth files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from astropy.stats import sigma_clip

from calib_core.io import INSTRUMENTS, open_planet
from calib_core.sim import DEMO_PLANET_ID, load_truth, make_demo
from calib_core.sim import demo as demo_module
from calib_core.sim import settings as demo_settings
from calib_core.sim import writer as demo_writer
from oracles.demo import expected_cds

N_PAIRS = {"AIRS-CH0": 40, "FGS1": 200}  # FGS1 is cheap; more pairs make its light curve robust
DROP = 2


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = make_demo(tmp_path_factory.mktemp("demo") / "data", n_pairs=N_PAIRS, drop_pairs=DROP)
    return root, open_planet(root), load_truth(root, DEMO_PLANET_ID)


@pytest.fixture(scope="module")
def calibrated(demo):
    """Oracle output per instrument (computed once per module)."""
    _, planet, truth = demo
    return {inst: _calibrate(planet, truth, inst) for inst in INSTRUMENTS}


def _calibrate(planet, truth, instrument):
    """Independent oracle; returns calibrated CDS (e-), its predicted variance (e-^2) and a good mask."""
    raw = planet.read_frames(instrument).astype(np.float64)
    gain, offset = planet.adc(instrument)
    cal = planet.calibration(instrument)
    axis = planet.axis(instrument)
    electrons = raw / gain + offset - truth[f"{instrument}_common_mode"][:, None, None]
    linear = np.polynomial.polynomial.polyval(electrons, cal.linear_corr, tensor=False)
    slope = np.polynomial.polynomial.polyval(electrons, np.polynomial.polynomial.polyder(cal.linear_corr),
                                             tensor=False)
    linear -= cal.dark * axis.exptime_s[:, None, None]
    flat = np.where(cal.dead, 1.0, cal.flat)
    cds = (linear[1::2] - linear[0::2]) / flat
    expected = expected_cds(planet.root, planet.planet_id, instrument)
    slope2 = slope[1::2] ** 2 + slope[0::2] ** 2
    var = (slope2 * (cal.read ** 2 + (1 / gain) ** 2 / 12) + expected * flat + cal.dark * 4.5) / flat ** 2

    good = np.broadcast_to(~(truth[f"{instrument}_hot"] | truth[f"{instrument}_dead"]), cds.shape).copy()
    good[truth["instruments"][instrument]["dropped_pairs"]] = False
    for hit in truth["cosmic_rays"]:
        if hit["instrument"] == instrument:
            good[hit["pair"], hit["row"], hit["col"]] = False
    return cds, var, good, expected


def test_oracle_linear_correction_matches_poly1d(demo):
    """The oracle's vectorised polyval equals the reference's per-pixel np.poly1d (NB25 step 3)."""
    _, planet, _ = demo
    cal = planet.calibration("AIRS-CH0")
    raw = planet.read_frames("AIRS-CH0", stop=6).astype(np.float64) / 0.4369 - 1000.0
    vectorised = np.polynomial.polynomial.polyval(raw, cal.linear_corr, tensor=False)
    for r, c in [(0, 0), (15, 300), (16, 100), (31, 355)]:
        per_pixel = np.poly1d(np.flip(cal.linear_corr[:, r, c]))(raw[:, r, c])
        np.testing.assert_allclose(vectorised[:, r, c], per_pixel, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("instrument", INSTRUMENTS)
def test_calibrated_cds_matches_expected(calibrated, instrument):
    cds, var, good, expected = calibrated[instrument]
    resid = np.where(good, cds - expected, np.nan)
    pix = good.any(axis=0)
    n = good[:, pix].sum(axis=0)
    mean_var = np.nanmean(np.where(good, var, np.nan)[:, pix], axis=0)
    z = np.nanmean(resid[:, pix], axis=0) / np.sqrt(mean_var / n)
    assert abs(z.mean()) < 0.1, "mean over pairs of (calibrated - expected) is not consistent with 0"
    assert 0.9 < z.std() < 1.1
    chi2 = resid[good] ** 2 / var[good]
    assert 0.95 < chi2.mean() < 1.05, "per-pixel scatter does not match read + shot + quantisation noise"
    bright = good & (expected > 0.3 * expected.max())
    assert bright.sum() > 100
    assert 0.85 < (resid[bright] ** 2 / var[bright]).mean() < 1.2


def _limb_darkened_depth(truth, star, t_h, targets, weights):
    """Small-planet approximation of the transit depth at times ``t_h`` (independent of batman).

    depth(t) = sum_j w_j k_j^2 I_j(mu(t)) / <I_j> / sum_j w_j, with quadratic limb darkening
    I(mu) = 1 - u1 (1 - mu) - u2 (1 - mu)^2 and disc average <I> = 1 - u1/3 - u2/6.
    """
    phase = 2 * np.pi * (t_h - truth["t0_h"]) / (star["P"] * 24)
    inc = np.radians(star["i"])
    z = star["sma"] * np.sqrt(np.sin(phase) ** 2 + (np.cos(inc) * np.cos(phase)) ** 2)
    mu = np.sqrt(np.clip(1 - z ** 2, 0, 1))[:, None]
    u1, u2 = np.array(truth["u1"])[targets], np.array(truth["u2"])[targets]
    k2 = np.array(truth["depth"])[targets]
    ratio = (1 - u1 * (1 - mu) - u2 * (1 - mu) ** 2) / (1 - u1 / 3 - u2 / 6)
    return (k2 * ratio) @ weights / weights.sum()


@pytest.mark.parametrize("instrument", INSTRUMENTS)
def test_white_light_transit_depth(demo, calibrated, instrument):
    _, planet, truth = demo
    cds, _, good, _ = calibrated[instrument]
    pixels = good.sum(axis=0) >= N_PAIRS[instrument] - DROP - 1
    if instrument == "AIRS-CH0":
        pixels[:, :39] = pixels[:, 321:] = False
    keep = good[:, pixels].all(axis=1)  # pairs without any excluded pixel (drops, cosmic rays)
    flux = cds[:, pixels].sum(axis=1)[keep]
    t_h = truth[f"{instrument}_pair_time_s"][keep] / 3600.0
    out = np.abs(t_h - truth["t0_h"]) > truth["t14_h"] / 2 + 0.1
    inside = np.abs(t_h - truth["t0_h"]) < truth["t14_h"] / 4
    assert out.sum() >= 8 and inside.sum() >= 3
    depth = 1 - flux[inside] / np.median(flux[out])
    if instrument == "FGS1":
        targets, weights = np.array([0]), np.array([1.0])
        label = truth["depth"][0]
    else:
        targets = np.arange(1, 283)
        weights = truth["AIRS-CH0_sky"].sum(axis=0)[39:321][::-1]  # flux per target, ascending wavelength
        label = np.average(truth["depth"][1:], weights=weights)
    predicted = _limb_darkened_depth(truth, planet.star_info(), t_h[inside], targets, weights)
    noise = np.std(flux[out] / np.median(flux[out])) * 1.25 / np.sqrt(inside.sum())  # error of a median
    tolerance = 4 * noise + 0.03 * np.median(predicted)  # + small-planet approximation error
    assert abs(np.median(depth) - np.median(predicted)) < tolerance
    assert 0.8 * label - 4 * noise < np.median(depth) < 1.35 * label + 4 * noise, \
        "limb darkening changes the depth moderately"


def test_truth_and_star_info_ranges(demo):
    _, planet, truth = demo
    star = planet.star_info()
    assert 3.0 <= star["P"] <= 7.5 and 6 <= star["sma"] <= 16 and 86.5 <= star["i"] <= 90 and star["e"] == 0
    assert 2.5 <= truth["t0_h"] <= 5.0
    assert truth["t0_h"] - truth["t14_h"] / 2 > 0.5 and truth["t0_h"] + truth["t14_h"] / 2 < 7.0
    depth = np.array(truth["depth"])
    assert 0.006 - 2e-4 <= depth.min() and depth.max() <= 0.03 + 3e-4
    airs = depth[1:]
    assert 50e-6 * 0.99 < airs.max() - airs.min() < 300e-6 * 1.01
    assert abs(depth[0] - truth["base_depth"]) <= 200e-6
    u1, u2 = np.array(truth["u1"]), np.array(truth["u2"])
    assert np.all((0.1 <= u1) & (u1 <= 0.5) & (0.05 <= u2) & (u2 <= 0.3))
    assert np.all(np.diff(u1[1:]) < 0), "limb darkening should vary smoothly (decrease with wavelength)"
    np.testing.assert_array_equal(planet.labels(), depth)
    for inst in INSTRUMENTS:
        meta = truth["instruments"][inst]
        width = 356 if inst == "AIRS-CH0" else 1
        assert truth[f"{inst}_jitter"].shape == (N_PAIRS[inst], 2)
        assert truth[f"{inst}_drift"].shape == truth[f"{inst}_transit"].shape == (N_PAIRS[inst], width)
        assert np.abs(truth[f"{inst}_drift"] - 1).max() <= 1e-3
        rms = truth[f"{inst}_jitter"].std()
        assert 0.6 * meta["jitter_rms_px"] < rms < 1.5 * meta["jitter_rms_px"]
        assert len(meta["dropped_pairs"]) == DROP
        assert truth[f"{inst}_transit"].min() < 1 - 0.8 * truth["base_depth"]


def test_scene_magnitudes(demo):
    _, _, truth = demo
    airs = truth["AIRS-CH0_sky"] * 4.5
    for col, total in [(39, 5.5e3), (100, 2.4e4), (200, 4.9e4), (300, 1.49e5), (0, 87), (355, 1.7e3)]:
        assert airs[:, col].sum() == pytest.approx(total, rel=1e-6)
    rows = airs.sum(axis=1) / airs.sum()
    np.testing.assert_allclose(rows[13:19], [0.042, 0.112, 0.265, 0.295, 0.131, 0.039], atol=0.01)
    assert rows[12:20].sum() == pytest.approx(0.926, abs=0.005)
    fgs = truth["FGS1_sky"] * 0.1
    assert fgs.sum() == pytest.approx(2.21e5, rel=1e-6)
    assert fgs[13:19, 13:19].sum() / fgs.sum() == pytest.approx(0.856, abs=0.005)
    assert np.unravel_index(fgs.argmax(), fgs.shape) == (15, 15)


def test_hot_and_dead_pixels(demo):
    _, planet, truth = demo
    for inst, dead_range in [("AIRS-CH0", (0.001, 0.003)), ("FGS1", (0.001, 0.004))]:
        hot, dead = truth[f"{inst}_hot"], truth[f"{inst}_dead"]
        assert 0.005 <= hot.mean() <= 0.01
        assert dead_range[0] <= dead.mean() <= dead_range[1]
        assert not np.any(hot & dead)
        cal = planet.calibration(inst)
        np.testing.assert_array_equal(cal.dead, dead)
        clipped = sigma_clip(cal.dark, sigma=5, maxiters=5).mask  # the reference's hot-pixel rule
        assert np.all(clipped[hot])
        assert truth["instruments"][inst]["n_very_hot"] >= 1
    # very hot AIRS pixels stand out in the raw CDS frames too
    raw = planet.read_frames("AIRS-CH0").astype(np.float64)
    cds = np.median(raw[1::2] - raw[0::2], axis=0) / 0.4369
    very_hot = truth["AIRS-CH0_dark"] >= 50
    assert very_hot.any()
    star = np.median(expected_cds(planet.root, DEMO_PLANET_ID, "AIRS-CH0") * truth["AIRS-CH0_flat"], axis=0)
    assert np.all(cds[very_hot] - star[very_hot] > 100)
    # dead pixels record nothing: their CDS is pure read noise around zero
    dead = truth["AIRS-CH0_dead"]
    noise = 1.25 * np.sqrt(2) * planet.calibration("AIRS-CH0").read[dead] / np.sqrt(N_PAIRS["AIRS-CH0"])
    assert np.all(np.abs(cds[dead]) < 5 * noise + 3)


def test_saturation_only_from_big_cosmic_rays(demo):
    _, planet, truth = demo
    for inst in INSTRUMENTS:
        raw = planet.read_frames(inst)
        saturated = set(zip(*np.nonzero(raw == 65535)))
        big = {(h["frame"], h["row"], h["col"]) for h in truth["cosmic_rays"]
               if h["instrument"] == inst and h["saturating"]}
        assert saturated == big and len(big) == demo_settings.N_SATURATING_HITS
        hits = [h for h in truth["cosmic_rays"] if h["instrument"] == inst and not h["saturating"]]
        assert len(hits) >= demo_settings.CR_MIN_HITS
        assert all(500 * 0.1 <= h["electrons"] <= 20000 for h in hits)
        star_peak = truth[f"{inst}_sky"].max() * (0.1 + truth["instruments"][inst]["cds_s"]) * 1.1
        assert (star_peak + 1000) * 0.4369 < 0.5 * 65535, "the star must stay far from the ADC ceiling"


def test_cosmic_rays_in_calibrated_cds(demo, calibrated):
    _, planet, truth = demo
    cds, var, _, expected = calibrated["AIRS-CH0"]
    for hit in truth["cosmic_rays"]:
        if hit["instrument"] == "AIRS-CH0" and not hit["saturating"]:
            k, r, c = hit["pair"], hit["row"], hit["col"]
            others = sum(h["electrons"] for h in truth["cosmic_rays"] if h["instrument"] == "AIRS-CH0"
                         and (h["pair"], h["row"], h["col"]) == (k, r, c))
            flat = planet.calibration("AIRS-CH0").flat[r, c]
            excess = cds[k, r, c] - expected[k, r, c]
            assert abs(excess - others / flat) < 6 * np.sqrt(var[k, r, c])


def test_dropped_pairs_are_zero_rows(demo):
    _, planet, truth = demo
    for inst in INSTRUMENTS:
        raw = planet.read_frames(inst)
        dropped = truth["instruments"][inst]["dropped_pairs"]
        zero_frames = np.flatnonzero(raw.reshape(len(raw), -1).max(axis=1) == 0)
        np.testing.assert_array_equal(zero_frames, np.sort(np.concatenate([2 * np.array(dropped),
                                                                           2 * np.array(dropped) + 1])))
        assert not any(h["pair"] in dropped for h in truth["cosmic_rays"] if h["instrument"] == inst)


def test_linear_corr_monotonic_to_adc_ceiling(demo):
    _, planet, _ = demo
    x = np.linspace(-2000.0, 65535 / 0.4369 - 1000.0, 400)
    for inst in INSTRUMENTS:
        lc = planet.calibration(inst).linear_corr
        slope = np.polynomial.polynomial.polyval(x[:, None, None], np.polynomial.polynomial.polyder(lc),
                                                 tensor=False)
        assert slope.min() > 0.9
        assert np.abs(lc[1] - 1).max() <= 0.02 + 1e-12 and abs(np.median(lc[1]) - 1) < 0.002


def test_expected_cds_pair_subset(demo):
    root, _, _ = demo
    whole = expected_cds(root, DEMO_PLANET_ID, "FGS1")
    np.testing.assert_array_equal(expected_cds(root, DEMO_PLANET_ID, "FGS1", [3, 0, 17]), whole[[3, 0, 17]])
    assert whole.shape == (N_PAIRS["FGS1"], 32, 32) and whole.dtype == np.float64


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_bytes(tmp_path):
    kwargs = {"n_pairs": 6, "drop_pairs": 1}
    a = _tree_digest(make_demo(tmp_path / "a", seed=5, **kwargs))
    b = _tree_digest(make_demo(tmp_path / "b", seed=5, **kwargs))
    c = _tree_digest(make_demo(tmp_path / "c", seed=6, **kwargs))
    assert a == b
    assert len(a) == 5 + 2 * (1 + 5) + 1 + 2 * 10  # root files, signals + maps, truth.json, npy
    signal = f"train/{DEMO_PLANET_ID}/AIRS-CH0_signal_0.parquet"
    assert a[signal] != c[signal]


def test_out_dir_protection_and_atomicity(tmp_path, monkeypatch):
    out = tmp_path / "d"
    make_demo(out, n_pairs=4)
    with pytest.raises(FileExistsError, match="not empty"):
        make_demo(out, n_pairs=4)
    make_demo(out, n_pairs=5, overwrite=True, seed=9)
    assert open_planet(out).n_frames("FGS1") == 10
    assert not list(out.glob(".tmp-*"))

    def fail(*args, **kwargs):
        raise RuntimeError("interrupted")

    fresh = tmp_path / "fresh"
    monkeypatch.setattr(demo_module, "write_metadata", fail)
    with pytest.raises(RuntimeError, match="interrupted"):
        make_demo(fresh, n_pairs=4)
    assert list(fresh.iterdir()) == []


def test_argument_validation(tmp_path):
    with pytest.raises(ValueError, match="either full=True or n_pairs"):
        make_demo(tmp_path / "x", full=True, n_pairs=10)
    with pytest.raises(ValueError, match="n_pairs for AIRS-CH0"):
        make_demo(tmp_path / "x", n_pairs=6000)
    with pytest.raises(ValueError, match="drop_pairs"):
        make_demo(tmp_path / "x", n_pairs=4, drop_pairs=4)
    with pytest.raises(ValueError, match="n_pairs must be an int or a dict"):
        make_demo(tmp_path / "x", n_pairs={"FGS1": 4})


def test_full_size_axis_layout():
    """Full size reproduces the real axis_info (5625 AIRS pairs at 4.8 s, 67500 FGS pairs at 0.4 s)."""
    counts = demo_module._resolve_n_pairs(True, None)
    assert counts == {"AIRS-CH0": 5625, "FGS1": 67500}
    cols = demo_writer._axis_columns(counts)
    assert all(v.size == 135000 for v in cols.values())
    airs_h = cols["AIRS-CH0-axis0-h"]
    assert np.isfinite(airs_h).sum() == 11250
    np.testing.assert_allclose(airs_h[:4] * 3600, [0.1, 0.2, 4.9, 5.0], atol=1e-9)
    assert airs_h[11249] == pytest.approx(7.4987, abs=1e-4)
    np.testing.assert_allclose(cols["FGS1-axis0-h"][:5] * 3600, [0.1, 0.2, 0.5, 0.6, 0.9], atol=1e-9)
    assert cols["FGS1-axis0-h"][-1] == pytest.approx(7.49994, abs=1e-5)
    assert np.nanmax(cols["AIRS-CH0-integration_time"]) == 4.5


def test_ensure_demo_generates_once(tmp_path):
    root = demo_module.ensure_demo(seed=0, cache_dir=tmp_path)
    assert root == tmp_path / f"demo-v{demo_settings.GENERATOR_VERSION}-seed0"
    signal = open_planet(root).signal_path("AIRS-CH0")
    assert open_planet(root).n_frames("AIRS-CH0") == 2 * demo_settings.DEFAULT_N_PAIRS
    stamp = signal.stat().st_mtime_ns
    assert demo_module.ensure_demo(seed=0, cache_dir=tmp_path) == root
    assert signal.stat().st_mtime_ns == stamp


def test_ensure_demo_asked_at_once_generates_once(tmp_path, monkeypatch):
    """An app server and a calibration starting together on a fresh machine: one generates, the other waits."""
    import threading
    import time

    calls = []

    def slow_make_demo(root, seed, overwrite):
        calls.append(root)
        time.sleep(0.5)                                    # long enough for the other caller to arrive
        (Path(root) / "train" / str(DEMO_PLANET_ID)).mkdir(parents=True)
        return root

    monkeypatch.setattr(demo_module, "make_demo", slow_make_demo)
    roots = []
    threads = [threading.Thread(target=lambda: roots.append(demo_module.ensure_demo(seed=0, cache_dir=tmp_path)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(roots)) == 1 and len(roots) == 3
    assert (roots[0] / "train" / str(DEMO_PLANET_ID)).is_dir()
