"""CDS stage: pairing, variance of the difference, cosmic rays and the transit, demo truth, config and gates."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from ariel_data_preprocessing.signal_correction_functions import get_cds
from numpy.lib.stride_tricks import sliding_window_view
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError
from scipy import ndimage

from calib_core.config.base import ConfigError, check_constraints
from calib_core.dq import DO_NOT_USE_MASK, DQ, count_bits
from calib_core.store import FramePlane, load_output
from calib_core.sim import DEMO_PLANET_ID, load_truth
from calib_core import robust
from calib_core.stages.cds import config as cds_config
from calib_core.stages.cds import cosmic_rays as cds_cosmic_rays
from calib_core.stages.cds import outliers as cds_outliers
from calib_core.stages.cds import pairing as cds_pairing
from calib_core.stages.cds import step as cds_step
from oracles import detector as oracle
from oracles.demo import expected_cds


def _axis(n_pairs, period=4.8):
    """Real-like read times (0.1 s, 0.2 s after each slot start) and read kinds."""
    starts = np.arange(n_pairs) * period
    t = np.empty(2 * n_pairs)
    t[0::2], t[1::2] = starts + 0.1, starts + 0.2
    return t, np.tile([0, 1], n_pairs).astype(np.int8)


# ---------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------


def test_cds_difference_matches_reference_get_cds():
    rng = np.random.default_rng(0)
    reads = rng.uniform(-50.0, 6e4, (10, 8, 12))
    ref = get_cds(reads.copy())
    zeros = np.zeros_like(reads[0::2], np.uint16)
    data, var, dq = oracle.cds_difference(reads[1::2], reads[1::2], zeros, reads[0::2], reads[0::2], zeros | 2,
                                       np.full((8, 12), 169.0))
    assert data.dtype == np.float32 and np.all(dq == 2)
    np.testing.assert_allclose(data, ref, rtol=1e-6, atol=1e-2)


@pytest.mark.parametrize("cds_s, rate", [(4.5, 2000.0), (0.1, 1.5e5)])
def test_cds_variance_is_read_noise_plus_increment_poisson(cds_s, rate):
    """Monte Carlo of one ramp: the propagated variance matches the scatter of the difference."""
    rng = np.random.default_rng(1)
    n, read = 40000, 13.0
    q1 = rng.normal(0, 10.0, n) + rng.poisson(rate * 0.1, n)       # kTC + charge at the first read
    q2 = q1 + rng.poisson(rate * cds_s, n)
    x1, x2 = q1 + rng.normal(0, read, n), q2 + rng.normal(0, read, n)
    rv = np.full((1, 1), read ** 2)
    shape = (n, 1, 1)
    v1 = (read ** 2 + np.maximum(x1, 0)).reshape(shape)
    v2 = (read ** 2 + np.maximum(x2, 0)).reshape(shape)
    zeros = np.zeros(shape, np.uint16)
    data, var, _ = oracle.cds_difference(x2.reshape(shape), v2, zeros, x1.reshape(shape), v1, zeros, rv)
    assert np.mean(var) / np.var(data) == pytest.approx(1.0, abs=0.03)
    naive = np.mean(v1 + v2) / np.var(data)                          # shared charge counted twice
    assert naive > 1.0 + 2 * 0.1 / (cds_s + 0.1) * 0.8


def test_pair_reads_index_and_timestamp_agree_on_regular_data():
    t, kinds = _axis(20)
    sig_i, first_i = cds_pairing.pair_reads(t, kinds)
    sig_t, first_t = cds_pairing.pair_reads(t, kinds, order_by="timestamp", policy="nearest", window_s=3.0)
    np.testing.assert_array_equal(sig_i, np.arange(1, 40, 2))
    np.testing.assert_array_equal(first_i, np.arange(0, 40, 2))
    np.testing.assert_array_equal(sig_t, sig_i)
    np.testing.assert_array_equal(first_t, first_i)
    # shuffled storage order: timestamp ordering restores the same pairs
    perm = np.random.default_rng(2).permutation(40)
    sig_p, first_p = cds_pairing.pair_reads(t[perm], kinds[perm], order_by="timestamp", policy="nearest", window_s=3.0)
    np.testing.assert_array_equal(perm[sig_p], sig_i)
    np.testing.assert_array_equal(perm[first_p], first_i)


def test_pair_reads_window_missing_partner_and_uniqueness():
    t, kinds = _axis(6)
    late = t.copy()
    late[7] += 4.0                                                   # pair 3: gap 4.1 s > window
    _, first = cds_pairing.pair_reads(late, kinds, order_by="timestamp", policy="nearest", window_s=3.0)
    assert first.tolist() == [0, 2, 4, -1, 8, 10]
    _, first = cds_pairing.pair_reads(late, kinds, order_by="timestamp", policy="nearest", window_s=5.0)
    assert first.tolist() == [0, 2, 4, 6, 8, 10]
    # a lost first read: n_minus_1 finds a signal read before it; nearest finds no free first read in time
    keep = np.arange(12) != 4
    sig, first = cds_pairing.pair_reads(t[keep], kinds[keep])
    assert first.tolist() == [0, 2, -1, 5, 7, 9]
    sig, first = cds_pairing.pair_reads(t[keep], kinds[keep], order_by="timestamp", policy="nearest", window_s=10.0)
    assert first.tolist() == [0, 2, -1, 5, 7, 9]                     # read 2 is taken by its own signal read
    # an extra first read: the closest one is used, the other is an orphan
    t2, k2 = np.append(t, 30.0), np.append(kinds, 0)
    order = np.argsort(t2)
    sig, first = cds_pairing.pair_reads(t2[order], k2[order], order_by="timestamp", policy="nearest", window_s=3.0)
    assert len(sig) == 6 and -1 not in first.tolist()


def test_window_median_matches_scipy_and_side_medians():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 4, 7)).astype(np.float32)
    for window in (3, 7, 11):
        h = window // 2
        ref = ndimage.median_filter(x, size=(window, 1, 1), mode="nearest")
        np.testing.assert_array_equal(robust.window_medians(x, range(-h, h + 1)), ref)
        padded = np.concatenate([np.repeat(x[:1], h, 0), x, np.repeat(x[-1:], h, 0)])
        win = sliding_window_view(padded, window, axis=0)
        both = robust.window_medians(x, cds_cosmic_rays.neighbour_offsets(window))
        np.testing.assert_allclose(both, np.median(np.delete(win, h, axis=-1), axis=-1), rtol=1e-6)
        left, right = cds_cosmic_rays.side_medians(x, window)
        np.testing.assert_allclose(left[1:], np.median(win[..., :h], axis=-1)[1:], rtol=1e-6)
        np.testing.assert_allclose(right[:-1], np.median(win[..., h + 1:], axis=-1)[:-1], rtol=1e-6)
        np.testing.assert_array_equal(left[0], right[0])


def test_spike_mask_ignores_steps_and_ramps():
    x = np.concatenate([np.zeros(8), np.full(8, 10.0), np.zeros(8), [25.0], np.zeros(8), np.arange(8.0),
                        np.full(8, 7.0)]).astype(np.float32)[:, None]
    left, right = cds_cosmic_rays.side_medians(x, 7)
    assert np.flatnonzero(cds_cosmic_rays.spike_mask(x, left, right, 0.5)[:, 0]).tolist() == [24]
    assert np.flatnonzero(cds_cosmic_rays.spike_mask(-x, -left, -right, 0.5)[:, 0]).tolist() == [24]
    assert not cds_cosmic_rays.spike_mask(x, left, right, 25.0).any()


def test_cosmic_rays_are_flagged_and_the_transit_is_not():
    rng = np.random.default_rng(4)
    n, m = 600, 400
    level = np.geomspace(50.0, 5e4, m)
    transit = np.ones(n)
    transit[200:400] = 0.97                                          # 3 % deep, instantaneous ingress/egress
    transit[400:420] = np.linspace(0.97, 1.0, 20)                    # and a ramp
    var = (338.0 + level)[None, :] * np.ones((n, 1))
    x = (level[None, :] * transit[:, None] + rng.normal(size=(n, m)) * np.sqrt(var)).astype(np.float32)
    hits_t = rng.choice(n, 40)
    hits_p = rng.choice(m, 40)
    deposit = rng.uniform(12, 80, 40) * np.sqrt(var[hits_t, hits_p])
    x[hits_t, hits_p] += deposit.astype(np.float32)
    usable = np.ones((n, m), bool)
    usable[::97] = False                                            # unusable frames are skipped
    cr = oracle.detect_cosmic_rays(x, usable, var, window=7, sigma=8.0)
    scale = oracle.pixel_stats(x, usable, var, window=7).scale
    hits = np.zeros((n, m), bool)
    hits[cr.times, cr.pixels] = True
    injected = np.zeros((n, m), bool)
    injected[hits_t, hits_p] = True
    clean = level[None, :] * transit[:, None]
    np.testing.assert_allclose(cr.data, clean[cr.times, cr.pixels], atol=4 * np.sqrt(var[0, cr.pixels]).max())
    assert np.all(hits[injected & usable])
    assert np.count_nonzero(hits & ~injected) == 0
    assert not np.any(hits & ~usable)
    assert np.median(scale / np.sqrt(var[0])) == pytest.approx(1.1, abs=0.05)   # MAD of x - median(neighbours)


def test_pixel_stats_read_back_from_written_planes_equal_those_of_the_array(tmp_path):
    """The stage samples its written planes frame block by frame block; same statistics as from memory."""
    rng = np.random.default_rng(11)
    n, shape = 700, (3, 5)
    x = (1e4 + rng.normal(size=(n, *shape)) * 100.0).astype(np.float32)
    var = rng.uniform(5e3, 2e4, (n, *shape)).astype(np.float32)
    dq = np.zeros((n, *shape), np.uint16)
    dq[rng.integers(0, n, 60), rng.integers(0, 3, 60), rng.integers(0, 5, 60)] = DQ.SATURATED
    x[5, 1, 1] = np.nan
    planes = tuple(FramePlane(tmp_path / f"{k}.npy", a.shape, a.dtype) for k, a in (("d", x), ("v", var), ("q", dq)))
    for plane, a in zip(planes, (x, var, dq)):
        plane[0:n] = a
    got = cds_step.CdsStage._sampled_stats(planes, 7)
    usable = ((dq & DO_NOT_USE_MASK) == 0) & np.isfinite(x)
    want = oracle.pixel_stats(x.reshape(n, -1), usable.reshape(n, -1), var.reshape(n, -1), window=7)
    for field in ("level", "var_level", "scale"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)


def test_temporal_outliers_flag_frames_not_the_transit():
    rng = np.random.default_rng(5)
    n = 500
    flux = 1e6 * np.where((np.arange(n) > 150) & (np.arange(n) < 350), 0.98, 1.0)
    series = flux + rng.normal(0, 300.0, n)
    series[77] *= 1.01
    valid = np.ones(n, bool)
    valid[[10, 11, 12]] = False
    out = cds_outliers.temporal_outliers(series, valid, window=31, sigma=5.0)
    assert np.flatnonzero(out).tolist() == [77]
    rows = np.stack([series, series * 0.5 + rng.normal(0, 200.0, n)], axis=1)
    rows[300, 1] += 5000.0
    assert np.flatnonzero(cds_outliers.temporal_outliers(rows, valid, window=31, sigma=5.0)).tolist() == [77, 300]


# ---------------------------------------------------------------------------
# the stage on a demo planet
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("inst", ["AIRS-CH0", "FGS1"])
def test_cds_pairs_unpaired_and_axis(detector_chain, inst):
    truth = load_truth(detector_chain["root"], DEMO_PLANET_ID)
    out = detector_chain["outputs"][("cds", inst)]
    m = detector_chain["metrics"][("cds", inst)]
    dropped = truth["instruments"][inst]["dropped_pairs"]
    assert m["n_unpaired"] == 3 and m["unpaired_frames"] == dropped
    assert m["unpaired_fraction"] == pytest.approx(3 / 40) and m["n_dropped_frames"] == 6
    pairs = np.asarray(out.fields["pair_index"])
    assert pairs.shape == (40, 2)
    np.testing.assert_array_equal(pairs[:, 1], np.arange(1, 80, 2))
    expected_first = np.arange(0, 80, 2)
    expected_first[dropped] = -1
    np.testing.assert_array_equal(pairs[:, 0], expected_first)
    src = out.frames()
    adc_axis = detector_chain["outputs"][("adc", inst)].frames().axis
    np.testing.assert_array_equal(src.axis.time_s, adc_axis.time_s[1::2])
    assert set(src.axis.read_kind.tolist()) == {2}
    live = np.setdiff1d(np.arange(40), dropped)
    cds_s = 4.5 if inst == "AIRS-CH0" else 0.1
    np.testing.assert_allclose(src.axis.exptime_s[live], cds_s)
    np.testing.assert_allclose(np.asarray(out.fields["pair_dt_s"])[live], 0.1, atol=1e-9)
    dq = np.asarray(src.dq)
    assert np.all(dq[dropped] & DQ.UNPAIRED) and np.all(np.isnan(np.asarray(src.data)[dropped]))
    assert m["dq_counts"] == count_bits(dq) and m["n_nonfinite"] == 0 and m["n_frames_out"] == 40


@pytest.mark.parametrize("inst", ["AIRS-CH0", "FGS1"])
def test_cds_recovers_expected_cds_within_propagated_noise(detector_chain, inst):
    out = detector_chain["outputs"][("cds", inst)].frames()
    data, var, dq = np.asarray(out.data), np.asarray(out.var), np.asarray(out.dq)
    exp = expected_cds(detector_chain["root"], DEMO_PLANET_ID, inst)
    good = (dq & DO_NOT_USE_MASK) == 0
    z = (data - exp) / np.sqrt(var)
    assert abs(z[good].mean()) < 0.1 and 0.95 < z[good].std() < 1.05
    # faint, jitter-free pixels: propagated variance vs measured temporal scatter (usable frames)
    level = exp.mean(axis=0)
    n_good = good.sum(axis=0)
    resid = np.where(good, data - exp, 0.0)
    mean_resid = resid.sum(axis=0) / np.maximum(n_good, 1)
    scatter = np.sqrt((np.where(good, data - exp - mean_resid, 0.0) ** 2).sum(axis=0) / np.maximum(n_good - 1, 1))
    predicted = np.sqrt(np.where(good, var, 0.0).sum(axis=0) / np.maximum(n_good, 1))
    faint = (level < 100) & (n_good >= 30)
    assert faint.sum() > 100
    assert np.median(scatter[faint] / predicted[faint]) == pytest.approx(1.0, abs=0.05)
    # bright pixels: the Poisson term is the increment's only (FGS: first read holds as much charge)
    bright = good & (level > 20 * predicted)[None]
    assert bright.sum() > 100 and 0.9 < z[bright].std() < 1.1


@pytest.mark.parametrize("inst", ["AIRS-CH0", "FGS1"])
def test_injected_cosmic_rays_are_flagged(detector_chain, inst):
    truth = load_truth(detector_chain["root"], DEMO_PLANET_ID)
    out = detector_chain["outputs"][("cds", inst)]
    m = detector_chain["metrics"][("cds", inst)]
    dq = np.asarray(out.frames().dq)
    scale = np.asarray(out.fields["robust_scale"])
    flat_map = truth[f"{inst}_flat"]
    hits = [h for h in truth["cosmic_rays"] if h["instrument"] == inst]
    injected = {(h["pair"], h["row"], h["col"]) for h in hits}
    detectable = [h for h in hits if not h["saturating"]
                  and h["electrons"] / flat_map[h["row"], h["col"]] > 11 * scale[h["row"], h["col"]]
                  and not dq[h["pair"], h["row"], h["col"]] & (DO_NOT_USE_MASK & ~DQ.COSMIC_RAY)]
    assert detectable
    for h in detectable:
        assert dq[h["pair"], h["row"], h["col"]] & (DQ.COSMIC_RAY | DQ.REPAIRED) == DQ.COSMIC_RAY | DQ.REPAIRED
    for h in (h for h in hits if h["saturating"]):
        assert dq[h["pair"], h["row"], h["col"]] & DQ.SATURATED
    flagged = {tuple(idx) for idx in np.argwhere(dq & DQ.COSMIC_RAY)}
    assert len(flagged - injected) <= 1
    assert m["n_cosmic_rays"] == len(flagged) == np.asarray(out.fields["cosmic_ray_count"]).sum()


def test_timestamp_pairing_matches_index_and_unpairs_a_late_read(detector_chain, run_stage, tmp_path):
    planet = detector_chain["planet"]
    flat_out = detector_chain["outputs"][("flat", "FGS1")]
    reference = detector_chain["outputs"][("cds", "FGS1")]
    cfg = cds_config.CdsConfig()
    cfg.pairing.order_by, cfg.pairing.policy, cfg.pairing.window_s = "timestamp", "nearest", 3.0
    out, m = run_stage("cds", flat_out.frames(), cfg, planet, "FGS1", tmp_path / "ts")
    np.testing.assert_array_equal(np.asarray(out.fields["pair_index"]), np.asarray(reference.fields["pair_index"]))
    np.testing.assert_array_equal(np.asarray(out.frames().data), np.asarray(reference.frames().data))
    inp = flat_out.frames()
    k = next(p for p in range(40) if p not in m["unpaired_frames"])
    inp.axis.time_s[2 * k + 1] += 4.0                                # push the gap to 4.1 s > window
    out, m2 = run_stage("cds", inp, cfg, planet, "FGS1", tmp_path / "late")
    assert m2["n_unpaired"] == m["n_unpaired"] + 1 and k in m2["unpaired_frames"]
    assert m2["n_orphan_reads"] == 1 and np.asarray(out.fields["orphan_index"]).tolist() == [2 * k]


def test_cds_gates_and_temporal_filter(detector_chain, run_stage, tmp_path):
    m = detector_chain["metrics"][("cds", "AIRS-CH0")]
    cfg = cds_config.CdsConfig()
    assert all(g.passed for g in cds_step.STAGE.gates(m, cfg))
    cfg.quality_checks.pairing_integrity.max_unpaired_fraction = 0.0
    failed = [g for g in cds_step.STAGE.gates(m, cfg) if not g.passed]
    assert [g.name for g in failed] == ["pairing_integrity"] and failed[0].value == pytest.approx(0.075)
    # a frame 5 % too bright (e.g. a gain glitch) is flagged as a whole; the transit and the
    # saturating cosmic rays (their pixels are filled with the pixel level in the frame flux) are not
    flat_copy = tmp_path / "flat"
    shutil.copytree(detector_chain["outputs"][("flat", "AIRS-CH0")].path, flat_copy)
    k = next(p for p in range(5, 35) if p not in m["unpaired_frames"])
    data = np.load(flat_copy / "data.npy", mmap_mode="r+")
    data[2 * k + 1] *= 1.05
    data.flush()
    del data
    cfg = cds_config.CdsConfig()
    cfg.temporal_filter.enabled = True
    cfg.temporal_filter.window = 9
    out, m = run_stage("cds", load_output(flat_copy).frames(), cfg, detector_chain["planet"], "AIRS-CH0",
                       tmp_path / "tf")
    assert m["outlier_frames"] == [k] and m["n_flux_filled"] > 0
    dq = np.asarray(out.frames().dq)
    assert np.all(dq[k] & DQ.OUTLIER) and m["dq_counts"]["OUTLIER"] == dq[0].size
    assert {g.name: g.passed for g in cds_step.STAGE.gates(m, cfg)}["outlier_frames"]        # 1/40 <= 5 %
    cfg.quality_checks.max_outlier_frame_frac = 0.0
    assert not {g.name: g.passed for g in cds_step.STAGE.gates(m, cfg)}["outlier_frames"]
    plots = cds_step.STAGE.diagnostics(out, m, None)
    assert [p.kind for p in plots] == ["curve", "curve", "image", "image", "table"]


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------



def test_cds_config_errors():
    schema = OmegaConf.structured(cds_config.CdsConfig)
    with pytest.raises(ConfigKeyError, match="windw_s"):
        OmegaConf.merge(schema, {"pairing": {"windw_s": 3.0}})
    with pytest.raises(ValidationError, match="window_s"):
        OmegaConf.merge(schema, {"pairing": {"window_s": "soon"}})
    negative = OmegaConf.to_object(OmegaConf.merge(schema, {"pairing": {"window_s": -1.0}}))
    with pytest.raises(ConfigError, match=r"calib\.cds\.pairing\.window_s = -1\.0: must be > 0"):
        check_constraints(negative, "calib.cds")
    policy = OmegaConf.to_object(OmegaConf.merge(schema, {"pairing": {"policy": "closest"}}))
    with pytest.raises(ConfigError, match=r"calib\.cds\.pairing\.policy = 'closest'"):
        check_constraints(policy, "calib.cds")
    even = OmegaConf.to_object(OmegaConf.merge(schema, {"robust": {"window": 8}}))
    with pytest.raises(ConfigError, match=r"calib\.cds\.robust\.window = 8: must be odd"):
        check_constraints(even, "calib.cds")
    check_constraints(cds_config.CdsConfig(), "calib.cds")


def test_cds_result_does_not_depend_on_chunk_size(detector_chain, run_stage, tmp_path):
    reference = detector_chain["outputs"][("cds", "AIRS-CH0")]
    inp = detector_chain["outputs"][("flat", "AIRS-CH0")].frames()
    out, m = run_stage("cds", inp, cds_config.CdsConfig(), detector_chain["planet"], "AIRS-CH0", tmp_path / "c5",
                       chunk_frames=5)
    for plane in ("data", "var", "dq"):
        np.testing.assert_array_equal(np.asarray(out.fields[plane]), np.asarray(reference.fields[plane]))
    assert m["n_cosmic_rays"] == detector_chain["metrics"][("cds", "AIRS-CH0")]["n_cosmic_rays"]
