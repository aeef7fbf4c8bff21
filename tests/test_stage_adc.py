"""ADC stage: kernels against the organisers' reference steps, the stage on a demo planet, config and gates."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from ariel_data_preprocessing.signal_correction_functions import ADC_convert, apply_linear_corr
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from calib_core.config.base import ConfigError, check_constraints
from calib_core.dq import DQ, count_bits
from calib_core.io import open_planet
from calib_core.sim import DEMO_PLANET_ID, load_truth
from calib_core import diagnostics
from calib_core.stages.adc import config as adc_config
from calib_core.stages.adc import reference as adc_reference
from calib_core.stages.adc import step as adc_step
from calib_core.stages import pixels
from oracles import detector as oracle
from calib_core.stages.base import RawInput


def _linear_corr(rng, shape):
    """Realistic linear_corr maps (ariel_data.md 4.3 magnitudes with per-pixel spread)."""
    c = np.empty((6, *shape))
    c[0] = rng.normal(0.143, 0.02, shape)
    c[1] = rng.normal(1.0, 0.005, shape)
    scale = rng.uniform(0.9, 1.1, shape)
    for k, med in zip(range(2, 6), (-6.2e-9, 1.18e-11, -6.0e-17, 1.33e-22)):
        c[k] = med * scale ** (k - 1)
    return c


# ---------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------


def test_dn_to_electrons_matches_reference_adc_convert():
    rng = np.random.default_rng(0)
    raw = rng.integers(1, 65535, (6, 8, 12), dtype=np.uint16)
    ours = oracle.dn_to_electrons(raw, gain=0.4369, offset=-1000.0)
    ref = ADC_convert(raw.copy(), 0.4369, -1000.0)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=2e-7, atol=1e-4)


def test_linearize_matches_reference_apply_linear_corr_and_poly1d():
    rng = np.random.default_rng(1)
    shape = (8, 12)
    coeffs = _linear_corr(rng, shape)
    signal = rng.uniform(50.0, 7.0e4, (5, *shape))
    ref = apply_linear_corr(coeffs.copy(), signal.copy())       # modifies its input: pass copies
    ours = oracle.linearize(signal.astype(np.float32), coeffs)
    assert ours.dtype == np.float32
    rel = np.abs(ours - ref) / np.abs(ref)
    assert rel.max() < 1e-6
    # and one pixel against np.poly1d directly
    poly = np.poly1d(coeffs[::-1, 3, 7])
    np.testing.assert_allclose(ours[:, 3, 7], poly(signal[:, 3, 7].astype(np.float32)), rtol=1e-6)


def test_raw_dq_flags_floor_saturation_and_dropped_frames():
    raw = np.full((3, 4, 5), 1000, np.uint16)
    raw[0, 1, 2] = 0
    raw[0, 3, 4] = 65535
    raw[2] = 0
    dq, dropped = oracle.raw_dq(raw, level_dn=65535)
    assert dropped.tolist() == [False, False, True]
    assert dq[0, 1, 2] == DQ.ADC_FLOOR and dq[0, 3, 4] == DQ.SATURATED
    assert np.all(dq[2] == DQ.DROPPED)                      # a dropped frame carries DROPPED only
    assert np.count_nonzero(dq[:2]) == 2
    dq_low, _ = oracle.raw_dq(raw, level_dn=1000)
    assert np.all(dq_low[1] == DQ.SATURATED)


def test_common_mode_offsets_remove_offsets_but_keep_wing_flux():
    rng = np.random.default_rng(2)
    n, h, w, b = 200, 16, 40, 4
    kinds = np.arange(n) % 2
    cols = adc_reference.reference_columns(w, b)
    # bimodal, row-dependent stellar wings (faint left, bright right), larger in signal reads
    wing = np.zeros((2, h, w))
    wing[:, :, w // 2:] = np.linspace(5.0, 400.0, h)[None, :, None]
    wing[0] /= 46.0
    offsets = rng.normal(0.0, 3.0, n)
    frames = (wing[kinds] + offsets[:, None, None] + rng.normal(0, 1.0, (n, h, w))).astype(np.float32)
    pix = frames[:, :, cols]
    template = np.stack([np.median(pix[kinds == k], axis=0) for k in (0, 1)])
    scatter = np.stack([1.4826 * np.median(np.abs(pix[kinds == k] - template[k]), axis=0) for k in (0, 1)])
    levels = np.zeros(n)
    for k in (0, 1):
        sel = kinds == k
        levels[sel] = adc_reference.reference_levels(pix[sel].reshape(sel.sum(), -1), template[k].ravel(), scatter[k].ravel())
    got = adc_reference.common_mode_offsets(levels, kinds, np.ones(n, bool))
    for kind in (0, 1):
        sel = kinds == kind
        expected = offsets[sel] - np.median(offsets[sel])
        assert np.corrcoef(got[sel], expected)[0, 1] > 0.99
        assert np.abs(got[sel] - expected).max() < 0.6
    corrected = frames - got[:, None, None]
    np.testing.assert_allclose(corrected[kinds == 1].mean(axis=0), wing[1], atol=1.5)   # wing flux kept
    medians = adc_reference.reference_levels(pix[kinds == 1].reshape(n // 2, -1), template[1].ravel(), scatter[1].ravel(),
                                   strategy="border_median")
    assert np.corrcoef(medians, levels[kinds == 1])[0, 1] > 0.95
    with pytest.raises(ValueError, match=r"calib\.adc\.reference_pixel\.border_px = 20"):
        adc_reference.reference_columns(w, 20)


def test_adc_variance_is_read_noise_plus_poisson():
    e = np.array([[[-5.0, 0.0, 100.0]]], np.float32)
    read_var = np.array([[169.0, 169.0, 144.0]])
    np.testing.assert_allclose(oracle.adc_variance(e, read_var)[0, 0], [169.0, 169.0, 244.0])


def test_dq_tally_equals_count_bits():
    rng = np.random.default_rng(3)
    chunks = [rng.integers(0, 1 << 13, (4, 3, 5)).astype(np.uint16) for _ in range(3)]
    tally = pixels.DqTally()
    for c in chunks:
        tally.add(c)
    assert tally.counts() == count_bits(np.concatenate(chunks))


def test_decimate_block_means():
    x, y = diagnostics.decimate(np.arange(10.0), np.arange(10.0), 4)
    assert len(x) <= 4 + 1 and x == y and x[0] == 1.0


# ---------------------------------------------------------------------------
# the stage on a demo planet
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("inst", ["AIRS-CH0", "FGS1"])
def test_adc_stage_output_on_demo(detector_chain, inst):
    out = detector_chain["outputs"][("adc", inst)]
    m = detector_chain["metrics"][("adc", inst)]
    truth = load_truth(detector_chain["root"], DEMO_PLANET_ID)
    planet = detector_chain["planet"]
    n = planet.n_frames(inst)
    src = out.frames()
    data, var, dq = np.asarray(src.data), np.asarray(src.var), np.asarray(src.dq)
    assert data.shape == (n, *planet.calibration(inst).read.shape) and data.dtype == np.float32
    # metadata contract
    axis = planet.axis(inst)
    np.testing.assert_array_equal(src.axis.time_s, axis.time_s)
    np.testing.assert_array_equal(src.axis.read_kind, axis.read_kind)
    assert out.meta["units"] == "electron" and out.meta["frame_shape"] == list(data.shape[1:])
    assert ("wavelength_um" in out.meta) == (inst == "AIRS-CH0")
    # dropped pairs: exactly both reads of each dropped pair, flagged and counted
    dropped_pairs = truth["instruments"][inst]["dropped_pairs"]
    expected = sorted([2 * p for p in dropped_pairs] + [2 * p + 1 for p in dropped_pairs])
    assert m["dropped_frames"] == expected and m["n_dropped_frames"] == 6
    assert np.all(dq[expected] & DQ.DROPPED) and np.all(np.isnan(data[expected]))
    # saturating cosmic-ray deposits clip at the ADC ceiling
    for hit in (h for h in truth["cosmic_rays"] if h["instrument"] == inst and h["saturating"]):
        assert dq[hit["frame"], hit["row"], hit["col"]] & DQ.SATURATED
        assert dq[hit["frame"], hit["row"], hit["col"]] & DQ.NONLINEAR     # beyond linearization.valid_max_e
    assert m["n_nonlinear"] >= 2 and m["n_raw_saturated"] >= 2
    # bookkeeping
    assert m["dq_counts"] == count_bits(dq)
    assert m["n_nonfinite"] == 0 and m["n_frames_in"] == m["n_frames_out"] == n
    assert np.all(dq[:, :, :4] & DQ.REFERENCE) and not np.any(dq[:, :, 4:-4] & DQ.REFERENCE)
    live = np.setdiff1d(np.arange(n), expected)
    read_var = np.asarray(out.fields["read_var"])
    np.testing.assert_allclose(var[live], read_var + np.maximum(data[live], 0), rtol=1e-6)


def test_reference_pixels_recover_the_injected_common_mode(detector_chain):
    truth = load_truth(detector_chain["root"], DEMO_PLANET_ID)
    for inst in ("AIRS-CH0", "FGS1"):
        out = detector_chain["outputs"][("adc", inst)]
        offsets = np.asarray(out.fields["reference_offset"])
        injected = truth[f"{inst}_common_mode"]
        kinds = out.frames().axis.read_kind
        live = np.isin(np.arange(len(offsets)), detector_chain["metrics"][("adc", inst)]["dropped_frames"],
                       invert=True)
        for kind in (0, 1):
            sel = live & (kinds == kind)
            expected = injected[sel] - np.median(injected[sel])
            assert np.std(offsets[sel] - expected) < 0.5 * np.std(expected)
            assert np.corrcoef(offsets[sel], injected[sel])[0, 1] > 0.85


def test_adc_result_does_not_depend_on_chunk_size(detector_chain, run_stage, tmp_path):
    planet = detector_chain["planet"]
    cfg = detector_chain["cfgs"]["adc"]
    out, _ = run_stage("adc", RawInput(planet, "FGS1"), cfg, planet, "FGS1", tmp_path / "c6", chunk_frames=6)
    reference = detector_chain["outputs"][("adc", "FGS1")]
    for plane in ("data", "var", "dq", "reference_offset", "read_var"):
        np.testing.assert_array_equal(np.asarray(out.fields[plane]), np.asarray(reference.fields[plane]))


def test_adc_without_reference_pixels_single_pass_and_value_conversion(detector_chain, run_stage, tmp_path):
    planet = detector_chain["planet"]
    cfg = adc_config.AdcConfig()
    cfg.conversion.source = "value"
    cfg.conversion.gain, cfg.conversion.offset = 0.5, -900.0
    cfg.linearization.method = "none"
    cfg.diagnostics.enabled = False
    cfg.clamp.max_e = 20000.0
    out, m = run_stage("adc", RawInput(planet, "FGS1"), cfg, planet, "FGS1", tmp_path / "adc", chunk_frames=7)
    raw = planet.read_frames("FGS1")
    data = np.asarray(out.frames().data)
    live = ~np.isnan(data[:, 0, 0])
    expected = raw[live] / 0.5 - 900.0
    np.testing.assert_allclose(data[live], np.minimum(expected, 20000.0), rtol=1e-6)
    assert m["n_clamped"] == np.count_nonzero(expected > 20000.0) > 0
    assert m["conversion_source"] == "value" and "hist_counts" not in m and "reference_offset" not in out.fields
    assert m["zero_frac"] == 0.0 and m["n_dropped_frames"] == 6


def test_adc_gates(detector_chain):
    m = detector_chain["metrics"][("adc", "AIRS-CH0")]
    cfg = adc_config.AdcConfig()
    gates = {g.name: g for g in adc_step.STAGE.gates(m, cfg)}
    assert gates["zero_pileup"].passed and gates["saturation_pileup"].passed and gates["nonlinear_range"].passed
    assert not gates["dropped_frames"].passed                     # 3 of 40 pairs dropped > 5 %
    cfg.quality_checks.max_saturated_frac = 0.0
    cfg.quality_checks.max_dropped_frame_frac = 0.1
    gates = {g.name: g for g in adc_step.STAGE.gates(m, cfg)}
    assert not gates["saturation_pileup"].passed and gates["dropped_frames"].passed


def test_adc_diagnostics(detector_chain):
    out = detector_chain["outputs"][("adc", "AIRS-CH0")]
    plots = adc_step.STAGE.diagnostics(out, detector_chain["metrics"][("adc", "AIRS-CH0")], None)
    kinds = [p.kind for p in plots]
    assert kinds[0] == "histogram" and "image" in kinds and "curve" in kinds and kinds[-1] == "table"
    hist = plots[0]
    assert len(hist.edges) == len(hist.counts) + 1 and hist.counts.sum() > 0
    assert all(p.data.ndim == 2 for p in plots if p.kind == "image")


class _BadReadPlanet:
    """A planet whose read-noise map has the wrong shape."""

    def __init__(self, planet):
        self._planet = planet

    def __getattr__(self, name):
        return getattr(self._planet, name)

    def calibration(self, inst):
        cal = self._planet.calibration(inst)
        return dataclasses.replace(cal, read=cal.read[:, :-1])


def test_adc_map_shape_mismatch_names_map_and_shapes(detector_demo, run_stage, tmp_path):
    planet = _BadReadPlanet(open_planet(detector_demo))
    message = r"FGS1 calibration map 'read' \(.*read.parquet\): shape \(32, 31\).*\(32, 32\)"
    with pytest.raises(ValueError, match=message):
        run_stage("adc", RawInput(planet, "FGS1"), adc_config.AdcConfig(), planet, "FGS1", tmp_path / "adc")


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------



def test_adc_config_errors():
    schema = OmegaConf.structured(adc_config.AdcConfig)
    with pytest.raises(ConfigKeyError, match="gainz"):
        OmegaConf.merge(schema, {"conversion": {"gainz": 1.0}})
    with pytest.raises(ValidationError, match="border_px"):
        OmegaConf.merge(schema, {"reference_pixel": {"border_px": "four"}})
    bad_choice = OmegaConf.to_object(OmegaConf.merge(schema, {"linearization": {"method": "lut"}}))
    with pytest.raises(ConfigError, match=r"calib\.adc\.linearization\.method = 'lut': must be one of none, poly"):
        check_constraints(bad_choice, "calib.adc")
    crossed = OmegaConf.to_object(OmegaConf.merge(schema, {"clamp": {"min_e": 10.0, "max_e": 5.0}}))
    with pytest.raises(ConfigError, match=r"calib\.adc\.clamp\.max_e = 5\.0"):
        check_constraints(crossed, "calib.adc")
    negative = OmegaConf.to_object(OmegaConf.merge(schema, {"conversion": {"gain": -1.0}}))
    with pytest.raises(ConfigError, match=r"calib\.adc\.conversion\.gain = -1\.0: must be > 0"):
        check_constraints(negative, "calib.adc")
    check_constraints(adc_config.AdcConfig(), "calib.adc")
