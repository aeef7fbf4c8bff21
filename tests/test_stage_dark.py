"""Dark stage: kernels against the organisers' reference steps, hot pixels against demo truth, config and gates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ariel_data_preprocessing.signal_correction_functions import clean_dark, mask_hot_dead
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError

from calib_core.config.base import ConfigError, check_constraints
from calib_core.dq import DO_NOT_USE_MASK, DQ, count_bits
from calib_core.sim import DEMO_PLANET_ID, load_truth
from calib_core.stages.dark import config as dark_config
from calib_core.stages.dark import hot_pixels as dark_hot_pixels
from calib_core.stages.dark import repair as dark_repair
from calib_core.stages.dark import step as dark_step
from calib_core.stages.dark import temperature as dark_temperature
from oracles import detector as oracle


def _dark_map(rng, shape=(16, 40), n_hot=12, n_cold=3):
    d = rng.normal(0.0063, 0.0015, shape)
    idx = rng.choice(d.size, n_hot + n_cold, replace=False)
    d.flat[idx[:n_hot]] = rng.uniform(0.5, 20.0, n_hot)
    d.flat[idx[n_hot:]] = -0.03
    return d, idx


# ---------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------


def test_hot_pixel_mask_matches_reference_mask_hot_dead():
    rng = np.random.default_rng(0)
    d, idx = _dark_map(rng)
    dead = np.zeros(d.shape, bool)
    dead.flat[rng.choice(d.size, 4, replace=False)] = True
    signal = rng.normal(100.0, 5.0, (3, *d.shape))
    ref_mask = np.ma.getmaskarray(mask_hot_dead(signal.copy(), dead, d))[0]
    ours = dark_hot_pixels.hot_pixel_mask(d, sigma=5.0, maxiters=5)
    np.testing.assert_array_equal(ours | dead, ref_mask)
    assert ours.flat[idx].all()                                   # high and low outliers


def test_subtract_dark_matches_reference_clean_dark_on_good_pixels():
    rng = np.random.default_rng(1)
    d, _ = _dark_map(rng)
    dead = np.zeros(d.shape, bool)
    dead[2, 3] = True
    dt = np.tile([0.1, 4.6], 4)
    signal = rng.uniform(-50.0, 5e4, (8, *d.shape))
    ref = np.ma.getdata(clean_dark(signal.copy(), dead, d, dt))
    ours = oracle.subtract_dark(signal.astype(np.float32), d, dt)
    good = np.broadcast_to(~dead, ours.shape)
    np.testing.assert_allclose(ours[good], ref[good], rtol=1e-6, atol=5e-3)
    np.testing.assert_allclose(oracle.subtract_dark(np.zeros((1, 2, 2), np.float32), np.full((2, 2), 3.0), None),
                               -3.0)


def test_temperature_factor():
    t = dark_config.TemperatureConfig(enabled=True, ref_temp_k=40.0, detector_temp_k=40.0)
    assert dark_temperature.temperature_factor(t) == 1.0
    t.detector_temp_k = 42.0
    assert dark_temperature.temperature_factor(t) == pytest.approx(1.2)
    t.method = "arrhenius"
    expected = math.exp(-0.6 / dark_temperature.K_BOLTZMANN_EV * (1 / 42.0 - 1 / 40.0))
    assert dark_temperature.temperature_factor(t) == pytest.approx(expected)
    t.enabled = False
    assert dark_temperature.temperature_factor(t) == 1.0


def test_neighbour_median_repair():
    frames = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    bad = np.zeros((5, 6), bool)
    bad[2, 3] = bad[0, 0] = True
    usable = ~bad
    usable[1, 2] = False
    table = dark_repair.neighbour_table(bad, usable)
    med, count = oracle.neighbour_median(frames, table)
    centre = [frames[:, r, c] for r, c in ((1, 3), (1, 4), (2, 2), (2, 4), (3, 2), (3, 3), (3, 4))]
    k = list(zip(table.rows, table.cols)).index((2, 3))
    np.testing.assert_allclose(med[:, k], np.median(np.stack(centre, axis=1), axis=1))
    assert count[0, k] == 7
    corner = list(zip(table.rows, table.cols)).index((0, 0))
    assert count[0, corner] == 3                                   # edge: only in-frame neighbours
    none_usable = dark_repair.neighbour_table(bad, np.zeros((5, 6), bool))
    med, count = oracle.neighbour_median(frames, none_usable)
    assert np.all(count == 0) and np.all(np.isnan(med))


# ---------------------------------------------------------------------------
# the stage on a demo planet
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("inst", ["AIRS-CH0", "FGS1"])
def test_hot_pixels_against_truth(detector_chain, inst):
    truth = load_truth(detector_chain["root"], DEMO_PLANET_ID)
    out = detector_chain["outputs"][("dark", inst)]
    m = detector_chain["metrics"][("dark", inst)]
    flagged = np.asarray(out.fields["hot_mask"]).astype(bool)
    true_hot = truth[f"{inst}_hot"]
    dead = truth[f"{inst}_dead"]
    # every injected hot pixel is far above the 5-sigma clip threshold of the demo dark map
    recall = (flagged & true_hot).sum() / true_hot.sum()
    precision = (flagged & true_hot).sum() / flagged.sum()
    assert recall >= 0.9 and precision >= 0.9
    assert m["n_hot"] == flagged.sum() and m["hot_frac"] == pytest.approx(flagged.mean())
    dq = np.asarray(out.frames().dq)
    assert np.all(dq[:, flagged] & DQ.HOT)
    live = ~(dq[:, 0, 0] & DQ.DROPPED).astype(bool)
    repaired = (dq[live][:, flagged] & DQ.REPAIRED) != 0
    assert repaired.mean() > 0.95 and m["n_repaired_pixels"] == flagged.sum()
    # repaired values are the median of the usable 8-neighbours of each frame
    adc_out = detector_chain["outputs"][("adc", inst)].frames()
    data_in, dq_in = np.asarray(adc_out.data), np.asarray(adc_out.dq)
    rate = np.asarray(out.fields["dark_applied"])
    exptime = adc_out.axis.exptime_s[:, None, None]
    expected_in = data_in - rate * exptime
    r, c = np.argwhere(flagged & ~dead)[0]
    t = np.flatnonzero(live)[1]
    nbr = [(r + dr, c + dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)
           if (dr or dc) and 0 <= r + dr < dq.shape[1] and 0 <= c + dc < dq.shape[2]
           and not flagged[r + dr, c + dc] and not dead[r + dr, c + dc]
           and not dq_in[t, r + dr, c + dc] & DO_NOT_USE_MASK]
    data = np.asarray(out.frames().data)
    assert data[t, r, c] == pytest.approx(np.median([expected_in[t, i, j] for i, j in nbr]), abs=1e-3)
    assert m["dq_counts"] == count_bits(dq) and m["n_nonfinite"] == 0


def test_dark_subtracted_with_read_exptime(detector_chain):
    adc_out = detector_chain["outputs"][("adc", "AIRS-CH0")].frames()
    out = detector_chain["outputs"][("dark", "AIRS-CH0")]
    rate = detector_chain["planet"].calibration("AIRS-CH0").dark
    hot = np.asarray(out.fields["hot_mask"]).astype(bool)
    np.testing.assert_array_equal(np.asarray(out.fields["dark_applied"]), rate.astype(np.float32))
    t = 5
    diff = np.asarray(adc_out.data[t]) - np.asarray(out.frames().data[t])
    np.testing.assert_allclose(diff[~hot], (rate * adc_out.axis.exptime_s[t])[~hot], atol=2e-3)
    assert adc_out.axis.exptime_s[:4].tolist() == pytest.approx([0.1, 4.6, 0.1, 4.6])


def test_per_pixel_map_in_adu_per_s_and_temperature_scaling(detector_chain, run_stage, tmp_path):
    planet = detector_chain["planet"]
    inst = "FGS1"
    rate = planet.calibration(inst).dark
    gain, _ = planet.adc(inst)
    path = tmp_path / "dark_adu.npy"
    np.save(path, rate * gain)
    cfg = dark_config.DarkConfig(method="per_pixel_map")
    cfg.per_pixel_map.path = str(path)
    cfg.per_pixel_map.units = "adu_per_s"
    cfg.per_pixel_map.convert_units.enabled = True
    cfg.temperature = dark_config.TemperatureConfig(enabled=True, ref_temp_k=40.0, detector_temp_k=41.0, slope_per_k=0.5)
    inp = detector_chain["outputs"][("adc", inst)].frames()
    out, m = run_stage("dark", inp, cfg, planet, inst, tmp_path / "dark")
    np.testing.assert_allclose(np.asarray(out.fields["dark_applied"]), 1.5 * rate, rtol=1e-6)
    assert m["temperature_factor"] == pytest.approx(1.5) and m["dark_units"] == "adu_per_s"
    assert str(path) in m["dark_source"]
    cfg.per_pixel_map.path = str(tmp_path / "missing.npy")
    with pytest.raises(FileNotFoundError, match=r"calib\.dark\.per_pixel_map\.path = .*missing\.npy"):
        run_stage("dark", inp, cfg, planet, inst, tmp_path / "dark2")


def test_per_pixel_npz_holds_one_map_per_instrument(detector_chain, run_stage, tmp_path):
    """One file serves a whole run (FGS1 32x32, AIRS-CH0 32x356): the .npz array named after the instrument."""
    planet = detector_chain["planet"]
    maps = {inst: planet.calibration(inst).dark * 2.0 for inst in ("FGS1", "AIRS-CH0")}
    path = tmp_path / "darks.npz"
    np.savez(path, **maps)
    cfg = dark_config.DarkConfig(method="per_pixel_map")
    cfg.per_pixel_map.path = str(path)
    for inst in ("FGS1", "AIRS-CH0"):
        inp = detector_chain["outputs"][("adc", inst)].frames()
        out, m = run_stage("dark", inp, cfg, planet, inst, tmp_path / f"dark-{inst}")
        np.testing.assert_array_equal(np.asarray(out.fields["dark_applied"]), maps[inst].astype(np.float32))
    np.savez(path, FGS1=maps["FGS1"])
    inp = detector_chain["outputs"][("adc", "AIRS-CH0")].frames()
    with pytest.raises(ValueError, match=r"per_pixel_map\.path = .*darks\.npz': no array named 'AIRS-CH0' "
                                         r"\(it holds \['FGS1'\]"):
        run_stage("dark", inp, cfg, planet, "AIRS-CH0", tmp_path / "dark-missing")


def test_map_shape_check_and_broadcast_when_it_is_off(detector_chain, run_stage, tmp_path):
    """check_shape_compatibility: a wrong shape is named; switched off, a map that broadcasts is expanded."""
    planet = detector_chain["planet"]
    inst = "AIRS-CH0"
    inp = detector_chain["outputs"][("adc", inst)].frames()
    h, w = inp.frame_shape
    column_rates = np.linspace(0.01, 0.05, w)[None, :]          # one rate per column, shape (1, W)
    path = tmp_path / "row.npy"
    np.save(path, column_rates)
    cfg = dark_config.DarkConfig(method="per_pixel_map")
    cfg.per_pixel_map.path = str(path)
    with pytest.raises(ValueError, match=rf"shape \(1, {w}\) does not match the frames; expected \({h}, {w}\) "
                                         r"\(validation.check_shape_compatibility is true\)"):
        run_stage("dark", inp, cfg, planet, inst, tmp_path / "dark-strict")
    cfg.validation.check_shape_compatibility = False
    out, _ = run_stage("dark", inp, cfg, planet, inst, tmp_path / "dark-row")
    np.testing.assert_array_equal(np.asarray(out.fields["dark_applied"]),
                                  np.broadcast_to(column_rates, (h, w)).astype(np.float32))
    np.save(path, planet.calibration("FGS1").dark)                # 32x32: no broadcast to 32x356
    with pytest.raises(ValueError, match=rf"shape \({h}, 32\) neither matches nor broadcasts to the frames' "
                                         rf"\({h}, {w}\)"):
        run_stage("dark", inp, cfg, planet, inst, tmp_path / "dark-bad")


def test_repair_only_does_not_flag_hot(detector_chain, run_stage, tmp_path):
    planet = detector_chain["planet"]
    cfg = dark_config.DarkConfig()
    cfg.hot_pixels.action = "repair"
    inp = detector_chain["outputs"][("adc", "FGS1")].frames()
    out, m = run_stage("dark", inp, cfg, planet, "FGS1", tmp_path / "dark")
    dq = np.asarray(out.frames().dq)
    hot = np.asarray(out.fields["hot_mask"]).astype(bool)
    live = ~(dq[:, 0, 0] & DQ.DROPPED).astype(bool)
    assert not np.any(dq[live][:, hot] & DQ.HOT) and np.all(dq[live][:, hot] & DQ.REPAIRED)
    assert m["n_unrepaired_pixel_frames"] == 0


def test_dark_gates(detector_chain):
    m = detector_chain["metrics"][("dark", "AIRS-CH0")]
    cfg = dark_config.DarkConfig()
    assert all(g.passed for g in dark_step.STAGE.gates(m, cfg))
    cfg.quality_checks.max_hot_frac = 0.001
    cfg.quality_checks.min_residual_level_e = 1e6
    assert not any(g.passed for g in dark_step.STAGE.gates(m, cfg))


def test_dark_diagnostics(detector_chain):
    out = detector_chain["outputs"][("dark", "FGS1")]
    plots = dark_step.STAGE.diagnostics(out, detector_chain["metrics"][("dark", "FGS1")], None)
    assert [p.kind for p in plots] == ["image", "image", "histogram", "image", "table"]


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------



def test_dark_config_errors():
    schema = OmegaConf.structured(dark_config.DarkConfig)
    with pytest.raises(ConfigKeyError, match="sigma_threshold"):
        OmegaConf.merge(schema, {"hot_pixels": {"sigma_threshold": 8.0}})
    adu = OmegaConf.to_object(OmegaConf.merge(schema, {"per_pixel_map": {"units": "adu_per_s"}}))
    with pytest.raises(ConfigError, match=r"calib\.dark\.per_pixel_map\.convert_units\.enabled = False"):
        check_constraints(adu, "calib.dark")
    freezing = OmegaConf.to_object(OmegaConf.merge(schema, {"temperature": {
        "enabled": True, "ref_temp_k": 300.0, "detector_temp_k": 280.0, "slope_per_k": 0.1}}))
    with pytest.raises(ConfigError, match=r"calib\.dark\.temperature\.slope_per_k"):
        check_constraints(freezing, "calib.dark")
    action = OmegaConf.to_object(OmegaConf.merge(schema, {"hot_pixels": {"action": "delete"}}))
    with pytest.raises(ConfigError, match=r"calib\.dark\.hot_pixels\.action = 'delete'"):
        check_constraints(action, "calib.dark")
    check_constraints(dark_config.DarkConfig(), "calib.dark")


def test_non_finite_input_is_rejected_naming_stage_key_and_frame(detector_chain, run_stage, tmp_path):
    from calib_core.frames import FrameAxisMeta
    from calib_core.store import StoreWriter

    planet = detector_chain["planet"]
    n = 4
    with StoreWriter(tmp_path / "bad_input") as writer:
        data, var, dq = writer.create_frames(n, (32, 32))
        data[:] = 100.0
        var[:] = 300.0
        data[2, 5, 6] = np.nan
        dq[1, 0, 0] = DQ.DEAD
        data[1, 0, 0] = np.inf                                    # flagged pixel: allowed
        FrameAxisMeta(np.arange(n) * 0.1, np.tile([0.1, 0.2], 2), np.tile([0, 1], 2).astype(np.int8)).write(writer)
        source = writer.commit({}).frames()
    with pytest.raises(ValueError, match=r"dark: input 'adc_corrected' has 1 non-finite value.*frame 2"):
        run_stage("dark", source, dark_config.DarkConfig(), planet, "FGS1", tmp_path / "dark")
    cfg = dark_config.DarkConfig()
    cfg.validation.require_finite_inputs = False
    out, m = run_stage("dark", source, cfg, planet, "FGS1", tmp_path / "dark2")
    assert m["n_nonfinite_input"] == 1 and m["n_nonfinite"] == 1
    assert np.asarray(out.frames().dq)[2, 5, 6] & DQ.NONFINITE
