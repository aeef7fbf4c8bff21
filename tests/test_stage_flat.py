"""Flat stage: kernels against the organisers' reference step and ccdproc, illumination fits, demo truth, config."""

from __future__ import annotations

import numpy as np
import pytest
from ariel_data_preprocessing.signal_correction_functions import correct_flat_field
from astropy.nddata import CCDData
from ccdproc import flat_correct
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from calib_core.config.base import ConfigError, check_constraints
from calib_core.dq import DQ, count_bits
from calib_core.sim import DEMO_PLANET_ID, load_truth
from calib_core.stages.flat import config as flat_config
from calib_core.stages.flat import prepare as flat_prepare
from calib_core.stages.flat import step as flat_step
from oracles import detector as oracle


def _smooth_field(shape):
    h, w = shape
    y, x = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    return 1.0 + 0.03 * x - 0.02 * y + 0.015 * x * y + 0.02 * x ** 2


# ---------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------


def test_apply_flat_matches_reference_correct_flat_field():
    rng = np.random.default_rng(0)
    shape = (16, 40)
    f = rng.normal(1.01, 0.02, shape)
    dead = np.zeros(shape, bool)
    dead[3, 5] = True
    signal = rng.uniform(0.0, 5e4, (4, *shape))
    ref = np.ma.getdata(correct_flat_field(signal.copy(), f, dead))
    prep = flat_prepare.prepare_flat(f, dead, min_flat=0.5, renormalize=False)
    data, var = oracle.apply_flat(signal.astype(np.float32), signal.astype(np.float32), prep.applied)
    good = np.broadcast_to(~dead, data.shape)
    np.testing.assert_allclose(data[good], ref[good], rtol=1e-6)
    np.testing.assert_allclose(var, signal / f ** 2, rtol=1e-6)      # variance / flat^2


def test_renormalised_flat_matches_ccdproc_flat_correct():
    rng = np.random.default_rng(1)
    shape = (16, 40)
    f = rng.normal(1.02, 0.02, shape)
    frame = rng.uniform(10.0, 5e4, shape)
    ref = flat_correct(CCDData(frame, unit="electron"), CCDData(f, unit="")).data
    prep = flat_prepare.prepare_flat(f, np.zeros(shape, bool), min_flat=0.5, renormalize=True)
    data, _ = oracle.apply_flat(frame[None].astype(np.float32), np.ones((1, *shape), np.float32), prep.applied)
    np.testing.assert_allclose(data[0], ref, rtol=1e-6)
    assert prep.norm == pytest.approx(f.mean())


def test_bad_flat_pixels_get_unit_flat():
    f = np.full((4, 5), 1.1)
    f[0, 0], f[1, 1], f[2, 2] = 0.0, np.nan, 0.3
    dead = np.zeros((4, 5), bool)
    dead[3, 3] = True
    prep = flat_prepare.prepare_flat(f, dead, min_flat=0.5, renormalize=True)
    assert prep.bad.sum() == 3 and np.all(prep.applied[prep.bad] == 1.0)
    np.testing.assert_allclose(prep.applied[prep.good], 1.0)
    with pytest.raises(ValueError, match="no usable pixel"):
        flat_prepare.prepare_flat(np.zeros((2, 2)), np.zeros((2, 2), bool), min_flat=0.5, renormalize=True)


@pytest.mark.parametrize("method, tol", [("poly2d", 0.002), ("row_spline", 0.006)])
def test_illumination_fit_recovers_smooth_field(method, tol):
    rng = np.random.default_rng(2)
    shape = (32, 120)
    field = _smooth_field(shape)
    prnu = 1 + np.clip(rng.normal(0, 0.015, shape), -0.06, 0.06)
    f = field * prnu
    dead = np.zeros(shape, bool)
    dead.flat[rng.choice(f.size, 20, replace=False)] = True
    f[dead] = -0.02
    f.flat[rng.choice(f.size, 15, replace=False)] *= 1.5          # outliers the robust fit must ignore
    cfg = flat_config.IlluminationConfig(enabled=True, method=method, degree_x=2, degree_y=1, knots=4)
    prep = flat_prepare.prepare_flat(f, dead, min_flat=0.5, renormalize=True, illumination=cfg)
    truth = field / field[prep.good].mean()
    err = (prep.illumination - truth)[prep.good]
    assert np.sqrt(np.mean(err ** 2)) < tol and np.abs(err).max() < 5 * tol    # per-row fits are noisier
    ratio = prep.applied / prnu
    assert np.std(ratio[prep.good & (np.abs(prep.applied - 1) < 0.1)]) < tol   # only the PRNU remains


# ---------------------------------------------------------------------------
# the stage on a demo planet
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("inst", ["AIRS-CH0", "FGS1"])
def test_flat_stage_on_demo(detector_chain, inst):
    truth = load_truth(detector_chain["root"], DEMO_PLANET_ID)
    out = detector_chain["outputs"][("flat", inst)]
    m = detector_chain["metrics"][("flat", inst)]
    dq = np.asarray(out.frames().dq)
    dead = truth[f"{inst}_dead"]
    assert np.all(dq[:, dead] & DQ.DEAD) and not np.any(dq[:, ~dead] & DQ.DEAD)
    assert np.all(dq[:, dead] & DQ.BAD_FLAT)                        # the shipped dead flat is <= 0
    assert m["n_dead"] == dead.sum() and m["n_bad_flat"] == dead.sum()
    applied = np.asarray(out.fields["flat_applied"])
    np.testing.assert_allclose(applied[~dead], truth[f"{inst}_flat"][~dead], rtol=1e-6)
    dark_out = detector_chain["outputs"][("dark", inst)].frames()
    t = 7
    np.testing.assert_allclose(np.asarray(out.frames().data[t]), np.asarray(dark_out.data[t]) / applied, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out.frames().var[t]), np.asarray(dark_out.var[t]) / applied ** 2,
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out.fields["read_var"]),
                               np.asarray(dark_out.output.fields["read_var"]) / applied ** 2, rtol=1e-6)
    assert m["dq_counts"] == count_bits(dq) and m["n_nonfinite"] == 0
    assert all(g.passed for g in flat_step.STAGE.gates(m, flat_config.FlatConfig()))


def test_flat_illumination_stage_output_and_gates(detector_chain, run_stage, tmp_path):
    planet = detector_chain["planet"]
    cfg = flat_config.FlatConfig(renormalize_to_mean_one=True)
    cfg.illumination_correction.enabled = True
    inp = detector_chain["outputs"][("dark", "AIRS-CH0")].frames()
    out, m = run_stage("flat", inp, cfg, planet, "AIRS-CH0", tmp_path / "flat")
    field = np.asarray(out.fields["illumination_field"])
    assert field.shape == (32, 356) and 0.9 < m["illumination_min"] <= m["illumination_max"] < 1.1
    plots = flat_step.STAGE.diagnostics(out, m, None)
    assert any(p.kind == "image" and "Illumination" in p.title for p in plots)
    cfg.quality_checks.flat_mean_range = [1.05, 1.2]
    cfg.quality_checks.max_zero_frac = 0.0
    failed = {g.name for g in flat_step.STAGE.gates(m, cfg) if not g.passed}
    assert failed == {"flat_mean_low", "flat_zero_fraction"}


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------



def test_flat_config_errors():
    schema = OmegaConf.structured(flat_config.FlatConfig)
    with pytest.raises(ValidationError, match="min_flat"):
        OmegaConf.merge(schema, {"min_flat": "low"})
    reversed_range = OmegaConf.to_object(OmegaConf.merge(schema, {"quality_checks": {"flat_mean_range": [1.2, 0.8]}}))
    with pytest.raises(ConfigError, match=r"calib\.flat\.quality_checks\.flat_mean_range = \[1\.2, 0\.8\]"):
        check_constraints(reversed_range, "calib.flat")
    method = OmegaConf.to_object(OmegaConf.merge(schema, {"illumination_correction": {"method": "gaussian"}}))
    with pytest.raises(ConfigError, match=r"calib\.flat\.illumination_correction\.method = 'gaussian'"):
        check_constraints(method, "calib.flat")
    check_constraints(flat_config.FlatConfig(), "calib.flat")
